"""SessionManager: the seed's session lifecycle on top of a durable store.

add -> durable append -> threshold check -> background commit of the older part
(compress -> archive in one compare-and-set transaction) -> merge. The store is the
source of truth; each session's ``SessionBuffer`` is a cache refreshed from ``seq``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from copy import deepcopy
from dataclasses import dataclass, fields
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Self

from ogmem_memory.buffer import SessionBuffer
from ogmem_memory.compress import (
    ArchiveMerger,
    CompressionQualityEvaluator,
    Compressor,
    ExtractiveCompressor,
    LLMCompressor,
    compress_with_fallback,
)
from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import (
    AccessDeniedError,
    ConcurrencyError,
    InvalidInputError,
    InvalidSessionIdError,
    MessageTooLargeError,
    OgmemError,
    TaskTimeoutError,
)
from ogmem_memory.models import (
    DEFAULT_ACCOUNT,
    DEFAULT_AGENT,
    DEFAULT_USER,
    ROLES,
    ArchiveEntry,
    CommitResult,
    Context,
    RequestContext,
    SessionMessage,
    SessionMeta,
    SessionRecord,
    SessionWindowState,
    iso,
    new_archive_id,
    new_message_id,
    parse_iso,
    utc_now,
)
from ogmem_memory.policy import (
    CommitPlan,
    assemble_context,
    plan_commit,
    plan_merge,
    plan_threshold_commit,
    rank_with_neighbours,
)
from ogmem_memory.state import SessionState, apply_session_state_bridge, sync_runtime_to_durable
from ogmem_memory.stores.base import SessionStore
from ogmem_memory.tokens import TokenCounter, as_token_counter, truncate_to_tokens
from ogmem_memory.topics import ARCHIVE_HISTORY_SLOT, SessionTopicBuffer

logger = logging.getLogger("ogmem.session")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATE_VERSION = 1
DEFAULT_IDENTITY = RequestContext(DEFAULT_ACCOUNT, DEFAULT_USER, DEFAULT_AGENT)


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``add_message`` stored; ``to_dict()`` gives the seed's shape."""

    message: SessionMessage
    pending_tokens: int

    @property
    def ok(self) -> bool:
        return True

    @property
    def message_id(self) -> str:
        return self.message.id

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "message_id": self.message.id, "pending_tokens": self.pending_tokens}


def default_store() -> SessionStore:
    """``SQLiteStore`` at ``$OGMEM_DB`` or ``./ogmem.db``."""
    from ogmem_memory.stores import open_store

    return open_store(os.environ.get("OGMEM_DB") or "ogmem.db")


