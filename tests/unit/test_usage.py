"""UsageTracker: token counters, tool stats and thread-safety (SEED_SPEC 1.9)."""

from __future__ import annotations

import copy
import sys
import threading
from dataclasses import dataclass, field

from ogmem_memory.usage import TOOL_STAT_KEYS, UsageTracker


def test_constructible_with_no_args_as_a_default_factory() -> None:
    @dataclass
    class Buffer:
        usage_stats: UsageTracker = field(default_factory=UsageTracker)

    first, second = Buffer(), Buffer()
    first.usage_stats.record_llm(1, 1)
    assert second.usage_stats.snapshot().llm_calls == 0


def test_to_dict_has_the_lineage_token_tracker_shape() -> None:
    tracker = UsageTracker()
    tracker.record_llm(100, 20, cache_read=30, cache_write=5)
    tracker.record_llm(10, 2)
    tracker.record_embed(7)
    assert tracker.to_dict() == {
        "llm": {
            "input_tokens": 110,
            "output_tokens": 22,
            "cache_read": 30,
            "cache_write": 5,
            "total_tokens": 132,
            "calls": 2,
        },
        "embedding": {"total_tokens": 7, "calls": 1},
        "total_tokens": 139,
    }


def test_empty_tracker_reports_zeros() -> None:
    data = UsageTracker().to_dict()
    assert data["total_tokens"] == 0
    assert data["llm"]["calls"] == 0
    assert data["embedding"] == {"total_tokens": 0, "calls": 0}


def test_negative_token_counts_count_as_zero_but_the_call_counts() -> None:
    tracker = UsageTracker()
    tracker.record_llm(-5, 3, cache_read=-1)
    tracker.record_embed(-2)
    snap = tracker.snapshot()
    assert (snap.llm_input_tokens, snap.llm_output_tokens, snap.llm_cache_read) == (0, 3, 0)
    assert (snap.llm_calls, snap.embedding_tokens, snap.embedding_calls) == (1, 0, 1)


def test_snapshot_is_a_copy() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("search", "success")
    snap = tracker.snapshot()
    tracker.record_llm(1, 1)
    tracker.record_tool_call("search", "success")
    assert snap.llm_calls == 0
    assert snap.tool_stats["search"]["call_count"] == 1


def test_snapshot_and_reset_returns_everything_and_zeroes() -> None:
    tracker = UsageTracker()
    tracker.record_llm(4, 6)
    tracker.record_embed(3)
    tracker.record_tool_call("search", "completed")
    snap = tracker.snapshot_and_reset()
    assert snap.total_tokens == 13
    assert snap.tool_stats["search"]["success_count"] == 1
    assert tracker.to_dict()["total_tokens"] == 0
    assert tracker.tool_stats == {}


def test_reset_clears_tokens_and_tool_stats() -> None:
    tracker = UsageTracker()
    tracker.record_llm(4, 6)
    tracker.record_tool_call("search", "completed")
    tracker.reset()
    assert tracker.snapshot().llm_calls == 0
    assert tracker.format_tool_stats_text() == ""


