"""``gil_pause``/``gil_breaks``: background work hands the GIL over, paced by elapsed time.

The clocks are fakes: a test of pacing must not depend on this machine's speed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from ogmem_memory import gil
from ogmem_memory.compress.extractive import ExtractiveCompressor
from ogmem_memory.compress.merger import ArchiveMerger
from ogmem_memory.gil import FAST_SECONDS, SLOW_SECONDS, gil_breaks, gil_pause


class Clocks:
    """Fake ``perf_counter``, ``process_time`` and ``thread_time``; ``sleep`` recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.mine = 0.0  # this thread's CPU
        self.others = 0.0  # every other thread's
        self.slept: list[float] = []
        self.cpu_reads = 0
        monkeypatch.setattr(time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(time, "process_time", self._process)
        monkeypatch.setattr(time, "thread_time", lambda: self.mine)
        monkeypatch.setattr(time, "sleep", self.slept.append)
        # this thread's pace starts now, at the fast interval
        gil._pace.at, gil._pace.others, gil._pace.interval = self.now, 0.0, FAST_SECONDS

    def _process(self) -> float:
        self.cpu_reads += 1
        return self.mine + self.others

    def compute(self, seconds: float, *, others: float = 0.0) -> None:
        self.now += seconds
        self.mine += seconds
        self.others += others


def test_items_pass_through_in_order_and_lazily() -> None:
    seen: list[int] = []

    def produce() -> Iterator[int]:
        for k in range(5):
            seen.append(k)
            yield k

    it = gil_breaks(produce())
    assert seen == []
    assert next(it) == 0 and seen == [0]
    assert list(it) == [1, 2, 3, 4]
    assert list(gil_breaks([])) == []


def test_no_hand_over_before_the_interval_and_no_cpu_clock_read(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks(monkeypatch)
    for _ in range(20):
        clocks.compute(FAST_SECONDS / 25)
        gil_pause()
    assert clocks.slept == [] and clocks.cpu_reads == 0


def test_while_other_threads_run_the_gil_is_handed_over_every_fast_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = Clocks(monkeypatch)
    for _ in range(100):  # 100 steps of a tenth of the interval, a foreground thread busy alongside
        clocks.compute(FAST_SECONDS / 10, others=FAST_SECONDS / 10)
        gil_pause()
    assert clocks.slept == [0] * 10


def test_with_nobody_else_running_the_pace_backs_off_to_the_slow_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = Clocks(monkeypatch)
    step = FAST_SECONDS / 10
    due: list[float] = []
    for _ in range(600):  # 15 ms of work alone
        clocks.compute(step)
        before = len(clocks.slept)
        gil_pause()
        if len(clocks.slept) > before:
            due.append(clocks.now)
    started = 1000.0
    gaps = [round((b - a) / step) for a, b in zip([started, *due], due, strict=False)]
    # 0.25 ms, then 0.5, 1, and 2 ms from then on: a wait of at most 2 ms for a thread that wakes
    assert gaps[:3] == [10, 20, 40] and set(gaps[3:]) == {round(SLOW_SECONDS / step)}
    # a foreground thread shows up (its CPU moves): back to the fast pace at the next hand-over
    clocks.compute(SLOW_SECONDS, others=1e-3)
    gil_pause()
    assert gil._pace.interval == FAST_SECONDS


def test_the_extractive_compressor_and_the_merger_pause_while_they_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit's compression and merge are where a foreground call waited 5 ms for the GIL."""
    messages = [
        {
            "role": "user" if k % 2 == 0 else "assistant",
            "content": f"Ada booked flight LX{k} to Lisbon on day {k}.",
        }
        for k in range(30)
    ]
    overview, abstract = ExtractiveCompressor().compress(messages)
    clocks = Clocks(monkeypatch)
    ticks = itertools.count()
    # every look at the clock finds a second gone: each pause the work makes is due
    monkeypatch.setattr(time, "perf_counter", lambda: clocks.now + next(ticks))
    pauses = clocks.slept
    assert ExtractiveCompressor().compress(messages) == (overview, abstract)
    assert len(pauses) >= 3 * 30  # at least its per-message and per-sentence loops

    class Archive:
        def __init__(self, k: int) -> None:
            self.archive_id, self.created_at = f"a{k}", f"2026-01-0{k + 1}T00:00:00+00:00"
            self.overview, self.abstract = overview, abstract
            self.first_seq, self.last_seq, self.message_count, self.token_count = k * 30 + 1, k * 30 + 30, 30, 600

    pauses.clear()
    ArchiveMerger().merge([Archive(0), Archive(1)])
    assert len(pauses) >= 10  # over the sections of the two overviews
