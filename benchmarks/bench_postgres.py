"""ogmem on PostgreSQL vs langchain-postgres ``PostgresChatMessageHistory``, same server, same run.

    python benchmarks/bench_postgres.py --dsn postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/bench_postgres.py --quick      # DSN from $OGMEM_TEST_POSTGRES_DSN
    python benchmarks/bench_postgres.py --baseline /tmp/ogmem-old   # before -> after, one run

Writes, with 1 and with 4 client processes (each process writes its own session), in
interleaved rounds (ogmem, [baseline,] langchain, then rotated: who goes first changes
every round), medians:
- one message per call: ogmem ``add_message`` vs ``add_message``;
- a two-message turn per call, what ``RunnableWithMessageHistory`` writes: ogmem
  ``add_messages([human, ai])`` vs ``add_messages([human, ai])``.
ogmem runs a ``SessionManager`` on ``PostgresStore`` with the default ``MemoryConfig``
(threshold commits on). Two timings of the same blocks: until ``wait_for_tasks()`` returns,
so the work of its background commits (compression, archive, recall index, long-term
extraction: work the peer does not do at all) is INCLUDED; and until the last call returned,
what a caller waits for (every write is durable when its call returns, on both sides; the
commits running meanwhile compete for the same cores; what is left of them is drained
untimed before the next block starts, so none of it lands in another side's time). The
worker processes start once and stay up across rounds.

The physical limit, as another interleaved side: raw psycopg inserting one plain row per
autocommit call (one two-row INSERT per call for a turn), so it pays one WAL flush per call
like both libraries. Its table prints how close ogmem comes to it (raw/ours) and the most
any theirs/ours ratio can be at that limit (langchain/raw).

Reads: what goes into the prompt of a 1,000-message session in a database the writers
filled, ogmem ``get_context`` (warm: the manager that wrote it; cold: a new manager on the
same store, as another process would) vs ``.messages``; each timed in its own process.

``--baseline DIR`` adds a third side: another ogmem source tree (e.g. ``git worktree add DIR
<commit>``) run by its own worker processes on its own schema, interleaved with the other
two, so before -> after is measured in the same run on the same load.

Both sides commit every write durably on the same server: the output prints the server's
``synchronous_commit``, ``fsync`` and ``wal_sync_method`` as each side's connection sees them.
Everything lives in throwaway schemas and a table, dropped at the end. Ratios are
theirs/ours (above 1 means ogmem is faster), medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import ratio, role, text, verdict

import ogmem_memory
from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.stores.postgres import PostgresStore

_SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method")
# The physical limit: one plain row (or one two-row INSERT for a turn) per autocommit call,
# so one WAL flush per call like both libraries; no index but the key.
RAW_TABLE = "CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, session_id TEXT NOT NULL, content TEXT NOT NULL)"
# The sides the ogmem workers run besides ogmem itself: side name -> what a worker calls it.
PEERS = {"langchain": "langchain", "raw": "raw", "commits off": "ogmem-nc"}


def server_durability(conn: psycopg.Connection[Any]) -> str:
    """What this connection commits with (the server's settings, or a session override)."""
    values = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}" for name in _SETTINGS]  # type: ignore[index]
    if not conn.autocommit:
        conn.rollback()
    return " ".join(values)


# -- worker processes (module level: spawn imports these by name) ------------------------------


