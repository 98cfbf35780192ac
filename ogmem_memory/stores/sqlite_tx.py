"""SQLiteStore's statements that run inside a transaction the store holds open.

Each function takes the connection of a ``BEGIN IMMEDIATE`` (or read) transaction; the
store decides when to open and commit it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from ogmem_memory.errors import ConcurrencyError, SessionNotFoundError
from ogmem_memory.models import (
    ArchiveEntry,
    RequestContext,
    SessionMessage,
    SessionRecord,
    iso,
    new_epoch,
    parse_iso,
    utc_now,
)
from ogmem_memory.stores.sqlite_ids import MAX_ROWID, drawn_id, find_drawn, find_stored
from ogmem_memory.stores.sqlite_schema import (
    ARCHIVE_COLS,
    FOLD_APPENDS,
    INSERT_MESSAGE,
    SELECT_FOR_APPEND,
    SELECT_SESSION,
    SESSION_COLS,
    check_owner,
    deny,
    row_archive,
    row_record,
)


def insert_session(conn: sqlite3.Connection, session_id: str, identity: RequestContext) -> sqlite3.Row:
    now = iso(utc_now())
    row: sqlite3.Row | None = conn.execute(
        "INSERT INTO ogmem_sessions (session_id, account_id, user_id, agent_id, created_at, updated_at, "
        f"epoch) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {SESSION_COLS}",
        (session_id, identity.account_id, identity.user_id, identity.agent_id, now, now, new_epoch()),
    ).fetchone()
    assert row is not None
    return row


def clear(conn: sqlite3.Connection, session_id: str) -> None:
    # last_seq is kept (appends folded in first) so seqs stay unique for caches that saw the old ones
    conn.execute(FOLD_APPENDS, (session_id,))
    conn.execute("DELETE FROM ogmem_messages WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM ogmem_archives WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM ogmem_state WHERE session_id = ?", (session_id,))
    conn.execute(
        "UPDATE ogmem_sessions SET message_count = 0, archive_version = archive_version + 1, "
        "updated_at = ? WHERE session_id = ?",
        (iso(utc_now()), session_id),
    )


def session_for_write(
    conn: sqlite3.Connection,
    session_id: str,
    create_as: RequestContext | None,
    owner: tuple[str, str] | None,
) -> tuple[sqlite3.Row, bool]:
    row = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
    if row is None:
        if create_as is None:
            raise SessionNotFoundError(f"session {session_id!r} does not exist")
        row = insert_session(conn, session_id, create_as)
        check_owner(session_id, row, owner)
        return row, True
    check_owner(session_id, row, owner)
    return row, False


def _store_new(
    conn: sqlite3.Connection | sqlite3.Cursor,
    session_id: str,
    row: sqlite3.Row,
    messages: Sequence[SessionMessage],
    drawn: Collection[str],
) -> tuple[SessionRecord, list[SessionMessage]]:
    """Insert ``messages`` after the session's newest seq (``row``: ``SELECT_FOR_APPEND``'s).

    A message whose id is in ``drawn`` (ours, not the caller's) is stored under the id its
    rowid encodes, outside the id index (sqlite_ids.py). The session row itself is not
    written (migration 4): its record after the write is derived here, exactly as the view
    would read it.
    """
    n = len(messages)
    last = row[7] if row[12] is None or row[12] < row[7] else row[12]
    rowid = max(row[13] or 0, row[14])  # rowids are never reused: past the highest ever deleted
    key = row[15]
    now = utc_now()
    at = iso(now)
    seq = last
    stored: list[SessionMessage] = []
    rows: list[tuple[Any, ...]] = []
    for m in messages:
        seq += 1
        rowid += 1
        if m.id in drawn and rowid <= MAX_ROWID:
            mid, given = drawn_id(rowid, key), None
        else:
            mid, given = m.id, 1
        payload = json.dumps(m.payload, ensure_ascii=False) if m.payload is not None else None
        rows.append(
            (rowid, session_id, seq, mid, m.role, m.content, payload, iso(m.created_at), m.tokens, at, given)
        )
        stored.append(SessionMessage(mid, m.role, m.content, m.created_at, m.payload, seq, m.tokens))
    if n == 1:
        conn.execute(INSERT_MESSAGE, rows[0])
    else:
        conn.executemany(INSERT_MESSAGE, rows)
    record = SessionRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        datetime.fromisoformat(row[4]),
        now if at >= row[5] else datetime.fromisoformat(row[5]),  # the view's max(), as text
        row[6] - row[7] + last + n,
        last + n,
        row[8],
        row[9],
        parse_iso(row[10]) if row[10] else None,
        row[11],
    )
    return record, stored


def insert_messages(
    conn: sqlite3.Connection,
    session_id: str,
    messages: Sequence[SessionMessage],
    drawn: Collection[str] = frozenset(),
) -> tuple[SessionRecord, tuple[SessionMessage, ...], int]:
    """Store the messages whose ids are new; the session's record after the write.

    A ``drawn`` id is never looked up: it is replaced by the one its row encodes.
    """
    row = conn.execute(SELECT_FOR_APPEND, (session_id,)).fetchone()
    assert row is not None  # the caller holds the write lock on an existing session
    existing = find_stored(conn, session_id, [m.id for m in messages if m.id not in drawn], row[15])
    new = [m for m in messages if m.id in drawn or m.id not in existing]
    if not new:  # a repeated write: nothing changes, updated_at included
        head = conn.execute(SELECT_SESSION, (session_id,)).fetchone()
        return row_record(head), tuple(existing[m.id] for m in messages), 0
    record, stored = _store_new(conn, session_id, row, new, drawn)
    fresh = iter(stored)
    out = tuple(next(fresh) if m.id in drawn or m.id not in existing else existing[m.id] for m in messages)
    return record, out, len(new)


class NeedsCarefulAppend(Exception):
    """The optimistic append met a missing session or a repeated id: nothing was written."""


def append_new(
    conn: sqlite3.Cursor,
    session_id: str,
    messages: Sequence[SessionMessage],
    owner: tuple[str, str] | None,
    drawn: Collection[str] = frozenset(),
) -> tuple[SessionRecord, tuple[SessionMessage, ...]]:
    """The common append: read the session (checking the owner) and its newest seq, insert.

    Only the message rows are written: the owner is decided and the seqs allocated in this
    write transaction, which holds SQLite's write lock from its start (``BEGIN IMMEDIATE``).

    Raises:
        NeedsCarefulAppend: The session is missing or an id is already stored (the caller
            rolls back and takes the careful path: create, skip known ids).
        AccessDeniedError: ``owner`` is not the session's.
    """
    row = conn.execute(SELECT_FOR_APPEND, (session_id,)).fetchone()
    if row is None:
        raise NeedsCarefulAppend
    if owner is not None and (row[1] != owner[0] or row[2] != owner[1]):
        raise deny(session_id)
    # a given id the partial index cannot see: one this session drew, read back and sent again
    if find_drawn(conn, session_id, [m.id for m in messages if m.id not in drawn], row[15]):
        raise NeedsCarefulAppend
    try:
        record, stored = _store_new(conn, session_id, row, messages, drawn)
    except sqlite3.IntegrityError as exc:  # a given id the session holds (the partial index)
        raise NeedsCarefulAppend from exc
    return record, tuple(stored)


def lock_epoch(
    conn: sqlite3.Connection, session_id: str, epoch: str | None, *, commit_at: str | None = None
) -> None:
    """Bump the archive version (and the commit counters) and check the epoch, in the write transaction."""
    if commit_at is None:
        row = conn.execute(
            "UPDATE ogmem_sessions SET archive_version = archive_version + 1 WHERE session_id = ? "
            "RETURNING epoch",
            (session_id,),
        ).fetchone()
    else:
        row = conn.execute(
            "UPDATE ogmem_sessions SET archive_version = archive_version + 1, "
            "commit_count = commit_count + 1, last_commit_at = ?, updated_at = ? "
            "WHERE session_id = ? RETURNING epoch",
            (commit_at, commit_at, session_id),
        ).fetchone()
    if row is None:
        raise SessionNotFoundError(f"session {session_id!r} does not exist")
    if epoch is not None and row[0] != epoch:
        raise ConcurrencyError(f"session {session_id!r} was deleted and re-created")


def insert_archive(conn: sqlite3.Connection, a: ArchiveEntry) -> None:
    try:
        conn.execute(
            f"INSERT INTO ogmem_archives ({ARCHIVE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a.archive_id,
                a.session_id,
                iso(a.created_at),
                a.overview,
                a.abstract,
                a.first_seq,
                a.last_seq,
                a.message_count,
                a.token_count,
                json.dumps(dict(a.metadata), ensure_ascii=False),
                a.merged_into,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise ConcurrencyError(f"archive {a.archive_id!r} already exists") from exc


def select_archives(
    conn: sqlite3.Connection, session_id: str, include_merged: bool, limit: int | None
) -> list[ArchiveEntry]:
    where = "session_id = ?" if include_merged else "session_id = ? AND merged_into = ''"
    rows = conn.execute(
        f"SELECT {ARCHIVE_COLS} FROM ogmem_archives WHERE {where} "
        "ORDER BY last_seq DESC, created_at DESC, archive_id DESC LIMIT ?",
        (session_id, -1 if limit is None else limit),
    ).fetchall()
    return [row_archive(r) for r in rows]


def bump_archive_version(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute(
        "UPDATE ogmem_sessions SET archive_version = archive_version + 1 WHERE session_id = ?",
        (session_id,),
    )
