"""SQLiteStore: the embedded default (one file, WAL, FTS5 recall)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NoReturn

from ogmem_memory import models
from ogmem_memory.errors import (
    ClosedError,
    ConcurrencyError,
    InvalidInputError,
    SessionNotFoundError,
    StoreError,
)
from ogmem_memory.models import iso, utc_now
from ogmem_memory.stores import sqlite_search
from ogmem_memory.stores.base import ArchiveCommit, MessageQuery, Owner, SessionStore, WindowQuery, WriteAs
from ogmem_memory.stores.sqlite_ids import active_rowids
from ogmem_memory.stores.sqlite_schema import (
    ACTIVE_FROM,
    ARCHIVE_COLS,
    MOVE_ACTIVE_FROM,
    MSG_COLS,
    RECALL_SCOPE_SQL,
    SELECT_SESSION,
    SESSION_COLS,
    check_owner,
    migrate,
    open_connection,
    row_archive,
    row_message,
    row_record,
)
from ogmem_memory.stores.sqlite_tx import (
    NeedsCarefulAppend,
    append_new,
    bump_archive_version,
    clear,
    insert_archive,
    insert_messages,
    insert_session,
    lock_epoch,
    select_archives,
    session_for_write,
)
from ogmem_memory.vectors import pack


def _begin_immediate(conn: sqlite3.Connection | sqlite3.Cursor) -> None:
    """Take the write lock up front, so that seq allocation is serial."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite write failed: {exc}") from exc


