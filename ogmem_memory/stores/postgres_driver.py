"""Running PostgresStore's programs: sync and async drivers, error translation, pool helpers.

Every operation is written once, as a *program*: a generator that yields SQL steps
``(query, params)`` and receives each step's rows; these drivers run it on a connection.
"""

from __future__ import annotations

import asyncio
import re
import select
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ogmem_memory.errors import ConcurrencyError, InvalidInputError, OgmemError, StoreError
from ogmem_memory.stores.postgres_sql import Program, Rows, Snapshot, T


def translate_error(exc: BaseException, timeout: float) -> OgmemError:
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


def socket_has_input(fd: int) -> bool:
    """True when an idle connection's socket is readable: the server sent a FATAL or hung up."""
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):  # fd beyond FD_SETSIZE: let the real check decide
        return True
    return bool(readable)


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    # What ``cur.description is not None`` answers, without building a Column per column.
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


_BEGIN_SNAPSHOT: Final = b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def _snapshot(conn: psycopg.Connection[Any], steps: Snapshot) -> Rows:
    own = conn.info.transaction_status == pq.TransactionStatus.IDLE  # else: the caller's transaction
    try:
        with conn.pipeline():
            if own:
                conn.execute(_BEGIN_SNAPSHOT)
            cursors = [conn.execute(query, params) for query, params in steps]
            if own:
                conn.execute(b"COMMIT")
    except psycopg.Error:
        if own and conn.info.transaction_status == pq.TransactionStatus.INERROR:
            conn.execute(b"ROLLBACK")
        raise
    return [tuple(cur.fetchall()) if _has_rows(cur) else () for cur in cursors]


async def _asnapshot(conn: psycopg.AsyncConnection[Any], steps: Snapshot) -> Rows:
    own = conn.info.transaction_status == pq.TransactionStatus.IDLE
    try:
        async with conn.pipeline():
            if own:
                await conn.execute(_BEGIN_SNAPSHOT)
            cursors = [await conn.execute(query, params) for query, params in steps]
            if own:
                await conn.execute(b"COMMIT")
    except psycopg.Error:
        if own and conn.info.transaction_status == pq.TransactionStatus.INERROR:
            await conn.execute(b"ROLLBACK")
        raise
    return [tuple(await cur.fetchall()) if _has_rows(cur) else () for cur in cursors]


def drive(conn: psycopg.Connection[Any], program: Program[T]) -> T:
    try:
        step = next(program)
        while True:
            try:
                if isinstance(step, Snapshot):
                    rows = _snapshot(conn, step)
                else:
                    cur = conn.execute(step[0], step[1])
                    rows = cur.fetchall() if _has_rows(cur) else []
            except psycopg.Error as exc:
                step = program.throw(exc)  # the program may turn it into a domain error
            else:
                step = program.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def adrive(conn: psycopg.AsyncConnection[Any], program: Program[T]) -> T:
    try:
        step = next(program)
        while True:
            try:
                if isinstance(step, Snapshot):
                    rows = await _asnapshot(conn, step)
                else:
                    cur = await conn.execute(step[0], step[1])
                    rows = await cur.fetchall() if _has_rows(cur) else []
            except psycopg.Error as exc:
                step = program.throw(exc)
            else:
                step = program.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result


def opened_pool(task: asyncio.Task[AsyncConnectionPool[Any]] | None) -> AsyncConnectionPool[Any] | None:
    """The pool a finished opening task produced, or ``None``."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


PASSWORD_IN_URL: Final = re.compile(r"(://[^:/@]*:)[^@]*@")
PASSWORD_KV: Final = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)
