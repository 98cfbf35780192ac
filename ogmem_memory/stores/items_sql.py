"""SQL backends of the item store: SQLite (the session store's file) and PostgreSQL.

Both run the same statements through one transaction class, :class:`_SQLTransaction`;
what differs is written in a :class:`_Dialect` (table names, JSON and timestamp types,
the placeholder) and in how a transaction is opened. psycopg is imported only when a
``PostgresItemStore`` is set up, so importing this module loads no driver.

Vectors are float32 blobs (``BLOB`` / ``BYTEA``) ranked exactly in Python, in PostgreSQL
too: no pgvector needed, and the same bound as everywhere (see ``ogmem_memory.vectors``).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ogmem_memory.errors import (
    ClosedError,
    ConfigError,
    InvalidInputError,
    OgmemError,
    SchemaVersionError,
    StoreError,
)
from ogmem_memory.stores.items import (
    ItemRow,
    ItemStore,
    ItemTransaction,
    ItemWrite,
    Namespace,
    expiry,
    prefix_range,
)

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["POSTGRES_ITEM_MIGRATIONS", "PostgresItemStore", "SQLITE_ITEM_MIGRATIONS", "SQLiteItemStore"]

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

# ``{items}``, ``{vectors}`` and ``{schema}`` are quoted identifiers; COLLATE "C" makes text
# order bytewise, so the namespace prefix range and the scan order match SQLite's.
POSTGRES_ITEM_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE {items} (
            ns TEXT COLLATE "C" NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            value JSON NOT NULL,
            search_text TEXT NOT NULL DEFAULT '',
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ,
            ttl_minutes DOUBLE PRECISION,
            PRIMARY KEY (ns, key)
        )""",
        "CREATE INDEX ogmem_items_expiry ON {items} (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE {vectors} (
            ns TEXT COLLATE "C" NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            field TEXT NOT NULL,
            embedding BYTEA NOT NULL,
            PRIMARY KEY (ns, key, field),
            FOREIGN KEY (ns, key) REFERENCES {items} (ns, key) ON DELETE CASCADE
        )""",
    ),
)

# Statements of every backend, written with ``?`` placeholders (PostgreSQL gets ``%s``).
_COLS: Final = "ns, key, {json_out}, search_text, created_at, updated_at, expires_at, ttl_minutes"
_PREFIX: Final = "(ns = ? OR (ns >= ? AND ns < ?))"
_ALIVE: Final = "(expires_at IS NULL OR expires_at > ?)"
_ORDER: Final = " ORDER BY updated_at DESC, ns, key"
_UPSERT: Final = (
    "INSERT INTO {items} (ns, key, value, search_text, created_at, updated_at, expires_at, ttl_minutes) "
    "VALUES (?, ?, {json_in}, ?, ?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, "
    "search_text = excluded.search_text, updated_at = excluded.updated_at, "
    "expires_at = excluded.expires_at, ttl_minutes = excluded.ttl_minutes"
)
_INSERT_VECTOR: Final = "INSERT INTO {vectors} (ns, key, field, embedding) VALUES (?, ?, ?, ?)"
_DELETE_VECTORS: Final = "DELETE FROM {vectors} WHERE ns = ? AND key = ?"
_DELETE_ITEM: Final = "DELETE FROM {items} WHERE ns = ? AND key = ?"
_REFRESH: Final = "UPDATE {items} SET expires_at = ? WHERE ns = ? AND key = ? AND updated_at = ?"
_EXPIRED: Final = "expires_at IS NOT NULL AND expires_at <= ?"
_FETCH_CHUNK: Final = 400  # (ns, key) pairs per statement: 800 variables, far below SQLite's limit


@dataclass(frozen=True, slots=True)
class _Dialect:
    """What differs between the SQL backends; everything else is shared."""

    names: dict[str, str]
    placeholder: str
    to_db: Callable[[datetime], Any]
    from_db: Callable[[Any], datetime]

    def q(self, template: str) -> str:
        # Templates hold no "%" and no "?" but placeholders; names are pre-escaped for psycopg.
        text = template.format(**self.names)
        return text if self.placeholder == "?" else text.replace("?", "%s")


def _sqlite_ts(ts: datetime) -> str:
    # One fixed format (always microseconds, always +00:00), so text order is time order.
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _sqlite_from_ts(text: Any) -> datetime:
    return datetime.fromisoformat(str(text))


def _pg_from_ts(value: Any) -> datetime:
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


_SQLITE: Final = _Dialect(
    names={"items": "ogmem_items", "vectors": "ogmem_item_vectors", "json_in": "?", "json_out": "value"},
    placeholder="?",
    to_db=_sqlite_ts,
    from_db=_sqlite_from_ts,
)


class _Cursor:
    """The two things a transaction needs from a DB-API connection: rows and row counts."""

    def __init__(self, execute: Callable[[str, Sequence[Any]], Any]) -> None:
        self._execute = execute

    def rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._execute(query, params).fetchall())

    def count(self, query: str, params: Sequence[Any]) -> int:
        return int(self._execute(query, params).rowcount)


class _SQLTransaction(ItemTransaction):
    """:class:`ItemTransaction` over one open SQL transaction (SQLite or PostgreSQL)."""

    def __init__(self, cursor: _Cursor, dialect: _Dialect) -> None:
        self._cur = cursor
        self._d = dialect

    def _row(self, r: Sequence[Any]) -> ItemRow:
        d = self._d
        return ItemRow(
            r[0],
            r[1],
            json.loads(r[2]),
            r[3],
            d.from_db(r[4]),
            d.from_db(r[5]),
            d.from_db(r[6]) if r[6] is not None else None,
            float(r[7]) if r[7] is not None else None,
        )

    def _where(self, prefix: Namespace, alive_at: datetime | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        bounds = prefix_range(prefix)
        if bounds is not None:
            clauses.append(_PREFIX)
            params.extend(bounds)
        if alive_at is not None:
            clauses.append(_ALIVE)
            params.append(self._d.to_db(alive_at))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def fetch(
        self, idents: Sequence[tuple[str, str]], alive_at: datetime | None
    ) -> dict[tuple[str, str], ItemRow]:
        found: dict[tuple[str, str], ItemRow] = {}
        for start in range(0, len(idents), _FETCH_CHUNK):
            chunk = idents[start : start + _FETCH_CHUNK]
            where = " OR ".join(["(ns = ? AND key = ?)"] * len(chunk))
            params: list[Any] = [part for ident in chunk for part in ident]
            if alive_at is not None:
                where = f"({where}) AND {_ALIVE}"
                params.append(self._d.to_db(alive_at))
            query = self._d.q(f"SELECT {_COLS} FROM {{items}} WHERE {where}")
            for r in self._cur.rows(query, params):
                row = self._row(r)
                found[(row.ns, row.key)] = row
        return found

    def scan(self, prefix: Namespace, alive_at: datetime | None, limit: int, offset: int) -> list[ItemRow]:
        where, params = self._where(prefix, alive_at)
        query = self._d.q(f"SELECT {_COLS} FROM {{items}}{where}{_ORDER} LIMIT ? OFFSET ?")
        return [self._row(r) for r in self._cur.rows(query, [*params, limit, offset])]

    def vectors(
        self, prefix: Namespace, idents: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes]]:
        where, params = self._where(prefix, None)
        query = self._d.q(f"SELECT ns, key, field, embedding FROM {{vectors}}{where} ORDER BY ns, key, field")
        out: dict[tuple[str, str], dict[str, bytes]] = {}
        for ns, key, name, blob in self._cur.rows(query, params):
            if (ns, key) in idents:
                out.setdefault((ns, key), {})[name] = bytes(blob)
        return out

    def namespaces(self, prefix: Namespace, alive_at: datetime | None) -> list[str]:
        where, params = self._where(prefix, alive_at)
        return [r[0] for r in self._cur.rows(self._d.q(f"SELECT DISTINCT ns FROM {{items}}{where}"), params)]

    def refresh(self, rows: Sequence[tuple[ItemRow, datetime]]) -> None:
        query = self._d.q(_REFRESH)
        for row, until in rows:
            self._cur.count(query, [self._d.to_db(until), row.ns, row.key, self._d.to_db(row.updated_at)])

    def upsert(self, write: ItemWrite, now: datetime) -> None:
        d = self._d
        until = expiry(now, write.ttl_minutes)
        self._cur.count(
            d.q(_UPSERT),
            [
                write.ns,
                write.key,
                write.value_json,
                write.text,
                d.to_db(now),
                d.to_db(now),
                d.to_db(until) if until is not None else None,
                write.ttl_minutes,
            ],
        )
        self._cur.count(d.q(_DELETE_VECTORS), [write.ns, write.key])
        for name, blob in write.vectors:
            self._cur.count(d.q(_INSERT_VECTOR), [write.ns, write.key, name, blob])

    def delete(self, ns: str, key: str) -> bool:
        self._cur.count(self._d.q(_DELETE_VECTORS), [ns, key])
        return self._cur.count(self._d.q(_DELETE_ITEM), [ns, key]) > 0

    def delete_prefix(self, prefix: Namespace) -> int:
        where, params = self._where(prefix, None)
        self._cur.count(self._d.q(f"DELETE FROM {{vectors}}{where}"), params)
        return self._cur.count(self._d.q(f"DELETE FROM {{items}}{where}"), params)

    def delete_expired(self, now: datetime) -> int:
        at = self._d.to_db(now)
        self._cur.count(
            self._d.q(
                f"DELETE FROM {{vectors}} WHERE (ns, key) IN (SELECT ns, key FROM {{items}} WHERE {_EXPIRED})"
            ),
            [at],
        )
        return self._cur.count(self._d.q(f"DELETE FROM {{items}} WHERE {_EXPIRED}"), [at])


def _translate(exc: BaseException, what: str) -> OgmemError:
    if isinstance(exc, UnicodeEncodeError):
        return InvalidInputError(f"text is not valid UTF-8 (lone surrogate?): {exc}")
    return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")


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

    def __repr__(self) -> str:
        return f"SQLiteItemStore({self.path!r})"

    def setup(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(
                    self.path,
                    check_same_thread=False,
                    isolation_level=None,
                    timeout=self.busy_timeout_ms / 1000,
                )
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(f"PRAGMA synchronous={self.synchronous}")  # validated in __init__
                    conn.execute("PRAGMA foreign_keys=ON")
                    conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
                    self._migrate(conn)
                except BaseException:
                    conn.close()
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            self._conn = conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS ogmem_items_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM ogmem_items_schema").fetchone()
            version = row[0] if row else 0
            if version > len(SQLITE_ITEM_MIGRATIONS):
                raise SchemaVersionError(
                    f"item schema version {version} is newer than this ogmem-memory "
                    f"({len(SQLITE_ITEM_MIGRATIONS)}); upgrade ogmem-memory"
                )
            for script in SQLITE_ITEM_MIGRATIONS[version:]:
                for statement in script:
                    conn.execute(statement)
            if row is None:
                conn.execute(
                    "INSERT INTO ogmem_items_schema (version) VALUES (?)", (len(SQLITE_ITEM_MIGRATIONS),)
                )
            else:
                conn.execute("UPDATE ogmem_items_schema SET version = ?", (len(SQLITE_ITEM_MIGRATIONS),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[ItemTransaction]:
        with self._lock:
            self.setup()
            conn = self._conn
            assert conn is not None
            try:
                # IMMEDIATE takes the write lock up front: no deadlock-prone lock upgrade later.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite transaction failed to start: {exc}") from exc
            try:
                yield _SQLTransaction(_Cursor(conn.execute), _SQLITE)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error | UnicodeEncodeError):
                    raise _translate(exc, "SQLite item operation") from exc
                raise


class PostgresItemStore(ItemStore):
    """Items in PostgreSQL (psycopg 3 and a connection pool), in the given schema.

    Safe across threads, processes and machines: every batch is one transaction (reads in
    ``REPEATABLE READ, READ ONLY``), migrations run once under an advisory lock and are
    recorded in ``<schema>.ogmem_items_migrations``. Vectors are float32 ``BYTEA`` ranked
    exactly in Python (no pgvector needed). The async twins run the sync methods in a thread.

    Args:
        dsn: libpq connection string or ``postgresql://`` URL.
        schema: Schema of the tables; created by ``setup()`` when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        timeout: Seconds bounding a pool wait, each statement and the connect.

    Raises:
        ConfigError: An invalid option (checked without I/O).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 5,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError("PostgresItemStore needs a dsn")
        if not isinstance(schema, str) or not schema or "\x00" in schema:
            raise ConfigError(f"schema must be a non-empty string, got {schema!r}")
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigError(f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self._pool: ConnectionPool[Any] | None = None
        self._migrated = False
        self._lock = threading.Lock()  # setup/close only; held during the migration's I/O
        self._dialect: _Dialect | None = None

    def __repr__(self) -> str:
        return f"PostgresItemStore(schema={self.schema!r})"

    def _names(self) -> dict[str, str]:
        from psycopg import sql

        def ident(*parts: str) -> str:
            # psycopg reads "%" in a rendered query as a placeholder, even inside a quoted name.
            return sql.Identifier(*parts).as_string(None).replace("%", "%%")

        return {
            "schema": ident(self.schema),
            "items": ident(self.schema, "ogmem_items"),
            "vectors": ident(self.schema, "ogmem_item_vectors"),
            "migrations": ident(self.schema, "ogmem_items_migrations"),
        }

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(self.timeout)),
            "application_name": "ogmem-memory-items",
        }

    def _configure(self, conn: Any) -> None:
        ms = str(math.ceil(self.timeout * 1000))
        # A client stopped mid-transaction must not hold row locks forever.
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (ms, ms),
        )

    def _migrate(self, conn: Any, names: dict[str, str]) -> None:
        def run(template: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            # Always with params (maybe empty): psycopg then reads the "%%" of escaped names as "%".
            cur = conn.execute(template.format(**names), params)
            return list(cur.fetchall()) if cur.description is not None else []

        with conn.transaction():
            run(
                "SELECT pg_advisory_xact_lock(hashtext('ogmem_memory.item_migrations'), hashtext(%s))",
                (self.schema,),
            )
            if not run("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)):
                run("CREATE SCHEMA {schema}")
            run(
                "CREATE TABLE IF NOT EXISTS {migrations} "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            version = int(run("SELECT coalesce(max(version), 0) FROM {migrations}")[0][0])
            if version > len(POSTGRES_ITEM_MIGRATIONS):
                raise SchemaVersionError(
                    f"item schema of {self.schema!r} is at version {version}, newer than this "
                    f"ogmem-memory ({len(POSTGRES_ITEM_MIGRATIONS)}); upgrade ogmem-memory"
                )
            for number, script in enumerate(POSTGRES_ITEM_MIGRATIONS[version:], start=version + 1):
                for statement in script:
                    run(statement)
                run("INSERT INTO {migrations} (version) VALUES (%s)", (number,))

    def setup(self) -> None:
        """Apply migrations (once, under an advisory lock) and open the pool. Idempotent.

        Raises:
            ImportError: psycopg is not installed (with the install command).
            SchemaVersionError: The database's item schema is newer than this code.
            StoreError: The server cannot be reached or the migration failed.
        """
        with self._lock:
            if self._pool is not None:
                return
            try:
                import psycopg
                from psycopg_pool import ConnectionPool
            except ImportError as exc:
                raise ImportError('PostgresItemStore needs: pip install "ogmem-memory[postgres]"') from exc
            names = self._names()
            if not self._migrated:
                try:
                    with psycopg.connect(self.dsn, **self._connect_kwargs()) as conn:
                        self._migrate(conn, names)
                except (psycopg.Error, UnicodeError) as exc:
                    raise StoreError(f"cannot set up {self!r}: {exc}") from exc
                self._migrated = True
            self._dialect = _Dialect(
                names={**names, "json_in": "?::json", "json_out": "value::text"},
                placeholder="%s",
                to_db=lambda ts: ts,
                from_db=_pg_from_ts,
            )
            pool: ConnectionPool[Any] = ConnectionPool(
                self.dsn,
                kwargs=self._connect_kwargs(),
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=self.timeout,
                configure=self._configure,
                check=ConnectionPool.check_connection,
                name=f"ogmem-items:{self.schema}",
                open=False,
            )
            try:
                pool.open(wait=False)
            except psycopg.Error as exc:
                raise StoreError(f"cannot open the pool of {self!r}: {exc}") from exc
            self._pool = pool

    def close(self) -> None:
        """Close the pool. Idempotent; a later operation opens a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=self.timeout)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[ItemTransaction]:
        import psycopg
        from psycopg_pool import PoolTimeout

        self.setup()
        pool, dialect = self._pool, self._dialect
        if pool is None or dialect is None:
            raise ClosedError(f"{self!r} was closed during the call")
        try:
            with pool.connection(timeout=self.timeout) as conn, conn.transaction():
                if not write:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield _SQLTransaction(_Cursor(conn.execute), dialect)
        except PoolTimeout as exc:
            raise StoreError(f"no PostgreSQL connection within {self.timeout:g}s") from exc
        except (psycopg.Error, UnicodeEncodeError) as exc:
            if isinstance(exc, psycopg.DataError) and "NUL" in str(exc):
                raise InvalidInputError("PostgreSQL text cannot contain NUL (0x00) characters") from exc
            raise _translate(exc, "PostgreSQL item operation") from exc
