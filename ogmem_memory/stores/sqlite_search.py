"""Recall for SQLiteStore: words through FTS5, meaning through float32 vectors, both scoped.

Results carry their ``session_id``. Every count and every match comes from one session's (or one owner's) archived messages:
the FTS5 rows carry scope tokens, so what a user gets recalled never depends on other
tenants' data. Each query term costs one FTS5 probe that stops at ``MAX_TERM_DOCS + 1``
rows, so the work is bounded whatever the history.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ogmem_memory.models import ArchiveEntry, SessionMessage
from ogmem_memory.recall import MAX_TERM_DOCS, interleave, rank_by_overlap, rank_by_term_hits, search_terms
from ogmem_memory.stores.sqlite_schema import (
    ARCHIVE_COLS,
    MSG_COLS,
    owner_scope_token,
    row_archive,
    row_message,
    session_scope_token,
)
from ogmem_memory.vectors import MAX_EXACT_CANDIDATES, cosine_top_k

_COLS_M = ", ".join(f"m.{c.strip()}" for c in MSG_COLS.split(","))
_OWNER_SESSIONS = "SELECT session_id FROM ogmem_sessions WHERE account_id = ? AND user_id = ?"
_COLS_A = ", ".join(f"a.{c.strip()}" for c in ARCHIVE_COLS.split(","))
# the newest live archive of each of an owner's latest sessions (list_sessions' order)
_RECENT_ARCHIVES = f"""
    SELECT {_COLS_A} FROM (
        SELECT session_id, updated_at FROM ogmem_sessions
        WHERE account_id = ? AND user_id = ? AND session_id <> ?
        ORDER BY updated_at DESC, session_id DESC LIMIT ?
    ) s
    JOIN ogmem_archives a ON a.rowid = (
        SELECT rowid FROM ogmem_archives WHERE session_id = s.session_id AND merged_into = ''
        ORDER BY last_seq DESC, created_at DESC, archive_id DESC LIMIT 1
    )
    ORDER BY s.updated_at DESC, s.session_id DESC
"""


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def search(
    conn: sqlite3.Connection,
    query: str,
    *,
    session_id: str | None,
    owner: tuple[str, str] | None,
    status: str | None,
    limit: int,
) -> list[SessionMessage]:
    """Messages matching ``query`` in a session (or across ``owner``'s sessions), best first."""
    terms = search_terms(query)
    if not terms or limit <= 0:
        return []
    # the sessions' live windows: from each one's lower bound of active seqs on
    if session_id is not None:
        scope = session_scope_token(session_id)
        where, params = "s.session_id = ?", [session_id]
    else:
        assert owner is not None
        scope = owner_scope_token(owner)
        where, params = "s.account_id = ? AND s.user_id = ?", list(owner)
    found: list[SessionMessage] = []
    if status in (None, "archived"):
        hits: dict[str, list[int]] = {}
        positions: dict[int, tuple[str, int]] = {}
        for term in terms:
            rows = conn.execute(
                "SELECT r.rowid, m.session_id, m.seq FROM ("
                "SELECT rowid FROM ogmem_recall WHERE ogmem_recall MATCH ? LIMIT ?"
                ") r JOIN ogmem_messages m ON m.rowid = r.rowid",
                (f"scope : {_quoted(scope)} AND {_quoted(term)}", MAX_TERM_DOCS + 1),
            ).fetchall()
            if 0 < len(rows) <= MAX_TERM_DOCS:  # a term in more says little about any one message
                hits[term] = [r[0] for r in rows]
                positions.update((r[0], (r[1], r[2])) for r in rows)
        ranked_rowids = rank_by_term_hits(hits, limit, positions)
        if ranked_rowids:
            marks = ", ".join("?" * len(ranked_rowids))
            rows = conn.execute(
                f"SELECT m.rowid, {_COLS_M}, m.session_id FROM ogmem_messages m WHERE m.rowid IN ({marks})",
                ranked_rowids,
            ).fetchall()
            by_rowid = {r[0]: row_message(r[1:]) for r in rows}
            found = [by_rowid[r] for r in ranked_rowids if r in by_rowid]
    if status in (None, "active"):
        # the live windows are bounded by the commit thresholds: score them directly
        rows = conn.execute(
            f"SELECT {_COLS_M}, m.session_id FROM ogmem_sessions s JOIN ogmem_messages m "
            f"ON m.session_id = s.session_id AND m.seq >= s.active_from WHERE {where} AND m.status = 'active'",
            params,
        ).fetchall()
        found = interleave(found, rank_by_overlap(terms, map(row_message, rows)), limit)
    return found[:limit]


def search_vectors(
    conn: sqlite3.Connection,
    vector: Sequence[float],
    *,
    session_id: str | None,
    owner: tuple[str, str] | None,
    limit: int,
) -> list[SessionMessage]:
    """Archived messages nearest to ``vector`` (cosine), exact over the newest
    ``MAX_EXACT_CANDIDATES`` embedded messages of the scope."""
    if limit <= 0:
        return []
    if session_id is not None:
        where, params = "session_id = ?", [session_id]
    else:
        assert owner is not None
        where, params = f"session_id IN ({_OWNER_SESSIONS})", list(owner)
    rows = conn.execute(
        # the newest rowids first (integers sorted), then only their blobs read
        "SELECT rowid, embedding FROM ogmem_messages WHERE rowid IN ("
        f"SELECT rowid FROM ogmem_messages WHERE {where} AND status = 'archived' "
        "AND embedding IS NOT NULL ORDER BY rowid DESC LIMIT ?) ORDER BY rowid DESC",
        (*params, MAX_EXACT_CANDIDATES),
    ).fetchall()
    best = [rowid for rowid, _score in cosine_top_k(vector, ((r[0], r[1]) for r in rows), limit)]
    if not best:
        return []
    marks = ", ".join("?" * len(best))
    found = conn.execute(
        f"SELECT rowid, {MSG_COLS}, session_id FROM ogmem_messages WHERE rowid IN ({marks})", best
    ).fetchall()
    by_rowid = {r[0]: row_message(r[1:]) for r in found}
    return [by_rowid[r] for r in best if r in by_rowid]


def recent_archives(
    conn: sqlite3.Connection, owner: tuple[str, str], session_limit: int, exclude_session: str | None
) -> list[ArchiveEntry]:
    """``SessionStore.list_recent_archives`` in one query: at most ``session_limit`` sessions read."""
    if session_limit <= 0:
        return []
    rows = conn.execute(_RECENT_ARCHIVES, (*owner, exclude_session or "", session_limit)).fetchall()
    return [row_archive(r) for r in rows]
