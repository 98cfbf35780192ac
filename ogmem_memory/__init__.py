"""ogmem-memory: chat memory for LangChain and LlamaIndex.

Never loses a message, keeps every prompt within a token budget::

    from ogmem_memory import SessionManager

    with SessionManager("sqlite:///chat.db") as memory:
        memory.add_message("s1", "user", "Hi, I'm Ada.")
        context = memory.get_context("s1", 2000)
"""

from ogmem_memory.buffer import SessionBuffer
from ogmem_memory.compress import (
    ArchiveMerger,
    CompressionQualityEvaluator,
    Compressor,
    ExtractiveCompressor,
    LLMCompressor,
)
from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import (
    AccessDeniedError,
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
    ArchiveWriteResult,
    CommitResult,
    Context,
    RequestContext,
    SessionMessage,
    SessionMeta,
    SessionRecord,
    SessionWindowState,
)
from ogmem_memory.state import Commitment, SessionState, TaskState, apply_session_state_bridge
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore, open_store
from ogmem_memory.tokens import TokenCounter, estimate_tokens
from ogmem_memory.topics import SessionTopicBuffer
from ogmem_memory.usage import UsageTracker

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AddResult",
    "ArchiveEntry",
    "ArchiveMerger",
    "ArchiveWriteResult",
    "Commitment",
    "CommitResult",
    "CompressionError",
    "CompressionQualityEvaluator",
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
    "SessionBuffer",
    "SessionManager",
    "SessionMessage",
    "SessionMeta",
    "SessionNotFoundError",
    "SessionRecord",
    "SessionState",
    "SessionStore",
    "SessionTopicBuffer",
    "SessionWindowState",
    "StoreError",
    "TaskState",
    "TaskTimeoutError",
    "TokenCounter",
    "UsageTracker",
    "__version__",
    "apply_session_state_bridge",
    "estimate_tokens",
    "open_store",
]
