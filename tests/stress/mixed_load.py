"""Appending and reading one session from several managers: the loop and the check of each read.

Run as ``python -m tests.stress.mixed_load SPEC SESSION TAG SECONDS`` it is one worker process
that appends and reads until the time is up, then prints a JSON report.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ogmem_memory import Context, MemoryConfig, SessionManager
from tests.stress.support import Backend

# Commits every few turns and merges every third archive, so reads race commits and merges.
MIXED = MemoryConfig(
    commit_token_threshold=150,
    commit_turn_threshold=4,
    keep_recent_messages=3,
    keep_recent_tokens=0,
    archive_max_count=3,
    archive_merge_threshold=3,
)
BUDGET = 1_000_000  # every live message fits: the context shows the whole window


@dataclass
class LoadReport:
    """What one appender/reader did; ``problems`` must stay empty."""

    acked: list[str] = field(default_factory=list)
    reads: int = 0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadReport:
        return cls(**data)


def context_problems(context: Context) -> list[str]:
    """A message twice in ``messages``, out of order, or shown active inside one of its archives.

    ``messages`` may start with archived turns (budget nothing else claimed); those are
    shown with their ``archived`` status and are not a contradiction.
    """
    problems: list[str] = []
    ids = [m.id for m in context.messages]
    if len(ids) != len(set(ids)):
        problems.append(f"get_context().messages holds an id twice: {ids}")
    seqs = [m.seq for m in context.messages]
    if seqs != sorted(set(seqs)):
        problems.append(f"get_context().messages out of seq order: {seqs}")
    for a in context.archives:
        both = [
            m.seq for m in context.messages if m.status == "active" and a.first_seq <= m.seq <= a.last_seq
        ]
        if both:
            problems.append(f"seqs {both} shown active and inside archive {a.archive_id}")
    return problems


def load_loop(
    manager: SessionManager, session_id: str, tag: str, *, until: float, write: bool, report: LoadReport
) -> None:
    """Until ``until``: append one message (when ``write``), then read the context and check it."""
    i = 0
    while time.monotonic() < until:
        if write:
            message_id = f"{tag}-{i}"
            role = "user" if i % 2 == 0 else "assistant"
            manager.add_message(session_id, role, f"{tag} message {i} about the porto train", id=message_id)
            report.acked.append(message_id)
            i += 1
        report.problems += context_problems(manager.get_context(session_id, BUDGET))
        report.reads += 1


def main(argv: list[str]) -> None:
    spec, session_id, tag, seconds = argv[0], argv[1], argv[2], float(argv[3])
    report = LoadReport()
    with SessionManager(Backend.from_spec(spec).open(), config=MIXED) as manager:
        print("ready", flush=True)
        load_loop(manager, session_id, tag, until=time.monotonic() + seconds, write=True, report=report)
        manager.wait_for_tasks(30)
    print(json.dumps(report.to_dict()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
