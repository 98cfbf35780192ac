"""The ``a*`` twins of SessionManager's methods: each runs its sync twin in a thread.

Sync is the contract; the stores' native async drivers are used by the stores themselves.
``AsyncTwins`` is a mixin of ``SessionManager``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ogmem_memory.models import CommitResult, Context, RequestContext, SessionMessage, SessionRecord

if TYPE_CHECKING:
    from ogmem_memory.manager import AddResult


class AsyncTwins:
    """``aadd_message``, ``aget_context``, ... (mixed into SessionManager)."""

    add_message: Callable[..., AddResult]
    add_messages: Callable[..., list[SessionMessage]]
    replace_messages: Callable[..., list[SessionMessage]]
    get_context: Callable[..., Context]
    commit: Callable[..., CommitResult]
    get_history: Callable[..., list[SessionMessage]]
    clear_session: Callable[..., None]
    delete_session: Callable[..., bool]
    list_sessions: Callable[..., list[SessionRecord]]
    wait_for_tasks: Callable[..., None]
    close: Callable[..., None]

    async def aadd_message(
        self,
        session_id: str,
        role: str,
        content: str,
        ctx: RequestContext | None = None,
        *,
        created_at: datetime | str | None = None,
        payload: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> AddResult:
        return await asyncio.to_thread(
            self.add_message, session_id, role, content, ctx, created_at=created_at, payload=payload, id=id
        )

    async def aadd_messages(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any] | SessionMessage],
        ctx: RequestContext | None = None,
    ) -> list[SessionMessage]:
        return await asyncio.to_thread(self.add_messages, session_id, messages, ctx)

    async def areplace_messages(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any] | SessionMessage],
        ctx: RequestContext | None = None,
    ) -> list[SessionMessage]:
        return await asyncio.to_thread(self.replace_messages, session_id, messages, ctx)

    async def aget_context(
        self,
        session_id: str,
        token_budget: int | None = None,
        ctx: RequestContext | None = None,
        *,
        query: str | None = None,
    ) -> Context:
        return await asyncio.to_thread(self.get_context, session_id, token_budget, ctx, query=query)

    async def acommit(
        self,
        session_id: str,
        ctx: RequestContext | None = None,
        *,
        wait: bool = False,
        archive_id: str | None = None,
    ) -> CommitResult:
        return await asyncio.to_thread(self.commit, session_id, ctx, wait=wait, archive_id=archive_id)

    async def aget_history(self, session_id: str, ctx: RequestContext | None = None) -> list[SessionMessage]:
        return await asyncio.to_thread(self.get_history, session_id, ctx)

    async def aclear_session(self, session_id: str, ctx: RequestContext | None = None) -> None:
        await asyncio.to_thread(self.clear_session, session_id, ctx)

    async def adelete_session(self, session_id: str, ctx: RequestContext | None = None) -> bool:
        return await asyncio.to_thread(self.delete_session, session_id, ctx)

    async def alist_sessions(
        self, ctx: RequestContext | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SessionRecord]:
        return await asyncio.to_thread(self.list_sessions, ctx, limit=limit, offset=offset)

    async def await_for_tasks(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.wait_for_tasks, timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.close, timeout)
