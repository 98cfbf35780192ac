"""ogmem on PostgreSQL vs langchain-postgres ``PostgresChatMessageHistory``, same server, same run.

    python benchmarks/bench_postgres.py --dsn postgresql://postgres@127.0.0.1:5432/test

Measures, for both libraries:
- add_message with 1 and with 4 client processes (each process writes its own session;
  ogmem runs a ``SessionManager`` on ``PostgresStore`` with auto_commit on and default
  thresholds, and its time includes draining the background commits);
- reading what goes into the prompt of a 1,000-message session: ogmem ``get_context``
  (warm: the manager that wrote it; cold: a new manager on the same store, as another
  process would) vs langchain-postgres ``.messages``.

Everything lives in a throwaway schema and table, dropped at the end. Prints per-message
times and the ratio ours/theirs (below 1 means ogmem is faster).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.stores.postgres import PostgresStore

SAMPLE = (
    "the project deadline moved to Friday so Maria will review the invoice INV-2024-0042 before "
    "the meeting in Lisbon and we still need 1299 EUR for the new server plus a backup plan "
    "because the old disk failed twice last month while Bob was on holiday"
)
WORDS = SAMPLE.split(" ")


def text(i: int) -> str:
    """A chat-sized message (about 30 words), different for every ``i``."""
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(30)) + f" (turn {i})"


# -- one client process per call (module level: spawn imports these by name) ---------


def ogmem_writer(dsn: str, schema: str, session_id: str, n: int, barrier: Any, out: Any) -> None:
    manager = SessionManager(PostgresStore(dsn, schema=schema), config=MemoryConfig())
    manager.get_history(session_id)  # setup + connect outside the timed part, like a warm server
    barrier.wait()
    started = time.monotonic()
    for i in range(n):
        manager.add_message(session_id, "user" if i % 2 == 0 else "assistant", text(i))
    manager.wait_for_tasks()
    ended = time.monotonic()
    assert len(manager.get_history(session_id)) == n
    manager.close()
    out.put((started, ended))


def langchain_writer(dsn: str, table: str, session_id: str, n: int, barrier: Any, out: Any) -> None:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    with psycopg.connect(dsn) as conn:
        history = PostgresChatMessageHistory(table, session_id, sync_connection=conn)
        history.get_messages()
        barrier.wait()
        started = time.monotonic()
        for i in range(n):
            history.add_message(HumanMessage(text(i)) if i % 2 == 0 else AIMessage(text(i)))
        ended = time.monotonic()
        assert len(history.get_messages()) == n
    out.put((started, ended))


def run_writers(target: Callable[..., None], args: tuple[Any, ...], processes: int, n: int) -> float:
    """Seconds per message over all processes (wall time / messages written)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, str(uuid.uuid4()), n, barrier, out)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    spans = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"writer exited with {p.exitcode}")
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return wall / (processes * n)


def timed_pair(ours: Callable[[], object], theirs: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds per call of each, calls interleaved so both see the same machine load."""
    ours(), theirs()  # warm-up
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((ours, samples[0]), (theirs, samples[1])):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
    return statistics.median(samples[0]), statistics.median(samples[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=os.environ.get("OGMEM_TEST_POSTGRES_DSN", ""), help="PostgreSQL DSN")
    parser.add_argument("--messages", type=int, default=300, help="messages per writer process and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per write benchmark (median)"
    )
    parser.add_argument("--history", type=int, default=1000, help="session length for the read benchmark")
    parser.add_argument("--reads", type=int, default=30, help="timed reads per read benchmark")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or OGMEM_TEST_POSTGRES_DSN) is required")

    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    tag = uuid.uuid4().hex[:8]
    schema, table = f"bench_ogmem_{tag}", f"bench_langchain_{tag}"
    rows: list[tuple[str, float, float]] = []
    try:
        with psycopg.connect(args.dsn) as conn:
            PostgresChatMessageHistory.create_tables(conn, table)
        PostgresStore(args.dsn, schema=schema).setup()

        for processes in (1, 4):
            # alternating rounds, medians: a shared machine's load hits both libraries alike
            ours_runs, theirs_runs = [], []
            for _ in range(args.rounds):
                ours_runs.append(run_writers(ogmem_writer, (args.dsn, schema), processes, args.messages))
                theirs_runs.append(run_writers(langchain_writer, (args.dsn, table), processes, args.messages))
            name = f"add_message, {processes} process{'es' if processes > 1 else ''}"
            rows.append((name, statistics.median(ours_runs), statistics.median(theirs_runs)))

        # a 1,000-message session in each library
        session_id = str(uuid.uuid4())
        store = PostgresStore(args.dsn, schema=schema)
        writer = SessionManager(store, config=MemoryConfig())
        for start in range(0, args.history, 50):
            batch = range(start, min(start + 50, args.history))
            writer.add_messages(
                session_id,
                [{"role": "user" if i % 2 == 0 else "assistant", "content": text(i)} for i in batch],
            )
        writer.wait_for_tasks()
        with psycopg.connect(args.dsn) as conn:
            history = PostgresChatMessageHistory(table, session_id, sync_connection=conn)
            for start in range(0, args.history, 50):
                batch = range(start, min(start + 50, args.history))
                history.add_messages(
                    [HumanMessage(text(i)) if i % 2 == 0 else AIMessage(text(i)) for i in batch]
                )
            assert len(history.messages) == args.history

            def cold_read() -> None:
                SessionManager(store, config=MemoryConfig()).get_context(session_id)

            warm, theirs = timed_pair(
                lambda: writer.get_context(session_id), lambda: history.messages, args.reads
            )
            rows.append((f"get_context (warm) vs .messages @{args.history}", warm, theirs))
            cold, theirs = timed_pair(cold_read, lambda: history.messages, args.reads)
            rows.append((f"get_context (cold) vs .messages @{args.history}", cold, theirs))
        context = writer.get_context(session_id)
        writer.close()
        store.close()
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    print(
        f"\nPostgreSQL {args.dsn.rsplit('@', 1)[-1]} | {args.messages} messages per writer process, "
        f"median of {args.rounds} rounds | reads: median of {args.reads}"
    )
    print(f"{'ms per message / per read':<42} {'ogmem':>10} {'langchain':>13} {'ours/theirs':>12}")
    for name, ours, theirs in rows:
        print(f"{name:<42} {ours * 1000:>10.3f} {theirs * 1000:>13.3f} {ours / theirs:>12.2f}")
    print(
        f"\nget_context returned {len(context.messages)} recent messages, {len(context.recalled)} recalled, "
        f"a {len(context.summary)}-char summary: {context.token_count}/{context.budget} tokens "
        f"(.messages returns all {args.history})."
    )


if __name__ == "__main__":
    main()
