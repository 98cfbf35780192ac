"""SQLite message ids without an index of every id (migration 5, ``stores/sqlite_ids.py``).

An id we draw is the row's scrambled rowid, so an append writes no id index; only ids callers
give are indexed. What must still hold: an id read back and sent again is a retry on both
append paths, a drawn id never comes back for another message (rowids are never reused), an id
copied from another file is a new message here, ids keep the seed's form, a commit still flips
exactly its messages, and a file of schema 4 upgrades with its ids, archives and recall rows.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.errors import ConcurrencyError
from ogmem_memory.models import ArchiveEntry, RequestContext, SessionMessage, utc_now
from ogmem_memory.stores import SQLiteStore
from ogmem_memory.stores.sqlite_ids import drawn_id, rowid_of
from ogmem_memory.stores.sqlite_schema import SQLITE_MIGRATIONS
from tests.stores.old_schema import sqlite_file_at

OFF = MemoryConfig(auto_commit=False)


def _wal_frames(path: Path) -> int:
    size = path.with_name(path.name + "-wal").stat().st_size
    return (size - 32) // (4096 + 24)


def test_drawn_ids_have_the_seeds_form_and_decode_to_their_row() -> None:
    key = 0x1234_5678_9ABC
    ids = [drawn_id(rowid, key) for rowid in range(1, 2001)]
    assert all(re.fullmatch(r"msg_[0-9a-f]{12}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert [rowid_of(i, key) for i in ids] == list(range(1, 2001))
    assert rowid_of("client-1", key) is None and rowid_of("msg_00000000000g", key) is None


def test_an_id_read_back_and_sent_again_is_a_retry_on_both_paths(tmp_path: Path) -> None:
    with SessionManager(SQLiteStore(tmp_path / "ids.db"), config=OFF) as m:
        first = m.add_message("s", "user", "hello").message
        second = m.add_message("s", "assistant", "hi there").message
        again = m.add_message("s", "user", "hello", id=first.id).message  # the fast path
        assert (again.id, again.seq, again.content) == (first.id, first.seq, "hello")
        batch = m.add_messages(  # one repeated id and one new: the careful path
            "s",
            [
                {"role": "assistant", "content": "hi there", "id": second.id},
                {"role": "user", "content": "and a new one"},
            ],
        )
        assert batch[0].seq == second.seq and batch[1].seq == 3
        assert [x.content for x in m.get_history("s")] == ["hello", "hi there", "and a new one"]
        assert len({x.id for x in m.get_history("s")}) == 3


def test_a_drawn_id_never_comes_back_after_a_clear_or_a_delete(tmp_path: Path) -> None:
    with SessionManager(SQLiteStore(tmp_path / "ids.db"), config=OFF) as m:
        old = [m.add_message("s", "user", f"old {k}").message for k in range(5)]
        m.clear_session("s")
        new = m.add_message("s", "user", "after the clear").message
        m.delete_session("s")
        newer = m.add_message("s", "user", "after the delete").message
        assert {new.id, newer.id}.isdisjoint(x.id for x in old) and new.id != newer.id
        # a stale copy of an old message sent again is a message, not a retry of a new one
        m.add_message("s", "user", old[0].content, id=old[0].id)
        assert [x.content for x in m.get_history("s")] == ["after the delete", "old 0"]


def test_ids_copied_from_another_file_are_new_messages_here(tmp_path: Path) -> None:
    with (
        SessionManager(SQLiteStore(tmp_path / "a.db"), config=OFF) as a,
        SessionManager(SQLiteStore(tmp_path / "b.db"), config=OFF) as b,
    ):
        for k in range(20):
            a.add_message("s", "user", f"a {k}")
            b.add_message("s", "user", f"b {k}")  # the same rowids as in a.db
        copied = b.add_messages(
            "s", [{"role": m.role, "content": m.content, "id": m.id} for m in a.get_history("s")]
        )
        assert [x.seq for x in copied] == list(range(21, 41))
        assert len(b.get_history("s")) == 40


def test_an_append_writes_no_id_index_page(tmp_path: Path) -> None:
    """Two B-tree pages per add (row, seq index), from three: the WAL grows by that."""
    path = tmp_path / "pages.db"
    with SessionManager(SQLiteStore(path, checkpoint_pages=0), config=OFF) as m:
        for k in range(50):
            m.add_message("s", "user", f"warm-up message {k}")
        before = _wal_frames(path)
        for k in range(400):
            m.add_message("s", "user", f"a message of about ten words, number {k}")
        per_add = (_wal_frames(path) - before) / 400
    assert per_add < 2.5, per_add


def test_a_commit_flips_exactly_its_messages_found_by_seq_or_by_id(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "c.db") as store:
        ctx = RequestContext()
        msgs = [
            SessionMessage(id=f"given-{k}", role="user", content=f"m{k}", created_at=utc_now())
            for k in range(3)
        ]
        stored = store.append("s", msgs[:2], create_as=ctx).messages
        drawn = store.append("s", msgs[2:], drawn={"given-2"}).messages
        assert drawn[0].id != "given-2" and rowid_of(drawn[0].id, _key(store)) is not None
        record = store.get_session_record("s")
        assert record is not None

        def archive(first: int, last: int, archive_id: str) -> ArchiveEntry:
            return ArchiveEntry(archive_id, "s", "o", "a", first, last, last - first + 1, 3)

        # ids outside the seq range the archive names are still found (by id), then flipped
        store.commit_archive("s", archive(1, 1, "a1"), [stored[0].id, drawn[0].id], epoch=record.epoch)
        assert [m.seq for m in store.list_messages("s", status="active")] == [2]
        with pytest.raises(ConcurrencyError):
            store.commit_archive("s", archive(1, 2, "a2"), [stored[0].id, stored[1].id])
        assert [m.seq for m in store.list_messages("s", status="active")] == [2]


def _key(store: SQLiteStore) -> int:
    conn = sqlite3.connect(store.path)
    try:
        return int(conn.execute("SELECT id_key FROM ogmem_message_ids").fetchone()[0])
    finally:
        conn.close()


def _schema_4_file(path: Path) -> None:
    """A database as ogmem with schema 4 wrote it: every id in a unique (session_id, id) index."""
    conn = sqlite_file_at(path, 4)
    conn.execute(
        "INSERT INTO ogmem_sessions (session_id, account_id, user_id, agent_id, created_at, updated_at, "
        "epoch) VALUES ('s', 'default', 'default', 'default', '2025-01-01T00:00:00+00:00', "
        "'2025-01-01T00:00:00+00:00', 'e4')"
    )
    rows = [
        (seq, f"msg_{seq:012x}", f"old message {seq} about lisbon" if seq == 1 else f"old {seq}")
        for seq in (1, 2, 3)
    ]
    conn.executemany(
        "INSERT INTO ogmem_messages (rowid, session_id, seq, id, role, content, created_at, tokens, status, "
        "stored_at) VALUES (?1 + 100, 's', ?1, ?2, 'user', ?3, '2025-01-01T00:00:00+00:00', 3, "
        "CASE WHEN ?1 = 1 THEN 'archived' ELSE 'active' END, '2025-01-01T00:00:00+00:00')",
        rows,
    )
    conn.execute("UPDATE ogmem_sessions SET active_from = 2 WHERE session_id = 's'")
    conn.execute(
        "INSERT INTO ogmem_recall (rowid, content, scope) SELECT rowid, content, "
        "'s' || hex(session_id) || ' u' || hex('default' || char(1) || 'default') FROM ogmem_messages WHERE seq = 1"
    )
    conn.close()


def test_a_schema_4_file_upgrades_with_its_ids_and_recall_rows(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    _schema_4_file(path)
    with SessionManager(SQLiteStore(path), config=OFF) as m:
        assert [x.id for x in m.get_history("s")] == [f"msg_{seq:012x}" for seq in (1, 2, 3)]
        again = m.add_message("s", "user", "old 2", id="msg_000000000002").message  # an old id: a retry
        assert again.seq == 2
        new = m.add_message("s", "user", "the first message after the upgrade").message
        assert new.seq == 4 and new.id not in {x.id for x in m.get_history("s")[:3]}
        assert [x.content for x in m.store.search_messages("lisbon", session_id="s")] == [
            "old message 1 about lisbon"
        ]
        m.delete_session("s")
        assert m.store.search_messages("lisbon", owner=("default", "default")) == []
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM ogmem_schema").fetchone()[0] == len(SQLITE_MIGRATIONS)
        assert conn.execute("SELECT count(*) FROM ogmem_recall").fetchone()[0] == 0
        assert conn.execute("SELECT floor FROM ogmem_message_ids").fetchone()[0] >= 104
    finally:
        conn.close()


_WRITER = """
import sys
from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.stores import SQLiteStore
path, name = sys.argv[1], sys.argv[2]
with SessionManager(SQLiteStore(path), config=MemoryConfig(auto_commit=False)) as m:
    got = [m.add_message("shared", "user", f"{name} {k}").message for k in range(300)]
    for old in got[::15]:  # retries of ids read back, interleaved with the other process's adds
        m.add_message("shared", "user", old.content, id=old.id)
"""


def test_two_processes_drawing_ids_in_one_file_never_meet(tmp_path: Path) -> None:
    """Rowids (and so drawn ids) are allocated inside the write transaction: serial across processes."""
    path = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name], env=env, stderr=subprocess.PIPE)
        for name in ("p1", "p2")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with SessionManager(SQLiteStore(path), config=OFF) as m:
        history = m.get_history("shared")
    assert len(history) == 600
    assert len({x.id for x in history}) == 600
    assert [x.seq for x in history] == list(range(1, 601))
    assert sorted(x.content for x in history) == sorted(f"{n} {k}" for n in ("p1", "p2") for k in range(300))
