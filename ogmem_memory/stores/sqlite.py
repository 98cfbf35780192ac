"""SQLiteStore: the embedded default (one file, WAL, FTS5 recall)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from ogmem_memory.errors import (
    AccessDeniedError,
    ConcurrencyError,
    InvalidInputError,
    SchemaVersionError,
    SessionNotFoundError,
    StoreError,
)
from ogmem_memory.models import (
    ArchiveEntry,
    RequestContext,
    SessionHead,
    SessionMessage,
    SessionRecord,
    iso,
    parse_iso,
    utc_now,
)
from ogmem_memory.recall import (
    MAX_TERM_DOCS,
    fts5_query,
    interleave,
    rank_by_overlap,
    search_terms,
)
from ogmem_memory.stores.base import SessionStore

# Append-only: the index of a script + 1 is the schema version it brings. Never edit one.
# Only archived messages are indexed for full-text recall (at commit, in the archive
# transaction): active ones are in every context anyway, and indexing at append time
# would double the cost of add_message.
SQLITE_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE ogmem_sessions (
        session_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        message_count INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        archive_version INTEGER NOT NULL DEFAULT 0,
        commit_count INTEGER NOT NULL DEFAULT 0,
        last_commit_at TEXT
    );
    CREATE INDEX ogmem_sessions_owner ON ogmem_sessions (account_id, user_id, updated_at);
    CREATE TABLE ogmem_messages (
        rowid INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES ogmem_sessions (session_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        payload TEXT,
        created_at TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        archive_id TEXT,
        UNIQUE (session_id, seq),
        UNIQUE (session_id, id)
    );
    CREATE INDEX ogmem_messages_status ON ogmem_messages (session_id, status, seq);
    CREATE TABLE ogmem_archives (
        archive_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES ogmem_sessions (session_id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        overview TEXT NOT NULL,
        abstract TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        message_count INTEGER NOT NULL,
        token_count INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        merged_into TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ogmem_archives_session ON ogmem_archives (session_id, merged_into, last_seq);
    CREATE TABLE ogmem_state (
        session_id TEXT PRIMARY KEY REFERENCES ogmem_sessions (session_id) ON DELETE CASCADE,
        payload TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE ogmem_messages_fts USING fts5 (
        content, content='ogmem_messages', content_rowid='rowid', tokenize='porter unicode61'
    );
    CREATE TRIGGER ogmem_messages_ad AFTER DELETE ON ogmem_messages WHEN old.status = 'archived' BEGIN
        INSERT INTO ogmem_messages_fts (ogmem_messages_fts, rowid, content)
        VALUES ('delete', old.rowid, old.content);
    END;
    """,
)

_MSG_COLS: Final = "seq, id, role, content, payload, created_at, tokens, status, archive_id"
_ARCHIVE_COLS: Final = (
    "archive_id, session_id, created_at, overview, abstract, first_seq, last_seq, "
    "message_count, token_count, metadata, merged_into"
)
_SESSION_COLS: Final = (
    "session_id, account_id, user_id, agent_id, created_at, updated_at, message_count, "
    "last_seq, archive_version, commit_count, last_commit_at"
)


def _message(row: sqlite3.Row) -> SessionMessage:
    return SessionMessage(
        id=row[1],
        role=row[2],
        content=row[3],
        payload=json.loads(row[4]) if row[4] is not None else None,
        created_at=datetime.fromisoformat(row[5]),
        seq=row[0],
        tokens=row[6],
        status=row[7],
        archive_id=row[8],
    )


def _archive(row: sqlite3.Row) -> ArchiveEntry:
    return ArchiveEntry(
        archive_id=row[0],
        session_id=row[1],
        created_at=datetime.fromisoformat(row[2]),
        overview=row[3],
        abstract=row[4],
        first_seq=row[5],
        last_seq=row[6],
        message_count=row[7],
        token_count=row[8],
        metadata=json.loads(row[9]),
        merged_into=row[10],
    )


def _record(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        session_id=row[0],
        account_id=row[1],
        user_id=row[2],
        agent_id=row[3],
        created_at=datetime.fromisoformat(row[4]),
        updated_at=datetime.fromisoformat(row[5]),
        message_count=row[6],
        last_seq=row[7],
        archive_version=row[8],
        commit_count=row[9],
        last_commit_at=parse_iso(row[10]) if row[10] else None,
    )


