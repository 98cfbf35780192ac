"""SessionTopicBuffer: a per-session cache of assembled context slots and injection tracking."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

IDENTITY_SLOT: Final[str] = "identity"
SKILLS_SUMMARY_SLOT: Final[str] = "skills_summary"
ARCHIVE_HISTORY_SLOT: Final[str] = "archive_history"


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class SlotContent:
    """One cached slot of assembled context.

    Attributes:
        content: The rendered text of the slot.
        uris: Sources the text was built from.
        tokens: Token count of ``content``.
        cached_at: When the slot was cached (ISO-8601 UTC with offset).
    """

    content: str
    uris: tuple[str, ...] = ()
    tokens: int = 0
    cached_at: str = field(default_factory=_utc_now)


class SessionTopicBuffer:
    """Slot cache, pending prefetch results and injected-URI tracking for one session.

    Every method is safe to call from any thread.
    """

    def __init__(self, session_id: str) -> None:
        self._session_id = session_id
        self._lock = threading.Lock()
        self._slots: dict[str, SlotContent] = {}
        self._pending: list[object] | None = None
        self._injected: set[str] = set()

    @property
    def session_id(self) -> str:
        """The session this buffer belongs to."""
        return self._session_id

    def get_cached_slot(self, name: str) -> SlotContent | None:
        """Return the cached slot ``name``, or ``None`` when it is not cached."""
        with self._lock:
            return self._slots.get(name)

    def set_cached_slot(self, name: str, content: SlotContent) -> None:
        """Cache ``content`` as slot ``name``, replacing any previous value."""
        with self._lock:
            self._slots[name] = content

    def invalidate(self, name: str) -> None:
        """Drop slot ``name`` so it is rebuilt on next use; no-op when it is not cached."""
        with self._lock:
            self._slots.pop(name, None)

    def clear_all_slots(self) -> None:
        """Drop every cached slot."""
        with self._lock:
            self._slots.clear()

    def get_slot_names(self) -> list[str]:
        """Return the names of the cached slots, in the order they were first cached."""
        with self._lock:
            return list(self._slots)

    def get_pending_injection(self) -> list[object] | None:
        """Return a copy of the prefetched retrieval hits, or ``None`` when none are pending."""
        with self._lock:
            return None if self._pending is None else list(self._pending)

    def set_pending_injection(self, hits: Sequence[object] | None) -> None:
        """Store prefetched retrieval hits for the next context assembly (``None`` clears)."""
        with self._lock:
            self._pending = None if hits is None else list(hits)

    def clear_pending_injection(self) -> None:
        """Forget the prefetched retrieval hits."""
        with self._lock:
            self._pending = None

    def mark_injected(self, uris: Iterable[str]) -> None:
        """Record that these URIs were put into a prompt, so they are not injected twice."""
        if isinstance(uris, str):  # a bare string would otherwise be marked letter by letter
            uris = (uris,)
        with self._lock:
            self._injected.update(uris)

    def was_injected(self, uri: str) -> bool:
        """Return whether ``uri`` was marked injected since the last clear."""
        with self._lock:
            return uri in self._injected

    def clear_injected_tracking(self) -> None:
        """Forget which URIs were injected."""
        with self._lock:
            self._injected.clear()


__all__ = [
    "ARCHIVE_HISTORY_SLOT",
    "IDENTITY_SLOT",
    "SKILLS_SUMMARY_SLOT",
    "SessionTopicBuffer",
    "SlotContent",
]
