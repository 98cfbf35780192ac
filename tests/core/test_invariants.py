"""The invariants of DESIGN section 4, each with a test that could catch its violation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ogmem_memory import (
    InMemoryStore,
    MemoryConfig,
    SessionManager,
    SessionMessage,
    SQLiteStore,
    StoreError,
)
from ogmem_memory.models import ArchiveEntry, new_message_id
from ogmem_memory.policy import SAFE_START_ROLES, assemble_context
from ogmem_memory.testing import BlockingCompressor, FailingCompressor
from ogmem_memory.tokens import EstimatingTokenCounter

LOW = MemoryConfig(
    commit_token_threshold=200, commit_turn_threshold=5, keep_recent_messages=4, keep_recent_tokens=60
)


def talk(manager: SessionManager, sid: str, turns: int, start: int = 0) -> None:
    for i in range(start, start + turns):
        manager.add_message(sid, "user", f"user turn {i}: I visited city number {i} on day {i}")
        manager.add_message(sid, "assistant", f"assistant reply {i}: noted city {i}")


# -- 1. durable on return -----------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from ogmem_memory import SessionManager, SQLiteStore, MemoryConfig
    cfg = MemoryConfig(commit_token_threshold=300, commit_turn_threshold=6,
                       keep_recent_messages=4, keep_recent_tokens=60)
    m = SessionManager(SQLiteStore(sys.argv[1]), config=cfg)
    i = 0
    while True:
        m.add_message("s", "user" if i % 2 == 0 else "assistant", f"message {i}")
        print(i, flush=True)  # acknowledged: add_message returned
        i += 1
    """
)


@pytest.mark.parametrize("kill_after", [0.3, 0.7, 1.1])
def test_durable_on_return_survives_sigkill(tmp_path: Path, kill_after: float) -> None:
    db = tmp_path / "kill.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    acked: list[int] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    started = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
        started = started or time.monotonic()
        if time.monotonic() - started > kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert acked, "the child never acknowledged a message"
    with SQLiteStore(db) as store:
        contents = [m.content for m in store.list_messages("s")]
    # every acknowledged message is there, in order, exactly once
    assert contents[: len(acked)] == [f"message {i}" for i in acked]
    assert len(set(contents)) == len(contents)


# -- 3. never invisible --------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_messages_visible_exactly_once_during_commit(tmp_path: Path, store_kind: str) -> None:
    store = InMemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "v.db")
    blocker = BlockingCompressor()
    manager = SessionManager(store, config=MemoryConfig(auto_commit=False), compressor=blocker)
    talk(manager, "s", 10)
    result = manager.commit("s")
    assert result.status == "processing"
    assert blocker.started.wait(10)
    # while the compressor is blocked: every message visible exactly once
    ctx = manager.get_context("s", 100_000)
    history = manager.get_history("s")
    assert [m.content for m in ctx.messages] == [m.content for m in history]
    assert len({m.id for m in history}) == 20
    manager.add_message("s", "user", "written during the commit")
    blocker.release()
    manager.wait_for_tasks()
    after = manager.get_context("s", 100_000)
    assert after.active_message_count == 1 and after.messages[-1].content == "written during the commit"
    # a budget this large also holds the archived turns before the live window, each once
    assert [m.id for m in after.messages] == [m.id for m in manager.get_history("s")]
    assert after.summary == blocker.overview
    task = manager.get_task(result.task_id or "")
    assert task is not None and task["status"] == "completed"
    assert len(manager.get_history("s")) == 21
    manager.close()


# -- 6. failure keeps everything -----------------------------------------------------


class FlakyArchiveStore(InMemoryStore):
    """Archive writes fail while ``failing`` is set."""

    failing = True

    def commit_archive(
        self, session_id: str, archive: ArchiveEntry, message_ids: object, **kw: object
    ) -> ArchiveEntry:
        if self.failing:
            raise StoreError("disk full")
        return super().commit_archive(session_id, archive, message_ids, **kw)  # type: ignore[arg-type]


def test_failing_compressor_keeps_everything_and_next_commit_succeeds() -> None:
    compressor = FailingCompressor(failures=1)
    manager = SessionManager(InMemoryStore(), config=MemoryConfig(auto_commit=False), compressor=compressor)
    talk(manager, "s", 5)
    # the extractive fallback takes over when the primary compressor raises
    result = manager.commit("s", wait=True)
    assert result.status == "completed"
    archive = manager.list_archives("s")[0]
    assert archive.metadata["compression"]["fallback_used"] is True
    assert "compressor exploded" in archive.metadata["compression"]["error"]


def test_failing_archive_write_keeps_everything_then_retries() -> None:
    store = FlakyArchiveStore()
    manager = SessionManager(store, config=MemoryConfig(auto_commit=False))
    talk(manager, "s", 5)
    before = [(m.id, m.status) for m in manager.get_history("s")]
    result = manager.commit("s", wait=True)
    assert result.status == "failed" and result.archived is False
    assert result.error == "disk full"
    task = manager.get_task(result.task_id or "")
    assert task is not None and task["status"] == "failed" and task["error"] == "disk full"
    assert [(m.id, m.status) for m in manager.get_history("s")] == before
    assert len(manager.get_context("s", 100_000).messages) == 10
    assert manager.get_session("s")["commit_count"] == 0  # weakness 5: failures don't count
    store.failing = False
    assert manager.commit("s", wait=True).status == "completed"
    assert all(m.status == "archived" for m in manager.get_history("s"))
    assert manager.get_session("s")["commit_count"] == 1


