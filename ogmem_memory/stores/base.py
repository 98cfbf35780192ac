"""SessionStore: the one interface every backend implements.

Sync is the contract; the ``a*`` twins run the sync method in a thread unless a
backend has a native async driver. Every write is one transaction; the archive
write is a compare-and-set so that several processes can commit the same session
and exactly one wins.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ogmem_memory import models
from ogmem_memory.errors import InvalidInputError
from ogmem_memory.stores.lifecycle import Lifecycle
from ogmem_memory.twins import in_thread, via_async_impl

Owner = tuple[str, str]


@dataclass(frozen=True, slots=True)
class WriteAs:
    """``append``'s and ``replace_messages``' keywords, for the backends' ``_*_impl``."""

    create_as: models.RequestContext | None
    owner: Owner | None
    drawn: Collection[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """``list_messages``' keywords, for the backends' ``_list_messages_impl``."""

    status: str | None
    after_seq: int | None
    limit: int | None
    owner: Owner | None


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """``read_window``'s keywords, for the backends' ``_read_window_impl``."""

    owner: Owner | None
    since: models.SessionHead | None
    archive_limit: int | None


@dataclass(frozen=True, slots=True)
class ArchiveCommit:
    """``commit_archive``'s arguments, for the backends' ``_commit_archive_impl``."""

    archive: models.ArchiveEntry
    message_ids: Sequence[str]
    epoch: str | None
    vectors: Mapping[str, Sequence[float]] | None


_WITH_IMPL: Final = (
    "append",
    "replace_messages",
    "read_window",
    "list_messages",
    "commit_archive",
    "list_archives",
    "merge_archives",
    "search_messages",
    "search_vectors",
)


def _not_reached(name: str) -> Callable[..., Any]:
    def method(*_args: object) -> Any:
        raise NotImplementedError(f"{name} of a backend that overrides its public method")

    method.__name__ = name
    return method


def _check_scope(method: str, session_id: str | None, owner: Owner | None) -> None:
    if session_id is None and owner is None:
        raise InvalidInputError(f"{method} needs a session_id or an owner")


class SessionStore(Lifecycle, ABC):
    """Durable home of sessions, messages, archives and per-session state.

    Implementations must make each method atomic, bind values as parameters, and
    keep raw messages forever (archiving flips ``status``; it never deletes).

    Ownership is decided here, never by a caller's cache: every method that takes
    ``owner`` checks it in the same transaction as its read or write and raises
    ``AccessDeniedError`` (changing nothing) when the session belongs to someone else.
    ``owner=None`` skips the check (the single-user default).
    Each creation of a session id draws a new ``epoch``, so a cache can tell a
    re-created session from the one it saw.

    A backend implements the abstract public methods and, where the public parameter list
    is long, the abstract ``_<name>_impl`` the public method calls with the same arguments,
    positional or bundled (``WriteAs``, ``WindowQuery``, ``MessageQuery``, ``ArchiveCommit``):
    the contract and its docstring live here, once. A backend that overrides such a public
    method itself (with its keyword signature) needs no ``_impl`` for it. Each ``a*`` twin
    stands beside its sync method (``twins.py``); a native async backend overrides the
    ``_a<name>_impl`` of a long-signature method, or the twin itself.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for public in _WITH_IMPL:  # the override never reaches the _impl: it is not abstract there
            impl = f"_{public}_impl"
            overridden = getattr(cls, public) is not getattr(SessionStore, public)
            if overridden and getattr(getattr(cls, impl), "__isabstractmethod__", False):
                setattr(cls, impl, _not_reached(impl))

    # -- lifecycle ---------------------------------------------------------------

    @abstractmethod
    def setup(self) -> None:
        """Open connections and apply migrations. Idempotent; also run by ``__enter__``."""

    asetup = in_thread(setup)

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    aclose = in_thread(close)

    # -- sessions ----------------------------------------------------------------

    @abstractmethod
    def bind_session(self, session_id: str, identity: models.RequestContext) -> models.SessionRecord:
        """Create the session owned by ``identity``, or return it when ``identity`` owns it.

        Raises:
            AccessDeniedError: The session is bound to another account/user.
        """

    abind_session = in_thread(bind_session)

    @abstractmethod
    def get_session_record(self, session_id: str) -> models.SessionRecord | None:
        """The session's record, or ``None`` when it does not exist."""

    @abstractmethod
    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[models.SessionRecord]:
        """Sessions, most recently updated first; only ``owner``'s when given."""

    @abstractmethod
    def delete_session(self, session_id: str, *, owner: Owner | None = None) -> bool:
        """Remove the session with its messages, archives and state. False when absent."""

    @abstractmethod
    def delete_owner(self, owner: Owner) -> int:
        """Delete every session of ``owner`` with all its rows (messages, archives, state,
        search and vector index rows), in one transaction. Returns how many sessions."""

    @abstractmethod
    def clear_session(self, session_id: str, *, owner: Owner | None = None) -> None:
        """Remove messages, archives and state but keep the session and its owner."""

    # -- messages ----------------------------------------------------------------

    def append(
        self,
        session_id: str,
        messages: Sequence[models.SessionMessage],
        *,
        create_as: models.RequestContext | None = None,
        owner: Owner | None = None,
        drawn: Collection[str] = frozenset(),
    ) -> models.AppendResult:
        """Append in one transaction, creating the session for ``create_as`` when it is missing.

        Retry-safe: a message whose id the session already holds is not stored again; the
        stored one is returned in its place. Returns the session's record after the write.
        ``drawn``: the ids the caller drew itself (no user gave them, so none is a retry); a
        store may store those messages under ids of its own (SQLite does: the returned
        messages carry the ids they are stored under).

        Raises:
            SessionNotFoundError: The session does not exist and ``create_as`` is None.
            AccessDeniedError: ``owner`` (or ``create_as``, when it created nothing) is not the
                session's owner; nothing was written.
        """
        return self._append_impl(session_id, messages, WriteAs(create_as, owner, drawn))

    aappend = via_async_impl(append)

    @abstractmethod
    def _append_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult: ...

    def append_messages(
        self, session_id: str, messages: Sequence[models.SessionMessage]
    ) -> list[models.SessionMessage]:
        """Append to an existing session; returns the stored messages with their ``seq``.

        Raises:
            SessionNotFoundError: The session was never bound.
        """
        if not messages:
            return []
        return list(self.append(session_id, messages).messages)

    aappend_messages = in_thread(append_messages)

    def replace_messages(
        self,
        session_id: str,
        messages: Sequence[models.SessionMessage],
        *,
        create_as: models.RequestContext | None = None,
        owner: Owner | None = None,
    ) -> models.AppendResult:
        """Replace the session's messages, archives and state by ``messages``, in one transaction.

        Seqs continue after the old ones (caches never see a seq reused). On any error
        nothing changes.
        """
        return self._replace_messages_impl(session_id, messages, WriteAs(create_as, owner))

    @abstractmethod
    def _replace_messages_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult: ...

    def read_window(
        self,
        session_id: str,
        *,
        owner: Owner | None = None,
        since: models.SessionHead | None = None,
        archive_limit: int | None = None,
    ) -> models.WindowRead | None:
        """One consistent read of the live window, ``None`` when the session does not exist.

        With ``since`` equal to the stored head's epoch and archive version, only the
        active messages after ``since.last_seq`` are read (O(new messages)); otherwise
        the whole active set and the newest ``archive_limit`` live archives. The record,
        the messages and the archives come from one snapshot.
        """
        return self._read_window_impl(session_id, WindowQuery(owner, since, archive_limit))

    aread_window = via_async_impl(read_window)

    @abstractmethod
    def _read_window_impl(self, session_id: str, window: WindowQuery) -> models.WindowRead | None: ...

    def list_messages(
        self,
        session_id: str,
        *,
        status: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
        owner: Owner | None = None,
    ) -> list[models.SessionMessage]:
        """Messages in ``seq`` order, optionally only one status, after a seq, or the first ``limit``."""
        return self._list_messages_impl(session_id, MessageQuery(status, after_seq, limit, owner))

    alist_messages = via_async_impl(list_messages)

    @abstractmethod
    def _list_messages_impl(self, session_id: str, select: MessageQuery) -> list[models.SessionMessage]: ...

    def list_messages_by_seq(
        self, session_id: str, seqs: Sequence[int], *, owner: Owner | None = None
    ) -> list[models.SessionMessage]:
        """The messages with these seqs (those that exist), in seq order (at most 500 seqs).

        The default asks ``list_messages`` once per seq; backends override it with one query.
        """
        found = []
        for seq in sorted(set(seqs))[:500]:
            if seq < 1:
                continue
            batch = self.list_messages(session_id, after_seq=seq - 1, limit=1, owner=owner)
            if batch and batch[0].seq == seq:
                found.append(batch[0])
        return found

    @abstractmethod
    def head(self, session_id: str) -> models.SessionHead | None:
        """Newest seq and archive version: what a cache compares to know it is stale."""

    ahead = in_thread(head)

    # -- archives ----------------------------------------------------------------

    def commit_archive(
        self,
        session_id: str,
        archive: models.ArchiveEntry,
        message_ids: Sequence[str],
        *,
        epoch: str | None = None,
        vectors: Mapping[str, Sequence[float]] | None = None,
    ) -> models.ArchiveEntry:
        """Insert ``archive`` and flip exactly ``message_ids`` from active to archived, atomically.

        ``vectors`` (message id -> embedding) are stored in the same transaction, for
        ``search_vectors``.

        Raises:
            ConcurrencyError: One of the messages is no longer active (another writer
                archived it first), or the session's epoch is not ``epoch`` (it was
                deleted and re-created); nothing was changed.
        """
        return self._commit_archive_impl(session_id, ArchiveCommit(archive, message_ids, epoch, vectors))

    @abstractmethod
    def _commit_archive_impl(self, session_id: str, commit: ArchiveCommit) -> models.ArchiveEntry: ...

    def list_archives(
        self,
        session_id: str,
        *,
        include_merged: bool = False,
        limit: int | None = None,
        owner: Owner | None = None,
    ) -> list[models.ArchiveEntry]:
        """Archives newest first (by ``last_seq``), without messages; merged ones excluded by default."""
        return self._list_archives_impl(session_id, include_merged, limit, owner)

    alist_archives = via_async_impl(list_archives)

    @abstractmethod
    def _list_archives_impl(
        self, session_id: str, include_merged: bool, limit: int | None, owner: Owner | None
    ) -> list[models.ArchiveEntry]: ...

    def list_recent_archives(
        self, owner: Owner, *, session_limit: int = 8, exclude_session: str | None = None
    ) -> list[models.ArchiveEntry]:
        """The newest live archive (overview and abstract, no messages) of each of ``owner``'s most
        recently updated sessions that has one, newest session first; at most ``session_limit``
        sessions are read, ``exclude_session`` left out. Never another owner's archives.

        The default reads the session list once and then one archive per session (bounded by
        ``session_limit``); a backend may do it in one query.
        """
        if session_limit <= 0:
            return []
        out: list[models.ArchiveEntry] = []
        reads = 0
        for record in self.list_sessions(owner, limit=session_limit + 1):
            if record.session_id == exclude_session or record.owner != tuple(owner):
                continue
            if reads >= session_limit:
                break
            reads += 1
            newest = self.list_archives(record.session_id, limit=1, owner=owner)
            if newest:
                out.append(newest[0])
        return out

    @abstractmethod
    def read_archive(
        self, session_id: str, archive_id: str, *, owner: Owner | None = None
    ) -> models.ArchiveEntry | None:
        """One archive with the raw messages of its seq range, or ``None``."""

    def merge_archives(
        self,
        session_id: str,
        merged: models.ArchiveEntry,
        source_ids: Sequence[str],
        *,
        epoch: str | None = None,
    ) -> models.ArchiveEntry:
        """Insert ``merged`` and mark every source as merged into it, atomically.

        Raises:
            ConcurrencyError: A source is missing or already merged, or the epoch moved;
                nothing was changed.
        """
        return self._merge_archives_impl(session_id, merged, source_ids, epoch)

    @abstractmethod
    def _merge_archives_impl(
        self, session_id: str, merged: models.ArchiveEntry, source_ids: Sequence[str], epoch: str | None
    ) -> models.ArchiveEntry: ...

    @abstractmethod
    def mark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        """Record ``merged_into`` (idempotent); False when missing or merged into another id."""

    @abstractmethod
    def unmark_archive_merged(self, session_id: str, archive_id: str, merged_archive_id: str) -> bool:
        """Clear ``merged_into`` only when it is ``merged_archive_id``."""

    @abstractmethod
    def delete_archive(self, session_id: str, archive_id: str) -> bool:
        """Remove one archive row (its messages stay). False when absent."""

    # -- state -------------------------------------------------------------------

    @abstractmethod
    def save_state(self, session_id: str, payload: Mapping[str, Any], *, epoch: str | None = None) -> None:
        """Replace the session's persisted state payload (JSON-serialisable).

        Raises:
            SessionNotFoundError: The session does not exist, or its epoch is not ``epoch``
                (the state belonged to a deleted incarnation); nothing was written.
        """

    @abstractmethod
    def load_state(self, session_id: str, *, epoch: str | None = None) -> dict[str, Any] | None:
        """The last saved payload (of the incarnation ``epoch`` when given), or ``None``."""

    # -- search ------------------------------------------------------------------

    def search_messages(
        self,
        query: str,
        *,
        session_id: str | None = None,
        owner: tuple[str, str] | None = None,
        status: str | None = "archived",
        limit: int = 10,
    ) -> list[models.SessionMessage]:
        """Messages matching ``query``, best first, in one session or across an owner's sessions.

        Every result carries its ``session_id``. Term statistics and matches come from the scope
        alone (never from other owners), and the work is bounded by ``limit`` and per-term caps.

        Raises:
            AccessDeniedError: ``session_id`` is not owned by ``owner``.
            InvalidInputError: Neither ``session_id`` nor ``owner`` was given.
        """
        _check_scope("search_messages", session_id, owner)
        return self._search_messages_impl(query, session_id, owner, status, limit)

    asearch_messages = via_async_impl(search_messages)

    @abstractmethod
    def _search_messages_impl(
        self, query: str, session_id: str | None, owner: Owner | None, status: str | None, limit: int
    ) -> list[models.SessionMessage]: ...

    def prepare_vectors(self, dims: int) -> None:
        """Get ready to store ``dims``-dimensional vectors (a no-op unless a backend must size a
        column); raises ``ConfigError`` when the backend cannot store vectors."""
        del dims

    def search_vectors(
        self,
        vector: Sequence[float],
        *,
        session_id: str | None = None,
        owner: Owner | None = None,
        limit: int = 10,
    ) -> list[models.SessionMessage]:
        """Archived messages whose stored vectors are nearest to ``vector`` (cosine), best first.

        Scoped like ``search_messages``: one session, or every session of ``owner``; every result
        carries its ``session_id``.
        """
        _check_scope("search_vectors", session_id, owner)
        return self._search_vectors_impl(vector, session_id, owner, limit)

    @abstractmethod
    def _search_vectors_impl(
        self, vector: Sequence[float], session_id: str | None, owner: Owner | None, limit: int
    ) -> list[models.SessionMessage]: ...

    # -- the async twins' defaults: a thread; a native driver overrides them ----------
    # (each ``a*`` twin stands beside its sync method: ``twins.via_async_impl`` runs the public
    # method's own checks and bundling and awaits the ``_a<name>_impl`` here)

    async def _aappend_impl(
        self, session_id: str, messages: Sequence[models.SessionMessage], write_as: WriteAs
    ) -> models.AppendResult:
        create_as, owner = write_as.create_as, write_as.owner
        return await asyncio.to_thread(self.append, session_id, messages, create_as=create_as, owner=owner)

    async def _aread_window_impl(self, session_id: str, window: WindowQuery) -> models.WindowRead | None:
        owner, since, archive_limit = window.owner, window.since, window.archive_limit
        return await asyncio.to_thread(
            self.read_window, session_id, owner=owner, since=since, archive_limit=archive_limit
        )

    async def _alist_messages_impl(
        self, session_id: str, select: MessageQuery
    ) -> list[models.SessionMessage]:
        status, after_seq, limit, owner = select.status, select.after_seq, select.limit, select.owner
        return await asyncio.to_thread(
            self.list_messages, session_id, status=status, after_seq=after_seq, limit=limit, owner=owner
        )

    async def _alist_archives_impl(
        self, session_id: str, include_merged: bool, limit: int | None, owner: Owner | None
    ) -> list[models.ArchiveEntry]:
        return await asyncio.to_thread(
            self.list_archives, session_id, include_merged=include_merged, limit=limit, owner=owner
        )

    async def _asearch_messages_impl(
        self, query: str, session_id: str | None, owner: Owner | None, status: str | None, limit: int
    ) -> list[models.SessionMessage]:
        return await asyncio.to_thread(
            self.search_messages, query, session_id=session_id, owner=owner, status=status, limit=limit
        )
