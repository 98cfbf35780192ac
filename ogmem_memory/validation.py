"""Checks of the public API's arguments: bad input becomes an ``OgmemError`` before any I/O.

Every store receives only values that all stores can keep identically: text without lone
surrogates or NUL (PostgreSQL cannot store NUL), UTC timestamps within the calendar every
backend supports, ids without control or invisible characters.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import (
    ConfigError,
    InvalidInputError,
    InvalidSessionIdError,
    MessageTooLargeError,
)
from ogmem_memory.models import ROLES, RequestContext, SessionMessage, new_message_id
from ogmem_memory.tokens import TokenCounter

MAX_ID_LENGTH: Final = 256
MAX_PAGE: Final = 1_000_000  # the largest limit/offset accepted (every backend's integers hold it)

# Control, surrogate, line/paragraph separator, private-use and unassigned characters are
# never part of an id; format characters (zero-width space, joiners) may be, but not alone.
_FORBIDDEN_IN_IDS: Final = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_INVISIBLE: Final = frozenset({"Cf", "Zs"})


def check_identifier(value: object, what: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """A session id, message id or identity part: a visible, storable str of bounded length.

    Raises:
        InvalidInputError: (``InvalidSessionIdError`` for session ids) naming what is wrong.
    """
    # printable ASCII (no control characters) that is not only spaces: valid, no loop needed
    if (
        type(value) is str
        and len(value) <= max_length
        and value.isascii()
        and value.isprintable()
        and value.strip(" ")
    ):
        return value
    error = InvalidSessionIdError if what == "session_id" else InvalidInputError
    if not isinstance(value, str):
        raise error(f"{what} must be a str, got {type(value).__name__}")
    if len(value) > max_length:
        raise error(f"{what} is {len(value)} characters; the limit is {max_length}")
    visible = False
    for ch in value:
        category = unicodedata.category(ch)
        if category in _FORBIDDEN_IN_IDS:
            raise error(f"{what} must not contain control or separator characters (U+{ord(ch):04X})")
        if category not in _INVISIBLE and not ch.isspace():
            visible = True
    if not visible:
        raise error(f"{what} must contain a visible character")
    return value


def check_session_id(session_id: object, config: MemoryConfig) -> str:
    return check_identifier(session_id, "session_id", max_length=config.max_session_id_length)


def check_ctx(ctx: object) -> RequestContext | None:
    """``None`` or a ``RequestContext`` whose account, user and agent ids are valid identifiers."""
    if ctx is None:
        return None
    if not isinstance(ctx, RequestContext):
        raise InvalidInputError(f"ctx must be a RequestContext or None, got {type(ctx).__name__}")
    for name in ("account_id", "user_id", "agent_id"):
        check_identifier(getattr(ctx, name), f"RequestContext.{name}")
    return ctx


def check_text(text: str, what: str) -> str:
    """Storable everywhere: valid UTF-8 (no lone surrogate) and no NUL."""
    if text.isascii():  # O(1): no surrogate possible
        if "\x00" in text:
            raise InvalidInputError(f"{what} contains a NUL character, which PostgreSQL cannot store")
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid UTF-8 (lone surrogate at {exc.start})") from exc
    if "\x00" in text:
        raise InvalidInputError(f"{what} contains a NUL character, which PostgreSQL cannot store")
    return text


def check_count(value: object, what: str, *, minimum: int = 0, maximum: int = MAX_PAGE) -> int:
    """An int within ``[minimum, maximum]`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInputError(f"{what} must be an int from {minimum} to {maximum}, got {value!r}")
    return value


def check_timestamp(value: object) -> datetime:
    """A tz-aware datetime (or ISO-8601 str), returned in UTC; now when ``None``."""
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError as exc:
            raise InvalidInputError(f"created_at is not ISO-8601: {value!r}") from exc
    if not isinstance(value, datetime):
        raise InvalidInputError(f"created_at must be a datetime or ISO-8601 str, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError("created_at must be timezone-aware (naive timestamps are ambiguous)")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise InvalidInputError(f"created_at {value!r} is outside the years 1-9999 in UTC") from exc


def check_payload(payload: object, config: MemoryConfig) -> dict[str, Any] | None:
    """A private JSON-safe copy of ``payload`` (the caller cannot mutate it later)."""
    if payload is None:
        return None
    if not isinstance(payload, Mapping):
        raise InvalidInputError(f"payload must be a mapping, got {type(payload).__name__}")
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except RecursionError as exc:
        raise InvalidInputError("payload is nested too deeply") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"payload must be JSON-serialisable: {exc}") from exc
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"payload is not valid UTF-8 (lone surrogate at {exc.start})") from exc
    if len(text) > config.max_message_chars * 2:
        raise MessageTooLargeError("payload exceeds twice max_message_chars")
    try:
        copy: dict[str, Any] = json.loads(text)
    except RecursionError as exc:
        raise InvalidInputError("payload is nested too deeply") from exc
    return copy


def count_tokens(counter: TokenCounter, text: str) -> int:
    """The counter's count of ``text``, which must be a non-negative int."""
    n = counter.count(text)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"token counter returned {n!r} (a non-negative int is required)")
    return n


def prepare_message(
    role: object,
    content: object,
    *,
    config: MemoryConfig,
    counter: TokenCounter,
    created_at: object = None,
    payload: object = None,
    message_id: object = None,
) -> SessionMessage:
    """A validated ``SessionMessage`` ready to append (its seq is assigned by the store)."""
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    if not isinstance(content, str):
        raise InvalidInputError(
            f"content must be a str (put structured data in payload), got {type(content).__name__}"
        )
    if len(content) > config.max_message_chars:
        raise MessageTooLargeError(
            f"message is {len(content)} characters; the limit is {config.max_message_chars}"
        )
    check_text(content, "content")
    return SessionMessage(  # positional: this runs on every add_message
        new_message_id() if message_id is None else check_identifier(message_id, "message id"),
        role,
        content,
        check_timestamp(created_at),
        None if payload is None else check_payload(payload, config),
        0,
        count_tokens(counter, content),
    )


_MESSAGE_KEYS: Final = frozenset({"role", "content", "payload", "created_at", "id"})


def prepare_any(message: object, *, config: MemoryConfig, counter: TokenCounter) -> SessionMessage:
    """``prepare_message`` for a dict (role, content, payload, created_at, id) or a SessionMessage."""
    if isinstance(message, SessionMessage):
        fields: Mapping[str, Any] = {
            "role": message.role,
            "content": message.content,
            "created_at": message.created_at,
            "payload": message.payload,
            "id": message.id,
        }
    elif isinstance(message, Mapping):
        unknown = set(message) - _MESSAGE_KEYS
        if unknown:
            raise InvalidInputError(f"unknown message keys: {sorted(map(str, unknown))}")
        if "role" not in message or "content" not in message:
            raise InvalidInputError("a message needs 'role' and 'content'")
        fields = message
    else:
        raise InvalidInputError(f"messages must be dicts or SessionMessage, got {type(message).__name__}")
    return prepare_message(
        fields["role"],
        fields["content"],
        config=config,
        counter=counter,
        created_at=fields.get("created_at"),
        payload=fields.get("payload"),
        message_id=fields.get("id"),
    )


def prepare_batch(messages: object, *, config: MemoryConfig, counter: TokenCounter) -> list[SessionMessage]:
    """Validate a sequence of messages (all or nothing); ids within one call must be distinct."""
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, list | tuple):
        raise InvalidInputError("messages must be a list or tuple of dicts or SessionMessage")
    prepared = [prepare_any(m, config=config, counter=counter) for m in messages]
    if len({m.id for m in prepared}) != len(prepared):
        prepared = _redraw_repeated(messages, prepared)
    return prepared


def has_own_id(message: object) -> bool:
    """Whether the caller gave this message its id (a ``SessionMessage`` always has one)."""
    return isinstance(message, SessionMessage) or (
        isinstance(message, Mapping) and message.get("id") is not None
    )


def generated_ids(messages: Sequence[object], prepared: Sequence[SessionMessage]) -> frozenset[str]:
    """The ids ``prepare_batch`` drew for ``messages`` that came without one."""
    return frozenset(p.id for m, p in zip(messages, prepared, strict=True) if not has_own_id(m))


def _redraw_repeated(messages: Sequence[object], prepared: list[SessionMessage]) -> list[SessionMessage]:
    # Two drawn ids (48 random bits) can meet, however rarely; only the caller's own may not.
    given = [m.id for src, m in zip(messages, prepared, strict=True) if has_own_id(src)]
    if len(set(given)) != len(given):
        raise InvalidInputError("message ids within one call must be distinct")
    taken = set(given)
    out: list[SessionMessage] = []
    for src, m in zip(messages, prepared, strict=True):
        if not has_own_id(src):
            while m.id in taken:
                m = replace(m, id=new_message_id())
            taken.add(m.id)
        out.append(m)
    return out
