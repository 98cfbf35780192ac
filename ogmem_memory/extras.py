"""The seed's per-session extras on top of the lifecycle: persisted runtime state, topic
buffers, window state, the working set, idle eviction and compaction prepare tokens.

``SeedExtras`` is a mixin of ``SessionManager``; it keeps the seed's method names.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ogmem_memory.errors import AccessDeniedError, InvalidInputError, OgmemError
from ogmem_memory.models import RequestContext, SessionWindowState, iso, parse_iso, utc_now
from ogmem_memory.state import SessionState, apply_session_state_bridge, sync_runtime_to_durable
from ogmem_memory.topics import SessionTopicBuffer
from ogmem_memory.validation import check_ctx

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from ogmem_memory.buffer import SessionBuffer
    from ogmem_memory.cache import SessionCache
    from ogmem_memory.stores.base import SessionStore

logger = logging.getLogger("ogmem.session")


class SeedExtras:
    """Runtime state, topic buffers, eviction and prepare tokens (mixed into SessionManager)."""

    store: SessionStore
    _cache: SessionCache
    _session_state: SessionState
    _topic_buffers: dict[str, SessionTopicBuffer]
    _topics_lock: threading.Lock
    _synced: Callable[..., SessionBuffer]  # SessionManager's: the buffer, synced with the store
    _synced_read: Callable[..., tuple[SessionBuffer, Any]]
    _open: Callable[[], AbstractContextManager[None]]

    # -- persisted runtime state ----------------------------------------------------

    def get_session_state(self) -> SessionState:
        return self._session_state

    def _sync_runtime_state_to_session_state(self, buf: SessionBuffer) -> None:
        sync_runtime_to_durable(self._session_state, buf.session_id, buf.window_state)

    def save_session_state(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        """Persist task state, commitments, meta and window state. False when it could not."""
        try:
            buf = self._synced(session_id, ctx)
        except AccessDeniedError:
            raise
        except OgmemError:
            return False
        return self._save_state(buf)

    def _save_state(self, buf: SessionBuffer) -> bool:
        try:
            with buf.lock:
                if buf.head is None or buf.owner is None:
                    return False
                self._sync_runtime_state_to_session_state(buf)
                # to_dict copies both into plain JSON values, under this lock: no deepcopy first
                payload = self._session_state.to_dict(
                    buf.session_id,
                    session_meta=buf.meta,
                    window_state=buf.window_state,
                    extraction_summary=buf.extraction_summary,
                )
                payload["watermark"] = buf.extraction_watermark
                payload["extracted_seq"] = buf.extracted_seq
                payload["extraction_pending"] = buf.extraction_pending
                # only into the incarnation this state belongs to (not a re-created session's)
                self.store.save_state(buf.session_id, payload, epoch=buf.head.epoch)
            return True
        except Exception:
            logger.warning("saving state of session %s failed", buf.session_id, exc_info=True)
            return False

    def load_session_state(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        """Load persisted state into the live buffer (done once automatically on first use)."""
        try:
            buf = self._synced(session_id, ctx)
            with buf.lock:
                loaded = self._load_state(buf)
        except AccessDeniedError:
            raise
        except Exception:
            logger.warning("loading state of session %s failed", session_id, exc_info=True)
            return False
        return loaded

    def _load_state(self, buf: SessionBuffer) -> bool:
        """Restore the stored runtime state of the buffer's incarnation (caller holds buf.lock)."""
        if buf.head is None:
            return False
        payload = self.store.load_state(buf.session_id, epoch=buf.head.epoch)
        if not payload:
            return False
        self._restore_runtime_state(buf, payload)
        return True

    def _restore_runtime_state(self, buf: SessionBuffer, payload: Mapping[str, Any]) -> None:
        session_id = buf.session_id
        self._session_state.load_payload(session_id, payload)
        meta = payload.get("session_meta")
        if isinstance(meta, Mapping):
            # counts come from the store, not from a stale snapshot (weakness 11)
            restore_fields(buf.meta, {k: v for k, v in meta.items() if k != "message_count"})
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
        extracted = payload.get("extracted_seq")
        if isinstance(extracted, int) and not isinstance(extracted, bool):
            buf.extracted_seq = max(0, extracted)
        buf.extraction_pending = payload.get("extraction_pending") is True
        if self._session_state.has_state(session_id):
            try:
                apply_session_state_bridge(
                    buf.window_state, self._session_state, session_id, turn_count=buf.turn_count, force=True
                )
            except Exception:
                logger.debug("state bridge failed for %s", session_id, exc_info=True)

    # -- topic buffers, window state ------------------------------------------------

    def get_topic_buffer(self, session_id: str) -> SessionTopicBuffer:
        with self._topics_lock:
            tb = self._topic_buffers.get(session_id)
            if tb is None:
                tb = self._topic_buffers[session_id] = SessionTopicBuffer(session_id)
            return tb

    def invalidate_topic_slot(self, session_id: str, name: str) -> None:
        with self._topics_lock:
            tb = self._topic_buffers.get(session_id)
        if tb is not None:
            tb.invalidate(name)

    def get_window_state(self, session_id: str) -> SessionWindowState:
        """A copy of the session's window state (the seed handed out the live object)."""
        buf = self._synced(session_id, None)
        with buf.lock:
            return deepcopy(buf.window_state)

    def update_window_state(self, session_id: str, window_state: SessionWindowState) -> None:
        if not isinstance(window_state, SessionWindowState):
            raise InvalidInputError("window_state must be a SessionWindowState")
        buf = self._synced(session_id, None)
        with buf.lock:
            buf.window_state = deepcopy(window_state)

    # -- the working set and eviction -------------------------------------------------

    def get_or_create(self, session_id: str, ctx: RequestContext | None = None) -> SessionBuffer:
        """The live buffer of a session; with ``ctx`` the session is bound to it and its state loaded."""
        with self._open():
            return self._synced(session_id, ctx, bind=ctx is not None)

    def get_session(self, session_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Counters of a session (the seed's dict)."""

        def counters(buf: SessionBuffer) -> dict[str, Any]:
            return {
                "ok": True,
                "session_id": buf.session_id,
                "pending_tokens": buf.pending_tokens,
                "created_at": buf.meta.created_at,
                "updated_at": buf.meta.updated_at,
                "epoch": buf.head.epoch if buf.head else None,
            }

        with self._open():
            _, read = self._synced_read(session_id, ctx, counters, bind=ctx is not None)
            seen: dict[str, Any] = read
            epoch = seen.pop("epoch")
            record = self.store.get_session_record(seen["session_id"]) if epoch else None
        if record is not None and record.epoch != epoch:
            record = None  # re-created meanwhile: these counters are not the checked session's
        seen["message_count"] = record.message_count if record else 0
        seen["commit_count"] = record.commit_count if record else 0
        seen["last_commit_at"] = iso(record.last_commit_at) if record and record.last_commit_at else ""
        return seen

    def has_session(self, session_id: str) -> bool:
        """True when this process holds a live buffer for the session."""
        return session_id in self._cache

    def remove_session(self, session_id: str) -> None:
        """Drop the in-process buffer (the stored session is untouched)."""
        self._cache.drop(session_id)
        with self._topics_lock:
            self._topic_buffers.pop(session_id, None)

    def get_pending_session_ids(self) -> list[str]:
        """Sessions with messages not yet extracted (watermark below the live message count)."""
        return [b.session_id for b in self._cache.buffers() if b.extraction_watermark < len(b.messages)]

    def list_session_working_set(self) -> list[dict[str, Any]]:
        """Live sessions of this process, most recently accessed first."""
        rows = [
            {
                "session_id": b.session_id,
                "last_accessed_at": b.window_state.last_accessed_at,
                "message_count": len(b.messages),
                "pending_tokens": b.pending_tokens,
                "active_task": b.window_state.active_task,
            }
            for b in self._cache.buffers()
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
        check_ctx(ctx)
        if isinstance(max_idle_seconds, bool) or not isinstance(max_idle_seconds, int | float):
            raise InvalidInputError("max_idle_seconds must be a number")
        if max_idle_seconds <= 0:
            return []
        try:
            now = parse_iso(now_iso) if now_iso else utc_now()
        except ValueError:
            now = utc_now()
        evicted: list[str] = []
        for buf in self._cache.buffers():  # a snapshot: the cache lock is not held below
            if not _evictable(buf, now, max_idle_seconds):
                continue
            # Saved first: the window state and extraction watermark survive eviction, and
            # the messages are durable already, so nothing is lost.
            self._save_state(buf)
            with buf.lock:  # buffer lock, then the cache's leaf lock: the one order
                if _evictable(buf, now, max_idle_seconds) and self._cache.peek(buf.session_id) is buf:
                    self._cache.drop(buf.session_id, buf)
                    with self._topics_lock:
                        self._topic_buffers.pop(buf.session_id, None)
                    evicted.append(buf.session_id)
        return evicted

    # -- compaction prepare token ---------------------------------------------------------

    def issue_compaction_prepare_token(self, session_id: str, archive_id: str = "") -> str:
        """A single-use token tying a later compaction to the current message count and watermark."""
        buf = self._synced(session_id, None)
        token = uuid.uuid4().hex
        with buf.lock:
            buf.compaction_prepare_token = token
            buf.compaction_prepare_archive_id = archive_id or ""
            buf.compaction_prepare_message_count = len(buf.messages)
            buf.compaction_prepare_watermark = buf.extraction_watermark
            buf.compaction_prepare_token_created_at = iso(utc_now())
        return token

    def get_compaction_prepare_archive_id(self, session_id: str) -> str:
        buf = self._synced(session_id, None)
        with buf.lock:
            return buf.compaction_prepare_archive_id or ""

    def get_compaction_prepare_state(self, session_id: str, ttl_seconds: int = 300) -> dict[str, str] | None:
        buf = self._synced(session_id, None)
        with buf.lock:
            if not buf.compaction_prepare_token:
                return None
            if not _fresh(buf.compaction_prepare_token_created_at, ttl_seconds) or not _token_matches(buf):
                buf._clear_prepare_token()
                return None
            return {
                "prepareToken": buf.compaction_prepare_token,
                "archive_id": buf.compaction_prepare_archive_id,
            }

    def consume_compaction_prepare_token(self, session_id: str, token: str, ttl_seconds: int = 300) -> bool:
        buf = self._synced(session_id, None)
        with buf.lock:
            if not buf.compaction_prepare_token:
                return False
            if not _fresh(buf.compaction_prepare_token_created_at, ttl_seconds):
                buf._clear_prepare_token()
                return False
            if not token or token != buf.compaction_prepare_token or not _token_matches(buf):
                return False
            buf._clear_prepare_token()
            return True

    def clear_compaction_prepare_token(self, session_id: str) -> None:
        buf = self._synced(session_id, None)
        with buf.lock:
            buf._clear_prepare_token()


def _evictable(buf: SessionBuffer, now: datetime, max_idle: float) -> bool:
    if buf.commit_in_progress or buf.extraction_in_progress or buf.extraction_pending:
        return False
    try:
        last = parse_iso(buf.window_state.last_accessed_at) if buf.window_state.last_accessed_at else None
    except ValueError:
        return False
    return last is not None and (now - last).total_seconds() > max_idle


def _token_matches(buf: SessionBuffer) -> bool:
    return (
        buf.compaction_prepare_message_count == len(buf.messages)
        and buf.compaction_prepare_watermark == buf.extraction_watermark
    )


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
