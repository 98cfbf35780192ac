"""SessionBuffer: one session's live window, cached in process memory.

The store is the source of truth; the buffer caches the active messages (refreshed
from ``seq``), the latest archives, and the seed's per-session runtime state.
"""

from __future__ import annotations

import re
import threading
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from ogmem_memory.models import (
    ArchiveEntry,
    SessionHead,
    SessionMessage,
    SessionMeta,
    SessionWindowState,
    iso,
    new_message_id,
    parse_iso,
    utc_now,
)
from ogmem_memory.tokens import estimate_tokens
from ogmem_memory.usage import UsageTracker

# Whole words only: the seed's substring test matched "helpful" and "wanted" (weakness 12).
_TASK_CUE = re.compile(r"\b(help|need|want|please|can you|could you)\b", re.IGNORECASE)
_CUE_WORDS = ("help", "need", "want", "please", "can you", "could you")


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def has_task_cue(text: str) -> bool:
    """``_TASK_CUE.search(text)``, without the regex for ASCII text (it runs on every user turn).

    For ASCII, ``lower()`` is exactly the regex's case folding and ``\\w`` is ``[A-Za-z0-9_]``.
    """
    if not text.isascii():
        return _TASK_CUE.search(text) is not None
    lower = text.lower()
    end = len(lower)
    for word in _CUE_WORDS:
        i = lower.find(word)
        while i >= 0:
            j = i + len(word)
            if (i == 0 or not _is_word_char(lower[i - 1])) and (j == end or not _is_word_char(lower[j])):
                return True
            i = lower.find(word, i + 1)
    return False


