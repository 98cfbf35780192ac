"""PostgresStore's SQL: the append-only migrations, every statement, and row converters.

Statements are templates: ``{sessions}``, ``{messages}``... are filled with quoted
identifiers (psycopg.sql) by ``PostgresStore._q``; values are always bound parameters.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias, TypeVar

from psycopg import sql

from ogmem_memory.errors import AccessDeniedError, ConcurrencyError, InvalidInputError, SessionNotFoundError
from ogmem_memory.models import ArchiveEntry, SessionMessage, SessionRecord
from ogmem_memory.stores.sql_rows import ARCHIVE_COLS as ARCHIVE_COLS
from ogmem_memory.stores.sql_rows import MSG_COLS as MSG_COLS
from ogmem_memory.stores.sql_rows import SESSION_COLS as SESSION_COLS
from ogmem_memory.stores.sql_rows import RowReader

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
    # 2: session epochs: a session id deleted and re-created never matches an old cache.
    """
    ALTER TABLE {schema}.ogmem_sessions ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
    UPDATE {schema}.ogmem_sessions SET epoch = substr(md5(random()::text || session_id), 1, 16)
    WHERE epoch = '';
    """,
    # 3: recall scoped in the index itself: every archived message's search vector also holds
    # its session's and its owner's scope lexemes (see scope_lexemes), so term counts and
    # matches come from that scope alone, through the GIN index.
    """
    UPDATE {schema}.ogmem_messages m
    SET search = m.search || ('s' || md5(m.session_id))::tsvector
        || ('u' || md5(s.account_id || chr(1) || s.user_id))::tsvector
    FROM {schema}.ogmem_sessions s
    WHERE s.session_id = m.session_id AND m.search IS NOT NULL;
    """,
    # 4: the search index holds archived messages only (active ones have no search vector):
    # an append no longer writes a GIN null entry. ogmem_fail lets one statement abort
    # itself, so a commit is a single atomic statement (see COMMIT_ARCHIVE).
    """
    DROP INDEX {schema}.ogmem_messages_search;
    CREATE INDEX ogmem_messages_search ON {schema}.ogmem_messages USING GIN (search)
    WHERE search IS NOT NULL;
    CREATE FUNCTION {schema}.ogmem_fail(code TEXT, message TEXT) RETURNS INTEGER
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message; END $$;
    """,
)

Row: TypeAlias = tuple[Any, ...]
Rows: TypeAlias = list[Row]
Step: TypeAlias = tuple[sql.SQL | sql.Composed | bytes, Sequence[Any] | Mapping[str, Any] | None]
T = TypeVar("T")


class Snapshot(tuple[Step, ...]):
    """Read-only steps sent in ONE round trip and read in ONE snapshot: a pipeline of
    ``BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY``, the steps and ``COMMIT``.

    The program receives one Row per step: that step's rows, as a tuple.
    """

    __slots__ = ()


Program: TypeAlias = Generator[Step | Snapshot, Rows, T]

N_SESSION_COLS: Final = 12

SELECT_SESSION: Final = "SELECT {session_cols} FROM {sessions} WHERE session_id = %s"
INSERT_SESSION: Final = (
    "INSERT INTO {sessions} (session_id, account_id, user_id, agent_id, created_at, updated_at, epoch) "
    "VALUES (%s, %s, %s, %s, now(), now(), %s) ON CONFLICT (session_id) DO NOTHING RETURNING {session_cols}"
)
SELECT_SESSION_FOR_UPDATE: Final = "SELECT {session_cols} FROM {sessions} WHERE session_id = %s FOR UPDATE"
SESSIONS_ORDER: Final = " ORDER BY updated_at DESC, session_id DESC LIMIT %s OFFSET %s"
SELECT_SESSIONS: Final = "SELECT {session_cols} FROM {sessions}" + SESSIONS_ORDER
SELECT_OWNER_SESSIONS: Final = (
    "SELECT {session_cols} FROM {sessions} WHERE account_id = %s AND user_id = %s" + SESSIONS_ORDER
)
SESSION_OWNER: Final = "SELECT account_id, user_id, epoch FROM {sessions} WHERE session_id = %s"
DELETE_SESSION: Final = "DELETE FROM {sessions} WHERE session_id = %s RETURNING 1"
# last_seq is kept so seqs stay unique for caches that saw the old ones
CLEAR_SESSION: Final = (
    "UPDATE {sessions} SET message_count = 0, archive_version = archive_version + 1, updated_at = now() "
    "WHERE session_id = %s RETURNING 1"
)
HEAD: Final = "SELECT last_seq, archive_version, epoch FROM {sessions} WHERE session_id = %s"
# The cached window's fast path: the session row and the active messages after the cached
# seq, in ONE statement (one snapshot), only while epoch and archive version are unchanged.
WINDOW_DELTA: Final = """
    SELECT {session_cols_s}, m.* FROM {sessions} s
    LEFT JOIN LATERAL (
        SELECT {msg_cols} FROM {messages} mm
        WHERE mm.session_id = s.session_id AND mm.status = 'active' AND mm.seq > %(after)s
          AND s.epoch = %(epoch)s AND s.archive_version = %(av)s
        ORDER BY mm.seq
    ) m ON true
    WHERE s.session_id = %(sid)s
