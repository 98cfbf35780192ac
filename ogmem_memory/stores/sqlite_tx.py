"""SQLiteStore's statements that run inside a transaction the store holds open.

Each function takes the connection of a ``BEGIN IMMEDIATE`` (or read) transaction; the
store decides when to open and commit it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ogmem_memory.errors import ConcurrencyError, SessionNotFoundError
from ogmem_memory.models import ArchiveEntry, RequestContext, SessionMessage, iso, new_epoch, utc_now
from ogmem_memory.stores.sqlite_schema import (
    ARCHIVE_COLS,
    MSG_COLS,
    SELECT_SESSION,
    SESSION_COLS,
    check_owner,
    row_archive,
    row_message,
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
    conn.execute("DELETE FROM ogmem_messages WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM ogmem_archives WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM ogmem_state WHERE session_id = ?", (session_id,))
    # last_seq is kept so seqs stay unique for caches that saw the old ones
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


def insert_messages(
    conn: sqlite3.Connection, session_id: str, messages: Sequence[SessionMessage]
) -> tuple[sqlite3.Row, tuple[SessionMessage, ...], int]:
    """Store the messages whose ids are new; the session row after the write."""
    marks = ", ".join("?" * len(messages))
    existing = {
        r[1]: row_message(r)
        for r in conn.execute(
            f"SELECT {MSG_COLS} FROM ogmem_messages WHERE session_id = ? AND id IN ({marks})",
            (session_id, *[m.id for m in messages]),
        )
    }
    new = [m for m in messages if m.id not in existing]
    # reserve the seqs and count the messages in one statement (the write lock is held)
    row = conn.execute(
        "UPDATE ogmem_sessions SET last_seq = last_seq + ?, message_count = message_count + ?, "
        f"updated_at = ? WHERE session_id = ? RETURNING {SESSION_COLS}",
        (len(new), len(new), iso(utc_now()), session_id),
    ).fetchone()
    assert row is not None  # the caller holds the write lock on an existing session
    seq = row[7] - len(new)
    rows: list[tuple[Any, ...]] = []
    for m in new:
        seq += 1
        payload = json.dumps(m.payload, ensure_ascii=False) if m.payload is not None else None
        rows.append((session_id, seq, m.id, m.role, m.content, payload, iso(m.created_at), m.tokens))
        existing[m.id] = replace(m, seq=seq, status="active", archive_id=None)
    conn.executemany(
        "INSERT INTO ogmem_messages (session_id, seq, id, role, content, payload, created_at, tokens) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return row, tuple(existing[m.id] for m in messages), len(new)


class NeedsCarefulAppend(Exception):
    """The optimistic append met a missing session or a repeated id: nothing was written."""


def append_new(
    conn: sqlite3.Connection,
    session_id: str,
    messages: Sequence[SessionMessage],
    owner: tuple[str, str] | None,
) -> tuple[sqlite3.Row, tuple[SessionMessage, ...]]:
    """The common append in two statements: reserve the seqs (checking the owner), insert.

    Raises:
        NeedsCarefulAppend: The session is missing or an id is already stored (the caller
            rolls back and takes the careful path: create, skip known ids).
        AccessDeniedError: ``owner`` is not the session's.
    """
    n = len(messages)
    row = conn.execute(
        "UPDATE ogmem_sessions SET last_seq = last_seq + ?, message_count = message_count + ?, "
        f"updated_at = ? WHERE session_id = ? RETURNING {SESSION_COLS}",
        (n, n, iso(utc_now()), session_id),
    ).fetchone()
    if row is None:
        raise NeedsCarefulAppend
    check_owner(session_id, row, owner)
    seq = row[7] - n
    rows: list[tuple[Any, ...]] = []
    stored: list[SessionMessage] = []
    for m in messages:
        seq += 1
        payload = json.dumps(m.payload, ensure_ascii=False) if m.payload is not None else None
        rows.append((session_id, seq, m.id, m.role, m.content, payload, iso(m.created_at), m.tokens))
        stored.append(replace(m, seq=seq, status="active", archive_id=None))
    try:
        conn.executemany(
            "INSERT INTO ogmem_messages (session_id, seq, id, role, content, payload, created_at, tokens) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    except sqlite3.IntegrityError as exc:
        raise NeedsCarefulAppend from exc
    return row, tuple(stored)


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