def test_concurrent_record_llm_gives_exact_totals() -> None:
    tracker = UsageTracker()
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(1000):
            tracker.record_llm(3, 2, cache_read=1)
            tracker.record_tool_call("t", "success", duration_ms=1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked += would lose updates
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    data = tracker.to_dict()
    assert data["llm"]["calls"] == 8000
    assert data["llm"]["input_tokens"] == 24000
    assert data["llm"]["output_tokens"] == 16000
    assert data["llm"]["cache_read"] == 8000
    assert tracker.tool_stats["t"]["call_count"] == 8000
    assert tracker.tool_stats["t"]["total_duration_ms"] == 8000


def test_concurrent_snapshot_and_reset_loses_no_call() -> None:
    tracker = UsageTracker()
    drained: list[int] = []
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            drained.append(tracker.snapshot_and_reset().llm_calls)

    drainer = threading.Thread(target=drain)
    drainer.start()
    for _ in range(5000):
        tracker.record_llm(1, 1)
    done.set()
    drainer.join()
    assert sum(drained) + tracker.snapshot().llm_calls == 5000


def test_record_tool_call_counts_success_and_failure() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("search", "completed", duration_ms=10.5, prompt_tokens=3, completion_tokens=4)
    tracker.record_tool_call("search", "success", duration_ms=1)
    tracker.record_tool_call("search", "error")
    tracker.record_tool_call("search", "")
    assert tracker.tool_stats == {
        "search": {
            "call_count": 4,
            "success_count": 2,
            "fail_count": 2,
            "total_duration_ms": 11.5,
            "total_prompt_tokens": 3,
            "total_completion_tokens": 4,
        }
    }


def test_record_tool_call_ignores_blank_names() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("", "success")
    tracker.record_tool_call("   ", "success")
    assert tracker.tool_stats == {}


def test_tool_stats_returns_a_copy() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("search", "success")
    stats = tracker.tool_stats
    stats["search"]["call_count"] = 99
    stats["other"] = {}
    assert tracker.tool_stats["search"]["call_count"] == 1
    assert "other" not in tracker.tool_stats


def test_merge_tool_stats_is_additive() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("search", "success", duration_ms=5)
    tracker.merge_tool_stats(
        {
            "search": {"call_count": 2, "success_count": 1, "fail_count": 1, "total_duration_ms": 2.5},
            "fetch": {"call_count": 1, "fail_count": 1},
        }
    )
    tracker.merge_tool_stats({"search": {"call_count": 1, "success_count": 1}})
    stats = tracker.tool_stats
    assert stats["search"]["call_count"] == 4
    assert stats["search"]["success_count"] == 3
    assert stats["search"]["fail_count"] == 1
    assert stats["search"]["total_duration_ms"] == 7.5
    assert stats["fetch"] == {
        "call_count": 1,
        "success_count": 0,
        "fail_count": 1,
        "total_duration_ms": 0.0,
        "total_prompt_tokens": 0,
        "total_completion_tokens": 0,
    }
    assert set(stats["fetch"]) == set(TOOL_STAT_KEYS)


def test_merging_own_stats_doubles_them() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("search", "success", prompt_tokens=3)
    tracker.merge_tool_stats(tracker.tool_stats)
    assert tracker.tool_stats["search"]["call_count"] == 2
    assert tracker.tool_stats["search"]["total_prompt_tokens"] == 6


def test_merge_tool_stats_ignores_junk() -> None:
    tracker = UsageTracker()
    tracker.merge_tool_stats(
        {
            "": {"call_count": 5},
            "bad": "not a mapping",  # type: ignore[dict-item]
            "search": {"call_count": "7", "success_count": True, "fail_count": None, "unknown": 3},
        }
    )
    assert set(tracker.tool_stats) == {"search"}
    assert tracker.tool_stats["search"]["call_count"] == 0
    assert tracker.tool_stats["search"]["success_count"] == 0


def test_format_tool_stats_text_sorts_by_calls() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("fetch", "success")
    for status in ("success", "success", "error"):
        tracker.record_tool_call("search", status)
    tracker.record_tool_call("alpha", "failed")
    assert tracker.format_tool_stats_text() == (
        "**Tool Usage Statistics (this session):**\n"
        "- Tool 'search': 3 calls, 67% success (2 ok, 1 fail)\n"
        "- Tool 'alpha': 1 calls, 0% success (0 ok, 1 fail)\n"
        "- Tool 'fetch': 1 calls, 100% success (1 ok, 0 fail)"
    )


def test_format_tool_stats_text_is_empty_without_tools() -> None:
    tracker = UsageTracker()
    tracker.record_llm(1, 1)
    assert tracker.format_tool_stats_text() == ""


def test_format_tool_stats_text_survives_zero_call_merged_tool() -> None:
    tracker = UsageTracker()
    tracker.merge_tool_stats({"idle": {}})
    assert tracker.format_tool_stats_text().endswith("- Tool 'idle': 0 calls, 0% success (0 ok, 0 fail)")


def test_deepcopy_copies_counters_and_is_independent() -> None:
    tracker = UsageTracker()
    tracker.record_llm(2, 3)
    tracker.record_tool_call("search", "success")
    clone = copy.deepcopy(tracker)
    clone.record_llm(1, 1)
    clone.record_tool_call("search", "success")
    assert tracker.to_dict()["total_tokens"] == 5
    assert clone.to_dict()["total_tokens"] == 7
    assert tracker.tool_stats["search"]["call_count"] == 1
    assert clone.tool_stats["search"]["call_count"] == 2
