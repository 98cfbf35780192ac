"""PostgresStore: sessions in PostgreSQL, safe across threads, processes and machines.

Every operation is written once, as a *program*: a generator that yields SQL steps
``(query, params)`` and receives each step's rows. A sync driver runs programs on a
``psycopg_pool.ConnectionPool``, an async driver on an ``AsyncConnectionPool`` of the
running event loop, so the SQL and the decisions around it are shared and contain no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import select
import threading
from collections.abc import Generator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ogmem_memory.errors import (
    AccessDeniedError,
    ConcurrencyError,
    ConfigError,
    InvalidInputError,
    OgmemError,
    SchemaVersionError,
    SessionNotFoundError,
    StoreError,
)
from ogmem_memory.models import ArchiveEntry, RequestContext, SessionHead, SessionMessage, SessionRecord
from ogmem_memory.recall import MAX_TERM_DOCS, interleave, rank_by_overlap, search_terms
from ogmem_memory.stores.base import SessionStore

__all__ = ["POSTGRES_MIGRATIONS", "PostgresStore"]

# Append-only: the index of a script + 1 is the schema version it brings. Never edit one.
# ``{schema}`` is substituted with a quoted identifier (psycopg.sql), nothing else is.
# The search column uses the ``simple`` config (no stemming, no stop words: names and
# numbers match as typed) over the text with punctuation turned into spaces, so that
# "INV-2024-0042" or "3.5" index the same words ``recall.query_terms`` searches for.
# Every append updates its session row (seq allocation); no index covers the columns it
# changes and the fillfactor leaves room on the page, so those updates stay HOT (cheap).
POSTGRES_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE {schema}.ogmem_sessions (
        session_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        message_count BIGINT NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL DEFAULT 0,
        archive_version BIGINT NOT NULL DEFAULT 0,
        commit_count BIGINT NOT NULL DEFAULT 0,
        last_commit_at TIMESTAMPTZ
    ) WITH (fillfactor = 70);
    CREATE INDEX ogmem_sessions_owner ON {schema}.ogmem_sessions (account_id, user_id);
    CREATE TABLE {schema}.ogmem_messages (
        session_id TEXT NOT NULL REFERENCES {schema}.ogmem_sessions (session_id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        id TEXT NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        payload JSON,
        created_at TIMESTAMPTZ NOT NULL,
        tokens INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
        archive_id TEXT,
        search TSVECTOR,
        PRIMARY KEY (session_id, seq),
        UNIQUE (session_id, id)
    );
    CREATE INDEX ogmem_messages_status ON {schema}.ogmem_messages (session_id, status, seq);
    CREATE INDEX ogmem_messages_search ON {schema}.ogmem_messages USING GIN (search);
    CREATE TABLE {schema}.ogmem_archives (
        session_id TEXT NOT NULL REFERENCES {schema}.ogmem_sessions (session_id) ON DELETE CASCADE,
        archive_id TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        overview TEXT NOT NULL,
        abstract TEXT NOT NULL,
        first_seq BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        message_count INTEGER NOT NULL,
        token_count INTEGER NOT NULL,
        metadata JSON NOT NULL,
        merged_into TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (session_id, archive_id)
    );
    CREATE INDEX ogmem_archives_live ON {schema}.ogmem_archives (session_id, merged_into, last_seq);
    CREATE TABLE {schema}.ogmem_state (
        session_id TEXT PRIMARY KEY REFERENCES {schema}.ogmem_sessions (session_id) ON DELETE CASCADE,
        payload JSON NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    """,
)

_Row: TypeAlias = tuple[Any, ...]
_Rows: TypeAlias = list[_Row]
_Step: TypeAlias = tuple[sql.SQL | sql.Composed, Sequence[Any] | Mapping[str, Any] | None]
_T = TypeVar("_T")
_Program: TypeAlias = Generator[_Step, _Rows, _T]

_MSG_COLS: Final = "seq, id, role, content, payload, created_at, tokens, status, archive_id"
_ARCHIVE_COLS: Final = (
    "archive_id, session_id, created_at, overview, abstract, first_seq, last_seq, "
    "message_count, token_count, metadata, merged_into"
)
_SESSION_COLS: Final = (
    "session_id, account_id, user_id, agent_id, created_at, updated_at, message_count, "
    "last_seq, archive_version, commit_count, last_commit_at"
)

