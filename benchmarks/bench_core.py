"""Core speed on SQLite, every ratio against a peer measured in this same run.

    python benchmarks/bench_core.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_core.py --quick    # smaller sizes, for a smoke run

1. ``add_message`` at EQUAL durability, in interleaved rounds (ours, peer, raw, ours, ...):
   ogmem on ``SQLiteStore`` (WAL, synchronous=NORMAL: our default) vs langchain-community
   ``SQLChatMessageHistory`` set to WAL + synchronous=NORMAL through a SQLAlchemy ``connect``
   event on its engine, vs the raw sqlite3 driver inserting one plain row per transaction at
   the same durability (the physical limit). At NORMAL a WAL is synced only by a checkpoint,
   so every side's ``wal_autocheckpoint`` is set to checkpoint after the same number of
   messages (1,000, from each side's WAL frames per message measured first on scratch files):
   what a power loss may roll back is the same on every side. Ours with commits off is compared with raw;
   ours with the default config is timed until ``wait_for_tasks()`` returns, so the work of
   its background commits counts, and compared with the peer.
2. The same at FULL durability on both sides (``SQLiteStore(path, synchronous="FULL")``,
   the peer on WAL + FULL), plus the peer's own default (rollback journal, FULL) for reference.
3. ``get_context`` by history length (10,000 vs 100 messages, 30,000 vs 1,000), same config,
   archives at every size, the query being the last user message (recall runs).
4. Commit cost per message after 60,000 messages vs after 1,000.

Each side's journal mode and synchronous setting is printed as read back from its connection
(ours: journal mode from the file, synchronous from ``SQLiteStore.synchronous``, which sets it
on every connection the store opens). No absolute time is a result on a shared machine: the
ratios are.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (
    CHECKPOINT_MESSAGES,
    DELETE_FULL,
    WAL_FULL,
    WAL_NORMAL,
    Durability,
    RawSQLite,
    apply_modes,
    checkpoint_pages,
    interleaved,
    median,
    ratio,
    read_modes,
    role,
    set_checkpoint,
    text,
    timed_block,
    us,
    verdict,
)

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore
from ogmem_memory.compress import ExtractiveCompressor


@dataclass(frozen=True, slots=True)
class Sizes:
    add_rounds: int
    add_block: int  # messages per side and round at synchronous=NORMAL
    full_block: int  # ... at FULL (an fsync per message on every side)
    context_pairs: tuple[tuple[int, int], ...]  # (long, short) history lengths compared
    context_calls: int  # get_context calls per size and round
    context_rounds: int
    commit_sizes: tuple[int, int]  # (short, long) history before the measured commits
    commit_batch: int  # messages per measured commit
    commit_rounds: int


FULL_RUN = Sizes(9, 400, 120, ((10_000, 100), (30_000, 1_000)), 40, 7, (1_000, 60_000), 200, 7)
QUICK_RUN = Sizes(5, 150, 40, ((3_000, 100),), 20, 5, (1_000, 10_000), 200, 5)


# -- the sides ---------------------------------------------------------------------------------------


def ogmem_modes(store: SQLiteStore) -> Durability:
    """Journal mode as stored in the file; synchronous as the store sets it on its connection."""
    conn = sqlite3.connect(store.path)
    try:
        journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper()
    finally:
        conn.close()
    return Durability(journal, store.synchronous)


class Peer:
    """``SQLChatMessageHistory`` on an engine whose every connection gets ``durability``."""

    def __init__(self, path: Path, durability: Durability, checkpoint: int | None = None) -> None:
        from langchain_community.chat_message_histories import SQLChatMessageHistory
        from langchain_core.messages import AIMessage, HumanMessage
        from sqlalchemy import create_engine, event

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            apply_modes(dbapi_conn, durability)
            set_checkpoint(dbapi_conn, checkpoint)

        self.engine = create_engine(f"sqlite:///{path}")
        event.listen(self.engine, "connect", on_connect)
        self.history = SQLChatMessageHistory(session_id="bench", connection=self.engine)
        self.kinds = (HumanMessage, AIMessage)
        with self.engine.connect() as conn:  # the pool's connection, the one add_message uses
            self.modes = read_modes(lambda sql: conn.exec_driver_sql(sql).scalar())

    def add(self, i: int) -> None:
        self.history.add_message(self.kinds[i % 2](text(i)))

    def close(self) -> None:
        self.engine.dispose()


def ogmem_side(
    manager: SessionManager, session_id: str, block: int, *, drain: bool
) -> Callable[[int], float]:
    def add(i: int) -> None:
        manager.add_message(session_id, role(i), text(i))

    def side(r: int) -> float:
        return timed_block(add, (r + 1) * block, block, manager.wait_for_tasks if drain else None)

    return side


def block_side(add: Callable[[int], None], block: int) -> Callable[[int], float]:
    return lambda r: timed_block(add, (r + 1) * block, block)


def config_summary(config: MemoryConfig) -> str:
    """The fields that decide what a commit costs (those this version has)."""
    names = (
        "commit_token_threshold",
        "commit_turn_threshold",
        "keep_recent_tokens",
        "archive_max_count",
        "extract_memories",
    )
    return ", ".join(f"{n}={getattr(config, n)}" for n in names if hasattr(config, n))


# -- 1 and 2: add_message ------------------------------------------------------------------------------


def equal_checkpoints(tmp: Path) -> dict[str, tuple[int, float]]:
    """Each side's ``wal_autocheckpoint`` for a checkpoint every ``CHECKPOINT_MESSAGES``
    messages, measured on scratch files (ours with its default commits drained)."""
    found: dict[str, tuple[int, float]] = {}
    for name, config in (("off", MemoryConfig(auto_commit=False)), ("default", MemoryConfig())):
        manager = SessionManager(SQLiteStore(tmp / f"probe_{name}.db", checkpoint_pages=0), config=config)
        try:

            def add(i: int, m: SessionManager = manager) -> None:
                m.add_message("probe", role(i), text(i))
                if i % 100 == 99:
                    m.wait_for_tasks()  # its commits' pages count, as in the timed run

            found[name] = checkpoint_pages(tmp / f"probe_{name}.db", add, 600)
        finally:
            manager.close()
    peer = Peer(tmp / "probe_peer.db", WAL_NORMAL, checkpoint=0)
    try:
        found["peer"] = checkpoint_pages(tmp / "probe_peer.db", peer.add)
    finally:
        peer.close()
    raw = RawSQLite(tmp / "probe_raw.db", WAL_NORMAL, checkpoint=0)
    try:
        found["raw"] = checkpoint_pages(tmp / "probe_raw.db", lambda i: raw.add("probe", text(i)))
    finally:
        raw.close()
    return found


def bench_add(tmp: Path, sizes: Sizes) -> None:
    warnings.filterwarnings("ignore")  # langchain-community is sunset and says so on import
    pages = equal_checkpoints(tmp)
    off = SessionManager(
        SQLiteStore(tmp / "off.db", checkpoint_pages=pages["off"][0]), config=MemoryConfig(auto_commit=False)
    )
    default = SessionManager(SQLiteStore(tmp / "default.db", checkpoint_pages=pages["default"][0]))
    peer = Peer(tmp / "peer.db", WAL_NORMAL, pages["peer"][0])
    raw = RawSQLite(tmp / "raw.db", WAL_NORMAL, pages["raw"][0])
    full_store = SQLiteStore(tmp / "full.db", synchronous="FULL", checkpoint_pages=pages["default"][0])
    full = SessionManager(full_store)
    peer_full = Peer(tmp / "peer_full.db", WAL_FULL, pages["peer"][0])
    raw_full = RawSQLite(tmp / "raw_full.db", WAL_FULL, pages["raw"][0])
    peer_default = Peer(tmp / "peer_default.db", DELETE_FULL)  # its own default: no WAL at all
    try:
        for m in (off, default, full):
            m.add_message("bench", "user", "warm-up")  # schema, first bind, caches
        for p in (peer, peer_full, peer_default):
            p.add(0)
        raw.add("bench", "warm-up")
        raw_full.add("bench", "warm-up")
        assert isinstance(off.store, SQLiteStore) and isinstance(default.store, SQLiteStore)
        modes = {
            "off": ogmem_modes(off.store),
            "default": ogmem_modes(default.store),
            "full": ogmem_modes(full_store),
        }
        n, f = sizes.add_block, sizes.full_block
        normal = interleaved(
            {
                "ours_off": ogmem_side(off, "bench", n, drain=False),
                "ours": ogmem_side(default, "bench", n, drain=True),
                "peer": block_side(peer.add, n),
                "raw": block_side(lambda i: raw.add("bench", text(i)), n),
            },
            sizes.add_rounds,
        )
        durable = interleaved(
            {
                "ours": ogmem_side(full, "bench", f, drain=True),
                "peer": block_side(peer_full.add, f),
                "raw": block_side(lambda i: raw_full.add("bench", text(i)), f),
                "peer_default": block_side(peer_default.add, f),
            },
            sizes.add_rounds,
        )
        stored = len(default.get_history("bench"))
        archives = len(default.list_archives("bench", include_merged=True))
    finally:
        for m in (off, default, full):
            m.close()
        for p in (peer, peer_full, peer_default):
            p.close()
        raw.close()
        raw_full.close()

    print(
        f"add_message on a SQLite file, per message: median of {sizes.add_rounds} interleaved rounds "
        f"(ours, peer, raw), {n} messages per side and round at NORMAL, {f} at FULL"
    )
    rows = [
        ("ogmem, commits off", modes["off"], normal["ours_off"]),
        ("ogmem, default config, until wait_for_tasks()", modes["default"], normal["ours"]),
        ("langchain SQLChatMessageHistory (connect event)", peer.modes, normal["peer"]),
        ("raw sqlite3, one plain row per transaction", raw.modes, normal["raw"]),
        ("ogmem, default config, FULL, until wait_for_tasks()", modes["full"], durable["ours"]),
        ("langchain SQLChatMessageHistory (connect event)", peer_full.modes, durable["peer"]),
        ("raw sqlite3, one plain row per transaction", raw_full.modes, durable["raw"]),
        ("langchain SQLChatMessageHistory, its default", peer_default.modes, durable["peer_default"]),
    ]
    for name, mode, samples in rows:
        print(f"  {name:<52} {mode.label:<32} {us(median(samples))}")
    cadence = ", ".join(
        f"{side} {pages[side][0]} pages ({pages[side][1]:.2f} frames a message)"
        for side in ("off", "default", "peer", "raw")
    )
    print(
        f"  every WAL side checkpoints (syncs its WAL) about every {CHECKPOINT_MESSAGES:,} messages, "
        f"measured on scratch files: wal_autocheckpoint {cadence}"
    )
    print(f"  (the default-config session holds {stored} messages and made {archives} archives in the run)")
    print(f"  default MemoryConfig: {config_summary(MemoryConfig())}")
    # (label, value, target, at_most): None targets are context, not claims
    claims: list[tuple[str, float, float | None, bool]] = [
        ("(a) ours commits off / raw, both WAL+NORMAL", ratio(normal["ours_off"], normal["raw"]), 3, True),
        ("(b) peer / ours default+commits, both WAL+NORMAL", ratio(normal["peer"], normal["ours"]), 3, False),
        ("(c) peer / ours default+commits, both WAL+FULL", ratio(durable["peer"], durable["ours"]), 3, False),
        ("    ours default+commits / raw, both WAL+NORMAL", ratio(normal["ours"], normal["raw"]), None, True),
        (
            "    peer / ours commits off, both WAL+NORMAL",
            ratio(normal["peer"], normal["ours_off"]),
            None,
            True,
        ),
        ("    ours default+commits / raw, both WAL+FULL", ratio(durable["ours"], durable["raw"]), None, True),
        (
            "    peer's default (DELETE+FULL) / ours default (WAL+NORMAL): unequal durability, not a claim",
            median(durable["peer_default"]) / median(normal["ours"]),
            None,
            True,
        ),
    ]
    print("ratios (median of the per-round ratios)")
    for label, value, target, at_most in claims:
        judged = verdict(value, target, at_most=at_most) if target is not None else ""
        print(f"  {label:<56} {value:6.2f}x   {judged}")


# -- 3: get_context flatness ---------------------------------------------------------------------------

CONTEXT_CONFIG = MemoryConfig(commit_token_threshold=1500, commit_turn_threshold=0, keep_recent_tokens=400)


def build_session(manager: SessionManager, session_id: str, size: int, batch: int = 50) -> None:
    """``size`` messages written a batch at a time, threshold commits drained after each batch."""
    for start in range(0, size, batch):
        manager.add_messages(
            session_id,
            [{"role": role(i), "content": text(i)} for i in range(start, min(start + batch, size))],
        )
        manager.wait_for_tasks()


def bench_context(tmp: Path, sizes: Sizes) -> None:
    lengths = sorted({n for pair in sizes.context_pairs for n in pair})
    managers: dict[int, SessionManager] = {}
    started = time.perf_counter()
    for n in lengths:
        managers[n] = SessionManager(SQLiteStore(tmp / f"ctx{n}.db"), config=CONTEXT_CONFIG)
        build_session(managers[n], "s", n)
        assert managers[n].list_archives("s"), "every size must have archives for a fair comparison"
        managers[n].get_context("s", 2000)  # warm this manager's cache
    built = time.perf_counter() - started

    def side(n: int) -> Callable[[int], float]:
        m = managers[n]
        return lambda _r: timed_block(lambda _i: m.get_context("s", 2000), 0, sizes.context_calls)

    samples = interleaved({str(n): side(n) for n in lengths}, sizes.context_rounds)
    shapes = {n: managers[n].get_context("s", 2000) for n in lengths}
    for m in managers.values():
        m.close()
    print(
        f"\nget_context(budget=2000), query = the last user message, per call: median of "
        f"{sizes.context_rounds} interleaved rounds of {sizes.context_calls} calls (sessions built in {built:.0f} s; "
        "commit at 1,500 tokens, keep 400)"
    )
    for n in lengths:
        ctx = shapes[n]
        print(
            f"  {n:>6} messages  {us(median(samples[str(n)]))}   ({len(ctx.messages)} recent, "
            f"{len(ctx.recalled)} recalled, {len(ctx.archives)} archives, {ctx.token_count} tokens)"
        )
    for long, short in sizes.context_pairs:
        r = ratio(samples[str(long)], samples[str(short)])
        label = f"(d) {long:,} / {short:,} messages"
        print(f"  {label:<30} {r:6.2f}x   {verdict(r, 1.3, at_most=True)}")


# -- 4: commit cost over a session's life --------------------------------------------------------------


class TimedCompressor:
    """The default compressor (extractive), adding up its time: its share of a commit."""

    def __init__(self) -> None:
        self.inner = ExtractiveCompressor()
        self.seconds = 0.0

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        began = time.perf_counter()
        try:
            return self.inner.compress(messages, prev_overview, prev_abstract)
        finally:
            self.seconds += time.perf_counter() - began


def bench_commit(tmp: Path, sizes: Sizes) -> None:
    short, long = sizes.commit_sizes
    k = sizes.commit_batch
    managers: dict[int, SessionManager] = {}
    compressors = {n: TimedCompressor() for n in (short, long)}
    started = time.perf_counter()
    for n in (short, long):
        m = SessionManager(
            SQLiteStore(tmp / f"commit{n}.db"),
            config=MemoryConfig(auto_commit=False),
            compressor=compressors[n],
        )
        for start in range(0, n, k):  # a commit every k messages, as a chat with commits would make
            m.add_messages(
                "s", [{"role": role(i), "content": text(i)} for i in range(start, min(start + k, n))]
            )
            m.commit("s", wait=True)
        managers[n] = m
    built = time.perf_counter() - started
    counts = {n: n for n in managers}
    compress_share: dict[int, list[float]] = {n: [] for n in managers}

    def side(n: int) -> Callable[[int], float]:
        m = managers[n]

        def one(_r: int) -> float:
            first = counts[n]
            m.add_messages("s", [{"role": role(i), "content": text(i)} for i in range(first, first + k)])
            counts[n] += k
            compressors[n].seconds = 0.0
            began = time.perf_counter()
            result = m.commit("s", wait=True)
            took = time.perf_counter() - began
            assert result.archived, result
            compress_share[n].append(compressors[n].seconds / took)
            return took / k

        return one

    samples = interleaved({str(n): side(n) for n in (short, long)}, sizes.commit_rounds)
    history = {n: len(m.get_history("s")) for n, m in managers.items()}
    for m in managers.values():
        m.close()
    print(
        f"\ncommit(wait=True) of {k} messages, per message: median of {sizes.commit_rounds} interleaved "
        f"rounds (sessions built in {built:.0f} s, a commit every {k} messages; compression, archive "
        "write, FTS indexing, state and merges included)"
    )
    for n in (short, long):
        print(
            f"  after {n:>6,} messages  {us(median(samples[str(n)]))}   (ends at {history[n]:,} messages; "
            f"the compressor took {median(compress_share[n]):.0%} of it)"
        )
    r = ratio(samples[str(long)], samples[str(short)])
    print(f"  (e) after {long:,} / after {short:,}  {r:6.2f}x   {verdict(r, 1.3, at_most=True)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--only", choices=("add", "context", "commit"), action="append", help="run only these parts"
    )
    args = parser.parse_args(argv)
    sizes = QUICK_RUN if args.quick else FULL_RUN
    parts: dict[str, Callable[[Path, Sizes], Any]] = {
        "add": bench_add,
        "context": bench_context,
        "commit": bench_commit,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for name, part in parts.items():
            if args.only is None or name in args.only:
                part(Path(d), sizes)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
