"""Section helpers every compressor shares: parse, fuse, render and bound a sectioned overview.

An overview is Markdown made of ``## Heading`` blocks of ``- bullet`` lines. Fusing two overviews
and bounding one are pure functions here, so the extractive compressor, the LLM compressor and the
archive merger treat sections the same way.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Final

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


_HEADING_RE: Final = re.compile(r"^#{2,3}\s+(.+?)\s*#*\s*$")
_BULLET_RE: Final = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_KEY_STRIP_RE: Final = re.compile(r"[\s\W_]+")
# ASCII bytes: letters and digits kept, anything else a space (bytes.translate is a table lookup)
_ASCII_NON_ALNUM: Final = bytes(c if c < 128 and chr(c).isalnum() else 32 for c in range(256))


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


@functools.lru_cache(maxsize=8192)
def bullet_key(text: str) -> str:
    """Comparison key for duplicate detection: case, spacing and punctuation ignored.

    Cached: a running overview's bullets are keyed again by every commit that fuses it. ASCII
    text takes a translate-and-split path that gives what the pattern gives (runs of anything
    but letters and digits become one space, none at the ends).
    """
    if text.isascii():
        return " ".join(text.lower().encode("ascii").translate(_ASCII_NON_ALNUM).decode("ascii").split())
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
        # sorted by (length, key); the keys alone in the same order, for C-level scans
        self._by_length: list[tuple[int, str]] = []
        self._keys: list[str] = []

    def add_if_new(self, key: str) -> bool:
        if not key or key in self._exact:
            return False
        n = len(key)
        by_length = self._by_length
        lo = bisect.bisect_left(by_length, (math.ceil(0.8 * n), ""))
        hi = bisect.bisect_right(by_length, (math.floor(n / 0.8), "\uffff"))
        # Keys nearest in length first, at most _NEAR_CANDIDATES of them: bounds the cost of a
        # long overview while still catching a bullet re-stated with a few words changed.
        if hi - lo > _NEAR_CANDIDATES:
            middle = bisect.bisect_left(by_length, (n, ""), lo, hi) - lo
            start = lo + max(0, min(middle - _NEAR_CANDIDATES // 2, hi - lo - _NEAR_CANDIDATES))
            lo, hi = start, start + _NEAR_CANDIDATES
        # is_near_duplicate(key, window) inlined: an equal length is an exact match (the set
        # above); a shorter key is >= ceil(0.8 * n) long, a longer one has its bound checked.
        if lo < hi:
            split = bisect.bisect_left(by_length, (n, ""), lo, hi)
            if split > lo and any(map(key.__contains__, self._keys[lo:split])):
                return False
            longer = bisect.bisect_right(by_length, (n, "\uffff"), split, hi)
            # n >= 0.8 * m holds for a prefix of these (m grows): contain-checked at C speed
            fits = bisect.bisect_right(by_length, float(n), longer, hi, key=lambda row: 0.8 * row[0])
            if any(map(operator.contains, self._keys[longer:fits], itertools.repeat(key))):
                return False
        return self._insert(n, key)

    def add_unchecked(self, key: str) -> bool:
        """Index ``key`` without the near-duplicate check; False only for an exact repeat."""
        if not key or key in self._exact:
            return False
        return self._insert(len(key), key)

    def _insert(self, n: int, key: str) -> bool:
        self._exact.add(key)
        at = bisect.bisect_right(self._by_length, (n, key))
        self._by_length.insert(at, (n, key))
        self._keys.insert(at, key)
        return True


def merge_sections(parts: Sequence[Sections], *, distinct_first: bool = False) -> Sections:
    """Union of sectioned overviews: headings in first-appearance order, bullets appended, duplicates dropped.

    Headings match case-insensitively; the first spelling wins. ``distinct_first`` says the first
    part has no near duplicates (a previous overview a fusion wrote): only exact repeats are then
    looked for among its bullets, the later parts' bullets being checked against it as usual.
    """
    merged: Sections = {}
    canonical: dict[str, str] = {}
    keys: dict[str, _KeyIndex] = {}
    for position, sections in enumerate(parts):
        for heading, bullets in sections.items():
            name = canonical.setdefault(heading.casefold(), heading)
            target = merged.setdefault(name, [])
            seen = keys.setdefault(name, _KeyIndex())
            add = seen.add_unchecked if distinct_first and position == 0 else seen.add_if_new
            for bullet in bullets:
                if add(bullet_key(bullet)):
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


def compact_overview(text: str) -> str:
    """``text`` without its empty sections (``- None`` placeholders); unsectioned text as it is.

    Where overviews are shown side by side (a digest of several sessions) the placeholders
    would spend budget on nothing.
    """
    sections = parse_sections(text)
    if sections is None:
        return text
    kept = {h: b for h, b in sections.items() if b}
    return render_sections(kept, tuple(h for h in SECTIONS if h in kept)) if kept else ""


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
