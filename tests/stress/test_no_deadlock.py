"""Issue 9, defect 2: writers, idle eviction and first reads together never deadlock.

Three writer threads start sessions whose very first ``add_messages`` crosses the commit
thresholds (background commits start at once), one thread evicts every buffer in a loop
(``now_iso`` far in the future makes them all idle), and two readers call ``get_context`` on
ids nobody wrote yet: the id each writer is about to write next, and ids never written.
Every thread must finish before the timeout; a thread still running is a deadlock, reported
with its stack. On the code before issue 9 this hung 6 runs of 6 (``evict_idle_sessions``
took the manager lock then a buffer lock, commits the reverse; ``get_context`` on an unbound
id against the first threshold-crossing write likewise).
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from ogmem_memory import MemoryConfig, SessionManager
from tests.stress.support import Backend, archive_problems, frequent_switches, run_threads

TINY = MemoryConfig(
    commit_token_threshold=20, commit_turn_threshold=2, keep_recent_messages=1, keep_recent_tokens=0
)
WRITERS = 3
READERS = 2
WRITE_SECONDS = 4.0  # or SESSIONS_PER_WRITER sessions each, whichever comes first
SESSIONS_PER_WRITER = 60
JOIN_TIMEOUT = 45.0
FUTURE = "2100-01-01T00:00:00+00:00"


def _turn(w: int, k: int, i: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"writer {w} session {k} question {i} about the lisbon budget"},
        {"role": "assistant", "content": f"writer {w} session {k} answer {i}: the hotel is booked"},
    ]


def _writer(
    manager: SessionManager, w: int, progress: list[int], written: dict[str, int], until: float
) -> None:
    k = 0
    while time.monotonic() < until and k < SESSIONS_PER_WRITER:
        sid = f"w{w}-{k}"
        progress[w] = k
        # the first write of the session already holds two user turns: it crosses a threshold
        stored = manager.add_messages(sid, _turn(w, k, 0) + _turn(w, k, 1))
        manager.add_message(sid, "user", f"writer {w} session {k} follow-up")
        manager.get_context(sid, 500)
        written[sid] = len(stored) + 1
        k += 1
    progress[w] = k


def _first_reader(manager: SessionManager, progress: list[int], done: threading.Event) -> None:
    while not done.is_set():
        for w in range(WRITERS):
            k = progress[w]
            for sid in (f"w{w}-{k}", f"w{w}-{k + 1}"):  # the writer's next first write races this read
                manager.get_context(sid, 500)
        manager.get_context(f"never-{uuid.uuid4().hex[:8]}", 500)


def _evictor(manager: SessionManager, done: threading.Event) -> None:
    while not done.is_set():
        manager.evict_idle_sessions(1, now_iso=FUTURE)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"], indirect=True)
def test_writers_eviction_and_first_reads_all_finish(backend: Backend) -> None:
    manager = SessionManager(backend.open(), config=TINY)
    progress = [0] * WRITERS
    written: dict[str, int] = {}
    done = threading.Event()
    until = time.monotonic() + WRITE_SECONDS
    writers = {
        f"writer-{w}": functools.partial(_writer, manager, w, progress, written, until)
        for w in range(WRITERS)
    }

    def writers_then_stop() -> None:
        inner = run_threads(writers, JOIN_TIMEOUT)
        done.set()
        if inner.hung or inner.errors:
            raise AssertionError("\n".join(inner.hung + inner.errors))

    others: dict[str, Callable[[], None]] = {
        f"reader-{r}": functools.partial(_first_reader, manager, progress, done) for r in range(READERS)
    }
    others["evictor"] = functools.partial(_evictor, manager, done)
    others["writers"] = writers_then_stop
    with frequent_switches():
        report = run_threads(others, JOIN_TIMEOUT + 5)
    done.set()
    assert not report.hung, "deadlock:\n" + "\n".join(report.hung)
    assert not report.errors, "\n".join(report.errors)
    manager.wait_for_tasks(30)  # TaskTimeoutError if a background commit is stuck
    assert len(written) >= WRITERS * 5
    store = backend.open()
    for sid, count in written.items():
        history = manager.get_history(sid)
        assert len(history) == count, (sid, [m.content for m in history])
        assert archive_problems(store, sid) == []
    committed = sum(1 for sid in written if manager.list_archives(sid))
    assert committed > len(written) // 2, "the writes were meant to cross the commit thresholds"
    manager.close()
    if backend.kind != "memory":
        store.close()
