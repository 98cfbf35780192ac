"""OgmemChatStore: LlamaIndex's ``BaseChatStore`` on an ogmem ``SessionManager``.

Each chat-store key is an ogmem session, so any LlamaIndex component that takes a
chat store keeps its history in SQLite or PostgreSQL through ogmem. The store is a
pydantic model whose fields (``url``, ``config``, ``user_id``) serialise to JSON; the
manager is a private attribute, re-attached after ``from_dict`` or unpickling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.storage.chat_store.base import BaseChatStore
from llama_index.memory.ogmem.convert import check_message, check_messages, to_chat_message, to_record
from llama_index.memory.ogmem.tokenizer import DEFAULT_TOKENIZER

from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError
from ogmem_memory.manager import SessionManager
from ogmem_memory.models import RequestContext, SessionMessage, SessionRecord

_LIST_PAGE = 500

# Process-local handles: a store restored by from_dict()/unpickling in the process that
# serialised it gets back the very same manager (its store, LLM and token counter), even
# one built on a non-URL store such as InMemoryStore. Weak, so a handle never keeps a
# manager alive; in another process the handle misses and the URL is used.
_refs_lock = threading.Lock()
_manager_by_ref: weakref.WeakValueDictionary[str, SessionManager] = weakref.WeakValueDictionary()
_ref_by_manager: weakref.WeakKeyDictionary[SessionManager, str] = weakref.WeakKeyDictionary()


def manager_ref(manager: SessionManager) -> str:
    """The process-local handle of ``manager`` (stable for its lifetime)."""
    with _refs_lock:
        ref = _ref_by_manager.get(manager)
        if ref is None:
            ref = uuid.uuid4().hex
            _ref_by_manager[manager] = ref
            _manager_by_ref[ref] = manager
        return ref


def manager_by_ref(ref: str | None) -> SessionManager | None:
    """The live manager behind a handle of this process, else ``None``."""
    if not ref:
        return None
    with _refs_lock:
        manager = _manager_by_ref.get(ref)
    return manager if manager is not None and is_open(manager) else None


def is_open(manager: SessionManager) -> bool:
    """False once ``close()`` ran (a shared manager is then replaced by a new one)."""
    return not manager.closed


def config_to_dict(config: MemoryConfig | dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``MemoryConfig`` as a JSON-safe dict (``None`` stays ``None``)."""
    if config is None or isinstance(config, dict):
        return config
    if isinstance(config, MemoryConfig):
        return dataclasses.asdict(config)
    raise ConfigError(f"config must be a MemoryConfig, got {type(config).__name__}")


def config_from_dict(data: dict[str, Any] | None) -> MemoryConfig | None:
    """The ``MemoryConfig`` a dict describes (unknown keys are a ``ConfigError``)."""
    if data is None:
        return None
    try:
        return MemoryConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"invalid MemoryConfig dict: {exc}") from exc


def _kept(message: SessionMessage) -> dict[str, Any]:
    """A stored message as an ``add_messages`` mapping that keeps its id and timestamp."""
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "payload": message.payload,
        "created_at": message.created_at,
    }


def _creation_order(record: SessionRecord) -> tuple[datetime, str]:
    # created_at is the only creation order a SessionRecord has; ties (same microsecond)
    # fall back to the id so the order is at least stable.
    return (record.created_at, record.session_id)


