"""Background work that hands the GIL over to the foreground, often when someone needs it.

A commit computes in a worker thread of the caller's process. A foreground call
(``add_message``, ``get_context``) whose I/O returns while that thread computes waits for the
GIL until the interpreter's switch interval (5 ms) forces it free, and again at its next I/O
return: a convoy that made an ``add_message`` during a commit take milliseconds.
:func:`gil_pause`, called between steps of the background work, hands the GIL over with
``time.sleep(0)``, which releases it at once so a waiting thread takes it.

A hand-over is not free: ``time.sleep(0)`` keeps the thread off the CPU for the kernel's timer
slack (about 60 µs on Linux), whether or not another thread wanted the GIL. So the pause is
paced by elapsed time, not by steps: every ``FAST_SECONDS`` of computing while other threads
of the process are running (their CPU time moved since the last hand-over), backing off to
every ``SLOW_SECONDS`` while none is (a commit waited for by nobody, or only by a
``wait_for_tasks``). A foreground thread that wakes during a back-off waits at most
``SLOW_SECONDS`` once; its own CPU then brings the pace back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Final, TypeVar

_T = TypeVar("_T")

FAST_SECONDS: Final = 0.25e-3
SLOW_SECONDS: Final = 2e-3
# Other threads' CPU since the last hand-over above which one of them is taken to be active.
_OTHERS_ACTIVE: Final = 10e-6


class _Pace(threading.local):
    """One thread's pacing: when it last handed over, the others' CPU then, its interval."""

    def __init__(self) -> None:
        self.at = time.perf_counter()
        self.others = time.process_time() - time.thread_time()
        self.interval = FAST_SECONDS


_pace = _Pace()


def gil_pause() -> None:
    """Hand the GIL over when this thread has computed its interval since the last hand-over.

    Costs a clock read when it is not due. Call it between steps of background work (each
    step well under a millisecond); never while holding a lock a foreground call may need.
    """
    pace = _pace
    if time.perf_counter() - pace.at < pace.interval:
        return
    others = time.process_time() - time.thread_time()
    active = others - pace.others > _OTHERS_ACTIVE
    pace.interval = FAST_SECONDS if active else min(pace.interval * 2, SLOW_SECONDS)
    time.sleep(0)  # releases the GIL at once: a thread waiting for it takes it
    pace.at = time.perf_counter()
    pace.others = time.process_time() - time.thread_time()


def gil_breaks(items: Iterable[_T]) -> Iterator[_T]:
    """``items``, with a :func:`gil_pause` after each one (for the loops of background work)."""
    for item in items:
        yield item
        gil_pause()
