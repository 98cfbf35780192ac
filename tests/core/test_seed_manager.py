"""Seed checklist M1-M69: ``SessionManager`` (SEED_SPEC section 2.2-2.11).

Where the seed had a weakness (SEED_SPEC section 3) the test asserts the better
behaviour (DESIGN.md) and its docstring names the weakness. M65 (``_extract_memories``)
belongs to the extraction issue (extract.py) and is not tested here.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ogmem_memory.compress.merger import MergedArchive
from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import (
    AccessDeniedError,
    ConcurrencyError,
    ConfigError,
    InvalidInputError,
    StoreError,
)
from ogmem_memory.manager import SessionManager, restore_fields
from ogmem_memory.models import (
    RequestContext,
    SessionMeta,
    SessionWindowState,
)
from ogmem_memory.state import SessionState
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore
from ogmem_memory.testing.fakes import BlockingCompressor, FailingCompressor, ScriptedLLM
from ogmem_memory.topics import ARCHIVE_HISTORY_SLOT, SlotContent

CTX = RequestContext("acct", "alice", "agent1")
BOB = RequestContext("acct", "bob", "agent9")
SID = "session-1"
ARCHIVE_ID = re.compile(r"\d{8}_\d{6}_[0-9a-f]{8}")

# ---------------------------------------------------------------- helpers


class RecordingCompressor:
    """Summarises each batch as ``batch N`` and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], str, str]] = []
        self.threads: list[threading.Thread] = []

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        self.calls.append(([dict(m) for m in messages], prev_overview, prev_abstract))
        self.threads.append(threading.current_thread())
        n = len(self.calls)
        text = ", ".join(str(m["content"]) for m in messages)
        return f"## Facts\n- batch {n}: {text}", f"batch {n}"


def store_class(kind: str) -> type[SessionStore]:
    return InMemoryStore if kind == "memory" else SQLiteStore


def new_store(cls: type[SessionStore], tmp_path: Path) -> SessionStore:
    if issubclass(cls, SQLiteStore):
        return cls(tmp_path / f"{cls.__name__}.db")
    return cls()


def failing_commit_store(kind: str, tmp_path: Path, error: Exception, failures: int = 1) -> SessionStore:
    """A real store whose first ``failures`` archive writes raise ``error``."""

    class FailingCommitStore(store_class(kind)):  # type: ignore[misc,valid-type]
        remaining = failures

        def commit_archive(self, *args: Any, **kwargs: Any) -> Any:
            if self.remaining > 0:
                self.remaining -= 1
                raise error
            return super().commit_archive(*args, **kwargs)

    return new_store(FailingCommitStore, tmp_path)