class OgmemChatStore(BaseChatStore):
    """LlamaIndex chat store backed by ogmem sessions (one session per key).

    Writes are durable on return and may trigger ogmem's background commits; reads
    return the whole transcript, archived turns included, as the original
    ``ChatMessage`` objects (blocks and ``additional_kwargs`` intact).

    ``delete_message`` and ``delete_last_message`` exist for the ``BaseChatStore``
    contract: ogmem never edits history in place, so they rewrite the session (cost
    O(messages), and the session's archives are rebuilt by later commits).

    Args:
        url: Store URL (``sqlite:///chat.db``, ``postgresql://...``, ``memory://``);
            ``None`` means ``$OGMEM_DB`` or ``./ogmem.db``. Ignored when ``manager`` is given.
        manager: An existing ``SessionManager`` to use instead of a shared one.
        config: ``MemoryConfig`` (or its dict) of the shared manager built from ``url``.
        user_id: Owner checked on every call; ``None`` is a trusted caller.
        llm: Compressor LLM of the shared manager built from ``url``.
        token_counter: Tokenizer or counter of the shared manager built from ``url``;
            default: LlamaIndex's tokenizer (``Settings.tokenizer``, else tiktoken), as
            ``ChatMemoryBuffer`` counts.
        embedder: Embedder of the shared manager built from ``url`` (a LlamaIndex
            ``BaseEmbedding``, a LangChain ``Embeddings`` or a ``callable(list[str])``):
            archived turns are then recalled by meaning as well as by words.

    Raises:
        ConfigError: ``manager`` was combined with ``config``, ``llm``, ``token_counter``
            or ``embedder``.
    """

    url: str | None = Field(default=None, description="Store URL; None means $OGMEM_DB or ./ogmem.db.")
    config: dict[str, Any] | None = Field(default=None, description="MemoryConfig of the manager, as a dict.")
    user_id: str | None = Field(default=None, description="Owner checked on every call (None: trusted).")
    process_ref: str | None = Field(
        default=None, description="Process-local handle that re-attaches the same manager when restored."
    )

    _manager: SessionManager | None = PrivateAttr(default=None)
    _llm: Any = PrivateAttr(default=None)
    _token_counter: Any = PrivateAttr(default=None)
    _embedder: Any = PrivateAttr(default=None)
    _attach_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        url: str | None = None,
        manager: SessionManager | None = None,
        config: MemoryConfig | dict[str, Any] | None = None,
        user_id: str | None = None,
        llm: Any = None,
        token_counter: Callable[[str], Any] | Any = None,
        embedder: Any = None,
        process_ref: str | None = None,
    ) -> None:
        if manager is not None:
            if not isinstance(manager, SessionManager):
                raise ConfigError(f"manager must be a SessionManager, got {type(manager).__name__}")
            if any(v is not None for v in (config, llm, token_counter, embedder)):
                raise ConfigError(
                    "config, llm, token_counter and embedder configure a new manager; not with manager= "
                    "(give them to SessionManager(...))"
                )
            process_ref = manager_ref(manager)
        if user_id is not None and (not isinstance(user_id, str) or not user_id):
            raise ConfigError(f"user_id must be a non-empty str or None, got {user_id!r}")
        fields: dict[str, Any] = {
            "url": url,
            "config": config_to_dict(config),
            "user_id": user_id,
            "process_ref": process_ref,
        }
        super().__init__(**fields)
        self._manager = manager
        self._llm = llm
        self._token_counter = token_counter
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "OgmemChatStore"

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> OgmemChatStore:
        """Rebuild a store from ``to_dict()``.

        Args:
            data: What ``to_dict()`` returned.
            **kwargs: ``llm``, ``token_counter`` and ``embedder`` for the manager built
                from the URL when the original manager is not alive in this process.
        """
        llm = kwargs.pop("llm", None)
        token_counter = kwargs.pop("token_counter", None)
        embedder = kwargs.pop("embedder", None)
        values = {k: v for k, v in {**data, **kwargs}.items() if k != "class_name"}
        store = cls.model_validate(values)
        store._llm = llm
        store._token_counter = token_counter
        store._embedder = embedder
        return store

    @property
    def manager(self) -> SessionManager:
        """The ``SessionManager`` this store writes to (created or re-attached on first use)."""
        manager = self._manager
        if manager is None or not is_open(manager):
            with self._attach_lock:
                manager = self._manager
                if manager is None or not is_open(manager):
                    manager = manager_by_ref(self.process_ref) or SessionManager.shared(
                        self.url,
                        config=config_from_dict(self.config),
                        llm=self._llm,
                        token_counter=self._token_counter or DEFAULT_TOKENIZER,
                        embedder=self._embedder,
                    )
                    self._manager = manager
                    self.process_ref = manager_ref(manager)
        return manager

    @property
    def request_context(self) -> RequestContext | None:
        """The identity sent with every call (``None`` when no ``user_id`` was given)."""
        return RequestContext(user_id=self.user_id) if self.user_id is not None else None

    # -- pickling: the manager holds locks, threads and connections ---------------

    def __getstate__(self) -> dict[str, Any]:
        if self._manager is not None:
            self.process_ref = manager_ref(self._manager)
        return {
            "__dict__": dict(self.__dict__),
            "__pydantic_extra__": self.__pydantic_extra__,
            "__pydantic_fields_set__": set(self.__pydantic_fields_set__),
            "__pydantic_private__": {
                "_manager": None,
                "_llm": None,
                "_token_counter": None,
                "_embedder": None,
            },
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "__dict__", state["__dict__"])
        object.__setattr__(self, "__pydantic_extra__", state["__pydantic_extra__"])
        object.__setattr__(self, "__pydantic_fields_set__", state["__pydantic_fields_set__"])
        object.__setattr__(self, "__pydantic_private__", state["__pydantic_private__"])

    # -- BaseChatStore --------------------------------------------------------------

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the session's messages in one transaction (bad input changes nothing).

        Raises:
            MessageTypeError: An item is not a ``ChatMessage``.
            InvalidInputError: A message ogmem rejects (oversized, invalid UTF-16, ...).
        """
        records = [to_record(m) for m in check_messages(messages)]
        self.manager.replace_messages(key, records, self.request_context)

    def get_messages(self, key: str) -> list[ChatMessage]:
        """The whole transcript of the session, archived turns included."""
        return [to_chat_message(m) for m in self.manager.get_history(key, self.request_context)]

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message``, or insert it at ``idx`` as ``list.insert`` does.

        An insertion before the end rewrites the session in one transaction (cost
        O(messages)); the other messages keep their ids and timestamps.
        """
        record = to_record(check_message(message))
        if idx is not None:
            records = [_kept(m) for m in self.manager.get_history(key, self.request_context)]
            if idx < len(records):
                records.insert(idx, record)
                self.manager.replace_messages(key, records, self.request_context)
                return
        self.manager.add_messages(key, [record], self.request_context)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete the session (messages, archives, owner); returns its messages, else ``None``.

        Like ``SimpleChatStore`` popping the key: it leaves ``get_keys()``, and a later
        write starts a new session at the end of the key order.
        """
        messages = self.get_messages(key)
        if not messages:
            return None
        self.manager.delete_session(key, self.request_context)
        return messages

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at ``idx``; ``None`` when there is no such message.

        Rewrites the session in one transaction (cost O(messages)); the other messages
        keep their ids and timestamps.
        """
        stored = self.manager.get_history(key, self.request_context)
        if not stored or idx >= len(stored) or idx < -len(stored):
            return None
        removed = stored.pop(idx)
        self.manager.replace_messages(key, [_kept(m) for m in stored], self.request_context)
        return to_chat_message(removed)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the newest message; ``None`` when the session is empty."""
        return self.delete_message(key, -1)

    def get_keys(self) -> list[str]:
        """Keys holding messages, in the order they were first written (as ``SimpleChatStore``).

        Only ``user_id``'s sessions when it is set. Cost O(sessions): the store lists them
        most recently updated first, so the order is rebuilt from their ``created_at``.
        """
        records: list[SessionRecord] = []
        while True:
            page = self.manager.list_sessions(self.request_context, limit=_LIST_PAGE, offset=len(records))
            records.extend(page)
            if len(page) < _LIST_PAGE:
                break
        return [r.session_id for r in sorted(records, key=_creation_order) if r.message_count > 0]

    # -- async twins (native where the manager has them) ------------------------------

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        records = [to_record(m) for m in check_messages(messages)]
        await self.manager.areplace_messages(key, records, self.request_context)

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        history = await self.manager.aget_history(key, self.request_context)
        return [to_chat_message(m) for m in history]

    async def async_add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        if idx is not None:
            await asyncio.to_thread(self.add_message, key, message, idx)
            return
        await self.manager.aadd_messages(key, [to_record(message)], self.request_context)
