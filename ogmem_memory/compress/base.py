"""The compressor protocol, the fallback runner and the section helpers every compressor shares.

An overview is Markdown made of ``## Heading`` blocks of ``- bullet`` lines. Fusing two overviews
and bounding one are pure functions here, so the extractive compressor, the LLM compressor and the
archive merger treat sections the same way.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ogmem_memory.errors import CompressionError
from ogmem_memory.tokens import TokenCounter, truncate_to_tokens

SECTIONS: Final[tuple[str, ...]] = ("Topics", "Facts", "Decisions", "Open loops")
ABSTRACT_MAX_CHARS: Final = 100
EMPTY_ABSTRACT: Final = "Empty session"

# Bigger weight = the section keeps a bigger share of the budget when bullets must go.
SECTION_WEIGHTS: Final[Mapping[str, float]] = {
    "facts": 6.0,
    "decisions": 3.0,
    "open loops": 2.0,
    "topics": 1.0,
}

Sections = dict[str, list[str]]


class Compressor(Protocol):
    """Turns a batch of messages (plus the previous archive) into ``(overview, abstract)``."""

    def compress(
        self,
        messages: Sequence[Mapping[str, Any]],
        prev_overview: str = "",
        prev_abstract: str = "",
    ) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class CompressionOutcome:
    """What a compression produced and how; the manager stores it in the archive metadata."""

    overview: str
    abstract: str
    compressor: str
    fallback_used: bool = False
    error: str | None = None


def compress_with_fallback(
    primary: Compressor,
    fallback: Compressor,
    messages: Sequence[Mapping[str, Any]],
    prev_overview: str = "",
    prev_abstract: str = "",
    *,
    primary_name: str | None = None,
) -> CompressionOutcome:
    """Run ``primary``; on an exception or an empty overview run ``fallback`` and record why.

    An empty overview is only a failure when there was something to compress: no messages and no
    previous overview legitimately give ``("", "Empty session")``.

    Args:
        primary: The preferred compressor (usually an LLM).
        fallback: The deterministic compressor used when ``primary`` fails.
        messages: Message dicts (``role``, ``content``, ...); malformed ones are tolerated.
        prev_overview: Overview of the previous archive, fused into the new one.
        prev_abstract: Abstract of the previous archive.
        primary_name: Name recorded in the outcome; defaults to the class name of ``primary``.

    Returns:
        The outcome, with ``fallback_used`` and ``error`` set when the fallback ran.

    Raises:
        CompressionError: The fallback failed too.
    """
    name = primary_name or type(primary).__name__
    has_input = bool(messages) or bool(prev_overview.strip())
    try:
        overview, abstract = primary.compress(messages, prev_overview, prev_abstract)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        if overview.strip() or not has_input:
            return CompressionOutcome(overview, abstract, name)
        error = f"{name} returned an empty overview"
    try:
        overview, abstract = fallback.compress(messages, prev_overview, prev_abstract)
    except Exception as exc:
        raise CompressionError(f"fallback compressor failed after: {error}") from exc
    return CompressionOutcome(overview, abstract, type(fallback).__name__, fallback_used=True, error=error)


def message_role(message: object) -> str:
    """Return the role of a message dict, ``""`` when missing or not a string."""
    role = message.get("role") if isinstance(message, Mapping) else None
    return role if isinstance(role, str) else ""


def message_text(message: object) -> str:
    """Return the text of a message dict (or bare string); content blocks are joined, else ``""``."""
    content = message.get("content") if isinstance(message, Mapping) else message
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return " ".join(parts)
    return ""


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) into single spaces."""
    return " ".join(text.split())