"""
ACTIVE: Final = "SELECT {msg_cols} FROM {messages} WHERE session_id = %s AND status = 'active' ORDER BY seq"
REPEATABLE_READ: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
EXISTING_IDS: Final = "SELECT {msg_cols} FROM {messages} WHERE session_id = %s AND id = ANY(%s::text[])"
# FOR UPDATE, not NO KEY UPDATE: a merge holding the row FOR KEY SHARE (and the archive rows
# it marks; see MERGE_ARCHIVES) must finish before archives are changed here, or the two
# would deadlock.
LOCK_SESSION: Final = "SELECT 1 FROM {sessions} WHERE session_id = %s FOR UPDATE"
BUMP_ARCHIVE_VERSION: Final = (
    "UPDATE {sessions} SET archive_version = archive_version + 1 WHERE session_id = %s RETURNING epoch"
)
# A commit in ONE statement (one round trip, one implicit transaction). First the search
# words of the messages to flip (``w``: the costly part, computed before any lock is taken:
# the session row's update waits for it, as its one-time filter). Then the session row (the
# UPDATE every writer of the session takes first; epoch checked), whose lock appends wait
# for until the end, then the compare-and-set flip of those rows, the archive row and, with
# an embedder, the vectors. The flip finds its rows by the ctid ``w`` read; one a concurrent
# winner flipped (or a clear deleted) first is waited for and re-checked under READ
# COMMITTED: its latest version is no longer active, so it is skipped, and a flip short of
# ``n`` rows fails the whole statement through ogmem_fail: nothing of it stays. No row:
# missing session or another epoch.
# Only archived messages are indexed for recall, here: active ones are in every context
# anyway, and indexing at append time would slow add_message. Besides the words, the vector
# holds the session's and the owner's scope lexemes (see OWNER_LEXEME).
COMMIT_ARCHIVE: Final = """
    WITH w AS MATERIALIZED (
        SELECT m.ctid AS row,
               to_tsvector('english', regexp_replace(left(m.content, 100000), '[[:punct:]]+', ' ', 'g')) AS words
        FROM {messages} m
        WHERE m.session_id = %(sid)s AND m.status = 'active' AND m.id = ANY(%(ids)s::text[])
    ), s AS (
        UPDATE {sessions}
        SET archive_version = archive_version + 1, commit_count = commit_count + 1,
            last_commit_at = now(), updated_at = now()
        WHERE session_id = %(sid)s AND (%(epoch)s::text IS NULL OR epoch = %(epoch)s)
          AND (SELECT count(*) FROM w) >= 0
        RETURNING session_id, account_id, user_id
    ), f AS (
        UPDATE {messages} m
        SET status = 'archived', archive_id = %(aid)s,
            search = w.words
                || ('s' || md5(s.session_id))::tsvector
                || ('u' || md5(s.account_id || chr(1) || s.user_id))::tsvector
        FROM s, w
        WHERE m.ctid = w.row AND m.session_id = s.session_id AND m.status = 'active'
        RETURNING m.id
    ), a AS (
        INSERT INTO {archives} ({archive_cols})
        SELECT %(aid)s, s.session_id, %(created)s, %(overview)s, %(abstract)s, %(first)s, %(last)s,
               %(count)s, %(tokens)s, %(metadata)s::json, %(merged)s
        FROM s
    ){vectors_cte}
    SELECT CASE WHEN (SELECT count(*) FROM f) = %(n)s THEN 1
        ELSE {schema}.ogmem_fail('40001', 'messages were archived by another writer') END
    FROM s
