"""What the stress tests share: backends rebuilt in child processes, invariant checks, bounded threads.

No pytest here: the child processes of the stress tests import this module too.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ogmem_memory import MemoryConfig, RequestContext
from ogmem_memory.models import ArchiveEntry, SessionMessage
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore

ROOT = Path(__file__).resolve().parents[2]  # the repository: children run ``python -m tests.stress...``

ALICE = RequestContext(account_id="a", user_id="alice")
BOB = RequestContext(account_id="a", user_id="bob")
USERS: dict[str, RequestContext] = {"alice": ALICE, "bob": BOB}

# Commits every couple of turns and merges as soon as two archives exist: the pipeline runs
# all the time, so kills, deletes and reads land in the middle of commits and merges.
CHURN = MemoryConfig(
    commit_token_threshold=40,
    commit_turn_threshold=2,
    keep_recent_messages=1,
    keep_recent_tokens=0,
    archive_max_count=2,
    archive_merge_threshold=2,
)


class Backend:
    """Where a test's stores live. Child processes rebuild it from ``spec()``.

    An in-memory backend hands out one shared ``InMemoryStore`` (the only way two managers
    share it) and cannot cross a process boundary.
    """

    def __init__(self, kind: str, location: str = "", schema: str = "") -> None:
        self.kind = kind
        self.location = location
        self.schema = schema
        self._memory = InMemoryStore() if kind == "memory" else None

    def open(self) -> SessionStore:
        """A new store on the backend (the shared one for memory)."""
        if self._memory is not None:
            return self._memory
        if self.kind == "sqlite":
            return SQLiteStore(self.location)
        from ogmem_memory.stores.postgres import PostgresStore

        # a small pool: the PostgreSQL server is shared by every test run on the machine
        return PostgresStore(self.location, schema=self.schema, max_size=4)

    def spec(self) -> str:
        if self.kind == "memory":
            raise ValueError("an in-memory store cannot be shared with another process")
        return json.dumps({"kind": self.kind, "location": self.location, "schema": self.schema})

    @classmethod
    def from_spec(cls, spec: str) -> Backend:
        data = json.loads(spec)
        return cls(data["kind"], data["location"], data["schema"])

    def __repr__(self) -> str:
        return f"Backend({self.kind})"


# -- invariants of what is stored -----------------------------------------------------


def covered(history: Sequence[SessionMessage], archive: ArchiveEntry) -> list[SessionMessage]:
    return [m for m in history if archive.first_seq <= m.seq <= archive.last_seq]


def archive_problems(store: SessionStore, session_id: str) -> list[str]:
    """Everything wrong with a session's messages and archives, as readable lines (empty: sound).

    Checks: ids and seqs unique and ordered; every archive (merged ones included) counts
    exactly the messages of its seq range, all archived, with their token sum; a commit
    archive holds exactly the messages that name it; every archived message reaches, through
    its ``merged_into`` chain, the one live archive that covers it; live archives are
    disjoint and no archive covers an active message.
    """
    history = store.list_messages(session_id)
    archives = store.list_archives(session_id, include_merged=True)
    problems: list[str] = []
    ids = [m.id for m in history]
    if len(ids) != len(set(ids)):
        problems.append(f"{session_id}: message ids doubled: {sorted({i for i in ids if ids.count(i) > 1})}")
    seqs = [m.seq for m in history]
    if seqs != sorted(set(seqs)):
        problems.append(f"{session_id}: seqs not strictly increasing: {seqs}")
    by_id = {a.archive_id: a for a in archives}
    live = [a for a in archives if not a.merged_into]
    for a in archives:
        inside = covered(history, a)
        if len(inside) != a.message_count:
            problems.append(
                f"{session_id}: archive {a.archive_id} [{a.first_seq}, {a.last_seq}] says "
                f"{a.message_count} messages, its range holds {len(inside)}"
            )
        if sum(m.tokens for m in inside) != a.token_count:
            problems.append(
                f"{session_id}: archive {a.archive_id} says {a.token_count} tokens, "
                f"its messages hold {sum(m.tokens for m in inside)}"
            )
        active = [m.seq for m in inside if m.status != "archived"]
        if active:
            problems.append(f"{session_id}: archive {a.archive_id} covers active messages {active}")
        if a.merged_into and a.merged_into not in by_id:
            problems.append(f"{session_id}: archive {a.archive_id} merged into missing {a.merged_into}")
        named = [m.seq for m in history if m.archive_id == a.archive_id]
        if named and named != [m.seq for m in inside]:
            problems.append(
                f"{session_id}: archive {a.archive_id} covers seqs {[m.seq for m in inside]}, "
                f"messages naming it are {named}"
            )
    for earlier, later in zip(
        sorted(live, key=lambda a: a.first_seq), sorted(live, key=lambda a: a.first_seq)[1:], strict=False
    ):
        if earlier.last_seq >= later.first_seq:
            problems.append(
                f"{session_id}: live archives {earlier.archive_id} and {later.archive_id} overlap"
            )
    for m in history:
        if m.status != "archived":
            continue
        own = by_id.get(m.archive_id or "")
        if own is None:
            problems.append(
                f"{session_id}: archived message seq {m.seq} names missing archive {m.archive_id}"
            )
            continue
        chain = [own]
        while chain[-1].merged_into and len(chain) <= len(archives):
            nxt = by_id.get(chain[-1].merged_into)
            if nxt is None:
                break
            chain.append(nxt)
        if chain[-1].merged_into:
            problems.append(
                f"{session_id}: seq {m.seq}: archive chain {[a.archive_id for a in chain]} has no end"
            )
        outside = [a.archive_id for a in chain if not a.first_seq <= m.seq <= a.last_seq]
        if outside:
            problems.append(f"{session_id}: seq {m.seq} lies outside archives {outside} of its chain")
        holders = [a.archive_id for a in live if a.first_seq <= m.seq <= a.last_seq]
        if len(holders) != 1:
            problems.append(f"{session_id}: seq {m.seq} is covered by live archives {holders}")
    return problems


# Python switches threads every 5 ms by default, so a race window of a few bytecodes between
# two lock sections is rarely hit. Switching every 20 µs makes such interleavings far more frequent.
STRESS_SWITCH_INTERVAL = 2e-5


@contextmanager
def frequent_switches() -> Iterator[None]:
    """Make the interpreter switch threads often while the block runs."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(STRESS_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


# -- threads that must finish -----------------------------------------------------------


@dataclass
class ThreadReport:
    """How a group of threads ended: their exceptions, and the ones still running with their stacks."""

    errors: list[str] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)


def run_threads(targets: Mapping[str, Callable[[], None]], timeout: float) -> ThreadReport:
    """Run each target in a daemon thread; join them all by one deadline.

    Daemon threads, so that a deadlocked one cannot keep the test run alive; a thread alive
    at the deadline is reported with its stack (the caller fails the test on it).
    """
    report = ThreadReport()
    lock = threading.Lock()

    def guarded(name: str, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException:
            with lock:
                report.errors.append(f"{name}: {traceback.format_exc()}")

    threads = [
        threading.Thread(target=guarded, args=(name, target), name=name, daemon=True)
        for name, target in targets.items()
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    frames = sys._current_frames()
    for t in threads:
        if t.is_alive():
            frame = frames.get(t.ident or -1)
            # the innermost frames: where it waits
            stack = "".join(traceback.format_stack(frame)[-6:]) if frame is not None else "(no frame)"
            report.hung.append(f"{t.name} still running after {timeout} s:\n{stack}")
    return report
