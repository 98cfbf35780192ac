"""SQLiteStore's schema: the append-only migrations, column lists and row converters."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

from ogmem_memory.errors import AccessDeniedError, SchemaVersionError
from ogmem_memory.models import parse_iso
from ogmem_memory.stores.sql_rows import ARCHIVE_COLS as ARCHIVE_COLS
from ogmem_memory.stores.sql_rows import MSG_COLS as MSG_COLS
from ogmem_memory.stores.sql_rows import SESSION_COLS as SESSION_COLS
from ogmem_memory.stores.sql_rows import RowReader

# The archive columns after the two ids, as migration 1 created them and migration 2 copied
# them into the table keyed per session: part of two applied scripts, so never edited either
# (tests/stores/test_migrations.py pins the text of every applied script).
_ARCHIVE_COLUMNS: Final = """created_at TEXT NOT NULL,
        overview TEXT NOT NULL,
        abstract TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        message_count INTEGER NOT NULL,
        token_count INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        merged_into TEXT NOT NULL DEFAULT ''"""

# Append-only: the index of a script + 1 is the schema version it brings. Never edit one.
# Only archived messages are indexed for full-text recall (at commit, in the archive
# transaction): active ones are in every context anyway, and indexing at append time
# would double the cost of add_message.
SQLITE_MIGRATIONS: Final[tuple[str, ...]] = (
    f"""
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
        {_ARCHIVE_COLUMNS}
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
    # 2: session epochs (a re-created id never matches an old cache); archive ids scoped per
    # session; the owner index no longer holds updated_at and the active-message index is
    # partial, so an append rewrites fewer B-tree pages.
    f"""
    ALTER TABLE ogmem_sessions ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
    UPDATE ogmem_sessions SET epoch = lower(hex(randomblob(8))) WHERE epoch = '';
    DROP INDEX ogmem_sessions_owner;
    CREATE INDEX ogmem_sessions_owner ON ogmem_sessions (account_id, user_id);
    DROP INDEX ogmem_messages_status;
    CREATE INDEX ogmem_messages_active ON ogmem_messages (session_id, seq) WHERE status = 'active';
    CREATE TABLE ogmem_archives_v2 (
        session_id TEXT NOT NULL REFERENCES ogmem_sessions (session_id) ON DELETE CASCADE,
        archive_id TEXT NOT NULL,
        {_ARCHIVE_COLUMNS},
        PRIMARY KEY (session_id, archive_id)
    );
    INSERT INTO ogmem_archives_v2 (session_id, archive_id, created_at, overview, abstract, first_seq,
        last_seq, message_count, token_count, metadata, merged_into)
    SELECT session_id, archive_id, created_at, overview, abstract, first_seq, last_seq, message_count,
        token_count, metadata, merged_into FROM ogmem_archives;
    DROP TABLE ogmem_archives;
    ALTER TABLE ogmem_archives_v2 RENAME TO ogmem_archives;
    CREATE INDEX ogmem_archives_session ON ogmem_archives (session_id, merged_into, last_seq);
    """,
    # 3: recall scoped in the index itself: each archived message's row carries its session's
    # and its owner's scope tokens, so term counts and matches never come from other tenants.
    # Message vectors (float32 blobs) for recall by meaning, written at commit.
    """
    DROP TRIGGER ogmem_messages_ad;
    DROP TABLE ogmem_messages_fts;
    CREATE VIRTUAL TABLE ogmem_recall USING fts5 (content, scope, tokenize='porter unicode61');
    INSERT INTO ogmem_recall (rowid, content, scope)
    SELECT m.rowid, m.content,
        's' || hex(m.session_id) || ' u' || hex(s.account_id || char(1) || s.user_id)
    FROM ogmem_messages m JOIN ogmem_sessions s ON s.session_id = m.session_id
    WHERE m.status = 'archived';
    CREATE TRIGGER ogmem_messages_ad AFTER DELETE ON ogmem_messages WHEN old.status = 'archived' BEGIN
        DELETE FROM ogmem_recall WHERE rowid = old.rowid;
    END;
    ALTER TABLE ogmem_messages ADD COLUMN embedding BLOB;
    """,
    # 4: an append writes only its message row and two indexes (3 B-tree pages, from 6):
    # - last_seq, message_count and updated_at in ogmem_sessions are as of the last write
    #   that touched the session itself (create, clear, commit); the view adds the messages
    #   appended since, found at the end of the (session_id, seq) index. stored_at is when a
    #   message was written (NULL before this migration, when appends updated the session).
    # - no index of active messages: active_from is a lower bound of the active seqs (set at
    #   every commit), so the live window is a range of the (session_id, seq) index.
    """
    ALTER TABLE ogmem_messages ADD COLUMN stored_at TEXT;
    ALTER TABLE ogmem_sessions ADD COLUMN active_from INTEGER NOT NULL DEFAULT 1;
    UPDATE ogmem_sessions SET active_from = coalesce((SELECT min(m.seq) FROM ogmem_messages m
        WHERE m.session_id = ogmem_sessions.session_id AND m.status = 'active'), last_seq + 1);
    DROP INDEX ogmem_messages_active;
    CREATE VIEW ogmem_session_heads AS
    SELECT session_id, account_id, user_id, agent_id, created_at,
        max(updated_at, coalesce((SELECT m.stored_at FROM ogmem_messages m
            WHERE m.session_id = s.session_id ORDER BY m.seq DESC LIMIT 1), '')) AS updated_at,
        message_count - last_seq + max(last_seq, coalesce((SELECT max(m.seq) FROM ogmem_messages m
            WHERE m.session_id = s.session_id), 0)) AS message_count,
        max(last_seq, coalesce((SELECT max(m.seq) FROM ogmem_messages m
            WHERE m.session_id = s.session_id), 0)) AS last_seq,
        archive_version, commit_count, last_commit_at, epoch, active_from
    FROM ogmem_sessions s;
    """,
    # 5: no index of every message id (an append writes 2 B-tree pages, from 3). A drawn id
    # encodes the row's rowid (sqlite_ids.py); only the ids callers give (given = 1, every id
    # stored before this migration) are in a partial unique index. The table is rebuilt to
    # drop its UNIQUE (session_id, id); rowids are kept, so the recall index still matches.
    # legacy_alter_table: the view names the table, which is missing between DROP and RENAME.
    """
    PRAGMA legacy_alter_table = ON;
    DROP TRIGGER ogmem_messages_ad;
    CREATE TABLE ogmem_messages_v5 (
        rowid INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES ogmem_sessions (session_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, id TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
        payload TEXT, created_at TEXT NOT NULL, tokens INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'active', archive_id TEXT, embedding BLOB, stored_at TEXT,
        given INTEGER,
        UNIQUE (session_id, seq)
    );
    INSERT INTO ogmem_messages_v5 (rowid, session_id, seq, id, role, content, payload, created_at,
        tokens, status, archive_id, embedding, stored_at, given)
    SELECT rowid, session_id, seq, id, role, content, payload, created_at, tokens, status, archive_id,
        embedding, stored_at, 1 FROM ogmem_messages;
    DROP TABLE ogmem_messages;
    ALTER TABLE ogmem_messages_v5 RENAME TO ogmem_messages;
    PRAGMA legacy_alter_table = OFF;
    CREATE UNIQUE INDEX ogmem_messages_given_id ON ogmem_messages (session_id, id) WHERE given = 1;
    CREATE TABLE ogmem_message_ids (id_key INTEGER NOT NULL, floor INTEGER NOT NULL);
    INSERT INTO ogmem_message_ids (id_key, floor)
    SELECT random() & 281474976710655, coalesce(max(rowid), 0) FROM ogmem_messages;
    CREATE TRIGGER ogmem_messages_ad AFTER DELETE ON ogmem_messages WHEN old.status = 'archived' BEGIN
        DELETE FROM ogmem_recall WHERE rowid = old.rowid;
    END;
    CREATE TRIGGER ogmem_messages_floor AFTER DELETE ON ogmem_messages
    WHEN old.rowid > (SELECT floor FROM ogmem_message_ids) BEGIN
        UPDATE ogmem_message_ids SET floor = old.rowid;
    END;
    """,
)

