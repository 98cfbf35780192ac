"""SessionState, the runtime->durable sync (M10) and the durable->runtime bridge (M7, SEED_SPEC 1.6-1.7)."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ogmem_memory.errors import InvalidInputError, InvalidSessionIdError
from ogmem_memory.models import SessionWindowState
from ogmem_memory.state import (
    STATE_PAYLOAD_VERSION,
    Commitment,
    SessionState,
    TaskState,
    apply_session_state_bridge,
    sync_runtime_to_durable,
)

# The real window state: the sync and the bridge must work on what the manager holds.
Window = SessionWindowState


def triples(state: SessionState, sid: str = "s") -> list[tuple[str, str, str]]:
    return [(c.content, c.status, c.kind) for c in state.get_commitments(sid, status=None)]


# --- TaskState / Commitment ---------------------------------------------------------------------


def test_task_state_defaults_and_blockers_are_stored_as_a_tuple() -> None:
    task = TaskState()
    assert (task.objective, task.current_stage, task.next_step, task.blockers) == (None, None, None, ())
    assert task.is_empty()
    listed = TaskState(blockers=["a", "b"])  # type: ignore[arg-type]
    assert listed.blockers == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.objective = "x"  # type: ignore[misc]


def test_commitment_defaults() -> None:
    c = Commitment("send the report")
    assert (c.status, c.kind, c.resolved_at) == ("open", "commitment", None)
    assert datetime.fromisoformat(c.created_at).utcoffset() is not None


def test_commitment_rejects_unknown_status() -> None:
    with pytest.raises(InvalidInputError):
        Commitment("x", status="done")


# --- SessionState -------------------------------------------------------------------------------


def test_get_task_state_is_never_none_and_reading_creates_no_state() -> None:
    state = SessionState()
    assert state.get_task_state("unknown") == TaskState()
    assert not state.has_state("unknown")


def test_update_task_state_overwrites_only_non_none_scalars() -> None:
    state = SessionState()
    state.update_task_state("s", TaskState(objective="ship v1", current_stage="design", next_step="write"))
    result = state.update_task_state("s", TaskState(current_stage="build"))
    assert result == TaskState(objective="ship v1", current_stage="build", next_step="write")
    assert state.get_task_state("s") == result
    state.update_task_state("s", TaskState(next_step=""))
    assert state.get_task_state("s").next_step == ""
    assert state.get_task_state("s").objective == "ship v1"


def test_update_task_state_replaces_blockers_only_when_non_empty() -> None:
    state = SessionState()
    state.update_task_state("s", TaskState(blockers=("no key",)))
    state.update_task_state("s", TaskState(objective="x"))
    assert state.get_task_state("s").blockers == ("no key",)
    state.update_task_state("s", TaskState(blockers=("quota", "timeouts")))
    assert state.get_task_state("s").blockers == ("quota", "timeouts")


def test_get_commitments_filters_by_status() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("a"))
    state.add_commitment("s", Commitment("b", status="fulfilled", kind="decision"))
    state.add_commitment("s", Commitment("c", status="expired"))
    assert [c.content for c in state.get_commitments("s")] == ["a"]
    assert [c.content for c in state.get_commitments("s", status="fulfilled")] == ["b"]
    assert [c.content for c in state.get_commitments("s", status=None)] == ["a", "b", "c"]
    assert state.get_commitments("unknown", status=None) == []


def test_get_commitments_returns_a_copy() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("a"))
    state.get_commitments("s", status=None).clear()
    assert len(state.get_commitments("s")) == 1


def test_resolve_commitment_fulfils_open_substring_matches() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("send the weekly report"))
    state.add_commitment("s", Commitment("review the report draft", kind="loop"))
    state.add_commitment("s", Commitment("book a room"))
    state.add_commitment("s", Commitment("old report", status="expired"))
    state.add_commitment("other", Commitment("send the weekly report"))
    assert state.resolve_commitment("s", " report ") == 2
    fulfilled = state.get_commitments("s", status="fulfilled")
    assert [c.content for c in fulfilled] == ["send the weekly report", "review the report draft"]
    assert all(
        c.resolved_at and datetime.fromisoformat(c.resolved_at).utcoffset() is not None for c in fulfilled
    )
    assert [c.content for c in state.get_commitments("s")] == ["book a room"]
    assert state.get_commitments("s", status="expired")[0].resolved_at is None
    assert len(state.get_commitments("other")) == 1
    assert state.resolve_commitment("s", "report") == 0  # already fulfilled ones stay as they are


def test_resolve_commitment_is_case_sensitive_and_blank_resolves_nothing() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("Send report"))
    assert state.resolve_commitment("s", "send") == 0
    assert state.resolve_commitment("s", "   ") == 0
    assert state.resolve_commitment("unknown", "x") == 0
    assert len(state.get_commitments("s")) == 1


def test_get_open_loops_returns_open_commitments_of_every_kind() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("a", kind="loop"))
    state.add_commitment("s", Commitment("b"))
    state.add_commitment("s", Commitment("c", status="fulfilled", kind="loop"))
    assert [c.content for c in state.get_open_loops("s")] == ["a", "b"]


def test_has_state_and_clear_session() -> None:
    state = SessionState()
    state.update_task_state("t", TaskState(next_step="go"))
    state.add_commitment("c", Commitment("x", status="fulfilled"))
    state.update_task_state("blank", TaskState(objective=""))
    assert state.has_state("t")
    assert state.has_state("c")
    assert not state.has_state("blank")
    state.clear_session("t")
    state.clear_session("c")
    state.clear_session("never")
    assert not state.has_state("t")
    assert not state.has_state("c")
    assert state.get_commitments("c", status=None) == []


def test_state_uri() -> None:
    assert SessionState.state_uri("acme", "s-1") == "ctx://acme/sessions/s-1/state"
    assert SessionState().state_uri("acme", "s-1") == "ctx://acme/sessions/s-1/state"


def test_state_uri_encodes_ids_so_they_stay_one_segment() -> None:
    # Weakness 22: unsanitised ids in URIs.
    assert SessionState.state_uri("acme", "../x") == "ctx://acme/sessions/..%2Fx/state"
    assert SessionState.state_uri("acme", "..") == "ctx://acme/sessions/%2E%2E/state"
    assert SessionState.state_uri("a/b", "s") == "ctx://a%2Fb/sessions/s/state"
    assert SessionState.state_uri("acme", "a b?#") == "ctx://acme/sessions/a%20b%3F%23/state"
    with pytest.raises(InvalidSessionIdError):
        SessionState.state_uri("acme", "")
    with pytest.raises(InvalidInputError):
        SessionState.state_uri("", "s")


def test_to_dict_is_json_and_round_trips_through_load_payload() -> None:
    state = SessionState()
    state.update_task_state("s", TaskState(objective="ship", current_stage="qa", blockers=("flaky ci",)))
    state.add_commitment("s", Commitment("write docs", kind="loop"))
    state.add_commitment("s", Commitment("use sqlite", status="fulfilled", kind="decision"))
    state.resolve_commitment("s", "docs")
    window = Window(active_task="ship", open_loops=["write docs"])
    payload = state.to_dict(
        "s",
        session_meta={"session_id": "s", "commit_count": 2},
        window_state=window,
        extraction_summary="sum",
    )
    assert set(payload) == {
        "version",
        "session_id",
        "task_state",
        "commitments",
        "session_meta",
        "window_state",
        "extraction_summary",
        "updated_at",
    }
    assert payload["version"] == STATE_PAYLOAD_VERSION
    assert payload["window_state"] == dataclasses.asdict(window)
    assert payload["session_meta"] == {"session_id": "s", "commit_count": 2}
    assert datetime.fromisoformat(payload["updated_at"]).utcoffset() is not None

    decoded = json.loads(json.dumps(payload, ensure_ascii=False))
    restored = SessionState()
    assert restored.load_payload("s", decoded)
    assert restored.get_task_state("s") == state.get_task_state("s")
    assert restored.get_commitments("s", status=None) == state.get_commitments("s", status=None)
    assert restored.to_dict("s")["commitments"] == payload["commitments"]


def test_to_dict_of_unknown_session_and_no_runtime_parts() -> None:
    payload = SessionState().to_dict("s")
    assert payload["task_state"] == {
        "objective": None,
        "current_stage": None,
        "next_step": None,
        "blockers": [],
    }
    assert payload["commitments"] == []
    assert (payload["session_meta"], payload["window_state"], payload["extraction_summary"]) == (
        None,
        None,
        None,
    )
    json.dumps(payload)


def test_to_dict_makes_odd_values_json_safe() -> None:
    class Meta:
        def __init__(self) -> None:
            self.session_id = "s"
            self.tags = ("a", "b")
            self.when = datetime(2024, 1, 1)
            self._private = object()

    payload = SessionState().to_dict("s", session_meta=Meta())
    assert payload["session_meta"] == {"session_id": "s", "tags": ["a", "b"], "when": "2024-01-01 00:00:00"}
    json.dumps(payload)


def test_load_payload_rejects_missing_or_foreign_payloads() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("keep"))
    assert not state.load_payload("s", None)
    assert not state.load_payload("s", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert not state.load_payload("s", {"version": 1})
    other = SessionState().to_dict("other")
    assert not state.load_payload("s", other)
    assert [c.content for c in state.get_commitments("s")] == ["keep"]


def test_load_payload_replaces_only_valid_parts_and_skips_bad_commitments() -> None:
    state = SessionState()
    state.update_task_state("s", TaskState(objective="old"))
    state.add_commitment("s", Commitment("old"))
    assert state.load_payload(
        "s", {"task_state": {"objective": "new", "next_step": 3, "blockers": ["b", 1, " "]}}
    )
    assert state.get_task_state("s") == TaskState(objective="new", blockers=("b",))
    assert [c.content for c in state.get_commitments("s")] == ["old"]

    assert state.load_payload(
        "s",
        {
            "task_state": "garbage",
            "commitments": [
                {"content": " kept ", "kind": "loop", "resolved_at": 5},
                {"content": "", "status": "open"},
                {"content": "bad status", "status": "done"},
                "not a mapping",
                {"content": "fulfilled", "status": "fulfilled", "created_at": "2024-01-01T00:00:00+00:00"},
            ],
        },
    )
    assert state.get_task_state("s").objective == "new"
    loaded = state.get_commitments("s", status=None)
    assert [(c.content, c.status, c.kind) for c in loaded] == [
        ("kept", "open", "loop"),
        ("fulfilled", "fulfilled", "commitment"),
    ]
    assert loaded[0].resolved_at is None
    assert loaded[1].created_at == "2024-01-01T00:00:00+00:00"


def test_load_payload_with_empty_commitments_clears_them() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("old"))
    assert state.load_payload("s", {"session_id": "s", "commitments": []})
    assert not state.has_state("s")


# --- M10: runtime -> durable --------------------------------------------------------------------


def test_m10_runtime_to_durable_sync_fills_empty_objective_and_blockers() -> None:
    state = SessionState()
    sync_runtime_to_durable(
        state, "s", Window(active_task=" migrate db ", uncertainties=["which host?", " "])
    )
    assert state.get_task_state("s") == TaskState(objective="migrate db", blockers=("which host?",))


def test_m10_runtime_to_durable_sync_keeps_existing_objective_and_blockers() -> None:
    state = SessionState()
    state.update_task_state("s", TaskState(objective="original", blockers=("known",)))
    sync_runtime_to_durable(state, "s", Window(active_task="newer", uncertainties=["other"]))
    assert state.get_task_state("s") == TaskState(objective="original", blockers=("known",))


def test_m10_runtime_to_durable_sync_without_runtime_task_writes_nothing() -> None:
    state = SessionState()
    sync_runtime_to_durable(state, "s", Window(active_task="   "))
    assert not state.has_state("s")


def test_m10_runtime_to_durable_sync_appends_commitments_by_kind() -> None:
    state = SessionState()
    window = Window(
        open_loops=["reply to bob"], confirmed_constraints=["no cloud"], recent_decisions=["use pg"]
    )
    sync_runtime_to_durable(state, "s", window)
    assert triples(state) == [
        ("reply to bob", "open", "loop"),
        ("no cloud", "fulfilled", "constraint"),
        ("use pg", "fulfilled", "decision"),
    ]


def test_m10_runtime_to_durable_sync_dedups() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("use pg", status="fulfilled", kind="decision"))
    window = Window(
        open_loops=["a", " a ", "", "   ", "b"],
        recent_decisions=["use pg", "use pg "],
        confirmed_constraints=["a"],  # same text, other kind: not a duplicate
    )
    sync_runtime_to_durable(state, "s", window)
    sync_runtime_to_durable(state, "s", window)
    assert triples(state) == [
        ("use pg", "fulfilled", "decision"),
        ("a", "open", "loop"),
        ("b", "open", "loop"),
        ("a", "fulfilled", "constraint"),
    ]


def test_m10_runtime_to_durable_sync_never_resolves_or_removes() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("keep me open"))
    state.add_commitment("s", Commitment("done", status="fulfilled", kind="loop"))
    sync_runtime_to_durable(state, "s", Window(open_loops=["done"]))
    assert triples(state) == [
        ("keep me open", "open", "commitment"),
        ("done", "fulfilled", "loop"),
        ("done", "open", "loop"),
    ]


def test_m10_concurrent_syncs_add_each_commitment_once() -> None:
    state = SessionState()
    window = Window(open_loops=[f"loop {i}" for i in range(50)], recent_decisions=["d"])
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(20):
            sync_runtime_to_durable(state, "s", window)

    threads = [threading.Thread(target=work) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked check-then-add would race
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(triples(state)) == 51


# --- M7: durable -> runtime bridge --------------------------------------------------------------


def durable_state() -> SessionState:
    state = SessionState()
    state.update_task_state("s", TaskState(objective="ship v1", current_stage="qa", blockers=("flaky ci",)))
    state.add_commitment("s", Commitment("write docs", kind="loop"))
    state.add_commitment("s", Commitment("call bob"))
    state.add_commitment("s", Commitment("done loop", status="fulfilled", kind="loop"))
    state.add_commitment("s", Commitment("no cloud", status="fulfilled", kind="constraint"))
    state.add_commitment("s", Commitment("use pg", status="fulfilled", kind="decision"))
    state.add_commitment("s", Commitment("old decision", status="expired", kind="decision"))
    return state


def test_m7_bridge_force_projects_durable_state_into_the_window() -> None:
    window = Window(session_state_sync_turn_count=3)
    assert apply_session_state_bridge(window, durable_state(), "s", turn_count=4, force=True)
    assert window.active_task == "ship v1"
    assert window.open_loops == ["write docs", "call bob"]
    assert window.confirmed_constraints == ["no cloud"]
    assert window.recent_decisions == ["use pg"]
    assert window.uncertainties == ["flaky ci"]
    assert window.session_state_sync_turn_count == 4


def test_m7_bridge_uses_current_stage_when_there_is_no_objective() -> None:
    state = SessionState()
    state.update_task_state("s", TaskState(current_stage="reviewing"))
    window = Window()
    assert apply_session_state_bridge(window, state, "s", turn_count=0, force=True)
    assert window.active_task == "reviewing"


def test_m7_bridge_keeps_a_runtime_active_task() -> None:
    window = Window(active_task="runtime task")
    apply_session_state_bridge(window, durable_state(), "s", turn_count=0, force=True)
    assert window.active_task == "runtime task"


def test_m7_bridge_is_throttled_by_the_sync_interval() -> None:
    state = durable_state()
    window = Window(session_state_sync_turn_count=10)
    assert not apply_session_state_bridge(window, state, "s", turn_count=14)
    assert window == Window(session_state_sync_turn_count=10)
    assert apply_session_state_bridge(window, state, "s", turn_count=15)
    assert window.session_state_sync_turn_count == 15
    assert window.open_loops == ["write docs", "call bob"]
    assert not apply_session_state_bridge(window, state, "s", turn_count=19, sync_interval=5)
    assert window.session_state_sync_turn_count == 15


def test_m7_bridge_runs_when_turn_count_fell_below_the_marker() -> None:
    window = Window(session_state_sync_turn_count=30)
    assert apply_session_state_bridge(window, durable_state(), "s", turn_count=2)
    assert window.session_state_sync_turn_count == 2


def test_m7_bridge_is_idempotent() -> None:
    state = durable_state()
    window = Window(open_loops=["runtime loop"], recent_decisions=["use pg "])
    assert apply_session_state_bridge(window, state, "s", turn_count=7, force=True)
    before = dataclasses.replace(window)
    assert not apply_session_state_bridge(window, state, "s", turn_count=7, force=True)
    assert window == before
    assert window.recent_decisions == ["use pg"]


def test_m7_bridge_merges_runtime_first_and_dedups_trimmed() -> None:
    state = durable_state()
    window = Window(
        open_loops=[" call  bob", "runtime loop", "runtime loop", ""], uncertainties=["flaky ci "]
    )
    apply_session_state_bridge(window, state, "s", turn_count=0, force=True)
    assert window.open_loops == ["call  bob", "runtime loop", "write docs"]
    assert window.uncertainties == ["flaky ci"]


def test_m7_bridge_caps_lists_keeping_runtime_entries_and_newest_durable() -> None:
    state = SessionState()
    for i in range(6):
        state.add_commitment("s", Commitment(f"durable {i}", kind="loop"))
    window = Window(open_loops=["r1", "r2"])
    apply_session_state_bridge(window, state, "s", turn_count=0, force=True, max_items=4)
    assert window.open_loops == ["r1", "r2", "durable 4", "durable 5"]

    crowded = Window(recent_decisions=[f"r{i}" for i in range(10)])
    apply_session_state_bridge(crowded, state, "s", turn_count=0, force=True, max_items=3)
    assert crowded.recent_decisions == ["r7", "r8", "r9"]


def test_m7_bridge_drops_open_loops_the_durable_state_resolved() -> None:
    state = SessionState()
    state.add_commitment("s", Commitment("reply to bob", kind="loop"))
    window = Window(open_loops=["reply to bob", "other"])
    state.resolve_commitment("s", "bob")
    assert apply_session_state_bridge(window, state, "s", turn_count=0, force=True)
    assert window.open_loops == ["other"]
    # ... so the next save does not re-open it.
    sync_runtime_to_durable(state, "s", window)
    assert [c.content for c in state.get_open_loops("s")] == ["other"]


def test_m7_bridge_tolerates_missing_state_and_junk_runtime_values() -> None:
    window = Window(session_state_sync_turn_count="7")  # type: ignore[arg-type]
    window.open_loops = None  # type: ignore[assignment]
    window.uncertainties = ["ok", 3, None]  # type: ignore[list-item]
    assert apply_session_state_bridge(window, SessionState(), "unknown", turn_count=8, force=True)
    assert window.open_loops == []
    assert window.uncertainties == ["ok"]
    assert window.active_task == ""
    assert not apply_session_state_bridge(window, SessionState(), "unknown", turn_count=8, force=True)


def test_m7_bridge_rejects_max_items_below_one() -> None:
    with pytest.raises(InvalidInputError):
        apply_session_state_bridge(Window(), SessionState(), "s", turn_count=0, force=True, max_items=0)


texts = st.lists(st.text(alphabet="ab \t", max_size=4), max_size=12)


@given(runtime=texts, durable=texts, blockers=texts, cap=st.integers(min_value=1, max_value=6))
def test_m7_bridge_property_capped_deduped_idempotent(
    runtime: list[str], durable: list[str], blockers: list[str], cap: int
) -> None:
    state = SessionState()
    state.update_task_state("s", TaskState(blockers=tuple(blockers)))
    for text in durable:
        if text.strip():
            state.add_commitment("s", Commitment(text.strip(), kind="decision"))
    window = Window(recent_decisions=list(runtime), uncertainties=list(runtime))
    apply_session_state_bridge(window, state, "s", turn_count=1, force=True, max_items=cap)
    for values in (window.recent_decisions, window.uncertainties):
        keys = [" ".join(v.split()) for v in values]
        assert len(values) <= cap
        assert all(keys) and len(set(keys)) == len(keys)
    before = dataclasses.replace(window)
    assert not apply_session_state_bridge(window, state, "s", turn_count=1, force=True, max_items=cap)
    assert window == before