def worker(pipe: Connection, dsn: str, schema: str, table: str, raw: str) -> None:
    """One client process holding both libraries; runs the blocks the parent asks for."""
    import warnings

    warnings.filterwarnings("ignore")
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    store = PostgresStore(dsn, schema=schema)
    manager = SessionManager(store, config=MemoryConfig())
    managers = {  # "ogmem-nc": the same store with commits off (the write path alone)
        "ogmem": manager,
        "ogmem-nc": SessionManager(store, config=MemoryConfig(auto_commit=False), owns_store=False),
    }
    peer_conn = psycopg.connect(dsn)
    raw_conn = psycopg.connect(dsn, autocommit=True)  # "raw": the physical limit (see RAW_TABLE)
    raw_one = sql.SQL("INSERT INTO {} (session_id, content) VALUES (%s, %s)").format(sql.Identifier(raw))
    raw_two = sql.SQL("INSERT INTO {} (session_id, content) VALUES (%s, %s), (%s, %s)").format(
        sql.Identifier(raw)
    )
    libs = ("ogmem", "ogmem-nc", "langchain", "raw")
    sessions = {(lib, mode): str(uuid.uuid4()) for lib in libs for mode in ("one", "turn")}
    histories = {
        mode: PostgresChatMessageHistory(table, sessions[("langchain", mode)], sync_connection=peer_conn)
        for mode in ("one", "turn")
    }
    for (lib, _mode), sid in sessions.items():
        if lib in ("ogmem", "ogmem-nc"):
            managers[lib].get_history(sid)  # setup + connect outside the timed part, like a warm server
    for history in histories.values():
        history.get_messages()
    written = {(lib, mode): 0 for lib in libs for mode in ("one", "turn")}
    kinds = (HumanMessage, AIMessage)
    pipe.send(("ready", server_durability(peer_conn), str(Path(ogmem_memory.__file__).parent)))
    read_sid = ""
    while True:
        command = pipe.recv()
        if command[0] == "stop":
            break
        if command[0] == "build":  # a session of command[1] messages, written in turns
            read_sid = str(uuid.uuid4())
            for start in range(0, command[1], 2):
                manager.add_messages(
                    read_sid, [{"role": role(i), "content": text(i)} for i in (start, start + 1)]
                )
            manager.wait_for_tasks()
            pipe.send(read_sid)
            continue
        if command[0] == "read":
            reader = (
                manager
                if command[1] == "warm"
                else SessionManager(store, config=MemoryConfig(), owns_store=False)
            )
            began = time.perf_counter()
            context = reader.get_context(read_sid)
            elapsed = time.perf_counter() - began
            archives = len(reader.list_archives(read_sid))
            pipe.send(
                (
                    elapsed,
                    len(context.messages),
                    len(context.recalled),
                    len(context.summary),
                    archives,
                    context.token_count,
                    context.budget,
                )
            )
            continue
        _, lib, mode, n, start_at = command
        first = written[(lib, mode)]
        sid, history, writer = sessions[(lib, mode)], histories[mode], managers.get(lib, manager)
        while time.monotonic() < start_at:  # CLOCK_MONOTONIC is system-wide: all start together
            time.sleep(0.0005)
        began = time.monotonic()
        if lib == "raw" and mode == "one":
            for i in range(first, first + n):
                raw_conn.execute(raw_one, (sid, text(i)))
        elif lib == "raw":
            for i in range(first, first + n, 2):
                raw_conn.execute(raw_two, (sid, text(i), sid, text(i + 1)))
        elif lib != "langchain" and mode == "one":
            for i in range(first, first + n):
                writer.add_message(sid, role(i), text(i))
        elif lib != "langchain":
            for i in range(first, first + n, 2):
                writer.add_messages(sid, [{"role": role(j), "content": text(j)} for j in (i, i + 1)])
        elif mode == "one":
            for i in range(first, first + n):
                history.add_message(kinds[i % 2](text(i)))
        else:
            for i in range(first, first + n, 2):
                history.add_messages([kinds[j % 2](text(j)) for j in (i, i + 1)])
        acknowledged = time.monotonic()  # the last call returned (every write durable)
        manager.wait_for_tasks()  # ogmem's background commits (nothing to wait for after langchain)
        ended = time.monotonic()
        written[(lib, mode)] = first + n
        pipe.send((began, acknowledged, ended))
    counts = {
        "ogmem": sum(len(manager.get_history(sessions[("ogmem", mode)])) for mode in ("one", "turn")),
        "langchain": sum(len(h.get_messages()) for h in histories.values()),
    }
    managers["ogmem-nc"].close()
    manager.close()
    peer_conn.close()
    raw_conn.close()
    pipe.send(counts)


