"""SessionManager: the seed's session lifecycle on top of a durable store.

add -> durable append -> threshold check -> background commit of the older part
(compress -> archive in one compare-and-set transaction) -> merge.

The store is the only truth: ownership, existence and order are decided by the store in
the transaction of each read or write. This process's cache of session buffers
(``cache.SessionCache``) only saves work: each read asks the store for what changed since
the buffer's head, each write goes through the store's owner check. The one lock order of
the core is written in ``ogmem_memory/cache.py``. Commits and merges are in
``pipeline.py``, the seed's extras (state, eviction, prepare tokens) in ``extras.py``,
the reads that go straight to the store in ``store_reads.py``, the count of calls in flight
that ``close()`` waits for in ``ops_gate.py``, argument checks in ``validation.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeVar

from ogmem_memory.buffer import SessionBuffer
from ogmem_memory.cache import (
    SessionCache,
    absorb_append,
    apply_record,
    apply_window,
    forget_incarnation,
    mark_stale,
    reset_buffer,
)
from ogmem_memory.compress import (
    ArchiveMerger,
    CompressionQualityEvaluator,
    Compressor,
    ExtractiveCompressor,
    LLMCompressor,
)
from ogmem_memory.config import MemoryConfig
from ogmem_memory.embeddings import CheckedEmbedder, as_embedder
from ogmem_memory.errors import ConfigError, InvalidInputError, OgmemError, TaskTimeoutError
from ogmem_memory.extract import MemoryExtractor
from ogmem_memory.extras import SeedExtras, restore_fields
from ogmem_memory.longterm import LongTermMemory
from ogmem_memory.memories import UserMemories
from ogmem_memory.models import (
    AddResult,
    AppendResult,
    CommitResult,
    RequestContext,
    SessionMessage,
    iso,
    new_message_id,
    utc_now,
)
from ogmem_memory.ops_gate import OpsGate
from ogmem_memory.pipeline import CommitPipeline
from ogmem_memory.reading import ContextReads
from ogmem_memory.sharing import SharedManagers
from ogmem_memory.state import SessionState
from ogmem_memory.store_reads import DEFAULT_IDENTITY, StoreReads
from ogmem_memory.stores import default_store, open_store
from ogmem_memory.stores.base import SessionStore
from ogmem_memory.stores.items import item_store_for
from ogmem_memory.tokens import TokenCounter, as_token_counter
from ogmem_memory.topics import ARCHIVE_HISTORY_SLOT, SessionTopicBuffer
from ogmem_memory.twins import in_thread
from ogmem_memory.validation import (
    check_ctx,
    check_session_id,
    generated_ids,
    prepare_batch,
    prepare_message,
)
from ogmem_memory.workers import DaemonWorkers, TaskRegistry

logger = logging.getLogger("ogmem.session")
_REDRAWS: Final = 8  # new ids for a message whose drawn id met another one (one is plenty)

T = TypeVar("T")
SHARED_MANAGERS_LIMIT: Final = 32


def _owner(ctx: RequestContext | None) -> tuple[str, str] | None:
    return ctx.owner if ctx is not None else None


class SessionManager(ContextReads, StoreReads, UserMemories, SeedExtras):
    """Chat sessions that commit their older part into archives and assemble bounded contexts.

    Args:
        store: A ``SessionStore``, a store URL (``sqlite:///x.db``, ``postgresql://...``,
            ``memory://``), or ``None`` for SQLite at ``$OGMEM_DB`` or ``./ogmem.db``.
        config: Thresholds, budgets and limits.
        compressor: Any object with ``compress(messages, prev_overview, prev_abstract)``.
        llm: A callable, LangChain chat model or LlamaIndex LLM; compression then uses
            ``LLMCompressor(llm)`` with the extractive fallback. Ignored when
            ``compressor`` is given.
        token_counter: ``count(text) -> int`` object or a tokenizer callable.
        embedder: A LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding`` or a
            ``callable(list[str]) -> list[list[float]]``: recall then also finds archived
            turns by meaning (messages are embedded in the commit, the query once per
            ``get_context``; lexical and vector rankings are fused).
        extractor: Turns committed turns into long-term memories of the user (default: the
            deterministic ``RuleBasedExtractor``; ``LLMExtractor(llm)`` for an LLM).
        owns_store: Close the store in ``close()`` (False for a store shared by managers).

    Identity: pass ``ctx=RequestContext(...)``; a session belongs to its first writer and
    the store refuses anyone else (``AccessDeniedError``). Without ``ctx`` a write binds
    new sessions to the default identity and no owner is checked (single-user use).
    """

    _shared: ClassVar[SharedManagers] = SharedManagers(SHARED_MANAGERS_LIMIT)

    def __init__(
        self,
        store: SessionStore | str | None = None,
        *,
        config: MemoryConfig | None = None,
        compressor: Compressor | None = None,
        llm: Any = None,
        token_counter: TokenCounter | Callable[[str], Any] | None = None,
        session_state: SessionState | None = None,
        embedder: Any = None,
        extractor: MemoryExtractor | None = None,
        owns_store: bool = True,
    ) -> None:
        if config is not None and not isinstance(config, MemoryConfig):
            raise InvalidInputError(f"config must be a MemoryConfig, got {type(config).__name__}")
        if store is not None and not isinstance(store, SessionStore | str):
            raise InvalidInputError(
                f"store must be a SessionStore, a URL or None, got {type(store).__name__}"
            )
        if isinstance(store, str):
            store = open_store(store)
        self.store: SessionStore = store if store is not None else default_store()
        self.config = config or MemoryConfig()
        self.token_counter = as_token_counter(token_counter)
        self.embedder: CheckedEmbedder | None = as_embedder(embedder) if embedder is not None else None
        # the overview is sized to the largest share of the default budget the summary may take
        # (a context without a query); its facts come most salient first, so the smaller share
        # of a context with a query shows the best of them (tuned on LoCoMo)
        share = max(self.config.summary_share, self.config.summary_share_without_query)
        self.fallback_compressor: Compressor = ExtractiveCompressor(
            token_counter=self.token_counter,
            max_overview_tokens=max(200, int(self.config.context_token_budget * share)),
        )
        if compressor is not None:
            if not callable(getattr(compressor, "compress", None)):
                raise InvalidInputError(
                    "compressor must have a compress(messages, prev_overview, prev_abstract)"
                )
            self.compressor: Compressor = compressor
        elif llm is not None:
            self.compressor = LLMCompressor(llm, fallback=self.fallback_compressor)
        else:
            self.compressor = self.fallback_compressor
        # The summary changes only at commits while contexts are built on every turn: remember
        # its cuts (truncation is a binary search of token counts).
        self._truncate = functools.lru_cache(maxsize=256)(self._truncate_uncached)
        self.merger = ArchiveMerger()
        self.quality_evaluator = CompressionQualityEvaluator()
        self._session_state = session_state or SessionState()
        self._cache = SessionCache(self.config.max_cached_sessions)
        self._topic_buffers: dict[str, SessionTopicBuffer] = {}
        self._topics_lock = threading.Lock()  # a leaf lock
        self._tasks = TaskRegistry(self.config.task_history_limit)
        self._workers = DaemonWorkers(self.config.background_workers)
        self._pipeline = CommitPipeline(self)
        try:  # the user's long-term memories live in the item table of the same database
            self._long_term: LongTermMemory | None = LongTermMemory(item_store_for(self.store), extractor)
        except ConfigError:  # a third-party store without an item table: no long-term memory
            self._long_term = None
        self._owns_store = owns_store
        self._gate = OpsGate()  # counts calls in flight; close() waits for them
        self._setup_done = False

    # ------------------------------------------------------------------ sharing

    @classmethod
    def shared(
        cls,
        url: str | None = None,
        *,
        config: MemoryConfig | None = None,
        llm: Any = None,
        token_counter: Any = None,
        embedder: Any = None,
    ) -> SessionManager:
        """A manager for (url, config, llm, token_counter, embedder), shared in this process.

        Framework factories are called on every turn; sharing keeps them O(1). Managers of one
        URL share one store, and at most ``SHARED_MANAGERS_LIMIT`` are remembered.
        """
        return cls._shared.get(
            cls, url, config=config, llm=llm, token_counter=token_counter, embedder=embedder
        )

    @classmethod
    def close_shared(cls) -> None:
        """Close every shared manager and the stores they share (tests; process shutdown)."""
        cls._shared.close_all()

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran; every later call raises ``ClosedError``."""
        return self._gate.closed

    def _open(self) -> OpsGate:
        """``with self._open():`` around every public call (``ClosedError`` once closed)."""
        return self._gate

    @contextlib.contextmanager
    def _session_buffer(
        self, session_id: str, ctx: object
    ) -> Iterator[tuple[str, RequestContext | None, SessionBuffer]]:
        """Check the ids, then ``(sid, ctx, buffer)`` with the gate open and setup done."""
        sid = check_session_id(session_id, self.config)
        rctx = check_ctx(ctx)
        with self._open():
            self._ensure_setup()
            yield sid, rctx, self._cache.get(sid)

    def _ensure_setup(self) -> None:
        if not self._setup_done:
            self.store.setup()
            if self.embedder is not None:  # a missing pgvector is a clear error now, not in a commit
                try:
                    dims = self.embedder.ensure_dims()
                except OgmemError as exc:  # the embedder is down: commits embed (or skip) later
                    logger.warning("embedder unavailable at setup: %s", exc)
                else:
                    self.store.prepare_vectors(dims)
            self._setup_done = True

    def wait_for_tasks(self, timeout: float | None = None) -> None:
        """Block until every background commit and merge has finished.

        Raises:
            TaskTimeoutError: Some were still running after ``timeout`` seconds.
        """
        self._workers.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain background work (at most ``timeout`` seconds), stop the workers, close the store.

        Idempotent. Tasks still running after ``timeout`` are abandoned (their messages stay
        active in the store); the worker threads are daemons and never block interpreter exit.
        """
        if not self._gate.close():
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._workers.wait(timeout)
        except TaskTimeoutError as exc:
            logger.warning("closing with background work abandoned: %s", exc)
        self._workers.stop()
        self._gate.drain(deadline)
        if self._owns_store:
            if self._long_term is not None:
                self._long_term.items.close()
            self.store.close()

    def __enter__(self) -> Self:
        with self._open():
            self._ensure_setup()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the cache, validated

    def _synced(
        self, session_id: object, ctx: object, *, keep: bool = True, bind: bool = False
    ) -> SessionBuffer:
        """The session's buffer brought up to date from the store, the caller's identity checked.

        One store read (O(what changed)); ``AccessDeniedError`` when ``ctx`` is not the owner.
        With ``bind`` the session is first created for ``ctx`` when missing. Without ``keep``
        a session that does not exist leaves no buffer behind (weakness 21). What the caller
        reads of the buffer afterwards may already belong to a newer incarnation: to read what
        was checked, use ``_synced_read``.
        """
        return self._synced_read(session_id, ctx, None, keep=keep, bind=bind)[0]

    def _synced_read(
        self,
        session_id: object,
        ctx: object,
        read: Callable[[SessionBuffer], T] | None,
        *,
        keep: bool = True,
        bind: bool = False,
    ) -> tuple[SessionBuffer, T | None]:
        """``_synced``, then ``read(buf)`` in the same hold of the buffer's lock as the check.

        Another thread may load a re-created session (another owner) into the shared buffer
        as soon as the lock is released; reading in the same hold is what keeps a check and
        the data it allowed together.
        """
        sid = check_session_id(session_id, self.config)
        rctx = check_ctx(ctx)
        self._ensure_setup()
        if bind:
            self.store.bind_session(sid, rctx or DEFAULT_IDENTITY)
        buf = self._cache.get(sid)
        with buf.lock:
            try:
                window = self.store.read_window(
                    sid, owner=_owner(rctx), since=buf.head, archive_limit=self.config.archive_max_count + 1
                )
            except OgmemError:
                if buf.head is None and not buf.messages:
                    self._cache.drop(sid, buf)
                raise
            if apply_window(buf, window):
                self._load_state(buf)
            buf.window_state.last_accessed_at = iso(utc_now())
            result = read(buf) if read is not None else None
        if window is None and not keep:
            self._cache.drop(sid, buf)
        return buf, result

    def _absorb(self, buf: SessionBuffer, result: AppendResult, rctx: RequestContext | None) -> None:
        """Reflect this process's own write in the cache when ``absorb_append`` could not
        (caller holds buf.lock)."""
        record = result.record
        if result.created:  # the store created it in this very write: it holds exactly these
            if buf.head is not None:
                forget_incarnation(buf)
            apply_record(buf, record)
            buf.replace_messages([])
            for m in result.messages:
                buf.append(m)
            buf.last_seq = record.last_seq
            buf.head = record.head
            return
        window = self.store.read_window(
            buf.session_id,
            owner=_owner(rctx),
            since=buf.head,
            archive_limit=self.config.archive_max_count + 1,
        )
        if apply_window(buf, window):
            self._load_state(buf)

    # ------------------------------------------------------------------ writes

    def add_message(
        self,
        session_id: str,
        role: str,
        content: str,
        ctx: RequestContext | None = None,
        *,
        created_at: datetime | str | None = None,
        payload: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> AddResult:
        """Store one message durably (returns after the store has it), then maybe commit.

        Retry-safe: with ``id``, a message the session already holds is not stored again and
        the stored one is returned. A write that landed is reported as landed, even when the
        cache refresh after it fails.

        Raises:
            InvalidInputError: Unknown role, non-str content, naive timestamp, bad payload or id.
            InvalidSessionIdError: Empty, too long or control-character session id.
            MessageTooLargeError: Content over ``max_message_chars``.
            AccessDeniedError: ``ctx`` is not the session's owner (nothing was written).
            ClosedError: The manager was closed.
        """
        msg = prepare_message(
            role,
            content,
            config=self.config,
            counter=self.token_counter,
            created_at=created_at,
            payload=payload,
            message_id=id,
        )
        buf, stored = self._append(session_id, [msg], ctx, frozenset() if id is not None else {msg.id})
        return AddResult(stored[0], buf.pending_tokens)

    def add_messages(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any] | SessionMessage],
        ctx: RequestContext | None = None,
    ) -> list[SessionMessage]:
        """Store several messages in one transaction (all or none), then maybe commit."""
        prepared = prepare_batch(messages, config=self.config, counter=self.token_counter)
        if not prepared:
            check_session_id(session_id, self.config)
            check_ctx(ctx)
            return []
        return list(self._append(session_id, prepared, ctx, generated_ids(messages, prepared))[1])

    def _append(
        self, session_id: str, prepared: list[SessionMessage], ctx: object, drawn: Collection[str]
    ) -> tuple[SessionBuffer, tuple[SessionMessage, ...]]:
        """Append ``prepared``; a message whose ``drawn`` id (ours, not the caller's) the session
        already held is stored again under a new id: it met another message's 48 random bits,
        it is not a retry (only a caller's id can be), and must not vanish as one."""
        buf, result = self._append_once(session_id, prepared, ctx, drawn)
        if result.added == len(prepared) or not drawn:  # all new, or no id of ours: the usual case
            return buf, result.messages
        stored = list(result.messages)
        for _ in range(_REDRAWS):
            before = result.record.last_seq - result.added  # what was stored before this write
            met = [i for i, m in enumerate(stored) if prepared[i].id in drawn and m.seq <= before]
            if not met:
                break
            redrawn = [replace(prepared[i], id=new_message_id()) for i in met]
            drawn = {m.id for m in redrawn}
            buf, result = self._append_once(session_id, redrawn, ctx, drawn)
            for k, i in enumerate(met):
                prepared[i], stored[i] = redrawn[k], result.messages[k]
        return buf, tuple(stored)

    def _append_once(
        self, session_id: str, prepared: list[SessionMessage], ctx: object, drawn: Collection[str]
    ) -> tuple[SessionBuffer, AppendResult]:
        sid = check_session_id(session_id, self.config)
        rctx = check_ctx(ctx)
        with self._gate:
            if not self._setup_done:
                self._ensure_setup()
            buf = self._cache.get(sid)
            with buf.lock:
                try:
                    owner = rctx.owner if rctx is not None else None
                    result = self.store.append(
                        sid, prepared, create_as=rctx or DEFAULT_IDENTITY, owner=owner, drawn=drawn
                    )
                except OgmemError:
                    if buf.head is None and not buf.messages:
                        self._cache.drop(sid, buf)
                    raise
                absorbed = absorb_append(buf, result)
                if not absorbed:
                    try:
                        self._absorb(buf, result, rctx)
                    except OgmemError as exc:  # the write landed: report it, re-read next time
                        logger.warning("cache refresh of session %s after a write failed: %s", sid, exc)
                        mark_stale(buf)
                # (appending to the buffer has just stamped meta.updated_at with the time)
                buf.window_state.last_accessed_at = (
                    buf.meta.updated_at if absorbed and result.added else iso(utc_now())
                )
                # in the same hold: the buffer still is the incarnation this caller wrote to
                if self.config.auto_commit:
                    self._pipeline.maybe_auto_commit(buf, rctx)
        return buf, result

    def replace_messages(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any] | SessionMessage],
        ctx: RequestContext | None = None,
    ) -> list[SessionMessage]:
        """Replace the whole conversation (messages, archives, state) by ``messages``, atomically.

        Every message is validated first; bad input raises and the stored conversation is
        exactly as it was. What the adapters' setters (``messages = ...``, ``set``) use.
        """
        prepared = prepare_batch(messages, config=self.config, counter=self.token_counter)
        with self._session_buffer(session_id, ctx) as (sid, rctx, buf):
            with buf.lock:
                result = self.store.replace_messages(
                    sid, prepared, create_as=rctx or DEFAULT_IDENTITY, owner=_owner(rctx)
                )
                reset_buffer(buf)
                apply_record(buf, result.record)
                for m in result.messages:
                    buf.append(m)
                buf.last_seq = result.record.last_seq
                buf.head = result.record.head
                self._pipeline.maybe_auto_commit(buf, rctx)
            self._session_state.clear_session(sid)
            self.invalidate_topic_slot(sid, ARCHIVE_HISTORY_SLOT)
        return list(result.messages)

    def clear_session(self, session_id: str, ctx: RequestContext | None = None) -> None:
        """Delete the session's messages, archives and state; the owner stays bound."""
        with self._session_buffer(session_id, ctx) as (sid, rctx, buf):
            with buf.lock:
                self.store.clear_session(sid, owner=_owner(rctx))
                reset_buffer(buf)
            self._session_state.clear_session(sid)
            self.invalidate_topic_slot(sid, ARCHIVE_HISTORY_SLOT)

    def delete_session(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        """Delete the session entirely (owner binding included), for every process at once.

        False when it did not exist. Writing to the id again creates a new session bound
        to that writer.
        """
        with self._session_buffer(session_id, ctx) as (sid, rctx, buf):
            with buf.lock:
                existed = self.store.delete_session(sid, owner=_owner(rctx))
                forget_incarnation(buf)
                self._cache.drop(sid, buf)
            self.remove_session(sid)
            self._session_state.clear_session(sid)
        return existed

    # ------------------------------------------------------------------ commits

    def commit(
        self,
        session_id: str,
        ctx: RequestContext | None = None,
        *,
        wait: bool = False,
        archive_id: str | None = None,
        skip_extraction: bool = False,
        session_time: str | None = None,
    ) -> CommitResult:
        """Archive every active message (compress in the background unless ``wait``).

        Messages stay visible to ``get_context`` until their archive is durable; on
        failure nothing changes in the store and the task is ``failed``.
        ``skip_extraction`` and ``session_time`` are accepted for the seed's callers.
        """
        del skip_extraction, session_time  # the manager never extracts memories during a commit
        with self._open():
            return self._pipeline.commit(session_id, check_ctx(ctx), wait=wait, archive_id=archive_id)

    def commit_snapshot(
        self,
        session_id: str,
        messages: Sequence[SessionMessage],
        ctx: RequestContext | None = None,
        *,
        wait: bool = True,
        archive_id: str | None = None,
    ) -> CommitResult:
        """Archive exactly ``messages`` (active messages of the session, e.g. from ``get_context``).

        Unlike the seed, the live window is updated by the commit itself and a
        snapshot waits its turn behind an in-flight commit (weakness 14).
        """
        with self._open():
            return self._pipeline.commit_snapshot(
                session_id, messages, check_ctx(ctx), wait=wait, archive_id=archive_id
            )

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """A copy of a commit task's record, or ``None``."""
        return self._tasks.get(task_id)

    def _merge_archives_once(self, session_id: str) -> bool:
        return self._pipeline.merge_once(session_id)

    # ------------------------------------------------------------------ async twins

    aadd_message = in_thread(add_message)
    aadd_messages = in_thread(add_messages)
    areplace_messages = in_thread(replace_messages)
    aget_context = in_thread(ContextReads.get_context)
    aget_history = in_thread(StoreReads.get_history)
    aclear_session = in_thread(clear_session)
    adelete_session = in_thread(delete_session)
    alist_sessions = in_thread(StoreReads.list_sessions)
    await_for_tasks = in_thread(wait_for_tasks)
    aclose = in_thread(close)

    async def acommit(
        self,
        session_id: str,
        ctx: RequestContext | None = None,
        *,
        wait: bool = False,
        archive_id: str | None = None,
    ) -> CommitResult:
        """Async twin of ``commit``: runs it in a worker thread (``asyncio.to_thread``).

        Written out, not ``in_thread(commit)``: the twin never took the seed's
        ``skip_extraction``/``session_time``, and its parameters stay as they were.
        """
        return await asyncio.to_thread(self.commit, session_id, ctx, wait=wait, archive_id=archive_id)


__all__ = ["AddResult", "SessionManager", "restore_fields"]
