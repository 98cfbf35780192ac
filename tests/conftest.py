"""Shared fixtures: stores for every backend, the PostgreSQL DSN, temporary databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore

POSTGRES_DSN = os.environ.get("OGMEM_TEST_POSTGRES_DSN", "")


def postgres_dsn_or_skip() -> str:
    """The test DSN; under CI=true a missing server is a failure, not a skip."""
    if not POSTGRES_DSN:
        if os.environ.get("CI") == "true":
            pytest.fail("OGMEM_TEST_POSTGRES_DSN is not set under CI=true: PostgreSQL tests must run")
        pytest.skip("OGMEM_TEST_POSTGRES_DSN not set")
    return POSTGRES_DSN


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "ogmem.db"


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema per test, dropped afterwards."""
    dsn = postgres_dsn_or_skip()
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> SessionStore:
    if kind == "memory":
        return InMemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / f"{uuid.uuid4().hex[:8]}.db")
    schema = request.getfixturevalue("postgres_schema")
    from ogmem_memory.stores.postgres import PostgresStore

    return PostgresStore(postgres_dsn_or_skip(), schema=schema)
