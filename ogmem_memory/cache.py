"""SessionCache: this process's bounded cache of session buffers, always validated by the store.

The store decides ownership, existence and order. A buffer only mirrors what the store
returned last (its ``head``: epoch, archive version, last seq), so the next read asks the
store for what changed since then, in one consistent snapshot, with the caller's identity
checked in that same read. A session deleted or re-created elsewhere shows up as a new
epoch and the buffer is rebuilt from scratch.

Lock order, for the whole core (manager, commit pipeline, cache):

1. a session's ``SessionBuffer.lock`` (held across that session's store I/O in this process),
2. then, briefly, one of the leaf locks: ``SessionCache._lock``, the pipeline's task lock,
   the manager's operation lock.

A leaf lock is never held while taking a buffer lock, another leaf lock, or doing I/O;
no code takes two buffer locks at once. Compression runs with no lock held.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ogmem_memory.buffer import SessionBuffer
from ogmem_memory.models import (
    AppendResult,
    SessionHead,
    SessionMeta,
    SessionRecord,
    SessionWindowState,
    WindowRead,
    iso,
)


class SessionCache:
    """At most ``max_size`` buffers, least recently used evicted first (busy ones are kept)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._lock = threading.Lock()  # a leaf lock: see the module docstring
        self._buffers: OrderedDict[str, SessionBuffer] = OrderedDict()

    def get(self, session_id: str) -> SessionBuffer:
        """The session's buffer, created empty when absent; marks it most recently used."""
        with self._lock:
            buf = self._buffers.get(session_id)
            if buf is None:
                buf = SessionBuffer(session_id=session_id, meta=SessionMeta(session_id=session_id))
                self._buffers[session_id] = buf
                self._evict_over_limit()
            else:
                self._buffers.move_to_end(session_id)
            return buf

    def _evict_over_limit(self) -> None:
        excess = len(self._buffers) - self.max_size
        if excess <= 0:
            return
        # A buffer with a commit or extraction in flight stays: its task updates it. Reading
        # the flags without the buffer's lock is a benign race (the store stays the truth).
        for sid in list(self._buffers)[:-1]:
            if excess <= 0:
                break
            buf = self._buffers[sid]
            if not (buf.commit_in_progress or buf.extraction_in_progress or buf.extraction_pending):
                del self._buffers[sid]
                excess -= 1

    def peek(self, session_id: str) -> SessionBuffer | None:
        with self._lock:
            return self._buffers.get(session_id)

    def drop(self, session_id: str, buf: SessionBuffer | None = None) -> None:
        """Forget the session's buffer (only ``buf`` when given: a newer one stays)."""
        with self._lock:
            if buf is None or self._buffers.get(session_id) is buf:
                self._buffers.pop(session_id, None)

    def buffers(self) -> list[SessionBuffer]:
        with self._lock:
            return list(self._buffers.values())

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._buffers

    def __len__(self) -> int:
        with self._lock:
            return len(self._buffers)


# -- applying what the store returned (callers hold buf.lock) ----------------------


def apply_record(buf: SessionBuffer, record: SessionRecord) -> None:
    buf.owner = record.owner
    buf.meta.account_id = record.account_id
    buf.meta.user_id = record.user_id
    buf.meta.agent_id = record.agent_id
    buf.meta.created_at = iso(record.created_at)
    buf.meta.commit_count = record.commit_count
    buf.meta.last_commit_at = iso(record.last_commit_at) if record.last_commit_at else ""


def mark_stale(buf: SessionBuffer) -> None:
    """The next read re-reads the whole window (same incarnation: runtime state is kept)."""
    if buf.head is not None:
        buf.head = SessionHead(buf.head.last_seq, -1, buf.head.epoch)


def reset_buffer(buf: SessionBuffer) -> None:
    """The session was cleared or replaced here: no messages, archives or window state."""
    buf.replace_messages([])
    buf.archives = []
    buf.head = None
    buf.window_state = SessionWindowState(last_accessed_at=buf.window_state.last_accessed_at)
    buf.extraction_watermark = 0


def forget_incarnation(buf: SessionBuffer) -> None:
    """The session is gone (or was re-created): nothing of what this buffer knew still holds."""
    accessed = buf.window_state.last_accessed_at
    buf.replace_messages([])
    buf.archives = []
    buf.head = None
    buf.owner = None
    buf.last_seq = 0
    buf.window_state = SessionWindowState(last_accessed_at=accessed)
    buf.extraction_watermark = 0
    buf.extraction_summary = ""
    buf.extracted_seq = 0
    buf.extraction_pending = False
    buf._clear_prepare_token()


def apply_window(buf: SessionBuffer, window: WindowRead | None) -> bool:
    """Bring the buffer to ``window``; True when this is a new incarnation (runtime state must load)."""
    if window is None:
        if buf.head is not None or buf.messages:
            forget_incarnation(buf)
        return False
    record = window.record
    new_incarnation = buf.head is None or buf.head.epoch != record.epoch
    if new_incarnation and buf.head is not None:
        forget_incarnation(buf)
    apply_record(buf, record)
    if window.full:
        buf.replace_messages(list(window.messages))
        buf.archives = list(window.archives)
    else:
        for m in window.messages:  # one snapshot: exactly the messages after the cached head
            if m.seq > buf.last_seq:
                buf.append(m)
    buf.last_seq = record.last_seq
    buf.head = record.head
    buf.meta.message_count = len(buf.messages)
    return new_incarnation


def absorb_append(buf: SessionBuffer, result: AppendResult) -> bool:
    """Add what this process just appended, when the buffer was exactly one step behind.

    False when another writer moved the session in between (or this is the first write
    here): the caller then re-reads the window from the store.
    """
    record = result.record
    head = buf.head
    previous = record.last_seq - result.added
    if (
        head is None
        or head.epoch != record.epoch
        or head.archive_version != record.archive_version
        or buf.last_seq != previous
    ):
        return False
    if buf.owner != record.owner or buf.meta.commit_count != record.commit_count:
        apply_record(buf, record)  # (same epoch and archive version: usually nothing changed)
    for m in result.messages:
        if m.seq > previous:  # repeated ids come back with their old seq: already cached
            buf.append(m)
    buf.last_seq = record.last_seq
    buf.head = record.head
    return True
