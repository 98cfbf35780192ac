"""The manager's long-term memory: extraction after commits (watermark-driven), memories in
the context, and the user's rights (list, search, edit, delete, forget everything).

``UserMemories`` is a mixin of ``SessionManager``. Extraction never runs on
``add_message``'s path: a commit that lands marks its session's messages pending, the same
background task extracts them, and the watermark (``extracted_seq``, saved with the state)
moves only when the memories were written, so a failure loses nothing and the next
commit (or ``extract_memories``) retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ogmem_memory.errors import ConfigError, InvalidInputError
from ogmem_memory.extract import MemoryRecord, tool_usage
from ogmem_memory.models import RequestContext, SessionMessage, iso
from ogmem_memory.validation import check_count, check_ctx

if TYPE_CHECKING:
    from ogmem_memory.buffer import SessionBuffer
    from ogmem_memory.cache import SessionCache
    from ogmem_memory.config import MemoryConfig
    from ogmem_memory.longterm import LongTermMemory
    from ogmem_memory.stores.base import SessionStore

logger = logging.getLogger("ogmem.memories")

EXTRACT_BATCH: Final = 1000  # committed messages extracted per task (the rest in the next)


def _dicts(messages: Sequence[SessionMessage]) -> list[dict[str, Any]]:
    return [
        {"role": m.role, "content": m.content, "id": m.id, "created_at": iso(m.created_at), "seq": m.seq}
        for m in messages
    ]


def identity_of(buf: SessionBuffer) -> RequestContext | None:
    """The identity a session belongs to (as last read from the store)."""
    if buf.owner is None:
        return None
    return RequestContext(buf.meta.account_id, buf.meta.user_id, buf.meta.agent_id or "default")


class UserMemories:
    """Long-term memory of a manager's users (mixed into SessionManager)."""

    store: SessionStore
    config: MemoryConfig
    _cache: SessionCache
    _long_term: LongTermMemory | None
    _synced: Callable[..., SessionBuffer]
    _save_state: Callable[[SessionBuffer], bool]

    def _memories(self) -> LongTermMemory:
        if self._long_term is None:
            raise ConfigError("this store has no item table for long-term memories")
        return self._long_term

    # -- extraction -------------------------------------------------------------------------

    def _extract_committed(
        self,
        buf: SessionBuffer,
        committed: Sequence[SessionMessage] = (),
        dicts: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any] | None:
        """After a commit landed: extract the archived messages past the watermark.

        ``committed`` (with their ``dicts``) are the messages the commit archived: when they
        start right after the watermark they are all there is to extract, and the store is not
        read again. The caller saves the state (one save per commit).
        """
        if not self.config.extract_memories or self._long_term is None:
            return None
        with buf.lock:
            buf.extraction_pending = True
        return self._extract(buf, status="archived", committed=committed, dicts=dicts, save=False)

    def _extract(
        self,
        buf: SessionBuffer,
        *,
        status: str | None,
        committed: Sequence[SessionMessage] = (),
        dicts: Sequence[Mapping[str, Any]] | None = None,
        save: bool = True,
    ) -> dict[str, Any] | None:
        long_term = self._memories()
        with buf.lock:
            identity = identity_of(buf)
            after = buf.extracted_seq
        if identity is None:
            return None
        buf.begin_extraction()
        try:
            known = bool(committed) and committed[0].seq == after + 1 and len(committed) <= EXTRACT_BATCH
            if known:
                messages: Sequence[SessionMessage] = committed
                # the commit's own dicts: the extractor is their last reader (no copy needed)
                batch: Sequence[Mapping[str, Any]] = dicts if dicts is not None else _dicts(committed)
            else:
                messages = self.store.list_messages(
                    buf.session_id, status=status, after_seq=after, limit=EXTRACT_BATCH, owner=identity.owner
                )
                batch = _dicts(messages)
            result = None
            if messages:
                # only tool results and assistant messages with a payload can name a tool call
                calls = [m for m in messages if m.role == "tool" or (m.role == "assistant" and m.payload)]
                tools = tool_usage([{"role": m.role, "payload": m.payload} for m in calls]).tool_stats
                result = long_term.commit_session(
                    batch, identity, session_id=buf.session_id, tool_stats=tools or None
                )
        except Exception as exc:  # the watermark stays: the next commit (or a call) retries
            logger.warning("memory extraction of session %s failed (will retry): %s", buf.session_id, exc)
            return None
        finally:
            buf.end_extraction()
        with buf.lock:
            if messages:
                buf.extracted_seq = max(buf.extracted_seq, messages[-1].seq)
            buf.extraction_pending = not known and len(messages) >= EXTRACT_BATCH
        if save:
            self._save_state(buf)
        return result

    def extract_memories(self, session_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Extract the user's memories from this session's messages now (active ones too).

        Returns the seed's ``commit_session`` result (``candidates_extracted``,
        ``writes_completed``, ``plans``) for what was new since the last extraction.
        """
        buf = self._synced(session_id, ctx)
        result = self._extract(buf, status=None)
        return result or {"candidates_extracted": 0, "writes_completed": 0, "plans": []}

    def commit_session(
        self,
        messages: Sequence[Mapping[str, Any]],
        ctx: RequestContext,
        *,
        confidence_threshold: float = 0.5,
        session_summary: str = "",
    ) -> dict[str, Any]:
        """The seed's write API: extract memories of ``ctx``'s user from ``messages`` and store them."""
        rctx = self._required_ctx(ctx)
        if not isinstance(messages, list | tuple):
            raise InvalidInputError("messages must be a list of dicts with role and content")
        return self._memories().commit_session(
            messages, rctx, confidence_threshold=confidence_threshold, session_summary=session_summary
        )

    # -- the context --------------------------------------------------------------------------

    def _context_memories(
        self, identity: RequestContext | None, query: str, session_id: str, *, profile: bool = True
    ) -> list[str]:
        """The memories of ``identity`` (the caller, else the session's owner) for a context:
        those relevant to ``query``, else (with ``profile``) the user's profile."""
        if self._long_term is None or self.config.memory_limit <= 0 or self.config.memory_share <= 0:
            return []
        if identity is None:
            return []
        try:
            found = self._long_term.for_context(
                identity, query, limit=self.config.memory_limit, profile=profile
            )
        except Exception as exc:  # memories are a bonus: the conversation context still stands
            logger.warning("reading memories for session %s failed: %s", session_id, exc)
            return []
        return [m.content for m in found]

    # -- the user's rights --------------------------------------------------------------------

    @staticmethod
    def _required_ctx(ctx: object) -> RequestContext:
        rctx = check_ctx(ctx)
        if rctx is None:
            raise InvalidInputError("a RequestContext naming the user is required")
        return rctx

    def list_memories(self, ctx: RequestContext, *, limit: int = 100, offset: int = 0) -> list[MemoryRecord]:
        """The memories of ``ctx``'s user (and agent), newest first."""
        check_count(limit, "limit")
        check_count(offset, "offset")
        return self._memories().memories(self._required_ctx(ctx), limit=limit, offset=offset)

    def search_memories(self, ctx: RequestContext, query: str, *, limit: int = 10) -> list[MemoryRecord]:
        """The memories of ``ctx``'s user most relevant to ``query``."""
        return self._memories().search(self._required_ctx(ctx), query, limit=limit)

    def edit_memory(self, ctx: RequestContext, memory_id: str, content: str) -> MemoryRecord:
        """Replace a memory's content; the old one is kept in its history."""
        if not isinstance(memory_id, str) or not isinstance(content, str):
            raise InvalidInputError("memory_id and content must be str")
        return self._memories().edit(self._required_ctx(ctx), memory_id, content)

    def delete_memory(self, ctx: RequestContext, memory_id: str) -> bool:
        """Delete one memory: it is in no later context. False when there was none."""
        if not isinstance(memory_id, str):
            raise InvalidInputError("memory_id must be a str")
        return self._memories().delete(self._required_ctx(ctx), memory_id)

    def forget_user(self, ctx: RequestContext) -> dict[str, int]:
        """Delete everything of ``ctx``'s user: sessions, messages, archives, state, search and
        vector index rows, and memories. Returns how many sessions and memories went."""
        rctx = self._required_ctx(ctx)
        sessions = self.store.delete_owner(rctx.owner)
        memories = self._long_term.forget(rctx) if self._long_term is not None else 0
        for buf in self._cache.buffers():
            if buf.owner == rctx.owner:
                self._cache.drop(buf.session_id, buf)
        return {"sessions": sessions, "memories": memories}
