"""Deterministic extraction without an LLM: :class:`RuleBasedExtractor` and :func:`tool_memories`.

The extractor splits user messages into sentences and clauses, lets the matchers of
:mod:`ogmem_memory.extract_match` recognise statements, and rewrites each one with
:mod:`ogmem_memory.extract_rewrite`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from ogmem_memory.compress.base import message_role, message_text
from ogmem_memory.errors import InvalidInputError
from ogmem_memory.extract_match import MATCHERS, may_state
from ogmem_memory.extract_records import MemoryCandidate
from ogmem_memory.extract_rewrite import as_user_statement, finish_statement, third_person
from ogmem_memory.extract_text import TOKEN_RE, message_id, message_time, word_set
from ogmem_memory.gil import gil_pause
from ogmem_memory.usage import UsageTracker

_FENCE_RE: Final = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
# The splitting and gating patterns start with a lookahead on the first characters their matches
# can have: the scan skips every other position, and the matches are the same.
_SENTENCE_RE: Final = re.compile(r"(?=\s)(?:(?<=[.!?])\s+|\n+)")
_CLAUSE_RE: Final = re.compile(
    r"(?=[\s;,])(?:\s*;\s*|,?\s+(?:and|but|so|because|though|although|while|plus)\s+(?=(?:i|i'm|i've|im|my|we|let's)\b)"
    r"|,\s+(?=(?:i|i'm|i've|my|let's)\b))",
    re.IGNORECASE,
)
_QUESTION_START_RE: Final = re.compile(
    r"^(?:what|where|who|whom|whose|when|why|how|which|do|does|did|can|could|would|will|shall|should|"
    r"is|are|am|was|were|have|has|may|might)\b",
    re.IGNORECASE,
)
# A statement inside these is not asserted ("if I lived in Paris", "she said I ...").
_UNASSERTED: Final = word_set(
    "if wish would imagine suppose supposing pretend unless whether hypothetically said says asked "
    "asks told tells whenever when"
)
_HEDGES_RE: Final = re.compile(
    r"(?=[mpin])\b(?:maybe|probably|perhaps|might|i\s+think|i\s+guess|not\s+sure|i\s+suppose)\b",
    re.IGNORECASE,
)
_CONFIRM_RE: Final = re.compile(
    r"^(?:yes|yeah|yep|yup|correct|exactly|right|that's\s+right|that\s+is\s+right|true|indeed|absolutely|"
    r"sure|ok|okay|sounds\s+good|deal|agreed|perfect|great|let's\s+do\s+(?:it|that)|do\s+it|"
    r"go\s+for\s+it|definitely|of\s+course)\b",
    re.IGNORECASE,
)
_MAX_SENTENCE_CHARS: Final = 400
_SPEAKER_RE: Final = re.compile(r"(?=[imlwp])\b(?:i|im|my|me|let|we|plan)\b", re.IGNORECASE)
_BARE_POSSESSIVE_RE: Final = re.compile(r"^\s*my\s+[\w-]+(?:\s+[\w-]+)?\s*$", re.IGNORECASE)


def _is_question(sentence: str) -> bool:
    return sentence.rstrip(" \"')]").endswith("?") or bool(_QUESTION_START_RE.match(sentence))


def _clauses(sentence: str) -> list[str]:
    out: list[str] = []
    for clause in _CLAUSE_RE.split(sentence):
        if not clause or not clause.strip():
            continue
        if out and _BARE_POSSESSIVE_RE.match(out[-1]):
            out[-1] = f"{out[-1]} and {clause}"  # "my wife and I went ...": one subject, not two clauses
        else:
            out.append(clause)
    return out


_COMPOUND_SUBJECT_RE: Final = re.compile(r"(?:^|\s)my\s+[\w-]+(?:\s+[\w-]+)?\s+and\s+$", re.IGNORECASE)


def _statements(
    text: str, sources: tuple[str, ...], when: datetime | None, *, scale: float = 1.0
) -> list[MemoryCandidate]:
    text = _prepared(text)
    return _scan(text, sources, when, scale) if may_state(text) else []


def _prepared(text: str) -> str:
    """The text the clauses are cut from: typographic apostrophes plain, code fences blanked."""
    return _FENCE_RE.sub(" ", text.replace("\u2019", "'").replace("\u2018", "'"))


def _scan(text: str, sources: tuple[str, ...], when: datetime | None, scale: float) -> list[MemoryCandidate]:
    out: list[MemoryCandidate] = []
    for sentence in _SENTENCE_RE.split(text):
        sentence = sentence.strip()
        if not sentence or len(sentence) > _MAX_SENTENCE_CHARS or _is_question(sentence):
            continue
        carry = ""  # clauses without a statement still date or qualify the next one
        for clause in _clauses(sentence):
            # Every statement pattern needs one of these words: a cheap gate before ~40 searches.
            gated = _SPEAKER_RE.search(clause) is not None
            hit = (
                next((h for matcher in MATCHERS if (h := matcher(clause)) is not None), None)
                if gated
                else None
            )
            if hit is None:
                carry = f"{carry} {clause}"
                continue
            start = hit.start
            if hit.content is None and _COMPOUND_SUBJECT_RE.search(clause[:start]):
                start = clause.casefold().rfind("my ", 0, start)  # "my wife and I went ..."
            prefix = f"{carry} {clause[:start]}"
            carry = ""
            if set(TOKEN_RE.findall(prefix.casefold())) & _UNASSERTED:
                continue
            confidence = hit.confidence - (0.25 if _HEDGES_RE.search(clause) else 0.0)
            body = hit.content if hit.content is not None else third_person(clause[start:])
            content = finish_statement(body, prefix=prefix, when=when)
            if content:
                out.append(
                    MemoryCandidate(hit.category, hit.key, content, round(confidence * scale, 4), sources)
                )
    return out


class RuleBasedExtractor:
    """Deterministic extraction without an LLM: what the user says (or confirms) about themselves.

    Reads user messages sentence by sentence (questions skipped) and matches statements about
    the user's name, age, birthday, origin, location, work, studies, diet, languages, the people
    and pets in their life, their likes and dislikes, decisions and dated events. A short "yes"
    to the assistant's question or proposal ("So you live in Lisbon?", "Let's go with X?")
    extracts that question's fact at a lower confidence. Content is a third-person sentence
    ("User moved to Porto on 12 March 2023.") keeping names, numbers and dates verbatim; a
    relative date is anchored to the message's day. Cost: linear in the text.

    ``session_summary`` is not needed: repeated facts merge in :func:`plan_writes`.
    """

    confirmation_scale: float = 0.8

    def extract(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> list[MemoryCandidate]:
        """Return the candidates found in ``messages`` (dicts with role/content/id/created_at)."""
        out: list[MemoryCandidate] = []
        previous_assistant: Mapping[str, Any] | None = None
        for message in messages:
            if not isinstance(message, Mapping):
                raise InvalidInputError(f"messages must be mappings, got {type(message).__name__}")
            role = message_role(message)
            if role == "assistant":
                previous_assistant = message
                continue
            if role != "user":
                continue
            text = message_text(message)
            mid = message_id(message)
            sources = (mid,) if mid else ()
            if previous_assistant is not None and _CONFIRM_RE.match(text.strip()):
                out.extend(self._confirmed(previous_assistant, sources, message_time(message)))
            text = _prepared(text)
            if may_state(text):  # most messages state nothing: their time is not even parsed
                out.extend(_scan(text, sources, message_time(message), 1.0))
                gil_pause()  # a commit's work: hand the GIL to a waiting foreground call
            previous_assistant = None
        return out

    def _confirmed(
        self, assistant: Mapping[str, Any], sources: tuple[str, ...], when: datetime | None
    ) -> list[MemoryCandidate]:
        text = _FENCE_RE.sub(" ", message_text(assistant).replace("\u2019", "'"))
        aid = message_id(assistant)
        ids = ((aid,) if aid else ()) + sources
        for sentence in reversed(_SENTENCE_RE.split(text)):
            sentence = sentence.strip()
            if not sentence or len(sentence) > _MAX_SENTENCE_CHARS:
                continue
            found = _statements(as_user_statement(sentence), ids, when, scale=self.confirmation_scale)
            if found:
                return found  # the user said yes to the last thing asked or proposed
        return []


def tool_memories(
    usage: UsageTracker | Mapping[str, Mapping[str, object]], *, min_calls: int = 1
) -> list[MemoryCandidate]:
    """One ``tools`` candidate per tool with at least ``min_calls`` calls (key ``tool:<name>``).

    Args:
        usage: A session's tracker, or stats in its ``tool_stats`` shape (e.g. persisted JSON).
        min_calls: Tools called fewer times say too little to remember.
    """
    stats = usage.tool_stats if isinstance(usage, UsageTracker) else usage
    out = []
    for name in sorted(stats):
        s = stats[name]
        calls, ok, fail = (_count(s.get(k)) for k in ("call_count", "success_count", "fail_count"))
        if not name.strip() or calls < max(1, min_calls):
            continue
        text = f"Tool '{name.strip()}' succeeded in {ok} of {calls} calls ({ok / calls:.0%}, {fail} failed)"
        duration = s.get("total_duration_ms")
        if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
            text += f", {duration / calls:.0f} ms per call on average"
        out.append(MemoryCandidate("tools", f"tool:{name.strip()}", text + ".", 0.9))
    return out


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


_TOOL_CONTENT_RE: Final = re.compile(
    r"^Tool '.+' succeeded in (\d+) of (\d+) calls \(\d+%, (\d+) failed\)"
    r"(?:, (\d+) ms per call on average)?\.$"
)


def tool_stats_of(content: str) -> dict[str, int | float] | None:
    """The counters a :func:`tool_memories` content states (``None`` for any other text).

    The duration comes back as its stated average times the calls (whole milliseconds).
    """
    match = _TOOL_CONTENT_RE.match(content)
    if match is None:
        return None
    ok, calls, fail = int(match.group(1)), int(match.group(2)), int(match.group(3))
    average = int(match.group(4)) if match.group(4) else 0
    return {
        "call_count": calls,
        "success_count": ok,
        "fail_count": fail,
        "total_duration_ms": average * calls,
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _payload_views(payload: object) -> list[Mapping[str, Any]]:
    """Where a serialised message keeps its fields: itself, LangChain's ``data``, the kwargs."""
    top = _mapping(payload)
    data = _mapping(top.get("data"))
    views = [top, data]
    for view in (top, data):
        views.append(_mapping(view.get("additional_kwargs")))
    return views


