"""ogmem on PostgreSQL vs langchain-postgres ``PostgresChatMessageHistory``, same server, same run.

    python benchmarks/bench_postgres.py --dsn postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/bench_postgres.py --quick      # DSN from $OGMEM_TEST_POSTGRES_DSN

Writes, with 1 and with 4 client processes (each process writes its own session), in
interleaved rounds (ogmem, langchain, ogmem, langchain, ...), medians:
- one message per call: ogmem ``add_message`` vs ``add_message``;
- a two-message turn per call, what ``RunnableWithMessageHistory`` writes: ogmem
  ``add_messages([human, ai])`` vs ``add_messages([human, ai])``.
ogmem runs a ``SessionManager`` on ``PostgresStore`` with the default ``MemoryConfig``
(threshold commits on) and its time runs until ``wait_for_tasks()`` returns, so the work of
its background commits counts. The worker processes start once and stay up across rounds.

Reads: what goes into the prompt of a 1,000-message session, ogmem ``get_context`` (warm:
the manager that wrote it; cold: a new manager on the same store, as another process would)
vs ``.messages``.

Both sides commit every write durably on the same server: the output prints the server's
``synchronous_commit``, ``fsync`` and ``wal_sync_method`` as each side's connection sees them.
Everything lives in a throwaway schema and table, dropped at the end. Ratios are theirs/ours
(above 1 means ogmem is faster).
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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import ratio, role, text, verdict

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.stores.postgres import PostgresStore

_SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method")


def server_durability(conn: psycopg.Connection[Any]) -> str:
    """What this connection commits with (the server's settings, or a session override)."""
    values = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}" for name in _SETTINGS]  # type: ignore[index]
    if not conn.autocommit:
        conn.rollback()
    return " ".join(values)


# -- worker processes (module level: spawn imports these by name) ------------------------------


def worker(pipe: Connection, dsn: str, schema: str, table: str) -> None:
    """One client process holding both libraries; runs the blocks the parent asks for."""
    import warnings

    warnings.filterwarnings("ignore")
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    manager = SessionManager(PostgresStore(dsn, schema=schema), config=MemoryConfig())
    peer_conn = psycopg.connect(dsn)
    sessions = {mode: str(uuid.uuid4()) for mode in ("one", "turn")}
    histories = {
        mode: PostgresChatMessageHistory(table, sid, sync_connection=peer_conn)
        for mode, sid in sessions.items()
    }
    for sid in sessions.values():
        manager.get_history(sid)  # setup + connect outside the timed part, like a warm server
    for history in histories.values():
        history.get_messages()
    written = {(lib, mode): 0 for lib in ("ogmem", "langchain") for mode in ("one", "turn")}
    kinds = (HumanMessage, AIMessage)
    pipe.send(("ready", server_durability(peer_conn)))
    while True:
        command = pipe.recv()
        if command[0] == "stop":
            break
        _, lib, mode, n, start_at = command
        first = written[(lib, mode)]
        sid, history = sessions[mode], histories[mode]
        while time.monotonic() < start_at:  # CLOCK_MONOTONIC is system-wide: all start together
            time.sleep(0.0005)
        began = time.monotonic()
        if lib == "ogmem" and mode == "one":
            for i in range(first, first + n):
                manager.add_message(sid, role(i), text(i))
            manager.wait_for_tasks()
        elif lib == "ogmem":
            for i in range(first, first + n, 2):
                manager.add_messages(sid, [{"role": role(j), "content": text(j)} for j in (i, i + 1)])
            manager.wait_for_tasks()
        elif mode == "one":
            for i in range(first, first + n):
                history.add_message(kinds[i % 2](text(i)))
        else:
            for i in range(first, first + n, 2):
                history.add_messages([kinds[j % 2](text(j)) for j in (i, i + 1)])
        ended = time.monotonic()
        written[(lib, mode)] = first + n
        pipe.send((began, ended))
    counts = {
        "ogmem": sum(len(manager.get_history(sid)) for sid in sessions.values()),
        "langchain": sum(len(h.get_messages()) for h in histories.values()),
    }
    manager.close()
    peer_conn.close()
    pipe.send(counts)


