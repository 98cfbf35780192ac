"""The section helpers' fast paths give exactly what the code they replaced gave.

Parsing in one pass behind prefix tests (and cached), rendering bodies with one join, the
near-duplicate index on parallel int lengths with unchecked keys sorted in lazily, and bounding
with a heap of victims and a tracked length for the estimator: each must leave every overview
byte for byte as it was, so each is run against the previous implementation, kept here verbatim
as the reference, on adversarial input.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import re
from collections import deque
from collections.abc import Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from ogmem_memory.compress import sections
from ogmem_memory.compress.sections import (
    SECTION_WEIGHTS,
    SECTIONS,
    Sections,
    _KeyIndex,
    bound_sections,
    bullet_key,
    merge_sections,
    parse_sections,
    render_sections,
)
from ogmem_memory.tokens import (
    CallableTokenCounter,
    EstimatingTokenCounter,
    LegacyTokenCounter,
    TokenCounter,
    estimate_tokens,
    truncate_to_tokens,
)

# ---------------------------------------------------------------- the reference (the old code)

_HEADING_RE = re.compile(r"^#{2,3}\s+(.+?)\s*#*\s*$")
_BULLET_RE = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")


def ref_parse(text: str) -> Sections | None:
    lines = text.splitlines()
    if not any(_HEADING_RE.match(line.strip()) for line in lines):
        return None
    out: Sections = {}
    current = ""
    for raw in lines:
        line = raw.strip()
        heading = _HEADING_RE.match(line)
        if heading:
            current = heading.group(1).strip()
            out.setdefault(current, [])
            continue
        item = _BULLET_RE.sub("", line, count=1).strip()
        if item and item.casefold() not in {"none", "none.", "n/a"}:
            out.setdefault(current, []).append(item)
    return out


def ref_render(secs: Sections, order: Sequence[str] = SECTIONS) -> str:
    by_fold = {h.casefold(): h for h in secs}
    headings = [by_fold.get(h.casefold(), h) for h in order]
    headings += [h for h in secs if h.casefold() not in {o.casefold() for o in order}]
    blocks = []
    for heading in headings:
        bullets = secs.get(heading) or []
        body = "\n".join(f"- {b}" for b in bullets) if bullets else "- None"
        blocks.append(f"## {heading or 'Notes'}\n{body}")
    return "\n\n".join(blocks)


class RefKeyIndex:
    def __init__(self) -> None:
        self._exact: set[str] = set()
        self._by_length: list[tuple[int, str]] = []
        self._keys: list[str] = []

    def add_if_new(self, key: str) -> bool:
        if not key or key in self._exact:
            return False
        n = len(key)
        by_length = self._by_length
        lo = bisect.bisect_left(by_length, (math.ceil(0.8 * n), ""))
        hi = bisect.bisect_right(by_length, (math.floor(n / 0.8), "\uffff"))
        if hi - lo > 48:
            middle = bisect.bisect_left(by_length, (n, ""), lo, hi) - lo
            start = lo + max(0, min(middle - 24, hi - lo - 48))
            lo, hi = start, start + 48
        if lo < hi:
            split = bisect.bisect_left(by_length, (n, ""), lo, hi)
            if split > lo and any(map(key.__contains__, self._keys[lo:split])):
                return False
            longer = bisect.bisect_right(by_length, (n, "\uffff"), split, hi)
            fits = bisect.bisect_right(by_length, float(n), longer, hi, key=lambda row: 0.8 * row[0])
            if any(map(operator.contains, self._keys[longer:fits], itertools.repeat(key))):
                return False
        return self._insert(n, key)

    def add_unchecked(self, key: str) -> bool:
        if not key or key in self._exact:
            return False
        return self._insert(len(key), key)

    def _insert(self, n: int, key: str) -> bool:
        self._exact.add(key)
        at = bisect.bisect_right(self._by_length, (n, key))
        self._by_length.insert(at, (n, key))
        self._keys.insert(at, key)
        return True


def ref_merge(parts: Sequence[Sections], *, distinct_first: bool = False) -> Sections:
    merged: Sections = {}
    canonical: dict[str, str] = {}
    keys: dict[str, RefKeyIndex] = {}
    for position, secs in enumerate(parts):
        for heading, bullets in secs.items():
            name = canonical.setdefault(heading.casefold(), heading)
            target = merged.setdefault(name, [])
            seen = keys.setdefault(name, RefKeyIndex())
            add = seen.add_unchecked if distinct_first and position == 0 else seen.add_if_new
            for bullet in bullets:
                if add(bullet_key(bullet)):
                    target.append(bullet)
    return merged


def ref_drop_order(bullets: Sequence[str], keep_first: int) -> list[int]:
    candidates = range(len(bullets) - 1)
    user = [i for i in candidates if bullets[i].casefold().startswith("user:")]
    anchored = (user or list(candidates))[:keep_first]
    protected = set(anchored) | set(user)
    return [i for i in candidates if i not in protected] + [i for i in user if i not in anchored] + anchored


def ref_bound(
    secs: Sections,
    max_tokens: int,
    counter: TokenCounter,
    order: Sequence[str] = SECTIONS,
    *,
    keep_first: int = 3,
) -> tuple[str, int]:
    work = {h: list(b) for h, b in secs.items()}
    sizes = {h: [counter.count(f"- {b}\n") for b in bullets] for h, bullets in work.items()}
    position = {h: i for i, h in enumerate(work)}
    skeleton = ref_render({h: [] for h in work}, order)
    frame = counter.count(skeleton.replace("\n- None", ""))
    queue = {h: deque(ref_drop_order(bullets, keep_first)) for h, bullets in work.items()}
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
        return ref_render(kept, order)

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


# ---------------------------------------------------------------- inputs

# words that contain one another, so near duplicates (a key inside a slightly longer one) occur
_WORDS = ["user", "User:", "a", "ab", "abc", "b", "lisbon", "Lisbon.", "x", "maria", "ß", "ǅ", "𠀀", "é", "I"]
_bullets = st.lists(st.sampled_from(_WORDS), min_size=0, max_size=9).map(" ".join)
_HEADINGS = ["Facts", "facts", "Topics", "Decisions", "Open loops", "OPEN LOOPS", "", "Notes", "Misc", "ǅx"]
_section_dicts = st.dictionaries(st.sampled_from(_HEADINGS), st.lists(_bullets, max_size=30), max_size=6)
_orders = st.one_of(
    st.just(SECTIONS), st.lists(st.sampled_from([*_HEADINGS, "Other"]), max_size=6).map(tuple)
)

_LINE_PIECES = [
    "## ", "### ", "#### ", "#", "##Facts", "Facts", "Topics", " ##", "- ", "-", "* ", "+ ", "• ", "1. ",
    "12) ", "3.", " ", "\t", "\u00a0", "\u2003", "None", "none.", "N/A", "NONE", "ǅ", "ß", "ﬁ", "\u0130",
    "x", "user: hi", "a b", "#x", "--", "- - y",
]  # fmt: skip
_line = st.lists(st.sampled_from(_LINE_PIECES), max_size=6).map("".join)
_SEPARATORS = ["\n", "\r\n", "\r", "\u2028", "\x1c", "\x0b", "\n\n"]
_texts = st.lists(st.tuples(_line, st.sampled_from(_SEPARATORS)), max_size=25).map(
    lambda rows: "".join(line + sep for line, sep in rows)
)

_COUNTERS: list[TokenCounter] = [
    EstimatingTokenCounter(),
    LegacyTokenCounter(),
    CallableTokenCounter(lambda text: len(text.split())),
    CallableTokenCounter(lambda text: text.count("a") * 3 - len(text) % 5),  # neither monotone nor additive
]


class _Subclassed(EstimatingTokenCounter):
    """A subclass may count otherwise: the estimator's length shortcut must not apply to it."""

    def count(self, text: str) -> int:
        return estimate_tokens(text) + text.count("\n")


