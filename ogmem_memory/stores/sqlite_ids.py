"""SQLite message ids that cost no index: a drawn id is its row's key, scrambled.

A message the caller gave no id gets ``msg_`` + 12 hex digits that encode its rowid (a
bijection keyed per database file), so finding it by id is a probe of the table's own
B-tree and an append writes no id index at all (the index was about a third of an
append's time). Only the ids callers give are in an index (a partial one, ``given = 1``),
which is what keeps their retries no-ops. Rowids are never reused (a trigger records the
highest one deleted), so a drawn id never comes back for another message; the per-file key
keeps ids copied from another database from pointing at this one's rows.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Sequence
from typing import Final

from ogmem_memory.models import SessionMessage
from ogmem_memory.stores.sqlite_schema import MSG_COLS, row_message

_BITS: Final = 48
_MASK: Final = (1 << _BITS) - 1
_SPREAD: Final = 0x9E3779B97F4B  # odd: a bijection modulo 2**48, so consecutive rowids look unrelated
_UNSPREAD: Final = pow(_SPREAD, -1, 1 << _BITS)
_DRAWN_FORM: Final = re.compile(r"msg_[0-9a-f]{12}")
MAX_ROWID: Final = _MASK  # a rowid past it cannot be encoded (its message is stored with its id indexed)


def drawn_id(rowid: int, key: int) -> str:
    """The id of the message stored at ``rowid`` with no id of the caller's."""
    return f"msg_{((rowid * _SPREAD) & _MASK) ^ key:012x}"


def rowid_of(message_id: str, key: int) -> int | None:
    """The rowid ``message_id`` would be stored at if it were drawn here; None if it is not of that form."""
    if len(message_id) != 16 or not _DRAWN_FORM.fullmatch(message_id):
        return None
    return ((int(message_id[4:], 16) ^ key) * _UNSPREAD) & _MASK


def find_stored(
    conn: sqlite3.Connection | sqlite3.Cursor, session_id: str, ids: Collection[str], key: int
) -> dict[str, SessionMessage]:
    """The messages of ``session_id`` stored under ``ids``: given ids through their index,
    drawn-looking ones through the row their id encodes (``find_drawn``)."""
    found: dict[str, SessionMessage] = {}
    wanted = list(dict.fromkeys(ids))
    for start in range(0, len(wanted), 400):  # under SQLite's bound-variable limit
        chunk = wanted[start : start + 400]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT {MSG_COLS} FROM ogmem_messages WHERE session_id = ? AND given = 1 AND id IN ({marks})",
            (session_id, *chunk),
        )
        found.update((r[1], row_message(r)) for r in rows)
        found.update(find_drawn(conn, session_id, [i for i in chunk if i not in found], key))
    return found


def find_drawn(
    conn: sqlite3.Connection | sqlite3.Cursor, session_id: str, ids: Sequence[str], key: int
) -> dict[str, SessionMessage]:
    """The messages of ``session_id`` among ``ids`` that this session drew: each id's row is
    the one it encodes, and that row must hold exactly that id (a caller's id stored there
    does not count). At most a few hundred ids."""
    rowids = [r for r in (rowid_of(i, key) for i in ids) if r is not None]
    if not rowids:
        return {}
    marks = ", ".join("?" * len(rowids))
    rows = conn.execute(
        f"SELECT {MSG_COLS} FROM ogmem_messages WHERE rowid IN ({marks}) AND session_id = ?",
        (*rowids, session_id),
    )
    return {r[1]: row_message(r) for r in rows if r[1] in ids}


def active_rowids(
    conn: sqlite3.Connection | sqlite3.Cursor, session_id: str, ids: Collection[str], seqs: tuple[int, int]
) -> dict[str, int]:
    """The rowids of the active messages of ``session_id`` among ``ids``, looked for in the seq
    range ``seqs`` (an archive's: one range of the (session_id, seq) index), then by id."""
    wanted = set(ids)
    found = {
        r[1]: r[0]
        for r in conn.execute(
            "SELECT rowid, id FROM ogmem_messages WHERE session_id = ? AND seq BETWEEN ? AND ? "
            "AND status = 'active'",
            (session_id, *seqs),
        )
        if r[1] in wanted
    }
    missing = [i for i in wanted if i not in found]
    if missing:  # outside the range the caller named: the slower lookups, never a scan
        key = conn.execute("SELECT id_key FROM ogmem_message_ids").fetchone()[0]
        for message in find_stored(conn, session_id, missing, key).values():
            if message.status == "active":
                row = conn.execute(
                    "SELECT rowid FROM ogmem_messages WHERE session_id = ? AND seq = ?",
                    (session_id, message.seq),
                ).fetchone()
                found[message.id] = row[0]
    return found
