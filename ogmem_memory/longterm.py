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
    MemoryCandidate,
    MemoryExtractor,
    MemoryRecord,
    RuleBasedExtractor,
    apply_plans,
    content_signature,
    normalize_key,
    plan_writes,
    profile_memories,
    rank_memories,
    tool_memories,
    tool_stats_of,
)
from ogmem_memory.models import RequestContext, utc_now
from ogmem_memory.stores.items import GetItem, ItemOp, ItemStore, PutItem, StoredItem
from ogmem_memory.usage import UsageTracker
from ogmem_memory.validation import check_count, check_text

logger = logging.getLogger("ogmem.memories")

MEMORY_NAMESPACE: Final = "memories"
MAX_MEMORIES_READ: Final = 2000  # a user's memories considered for ranking
# Where the planning index of an identity's memories lives (see LongTermMemory._related).
INDEX_NAMESPACE: Final = "memory_index"
_INDEX_BUILT: Final = "built"  # the marker item: the index holds every memory of the identity
_INDEX_PAGE: Final = 500


def namespace_label(value: str) -> str:
    """An id as a LangGraph namespace label: ``%`` and ``.`` percent-encoded (labels hold no dot)."""
    return value.replace("%", "%25").replace(".", "%2E")


def memory_namespace(ctx: RequestContext) -> tuple[str, ...]:
    """``("memories", account_id, user_id, agent_id)``: where one identity's memories live."""
    return (MEMORY_NAMESPACE, *map(namespace_label, (ctx.account_id, ctx.user_id, ctx.agent_id)))


def user_prefix(ctx: RequestContext) -> tuple[str, ...]:
    """The prefix holding every memory of ``ctx``'s user, all agents included."""
    return (MEMORY_NAMESPACE, namespace_label(ctx.account_id), namespace_label(ctx.user_id))


def index_namespace(ctx: RequestContext) -> tuple[str, ...]:
    """``("memory_index", account_id, user_id, agent_id)``: the planning index of one identity."""
    return (INDEX_NAMESPACE, *map(namespace_label, (ctx.account_id, ctx.user_id, ctx.agent_id)))


def _index_slots(category: str, key: str, content: str) -> list[str]:
    """The index entries a memory (or a candidate) is found under: its key, its content signature."""
    slots = [f"key:{key}"]
    signature = content_signature(category, content)
    if signature is not None:
        slots.append(f"sig:{signature}")
    return slots