class CountingStore(InMemoryStore):
    """Counts state loads; ``gate`` (when set) holds every load until released."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_load = False
        self.fail_save = False
        self.on_save: Callable[[], None] | None = None

    def load_state(self, session_id: str, *, epoch: str | None = None) -> dict[str, Any] | None:
        self.loads += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        if self.fail_load:
            raise StoreError("state unreadable")
        return super().load_state(session_id, epoch=epoch)

    def save_state(self, session_id: str, payload: Mapping[str, Any], *, epoch: str | None = None) -> None:
        if self.fail_save:
            raise StoreError("state unwritable")
        if self.on_save is not None:
            hook, self.on_save = self.on_save, None
            hook()
        super().save_state(session_id, payload, epoch=epoch)


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> SessionStore:
    return InMemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "ogmem.db")


Factory = Callable[..., SessionManager]


@pytest.fixture
def make(store: SessionStore) -> Iterator[Factory]:
    """Managers on ``store`` (or a given one), auto-commit off unless asked; all closed afterwards."""
    made: list[SessionManager] = []

    def factory(
        st: SessionStore | None = None,
        *,
        compressor: Any = None,
        llm: Any = None,
        session_state: SessionState | None = None,
        **cfg: Any,
    ) -> SessionManager:
        cfg.setdefault("auto_commit", False)
        manager = SessionManager(
            st if st is not None else store,
            config=MemoryConfig(**cfg),
            compressor=compressor,
            llm=llm,
            session_state=session_state,
        )
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        manager.close()


def add_all(m: SessionManager, *contents: str, sid: str = SID, ctx: RequestContext | None = CTX) -> list[str]:
    """Add alternating user/assistant messages; returns their ids."""
    roles = ("user", "assistant")
    return [m.add_message(sid, roles[i % 2], c, ctx).message_id for i, c in enumerate(contents)]


def contents(messages: Sequence[Any]) -> list[str]:
    return [m.content for m in messages]


def active(m: SessionManager, sid: str = SID) -> list[str]:
    return contents(m.store.list_messages(sid, status="active"))


def aware(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None, text
    return parsed


# ---------------------------------------------------------------- 2.2 construction, loading, persistence


def test_m1_config_defaults_and_validation() -> None:
    cfg = MemoryConfig()
    assert cfg.archive_max_count == 10 and cfg.archive_merge_threshold == 10
    for bad in (
        {"archive_max_count": 0},
        {"archive_max_count": -1},
        {"archive_merge_threshold": 1},
        {"archive_merge_threshold": None},
        {"commit_token_threshold": 0},
        {"keep_recent_messages": -1},
        {"auto_commit": 1},
        {"summary_share": 1.5},
    ):
        with pytest.raises(ConfigError):
            MemoryConfig(**bad)


def test_m1_injected_session_state_is_returned(make: Factory) -> None:
    state = SessionState()
    assert make(session_state=state).get_session_state() is state
    assert isinstance(make().get_session_state(), SessionState)


def test_m1_config_must_be_a_memory_config(store: SessionStore) -> None:
    with pytest.raises(InvalidInputError):
        SessionManager(store, config={"archive_max_count": 10})  # type: ignore[arg-type]


def test_m2_get_or_create_binds_identity_once(make: Factory) -> None:
    m = make()
    buf = m.get_or_create(SID, CTX)
    assert (buf.meta.session_id, buf.meta.account_id, buf.meta.user_id, buf.meta.agent_id) == (
        SID,
        "acct",
        "alice",
        "agent1",
    )
    again = m.get_or_create(SID, RequestContext("acct", "alice", "agent2"))
    assert again is buf and buf.meta.agent_id == "agent1"
    assert m.store.get_session_record(SID).agent_id == "agent1"
    with pytest.raises(AccessDeniedError):
        m.get_or_create(SID, BOB)


def test_m3_without_ctx_nothing_is_bound_or_stored(make: Factory) -> None:
    """Weakness 21: an anonymous read does not create a stored session."""
    m = make()
    buf = m.get_or_create("anon")
    assert (buf.meta.account_id, buf.meta.user_id, buf.meta.agent_id) == ("", "", "")
    assert m.store.get_session_record("anon") is None
    assert m.get_or_create("anon") is buf


def test_m4_state_is_loaded_once_under_concurrent_callers(make: Factory) -> None:
    store = CountingStore()
    writer = make(store)
    add_all(writer, "hello")
    writer.update_window_state(SID, SessionWindowState(active_task="restored task"))
    assert writer.save_session_state(SID, CTX) is True

    reader = make(store)
    store.loads = 0
    store.entered.clear()
    store.gate = threading.Event()
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(reader.get_or_create(SID, CTX))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    assert store.entered.wait(timeout=30)
    assert results == []  # everyone waits for the one load in flight
    store.gate.set()
    for t in threads:
        t.join()
    assert store.loads == 1
    assert len(results) == 4 and all(r is results[0] for r in results)
    assert results[0].window_state.active_task == "restored task"


def test_m5_load_happens_once_per_process_with_negative_cache(make: Factory) -> None:
    """Weakness 10: a session without saved state is not re-read on every call, and an
    evicted (removed) session is loaded again when it returns."""
    store = CountingStore()
    add_all(make(store), "hello")  # bound and stored, but no state saved
    reader = make(store)
    store.loads = 0
    for _ in range(3):
        reader.get_or_create(SID, CTX)
        reader.get_context(SID, 1000, CTX)
    assert store.loads == 1
    reader.remove_session(SID)
    reader.get_or_create(SID, CTX)
    assert store.loads == 2


def test_m6_load_session_state(make: Factory) -> None:
    store = CountingStore()
    m = make(store)
    assert m.load_session_state("unknown", CTX) is False
    add_all(m, "hi")
    assert m.load_session_state(SID, CTX) is False  # bound, nothing saved yet
    m.update_window_state(SID, SessionWindowState(active_task="t1", open_loops=["loop"]))
    assert m.save_session_state(SID, CTX) is True
    m.update_window_state(SID, SessionWindowState())
    assert m.load_session_state(SID, CTX) is True
    ws = m.get_window_state(SID)
    assert ws.active_task == "t1" and ws.open_loops == ["loop"]
    store.fail_load = True
    assert m.load_session_state(SID, CTX) is False


def test_m7_restore_after_restart(make: Factory) -> None:
    """Weakness 11: the restored meta counts the live messages, not a stale snapshot."""
    store = CountingStore()
    first = make(store, compressor=RecordingCompressor())
    add_all(first, "please plan the trip", "ok", "and book it")
    first.commit(SID, CTX, wait=True)
    add_all(first, "next question")
    first.update_window_state(
        SID,
        SessionWindowState(
            active_task="plan the trip", open_loops=["book hotel"], recent_decisions=["go by train"]
        ),
    )
    first.get_or_create(SID, CTX).extraction_summary = "- [create] mem://x"
    assert first.save_session_state(SID, CTX) is True

    second = make(store)
    buf = second.get_or_create(SID, CTX)
    assert buf.meta.session_id == SID
    assert buf.meta.commit_count == 1
    assert buf.window_state.active_task == "plan the trip"
    assert "book hotel" in buf.window_state.open_loops
    assert "go by train" in buf.window_state.recent_decisions
    assert buf.extraction_summary == "- [create] mem://x"
    assert second.get_session_state().get_task_state(SID).objective == "please plan the trip"


def test_m7_restore_loads_the_live_window_before_the_state(make: Factory) -> None:
    """Weakness 11: state is restored against the session's real live window, so the meta
    count, the turn count and the extraction watermark are not clamped to an empty buffer."""
    store = CountingStore()
    first = make(store)
    add_all(first, "one", "two", "three")
    first.get_or_create(SID, CTX).extraction_watermark = 2
    assert first.save_session_state(SID, CTX) is True

    second = make(store)
    buf = second.get_or_create(SID, CTX)
    assert contents(buf.messages) == ["one", "two", "three"]
    assert buf.meta.message_count == 3 and buf.turn_count == 2
    assert buf.extraction_watermark == 2
    second.get_context(SID, 1000, CTX)
    assert buf.extraction_watermark == 2


def test_m8_restore_fields_coerces_by_current_type() -> None:
    meta = SessionMeta(session_id="s")
    restore_fields(
        meta, {"message_count": True, "commit_count": "x", "user_id": None, "agent_id": 7, "unknown_field": 1}
    )
    assert meta.message_count == 1 and meta.commit_count == 0
    assert meta.user_id == "" and meta.agent_id == "7"
    ws = SessionWindowState()
    restore_fields(
        ws, {"open_loops": ("not", "a list"), "recent_decisions": ["d"], "turn_count_at_last_compress": "4"}
    )
    assert ws.open_loops == [] and ws.recent_decisions == ["d"] and ws.turn_count_at_last_compress == 4
    restore_fields(ws, ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert ws.recent_decisions == ["d"]


def test_m9_save_session_state(make: Factory) -> None:
    store = CountingStore()
    m = make(store)
    assert m.save_session_state("never-bound") is False
    add_all(m, "привет 你好 — please help")
    assert m.save_session_state(SID, CTX) is True
    payload = store.load_state(SID)
    assert payload is not None
    for key in (
        "version",
        "session_id",
        "task_state",
        "commitments",
        "session_meta",
        "window_state",
        "extraction_summary",
        "updated_at",
    ):
        assert key in payload
    assert payload["session_id"] == SID
    assert payload["window_state"]["active_task"] == "привет 你好 — please help"
    json.dumps(payload)
    store.fail_save = True
    assert m.save_session_state(SID, CTX) is False


def test_m9_state_round_trips_non_ascii_in_sqlite(make: Factory, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    m = make(SQLiteStore(path))
    add_all(m, "can you 翻译 this?")
    assert m.save_session_state(SID, CTX)
    again = make(SQLiteStore(path))
    assert again.get_or_create(SID, CTX).window_state.active_task == "can you 翻译 this?"


def test_m10_runtime_state_is_synced_to_durable_state(make: Factory) -> None:
    m = make()
    add_all(m, "hi")
    m.update_window_state(
        SID,
        SessionWindowState(
            active_task="  first task ",
            uncertainties=["which city?"],
            open_loops=["book hotel", " ", "book hotel"],
            confirmed_constraints=["budget 500"],
            recent_decisions=["train"],
        ),
    )
    assert m.save_session_state(SID, CTX)
    m.update_window_state(
        SID, SessionWindowState(active_task="second task", uncertainties=["other"], open_loops=["book hotel"])
    )
    assert m.save_session_state(SID, CTX)
    state = m.get_session_state()
    task = state.get_task_state(SID)
    assert task.objective == "first task"  # only filled while empty
    assert list(task.blockers) == ["which city?"]
    got = sorted((c.content, c.status, c.kind) for c in state.get_commitments(SID, status=None))
    assert got == [
        ("book hotel", "open", "loop"),
        ("budget 500", "fulfilled", "constraint"),
        ("train", "fulfilled", "decision"),
    ]


# ---------------------------------------------------------------- 2.3 topic buffers, window state, eviction


def test_m12_topic_buffer_is_created_once(make: Factory) -> None:
    m = make()
    tb = m.get_topic_buffer(SID)
    assert tb is m.get_topic_buffer(SID) and tb.session_id == SID
    assert m.get_topic_buffer("other") is not tb


def test_m13_invalidate_topic_slot(make: Factory) -> None:
    m = make()
    m.invalidate_topic_slot(SID, ARCHIVE_HISTORY_SLOT)  # no buffer: no-op
    tb = m.get_topic_buffer(SID)
    tb.set_cached_slot(ARCHIVE_HISTORY_SLOT, SlotContent("x"))
    tb.set_cached_slot("identity", SlotContent("me"))
    m.invalidate_topic_slot(SID, ARCHIVE_HISTORY_SLOT)
    assert tb.get_cached_slot(ARCHIVE_HISTORY_SLOT) is None
    assert tb.get_cached_slot("identity") is not None


def test_m14_window_state_copy_and_replace(make: Factory) -> None:
    """Weakness 21: ``get_window_state`` returns a copy and does not create a stored session."""
    m = make()
    ws = m.get_window_state("nobody")
    assert ws == SessionWindowState(last_accessed_at=ws.last_accessed_at)
    assert m.store.get_session_record("nobody") is None
    add_all(m, "hi")
    copy = m.get_window_state(SID)
    copy.open_loops.append("mutated")
    assert m.get_window_state(SID).open_loops == []
    new = SessionWindowState(active_task="replaced", open_loops=["a"])
    m.update_window_state(SID, new)
    new.open_loops.append("after")
    got = m.get_window_state(SID)
    assert got.active_task == "replaced" and got.open_loops == ["a"]
    with pytest.raises(InvalidInputError):
        m.update_window_state(SID, {"active_task": "x"})  # type: ignore[arg-type]


def test_m15_working_set_sorted_by_last_access(make: Factory) -> None:
    m = make()
    for sid, when in (("a", "2024-01-01T00:00:00+00:00"), ("b", "2024-03-01T00:00:00+00:00"), ("c", "")):
        m.get_or_create(sid, CTX).window_state.last_accessed_at = when
    add_all(m, "please help me", sid="a")
    m.get_or_create("a").window_state.last_accessed_at = "2024-02-01T00:00:00+00:00"
    rows = m.list_session_working_set()
    assert [r["session_id"] for r in rows] == ["b", "a", "c"]
    row_a = rows[1]
    assert set(row_a) == {"session_id", "last_accessed_at", "message_count", "pending_tokens", "active_task"}
    assert row_a["message_count"] == 1 and row_a["pending_tokens"] > 0
    assert row_a["active_task"] == "please help me"


def test_m16_non_positive_idle_limit_evicts_nothing(make: Factory) -> None:
    m = make()
    m.get_or_create("a", CTX).window_state.last_accessed_at = "2000-01-01T00:00:00+00:00"
    assert m.evict_idle_sessions(0, CTX) == []
    assert m.evict_idle_sessions(-5, CTX) == []
    assert m.has_session("a") and m.store.load_state("a") is None


def _idle(m: SessionManager, sid: str, last: str) -> None:
    m.get_or_create(sid, CTX).window_state.last_accessed_at = last


def test_m17_now_iso_with_z_is_accepted(make: Factory) -> None:
    m = make()
    _idle(m, "a", "2024-01-01T00:00:00+00:00")
    assert m.evict_idle_sessions(60, now_iso="2024-01-01T00:00:30Z") == []
    assert m.evict_idle_sessions(60, now_iso="2024-01-01T00:02:00Z") == ["a"]


def test_m17_now_defaults_to_utc_now(make: Factory) -> None:
    """Weakness 9: ``last_accessed_at`` is maintained, so eviction actually works."""
    m = make()
    m.get_or_create("a", CTX)
    assert m.evict_idle_sessions(3600) == []
    _idle(m, "a", (datetime.now(UTC) - timedelta(hours=2)).isoformat())
    assert m.evict_idle_sessions(3600) == ["a"]


def test_m18_empty_or_unparseable_last_access_is_never_evicted(make: Factory) -> None:
    m = make()
    _idle(m, "empty", "")
    _idle(m, "garbage", "not a time")
    _idle(m, "naive", "2000-01-01T00:00:00")  # weakness 9: naive must not raise TypeError
    evicted = m.evict_idle_sessions(1, now_iso="2024-01-01T00:00:00+00:00")
    assert "empty" not in evicted and "garbage" not in evicted
    assert m.has_session("empty") and m.has_session("garbage")


def test_m19_only_strictly_longer_idle_evicts(make: Factory) -> None:
    m = make()
    _idle(m, "a", "2024-01-01T00:00:00+00:00")
    assert m.evict_idle_sessions(60, now_iso="2024-01-01T00:01:00+00:00") == []
    assert m.evict_idle_sessions(60, now_iso="2024-01-01T00:01:00.000001+00:00") == ["a"]


def test_m20_busy_sessions_are_kept_unextracted_ones_evicted(make: Factory) -> None:
    """Weakness 9: unextracted messages no longer pin a buffer forever; they are durable in the
    store and the extraction watermark is saved with the state before eviction."""
    m = make()
    old, now = "2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00"
    _idle(m, "committing", old)
    m.get_or_create("committing").commit_in_progress = True
    _idle(m, "extracting", old)
    m.get_or_create("extracting").begin_extraction()
    add_all(m, "unextracted", sid="pending")
    _idle(m, "pending", old)
    add_all(m, "extracted", sid="done")
    m.get_or_create("done").extraction_watermark = 1
    _idle(m, "done", old)
    assert sorted(m.evict_idle_sessions(60, now_iso=now)) == ["done", "pending"]
    assert m.store.load_state("pending")["watermark"] == 0
    m.get_or_create("committing").commit_in_progress = False
    m.get_or_create("extracting").end_extraction()


def test_m21_eviction_saves_state_with_the_sessions_own_identity(make: Factory) -> None:
    """Also M11: the state context comes from the session's identity, not the caller's."""
    m = make()
    m.get_or_create("alice-s", CTX).window_state.active_task = "alice task"
    _idle(m, "alice-s", (datetime.now(UTC) - timedelta(hours=2)).isoformat())
    evicted = m.evict_idle_sessions(3600, BOB)
    assert evicted == ["alice-s"]
    assert not m.has_session("alice-s")
    assert m.store.load_state("alice-s")["window_state"]["active_task"] == "alice task"
    # weakness 10: an evicted session is loaded again when it returns
    assert m.get_or_create("alice-s", CTX).window_state.active_task == "alice task"


def test_m21_eviction_without_ctx_still_saves_state(make: Factory) -> None:
    """Weakness 3: the seed saved nothing without a ctx, losing the window state; we always save."""
    m = make()
    m.get_or_create("s", CTX).window_state.active_task = "task"
    _idle(m, "s", "2024-01-01T00:00:00+00:00")
    assert m.evict_idle_sessions(60, now_iso="2024-02-01T00:00:00+00:00") == ["s"]
    assert m.store.load_state("s")["window_state"]["active_task"] == "task"


def test_m22_message_during_save_prevents_eviction(make: Factory) -> None:
    store = CountingStore()
    m = make(store)
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    _idle(m, "s", two_hours_ago)
    _idle(m, "x", two_hours_ago)
    m.get_topic_buffer("x")
    store.on_save = lambda: m.add_message("s", "user", "arrived during save", CTX)
    evicted = m.evict_idle_sessions(3600, CTX)
    assert "s" not in evicted and m.has_session("s")
    assert "x" in evicted and not m.has_session("x")
    assert "x" not in m._topic_buffers
    assert active(m, "s") == ["arrived during save"]


# ---------------------------------------------------------------- 2.4 compaction prepare token


def test_m23_issue_token(make: Factory) -> None:
    m = make()
    add_all(m, "a", "b")
    token = m.issue_compaction_prepare_token(SID, "arch-1")
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    buf = m.get_or_create(SID)
    assert buf.compaction_prepare_message_count == 2
    assert buf.compaction_prepare_watermark == 0
    aware(buf.compaction_prepare_token_created_at)
    second = m.issue_compaction_prepare_token(SID)
    assert second != token and buf.compaction_prepare_token == second


def test_m24_prepare_archive_id(make: Factory) -> None:
    m = make()
    assert m.get_compaction_prepare_archive_id(SID) == ""
    m.issue_compaction_prepare_token(SID, "arch-1")
    assert m.get_compaction_prepare_archive_id(SID) == "arch-1"


def test_m25_prepare_state(make: Factory) -> None:
    m = make()
    add_all(m, "a")
    assert m.get_compaction_prepare_state(SID) is None
    token = m.issue_compaction_prepare_token(SID, "arch-1")
    assert m.get_compaction_prepare_state(SID) == {"prepareToken": token, "archive_id": "arch-1"}
    assert m.get_compaction_prepare_state(SID, ttl_seconds=0) is None  # stale: cleared
    assert m.get_or_create(SID).compaction_prepare_token == ""
    m.issue_compaction_prepare_token(SID)
    add_all(m, "count changed")
    assert m.get_compaction_prepare_state(SID) is None
    m.issue_compaction_prepare_token(SID)
    m.get_or_create(SID).extraction_watermark = 1
    assert m.get_compaction_prepare_state(SID) is None


@pytest.mark.parametrize("created_at", ["", "garbage", "2024-01-01T00:00:00", "2000-01-01T00:00:00+00:00"])
def test_m25_missing_invalid_naive_or_old_timestamp_is_stale(make: Factory, created_at: str) -> None:
    m = make()
    m.issue_compaction_prepare_token(SID)
    m.get_or_create(SID).compaction_prepare_token_created_at = created_at
    assert m.get_compaction_prepare_state(SID) is None
    assert m.get_or_create(SID).compaction_prepare_token == ""


def test_m26_consume_is_single_use(make: Factory) -> None:
    m = make()
    add_all(m, "a")
    token = m.issue_compaction_prepare_token(SID)
    assert m.consume_compaction_prepare_token(SID, "") is False
    assert m.consume_compaction_prepare_token(SID, token) is True
    assert m.consume_compaction_prepare_token(SID, token) is False
    token = m.issue_compaction_prepare_token(SID)
    add_all(m, "changed")
    assert m.consume_compaction_prepare_token(SID, token) is False


def test_m27_stale_token_is_cleared_other_mismatches_keep_it(make: Factory) -> None:
    m = make()
    token = m.issue_compaction_prepare_token(SID)
    assert m.consume_compaction_prepare_token(SID, "wrong") is False
    assert m.get_or_create(SID).compaction_prepare_token == token
    assert m.consume_compaction_prepare_token(SID, "wrong", ttl_seconds=0) is False
    assert m.get_or_create(SID).compaction_prepare_token == ""


def test_m28_clear_and_commit_invalidate_the_token(make: Factory, kind: str, tmp_path: Path) -> None:
    m = make(failing_commit_store(kind, tmp_path, StoreError("disk full")), compressor=RecordingCompressor())
    add_all(m, "a", "b")
    m.issue_compaction_prepare_token(SID, "arch")
    m.clear_compaction_prepare_token(SID)
    buf = m.get_or_create(SID)
    assert buf.prepare_token_fields() == {
        "compaction_prepare_token": "",
        "compaction_prepare_archive_id": "",
        "compaction_prepare_message_count": 0,
        "compaction_prepare_watermark": 0,
        "compaction_prepare_token_created_at": "",
    }
    token = m.issue_compaction_prepare_token(SID, "arch")
    assert m.commit(SID, CTX, wait=True).status == "failed"
    assert m.get_compaction_prepare_state(SID) == {"prepareToken": token, "archive_id": "arch"}  # restored
    assert m.commit(SID, CTX, wait=True).status == "completed"
    assert m.get_compaction_prepare_state(SID) is None


# ---------------------------------------------------------------- 2.5 messages, session info


def test_m29_add_message_result_and_binding(make: Factory) -> None:
    m = make()
    result = m.add_message(SID, "user", "abcdefgh", CTX)
    assert result.ok is True and re.fullmatch(r"msg_[0-9a-f]{12}", result.message_id)
    assert result.to_dict() == {"ok": True, "message_id": result.message_id, "pending_tokens": 2}
    second = m.add_message(SID, "assistant", "a" * 40, CTX)
    assert second.pending_tokens == 12
    assert m.store.get_session_record(SID).owner == ("acct", "alice")
    with pytest.raises(AccessDeniedError):
        m.add_message(SID, "user", "intrusion", BOB)
    assert active(m) == ["abcdefgh", "a" * 40]


def test_m29_timestamps_are_aware_and_naive_ones_rejected(make: Factory) -> None:
    """Weakness 9: a naive ``created_at`` is rejected; ``last_accessed_at`` is kept up to date."""
    m = make()
    with pytest.raises(InvalidInputError):
        m.add_message(SID, "user", "x", CTX, created_at="2024-01-01T00:00:00")
    with pytest.raises(InvalidInputError):
        m.add_message(SID, "user", "x", CTX, created_at=datetime(2024, 1, 1))
    when = datetime(2024, 1, 1, tzinfo=UTC)
    m.add_message(SID, "user", "x", CTX, created_at=when)
    m.add_message(SID, "user", "y", CTX, created_at="2024-01-02T00:00:00Z")
    stored = m.get_history(SID, CTX)
    assert stored[0].created_at == when
    assert stored[1].created_at == datetime(2024, 1, 2, tzinfo=UTC)
    buf = m.get_or_create(SID)
    buf.window_state.last_accessed_at = "2000-01-01T00:00:00+00:00"
    m.add_message(SID, "user", "z", CTX)
    after_add = aware(buf.window_state.last_accessed_at)
    assert after_add > datetime(2000, 1, 2, tzinfo=UTC)
    buf.window_state.last_accessed_at = "2000-01-01T00:00:00+00:00"
    m.get_context(SID, 1000, CTX)
    assert aware(buf.window_state.last_accessed_at) > datetime(2000, 1, 2, tzinfo=UTC)


def test_m30_get_session(make: Factory) -> None:
    m = make(compressor=RecordingCompressor())
    unknown = m.get_session("nobody")
    assert unknown["ok"] is True and unknown["message_count"] == 0 and unknown["commit_count"] == 0
    assert m.store.get_session_record("nobody") is None  # weakness 21: no identity-less session stored
    add_all(m, "a", "b", "c")
    info = m.get_session(SID, CTX)
    assert set(info) == {
        "ok",
        "session_id",
        "pending_tokens",
        "message_count",
        "commit_count",
        "last_commit_at",
        "created_at",
        "updated_at",
    }
    assert info["session_id"] == SID and info["message_count"] == 3
    assert info["commit_count"] == 0 and info["last_commit_at"] == ""
    assert info["pending_tokens"] == 3
    aware(info["created_at"])
    m.commit(SID, CTX, wait=True)
    info = m.get_session(SID, CTX)
    assert info["commit_count"] == 1 and info["pending_tokens"] == 0
    aware(info["last_commit_at"])
    created = m.get_session("with-ctx", CTX)
    assert created["ok"] and m.store.get_session_record("with-ctx") is not None


# ---------------------------------------------------------------- 2.6 commit


def test_m31_empty_buffer(make: Factory) -> None:
    m = make()
    result = m.commit(SID, CTX)
    assert result.to_dict() == {"ok": True, "archived": False, "reason": "empty_buffer"}
    assert len(m._tasks) == 0
    assert m.get_session(SID, CTX)["commit_count"] == 0


def test_m32_commit_in_progress(make: Factory) -> None:
    blocker = BlockingCompressor()
    m = make(compressor=blocker)
    add_all(m, "a", "b")
    try:
        first = m.commit(SID, CTX)
        assert first.status == "processing"
        assert blocker.started.wait(timeout=30)
        add_all(m, "c")
        second = m.commit(SID, CTX)
        assert second.to_dict() == {"ok": True, "archived": False, "reason": "commit_in_progress"}
    finally:
        blocker.release()
    m.wait_for_tasks()
    assert active(m) == ["c"]


def test_m33_in_flight_commit_without_new_messages_reports_in_progress(make: Factory) -> None:
    """Weakness 16: ``commit_in_progress`` is checked before ``empty_buffer``. Since messages
    stay active during a commit (weakness 1), the buffer is not empty either."""
    blocker = BlockingCompressor()
    m = make(compressor=blocker)
    add_all(m, "a")
    try:
        m.commit(SID, CTX)
        assert blocker.started.wait(timeout=30)
        assert m.commit(SID, CTX).reason == "commit_in_progress"
    finally:
        blocker.release()
    m.wait_for_tasks()
    assert m.commit(SID, CTX).reason == "empty_buffer"


def test_m34_phase_one_plans_all_active_messages_and_keeps_them_visible(make: Factory) -> None:
    """Weakness 1: the commit does not clear the buffer; messages stay in the context and the
    history until their archive is durable, then leave the live window."""
    blocker = BlockingCompressor()
    m = make(compressor=blocker)
    add_all(m, "a", "b", "c")
    try:
        result = m.commit(SID, CTX, archive_id="my-archive")
        assert blocker.started.wait(timeout=30)
        buf = m.get_or_create(SID)
        assert buf.commit_in_progress is True
        task = m.get_task(result.task_id)
        assert re.fullmatch(r"task_[0-9a-f]{12}", task["task_id"])
        assert task["session_id"] == SID and task["archive_id"] == "my-archive"
        assert task["status"] == "processing"
        aware(task["created_at"])
        assert contents(m.get_context(SID, 10_000, CTX).messages) == ["a", "b", "c"]
        assert [(x.content, x.status) for x in m.get_history(SID, CTX)] == [
            ("a", "active"),
            ("b", "active"),
            ("c", "active"),
        ]
    finally:
        blocker.release()
    m.wait_for_tasks()
    assert m.get_or_create(SID).commit_in_progress is False
    assert contents(m.get_context(SID, 10_000, CTX).messages) == []
    assert [x.status for x in m.get_history(SID, CTX)] == ["archived"] * 3
    archive = m.read_archive(SID, "my-archive", CTX)
    assert archive is not None and contents(archive.messages) == ["a", "b", "c"]


def test_m34_default_archive_id_format(make: Factory) -> None:
    m = make(compressor=RecordingCompressor())
    add_all(m, "a")
    result = m.commit(SID, CTX, wait=True)
    assert ARCHIVE_ID.fullmatch(result.archive_id)
    with pytest.raises(InvalidInputError):
        m.commit(SID, CTX, archive_id="  ")


def test_m35_background_commit_returns_at_once(make: Factory) -> None:
    recorder = RecordingCompressor()
    blocker = BlockingCompressor()
    m = make(compressor=blocker)
    add_all(m, "a")
    try:
        result = m.commit(SID, CTX, wait=False)
        assert result.to_dict() == {
            "ok": True,
            "archived": False,
            "archive_id": result.archive_id,
            "task_id": result.task_id,
            "status": "processing",
        }
    finally:
        blocker.release()
    m.wait_for_tasks()
    assert m.get_task(result.task_id)["status"] == "completed"
    m.compressor = recorder
    add_all(m, "b")
    m.commit(SID, CTX)
    m.wait_for_tasks()
    assert recorder.threads and recorder.threads[0] is not threading.current_thread()


def test_m36_inline_commit(make: Factory) -> None:
    recorder = RecordingCompressor()
    m = make(compressor=recorder)
    add_all(m, "a", "b")
    result = m.commit(SID, CTX, wait=True)
    assert result.to_dict() == {
        "ok": True,
        "archived": True,
        "archive_id": result.archive_id,
        "task_id": result.task_id,
        "status": "completed",
        "error": None,
    }
    assert recorder.threads == [threading.current_thread()]


def test_m37_counters_advance_only_on_success(make: Factory, kind: str, tmp_path: Path) -> None:
    """Weakness 5: ``commit_count``/``last_commit_at`` count successful commits, not attempts."""
    m = make(failing_commit_store(kind, tmp_path, StoreError("disk full")), compressor=RecordingCompressor())
    add_all(m, "a")
    failed = m.commit(SID, CTX, wait=True)
    assert failed.status == "failed"
    info = m.get_session(SID, CTX)
    assert info["commit_count"] == 0 and info["last_commit_at"] == ""
    assert m.get_or_create(SID).meta.commit_count == 0
    assert m.get_or_create(SID).commit_in_progress is False
    assert m.commit(SID, CTX, wait=True).status == "completed"
    info = m.get_session(SID, CTX)
    assert info["commit_count"] == 1
    aware(info["last_commit_at"])
    assert m.get_or_create(SID).meta.commit_count == 1


def test_m38_failed_commit_keeps_messages_and_order(make: Factory, kind: str, tmp_path: Path) -> None:
    """Weakness 1/5: nothing changes in the store; messages added meanwhile follow in order."""

    class BlockThenFail(BlockingCompressor):
        def compress(
            self, messages: Any, prev_overview: str = "", prev_abstract: str = ""
        ) -> tuple[str, str]:
            super().compress(messages, prev_overview, prev_abstract)
            raise RuntimeError("llm down")

    blocker = BlockThenFail()
    m = make(compressor=blocker)
    m.fallback_compressor = FailingCompressor(failures=99, error="fallback down")
    add_all(m, "a", "b")
    try:
        result = m.commit(SID, CTX)
        assert blocker.started.wait(timeout=30)
        m.add_message(SID, "user", "c-during", CTX)
    finally:
        blocker.release()
    m.wait_for_tasks()
    task = m.get_task(result.task_id)
    assert task["status"] == "failed" and task["error"]
    assert active(m) == ["a", "b", "c-during"]
    assert contents(m.get_context(SID, 10_000, CTX).messages) == ["a", "b", "c-during"]
    assert m.list_archives(SID, CTX) == []
    buf = m.get_or_create(SID)
    assert buf.turn_count == 2 and buf.commit_in_progress is False
    assert m.read_archive(SID, result.archive_id, CTX) is None


def test_m39_success_saves_state(make: Factory) -> None:
    store = CountingStore()
    m = make(store, compressor=RecordingCompressor())
    add_all(m, "please book the train")
    assert store.load_state(SID) is None
    assert m.commit(SID, CTX, wait=True).status == "completed"
    payload = store.load_state(SID)
    assert payload is not None and payload["session_meta"]["commit_count"] == 1
    assert payload["window_state"]["active_task"] == "please book the train"


def test_m40_any_phase_two_exception_fails_the_task(make: Factory, kind: str, tmp_path: Path) -> None:
    m = make(failing_commit_store(kind, tmp_path, RuntimeError("boom")), compressor=RecordingCompressor())
    add_all(m, "a", "b")
    result = m.commit(SID, CTX, wait=True)
    assert result.status == "failed" and result.archived is False and result.error == "boom"
    task = m.get_task(result.task_id)
    assert task["status"] == "failed" and task["error"] == "boom"
    assert active(m) == ["a", "b"]


def test_m40_compressor_and_fallback_failing_fail_the_task(make: Factory) -> None:
    m = make(compressor=FailingCompressor(failures=99, error="primary down"))
    m.fallback_compressor = FailingCompressor(failures=99, error="fallback down")
    add_all(m, "a")
    result = m.commit(SID, CTX, wait=True)
    assert result.status == "failed" and "primary down" in (result.error or "")
    assert active(m) == ["a"] and m.list_archives(SID, CTX) == []


def test_m41_skip_extraction_and_session_time_are_accepted(make: Factory) -> None:
    m = make(compressor=RecordingCompressor())
    add_all(m, "a")
    result = m.commit(SID, CTX, wait=True, skip_extraction=True, session_time="2024-01-01T00:00:00Z")
    assert result.status == "completed"
    assert m.get_or_create(SID).extraction_watermark == 0  # no extraction ran


def test_m42_messages_added_during_commit_stay_live(make: Factory) -> None:
    blocker = BlockingCompressor()
    m = make(compressor=blocker)
    add_all(m, "a", "b")
    try:
        result = m.commit(SID, CTX)
        assert blocker.started.wait(timeout=30)
        add_all(m, "c-during", "d-during")
    finally:
        blocker.release()
    m.wait_for_tasks()
    assert m.get_task(result.task_id)["status"] == "completed"
    assert active(m) == ["c-during", "d-during"]
    live = [x for x in m.get_context(SID, 10_000, CTX).messages if x.status == "active"]
    assert contents(live) == ["c-during", "d-during"]
    assert contents(m.read_archive(SID, result.archive_id, CTX).messages) == ["a", "b"]
    assert m.get_or_create(SID).pending_tokens == sum(
        x.tokens for x in m.store.list_messages(SID, status="active")
    )


# ---------------------------------------------------------------- 2.7 commit_snapshot


def test_m43_empty_snapshot(make: Factory) -> None:
    m = make()
    assert m.commit_snapshot(SID, [], CTX).to_dict() == {
        "ok": True,
        "archived": False,
        "reason": "empty_snapshot",
    }


def test_m44_snapshot_archives_exactly_the_given_messages(make: Factory) -> None:
    """Weakness 14: the live window is updated by the commit itself (no caller
    ``remove_messages_by_id``), and a snapshot never runs beside an in-flight commit."""
    m = make(compressor=RecordingCompressor())
    add_all(m, "a", "b", "c", "d")
    window = m.get_context(SID, 10_000, CTX).messages
    result = m.commit_snapshot(SID, window[:2], CTX)
    assert result.to_dict() == {
        "ok": True,
        "archived": True,
        "archive_id": result.archive_id,
        "task_id": result.task_id,
        "status": "completed",
        "error": None,
    }
    assert active(m) == ["c", "d"]
    assert contents(m.read_archive(SID, result.archive_id, CTX).messages) == ["a", "b"]
    assert len(m.get_history(SID, CTX)) == 4
    with pytest.raises(InvalidInputError):
        m.commit_snapshot(SID, window[:1], CTX)  # already archived: not active any more


def test_m44_snapshot_in_background_and_blocked_by_inflight_commit(make: Factory) -> None:
    blocker = BlockingCompressor()
    m = make(compressor=blocker)
    add_all(m, "a", "b")
    window = m.get_context(SID, 10_000, CTX).messages
    try:
        background = m.commit_snapshot(SID, window[:1], CTX, wait=False)
        assert background.status == "processing"
        assert blocker.started.wait(timeout=30)
        assert m.commit_snapshot(SID, window[1:], CTX).reason == "commit_in_progress"
    finally:
        blocker.release()
    m.wait_for_tasks()
    assert m.get_task(background.task_id)["status"] == "completed"
    assert active(m) == ["b"]


def test_m45_snapshot_counts_successes_and_saves_state(make: Factory, kind: str, tmp_path: Path) -> None:
    """Weakness 5: a failed snapshot does not advance the counters."""
    m = make(failing_commit_store(kind, tmp_path, StoreError("disk full")), compressor=RecordingCompressor())
    add_all(m, "a", "b")
    window = m.get_context(SID, 10_000, CTX).messages
    assert m.commit_snapshot(SID, window, CTX).status == "failed"
    assert m.get_session(SID, CTX)["commit_count"] == 0
    assert m.store.load_state(SID) is None
    assert m.commit_snapshot(SID, window, CTX).status == "completed"
    assert m.get_session(SID, CTX)["commit_count"] == 1
    assert m.store.load_state(SID) is not None


# ---------------------------------------------------------------- 2.8 Phase 2 internals


def test_m46_messages_are_serialised_for_the_compressor(make: Factory) -> None:
    recorder = RecordingCompressor()
    m = make(compressor=recorder)
    ids = add_all(m, "a", "b")
    m.commit(SID, CTX, wait=True)
    sent = recorder.calls[0][0]
    assert [x["id"] for x in sent] == ids
    assert [(x["role"], x["content"]) for x in sent] == [("user", "a"), ("assistant", "b")]
    for x in sent:
        assert {"role", "content", "id", "created_at"} <= set(x)
        aware(x["created_at"])


def test_m47_previous_archive_is_fused(make: Factory) -> None:
    recorder = RecordingCompressor()
    m = make(compressor=recorder)
    add_all(m, "a")
    m.commit(SID, CTX, wait=True)
    add_all(m, "b")
    m.commit(SID, CTX, wait=True)
    add_all(m, "c")
    m.commit(SID, CTX, wait=True)
    assert recorder.calls[0][1:] == ("", "")
    assert recorder.calls[1][1:] == ("## Facts\n- batch 1: a", "batch 1")
    assert recorder.calls[2][1:] == ("## Facts\n- batch 2: b", "batch 2")


def test_m48_llm_compresses_and_failures_fall_back(make: Factory) -> None:
    llm = ScriptedLLM([json.dumps({"overview": "## Facts\n- from the llm", "abstract": "llm abstract"})])
    m = make(llm=llm)
    add_all(m, "tell me about trains")
    assert m.commit(SID, CTX, wait=True).status == "completed"
    assert llm.prompts and "tell me about trains" in llm.prompts[0]
    archive = m.list_archives(SID, CTX)[0]
    assert "from the llm" in archive.overview and archive.abstract == "llm abstract"

    failing = make(InMemoryStore(), compressor=FailingCompressor(failures=99, error="llm exploded"))
    add_all(failing, "tell me about buses")
    assert failing.commit(SID, CTX, wait=True).status == "completed"
    archive = failing.list_archives(SID, CTX)[0]
    assert archive.overview.strip()
    assert archive.metadata["compression"]["fallback_used"] is True
    assert "llm exploded" in archive.metadata["compression"]["error"]


def test_m49_quality_metrics_are_recorded(make: Factory) -> None:
    m = make(compressor=RecordingCompressor())
    add_all(m, "version 1.2.3 of foo.py fails with E42")
    result = m.commit(SID, CTX, wait=True)
    quality = m.list_archives(SID, CTX)[0].metadata["compression_quality"]
    assert 0.0 <= quality["score"] <= 1.0
    assert m.get_task(result.task_id)["compression_quality"] == quality


def test_m49_evaluator_errors_are_ignored(make: Factory) -> None:
    class Broken:
        def evaluate(self, *args: Any) -> dict[str, Any]:
            raise RuntimeError("metrics broke")

    m = make(compressor=RecordingCompressor())
    m.quality_evaluator = Broken()  # type: ignore[assignment]
    add_all(m, "a")
    assert m.commit(SID, CTX, wait=True).status == "completed"
    assert "compression_quality" not in m.list_archives(SID, CTX)[0].metadata


def test_m50_write_failure_fails_without_invalidation_or_merge(
    make: Factory, kind: str, tmp_path: Path
) -> None:
    m = make(
        failing_commit_store(kind, tmp_path, StoreError("disk full")),
        compressor=RecordingCompressor(),
        archive_max_count=2,
        archive_merge_threshold=2,
    )
    add_all(m, "a")
    m.commit(SID, CTX, wait=True, archive_id="never")  # fails
    tb = m.get_topic_buffer(SID)
    tb.set_cached_slot(ARCHIVE_HISTORY_SLOT, SlotContent("cached"))
    result = m.commit(SID, CTX, wait=True)
    assert result.status == "completed"  # retry succeeds
    assert tb.get_cached_slot(ARCHIVE_HISTORY_SLOT) is None
    m2 = make(
        failing_commit_store(kind, tmp_path / "b", StoreError("disk full")),
        compressor=RecordingCompressor(),
        archive_max_count=2,
        archive_merge_threshold=2,
    )
    add_all(m2, "x")
    tb2 = m2.get_topic_buffer(SID)
    tb2.set_cached_slot(ARCHIVE_HISTORY_SLOT, SlotContent("cached"))
    failed = m2.commit(SID, CTX, wait=True)
    task = m2.get_task(failed.task_id)
    assert task["status"] == "failed" and task["archived"] is False and task["error"] == "disk full"
    assert not task.get("archive_uri")
    assert tb2.get_cached_slot(ARCHIVE_HISTORY_SLOT) is not None
    assert m2.list_archives(SID, CTX, include_merged=True) == []


def test_m51_success_completes_invalidates_and_merges(make: Factory) -> None:
    m = make(compressor=RecordingCompressor(), archive_max_count=2, archive_merge_threshold=2)
    add_all(m, "a")
    first = m.commit(SID, CTX, wait=True)
    task = m.get_task(first.task_id)
    assert task["status"] == "completed" and task["archived"] is True and task["archive_uri"]
    assert first.archive_id in task["archive_uri"]
    tb = m.get_topic_buffer(SID)
    tb.set_cached_slot(ARCHIVE_HISTORY_SLOT, SlotContent("cached"))
    add_all(m, "b")
    m.commit(SID, CTX, wait=True)
    assert tb.get_cached_slot(ARCHIVE_HISTORY_SLOT) is None
    live = m.list_archives(SID, CTX)
    assert len(live) == 1 and live[0].archive_id.startswith("merged_")


# ---------------------------------------------------------------- 2.9 archive writes (no memory:// fallback)


@pytest.mark.parametrize(
    "error", [StoreError("disk full"), OSError("io error"), ConcurrencyError("lost race")]
)
def test_m52_to_m56_failed_store_write_loses_nothing(
    make: Factory, kind: str, tmp_path: Path, error: Exception
) -> None:
    """Weakness 4: no ``memory://`` pretend-success; the task fails and every message stays active."""
    m = make(failing_commit_store(kind, tmp_path, error), compressor=RecordingCompressor())
    add_all(m, "a", "b")
    result = m.commit(SID, CTX, wait=True)
    assert result.ok is True and result.archived is False and result.status == "failed"
    assert result.error == str(error)
    assert not (result.archive_uri or "").startswith("memory://")
    assert active(m) == ["a", "b"]
    assert m.list_archives(SID, CTX, include_merged=True) == []
    assert m.get_session(SID, CTX)["commit_count"] == 0
    ok = m.commit(SID, CTX, wait=True)  # the next attempt archives for real
    assert ok.status == "completed" and ok.archived is True
    assert ok.archive_uri and not ok.archive_uri.startswith("memory://")
    assert contents(m.read_archive(SID, ok.archive_id, CTX).messages) == ["a", "b"]