_SELECT_SESSION: Final = "SELECT {session_cols} FROM {sessions} WHERE session_id = %s"
_INSERT_SESSION: Final = (
    "INSERT INTO {sessions} (session_id, account_id, user_id, agent_id, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, now(), now()) ON CONFLICT (session_id) DO NOTHING RETURNING {session_cols}"
)
_SESSIONS_ORDER: Final = " ORDER BY updated_at DESC, session_id DESC LIMIT %s OFFSET %s"
_SELECT_SESSIONS: Final = "SELECT {session_cols} FROM {sessions}" + _SESSIONS_ORDER
_SELECT_OWNER_SESSIONS: Final = (
    "SELECT {session_cols} FROM {sessions} WHERE account_id = %s AND user_id = %s" + _SESSIONS_ORDER
)
_SESSION_OWNER: Final = "SELECT account_id, user_id FROM {sessions} WHERE session_id = %s"
_DELETE_SESSION: Final = "DELETE FROM {sessions} WHERE session_id = %s RETURNING 1"
# last_seq is kept so seqs stay unique for caches that saw the old ones
_CLEAR_SESSION: Final = (
    "UPDATE {sessions} SET message_count = 0, archive_version = archive_version + 1, updated_at = now() "
    "WHERE session_id = %s RETURNING 1"
)
_HEAD: Final = "SELECT last_seq, archive_version FROM {sessions} WHERE session_id = %s"
_LOCK_SESSION: Final = "SELECT 1 FROM {sessions} WHERE session_id = %s FOR NO KEY UPDATE"
_BUMP_ARCHIVE_VERSION: Final = (
    "UPDATE {sessions} SET archive_version = archive_version + 1 WHERE session_id = %s RETURNING 1"
)
_COUNT_COMMIT: Final = (
    "UPDATE {sessions} SET archive_version = archive_version + 1, commit_count = commit_count + 1, "
    "last_commit_at = now(), updated_at = now() WHERE session_id = %s RETURNING 1"
)
# The compare-and-set: when a concurrent winner flipped some of these rows first, this
# UPDATE waits for its commit, re-checks them under READ COMMITTED and skips them.
# Only archived messages are indexed for recall, here, in the archive transaction: active
# ones are in every context anyway, and indexing at append time would slow add_message.
_FLIP_MESSAGES: Final = (
    "UPDATE {messages} SET status = 'archived', archive_id = %s, "
    "search = to_tsvector('english', regexp_replace(left(content, 100000), '[[:punct:]]+', ' ', 'g')) "
    "WHERE session_id = %s AND status = 'active' AND id = ANY(%s::text[]) RETURNING 1"
)
_INSERT_ARCHIVE: Final = (
    "INSERT INTO {archives} ({archive_cols}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s)"
)
_SELECT_ARCHIVE: Final = "SELECT {archive_cols} FROM {archives} WHERE session_id = %s AND archive_id = %s"
_ARCHIVE_MESSAGES: Final = (
    "SELECT {msg_cols} FROM {messages} WHERE session_id = %s AND status = 'archived' "
    "AND seq BETWEEN %s AND %s ORDER BY seq"
)
_ARCHIVES_ORDER: Final = " ORDER BY last_seq DESC, created_at DESC, archive_id DESC LIMIT %s"
_SELECT_ARCHIVES: Final = "SELECT {archive_cols} FROM {archives} WHERE session_id = %s" + _ARCHIVES_ORDER
_SELECT_LIVE_ARCHIVES: Final = (
    "SELECT {archive_cols} FROM {archives} WHERE session_id = %s AND merged_into = ''" + _ARCHIVES_ORDER
)
_MARK_SOURCES: Final = (
    "UPDATE {archives} SET merged_into = %s WHERE session_id = %s AND merged_into = '' "
    "AND archive_id = ANY(%s::text[]) AND archive_id <> %s RETURNING 1"
)
_MARK_MERGED: Final = (
    "UPDATE {archives} SET merged_into = %s WHERE session_id = %s AND archive_id = %s "
    "AND merged_into IN ('', %s) RETURNING 1"
)
_UNMARK_MERGED: Final = (
    "UPDATE {archives} SET merged_into = '' WHERE session_id = %s AND archive_id = %s "
    "AND merged_into = %s RETURNING 1"
)
_DELETE_ARCHIVE: Final = "DELETE FROM {archives} WHERE session_id = %s AND archive_id = %s RETURNING 1"
_SAVE_STATE: Final = (
    "INSERT INTO {state} (session_id, payload, updated_at) "
    "SELECT session_id, %s::json, now() FROM {sessions} WHERE session_id = %s "
    "ON CONFLICT (session_id) DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at "
    "RETURNING 1"
)
_LOAD_STATE: Final = "SELECT payload FROM {state} WHERE session_id = %s"
_OWNER_SCOPE: Final = (
    "m.session_id IN (SELECT session_id FROM {sessions} WHERE account_id = %s AND user_id = %s)"
)
# One statement, so one implicit transaction: the UPDATE takes the session's row lock,
# which serialises seq allocation across every connection, process and machine.
_APPEND: Final = """
    WITH s AS (
        UPDATE {sessions}
        SET last_seq = last_seq + %(n)s, message_count = message_count + %(n)s, updated_at = now()
        WHERE session_id = %(sid)s
        RETURNING last_seq - %(n)s AS base
    )
    INSERT INTO {messages} (session_id, seq, id, role, content, payload, created_at, tokens)
    SELECT %(sid)s, s.base + m.ord, m.id, m.role, m.content, m.payload::json, m.created_at, m.tokens
    FROM s, unnest(
        %(ids)s::text[], %(roles)s::text[], %(contents)s::text[], %(payloads)s::text[],
        %(created)s::timestamptz[], %(tokens)s::integer[]
    ) WITH ORDINALITY AS m (id, role, content, payload, created_at, tokens, ord)
    RETURNING id, seq
"""
# The same for one message without arrays: the common case (a chat turn is written one
# message at a time by most frameworks) costs a quarter less on the server.
_APPEND_ONE: Final = """
    WITH s AS (
        UPDATE {sessions}
        SET last_seq = last_seq + 1, message_count = message_count + 1, updated_at = now()
        WHERE session_id = %(sid)s
        RETURNING last_seq
    )
    INSERT INTO {messages} (session_id, seq, id, role, content, payload, created_at, tokens)
    SELECT %(sid)s, s.last_seq, %(id)s, %(role)s, %(content)s, %(payload)s::json, %(created)s, %(tokens)s
    FROM s
    RETURNING id, seq
"""
_SEARCH: Final = """
    SELECT {msg_cols_m} FROM {messages} m, to_tsquery('english', %s) q
    WHERE m.search @@ q AND {scope}
    ORDER BY ts_rank(m.search, q) DESC, m.session_id, m.seq
    LIMIT %s
"""
# How many archived messages hold each term, counting no further than the cap: bounded work
# whatever the history, in one round trip.
_TERM_DOCS: Final = """
    SELECT t.term, (
        SELECT count(*) FROM (
            SELECT 1 FROM {messages} m WHERE m.search @@ to_tsquery('english', t.q) LIMIT %s
        ) hits
    )
    FROM unnest(%s::text[], %s::text[]) AS t (term, q)
"""
_ACTIVE_IN_SCOPE: Final = "SELECT {msg_cols_m} FROM {messages} m WHERE m.status = 'active' AND {scope}"
_MESSAGES_BY_SEQ: Final = (
    "SELECT {msg_cols} FROM {messages} WHERE session_id = %s AND seq = ANY(%s::bigint[]) ORDER BY seq"
)
_MIGRATIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS {schema}.ogmem_migrations "
    "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _message(row: _Row) -> SessionMessage:
    return SessionMessage(
        id=row[1],
        role=row[2],
        content=row[3],
        payload=row[4],
        created_at=_utc(row[5]),
        seq=row[0],
        tokens=row[6],
        status=row[7],
        archive_id=row[8],
    )


