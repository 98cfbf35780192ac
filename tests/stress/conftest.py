"""The ``backend`` fixture of the stress tests: parametrise it indirectly with a store kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import postgres_dsn_or_skip
from tests.stress.support import Backend


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh backend: a shared in-memory store, an SQLite file in tmp_path, or a PostgreSQL schema."""
    kind = request.param
    if kind == "memory":
        return Backend("memory")
    if kind == "sqlite":
        return Backend("sqlite", str(tmp_path / "stress.db"))
    dsn = postgres_dsn_or_skip()
    return Backend("postgres", dsn, request.getfixturevalue("postgres_schema"))
