"""OgmemChatMemoryBuffer: a ``ChatMemoryBuffer`` whose history never leaves the token budget.

Every message is stored durably in an ogmem session; older turns are committed into
archives in the background, and long-term memories of the user are extracted from them.
``get()`` keeps the stock contract and puts the user's memories, the running summary and
the archived turns recalled for the query in a leading system message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
from llama_index.core.llms.llm import LLM
from llama_index.core.memory.chat_memory_buffer import (
    DEFAULT_TOKEN_LIMIT,
    DEFAULT_TOKEN_LIMIT_RATIO,
    ChatMemoryBuffer,
)
from llama_index.memory.ogmem.chat_store import OgmemChatStore
from llama_index.memory.ogmem.convert import (
    ROLE_MAP,
    check_message,
    check_messages,
    preamble_message,
    to_chat_message,
    to_record,
)
from llama_index.memory.ogmem.tokenizer import LlamaIndexTokenizer
from llama_index.memory.ogmem.window import stock_start

from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError
from ogmem_memory.manager import SessionManager
from ogmem_memory.models import Context, RequestContext, SessionMessage
from ogmem_memory.policy import assemble_context
from ogmem_memory.tokens import TokenCounter

# Cohere's CHATBOT, Gemini's MODEL and FUNCTION too: the stock class checks only ASSISTANT and
# TOOL, but a window opening with any of them is as broken for the model.
_UNSAFE_START: Final = frozenset(r for r, o in ROLE_MAP.items() if o in ("assistant", "tool"))
_COUNT_CACHE_MAX: Final = 8192
_TEXT_CACHE_MAX: Final = 512
_PRIVATE_PREFIX: Final = "private-"
# _WINDOW_READ: get_context is asked with get()'s own budget, so its summary, recall and
# memories are sized for it; the stock selection then runs over the whole live window
# (bounded by the commit thresholds, so O(1) in history length). The context holds that
# window unless get_context left messages out (over budget, or leading assistant/tool
# messages, which ChatMemoryBuffer keeps when everything fits) or cut one (a truncated
# system message, which carries no payload); only then is the window read from the store.
# Archived turns get_context adds before the window to fill its budget are not the window.


class CounterTokenizer:
    """``tokenizer_fn`` for LlamaIndex code that calls ``len(memory.tokenizer_fn(text))``.

    Counts with the token counter of the store's manager, so the chat engines' prompt
    accounting and ogmem's budget agree.
    """

    def __init__(self, chat_store: OgmemChatStore) -> None:
        self.chat_store = chat_store

    def __call__(self, text: str) -> list[int]:
        return [0] * self.chat_store.manager.token_counter.count(text)


def _check_token_limit(token_limit: object) -> int:
    if isinstance(token_limit, bool) or not isinstance(token_limit, int) or token_limit < 1:
        raise ConfigError(f"token_limit must be an int >= 1, got {token_limit!r}")
    return token_limit


def _private_session_id() -> str:
    return f"{_PRIVATE_PREFIX}{uuid.uuid4().hex}"


def _check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not session_id.strip():
        raise ConfigError(f"session_id must be a non-empty str, got {session_id!r}")
    return session_id


class OgmemChatMemoryBuffer(ChatMemoryBuffer):
    """Drop-in ``ChatMemoryBuffer`` backed by ogmem: durable, summarised, within budget.

    Use it as ``memory=`` of a chat engine or agent, or as ``memory_cls`` of a chat
    engine. Build it with :meth:`from_defaults`. All methods are safe to call from
    several threads and event loops at once.

    Notes:
        * Without a session name (``session_id`` or ``chat_store_key``) the memory is
          private, as the stock class is: a fresh session id per instance, kept in
          this process's memory (or in the store given with ``url``/``manager``/
          ``chat_store``). That is also what ``memory_cls`` of a chat engine gets.
          Naming a session opts into a shared, persistent conversation in
          ``$OGMEM_DB`` (else ``./ogmem.db``) or the given store.
        * The leading system message shows what is known about the user (long-term
          memories extracted from the commits of all of the user's sessions, relevant
          to ``input`` or else the profile), within ``token_limit`` like the rest. Give
          ``user_id`` so they are that user's; without it they are those of the
          session's owner (the anonymous default identity).
        * Without ``tokenizer_fn`` tokens are counted as ``ChatMemoryBuffer`` counts them
          (``Settings.tokenizer``, else tiktoken, looked up at each use), and ``get()``
          counts the joined text of the window exactly as it does.
        * ``to_dict()``/pickling keep the URL, config, session and owner. Restored in the
          same process, the memory gets back its very manager (also one built on
          ``InMemoryStore``, its LLM and tokenizer); in another process it re-attaches
          through the URL, with the default compressor and token estimator unless
          ``from_dict(data, tokenizer_fn=...)`` is given. A non-URL store cannot be
          reached from another process.
        * ``ReActAgent`` drops a leading system message of its input unless the agent
          has its own ``system_prompt``: give it one so the summary reaches the model.

    Attributes:
        session_id: The ogmem session holding the history (also ``chat_store_key``);
            ``private-<hex>`` for an unnamed memory.
        user_id: Owner of the session; another user's session raises
            ``AccessDeniedError``. ``None`` is a trusted caller.
        token_limit: Most tokens ``get()`` returns, summary message included.
        chat_store: The :class:`OgmemChatStore` (store URL, config, manager).
    """

    session_id: str = Field(default="", description="ogmem session id (always set on validation).")
    user_id: str | None = Field(default=None, description="Owner of the session (None: trusted caller).")
    chat_store: OgmemChatStore = Field(default_factory=OgmemChatStore)
    tokenizer_fn: Callable[[str], list[Any]] = Field(  # type: ignore[assignment]
        default=None, exclude=True, validate_default=False
    )

    _counts: dict[str, int] = PrivateAttr(default_factory=dict)
    _text_counts: dict[str, int] = PrivateAttr(default_factory=dict)
    _converted: dict[str, ChatMessage] = PrivateAttr(default_factory=dict)
    _counts_tokenizer: object = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "OgmemChatMemoryBuffer"

    # Same name as the parent's validator, so it replaces it: the parent's would load
    # tiktoken whenever tokenizer_fn is missing (after from_dict, for example).
    @model_validator(mode="before")
    @classmethod
    def validate_memory(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        _check_token_limit(values.get("token_limit", -1))
        session_id = values.get("session_id")
        if session_id is None:
            session_id = values.get("chat_store_key")
        store = values.get("chat_store")
        if store is None:
            # Unnamed and storeless: private and in memory, like ChatMemoryBuffer's own store.
            store = OgmemChatStore(url="memory://") if session_id is None else OgmemChatStore()
        elif isinstance(store, dict):
            store = OgmemChatStore.model_validate({k: v for k, v in store.items() if k != "class_name"})
        elif not isinstance(store, OgmemChatStore):
            raise ConfigError(
                f"chat_store must be an OgmemChatStore, got {type(store).__name__}; "
                "import another store's history with from_defaults(chat_history=store.get_messages(key))"
            )
        values["chat_store"] = store
        if session_id is None:
            session_id = _private_session_id()
        values["session_id"] = values["chat_store_key"] = _check_session_id(session_id)
        if values.get("tokenizer_fn") is None:
            values["tokenizer_fn"] = CounterTokenizer(store)
        if values.get("user_id") is None:
            values["user_id"] = store.user_id
        return values

    @classmethod
    def from_defaults(  # type: ignore[override]
        cls,
        chat_history: list[ChatMessage] | None = None,
        llm: LLM | None = None,
        chat_store: OgmemChatStore | None = None,
        chat_store_key: str | None = None,
        token_limit: int | None = None,
        tokenizer_fn: Callable[[str], list[Any]] | None = None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        manager: SessionManager | None = None,
        url: str | None = None,
        config: MemoryConfig | None = None,
        embedder: Any = None,
    ) -> OgmemChatMemoryBuffer:
        """Create the memory; also what chat engines call as ``memory_cls.from_defaults``.

        Args:
            chat_history: Replaces the session's history when non-empty (as the stock
                class does); an unchanged history already stored is left as it is.
            llm: Sets the default ``token_limit`` (0.75 x its context window) and
                compresses archives (``LLMCompressor`` with the extractive fallback).
            chat_store: An :class:`OgmemChatStore` to use instead of building one.
            chat_store_key: Session id when ``session_id`` is not given.
            token_limit: Most tokens ``get()`` returns; default as the stock class
                (0.75 x the LLM's context window, else 3000).
            tokenizer_fn: Counts tokens (``len(tokenizer_fn(text))``) in ``get()``
                and in ogmem; default: LlamaIndex's (``Settings.tokenizer``, else
                tiktoken), as the stock class.
            session_id: The ogmem session, shared and persistent: every memory naming
                it sees one conversation. Default ``chat_store_key``; with neither, a
                private session of this instance (a fresh id; in memory unless a store
                is given).
            user_id: Owner of the session; a session of another user raises
                ``AccessDeniedError`` on every call.
            manager: A ``SessionManager`` to use (for example one on ``InMemoryStore``).
            url: Store URL of the shared manager (``sqlite:///chat.db``,
                ``postgresql://...``); ``None`` means ``$OGMEM_DB`` or ``./ogmem.db``.
            config: ``MemoryConfig`` of the shared manager (thresholds, budgets).
            embedder: Embedder of the shared manager (a LlamaIndex ``BaseEmbedding``, a
                LangChain ``Embeddings`` or a ``callable(list[str])``): archived turns are
                then recalled by meaning as well as by words.

        Raises:
            ConfigError: ``token_limit < 1``, a non-ogmem ``chat_store``, or ``manager``/
                ``chat_store`` combined with options that would build a new manager.
        """
        name = session_id if session_id is not None else chat_store_key
        if name is not None:
            _check_session_id(name)
        if token_limit is not None:
            _check_token_limit(token_limit)
        elif llm is not None:
            token_limit = int(llm.metadata.context_window * DEFAULT_TOKEN_LIMIT_RATIO)
        else:
            token_limit = DEFAULT_TOKEN_LIMIT
        if chat_store is not None:
            if not isinstance(chat_store, OgmemChatStore):
                raise ConfigError(
                    f"chat_store must be an OgmemChatStore, got {type(chat_store).__name__}; "
                    "import its history with chat_history=chat_store.get_messages(key)"
                )
            if any(v is not None for v in (manager, url, config, llm, tokenizer_fn, embedder)):
                raise ConfigError(
                    "chat_store already has its manager; drop manager/url/config/llm/tokenizer_fn/embedder"
                )
            store = chat_store
        elif manager is not None:
            if any(v is not None for v in (url, config, llm, tokenizer_fn, embedder)):
                raise ConfigError(
                    "url, config, llm, tokenizer_fn and embedder configure a manager built here; with "
                    "manager= give them to SessionManager(...) and pass token_limit"
                )
            store = OgmemChatStore(manager=manager, user_id=user_id)
        else:
            if url is None and name is None:
                url = "memory://"  # private and gone with the process, as the stock memory
            store = OgmemChatStore(
                url=url,
                config=config,
                user_id=user_id,
                llm=llm,
                token_counter=tokenizer_fn,
                embedder=embedder,
            )
        if user_id is not None and store.user_id != user_id:
            raise ConfigError("user_id differs from the chat_store's user_id")
        values: dict[str, Any] = {
            "token_limit": token_limit,
            "tokenizer_fn": tokenizer_fn,  # None: validate_memory counts with the store's manager
            "chat_store": store,
            "session_id": name if name is not None else _private_session_id(),
            "user_id": user_id,
        }
        memory = cls(**values)
        if chat_history:
            memory.set(chat_history)
        return memory

    # -- plumbing ------------------------------------------------------------------

    @property
    def manager(self) -> SessionManager:
        """The ``SessionManager`` holding this memory's session."""
        return self.chat_store.manager

    @property
    def _ctx(self) -> RequestContext | None:
        return RequestContext(user_id=self.user_id) if self.user_id is not None else None

    @property
    def _owner(self) -> tuple[str, str] | None:
        ctx = self._ctx
        return ctx.owner if ctx is not None else None

    def _budget(self, initial_token_count: int) -> int:
        if initial_token_count > self.token_limit:
            raise ValueError("Initial token count exceeds token limit")
        return self.token_limit - initial_token_count

    @staticmethod
    def _query(input: object) -> str | None:
        return input if isinstance(input, str) and input.strip() else None

    def _count(self, message: ChatMessage) -> int:
        # The stock formula, so get() agrees with ChatMemoryBuffer message for message.
        return self.manager.token_counter.count(str(message.content))

    def _refresh_counts(self) -> None:
        # Cached counts hold only for the tokenizer that made them: a later
        # ``Settings.tokenizer = ...`` must change what the next get() keeps.
        counter = self.manager.token_counter
        tokenizer = counter.current() if isinstance(counter, LlamaIndexTokenizer) else counter
        if tokenizer is not self._counts_tokenizer:
            self._counts.clear()
            self._text_counts.clear()
            self._counts_tokenizer = tokenizer

    @property
    def _text_counter(self) -> _MemoCounter:
        return _MemoCounter(self.manager.token_counter, self._text_counts)

    def _count_stored(self, stored: SessionMessage) -> int:
        # Stored messages never change, so their count is cached by id: a get() then
        # converts only the messages it returns.
        count = self._counts.get(stored.id)
        if count is None:
            if len(self._counts) >= _COUNT_CACHE_MAX:
                self._counts.clear()
            count = self._counts[stored.id] = self._count(self._chat_message(stored))
        return count

    def _chat_message(self, stored: SessionMessage) -> ChatMessage:
        # Stored messages never change: convert each once (pydantic validation is most of a
        # get() otherwise). Like the stock buffer, get() hands out the same objects each time.
        message = self._converted.get(stored.id)
        if message is None:
            if len(self._converted) >= _COUNT_CACHE_MAX:
                self._converted.clear()
            message = self._converted[stored.id] = to_chat_message(stored)
        return message

    def _assemble(self, context: Context, window: Sequence[SessionMessage], budget: int) -> list[ChatMessage]:
        """The stock ``get()`` selection over the live window, after ogmem's preamble."""
        self._refresh_counts()
        counter = self._text_counter
        plan = assemble_context(
            summary=context.summary,
            abstracts=context.abstracts,
            recalled=context.recalled,
            messages=window,
            budget=budget,
            counter=counter,
            cfg=self.manager.config,
            memories=context.memories,
        )
        preamble = preamble_message(plan.summary, plan.abstracts, plan.recalled, plan.memories)
        lead = [] if preamble is None else [str(preamble.content)]
        if not window:  # everything was committed (an explicit commit): the summary alone
            return [preamble] if preamble is not None and counter.count(lead[0]) <= budget else []
        messages = [self._chat_message(m) for m in window]
        texts = [str(m.content) for m in messages]
        exact = self.manager.token_counter

        def joined(start: int) -> int:
            return exact.count(" ".join(lead + texts[start:]))

        start = stock_start(
            [m.role in _UNSAFE_START for m in messages],
            [self._count_stored(m) for m in window],
            lead=counter.count(lead[0]) if lead else None,
            room=budget,
            joined=joined,
        )
        if start is None:
            return messages[-1:]  # the newest message alone, even over budget, as the stock class does
        return ([preamble] if preamble is not None else []) + messages[start:]

    # -- reads ---------------------------------------------------------------------

    def get(self, input: str | None = None, initial_token_count: int = 0, **kwargs: Any) -> list[ChatMessage]:
        """Messages for the next LLM call, within ``token_limit - initial_token_count`` tokens.

        The stock contract, plus a leading system message with the user's long-term
        memories, the running summary and the archived turns recalled for ``input``
        (else for the newest user message), all counted within the limit. Costs O(live
        window), whatever the length of the history.

        Raises:
            ValueError: ``initial_token_count`` exceeds ``token_limit``.
            AccessDeniedError: ``user_id`` does not own the session.
        """
        budget = self._budget(initial_token_count)
        context = self.manager.get_context(
            self.session_id, max(1, budget), self._ctx, query=self._query(input)
        )
        window = _whole_window(context)
        if window is None:  # see _WINDOW_READ (owner-checked: the id may have changed hands since)
            window = tuple(
                self.manager.store.list_messages(context.session_id, status="active", owner=self._owner)
            )
        return self._assemble(context, window, budget)

    async def aget(
        self, input: str | None = None, initial_token_count: int = 0, **kwargs: Any
    ) -> list[ChatMessage]:
        """Async :meth:`get`."""
        budget = self._budget(initial_token_count)
        context = await self.manager.aget_context(
            self.session_id, max(1, budget), self._ctx, query=self._query(input)
        )
        window = _whole_window(context)
        if window is None:  # see _WINDOW_READ
            window = tuple(
                await self.manager.store.alist_messages(
                    context.session_id, status="active", owner=self._owner
                )
            )
        return self._assemble(context, window, budget)

    def get_all(self) -> list[ChatMessage]:
        """The whole transcript in order, archived turns included."""
        return [to_chat_message(m) for m in self.manager.get_history(self.session_id, self._ctx)]

    async def aget_all(self) -> list[ChatMessage]:
        """Async :meth:`get_all`."""
        return [to_chat_message(m) for m in await self.manager.aget_history(self.session_id, self._ctx)]

    # -- writes --------------------------------------------------------------------

    def put(self, message: ChatMessage) -> None:
        """Store one message durably.

        Raises:
            MessageTypeError: ``message`` is not a ``ChatMessage`` (also a ``TypeError``).
        """
        self.manager.add_messages(self.session_id, [to_record(check_message(message))], self._ctx)

    async def aput(self, message: ChatMessage) -> None:
        """Async :meth:`put`."""
        await self.manager.aadd_messages(self.session_id, [to_record(check_message(message))], self._ctx)

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """Store several messages in one transaction (all or none)."""
        records = [to_record(m) for m in check_messages(messages)]
        if records:
            self.manager.add_messages(self.session_id, records, self._ctx)

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        """Async :meth:`put_messages`."""
        records = [to_record(m) for m in check_messages(messages)]
        if records:
            await self.manager.aadd_messages(self.session_id, records, self._ctx)

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the history with ``messages``.

        When the stored history is a prefix of ``messages`` (engines pass the history
        back with new turns), only the new messages are appended and the archives are
        kept; otherwise the session is rewritten in one transaction.

        Raises:
            MessageTypeError: An item is not a ``ChatMessage``.
            InvalidInputError: A message ogmem rejects; the stored history is unchanged.
        """
        records = [to_record(m) for m in check_messages(messages)]
        new = _new_suffix(self.manager.get_history(self.session_id, self._ctx), records)
        if new is None:
            self.manager.replace_messages(self.session_id, records, self._ctx)
        elif new:
            self.manager.add_messages(self.session_id, new, self._ctx)

    async def aset(self, messages: list[ChatMessage]) -> None:
        """Async :meth:`set`."""
        records = [to_record(m) for m in check_messages(messages)]
        new = _new_suffix(await self.manager.aget_history(self.session_id, self._ctx), records)
        if new is None:
            await self.manager.areplace_messages(self.session_id, records, self._ctx)
        elif new:
            await self.manager.aadd_messages(self.session_id, new, self._ctx)

    def reset(self) -> None:
        """Delete the session's history, archives and state (its owner stays bound)."""
        self.manager.clear_session(self.session_id, self._ctx)

    async def areset(self) -> None:
        """Async :meth:`reset`."""
        await self.manager.aclear_session(self.session_id, self._ctx)

    # -- serialisation ---------------------------------------------------------------

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """JSON-safe dict: limits, session, owner and the store's URL and config.

        ``from_dict`` in this process re-attaches the very same manager; in another
        process it re-attaches through the URL (a manager on ``InMemoryStore`` or
        another object without a URL cannot be reached from there).
        """
        data: dict[str, Any] = self.model_dump(mode="json")
        data["class_name"] = self.class_name()
        return data

    def to_string(self) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> OgmemChatMemoryBuffer:
        """Rebuild a memory from :meth:`to_dict`, attached to the same stored session.

        Args:
            data: What :meth:`to_dict` returned.
            **kwargs: ``tokenizer_fn``, ``llm`` and ``embedder`` for the manager built from
                the URL when the original one is not alive in this process; other fields
                override ``data``.
        """
        tokenizer_fn = kwargs.pop("tokenizer_fn", None)
        llm = kwargs.pop("llm", None)
        embedder = kwargs.pop("embedder", None)
        values = {k: v for k, v in {**data, **kwargs}.items() if k != "class_name"}
        store = values.get("chat_store")
        if isinstance(store, dict):
            values["chat_store"] = OgmemChatStore.from_dict(
                store, llm=llm, token_counter=tokenizer_fn, embedder=embedder
            )
        values["tokenizer_fn"] = tokenizer_fn
        return cls(**values)

    @classmethod
    def from_string(cls, json_str: str) -> OgmemChatMemoryBuffer:
        """Rebuild a memory from :meth:`to_string`."""
        return cls.from_dict(json.loads(json_str))


class _MemoCounter:
    """Remembers counts of texts: the summary, abstracts and their truncations change only
    at commits, and counting them with a real tokenizer is most of a get() otherwise."""

    def __init__(self, counter: TokenCounter, memo: dict[str, int]) -> None:
        self._counter = counter
        self._memo = memo

    def count(self, text: str) -> int:
        n = self._memo.get(text)
        if n is None:
            if len(self._memo) >= _TEXT_CACHE_MAX:
                self._memo.clear()
            n = self._memo[text] = self._counter.count(text)
        return n


def _whole_window(context: Context) -> tuple[SessionMessage, ...] | None:
    """The live window when ``context`` holds all of it unchanged, else ``None`` (see _WINDOW_READ)."""
    window = tuple(m for m in context.messages if m.status == "active")
    if (
        context.dropped_messages
        or len(window) != context.active_message_count
        or any(m.payload is None for m in window)
    ):
        return None
    return window


def _new_suffix(
    stored: Sequence[SessionMessage], records: Sequence[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """``records`` past the stored history when it is their prefix, else ``None``."""
    if len(stored) > len(records):
        return None
    for old, new in zip(stored, records, strict=False):
        if old.payload != new["payload"]:
            return None
    return list(records[len(stored) :])
