"""Core speed: durable add_message on SQLite vs SQLChatMessageHistory, get_context flatness.

Run: python benchmarks/bench_core.py [--messages 2000] [--peer-messages 300]
Prints ratios measured in this one run (no absolute time is a result on a shared machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import fmt_ms, per_call

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore


def bench_add(tmp: Path, n_ours: int, n_peer: int) -> tuple[float, float, float]:
    """Per-message seconds: ours with auto-commit (default config), ours without, the peer."""
    roles = ("user", "assistant")
    results = []
    for auto_commit in (True, False):
        manager = SessionManager(
            SQLiteStore(tmp / f"ours{auto_commit}.db"), config=MemoryConfig(auto_commit=auto_commit)
        )

        def add(i: int, m: SessionManager = manager) -> None:
            m.add_message("bench", roles[i % 2], f"message number {i} about the trip to Lisbon")

        # background commits run while we time: their CPU is part of what a caller pays
        results.append(per_call(add, n_ours))
        manager.close()

    warnings.filterwarnings("ignore")
    from langchain_community.chat_message_histories import SQLChatMessageHistory
    from langchain_core.messages import AIMessage, HumanMessage

    peer_history = SQLChatMessageHistory(session_id="bench", connection=f"sqlite:///{tmp / 'peer.db'}")
    kinds = (HumanMessage, AIMessage)
    peer = per_call(
        lambda i: peer_history.add_message(kinds[i % 2](f"message number {i} about the trip to Lisbon")),
        n_peer,
    )
    return results[0], results[1], peer


def bench_context(tmp: Path, sizes: tuple[int, ...]) -> dict[int, float]:
    """get_context per call at several history lengths, every size with archives (same config)."""
    config = MemoryConfig(commit_token_threshold=400, commit_turn_threshold=0, keep_recent_tokens=100)
    results = {}
    for size in sizes:
        manager = SessionManager(SQLiteStore(tmp / f"ctx{size}.db"), config=config)
        batch = []
        for i in range(size):
            role = "user" if i % 2 == 0 else "assistant"
            batch.append({"role": role, "content": f"turn {i}: my friend number {i} lives in town {i % 97}"})
            if len(batch) == 50:
                manager.add_messages("s", batch)
                batch = []
                manager.wait_for_tasks()
        if batch:
            manager.add_messages("s", batch)
        manager.wait_for_tasks()
        assert manager.list_archives("s"), "every size must have archives for a fair comparison"
        manager.get_context("s", 2000)  # warm the cache
        results[size] = per_call(lambda i, m=manager: m.get_context("s", 2000), 300)
        manager.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--peer-messages", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ours, ours_plain, peer = bench_add(tmp, args.messages, args.peer_messages)
        print("durable add_message on a SQLite file (per message)")
        print(f"  ogmem, auto-commit on (default config)    {fmt_ms(ours)}   peer/ours {peer / ours:.1f}x")
        print(
            f"  ogmem, auto-commit off (the write alone)  {fmt_ms(ours_plain)}   peer/ours {peer / ours_plain:.1f}x"
        )
        print(f"  langchain SQLChatMessageHistory           {fmt_ms(peer)}")
        sizes = (100, 1_000, 10_000)
        ctx = bench_context(tmp, sizes)
        print("get_context(budget=2000) by history length (per call; same config, archives at every size)")
        for size, t in ctx.items():
            print(f"  {size:>6} messages                          {fmt_ms(t)}")
        print(f"  ratio 10,000 / 100                        {ctx[10_000] / ctx[100]:.2f}x")
        print(f"  ratio 10,000 / 1,000                      {ctx[10_000] / ctx[1_000]:.2f}x")


if __name__ == "__main__":
    main()