def _entry_ids(item: object) -> list[str]:
    ids = item.value.get("ids") if isinstance(item, StoredItem) else None
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


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
        tool_stats: Mapping[str, Mapping[str, object]] | None = None,
    ) -> dict[str, Any]:
        """Extract memories from ``messages`` and write them (the seed's ``commit_session``).

        Exact and near duplicates merge into the existing memory; a changed single-valued
        fact (a new city) updates it and keeps the old content in its history. Returns
        ``{"candidates_extracted", "writes_completed", "plans": [{"action", "target_uri", ...}]}``.
        """
        candidates = self.extractor.extract(messages, session_summary=session_summary)
        return self.write_candidates(
            candidates,
            ctx,
            confidence_threshold=confidence_threshold,
            session_id=session_id,
            tool_stats=tool_stats,
        )

    def _tool_candidates(
        self, ctx: RequestContext, stats: Mapping[str, Mapping[str, object]]
    ) -> list[MemoryCandidate]:
        """``tools`` candidates of ``stats`` added to what the user's tool memories already count."""
        span = tool_memories(stats)
        if not span:
            return []
        _, existing = self._related(ctx, span)
        stored: dict[str, dict[str, int | float] | None] = {}
        for record in existing:  # newest first: the current memory of each tool
            if record.category == "tools":
                stored.setdefault(record.key, tool_stats_of(record.content))
        totals = UsageTracker()
        totals.merge_tool_stats(stats)
        for name in totals.tool_stats:
            before = stored.get(normalize_key(f"tool:{name}"))
            if before:
                totals.merge_tool_stats({name: before})
        return tool_memories(totals)

    def write_candidates(
        self,
        candidates: Sequence[MemoryCandidate],
        ctx: RequestContext,
        *,
        confidence_threshold: float | None = None,
        session_id: str | None = None,
        tool_stats: Mapping[str, Mapping[str, object]] | None = None,
    ) -> dict[str, Any]:
        """Plan and write ``candidates`` against the memories they can merge into.

        Those are found through the identity's planning index (one entry per memory key and
        per content signature: every memory :func:`plan_writes` could pick), so the cost is
        that of the candidates, not of how many memories the user has. ``tool_stats`` (a span's
        tool calls, :attr:`UsageTracker.tool_stats` shape) add to the user's ``tools`` memories.
        """
        threshold = self.confidence_threshold if confidence_threshold is None else confidence_threshold
        if not candidates and not tool_stats:
            return apply_plans([], [], ctx, session_id=session_id, now=utc_now())[1]
        with self._lock(ctx):
            if tool_stats:  # read and counted under the lock: concurrent spans both count
                candidates = [*candidates, *self._tool_candidates(ctx, tool_stats)]
            entries, existing = self._related(ctx, candidates)
            plans = plan_writes(candidates, existing, confidence_threshold=threshold)
            records, result = apply_plans(plans, existing, ctx, session_id=session_id, now=utc_now())
            if records:
                before = {r.memory_id: r for r in existing}
                ops: list[ItemOp] = [self._put(r) for r in records]
                ops += self._index_writes(ctx, entries, records, before, {r.memory_id for r in existing})
                self.items.batch(ops)
        return result

    # -- the planning index -------------------------------------------------------------------

    def _related(
        self, ctx: RequestContext, candidates: Sequence[MemoryCandidate]
    ) -> tuple[dict[str, list[str]], list[MemoryRecord]]:
        """The index entries of the candidates' keys and signatures, and the active memories
        they name in the order :meth:`memories` reads them (newest first)."""
        slots = sorted({s for c in candidates for s in _index_slots(c.category, c.key, c.content)})
        entries = self._entries(ctx, slots)
        ids = sorted({i for ids in entries.values() for i in ids})
        namespace = memory_namespace(ctx)
        found = self.items.batch([GetItem(namespace, i) for i in ids]) if ids else []
        items = [item for item in found if isinstance(item, StoredItem)]
        items.sort(key=lambda item: item.key)
        items.sort(key=lambda item: item.updated_at, reverse=True)
        records: list[MemoryRecord] = []
        for item in items:
            try:
                record = MemoryRecord.from_dict(item.value)
            except (OgmemError, KeyError, TypeError, ValueError):
                continue  # not a memory record (see memories())
            if record.active:
                records.append(record)
        return entries, records

    def _entries(self, ctx: RequestContext, slots: Sequence[str]) -> dict[str, list[str]]:
        """The ids under each of ``slots``; the index is built first if it never was."""
        index = index_namespace(ctx)
        found = self.items.batch([GetItem(index, _INDEX_BUILT), *(GetItem(index, s) for s in slots)])
        if found[0] is None:
            self._build_index(ctx)
            found = self.items.batch([GetItem(index, _INDEX_BUILT), *(GetItem(index, s) for s in slots)])
        return {slot: _entry_ids(item) for slot, item in zip(slots, found[1:], strict=True)}

    def _build_index(self, ctx: RequestContext) -> None:
        """Index every active memory of the identity (once: memories written before the index)."""
        entries: dict[str, list[str]] = {}
        offset = 0
        while True:
            page = self.memories(ctx, limit=_INDEX_PAGE, offset=offset)
            for record in page:
                for slot in _index_slots(record.category, record.key, record.content):
                    entries.setdefault(slot, []).append(record.memory_id)
            if len(page) < _INDEX_PAGE:
                break
            offset += _INDEX_PAGE
        index = index_namespace(ctx)
        ops: list[ItemOp] = [PutItem(index, slot, {"ids": ids}) for slot, ids in entries.items()]
        ops.append(PutItem(index, _INDEX_BUILT, {"version": 1}))
        self.items.batch(ops)

    def _index_writes(
        self,
        ctx: RequestContext,
        entries: Mapping[str, list[str]],
        records: Sequence[MemoryRecord],
        before: Mapping[str, MemoryRecord],
        alive: set[str],
    ) -> list[ItemOp]:
        """The index entries to rewrite for ``records``: each is added under its key and
        signature, dropped from a signature it no longer has; ids of memories gone are pruned."""
        changes: dict[str, tuple[set[str], set[str]]] = {}
        for record in records:
            new_slots = _index_slots(record.category, record.key, record.content)
            for slot in new_slots:
                changes.setdefault(slot, (set(), set()))[0].add(record.memory_id)
            old = before.get(record.memory_id)
            if old is not None:
                for slot in _index_slots(old.category, old.key, old.content):
                    if slot not in new_slots:
                        changes.setdefault(slot, (set(), set()))[1].add(record.memory_id)
        missing = [slot for slot in changes if slot not in entries]
        current = {**entries, **(self._entries(ctx, missing) if missing else {})}
        index = index_namespace(ctx)
        ops: list[ItemOp] = []
        for slot, (added, removed) in sorted(changes.items()):
            old_ids = current.get(slot, [])
            kept = [i for i in old_ids if i not in removed and (i in alive or slot not in entries)]
            ids = kept + sorted(added - set(kept))
            if ids != old_ids:
                ops.append(PutItem(index, slot, {"ids": ids}))
        return ops

    def _index_add(self, ctx: RequestContext, record: MemoryRecord) -> list[ItemOp]:
        """Index ops listing ``record`` under its key and signature (an edit changed it)."""
        slots = _index_slots(record.category, record.key, record.content)
        entries = self._entries(ctx, slots)
        index = index_namespace(ctx)
        return [
            PutItem(index, slot, {"ids": [*ids, record.memory_id]})
            for slot, ids in entries.items()
            if record.memory_id not in ids
        ]

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
            self.items.batch([self._put(updated), *self._index_add(ctx, updated)])
        return updated

    def delete(self, ctx: RequestContext, memory_id: str) -> bool:
        """Delete one memory (gone from every later context). False when there was none."""
        with self._lock(ctx):
            return self.items.delete(memory_namespace(ctx), memory_id)

    def forget(self, ctx: RequestContext) -> int:
        """Delete every memory of ``ctx``'s user (all agents); how many there were."""
        self.items.delete_namespace_prefix((INDEX_NAMESPACE, *user_prefix(ctx)[1:]))
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
