"""Stores: where sessions live. ``open_store(url)`` picks one from a URL."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ogmem_memory.errors import ConfigError
from ogmem_memory.stores.base import SessionStore
from ogmem_memory.stores.memory import InMemoryStore
from ogmem_memory.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from ogmem_memory.stores.postgres import PostgresStore

__all__ = ["InMemoryStore", "PostgresStore", "SQLiteStore", "SessionStore", "default_store", "open_store"]


def default_store() -> SessionStore:
    """``SQLiteStore`` at ``$OGMEM_DB`` or ``./ogmem.db``."""
    return open_store(os.environ.get("OGMEM_DB") or "ogmem.db")


def open_store(url: str) -> SessionStore:
    """A store for ``url``: ``memory://``, ``sqlite:///path.db`` (or a bare path), ``postgresql://...``.

    ``sqlite:///path.db?durability=full`` syncs every commit to disk (``synchronous=FULL``:
    acknowledged writes survive power loss too); the default (WAL, ``synchronous=NORMAL``)
    keeps every acknowledged write through a process crash.

    The store is not set up yet (no I/O here); the manager or ``with`` does that.

    Raises:
        ConfigError: The URL's scheme is not supported.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"store URL must be a non-empty string, got {url!r}")
    if url.startswith("memory://"):
        return InMemoryStore()
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db" (SQLAlchemy's convention)
        path = path[1:] if path.startswith("/") else path
        path, _, query = path.partition("?durability=")
        if query not in ("", "normal", "full"):
            raise ConfigError(f"durability must be normal or full, got {query!r}")
        # full: synchronous=FULL on every connection (NORMAL is not stored in the file)
        return SQLiteStore(path or ":memory:", synchronous="FULL" if query == "full" else "NORMAL")
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return _postgres_store_class()(url.replace("postgresql+psycopg://", "postgresql://", 1))
    if "://" not in url:
        return SQLiteStore(url)
    raise ConfigError(f"unsupported store URL {url!r}: use memory://, sqlite:///path.db or postgresql://...")


def _postgres_store_class() -> type[PostgresStore]:
    try:
        from ogmem_memory.stores.postgres import PostgresStore
    except ImportError as exc:
        raise ImportError('PostgresStore needs: pip install "ogmem-memory[postgres]"') from exc
    return PostgresStore


def __getattr__(name: str) -> object:
    if name == "PostgresStore":
        return _postgres_store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
