"""Opening a SQLite file that another connection holds the write lock of waits, it does not fail.

SQLite answers "database is locked" at once, without calling the busy handler, when a
connection switches a rollback-journal file to WAL while another holds the file's write lock:
what two processes opening a new file together meet. Seen as a rare failure of the two-process
stress test (``tests/stress/test_cross_tenant.py``): a worker's first call raised ``StoreError``
("cannot open SQLite database ...: database is locked"). Fails on the code before the retry in
``open_connection``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ogmem_memory import SessionManager, SQLiteStore
from ogmem_memory.errors import StoreError


def _hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    """A rollback-journal file whose write lock another connection holds for ``seconds``."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (a)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")

    def release() -> None:
        time.sleep(seconds)
        holder.execute("COMMIT")
        holder.close()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_the_lock_makes_sqlite_fail_at_once_without_waiting(tmp_path: Path) -> None:
    # the premise: a plain connection with a 5 s busy timeout does not wait here
    path = tmp_path / "x.db"
    releaser = _hold_write_lock(path, 0.3)
    began = time.monotonic()
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("PRAGMA journal_mode=WAL")
    assert time.monotonic() - began < 0.25
    conn.close()
    releaser.join()


def test_a_store_opening_a_locked_file_waits_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    releaser = _hold_write_lock(path, 0.3)
    with SessionManager(SQLiteStore(path)) as memory:
        memory.add_message("s", "user", "first words")
        assert [m.content for m in memory.get_history("s")] == ["first words"]
    releaser.join()


def test_a_lock_held_past_the_busy_timeout_still_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    releaser = _hold_write_lock(path, 1.0)
    store = SQLiteStore(path, busy_timeout_ms=200)
    began = time.monotonic()
    with pytest.raises(StoreError, match="database is locked"):
        store.setup()
    assert time.monotonic() - began < 0.9  # gave up at about the busy timeout, not later
    releaser.join()
    store.setup()  # and opens once the lock is gone
    store.close()
