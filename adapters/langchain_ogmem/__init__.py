"""LangChain adapter of ogmem-memory: a chat message history and a ``create_agent`` middleware.

Install from a clone of the repository with ``pip install -e ".[langchain]"``::

    from langchain_ogmem import OgmemChatMessageHistory, OgmemMemoryMiddleware
    from langchain_ogmem import OgmemRunnableWithMessageHistory, history_factory
"""

from langchain_ogmem.convert import NotAMessageError, context_to_messages, from_session_message, to_record
from langchain_ogmem.history import (
    HistoryFactory,
    OgmemChatMessageHistory,
    OgmemRunnableWithMessageHistory,
    history_factory,
)
from langchain_ogmem.middleware import OgmemMemoryMiddleware, OgmemMemoryState

__all__ = [
    "HistoryFactory",
    "NotAMessageError",
    "OgmemChatMessageHistory",
    "OgmemMemoryMiddleware",
    "OgmemMemoryState",
    "OgmemRunnableWithMessageHistory",
    "context_to_messages",
    "from_session_message",
    "history_factory",
    "to_record",
]
