"""How long a foreground thread waits for the GIL while commits compute in the same process.

A thread that works a little (about 20 µs of Python), then sleeps 0.2 ms, as a caller between
two I/O waits does, measures how late each of its wake-ups is while the main thread adds
messages and runs the default commits inline (``commit(wait=True)`` every ``--every``
messages: compression, archive, merge, extraction). A late wake-up is time that thread waited
for the GIL (or for a CPU: the machine's other load counts too, so compare runs made side by
side). Without hand-overs a commit holds the GIL for the interpreter's whole switch interval
(5 ms) at a time.

    python benchmarks/bench_gil.py                               # this checkout
    PYTHONPATH=<other checkout> python benchmarks/bench_gil.py   # another one, to compare
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import role, text

import ogmem_memory
from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore

_NAP = 0.2e-3


def measure(messages: int, every: int) -> list[float]:
    """Late wake-ups (seconds) of a napping thread while ``messages`` are added and committed."""
    late: list[float] = []
    stop = threading.Event()

    def napper() -> None:
        while not stop.is_set():
            sum(range(2000))  # a little Python between two waits, like a caller's
            start = time.perf_counter()
            time.sleep(_NAP)
            late.append(time.perf_counter() - start - _NAP)

    manager = SessionManager(SQLiteStore(":memory:"), config=MemoryConfig(auto_commit=False))
    thread = threading.Thread(target=napper, daemon=True)
    thread.start()
    try:
        for i in range(messages):
            manager.add_message("bench", role(i), text(i))
            if i % every == every - 1:
                manager.commit("bench", wait=True)
    finally:
        stop.set()
        thread.join()
        manager.close()
    return late


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--every", type=int, default=50, help="messages per commit (the default's ~50)")
    args = parser.parse_args(argv)
    late = sorted(measure(args.messages, args.every))
    n = len(late)

    def at(q: float) -> float:
        return late[min(n - 1, int(n * q))] * 1e3

    over = sum(1 for x in late if x > 2e-3)
    print(f"ogmem_memory from {Path(ogmem_memory.__file__).parent}")
    print(
        f"late wake-ups of a napping thread over {n} naps while {args.messages} messages were added "
        f"and committed every {args.every}: p50 {at(0.5):.3f} ms, p99 {at(0.99):.3f} ms, "
        f"p99.9 {at(0.999):.3f} ms, max {late[-1] * 1e3:.1f} ms; over 2 ms: {over} ({over / n:.1%})"
    )


if __name__ == "__main__":
    main()
