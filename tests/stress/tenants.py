"""Two users fighting over the same session ids: the loop each of them runs, and the checks.

Every message a user writes starts with the user's name (``alice:S1:17 hotel booking``), and
no text a user writes contains the other user's name, so any read that shows the other
name is a cross-tenant leak. Run as ``python -m tests.stress.tenants SPEC SECONDS SEED`` it
is one worker process: one manager, alice and bob each on a thread, a JSON report on stdout.
"""

from __future__ import annotations

import functools
import json
import random
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from ogmem_memory import AccessDeniedError, SessionManager, SessionNotFoundError
from ogmem_memory.models import SessionMessage
from ogmem_memory.stores import SessionStore
from tests.stress.support import CHURN, USERS, Backend, frequent_switches, run_threads

SESSIONS = ("S0", "S1")
TOPICS = (
    "lisbon budget invoice",
    "hotel booking friday",
    "train tickets porto",
    "museum visit sunday",
    "dinner reservation seven",
)
QUERIES = ("lisbon budget", "hotel friday", "train porto tickets", "museum")
OPS: tuple[tuple[str, int], ...] = (
    ("add", 30),
    ("add_two", 10),
    ("history", 10),
    ("context", 20),
    ("search", 8),
    ("sessions", 4),
    ("archives", 6),
    ("delete", 10),
    ("clear", 2),
    ("commit", 4),
)


def other_of(user: str) -> str:
    return "bob" if user == "alice" else "alice"


def written_by(user: str, text: str) -> bool:
    return text.startswith(f"{user}:")


def mentions_other(user: str, text: str) -> bool:
    """True when ``text`` shows the other user's words (names are never part of a topic)."""
    return other_of(user) in text.lower()


@dataclass
class Tally:
    """What one user's loop did and saw; ``leaks`` and ``errors`` must stay empty."""

    user: str
    ops: int = 0
    landed: int = 0
    denied: int = 0
    missing: int = 0
    deleted: int = 0
    leaks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tally:
        return cls(**data)


def _check_messages(
    tally: Tally, what: str, messages: tuple[SessionMessage, ...] | list[SessionMessage]
) -> None:
    for m in messages:
        if not written_by(tally.user, m.content):
            tally.leaks.append(f"{tally.user} {what} returned {m.content!r}")


def _check_text(tally: Tally, what: str, text: str) -> None:
    if mentions_other(tally.user, text):
        tally.leaks.append(f"{tally.user} {what} returned text of {other_of(tally.user)}: {text!r}")


def tenant_loop(manager: SessionManager, user: str, *, until: float, seed: int, tally: Tally) -> None:
    """Random writes, reads, deletes, clears and commits on the shared ids until ``until``.

    ``AccessDeniedError`` (the other user owns the id now) and ``SessionNotFoundError`` (it
    vanished) are expected; any other exception is recorded as an error.
    """
    rng = random.Random(seed)
    ctx = USERS[user]
    names = [name for name, _ in OPS]
    weights = [weight for _, weight in OPS]
    n = 0
    while time.monotonic() < until:
        n += 1
        sid = rng.choice(SESSIONS)
        op = rng.choices(names, weights)[0]
        text = f"{user}:{sid}:{n} {rng.choice(TOPICS)}"
        tally.ops += 1
        try:
            if op == "add":
                # ids repeat across users and threads: a retry-safe write must never answer
                # with a message of another incarnation or owner
                result = manager.add_message(sid, "user" if n % 2 else "assistant", text, ctx, id=f"m{n}")
                _check_messages(tally, f"add_message({sid})", [result.message])
                tally.landed += 1
            elif op == "add_two":
                stored = manager.add_messages(
                    sid,
                    [
                        {"role": "user", "content": text, "id": f"m{n}-q"},
                        {"role": "assistant", "content": f"{text} noted", "id": f"m{n}-a"},
                    ],
                    ctx,
                )
                _check_messages(tally, f"add_messages({sid})", stored)
                tally.landed += 2
            elif op == "history":
                _check_messages(tally, f"get_history({sid})", manager.get_history(sid, ctx))
            elif op == "context":
                context = manager.get_context(sid, 4000, ctx, query=rng.choice(QUERIES))
                _check_messages(tally, f"get_context({sid}).messages", context.messages)
                _check_messages(tally, f"get_context({sid}).recalled", context.recalled)
                _check_text(tally, f"get_context({sid}).summary", context.summary)
                for abstract in context.abstracts:
                    _check_text(tally, f"get_context({sid}).abstracts", abstract)
            elif op == "search":
                _check_messages(tally, "search(all sessions)", manager.search(rng.choice(QUERIES), ctx))
                _check_messages(
                    tally, f"search({sid})", manager.search(rng.choice(QUERIES), ctx, session_id=sid)
                )
            elif op == "sessions":
                for record in manager.list_sessions(ctx):
                    if record.user_id != user:
                        tally.leaks.append(
                            f"{user} list_sessions returned {record.session_id} of {record.user_id}"
                        )
            elif op == "archives":
                archives = manager.list_archives(sid, ctx, include_merged=True)
                for a in archives:
                    _check_text(tally, f"list_archives({sid})", f"{a.overview}\n{a.abstract}")
                if archives:
                    full = manager.read_archive(sid, rng.choice(archives).archive_id, ctx)
                    if full is not None:
                        _check_messages(tally, f"read_archive({sid})", full.messages)
                        _check_text(tally, f"read_archive({sid})", full.overview)
            elif op == "delete":
                tally.deleted += int(manager.delete_session(sid, ctx))
            elif op == "clear":
                manager.clear_session(sid, ctx)
            else:
                manager.commit(sid, ctx, wait=True)
        except AccessDeniedError:
            tally.denied += 1
        except SessionNotFoundError:
            tally.missing += 1
        except Exception:
            tally.errors.append(f"{user} {op}({sid}): {traceback.format_exc()}")