class Workers:
    """``count`` long-lived client processes; ``run`` times one block on the first ``processes``.

    ``source``: an ogmem source tree the processes import instead of this one (spawn hands
    the parent's ``sys.path`` to the child, so it goes first there while they start).
    """

    def __init__(
        self, count: int, dsn: str, schema: str, table: str, raw: str, source: str | None = None
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        if source is not None:
            sys.path.insert(0, source)
        try:
            for _ in range(count):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=worker, args=(child, dsn, schema, table, raw), daemon=True)
                proc.start()
                self.pipes.append(parent)
                self.procs.append(proc)
        finally:
            if source is not None:
                sys.path.remove(source)
        replies = [self._recv(p, 120) for p in self.pipes]
        self.peer_durability = replies[0][1]
        self.package = replies[0][2]

    @staticmethod
    def _recv(pipe: Connection, timeout: float) -> Any:
        if not pipe.poll(timeout):
            raise RuntimeError("a benchmark worker did not answer in time")
        return pipe.recv()

    def run(self, lib: str, mode: str, processes: int, n: int) -> tuple[float, float]:
        """Seconds per message over ``processes`` workers writing ``n`` messages each at once:
        until every call returned, and until every background commit finished too."""
        start_at = time.monotonic() + 0.05
        for pipe in self.pipes[:processes]:
            pipe.send(("run", lib, mode, n, start_at))
        spans = [self._recv(pipe, 600) for pipe in self.pipes[:processes]]
        began = min(span[0] for span in spans)
        acknowledged: float = max(span[1] for span in spans) - began
        drained: float = max(span[2] for span in spans) - began
        return acknowledged / (processes * n), drained / (processes * n)

    def ask(self, *command: Any) -> Any:
        """One command on the first worker, its answer."""
        self.pipes[0].send(command)
        return self._recv(self.pipes[0], 600)

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


