"""What one ``add_message`` waits for while background commits run: latency percentiles.

    python benchmarks/bench_latency.py            # 6 rounds of 1,500 messages per side
    python benchmarks/bench_latency.py --quick

Interleaved rounds on SQLite files, every side at WAL + synchronous=NORMAL (printed as read
back): ogmem with the default config (threshold commits compress, archive and extract in a
background thread of the same process, so they compete with the caller for the GIL and the
file), ogmem with commits off, and langchain-community ``SQLChatMessageHistory`` (WAL + NORMAL
through a SQLAlchemy ``connect`` event). Each call is timed alone; the percentiles are over
all calls of all rounds, the ratios the median of the per-round ratios. Ours with commits is
drained untimed after its block (``wait_for_tasks()``), so no other side shares the machine with its commits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import WAL_NORMAL, role, text
from bench_core import Peer, equal_checkpoints, ogmem_modes

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.stores import SQLiteStore

QUANTILES = (0.5, 0.9, 0.99)


def timed_calls(add: Callable[[int], None], start: int, count: int) -> list[float]:
    out = []
    for i in range(start, start + count):
        began = time.perf_counter()
        add(i)
        out.append(time.perf_counter() - began)
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 600 messages")
    args = parser.parse_args(argv)
    rounds, block = (3, 600) if args.quick else (6, 1500)
    warnings.filterwarnings("ignore")  # langchain-community is sunset and says so on import
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pages = equal_checkpoints(tmp)  # a checkpoint every 1,000 messages on every side
        ours = SessionManager(SQLiteStore(tmp / "ours.db", checkpoint_pages=pages["default"][0]))
        off = SessionManager(
            SQLiteStore(tmp / "off.db", checkpoint_pages=pages["off"][0]),
            config=MemoryConfig(auto_commit=False),
        )
        peer = Peer(tmp / "peer.db", WAL_NORMAL, pages["peer"][0])
        sides: dict[str, Callable[[int], None]] = {
            "ours": lambda i: ours.add_message("bench", role(i), text(i)),
            "off": lambda i: off.add_message("bench", role(i), text(i)),
            "peer": peer.add,
        }
        try:
            for add in sides.values():
                add(0)
            assert isinstance(ours.store, SQLiteStore) and isinstance(off.store, SQLiteStore)
            modes = {"ours": ogmem_modes(ours.store), "off": ogmem_modes(off.store), "peer": peer.modes}
            samples: dict[str, list[list[float]]] = {name: [] for name in sides}
            for r in range(rounds):
                for name, add in sides.items():
                    samples[name].append(timed_calls(add, 1 + r * block, block))
                    ours.wait_for_tasks()  # untimed: the next side starts with no commit running
            archives = len(ours.list_archives("bench", include_merged=True))
        finally:
            ours.close()
            off.close()
            peer.close()
    labels = {
        "ours": "ogmem, default config (background commits)",
        "off": "ogmem, commits off",
        "peer": "langchain SQLChatMessageHistory (connect event)",
    }
    print(
        f"add_message latency, {rounds} interleaved rounds of {block} calls per side ({archives} archives made)"
    )
    for name, label in labels.items():
        every = [x for run in samples[name] for x in run]
        cells = "  ".join(f"p{int(q * 100)} {quantile(every, q) * 1e3:7.3f} ms" for q in QUANTILES)
        print(f"  {label:<50} {modes[name].label:<32} {cells}")
    print("ratios (median of the per-round ratios)")
    for q in QUANTILES:
        per_round = [
            quantile(p, q) / quantile(o, q) for p, o in zip(samples["peer"], samples["ours"], strict=True)
        ]
        print(
            f"  peer / ours default, p{int(q * 100):<3}                         {statistics.median(per_round):6.2f}x"
        )


if __name__ == "__main__":
    main()
