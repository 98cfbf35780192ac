"""LlamaIndex adapter speed against the stock memories, measured in one run (no network).

1. ``get()`` of ``OgmemChatMemoryBuffer`` (SQLite, default ``MemoryConfig``) vs the stock
   ``ChatMemoryBuffer.get()`` at 100, 1,000 and 5,000 stored messages, same ``token_limit``
   and the same tokenizer for both. The stock ``get()`` re-tokenizes the whole remaining window
   after every message it drops, so it grows quadratically; ours reads the live window.
2. ``put()`` cost per message: ours (a SQLite file, WAL + synchronous=NORMAL, our default; and
   ``memory://``) vs the stock ``ChatMemoryBuffer`` on ``SimpleChatStore`` (a list append in
   process memory) and vs ``Memory`` (SQLAlchemy, the LlamaIndex replacement of
   ``ChatMemoryBuffer``): its default store is SQLite ``:memory:`` (nothing durable), so it is
   also measured on a SQLite file set to WAL + synchronous=NORMAL through a SQLAlchemy
   ``connect`` event, which is the comparison at equal durability.

The tokenizer defaults to whitespace splitting, the cheapest possible, which makes the stock
``get()`` as fast as it can be (conservative for our ratio). ``--tiktoken`` uses LlamaIndex's
default tokenizer (tiktoken with its bundled cache, still no network) for both, as in the
measurements quoted in the issue (3.7 s at 1,000 messages, 92 s at 5,000).

Run: ``python benchmarks/bench_llama_index.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.memory import ChatMemoryBuffer, Memory
from llama_index.memory.ogmem import OgmemChatMemoryBuffer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import WAL_NORMAL, apply_modes

TOKEN_LIMIT = 3000
_TOPICS = ("the Lisbon office", "invoice INV-2291", "the staging cluster", "Ada's visa", "release 4.2.1")


def turn(i: int) -> list[ChatMessage]:
    topic = _TOPICS[i % len(_TOPICS)]
    return [
        ChatMessage(
            role="user", content=f"turn {i}: what changed about {topic} since last week, and who owns it?"
        ),
        ChatMessage(
            role="assistant",
            content=f"answer {i}: {topic} moved to the new schedule on day {i % 28 + 1}; Ben owns it now and "
            "the follow-up review is booked for Friday at 10:30.",
        ),
    ]


def history(n: int) -> list[ChatMessage]:
    return [m for i in range(n // 2) for m in turn(i)]


def timed(fn: Callable[[], object], *, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (one warm-up call first)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def ours_with(n: int, url: str, tokenizer: Callable[[str], Any]) -> OgmemChatMemoryBuffer:
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=url, session_id=f"get-{n}", token_limit=TOKEN_LIMIT, tokenizer_fn=tokenizer
    )
    for i in range(n // 2):
        memory.put_messages(turn(i))  # one turn per write, so commits happen as in a chat
    memory.manager.wait_for_tasks()
    return memory


def bench_get(sizes: Sequence[int], tokenizer: Callable[[str], Any], tmp: Path) -> list[dict[str, float]]:
    rows = []
    url = f"sqlite:///{tmp}/get.db"
    for n in sizes:
        stock = ChatMemoryBuffer.from_defaults(token_limit=TOKEN_LIMIT, tokenizer_fn=tokenizer)
        stock.set(history(n))
        start = time.perf_counter()
        stock_result = stock.get()
        stock_s = time.perf_counter() - start
        if stock_s < 1.0:
            stock_s = timed(stock.get, repeats=5)
        ours = ours_with(n, url, tokenizer)
        ours_s = timed(ours.get, repeats=30)
        ours_result = ours.get()
        rows.append(
            {
                "n": n,
                "stock": stock_s,
                "ours": ours_s,
                "stock_msgs": len(stock_result),
                "ours_msgs": len(ours_result),
            }
        )
        print(
            f"get() at {n:>5} messages: stock {stock_s * 1000:10.2f} ms ({len(stock_result)} msgs)   "
            f"ours {ours_s * 1000:7.3f} ms ({len(ours_result)} msgs, summary first)   "
            f"stock/ours = {ratio(stock_s / ours_s)}",
            flush=True,
        )
    return rows


def ratio(x: float) -> str:
    return f"{x:,.2f}x" if x < 10 else f"{x:,.0f}x"


def per_put(memory: Any, count: int, offset: int = 0) -> float:
    messages = [m for i in range(offset, offset + count // 2) for m in turn(i)]
    start = time.perf_counter()
    for m in messages:
        memory.put(m)
    return (time.perf_counter() - start) / len(messages)


EQUAL_DURABILITY = "Memory (SQLAlchemy, SQLite file, WAL+NORMAL)"
STOCK_LIST = "stock ChatMemoryBuffer + SimpleChatStore (RAM)"
OURS_FILE = "ours, SQLite file (WAL+NORMAL, default)"


def bench_put(count: int, tokenizer: Callable[[str], Any], tmp: Path) -> dict[str, float]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp}/llama_memory.db")
    event.listen(
        engine.sync_engine, "connect", lambda dbapi_conn, _record: apply_modes(dbapi_conn, WAL_NORMAL)
    )
    results = {
        STOCK_LIST: per_put(
            ChatMemoryBuffer.from_defaults(token_limit=TOKEN_LIMIT, tokenizer_fn=tokenizer), count
        ),
        "Memory, its default store (SQLite :memory:, not durable)": per_put(
            Memory.from_defaults(session_id="put", token_limit=TOKEN_LIMIT, tokenizer_fn=tokenizer), count
        ),
        EQUAL_DURABILITY: per_put(
            Memory.from_defaults(
                session_id="put", token_limit=TOKEN_LIMIT, tokenizer_fn=tokenizer, async_engine=engine
            ),
            count,
        ),
    }
    for label, url in (
        (OURS_FILE, f"sqlite:///{tmp}/put.db"),
        ("ours, memory:// (not durable)", "memory://"),
    ):
        memory = OgmemChatMemoryBuffer.from_defaults(
            url=url, session_id="put", token_limit=TOKEN_LIMIT, tokenizer_fn=tokenizer
        )
        results[label] = per_put(memory, count)
        memory.manager.wait_for_tasks()
    for label, seconds in results.items():
        print(f"put(): {label:<58} {seconds * 1000:8.3f} ms per message", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--tiktoken", action="store_true", help="LlamaIndex's default tokenizer for both")
    args = parser.parse_args()
    if args.tiktoken:
        from llama_index.core.utils import get_tokenizer

        tokenizer: Callable[[str], Any] = get_tokenizer()
    else:
        tokenizer = str.split
    sizes = (100, 400) if args.quick else (100, 1000, 5000)
    puts = 200 if args.quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_get(sizes, tokenizer, Path(tmp))
        put = bench_put(puts, tokenizer, Path(tmp))
    by_n = {int(r["n"]): r for r in rows}
    first, last = by_n[sizes[0]], by_n[sizes[-1]]
    print("\nRatios (this run, tokenizer: " + ("tiktoken" if args.tiktoken else "whitespace") + ")")
    for n, r in by_n.items():
        print(f"  get() at {n:>5}: stock time / ours = {ratio(r['stock'] / r['ours'])}")
    print(
        f"  get() flatness: ours at {sizes[-1]} / at {sizes[0]} messages = {last['ours'] / first['ours']:.2f} "
        f"(ChatMemoryBuffer: {last['stock'] / first['stock']:,.0f})"
    )
    ours_put = put[OURS_FILE]
    print(
        f"  put(): ours (SQLite file, WAL+NORMAL) {ours_put * 1000:.3f} ms = "
        f"{put[EQUAL_DURABILITY] / ours_put:.1f}x faster than Memory at equal durability (SQLite file, "
        f"WAL+NORMAL); {ours_put / put[STOCK_LIST]:,.0f}x the in-memory list append "
        f"(+{(ours_put - put[STOCK_LIST]) * 1000:.3f} ms, which stores nothing durably)"
    )


if __name__ == "__main__":
    main()
