"""What the SQL backends (SQLite, PostgreSQL) share: the column lists and the row -> model mapping.

Each backend stores timestamps and JSON its own way (ISO text and JSON text in SQLite; native
values in PostgreSQL), so a :class:`RowReader` is built with those conversions and reads
``MSG_COLS``, ``ARCHIVE_COLS`` and ``SESSION_COLS`` rows the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from ogmem_memory.models import ArchiveEntry, SessionMessage, SessionRecord

MSG_COLS: Final = "seq, id, role, content, payload, created_at, tokens, status, archive_id"
ARCHIVE_COLS: Final = (
    "archive_id, session_id, created_at, overview, abstract, first_seq, last_seq, "
    "message_count, token_count, metadata, merged_into"
)
SESSION_COLS: Final = (
    "session_id, account_id, user_id, agent_id, created_at, updated_at, message_count, "
    "last_seq, archive_version, commit_count, last_commit_at, epoch"
)
# An archive's columns are named as its fields, so one list serves the SELECTs and the reading.
_ARCHIVE_FIELDS: Final = tuple(ARCHIVE_COLS.split(", "))


class RowLike(Protocol):
    """A driver's row: a ``sqlite3.Row`` or a tuple."""

    def __getitem__(self, index: int, /) -> Any: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RowReader:
    """Rows of one backend as models.

    Args:
        when: A stored timestamp (never NULL) as a tz-aware datetime.
        last_commit: The nullable ``last_commit_at`` as a datetime or ``None``.
        json: A stored JSON column (payload, metadata) as its value.
        trailing_session: A message row longer than ``MSG_COLS`` ends with its ``session_id``.
    """

    when: Callable[[Any], datetime]
    last_commit: Callable[[Any], datetime | None]
    json: Callable[[Any], Any]
    trailing_session: bool = False

    def message(self, row: RowLike) -> SessionMessage:
        """A message from ``MSG_COLS``."""
        return SessionMessage(
            id=row[1],
            role=row[2],
            content=row[3],
            payload=self.json(row[4]) if row[4] is not None else None,
            created_at=self.when(row[5]),
            seq=row[0],
            tokens=row[6],
            status=row[7],
            archive_id=row[8],
            session_id=row[9] if self.trailing_session and len(row) > 9 else "",
        )

    def archive(self, row: RowLike) -> ArchiveEntry:
        """An archive (without messages) from ``ARCHIVE_COLS``."""
        values = {name: row[i] for i, name in enumerate(_ARCHIVE_FIELDS)}
        values["created_at"] = self.when(values["created_at"])
        values["metadata"] = self.json(values["metadata"])
        return ArchiveEntry(**values)

    def record(self, row: RowLike) -> SessionRecord:
        """A session record from ``SESSION_COLS``."""
        # Every write returns a record: a direct call, twice as fast as ``archive``'s by-name one.
        return SessionRecord(
            session_id=row[0],
            account_id=row[1],
            user_id=row[2],
            agent_id=row[3],
            created_at=self.when(row[4]),
            updated_at=self.when(row[5]),
            message_count=row[6],
            last_seq=row[7],
            archive_version=row[8],
            commit_count=row[9],
            last_commit_at=self.last_commit(row[10]),
            epoch=row[11],
        )
