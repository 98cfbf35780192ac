"""``OgmemChatMessageHistory``: ogmem as a LangChain ``BaseChatMessageHistory``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage
from langchain_core.runnables import ConfigurableFieldSpec

from langchain_ogmem._shared import (
    VIEWS,
    check_session_id,
    check_token_budget,
    request_context,
    resolve_manager,
)
from langchain_ogmem.convert import (
    SummaryRole,
    check_summary_role,
    context_to_messages,
    from_session_messages,
    to_records,
)
from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError, SessionNotFoundError

if TYPE_CHECKING:
    from ogmem_memory.manager import SessionManager

View = Literal["context", "full"]


class OgmemChatMessageHistory(BaseChatMessageHistory):
    """Chat history kept by ogmem: bounded context, durable and never lossy.

    ``messages`` is what a model should read: with ``view="context"`` (default) the running
    summary as one leading message, then the recent messages, within ``token_budget``;
    with ``view="full"`` the whole raw transcript. Writes are durable on return, and a
    threshold commit may then archive older messages in the background.

    What ``messages`` returns changes only at writes made through this object:
    ``RunnableWithMessageHistory`` reads it twice per turn (and, without
    ``history_messages_key``, slices its input by its length), so a background commit
    landing between those reads must not change it. The first read after a write loads a
    fresh view and keeps it until the next write.

    Construction is O(1) with no I/O, because ``RunnableWithMessageHistory`` calls its
    factory on every invocation; managers are shared per ``url``.

    Args:
        session_id: The conversation. Also the ``thread_id`` under which
            ``OgmemMemoryMiddleware`` stores an agent's conversation.
        user_id: Owner of the session. ``None`` is a trusted single-user caller; otherwise a
            session bound to another user raises ``AccessDeniedError``.
        manager: The ``SessionManager`` to use (exclusive with ``url``/``config``/``llm``).
        url: Store URL of the shared manager (``sqlite:///chat.db``, ``postgresql://...``,
            ``memory://``); ``None`` is ``$OGMEM_DB`` or ``./ogmem.db``.
        config: ``MemoryConfig`` of the shared manager.
        llm: Any LangChain chat model: compression then uses it, with the extractive
            fallback when it fails.
        view: ``"context"`` or ``"full"``.
        token_budget: Budget of the context view; ``None`` is ``config.context_token_budget``.
        summary_role: ``"system"`` (default) or ``"human"``, for models that reject a system
            message after the first position.

    Raises:
        InvalidSessionIdError: ``session_id`` is empty, not a string or has control characters.
        ConfigError: An invalid option, or ``manager`` together with ``url``/``config``/``llm``.
    """

    def __init__(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        manager: SessionManager | None = None,
        url: str | None = None,
        config: MemoryConfig | None = None,
        llm: object | None = None,
        view: View = "context",
        token_budget: int | None = None,
        summary_role: SummaryRole = "system",
    ) -> None:
        super().__init__()
        self.session_id = check_session_id(session_id)
        self.user_id = user_id
        self._ctx = request_context(user_id)
        if view not in VIEWS:
            raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
        self.view: View = view
        self.token_budget = check_token_budget(token_budget)
        self.summary_role: SummaryRole = check_summary_role(summary_role)
        self.manager = resolve_manager(manager, url=url, config=config, llm=llm)
        self._lock = threading.Lock()
        self._published: list[BaseMessage] | None = None
        self._generation = 0

    def __repr__(self) -> str:
        return f"OgmemChatMessageHistory({self.session_id!r}, user_id={self.user_id!r}, view={self.view!r})"

    # -- reads ---------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:
        """The published view (see the class docs); loaded on the first read after a write."""
        with self._lock:
            if self._published is not None:
                return list(self._published)
            generation = self._generation
        return self._publish(generation, self._load())

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        """Replace the stored conversation (its archives and summary too) with ``value``."""
        records = to_records(value)
        self._forget_session()
        if records:
            self.manager.add_messages(self.session_id, records, self._ctx)
        self._invalidate()

    async def aget_messages(self) -> list[BaseMessage]:
        """Async :attr:`messages`."""
        with self._lock:
            if self._published is not None:
                return list(self._published)
            generation = self._generation
        return self._publish(generation, await self._aload())

    def _load(self) -> list[BaseMessage]:
        try:
            if self.view == "full":
                return from_session_messages(self.manager.get_history(self.session_id, self._ctx))
            context = self.manager.get_context(self.session_id, self.token_budget, self._ctx)
        except SessionNotFoundError:
            return []
        return context_to_messages(context, summary_role=self.summary_role)

    async def _aload(self) -> list[BaseMessage]:
        try:
            if self.view == "full":
                history = await self.manager.aget_history(self.session_id, self._ctx)
                return from_session_messages(history)
            context = await self.manager.aget_context(self.session_id, self.token_budget, self._ctx)
        except SessionNotFoundError:
            return []
        return context_to_messages(context, summary_role=self.summary_role)

    def _publish(self, generation: int, view: list[BaseMessage]) -> list[BaseMessage]:
        with self._lock:
            # A write that happened while we loaded makes this view stale: return it to this
            # caller only, and let the next read load again.
            if self._generation == generation and self._published is None:
                self._published = view
            return list(view)

    def _invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._published = None

    # -- writes --------------------------------------------------------------------------------

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store a whole turn in one durable write; a threshold commit may follow in the background.

        Chunks are converted to messages; ogmem's own summary message is skipped if it comes
        back. Nothing is stored when any item is invalid.

        Raises:
            NotAMessageError: An item is not a ``BaseMessage`` (also a ``TypeError``).
            InvalidInputError: An item cannot be stored (e.g. an unknown ``ChatMessage`` role).
            AccessDeniedError: ``user_id`` does not own the session.
        """
        records = to_records(messages)
        if records:
            self.manager.add_messages(self.session_id, records, self._ctx)
            self._invalidate()

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async :meth:`add_messages`."""
        records = to_records(messages)
        if records:
            await self.manager.aadd_messages(self.session_id, records, self._ctx)
            self._invalidate()

    def clear(self) -> None:
        """Delete the session's messages, archives and state (ownership is kept)."""
        self._forget_session()
        self._invalidate()

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        # Clearing what was never written is a no-op, as in InMemoryChatMessageHistory.
        with contextlib.suppress(SessionNotFoundError):
            await self.manager.aclear_session(self.session_id, self._ctx)
        self._invalidate()

    def _forget_session(self) -> None:
        with contextlib.suppress(SessionNotFoundError):
            self.manager.clear_session(self.session_id, self._ctx)


class HistoryFactory:
    """``get_session_history`` for ``RunnableWithMessageHistory`` keyed by user and conversation.

    Pass the factory and its :attr:`config_specs` as ``history_factory_config``; invocations
    then configure ``{"user_id": ..., "conversation_id": ...}``. The conversation id is the
    ogmem session id and the session is bound to its user: another user gets
    ``AccessDeniedError``, never the conversation.

    Build it with :func:`history_factory`.
    """

    def __init__(
        self,
        manager: SessionManager,
        *,
        view: View = "context",
        token_budget: int | None = None,
        summary_role: SummaryRole = "system",
    ) -> None:
        self.manager = manager
        self.view: View = view
        self.token_budget = check_token_budget(token_budget)
        self.summary_role: SummaryRole = check_summary_role(summary_role)

    def __call__(self, user_id: str, conversation_id: str) -> OgmemChatMessageHistory:
        return OgmemChatMessageHistory(
            conversation_id,
            user_id=user_id,
            manager=self.manager,
            view=self.view,
            token_budget=self.token_budget,
            summary_role=self.summary_role,
        )

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """The ``history_factory_config`` that matches ``__call__``."""
        return [
            ConfigurableFieldSpec(
                id="user_id",
                annotation=str,
                name="User ID",
                description="Owner of the conversation.",
                default="",
                is_shared=True,
            ),
            ConfigurableFieldSpec(
                id="conversation_id",
                annotation=str,
                name="Conversation ID",
                description="The ogmem session id of the conversation.",
                default="",
                is_shared=True,
            ),
        ]


def history_factory(
    *,
    manager: SessionManager | None = None,
    url: str | None = None,
    config: MemoryConfig | None = None,
    llm: object | None = None,
    view: View = "context",
    token_budget: int | None = None,
    summary_role: SummaryRole = "system",
) -> HistoryFactory:
    """A ``user_id`` + ``conversation_id`` history factory for ``RunnableWithMessageHistory``.

    Example::

        factory = history_factory(url="sqlite:///chat.db")
        chain = RunnableWithMessageHistory(
            prompt | model,
            factory,
            input_messages_key="question",
            history_messages_key="history",
            history_factory_config=factory.config_specs,
        )
        chain.invoke({"question": "hi"}, {"configurable": {"user_id": "alice", "conversation_id": "c1"}})

    Args:
        manager: The ``SessionManager`` (exclusive with ``url``/``config``/``llm``).
        url: Store URL of the shared manager.
        config: ``MemoryConfig`` of the shared manager.
        llm: A LangChain chat model used for compression.
        view: ``"context"`` or ``"full"``.
        token_budget: Budget of the context view.
        summary_role: ``"system"`` or ``"human"``.

    Raises:
        ConfigError: An invalid option.
    """
    if view not in VIEWS:
        raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
    resolved = resolve_manager(manager, url=url, config=config, llm=llm)
    return HistoryFactory(resolved, view=view, token_budget=token_budget, summary_role=summary_role)