class Workers:
    """``count`` long-lived client processes; ``run`` times one block on the first ``processes``."""

    def __init__(self, count: int, dsn: str, schema: str, table: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, dsn, schema, table), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        replies = [self._recv(p, 120) for p in self.pipes]
        self.peer_durability = replies[0][1]

    @staticmethod
    def _recv(pipe: Connection, timeout: float) -> Any:
        if not pipe.poll(timeout):
            raise RuntimeError("a benchmark worker did not answer in time")
        return pipe.recv()

    def run(self, lib: str, mode: str, processes: int, n: int) -> float:
        """Seconds per message over ``processes`` workers writing ``n`` messages each at once."""
        start_at = time.monotonic() + 0.05
        for pipe in self.pipes[:processes]:
            pipe.send(("run", lib, mode, n, start_at))
        spans = [self._recv(pipe, 600) for pipe in self.pipes[:processes]]
        wall: float = max(e for _, e in spans) - min(s for s, _ in spans)
        return wall / (processes * n)

    def stop(self) -> list[dict[str, int]]:
        for pipe in self.pipes:
            pipe.send(("stop",))
        counts = [self._recv(pipe, 120) for pipe in self.pipes]
        for proc in self.procs:
            proc.join(30)
        return counts

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()


def analyze(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    """ANALYZE both sides' tables, as autovacuum would (planner statistics for the recall query)."""
    names = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
        (schema,),
    ).fetchall()
    for (name,) in names:
        conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    conn.commit()


