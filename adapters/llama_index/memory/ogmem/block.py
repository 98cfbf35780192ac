"""OgmemMemoryBlock: a user's ogmem long-term memories as a LlamaIndex ``Memory`` block.

``Memory.from_defaults(memory_blocks=[OgmemMemoryBlock(user_id=...)])``: the messages
``Memory`` flushes from its short-term queue are handed to ogmem's extraction, and every
``get()`` shows the user's memories relevant to the newest user message (else the user's
profile). The memories live in the ogmem store (SQLite, PostgreSQL or in memory), so they
outlast the ``Memory`` object, reach every later session of the same user, and never
another user's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any, Final

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.memory.ogmem.chat_store import OgmemChatStore, config_to_dict
from llama_index.memory.ogmem.convert import check_messages, text_view, to_extraction_record

from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError, InvalidInputError, StoreError
from ogmem_memory.extract import MemoryRecord, profile_memories, rank_memories, render_memories
from ogmem_memory.longterm import MAX_MEMORIES_READ
from ogmem_memory.manager import SessionManager
from ogmem_memory.models import DEFAULT_ACCOUNT, DEFAULT_AGENT, DEFAULT_USER, RequestContext
from ogmem_memory.validation import check_ctx

logger = logging.getLogger("ogmem.llama_index")

DEFAULT_BLOCK_NAME: Final = "ogmem_memories"
# Flushed messages whose extraction failed wait for the next flush; past this many the
# oldest are given up (with a warning) rather than growing without bound.
MAX_PENDING: Final = 1000


def _check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInputError(f"user_id must name the user (a non-empty str), got {user_id!r}")
    if user_id == DEFAULT_USER:
        # "default" is the identity of every session written without one: memories kept
        # under it would be shared by everyone who never named a user.
        raise InvalidInputError(
            f"user_id {DEFAULT_USER!r} is the anonymous identity; name the user whose memories these are"
        )
    return user_id


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError(f"limit must be an int >= 0, got {limit!r}")
    return limit


def latest_user_text(messages: Sequence[ChatMessage] | None) -> str:
    """Text of the newest user message with text (``Memory`` appends ``input`` as one); ``""``."""
    for message in reversed(messages or ()):
        if isinstance(message, ChatMessage) and message.role == MessageRole.USER:
            text = text_view(message)
            if text.strip():
                return text
    return ""


def select_memories(memories: Sequence[MemoryRecord], query: str, *, limit: int) -> list[MemoryRecord]:
    """What the block shows: the memories relevant to ``query``, else the profile (as ``get_context``)."""
    ranked = rank_memories(memories, query, limit=limit) if query.strip() else []
    return ranked or profile_memories(memories, limit=limit)


class OgmemMemoryBlock(BaseMemoryBlock[str]):
    """A LlamaIndex memory block holding one user's ogmem long-term memories.

    ``_aput`` (what ``Memory`` calls with the messages it flushes from its short-term
    queue) extracts facts about the user (names, places, preferences, dates, decisions)
    and writes them to the store, merging duplicates and updating changed facts; ``_aget``
    returns the memories relevant to the newest user message, else the user's profile,
    as ``- ...`` lines (``""`` when there are none, so ``Memory`` leaves the block out).

    Args:
        url: Store URL (``sqlite:///chat.db``, ``postgresql://...``, ``memory://``);
            ``None`` means ``$OGMEM_DB`` or ``./ogmem.db``, as ``OgmemChatMemoryBuffer``.
        user_id: Whose memories these are (required; not the anonymous ``"default"``).
        account_id: Tenant of the user.
        agent_id: Agent the memories belong to (each agent of a user has its own).
        manager: A ``SessionManager`` to use instead of the shared one of ``url`` (for
            example one built with ``extractor=LLMExtractor(llm)``).
        config: ``MemoryConfig`` of the shared manager built from ``url``.
        name: Block name (the tag ``Memory``'s template wraps the block in).
        description: Description of the block.
        priority: ``Memory``'s truncation priority (0 = never truncated); over its token
            limit, ``Memory`` asks this block to drop its least relevant memories first.
        accept_short_term_memory: Extract from messages flushed by ``Memory`` (False: the
            block only reads memories written elsewhere, e.g. by ``OgmemChatMemoryBuffer``
            sessions of the same user).
        limit: Most memories one ``get`` shows.

    Raises:
        InvalidInputError: A missing, empty or anonymous ``user_id``, a bad ``account_id``/
            ``agent_id``, or a negative ``limit``.
        ConfigError: ``manager`` combined with ``url`` or ``config``, or not a ``SessionManager``.
    """

    name: str = Field(default=DEFAULT_BLOCK_NAME, description="The name of the memory block.")
    priority: int = Field(default=1, description="Truncation priority (0 = never truncate).")
    url: str | None = Field(default=None, description="Store URL; None means $OGMEM_DB or ./ogmem.db.")
    user_id: str = Field(description="Whose memories these are.")
    account_id: str = Field(default=DEFAULT_ACCOUNT, description="Tenant of the user.")
    agent_id: str = Field(default=DEFAULT_AGENT, description="Agent the memories belong to.")
    limit: int = Field(default=8, description="Most memories one get shows.")
    config: dict[str, Any] | None = Field(default=None, description="MemoryConfig of the manager, as a dict.")

    _store: OgmemChatStore | None = PrivateAttr(default=None)
    _pending: list[dict[str, str]] = PrivateAttr(default_factory=list)
    _pending_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        url: str | None = None,
        *,
        user_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        agent_id: str = DEFAULT_AGENT,
        manager: SessionManager | None = None,
        config: MemoryConfig | None = None,
        name: str = DEFAULT_BLOCK_NAME,
        description: str | None = "What is known about the user, from every earlier session.",
        priority: int = 1,
        accept_short_term_memory: bool = True,
        limit: int = 8,
    ) -> None:
        # Checked here, before pydantic: a validator's ValueError would reach the caller as
        # a pydantic ValidationError instead of ogmem's InvalidInputError.
        check_ctx(RequestContext(account_id, _check_user_id(user_id), agent_id))
        _check_limit(limit)
        if manager is not None:
            if url is not None or config is not None:
                raise ConfigError("url and config configure a manager built here; not with manager=")
            store = OgmemChatStore(manager=manager)
        else:
            store = OgmemChatStore(url=url, config=config)
        fields: dict[str, Any] = {
            "name": name,
            "description": description,
            "priority": priority,
            "accept_short_term_memory": accept_short_term_memory,
            "url": url,
            "user_id": user_id,
            "account_id": account_id,
            "agent_id": agent_id,
            "limit": limit,
            "config": config_to_dict(config),
        }
        super().__init__(**fields)
        self._store = store

    @property
    def manager(self) -> SessionManager:
        """The ``SessionManager`` whose store holds the memories (shared per URL, re-attached if closed)."""
        if self._store is None:  # built by model_validate (no __init__): attach through the URL
            self._store = OgmemChatStore(url=self.url, config=self.config)
        return self._store.manager

    @property
    def request_context(self) -> RequestContext:
        """The identity whose memories this block reads and writes."""
        return RequestContext(self.account_id, self.user_id, self.agent_id)

    @property
    def pending_messages(self) -> int:
        """Flushed messages whose extraction failed and is retried at the next ``aput``."""
        with self._pending_lock:
            return len(self._pending)

    # -- BaseMemoryBlock ------------------------------------------------------------------

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        """The user's memories relevant to the newest user message (else the profile), as lines.

        ``block_kwargs`` (``Memory`` passes ``session_id`` and the ``get`` kwargs) are not
        used: memories belong to the user, not to a session.
        """
        if self.limit == 0:
            return ""
        query = latest_user_text(messages)
        try:
            found = await asyncio.to_thread(self._read, query)
        except StoreError as exc:  # memories are a bonus: the chat history still stands
            logger.warning("reading the memories of user %s failed: %s", self.user_id, exc)
            return ""
        return render_memories(found)

    def _read(self, query: str) -> list[MemoryRecord]:
        memories = self.manager.list_memories(self.request_context, limit=MAX_MEMORIES_READ)
        return select_memories(memories, query, limit=self.limit)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Extract the user's memories from ``messages`` (what ``Memory`` flushed) and store them.

        A failed extraction (store down, extractor raising) is logged and its messages are
        retried with the next call, so ``Memory``'s turn is not broken by it.

        Raises:
            MessageTypeError: An item is not a ``ChatMessage``.
            InvalidInputError: A message with an unknown role.
        """
        records = [r for r in map(to_extraction_record, check_messages(messages)) if r["content"].strip()]
        with self._pending_lock:
            batch = [*self._pending, *records]
            self._pending = []
        if not batch:
            return
        try:
            await asyncio.to_thread(self.manager.commit_session, batch, self.request_context)
        except InvalidInputError:
            raise
        except Exception as exc:  # kept for the next flush: extraction loses nothing
            self._keep_pending(batch, exc)

    def _keep_pending(self, batch: list[dict[str, str]], exc: Exception) -> None:
        with self._pending_lock:
            pending = [*batch, *self._pending]
            given_up = max(0, len(pending) - MAX_PENDING)
            self._pending = pending[given_up:]
        logger.warning(
            "extracting memories of user %s failed (%d messages kept for the next flush%s): %s",
            self.user_id,
            len(pending) - given_up,
            f", {given_up} oldest given up" if given_up else "",
            exc,
        )

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Drop the least relevant memories (the last lines) until about ``tokens_to_truncate`` are saved.

        Returns ``None`` when nothing is left (``Memory`` then leaves the block out).
        """
        if not isinstance(content, str):
            return None
        lines = content.split("\n")
        counter = self.manager.token_counter
        saved = 0
        while lines and saved < tokens_to_truncate:
            saved += counter.count(lines.pop()) + 1  # its newline too
        return "\n".join(lines) or None
