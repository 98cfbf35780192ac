"""``OgmemChatMessageHistory``: ogmem as a LangChain ``BaseChatMessageHistory``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import ConfigurableFieldSpec, Runnable, RunnableConfig
from langchain_core.runnables.history import GetSessionHistoryCallable, RunnableWithMessageHistory

from langchain_ogmem._shared import (
    VIEWS,
    check_account_id,
    check_end_user_id,
    check_session_id,
    check_token_budget,
    request_context,
    resolve_manager,
    user_session_id,
)
from langchain_ogmem.convert import (
    SummaryRole,
    check_summary_role,
    context_to_messages,
    from_session_messages,
    message_text,
    to_records,
)
from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError, InvalidInputError, SessionNotFoundError

if TYPE_CHECKING:
    from ogmem_memory.manager import SessionManager

View = Literal["context", "full"]


class OgmemChatMessageHistory(BaseChatMessageHistory):
    """Chat history kept by ogmem: bounded context, durable and never lossy.

    ``messages`` is what a model should read: with ``view="context"`` (default) one leading
    message (what is known about the user from all their conversations, the running summary,
    and the archived turns recalled for the question), then the recent messages, within
    ``token_budget``; with ``view="full"`` the whole raw transcript. Writes are durable on
    return, and a threshold commit may then archive older messages in the background.

    Recall keys on the query given to :meth:`set_query`, else on the latest stored user
    message. ``OgmemRunnableWithMessageHistory`` sets the query to the question of each turn
    before it reads ``messages``; the stock ``RunnableWithMessageHistory`` reads before the
    question is stored, so its recall follows the previous question.

    What ``messages`` returns changes only at writes made through this object and at a new
    query: ``RunnableWithMessageHistory`` reads it twice per turn (and, without
    ``history_messages_key``, slices its input by its length), so a background commit
    landing between those reads must not change it. The first read after a write (or a new
    query) loads a fresh view and keeps it until the next one.

    Construction is O(1) with no I/O, because ``RunnableWithMessageHistory`` calls its
    factory on every invocation; managers are shared per ``url``.

    Args:
        session_id: The conversation. Also the ``thread_id`` under which
            ``OgmemMemoryMiddleware`` stores an agent's conversation.
        user_id: Owner of the session. ``None`` is a trusted single-user caller; otherwise a
            session bound to another user raises ``AccessDeniedError``.
        account_id: Account of ``user_id``; ``None`` is the default account.
        manager: The ``SessionManager`` to use (exclusive with ``url``/``config``/``llm``/
            ``embedder``).
        url: Store URL of the shared manager (``sqlite:///chat.db``, ``postgresql://...``,
            ``memory://``); ``None`` is ``$OGMEM_DB`` or ``./ogmem.db``.
        config: ``MemoryConfig`` of the shared manager.
        llm: Any LangChain chat model: compression then uses it, with the extractive
            fallback when it fails.
        embedder: A LangChain ``Embeddings`` (or any embedder ``SessionManager`` takes):
            archived turns are then also recalled by meaning, not only by shared words.
        view: ``"context"`` or ``"full"``.
        token_budget: Budget of the context view; ``None`` is ``config.context_token_budget``.
        summary_role: ``"system"`` (default) or ``"human"``, for models that reject a system
            message after the first position.

    Raises:
        InvalidSessionIdError: ``session_id`` is empty, not a string or has control characters.
        ConfigError: An invalid option, or ``manager`` together with ``url``/``config``/``llm``/
            ``embedder``.
    """

    def __init__(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        account_id: str | None = None,
        manager: SessionManager | None = None,
        url: str | None = None,
        config: MemoryConfig | None = None,
        llm: object | None = None,
        embedder: object | None = None,
        view: View = "context",
        token_budget: int | None = None,
        summary_role: SummaryRole = "system",
    ) -> None:
        super().__init__()
        self.session_id = check_session_id(session_id)
        self.user_id = user_id
        self._ctx = request_context(user_id, account_id)
        if view not in VIEWS:
            raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
        self.view: View = view
        self.token_budget = check_token_budget(token_budget)
        self.summary_role: SummaryRole = check_summary_role(summary_role)
        self.manager = resolve_manager(manager, url=url, config=config, llm=llm, embedder=embedder)
        self._lock = threading.Lock()
        self._published: list[BaseMessage] | None = None
        self._generation = 0
        self._query: str | None = None

    def __repr__(self) -> str:
        return f"OgmemChatMessageHistory({self.session_id!r}, user_id={self.user_id!r}, view={self.view!r})"

    @property
    def query(self) -> str | None:
        """The query recall keys on (see :meth:`set_query`); ``None`` is the latest user message."""
        with self._lock:
            return self._query

    def set_query(self, query: str | None) -> None:
        """Make recall follow ``query`` (the question about to be asked) until the next write.

        Call it before the turn's first read of :attr:`messages`: a different query
        publishes a new view at the next read; the same query keeps the current one. A write
        through this history resets it to ``None``.

        Raises:
            InvalidInputError: ``query`` is neither a str nor ``None``.
        """
        if query is not None and not isinstance(query, str):
            raise InvalidInputError(f"query must be a str or None, got {type(query).__name__}")
        with self._lock:
            if query == self._query:
                return
            self._query = query
            self._generation += 1
            self._published = None

    # -- reads ---------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:
        """The published view (see the class docs); loaded on the first read after a write."""
        with self._lock:
            if self._published is not None:
                return list(self._published)
            generation, query = self._generation, self._query
        return self._publish(generation, self._load(query))

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        """Replace the stored conversation (its archives and summary too) with ``value``, atomically.

        Every message is validated before anything changes: on bad input this raises and the
        stored conversation is exactly as it was (the next read reloads it).

        Raises:
            NotAMessageError: An item is not a ``BaseMessage`` (also a ``TypeError``).
            InvalidInputError: An item cannot be stored (too long, a lone surrogate, ...).
            AccessDeniedError: ``user_id`` does not own the session.
        """
        try:
            self.manager.replace_messages(self.session_id, to_records(value), self._ctx)
        finally:
            # Even a refused replacement drops the published view: it may already be stale
            # (a commit or another process wrote since it was loaded), and the caller just
            # said the conversation is not what it shows.
            self._invalidate()

    async def aget_messages(self) -> list[BaseMessage]:
        """Async :attr:`messages`."""
        with self._lock:
            if self._published is not None:
                return list(self._published)
            generation, query = self._generation, self._query
        return self._publish(generation, await self._aload(query))

    def _load(self, query: str | None) -> list[BaseMessage]:
        try:
            if self.view == "full":
                return from_session_messages(self.manager.get_history(self.session_id, self._ctx))
            context = self.manager.get_context(self.session_id, self.token_budget, self._ctx, query=query)
        except SessionNotFoundError:
            return []
        return context_to_messages(context, summary_role=self.summary_role)

    async def _aload(self, query: str | None) -> list[BaseMessage]:
        try:
            if self.view == "full":
                history = await self.manager.aget_history(self.session_id, self._ctx)
                return from_session_messages(history)
            context = await self.manager.aget_context(
                self.session_id, self.token_budget, self._ctx, query=query
            )
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
            # The question just stored is now the latest user message: the default query.
            self._query = None

    # -- writes --------------------------------------------------------------------------------

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store a whole turn in one durable write; a threshold commit may follow in the background.

        Chunks are converted to messages; ogmem's own summary message is skipped if it comes
        back, and so is a message whose ``id`` is already stored (a retried write stores
        nothing twice). Nothing is stored when any item is invalid.

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

    Invocations configure ``{"user_id": ..., "conversation_id": ...}``. Each user has their
    own conversations: alice's ``"c-1"`` and bob's ``"c-1"`` are two sessions (see
    :meth:`session_id`), each bound to its user. What is known about a user (the long-term
    memories ogmem extracts after commits) is shared by all of that user's conversations and
    by no one else's. The user id comes with the request, so it is
    never trusted blindly: a missing, ``None`` or empty one raises ``InvalidInputError``, and
    so does the implicit single-user identity ``"default"``.

    ``OgmemRunnableWithMessageHistory`` picks up :attr:`config_specs` by itself; with the
    stock ``RunnableWithMessageHistory`` pass them as ``history_factory_config``.

    Build it with :func:`history_factory`.
    """

    def __init__(
        self,
        manager: SessionManager,
        *,
        account_id: str | None = None,
        view: View = "context",
        token_budget: int | None = None,
        summary_role: SummaryRole = "system",
    ) -> None:
        self.manager = manager
        self.account_id = check_account_id(account_id)
        if view not in VIEWS:
            raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
        self.view: View = view
        self.token_budget = check_token_budget(token_budget)
        self.summary_role: SummaryRole = check_summary_role(summary_role)

    def session_id(self, user_id: str, conversation_id: str) -> str:
        """The ogmem session id of ``user_id``'s conversation ``conversation_id``.

        ``"user:<len(user_id)>:<user_id>:<conversation_id>"`` (prefixed by
        ``"account:<len>:<account_id>:"`` outside the default account): the length prefixes
        make it one-to-one, so no two (user, conversation) pairs share a session.

        Raises:
            InvalidInputError: A bad ``user_id`` (see the class docs).
            InvalidSessionIdError: A bad ``conversation_id``, or the two together exceed
                ``MemoryConfig.max_session_id_length``.
        """
        user = check_end_user_id(user_id)
        limit = self.manager.config.max_session_id_length
        return user_session_id(self.account_id, user, conversation_id, max_length=limit)

    def __call__(self, user_id: str, conversation_id: str) -> OgmemChatMessageHistory:
        """The history of ``user_id``'s conversation; validates both before any I/O.

        Raises:
            InvalidInputError: A bad ``user_id`` or ``conversation_id`` (see :meth:`session_id`).
        """
        session_id = self.session_id(user_id, conversation_id)
        return OgmemChatMessageHistory(
            session_id,
            user_id=user_id,
            account_id=self.account_id,
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
                description="The user's conversation.",
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
    embedder: object | None = None,
    account_id: str | None = None,
    view: View = "context",
    token_budget: int | None = None,
    summary_role: SummaryRole = "system",
) -> HistoryFactory:
    """A ``user_id`` + ``conversation_id`` history factory for ``RunnableWithMessageHistory``.

    Example::

        factory = history_factory(url="sqlite:///chat.db")
        chain = OgmemRunnableWithMessageHistory(
            prompt | model, factory, input_messages_key="question", history_messages_key="history"
        )
        chain.invoke({"question": "hi"}, {"configurable": {"user_id": "alice", "conversation_id": "c1"}})

    Args:
        manager: The ``SessionManager`` (exclusive with ``url``/``config``/``llm``/``embedder``).
        url: Store URL of the shared manager.
        config: ``MemoryConfig`` of the shared manager.
        llm: A LangChain chat model used for compression.
        embedder: A LangChain ``Embeddings`` (or any embedder ``SessionManager`` takes) for
            recall by meaning.
        account_id: Account of every user of this factory; ``None`` is the default account.
        view: ``"context"`` or ``"full"``.
        token_budget: Budget of the context view.
        summary_role: ``"system"`` or ``"human"``.

    Raises:
        ConfigError: An invalid option.
    """
    if view not in VIEWS:
        raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
    resolved = resolve_manager(manager, url=url, config=config, llm=llm, embedder=embedder)
    return HistoryFactory(
        resolved, account_id=account_id, view=view, token_budget=token_budget, summary_role=summary_role
    )


class OgmemRunnableWithMessageHistory(RunnableWithMessageHistory):
    """``RunnableWithMessageHistory`` whose ogmem recall follows the question being asked.

    The stock class reads the history before it stores the new input, so an ogmem history
    would recall archived turns for the previous question. This subclass hands the turn's
    question (the text of the last human message of the input) to every
    :class:`OgmemChatMessageHistory` via :meth:`~OgmemChatMessageHistory.set_query` just
    before that read; other histories are used exactly as by the stock class. Arguments are
    those of ``RunnableWithMessageHistory``; with a :class:`HistoryFactory` and no
    ``history_factory_config``, the factory's :attr:`~HistoryFactory.config_specs` are used.

    Example::

        chain = OgmemRunnableWithMessageHistory(
            prompt | model,
            lambda session_id: OgmemChatMessageHistory(session_id, url="sqlite:///chat.db"),
            input_messages_key="question",
            history_messages_key="history",
        )
    """

    def __init__(
        self,
        runnable: Runnable[Any, Any],
        get_session_history: GetSessionHistoryCallable,
        *,
        input_messages_key: str | None = None,
        output_messages_key: str | None = None,
        history_messages_key: str | None = None,
        history_factory_config: Sequence[ConfigurableFieldSpec] | None = None,
        **kwargs: Any,
    ) -> None:
        if history_factory_config is None and isinstance(get_session_history, HistoryFactory):
            history_factory_config = get_session_history.config_specs
        super().__init__(
            runnable,
            get_session_history,
            input_messages_key=input_messages_key,
            output_messages_key=output_messages_key,
            history_messages_key=history_messages_key,
            history_factory_config=history_factory_config,
            **kwargs,
        )

    def _enter_history(self, value: Any, config: RunnableConfig) -> list[BaseMessage]:
        self._hand_over_query(value, config)
        return super()._enter_history(value, config)

    async def _aenter_history(self, value: dict[str, Any], config: RunnableConfig) -> list[BaseMessage]:
        self._hand_over_query(value, config)
        return await super()._aenter_history(value, config)

    def _hand_over_query(self, value: Any, config: RunnableConfig) -> None:
        history = config.get("configurable", {}).get("message_history")
        if not isinstance(history, OgmemChatMessageHistory):
            return
        # Malformed input is the stock class's to report, in the read right after this.
        with contextlib.suppress(ValueError, TypeError, KeyError):
            input_val = value[self.input_messages_key] if self.input_messages_key else value
            history.set_query(question_of(self._get_input_messages(input_val)))


def question_of(messages: Sequence[BaseMessage]) -> str | None:
    """The text of the last human message of a turn's input, or ``None`` when it has none."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message_text(message) or None
    return None