def _first_str(views: Sequence[Mapping[str, Any]], *names: str) -> str:
    for view in views:
        for name in names:
            value = view.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return ""


def _call_names(views: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Tool call id -> tool name of an assistant message (LangChain's and OpenAI's shapes)."""
    names: dict[str, str] = {}
    for view in views:
        calls = view.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            call = _mapping(call)
            name = call.get("name") or _mapping(call.get("function")).get("name")
            if isinstance(call.get("id"), str) and isinstance(name, str) and name.strip():
                names[call["id"]] = name.strip()
    return names


_MAX_TOOL_NAME_CHARS: Final = 100


def tool_usage(messages: Sequence[Mapping[str, Any]]) -> UsageTracker:
    """The tool calls of a span of messages, counted in a :class:`UsageTracker`.

    Each ``tool`` message is one call: its tool is the message's ``name`` (or that of the
    assistant's tool call it answers, by ``tool_call_id``), read from the stored ``payload`` in
    LangChain's, LlamaIndex's or a plain dict's shape; ``status`` ``error`` (or ``is_error``)
    makes it a failure, and a numeric ``duration_ms`` is added up. Messages are mappings with
    ``role`` and ``payload``.
    """
    tracker = UsageTracker()
    called: dict[str, str] = {}
    for message in messages:
        role = message_role(message)
        payload = message.get("payload")
        if role not in ("assistant", "tool") or (role == "assistant" and not payload):
            continue
        views = _payload_views(payload)
        if role == "assistant":
            called.update(_call_names(views))
            continue
        name = _first_str(views, "name", "tool_name") or called.get(_first_str(views, "tool_call_id"), "")
        if not name or len(name) > _MAX_TOOL_NAME_CHARS:
            continue  # a longer "name" is no tool's name, and its memory could not be stored
        failed = _first_str(views, "status").casefold() == "error" or any(
            v.get("is_error") is True for v in views
        )
        duration = next(
            (
                float(d)
                for v in views
                if isinstance(d := v.get("duration_ms"), int | float)
                and not isinstance(d, bool)
                and math.isfinite(d)
            ),
            0.0,
        )
        tracker.record_tool_call(name, "error" if failed else "success", duration_ms=duration)
    return tracker
