"""Helpers shared by the benchmark scripts: interleaved rounds, medians, ratios, SQLite sides.

The machines these run on are shared and noisy, so no absolute time is a result: every
script measures ours and its peer in the same run, in interleaved rounds (ours, peer,
raw, ours, peer, raw, ...), and reports medians and the median of the per-round ratios.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE = (
    "the project deadline moved to Friday so Maria will review the invoice INV-2024-0042 before "
    "the meeting in Lisbon and we still need 1299 EUR for the new server plus a backup plan "
    "because the old disk failed twice last month while Bob was on holiday"
)
_WORDS = SAMPLE.split(" ")


_SYLLABLES = ("ka", "lo", "mi", "ru", "te", "zan", "vor", "pel", "dun", "shi", "bro", "gal", "nix")


def _pseudo_word(n: int) -> str:
    """A made-up word per ``n`` (letters only, so every tokenizer keeps it whole)."""
    parts = []
    for _ in range(3):
        n, k = divmod(n, len(_SYLLABLES))
        parts.append(_SYLLABLES[k])
    return "".join(parts) + _SYLLABLES[n % len(_SYLLABLES)]


def text(i: int) -> str:
    """A chat-sized message (about 32 words, 45 tokens), different for every ``i``.

    Besides everyday words found in every message it names a topic that comes back every
    37 messages and one that comes back every 997: whatever the history length, a query has
    terms that are rare enough for recall to rank (real chats mix both kinds of words).
    """
    common = " ".join(_WORDS[(i * 7 + k) % len(_WORDS)] for k in range(30))
    return f"{common} about {_pseudo_word(i % 37)} and {_pseudo_word(1000 + i % 997)} (turn {i})"


def role(i: int) -> str:
    return "user" if i % 2 == 0 else "assistant"


@dataclass(frozen=True, slots=True)
class Durability:
    """A SQLite journal mode and ``synchronous`` setting, named the way the output prints it."""

    journal: str  # WAL or DELETE (SQLite's default rollback journal)
    sync: str  # NORMAL or FULL

    @property
    def label(self) -> str:
        return f"journal={self.journal} synchronous={self.sync}"


WAL_NORMAL = Durability("WAL", "NORMAL")
WAL_FULL = Durability("WAL", "FULL")
DELETE_FULL = Durability("DELETE", "FULL")  # SQLChatMessageHistory's default on SQLite

_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def read_modes(execute: Callable[[str], Any]) -> Durability:
    """What a connection really runs with: ``execute(sql)`` returns the first column of one row."""
    journal = str(execute("PRAGMA journal_mode")).upper()
    sync = _SYNC_NAMES.get(int(execute("PRAGMA synchronous")), "?")
    return Durability(journal, sync)


def apply_modes(conn: Any, durability: Durability) -> None:
    """Set journal mode and synchronous on a DB-API sqlite3 connection (synchronous is per connection)."""
    cur = conn.cursor()
    cur.execute(f"PRAGMA journal_mode={durability.journal}")
    cur.execute(f"PRAGMA synchronous={durability.sync}")
    cur.close()


# At synchronous=NORMAL the WAL is synced only by a checkpoint, so what a power loss can roll
# back is what was committed since the last one: sides compared at equal durability checkpoint
# after the same number of messages, each at its own pages per message.
CHECKPOINT_MESSAGES = 1000


def wal_frames(path: Path) -> int:
    """Checkpoint ``path`` (PASSIVE: waiting for nobody); the frames its WAL held. The next write
    after a complete checkpoint starts the WAL over."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


def checkpoint_pages(path: Path, write: Callable[[int], object], count: int = 300) -> tuple[int, float]:
    """The ``wal_autocheckpoint`` that checkpoints ``path`` every ``CHECKPOINT_MESSAGES`` of
    ``write``'s messages, and the WAL frames one message takes, from ``count`` writes."""
    wal_frames(path)
    for i in range(count):
        write(i)
    per_message = wal_frames(path) / count
    return max(1, round(per_message * CHECKPOINT_MESSAGES)), per_message


def set_checkpoint(conn: Any, pages: int | None) -> None:
    """``PRAGMA wal_autocheckpoint`` on a DB-API sqlite3 connection (None: SQLite's default)."""
    if pages is not None:
        cur = conn.cursor()
        cur.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")
        cur.close()


class RawSQLite:
    """The physical limit: the sqlite3 driver inserting one plain row per transaction.

    The table has the peer's shape (integer key, session id, message text) and no other
    index, so a write dirties one B-tree page.
    """

    def __init__(self, path: Path, durability: Durability, checkpoint: int | None = None) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        apply_modes(self.conn, durability)
        set_checkpoint(self.conn, checkpoint)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, session_id TEXT, message TEXT)"
        )
        self.modes = read_modes(lambda sql: self.conn.execute(sql).fetchone()[0])

    def add(self, session_id: str, message: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO raw (session_id, message) VALUES (?, ?)", (session_id, message))
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def interleaved(sides: Mapping[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    """Run every side once per round, in order, ``rounds`` times; each call returns its own sample.

    A side times itself (it knows what must count, e.g. draining background work) and gets
    the round number so that it can write fresh data.
    """
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, side in sides.items():
            samples[name].append(side(r))
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios: both sides of one round saw the same machine load."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def timed_block(
    fn: Callable[[int], object], start: int, count: int, after: Callable[[], object] | None = None
) -> float:
    """Seconds per call of ``fn(i)`` for i in [start, start + count), ``after()`` included in the time."""
    began = time.perf_counter()
    for i in range(start, start + count):
        fn(i)
    if after is not None:
        after()
    return (time.perf_counter() - began) / count


def us(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} µs"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def verdict(value: float, target: float, *, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    return f"target {'<=' if at_most else '>='} {target:g}x: {'met' if ok else 'NOT met'}"
