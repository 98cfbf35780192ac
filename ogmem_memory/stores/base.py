"""SessionStore: the one interface every backend implements.

Sync is the contract; the ``a*`` twins run the sync method in a thread unless a
backend has a native async driver. Every write is one transaction; the archive
write is a compare-and-set so that several processes can commit the same session
and exactly one wins.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from ogmem_memory.models import ArchiveEntry, RequestContext, SessionHead, SessionMessage, SessionRecord


class SessionStore(ABC):
    """Durable home of sessions, messages, archives and per-session state.

    Implementations must make each method atomic, bind values as parameters, and
    keep raw messages forever (archiving flips ``status``; it never deletes).
    """

    # -- lifecycle ---------------------------------------------------------------

    @abstractmethod
    def setup(self) -> None:
        """Open connections and apply migrations. Idempotent; also run by ``__enter__``."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    def __enter__(self) -> Self:
        self.setup()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- sessions ----------------------------------------------------------------

    @abstractmethod
    def bind_session(self, session_id: str, identity: RequestContext) -> SessionRecord:
        """Create the session owned by ``identity``, or return it when ``identity`` owns it.

        Raises:
            AccessDeniedError: The session is bound to another account/user.
        """

    @abstractmethod
    def get_session_record(self, session_id: str) -> SessionRecord | None:
        """The session's record, or ``None`` when it does not exist."""

    @abstractmethod
    def list_sessions(
        self, owner: tuple[str, str] | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        """Sessions, most recently updated first; only ``owner``'s when given."""

    @abstractmethod
    def delete_session(self, session_id: str) -> bool:
        """Remove the session with its messages, archives and state. False when absent."""

    @abstractmethod
    def clear_session(self, session_id: str) -> None:
        """Remove messages, archives and state but keep the session and its owner."""

    # -- messages ----------------------------------------------------------------

    @abstractmethod
    def append_messages(self, session_id: str, messages: Sequence[SessionMessage]) -> list[SessionMessage]:
        """Append in one transaction; returns the messages with their store-assigned ``seq``.

        Raises:
            SessionNotFoundError: The session was never bound.
        """

    @abstractmethod
    def list_messages(
        self,
        session_id: str,
        *,
        status: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[SessionMessage]:
        """Messages in ``seq`` order, optionally only one status, after a seq, or the first ``limit``."""

    def list_messages_by_seq(self, session_id: str, seqs: Sequence[int]) -> list[SessionMessage]:
        """The messages with these seqs (those that exist), in seq order.

        The default asks ``list_messages`` once per seq; backends override it with one query.
        """
        found = []
        for seq in sorted(set(seqs)):
            if seq < 1:
                continue
            batch = self.list_messages(session_id, after_seq=seq - 1, limit=1)
            if batch and batch[0].seq == seq:
                found.append(batch[0])
        return found

    @abstractmethod
    def head(self, session_id: str) -> SessionHead | None:
        """Newest seq and archive version: what a cache compares to know it is stale."""

    # -- archives ----------------------------------------------------------------

    @abstractmethod
    def commit_archive(
        self, session_id: str, archive: ArchiveEntry, message_ids: Sequence[str]
    ) -> ArchiveEntry:
        """Insert ``archive`` and flip exactly ``message_ids`` from active to archived, atomically.

        Raises:
            ConcurrencyError: One of the messages is no longer active (another writer
                archived it first); nothing was changed.
        """

    @abstractmethod
    def list_archives(
        self, session_id: str, *, include_merged: bool = False, limit: int | None = None
    ) -> list[ArchiveEntry]:
        """Archives newest first (by ``last_seq``), without messages; merged ones excluded by default."""

    @abstractmethod
    def read_archive(self, session_id: str, archive_id: str) -> ArchiveEntry | None:
        """One archive with the raw messages of its seq range, or ``None``."""

    @abstractmethod
    def merge_archives(
        self, session_id: str, merged: ArchiveEntry, source_ids: Sequence[str]
    ) -> ArchiveEntry:
        """Insert ``merged`` and mark every source as merged into it, atomically.

        Raises:
            ConcurrencyError: A source is missing or already merged; nothing was changed.
        """

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
    def save_state(self, session_id: str, payload: Mapping[str, Any]) -> None:
        """Replace the session's persisted state payload (JSON-serialisable)."""

    @abstractmethod
    def load_state(self, session_id: str) -> dict[str, Any] | None:
        """The last saved payload, or ``None``."""

    # -- search ------------------------------------------------------------------

    @abstractmethod
    def search_messages(
        self,
        query: str,
        *,
        session_id: str | None = None,
        owner: tuple[str, str] | None = None,
        status: str | None = "archived",
        limit: int = 10,
    ) -> list[SessionMessage]:
        """Messages matching ``query``, best first, in one session or across an owner's sessions.

        Raises:
            AccessDeniedError: ``session_id`` is not owned by ``owner``.
            InvalidInputError: Neither ``session_id`` nor ``owner`` was given.
        """

    # -- async twins (threads by default; native where the driver has it) --------

    async def asetup(self) -> None:
        await asyncio.to_thread(self.setup)

    async def abind_session(self, session_id: str, identity: RequestContext) -> SessionRecord:
        return await asyncio.to_thread(self.bind_session, session_id, identity)

    async def aappend_messages(
        self, session_id: str, messages: Sequence[SessionMessage]
    ) -> list[SessionMessage]:
        return await asyncio.to_thread(self.append_messages, session_id, messages)

    async def alist_messages(
        self,
        session_id: str,
        *,
        status: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[SessionMessage]:
        return await asyncio.to_thread(
            self.list_messages, session_id, status=status, after_seq=after_seq, limit=limit
        )

    async def ahead(self, session_id: str) -> SessionHead | None:
        return await asyncio.to_thread(self.head, session_id)

    async def alist_archives(
        self, session_id: str, *, include_merged: bool = False, limit: int | None = None
    ) -> list[ArchiveEntry]:
        return await asyncio.to_thread(
            self.list_archives, session_id, include_merged=include_merged, limit=limit
        )

    async def asearch_messages(
        self,
        query: str,
        *,
        session_id: str | None = None,
        owner: tuple[str, str] | None = None,
        status: str | None = "archived",
        limit: int = 10,
    ) -> list[SessionMessage]:
        return await asyncio.to_thread(
            self.search_messages, query, session_id=session_id, owner=owner, status=status, limit=limit
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