def test_m54_success_reports_the_stored_archive(make: Factory) -> None:
    m = make(compressor=RecordingCompressor())
    add_all(m, "a")
    result = m.commit(SID, CTX, wait=True, archive_id="arch-1")
    assert result.archived and result.archive_id == "arch-1"
    assert result.archive_uri and "arch-1" in result.archive_uri
    assert [a.archive_id for a in m.list_archives(SID, CTX)] == ["arch-1"]


# ---------------------------------------------------------------- 2.10 archive merging


def _commits(m: SessionManager, n: int) -> list[str]:
    ids = []
    for i in range(n):
        add_all(m, f"u{i}", f"a{i}")
        result = m.commit(SID, CTX, wait=True)
        assert result.status == "completed", result
        ids.append(result.archive_id)
    return ids


def test_m57_merge_failure_does_not_fail_the_commit(make: Factory, kind: str, tmp_path: Path) -> None:
    class BrokenMerge(store_class(kind)):  # type: ignore[misc,valid-type]
        def merge_archives(self, *args: Any, **kwargs: Any) -> Any:
            raise StoreError("merge broke")

    m = make(
        new_store(BrokenMerge, tmp_path),
        compressor=RecordingCompressor(),
        archive_max_count=2,
        archive_merge_threshold=2,
    )
    ids = _commits(m, 2)
    assert sorted(a.archive_id for a in m.list_archives(SID, CTX)) == sorted(ids)


