"""Conversion between LlamaIndex ``ChatMessage`` and ogmem ``SessionMessage``.

A message is stored with two views: ``content``, the plain text ogmem counts,
compresses and searches (text blocks joined, tool calls and media named briefly),
and ``payload``, ``ChatMessage.model_dump(mode="json")``, from which the message is
rebuilt exactly: role, blocks and ``additional_kwargs`` (tool calls, ``tool_call_id``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
    VideoBlock,
)

from ogmem_memory.errors import InvalidInputError
from ogmem_memory.models import SessionMessage
from ogmem_memory.rendering import render_preamble

ROLE_MAP: Final[Mapping[MessageRole, str]] = {
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    # Cohere's CHATBOT and Gemini's MODEL are the assistant under another name.
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}
_BACK: Final[Mapping[str, MessageRole]] = {
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
    "system": MessageRole.SYSTEM,
    "tool": MessageRole.TOOL,
}
_ARGS_PREVIEW: Final = 200  # enough of a tool call's arguments for search and summaries


class MessageTypeError(InvalidInputError, TypeError):
    """Something other than a ``ChatMessage`` was given where one is required."""


def check_message(message: object) -> ChatMessage:
    """Return ``message`` if it is a ``ChatMessage``.

    Raises:
        MessageTypeError: It is anything else (a dict, a string, a LangChain message...).
    """
    if not isinstance(message, ChatMessage):
        raise MessageTypeError(
            f"expected a llama_index ChatMessage, got {type(message).__name__}; "
            "wrap text with ChatMessage(role='user', content=...)"
        )
    return message


def check_messages(messages: object) -> list[ChatMessage]:
    """Validate a list of ``ChatMessage`` before anything is written.

    Raises:
        MessageTypeError: ``messages`` is not a sequence of ``ChatMessage``.
    """
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise MessageTypeError(f"expected a list of ChatMessage, got {type(messages).__name__}")
    return [check_message(m) for m in messages]


def ogmem_role(role: MessageRole | str) -> str:
    """The ogmem role (``user|assistant|system|tool``) of a LlamaIndex role."""
    try:
        return ROLE_MAP[MessageRole(role)]
    except ValueError:
        raise InvalidInputError(f"unknown LlamaIndex message role {role!r}") from None


def _tool_call_text(name: object, args: object) -> str:
    text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, default=str)
    if len(text) > _ARGS_PREVIEW:
        text = text[:_ARGS_PREVIEW] + "…"
    return f"[tool call: {name}({text})]"


def _kwargs_tool_calls(calls: object) -> list[str]:
    """OpenAI-style ``additional_kwargs["tool_calls"]`` (dicts or SDK objects) as short text."""
    out: list[str] = []
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        return out
    for call in calls:
        if not isinstance(call, Mapping):
            dump = getattr(call, "model_dump", None)
            call = dump() if callable(dump) else {}
        fn = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(fn, Mapping):
            out.append(_tool_call_text(fn.get("name"), fn.get("arguments")))
        elif isinstance(call, Mapping) and "tool_name" in call:
            out.append(_tool_call_text(call.get("tool_name"), call.get("tool_kwargs")))
    return out


def text_view(message: ChatMessage) -> str:
    """Plain text of a message: text blocks joined, other blocks and tool calls named briefly."""
    parts: list[str] = []
    calls: list[str] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolCallBlock):
            calls.append(_tool_call_text(block.tool_name, block.tool_kwargs))
        elif isinstance(block, ImageBlock):
            parts.append("[image]")
        elif isinstance(block, AudioBlock):
            parts.append("[audio]")
        elif isinstance(block, VideoBlock):
            parts.append("[video]")
        elif isinstance(block, DocumentBlock):
            parts.append(f"[document: {block.title}]" if block.title else "[document]")
    if not calls:  # blocks win: LLM integrations that use both keep the same calls in each
        calls = _kwargs_tool_calls(message.additional_kwargs.get("tool_calls"))
    return "\n".join(parts + calls)


def to_record(message: ChatMessage) -> dict[str, Any]:
    """The ``add_messages`` mapping of a ``ChatMessage`` (role, text view, exact payload).

    A non-empty string ``additional_kwargs["id"]`` becomes the ogmem message id.

    Raises:
        MessageTypeError: ``message`` is not a ``ChatMessage``.
        InvalidInputError: Its role is unknown or its kwargs are not JSON-serialisable.
    """
    message = check_message(message)
    try:
        payload = message.model_dump(mode="json")
    except Exception as exc:  # pydantic raises several types for unserialisable kwargs
        raise InvalidInputError(f"ChatMessage could not be serialised to JSON: {exc}") from exc
    record: dict[str, Any] = {
        "role": ogmem_role(message.role),
        "content": text_view(message),
        "payload": payload,
    }
    # An id the message already carries makes its write retry-safe: ogmem stores it once.
    message_id = message.additional_kwargs.get("id")
    if isinstance(message_id, str) and message_id:
        record["id"] = message_id
    return record


def to_chat_message(message: SessionMessage) -> ChatMessage:
    """Rebuild the ``ChatMessage`` stored in ``message`` (a fresh object every call).

    Messages written by other adapters or by the core directly have no LlamaIndex
    payload; they become a text message with the mapped role.
    """
    payload = message.payload
    if isinstance(payload, Mapping) and "blocks" in payload and "role" in payload:
        try:
            return ChatMessage.model_validate(payload)
        except ValueError:
            pass  # not ours after all: fall back to the text view
    return ChatMessage(role=_BACK.get(message.role, MessageRole.USER), content=message.content)


def to_extraction_record(message: ChatMessage) -> dict[str, str]:
    """The ``commit_session`` mapping of a ``ChatMessage``: role, text view and id if it has one.

    Only text is extracted from, so no payload is built: a message whose kwargs cannot be
    serialised still gives its text.

    Raises:
        MessageTypeError: ``message`` is not a ``ChatMessage``.
        InvalidInputError: Its role is unknown.
    """
    message = check_message(message)
    record = {"role": ogmem_role(message.role), "content": text_view(message)}
    message_id = message.additional_kwargs.get("id")
    if isinstance(message_id, str) and message_id:
        record["id"] = message_id
    return record


def preamble_message(
    summary: str,
    abstracts: Sequence[str],
    recalled: Sequence[SessionMessage],
    memories: Sequence[str] = (),
) -> ChatMessage | None:
    """The leading system message (user's memories, summary, abstracts, recalled turns), or ``None``.

    Recalled turns are rendered as text inside it rather than replayed as messages,
    so a recalled tool call can never reach the model without its result.
    """
    text = render_preamble(summary, abstracts, recalled, memories)
    return ChatMessage(role=MessageRole.SYSTEM, content=text) if text else None
