"""Seed checklist B1-B20: ``SessionBuffer`` (SEED_SPEC section 2.1).

Where the seed had a weakness (SEED_SPEC section 3) the test asserts the better
behaviour and its docstring names the weakness.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest

from ogmem_memory.buffer import SessionBuffer
from ogmem_memory.models import SessionMeta, SessionWindowState


def make_buffer(sid: str = "s1") -> SessionBuffer:
    return SessionBuffer(session_id=sid, meta=SessionMeta(session_id=sid))


def fill(buf: SessionBuffer, *items: tuple[str, str]) -> list[str]:
    return [buf.add(role, content).id for role, content in items]


# ---------------------------------------------------------------- B1-B3


def test_b1_new_buffer_is_empty() -> None:
    buf = make_buffer()
    assert buf.messages == []
    assert buf.turn_count == 0
    assert buf.commit_in_progress is False
    assert buf.extraction_watermark == 0
    assert buf.extraction_summary == ""
    assert buf.compaction_prepare_token == ""
    assert buf.compaction_prepare_archive_id == ""
    assert buf.compaction_prepare_message_count == 0
    assert buf.compaction_prepare_watermark == 0
    assert buf.compaction_prepare_token_created_at == ""
    assert buf.extraction_in_progress is False
    assert buf.extraction_done_event is None
    assert buf.extraction_active_count == 0
    assert buf.window_state == SessionWindowState()
    assert buf.usage_stats.tool_stats == {}
    assert buf.pending_tokens == 0
    assert buf.meta.session_id == "s1"


def test_b1_buffers_do_not_share_mutable_state() -> None:
    a, b = make_buffer("a"), make_buffer("b")
    a.add("user", "please help")
    a.window_state.open_loops.append("x")
    a.usage_stats.record_tool_call("grep", "completed")
    assert b.messages == [] and b.window_state.open_loops == [] and b.usage_stats.tool_stats == {}


def test_b2_pending_tokens_is_the_sum_of_message_tokens() -> None:
    """Weakness 17: CJK-aware estimate, and an empty message costs 0 tokens (the seed counted 1)."""
    buf = make_buffer()
    assert buf.pending_tokens == 0
    buf.add("user", "")
    assert buf.messages[0].estimated_tokens == 0
    assert buf.pending_tokens == 0
    buf.add("user", "abcdefgh")  # 8 ASCII chars -> 2 tokens
    buf.add("assistant", "你好")  # 2 CJK chars -> 1.5 each -> 3 tokens
    assert [m.estimated_tokens for m in buf.messages] == [0, 2, 3]
    assert buf.pending_tokens == 5
    assert buf.pending_tokens == sum(m.estimated_tokens for m in buf.messages)


def test_b2_pending_tokens_cache_follows_every_mutation() -> None:
    buf = make_buffer()
    ids = fill(buf, ("user", "a" * 40), ("assistant", "b" * 80), ("user", "c" * 4))
    assert buf.pending_tokens == 10 + 20 + 1
    buf.remove_messages_by_id({ids[1]})
    assert buf.pending_tokens == 11
    state = buf.capture_rollback_state()
    buf.snapshot_and_clear()
    assert buf.pending_tokens == 0
    buf.restore_rollback_state(state)
    assert buf.pending_tokens == 11


def test_b3_tool_usage_stats_reads_the_tracker_and_assignment_merges() -> None:
    buf = make_buffer()
    buf.usage_stats.record_tool_call("search", "completed", duration_ms=5)
    stats = buf.tool_usage_stats
    assert stats == buf.usage_stats.tool_stats
    assert stats["search"]["call_count"] == 1
    buf.tool_usage_stats = {"search": {"call_count": 2, "success_count": 1, "fail_count": 1}, "new": {}}
    after = buf.tool_usage_stats
    assert after["search"]["call_count"] == 3  # merged additively, not replaced
    assert after["search"]["fail_count"] == 1
    assert after["new"]["call_count"] == 0


# ---------------------------------------------------------------- B4-B9


def test_b4_add_assigns_unique_msg_ids_and_appends() -> None:
    buf = make_buffer()
    msgs = [buf.add("user", f"m{i}") for i in range(50)]
    assert all(re.fullmatch(r"msg_[0-9a-f]{12}", m.id) for m in msgs)
    assert len({m.id for m in msgs}) == 50
    assert buf.messages == msgs
    assert msgs[0].role == "user" and msgs[0].content == "m0"


def test_b5_created_at_override_is_kept_and_timestamps_are_aware() -> None:
    """Weakness 9: every timestamp is tz-aware UTC (a naive override is read as UTC)."""
    buf = make_buffer()
    before = datetime.now(UTC)
    default = buf.add("user", "now")
    assert default.created_at.tzinfo is not None
    assert before <= default.created_at <= datetime.now(UTC)
    explicit = buf.add("user", "then", created_at="2024-01-02T03:04:05+00:00")
    assert explicit.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    zulu = buf.add("user", "zulu", created_at="2024-01-02T03:04:05Z")
    assert zulu.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    naive = buf.add("user", "naive", created_at="2024-01-02T03:04:05")
    assert naive.created_at.utcoffset() is not None
    empty = buf.add("user", "empty override", created_at="")
    assert empty.created_at.tzinfo is not None and empty.created_at >= before


def test_b6_only_user_messages_count_turns() -> None:
    buf = make_buffer()
    fill(buf, ("system", "s"), ("user", "u1"), ("assistant", "a"), ("tool", "t"), ("user", "u2"))
    assert buf.turn_count == 2


def test_b7_active_task_heuristic_matches_whole_words() -> None:
    """Weakness 12: cue words match as whole words; "helpful"/"wanted" no longer set a task."""
    buf = make_buffer()
    buf.add("user", "That was helpful, I wanted that")
    assert buf.window_state.active_task == ""
    buf.add("user", "   Please summarise the report   ")
    assert buf.window_state.active_task == "Please summarise the report"
    buf.add("user", "CAN YOU translate it?")  # case-insensitive, later match overwrites
    assert buf.window_state.active_task == "CAN YOU translate it?"
    buf.add("user", "   ")
    buf.add("user", "thanks")
    buf.add("assistant", "I need nothing, please wait")
    buf.add("system", "could you behave")
    assert buf.window_state.active_task == "CAN YOU translate it?"
    for cue in ("help", "need", "want", "please", "could you"):
        buf.add("user", f"x {cue} y")
        assert buf.window_state.active_task == f"x {cue} y"


def test_b7_active_task_is_the_first_200_stripped_characters() -> None:
    buf = make_buffer()
    long = "  I need " + "x" * 500
    buf.add("user", long)
    assert buf.window_state.active_task == long.strip()[:200]
    assert len(buf.window_state.active_task) == 200


def test_b8_add_updates_meta_count_and_updated_at() -> None:
    buf = make_buffer()
    assert buf.meta.updated_at == ""
    buf.add("user", "one")
    first = buf.meta.updated_at
    assert buf.meta.message_count == 1
    assert datetime.fromisoformat(first).tzinfo is not None
    buf.add("assistant", "two")
    assert buf.meta.message_count == 2
    assert buf.meta.updated_at >= first


def test_b9_should_compress_thresholds_are_inclusive() -> None:
    buf = make_buffer()
    assert buf.should_compress() is False
    fill(buf, ("user", "a" * 8), ("user", "b" * 8))  # 2 turns, 4 tokens
    assert buf.should_compress(turn_threshold=2, token_threshold=100) is True
    assert buf.should_compress(turn_threshold=3, token_threshold=100) is False
    assert buf.should_compress(turn_threshold=3, token_threshold=4) is True
    assert buf.should_compress(turn_threshold=3, token_threshold=5) is False
    buf.window_state.turn_count_at_last_compress = 1
    buf.window_state.token_count_at_last_compress = 2
    assert buf.should_compress(turn_threshold=1, token_threshold=100) is True
    assert buf.should_compress(turn_threshold=2, token_threshold=2) is True
    assert buf.should_compress(turn_threshold=2, token_threshold=3) is False


# ---------------------------------------------------------------- B10-B12


def test_b10_snapshot_and_clear() -> None:
    """Weakness 9: the snapshot keeps ``last_accessed_at`` (the seed reset it)."""
    buf = make_buffer()
    fill(buf, ("user", "please do a"), ("assistant", "b"), ("user", "c"))
    buf.window_state.open_loops = ["loop"]
    buf.window_state.last_accessed_at = "2024-05-01T00:00:00+00:00"
    buf.extraction_watermark = 2
    buf.extraction_summary = "summary"
    buf.compaction_prepare_token = "tok"
    buf.compaction_prepare_archive_id = "arch"
    buf.compaction_prepare_message_count = 3
    buf.compaction_prepare_watermark = 2
    buf.compaction_prepare_token_created_at = "2024-05-01T00:00:00+00:00"
    buf.usage_stats.record_tool_call("t", "completed")
    buf.meta.commit_count = 4
    buf.meta.last_commit_at = "2024-04-01T00:00:00+00:00"
    buf.extraction_in_progress = True
    before = list(buf.messages)

    snap = buf.snapshot_and_clear()

    assert snap == before and snap is not buf.messages
    assert [m.content for m in snap] == ["please do a", "b", "c"]
    assert buf.messages == [] and buf.turn_count == 0 and buf.pending_tokens == 0
    assert buf.window_state.open_loops == [] and buf.window_state.active_task == ""
    assert buf.window_state.last_accessed_at == "2024-05-01T00:00:00+00:00"
    assert buf.meta.message_count == 0 and buf.meta.updated_at
    assert buf.extraction_watermark == 0
    assert buf.extraction_summary == "summary"
    assert buf.prepare_token_fields() == {
        "compaction_prepare_token": "",
        "compaction_prepare_archive_id": "",
        "compaction_prepare_message_count": 0,
        "compaction_prepare_watermark": 0,
        "compaction_prepare_token_created_at": "",
    }
    assert buf.usage_stats.tool_stats["t"]["call_count"] == 1
    assert buf.meta.commit_count == 4 and buf.meta.last_commit_at == "2024-04-01T00:00:00+00:00"
    assert buf.extraction_in_progress is True
    buf.add("user", "later")
    assert len(snap) == 3  # independent of the buffer


def test_b11_capture_rollback_state_is_independent() -> None:
    buf = make_buffer()
    fill(buf, ("user", "a"), ("assistant", "b"))
    buf.window_state.open_loops = ["loop"]
    buf.extraction_watermark = 1
    buf.extraction_summary = "sum"
    buf.compaction_prepare_token = "tok"
    buf.compaction_prepare_message_count = 2
    state = buf.capture_rollback_state()
    updated = buf.meta.updated_at

    buf.add("user", "c")
    buf.window_state.open_loops.append("other")
    buf.extraction_watermark = 0
    buf.compaction_prepare_token = ""

    assert [m.content for m in state["messages"]] == ["a", "b"]
    assert state["turn_count"] == 1
    assert state["window_state"].open_loops == ["loop"]
    assert state["meta_message_count"] == 2
    assert state["meta_updated_at"] == updated
    assert state["extraction_watermark"] == 1
    assert state["extraction_summary"] == "sum"
    assert state["compaction_prepare_token"] == "tok"
    assert state["compaction_prepare_message_count"] == 2
    for key in (
        "compaction_prepare_archive_id",
        "compaction_prepare_watermark",
        "compaction_prepare_token_created_at",
    ):
        assert key in state


def test_b12_restore_rollback_state_puts_originals_first() -> None:
    buf = make_buffer()
    fill(buf, ("user", "a"), ("user", "b"))
    buf.window_state.active_task = "task"
    buf.extraction_watermark = 2
    buf.extraction_summary = "sum"
    buf.compaction_prepare_token = "tok"
    buf.compaction_prepare_watermark = 2
    state = buf.capture_rollback_state()
    captured_updated = state["meta_updated_at"]
    buf.snapshot_and_clear()
    buf.extraction_summary = "changed"
    buf.add("user", "c-during")
    buf.add("assistant", "d-during")

    buf.restore_rollback_state(state)

    assert [m.content for m in buf.messages] == ["a", "b", "c-during", "d-during"]
    assert buf.turn_count == 3
    assert buf.window_state.active_task == "task"
    assert buf.meta.message_count == 4
    assert buf.meta.updated_at == captured_updated
    assert buf.extraction_watermark == 2
    assert buf.extraction_summary == "sum"
    assert buf.compaction_prepare_token == "tok"
    assert buf.compaction_prepare_watermark == 2
    assert buf.pending_tokens == sum(m.tokens for m in buf.messages)


def test_b12_restore_does_not_duplicate_and_clamps_watermark() -> None:
    buf = make_buffer()
    fill(buf, ("user", "a"), ("user", "b"))
    state = buf.capture_rollback_state()
    state["extraction_watermark"] = 10
    state["window_state"] = None
    state["compaction_prepare_message_count"] = None
    state["compaction_prepare_watermark"] = ""
    buf.restore_rollback_state(state)  # nothing was cleared: no duplicates
    assert [m.content for m in buf.messages] == ["a", "b"]
    assert buf.extraction_watermark == 2
    assert buf.window_state == SessionWindowState()
    assert buf.compaction_prepare_message_count == 0
    assert buf.compaction_prepare_watermark == 0


# ---------------------------------------------------------------- B13-B15


def test_b13_begin_extraction_shares_one_event_while_running() -> None:
    buf = make_buffer()
    first = buf.begin_extraction()
    assert buf.extraction_in_progress is True and buf.extraction_active_count == 1
    assert buf.extraction_done_event is first and not first.is_set()
    second = buf.begin_extraction()
    assert second is first and buf.extraction_active_count == 2
    buf.end_extraction()
    buf.end_extraction()
    assert first.is_set()
    third = buf.begin_extraction()
    assert third is not first and not third.is_set()
    buf.end_extraction()


def test_b13_begin_extraction_replaces_a_set_event() -> None:
    buf = make_buffer()
    stale = threading.Event()
    stale.set()
    buf.extraction_done_event = stale
    buf.extraction_in_progress = True
    assert buf.begin_extraction() is not stale


def test_b14_end_extraction_never_goes_below_zero() -> None:
    buf = make_buffer()
    event = buf.begin_extraction()
    buf.begin_extraction()
    buf.end_extraction()
    assert buf.extraction_in_progress is True and not event.is_set()
    buf.end_extraction()
    assert buf.extraction_in_progress is False and event.is_set()
    assert buf.extraction_active_count == 0
    buf.end_extraction()
    buf.end_extraction()
    assert buf.extraction_active_count == 0 and buf.extraction_in_progress is False
    fresh = make_buffer()
    fresh.end_extraction()  # no event yet: harmless
    assert fresh.extraction_active_count == 0 and fresh.extraction_done_event is None


def test_b15_begin_and_end_are_thread_safe() -> None:
    buf = make_buffer()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(500):
            buf.begin_extraction()
            buf.end_extraction()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert buf.extraction_active_count == 0
    assert buf.extraction_in_progress is False
    assert buf.extraction_done_event is not None and buf.extraction_done_event.is_set()


# ---------------------------------------------------------------- B16-B20


def test_b16_remove_nothing() -> None:
    buf = make_buffer()
    fill(buf, ("user", "a"))
    updated = buf.meta.updated_at
    assert buf.remove_messages_by_id(set()) == 0
    assert len(buf.messages) == 1 and buf.meta.updated_at == updated


def test_b17_removes_only_listed_ids_in_order() -> None:
    buf = make_buffer()
    ids = fill(buf, ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    updated = buf.meta.updated_at
    assert buf.remove_messages_by_id({"msg_unknown"}) == 0
    assert buf.meta.updated_at == updated and buf.meta.message_count == 4
    assert buf.remove_messages_by_id({ids[1], ids[2], "msg_unknown"}) == 2
    assert [m.content for m in buf.messages] == ["a", "d"]


def test_b18_watermark_moves_back_by_removed_messages_before_it() -> None:
    buf = make_buffer()
    ids = fill(buf, ("user", "a"), ("user", "b"), ("user", "c"), ("user", "d"), ("user", "e"))
    buf.extraction_watermark = 3
    assert buf.remove_messages_by_id({ids[0], ids[4]}) == 2
    assert buf.extraction_watermark == 2
    buf.extraction_watermark = 99  # clamped to the new length
    assert buf.remove_messages_by_id({ids[3]}) == 1
    assert buf.extraction_watermark == 2 == len(buf.messages)


def test_b19_turns_sync_marker_and_meta_are_refreshed() -> None:
    buf = make_buffer()
    ids = fill(buf, ("user", "a"), ("assistant", "b"), ("user", "c"), ("user", "d"))
    buf.window_state.session_state_sync_turn_count = 3
    buf.meta.updated_at = "2000-01-01T00:00:00+00:00"
    assert buf.remove_messages_by_id({ids[0], ids[2]}) == 2
    assert buf.turn_count == 1
    assert buf.window_state.session_state_sync_turn_count == 1
    assert buf.meta.message_count == 2
    assert buf.meta.updated_at > "2000-01-01T00:00:00+00:00"
    assert buf.pending_tokens == sum(m.tokens for m in buf.messages)


def test_b20_rewind_watermark_to_ids() -> None:
    buf = make_buffer()
    ids = fill(buf, ("user", "a"), ("user", "b"), ("user", "c"), ("user", "d"))
    buf.extraction_watermark = 3
    assert buf.rewind_watermark_to_ids(set()) is False
    assert buf.rewind_watermark_to_ids({"msg_unknown"}) is False
    assert buf.rewind_watermark_to_ids({ids[3]}) is False  # at/after the watermark
    assert buf.extraction_watermark == 3
    buf.meta.updated_at = "2000-01-01T00:00:00+00:00"
    assert buf.rewind_watermark_to_ids({ids[2], ids[1]}) is True  # the first match decides
    assert buf.extraction_watermark == 1
    assert buf.meta.updated_at > "2000-01-01T00:00:00+00:00"
    assert buf.rewind_watermark_to_ids({ids[1]}) is False


@pytest.mark.parametrize("cue", ["helpful", "wanted", "needle", "pleased"])
def test_b7_substrings_of_cue_words_do_not_match(cue: str) -> None:
    """Weakness 12: the seed's substring test matched these."""
    buf = make_buffer()
    buf.add("user", f"this is {cue}")
    assert buf.window_state.active_task == ""