def test_m58_merge_needs_the_threshold(make: Factory) -> None:
    m = make(compressor=RecordingCompressor(), archive_max_count=2, archive_merge_threshold=3)
    _commits(m, 2)
    assert len(m.list_archives(SID, CTX)) == 2
    assert not any(a.archive_id.startswith("merged_") for a in m.list_archives(SID, CTX, include_merged=True))
    _commits(m, 1)
    live = m.list_archives(SID, CTX)
    assert len(live) == 2 and live[1].archive_id.startswith("merged_")


def test_m59_oldest_archives_are_merged(make: Factory) -> None:
    m = make(compressor=RecordingCompressor(), archive_max_count=3, archive_merge_threshold=5)
    ids = _commits(m, 5)
    live = m.list_archives(SID, CTX)
    assert [a.archive_id for a in live[:2]] == [ids[4], ids[3]]  # newest first, untouched
    merged = live[2]
    assert merged.archive_id.startswith("merged_")
    assert list(merged.metadata["merged_from"]) == ids[:3]  # max(2, 5 - 3 + 1) oldest
    assert len(live) == 3


def test_m60_to_m62_merged_archive_keeps_every_raw_message(make: Factory) -> None:
    """Weakness 13: raw messages are never deleted, the merged archive's ``created_at`` is the
    newest source's (not now), and ``list_archives`` excludes merged sources."""
    m = make(compressor=RecordingCompressor(), archive_max_count=2, archive_merge_threshold=3)
    ids = _commits(m, 3)
    every = {a.archive_id: a for a in m.list_archives(SID, CTX, include_merged=True)}
    merged = next(a for a in every.values() if a.archive_id.startswith("merged_"))
    assert re.fullmatch(r"merged_\d{8}_\d{6}_[0-9a-f]{8}", merged.archive_id)
    assert {every[i].merged_into for i in ids[:2]} == {merged.archive_id}
    assert every[ids[2]].merged_into == ""
    assert merged.created_at == max(every[i].created_at for i in ids[:2])
    assert merged.created_at < every[ids[2]].created_at or merged.created_at <= every[ids[2]].created_at
    full = m.read_archive(SID, merged.archive_id, CTX)
    assert contents(full.messages) == ["u0", "a0", "u1", "a1"]
    assert "batch 1" in merged.overview and "batch 2" in merged.overview
    history = m.get_history(SID, CTX)
    assert contents(history) == ["u0", "a0", "u1", "a1", "u2", "a2"]
    assert {x.status for x in history} == {"archived"}
    assert [a.archive_id for a in m.list_archives(SID, CTX)] == [ids[2], merged.archive_id]


