"""LLM compression with bounded input, validated JSON output and an extractive fallback.

The model is any of: a plain ``callable(prompt) -> str``, an object with ``invoke`` (a LangChain
chat model or runnable) or an object with ``complete`` (a LlamaIndex LLM). Detection is by duck
typing, so this module never imports a framework.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from ogmem_memory.compress.base import (
    ABSTRACT_MAX_CHARS,
    Batch,
    BatchCompressor,
    CompressionOutcome,
    Compressor,
    bound_sections,
    message_role,
    message_text,
    one_line,
    parse_sections,
    run_compression,
)
from ogmem_memory.compress.extractive import ExtractiveCompressor
from ogmem_memory.errors import CompressionError, ConfigError
from ogmem_memory.tokens import TokenCounter, as_token_counter, truncate_to_tokens, word_prefix

_PROMPT: Final = """\
You are compressing part of a chat conversation into a memory archive that replaces the raw \
messages in the assistant's context.
{previous}
Conversation:
<conversation>
{conversation}
</conversation>

Reply with only a JSON object: {{"overview": "<markdown>", "abstract": "<one sentence>"}}
Rules:
- overview: Markdown with exactly these sections, in this order, each a list of "- " bullets \
("- None" when empty): ## Topics, ## Facts, ## Decisions, ## Open loops. Never a single paragraph.
- Keep names, numbers, amounts, dates, times, versions, file paths, URLs and identifiers verbatim.
- abstract: one sentence of at most 100 characters.
"""
_PREVIOUS: Final = """
Previous archive of this conversation (older messages, already compressed):
<previous_archive>
Abstract: {abstract}
{overview}
</previous_archive>
Integrate the still-relevant context of the previous archive into the new overview so that it \
summarises the whole conversation. Do not copy it verbatim unless it is still relevant; keep \
names, numbers and dates verbatim.
"""
# Token counts of parts are not exactly additive; this margin absorbs the rounding.
_SAFETY_TOKENS: Final = 16
_MIN_CONVERSATION_TOKENS: Final = 128
_MAX_JSON_STARTS: Final = 64
_FENCE_RE: Final = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.DOTALL)
_MARKER_RE: Final = re.compile(r"^(?:[-*+•]|\d+[.)])\s+")


def _has_method(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


def call_llm(llm: object, prompt: str) -> str:
    """Send ``prompt`` to a LangChain, LlamaIndex or plain-callable model and return its text.

    Raises:
        CompressionError: The model raised or returned something without text.
    """
    try:
        if _has_method(llm, "invoke"):
            result = llm.invoke(prompt)  # type: ignore[attr-defined]
        elif _has_method(llm, "complete"):
            result = llm.complete(prompt)  # type: ignore[attr-defined]
        elif callable(llm):
            result = llm(prompt)
        else:
            raise CompressionError(f"{type(llm).__name__} has no invoke/complete and is not callable")
    except CompressionError:
        raise
    except Exception as exc:
        raise CompressionError(f"LLM call failed: {type(exc).__name__}: {exc}") from exc
    return _response_text(result)


def _response_text(result: object) -> str:
    if isinstance(result, str):
        return result
    content = getattr(result, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # LangChain content blocks
        return message_text({"content": content})
    text = getattr(result, "text", None)
    if isinstance(text, str):
        return text
    message = getattr(result, "message", None)  # LlamaIndex ChatResponse
    if message is not None and message is not result:
        return _response_text(message)
    raise CompressionError(f"LLM returned {type(result).__name__} without text")


def _json_objects(text: str) -> Iterator[object]:
    stripped = text.strip()
    for block in (stripped, *(m.group(1).strip() for m in _FENCE_RE.finditer(text))):
        with contextlib.suppress(ValueError):
            yield json.loads(block)
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch == "{"][:_MAX_JSON_STARTS]
    for start in starts:
        try:
            yield decoder.raw_decode(text, start)[0]
        except ValueError:
            continue


def _abstract_from(overview: str) -> str:
    for line in overview.splitlines():
        line = _MARKER_RE.sub("", line.strip())
        if line and not line.startswith("#") and line.casefold() not in {"none", "none."}:
            return one_line(line)[:ABSTRACT_MAX_CHARS].rstrip()
    return one_line(overview)[:ABSTRACT_MAX_CHARS].rstrip()


def parse_llm_output(text: str) -> tuple[str, str]:
    """Extract ``(overview, abstract)`` from raw JSON, fenced JSON or JSON surrounded by prose.

    Raises:
        CompressionError: Empty output, no JSON object with an ``overview``, or an empty overview.
    """
    if not text.strip():
        raise CompressionError("LLM returned empty output")
    found = next((o for o in _json_objects(text) if isinstance(o, dict) and "overview" in o), None)
    if found is None:
        raise CompressionError("LLM output has no JSON object with an 'overview'")
    overview = found["overview"]
    if not isinstance(overview, str) or not overview.strip():
        raise CompressionError("LLM returned an empty or non-text overview")
    overview = overview.strip()
    abstract = found.get("abstract")
    line = one_line(abstract) if isinstance(abstract, str) else ""
    return overview, (line[:ABSTRACT_MAX_CHARS].rstrip() if line else _abstract_from(overview))


def _split_text(text: str, budget: int, counter: TokenCounter) -> list[str]:
    """Cut ``text`` into pieces of at most ``budget`` tokens, at spaces when possible."""
    pieces = []
    while text:
        if counter.count(text) <= budget:
            pieces.append(text)
            break
        cut = word_prefix(text, budget, counter, at_least=1)
        pieces.append(cut)
        text = text[len(cut) :].lstrip()
    return pieces


class LLMCompressor(BatchCompressor):
    """Compress with an LLM; fall back to a deterministic compressor on any failure.

    Long inputs are compressed chunk by chunk, each chunk's result becoming the previous overview
    of the next, so no prompt exceeds ``max_input_tokens``. Run through
    :func:`~ogmem_memory.compress.run_compression` (as the manager does) or
    :meth:`compress_detailed`, the whole LLM path gets the checks of every compressor: one
    timeout for all its calls, validated output, a WARNING on ``ogmem.compress`` on fallback.

    Attributes:
        last_outcome: Outcome of the latest :meth:`compress` call (not thread-safe; concurrent
            callers should use :meth:`compress_detailed`).
    """

    def __init__(
        self,
        llm: object,
        *,
        fallback: Compressor | None = None,
        max_input_tokens: int = 6000,
        max_overview_tokens: int = 800,
        token_counter: TokenCounter | Callable[[str], object] | None = None,
    ) -> None:
        if not (_has_method(llm, "invoke") or _has_method(llm, "complete") or callable(llm)):
            raise ConfigError(
                f"llm must have invoke() or complete() or be callable, got {type(llm).__name__}"
            )
        if max_overview_tokens < 50:
            raise ConfigError(f"max_overview_tokens must be at least 50, got {max_overview_tokens}")
        self.llm = llm
        self.max_input_tokens = max_input_tokens
        self.max_overview_tokens = max_overview_tokens
        self._counter = as_token_counter(token_counter)
        overhead = self._counter.count(self._prompt("", "x" * ABSTRACT_MAX_CHARS, ""))
        needed = overhead + max_overview_tokens + _MIN_CONVERSATION_TOKENS + _SAFETY_TOKENS
        if max_input_tokens < needed:
            raise ConfigError(
                f"max_input_tokens={max_input_tokens} leaves no room for the conversation; "
                f"use at least {needed} or lower max_overview_tokens"
            )
        self.fallback: Compressor = fallback or ExtractiveCompressor(
            max_overview_tokens=max_overview_tokens, token_counter=self._counter
        )
        self.last_outcome: CompressionOutcome | None = None

    def compress(
        self,
        messages: Sequence[Mapping[str, Any]],
        prev_overview: str = "",
        prev_abstract: str = "",
    ) -> tuple[str, str]:
        """Return ``(overview, abstract)``, falling back on failure; see :attr:`last_outcome`."""
        outcome = self.compress_detailed(messages, prev_overview, prev_abstract)
        self.last_outcome = outcome
        return outcome.overview, outcome.abstract

    def compress_detailed(
        self,
        messages: Sequence[Mapping[str, Any]],
        prev_overview: str = "",
        prev_abstract: str = "",
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> CompressionOutcome:
        """Compress and report which compressor produced the result and why a fallback ran.

        The same as ``run_compression(self, self.fallback, ...)``: the model's reply is validated,
        ``timeout`` (seconds, ``None``/``0`` for none) bounds all the chunk calls together, and a
        fallback is logged as a WARNING on ``ogmem.compress`` naming ``session_id``.

        Raises:
            CompressionError: The fallback failed too.
        """
        return run_compression(
            self,
            self.fallback,
            messages,
            prev_overview,
            prev_abstract,
            timeout=timeout,
            session_id=session_id,
        )

    # The LLM path alone, without fallback (raises CompressionError: the model failed, or
    # returned empty or malformed output); compress above is what falls back.
    compress_strict = BatchCompressor.compress

    def compress_batch(self, messages: Batch, prev_overview: str, prev_abstract: str) -> tuple[str, str]:
        """Compress ``messages`` with the model, chunk by chunk, without fallback.

        Raises:
            CompressionError: The model failed, or returned empty or malformed output.
        """
        lines = deque(
            f"{message_role(m) or 'unknown'}: {text}" for m in messages if (text := message_text(m)).strip()
        )
        if not lines:
            raise CompressionError("no message has text to compress")
        overview = self._bound(prev_overview) if prev_overview.strip() else ""
        abstract = one_line(prev_abstract)[:ABSTRACT_MAX_CHARS]
        while lines:
            prompt = self._next_prompt(lines, overview, abstract)
            overview, abstract = parse_llm_output(call_llm(self.llm, prompt))
            overview = self._bound(overview)
        return overview, abstract

    def _next_prompt(self, lines: deque[str], overview: str, abstract: str) -> str:
        """Take as many lines as fit the input budget off ``lines`` and build the prompt."""
        budget = (
            self.max_input_tokens - self._counter.count(self._prompt(overview, abstract, "")) - _SAFETY_TOKENS
        )
        chunk: list[str] = []
        used = 0
        while lines:
            size = self._counter.count(lines[0]) + 1
            if used + size <= budget:
                chunk.append(lines.popleft())
                used += size
            elif chunk:
                break
            else:  # one message bigger than the whole budget: split it at word boundaries
                pieces = _split_text(lines.popleft(), budget - 1, self._counter)
                lines.extendleft(reversed(pieces))
        prompt = self._prompt(overview, abstract, "\n".join(chunk))
        while self._counter.count(prompt) > self.max_input_tokens and len(chunk) > 1:
            lines.appendleft(chunk.pop())  # a non-additive tokenizer can overshoot the estimate
            prompt = self._prompt(overview, abstract, "\n".join(chunk))
        return prompt

    def _prompt(self, overview: str, abstract: str, conversation: str) -> str:
        previous = _PREVIOUS.format(abstract=abstract, overview=overview) if overview or abstract else ""
        return _PROMPT.format(previous=previous, conversation=conversation)

    def _bound(self, overview: str) -> str:
        if self._counter.count(overview) <= self.max_overview_tokens:
            return overview
        sections = parse_sections(overview)
        if sections is None:
            return truncate_to_tokens(overview, self.max_overview_tokens, self._counter)
        text, _ = bound_sections(sections, self.max_overview_tokens, self._counter, order=list(sections))
        return text
