"""Long-term memory of a user: extracted from committed turns, kept across sessions.

Memories are items of the store's item table (``stores/items.py``), one per memory, under
the namespace ``("memories", account_id, user_id, agent_id)``: the same database as the
sessions (SQLite file, PostgreSQL schema, or in-memory store), and visible to LangGraph
through ``langchain_ogmem.OgmemStore``. ``extract.py`` decides (extraction, merge/update
planning); this module only reads, decides with it, and writes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ogmem_memory.errors import InvalidInputError, OgmemError
from ogmem_memory.extract import (
    MemoryExtractor,
    MemoryRecord,
    RuleBasedExtractor,
    apply_plans,
    plan_writes,
    profile_memories,
    rank_memories,
)
from ogmem_memory.models import RequestContext, utc_now
from ogmem_memory.stores.items import ItemStore, PutItem
from ogmem_memory.validation import check_count, check_text

logger = logging.getLogger("ogmem.memories")

MEMORY_NAMESPACE: Final = "memories"
MAX_MEMORIES_READ: Final = 2000  # a user's memories considered for planning and ranking


def namespace_label(value: str) -> str:
    """An id as a LangGraph namespace label: ``%`` and ``.`` percent-encoded (labels hold no dot)."""
    return value.replace("%", "%25").replace(".", "%2E")


def memory_namespace(ctx: RequestContext) -> tuple[str, ...]:
    """``("memories", account_id, user_id, agent_id)``: where one identity's memories live."""
    return (MEMORY_NAMESPACE, *map(namespace_label, (ctx.account_id, ctx.user_id, ctx.agent_id)))


def user_prefix(ctx: RequestContext) -> tuple[str, ...]:
    """The prefix holding every memory of ``ctx``'s user, all agents included."""
    return (MEMORY_NAMESPACE, namespace_label(ctx.account_id), namespace_label(ctx.user_id))


class LongTermMemory:
    """Extraction, storage and retrieval of one store's user memories.

    Args:
        items: The item store of the same database as the sessions.
        extractor: Turns messages into candidates (default: the deterministic rules).
        confidence_threshold: Candidates below it are skipped.
    """

    def __init__(
        self,
        items: ItemStore,
        extractor: MemoryExtractor | None = None,
        *,
        confidence_threshold: float = 0.5,
    ) -> None:
        self.items = items
        self.extractor: MemoryExtractor = extractor or RuleBasedExtractor()
        self.confidence_threshold = confidence_threshold
        # one writer per identity in this process: reads and writes of a plan stay together
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._locks_guard = threading.Lock()  # a leaf lock

    def _lock(self, ctx: RequestContext) -> threading.Lock:
        key = memory_namespace(ctx)
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    # -- the write path -------------------------------------------------------------------

    def commit_session(
        self,
        messages: Sequence[Mapping[str, Any]],
        ctx: RequestContext,
        *,
        confidence_threshold: float | None = None,
        session_summary: str = "",
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """Extract memories from ``messages`` and write them (the seed's ``commit_session``).

        Exact and near duplicates merge into the existing memory; a changed single-valued
        fact (a new city) updates it and keeps the old content in its history. Returns
        ``{"candidates_extracted", "writes_completed", "plans": [{"action", "target_uri", ...}]}``.
        """
        threshold = self.confidence_threshold if confidence_threshold is None else confidence_threshold
        candidates = self.extractor.extract(messages, session_summary=session_summary)
        with self._lock(ctx):
            existing = self.memories(ctx, limit=MAX_MEMORIES_READ, include_inactive=False)
            plans = plan_writes(candidates, existing, confidence_threshold=threshold)
            records, result = apply_plans(plans, existing, ctx, session_id=session_id, now=utc_now())
            if records:
                self.items.batch([self._put(r) for r in records])
        return result

    @staticmethod
    def _put(record: MemoryRecord) -> PutItem:
        ctx = RequestContext(record.account_id, record.user_id, record.agent_id)
        return PutItem(memory_namespace(ctx), record.memory_id, record.to_dict(), text=record.content)

    # -- the user's rights ------------------------------------------------------------------

    def memories(
        self, ctx: RequestContext, *, limit: int = 100, offset: int = 0, include_inactive: bool = False
    ) -> list[MemoryRecord]:
        """The memories of ``ctx``'s identity, newest first."""
        check_count(limit, "limit")
        check_count(offset, "offset")
        namespace = memory_namespace(ctx)
        found = self.items.search(namespace, limit=limit, offset=offset)
        records: list[MemoryRecord] = []
        for item in found:
            if item.namespace != namespace:
                continue  # an application's own items deeper in the namespace are not memories
            try:
                record = MemoryRecord.from_dict(item.value)
            except (OgmemError, KeyError, TypeError, ValueError):
                logger.warning("skipping an item that is not a memory record: %s/%s", namespace, item.key)
                continue
            if include_inactive or record.active:
                records.append(record)
        return records

    def search(self, ctx: RequestContext, query: str, *, limit: int = 10) -> list[MemoryRecord]:
        """The memories most relevant to ``query`` (lexical, over the user's memories)."""
        if not isinstance(query, str):
            raise InvalidInputError("query must be a str")
        check_count(limit, "limit")
        return rank_memories(self.memories(ctx, limit=MAX_MEMORIES_READ), query, limit=limit)

    def get(self, ctx: RequestContext, memory_id: str) -> MemoryRecord | None:
        item = self.items.get(memory_namespace(ctx), memory_id)
        return MemoryRecord.from_dict(item.value) if item is not None else None

    def edit(self, ctx: RequestContext, memory_id: str, content: str) -> MemoryRecord:
        """Replace a memory's content (the old content goes to its history)."""
        check_text(content, "content")
        if not content.strip():
            raise InvalidInputError("content must not be empty")
        with self._lock(ctx):
            current = self.get(ctx, memory_id)
            if current is None or not current.active:
                raise InvalidInputError(f"no memory {memory_id!r}")
            history = (*current.history, current.content)[-10:]
            updated = MemoryRecord.from_dict(
                {
                    **current.to_dict(),
                    "content": content.strip(),
                    "history": list(history),
                    "updated_at": utc_now(),
                }
            )
            self.items.batch([self._put(updated)])
        return updated

    def delete(self, ctx: RequestContext, memory_id: str) -> bool:
        """Delete one memory (gone from every later context). False when there was none."""
        with self._lock(ctx):
            return self.items.delete(memory_namespace(ctx), memory_id)

    def forget(self, ctx: RequestContext) -> int:
        """Delete every memory of ``ctx``'s user (all agents); how many there were."""
        return self.items.delete_namespace_prefix(user_prefix(ctx))

    # -- the context --------------------------------------------------------------------------

    def for_context(
        self, ctx: RequestContext, query: str | None, *, limit: int, profile: bool = True
    ) -> list[MemoryRecord]:
        """What the context shows: the memories relevant to ``query``; with ``profile``, the
        user's profile when none is."""
        if limit <= 0:
            return []
        memories = self.memories(ctx, limit=MAX_MEMORIES_READ)
        if not memories:
            return []
        ranked = rank_memories(memories, query, limit=limit) if query and query.strip() else []
        return ranked or (profile_memories(memories, limit=limit) if profile else [])