def timed_pair(
    ours: Callable[[], object], theirs: Callable[[], object], repeat: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of each, calls interleaved so both see the same machine load."""
    ours(), theirs()  # warm-up
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((ours, samples[0]), (theirs, samples[1])):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=os.environ.get("OGMEM_TEST_POSTGRES_DSN", ""), help="PostgreSQL DSN")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and messages, for a smoke run")
    parser.add_argument("--messages", type=int, help="messages per writer process and round (even)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per write benchmark (median)")
    parser.add_argument("--history", type=int, default=1000, help="session length for the read benchmark")
    parser.add_argument("--reads", type=int, help="timed reads per read benchmark")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or OGMEM_TEST_POSTGRES_DSN) is required")
    n = args.messages or (60 if args.quick else 200)
    n += n % 2
    rounds = args.rounds or (3 if args.quick else 5)
    reads = args.reads or (10 if args.quick else 30)

    import warnings

    warnings.filterwarnings("ignore")
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    tag = uuid.uuid4().hex[:8]
    schema, table = f"bench_ogmem_{tag}", f"bench_langchain_{tag}"
    writes: list[tuple[str, list[float], list[float], float]] = []
    peer_durability = autovacuum = ""
    reads_rows: list[tuple[str, list[float], list[float]]] = []
    workers: Workers | None = None
    try:
        with psycopg.connect(args.dsn) as conn:
            PostgresChatMessageHistory.create_tables(conn, table)
            ours_durability = server_durability(conn)
            autovacuum = str(conn.execute("SHOW autovacuum").fetchone()[0])  # type: ignore[index]
            conn.commit()
        setup_store = PostgresStore(args.dsn, schema=schema)
        setup_store.setup()
        setup_store.close()

        workers = Workers(4, args.dsn, schema, table)
        peer_durability = workers.peer_durability
        samples: dict[tuple[str, str, int], list[float]] = {}
        for _ in range(rounds):
            for processes in (1, 4):
                for mode in ("one", "turn"):
                    for lib in ("ogmem", "langchain"):
                        samples.setdefault((lib, mode, processes), []).append(
                            workers.run(lib, mode, processes, n)
                        )
        counts = workers.stop()
        workers = None
        for processes in (1, 4):
            for mode, what, target in (
                ("one", "add_message", 1.0),
                ("turn", "two-message turn (add_messages)", 1.5),
            ):
                plural = "es" if processes > 1 else ""
                writes.append(
                    (
                        f"{what}, {processes} process{plural}",
                        samples[("ogmem", mode, processes)],
                        samples[("langchain", mode, processes)],
                        target,
                    )
                )

        # a 1,000-message session in each library
        session_id = str(uuid.uuid4())
        store = PostgresStore(args.dsn, schema=schema)
        writer = SessionManager(store, config=MemoryConfig())
        for start in range(0, args.history, 2):
            writer.add_messages(
                session_id, [{"role": role(i), "content": text(i)} for i in (start, start + 1)]
            )
        writer.wait_for_tasks()
        with psycopg.connect(args.dsn) as conn:
            history = PostgresChatMessageHistory(table, session_id, sync_connection=conn)
            for start in range(0, args.history, 50):
                history.add_messages(
                    [(HumanMessage if i % 2 == 0 else AIMessage)(text(i)) for i in range(start, start + 50)]
                )
            assert len(history.messages) == args.history

            def cold_read() -> None:
                SessionManager(store, config=MemoryConfig(), owns_store=False).get_context(session_id)

            warm, theirs = timed_pair(lambda: writer.get_context(session_id), lambda: history.messages, reads)
            reads_rows.append((f"get_context (warm), never analyzed @{args.history}", warm, theirs))
            analyze(conn, schema, table)  # what autovacuum does on a production server
            warm, theirs = timed_pair(lambda: writer.get_context(session_id), lambda: history.messages, reads)
            reads_rows.append((f"get_context (warm) vs .messages @{args.history}", warm, theirs))
            cold, theirs = timed_pair(cold_read, lambda: history.messages, reads)
            reads_rows.append((f"get_context (cold) vs .messages @{args.history}", cold, theirs))
        context = writer.get_context(session_id)
        archives = len(writer.list_archives(session_id))
        writer.close()
    finally:
        if workers is not None:
            workers.kill()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    print(
        f"PostgreSQL {args.dsn.rsplit('@', 1)[-1]} | {n} messages per writer process and round, "
        f"median of {rounds} interleaved rounds | reads: median of {reads}"
    )
    print(f"  ogmem PostgresStore (autocommit, one statement per write):  {ours_durability}")
    print(f"  langchain PostgresChatMessageHistory (commit per call):      {peer_durability}")
    print(f"\n{'ms per message':<42} {'ogmem':>9} {'langchain':>10} {'theirs/ours':>12}")
    for name, ours, theirs, target in writes:
        r = ratio(theirs, ours)
        print(
            f"{name:<42} {statistics.median(ours) * 1000:>9.3f} {statistics.median(theirs) * 1000:>10.3f} "
            f"{r:>11.2f}x   {verdict(r, target, at_most=False)}"
        )
    print(
        f"\n{'ms per read':<42} {'ogmem':>9} {'langchain':>10} {'theirs/ours':>12}   "
        f"(server: autovacuum={autovacuum}; the first row runs on tables never analyzed)"
    )
    for name, ours, theirs in reads_rows:
        print(
            f"{name:<42} {statistics.median(ours) * 1000:>9.3f} {statistics.median(theirs) * 1000:>10.3f} "
            f"{ratio(theirs, ours):>11.2f}x"
        )
    print(
        f"\nget_context returned {len(context.messages)} recent messages, {len(context.recalled)} recalled, "
        f"a {len(context.summary)}-char summary from {archives} archives: {context.token_count}/{context.budget} "
        f"tokens (.messages returns all {args.history})."
    )
    stored = {lib: sum(c[lib] for c in counts) for lib in ("ogmem", "langchain")}
    print(f"messages stored by the writers: ogmem {stored['ogmem']}, langchain {stored['langchain']}")


if __name__ == "__main__":
    main()
