"""asyncio tasks and OS processes on one memory: exactly the sequential result."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from itertools import pairwise
from pathlib import Path

import pytest

from ogmem_memory import InMemoryStore, MemoryConfig, SessionManager, SQLiteStore

LOW = MemoryConfig(
    commit_token_threshold=150, commit_turn_threshold=4, keep_recent_messages=2, keep_recent_tokens=20
)


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_fifty_concurrent_aadd_message_tasks(tmp_path: Path, store_kind: str) -> None:
    store = InMemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "a.db")
    manager = SessionManager(store, config=LOW)
    await asyncio.gather(
        *(manager.aadd_message("s", "user", f"task {i} says hello about item {i}") for i in range(50))
    )
    await asyncio.gather(
        *(
            manager.aadd_messages(
                "s",
                [
                    {"role": "user", "content": f"batch {i} a"},
                    {"role": "assistant", "content": f"batch {i} b"},
                ],
            )
            for i in range(25)
        )
    )
    await manager.await_for_tasks()
    history = await manager.aget_history("s")
    assert len(history) == 100 and len({m.id for m in history}) == 100
    assert sorted(m.content for m in history if m.content.startswith("task")) == sorted(
        f"task {i} says hello about item {i}" for i in range(50)
    )
    for i in range(25):  # each batch is contiguous: one transaction
        a = next(m for m in history if m.content == f"batch {i} a")
        b = next(m for m in history if m.content == f"batch {i} b")
        assert b.seq == a.seq + 1
    ctx = await manager.aget_context("s", 200)
    assert ctx.token_count <= 200
    result = await manager.acommit("s", wait=True)
    assert result.status == "completed" and result.archived
    assert all(m.status == "archived" for m in await manager.aget_history("s"))
    await manager.aclear_session("s")
    assert await manager.aget_history("s") == []
    await manager.aclose()


WORKER = textwrap.dedent(
    """
    import sys
    from ogmem_memory import SessionManager, SQLiteStore, MemoryConfig
    cfg = MemoryConfig(commit_token_threshold=150, commit_turn_threshold=4,
                       keep_recent_messages=2, keep_recent_tokens=20)
    worker = int(sys.argv[2])
    with SessionManager(SQLiteStore(sys.argv[1]), config=cfg) as m:
        for i in range(100):
            m.add_message(f"shared{i % 2}", "user" if i % 4 < 2 else "assistant", f"w{worker} n{i} notes about {i}")
        m.wait_for_tasks()
    """
)


def test_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    SQLiteStore(db).setup()  # migrate once up front, like a deployment would
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(w)]) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    manager = SessionManager(SQLiteStore(db))
    for s in range(2):
        history = manager.get_history(f"shared{s}")
        assert len(history) == 200 and len({m.id for m in history}) == 200
        assert [m.seq for m in history] == list(range(1, 201))
        for w in range(4):
            mine = [int(m.content.split()[1][1:]) for m in history if m.content.startswith(f"w{w} ")]
            assert mine == [i for i in range(100) if i % 2 == s]
        archives = manager.list_archives(f"shared{s}")
        assert archives
        ranges = sorted((a.first_seq, a.last_seq) for a in archives)
        assert all(a[1] < b[0] for a, b in pairwise(ranges))
        archived = {m.seq for m in history if m.status == "archived"}
        covered = {seq for lo, hi in ranges for seq in range(lo, hi + 1)} & {m.seq for m in history}
        assert archived <= covered
        # a new process's context holds the newest messages of every writer
        ctx = manager.get_context(f"shared{s}", 10_000)
        assert ctx.messages[-1].seq == history[-1].seq == 200