def test_threshold_commit_retries_after_failure() -> None:
    store = FlakyArchiveStore()
    manager = SessionManager(store, config=LOW)
    talk(manager, "s", 6)
    manager.wait_for_tasks()
    assert manager.list_archives("s") == []
    store.failing = False
    talk(manager, "s", 1, start=6)
    manager.wait_for_tasks()
    assert manager.list_archives("s")
    assert len(manager.get_history("s")) == 14


# -- 4. non-destructive ----------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_history_complete_after_many_commits_and_merges(tmp_path: Path, store_kind: str) -> None:
    store = InMemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "nd.db")
    cfg = MemoryConfig(
        commit_token_threshold=120,
        commit_turn_threshold=3,
        keep_recent_messages=2,
        keep_recent_tokens=10,
        archive_max_count=3,
        archive_merge_threshold=3,
    )
    manager = SessionManager(store, config=cfg)
    for i in range(150):
        manager.add_message("s", "user", f"question {i}")
        manager.add_message("s", "assistant", f"answer {i}")
        if i % 10 == 0:
            manager.wait_for_tasks()
    manager.wait_for_tasks()
    history = manager.get_history("s")
    expected = [c for i in range(150) for c in (f"question {i}", f"answer {i}")]
    assert [m.content for m in history] == expected
    all_archives = manager.list_archives("s", include_merged=True)
    assert any(a.merged_into for a in all_archives), "no merge happened"
    live = manager.list_archives("s")
    assert len(live) <= cfg.archive_max_count
    # live archives cover disjoint seq ranges, and every archived message is covered by one
    ranges = sorted((a.first_seq, a.last_seq) for a in live)
    assert all(a[1] < b[0] for a, b in pairwise(ranges))
    for m in history:
        if m.status == "archived":
            assert any(lo <= m.seq <= hi for lo, hi in ranges)
    merged = next(a for a in live if a.metadata.get("kind") == "merged")
    full = manager.read_archive("s", merged.archive_id)
    assert full is not None and len(full.messages) == merged.message_count
    manager.close()


# -- 8. context within budget (property) ----------------------------------------------

roles = st.sampled_from(["user", "assistant", "tool", "system"])
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=120)


@st.composite
def conversations(draw: st.DrawFn) -> list[SessionMessage]:
    counter = EstimatingTokenCounter()
    items = draw(st.lists(st.tuples(roles, texts), min_size=0, max_size=40))
    return [
        SessionMessage(id=new_message_id(), role=r, content=t, seq=i + 1, tokens=counter.count(t))
        for i, (r, t) in enumerate(items)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=conversations(),
    summary=texts,
    abstracts=st.lists(texts, max_size=5),
    recalled=conversations(),
    budget=st.integers(min_value=1, max_value=400),
)
def test_assemble_context_never_exceeds_budget(
    messages: list[SessionMessage],
    summary: str,
    abstracts: list[str],
    recalled: list[SessionMessage],
    budget: int,
) -> None:
    counter = EstimatingTokenCounter()
    recalled = [
        SessionMessage(
            id=new_message_id(), role=m.role, content=m.content, seq=m.seq, tokens=m.tokens, status="archived"
        )
        for m in recalled
    ]
    plan = assemble_context(
        summary=summary,
        abstracts=abstracts,
        recalled=recalled,
        messages=messages,
        budget=budget,
        counter=counter,
        cfg=MemoryConfig(),
    )
    users = [m for m in messages if m.role == "user"]
    # the anchor of the current turn: the newest user message; without one there is no current
    # turn and every message competes for the budget (issue 9, defect 7)
    newest_user = users[-1] if users else None
    if newest_user is not None:
        turn = messages[messages.index(newest_user) :]
        if sum(m.tokens for m in turn) > budget:
            # the current turn alone is over budget: its opening message plus the newest whole
            # steps (each starting at an assistant message) that fit
            assert plan.messages[0] == newest_user and not plan.summary and not plan.recalled
            rest = list(plan.messages[1:])
            if rest:
                assert rest == turn[len(turn) - len(rest) :] and rest[0].role == "assistant"
                assert plan.token_count <= budget
            else:
                # nothing else fits; the opening message is there even when over budget
                assert plan.token_count == newest_user.tokens
            return
    assert plan.token_count <= budget
    from ogmem_memory.policy import render_preamble

    preamble = render_preamble(plan.summary, plan.abstracts, plan.recalled)
    assert plan.token_count == (counter.count(preamble) if preamble else 0) + sum(
        m.tokens for m in plan.messages
    )
    if newest_user is not None:
        assert newest_user in plan.messages
    if plan.messages:
        assert plan.messages[0].role in SAFE_START_ROLES
    # the live part is a contiguous suffix of the conversation, unchanged but for a system
    # message at its start truncated into the room left
    if plan.messages:
        n = len(plan.messages)
        assert [m.id for m in plan.messages] == [m.id for m in messages[-n:]]
        assert list(plan.messages[1:]) == messages[len(messages) - n + 1 :]
        if plan.messages[0] != messages[-n]:
            assert plan.messages[0].role == "system"
            assert plan.messages[0].tokens == counter.count(plan.messages[0].content) < messages[-n].tokens