class SessionManager:
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
    """

    _shared: ClassVar[dict[tuple[Any, ...], SessionManager]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        store: SessionStore | str | None = None,
        *,
        config: MemoryConfig | None = None,
        compressor: Compressor | None = None,
        llm: Any = None,
        token_counter: TokenCounter | Callable[[str], Any] | None = None,
        session_state: SessionState | None = None,
    ) -> None:
        if config is not None and not isinstance(config, MemoryConfig):
            raise InvalidInputError(f"config must be a MemoryConfig, got {type(config).__name__}")
        if isinstance(store, str):
            from ogmem_memory.stores import open_store

            store = open_store(store)
        self.store: SessionStore = store if store is not None else default_store()
        self.config = config or MemoryConfig()
        self.token_counter = as_token_counter(token_counter)
        self.fallback_compressor: Compressor = ExtractiveCompressor(token_counter=self.token_counter)
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
        self._lock = threading.RLock()  # guards the dicts below, never held during I/O
        self._buffers: dict[str, SessionBuffer] = {}
        self._topic_buffers: dict[str, SessionTopicBuffer] = {}
        self._tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._futures: set[Future[Any]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._setup_done = False
        self._closed = False

    # ------------------------------------------------------------------ sharing

    @classmethod
    def shared(
        cls,
        url: str | None = None,
        *,
        config: MemoryConfig | None = None,
        llm: Any = None,
        token_counter: Any = None,
    ) -> SessionManager:
        """One manager per (url, config, llm, token_counter) in this process.

        Framework factories are called on every turn; sharing keeps them O(1).
        """
        resolved = url or os.environ.get("OGMEM_DB") or "ogmem.db"
        # ids are safe keys: the cached manager holds the llm and the counter, so neither can be
        # collected and its id reused while the entry exists
        key = (
            resolved,
            config,
            id(llm) if llm is not None else None,
            id(token_counter) if token_counter else None,
        )
        with cls._shared_lock:
            manager = cls._shared.get(key)
            if manager is None or manager._closed:
                manager = cls(resolved, config=config, llm=llm, token_counter=token_counter)
                cls._shared[key] = manager
            return manager

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran; a closed manager must not be used."""
        return self._closed

    def _ensure_setup(self) -> None:
        if not self._setup_done:
            with self._lock:
                if not self._setup_done:
                    self.store.setup()
                    self._setup_done = True

    def wait_for_tasks(self, timeout: float | None = None) -> None:
        """Block until every background commit and merge has finished.

        Raises:
            TaskTimeoutError: Some were still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else utc_now().timestamp() + timeout
        while True:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                return
            left = None if deadline is None else deadline - utc_now().timestamp()
            if left is not None and left <= 0:
                raise TaskTimeoutError(f"{len(pending)} background task(s) still running")
            wait_futures(pending, timeout=left)

    def close(self) -> None:
        """Drain background work, stop the workers and close the store. Idempotent."""
        if self._closed:
            return
        self.wait_for_tasks()
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.store.close()

    def __enter__(self) -> Self:
        self._ensure_setup()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ validation

    def _check_session_id(self, session_id: object) -> str:
        if not isinstance(session_id, str):
            raise InvalidSessionIdError(f"session_id must be a str, got {type(session_id).__name__}")
        if not session_id.strip():
            raise InvalidSessionIdError("session_id must not be empty")
        if len(session_id) > self.config.max_session_id_length:
            raise InvalidSessionIdError(
                f"session_id is {len(session_id)} characters; the limit is {self.config.max_session_id_length}"
            )
        if _CONTROL.search(session_id):
            raise InvalidSessionIdError("session_id must not contain control characters")
        _check_encodable(session_id, "session_id", InvalidSessionIdError)
        return session_id

    @staticmethod
    def _check_ctx(ctx: object) -> RequestContext | None:
        if ctx is not None and not isinstance(ctx, RequestContext):
            raise InvalidInputError(f"ctx must be a RequestContext or None, got {type(ctx).__name__}")
        return ctx

    def _prepare(
        self,
        role: object,
        content: object,
        *,
        created_at: object = None,
        payload: object = None,
        message_id: object = None,
    ) -> SessionMessage:
        if role not in ROLES:
            raise InvalidInputError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        if not isinstance(content, str):
            raise InvalidInputError(
                f"content must be a str (put structured data in payload), got {type(content).__name__}"
            )
        if len(content) > self.config.max_message_chars:
            raise MessageTooLargeError(
                f"message is {len(content)} characters; the limit is {self.config.max_message_chars}"
            )
        _check_encodable(content, "content")
        if payload is not None:
            if not isinstance(payload, Mapping):
                raise InvalidInputError(f"payload must be a mapping, got {type(payload).__name__}")
            try:
                text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"payload must be JSON-serialisable: {exc}") from exc
            _check_encodable(text, "payload")
            if len(text) > self.config.max_message_chars * 2:
                raise MessageTooLargeError("payload exceeds twice max_message_chars")
            payload = json.loads(text)  # a private copy the caller cannot mutate later
        when = _timestamp(created_at)
        if message_id is not None and (not isinstance(message_id, str) or not message_id):
            raise InvalidInputError("message id must be a non-empty str")
        return SessionMessage(
            id=message_id or new_message_id(),
            role=str(role),
            content=content,
            created_at=when,
            payload=payload,  # type: ignore[arg-type]
            tokens=self.token_counter.count(content),
        )

    def _prepare_any(self, message: object) -> SessionMessage:
        if isinstance(message, SessionMessage):
            return self._prepare(
                message.role,
                message.content,
                created_at=message.created_at,
                payload=message.payload,
                message_id=message.id,
            )
        if isinstance(message, Mapping):
            unknown = set(message) - {"role", "content", "payload", "created_at", "id"}
            if unknown:
                raise InvalidInputError(f"unknown message keys: {sorted(unknown)}")
            if "role" not in message or "content" not in message:
                raise InvalidInputError("a message needs 'role' and 'content'")
            return self._prepare(
                message["role"],
                message["content"],
                created_at=message.get("created_at"),
                payload=message.get("payload"),
                message_id=message.get("id"),
            )
        raise InvalidInputError(f"messages must be dicts or SessionMessage, got {type(message).__name__}")

    # ------------------------------------------------------------------ buffers

    def _new_buffer(self, session_id: str) -> SessionBuffer:
        with self._lock:
            buf = self._buffers.get(session_id)
            if buf is None:
                buf = SessionBuffer(session_id=session_id, meta=SessionMeta(session_id=session_id))
                self._buffers[session_id] = buf
            return buf

    def _load_buffer(self, buf: SessionBuffer) -> None:
        """First use of a session in this process: owner, active messages, persisted state."""
        record = self.store.get_session_record(buf.session_id)
        if record is None:
            return  # nothing stored yet; a write will bind it
        self._apply_record(buf, record)
        self._sync(buf)  # the live window first: restored counters are checked against it
        payload = self.store.load_state(buf.session_id)
        if payload:
            self._restore_runtime_state_from_payload(buf.session_id, payload)
        buf.loaded = True

    @staticmethod
    def _apply_record(buf: SessionBuffer, record: SessionRecord) -> None:
        buf.owner = record.owner
        buf.meta.account_id = record.account_id
        buf.meta.user_id = record.user_id
        buf.meta.agent_id = record.agent_id
        buf.meta.created_at = iso(record.created_at)
        buf.meta.commit_count = record.commit_count
        buf.meta.last_commit_at = iso(record.last_commit_at) if record.last_commit_at else ""

    def _session(self, session_id: object, ctx: object, *, write: bool) -> SessionBuffer:
        """The buffer for a session, loaded, with the caller's identity checked (bound on write)."""
        sid = self._check_session_id(session_id)
        rctx = self._check_ctx(ctx)
        self._ensure_setup()
        buf = self._new_buffer(sid)
        with buf.lock:
            if not buf.loaded:
                self._load_buffer(buf)
            if buf.owner is None and write:
                record = self.store.bind_session(sid, rctx or DEFAULT_IDENTITY)
                self._apply_record(buf, record)
                buf.loaded = True
            if rctx is not None and buf.owner is not None and rctx.owner != buf.owner:
                raise AccessDeniedError(f"session {sid!r} belongs to another user")
            buf.window_state.last_accessed_at = iso(utc_now())
        return buf

    def _forget_if_unbound(self, buf: SessionBuffer) -> None:
        """A read of a session that does not exist leaves nothing behind (weakness 21)."""
        with self._lock, buf.lock:
            if buf.owner is None and not buf.messages and self._buffers.get(buf.session_id) is buf:
                del self._buffers[buf.session_id]

    def _sync(self, buf: SessionBuffer) -> None:
        """Refresh the cache from the store when another writer (or a commit) moved it."""
        head = self.store.head(buf.session_id)
        if head is None:
            if buf.messages or buf.archives:
                buf.replace_messages([])
                buf.archives = []
            return
        if head.archive_version != buf.archive_version:
            buf.replace_messages(self.store.list_messages(buf.session_id, status="active"))
            buf.archives = self.store.list_archives(buf.session_id, limit=self.config.archive_max_count + 1)
            buf.archive_version = head.archive_version
            buf.last_seq = head.last_seq
        elif head.last_seq > buf.last_seq:
            for m in self.store.list_messages(buf.session_id, after_seq=buf.last_seq):
                if m.status == "active":
                    buf.append(m)
            buf.last_seq = head.last_seq

    def _absorb(self, buf: SessionBuffer, stored: Sequence[SessionMessage]) -> None:
        if not stored:
            return
        if stored[0].seq == buf.last_seq + 1 and buf.archive_version != -1:
            for m in stored:
                buf.append(m)
        else:  # first write here, or another writer appended in between: re-read in seq order
            self._sync(buf)
            for m in stored:
                buf.observe(m)

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
    ) -> AddResult:
        """Store one message durably (returns after the store has it), then maybe commit.

        Raises:
            InvalidInputError: Unknown role, non-str content, naive timestamp, bad payload.
            InvalidSessionIdError: Empty, too long or control-character session id.
            MessageTooLargeError: Content over ``max_message_chars``.
            AccessDeniedError: ``ctx`` is not the session's owner.
        """
        msg = self._prepare(role, content, created_at=created_at, payload=payload)
        buf, stored = self._append(session_id, [msg], ctx)
        return AddResult(stored[0], buf.pending_tokens)

    def add_messages(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any] | SessionMessage],
        ctx: RequestContext | None = None,
    ) -> list[SessionMessage]:
        """Store several messages in one transaction (all or none), then maybe commit."""
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages must be a sequence of dicts or SessionMessage")
        prepared = [self._prepare_any(m) for m in messages]
        if len({m.id for m in prepared}) != len(prepared):
            raise InvalidInputError("message ids within one call must be distinct")
        if not prepared:
            self._check_session_id(session_id)
            return []
        return self._append(session_id, prepared, ctx)[1]

    def _append(
        self, session_id: str, prepared: list[SessionMessage], ctx: RequestContext | None
    ) -> tuple[SessionBuffer, list[SessionMessage]]:
        buf = self._session(session_id, ctx, write=True)
        with buf.lock:
            stored = self.store.append_messages(buf.session_id, prepared)
            self._absorb(buf, stored)
        self._maybe_auto_commit(buf, ctx)
        return buf, stored

    def clear_session(self, session_id: str, ctx: RequestContext | None = None) -> None:
        """Delete the session's messages, archives and state; the owner stays bound."""
        buf = self._session(session_id, ctx, write=False)
        with buf.lock:
            if buf.owner is not None:
                self.store.clear_session(buf.session_id)
            buf.replace_messages([])
            buf.archives = []
            buf.archive_version = -1
            buf.window_state = SessionWindowState(last_accessed_at=buf.window_state.last_accessed_at)
            buf.extraction_watermark = 0
        self._session_state.clear_session(buf.session_id)
        self.invalidate_topic_slot(buf.session_id, ARCHIVE_HISTORY_SLOT)

    def delete_session(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        """Delete the session entirely (owner binding included). False when it did not exist."""
        buf = self._session(session_id, ctx, write=False)
        with buf.lock:
            existed = self.store.delete_session(buf.session_id)
        self.remove_session(buf.session_id)
        self._session_state.clear_session(buf.session_id)
        return existed

    # ------------------------------------------------------------------ reads

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
        buf = self._session(session_id, ctx, write=False)
        if buf.owner is None:
            self._forget_if_unbound(buf)
        with buf.lock:
            if buf.owner is not None:
                self._sync(buf)
            active = list(buf.messages)
            archives = list(buf.archives[: self.config.archive_max_count])
            pending = buf.pending_tokens
        if query is None:
            query = next((m.content for m in reversed(active) if m.role == "user"), "")
        recalled: list[SessionMessage] = []
        if archives and query.strip() and self.config.recall_limit > 0:
            recalled = self._recall(buf.session_id, query)
        summary = archives[0].overview if archives else ""
        abstracts = [a.abstract for a in reversed(archives[1:]) if a.abstract]
        plan = assemble_context(
            summary=summary,
            abstracts=abstracts,
            recalled=recalled,
            messages=active,
            budget=budget,
            counter=self.token_counter,
            cfg=self.config,
            truncate=self._truncate,
        )
        return Context(
            session_id=buf.session_id,
            summary=plan.summary,
            abstracts=plan.abstracts,
            recalled=plan.recalled,
            messages=plan.messages,
            state=self._state_view(buf),
            token_count=plan.token_count,
            budget=budget,
            query=query or None,
            pending_tokens=pending,
            active_message_count=len(active),
            archives=tuple(archives),
            dropped_messages=plan.dropped_messages,
            summary_truncated=plan.summary_truncated,
        )

    def _recall(self, session_id: str, query: str) -> list[SessionMessage]:
        """Archived messages for ``query``, best first: the hits and the turns around them.

        In a dialogue the answer is often the reply to the turn that shares the query's words,
        so each hit also brings its neighbours, ranked just below it.
        """
        hits = self.store.search_messages(
            query, session_id=session_id, status="archived", limit=self.config.recall_limit
        )
        wanted = {m.seq + d for m in hits for d in (-1, 1)} - {m.seq for m in hits}
        around = {m.seq: m for m in self.store.list_messages_by_seq(session_id, sorted(wanted))}
        return rank_with_neighbours(hits, around)

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

    def get_history(self, session_id: str, ctx: RequestContext | None = None) -> list[SessionMessage]:
        """The whole transcript in order, archived turns included."""
        buf = self._session(session_id, ctx, write=False)
        if buf.owner is None:
            self._forget_if_unbound(buf)
            return []
        return self.store.list_messages(buf.session_id)

    def list_sessions(
        self, ctx: RequestContext | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        """Sessions, most recently updated first; only the caller's when ``ctx`` is given."""
        rctx = self._check_ctx(ctx)
        for name, value in (("limit", limit), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"{name} must be a non-negative int, got {value!r}")
        self._ensure_setup()
        return self.store.list_sessions(rctx.owner if rctx else None, limit=limit, offset=offset)

    def list_archives(
        self, session_id: str, ctx: RequestContext | None = None, *, include_merged: bool = False
    ) -> list[ArchiveEntry]:
        """Archives newest first (without messages)."""
        buf = self._session(session_id, ctx, write=False)
        return self.store.list_archives(buf.session_id, include_merged=include_merged)

    def read_archive(
        self, session_id: str, archive_id: str, ctx: RequestContext | None = None
    ) -> ArchiveEntry | None:
        """One archive with its raw messages."""
        buf = self._session(session_id, ctx, write=False)
        return self.store.read_archive(buf.session_id, archive_id)

    def search(
        self, query: str, ctx: RequestContext | None = None, *, session_id: str | None = None, limit: int = 10
    ) -> list[SessionMessage]:
        """Full-text search over a session's messages, or over all of the caller's sessions."""
        if not isinstance(query, str):
            raise InvalidInputError("query must be a str")
        rctx = self._check_ctx(ctx)
        if session_id is not None:
            buf = self._session(session_id, rctx, write=False)
            return self.store.search_messages(
                query, session_id=buf.session_id, owner=rctx.owner if rctx else None, status=None, limit=limit
            )
        self._ensure_setup()
        return self.store.search_messages(
            query, owner=(rctx or DEFAULT_IDENTITY).owner, status=None, limit=limit
        )

    def get_or_create(self, session_id: str, ctx: RequestContext | None = None) -> SessionBuffer:
        """The live buffer of a session; with ``ctx`` the session is bound to it and its state loaded."""
        return self._session(session_id, ctx, write=ctx is not None)

    def get_session(self, session_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Counters of a session (the seed's dict)."""
        buf = self._session(session_id, ctx, write=ctx is not None)
        record = self.store.get_session_record(buf.session_id) if buf.owner else None
        with buf.lock:
            return {
                "ok": True,
                "session_id": buf.session_id,
                "pending_tokens": buf.pending_tokens,
                "message_count": record.message_count if record else 0,
                "commit_count": record.commit_count if record else 0,
                "last_commit_at": iso(record.last_commit_at) if record and record.last_commit_at else "",
                "created_at": buf.meta.created_at,
                "updated_at": buf.meta.updated_at,
            }

    def has_session(self, session_id: str) -> bool:
        """True when this process holds a live buffer for the session."""
        with self._lock:
            return session_id in self._buffers

    def remove_session(self, session_id: str) -> None:
        """Drop the in-process buffer (the stored session is untouched)."""
        with self._lock:
            self._buffers.pop(session_id, None)
            self._topic_buffers.pop(session_id, None)

    def get_pending_session_ids(self) -> list[str]:
        """Sessions with messages not yet extracted (watermark below the live message count)."""
        with self._lock:
            buffers = list(self._buffers.values())
        return [b.session_id for b in buffers if b.extraction_watermark < len(b.messages)]

    # ------------------------------------------------------------------ commits

    def _register_task(self, session_id: str, archive_id: str) -> dict[str, Any]:
        task = {
            "task_id": f"task_{uuid.uuid4().hex[:12]}",
            "session_id": session_id,
            "archive_id": archive_id,
            "status": "processing",
            "created_at": iso(utc_now()),
        }
        with self._lock:
            self._tasks[task["task_id"]] = task
            self._prune_tasks()
        return task

    def _prune_tasks(self) -> None:
        # Finished tasks are forgotten oldest first beyond the limit (the seed never pruned).
        excess = len(self._tasks) - self.config.task_history_limit
        for task_id in list(self._tasks):
            if excess <= 0:
                break
            if self._tasks[task_id]["status"] != "processing":
                del self._tasks[task_id]
                excess -= 1

    def _update_task(self, task: dict[str, Any], **values: Any) -> None:
        with self._lock:
            task.update(values)

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """A copy of a commit task's record, or ``None``."""
        with self._lock:
            task = self._tasks.get(task_id)
            return deepcopy(task) if task is not None else None

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
        if archive_id is not None and (not isinstance(archive_id, str) or not archive_id.strip()):
            raise InvalidInputError("archive_id must be a non-empty str")
        buf = self._session(session_id, ctx, write=False)
        with buf.lock:
            if buf.owner is not None:
                self._sync(buf)
            if buf.commit_in_progress:  # checked first: "empty" must not mask it (weakness 16)
                return CommitResult(ok=True, archived=False, reason="commit_in_progress")
            plan = plan_commit(buf.messages, self.config, keep_recent=False)
            if plan is None:
                return CommitResult(ok=True, archived=False, reason="empty_buffer")
            task, token_state = self._begin_commit(buf, archive_id)
        return self._dispatch_commit(buf, plan, task, token_state, ctx, wait=wait)

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
        buf = self._session(session_id, ctx, write=False)
        if not messages:
            return CommitResult(ok=True, archived=False, reason="empty_snapshot")
        with buf.lock:
            if buf.owner is not None:
                self._sync(buf)
            if buf.commit_in_progress:
                return CommitResult(ok=True, archived=False, reason="commit_in_progress")
            wanted = {m.id for m in messages}
            chosen = tuple(m for m in buf.messages if m.id in wanted)
            if len(chosen) != len(wanted):
                raise InvalidInputError("commit_snapshot messages must be active messages of the session")
            task, token_state = self._begin_commit(buf, archive_id)
        return self._dispatch_commit(buf, CommitPlan(chosen), task, token_state, ctx, wait=wait)

    def _begin_commit(
        self, buf: SessionBuffer, archive_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        buf.commit_in_progress = True
        self._sync_runtime_state_to_session_state(buf)
        token_state = buf.prepare_token_fields()
        buf._clear_prepare_token()  # a commit invalidates a prepare token (M28)
        return self._register_task(buf.session_id, archive_id or new_archive_id()), token_state

    def _dispatch_commit(
        self,
        buf: SessionBuffer,
        plan: CommitPlan,
        task: dict[str, Any],
        token_state: dict[str, Any],
        ctx: RequestContext | None,
        *,
        wait: bool,
    ) -> CommitResult:
        if wait:
            self._run_commit(buf, plan, task, token_state, ctx)
            snap = self.get_task(task["task_id"]) or task
            return CommitResult(
                ok=True,
                archived=bool(snap.get("archived")),
                archive_id=task["archive_id"],
                task_id=task["task_id"],
                status=snap["status"],
                error=snap.get("error"),
                archive_uri=snap.get("archive_uri"),
            )
        self._submit(self._run_commit, buf, plan, task, token_state, ctx)
        return CommitResult(
            ok=True,
            archived=False,
            archive_id=task["archive_id"],
            task_id=task["task_id"],
            status="processing",
        )

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.config.background_workers, thread_name_prefix="ogmem-commit"
                )
            future = self._executor.submit(fn, *args)
            self._futures.add(future)
        future.add_done_callback(self._forget_future)

    def _forget_future(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _run_commit(
        self,
        buf: SessionBuffer,
        plan: CommitPlan,
        task: dict[str, Any],
        token_state: dict[str, Any],
        ctx: RequestContext | None,
    ) -> None:
        """Phase 2: compress (no lock held), then archive atomically; failure changes nothing."""
        sid = buf.session_id
        try:
            archive = self._build_archive(sid, plan, task["archive_id"])
            self.store.commit_archive(sid, archive, [m.id for m in plan.messages])
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            if not isinstance(exc, OgmemError):
                logger.warning("commit of session %s failed: %s", sid, error)
            with buf.lock:
                buf.commit_in_progress = False
                buf.restore_prepare_token_fields(token_state)
                if isinstance(exc, ConcurrencyError):
                    buf.archive_version = -1  # another process archived them: re-read
            self._update_task(task, status="failed", archived=False, error=error)
            return
        with buf.lock:
            buf.remove_messages_by_id({m.id for m in plan.messages})
            buf.archive_version = -1  # the cache re-reads archives and the active set once
            buf.meta.commit_count += 1
            buf.meta.last_commit_at = iso(utc_now())
            buf.commit_in_progress = False
        self._update_task(
            task,
            status="completed",
            archived=True,
            error=None,
            archive_uri=f"ogmem://{sid}/{archive.archive_id}",
            compression=dict(archive.metadata.get("compression", {})),
            compression_quality=deepcopy(archive.metadata.get("compression_quality")),
        )
        self.invalidate_topic_slot(sid, ARCHIVE_HISTORY_SLOT)
        if buf.owner is not None:
            self.save_session_state(sid, ctx)
        self._merge_archives_once(sid)
        self._maybe_auto_commit(buf, ctx)

    def _build_archive(self, session_id: str, plan: CommitPlan, archive_id: str) -> ArchiveEntry:
        previous = self.store.list_archives(session_id, limit=1)
        prev_overview = previous[0].overview if previous else ""
        prev_abstract = previous[0].abstract if previous else ""
        dicts = [
            {"role": m.role, "content": m.content, "id": m.id, "created_at": iso(m.created_at), "seq": m.seq}
            for m in plan.messages
        ]
        if isinstance(self.compressor, LLMCompressor):
            # it falls back by itself; its detailed outcome says whether it had to
            outcome = self.compressor.compress_detailed(dicts, prev_overview, prev_abstract)
        else:
            outcome = compress_with_fallback(
                self.compressor, self.fallback_compressor, dicts, prev_overview, prev_abstract
            )
        metadata: dict[str, Any] = {
            "message_count": len(plan.messages),
            "compression": {
                "compressor": outcome.compressor,
                "fallback_used": outcome.fallback_used,
                "error": outcome.error,
            },
        }
        try:
            metadata["compression_quality"] = self.quality_evaluator.evaluate(
                dicts, outcome.overview, outcome.abstract
            )
        except Exception:  # metrics are advisory; never fail a commit over them
            logger.debug("quality evaluation failed", exc_info=True)
        return ArchiveEntry(
            archive_id=archive_id,
            session_id=session_id,
            overview=outcome.overview,
            abstract=outcome.abstract,
            first_seq=plan.first_seq,
            last_seq=plan.last_seq,
            message_count=len(plan.messages),
            token_count=plan.token_count,
            metadata=metadata,
        )

    def _maybe_auto_commit(self, buf: SessionBuffer, ctx: RequestContext | None) -> None:
        if not self.config.auto_commit or self._closed:
            return
        with buf.lock:
            if buf.commit_in_progress:
                return
            plan = plan_threshold_commit(
                buf.messages, self.config, tokens=buf.pending_tokens, turns=buf.turn_count
            )
            if plan is None:
                return
            task, token_state = self._begin_commit(buf, None)
        self._submit(self._run_commit, buf, plan, task, token_state, ctx)

    # ------------------------------------------------------------------ merges

    def _merge_archives_once(self, session_id: str) -> bool:
        """Merge the oldest archives when there are too many; atomic, non-destructive."""
        try:
            sources = plan_merge(self.store.list_archives(session_id), self.config)
            if not sources:
                return False
            merged = self.merger.merge(sources)
            if not merged.overview:
                return False
            entry = ArchiveEntry(
                archive_id=new_archive_id("merged_"),
                session_id=session_id,
                overview=merged.overview,
                abstract=merged.abstract,
                first_seq=merged.first_seq,
                last_seq=merged.last_seq,
                message_count=merged.message_count,
                token_count=sum(a.token_count for a in sources),
                # the newest source's time, not now: a merge must not become the "latest" (weakness 13)
                created_at=max(a.created_at for a in sources),
                metadata=dict(merged.metadata),
            )
            self.store.merge_archives(session_id, entry, [a.archive_id for a in sources])
        except ConcurrencyError:
            return False  # another writer merged first
        except Exception:
            logger.warning("archive merge of session %s failed", session_id, exc_info=True)
            return False
        with self._lock:
            buf = self._buffers.get(session_id)
        if buf is not None:
            with buf.lock:
                buf.archive_version = -1
        self.invalidate_topic_slot(session_id, ARCHIVE_HISTORY_SLOT)
        return True

    # ------------------------------------------------------------------ state

    def get_session_state(self) -> SessionState:
        return self._session_state

    def _sync_runtime_state_to_session_state(self, buf: SessionBuffer) -> None:
        sync_runtime_to_durable(self._session_state, buf.session_id, buf.window_state)

    def save_session_state(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        """Persist task state, commitments, meta and window state. False when it could not."""
        try:
            buf = self._session(session_id, ctx, write=False)
        except AccessDeniedError:
            raise
        except OgmemError:
            return False
        return self._save_state(buf)

    def _save_state(self, buf: SessionBuffer) -> bool:
        if buf.owner is None:
            return False
        try:
            with buf.lock:
                self._sync_runtime_state_to_session_state(buf)
                payload = self._session_state.to_dict(
                    buf.session_id,
                    session_meta=deepcopy(buf.meta),
                    window_state=deepcopy(buf.window_state),
                    extraction_summary=buf.extraction_summary,
                )
                payload["watermark"] = buf.extraction_watermark
            self.store.save_state(buf.session_id, payload)
            return True
        except Exception:
            logger.warning("saving state of session %s failed", buf.session_id, exc_info=True)
            return False

    def load_session_state(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        """Load persisted state into the live buffer (done once automatically on first use)."""
        try:
            buf = self._session(session_id, ctx, write=False)
            payload = self.store.load_state(buf.session_id) if buf.owner else None
        except AccessDeniedError:
            raise
        except Exception:
            logger.warning("loading state of session %s failed", session_id, exc_info=True)
            return False
        if not payload:
            return False
        self._restore_runtime_state_from_payload(buf.session_id, payload)
        return True

    def _restore_runtime_state_from_payload(self, session_id: str, payload: Mapping[str, Any]) -> None:
        with self._lock:
            buf = self._buffers.get(session_id)
        if buf is None or not isinstance(payload, Mapping):
            return
        self._session_state.load_payload(session_id, payload)
        meta = payload.get("session_meta")
        if isinstance(meta, Mapping):
            # counts come from the store, not from a stale snapshot (weakness 11)
            restore_fields(buf.meta, {k: v for k, v in meta.items() if k not in ("message_count",)})
            buf.meta.session_id = session_id
            buf.meta.message_count = len(buf.messages)
        window = payload.get("window_state")
        if isinstance(window, Mapping):
            restore_fields(buf.window_state, window)
        summary = payload.get("extraction_summary")
        if isinstance(summary, str):
            buf.extraction_summary = summary
        watermark = payload.get("watermark")
        if isinstance(watermark, int):
            buf.extraction_watermark = max(0, min(watermark, len(buf.messages)))
        if self._session_state.has_state(session_id):
            try:
                apply_session_state_bridge(
                    buf.window_state, self._session_state, session_id, turn_count=buf.turn_count, force=True
                )
            except Exception:
                logger.debug("state bridge failed for %s", session_id, exc_info=True)

    # ------------------------------------------------------------------ topic buffers, window state

    def get_topic_buffer(self, session_id: str) -> SessionTopicBuffer:
        with self._lock:
            tb = self._topic_buffers.get(session_id)
            if tb is None:
                tb = self._topic_buffers[session_id] = SessionTopicBuffer(session_id)
            return tb

    def invalidate_topic_slot(self, session_id: str, name: str) -> None:
        with self._lock:
            tb = self._topic_buffers.get(session_id)
        if tb is not None:
            tb.invalidate(name)

    def get_window_state(self, session_id: str) -> SessionWindowState:
        """A copy of the session's window state (the seed handed out the live object)."""
        buf = self._session(session_id, None, write=False)
        with buf.lock:
            return deepcopy(buf.window_state)

    def update_window_state(self, session_id: str, window_state: SessionWindowState) -> None:
        if not isinstance(window_state, SessionWindowState):
            raise InvalidInputError("window_state must be a SessionWindowState")
        buf = self._session(session_id, None, write=False)
        with buf.lock:
            buf.window_state = deepcopy(window_state)

    def list_session_working_set(self) -> list[dict[str, Any]]:
        """Live sessions of this process, most recently accessed first."""
        with self._lock:
            buffers = list(self._buffers.values())
        rows = [
            {
                "session_id": b.session_id,
                "last_accessed_at": b.window_state.last_accessed_at,
                "message_count": len(b.messages),
                "pending_tokens": b.pending_tokens,
                "active_task": b.window_state.active_task,
            }
            for b in buffers
        ]
        rows.sort(key=lambda r: (r["last_accessed_at"] != "", r["last_accessed_at"]), reverse=True)
        return rows

    def evict_idle_sessions(
        self, max_idle_seconds: float, ctx: RequestContext | None = None, *, now_iso: str | None = None
    ) -> list[str]:
        """Drop buffers idle for longer than ``max_idle_seconds``; their state is saved first.

        ``ctx`` is accepted for the seed's callers: each session is saved under its own
        identity. Sessions with unextracted messages are evicted too (unlike the seed):
        the messages are in the store and the extraction watermark is saved with the state.
        """
        self._check_ctx(ctx)
        if max_idle_seconds <= 0:
            return []
        try:
            now = parse_iso(now_iso) if now_iso else utc_now()
        except ValueError:
            now = utc_now()
        evicted: list[str] = []
        with self._lock:
            buffers = list(self._buffers.values())
        for buf in buffers:
            if not self._evictable(buf, now, max_idle_seconds):
                continue
            # Always saved (not only with a ctx): the window state and extraction watermark
            # survive eviction, and the messages are durable already, so nothing is lost.
            self._save_state(buf)
            with self._lock, buf.lock:
                if self._evictable(buf, now, max_idle_seconds) and self._buffers.get(buf.session_id) is buf:
                    del self._buffers[buf.session_id]
                    self._topic_buffers.pop(buf.session_id, None)
                    evicted.append(buf.session_id)
        return evicted

    @staticmethod
    def _evictable(buf: SessionBuffer, now: datetime, max_idle: float) -> bool:
        if buf.commit_in_progress or buf.extraction_in_progress:
            return False
        try:
            last = parse_iso(buf.window_state.last_accessed_at) if buf.window_state.last_accessed_at else None
        except ValueError:
            return False
        return last is not None and (now - last).total_seconds() > max_idle

    # ------------------------------------------------------------------ compaction prepare token

    def issue_compaction_prepare_token(self, session_id: str, archive_id: str = "") -> str:
        """A single-use token tying a later compaction to the current message count and watermark."""
        buf = self._session(session_id, None, write=False)
        token = uuid.uuid4().hex
        with buf.lock:
            buf.compaction_prepare_token = token
            buf.compaction_prepare_archive_id = archive_id or ""
            buf.compaction_prepare_message_count = len(buf.messages)
            buf.compaction_prepare_watermark = buf.extraction_watermark
            buf.compaction_prepare_token_created_at = iso(utc_now())
        return token

    def get_compaction_prepare_archive_id(self, session_id: str) -> str:
        buf = self._session(session_id, None, write=False)
        with buf.lock:
            return buf.compaction_prepare_archive_id or ""

    def get_compaction_prepare_state(self, session_id: str, ttl_seconds: int = 300) -> dict[str, str] | None:
        buf = self._session(session_id, None, write=False)
        with buf.lock:
            if not buf.compaction_prepare_token:
                return None
            if not _fresh(buf.compaction_prepare_token_created_at, ttl_seconds) or not self._token_matches(
                buf
            ):
                buf._clear_prepare_token()
                return None
            return {
                "prepareToken": buf.compaction_prepare_token,
                "archive_id": buf.compaction_prepare_archive_id,
            }

    def consume_compaction_prepare_token(self, session_id: str, token: str, ttl_seconds: int = 300) -> bool:
        buf = self._session(session_id, None, write=False)
        with buf.lock:
            if not buf.compaction_prepare_token:
                return False
            if not _fresh(buf.compaction_prepare_token_created_at, ttl_seconds):
                buf._clear_prepare_token()
                return False
            if not token or token != buf.compaction_prepare_token or not self._token_matches(buf):
                return False
            buf._clear_prepare_token()
            return True

    def clear_compaction_prepare_token(self, session_id: str) -> None:
        buf = self._session(session_id, None, write=False)
        with buf.lock:
            buf._clear_prepare_token()

    @staticmethod
    def _token_matches(buf: SessionBuffer) -> bool:
        return (
            buf.compaction_prepare_message_count == len(buf.messages)
            and buf.compaction_prepare_watermark == buf.extraction_watermark
        )

    # ------------------------------------------------------------------ async twins

    async def aadd_message(
        self,
        session_id: str,
        role: str,
        content: str,
        ctx: RequestContext | None = None,
        *,
        created_at: datetime | str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> AddResult:
        return await asyncio.to_thread(
            self.add_message, session_id, role, content, ctx, created_at=created_at, payload=payload
        )

    async def aadd_messages(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any] | SessionMessage],
        ctx: RequestContext | None = None,
    ) -> list[SessionMessage]:
        return await asyncio.to_thread(self.add_messages, session_id, messages, ctx)

    async def aget_context(
        self,
        session_id: str,
        token_budget: int | None = None,
        ctx: RequestContext | None = None,
        *,
        query: str | None = None,
    ) -> Context:
        return await asyncio.to_thread(self.get_context, session_id, token_budget, ctx, query=query)

    async def acommit(
        self,
        session_id: str,
        ctx: RequestContext | None = None,
        *,
        wait: bool = False,
        archive_id: str | None = None,
    ) -> CommitResult:
        return await asyncio.to_thread(self.commit, session_id, ctx, wait=wait, archive_id=archive_id)

    async def aget_history(self, session_id: str, ctx: RequestContext | None = None) -> list[SessionMessage]:
        return await asyncio.to_thread(self.get_history, session_id, ctx)

    async def aclear_session(self, session_id: str, ctx: RequestContext | None = None) -> None:
        await asyncio.to_thread(self.clear_session, session_id, ctx)

    async def adelete_session(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        return await asyncio.to_thread(self.delete_session, session_id, ctx)

    async def alist_sessions(
        self, ctx: RequestContext | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        return await asyncio.to_thread(self.list_sessions, ctx, limit=limit, offset=offset)

    async def await_for_tasks(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.wait_for_tasks, timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


# ---------------------------------------------------------------------- helpers


def _check_encodable(text: str, what: str, error: type[InvalidInputError] = InvalidInputError) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(f"{what} is not valid UTF-8 (lone surrogate at {exc.start})") from exc


def _timestamp(value: object) -> datetime:
    if value is None:
        return utc_now()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError as exc:
            raise InvalidInputError(f"created_at is not ISO-8601: {value!r}") from exc
        value = parsed
    if not isinstance(value, datetime):
        raise InvalidInputError(f"created_at must be a datetime or ISO-8601 str, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError("created_at must be timezone-aware (naive timestamps are ambiguous)")
    return value


def _fresh(created_at: str, ttl_seconds: int) -> bool:
    if ttl_seconds <= 0 or not created_at:
        return False
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return False
    if created.tzinfo is None:
        return False
    return (utc_now() - created).total_seconds() < ttl_seconds


def restore_fields(target: Any, payload: Mapping[str, Any]) -> None:
    """Copy payload values onto a dataclass, coerced by the type of each field's current value (M8)."""
    if not isinstance(payload, Mapping):
        return
    for f in fields(target):
        if f.name not in payload:
            continue
        value = payload[f.name]
        current = getattr(target, f.name)
        if isinstance(current, list):
            coerced: Any = list(value) if isinstance(value, list) else []
        elif isinstance(current, int):
            try:
                coerced = int(value or 0)
            except (TypeError, ValueError):
                coerced = 0
        elif isinstance(current, str):
            coerced = str(value or "")
        else:
            coerced = value
        setattr(target, f.name, coerced)


__all__ = ["AddResult", "SessionManager", "restore_fields"]
