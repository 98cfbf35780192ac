"""The SQLite item store: items in the session store's file, with its own connection."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from ogmem_memory.errors import ConfigError, StoreError
from ogmem_memory.stores.items_base import ItemStore, ItemTransaction
from ogmem_memory.stores.items_sql_transaction import SQLCursor, SQLDialect, SQLTransaction, translate_error
from ogmem_memory.stores.sqlite_schema import apply_migrations, open_connection

# Append-only: entry i brings schema version i + 1. Never edit one. The version lives in its
# own table, so the session store's migrations and these never interfere.
SQLITE_ITEM_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE ogmem_items (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            search_text TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            expires_at TEXT,
            ttl_minutes REAL,
            PRIMARY KEY (ns, key)
        )""",
        "CREATE INDEX ogmem_items_expiry ON ogmem_items (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE ogmem_item_vectors (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            field TEXT NOT NULL,
            embedding BLOB NOT NULL,
            PRIMARY KEY (ns, key, field),
            FOREIGN KEY (ns, key) REFERENCES ogmem_items (ns, key) ON DELETE CASCADE
        )""",
    ),
)


def _sqlite_ts(ts: datetime) -> str:
    # One fixed format (always microseconds, always +00:00), so text order is time order.
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _sqlite_from_ts(text: Any) -> datetime:
    return datetime.fromisoformat(str(text))


_SQLITE: Final = SQLDialect(
    names={"items": "ogmem_items", "vectors": "ogmem_item_vectors", "json_in": "?", "json_out": "value"},
    placeholder="?",
    to_db=_sqlite_ts,
    from_db=_sqlite_from_ts,
)


class SQLiteItemStore(ItemStore):
    """Items in a SQLite file, usually the one the ``SQLiteStore`` keeps sessions in.

    Its own connection to the file, with the session store's discipline: WAL, the same
    ``synchronous`` default (``NORMAL``: every acknowledged write survives a process crash),
    ``BEGIN IMMEDIATE`` for writes, one read transaction per read, a lock per connection,
    and append-only migrations recorded in ``ogmem_items_schema``.

    Args:
        path: Database file (created on ``setup``); ``":memory:"`` for a private one.
        synchronous: SQLite ``synchronous`` pragma (``OFF``, ``NORMAL``, ``FULL``, ``EXTRA``).
        busy_timeout_ms: How long a writer waits for another connection's transaction.

    Raises:
        ConfigError: An invalid option (checked without I/O).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "ogmem.db",
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        if isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int) or busy_timeout_ms < 0:
            raise ConfigError(f"busy_timeout_ms must be a non-negative int, got {busy_timeout_ms!r}")
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._empty_conn: sqlite3.Connection | None = None
        self._probe: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteItemStore({self.path!r})"

    def setup(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            try:
                conn = open_connection(
                    self.path, self.synchronous, self.busy_timeout_ms, self._migrate
                )  # synchronous validated in __init__
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            self._conn = conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        apply_migrations(conn, "ogmem_items_schema", SQLITE_ITEM_MIGRATIONS, "item schema")

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._empty_conn, self._probe):
                if conn is not None:
                    conn.close()
            self._conn = self._empty_conn = self._probe = None

    def _has_tables(self) -> bool:
        """Whether the file holds the item tables (looked up without creating or changing anything).

        The lookup connection stays open until the tables exist: until a first memory is written,
        every read of memories (each get_context) asks, and opening a connection each time would
        cost more than the read itself.
        """
        if self.path == ":memory:" or not os.path.isfile(self.path):
            return self.path == ":memory:"
        try:
            if self._probe is None:
                self._probe = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_ms / 1000, check_same_thread=False
                )
            # fetchall finishes the statement: the probe holds no read snapshot between calls
            found = bool(
                self._probe.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ogmem_items_schema'"
                ).fetchall()
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        if found:  # from now on the item connection reads the file itself
            self._probe.close()
            self._probe = None
        return found

    def _empty(self) -> sqlite3.Connection:
        """A private, empty in-memory item schema: what a read sees before any item was written."""
        if self._empty_conn is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._migrate(conn)
            self._empty_conn = conn
        return self._empty_conn

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[ItemTransaction]:
        with self._lock:
            conn: sqlite3.Connection | None
            if not write and self._conn is None and not self._has_tables():
                # a read never creates the tables (nor the file): `ogmem show` and a first
                # get_context leave a database without memories byte for byte as it was
                conn = self._empty()
            else:
                self.setup()
                conn = self._conn
            assert conn is not None
            try:
                # IMMEDIATE takes the write lock up front: no deadlock-prone lock upgrade later.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite transaction failed to start: {exc}") from exc
            try:
                yield SQLTransaction(SQLCursor(conn.execute), _SQLITE)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error | UnicodeEncodeError):
                    raise translate_error(exc, "SQLite item operation") from exc
                raise
