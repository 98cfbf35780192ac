"""Extraction with an LLM: :class:`LLMExtractor`, the prompt, and the validation of its reply."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from ogmem_memory.compress.base import message_role, message_text, one_line
from ogmem_memory.compress.llm import call_llm
from ogmem_memory.errors import ConfigError, InvalidInputError, OgmemError
from ogmem_memory.extract_records import CATEGORIES, Category, MemoryCandidate, MemoryExtractor
from ogmem_memory.extract_rules import RuleBasedExtractor
from ogmem_memory.extract_text import message_id, message_time
from ogmem_memory.tokens import TokenCounter, as_token_counter

# The documented logger name of memory extraction, whichever module of it logs.
logger = logging.getLogger("ogmem.extract")

_LLM_PROMPT: Final = """\
You extract long-term memories about the user from a conversation, for an assistant that will \
talk to this user again in other sessions.
{already}
Conversation (numbered messages):
<conversation>
{conversation}
</conversation>

Reply with only a JSON array (or {{"memories": [...]}}) of objects:
{{"category": "profile|preferences|entities|events|decisions", "key": "...", "content": "...", \
"confidence": 0.0-1.0, "sources": [message numbers]}}
Rules:
- Only what the user states or confirms about themselves, their life and their decisions; never \
questions, greetings, or the assistant's suggestions the user did not accept.
- key: user.<attribute> for facts with one value (user.name, user.location, user.employer, \
user.occupation, user.age, user.birthday, user.hometown, user.diet); pref:<subject> for likes and \
dislikes; entity:<relation> for people, pets and things of the user; event:<short-slug>; \
decision:<short-slug>. Use the same key for the same subject.
- content: one sentence about "User" in the third person; keep names, numbers, amounts and dates \
verbatim; turn relative dates into dates using the message dates.
- [] when there is nothing worth remembering.
"""
_ALREADY: Final = """
Already remembered from this session (do not repeat these):
<already>
{summary}
</already>
"""
_MAX_JSON_STARTS: Final = 64
_JSON_FENCE_RE: Final = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.DOTALL)
_SAFETY_TOKENS: Final = 16
_MAX_SUMMARY_CHARS: Final = 2000


def _json_values(text: str) -> Iterator[object]:
    stripped = text.strip()
    # RecursionError: a reply of a million nested brackets is malformed output, not a crash.
    for block in (stripped, *(m.group(1).strip() for m in _JSON_FENCE_RE.finditer(text))):
        with contextlib.suppress(ValueError, RecursionError):
            yield json.loads(block)
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "[{"][:_MAX_JSON_STARTS]
    for start in starts:
        try:
            yield decoder.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            continue


def parse_memories_output(text: str, source_ids: Sequence[str]) -> list[MemoryCandidate]:
    """Validate an LLM reply: a JSON list (or ``{"memories": [...]}``) of memory objects.

    Args:
        text: The model's reply (raw JSON, fenced JSON or JSON inside prose).
        source_ids: Message ids by prompt number (``sources: [1]`` is ``source_ids[0]``); a
            memory without valid sources is attributed to every message of the prompt.

    Raises:
        InvalidInputError: No JSON list of memories, or any item with a wrong category, key,
            content or confidence.
    """
    if not text.strip():
        raise InvalidInputError("LLM returned empty output")
    items: list[Any] | None = None
    for value in _json_values(text):
        if isinstance(value, dict) and isinstance(value.get("memories"), list):
            items = value["memories"]
            break
        if isinstance(value, list):
            items = value
            break
    if items is None:
        raise InvalidInputError("LLM output has no JSON list of memories")
    out = []
    all_ids = tuple(i for i in source_ids if i)
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInputError(f"memory {n} is {type(item).__name__}, not an object")
        category = item.get("category")
        if category not in CATEGORIES:
            raise InvalidInputError(f"memory {n} has category {category!r}")
        sources = item.get("sources")
        picked: tuple[str, ...] = ()
        if isinstance(sources, list):
            picked = tuple(
                dict.fromkeys(
                    source_ids[s - 1]
                    for s in sources
                    if isinstance(s, int)
                    and not isinstance(s, bool)
                    and 1 <= s <= len(source_ids)
                    and source_ids[s - 1]
                )
            )
        key: Any = item.get("key")
        content: Any = item.get("content")
        confidence: Any = item.get("confidence")
        try:
            out.append(MemoryCandidate(cast(Category, category), key, content, confidence, picked or all_ids))
        except InvalidInputError as exc:
            raise InvalidInputError(f"memory {n}: {exc}") from exc
    return out


@dataclass(frozen=True, slots=True)
class ExtractionOutcome:
    """What :meth:`LLMExtractor.extract_detailed` produced and whether a fallback ran.

    Attributes:
        candidates: All candidates, in message order of their prompts.
        used: ``"llm"`` when every prompt's reply was valid, ``"fallback"`` when the fallback
            extracted at least one prompt's messages.
        errors: Why each fallback ran, one entry per failed prompt.
    """

    candidates: tuple[MemoryCandidate, ...]
    used: Literal["llm", "fallback"]
    errors: tuple[str, ...] = field(default=())


class LLMExtractor:
    """Extract memories with an LLM; fall back to a deterministic extractor on any failure.

    The model is what :class:`ogmem_memory.LLMCompressor` takes: a plain ``callable(prompt) ->
    str``, a LangChain chat model or runnable (``invoke``) or a LlamaIndex LLM (``complete``).
    Long inputs are cut into prompts of at most ``max_input_tokens``; a prompt whose reply
    fails or is malformed has its messages extracted by ``fallback`` instead, logged as a
    WARNING on ``ogmem.extract``.
    """

    def __init__(
        self,
        llm: object,
        fallback: MemoryExtractor | None = None,
        *,
        max_input_tokens: int = 6000,
        token_counter: TokenCounter | Callable[[str], object] | None = None,
    ) -> None:
        if not (
            callable(getattr(llm, "invoke", None))
            or callable(getattr(llm, "complete", None))
            or callable(llm)
        ):
            raise ConfigError(
                f"llm must have invoke() or complete() or be callable, got {type(llm).__name__}"
            )
        self.llm = llm
        self.fallback: MemoryExtractor = fallback if fallback is not None else RuleBasedExtractor()
        self._counter = as_token_counter(token_counter)
        overhead = self._counter.count(self._prompt("x" * _MAX_SUMMARY_CHARS, ""))
        if max_input_tokens < overhead + 128:
            raise ConfigError(
                f"max_input_tokens={max_input_tokens} leaves no room; use at least {overhead + 128}"
            )
        self.max_input_tokens = max_input_tokens

    def extract(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> list[MemoryCandidate]:
        """Return the candidates of ``messages``; see :meth:`extract_detailed`."""
        return list(self.extract_detailed(messages, session_summary=session_summary).candidates)

    def extract_detailed(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> ExtractionOutcome:
        """Extract prompt by prompt, recording which prompts fell back and why."""
        summary = session_summary[-_MAX_SUMMARY_CHARS:]
        out: list[MemoryCandidate] = []
        errors: list[str] = []
        for chunk in self._chunks(messages, summary):
            lines = [line for _, line in chunk]
            ids = [message_id(m) for m, _ in chunk]
            try:
                reply = call_llm(self.llm, self._prompt(summary, "\n".join(lines)))
                out.extend(parse_memories_output(reply, ids))
            except OgmemError as exc:
                errors.append(str(exc))
                logger.warning(
                    "LLM memory extraction failed (%s); using %s for %d messages",
                    exc,
                    type(self.fallback).__name__,
                    len(chunk),
                )
                out.extend(self.fallback.extract([m for m, _ in chunk], session_summary=session_summary))
        return ExtractionOutcome(tuple(out), "fallback" if errors else "llm", tuple(errors))

    def _chunks(
        self, messages: Sequence[Mapping[str, Any]], summary: str
    ) -> Iterator[list[tuple[Mapping[str, Any], str]]]:
        budget = self.max_input_tokens - self._counter.count(self._prompt(summary, "")) - _SAFETY_TOKENS
        chunk: list[tuple[Mapping[str, Any], str]] = []
        used = 0
        for message in messages:
            if not isinstance(message, Mapping):
                raise InvalidInputError(f"messages must be mappings, got {type(message).__name__}")
            role, text = message_role(message), one_line(message_text(message))
            if role not in ("user", "assistant") or not text:
                continue
            when = message_time(message)
            stamp = f" ({when.date().isoformat()})" if when is not None else ""
            line = f"[{len(chunk) + 1}]{stamp} {role}: {text}"
            size = self._counter.count(line) + 1
            if chunk and used + size > budget:
                yield chunk
                chunk, used = [], 0
                line = f"[1]{stamp} {role}: {text}"
            if size > budget:  # one huge message: its beginning is what a prompt can hold
                line = line[: max(1, len(line) * budget // size)]
                size = budget
            chunk.append((message, line))
            used += size
        if chunk:
            yield chunk

    def _prompt(self, summary: str, conversation: str) -> str:
        already = _ALREADY.format(summary=summary) if summary.strip() else ""
        return _LLM_PROMPT.format(already=already, conversation=conversation)
