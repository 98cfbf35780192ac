"""Section helpers every compressor shares: parse, fuse, render and bound a sectioned overview.

An overview is Markdown made of ``## Heading`` blocks of ``- bullet`` lines. Fusing two overviews
and bounding one are pure functions here, so the extractive compressor, the LLM compressor and the
archive merger treat sections the same way.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import operator
import re
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Final

from ogmem_memory.gil import gil_pause
from ogmem_memory.tokens import EstimatingTokenCounter, TokenCounter, truncate_to_tokens

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
_PLACEHOLDERS: Final = frozenset({"none", "none.", "n/a"})
# ASCII bytes: letters and digits kept, anything else a space (bytes.translate is a table lookup)
_ASCII_NON_ALNUM: Final = bytes(c if c < 128 and chr(c).isalnum() else 32 for c in range(256))


def parse_sections(text: str) -> Sections | None:
    """Parse ``## Heading`` blocks into ``{heading: [bullet, ...]}``; ``None`` when not sectioned.

    Lines before the first heading are kept under the ``""`` key; ``- None`` placeholders are dropped.
    """
    parsed = _parsed_pairs(text)
    return None if parsed is None else {heading: list(bullets) for heading, bullets in parsed}


_Parsed = tuple[tuple[str, tuple[str, ...]], ...] | None
# The last overviews parsed (or remembered by the compressor that rendered them): an archive's
# overview is read as the next fusion's previous overview and again when the merger folds it.
_PARSED_KEPT: Final = 64
_parsed: OrderedDict[str, _Parsed] = OrderedDict()
_parsed_lock = threading.Lock()  # a leaf lock: held only to read or update _parsed


def _parsed_pairs(text: str) -> _Parsed:
    with _parsed_lock:
        if text in _parsed:
            _parsed.move_to_end(text)
            return _parsed[text]
    sections = _parse(text)
    pairs = None if sections is None else tuple((h, tuple(b)) for h, b in sections.items())
    _keep_parsed(text, pairs)
    return pairs


def remember_parse(text: str, sections: Mapping[str, Sequence[str]]) -> None:
    """Record ``sections`` as what :func:`parse_sections` returns for ``text``, unparsed.

    For a writer that rendered ``text`` from ``sections`` and has checked that parsing it gives
    exactly them back (``ExtractiveCompressor`` does, bullet by bullet): the next fusion then
    reads its previous overview without parsing it.
    """
    _keep_parsed(text, tuple((h, tuple(b)) for h, b in sections.items()))


def _keep_parsed(text: str, pairs: _Parsed) -> None:
    with _parsed_lock:
        _parsed[text] = pairs
        _parsed.move_to_end(text)
        while len(_parsed) > _PARSED_KEPT:
            _parsed.popitem(last=False)


def parse_cache_clear() -> None:
    """Forget every remembered parse (for tests that compare with a cold start)."""
    with _parsed_lock:
        _parsed.clear()


def _parse(text: str) -> Sections | None:
    # One pass; the patterns run only where a plain prefix test cannot decide: a heading starts
    # with "##" (the pattern needs two #s first), and a "- " line loses exactly its "- " to the
    # bullet pattern (the line is stripped, so "\s+" takes the space and strip() the rest).
    sections: Sections = {}
    current = ""
    sectioned = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("##"):
            heading = _HEADING_RE.match(line)
            if heading:
                sectioned = True
                current = heading.group(1).strip()
                sections.setdefault(current, [])
                continue
        item = line[2:].strip() if line.startswith("- ") else _BULLET_RE.sub("", line, count=1).strip()
        # casefold() never shortens a text: only an item of at most 5 characters can be a placeholder
        if item and (len(item) > 5 or item.casefold() not in _PLACEHOLDERS):
            sections.setdefault(current, []).append(item)
    return sections if sectioned else None


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


@functools.lru_cache(maxsize=1024)
def _length_bounds(n: int) -> tuple[int, int, int]:
    """For a key of length ``n``: the least and the greatest length of a key in its window, and
    the greatest length ``m`` with ``0.8 * m <= n`` (a longer key it may be contained in)."""
    most = math.floor(n / 0.8)
    # 0.8 * m grows with m (float products included): step to the last m the bound admits
    while 0.8 * (most + 1) <= n:
        most += 1
    while most > 0 and 0.8 * most > n:
        most -= 1
    return math.ceil(0.8 * n), math.floor(n / 0.8), most


class _KeyIndex:
    """Keys seen so far, indexed by length: a near duplicate is within 0.8x-1.25x of the length.

    The keys are kept sorted by (length, key) with their lengths in a parallel list, so that a
    window of lengths is a pair of bisections on plain ints. Keys indexed unchecked are only
    appended, and sorted in once a checked key needs the order (a fusion indexes a whole
    previous overview that way and checks only the new bullets).
    """

    def __init__(self) -> None:
        self._exact: set[str] = set()
        self._sorted: list[str] = []
        self._lengths: list[int] = []
        self._pending: list[str] = []

    @property
    def _keys(self) -> list[str]:
        """The indexed keys in (length, key) order."""
        self._settle()
        return self._sorted

    @property
    def _by_length(self) -> list[tuple[int, str]]:
        """The indexed keys as (length, key) pairs, in that order."""
        return [(len(k), k) for k in self._keys]

    def _settle(self) -> None:
        if self._pending:
            keys = self._sorted + self._pending
            keys.sort()
            keys.sort(key=len)  # stable: by length, and by key within a length
            self._sorted = keys
            self._lengths = list(map(len, keys))
            self._pending = []

    def add_if_new(self, key: str) -> bool:
        """Index ``key`` unless it is empty, known, or a near duplicate of a key near in length."""
        if not key or key in self._exact:
            return False
        if self._pending:
            self._settle()
        n = len(key)
        least, greatest, fitting = _length_bounds(n)
        lengths = self._lengths
        lo = bisect_left(lengths, least)
        hi = bisect_right(lengths, greatest, lo)
        # where the keys of length n start: within [lo, hi] as least <= n <= greatest
        start = bisect_left(lengths, n, lo, hi)
        if lo < hi:
            keys = self._sorted
            # The window's upper end was the (length, key) pair (greatest, "\uffff"): a key of
            # the greatest length above "\uffff" (an astral first character) stays out of it.
            top = hi
            if lengths[top - 1] == greatest and keys[top - 1] > "\uffff":
                top = bisect_right(keys, "\uffff", bisect_left(lengths, greatest, lo, top), top)
            # Keys nearest in length first, at most _NEAR_CANDIDATES of them: bounds the cost of
            # a long overview while still catching a bullet re-stated with a few words changed.
            low = lo
            if top - low > _NEAR_CANDIDATES:
                low += max(0, min(start - low - _NEAR_CANDIDATES // 2, top - low - _NEAR_CANDIDATES))
                top = low + _NEAR_CANDIDATES
            # is_near_duplicate(key, window) inlined: an equal length is an exact match (the set
            # above); a shorter key is >= ceil(0.8 * n) long, a longer one has its bound checked.
            split = min(max(start, low), top)
            if split > low and any(map(key.__contains__, keys[low:split])):
                return False
            longer = bisect_right(lengths, n, split, top)
            # n >= 0.8 * m holds for a prefix of these (m grows); a key without NUL is in one of
            # them exactly when it is in their NUL-joined text (a match cannot span a NUL)
            fits = bisect_right(lengths, fitting, longer, top)
            if longer < fits and (
                key in "\x00".join(keys[longer:fits])
                if "\x00" not in key
                else any(map(operator.contains, keys[longer:fits], itertools.repeat(key)))
            ):
                return False
        self._exact.add(key)
        at = bisect_right(self._sorted, key, start, bisect_right(lengths, n, start, hi))
        self._sorted.insert(at, key)
        lengths.insert(at, n)
        return True

    def add_unchecked(self, key: str) -> bool:
        """Index ``key`` without the near-duplicate check; False only for an exact repeat."""
        if not key or key in self._exact:
            return False
        self._exact.add(key)
        self._pending.append(key)
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
            if distinct_first and position == 0:
                # add_unchecked inlined: a previous overview is most of a fusion's bullets
                exact = seen._exact
                pending = seen._pending
                for bullet, key in zip(bullets, map(bullet_key, bullets), strict=True):
                    if key and key not in exact:
                        exact.add(key)
                        pending.append(key)
                        target.append(bullet)
                gil_pause()
                continue
            add = seen.add_if_new
            for bullet in bullets:
                if add(bullet_key(bullet)):
                    target.append(bullet)
                gil_pause()  # a commit's fusion and merge run this over whole overviews
    return merged


def render_sections(sections: Sections, order: Sequence[str] = SECTIONS) -> str:
    """Render sections as Markdown: ``order`` first (always present), then any other heading."""
    by_fold = {h.casefold(): h for h in sections}
    headings = [by_fold.get(h.casefold(), h) for h in order]
    ordered = {o.casefold() for o in order}
    headings += [h for h in sections if h.casefold() not in ordered]
    blocks = []
    for heading in headings:
        bullets = sections.get(heading)
        # "- " before the first bullet and after every newline: "\n".join(f"- {b}" ...) in one join
        body = "- " + "\n- ".join(bullets) if bullets else "- None"
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
    # casefold() maps each character on its own to one or more: whether the folded bullet starts
    # with "user:" is decided by its first five characters
    user = [i for i in candidates if bullets[i][:5].casefold().startswith("user:")]
    anchored = (user or list(candidates))[:keep_first]
    protected = set(anchored) | set(user)
    return [i for i in candidates if i not in protected] + [i for i in user if i not in anchored] + anchored


def _rendered_times(sections: Sections, order: Sequence[str]) -> dict[str, int]:
    """How many times :func:`render_sections` writes each heading's bullets (0 when it leaves them out)."""
    by_fold = {h.casefold(): h for h in sections}
    ordered = {o.casefold() for o in order}
    headings = [by_fold.get(h.casefold(), h) for h in order] + [
        h for h in sections if h.casefold() not in ordered
    ]
    return {h: headings.count(h) for h in sections}


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
    count = counter.count
    sizes = {h: [count(f"- {b}\n") for b in bullets] for h, bullets in work.items()}
    position = {h: i for i, h in enumerate(work)}
    skeleton = render_sections({h: [] for h in work}, order)
    frame = count(skeleton.replace("\n- None", ""))
    queue = {h: deque(_drop_order(bullets, keep_first)) for h, bullets in work.items()}
    removed: dict[str, set[int]] = {h: set() for h in work}
    totals = {h: sum(v) for h, v in sizes.items()}
    weight = {h: SECTION_WEIGHTS.get(h.casefold(), 1.0) for h in work}

    # The next victim is the section with bullets to give up that has the greatest (share of its
    # weight, -position): a heap of exactly those, one entry each, as only the victim's changes.
    heap = [(-(totals[h] / weight[h]), position[h], h) for h in work if queue[h]]
    heapq.heapify(heap)

    def drop_one() -> tuple[str, int] | None:
        """Drop the next bullet: its heading and index; None when no section can give one up."""
        if not heap:
            return None
        victim = heap[0][2]
        left = queue[victim]
        index = left.popleft()
        removed[victim].add(index)
        totals[victim] -= sizes[victim][index]
        if left:
            heapq.heapreplace(heap, (-(totals[victim] / weight[victim]), position[victim], victim))
        else:
            heapq.heappop(heap)
        return victim, index

    def render() -> str:
        kept = {h: [b for i, b in enumerate(bullets) if i not in removed[h]] for h, bullets in work.items()}
        return render_sections(kept, order)

    # Summed per-bullet counts overestimate the whole by about a token a bullet (rounding), so
    # while even the sum minus that slack is over budget, drop without rendering: this keeps
    # bounding a long overview linear instead of quadratic.
    dropped = 0
    slack_total = frame + sum(totals.values()) - sum(map(len, work.values()))
    while slack_total > max_tokens and (gone := drop_one()):
        gil_pause()
        dropped += 1
        # the dropped bullet's tokens, and the one token of slack it no longer brings
        slack_total -= sizes[gone[0]][gone[1]] - 1
    text = render()
    if type(counter) is EstimatingTokenCounter and text.isascii():
        # The estimator counts ASCII text as ceil(len / 4) (tokens.estimate_tokens): each drop
        # shortens the rendered text by its "- bullet\n" line wherever the heading is rendered
        # (a section never loses its newest bullet, so no body becomes "- None"), so the length
        # is tracked and the text rendered once at the end.
        times = _rendered_times(work, order)
        length = len(text)
        before = dropped
        while math.ceil(length * 0.25) > max_tokens and (gone := drop_one()):
            gil_pause()
            dropped += 1
            length -= times[gone[0]] * (len(work[gone[0]][gone[1]]) + 3)
        if dropped != before:
            text = render()
    else:
        while count(text) > max_tokens and drop_one():
            gil_pause()
            dropped += 1
            text = render()
    if count(text) > max_tokens:
        text = truncate_to_tokens(text, max_tokens, counter)
    return text, dropped
