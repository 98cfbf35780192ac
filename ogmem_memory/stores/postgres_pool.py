"""PostgresStore's connections: options, identifiers, migrations, sync and async pools.

``PostgresConnections`` is the base of ``PostgresStore``: it runs programs (see
``postgres_driver.py``) on a ``ConnectionPool`` (sync) or on one ``AsyncConnectionPool`` per
running event loop (async), with every call bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ogmem_memory.errors import ConfigError, OgmemError, SchemaVersionError, StoreError
from ogmem_memory.stores.postgres_driver import (
    PASSWORD_IN_URL,
    PASSWORD_KV,
    adrive,
    drive,
    opened_pool,
    socket_has_input,
    translate_error,
)
from ogmem_memory.stores.postgres_sql import (
    ARCHIVE_COLS,
    MIGRATIONS_TABLE,
    MSG_COLS,
    POSTGRES_MIGRATIONS,
    SESSION_COLS,
    Program,
    Step,
    T,
)


class PoolOwner(Protocol):
    """What ``pool_options`` reads: a store's pool sizes, timeout and connection options."""

    min_size: int
    max_size: int
    timeout: float

    def _connect_kwargs(self) -> dict[str, Any]: ...


def pool_options(owner: PoolOwner, name: str) -> dict[str, Any]:
    """The options every ogmem pool is created with, unopened (the caller opens it)."""
    return {
        "kwargs": owner._connect_kwargs(),
        "min_size": owner.min_size,
        "max_size": owner.max_size,
        "timeout": owner.timeout,
        "name": name,
        "open": False,
    }


class PostgresConnections:
    """Options, quoted identifiers, migrations and pools of one PostgreSQL schema."""

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
            "vectors": sql.Identifier(schema, "ogmem_vectors"),
            "migrations": sql.Identifier(schema, "ogmem_migrations"),
            "msg_cols": sql.SQL(MSG_COLS),
            "msg_cols_m": sql.SQL(", ".join(f"m.{c.strip()}" for c in MSG_COLS.split(","))),
            "archive_cols": sql.SQL(ARCHIVE_COLS),
            "session_cols": sql.SQL(SESSION_COLS),
            "session_cols_s": sql.SQL(", ".join(f"s.{c.strip()}" for c in SESSION_COLS.split(","))),
        }
        self._names: dict[str, sql.Composable] = names
        self._queries: dict[str, sql.Composed | bytes] = {}

    def __repr__(self) -> str:
        dsn = PASSWORD_KV.sub(r"\1***", PASSWORD_IN_URL.sub(r"\1***@", self.dsn))
        return f"PostgresStore({dsn!r}, schema={self.schema!r})"

    def _q(self, template: str, **extra: sql.Composable) -> sql.Composed | bytes:
        """``template`` with table and column names filled in (cached; no values ever).

        Cached as the bytes psycopg would send (when ASCII, so in every client encoding):
        composing the statement again on each call costs more client time than the call.
        """
        if extra:
            return sql.SQL(template).format(**self._names, **extra)
        query = self._queries.get(template)
        if query is None:
            composed = sql.SQL(template).format(**self._names)
            raw = composed.as_bytes(None)
            query = self._queries[template] = raw if raw.isascii() else composed
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

    def _timeouts(self) -> Step:
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
        if conn.closed or conn.broken or socket_has_input(conn.fileno()):
            try:
                ConnectionPool.check_connection(conn)
            except Exception:
                if self._pool is not None:
                    self._pool.check()
                raise

    async def _acheck(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.closed or conn.broken or socket_has_input(conn.fileno()):
            try:
                await AsyncConnectionPool.check_connection(conn)
            except Exception:
                task = self._apools.get(asyncio.get_running_loop())
                if task is not None and task.done():
                    await task.result().check()
                raise

    def _migration(self) -> Program[int]:
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
        yield self._q(MIGRATIONS_TABLE), None
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
        options = pool_options(self, f"ogmem:{self.schema}")
        return ConnectionPool(self.dsn, configure=self._configure, check=self._check, **options)

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
                        drive(conn, self._migration())
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
        pool = opened_pool(task)
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

    def _run(self, program: Program[T], *, transaction: bool = False) -> T:
        try:
            with self._sync_pool().connection(timeout=self.timeout) as conn:
                tx: AbstractContextManager[Any] = conn.transaction() if transaction else nullcontext()
                with tx:
                    return drive(conn, program)
        except (psycopg.Error, UnicodeEncodeError) as exc:
            raise translate_error(exc, self.timeout) from exc

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
                    await adrive(conn, self._migration())
            except (psycopg.Error, UnicodeError) as exc:
                raise StoreError(f"cannot set up {self!r}: {exc}") from exc
            self._migrated = True
        options = pool_options(self, f"ogmem-async:{self.schema}")
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn, configure=self._aconfigure, check=self._acheck, **options
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
                if opened_pool(self._apools.get(loop)) is pool:
                    del self._apools[loop]
            await pool.close(timeout=self.timeout)

    async def _arun(self, program: Program[T], *, transaction: bool = False) -> T:
        pool = await self._async_pool()
        try:
            async with pool.connection(timeout=self.timeout) as conn:
                tx: AbstractAsyncContextManager[Any] = conn.transaction() if transaction else nullcontext()
                async with tx:
                    return await adrive(conn, program)
        except (psycopg.Error, UnicodeEncodeError) as exc:
            raise translate_error(exc, self.timeout) from exc
