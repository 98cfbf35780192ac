"""``gil_breaks``: a background loop hands the GIL over between items, and changes nothing else."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ogmem_memory.compress.extractive import ExtractiveCompressor
from ogmem_memory.workers import gil_breaks


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


@pytest.mark.parametrize(("every", "count", "breaks"), [(1, 5, 5), (2, 5, 2), (8, 20, 2), (8, 7, 0)])
def test_the_gil_is_released_after_every_nth_item(
    monkeypatch: pytest.MonkeyPatch, every: int, count: int, breaks: int
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # workers calls time.sleep
    assert list(gil_breaks(range(count), every)) == list(range(count))
    assert slept == [0] * breaks


def test_the_extractive_compressor_releases_the_gil_while_it_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit's compression is where a foreground call used to wait 5 ms for the GIL."""
    messages = [
        {
            "role": "user" if k % 2 == 0 else "assistant",
            "content": f"Ada booked flight LX{k} to Lisbon on day {k}.",
        }
        for k in range(30)
    ]
    expected = ExtractiveCompressor().compress(messages)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # workers calls time.sleep
    assert ExtractiveCompressor().compress(messages) == expected
    assert len(slept) >= 30 // 8 * 2  # at least its per-message loops, once every 8 messages
