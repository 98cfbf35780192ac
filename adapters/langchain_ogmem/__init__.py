"""LangChain adapter of ogmem-memory: a chat message history, a ``create_agent`` middleware
and a LangGraph long-term store.

Install from a clone of the repository with ``pip install -e ".[langchain]"``::

    from langchain_ogmem import OgmemChatMessageHistory, OgmemMemoryMiddleware
    from langchain_ogmem import OgmemRunnableWithMessageHistory, history_factory
    from langchain_ogmem import OgmemStore

The memories ogmem extracts about a user are items of ``OgmemStore`` under the namespace
``("memories", account_id, user_id, agent_id)`` (each label with ``%`` and ``.``
percent-encoded), so ``store.search(("memories", account_id, user_id))`` lists them all.
"""

from langchain_ogmem.convert import NotAMessageError, context_to_messages, from_session_message, to_record
from langchain_ogmem.history import (
    HistoryFactory,
    OgmemChatMessageHistory,
    OgmemRunnableWithMessageHistory,
    history_factory,
)
from langchain_ogmem.middleware import OgmemMemoryMiddleware, OgmemMemoryState
from langchain_ogmem.store import OgmemStore

__all__ = [
    "HistoryFactory",
    "NotAMessageError",
    "OgmemChatMessageHistory",
    "OgmemMemoryMiddleware",
    "OgmemMemoryState",
    "OgmemRunnableWithMessageHistory",
    "OgmemStore",
    "context_to_messages",
    "from_session_message",
    "history_factory",
    "to_record",
]