"""
# With an embedder: the commit's vectors, in the same statement.
VECTORS_CTE: Final = """, v AS (
        INSERT INTO {vectors} (session_id, seq, embedding)
        SELECT m.session_id, m.seq, e.embedding::vector
        FROM s JOIN {messages} m ON m.session_id = s.session_id
        JOIN unnest(%(vids)s::text[], %(vecs)s::text[]) AS e (id, embedding) ON m.id = e.id
        ON CONFLICT (session_id, seq) DO UPDATE SET embedding = excluded.embedding
    )"""


def _compact(statement: str) -> str:
    """One line: pg_stat_activity shows the first 1 kB of a statement, the archive insert too.
    (The statements' quoted literals hold no run of blanks.)"""
    return " ".join(statement.split())


COMMIT_PLAIN: Final = _compact(COMMIT_ARCHIVE.replace("{vectors_cte}", ""))
COMMIT_WITH_VECTORS: Final = _compact(COMMIT_ARCHIVE.replace("{vectors_cte}", VECTORS_CTE))
SESSION_EPOCH: Final = "SELECT epoch FROM {sessions} WHERE session_id = %s"
# A merge in ONE statement. The session row is locked FOR KEY SHARE first (epoch checked):
# that keeps delete, clear and archive changes (FOR UPDATE) out until the end, yet appends
# (NO KEY UPDATE) go on. Then the compare-and-set mark of the sources (ogmem_fail when another
# writer merged some first) and the merged archive's insert; the bump of the archive version
# is not read by the final SELECT, so PostgreSQL runs it after it: appends wait for that short
# tail only. Appends touch no archive row, so they never wait for the merge while holding the
# session row (the merge's late update cannot deadlock with them).
MERGE_ARCHIVES: Final = """
    WITH k AS (
        SELECT session_id FROM {sessions}
        WHERE session_id = %(sid)s AND (%(epoch)s::text IS NULL OR epoch = %(epoch)s)
        FOR KEY SHARE
    ), f AS (
        UPDATE {archives} x SET merged_into = %(aid)s FROM k
        WHERE x.session_id = k.session_id AND x.merged_into = '' AND x.archive_id = ANY(%(ids)s::text[])
          AND x.archive_id <> %(aid)s
        RETURNING 1
    ), a AS (
        INSERT INTO {archives} ({archive_cols})
        SELECT %(aid)s, k.session_id, %(created)s, %(overview)s, %(abstract)s, %(first)s, %(last)s,
               %(count)s, %(tokens)s, %(metadata)s::json, %(merged)s
        FROM k
    ), s AS (
        UPDATE {sessions} u SET archive_version = u.archive_version + 1
        FROM k WHERE u.session_id = k.session_id
    )
    SELECT CASE WHEN (SELECT count(*) FROM f) = %(n)s THEN 1
        ELSE {schema}.ogmem_fail('40001', 'archives were merged by another writer') END
    FROM k
"""
SELECT_ARCHIVE: Final = "SELECT {archive_cols} FROM {archives} WHERE session_id = %s AND archive_id = %s"
ARCHIVE_MESSAGES: Final = (
    "SELECT {msg_cols_m} FROM {archives} a JOIN {messages} m ON m.session_id = a.session_id "
    "AND m.seq BETWEEN a.first_seq AND a.last_seq AND m.status = 'archived' "
    "WHERE a.session_id = %s AND a.archive_id = %s ORDER BY m.seq"
)
ARCHIVES_ORDER: Final = " ORDER BY last_seq DESC, created_at DESC, archive_id DESC LIMIT %s"
SELECT_ARCHIVES: Final = "SELECT {archive_cols} FROM {archives} WHERE session_id = %s" + ARCHIVES_ORDER
SELECT_LIVE_ARCHIVES: Final = (
    "SELECT {archive_cols} FROM {archives} WHERE session_id = %s AND merged_into = ''" + ARCHIVES_ORDER
)
MARK_MERGED: Final = (
    "UPDATE {archives} SET merged_into = %s WHERE session_id = %s AND archive_id = %s "
    "AND merged_into IN ('', %s) RETURNING 1"
)
UNMARK_MERGED: Final = (
    "UPDATE {archives} SET merged_into = '' WHERE session_id = %s AND archive_id = %s "
    "AND merged_into = %s RETURNING 1"
)
DELETE_ARCHIVE: Final = "DELETE FROM {archives} WHERE session_id = %s AND archive_id = %s RETURNING 1"
SAVE_STATE: Final = (
    "INSERT INTO {state} (session_id, payload, updated_at) "
    "SELECT session_id, %s::json, now() FROM {sessions} WHERE session_id = %s "
    "AND (%s::text IS NULL OR epoch = %s) "
    "ON CONFLICT (session_id) DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at "
    "RETURNING 1"
)
LOAD_STATE: Final = (
    "SELECT st.payload, s.epoch FROM {state} st JOIN {sessions} s ON s.session_id = st.session_id "
    "WHERE st.session_id = %s"
)
OWNER_SCOPE: Final = (
    "m.session_id IN (SELECT session_id FROM {sessions} WHERE account_id = %s AND user_id = %s)"
)
# The session row's update (its lock; the owner checked in its WHERE) and the insert of the
# three appends below, which differ in where the new rows come from.
_APPEND_HEAD: Final = """
    WITH s AS (
        UPDATE {sessions}
        SET last_seq = last_seq + %(n)s, message_count = message_count + %(n)s, updated_at = now()
        WHERE session_id = %(sid)s
          AND (%(acc)s::text IS NULL OR (account_id = %(acc)s AND user_id = %(usr)s))
        RETURNING {session_cols}
    ), ins AS (
        INSERT INTO {messages} (session_id, seq, id, role, content, payload, created_at, tokens)"""
_SELECT_NUMBERED: Final = """
        SELECT %(sid)s, s.last_seq - %(n)s + m.ord, m.id, m.role, m.content, m.payload::json,
               m.created_at, m.tokens"""
_APPEND_TAIL: Final = """
    )
    SELECT {session_cols} FROM s
"""
# One statement, so one implicit transaction: the UPDATE takes the session's row lock,
# which serialises seq allocation across every connection, process and machine. The owner
# is checked in the same WHERE (no row: missing, or someone else's; nothing is written).
# A repeated message id fails the whole statement (nothing written) and takes the slow path.
APPEND: Final = (
    _APPEND_HEAD
    + _SELECT_NUMBERED
    + """
        FROM s, unnest(
            %(ids)s::text[], %(roles)s::text[], %(contents)s::text[], %(payloads)s::text[],
            %(created)s::timestamptz[], %(tokens)s::integer[]
        ) WITH ORDINALITY AS m (id, role, content, payload, created_at, tokens, ord)"""
    + _APPEND_TAIL
)
# The same for one message without arrays: the common case (a chat turn is written one
# message at a time by most frameworks) costs a quarter less on the server.
APPEND_ONE: Final = (
    _APPEND_HEAD.replace("%(n)s", "1")
    + """
        SELECT %(sid)s, s.last_seq, %(id)s, %(role)s, %(content)s, %(payload)s::json, %(created)s, %(tokens)s
        FROM s"""
    + _APPEND_TAIL
)
# A few messages (a turn: RunnableWithMessageHistory writes two) as VALUES rows of plain
# parameters, a fifth cheaper than arrays; one statement text per count, prepared once.
APPEND_FEW: Final = (
    _APPEND_HEAD
    + _SELECT_NUMBERED
    + """
        FROM s, (VALUES {rows}) AS m (ord, id, role, content, payload, created_at, tokens)"""
    + _APPEND_TAIL
)
FEW_MAX: Final = 8
_FEW_ROW: Final = "({k}, %(id{k})s, %(role{k})s, %(content{k})s, %(payload{k})s, %(created{k})s::timestamptz, %(tokens{k})s::integer)"
_FEW: Final = {
    n: APPEND_FEW.replace("{rows}", ", ".join(_FEW_ROW.format(k=k) for k in range(1, n + 1)))
    for n in range(2, FEW_MAX + 1)
}
# Each term's matches in one session: only that session's archived rows are read (its
# range of the status index) and each term's tsquery is built once; a term matching more
# than the cap comes back with its count only. The GIN index is never touched, so the cost
# follows the session's length, not the database's (other tenants' rows cost nothing).
SESSION_TERM_HITS: Final = """
    WITH t AS MATERIALIZED (
        SELECT u.term, to_tsquery('english', u.q) AS tq FROM unnest(%s::text[], %s::text[]) AS u (term, q)
    )
    SELECT t.term, CASE WHEN count(*) <= %s THEN array_agg(m.seq) END
    FROM {messages} m, t
    WHERE m.session_id = %s AND m.status = 'archived' AND m.search @@ t.tq
    GROUP BY t.term
"""
# The scope lexeme of an owner, computed by the server as COMMIT_ARCHIVE writes it.
OWNER_LEXEME: Final = "('u' || md5(%s::text || chr(1) || %s::text))::tsquery"
# Each term's matches within an owner's sessions (the owner's scope lexeme ANDed in), at
# most the cap per term, in one round trip through the GIN index.
TERM_HITS: Final = """
    SELECT t.term, h.session_id, h.seq
    FROM unnest(%s::text[], %s::text[]) AS t (term, q),
    LATERAL (
        SELECT m.session_id, m.seq FROM {messages} m
        WHERE m.search @@ (to_tsquery('english', t.q) && {owner_lexeme})
        LIMIT %s
    ) h
""".replace("{owner_lexeme}", OWNER_LEXEME)
MESSAGES_BY_KEYS: Final = """
    SELECT m.session_id, {msg_cols_m} FROM {messages} m
    JOIN unnest(%s::text[], %s::bigint[]) AS k (session_id, seq)
      ON m.session_id = k.session_id AND m.seq = k.seq
"""
# Vectors for recall by meaning (pgvector), created on first use with the embedder's size.
VECTORS_EXTENSION: Final = "CREATE EXTENSION IF NOT EXISTS vector"
VECTORS_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS {vectors} (
        session_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        embedding vector({dims}) NOT NULL,
        PRIMARY KEY (session_id, seq),
        FOREIGN KEY (session_id, seq) REFERENCES {messages} (session_id, seq) ON DELETE CASCADE
    )
"""
VECTORS_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS ogmem_vectors_hnsw ON {vectors} USING hnsw (embedding vector_cosine_ops)"
)
VECTORS_EXIST: Final = "SELECT to_regclass(%s)"
# Exact nearest neighbours within the scope: the MATERIALIZED candidates keep the planner
# from answering through the (global) HNSW index and filtering afterwards, which would miss
# a small session's matches in a large database.
NEAREST_IN_SESSION: Final = """
    WITH c AS MATERIALIZED (
        SELECT session_id, seq, embedding FROM {vectors} WHERE session_id = %s ORDER BY seq DESC LIMIT %s
    )
    SELECT session_id, seq FROM c ORDER BY embedding <=> %s::vector LIMIT %s
"""
NEAREST_FOR_OWNER: Final = """
    WITH c AS MATERIALIZED (
        SELECT v.session_id, v.seq, v.embedding FROM {vectors} v
        JOIN {sessions} s ON s.session_id = v.session_id
        WHERE s.account_id = %s AND s.user_id = %s ORDER BY v.seq DESC LIMIT %s
    )
    SELECT session_id, seq FROM c ORDER BY embedding <=> %s::vector LIMIT %s
"""
ACTIVE_IN_SCOPE: Final = (
    "SELECT m.session_id, {msg_cols_m} FROM {messages} m WHERE m.status = 'active' AND {scope}"
)
MESSAGES_BY_SEQ: Final = (
    "SELECT {msg_cols} FROM {messages} WHERE session_id = %s AND seq = ANY(%s::bigint[]) ORDER BY seq"
)
# Hits found in one snapshot, fetched by a later statement: only from the incarnation (epoch)
# the hits came from, or only from sessions the owner still has. A session deleted and re-created
# in between (seqs start again at 1) must not hand another user's messages to the searcher.
MESSAGES_BY_SEQ_IN_EPOCH: Final = """
    SELECT {msg_cols_m} FROM {messages} m JOIN {sessions} s ON s.session_id = m.session_id
    WHERE m.session_id = %s AND s.epoch = %s AND m.seq = ANY(%s::bigint[]) ORDER BY m.seq
"""
MESSAGES_BY_KEYS_OWNED: Final = """
    SELECT m.session_id, {msg_cols_m} FROM {messages} m
    JOIN unnest(%s::text[], %s::bigint[]) AS k (session_id, seq)
      ON m.session_id = k.session_id AND m.seq = k.seq
    JOIN {sessions} s ON s.session_id = m.session_id AND s.account_id = %s AND s.user_id = %s
"""
MIGRATIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS {schema}.ogmem_migrations "
    "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


def utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


# timestamps come back as datetimes (in UTC here), JSON as its value
_ROWS: Final = RowReader(
    when=utc,
    last_commit=lambda ts: utc(ts) if ts is not None else None,
    json=lambda value: value,
)
row_message: Final = _ROWS.message
row_archive: Final = _ROWS.archive
row_record: Final = _ROWS.record


def check_owner(session_id: str, record: SessionRecord | None, owner: tuple[str, str] | None) -> None:
    if record is not None and owner is not None and record.owner != tuple(owner):
        raise AccessDeniedError(f"session {session_id!r} belongs to another user")


def to_json(value: Mapping[str, Any] | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        # Stored as JSON (not JSONB) text: key order and "\u0000" escapes round-trip exactly.
        return json.dumps(dict(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not JSON-serialisable: {exc}") from exc


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, ``[x,y,...]`` (floats from ``vectors.as_finite_vector``)."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def tsquery_text(terms: Sequence[str]) -> str:
    """OR of quoted lexemes: quoting makes every character data, never tsquery syntax."""
    return " | ".join("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in terms)


def append_statement(
    session_id: str, messages: Sequence[SessionMessage], owner: tuple[str, str] | None
) -> tuple[str, dict[str, Any]]:
    who = {"acc": owner[0] if owner else None, "usr": owner[1] if owner else None}
    if len(messages) == 1:
        (m,) = messages
        payload = to_json(m.payload, f"payload of message {m.id!r}")
        return APPEND_ONE, {
            "sid": session_id,
            **who,
            "id": m.id,
            "role": m.role,
            "content": m.content,
            "payload": payload,
            "created": m.created_at,
            "tokens": m.tokens,
        }
    if len(messages) <= FEW_MAX:
        params: dict[str, Any] = {"sid": session_id, **who, "n": len(messages)}
        for k, m in enumerate(messages, 1):
            params[f"id{k}"] = m.id
            params[f"role{k}"] = m.role
            params[f"content{k}"] = m.content
            params[f"payload{k}"] = to_json(m.payload, f"payload of message {m.id!r}")
            params[f"created{k}"] = m.created_at
            params[f"tokens{k}"] = m.tokens
        return _FEW[len(messages)], params
    return APPEND, {
        "sid": session_id,
        **who,
        "n": len(messages),
        "ids": [m.id for m in messages],
        "roles": [m.role for m in messages],
        "contents": [m.content for m in messages],
        "payloads": [to_json(m.payload, f"payload of message {m.id!r}") for m in messages],
        "created": [m.created_at for m in messages],
        "tokens": [m.tokens for m in messages],
    }


def archive_params(a: ArchiveEntry) -> dict[str, Any]:
    """The archive row's values, named as COMMIT_ARCHIVE and MERGE_ARCHIVES bind them."""
    return {
        "aid": a.archive_id,
        "created": a.created_at,
        "overview": a.overview,
        "abstract": a.abstract,
        "first": a.first_seq,
        "last": a.last_seq,
        "count": a.message_count,
        "tokens": a.token_count,
        "metadata": to_json(a.metadata, f"metadata of archive {a.archive_id!r}"),
        "merged": a.merged_into,
    }


def expect_epoch(session_id: str, rows: Rows, epoch: str | None) -> None:
    if not rows:
        raise SessionNotFoundError(f"session {session_id!r} does not exist")
    if epoch is not None and rows[0][0] != epoch:
        raise ConcurrencyError(f"session {session_id!r} was deleted and re-created")