_COUNTERS.append(_Subclassed())


# ---------------------------------------------------------------- the checks


@settings(max_examples=800, deadline=None)
@given(_texts)
def test_parse_matches_the_reference(text: str) -> None:
    assert parse_sections(text) == ref_parse(text)
    # a cached parse hands out fresh lists: changing one does not change the next
    first = parse_sections(text)
    if first:
        next(iter(first.values())).append("changed")
        assert parse_sections(text) == ref_parse(text)


@settings(max_examples=300, deadline=None)
@given(_section_dicts, _orders)
def test_render_matches_the_reference(secs: Sections, order: tuple[str, ...]) -> None:
    assert render_sections(secs, order) == ref_render(secs, order)
    assert render_sections(secs) == ref_render(secs)


@settings(max_examples=300, deadline=None)
@given(st.lists(_section_dicts, max_size=4), st.booleans())
def test_merge_matches_the_reference(parts: list[Sections], distinct_first: bool) -> None:
    assert merge_sections(parts, distinct_first=distinct_first) == ref_merge(
        parts, distinct_first=distinct_first
    )


# Short keys over two letters: many of nearly one length (windows overflow the 48 nearest
# candidates) and many inside one another; astral characters put keys above the old upper end
# ("\uffff") of a window.
_keys = st.one_of(
    st.text(alphabet="ab", min_size=3, max_size=9),
    st.text(alphabet="ab", min_size=2, max_size=8).map(lambda k: "𠀀" + k),
    st.lists(st.sampled_from(["ab", "abc", "b", "ca", "x", "𠀀", "\uffff", "a"]), max_size=6).map(" ".join),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_keys, st.booleans()), max_size=200))