@dataclass
class OwnerWatch:
    """What a reader of the raw store saw: owners per id over time, and stored text of the wrong owner."""

    owners: dict[str, set[str]] = field(default_factory=lambda: {sid: set() for sid in SESSIONS})
    reads: int = 0
    problems: list[str] = field(default_factory=list)


def check_stored_owners(store: SessionStore, watch: OwnerWatch) -> None:
    """One snapshot per id (record, active messages and live archives): all of one owner."""
    for sid in SESSIONS:
        window = store.read_window(sid)
        watch.reads += 1
        if window is None:
            continue
        owner = window.record.user_id
        watch.owners[sid].add(owner)
        for m in window.messages:
            if not written_by(owner, m.content):
                watch.problems.append(f"{sid} owned by {owner} stores {m.content!r}")
        for a in window.archives:
            if mentions_other(owner, f"{a.overview}\n{a.abstract}"):
                watch.problems.append(f"{sid} owned by {owner} has archive {a.archive_id}: {a.overview!r}")


def watch_owners(store: SessionStore, watch: OwnerWatch, until: float) -> None:
    while time.monotonic() < until:
        check_stored_owners(store, watch)


def final_owner_problems(manager: SessionManager, store: SessionStore) -> list[str]:
    """After the run: each surviving id holds only its owner's text, seen through the owner's calls."""
    problems: list[str] = []
    listed = {user: {r.session_id for r in manager.list_sessions(ctx)} for user, ctx in USERS.items()}
    if listed["alice"] & listed["bob"]:
        problems.append(f"sessions listed for both users: {listed['alice'] & listed['bob']}")
    for sid in SESSIONS:
        record = store.get_session_record(sid)
        if record is None:
            continue
        owner = record.user_id
        if sid not in listed.get(owner, set()):
            problems.append(f"{sid} is owned by {owner} but not in their list_sessions")
        history = manager.get_history(sid, USERS[owner])
        problems += [
            f"{sid} ({owner}) holds {m.content!r}" for m in history if not written_by(owner, m.content)
        ]
        for a in manager.list_archives(sid, USERS[owner], include_merged=True):
            if mentions_other(owner, f"{a.overview}\n{a.abstract}"):
                problems.append(f"{sid} ({owner}) archive {a.archive_id}: {a.overview!r}")
        for m in manager.search("lisbon hotel train museum dinner", USERS[owner], session_id=sid, limit=50):
            if not written_by(owner, m.content):
                problems.append(f"{sid} ({owner}) search found {m.content!r}")
    return problems


def main(argv: list[str]) -> None:
    """One worker process: alice and bob on threads of one manager; prints the tallies as JSON."""
    spec, seconds, seed = argv[0], float(argv[1]), int(argv[2])
    manager = SessionManager(Backend.from_spec(spec).open(), config=CHURN)
    print("ready", flush=True)
    until = time.monotonic() + seconds
    tallies = {user: Tally(user) for user in USERS}
    with frequent_switches():
        report = run_threads(
            {
                user: functools.partial(
                    tenant_loop, manager, user, until=until, seed=seed + i, tally=tallies[user]
                )
                for i, user in enumerate(USERS)
            },
            timeout=seconds + 60,
        )
    if not report.hung:
        manager.wait_for_tasks(30)
        manager.close()
    print(
        json.dumps(
            {"tallies": [t.to_dict() for t in tallies.values()], "errors": report.errors, "hung": report.hung}
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
