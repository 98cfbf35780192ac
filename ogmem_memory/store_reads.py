"""The manager's reads that go straight to the store: transcript, sessions, archives, search.

Each checks its arguments, then asks the store once, with the caller's identity checked by
the store in that same read; nothing is cached. ``StoreReads`` is a mixin of
``SessionManager`` (``get_context``, which uses the cache, is ``reading.py``'s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ogmem_memory.errors import InvalidInputError
from ogmem_memory.models import (
    DEFAULT_ACCOUNT,
    DEFAULT_AGENT,
    DEFAULT_USER,
    ArchiveEntry,
    RequestContext,
    SessionMessage,
    SessionRecord,
)
from ogmem_memory.validation import MAX_PAGE, check_count, check_ctx, check_session_id

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ogmem_memory.config import MemoryConfig
    from ogmem_memory.stores.base import SessionStore

DEFAULT_IDENTITY: Final = RequestContext(DEFAULT_ACCOUNT, DEFAULT_USER, DEFAULT_AGENT)


def _owner(ctx: RequestContext | None) -> tuple[str, str] | None:
    return ctx.owner if ctx is not None else None


class StoreReads:
    """get_history, list_sessions, list_archives, read_archive, search (mixed into SessionManager)."""

    store: SessionStore
    config: MemoryConfig
    _open: Callable[[], AbstractContextManager[None]]
    _ensure_setup: Callable[[], None]

    def get_history(self, session_id: str, ctx: RequestContext | None = None) -> list[SessionMessage]:
        """The whole transcript in order, archived turns included (one store read)."""
        sid = check_session_id(session_id, self.config)
        rctx = check_ctx(ctx)
        with self._open():
            self._ensure_setup()
            return self.store.list_messages(sid, owner=_owner(rctx))

    def list_sessions(
        self, ctx: RequestContext | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        """Sessions, most recently updated first; only the caller's when ``ctx`` is given."""
        rctx = check_ctx(ctx)
        check_count(limit, "limit")
        check_count(offset, "offset")
        with self._open():
            self._ensure_setup()
            return self.store.list_sessions(_owner(rctx), limit=limit, offset=offset)

    def list_archives(
        self, session_id: str, ctx: RequestContext | None = None, *, include_merged: bool = False
    ) -> list[ArchiveEntry]:
        """Archives newest first (without messages)."""
        sid = check_session_id(session_id, self.config)
        rctx = check_ctx(ctx)
        with self._open():
            self._ensure_setup()
            return self.store.list_archives(sid, include_merged=include_merged, owner=_owner(rctx))

    def read_archive(
        self, session_id: str, archive_id: str, ctx: RequestContext | None = None
    ) -> ArchiveEntry | None:
        """One archive with its raw messages."""
        sid = check_session_id(session_id, self.config)
        rctx = check_ctx(ctx)
        if not isinstance(archive_id, str):
            raise InvalidInputError("archive_id must be a str")
        with self._open():
            self._ensure_setup()
            return self.store.read_archive(sid, archive_id, owner=_owner(rctx))

    def search(
        self, query: str, ctx: RequestContext | None = None, *, session_id: str | None = None, limit: int = 10
    ) -> list[SessionMessage]:
        """Full-text search over a session's messages, or over all of the caller's sessions."""
        if not isinstance(query, str):
            raise InvalidInputError("query must be a str")
        rctx = check_ctx(ctx)
        check_count(limit, "limit", maximum=MAX_PAGE)
        sid = check_session_id(session_id, self.config) if session_id is not None else None
        with self._open():
            self._ensure_setup()
            if sid is not None:
                return self.store.search_messages(
                    query, session_id=sid, owner=_owner(rctx), status=None, limit=limit
                )
            return self.store.search_messages(
                query, owner=(rctx or DEFAULT_IDENTITY).owner, status=None, limit=limit
            )