def test_key_index_matches_the_reference(ops: list[tuple[str, bool]]) -> None:
    fast, ref = _KeyIndex(), RefKeyIndex()
    for key, checked in ops:
        if checked:
            assert fast.add_if_new(key) == ref.add_if_new(key), key
        else:
            assert fast.add_unchecked(key) == ref.add_unchecked(key), key
    assert fast._keys == ref._keys
    assert fast._by_length == ref._by_length


def test_a_key_inside_an_astral_key_at_the_window_top_is_new() -> None:
    """The old window ended at (greatest length, "\uffff"): a longer key starting above it was
    not compared, so a key inside it still counts as new."""
    for index in (_KeyIndex(), RefKeyIndex()):
        assert index.add_if_new("𠀀abcd")
        assert index.add_if_new("abcd")
        assert not index.add_if_new("abcde")  # holds "abcd", which is in its window


def test_a_full_window_compares_only_the_keys_nearest_in_length() -> None:
    """Over 48 keys near in length, only the 48 nearest are compared, exactly as before: a key
    inside the first shorter one, or inside the last longer one, is a duplicate or not
    depending on where the window falls, for every mix of neighbours of the two lengths."""
    fillers = {n: ["".join(p) for p in itertools.product("wxy", repeat=n)] for n in (5, 7)}
    for special in ("aaaaa", "zaaaaaa"):  # first of the shorter keys / last of the longer ones
        for shorter, longer in itertools.product(range(0, 64, 2), range(0, 64, 3)):
            fast, ref = _KeyIndex(), RefKeyIndex()
            for key in [*fillers[5][:shorter], *fillers[7][:longer], special]:
                fast.add_unchecked(key)
                ref.add_unchecked(key)
            assert fast.add_if_new("aaaaaa") == ref.add_if_new("aaaaaa"), (special, shorter, longer)
            assert fast._keys == ref._keys


_budgets = st.integers(min_value=-5, max_value=400)


@settings(max_examples=400, deadline=None)
@given(_section_dicts, _budgets, st.sampled_from(range(len(_COUNTERS))), _orders, st.integers(0, 4))
def test_bound_matches_the_reference(
    secs: Sections, budget: int, which: int, order: tuple[str, ...], keep_first: int
) -> None:
    counter = _COUNTERS[which]
    got = bound_sections(secs, budget, counter, order, keep_first=keep_first)
    assert got == ref_bound(secs, budget, counter, order, keep_first=keep_first)


_ascii_bullets = st.lists(
    st.sampled_from(["user: a", "User: b", "note", "x y z", "abc", "ok."]), max_size=8
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["Facts", "Topics", "Decisions", "Open loops", "Misc", ""]),
                    st.lists(_ascii_bullets, max_size=40), max_size=5),
    st.integers(min_value=1, max_value=300),
)  # fmt: skip
def test_bound_tracks_the_estimators_length_exactly(secs: Sections, budget: int) -> None:
    """ASCII text under the estimator: the length-tracking loop stops where rendering would."""
    counter = EstimatingTokenCounter()
    assert bound_sections(secs, budget, counter) == ref_bound(secs, budget, counter)
    assert bound_sections(secs, budget, counter, list(secs)) == ref_bound(secs, budget, counter, list(secs))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=300))
def test_the_estimator_counts_ascii_as_a_quarter_token_a_character(text: str) -> None:
    """What bound_sections' length tracking assumes of tokens.estimate_tokens."""
    assert estimate_tokens(text) == math.ceil(len(text) * 0.25)


def test_length_bounds_agree_with_the_float_tests() -> None:
    for n in range(1, 5000):
        least, greatest, fitting = sections._length_bounds(n)
        assert least == math.ceil(0.8 * n) and greatest == math.floor(n / 0.8)
        assert 0.8 * fitting <= n < 0.8 * (fitting + 1)


def _fuse(prev: str, new: Sections, fn: Callable[..., Sections]) -> Sections:
    parsed = parse_sections(prev) or {}
    return fn([parsed, new], distinct_first=True)


def test_a_fusion_of_a_parsed_overview_matches_the_reference() -> None:
    prev = render_sections(
        {"Topics": ["a", "b"], "Facts": [f"user: fact {i} about Lisbon" for i in range(60)]}
    )
    new: Sections = {
        "Facts": [f"user: fact {i} about Lisbon and more" for i in range(0, 80, 3)],
        "Topics": ["A"],
    }
    assert _fuse(prev, new, merge_sections) == _fuse(prev, new, ref_merge)