@dataclass(eq=False)
class SessionBuffer:
    """Live state of one session in this process (all fields guarded by ``lock``)."""

    session_id: str
    messages: list[SessionMessage] = field(default_factory=list)
    meta: SessionMeta = field(default_factory=SessionMeta)
    commit_in_progress: bool = False
    turn_count: int = 0
    window_state: SessionWindowState = field(default_factory=SessionWindowState)
    usage_stats: UsageTracker = field(default_factory=UsageTracker)
    extraction_watermark: int = 0
    extraction_summary: str = ""
    compaction_prepare_token: str = ""
    compaction_prepare_archive_id: str = ""
    compaction_prepare_message_count: int = 0
    compaction_prepare_watermark: int = 0
    compaction_prepare_token_created_at: str = ""
    extraction_in_progress: bool = False
    extraction_done_event: threading.Event | None = None
    extraction_active_count: int = 0
    extraction_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    extracted_seq: int = 0  # long-term memories were extracted from every message up to this seq
    extraction_pending: bool = False  # committed messages wait for extraction (eviction keeps them)
    # -- cache bookkeeping (ours) --
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    owner: tuple[str, str] | None = None  # as last read from the store; never trusted for access
    head: SessionHead | None = None  # the store's head this cache mirrors; None: re-read everything
    last_seq: int = 0
    archives: list[ArchiveEntry] = field(default_factory=list)
    _pending_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.meta.session_id:
            self.meta.session_id = self.session_id
        self._recount()

    # -- derived values ----------------------------------------------------------

    @property
    def pending_tokens(self) -> int:
        """Tokens of the active messages (a cached sum: O(1))."""
        return self._pending_tokens

    @property
    def tool_usage_stats(self) -> dict[str, dict[str, Any]]:
        return self.usage_stats.tool_stats

    @tool_usage_stats.setter
    def tool_usage_stats(self, stats: dict[str, dict[str, Any]]) -> None:
        self.usage_stats.merge_tool_stats(stats)

    def _recount(self) -> None:
        self._pending_tokens = sum(m.tokens for m in self.messages)
        self.turn_count = sum(1 for m in self.messages if m.role == "user")

    def _touch(self) -> None:
        self.meta.message_count = len(self.messages)
        self.meta.updated_at = iso(utc_now())

    # -- adding ------------------------------------------------------------------

    def add(self, role: str, content: str, created_at: str | None = None) -> SessionMessage:
        """The seed's in-memory add: a new message with a fresh id (no store involved)."""
        msg = SessionMessage(
            id=new_message_id(),
            role=role,
            content=content,
            created_at=parse_iso(created_at) if created_at else utc_now(),
            tokens=estimate_tokens(content),
        )
        self.append(msg)
        return msg

    def append(self, msg: SessionMessage) -> None:
        """Append a (stored) message to the live window and update the runtime state."""
        self.messages.append(msg)
        self._pending_tokens += msg.tokens
        if msg.seq > self.last_seq:
            self.last_seq = msg.seq
        if msg.role == "user":
            self.turn_count += 1
        self.observe(msg)
        self._touch()

    def observe(self, msg: SessionMessage) -> None:
        """Update the runtime state from a new message (the seed's active-task heuristic)."""
        if msg.role == "user":
            candidate = msg.content.strip()[:200]
            if candidate and has_task_cue(candidate):
                self.window_state.active_task = candidate

    def replace_messages(self, messages: list[SessionMessage]) -> None:
        """Replace the cached active set (after a reload from the store)."""
        self.messages = list(messages)
        if messages:
            self.last_seq = max(self.last_seq, messages[-1].seq)
        self._recount()
        self.meta.message_count = len(self.messages)

    # -- the seed's window mechanics ---------------------------------------------

    def should_compress(self, turn_threshold: int = 10, token_threshold: int = 10_000) -> bool:
        turns_since = self.turn_count - self.window_state.turn_count_at_last_compress
        tokens_since = self.pending_tokens - self.window_state.token_count_at_last_compress
        return turns_since >= turn_threshold or tokens_since >= token_threshold

    def snapshot_and_clear(self) -> list[SessionMessage]:
        """The seed's snapshot: copy and clear (the manager itself never clears; see DESIGN 4.3)."""
        snap = list(self.messages)
        accessed = self.window_state.last_accessed_at
        self.messages.clear()
        self._recount()
        self.window_state = SessionWindowState(last_accessed_at=accessed)  # weakness 9: keep it
        self._touch()
        self.extraction_watermark = 0
        self._clear_prepare_token()
        return snap

    def _clear_prepare_token(self) -> None:
        self.compaction_prepare_token = ""
        self.compaction_prepare_archive_id = ""
        self.compaction_prepare_message_count = 0
        self.compaction_prepare_watermark = 0
        self.compaction_prepare_token_created_at = ""

    def prepare_token_fields(self) -> dict[str, Any]:
        return {
            "compaction_prepare_token": self.compaction_prepare_token,
            "compaction_prepare_archive_id": self.compaction_prepare_archive_id,
            "compaction_prepare_message_count": self.compaction_prepare_message_count,
            "compaction_prepare_watermark": self.compaction_prepare_watermark,
            "compaction_prepare_token_created_at": self.compaction_prepare_token_created_at,
        }

    def restore_prepare_token_fields(self, state: dict[str, Any]) -> None:
        self.compaction_prepare_token = str(state.get("compaction_prepare_token", "") or "")
        self.compaction_prepare_archive_id = str(state.get("compaction_prepare_archive_id", "") or "")
        self.compaction_prepare_message_count = int(state.get("compaction_prepare_message_count", 0) or 0)
        self.compaction_prepare_watermark = int(state.get("compaction_prepare_watermark", 0) or 0)
        self.compaction_prepare_token_created_at = str(
            state.get("compaction_prepare_token_created_at", "") or ""
        )

    def capture_rollback_state(self) -> dict[str, Any]:
        return {
            "messages": list(self.messages),
            "turn_count": self.turn_count,
            "window_state": deepcopy(self.window_state),
            "meta_message_count": self.meta.message_count,
            "meta_updated_at": self.meta.updated_at,
            "extraction_watermark": self.extraction_watermark,
            "extraction_summary": self.extraction_summary,
            **self.prepare_token_fields(),
        }

    def restore_rollback_state(self, state: dict[str, Any]) -> None:
        original = list(state.get("messages", []))
        original_ids = {m.id for m in original}
        self.messages = original + [m for m in self.messages if m.id not in original_ids]
        self._recount()
        self.window_state = deepcopy(state.get("window_state") or SessionWindowState())
        self.meta.message_count = len(self.messages)
        self.meta.updated_at = state.get("meta_updated_at", self.meta.updated_at)
        self.extraction_watermark = min(int(state.get("extraction_watermark", 0) or 0), len(self.messages))
        self.extraction_summary = state.get("extraction_summary", "")
        self.restore_prepare_token_fields(state)

    def begin_extraction(self) -> threading.Event:
        """Mark an extraction as running; all concurrent ones share one done event."""
        with self.extraction_lock:
            event = self.extraction_done_event
            if event is None or not self.extraction_in_progress or event.is_set():
                event = threading.Event()
                self.extraction_done_event = event
            self.extraction_active_count += 1
            self.extraction_in_progress = True
            return event

    def end_extraction(self) -> None:
        with self.extraction_lock:
            self.extraction_active_count = max(0, self.extraction_active_count - 1)
            if self.extraction_active_count == 0:
                self.extraction_in_progress = False
                if self.extraction_done_event is not None:
                    self.extraction_done_event.set()

    def remove_messages_by_id(self, message_ids: set[str] | frozenset[str]) -> int:
        """Drop the given ids from the live window (they were archived); returns how many."""
        if not message_ids:
            return 0
        before_watermark = self.messages[: self.extraction_watermark]
        kept = [m for m in self.messages if m.id not in message_ids]
        removed = len(self.messages) - len(kept)
        if removed == 0:
            return 0
        removed_before = sum(1 for m in before_watermark if m.id in message_ids)
        self.messages = kept
        self._recount()
        self.extraction_watermark = max(0, min(self.extraction_watermark - removed_before, len(kept)))
        self.window_state.session_state_sync_turn_count = min(
            self.window_state.session_state_sync_turn_count, self.turn_count
        )
        self._touch()
        return removed

    def rewind_watermark_to_ids(self, message_ids: set[str]) -> bool:
        if not message_ids:
            return False
        for index, m in enumerate(self.messages):
            if m.id in message_ids:
                if index < self.extraction_watermark:
                    self.extraction_watermark = index
                    self.meta.updated_at = iso(utc_now())
                    return True
                return False
        return False
