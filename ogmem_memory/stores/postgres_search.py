"""Recall for PostgresStore: words through the GIN-indexed ``search`` column, meaning through
pgvector; both scoped to one session or one owner. Results carry their ``session_id``.

Term counts and matches come from the scope alone, so what a user gets recalled never
depends on other tenants' data: a session's search reads only that session's archived
rows (one pass, each term's query built once); an owner's goes through the GIN index with
the owner's scope lexeme ANDed into every probe, each term stopping at
``MAX_TERM_DOCS + 1`` matches. Vector search is exact within the scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from psycopg import errors as pg_errors
from psycopg import sql

from ogmem_memory.errors import AccessDeniedError, ConfigError
from ogmem_memory.models import ArchiveEntry, SessionMessage
from ogmem_memory.recall import MAX_TERM_DOCS, interleave, rank_by_overlap, rank_by_term_hits, search_terms
from ogmem_memory.stores.base import Owner
from ogmem_memory.stores.postgres_sql import (
    ACTIVE_IN_SCOPE,
    MESSAGES_BY_KEYS,
    MESSAGES_BY_KEYS_OWNED,
    MESSAGES_BY_SEQ,
    MESSAGES_BY_SEQ_IN_EPOCH,
    NEAREST_FOR_OWNER,
    NEAREST_IN_SESSION,
    OWNER_SCOPE,
    REPEATABLE_READ,
    SESSION_OWNER,
    SESSION_TERM_HITS,
    TERM_HITS,
    VECTORS_EXIST,
    VECTORS_EXTENSION,
    VECTORS_INDEX,
    VECTORS_TABLE,
    Program,
    Row,
    Snapshot,
    Step,
    row_archive,
    row_message,
    tsquery_text,
    vector_literal,
)
from ogmem_memory.vectors import MAX_EXACT_CANDIDATES, as_finite_vector

if TYPE_CHECKING:
    from ogmem_memory.stores.postgres_pool import PostgresConnections

    _Base = PostgresConnections
else:
    _Base = object


# the newest live archive of each of an owner's latest sessions (list_sessions' order)
RECENT_ARCHIVES = """
    SELECT a.* FROM (
        SELECT session_id, updated_at FROM {sessions}
        WHERE account_id = %s AND user_id = %s AND session_id <> %s
        ORDER BY updated_at DESC, session_id DESC LIMIT %s
    ) s
    CROSS JOIN LATERAL (
        SELECT {archive_cols} FROM {archives} WHERE session_id = s.session_id AND merged_into = ''
        ORDER BY last_seq DESC, created_at DESC, archive_id DESC LIMIT 1
    ) a
    ORDER BY s.updated_at DESC, s.session_id DESC
