"""InMemoryStore: the reference implementation and test double. Not persistent."""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ogmem_memory import models
from ogmem_memory.errors import AccessDeniedError, ConcurrencyError, SessionNotFoundError
from ogmem_memory.models import new_epoch, utc_now
from ogmem_memory.recall import rank_by_overlap, search_terms
from ogmem_memory.stores.base import ArchiveCommit, MessageQuery, Owner, SessionStore, WindowQuery, WriteAs
from ogmem_memory.vectors import MAX_EXACT_CANDIDATES, cosine_top_k, pack


@dataclass
class _Session:
    record: models.SessionRecord
    messages: list[models.SessionMessage] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)  # message id -> position
    active: dict[str, int] = field(default_factory=dict)  # active ids -> position, in seq order
    archives: dict[str, models.ArchiveEntry] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    vectors: dict[str, bytes] = field(default_factory=dict)  # archived message id -> float32 blob


def _deny(session_id: str) -> AccessDeniedError:
    return AccessDeniedError(f"session {session_id!r} belongs to another user")


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

    def _owned(self, session_id: str, owner: tuple[str, str] | None) -> _Session | None:
        """The session (None when absent), after checking ``owner`` (held under the lock)."""
        s = self._sessions.get(session_id)
        if s is not None and owner is not None and s.record.owner != tuple(owner):
            raise _deny(session_id)
        return s

    # -- sessions ----------------------------------------------------------------

    def _create(self, session_id: str, identity: models.RequestContext) -> _Session:
        now = utc_now()
        record = models.SessionRecord(
            session_id=session_id,
            account_id=identity.account_id,
            user_id=identity.user_id,
            agent_id=identity.agent_id,
            created_at=now,
            updated_at=now,
            epoch=new_epoch(),
        )
        s = self._sessions[session_id] = _Session(record)
        return s

    def bind_session(self, session_id: str, identity: models.RequestContext) -> models.SessionRecord:
        with self._lock:
            existing = self._owned(session_id, identity.owner)
            return existing.record if existing is not None else self._create(session_id, identity).record

    def get_session_record(self, session_id: str) -> models.SessionRecord | None:
        with self._lock:
            s = self._sessions.get(session_id)
            return s.record if s else None

    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[models.SessionRecord]:
        with self._lock:
            records = [s.record for s in self._sessions.values() if owner is None or s.record.owner == owner]
        records.sort(key=lambda r: (r.updated_at, r.session_id), reverse=True)
        return records[offset : offset + limit]

    def delete_session(self, session_id: str, *, owner: tuple[str, str] | None = None) -> bool:
        with self._lock:
            if self._owned(session_id, owner) is None:
                return False
            del self._sessions[session_id]
            return True

    def delete_owner(self, owner: tuple[str, str]) -> int:
        with self._lock:
            doomed = [sid for sid, s in self._sessions.items() if s.record.owner == tuple(owner)]
            for sid in doomed:
                del self._sessions[sid]
            return len(doomed)

    def clear_session(self, session_id: str, *, owner: tuple[str, str] | None = None) -> None:
        with self._lock:
            s = self._owned(session_id, owner)
            if s is not None:
                self._reset(session_id, s)

    def _reset(self, session_id: str, s: _Session) -> _Session:
        # last_seq is kept so seqs stay unique for caches that saw the old ones
        record = replace(
            s.record, message_count=0, archive_version=s.record.archive_version + 1, updated_at=utc_now()
        )
        fresh = self._sessions[session_id] = _Session(record)
        return fresh

    # -- messages ----------------------------------------------------------------

    def _session_for_write(
        self, session_id: str, create_as: models.RequestContext | None, owner: tuple[str, str] | None
    ) -> tuple[_Session, bool]:
        s = self._owned(session_id, owner)
        if s is None:
            if create_as is None:
                raise SessionNotFoundError(f"session {session_id!r} does not exist")
            return self._create(session_id, create_as), True
        return s, False

    @staticmethod
    def _add(
        s: _Session, messages: Sequence[models.SessionMessage]
    ) -> tuple[tuple[models.SessionMessage, ...], int]:
        seq = s.record.last_seq
        out: list[models.SessionMessage] = []
        added = 0
        for m in messages:
            pos = s.index.get(m.id)
            if pos is not None:  # a retried write: the stored message stands
                out.append(s.messages[pos])
                continue
            seq += 1
            stored = replace(m, seq=seq, status="active", archive_id=None)
            s.index[m.id] = s.active[m.id] = len(s.messages)
            s.messages.append(stored)
            out.append(stored)
            added += 1
        if added:
            s.record = replace(
                s.record,
                last_seq=seq,
                message_count=s.record.message_count + added,
                updated_at=utc_now(),
            )
        return tuple(out), added

    def _append_impl(
        self,
        session_id: str,
        messages: Sequence[models.SessionMessage],
        write_as: WriteAs,
        replace_all: bool = False,
    ) -> models.AppendResult:
        with self._lock:
            s, created = self._session_for_write(session_id, write_as.create_as, write_as.owner)
            if replace_all:
                s = self._reset(session_id, s)
            stored, added = self._add(s, messages)
            return models.AppendResult(s.record, stored, added, created)

    def _replace_messages_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult:
        return self._append_impl(session_id, messages, write_as, replace_all=True)

    def _read_window_impl(self, session_id: str, window: WindowQuery) -> models.WindowRead | None:
        owner, since, archive_limit = window.owner, window.since, window.archive_limit
        with self._lock:
            s = self._owned(session_id, owner)
            if s is None:
                return None
            r = s.record
            if since is not None and (since.epoch, since.archive_version) == (r.epoch, r.archive_version):
                start = bisect.bisect_right(s.messages, since.last_seq, key=lambda m: m.seq)
                fresh = tuple(m for m in s.messages[start:] if m.status == "active")
                return models.WindowRead(r, False, fresh)
            active = tuple(s.messages[p] for p in s.active.values())
            return models.WindowRead(r, True, active, tuple(self._live_archives(s, archive_limit)))

    def _list_messages_impl(self, session_id: str, select: MessageQuery) -> list[models.SessionMessage]:
        status, after_seq, limit = select.status, select.after_seq, select.limit
        with self._lock:
            s = self._owned(session_id, select.owner)
            if s is None:
                return []
            if status == "active":
                pool: Sequence[models.SessionMessage] = [s.messages[p] for p in s.active.values()]
            else:
                pool = s.messages
            start = 0 if after_seq is None else bisect.bisect_right(pool, after_seq, key=lambda m: m.seq)
            out = [m for m in pool[start:] if status is None or m.status == status]
        return out[:limit] if limit is not None else out

    def list_messages_by_seq(
        self, session_id: str, seqs: Sequence[int], *, owner: tuple[str, str] | None = None
    ) -> list[models.SessionMessage]:
        with self._lock:
            s = self._owned(session_id, owner)
            if s is None:
                return []
            found = []
            for seq in sorted(set(seqs))[:500]:
                i = bisect.bisect_left(s.messages, seq, key=lambda m: m.seq)
                if i < len(s.messages) and s.messages[i].seq == seq:
                    found.append(s.messages[i])
            return found

    def head(self, session_id: str) -> models.SessionHead | None:
        with self._lock:
            s = self._sessions.get(session_id)
            return s.record.head if s else None

    # -- archives ----------------------------------------------------------------

    @staticmethod
    def _check_epoch(session_id: str, s: _Session, epoch: str | None) -> None:
        if epoch is not None and s.record.epoch != epoch:
            raise ConcurrencyError(f"session {session_id!r} was deleted and re-created")

    def _commit_archive_impl(self, session_id: str, commit: ArchiveCommit) -> models.ArchiveEntry:
        archive = commit.archive
        packed = {mid: pack(v) for mid, v in (commit.vectors or {}).items()}  # validated before the lock
        with self._lock:
            s = self._get(session_id)
            self._check_epoch(session_id, s, commit.epoch)
            ids = list(dict.fromkeys(commit.message_ids))
            if any(mid not in s.active for mid in ids):
                raise ConcurrencyError(f"messages of {session_id!r} were archived by another writer")
            if archive.archive_id in s.archives:
                raise ConcurrencyError(f"archive {archive.archive_id!r} already exists")
            for mid in ids:
                p = s.active.pop(mid)
                s.messages[p] = replace(s.messages[p], status="archived", archive_id=archive.archive_id)
                if mid in packed:
                    s.vectors[mid] = packed[mid]
            stored = replace(archive, session_id=session_id, messages=())
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

    @staticmethod
    def _live_archives(
        s: _Session, limit: int | None, include_merged: bool = False
    ) -> list[models.ArchiveEntry]:
        out = [a for a in s.archives.values() if include_merged or not a.merged_into]
        out.sort(key=lambda a: (a.last_seq, a.created_at, a.archive_id), reverse=True)
        return out[:limit] if limit is not None else out

    def _list_archives_impl(
        self, session_id: str, include_merged: bool, limit: int | None, owner: Owner | None
    ) -> list[models.ArchiveEntry]:
        with self._lock:
            s = self._owned(session_id, owner)
            return self._live_archives(s, limit, include_merged) if s is not None else []

    def read_archive(
        self, session_id: str, archive_id: str, *, owner: tuple[str, str] | None = None
    ) -> models.ArchiveEntry | None:
        with self._lock:
            s = self._owned(session_id, owner)
            if s is None or archive_id not in s.archives:
                return None
            a = s.archives[archive_id]
            lo = bisect.bisect_left(s.messages, a.first_seq, key=lambda m: m.seq)
            hi = bisect.bisect_right(s.messages, a.last_seq, key=lambda m: m.seq)
            msgs = tuple(m for m in s.messages[lo:hi] if m.status == "archived")
            return replace(a, messages=msgs)

    def _merge_archives_impl(
        self, session_id: str, merged: models.ArchiveEntry, source_ids: Sequence[str], epoch: str | None
    ) -> models.ArchiveEntry:
        with self._lock:
            s = self._get(session_id)
            self._check_epoch(session_id, s, epoch)
            sources = [s.archives.get(i) for i in source_ids]
            if any(a is None or a.merged_into for a in sources) or merged.archive_id in s.archives:
                raise ConcurrencyError(f"archives of {session_id!r} were merged by another writer")
            for i in source_ids:
                s.archives[i] = replace(s.archives[i], merged_into=merged.archive_id)
            stored = replace(merged, session_id=session_id, messages=())
            s.archives[merged.archive_id] = stored
            s.record = replace(s.record, archive_version=s.record.archive_version + 1)
            return stored

    def _relink(self, session_id: str, archive_id: str, expected: tuple[str, ...], merged_into: str) -> bool:
        """Set one archive's ``merged_into`` when it is one of ``expected``; False when it is not."""
        with self._lock:
            s = self._sessions.get(session_id)
            a = s.archives.get(archive_id) if s else None
            if s is None or a is None or a.merged_into not in expected:
                return False
            s.archives[archive_id] = replace(a, merged_into=merged_into)
            s.record = replace(s.record, archive_version=s.record.archive_version + 1)
            return True

    def mark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        return self._relink(session_id, archive_id, ("", merged_archive_id), merged_archive_id)

    def unmark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        return self._relink(session_id, archive_id, (merged_archive_id,), "")

    def delete_archive(self, session_id: str, archive_id: str) -> bool:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None or s.archives.pop(archive_id, None) is None:
                return False
            s.record = replace(s.record, archive_version=s.record.archive_version + 1)
            return True

    # -- state -------------------------------------------------------------------

    def save_state(self, session_id: str, payload: Mapping[str, Any], *, epoch: str | None = None) -> None:
        with self._lock:
            s = self._get(session_id)
            if epoch is not None and s.record.epoch != epoch:
                raise SessionNotFoundError(f"session {session_id!r} was deleted and re-created")
            s.state = copy.deepcopy(dict(payload))

    def load_state(self, session_id: str, *, epoch: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None or s.state is None or (epoch is not None and s.record.epoch != epoch):
                return None
            return copy.deepcopy(s.state)

    # -- search ------------------------------------------------------------------

    def _search_messages_impl(
        self, query: str, session_id: str | None, owner: Owner | None, status: str | None, limit: int
    ) -> list[models.SessionMessage]:
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
            candidates = [
                (m, x.record.session_id)
                for x in sessions
                for m in x.messages
                if status is None or m.status == status
            ]
        of = {id(m): sid for m, sid in candidates}
        found = rank_by_overlap(terms, (m for m, _sid in candidates))[:limit]
        return [replace(m, session_id=of[id(m)]) for m in found]

    def _search_vectors_impl(
        self, vector: Sequence[float], session_id: str | None, owner: Owner | None, limit: int
    ) -> list[models.SessionMessage]:
        with self._lock:
            if session_id is not None:
                s = self._owned(session_id, owner)
                sessions = [s] if s is not None else []
            else:
                sessions = [x for x in self._sessions.values() if x.record.owner == owner]
            candidates = [
                (replace(x.messages[x.index[mid]], session_id=x.record.session_id), blob)
                for x in sessions
                for mid, blob in x.vectors.items()
            ][-MAX_EXACT_CANDIDATES:]
        return [m for m, _score in cosine_top_k(vector, candidates, limit)]