def analyze(conn: psycopg.Connection[Any], schemas: list[str], table: str) -> None:
    """ANALYZE every side's tables, as autovacuum would (planner statistics for the recall query)."""
    for schema in schemas:
        names = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,),
        ).fetchall()
        for (name,) in names:
            conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    conn.commit()


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:>9.3f}"


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
    parser.add_argument("--baseline", help="another ogmem source tree, measured as a third side")
    parser.add_argument(
        "--commits-off",
        action="store_true",
        help="also time ogmem with auto_commit=False (the write path alone)",
    )
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or OGMEM_TEST_POSTGRES_DSN) is required")
    if args.baseline and not (Path(args.baseline) / "ogmem_memory" / "__init__.py").exists():
        parser.error(f"--baseline {args.baseline}: no ogmem_memory package there")
    n = args.messages or (60 if args.quick else 200)
    n += n % 2
    rounds = args.rounds or (3 if args.quick else 5)
    reads = args.reads or (10 if args.quick else 30)

    import warnings

    warnings.filterwarnings("ignore")
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    tag = uuid.uuid4().hex[:8]
    schema, table, raw = f"bench_ogmem_{tag}", f"bench_langchain_{tag}", f"bench_raw_{tag}"
    sides = {"ogmem": (schema, None)}
    if args.baseline:
        sides["baseline"] = (f"bench_ogmem_base_{tag}", str(Path(args.baseline).resolve()))
    samples: dict[tuple[str, str, int], list[float]] = {}
    read_samples: dict[tuple[str, str], list[float]] = {}
    described: dict[str, tuple[Any, ...]] = {}
    workers: dict[str, Workers] = {}
    counts: dict[str, list[dict[str, int]]] = {}
    peer_durability = autovacuum = ""
    try:
        with psycopg.connect(args.dsn) as conn:
            PostgresChatMessageHistory.create_tables(conn, table)
            conn.execute(sql.SQL(RAW_TABLE).format(sql.Identifier(raw)))
            conn.commit()
            ours_durability = server_durability(conn)
            autovacuum = str(conn.execute("SHOW autovacuum").fetchone()[0])  # type: ignore[index]
            conn.commit()
        setup_store = PostgresStore(args.dsn, schema=schema)
        setup_store.setup()
        setup_store.close()

        for side, (side_schema, source) in sides.items():
            workers[side] = Workers(4, args.dsn, side_schema, table, raw, source)
        peer_durability = workers["ogmem"].peer_durability
        order = [*sides, "langchain", "raw"] + (["commits off"] if args.commits_off else [])
        for r in range(rounds):
            turn = order[r % len(order) :] + order[: r % len(order)]  # who goes first rotates
            for processes in (1, 4):
                for mode in ("one", "turn"):
                    for side in turn:
                        if side in PEERS:
                            runner, lib = workers["ogmem"], PEERS[side]
                        else:
                            runner, lib = workers[side], "ogmem"
                        acknowledged, drained = runner.run(lib, mode, processes, n)
                        samples.setdefault((side, mode, processes), []).append(drained)
                        samples.setdefault((side + " ack", mode, processes), []).append(acknowledged)

        # reads: a session of --history messages per ogmem side, in the database the writers filled
        read_sids = {side: w.ask("build", args.history) for side, w in workers.items()}
        with psycopg.connect(args.dsn) as conn:
            history = PostgresChatMessageHistory(table, str(uuid.uuid4()), sync_connection=conn)
            for start in range(0, args.history, 50):
                history.add_messages(
                    [(HumanMessage if i % 2 == 0 else AIMessage)(text(i)) for i in range(start, start + 50)]
                )
            assert len(history.messages) == args.history and all(read_sids.values())

            def theirs() -> float:
                began = time.perf_counter()
                history.messages  # noqa: B018 - the read is the point
                return time.perf_counter() - began

            for kind in ("never analyzed", "warm", "cold"):
                if kind == "warm":
                    analyze(conn, [s for s, _ in sides.values()], table)  # what autovacuum does
                for w in workers.values():
                    w.ask("read", "cold" if kind == "cold" else "warm")  # warm-up
                for _ in range(reads):
                    for side, w in workers.items():
                        answer = w.ask("read", "cold" if kind == "cold" else "warm")
                        read_samples.setdefault((side, kind), []).append(answer[0])
                        described[side] = answer[1:]
                    read_samples.setdefault(("langchain", kind), []).append(theirs())
        for side, w in workers.items():
            counts[side] = w.stop()
        workers = {}
    finally:
        for w in workers.values():
            w.kill()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for side_schema, _ in sides.values():
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(side_schema)))
            for name in (table, raw):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))

    base = "baseline" in sides
    print(
        f"PostgreSQL {args.dsn.rsplit('@', 1)[-1]} | {n} messages per writer process and round, "
        f"median of {rounds} interleaved rounds | reads: median of {reads}"
    )
    print(f"  ogmem PostgresStore (autocommit, one statement per write):  {ours_durability}")
    print(f"  langchain PostgresChatMessageHistory (commit per call):      {peer_durability}")
    if base:
        print(f"  baseline: {sides['baseline'][1]}  (this tree: {Path(ogmem_memory.__file__).parent.parent})")
    head = f"{'baseline':>9} " if base else ""
    after = f" {'base/ours':>10}" if base else ""
    for suffix, title in (
        ("", "ms per message, ogmem until its background commits finished (commit work INCLUDED)"),
        (
            " ack",
            "ms per message until the last call returned (both durable; ogmem's commits drained untimed)",
        ),
    ):
        print(f"\n{title}\n{'':<42} {'ogmem':>9} {head}{'langchain':>10} {'theirs/ours':>12}{after}")
        for processes in (1, 4):
            for mode, what, target in (
                ("one", "add_message", 1.0),
                ("turn", "two-message turn (add_messages)", 1.5),
            ):
                name = f"{what}, {processes} process{'es' if processes > 1 else ''}"
                ours = samples[("ogmem" + suffix, mode, processes)]
                theirs = samples[("langchain", mode, processes)]
                r = ratio(theirs, ours)
                before = samples[("baseline" + suffix, mode, processes)] if base else []
                cols = f"{ms(before)} " if base else ""
                speedup = f" {ratio(before, ours):>9.2f}x" if base else ""
                print(
                    f"{name:<42} {ms(ours)} {cols}{ms(theirs):>10} {r:>11.2f}x{speedup}   "
                    f"{verdict(r, target, at_most=False)}"
                )
    if args.commits_off:
        print(
            "\nms per message, ogmem with auto_commit=False (the write path alone; same store and processes)"
        )
        for processes in (1, 4):
            for mode, what in (("one", "add_message"), ("turn", "two-message turn (add_messages)")):
                name = f"{what}, {processes} process{'es' if processes > 1 else ''}"
                ours, theirs = (
                    samples[("commits off", mode, processes)],
                    samples[("langchain", mode, processes)],
                )
                print(f"{name:<42} {ms(ours)} {ms(theirs):>10} {ratio(theirs, ours):>11.2f}x")
    print(
        "\nms per message, raw psycopg: one plain INSERT per autocommit call (one row, or two for a turn),"
        "\none WAL flush per call as on both sides: the physical limit. raw/ours: how close ogmem (commits"
        "\nINCLUDED) comes to it; langchain/raw: the most any theirs/ours ratio can be at that limit"
    )
    print(f"{'':<42} {'raw':>9} {'ogmem':>9} {'langchain':>10} {'raw/ours':>9} {'langchain/raw':>14}")
    for processes in (1, 4):
        for mode, what in (("one", "add_message"), ("turn", "two-message turn (add_messages)")):
            name = f"{what}, {processes} process{'es' if processes > 1 else ''}"
            limit, ours = samples[("raw", mode, processes)], samples[("ogmem", mode, processes)]
            theirs = samples[("langchain", mode, processes)]
            print(
                f"{name:<42} {ms(limit)} {ms(ours)} {ms(theirs):>10} {ratio(limit, ours):>8.2f}x "
                f"{ratio(theirs, limit):>13.2f}x"
            )
    print(
        f"\n{'ms per read @' + str(args.history):<42} {'ogmem':>9} {head}{'langchain':>10} {'theirs/ours':>12}{after}"
        f"   (server: autovacuum={autovacuum})"
    )
    labels = {
        "never analyzed": "get_context (warm), tables never analyzed",
        "warm": "get_context (warm) vs .messages",
        "cold": "get_context (cold) vs .messages",
    }
    for kind, label in labels.items():
        ours, theirs = read_samples[("ogmem", kind)], read_samples[("langchain", kind)]
        cols = f"{ms(read_samples[('baseline', kind)])} " if base else ""
        speedup = f" {ratio(read_samples[('baseline', kind)], ours):>9.2f}x" if base else ""
        print(f"{label:<42} {ms(ours)} {cols}{ms(theirs):>10} {ratio(theirs, ours):>11.2f}x{speedup}")
    for side, (messages, recalled, summary, archives, tokens, budget) in described.items():
        print(
            f"\n{side}: get_context returned {messages} recent messages, {recalled} recalled, a {summary}-char "
            f"summary from {archives} archives: {tokens}/{budget} tokens (.messages returns all {args.history})."
        )
    stored = {side: sum(c["ogmem"] for c in side_counts) for side, side_counts in counts.items()}
    stored["langchain"] = sum(c["langchain"] for c in counts["ogmem"])
    print("messages stored by the writers: " + ", ".join(f"{side} {k}" for side, k in stored.items()))


if __name__ == "__main__":
    main()