"""


def _with_session(row: tuple[Any, ...]) -> SessionMessage:
    """A message from ``session_id`` followed by the message columns: results name their session."""
    return replace(row_message(row[1:]), session_id=row[0])


class PostgresRecall(_Base):
    """search_messages, search_vectors and the vector table (mixed into PostgresStore)."""

    _vector_dims: int | None = None

    def _scope_check(self, session_id: str | None, owner: tuple[str, str] | None) -> Program[bool]:
        """False when the session does not exist; AccessDeniedError when it is someone else's."""
        if session_id is None:
            return True
        rows = yield self._q(SESSION_OWNER), (session_id,)
        if not rows:
            return False
        if owner is not None and (rows[0][0], rows[0][1]) != tuple(owner):
            raise AccessDeniedError(f"session {session_id!r} belongs to another user")
        return True

    def _search(
        self, query: str, session_id: str | None, owner: Owner | None, status: str | None, limit: int
    ) -> Program[list[SessionMessage]]:
        terms = search_terms(query)
        if not terms or limit <= 0:
            return []
        queries = [tsquery_text([t]) for t in terms]
        archived, active = status in (None, "archived"), status in (None, "active")
        # One round trip, one snapshot: the owner check, each term's hits, the live windows.
        steps: list[Step] = []
        if session_id is not None:
            steps.append((self._q(SESSION_OWNER), (session_id,)))
            hits_step: Step = (self._q(SESSION_TERM_HITS), (terms, queries, MAX_TERM_DOCS, session_id))
            scope, scope_params = "m.session_id = %s", [session_id]
        else:
            assert owner is not None
            hits_step = (self._q(TERM_HITS), (terms, queries, *owner, MAX_TERM_DOCS + 1))
            scope, scope_params = OWNER_SCOPE, list(owner)
        if archived:
            steps.append(hits_step)
        if active:  # the live windows are bounded by the commit thresholds: score them directly
            scope_sql = sql.SQL(scope).format(**self._names)
            steps.append((self._q(ACTIVE_IN_SCOPE, scope=scope_sql), scope_params))
        results = list((yield Snapshot(steps)))
        if session_id is not None:
            scope_rows = results.pop(0)
            if not scope_rows:
                return []
            if owner is not None and (scope_rows[0][0], scope_rows[0][1]) != tuple(owner):
                raise AccessDeniedError(f"session {session_id!r} belongs to another user")
        found: list[SessionMessage] = []
        if archived:
            hit_rows = results.pop(0)
            if session_id is not None:
                found = yield from self._session_hits(session_id, scope_rows[0][2], hit_rows, limit)
            else:
                assert owner is not None
                found = yield from self._owner_hits(owner, hit_rows, limit)
        if active:
            found = interleave(found, rank_by_overlap(terms, map(_with_session, results.pop(0))), limit)
        return found[:limit]

    def _session_hits(
        self, session_id: str, epoch: str, rows: Row, limit: int
    ) -> Program[list[SessionMessage]]:
        """The ranked archived matches of one session (SESSION_TERM_HITS rows), fetched from the
        incarnation ``epoch`` they were found in (after the snapshot: see MESSAGES_BY_SEQ_IN_EPOCH)."""
        hits = {term: seqs for term, seqs in rows if seqs is not None}  # None: over the cap
        # a hit's neighbours' words count too (passage ranking): seqs are positions in the session
        positions = {seq: (session_id, seq) for seqs in hits.values() for seq in seqs}
        ranked = rank_by_term_hits(hits, limit, positions)
        if not ranked:
            return []
        found = yield self._q(MESSAGES_BY_SEQ_IN_EPOCH), (session_id, epoch, ranked)
        by_seq = {r[0]: replace(row_message(r), session_id=session_id) for r in found}
        return [by_seq[seq] for seq in ranked if seq in by_seq]

    def _owner_hits(self, owner: tuple[str, str], rows: Row, limit: int) -> Program[list[SessionMessage]]:
        """The ranked archived matches in an owner's sessions (TERM_HITS rows), fetched from the
        sessions the owner still has (see MESSAGES_BY_KEYS_OWNED)."""
        hits: dict[str, list[tuple[str, int]]] = {}
        for term, sid, seq in rows:
            hits.setdefault(term, []).append((sid, seq))
        hits = {t: keys for t, keys in hits.items() if len(keys) <= MAX_TERM_DOCS}
        # the keys are (session, seq) already: they are their own positions
        ranked = rank_by_term_hits(hits, limit, {k: k for keys in hits.values() for k in keys})
        if not ranked:
            return []
        keys = ([k[0] for k in ranked], [k[1] for k in ranked])
        found = yield self._q(MESSAGES_BY_KEYS_OWNED), (*keys, *owner)
        by_key = {(r[0], r[1]): _with_session(r) for r in found}
        return [by_key[k] for k in ranked if k in by_key]

    def _search_messages_impl(
        self, query: str, session_id: str | None, owner: Owner | None, status: str | None, limit: int
    ) -> list[SessionMessage]:
        return self._run(self._search(query, session_id, owner, status, limit))

    async def _asearch_messages_impl(
        self, query: str, session_id: str | None, owner: Owner | None, status: str | None, limit: int
    ) -> list[SessionMessage]:
        return await self._arun(self._search(query, session_id, owner, status, limit))

    def _messages_by_seq(
        self, session_id: str, seqs: Sequence[int], owner: tuple[str, str] | None
    ) -> Program[list[SessionMessage]]:
        step: Step = (self._q(MESSAGES_BY_SEQ), (session_id, sorted(set(seqs))[:500]))
        if owner is None:
            rows = yield step
            return [row_message(r) for r in rows]
        scope_rows, found = yield Snapshot(((self._q(SESSION_OWNER), (session_id,)), step))
        if not scope_rows:
            return []
        if (scope_rows[0][0], scope_rows[0][1]) != tuple(owner):
            raise AccessDeniedError(f"session {session_id!r} belongs to another user")
        return [row_message(r) for r in found]

    def list_messages_by_seq(
        self, session_id: str, seqs: Sequence[int], *, owner: tuple[str, str] | None = None
    ) -> list[SessionMessage]:
        if not seqs:
            return []
        return self._run(self._messages_by_seq(session_id, seqs, owner))

    def _recent_archives(
        self, owner: tuple[str, str], session_limit: int, exclude_session: str | None
    ) -> Program[list[ArchiveEntry]]:
        rows = yield self._q(RECENT_ARCHIVES), (owner[0], owner[1], exclude_session or "", session_limit)
        return [row_archive(r) for r in rows]

    def list_recent_archives(
        self, owner: tuple[str, str], *, session_limit: int = 8, exclude_session: str | None = None
    ) -> list[ArchiveEntry]:
        """``SessionStore.list_recent_archives`` in one query: at most ``session_limit`` sessions read."""
        if session_limit <= 0:
            return []
        return self._run(self._recent_archives(owner, session_limit, exclude_session))

    # -- vectors (pgvector) ---------------------------------------------------------

    def _vector_table(self, dims: int) -> Program[None]:
        yield (
            sql.SQL("SELECT pg_advisory_xact_lock(hashtext('ogmem_memory.vectors'), hashtext(%s))"),
            (self.schema,),
        )
        try:
            yield sql.SQL(VECTORS_EXTENSION), None
        except (
            pg_errors.FeatureNotSupported,
            pg_errors.UndefinedFile,
            pg_errors.InsufficientPrivilege,
        ) as exc:
            raise ConfigError(
                "recall by meaning on PostgreSQL needs the pgvector extension, which this server "
                f"does not have ({exc}); install pgvector or use no embedder"
            ) from exc
        yield self._q(VECTORS_TABLE, dims=sql.Literal(dims)), None
        yield self._q(VECTORS_INDEX), None

    def prepare_vectors(self, dims: int) -> None:
        """Create the pgvector table for ``dims``-dimensional vectors (idempotent).

        Raises:
            ConfigError: The server has no pgvector extension.
        """
        if self._vector_dims == dims:
            return
        self._run(self._vector_table(dims), transaction=True)
        self._vector_dims = dims

    def _vectors_exist(self) -> Program[bool]:
        rows = yield sql.SQL(VECTORS_EXIST), (f'"{self.schema}".ogmem_vectors',)
        return bool(rows and rows[0][0])

    def _search_vectors(
        self, vector: list[float], session_id: str | None, owner: tuple[str, str] | None, limit: int
    ) -> Program[list[SessionMessage]]:
        yield sql.SQL(REPEATABLE_READ), None
        if not (yield from self._scope_check(session_id, owner)) or not (yield from self._vectors_exist()):
            return []
        literal = vector_literal(vector)
        if session_id is not None:
            keys = yield self._q(NEAREST_IN_SESSION), (session_id, MAX_EXACT_CANDIDATES, literal, limit)
        else:
            assert owner is not None
            keys = yield self._q(NEAREST_FOR_OWNER), (*owner, MAX_EXACT_CANDIDATES, literal, limit)
        if not keys:
            return []
        rows = yield self._q(MESSAGES_BY_KEYS), ([k[0] for k in keys], [k[1] for k in keys])
        by_key = {(r[0], r[1]): _with_session(r) for r in rows}
        return [by_key[(k[0], k[1])] for k in keys if (k[0], k[1]) in by_key]

    def _search_vectors_impl(
        self, vector: Sequence[float], session_id: str | None, owner: Owner | None, limit: int
    ) -> list[SessionMessage]:
        if limit <= 0:
            return []
        checked = as_finite_vector(vector, "query vector")
        return self._run(self._search_vectors(checked, session_id, owner, limit), transaction=True)
