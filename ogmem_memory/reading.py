"""Assembling a context: the live window, the summary, recalled turns, the turns before the
window and the user's memories, within a token budget (the decisions are ``policy``'s).

``ContextReads`` is a mixin of ``SessionManager``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from ogmem_memory.errors import InvalidInputError, OgmemError
from ogmem_memory.memories import identity_of
from ogmem_memory.models import ArchiveEntry, Context, RequestContext, SessionMessage
from ogmem_memory.policy import assemble_context, rank_with_neighbours, recall_limit_for
from ogmem_memory.recall import merge_window_hits
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
                cfg = replace(cfg, summary_share=cfg.summary_share_with_query)
            rctx = check_ctx(ctx)
            recalled: list[SessionMessage] = []
            if archives and query.strip() and self.config.recall_limit > 0:
                limit = recall_limit_for(budget, self.config, asked=asked)
                recalled = self._recall(buf.session_id, query, rctx, active, limit)
            earlier = self._earlier(buf.session_id, active, archives, budget - pending, rctx)
            memories = self._context_memories(
                rctx or owner_identity, query, buf.session_id, profile=not asked
            )
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
        )

    def _recall(
        self,
        session_id: str,
        query: str,
        ctx: RequestContext | None,
        active: Sequence[SessionMessage] = (),
        limit: int | None = None,
    ) -> list[SessionMessage]:
        """Messages for ``query``, best first: the hits and the turns around them.

        In a dialogue the answer is often the reply to the turn that shares the query's words,
        so each hit also brings its neighbours, ranked just below it. The ``active`` window's
        matches compete too (a small budget shows only its newest turns); ``assemble_context``
        leaves out whatever the context shows anyway. ``limit``: hits (``recall_limit`` if None).
        """
        limit = self.config.recall_limit if limit is None else limit
        hits = self.store.search_messages(
            query, session_id=session_id, owner=_owner(ctx), status="archived", limit=limit
        )
        if self.embedder is not None:
            try:
                vector = self.embedder.embed_query(query)
            except OgmemError as exc:  # recall by words still works
                logger.warning("embedding the query of session %s failed: %s", session_id, exc)
            else:
                near = self.store.search_vectors(
                    vector, session_id=session_id, owner=_owner(ctx), limit=limit
                )
                by_id = {m.id: m for m in (*hits, *near)}
                # words weigh more: on LoCoMo, equal weights let a static word-vector model push exact
                # matches down (WordLlama: 0.795 -> 0.820 at 1,000 tokens with these weights)
                fused = rrf([[m.id for m in hits], [m.id for m in near]], weights=VECTOR_FUSION_WEIGHTS)
                hits = [by_id[i] for i in fused[:limit]]
        hits = merge_window_hits(query, hits, active, limit)
        wanted = {m.seq + d for m in hits for d in (-1, 1)} - {m.seq for m in hits}
        around = {m.seq: m for m in self.store.list_messages_by_seq(session_id, sorted(wanted))}
        return rank_with_neighbours(hits, around)

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
