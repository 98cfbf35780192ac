"""PostgresStore: sessions in PostgreSQL, safe across threads, processes and machines.

Every operation is written once, as a *program*: a generator that yields SQL steps
``(query, params)`` and receives each step's rows. A sync driver runs programs on a
``psycopg_pool.ConnectionPool``, an async driver on an ``AsyncConnectionPool`` of the
running event loop, so the SQL and the decisions around it are shared and contain no I/O.
The SQL is in ``postgres_sql.py``, the drivers in ``postgres_driver.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from psycopg import errors as pg_errors

from ogmem_memory import models
from ogmem_memory.errors import ConcurrencyError, SessionNotFoundError, StoreError
from ogmem_memory.models import new_epoch
from ogmem_memory.stores import postgres_sql as q
from ogmem_memory.stores.base import ArchiveCommit, MessageQuery, Owner, SessionStore, WindowQuery, WriteAs
from ogmem_memory.stores.postgres_pool import PostgresConnections
from ogmem_memory.stores.postgres_search import PostgresRecall

POSTGRES_MIGRATIONS = q.POSTGRES_MIGRATIONS

__all__ = ["POSTGRES_MIGRATIONS", "PostgresStore"]


class PostgresStore(PostgresRecall, PostgresConnections, SessionStore):
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

    # -- sessions ----------------------------------------------------------------

    def _lock_or_create(
        self, session_id: str, create_as: models.RequestContext | None, owner: tuple[str, str] | None
    ) -> q.Program[tuple[models.SessionRecord, bool]]:
        """In a transaction: the session's row, locked (created for ``create_as`` when missing)."""
        for _ in range(3):
            rows = yield self._q(q.SELECT_SESSION_FOR_UPDATE), (session_id,)
            if rows:
                record = q.row_record(rows[0])
                q.check_owner(session_id, record, owner)
                return record, False
            if create_as is None:
                raise SessionNotFoundError(f"session {session_id!r} does not exist")
            values = (session_id, create_as.account_id, create_as.user_id, create_as.agent_id, new_epoch())
            rows = yield self._q(q.INSERT_SESSION), values
            if rows:  # ours, and locked by this transaction
                record = q.row_record(rows[0])
                q.check_owner(session_id, record, owner)
                return record, True
            # another writer created it first: its row is committed now; lock and check it
        raise StoreError(f"session {session_id!r} was deleted and re-created while being bound")

    def _bind(self, session_id: str, identity: models.RequestContext) -> q.Program[models.SessionRecord]:
        rows = yield self._q(q.SELECT_SESSION), (session_id,)
        if rows:
            record = q.row_record(rows[0])
            q.check_owner(session_id, record, identity.owner)
            return record
        record, _ = yield from self._lock_or_create(session_id, identity, identity.owner)
        return record

    def bind_session(self, session_id: str, identity: models.RequestContext) -> models.SessionRecord:
        return self._run(self._bind(session_id, identity), transaction=True)

    async def abind_session(self, session_id: str, identity: models.RequestContext) -> models.SessionRecord:
        return await self._arun(self._bind(session_id, identity), transaction=True)

    def _get_record(self, session_id: str) -> q.Program[models.SessionRecord | None]:
        rows = yield self._q(q.SELECT_SESSION), (session_id,)
        return q.row_record(rows[0]) if rows else None

    def get_session_record(self, session_id: str) -> models.SessionRecord | None:
        return self._run(self._get_record(session_id))

    def _list_sessions(
        self, owner: tuple[str, str] | None, limit: int, offset: int
    ) -> q.Program[list[models.SessionRecord]]:
        if owner is None:
            rows = yield self._q(q.SELECT_SESSIONS), (limit, offset)
        else:
            rows = yield self._q(q.SELECT_OWNER_SESSIONS), (owner[0], owner[1], limit, offset)
        return [q.row_record(r) for r in rows]

    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[models.SessionRecord]:
        return self._run(self._list_sessions(owner, max(limit, 0), max(offset, 0)))

    def _delete_session(self, session_id: str, owner: tuple[str, str] | None) -> q.Program[bool]:
        rows = yield self._q(q.SELECT_SESSION_FOR_UPDATE), (session_id,)
        if not rows:
            return False
        q.check_owner(session_id, q.row_record(rows[0]), owner)
        rows = yield self._q(q.DELETE_SESSION), (session_id,)
        return bool(rows)

    def delete_session(self, session_id: str, *, owner: tuple[str, str] | None = None) -> bool:
        return self._run(self._delete_session(session_id, owner), transaction=True)

    def _delete_owner(self, owner: tuple[str, str]) -> q.Program[int]:
        # the cascade takes messages (with their search column and vectors), archives and state
        rows = yield (
            self._q("DELETE FROM {sessions} WHERE account_id = %s AND user_id = %s RETURNING 1"),
            owner,
        )
        return len(rows)

    def delete_owner(self, owner: tuple[str, str]) -> int:
        return self._run(self._delete_owner(tuple(owner)), transaction=True)  # type: ignore[arg-type]

    def _clear_rows(self, session_id: str) -> q.Program[None]:
        # The session row first: the lock every writer of this session takes, in this order.
        yield self._q(q.CLEAR_SESSION), (session_id,)
        for table in ("{messages}", "{archives}", "{state}"):
            yield self._q(f"DELETE FROM {table} WHERE session_id = %s"), (session_id,)

    def _clear_session(self, session_id: str, owner: tuple[str, str] | None) -> q.Program[None]:
        rows = yield self._q(q.SELECT_SESSION_FOR_UPDATE), (session_id,)
        if rows:
            q.check_owner(session_id, q.row_record(rows[0]), owner)
            yield from self._clear_rows(session_id)

    def clear_session(self, session_id: str, *, owner: tuple[str, str] | None = None) -> None:
        self._run(self._clear_session(session_id, owner), transaction=True)

    # -- messages ----------------------------------------------------------------

    def _append_fast(
        self, session_id: str, messages: Sequence[models.SessionMessage], owner: tuple[str, str] | None
    ) -> q.Program[models.AppendResult | None]:
        """One round trip for the common case; ``None`` when the slow path must decide."""
        statement, params = q.append_statement(session_id, messages, owner)
        try:
            rows = yield self._q(statement), params
        except pg_errors.UniqueViolation:
            return None  # a repeated message id: nothing was written
        if not rows:
            return None  # missing, or another owner's
        record = q.row_record(rows[0])
        base = record.last_seq - len(messages)
        stored = tuple(
            replace(m, seq=base + i, status="active", archive_id=None) for i, m in enumerate(messages, 1)
        )
        return models.AppendResult(record, stored, len(messages))

    def _append_slow(
        self,
        session_id: str,
        messages: Sequence[models.SessionMessage],
        create_as: models.RequestContext | None,
        owner: tuple[str, str] | None,
        *,
        replace_all: bool = False,
    ) -> q.Program[models.AppendResult]:
        """In a transaction: lock (or create) the session, skip known ids, append the rest."""
        record, created = yield from self._lock_or_create(session_id, create_as, owner)
        if replace_all:
            yield from self._clear_rows(session_id)
            known: dict[str, models.SessionMessage] = {}
        else:
            rows = yield self._q(q.EXISTING_IDS), (session_id, [m.id for m in messages])
            known = {r[1]: q.row_message(r) for r in rows}
        new = [m for m in dict((m.id, m) for m in messages).values() if m.id not in known]
        if new:
            statement, params = q.append_statement(session_id, new, None)
            rows = yield self._q(statement), params
            record = q.row_record(rows[0])
            base = record.last_seq - len(new)
            for i, m in enumerate(new, 1):
                known[m.id] = replace(m, seq=base + i, status="active", archive_id=None)
        elif replace_all:
            record = (yield from self._get_record(session_id)) or record
        return models.AppendResult(record, tuple(known[m.id] for m in messages), len(new), created)

    def _append(
        self,
        session_id: str,
        messages: Sequence[models.SessionMessage],
        create_as: models.RequestContext | None,
        owner: tuple[str, str] | None,
    ) -> q.Program[models.AppendResult | None]:
        if not messages:
            return None
        return (yield from self._append_fast(session_id, messages, owner))

    def _append_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult:
        create_as, owner = write_as.create_as, write_as.owner
        if len({m.id for m in messages}) == len(messages):
            done = self._run(self._append(session_id, messages, create_as, owner))
            if done is not None:
                return done
        return self._run(self._append_slow(session_id, messages, create_as, owner), transaction=True)

    async def _aappend_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult:
        create_as, owner = write_as.create_as, write_as.owner
        if len({m.id for m in messages}) == len(messages):
            done = await self._arun(self._append(session_id, messages, create_as, owner))
            if done is not None:
                return done
        return await self._arun(self._append_slow(session_id, messages, create_as, owner), transaction=True)

    async def aappend_messages(
        self, session_id: str, messages: Sequence[models.SessionMessage]
    ) -> list[models.SessionMessage]:
        if not messages:
            return []
        return list((await self.aappend(session_id, messages)).messages)

    def _replace_messages_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult:
        create_as, owner = write_as.create_as, write_as.owner
        program = self._append_slow(session_id, messages, create_as, owner, replace_all=True)
        return self._run(program, transaction=True)

    def _window_delta(
        self, session_id: str, owner: tuple[str, str] | None, since: models.SessionHead
    ) -> q.Program[models.WindowRead | bool | None]:
        params = {
            "sid": session_id,
            "after": since.last_seq,
            "epoch": since.epoch,
            "av": since.archive_version,
        }
        rows = yield self._q(q.WINDOW_DELTA), params
        if not rows:
            return None
        record = q.row_record(rows[0])
        q.check_owner(session_id, record, owner)
        if (record.epoch, record.archive_version) != (since.epoch, since.archive_version):
            return False  # moved: the caller reads the whole window
        fresh = tuple(q.row_message(r[q.N_SESSION_COLS :]) for r in rows if r[q.N_SESSION_COLS] is not None)
        return models.WindowRead(record, False, fresh)

    def _window_full(
        self, session_id: str, owner: tuple[str, str] | None, archive_limit: int | None
    ) -> q.Program[models.WindowRead | None]:
        # the three reads in one snapshot and one round trip
        records, active, archives = yield q.Snapshot(
            (
                (self._q(q.SELECT_SESSION), (session_id,)),
                (self._q(q.ACTIVE), (session_id,)),
                (self._q(q.SELECT_LIVE_ARCHIVES), (session_id, archive_limit)),
            )
        )
        if not records:
            return None
        record = q.row_record(records[0])
        q.check_owner(session_id, record, owner)
        return models.WindowRead(
            record, True, tuple(map(q.row_message, active)), tuple(map(q.row_archive, archives))
        )

    def _read_window_impl(self, session_id: str, window: WindowQuery) -> models.WindowRead | None:
        owner, since, archive_limit = window.owner, window.since, window.archive_limit
        if since is not None and since.archive_version >= 0:  # < 0: a stale mark, no delta can match
            delta = self._run(self._window_delta(session_id, owner, since))
            if delta is not False:
                return delta  # type: ignore[return-value]
        return self._run(self._window_full(session_id, owner, archive_limit))

    async def _aread_window_impl(self, session_id: str, window: WindowQuery) -> models.WindowRead | None:
        owner, since, archive_limit = window.owner, window.since, window.archive_limit
        if since is not None and since.archive_version >= 0:
            delta = await self._arun(self._window_delta(session_id, owner, since))
            if delta is not False:
                return delta  # type: ignore[return-value]
        return await self._arun(self._window_full(session_id, owner, archive_limit))

    def _owned_read(self, session_id: str, owner: tuple[str, str] | None, step: q.Step) -> q.Program[q.Rows]:
        """``step``'s rows; with an owner, read with the session's row in one snapshot and checked."""
        if owner is None:
            return (yield step)
        records, rows = yield q.Snapshot(((self._q(q.SELECT_SESSION), (session_id,)), step))
        q.check_owner(session_id, q.row_record(records[0]) if records else None, owner)
        return list(rows)

    def _list_messages(
        self,
        session_id: str,
        status: str | None,
        after_seq: int | None,
        limit: int | None,
        owner: tuple[str, str] | None,
    ) -> q.Program[list[models.SessionMessage]]:
        where = "session_id = %s"
        params: list[Any] = [session_id]
        if status is not None:
            where += " AND status = %s"
            params.append(status)
        if after_seq is not None:
            where += " AND seq > %s"
            params.append(after_seq)
        params.append(limit)  # LIMIT NULL means no limit
        query = self._q(f"SELECT {{msg_cols}} FROM {{messages}} WHERE {where} ORDER BY seq LIMIT %s")
        rows = yield from self._owned_read(session_id, owner, (query, params))
        return [q.row_message(r) for r in rows]

    def _list_messages_impl(self, session_id: str, select: MessageQuery) -> list[models.SessionMessage]:
        status, after_seq, limit, owner = select.status, select.after_seq, select.limit, select.owner
        return self._run(self._list_messages(session_id, status, after_seq, limit, owner))

    async def _alist_messages_impl(
        self, session_id: str, select: MessageQuery
    ) -> list[models.SessionMessage]:
        status, after_seq, limit, owner = select.status, select.after_seq, select.limit, select.owner
        return await self._arun(self._list_messages(session_id, status, after_seq, limit, owner))

    def _head(self, session_id: str) -> q.Program[models.SessionHead | None]:
        rows = yield self._q(q.HEAD), (session_id,)
        return models.SessionHead(rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def head(self, session_id: str) -> models.SessionHead | None:
        return self._run(self._head(session_id))

    async def ahead(self, session_id: str) -> models.SessionHead | None:
        return await self._arun(self._head(session_id))

    # -- archives ----------------------------------------------------------------

    def _commit_archive(self, session_id: str, commit: ArchiveCommit) -> q.Program[models.ArchiveEntry]:
        epoch, vectors = commit.epoch, commit.vectors
        # One statement (see COMMIT_ARCHIVE): one round trip, all or nothing.
        a = replace(commit.archive, session_id=session_id)
        ids = list(dict.fromkeys(commit.message_ids))
        params = {**q.archive_params(a), "sid": session_id, "epoch": epoch, "ids": ids, "n": len(ids)}
        statement = q.COMMIT_PLAIN
        if vectors:
            wanted = set(ids)
            chosen = [(mid, q.vector_literal(v)) for mid, v in vectors.items() if mid in wanted]
            params.update(vids=[c[0] for c in chosen], vecs=[c[1] for c in chosen])
            statement = q.COMMIT_WITH_VECTORS
        return (
            yield from self._archive_statement(session_id, a, epoch, (self._q(statement), params), "archived")
        )

    def _archive_statement(
        self, session_id: str, a: models.ArchiveEntry, epoch: str | None, step: q.Step, done: str
    ) -> q.Program[models.ArchiveEntry]:
        """Run a one-statement archive write (commit or merge) of ``a``: written whole, or a
        ``ConcurrencyError`` saying which race it lost (nothing was written then)."""
        try:
            rows = yield step
        except pg_errors.UniqueViolation as exc:
            raise ConcurrencyError(f"archive {a.archive_id!r} already exists") from exc
        except pg_errors.SerializationFailure as exc:  # ogmem_fail: nothing was written
            raise ConcurrencyError(
                f"what archive {a.archive_id!r} of {session_id!r} covers was {done} by another writer"
            ) from exc
        if not rows:  # nothing was written: which of the two?
            q.expect_epoch(session_id, (yield self._q(q.SESSION_EPOCH), (session_id,)), epoch)
            raise ConcurrencyError(f"session {session_id!r} changed while its archives were written")
        return replace(a, messages=())

    def _commit_archive_impl(self, session_id: str, commit: ArchiveCommit) -> models.ArchiveEntry:
        if commit.vectors:
            self.prepare_vectors(len(next(iter(commit.vectors.values()))))
        return self._run(self._commit_archive(session_id, commit))

    def _list_archives(
        self, session_id: str, include_merged: bool, limit: int | None, owner: tuple[str, str] | None
    ) -> q.Program[list[models.ArchiveEntry]]:
        query = self._q(q.SELECT_ARCHIVES if include_merged else q.SELECT_LIVE_ARCHIVES)
        rows = yield from self._owned_read(session_id, owner, (query, (session_id, limit)))
        return [q.row_archive(r) for r in rows]

    def _list_archives_impl(
        self, session_id: str, include_merged: bool, limit: int | None, owner: Owner | None
    ) -> list[models.ArchiveEntry]:
        return self._run(self._list_archives(session_id, include_merged, limit, owner))

    async def _alist_archives_impl(
        self, session_id: str, include_merged: bool, limit: int | None, owner: Owner | None
    ) -> list[models.ArchiveEntry]:
        return await self._arun(self._list_archives(session_id, include_merged, limit, owner))

    def _read_archive(
        self, session_id: str, archive_id: str, owner: tuple[str, str] | None
    ) -> q.Program[models.ArchiveEntry | None]:
        records, rows, msgs = yield q.Snapshot(
            (
                (self._q(q.SELECT_SESSION), (session_id,)),
                (self._q(q.SELECT_ARCHIVE), (session_id, archive_id)),
                (self._q(q.ARCHIVE_MESSAGES), (session_id, archive_id)),
            )
        )
        if owner is not None:
            q.check_owner(session_id, q.row_record(records[0]) if records else None, owner)
        if not rows:
            return None
        return replace(q.row_archive(rows[0]), messages=tuple(q.row_message(m) for m in msgs))

    def read_archive(
        self, session_id: str, archive_id: str, *, owner: tuple[str, str] | None = None
    ) -> models.ArchiveEntry | None:
        return self._run(self._read_archive(session_id, archive_id, owner))

    def _merge_archives(
        self, session_id: str, merged: models.ArchiveEntry, source_ids: Sequence[str], epoch: str | None
    ) -> q.Program[models.ArchiveEntry]:
        # One statement (see MERGE_ARCHIVES): one round trip, all or nothing.
        a = replace(merged, session_id=session_id)
        ids = list(dict.fromkeys(source_ids))
        params = {**q.archive_params(a), "sid": session_id, "epoch": epoch, "ids": ids, "n": len(ids)}
        return (
            yield from self._archive_statement(
                session_id, a, epoch, (self._q(q.MERGE_ARCHIVES), params), "merged"
            )
        )

    def _merge_archives_impl(
        self, session_id: str, merged: models.ArchiveEntry, source_ids: Sequence[str], epoch: str | None
    ) -> models.ArchiveEntry:
        return self._run(self._merge_archives(session_id, merged, source_ids, epoch))

    def _change_archive(self, session_id: str, statement: str, params: Sequence[Any]) -> q.Program[bool]:
        if not (yield self._q(q.LOCK_SESSION), (session_id,)):
            return False
        changed = yield self._q(statement), params
        if changed:
            yield self._q(q.BUMP_ARCHIVE_VERSION), (session_id,)
        return bool(changed)

    def mark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        program = self._change_archive(
            session_id,
            q.MARK_MERGED,
            (merged_archive_id, session_id, archive_id, merged_archive_id),
        )
        return self._run(program, transaction=True)

    def unmark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        program = self._change_archive(
            session_id,
            q.UNMARK_MERGED,
            (session_id, archive_id, merged_archive_id),
        )
        return self._run(program, transaction=True)

    def delete_archive(self, session_id: str, archive_id: str) -> bool:
        program = self._change_archive(
            session_id,
            q.DELETE_ARCHIVE,
            (session_id, archive_id),
        )
        return self._run(program, transaction=True)

    # -- state -------------------------------------------------------------------

    def _save_state(self, session_id: str, payload: Mapping[str, Any], epoch: str | None) -> q.Program[None]:
        text = q.to_json(payload, "state payload")
        try:
            rows = yield self._q(q.SAVE_STATE), (text, session_id, epoch, epoch)
        except pg_errors.ForeignKeyViolation:
            rows = []  # deleted concurrently
        if not rows:
            raise SessionNotFoundError(f"session {session_id!r} does not exist")

    def save_state(self, session_id: str, payload: Mapping[str, Any], *, epoch: str | None = None) -> None:
        self._run(self._save_state(session_id, payload, epoch))

    def _load_state(self, session_id: str, epoch: str | None) -> q.Program[dict[str, Any] | None]:
        rows = yield self._q(q.LOAD_STATE), (session_id,)
        if not rows or (epoch is not None and rows[0][1] != epoch):
            return None
        payload = rows[0][0]
        return payload if isinstance(payload, dict) else None

    def load_state(self, session_id: str, *, epoch: str | None = None) -> dict[str, Any] | None:
        return self._run(self._load_state(session_id, epoch))
