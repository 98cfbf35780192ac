"""Conversion between LangChain messages and ogmem records.

A LangChain message is stored as ``role`` (user/assistant/system/tool), ``content`` (the plain
text that is counted, compressed and searched) and ``payload`` (``message_to_dict`` of the
message, so tool calls, ids, names, usage metadata and additional kwargs round-trip exactly).
Pure functions only: no manager, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    message_chunk_to_message,
    message_to_dict,
    messages_from_dict,
)

from langchain_ogmem._shared import id_problem
from ogmem_memory.errors import InvalidInputError
from ogmem_memory.models import Context, SessionMessage

SummaryRole = Literal["system", "human"]

SUMMARY_ID_PREFIX: Final = "ogmem-summary-"
"""Ids of the summary messages we render; ``add_messages`` never stores a message with one."""

# ChatMessage roles we can place in the ogmem role set; anything else is rejected rather than
# guessed, because a wrong role changes how the context is cut.
_CHAT_ROLES: Final[Mapping[str, str]] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}
# Tool-call arguments are summarised in the text view so compression and recall see them; the
# exact arguments live in the payload.
_MAX_ARGS_CHARS: Final = 300
# A LangChain id becomes the ogmem message id (a retried write is then a no-op) only when the
# core accepts it; otherwise the core assigns one and the LangChain id stays in the payload.
MAX_MESSAGE_ID_CHARS: Final = 200


class NotAMessageError(InvalidInputError, TypeError):
    """Something other than a LangChain ``BaseMessage`` was given where a message was expected."""


def message_text(message: BaseMessage) -> str:
    """The plain-text view of a message: what ogmem counts, compresses and searches.

    String content is used as is; text blocks of list content are joined by newlines (other
    blocks, e.g. images, have no text view); the tool calls of an AI message are appended
    briefly as ``[tool call name({...})]``.
    """
    content = message.content
    if isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif (
                isinstance(block, Mapping)
                and isinstance(block.get("text"), str)
                and block.get("type", "text") == "text"
            ):
                parts.append(block["text"])
        text = "\n".join(parts)
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = [text] if text else []
        for call in message.tool_calls:
            args = json.dumps(call.get("args", {}), ensure_ascii=False, default=str, sort_keys=True)
            if len(args) > _MAX_ARGS_CHARS:
                args = args[:_MAX_ARGS_CHARS] + "..."
            calls.append(f"[tool call {call.get('name', '')}({args})]")
        text = "\n".join(calls)
    return text


def message_role(message: BaseMessage) -> str:
    """The ogmem role of a LangChain message.

    Raises:
        InvalidInputError: A ``ChatMessage`` with a role ogmem cannot place, or a ``RemoveMessage``.
    """
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ToolMessage | FunctionMessage):
        return "tool"
    if isinstance(message, ChatMessage):
        role = _CHAT_ROLES.get(message.role.strip().lower())
        if role is None:
            raise InvalidInputError(
                f"ChatMessage role {message.role!r} has no ogmem equivalent; use one of {sorted(_CHAT_ROLES)}"
            )
        return role
    if isinstance(message, RemoveMessage):
        raise InvalidInputError("RemoveMessage is a state instruction, not a message, and cannot be stored")
    raise InvalidInputError(f"unsupported message type {type(message).__name__} ({message.type!r})")


def _payload(message: BaseMessage) -> dict[str, Any]:
    payload = message_to_dict(message)
    try:
        json.dumps(payload)
    except (TypeError, ValueError):
        # Non-JSON values (bytes, datetimes) in kwargs: pydantic's JSON mode keeps them readable.
        try:
            payload = {"type": message.type, "data": message.model_dump(mode="json")}
            json.dumps(payload)
        except Exception as exc:
            raise InvalidInputError(
                f"{type(message).__name__} cannot be serialised to JSON: {type(exc).__name__}: {exc}"
            ) from exc
    return payload


def is_summary_message(message: BaseMessage) -> bool:
    """True for the summary message ogmem rendered into a context (recognised by its id)."""
    return isinstance(message.id, str) and message.id.startswith(SUMMARY_ID_PREFIX)


def storable_id(message_id: object) -> str | None:
    """``message_id`` if ogmem can store it as a message id, else ``None`` (the core assigns one).

    Storable: a str of at most :data:`MAX_MESSAGE_ID_CHARS` characters with a visible one and
    no control, surrogate, private-use, unassigned or line/paragraph separator character.
    """
    if not isinstance(message_id, str) or len(message_id) > MAX_MESSAGE_ID_CHARS:
        return None
    return message_id if id_problem(message_id) is None else None


def to_record(message: object) -> dict[str, Any]:
    """Convert one LangChain message into the mapping ``SessionManager.add_messages`` takes.

    Chunks (``AIMessageChunk`` from streaming) are converted to their message class first. The
    message's ``id``, when storable (see :func:`storable_id`), is the record's ``id``, so writing
    the same message again stores it once.

    Raises:
        NotAMessageError: ``message`` is not a ``BaseMessage``.
        InvalidInputError: The message type or role cannot be stored.
    """
    if not isinstance(message, BaseMessage):
        raise NotAMessageError(f"expected a langchain_core BaseMessage, got {type(message).__name__}")
    if isinstance(message, BaseMessageChunk):
        message = message_chunk_to_message(message)
    role = message_role(message)
    record: dict[str, Any] = {"role": role, "content": message_text(message), "payload": _payload(message)}
    message_id = storable_id(message.id)
    if message_id is not None:
        record["id"] = message_id
    return record


def to_records(messages: Iterable[object]) -> list[dict[str, Any]]:
    """Convert a whole batch, all or nothing; ogmem's own summary messages are skipped.

    A message whose id already appeared earlier in the batch is skipped too: an id names one
    message, as it does across writes.

    Raises:
        NotAMessageError: An item is not a ``BaseMessage`` (or ``messages`` is a single message).
        InvalidInputError: An item cannot be stored.
    """
    if isinstance(messages, BaseMessage | str | bytes | Mapping):
        raise NotAMessageError(f"expected a sequence of messages, got {type(messages).__name__}")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, message in enumerate(messages):
        if isinstance(message, BaseMessage) and is_summary_message(message):
            continue
        try:
            record = to_record(message)
        except InvalidInputError as exc:
            raise type(exc)(f"message {index}: {exc}") from exc
        if "id" in record:
            if record["id"] in seen:
                continue
            seen.add(record["id"])
        records.append(record)
    return records


def from_session_message(stored: SessionMessage) -> BaseMessage:
    """Rebuild the LangChain message of a stored one.

    A LangChain payload round-trips exactly; a message written without one (by the core API or
    another framework's adapter) becomes the plain message of its role, with the ogmem id.
    """
    payload = stored.payload
    if isinstance(payload, Mapping) and isinstance(payload.get("type"), str) and "data" in payload:
        try:
            return messages_from_dict([dict(payload)])[0]
        except (ValueError, TypeError, KeyError):
            pass  # not a LangChain payload after all: fall back to the role view
    if stored.role == "user":
        return HumanMessage(content=stored.content, id=stored.id)
    if stored.role == "assistant":
        return AIMessage(content=stored.content, id=stored.id)
    if stored.role == "tool":
        call_id = _foreign_tool_call_id(payload)
        return ToolMessage(content=stored.content, tool_call_id=call_id, id=stored.id)
    return SystemMessage(content=stored.content, id=stored.id)


def _foreign_tool_call_id(payload: Mapping[str, Any] | None) -> str:
    if not isinstance(payload, Mapping):
        return ""
    for source in (payload, payload.get("additional_kwargs")):
        if isinstance(source, Mapping) and isinstance(source.get("tool_call_id"), str):
            return str(source["tool_call_id"])
    return ""


def from_session_messages(stored: Sequence[SessionMessage]) -> list[BaseMessage]:
    """:func:`from_session_message` over a sequence."""
    return [from_session_message(m) for m in stored]


def summary_text(context: Context) -> str:
    """The text of the leading message: ``Context.preamble()``.

    That is what is known about the user (long-term memories of all their sessions), the
    running summary, older abstracts and the recalled turns, rendered as every adapter does.
    """
    return context.preamble()


def summary_message(text: str, *, role: SummaryRole = "system") -> BaseMessage:
    """The message that carries the summary, with an id stable for a given summary text."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    msg_id = f"{SUMMARY_ID_PREFIX}{digest}"
    if role == "human":
        return HumanMessage(content=text, id=msg_id)
    return SystemMessage(content=text, id=msg_id)


def context_to_messages(context: Context, *, summary_role: SummaryRole = "system") -> list[BaseMessage]:
    """Render a ``Context`` as LangChain messages: one leading message (if any), then recent messages.

    The leading message carries the user's memories, the summary, abstracts and recalled
    turns (see :func:`summary_text`); its id starts with :data:`SUMMARY_ID_PREFIX`.
    """
    out: list[BaseMessage] = []
    text = summary_text(context)
    if text:
        out.append(summary_message(text, role=summary_role))
    out.extend(from_session_message(m) for m in context.messages)
    return out


def check_summary_role(summary_role: str) -> SummaryRole:
    """Validate a ``summary_role`` option.

    Raises:
        InvalidInputError: Not ``"system"`` or ``"human"``.
    """
    if summary_role == "system":
        return "system"
    if summary_role == "human":
        return "human"
    raise InvalidInputError(f"summary_role must be 'system' or 'human', got {summary_role!r}")


def keep_tool_pairs_whole(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Drop tool calls missing any of their results, and tool results whose call is absent.

    The store's context never splits a pair; this guards what the model finally receives,
    because providers reject a tool result without its call and a call without its results.
    """
    result_ids = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    kept_calls: set[str] = set()
    kept: list[BaseMessage] = []
    for m in messages:
        if isinstance(m, AIMessage) and m.tool_calls:
            ids = [str(c.get("id")) for c in m.tool_calls]
            if not all(i in result_ids for i in ids):
                continue
            kept_calls.update(ids)
        elif isinstance(m, ToolMessage) and m.tool_call_id not in kept_calls:
            continue
        kept.append(m)
    return kept
