"""ogmem-memory: chat memory for LangChain and LlamaIndex.

Never loses a message, keeps every prompt within a token budget::

    from ogmem_memory import SessionManager

    with SessionManager("sqlite:///chat.db") as memory:
        memory.add_message("s1", "user", "Hi, I'm Ada.")
        context = memory.get_context("s1", 2000)
"""

from ogmem_memory import display as _display  # noqa: F401 - installs the Jupyter HTML forms
from ogmem_memory.compress import Compressor, ExtractiveCompressor, LLMCompressor
from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import (
    AccessDeniedError,
    ClosedError,
    CompressionError,
    ConcurrencyError,
    ConfigError,
    InvalidInputError,
    InvalidSessionIdError,
    MessageTooLargeError,
    OgmemError,
    SchemaVersionError,
    SessionNotFoundError,
    StoreError,
    TaskTimeoutError,
)
from ogmem_memory.manager import AddResult, SessionManager
from ogmem_memory.models import (
    ArchiveEntry,
    CommitResult,
    Context,
    RequestContext,
    SessionMessage,
    SessionRecord,
)
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore, open_store
from ogmem_memory.tokens import TokenCounter, estimate_tokens

__version__ = "0.1.0"

# What a user needs; the seed's extras (state bridge, topic buffers, prepare tokens, usage
# tracking) stay importable from their own modules.
__all__ = [
    "AccessDeniedError",
    "AddResult",
    "ArchiveEntry",
    "ClosedError",
    "CommitResult",
    "CompressionError",
    "Compressor",
    "ConcurrencyError",
    "ConfigError",
    "Context",
    "ExtractiveCompressor",
    "InMemoryStore",
    "InvalidInputError",
    "InvalidSessionIdError",
    "LLMCompressor",
    "MemoryConfig",
    "MessageTooLargeError",
    "OgmemError",
    "RequestContext",
    "SQLiteStore",
    "SchemaVersionError",
    "SessionManager",
    "SessionMessage",
    "SessionNotFoundError",
    "SessionRecord",
    "SessionStore",
    "StoreError",
    "TaskTimeoutError",
    "TokenCounter",
    "__version__",
    "estimate_tokens",
    "open_store",
]
