"""SQLite files as an older ogmem wrote them, for the upgrade tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ogmem_memory.stores.sqlite_schema import SQLITE_MIGRATIONS, split_script


def sqlite_file_at(path: Path, version: int) -> sqlite3.Connection:
    """A new file with the first ``version`` migrations applied and recorded, as that version
    left it; an autocommit connection to fill it (the caller closes it)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE ogmem_schema (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO ogmem_schema (version) VALUES (?)", (version,))
    for script in SQLITE_MIGRATIONS[:version]:
        for statement in split_script(script):
            conn.execute(statement)
    return conn
