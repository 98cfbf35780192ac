"""InMemoryStore: the reference implementation and test double. Not persistent."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ogmem_memory.errors import (
    AccessDeniedError,
    ConcurrencyError,
    InvalidInputError,
    SessionNotFoundError,
)
from ogmem_memory.models import (
    ArchiveEntry,
    RequestContext,
    SessionHead,
    SessionMessage,
    SessionRecord,
    utc_now,
)
from ogmem_memory.recall import rank_by_overlap, search_terms
from ogmem_memory.stores.base import SessionStore


@dataclass
class _Session:
    record: SessionRecord
    messages: list[SessionMessage] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)  # message id -> position
    archives: dict[str, ArchiveEntry] = field(default_factory=dict)
    state: dict[str, Any] | None = None


class InMemoryStore(SessionStore):
    """All data in process memory, guarded by one lock; every method is atomic."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}

    def setup(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _get(self, session_id: str) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFoundError(f"session {session_id!r} does not exist") from None

    # -- sessions ----------------------------------------------------------------

    def bind_session(self, session_id: str, identity: RequestContext) -> SessionRecord:
        with self._lock:
            existing = self._sessions.get(session_id)
            if existing is not None:
                if existing.record.owner != identity.owner:
                    raise AccessDeniedError(f"session {session_id!r} belongs to another user")
                return existing.record
            now = utc_now()
            record = SessionRecord(
                session_id=session_id,
                account_id=identity.account_id,
                user_id=identity.user_id,
                agent_id=identity.agent_id,
                created_at=now,
                updated_at=now,
            )
            self._sessions[session_id] = _Session(record)
            return record

    def get_session_record(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            s = self._sessions.get(session_id)
            return s.record if s else None

    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        with self._lock:
            records = [s.record for s in self._sessions.values() if owner is None or s.record.owner == owner]
        records.sort(key=lambda r: (r.updated_at, r.session_id), reverse=True)
        return records[offset : offset + limit]

    def delete_session(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def clear_session(self, session_id: str) -> None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return
            record = replace(
                s.record,
                message_count=0,
                archive_version=s.record.archive_version + 1,
                updated_at=utc_now(),
            )
            self._sessions[session_id] = _Session(record)

    # -- messages ----------------------------------------------------------------

    def append_messages(self, session_id: str, messages: Sequence[SessionMessage]) -> list[SessionMessage]:
        with self._lock:
            s = self._get(session_id)
            seq = s.record.last_seq
            stored: list[SessionMessage] = []
            for m in messages:
                if m.id in s.index:
                    raise InvalidInputError(f"message id {m.id!r} already exists in {session_id!r}")
                seq += 1
                stored.append(replace(m, seq=seq, status="active", archive_id=None))
            for m in stored:
                s.index[m.id] = len(s.messages)
                s.messages.append(m)
            s.record = replace(
                s.record,
                last_seq=seq,
                message_count=s.record.message_count + len(stored),
                updated_at=utc_now(),
            )
            return stored

    def list_messages(
        self,
        session_id: str,
        *,
        status: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[SessionMessage]:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return []
            out = [
                m
                for m in s.messages
                if (status is None or m.status == status) and (after_seq is None or m.seq > after_seq)
            ]
        return out[:limit] if limit is not None else out

    def list_messages_by_seq(self, session_id: str, seqs: Sequence[int]) -> list[SessionMessage]:
        wanted = set(seqs)
        with self._lock:
            s = self._sessions.get(session_id)
            return [m for m in s.messages if m.seq in wanted] if s else []

    def head(self, session_id: str) -> SessionHead | None:
        with self._lock:
            s = self._sessions.get(session_id)
            return SessionHead(s.record.last_seq, s.record.archive_version) if s else None

    # -- archives ----------------------------------------------------------------

    def commit_archive(
        self, session_id: str, archive: ArchiveEntry, message_ids: Sequence[str]
    ) -> ArchiveEntry:
        with self._lock:
            s = self._get(session_id)
            positions = [s.index.get(mid) for mid in message_ids]
            if any(p is None or s.messages[p].status != "active" for p in positions):
                raise ConcurrencyError(f"messages of {session_id!r} were archived by another writer")
            if archive.archive_id in s.archives:
                raise ConcurrencyError(f"archive {archive.archive_id!r} already exists")
            for p in positions:
                assert p is not None
                s.messages[p] = replace(s.messages[p], status="archived", archive_id=archive.archive_id)
            stored = replace(archive, messages=())
            s.archives[archive.archive_id] = stored
            now = utc_now()
            s.record = replace(
                s.record,
                archive_version=s.record.archive_version + 1,
                commit_count=s.record.commit_count + 1,
                last_commit_at=now,
                updated_at=now,
            )
            return stored

    def list_archives(
        self, session_id: str, *, include_merged: bool = False, limit: int | None = None
    ) -> list[ArchiveEntry]:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return []
            out = [a for a in s.archives.values() if include_merged or not a.merged_into]
        out.sort(key=lambda a: (a.last_seq, a.created_at, a.archive_id), reverse=True)
        return out[:limit] if limit is not None else out

    def read_archive(self, session_id: str, archive_id: str) -> ArchiveEntry | None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None or archive_id not in s.archives:
                return None
            a = s.archives[archive_id]
            msgs = tuple(
                m for m in s.messages if m.status == "archived" and a.first_seq <= m.seq <= a.last_seq
            )
            return replace(a, messages=msgs)

    def merge_archives(
        self, session_id: str, merged: ArchiveEntry, source_ids: Sequence[str]
    ) -> ArchiveEntry:
        with self._lock:
            s = self._get(session_id)
            sources = [s.archives.get(i) for i in source_ids]
            if any(a is None or a.merged_into for a in sources) or merged.archive_id in s.archives:
                raise ConcurrencyError(f"archives of {session_id!r} were merged by another writer")
            for i in source_ids:
                s.archives[i] = replace(s.archives[i], merged_into=merged.archive_id)
            stored = replace(merged, messages=())
            s.archives[merged.archive_id] = stored
            s.record = replace(s.record, archive_version=s.record.archive_version + 1)
            return stored

    def mark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        with self._lock:
            s = self._sessions.get(session_id)
            a = s.archives.get(archive_id) if s else None
            if s is None or a is None or a.merged_into not in ("", merged_archive_id):
                return False
            s.archives[archive_id] = replace(a, merged_into=merged_archive_id)
            s.record = replace(s.record, archive_version=s.record.archive_version + 1)
            return True

    def unmark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        with self._lock:
            s = self._sessions.get(session_id)
            a = s.archives.get(archive_id) if s else None
            if s is None or a is None or a.merged_into != merged_archive_id:
                return False
            s.archives[archive_id] = replace(a, merged_into="")
            s.record = replace(s.record, archive_version=s.record.archive_version + 1)
            return True

    def delete_archive(self, session_id: str, archive_id: str) -> bool:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None or s.archives.pop(archive_id, None) is None:
                return False
            s.record = replace(s.record, archive_version=s.record.archive_version + 1)
            return True

    # -- state -------------------------------------------------------------------

    def save_state(self, session_id: str, payload: Mapping[str, Any]) -> None:
        with self._lock:
            self._get(session_id).state = copy.deepcopy(dict(payload))

    def load_state(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            s = self._sessions.get(session_id)
            return copy.deepcopy(s.state) if s and s.state is not None else None

    # -- search ------------------------------------------------------------------

    def search_messages(
        self,
        query: str,
        *,
        session_id: str | None = None,
        owner: tuple[str, str] | None = None,
        status: str | None = "archived",
        limit: int = 10,
    ) -> list[SessionMessage]:
        if session_id is None and owner is None:
            raise InvalidInputError("search_messages needs a session_id or an owner")
        terms = search_terms(query)
        if not terms or limit <= 0:
            return []
        with self._lock:
            if session_id is not None:
                s = self._sessions.get(session_id)
                if s is None:
                    return []
                if owner is not None and s.record.owner != owner:
                    raise AccessDeniedError(f"session {session_id!r} belongs to another user")
                sessions = [s]
            else:
                sessions = [x for x in self._sessions.values() if x.record.owner == owner]
            candidates = [m for x in sessions for m in x.messages if status is None or m.status == status]
        return rank_by_overlap(terms, candidates)[:limit]