def test_m61_empty_merger_output_aborts(make: Factory) -> None:
    class EmptyMerger:
        def merge(self, entries: Any) -> MergedArchive:
            return MergedArchive(overview="", abstract="", first_seq=0, last_seq=0, message_count=0)

    m = make(compressor=RecordingCompressor(), archive_max_count=2, archive_merge_threshold=2)
    m.merger = EmptyMerger()  # type: ignore[assignment]
    ids = _commits(m, 3)
    assert sorted(a.archive_id for a in m.list_archives(SID, CTX, include_merged=True)) == sorted(ids)
    assert m._merge_archives_once(SID) is False


def test_m63_merge_is_atomic(make: Factory, kind: str, tmp_path: Path) -> None:
    """Weakness 13: the merged archive and the source marks are written in one transaction."""

    class FlakyMerge(store_class(kind)):  # type: ignore[misc,valid-type]
        broken = True

        def merge_archives(self, *args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise ConcurrencyError("another writer merged")
            return super().merge_archives(*args, **kwargs)

    store = new_store(FlakyMerge, tmp_path)
    m = make(store, compressor=RecordingCompressor(), archive_max_count=2, archive_merge_threshold=2)
    ids = _commits(m, 3)
    every = m.list_archives(SID, CTX, include_merged=True)
    assert sorted(a.archive_id for a in every) == sorted(ids)
    assert all(a.merged_into == "" for a in every)
    store.broken = False
    tb = m.get_topic_buffer(SID)
    tb.set_cached_slot(ARCHIVE_HISTORY_SLOT, SlotContent("cached"))
    assert m._merge_archives_once(SID) is True  # M64
    assert tb.get_cached_slot(ARCHIVE_HISTORY_SLOT) is None
    live = m.list_archives(SID, CTX)
    assert len(live) == 2 and live[1].archive_id.startswith("merged_")


def test_m64_merge_keeps_fusion_continuity(make: Factory) -> None:
    """Weakness 13: after a merge the next commit fuses with the real latest archive."""
    recorder = RecordingCompressor()
    m = make(compressor=recorder, archive_max_count=2, archive_merge_threshold=3)
    _commits(m, 3)  # the third commit merges the first two
    _commits(m, 1)
    assert recorder.calls[-1][1:] == ("## Facts\n- batch 3: u2, a2", "batch 3")


# ---------------------------------------------------------------- 2.11 get_context, tasks, cleanup


SEED_CONTEXT_KEYS = {
    "ok",
    "session_id",
    "pending_tokens",
    "estimatedTokens",
    "active_message_count",
    "archive_count",
    "latest_archive_overview",
    "archives",
}


def test_m66_get_context_has_the_seed_keys_and_the_parts(make: Factory) -> None:
    """Weakness 2: the context returns messages and counts what it returns."""
    m = make(compressor=RecordingCompressor())
    _commits(m, 2)
    add_all(m, "live question", "live answer")
    ctxt = m.get_context(SID, 10_000, CTX)
    d = ctxt.to_dict()
    assert set(d) >= SEED_CONTEXT_KEYS
    assert d["ok"] is True and d["session_id"] == SID
    assert d["active_message_count"] == 2
    # the live window's tokens; a budget this large also holds archived turns before it
    assert d["pending_tokens"] == sum(x.tokens for x in ctxt.messages if x.status == "active")
    assert d["archive_count"] == 2
    newest = m.list_archives(SID, CTX)[0]
    assert d["latest_archive_overview"] == newest.overview == "## Facts\n- batch 2: u1, a1"
    assert [a["archive_id"] for a in d["archives"]] == [a.archive_id for a in m.list_archives(SID, CTX)]
    assert d["archives"][0] == {"archive_id": newest.archive_id, "abstract": "batch 2"}
    assert [x["content"] for x in d["messages"]][-2:] == ["live question", "live answer"]
    assert all(x.status == "archived" for x in ctxt.messages[:-2])  # the budget's rest: earlier turns
    assert d["estimatedTokens"] == ctxt.token_count <= ctxt.budget == 10_000
    assert "batch 2" in ctxt.summary
    json.dumps(d)


def test_m67_get_context_honours_the_budget(make: Factory) -> None:
    """Weakness 2: ``token_budget`` is honoured; the newest messages win."""
    m = make()
    add_all(m, *[f"{i:02d} " + "word " * 9 for i in range(20)])
    ctxt = m.get_context(SID, 60, CTX)
    assert ctxt.token_count <= 60
    assert 0 < len(ctxt.messages) < 20 and ctxt.dropped_messages == 20 - len(ctxt.messages)
    assert ctxt.messages[-1].content.startswith("19 ")
    assert ctxt.messages[0].role == "user"
    seqs = [x.seq for x in ctxt.messages]
    assert seqs == sorted(seqs)
    with pytest.raises(InvalidInputError):
        m.get_context(SID, 0, CTX)


def test_m67_get_context_of_an_unknown_session_stores_nothing(make: Factory) -> None:
    """Weakness 21: a read does not create a stored session."""
    m = make()
    ctxt = m.get_context("nobody", 500)
    d = ctxt.to_dict()
    assert d["ok"] is True and d["archive_count"] == 0 and d["active_message_count"] == 0
    assert d["messages"] == [] and d["latest_archive_overview"] == ""
    assert m.store.get_session_record("nobody") is None


def test_m68_tasks_sessions_and_pending_ids(make: Factory) -> None:
    m = make(compressor=RecordingCompressor())
    assert m.get_task("task_000000000000") is None
    add_all(m, "a")
    result = m.commit(SID, CTX, wait=True)
    task = m.get_task(result.task_id)
    task["status"] = "mutated"
    assert m.get_task(result.task_id)["status"] == "completed"
    assert m.has_session(SID) and not m.has_session("nobody")
    m.get_topic_buffer(SID)
    m.remove_session(SID)
    m.remove_session("nobody")  # no-op
    assert not m.has_session(SID)
    assert m._topic_buffers.get(SID) is None
    assert active(m) == [] and len(m.get_history(SID, CTX)) == 1  # the stored session is untouched
    add_all(m, "b", sid="p1")
    add_all(m, "c", sid="p2")
    m.get_or_create("p2").extraction_watermark = 1
    m.get_or_create("empty", CTX)
    assert set(m.get_pending_session_ids()) == {"p1"}


def test_m69_concurrent_writers_lose_nothing(make: Factory) -> None:
    m = make()
    barrier = threading.Barrier(6)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(25):
            m.add_message(SID, "user", f"w{n}-{i}", CTX)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = m.store.list_messages(SID)
    assert len(stored) == 150 and len({x.seq for x in stored}) == 150
    for n in range(6):
        mine = [x.content for x in stored if x.content.startswith(f"w{n}-")]
        assert mine == [f"w{n}-{i}" for i in range(25)]
    ctxt = m.get_context(SID, 100_000, CTX)
    assert len(ctxt.messages) == 150
    buf = m.get_or_create(SID)
    assert buf.pending_tokens == sum(x.tokens for x in stored)
    assert buf.turn_count == 150


def test_m69_concurrent_commits_archive_each_message_once(make: Factory) -> None:
    m = make(compressor=RecordingCompressor())
    add_all(m, *[f"m{i}" for i in range(10)])
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def committer() -> None:
        barrier.wait()
        results.append(m.commit(SID, CTX, wait=True))

    threads = [threading.Thread(target=committer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    archived = [r for r in results if r.archived]
    assert len(archived) == 1
    assert {r.reason for r in results if not r.archived} <= {"commit_in_progress", "empty_buffer"}
    assert active(m) == []
    assert len(m.list_archives(SID, CTX)) == 1