def test_get_context_budget_on_a_long_conversation() -> None:
    manager = SessionManager(InMemoryStore(), config=LOW)
    talk(manager, "s", 120)
    manager.wait_for_tasks()
    tiny = manager.get_context("s", 15)
    assert [m.content[:13] for m in tiny.messages] == ["user turn 119"]  # the turn alone is over 15
    for budget in (60, 150, 400, 2000):
        ctx = manager.get_context("s", budget)
        assert ctx.token_count <= budget
        assert ctx.messages[-1].content.startswith("assistant reply 119")
        assert any(m.content.startswith("user turn 119") for m in ctx.messages)
    ctx = manager.get_context("s", 800)
    assert ctx.summary, "a long conversation has a running summary"
    assert ctx.messages[0].role == "user"


# -- threads ----------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_threads_every_message_once_in_order(tmp_path: Path, store_kind: str) -> None:
    store = InMemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "t.db")
    manager = SessionManager(store, config=LOW)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                role = "user" if i % 2 == 0 else "assistant"
                manager.add_message(f"s{n % 4}", role, f"t{n} m{i} about topic {i % 7}")
                if i % 50 == 0:
                    manager.get_context(f"s{n % 4}", 300)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manager.wait_for_tasks()
    assert errors == []
    for s in range(4):
        history = manager.get_history(f"s{s}")
        assert len(history) == 400 and len({m.id for m in history}) == 400
        assert [m.seq for m in history] == list(range(1, 401))
        for n in (s, s + 4):
            mine = [int(m.content.split()[1][1:]) for m in history if m.content.startswith(f"t{n} ")]
            assert mine == list(range(200))
        archives = manager.list_archives(f"s{s}", include_merged=False)
        ranges = sorted((a.first_seq, a.last_seq) for a in archives)
        assert all(a[1] < b[0] for a, b in pairwise(ranges))
        assert archives, "thresholds are low: commits happened"
    manager.close()


# -- persistence across processes ----------------------------------------------------------


def test_sqlite_reopened_in_new_process_sees_sessions_archives_state(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    manager = SessionManager(SQLiteStore(db), config=LOW)
    talk(manager, "s", 30)
    manager.wait_for_tasks()
    manager.add_message("s", "user", "please help me plan the Lisbon trip")
    manager.wait_for_tasks()  # the add may start one more commit (and merge): let it land first
    manager.save_session_state("s")
    expected_archives = [a.archive_id for a in manager.list_archives("s")]
    expected_summary = manager.get_context("s", 2000).summary
    manager.close()
    code = textwrap.dedent(
        f"""
        import json
        from ogmem_memory import SessionManager, SQLiteStore
        m = SessionManager(SQLiteStore({str(db)!r}))
        ctx = m.get_context("s", 2000)
        print(json.dumps({{
            "history": len(m.get_history("s")),
            "archives": [a.archive_id for a in m.list_archives("s")],
            "summary": ctx.summary,
            "sessions": [r.session_id for r in m.list_sessions()],
            "task": m.get_window_state("s").active_task,
        }}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    seen = json.loads(out.stdout)
    assert seen["history"] == 61
    assert seen["archives"] == expected_archives
    assert seen["summary"] == expected_summary
    assert seen["sessions"] == ["s"]
    assert seen["task"] == "please help me plan the Lisbon trip"


def test_compression_failure_keeps_everything_then_next_commit_succeeds() -> None:
    """When the compressor and its fallback both raise, the commit fails and changes nothing."""
    manager = SessionManager(
        InMemoryStore(), config=MemoryConfig(auto_commit=False), compressor=FailingCompressor(failures=1)
    )
    manager.fallback_compressor = FailingCompressor(failures=1, error="fallback exploded too")
    talk(manager, "s", 5)
    before = [(m.id, m.seq, m.status) for m in manager.get_history("s")]
    result = manager.commit("s", wait=True)
    assert result.status == "failed" and not result.archived
    assert result.error and "exploded" in result.error
    assert [(m.id, m.seq, m.status) for m in manager.get_history("s")] == before
    assert manager.list_archives("s") == []
    assert len(manager.get_context("s", 100_000).messages) == 10
    # the next commit succeeds (both compressors work again): nothing lost or duplicated
    assert manager.commit("s", wait=True).status == "completed"
    history = manager.get_history("s")
    assert [(m.id, m.seq) for m in history] == [(i, s) for i, s, _ in before]
    assert all(m.status == "archived" for m in history)