def fallback_abstract(messages: Sequence[Mapping[str, Any]], prev_abstract: str = "") -> str:
    """The seed's no-LLM abstract: one line of at most 100 characters."""
    texts = [(message_role(m), one_line(message_text(m))) for m in messages]
    first_user = next((t for r, t in texts if r == "user" and t), "")
    last_assistant = next((t for r, t in reversed(texts) if r == "assistant" and t), "")
    if first_user and last_assistant:
        new = f"{first_user[:50]}... → {last_assistant[:30]}"
    elif first_user:
        new = f"{first_user[:97]}..."
    else:
        new = f"Session with {len(messages)} messages"
    prev = one_line(prev_abstract)
    if prev:
        new = f"{prev[:45]} | {new[:52]}"
    return new[:ABSTRACT_MAX_CHARS].rstrip()


_HEADING_RE: Final = re.compile(r"^#{2,3}\s+(.+?)\s*#*\s*$")
_BULLET_RE: Final = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_KEY_STRIP_RE: Final = re.compile(r"[\s\W_]+")


def parse_sections(text: str) -> Sections | None:
    """Parse ``## Heading`` blocks into ``{heading: [bullet, ...]}``; ``None`` when not sectioned.

    Lines before the first heading are kept under the ``""`` key; ``- None`` placeholders are dropped.
    """
    lines = text.splitlines()
    if not any(_HEADING_RE.match(line.strip()) for line in lines):
        return None
    sections: Sections = {}
    current = ""
    for raw in lines:
        line = raw.strip()
        heading = _HEADING_RE.match(line)
        if heading:
            current = heading.group(1).strip()
            sections.setdefault(current, [])
            continue
        item = _BULLET_RE.sub("", line, count=1).strip()
        if item and item.casefold() not in {"none", "none.", "n/a"}:
            sections.setdefault(current, []).append(item)
    return sections


def bullet_key(text: str) -> str:
    """Comparison key for duplicate detection: case, spacing and punctuation ignored."""
    return _KEY_STRIP_RE.sub(" ", text.casefold()).strip()


def is_near_duplicate(key: str, keys: Sequence[str]) -> bool:
    """True when ``key`` equals an existing key or one contains the other almost entirely."""
    for other in keys:
        if key == other:
            return True
        short, long_ = (key, other) if len(key) <= len(other) else (other, key)
        if short and len(short) >= 0.8 * len(long_) and short in long_:
            return True
    return False


_NEAR_CANDIDATES: Final = 48


