"""Session heads on every backend, and SQLite's migration 4 (appends no longer write the session row).

What a reader sees of a session (last_seq, message_count, updated_at order, the live window)
must be the same whether it was written by appends alone, or by appends mixed with clears,
replaces and commits; and a file written by schema 3 must upgrade with its data intact.
"""

from __future__ import annotations

import os
import random
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore
from ogmem_memory.buffer import _TASK_CUE, has_task_cue
from ogmem_memory.errors import InvalidInputError
from ogmem_memory.models import RequestContext, SessionMessage, new_message_id
from ogmem_memory.stores import SessionStore
from ogmem_memory.stores.sqlite_schema import SQLITE_MIGRATIONS
from ogmem_memory.testing.conformance import archive
from tests.conftest import make_store
from tests.stores.old_schema import sqlite_file_at

ALICE = RequestContext(account_id="acme", user_id="alice")
BOB = RequestContext(account_id="acme", user_id="bob")


def msg(content: str, role: str = "user") -> SessionMessage:
    return SessionMessage(id=new_message_id(), role=role, content=content, tokens=len(content) // 4 + 1)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    with make_store(request.param, tmp_path, request) as s:
        yield s


def test_list_sessions_follows_the_latest_append(store: SessionStore) -> None:
    for sid in ("a", "b", "c"):
        store.append(sid, [msg(f"first of {sid}")], create_as=ALICE)
    assert [r.session_id for r in store.list_sessions(ALICE.owner)] == ["c", "b", "a"]
    store.append("a", [msg("again")], owner=ALICE.owner)
    assert [r.session_id for r in store.list_sessions(ALICE.owner)] == ["a", "c", "b"]
    store.append("b", [msg("b again"), msg("and again")], owner=ALICE.owner)
    assert [r.session_id for r in store.list_sessions()] == ["b", "a", "c"]
    listed = {r.session_id: r for r in store.list_sessions()}
    for sid in ("a", "b", "c"):
        record = store.get_session_record(sid)
        assert record is not None and listed[sid].updated_at == record.updated_at


def test_counters_through_appends_clears_replaces_and_commits(store: SessionStore) -> None:
    first = store.append("s", [msg("one"), msg("two")], create_as=ALICE)
    assert (first.record.last_seq, first.record.message_count) == (2, 2)
    third = store.append("s", [msg("three")], owner=ALICE.owner)
    record = store.get_session_record("s")
    assert record is not None and (record.last_seq, record.message_count) == (3, 3)
    assert third.record.head == record.head and third.record.updated_at == record.updated_at
    assert record.updated_at >= first.record.updated_at
    ids = [m.id for m in store.list_messages("s")]
    store.commit_archive("s", archive("s", 1, 2), ids[:2], epoch=record.epoch)
    store.append("s", [msg("four")], owner=ALICE.owner)
    record = store.get_session_record("s")
    assert record is not None and (record.last_seq, record.message_count, record.commit_count) == (4, 4, 1)
    assert [m.seq for m in store.list_messages("s", status="active")] == [3, 4]
    store.clear_session("s", owner=ALICE.owner)
    record = store.get_session_record("s")
    assert record is not None and (record.last_seq, record.message_count) == (4, 0)
    after = store.append("s", [msg("five")], owner=ALICE.owner)
    assert [m.seq for m in after.messages] == [5] and after.record.message_count == 1
    replaced = store.replace_messages("s", [msg("x"), msg("y")], owner=ALICE.owner)
    assert [m.seq for m in replaced.messages] == [6, 7]
    record = store.get_session_record("s")
    assert record is not None and (record.last_seq, record.message_count) == (7, 2)
    head = store.head("s")
    assert head is not None and head == record.head


def test_a_repeated_id_changes_no_counter(store: SessionStore) -> None:
    m = msg("once")
    store.append("s", [m], create_as=ALICE)
    before = store.get_session_record("s")
    again = store.append("s", [m, msg("new")], owner=ALICE.owner)
    assert again.added == 1 and [x.seq for x in again.messages] == [1, 2]
    assert again.record.message_count == 2 and again.record.last_seq == 2
    retry = store.append("s", [m], owner=ALICE.owner)
    assert retry.added == 0 and retry.record.last_seq == 2
    assert before is not None and retry.record.epoch == before.epoch


def test_the_window_keeps_an_active_message_before_archived_ones(store: SessionStore) -> None:
    """A snapshot commit may archive later messages and leave an earlier one active."""
    store.append("s", [msg(f"m{i}") for i in range(1, 6)], create_as=ALICE)
    msgs = store.list_messages("s")
    record = store.get_session_record("s")
    assert record is not None
    store.commit_archive("s", archive("s", 2, 3), [msgs[1].id, msgs[2].id], epoch=record.epoch)
    window = store.read_window("s")
    assert window is not None and [m.seq for m in window.messages] == [1, 4, 5]
    assert [m.seq for m in store.list_messages("s", status="active")] == [1, 4, 5]
    assert [m.seq for m in store.list_messages("s", status="active", after_seq=1)] == [4, 5]
    found = store.search_messages("m1", session_id="s", status="active")
    assert [m.seq for m in found] == [1]
    record = store.get_session_record("s")
    assert record is not None
    store.commit_archive("s", archive("s", 1, 1, "arc_first"), [msgs[0].id], epoch=record.epoch)
    window = store.read_window("s")
    assert window is not None and [m.seq for m in window.messages] == [4, 5]
    record = store.get_session_record("s")
    assert record is not None
    store.commit_archive("s", archive("s", 4, 5, "arc_rest"), [msgs[3].id, msgs[4].id], epoch=record.epoch)
    window = store.read_window("s")
    assert window is not None and window.messages == ()
    store.append("s", [msg("m6")], owner=ALICE.owner)
    assert [m.seq for m in store.list_messages("s", status="active")] == [6]
    found = store.search_messages("m6", owner=ALICE.owner, status="active")
    assert [m.content for m in found] == ["m6"]


def _schema_3_file(path: Path) -> None:
    """A database as ogmem with schema 3 wrote it: appends updated the session row."""
    conn = sqlite_file_at(path, 3)
    rows = [
        ("old", "acme", "alice", "agent", "2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00", 4, 4),
        ("older", "acme", "alice", "agent", "2025-01-01T00:00:00+00:00", "2025-01-01T12:00:00+00:00", 2, 5),
    ]
    conn.executemany(
        "INSERT INTO ogmem_sessions (session_id, account_id, user_id, agent_id, created_at, updated_at, "
        "message_count, last_seq, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'e')",
        rows,
    )
    messages = [("old", seq, f"old{seq}", "archived" if seq <= 2 else "active") for seq in range(1, 5)]
    messages += [("older", 4, "older4", "active"), ("older", 5, "older5", "active")]
    conn.executemany(
        "INSERT INTO ogmem_messages (session_id, seq, id, role, content, created_at, tokens, status) "
        "VALUES (?, ?, ?, 'user', ?, '2025-01-01T00:00:00+00:00', 3, ?)",
        [(sid, seq, f"msg_{sid}{seq}", content, status) for sid, seq, content, status in messages],
    )
    conn.close()


def test_a_schema_3_file_upgrades_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    _schema_3_file(path)
    with SQLiteStore(path) as store:
        old, older = store.get_session_record("old"), store.get_session_record("older")
        assert old is not None and (old.last_seq, old.message_count) == (4, 4)
        assert older is not None and (older.last_seq, older.message_count) == (5, 2)
        assert [r.session_id for r in store.list_sessions(ALICE.owner)] == ["old", "older"]
        window = store.read_window("old")
        assert window is not None and [m.seq for m in window.messages] == [3, 4]
        store.append("older", [msg("new")], owner=ALICE.owner)
        assert [r.session_id for r in store.list_sessions(ALICE.owner)] == ["older", "old"]
        older = store.get_session_record("older")
        assert older is not None and (older.last_seq, older.message_count) == (6, 3)
        assert [m.seq for m in store.list_messages("older", status="active")] == [4, 5, 6]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM ogmem_schema").fetchone()[0] == len(SQLITE_MIGRATIONS)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "ogmem_messages_active" not in indexes
    finally:
        conn.close()


def test_an_add_writes_only_the_message_row(tmp_path: Path) -> None:
    """The session row stays as it was: appends are read through the view (fewer pages per add)."""
    path = tmp_path / "rows.db"
    with SessionManager(SQLiteStore(path), config=MemoryConfig(auto_commit=False)) as m:
        m.add_message("s", "user", "hello")
        conn = sqlite3.connect(path)
        try:
            before = conn.execute("SELECT * FROM ogmem_sessions").fetchall()
            for i in range(5):
                m.add_message("s", "assistant", f"reply {i}")
            assert conn.execute("SELECT * FROM ogmem_sessions").fetchall() == before
        finally:
            conn.close()
        record = m.store.get_session_record("s")
        assert record is not None and (record.last_seq, record.message_count) == (6, 6)
        assert [x.content for x in m.get_history("s")][-1] == "reply 4"


def test_task_cue_without_the_regex_matches_the_regex() -> None:
    rng = random.Random(20261201)
    pieces = ["help", "HeLp", "need", "Want", "please", "can you", "Could You", "helpful", "unwanted"]
    pieces += ["needs", "can  you", "_help", "help_", "please!", "xneed", "é", "ünd", "9help", "naïve"]
    alphabet = "abcdeHELPNDW _-.,!09\t\n"
    for _ in range(20_000):
        parts = [
            rng.choice(pieces) if rng.random() < 0.4 else "".join(rng.choices(alphabet, k=rng.randint(0, 4)))
            for _ in range(rng.randint(0, 6))
        ]
        text = rng.choice(["", " ", "_", "a"]).join(parts)
        assert has_task_cue(text) == (_TASK_CUE.search(text) is not None), text


def test_a_forked_child_draws_other_message_ids() -> None:
    """Ids come from a generator of their own: a child must not repeat its parent's draws."""
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about forking a process that has threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.write(write, " ".join(new_message_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode().split()
    os.close(read)
    parent = [new_message_id() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(parent)
    assert all(len(i) == 16 and i.startswith("msg_") and int(i[4:], 16) >= 0 for i in child + parent)


def test_checkpoint_pages_is_applied_and_checked(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as store:
        assert store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 3000
    with SQLiteStore(tmp_path / "b.db", checkpoint_pages=250) as store:
        assert store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 250
    for bad in (-1, True, 2.5, "1000"):
        with pytest.raises(InvalidInputError):
            SQLiteStore(tmp_path / "c.db", checkpoint_pages=bad)  # type: ignore[arg-type]