def _abort(conn: sqlite3.Connection, exc: BaseException) -> NoReturn:
    """Roll back the write transaction ``exc`` ended and raise it (an SQLite error as StoreError)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    if isinstance(exc, sqlite3.Error):
        raise StoreError(f"SQLite write failed: {exc}") from exc
    raise exc


class SQLiteStore(SessionStore):
    """Sessions in one SQLite file, safe across threads and processes sharing it.

    Args:
        path: Database file (created on ``setup``); ``":memory:"`` for a private one.
        synchronous: SQLite ``synchronous`` pragma. ``"NORMAL"`` (default, with WAL) keeps
            every acknowledged write through a process crash; ``"FULL"`` also through
            power loss, at the cost of an fsync per write.
        busy_timeout_ms: How long a writer waits for another process's transaction.
        checkpoint_pages: SQLite ``wal_autocheckpoint``: the WAL is copied into the database
            file (with an fsync of each, at any ``synchronous``) once it holds this many pages.
            An ``add_message`` writes about 2.2 pages (the row and the seq index, an interior
            page now and then), its share of the default commits about 0.6 more, so the default
            checkpoints about every 1,050 messages, close to SQLite's own default (1,000 pages)
            for one-page transactions; the WAL file then stays under about 12 MB. What survives
            a process crash does not depend on it. At ``synchronous="NORMAL"`` the WAL is synced
            only by a checkpoint, so a power loss may roll back what was committed since the
            last one: a larger value widens that window (at ``"FULL"`` every commit is synced
            and it only trades checkpoint cost against WAL size). 0: never automatically.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "ogmem.db",
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 10_000,
        checkpoint_pages: int = 3000,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidInputError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        if (
            isinstance(checkpoint_pages, bool)
            or not isinstance(checkpoint_pages, int)
            or checkpoint_pages < 0
        ):
            raise InvalidInputError(f"checkpoint_pages must be an int >= 0, got {checkpoint_pages!r}")
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_pages = checkpoint_pages
        self._conn: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None
        self._closed = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------

    def setup(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            self._closed = False
            try:
                conn = open_connection(
                    self.path,
                    self.synchronous,  # validated in __init__
                    self.busy_timeout_ms,
                    migrate,
                    f"wal_autocheckpoint={self.checkpoint_pages}",  # validated in __init__
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            self._conn = conn
            self._cursor = conn.cursor()  # the append's, reused (held under self._lock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._cursor = None
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection:
        """The open connection (held under ``self._lock``); opened on first use, never after close."""
        if self._conn is None:
            if self._closed:
                raise ClosedError(f"{self!r} is closed")
            self.setup()
        assert self._conn is not None
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every statement in it sees the same snapshot (WAL)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front so seq allocation is serial."""
        with self._lock:
            conn = self._connection()
            _begin_immediate(conn)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                _abort(conn, exc)

    # -- sessions ----------------------------------------------------------------

    def bind_session(self, session_id: str, identity: models.RequestContext) -> models.SessionRecord:
        with self._read() as conn:
            row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
        if row is None:
            with self._write() as conn:
                row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
                if row is None:
                    row = insert_session(conn, session_id, identity)
        check_owner(session_id, row, identity.owner)
        return row_record(row)

    def get_session_record(self, session_id: str) -> models.SessionRecord | None:
        with self._read() as conn:
            row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
        return row_record(row) if row else None

    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[models.SessionRecord]:
        with self._read() as conn:
            if owner is None:
                rows = conn.execute(
                    f"SELECT {SESSION_COLS} FROM ogmem_session_heads ORDER BY updated_at DESC, session_id DESC "
                    "LIMIT ? OFFSET ?",
                    (limit, offset),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {SESSION_COLS} FROM ogmem_session_heads WHERE account_id = ? AND user_id = ? "
                    "ORDER BY updated_at DESC, session_id DESC LIMIT ? OFFSET ?",
                    (*owner, limit, offset),
                ).fetchall()
        return [row_record(r) for r in rows]

    def delete_session(self, session_id: str, *, owner: tuple[str, str] | None = None) -> bool:
        with self._write() as conn:
            row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
            check_owner(session_id, row, owner)
            return conn.execute("DELETE FROM ogmem_sessions WHERE session_id = ?", (session_id,)).rowcount > 0

    def delete_owner(self, owner: tuple[str, str]) -> int:
        # the cascade takes messages (the trigger their recall rows; vectors are a column),
        # archives and state
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM ogmem_sessions WHERE account_id = ? AND user_id = ?", tuple(owner)
            ).rowcount

    def clear_session(self, session_id: str, *, owner: tuple[str, str] | None = None) -> None:
        with self._write() as conn:
            row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
            check_owner(session_id, row, owner)
            if row is not None:
                clear(conn, session_id)

    # -- messages ----------------------------------------------------------------

    def _append_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult:
        create_as, owner, drawn = write_as.create_as, write_as.owner, write_as.drawn
        if messages and (len(messages) == 1 or len({m.id for m in messages}) == len(messages)):
            fast = self._append_new(session_id, messages, owner, drawn)
            if fast is not None:
                return fast
        with self._write() as conn:
            row, created = session_for_write(conn, session_id, create_as, owner)
            if not messages:
                return models.AppendResult(row_record(row), (), 0, created)
            record, stored, added = insert_messages(conn, session_id, messages, drawn)
        return models.AppendResult(record, stored, added, created)

    def _append_new(
        self,
        session_id: str,
        messages: Sequence[models.SessionMessage],
        owner: tuple[str, str] | None,
        drawn: Collection[str],
    ) -> models.AppendResult | None:
        """``append``'s common case in one IMMEDIATE transaction; None: take the careful path.

        ``_write`` written out: this is the hot path of every ``add_message``.
        """
        with self._lock:
            if self._cursor is None:
                self._connection()  # opens it (ClosedError after close)
            cur = self._cursor
            assert cur is not None
            _begin_immediate(cur)
            conn = cur.connection
            try:
                record, stored = append_new(cur, session_id, messages, owner, drawn)
                cur.execute("COMMIT")
            except NeedsCarefulAppend:
                conn.execute("ROLLBACK")  # nothing was written
                return None
            except BaseException as exc:
                _abort(conn, exc)
        return models.AppendResult(record, stored, len(stored))

    def _replace_messages_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult:
        create_as, owner = write_as.create_as, write_as.owner
        with self._write() as conn:
            created = session_for_write(conn, session_id, create_as, owner)[1]
            clear(conn, session_id)
            if messages:
                record, stored, added = insert_messages(conn, session_id, messages)
            else:
                record = row_record(conn.execute(SELECT_SESSION, (session_id,)).fetchone())
                stored, added = (), 0
        return models.AppendResult(record, stored, added, created)

    def _read_window_impl(self, session_id: str, window: WindowQuery) -> models.WindowRead | None:
        owner, since, archive_limit = window.owner, window.since, window.archive_limit
        with self._read() as conn:
            row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
            if row is None:
                return None
            check_owner(session_id, row, owner)
            record = row_record(row)
            if since is not None and (since.epoch, since.archive_version) == (
                record.epoch,
                record.archive_version,
            ):
                if since.last_seq >= record.last_seq:
                    return models.WindowRead(record, False)
                fresh = conn.execute(ACTIVE_FROM, (session_id, max(since.last_seq + 1, row[12]))).fetchall()
                return models.WindowRead(record, False, tuple(map(row_message, fresh)))
            active = conn.execute(ACTIVE_FROM, (session_id, row[12])).fetchall()
            archives = select_archives(conn, session_id, False, archive_limit)
        return models.WindowRead(record, True, tuple(map(row_message, active)), tuple(archives))

    def _list_messages_impl(self, session_id: str, select: MessageQuery) -> list[models.SessionMessage]:
        status, after_seq, limit, owner = select.status, select.after_seq, select.limit, select.owner
        clauses = ["session_id = ?"]
        params: list[Any] = [session_id]
        if status == "active":  # from the session's lower bound of active seqs on
            clauses.append("seq >= max(?, (SELECT active_from FROM ogmem_sessions WHERE session_id = ?))")
            clauses.append("status = 'active'")
            params += [0 if after_seq is None else after_seq + 1, session_id]
        else:
            if status is not None:
                clauses.append("status = ?")
                params.append(status)
            if after_seq is not None:
                clauses.append("seq > ?")
                params.append(after_seq)
        params.append(-1 if limit is None else limit)
        with self._read() as conn:
            if owner is not None:
                check_owner(session_id, conn.execute(SELECT_SESSION, (session_id,)).fetchone(), owner)
            rows = conn.execute(
                f"SELECT {MSG_COLS} FROM ogmem_messages WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
                params,
            ).fetchall()
        return [row_message(r) for r in rows]

    def list_messages_by_seq(
        self, session_id: str, seqs: Sequence[int], *, owner: tuple[str, str] | None = None
    ) -> list[models.SessionMessage]:
        wanted = sorted(set(seqs))[:500]
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._read() as conn:
            if owner is not None:
                check_owner(session_id, conn.execute(SELECT_SESSION, (session_id,)).fetchone(), owner)
            rows = conn.execute(
                f"SELECT {MSG_COLS} FROM ogmem_messages WHERE session_id = ? AND seq IN ({marks}) ORDER BY seq",
                (session_id, *wanted),
            ).fetchall()
        return [row_message(r) for r in rows]

    def head(self, session_id: str) -> models.SessionHead | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT last_seq, archive_version, epoch FROM ogmem_session_heads WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        return models.SessionHead(row[0], row[1], row[2]) if row else None

    # -- archives ----------------------------------------------------------------

    def _commit_archive_impl(self, session_id: str, commit: ArchiveCommit) -> models.ArchiveEntry:
        archive, vectors = replace(commit.archive, session_id=session_id, messages=()), commit.vectors
        with self._write() as conn:
            lock_epoch(conn, session_id, commit.epoch, commit_at=iso(utc_now()))
            ids = set(commit.message_ids)
            # found in the archive's seq range (drawn ids are in no index), flipped by rowid
            rowids = active_rowids(conn, session_id, ids, (archive.first_seq, archive.last_seq))
            if len(rowids) != len(ids):
                raise ConcurrencyError(f"messages of {session_id!r} were archived by another writer")
            conn.executemany(
                "UPDATE ogmem_messages SET status = 'archived', archive_id = ? WHERE rowid = ?",
                [(archive.archive_id, rowid) for rowid in rowids.values()],
            )
            conn.execute(MOVE_ACTIVE_FROM, (session_id,))
            # bounded by the archive's seq range (the unique (session_id, seq) index), not the session
            conn.execute(
                f"INSERT INTO ogmem_recall (rowid, content, scope) SELECT m.rowid, m.content, {RECALL_SCOPE_SQL} "
                "FROM ogmem_messages m JOIN ogmem_sessions s ON s.session_id = m.session_id "
                "WHERE m.session_id = ? AND m.seq BETWEEN ? AND ? AND m.archive_id = ?",
                (session_id, archive.first_seq, archive.last_seq, archive.archive_id),
            )
            if vectors:
                conn.executemany(
                    "UPDATE ogmem_messages SET embedding = ? WHERE rowid = ?",
                    [(pack(v), rowids[mid]) for mid, v in vectors.items() if mid in rowids],
                )
            insert_archive(conn, archive)
        return archive

    def _list_archives_impl(
        self, session_id: str, include_merged: bool, limit: int | None, owner: Owner | None
    ) -> list[models.ArchiveEntry]:
        with self._read() as conn:
            if owner is not None:
                check_owner(session_id, conn.execute(SELECT_SESSION, (session_id,)).fetchone(), owner)
            return select_archives(conn, session_id, include_merged, limit)

    def list_recent_archives(
        self, owner: tuple[str, str], *, session_limit: int = 8, exclude_session: str | None = None
    ) -> list[models.ArchiveEntry]:
        with self._read() as conn:
            return sqlite_search.recent_archives(conn, owner, session_limit, exclude_session)

    def read_archive(
        self, session_id: str, archive_id: str, *, owner: tuple[str, str] | None = None
    ) -> models.ArchiveEntry | None:
        with self._read() as conn:
            if owner is not None:
                check_owner(session_id, conn.execute(SELECT_SESSION, (session_id,)).fetchone(), owner)
            row = conn.execute(
                f"SELECT {ARCHIVE_COLS} FROM ogmem_archives WHERE session_id = ? AND archive_id = ?",
                (session_id, archive_id),
            ).fetchone()
            if row is None:
                return None
            archive = row_archive(row)
            msgs = conn.execute(
                f"SELECT {MSG_COLS} FROM ogmem_messages WHERE session_id = ? AND status = 'archived' "
                "AND seq BETWEEN ? AND ? ORDER BY seq",
                (session_id, archive.first_seq, archive.last_seq),
            ).fetchall()
        return replace(archive, messages=tuple(row_message(m) for m in msgs))

    def _merge_archives_impl(
        self, session_id: str, merged: models.ArchiveEntry, source_ids: Sequence[str], epoch: str | None
    ) -> models.ArchiveEntry:
        merged = replace(merged, session_id=session_id, messages=())
        with self._write() as conn:
            lock_epoch(conn, session_id, epoch)
            ids = list(dict.fromkeys(source_ids))
            marks = ", ".join("?" * len(ids))
            insert_archive(conn, merged)
            flipped = conn.execute(
                f"UPDATE ogmem_archives SET merged_into = ? WHERE session_id = ? AND merged_into = '' "
                f"AND archive_id IN ({marks}) AND archive_id <> ?",
                (merged.archive_id, session_id, *ids, merged.archive_id),
            ).rowcount
            if flipped != len(ids):
                raise ConcurrencyError(f"archives of {session_id!r} were merged by another writer")
        return merged

    def mark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE ogmem_archives SET merged_into = ? WHERE session_id = ? AND archive_id = ? "
                "AND merged_into IN ('', ?)",
                (merged_archive_id, session_id, archive_id, merged_archive_id),
            ).rowcount
            if changed:
                bump_archive_version(conn, session_id)
        return changed > 0

    def unmark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE ogmem_archives SET merged_into = '' WHERE session_id = ? AND archive_id = ? "
                "AND merged_into = ?",
                (session_id, archive_id, merged_archive_id),
            ).rowcount
            if changed:
                bump_archive_version(conn, session_id)
        return changed > 0

    def delete_archive(self, session_id: str, archive_id: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "DELETE FROM ogmem_archives WHERE session_id = ? AND archive_id = ?", (session_id, archive_id)
            ).rowcount
            if changed:
                bump_archive_version(conn, session_id)
        return changed > 0

    # -- state -------------------------------------------------------------------

    def save_state(self, session_id: str, payload: Mapping[str, Any], *, epoch: str | None = None) -> None:
        text = json.dumps(dict(payload), ensure_ascii=False)
        with self._write() as conn:
            row = conn.execute(
                "SELECT epoch FROM ogmem_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None or (epoch is not None and row[0] != epoch):
                raise SessionNotFoundError(f"session {session_id!r} does not exist")
            conn.execute(
                "INSERT INTO ogmem_state (session_id, payload, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at",
                (session_id, text, iso(utc_now())),
            )

    def load_state(self, session_id: str, *, epoch: str | None = None) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT st.payload, s.epoch FROM ogmem_state st JOIN ogmem_sessions s USING (session_id) "
                "WHERE st.session_id = ?",
                (session_id,),
            ).fetchone()
        if row is None or (epoch is not None and row[1] != epoch):
            return None
        payload = json.loads(row[0])
        return payload if isinstance(payload, dict) else None

    # -- search ------------------------------------------------------------------

    @contextmanager
    def _scoped_read(
        self, session_id: str | None, owner: Owner | None
    ) -> Iterator[sqlite3.Connection | None]:
        """A read transaction after the scope check; None when the session does not exist."""
        with self._read() as conn:
            if session_id is not None:
                row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
                if row is None:
                    yield None
                    return
                check_owner(session_id, row, owner)
            yield conn

    def _search_messages_impl(
        self, query: str, session_id: str | None, owner: Owner | None, status: str | None, limit: int
    ) -> list[models.SessionMessage]:
        with self._scoped_read(session_id, owner) as conn:
            if conn is None:
                return []
            return sqlite_search.search(
                conn, query, session_id=session_id, owner=owner, status=status, limit=limit
            )

    def _search_vectors_impl(
        self, vector: Sequence[float], session_id: str | None, owner: Owner | None, limit: int
    ) -> list[models.SessionMessage]:
        with self._scoped_read(session_id, owner) as conn:
            if conn is None:
                return []
            return sqlite_search.search_vectors(conn, vector, session_id=session_id, owner=owner, limit=limit)