def _archive(row: _Row) -> ArchiveEntry:
    return ArchiveEntry(
        archive_id=row[0],
        session_id=row[1],
        created_at=_utc(row[2]),
        overview=row[3],
        abstract=row[4],
        first_seq=row[5],
        last_seq=row[6],
        message_count=row[7],
        token_count=row[8],
        metadata=row[9],
        merged_into=row[10],
    )


def _record(row: _Row) -> SessionRecord:
    return SessionRecord(
        session_id=row[0],
        account_id=row[1],
        user_id=row[2],
        agent_id=row[3],
        created_at=_utc(row[4]),
        updated_at=_utc(row[5]),
        message_count=row[6],
        last_seq=row[7],
        archive_version=row[8],
        commit_count=row[9],
        last_commit_at=_utc(row[10]) if row[10] is not None else None,
    )


def _json(value: Mapping[str, Any] | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        # Stored as JSON (not JSONB) text: key order and "\u0000" escapes round-trip exactly.
        return json.dumps(dict(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not JSON-serialisable: {exc}") from exc


def _tsquery(terms: Sequence[str]) -> str:
    """OR of quoted lexemes: quoting makes every character data, never tsquery syntax."""
    return " | ".join("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in terms)


def _translate(exc: BaseException, timeout: float) -> OgmemError:
    if isinstance(exc, UnicodeEncodeError):
        return InvalidInputError(f"text is not valid UTF-8 (lone surrogate?): {exc}")
    if isinstance(exc, psycopg.DataError) and "NUL (0x00)" in str(exc):
        return InvalidInputError("PostgreSQL text cannot contain NUL (0x00) characters")
    if isinstance(exc, PoolTimeout):
        return StoreError(f"no PostgreSQL connection within {timeout:g}s (server down or pool exhausted)")
    if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        return ConcurrencyError(f"another writer changed the same rows: {exc}")
    if isinstance(exc, pg_errors.QueryCanceled):
        return StoreError(f"PostgreSQL statement cancelled (statement_timeout {timeout:g}s?): {exc}")
    return StoreError(f"PostgreSQL operation failed: {type(exc).__name__}: {exc}")


def _socket_has_input(fd: int) -> bool:
    """True when an idle connection's socket is readable: the server sent a FATAL or hung up."""
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):  # fd beyond FD_SETSIZE: let the real check decide
        return True
    return bool(readable)


def _drive(conn: psycopg.Connection[Any], program: _Program[_T]) -> _T:
    try:
        step = next(program)
        while True:
            try:
                cur = conn.execute(step[0], step[1])
                rows = cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                step = program.throw(exc)  # the program may turn it into a domain error
            else:
                step = program.send(rows)
    except StopIteration as stop:
        result: _T = stop.value
        return result


async def _adrive(conn: psycopg.AsyncConnection[Any], program: _Program[_T]) -> _T:
    try:
        step = next(program)
        while True:
            try:
                cur = await conn.execute(step[0], step[1])
                rows = await cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                step = program.throw(exc)
            else:
                step = program.send(rows)
    except StopIteration as stop:
        result: _T = stop.value
        return result


def _opened(task: asyncio.Task[AsyncConnectionPool[Any]] | None) -> AsyncConnectionPool[Any] | None:
    """The pool a finished opening task produced, or ``None``."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


_PASSWORD_IN_URL: Final = re.compile(r"(://[^:/@]*:)[^@]*@")
_PASSWORD_KV: Final = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)


class PostgresStore(SessionStore):
    """Sessions in PostgreSQL through psycopg 3 connection pools.

    Safe across threads, asyncio tasks, processes and machines: seqs are allocated
    under the session's row lock, archives are a compare-and-set in one transaction,
    and migrations run once under an advisory lock. Sync methods use a
    ``ConnectionPool``; the native async twins use an ``AsyncConnectionPool`` opened
    lazily in the running event loop (one per loop).

    Args:
        dsn: libpq connection string or ``postgresql://`` URL. May be omitted when
            ``pool`` is given.
        schema: Schema holding the tables; created by ``setup()`` when missing.
        min_size: Connections each pool keeps open.
        max_size: Most connections each pool opens.
        timeout: Seconds bounding every call: waiting for a pooled connection, the
            ``statement_timeout`` of each statement and the connect timeout.
        application_name: Reported in ``pg_stat_activity``.
        pool: An open ``ConnectionPool`` to use for sync calls instead of creating
            one. Its owner opens and closes it; its connections should be autocommit.

    Raises:
        ConfigError: An option is invalid (checked without I/O).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        application_name: str = "ogmem-memory",
        pool: ConnectionPool[Any] | None = None,
    ) -> None:
        if dsn is None and pool is None:
            raise ConfigError("PostgresStore needs a dsn or a pool")
        if not isinstance(schema, str) or not schema:
            raise ConfigError(f"schema must be a non-empty string, got {schema!r}")
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigError(f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if dsn is None:
            assert pool is not None
            conninfo = pool.conninfo
            dsn = conninfo() if callable(conninfo) else conninfo
        self.dsn: str = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self.application_name = application_name
        self._user_pool = pool
        self._pool: ConnectionPool[Any] | None = None
        self._apools: dict[asyncio.AbstractEventLoop, asyncio.Task[AsyncConnectionPool[Any]]] = {}
        self._migrated = False
        self._lock = threading.RLock()  # setup/close; held during the migration's I/O
        self._apools_lock = threading.Lock()  # never held across I/O: the event loop takes it
        self._closing: set[asyncio.Future[Any]] = set()
        self._guards: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        names = {
            "schema": sql.Identifier(schema),
            "sessions": sql.Identifier(schema, "ogmem_sessions"),
            "messages": sql.Identifier(schema, "ogmem_messages"),
            "archives": sql.Identifier(schema, "ogmem_archives"),
            "state": sql.Identifier(schema, "ogmem_state"),
            "migrations": sql.Identifier(schema, "ogmem_migrations"),
            "msg_cols": sql.SQL(_MSG_COLS),
            "msg_cols_m": sql.SQL(", ".join(f"m.{c.strip()}" for c in _MSG_COLS.split(","))),
            "archive_cols": sql.SQL(_ARCHIVE_COLS),
            "session_cols": sql.SQL(_SESSION_COLS),
        }
        self._names: dict[str, sql.Composable] = names
        self._queries: dict[str, sql.Composed] = {}

    def __repr__(self) -> str:
        dsn = _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", self.dsn))
        return f"PostgresStore({dsn!r}, schema={self.schema!r})"

    def _q(self, template: str, **extra: sql.Composable) -> sql.Composed:
        """``template`` with table and column names filled in (cached; no values ever)."""
        if extra:
            return sql.SQL(template).format(**self._names, **extra)
        query = self._queries.get(template)
        if query is None:
            query = self._queries[template] = sql.SQL(template).format(**self._names)
        return query

    # -- connections -------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self._user_pool is not None:
            pool_kwargs = self._user_pool.kwargs
            kwargs.update((pool_kwargs() if callable(pool_kwargs) else pool_kwargs) or {})
        kwargs.update(
            autocommit=True,
            connect_timeout=max(2, math.ceil(self.timeout)),
            application_name=self.application_name,
            # Without keepalives a call to a vanished machine would wait for the TCP timeout.
            keepalives=1,
            keepalives_idle=max(1, math.ceil(self.timeout)),
            keepalives_interval=max(1, math.ceil(self.timeout / 4)),
            keepalives_count=3,
        )
        return kwargs

    def _timeouts(self) -> _Step:
        ms = str(math.ceil(self.timeout * 1000))
        # A client stopped mid-transaction must not hold the session's row lock forever.
        return (
            sql.SQL(
                "SELECT set_config('statement_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)"
            ),
            (ms, ms),
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(*self._timeouts())

    async def _aconfigure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(*self._timeouts())

    # An idle connection never has unread input (we do not LISTEN), so a readable socket
    # means pg_terminate_backend or a server restart: only then pay for a round trip. When
    # one is dead the others usually are too; pool.check() drops them all at once, where
    # the pool alone would retry them one by one with growing back-off delays.

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        if conn.closed or conn.broken or _socket_has_input(conn.fileno()):
            try:
                ConnectionPool.check_connection(conn)
            except Exception:
                if self._pool is not None:
                    self._pool.check()
                raise

    async def _acheck(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.closed or conn.broken or _socket_has_input(conn.fileno()):
            try:
                await AsyncConnectionPool.check_connection(conn)
            except Exception:
                task = self._apools.get(asyncio.get_running_loop())
                if task is not None and task.done():
                    await task.result().check()
                raise

    def _migration(self) -> _Program[int]:
        # Every process runs this; the advisory lock makes the first one migrate and the
        # others then find the recorded version. Scoped per schema so tenants don't queue.
        yield (
            sql.SQL("SELECT set_config('statement_timeout', %s, true)"),
            (str(math.ceil(self.timeout * 1000)),),
        )
        yield (
            sql.SQL("SELECT pg_advisory_xact_lock(hashtext('ogmem_memory.migrations'), hashtext(%s))"),
            (self.schema,),
        )
        # Waiting for the lock is bounded like every call; the DDL itself may take long on big tables.
        yield sql.SQL("SELECT set_config('statement_timeout', '0', true)"), None
        if not (yield sql.SQL("SELECT 1 FROM pg_namespace WHERE nspname = %s"), (self.schema,)):
            yield self._q("CREATE SCHEMA {schema}"), None
        yield self._q(_MIGRATIONS_TABLE), None
        rows = yield self._q("SELECT coalesce(max(version), 0) FROM {migrations}"), None
        version = int(rows[0][0])
        if version > len(POSTGRES_MIGRATIONS):
            raise SchemaVersionError(
                f"schema {self.schema!r} is at version {version}, newer than this ogmem-memory "
                f"({len(POSTGRES_MIGRATIONS)}); upgrade ogmem-memory"
            )
        for number, script in enumerate(POSTGRES_MIGRATIONS[version:], start=version + 1):
            yield self._q(script), None
            yield self._q("INSERT INTO {migrations} (version) VALUES (%s)"), (number,)
        return len(POSTGRES_MIGRATIONS)

    def _new_pool(self) -> ConnectionPool[Any]:
        return ConnectionPool(
            self.dsn,
            kwargs=self._connect_kwargs(),
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.timeout,
            configure=self._configure,
            check=self._check,
            name=f"ogmem:{self.schema}",
            open=False,
        )

    # -- lifecycle ---------------------------------------------------------------

    def setup(self) -> None:
        """Apply migrations (once, under an advisory lock) and open the connection pool.

        Idempotent; every method calls it on first use.

        Raises:
            SchemaVersionError: The database schema is newer than this code.
            StoreError: The server cannot be reached or the migration failed.
        """
        with self._lock:
            if not self._migrated:
                try:
                    with psycopg.connect(self.dsn, **self._connect_kwargs()) as conn, conn.transaction():
                        _drive(conn, self._migration())
                except (psycopg.Error, UnicodeError) as exc:
                    raise StoreError(f"cannot set up {self!r}: {exc}") from exc
                self._migrated = True
            if self._pool is None:
                if self._user_pool is not None:
                    self._pool = self._user_pool
                else:
                    pool = self._new_pool()
                    pool.open()
                    self._pool = pool

    def close(self) -> None:
        """Close the pools this store opened (a pool passed in stays open). Idempotent.

        The store can be used again afterwards; it then reopens its pools.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        with self._apools_lock:
            apools, self._apools = self._apools, {}
        if pool is not None and pool is not self._user_pool:
            pool.close(timeout=self.timeout)
        for loop, task in apools.items():
            self._close_async_pool_from_sync(loop, task)

    def _close_async_pool_from_sync(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[AsyncConnectionPool[Any]]
    ) -> None:
        # An async pool lives in its loop: close it there if that loop can still run code.
        pool = _opened(task)
        if pool is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            closing = loop.create_task(pool.close(timeout=self.timeout))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(pool.close(timeout=self.timeout), loop).result(self.timeout * 2)
        else:
            with contextlib.suppress(RuntimeError):  # this thread runs another loop: leave it to GC
                loop.run_until_complete(pool.close(timeout=self.timeout))

    def _sync_pool(self) -> ConnectionPool[Any]:
        pool = self._pool
        if pool is None:
            self.setup()
            pool = self._pool
            assert pool is not None
        return pool

    def _run(self, program: _Program[_T], *, transaction: bool = False) -> _T:
        try:
            with self._sync_pool().connection(timeout=self.timeout) as conn:
                tx: AbstractContextManager[Any] = conn.transaction() if transaction else nullcontext()
                with tx:
                    return _drive(conn, program)
        except (psycopg.Error, UnicodeEncodeError) as exc:
            raise _translate(exc, self.timeout) from exc

    async def asetup(self) -> None:
        """Native async ``setup``: migrate and open this event loop's connection pool."""
        await self._async_pool()

    async def aclose(self) -> None:
        """Close this loop's async pool (natively) and the sync pool."""
        loop = asyncio.get_running_loop()
        with self._apools_lock:
            task = self._apools.pop(loop, None)
        if task is not None:
            try:
                pool = await task
            except OgmemError:
                pool = None
            if pool is not None:
                await pool.close(timeout=self.timeout)
        guard = self._guards.pop(loop, None)
        if guard is not None:
            guard.cancel()
        if self._pool is not None or self._apools:
            await asyncio.to_thread(self.close)

    async def _async_pool(self) -> AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        with self._apools_lock:
            task = self._apools.get(loop)
            if task is None:
                # Pools of loops that are gone cannot be closed any more; just forget them.
                self._apools = {lp: t for lp, t in self._apools.items() if not lp.is_closed()}
                task = self._apools[loop] = loop.create_task(self._open_async_pool())
        try:
            return await asyncio.shield(task)
        except BaseException:
            if task.done():
                with self._apools_lock:
                    if self._apools.get(loop) is task:
                        del self._apools[loop]  # a later call retries
            raise

    async def _open_async_pool(self) -> AsyncConnectionPool[Any]:
        if not self._migrated:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, **self._connect_kwargs())
                async with conn, conn.transaction():
                    await _adrive(conn, self._migration())
            except (psycopg.Error, UnicodeError) as exc:
                raise StoreError(f"cannot set up {self!r}: {exc}") from exc
            self._migrated = True
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn,
            kwargs=self._connect_kwargs(),
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.timeout,
            configure=self._aconfigure,
            check=self._acheck,
            name=f"ogmem-async:{self.schema}",
            open=False,
        )
        await pool.open()
        loop = asyncio.get_running_loop()
        self._guards[loop] = loop.create_task(self._close_with_loop(pool))
        return pool

    async def _close_with_loop(self, pool: AsyncConnectionPool[Any]) -> None:
        # asyncio.run() ends by cancelling every task of its loop and waiting for them.
        # psycopg_pool's maintenance tasks survive a cancellation that lands mid-task, so a
        # pool left open would hang that shutdown; this task closes the pool right then.
        loop = asyncio.get_running_loop()
        try:
            await loop.create_future()
        finally:
            with self._apools_lock:
                if _opened(self._apools.get(loop)) is pool:
                    del self._apools[loop]
            await pool.close(timeout=self.timeout)

    async def _arun(self, program: _Program[_T], *, transaction: bool = False) -> _T:
        pool = await self._async_pool()
        try:
            async with pool.connection(timeout=self.timeout) as conn:
                tx: AbstractAsyncContextManager[Any] = conn.transaction() if transaction else nullcontext()
                async with tx:
                    return await _adrive(conn, program)
        except (psycopg.Error, UnicodeEncodeError) as exc:
            raise _translate(exc, self.timeout) from exc

    # -- sessions ----------------------------------------------------------------

    def _bind(self, session_id: str, identity: RequestContext) -> _Program[SessionRecord]:
        select_one = self._q(_SELECT_SESSION)
        rows = yield select_one, (session_id,)
        for _ in range(3):
            if rows:
                break
            values = (session_id, identity.account_id, identity.user_id, identity.agent_id)
            rows = yield self._q(_INSERT_SESSION), values
            if not rows:
                # Another writer bound it first; a new statement sees its committed row.
                rows = yield select_one, (session_id,)
        if not rows:
            raise StoreError(f"session {session_id!r} was deleted while being bound")
        record = _record(rows[0])
        if record.owner != identity.owner:
            raise AccessDeniedError(f"session {session_id!r} belongs to another user")
        return record

    def bind_session(self, session_id: str, identity: RequestContext) -> SessionRecord:
        return self._run(self._bind(session_id, identity))

    async def abind_session(self, session_id: str, identity: RequestContext) -> SessionRecord:
        return await self._arun(self._bind(session_id, identity))

    def _get_record(self, session_id: str) -> _Program[SessionRecord | None]:
        rows = yield self._q(_SELECT_SESSION), (session_id,)
        return _record(rows[0]) if rows else None

    def get_session_record(self, session_id: str) -> SessionRecord | None:
        return self._run(self._get_record(session_id))

    def _list_sessions(
        self, owner: tuple[str, str] | None, limit: int, offset: int
    ) -> _Program[list[SessionRecord]]:
        if owner is None:
            rows = yield self._q(_SELECT_SESSIONS), (limit, offset)
        else:
            rows = yield self._q(_SELECT_OWNER_SESSIONS), (owner[0], owner[1], limit, offset)
        return [_record(r) for r in rows]

    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        return self._run(self._list_sessions(owner, max(limit, 0), max(offset, 0)))

    def _delete_session(self, session_id: str) -> _Program[bool]:
        rows = yield self._q(_DELETE_SESSION), (session_id,)
        return bool(rows)

    def delete_session(self, session_id: str) -> bool:
        return self._run(self._delete_session(session_id))

    def _clear_session(self, session_id: str) -> _Program[None]:
        # The session row first: the lock every writer of this session takes, in this order.
        rows = yield self._q(_CLEAR_SESSION), (session_id,)
        if not rows:
            return None
        for table in ("{messages}", "{archives}", "{state}"):
            yield self._q(f"DELETE FROM {table} WHERE session_id = %s"), (session_id,)
        return None

    def clear_session(self, session_id: str) -> None:
        self._run(self._clear_session(session_id), transaction=True)

    # -- messages ----------------------------------------------------------------

    def _append(self, session_id: str, messages: Sequence[SessionMessage]) -> _Program[list[SessionMessage]]:
        statement, params = self._append_statement(session_id, messages)
        try:
            rows = yield self._q(statement), params
        except pg_errors.UniqueViolation as exc:
            raise InvalidInputError(f"duplicate message id in session {session_id!r}") from exc
        if not rows:
            raise SessionNotFoundError(f"session {session_id!r} does not exist")
        seqs: dict[str, int] = {r[0]: r[1] for r in rows}
        return [replace(m, seq=seqs[m.id], status="active", archive_id=None) for m in messages]

    @staticmethod
    def _append_statement(session_id: str, messages: Sequence[SessionMessage]) -> tuple[str, dict[str, Any]]:
        if len(messages) == 1:
            (m,) = messages
            payload = _json(m.payload, f"payload of message {m.id!r}")
            return _APPEND_ONE, {
                "sid": session_id,
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "payload": payload,
                "created": m.created_at,
                "tokens": m.tokens,
            }
        return _APPEND, {
            "sid": session_id,
            "n": len(messages),
            "ids": [m.id for m in messages],
            "roles": [m.role for m in messages],
            "contents": [m.content for m in messages],
            "payloads": [_json(m.payload, f"payload of message {m.id!r}") for m in messages],
            "created": [m.created_at for m in messages],
            "tokens": [m.tokens for m in messages],
        }

    def append_messages(self, session_id: str, messages: Sequence[SessionMessage]) -> list[SessionMessage]:
        if not messages:
            return []
        return self._run(self._append(session_id, messages))

    async def aappend_messages(
        self, session_id: str, messages: Sequence[SessionMessage]
    ) -> list[SessionMessage]:
        if not messages:
            return []
        return await self._arun(self._append(session_id, messages))

    def _list_messages(
        self, session_id: str, status: str | None, after_seq: int | None, limit: int | None
    ) -> _Program[list[SessionMessage]]:
        where = "session_id = %s"
        params: list[Any] = [session_id]
        if status is not None:
            where += " AND status = %s"
            params.append(status)
        if after_seq is not None:
            where += " AND seq > %s"
            params.append(after_seq)
        params.append(limit)  # LIMIT NULL means no limit
        rows = yield (
            self._q(f"SELECT {{msg_cols}} FROM {{messages}} WHERE {where} ORDER BY seq LIMIT %s"),
            params,
        )
        return [_message(r) for r in rows]

    def list_messages(
        self,
        session_id: str,
        *,
        status: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[SessionMessage]:
        return self._run(self._list_messages(session_id, status, after_seq, limit))

    async def alist_messages(
        self,
        session_id: str,
        *,
        status: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[SessionMessage]:
        return await self._arun(self._list_messages(session_id, status, after_seq, limit))

    def _head(self, session_id: str) -> _Program[SessionHead | None]:
        rows = yield self._q(_HEAD), (session_id,)
        return SessionHead(rows[0][0], rows[0][1]) if rows else None

    def head(self, session_id: str) -> SessionHead | None:
        return self._run(self._head(session_id))

    async def ahead(self, session_id: str) -> SessionHead | None:
        return await self._arun(self._head(session_id))

    # -- archives ----------------------------------------------------------------

    def _insert_archive(self, a: ArchiveEntry) -> _Program[None]:
        metadata = _json(a.metadata, f"metadata of archive {a.archive_id!r}")
        params = (a.archive_id, a.session_id, a.created_at, a.overview, a.abstract, a.first_seq, a.last_seq)
        try:
            yield self._q(_INSERT_ARCHIVE), (*params, a.message_count, a.token_count, metadata, a.merged_into)
        except pg_errors.UniqueViolation as exc:
            raise ConcurrencyError(f"archive {a.archive_id!r} already exists") from exc

    def _commit_archive(
        self, session_id: str, archive: ArchiveEntry, message_ids: Sequence[str]
    ) -> _Program[ArchiveEntry]:
        # Lock order for every writer: session row, then messages, then archives.
        rows = yield self._q(_COUNT_COMMIT), (session_id,)
        if not rows:
            raise SessionNotFoundError(f"session {session_id!r} does not exist")
        ids = list(dict.fromkeys(message_ids))
        flipped = yield self._q(_FLIP_MESSAGES), (archive.archive_id, session_id, ids)
        if len(flipped) != len(ids):
            raise ConcurrencyError(f"messages of {session_id!r} were archived by another writer")
        yield from self._insert_archive(replace(archive, session_id=session_id))
        return replace(archive, session_id=session_id, messages=())

    def commit_archive(
        self, session_id: str, archive: ArchiveEntry, message_ids: Sequence[str]
    ) -> ArchiveEntry:
        return self._run(self._commit_archive(session_id, archive, message_ids), transaction=True)

    def _list_archives(
        self, session_id: str, include_merged: bool, limit: int | None
    ) -> _Program[list[ArchiveEntry]]:
        rows = yield (
            self._q(_SELECT_ARCHIVES if include_merged else _SELECT_LIVE_ARCHIVES),
            (session_id, limit),
        )
        return [_archive(r) for r in rows]

    def list_archives(
        self, session_id: str, *, include_merged: bool = False, limit: int | None = None
    ) -> list[ArchiveEntry]:
        return self._run(self._list_archives(session_id, include_merged, limit))

    async def alist_archives(
        self, session_id: str, *, include_merged: bool = False, limit: int | None = None
    ) -> list[ArchiveEntry]:
        return await self._arun(self._list_archives(session_id, include_merged, limit))

    def _read_archive(self, session_id: str, archive_id: str) -> _Program[ArchiveEntry | None]:
        rows = yield self._q(_SELECT_ARCHIVE), (session_id, archive_id)
        if not rows:
            return None
        archive = _archive(rows[0])
        msgs = yield self._q(_ARCHIVE_MESSAGES), (session_id, archive.first_seq, archive.last_seq)
        return replace(archive, messages=tuple(_message(m) for m in msgs))

    def read_archive(self, session_id: str, archive_id: str) -> ArchiveEntry | None:
        # REPEATABLE READ would cost a round trip; one transaction keeps both reads consistent.
        return self._run(self._read_archive(session_id, archive_id), transaction=True)

    def _merge_archives(
        self, session_id: str, merged: ArchiveEntry, source_ids: Sequence[str]
    ) -> _Program[ArchiveEntry]:
        rows = yield self._q(_BUMP_ARCHIVE_VERSION), (session_id,)
        if not rows:
            raise SessionNotFoundError(f"session {session_id!r} does not exist")
        ids = list(dict.fromkeys(source_ids))
        yield from self._insert_archive(replace(merged, session_id=session_id))
        flipped = yield self._q(_MARK_SOURCES), (merged.archive_id, session_id, ids, merged.archive_id)
        if len(flipped) != len(ids):
            raise ConcurrencyError(f"archives of {session_id!r} were merged by another writer")
        return replace(merged, session_id=session_id, messages=())

    def merge_archives(
        self, session_id: str, merged: ArchiveEntry, source_ids: Sequence[str]
    ) -> ArchiveEntry:
        return self._run(self._merge_archives(session_id, merged, source_ids), transaction=True)

    def _change_archive(self, session_id: str, statement: str, params: Sequence[Any]) -> _Program[bool]:
        if not (yield self._q(_LOCK_SESSION), (session_id,)):
            return False
        changed = yield self._q(statement), params
        if changed:
            yield self._q(_BUMP_ARCHIVE_VERSION), (session_id,)
        return bool(changed)

    def mark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        program = self._change_archive(
            session_id,
            _MARK_MERGED,
            (merged_archive_id, session_id, archive_id, merged_archive_id),
        )
        return self._run(program, transaction=True)

    def unmark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        program = self._change_archive(
            session_id,
            _UNMARK_MERGED,
            (session_id, archive_id, merged_archive_id),
        )
        return self._run(program, transaction=True)

    def delete_archive(self, session_id: str, archive_id: str) -> bool:
        program = self._change_archive(
            session_id,
            _DELETE_ARCHIVE,
            (session_id, archive_id),
        )
        return self._run(program, transaction=True)

    # -- state -------------------------------------------------------------------

    def _save_state(self, session_id: str, payload: Mapping[str, Any]) -> _Program[None]:
        text = _json(payload, "state payload")
        try:
            rows = yield self._q(_SAVE_STATE), (text, session_id)
        except pg_errors.ForeignKeyViolation:
            rows = []  # deleted concurrently
        if not rows:
            raise SessionNotFoundError(f"session {session_id!r} does not exist")

    def save_state(self, session_id: str, payload: Mapping[str, Any]) -> None:
        self._run(self._save_state(session_id, payload))

    def _load_state(self, session_id: str) -> _Program[dict[str, Any] | None]:
        rows = yield self._q(_LOAD_STATE), (session_id,)
        payload = rows[0][0] if rows else None
        return payload if isinstance(payload, dict) else None

    def load_state(self, session_id: str) -> dict[str, Any] | None:
        return self._run(self._load_state(session_id))

    # -- search ------------------------------------------------------------------

    def _search(
        self,
        query: str,
        session_id: str | None,
        owner: tuple[str, str] | None,
        status: str | None,
        limit: int,
    ) -> _Program[list[SessionMessage]]:
        if session_id is None and owner is None:
            raise InvalidInputError("search_messages needs a session_id or an owner")
        terms = search_terms(query)
        if not terms or limit <= 0:
            return []
        scope_params: list[Any] = []
        if session_id is not None:
            if owner is not None:
                rows = yield self._q(_SESSION_OWNER), (session_id,)
                if not rows:
                    return []
                if (rows[0][0], rows[0][1]) != tuple(owner):
                    raise AccessDeniedError(f"session {session_id!r} belongs to another user")
            scope = "m.session_id = %s"
            scope_params.append(session_id)
        else:
            assert owner is not None
            scope = _OWNER_SCOPE
            scope_params.extend(owner)
        scope_sql = sql.SQL(scope).format(**self._names)
        found: list[SessionMessage] = []
        if status in (None, "archived"):
            # A term in thousands of messages says little about any of them, and ranking its
            # matches would make recall cost grow with the history: such terms are left out.
            counts = yield self._q(_TERM_DOCS), (MAX_TERM_DOCS + 1, terms, [_tsquery([t]) for t in terms])
            selective = [t for t, n in counts if n <= MAX_TERM_DOCS]
            if selective:
                rows = yield (
                    self._q(_SEARCH, scope=scope_sql),
                    [_tsquery(selective), *scope_params, limit],
                )
                found = [_message(r) for r in rows]
        if status in (None, "active"):
            # the live windows are bounded by the commit thresholds: score them directly
            rows = yield self._q(_ACTIVE_IN_SCOPE, scope=scope_sql), scope_params
            found = interleave(found, rank_by_overlap(terms, map(_message, rows)), limit)
        return found[:limit]

    def _messages_by_seq(self, session_id: str, seqs: Sequence[int]) -> _Program[list[SessionMessage]]:
        rows = yield self._q(_MESSAGES_BY_SEQ), (session_id, sorted(set(seqs)))
        return [_message(r) for r in rows]

    def list_messages_by_seq(self, session_id: str, seqs: Sequence[int]) -> list[SessionMessage]:
        if not seqs:
            return []
        return self._run(self._messages_by_seq(session_id, seqs))

    def search_messages(
        self,
        query: str,
        *,
        session_id: str | None = None,
        owner: tuple[str, str] | None = None,
        status: str | None = "archived",
        limit: int = 10,
    ) -> list[SessionMessage]:
        return self._run(self._search(query, session_id, owner, status, limit))

    async def asearch_messages(
        self,
        query: str,
        *,
        session_id: str | None = None,
        owner: tuple[str, str] | None = None,
        status: str | None = "archived",
        limit: int = 10,
    ) -> list[SessionMessage]:
        return await self._arun(self._search(query, session_id, owner, status, limit))