class _KeyIndex:
    """Keys seen so far, indexed by length: a near duplicate is within 0.8x-1.25x of the length."""

    def __init__(self) -> None:
        self._exact: set[str] = set()
        self._by_length: list[tuple[int, str]] = []

    def add_if_new(self, key: str) -> bool:
        if not key or key in self._exact:
            return False
        n = len(key)
        lo = bisect.bisect_left(self._by_length, (math.ceil(0.8 * n), ""))
        hi = bisect.bisect_right(self._by_length, (math.floor(n / 0.8), "\uffff"))
        # Keys nearest in length first, at most _NEAR_CANDIDATES of them: bounds the cost of a
        # long overview while still catching a bullet re-stated with a few words changed.
        window = self._by_length[lo:hi]
        if len(window) > _NEAR_CANDIDATES:
            middle = bisect.bisect_left(window, (n, ""))
            start = max(0, min(middle - _NEAR_CANDIDATES // 2, len(window) - _NEAR_CANDIDATES))
            window = window[start : start + _NEAR_CANDIDATES]
        if is_near_duplicate(key, [k for m, k in window if m != n]):
            return False
        self._exact.add(key)
        bisect.insort(self._by_length, (n, key))
        return True


def merge_sections(parts: Sequence[Sections]) -> Sections:
    """Union of sectioned overviews: headings in first-appearance order, bullets appended, duplicates dropped.

    Headings match case-insensitively; the first spelling wins.
    """
    merged: Sections = {}
    canonical: dict[str, str] = {}
    keys: dict[str, _KeyIndex] = {}
    for sections in parts:
        for heading, bullets in sections.items():
            name = canonical.setdefault(heading.casefold(), heading)
            target = merged.setdefault(name, [])
            seen = keys.setdefault(name, _KeyIndex())
            for bullet in bullets:
                if seen.add_if_new(bullet_key(bullet)):
                    target.append(bullet)
    return merged


def render_sections(sections: Sections, order: Sequence[str] = SECTIONS) -> str:
    """Render sections as Markdown: ``order`` first (always present), then any other heading."""
    by_fold = {h.casefold(): h for h in sections}
    headings = [by_fold.get(h.casefold(), h) for h in order]
    headings += [h for h in sections if h.casefold() not in {o.casefold() for o in order}]
    blocks = []
    for heading in headings:
        bullets = sections.get(heading) or []
        body = "\n".join(f"- {b}" for b in bullets) if bullets else "- None"
        blocks.append(f"## {heading or 'Notes'}\n{body}")
    return "\n\n".join(blocks)


def _drop_order(bullets: Sequence[str], keep_first: int) -> list[int]:
    """The order in which a full section gives up its bullets (never the newest one).

    First those not said by the user, oldest first; then user bullets after the first
    ``keep_first`` of them; the anchored opening ones last.
    """
    candidates = range(len(bullets) - 1)
    user = [i for i in candidates if bullets[i].casefold().startswith("user:")]
    anchored = (user or list(candidates))[:keep_first]
    protected = set(anchored) | set(user)
    return [i for i in candidates if i not in protected] + [i for i in user if i not in anchored] + anchored


def bound_sections(
    sections: Sections,
    max_tokens: int,
    counter: TokenCounter,
    order: Sequence[str] = SECTIONS,
    *,
    keep_first: int = 3,
) -> tuple[str, int]:
    """Render ``sections`` within ``max_tokens`` by dropping the oldest bullets first.

    The section that uses most of the budget relative to its weight (facts weigh most) loses a
    bullet next: the oldest of those not said by the user, then the oldest user bullet after the
    first ``keep_first`` ones. So what the user stated outlives assistant and tool echoes, and
    the opening facts of a conversation (who the user is, what they want) stay in the running
    summary however long it grows. Each section keeps at least its newest bullet. If that is still too long,
    the text is cut at a word as a last resort.

    Returns:
        The rendered overview and the number of bullets dropped.
    """
    work = {h: list(b) for h, b in sections.items()}
    sizes = {h: [counter.count(f"- {b}\n") for b in bullets] for h, bullets in work.items()}
    position = {h: i for i, h in enumerate(work)}
    skeleton = render_sections({h: [] for h in work}, order)
    frame = counter.count(skeleton.replace("\n- None", ""))
    queue = {h: deque(_drop_order(bullets, keep_first)) for h, bullets in work.items()}
    removed: dict[str, set[int]] = {h: set() for h in work}
    totals = {h: sum(v) for h, v in sizes.items()}
    weight = {h: SECTION_WEIGHTS.get(h.casefold(), 1.0) for h in work}

    def drop_one() -> bool:
        candidates = [h for h in work if queue[h]]
        if not candidates:
            return False
        victim = max(candidates, key=lambda h: (totals[h] / weight[h], -position[h]))
        index = queue[victim].popleft()
        removed[victim].add(index)
        totals[victim] -= sizes[victim][index]
        return True

    def render() -> str:
        kept = {h: [b for i, b in enumerate(bullets) if i not in removed[h]] for h, bullets in work.items()}
        return render_sections(kept, order)

    # Summed per-bullet counts overestimate the whole by about a token a bullet (rounding), so
    # while even the sum minus that slack is over budget, drop without rendering: this keeps
    # bounding a long overview linear instead of quadratic.
    dropped = 0
    bullets_left = sum(map(len, work.values()))
    while frame + sum(totals.values()) - (bullets_left - dropped) > max_tokens and drop_one():
        dropped += 1
    text = render()
    while counter.count(text) > max_tokens and drop_one():
        dropped += 1
        text = render()
    if counter.count(text) > max_tokens:
        text = truncate_to_tokens(text, max_tokens, counter)
    return text, dropped
