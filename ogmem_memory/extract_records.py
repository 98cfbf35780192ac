"""Long-term memory values: keys, :class:`MemoryCandidate`, :class:`MemoryRecord`, the extractor protocol.

Keys name what a memory is about (see :mod:`ogmem_memory.extract`); :func:`normalize_key` gives
their canonical form and :func:`is_single_valued` says whether a changed fact replaces the old one.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol, get_args
from urllib.parse import quote

from ogmem_memory.compress.base import one_line
from ogmem_memory.errors import InvalidInputError, OgmemError
from ogmem_memory.models import iso, parse_iso

Category = Literal["profile", "preferences", "entities", "events", "decisions", "tools"]
CATEGORIES: Final[tuple[str, ...]] = get_args(Category)

MEMORY_URI_PREFIX: Final = "ogmem://memories/"
MAX_CONTENT_CHARS: Final = 1000
MAX_KEY_CHARS: Final = 120
# Bounds on what one memory accumulates over years of merges and updates.
MAX_HISTORY: Final = 10
MAX_SOURCES: Final = 50

_SINGLE_VALUED_PREFIXES: Final = ("user.", "tool:", "pref:favourite-", "pref:favorite-")


def _check_text(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    text = one_line(value)
    if not text:
        raise InvalidInputError(f"{what} must not be empty")
    if len(text) > max_chars:
        raise InvalidInputError(f"{what} has {len(text)} characters, more than {max_chars}")
    return text


def _check_confidence(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"confidence must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"confidence must be in [0, 1], got {value}")
    return float(value)


def _check_category(value: object) -> None:
    if value not in CATEGORIES:
        raise InvalidInputError(f"category must be one of {', '.join(CATEGORIES)}, got {value!r}")


def _check_ids(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{what} must be a sequence of strings")
    ids = tuple(value)
    if not all(isinstance(i, str) and i for i in ids):
        raise InvalidInputError(f"{what} must hold non-empty strings")
    return ids


def check_time(value: object, what: str) -> datetime:
    """``value`` when it is a timezone-aware datetime; InvalidInputError otherwise."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInputError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value


def normalize_key(key: str) -> str:
    """The canonical form of a memory key: lower case, no spaces, only ``\\w . : -``.

    Raises:
        InvalidInputError: The key is not a string or has nothing left after normalisation.
    """
    if not isinstance(key, str):
        raise InvalidInputError(f"key must be a string, got {type(key).__name__}")
    text = re.sub(r"[^\w.:-]+", "-", key.strip().casefold())
    text = re.sub(r"-{2,}", "-", text).strip("-._:")[:MAX_KEY_CHARS].rstrip("-._:")
    if not text:
        raise InvalidInputError(f"key {key!r} is empty after normalisation")
    return text


def is_single_valued(key: str) -> bool:
    """True when a key holds one value at a time (a changed fact replaces the old one)."""
    return key.startswith(_SINGLE_VALUED_PREFIXES)


def new_memory_id() -> str:
    """``mem_`` + 12 lowercase hex digits."""
    return f"mem_{uuid.uuid4().hex[:12]}"


def memory_uri(account_id: str, user_id: str, memory_id: str) -> str:
    """``ogmem://memories/<account>/<user>/<memory_id>``, each part percent-encoded."""
    parts = (quote(p, safe="") for p in (account_id, user_id, memory_id))
    return MEMORY_URI_PREFIX + "/".join(parts)


@dataclass(frozen=True, slots=True)
class MemoryCandidate:
    """A memory an extractor proposes; :func:`plan_writes` decides what becomes of it.

    The key is normalised (:func:`normalize_key`) and the content collapsed to one line on
    construction.

    Raises:
        InvalidInputError: Unknown category, empty key or content, confidence outside [0, 1].
    """

    category: Category
    key: str
    content: str
    confidence: float
    source_message_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_statement(self)


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One stored long-term memory of a user, scoped to ``(account_id, user_id, agent_id)``.

    Attributes:
        history: Previous contents, oldest first (at most :data:`MAX_HISTORY`): a changed fact
            keeps what it said before.
        source_session_id: The session the current content came from.
        active: ``False`` once deleted (a store may keep the row); inactive memories are never
            merged into, ranked or rendered.
    """

    memory_id: str
    account_id: str
    user_id: str
    agent_id: str
    category: Category
    key: str
    content: str
    confidence: float
    source_session_id: str
    source_message_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    history: tuple[str, ...] = ()
    active: bool = True

    def __post_init__(self) -> None:
        for name in ("memory_id", "account_id", "user_id", "agent_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidInputError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.source_session_id, str):
            raise InvalidInputError("source_session_id must be a string")
        _check_statement(self)
        check_time(self.created_at, "created_at")
        check_time(self.updated_at, "updated_at")
        if isinstance(self.history, str) or not isinstance(self.history, Sequence):
            raise InvalidInputError("history must be a sequence of strings")
        object.__setattr__(
            self, "history", tuple(_check_text(h, "history entry", MAX_CONTENT_CHARS) for h in self.history)
        )
        if not isinstance(self.active, bool):
            raise InvalidInputError(f"active must be a bool, got {self.active!r}")

    @property
    def uri(self) -> str:
        """``ogmem://memories/<account>/<user>/<memory_id>``."""
        return memory_uri(self.account_id, self.user_id, self.memory_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (ISO-8601 times, lists), the inverse of :meth:`from_dict`."""
        return {
            "memory_id": self.memory_id,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "category": self.category,
            "key": self.key,
            "content": self.content,
            "confidence": self.confidence,
            "source_session_id": self.source_session_id,
            "source_message_ids": list(self.source_message_ids),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "history": list(self.history),
            "active": self.active,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryRecord:
        """Rebuild a record from :meth:`to_dict` output (times may be ISO strings or datetimes).

        Raises:
            InvalidInputError: A field is missing or invalid.
        """
        try:
            created, updated = data["created_at"], data["updated_at"]
            return cls(
                memory_id=data["memory_id"],
                account_id=data["account_id"],
                user_id=data["user_id"],
                agent_id=data["agent_id"],
                category=data["category"],
                key=data["key"],
                content=data["content"],
                confidence=data["confidence"],
                source_session_id=data.get("source_session_id", ""),
                source_message_ids=tuple(data.get("source_message_ids", ())),
                created_at=parse_iso(created) if isinstance(created, str) else created,
                updated_at=parse_iso(updated) if isinstance(updated, str) else updated,
                history=tuple(data.get("history", ())),
                active=data.get("active", True),
            )
        except KeyError as exc:
            raise InvalidInputError(f"memory record is missing {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, OgmemError):
                raise
            raise InvalidInputError(f"invalid memory record: {exc}") from exc


def _check_statement(memory: MemoryCandidate | MemoryRecord) -> None:
    """Validate, and normalise in place, the fields a candidate and a record share."""
    _check_category(memory.category)
    # Both are frozen: normalising on construction is the one write their fields ever get.
    object.__setattr__(memory, "key", normalize_key(memory.key))
    object.__setattr__(memory, "content", _check_text(memory.content, "content", MAX_CONTENT_CHARS))
    object.__setattr__(memory, "confidence", _check_confidence(memory.confidence))
    object.__setattr__(
        memory, "source_message_ids", _check_ids(memory.source_message_ids, "source_message_ids")
    )


class MemoryExtractor(Protocol):
    """Turns committed messages into memory candidates."""

    def extract(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> list[MemoryCandidate]: ...
