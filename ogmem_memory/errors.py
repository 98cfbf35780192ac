"""The ogmem exception tree.

Every error the library raises on purpose is an ``OgmemError``; callers that
already catch builtin exceptions keep working through the second bases::

    OgmemError
      ConfigError (also ValueError)            invalid MemoryConfig or constructor option
      InvalidInputError (also ValueError)      bad message, role, content, timestamp
        InvalidSessionIdError                  empty, too long or control characters
        MessageTooLargeError                   content over MemoryConfig.max_message_chars
      AccessDeniedError (also PermissionError) another account/user's session
      SessionNotFoundError (also KeyError)     a read of a session that does not exist
      StoreError                               the store failed (I/O, connection, SQL)
        ConcurrencyError                       a compare-and-set lost to another writer
        SchemaVersionError                     the database is newer than this code
      CompressionError                         a compressor failed (the manager falls back)
      TaskTimeoutError (also TimeoutError)     wait_for_tasks ran out of time
      EmbeddingError                           an embedder failed or returned unusable vectors
      ClosedError (also RuntimeError)          the manager or store was closed
"""

from __future__ import annotations


class OgmemError(Exception):
    """Base of every error raised on purpose by ogmem-memory."""


class ConfigError(OgmemError, ValueError):
    """A configuration value or constructor option is invalid."""


class InvalidInputError(OgmemError, ValueError):
    """A message, role, payload, timestamp or other argument is invalid."""


class InvalidSessionIdError(InvalidInputError):
    """A session id is empty, too long, not a string or has control characters."""


class MessageTooLargeError(InvalidInputError):
    """A message's content exceeds ``MemoryConfig.max_message_chars``."""


class AccessDeniedError(OgmemError, PermissionError):
    """The caller's account/user does not own the session."""


class SessionNotFoundError(OgmemError, KeyError):
    """The session does not exist in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "session not found"


class StoreError(OgmemError):
    """The store could not complete an operation; nothing partial was written."""


class ConcurrencyError(StoreError):
    """Another writer changed the same rows first (compare-and-set lost)."""


class SchemaVersionError(StoreError):
    """The database schema is newer than this version of ogmem-memory."""


class CompressionError(OgmemError):
    """A compressor failed or returned unusable output."""


class TaskTimeoutError(OgmemError, TimeoutError):
    """Background tasks did not finish within the given timeout."""


class EmbeddingError(OgmemError):
    """An embedder raised or returned unusable vectors."""


class ClosedError(OgmemError, RuntimeError):
    """The manager or store was closed; open a new one."""


__all__ = [
    "ClosedError",
    "EmbeddingError",
    "AccessDeniedError",
    "CompressionError",
    "ConcurrencyError",
    "ConfigError",
    "InvalidInputError",
    "InvalidSessionIdError",
    "MessageTooLargeError",
    "OgmemError",
    "SchemaVersionError",
    "SessionNotFoundError",
    "StoreError",
    "TaskTimeoutError",
]