# The scope column of ogmem_recall, computed in SQL at commit (the same expression as above).
RECALL_SCOPE_SQL: Final = "'s' || hex(m.session_id) || ' u' || hex(s.account_id || char(1) || s.user_id)"


def session_scope_token(session_id: str) -> str:
    """The token ``RECALL_SCOPE_SQL`` writes for a session (SQLite's hex() of its UTF-8)."""
    return "s" + session_id.encode("utf-8").hex().upper()


def owner_scope_token(owner: tuple[str, str]) -> str:
    return "u" + (owner[0] + "\x01" + owner[1]).encode("utf-8").hex().upper()


# A session as readers see it (the appends since its row was last written included): its
# counters and updated_at are read through the view, never from ogmem_sessions directly.
SELECT_SESSION: Final = f"SELECT {SESSION_COLS}, active_from FROM ogmem_session_heads WHERE session_id = ?"
# The append's read, in its write transaction: the session row as stored, then the seq of its
# newest message (one probe of the (session_id, seq) index).
# Then what a new row's rowid and drawn id are made of: the highest rowid stored, the highest
# ever deleted (rowids are never reused) and the file's id key (sqlite_ids.py).
SELECT_FOR_APPEND: Final = (
    f"SELECT {SESSION_COLS}, (SELECT max(seq) FROM ogmem_messages WHERE session_id = ?1), "
    "(SELECT max(rowid) FROM ogmem_messages), k.floor, k.id_key "
    "FROM ogmem_sessions, ogmem_message_ids k WHERE session_id = ?1"
)
# Folds the appends since the session row was last written into it (before messages go).
FOLD_APPENDS: Final = (
    "UPDATE ogmem_sessions SET message_count = message_count - last_seq + "
    "max(last_seq, coalesce((SELECT max(seq) FROM ogmem_messages WHERE session_id = ?1), 0)), "
    "last_seq = max(last_seq, coalesce((SELECT max(seq) FROM ogmem_messages WHERE session_id = ?1), 0)) "
    "WHERE session_id = ?1"
)
INSERT_MESSAGE: Final = (
    "INSERT INTO ogmem_messages (rowid, session_id, seq, id, role, content, payload, created_at, "
    "tokens, stored_at, given) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The active messages from a seq on: a range of the (session_id, seq) index that starts at
# the session's active_from at the lowest (``SELECT_SESSION``'s last column).
ACTIVE_FROM: Final = (
    f"SELECT {MSG_COLS} FROM ogmem_messages WHERE session_id = ? AND seq >= ? AND status = 'active' "
    "ORDER BY seq"
)
# After a commit: the lowest seq still active (the scan starts at the old bound), else the next seq.
MOVE_ACTIVE_FROM: Final = (
    "UPDATE ogmem_sessions SET active_from = coalesce((SELECT m.seq FROM ogmem_messages m "
    "WHERE m.session_id = ?1 AND m.seq >= ogmem_sessions.active_from AND m.status = 'active' "
    "ORDER BY m.seq LIMIT 1), "
    "max(last_seq, coalesce((SELECT max(seq) FROM ogmem_messages WHERE session_id = ?1), 0)) + 1) "
    "WHERE session_id = ?1"
)


# ISO text timestamps and JSON text (a search row's message columns end with its session_id)
_ROWS: Final = RowReader(
    when=datetime.fromisoformat,
    last_commit=lambda text: parse_iso(text) if text else None,
    json=json.loads,
    trailing_session=True,
)
row_message: Final = _ROWS.message
row_archive: Final = _ROWS.archive
row_record: Final = _ROWS.record


def deny(session_id: str) -> AccessDeniedError:
    return AccessDeniedError(f"session {session_id!r} belongs to another user")


def check_owner(session_id: str, row: sqlite3.Row | None, owner: tuple[str, str] | None) -> None:
    if row is not None and owner is not None and (row[1], row[2]) != tuple(owner):
        raise deny(session_id)


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the pending session-store migrations in one IMMEDIATE transaction (every process may try)."""
    apply_migrations(conn, "ogmem_schema", [split_script(s) for s in SQLITE_MIGRATIONS], "database schema")


def apply_migrations(
    conn: sqlite3.Connection, table: str, migrations: Sequence[Sequence[str]], what: str
) -> None:
    """Run the statements of the ``migrations`` past the version recorded in ``table``, in one
    IMMEDIATE transaction, and record the new version; ``SchemaVersionError`` when the file's
    version (``what``) is newer than this code."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
        row = conn.execute(f"SELECT version FROM {table}").fetchone()
        version = row[0] if row else 0
        if version > len(migrations):
            raise SchemaVersionError(
                f"{what} version {version} is newer than this ogmem-memory "
                f"({len(migrations)}); upgrade ogmem-memory"
            )
        for statements in migrations[version:]:
            for statement in statements:
                conn.execute(statement)
        if row is None:
            conn.execute(f"INSERT INTO {table} (version) VALUES (?)", (len(migrations),))
        else:
            conn.execute(f"UPDATE {table} SET version = ?", (len(migrations),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def open_connection(
    path: str,
    synchronous: str,
    busy_timeout_ms: int,
    prepare: Callable[[sqlite3.Connection], None],
    *pragmas: str,
) -> sqlite3.Connection:
    """An autocommit connection to ``path`` (its folder created) with WAL, ``synchronous``, foreign
    keys, the busy timeout and ``pragmas``, after ``prepare`` (the migrations); closed again when
    any of that fails. ``synchronous`` and ``pragmas`` must be validated by the caller.

    Opening is retried until the busy timeout has passed when the file is locked: SQLite answers
    "database is locked" at once, without waiting, in one case the busy handler cannot serve
    (switching a file to WAL while another connection holds its write lock, as when two
    processes open a new file together).
    """
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = 0.001
    while True:
        try:
            return _open_once(path, synchronous, busy_timeout_ms, prepare, pragmas)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _open_once(
    path: str,
    synchronous: str,
    busy_timeout_ms: int,
    prepare: Callable[[sqlite3.Connection], None],
    pragmas: Sequence[str],
) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_ms / 1000
    )
    try:
        settings = ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON")
        for pragma in (*settings, f"busy_timeout={int(busy_timeout_ms)}", *pragmas):
            conn.execute(f"PRAGMA {pragma}")
        prepare(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def split_script(script: str) -> list[str]:
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