class SQLiteStore(SessionStore):
    """Sessions in one SQLite file, safe across threads and processes sharing it.

    Args:
        path: Database file (created on ``setup``); ``":memory:"`` for a private one.
        synchronous: SQLite ``synchronous`` pragma. ``"NORMAL"`` (default, with WAL) keeps
            every acknowledged write through a process crash; ``"FULL"`` also through
            power loss, at the cost of an fsync per write.
        busy_timeout_ms: How long a writer waits for another process's transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "ogmem.db",
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidInputError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------

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
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")  # validated in __init__
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
                self._migrate(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            self._conn = conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS ogmem_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM ogmem_schema").fetchone()
            version = row[0] if row else 0
            if version > len(SQLITE_MIGRATIONS):
                raise SchemaVersionError(
                    f"database schema version {version} is newer than this ogmem-memory "
                    f"({len(SQLITE_MIGRATIONS)}); upgrade ogmem-memory"
                )
            for script in SQLITE_MIGRATIONS[version:]:
                for statement in _split_script(script):
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO ogmem_schema (version) VALUES (?)", (len(SQLITE_MIGRATIONS),))
            else:
                conn.execute("UPDATE ogmem_schema SET version = ?", (len(SQLITE_MIGRATIONS),))
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
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            self.setup()
        with self._lock:
            assert self._conn is not None
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front so seq allocation is serial."""
        if self._conn is None:
            self.setup()
        with self._lock:
            conn = self._conn
            assert conn is not None
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite write failed: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite write failed: {exc}") from exc
                raise

    # -- sessions ----------------------------------------------------------------

    def bind_session(self, session_id: str, identity: RequestContext) -> SessionRecord:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_SESSION_COLS} FROM ogmem_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        if row is None:
            now = iso(utc_now())
            with self._write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO ogmem_sessions (session_id, account_id, user_id, agent_id, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (session_id, identity.account_id, identity.user_id, identity.agent_id, now, now),
                )
                row = conn.execute(
                    f"SELECT {_SESSION_COLS} FROM ogmem_sessions WHERE session_id = ?", (session_id,)
                ).fetchone()
        record = _record(row)
        if record.owner != identity.owner:
            raise AccessDeniedError(f"session {session_id!r} belongs to another user")
        return record

    def get_session_record(self, session_id: str) -> SessionRecord | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_SESSION_COLS} FROM ogmem_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        return _record(row) if row else None

    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        with self._read() as conn:
            if owner is None:
                rows = conn.execute(
                    f"SELECT {_SESSION_COLS} FROM ogmem_sessions ORDER BY updated_at DESC, session_id DESC "
                    "LIMIT ? OFFSET ?",
                    (limit, offset),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_SESSION_COLS} FROM ogmem_sessions WHERE account_id = ? AND user_id = ? "
                    "ORDER BY updated_at DESC, session_id DESC LIMIT ? OFFSET ?",
                    (*owner, limit, offset),
                ).fetchall()
        return [_record(r) for r in rows]

    def delete_session(self, session_id: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM ogmem_sessions WHERE session_id = ?", (session_id,)).rowcount > 0

    def clear_session(self, session_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM ogmem_messages WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM ogmem_archives WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM ogmem_state WHERE session_id = ?", (session_id,))
            # last_seq is kept so seqs stay unique for caches that saw the old ones
            conn.execute(
                "UPDATE ogmem_sessions SET message_count = 0, archive_version = archive_version + 1, "
                "updated_at = ? WHERE session_id = ?",
                (iso(utc_now()), session_id),
            )

    # -- messages ----------------------------------------------------------------

    def append_messages(self, session_id: str, messages: Sequence[SessionMessage]) -> list[SessionMessage]:
        if not messages:
            return []
        rows: list[tuple[Any, ...]] = []
        with self._write() as conn:
            # reserve the seqs and count the messages in one statement (the write lock is held)
            row = conn.execute(
                "UPDATE ogmem_sessions SET last_seq = last_seq + ?, message_count = message_count + ?, "
                "updated_at = ? WHERE session_id = ? RETURNING last_seq",
                (len(messages), len(messages), iso(utc_now()), session_id),
            ).fetchone()
            if row is None:
                raise SessionNotFoundError(f"session {session_id!r} does not exist")
            seq = row[0] - len(messages)
            stored = []
            for m in messages:
                seq += 1
                payload = json.dumps(m.payload, ensure_ascii=False) if m.payload is not None else None
                rows.append((session_id, seq, m.id, m.role, m.content, payload, iso(m.created_at), m.tokens))
                stored.append(
                    SessionMessage(
                        id=m.id,
                        role=m.role,
                        content=m.content,
                        created_at=m.created_at,
                        payload=m.payload,
                        seq=seq,
                        tokens=m.tokens,
                    )
                )
            try:
                conn.executemany(
                    "INSERT INTO ogmem_messages (session_id, seq, id, role, content, payload, created_at, tokens) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except sqlite3.IntegrityError as exc:
                raise InvalidInputError(f"duplicate message id in {session_id!r}: {exc}") from exc
        return stored

    def list_messages(
        self,
        session_id: str,
        *,
        status: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[SessionMessage]:
        clauses = ["session_id = ?"]
        params: list[Any] = [session_id]
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if after_seq is not None:
            clauses.append("seq > ?")
            params.append(after_seq)
        params.append(-1 if limit is None else limit)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_MSG_COLS} FROM ogmem_messages WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
                params,
            ).fetchall()
        return [_message(r) for r in rows]

    def list_messages_by_seq(self, session_id: str, seqs: Sequence[int]) -> list[SessionMessage]:
        wanted = sorted(set(seqs))[:500]
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_MSG_COLS} FROM ogmem_messages WHERE session_id = ? AND seq IN ({marks}) ORDER BY seq",
                (session_id, *wanted),
            ).fetchall()
        return [_message(r) for r in rows]

    def head(self, session_id: str) -> SessionHead | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT last_seq, archive_version FROM ogmem_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        return SessionHead(row[0], row[1]) if row else None

    # -- archives ----------------------------------------------------------------

    def commit_archive(
        self, session_id: str, archive: ArchiveEntry, message_ids: Sequence[str]
    ) -> ArchiveEntry:
        with self._write() as conn:
            flipped = 0
            for start in range(0, len(message_ids), 500):  # stay under SQLite's bound-variable limit
                chunk = list(message_ids[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                flipped += conn.execute(
                    "UPDATE ogmem_messages SET status = 'archived', archive_id = ? "
                    f"WHERE session_id = ? AND status = 'active' AND id IN ({marks})",
                    (archive.archive_id, session_id, *chunk),
                ).rowcount
            if flipped != len(set(message_ids)):
                raise ConcurrencyError(f"messages of {session_id!r} were archived by another writer")
            conn.execute(
                "INSERT INTO ogmem_messages_fts (rowid, content) SELECT rowid, content FROM ogmem_messages "
                "WHERE session_id = ? AND archive_id = ?",
                (session_id, archive.archive_id),
            )
            self._insert_archive(conn, archive)
            conn.execute(
                "UPDATE ogmem_sessions SET archive_version = archive_version + 1, "
                "commit_count = commit_count + 1, last_commit_at = ?, updated_at = ? WHERE session_id = ?",
                (iso(utc_now()), iso(utc_now()), session_id),
            )
        return archive if not archive.messages else _without_messages(archive)

    @staticmethod
    def _insert_archive(conn: sqlite3.Connection, a: ArchiveEntry) -> None:
        try:
            conn.execute(
                f"INSERT INTO ogmem_archives ({_ARCHIVE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    def list_archives(
        self, session_id: str, *, include_merged: bool = False, limit: int | None = None
    ) -> list[ArchiveEntry]:
        where = "session_id = ?" if include_merged else "session_id = ? AND merged_into = ''"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_ARCHIVE_COLS} FROM ogmem_archives WHERE {where} "
                "ORDER BY last_seq DESC, created_at DESC, archive_id DESC LIMIT ?",
                (session_id, -1 if limit is None else limit),
            ).fetchall()
        return [_archive(r) for r in rows]

    def read_archive(self, session_id: str, archive_id: str) -> ArchiveEntry | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_ARCHIVE_COLS} FROM ogmem_archives WHERE session_id = ? AND archive_id = ?",
                (session_id, archive_id),
            ).fetchone()
            if row is None:
                return None
            archive = _archive(row)
            msgs = conn.execute(
                f"SELECT {_MSG_COLS} FROM ogmem_messages WHERE session_id = ? AND status = 'archived' "
                "AND seq BETWEEN ? AND ? ORDER BY seq",
                (session_id, archive.first_seq, archive.last_seq),
            ).fetchall()
        return _with_messages(archive, tuple(_message(m) for m in msgs))

    def merge_archives(
        self, session_id: str, merged: ArchiveEntry, source_ids: Sequence[str]
    ) -> ArchiveEntry:
        with self._write() as conn:
            marks = ", ".join("?" * len(source_ids))
            self._insert_archive(conn, merged)
            flipped = conn.execute(
                f"UPDATE ogmem_archives SET merged_into = ? WHERE session_id = ? AND merged_into = '' "
                f"AND archive_id IN ({marks})",
                (merged.archive_id, session_id, *source_ids),
            ).rowcount
            if flipped != len(set(source_ids)):
                raise ConcurrencyError(f"archives of {session_id!r} were merged by another writer")
            self._bump_archive_version(conn, session_id)
        return _without_messages(merged)

    @staticmethod
    def _bump_archive_version(conn: sqlite3.Connection, session_id: str) -> None:
        conn.execute(
            "UPDATE ogmem_sessions SET archive_version = archive_version + 1 WHERE session_id = ?",
            (session_id,),
        )

    def mark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE ogmem_archives SET merged_into = ? WHERE session_id = ? AND archive_id = ? "
                "AND merged_into IN ('', ?)",
                (merged_archive_id, session_id, archive_id, merged_archive_id),
            ).rowcount
            if changed:
                self._bump_archive_version(conn, session_id)
        return changed > 0

    def unmark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE ogmem_archives SET merged_into = '' WHERE session_id = ? AND archive_id = ? "
                "AND merged_into = ?",
                (session_id, archive_id, merged_archive_id),
            ).rowcount
            if changed:
                self._bump_archive_version(conn, session_id)
        return changed > 0

    def delete_archive(self, session_id: str, archive_id: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "DELETE FROM ogmem_archives WHERE session_id = ? AND archive_id = ?", (session_id, archive_id)
            ).rowcount
            if changed:
                self._bump_archive_version(conn, session_id)
        return changed > 0

    # -- state -------------------------------------------------------------------

    def save_state(self, session_id: str, payload: Mapping[str, Any]) -> None:
        text = json.dumps(dict(payload), ensure_ascii=False)
        with self._write() as conn:
            if (
                conn.execute("SELECT 1 FROM ogmem_sessions WHERE session_id = ?", (session_id,)).fetchone()
                is None
            ):
                raise SessionNotFoundError(f"session {session_id!r} does not exist")
            conn.execute(
                "INSERT INTO ogmem_state (session_id, payload, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at",
                (session_id, text, iso(utc_now())),
            )

    def load_state(self, session_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT payload FROM ogmem_state WHERE session_id = ?", (session_id,)
            ).fetchone()
        if row is None:
            return None
        payload = json.loads(row[0])
        return payload if isinstance(payload, dict) else None

    # -- search ------------------------------------------------------------------

    def search_messages(
        self,
        query: str,
        *,
        session_id: str | None = None,
        owner: tuple[str, str] | None = None,
        status: str | None = "archived",
        limit: int = 10,
    ) -> list[SessionMessage]:
        if session_id is None and owner is None:
            raise InvalidInputError("search_messages needs a session_id or an owner")
        terms = search_terms(query)
        if not terms or limit <= 0:
            return []
        if session_id is not None:
            record = self.get_session_record(session_id)
            if record is None:
                return []
            if owner is not None and record.owner != owner:
                raise AccessDeniedError(f"session {session_id!r} belongs to another user")
            scope, scope_params = "m.session_id = ?", [session_id]
        else:
            assert owner is not None
            scope = (
                "m.session_id IN (SELECT session_id FROM ogmem_sessions WHERE account_id = ? AND user_id = ?)"
            )
            scope_params = list(owner)
        cols = ", ".join(f"m.{c.strip()}" for c in _MSG_COLS.split(","))
        found: list[SessionMessage] = []
        with self._read() as conn:
            if status in (None, "archived"):
                selective = self._selective_terms(conn, terms)
                if selective:
                    rows = conn.execute(
                        f"SELECT {cols} FROM ogmem_messages_fts JOIN ogmem_messages m "
                        f"ON m.rowid = ogmem_messages_fts.rowid WHERE ogmem_messages_fts MATCH ? AND {scope} "
                        "ORDER BY rank, m.seq LIMIT ?",
                        (fts5_query(selective), *scope_params, limit),
                    ).fetchall()
                    found = [_message(r) for r in rows]
            if status in (None, "active"):
                # the live windows are bounded by the commit thresholds: score them directly
                rows = conn.execute(
                    f"SELECT {cols} FROM ogmem_messages m WHERE m.status = 'active' AND {scope}", scope_params
                ).fetchall()
                found = interleave(found, rank_by_overlap(terms, map(_message, rows)), limit)
        return found[:limit]

    @staticmethod
    def _selective_terms(conn: sqlite3.Connection, terms: Sequence[str]) -> list[str]:
        """Drop terms found in more than MAX_TERM_DOCS messages.

        A term in thousands of messages says little about any of them, and ranking
        its matches would make recall cost grow with the history.
        """
        # counting stops at MAX_TERM_DOCS + 1 rows, so this is bounded whatever the history
        counts = {
            t: conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM ogmem_messages_fts WHERE ogmem_messages_fts MATCH ? LIMIT ?)",
                (fts5_query([t]), MAX_TERM_DOCS + 1),
            ).fetchone()[0]
            for t in terms
        }
        return [t for t in terms if counts.get(t, 0) <= MAX_TERM_DOCS]


def _split_script(script: str) -> list[str]:
    """Split a migration script into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def _without_messages(a: ArchiveEntry) -> ArchiveEntry:
    return _with_messages(a, ())


def _with_messages(a: ArchiveEntry, messages: tuple[SessionMessage, ...]) -> ArchiveEntry:
    from dataclasses import replace

    return replace(a, messages=messages)
