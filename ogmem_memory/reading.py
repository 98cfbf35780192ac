"""Assembling a context: the live window, the summary, recalled turns, the turns before the
window and the user's memories, within a token budget (the decisions are ``policy``'s).

With ``MemoryConfig.recall_scope == "user"`` (and a ``RequestContext``), recall searches every
session of the caller's owner, and a session with no archives of its own gets a digest of the
owner's latest other sessions; nothing is ever read from another owner.

``ContextReads`` is a mixin of ``SessionManager``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from ogmem_memory.compress.base import compact_overview
from ogmem_memory.errors import InvalidInputError, OgmemError
from ogmem_memory.memories import identity_of
from ogmem_memory.models import ArchiveEntry, Context, RequestContext, SessionMessage
from ogmem_memory.policy import assemble_context, rank_with_neighbours, recall_limit_for
from ogmem_memory.recall import merge_window_hits
from ogmem_memory.rendering import session_label
from ogmem_memory.tokens import truncate_to_tokens
from ogmem_memory.validation import check_ctx
from ogmem_memory.vectors import rrf

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ogmem_memory.buffer import SessionBuffer
    from ogmem_memory.config import MemoryConfig
    from ogmem_memory.embeddings import CheckedEmbedder
    from ogmem_memory.state import SessionState
    from ogmem_memory.stores.base import SessionStore
    from ogmem_memory.tokens import TokenCounter

logger = logging.getLogger("ogmem.session")

VECTOR_FUSION_WEIGHTS: Final = (1.0, 0.5)  # lexical, vector rankings in the fused recall
EARLIER_LIMIT: Final = 200  # archived turns fetched to fill an otherwise unused budget
DIGEST_SESSIONS: Final = 32  # other sessions a digest reads (one archive each), newest first


def _owner(ctx: RequestContext | None) -> tuple[str, str] | None:
    return ctx.owner if ctx is not None else None


class ContextReads:
    """get_context and what it gathers (mixed into SessionManager)."""

    store: SessionStore
    config: MemoryConfig
    token_counter: TokenCounter
    embedder: CheckedEmbedder | None
    _session_state: SessionState
    _truncate: Callable[[str, int], str]
    _open: Callable[[], AbstractContextManager[None]]
    _synced_read: Callable[..., tuple[SessionBuffer, Any]]
    _context_memories: Callable[..., list[str]]

    def get_context(
        self,
        session_id: str,
        token_budget: int | None = None,
        ctx: RequestContext | None = None,
        *,
        query: str | None = None,
    ) -> Context:
        """Assemble summary + recalled turns + recent messages within ``token_budget``.

        Costs O(what it returns), not O(history): the live window is bounded by the
        commit thresholds, archives by ``archive_max_count``, recall by ``recall_limit``.
        """
        budget = self.config.context_token_budget if token_budget is None else token_budget
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise InvalidInputError(f"token_budget must be a positive int, got {token_budget!r}")
        if query is not None and not isinstance(query, str):
            raise InvalidInputError(f"query must be a str, got {type(query).__name__}")
        with self._open():
            # what the identity check allowed, copied in the same hold of the buffer's lock
            buf, seen = self._synced_read(session_id, ctx, self._window_copy, keep=False)
            assert seen is not None
            active, archives, pending, state, owner_identity = seen
            cfg = self.config
            asked = query is not None  # an explicit question: memories must be relevant to it
            if query is None:
                query = next((m.content for m in reversed(active) if m.role == "user"), "")
                cfg = replace(cfg, summary_share=cfg.summary_share_without_query)
            else:
                cfg = replace(
                    cfg, summary_share=cfg.summary_share_with_query, recall_share=cfg.recall_share_with_query
                )
            rctx = check_ctx(ctx)
            # recall_scope="user": the caller's sessions (never without a caller to name them)
            user_scope = rctx.owner if rctx is not None and self.config.recall_scope == "user" else None
            recalled: list[SessionMessage] = []
            if (archives or user_scope) and query.strip() and self.config.recall_limit > 0:
                limit = recall_limit_for(budget, cfg, asked=asked)
                recalled = self._recall(buf.session_id, query, rctx, user_scope, active, limit)
            earlier = self._earlier(buf.session_id, active, archives, budget - pending, rctx)
            memories = self._context_memories(
                rctx or owner_identity, query, buf.session_id, profile=not asked
            )
            digest = self._digest(user_scope, buf.session_id) if user_scope and not archives else []
        summary = archives[0].overview if archives else ""
        abstracts = [a.abstract for a in reversed(archives[1:]) if a.abstract]
        plan = assemble_context(
            summary=summary,
            abstracts=abstracts,
            recalled=recalled,
            messages=active,
            budget=budget,
            counter=self.token_counter,
            cfg=cfg,
            truncate=self._truncate,
            earlier=earlier,
            memories=memories,
            digest=digest,
            session_id=buf.session_id,
            recall_first=asked,
        )
        return Context(
            session_id=buf.session_id,
            summary=plan.summary,
            abstracts=plan.abstracts,
            recalled=plan.recalled,
            messages=plan.messages,
            state=state,
            token_count=plan.token_count,
            budget=budget,
            query=query or None,
            pending_tokens=pending,
            active_message_count=len(active),
            archives=tuple(archives),
            dropped_messages=plan.dropped_messages,
            summary_truncated=plan.summary_truncated,
            memories=plan.memories,
            digest=plan.digest,
        )

    def _recall(
        self,
        session_id: str,
        query: str,
        ctx: RequestContext | None,
        user_scope: tuple[str, str] | None = None,
        active: Sequence[SessionMessage] = (),
        limit: int | None = None,
    ) -> list[SessionMessage]:
        """Messages for ``query``, best first: the hits and the turns around them.

        In a dialogue the answer is often the reply to the turn that shares the query's words,
        so each hit also brings its neighbours (of its own session), ranked just below it, and
        the answer to its reply when the reply asks something (``rank_with_neighbours``). The
        ``active`` window's matches compete too (a small budget shows only its newest turns);
        ``assemble_context`` leaves out whatever the context shows anyway. With ``user_scope``
        the search covers every session of that owner. ``limit``: hits (``recall_limit`` if None).
        """
        limit = self.config.recall_limit if limit is None else limit
        in_session = session_id if user_scope is None else None
        owner = user_scope if user_scope is not None else _owner(ctx)
        hits = self.store.search_messages(
            query, session_id=in_session, owner=owner, status="archived", limit=limit
        )
        if self.embedder is not None:
            try:
                vector = self.embedder.embed_query(query)
            except OgmemError as exc:  # recall by words still works
                logger.warning("embedding the query of session %s failed: %s", session_id, exc)
            else:
                near = self.store.search_vectors(vector, session_id=in_session, owner=owner, limit=limit)
                by_id = {(m.session_id, m.id): m for m in (*hits, *near)}
                # words weigh more: on LoCoMo, equal weights let a static word-vector model push exact
                # matches down (WordLlama: 0.795 -> 0.820 at 1,000 tokens with these weights)
                fused = rrf(
                    [[(m.session_id, m.id) for m in hits], [(m.session_id, m.id) for m in near]],
                    weights=VECTOR_FUSION_WEIGHTS,
                )
                hits = [by_id[i] for i in fused[:limit]]
        if user_scope is None:  # a store that does not name the session: it is this one
            hits = [m if m.session_id else replace(m, session_id=session_id) for m in hits]
        else:  # a hit that names no session can be neither labelled nor placed
            hits = [m for m in hits if m.session_id]
        live = [m if m.session_id else replace(m, session_id=session_id) for m in active]
        hits = merge_window_hits(query, hits, live, limit)
        wanted: dict[str, set[int]] = {}
        for m in hits:
            wanted.setdefault(m.session_id, set()).update((m.seq - 1, m.seq + 1, m.seq + 2))
        for m in hits:
            wanted[m.session_id].discard(m.seq)
        around: dict[tuple[str, int], SessionMessage] = {}
        for sid, seqs in wanted.items():  # at most recall_limit sessions
            # owner-checked: the session may have been deleted and re-created by someone else
            # since the search (seqs start again at 1), and its new messages are not the caller's
            for near_msg in self.store.list_messages_by_seq(sid, sorted(seqs), owner=owner):
                around[(sid, near_msg.seq)] = replace(near_msg, session_id=sid)
        return rank_with_neighbours(hits, around)

    def _digest(self, owner: tuple[str, str], session_id: str) -> list[tuple[str, str]]:
        """(overview, abstract) lines of ``owner``'s latest other sessions, newest first, each
        labelled with its session (at most ``DIGEST_SESSIONS`` sessions read)."""
        entries = []
        for a in self.store.list_recent_archives(
            owner, session_limit=DIGEST_SESSIONS, exclude_session=session_id
        ):
            label = session_label(a.session_id)
            shown = compact_overview(a.overview)
            overview = f"{label}\n{shown}" if shown else ""
            abstract = f"{label} {a.abstract}" if a.abstract else ""
            if overview or abstract:
                entries.append((overview or abstract, abstract))
        return entries

    def _window_copy(
        self, buf: SessionBuffer
    ) -> tuple[list[SessionMessage], list[ArchiveEntry], int, dict[str, Any], RequestContext | None]:
        return (
            list(buf.messages),
            list(buf.archives[: self.config.archive_max_count]),
            buf.pending_tokens,
            self._state_view(buf),
            identity_of(buf),
        )

    def _earlier(
        self,
        session_id: str,
        active: Sequence[SessionMessage],
        archives: Sequence[ArchiveEntry],
        room: int,
        ctx: RequestContext | None,
    ) -> list[SessionMessage]:
        """The archived turns just before the live window, to fill budget nothing else claims.

        Bounded: at most ``EARLIER_LIMIT`` messages, about what ``room`` tokens can hold.
        """
        if not archives or not active or room <= 0:
            return []
        first = active[0].seq
        wanted = min(EARLIER_LIMIT, room // 8, first - 1)
        if wanted <= 0:
            return []
        found = self.store.list_messages_by_seq(session_id, range(first - wanted, first), owner=_owner(ctx))
        return [m for m in found if m.status == "archived"]

    def _truncate_uncached(self, text: str, max_tokens: int) -> str:
        return truncate_to_tokens(text, max_tokens, self.token_counter)

    def _state_view(self, buf: SessionBuffer) -> dict[str, Any]:
        ws = buf.window_state
        task = self._session_state.get_task_state(buf.session_id)
        return {
            "active_task": ws.active_task,
            "objective": task.objective,
            "open_loops": list(ws.open_loops),
            "recent_decisions": list(ws.recent_decisions),
            "confirmed_constraints": list(ws.confirmed_constraints),
            "uncertainties": list(ws.uncertainties),
        }
