"""The extractive compressor's fast paths find exactly what the plain patterns and whole-text scans find.

Each shortcut (the identifier pattern chosen per text, names and words composed from cached
sentences, keyword patterns behind a first-letter lookahead) must never change an overview, so
each is checked against the computation it replaces on adversarial text.
"""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ogmem_memory.compress import extractive_facts, extractive_text
from ogmem_memory.compress.extractive_text import (
    _BOUNDARY_RE,
    _IDENTIFIER_RE,
    _identifier_pattern,
    cached_sentences,
    find_names,
    joined_names,
    joined_words,
    proper_names,
)

# Pieces that exercise every identifier branch and every sentence boundary, plus characters that
# regular expressions treat specially (Unicode digits, case-folding oddities, line separators).
_PIECES = [
    *"aAbBvVkKmMpPyYtTJ0123456789 .,:;/-_@#$€£¥()~%!?\"')]\n\t",
    "May",
    "Dec",
    "of",
    "2023",
    "12",
    "pm",
    "am",
    "http://",
    "ftp://x",
    ".py",
    ".json",
    "v1.2.3",
    "ABC-12",
    "AB12",
    "snake_case",
    "camelCase",
    "CamelCase",
    "f()",
    "a@b.co",
    "~/x",
    "Dr.",
    "J.",
    "I'm",
    "OK",
    "Monday",
    "Ada",
    "Lisbon",
    "the",
    "٣",
    "\u017f",
    "\u0130",
    "\u212a",
    "\u2019",
    "\u201d",
    "\u201c",
    "\x1c",
    "\x85",
    "\u2028",
]
_texts = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=800, deadline=None)
@given(_texts)
def test_identifier_pattern_per_text_matches_the_full_pattern(text: str) -> None:
    fast = [(m.start(), m.group()) for m in _identifier_pattern(text).finditer(text)]
    assert fast == [(m.start(), m.group()) for m in _IDENTIFIER_RE.finditer(text)]


def test_prose_patterns_are_used_for_prose() -> None:
    """Guards the speed-up itself: ordinary chat text must not fall back to the full pattern."""
    # the full pattern, or its twin for ASCII text (see test_ascii_twins_find_what_the_patterns_find)
    full = tuple(extractive_text._FULL_RES.values())
    assert _identifier_pattern("On 14 May 2025 I fly to Lisbon, gate B12, at 09:40.") not in full
    assert _identifier_pattern("On 14 May 2025 I fly to Lisbon, gate B12, at 09:40 ±.") not in full
    assert _identifier_pattern("see utils.py") in full
    assert _identifier_pattern("see utils.py ±") in full


@settings(max_examples=800, deadline=None)
@given(_texts)
def test_names_and_words_composed_from_sentences_equal_the_whole_text(text: str) -> None:
    sentences = cached_sentences(text)
    assert joined_names(sentences) == list(proper_names(text))
    assert joined_words(sentences) == extractive_text.content_words(text)
    kept = tuple(s for s in sentences if not s.endswith("?"))
    joined = " ".join(kept)
    assert joined_names(kept) == list(proper_names(joined))
    assert joined_words(kept) == extractive_text.content_words(joined)
    assert [n for n in find_names(text) if n in proper_names(text)] == list(proper_names(text))


_LOOKAHEAD_RE = re.compile(r"^\(\?=(?:\[[^\]]*\]|\w)\)")
_KEYWORD_PATTERNS = [
    extractive_facts._DECISION_RE,
    extractive_facts._TALK_RE,
    extractive_facts._LOOP_RE,
    extractive_facts._PERSONAL_RE,
    extractive_facts._FIRST_PERSON_RE,
]
_keyword_texts = st.lists(
    st.sampled_from(
        [
            *"lLpPfFeEhHaAvVmMwWbBdDcCgGsSoOtTnNrRIi '-.",
            "\u017f",
            "\u212a",
            "\u0130",
            "\u0131",
            "love ",
            "like to",
            "my wife",
            "let's ",
            "let us revisit",
            "we'll go with",
            "need to",
            "I'm ",
            "our ",
            "decided",
            "to-do",
            "favourite",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_keyword_texts)
def test_keyword_lookaheads_change_no_match(text: str) -> None:
    for pattern in _KEYWORD_PATTERNS:
        assert _LOOKAHEAD_RE.match(pattern.pattern), pattern.pattern
        plain = re.compile(_LOOKAHEAD_RE.sub("", pattern.pattern), pattern.flags)
        assert [m.span() for m in pattern.finditer(text)] == [m.span() for m in plain.finditer(text)]


@settings(max_examples=500, deadline=None)
@given(_texts)
def test_sentence_boundary_lookahead_changes_no_boundary(text: str) -> None:
    prefix = r"(?=[\"'\u201d\u2019)\]\s])"
    assert _BOUNDARY_RE.pattern.startswith(prefix)
    plain = re.compile(_BOUNDARY_RE.pattern[len(prefix) :])
    assert [m.span() for m in _BOUNDARY_RE.finditer(text)] == [m.span() for m in plain.finditer(text)]


@settings(max_examples=800, deadline=None)
@given(_texts)
@example("a-.py")  # a file name whose dot follows a hyphen: the cheap gate once skipped it
@example("notes in draft-.md and v-.txt")
def test_identifiers_by_findall_are_the_whole_matches(text: str) -> None:
    assert all(p.groups == 0 for p in (_IDENTIFIER_RE, *extractive_text._PROSE_RES.values()))
    assert list(extractive_text.cached_identifiers(text)) == (
        [m.group(0) for m in _IDENTIFIER_RE.finditer(text)] if text else []
    )


@settings(max_examples=800, deadline=None)
@given(_texts)
def test_ascii_words_and_names_match_the_per_word_definitions(text: str) -> None:
    plain = [w.casefold().strip("'\u2019-") for w in extractive_text._WORD_RE.findall(text)]
    want = [w for w in plain if len(w) >= 3 and w not in extractive_text.STOPWORDS]
    assert list(extractive_text.cached_content_words(text)) == want
    cores = [w.strip(extractive_text.NAME_PUNCT) for w in text.split()[1:]]
    names = [c for c in cores if c[:1].isupper() and c not in extractive_text.NOT_NAMES and not c.isdigit()]
    assert find_names(text) == names


@settings(max_examples=800, deadline=None)
@given(_texts)
def test_date_lookahead_changes_no_match(text: str) -> None:
    plain = re.compile(extractive_text.DATE_RE.pattern.removeprefix(r"(?=[\dADFJMNOS])"))
    assert plain.pattern != extractive_text.DATE_RE.pattern
    assert [m.span() for m in extractive_text.DATE_RE.finditer(text)] == [
        m.span() for m in plain.finditer(text)
    ]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["ab", "abc", "b", "c a", "x", "abcab", "ca"]), max_size=6), max_size=60
    )
)
def test_near_duplicate_index_agrees_with_the_plain_check(keys: list[list[str]]) -> None:
    from ogmem_memory.compress.base import _NEAR_CANDIDATES, _KeyIndex, is_near_duplicate

    index = _KeyIndex()
    kept: list[str] = []
    for key in ("".join(parts) for parts in keys):
        # the index compares a key with the _NEAR_CANDIDATES kept keys nearest in length only
        near = [k for k in kept if 0.8 * len(key) <= len(k) <= len(key) / 0.8]
        added = index.add_if_new(key)
        if len(near) <= _NEAR_CANDIDATES:
            assert added == (bool(key) and not is_near_duplicate(key, near))
        if added:
            kept.append(key)
        assert index._keys == [k for _, k in index._by_length] == sorted(kept, key=lambda k: (len(k), k))


# ASCII text only, with every ASCII separator Unicode counts as whitespace (\x1c-\x1f among them)
_ASCII_PIECES = [p for p in _PIECES if p.isascii()] + [
    "\x0b",
    "\x0c",
    "\r",
    "\x1d",
    "\x1e",
    "\x1f",
    "Sept",
    "1st",
]
_ascii_texts = st.lists(st.sampled_from(_ASCII_PIECES), max_size=40).map("".join)
_TWINNED = [
    (extractive_text._IDENTIFIER_RE, extractive_text._FULL_RES[True]),
    *(
        (extractive_text._PROSE_RES[False, url, slash], extractive_text._PROSE_RES[True, url, slash])
        for url in (False, True)
        for slash in (False, True)
    ),
    (extractive_text._FILE_EXT_RE, extractive_text._FILE_EXT_ASCII_RE),
    (extractive_text._MAYBE_IDENTIFIER_RE, extractive_text._MAYBE_IDENTIFIER_ASCII_RE),
    (extractive_text._MAYBE_IDENTIFIER_CHAR_RE, extractive_text._MAYBE_IDENTIFIER_CHAR_ASCII_RE),
    (extractive_text.DATE_RE, extractive_text.DATE_ASCII_RE),
    (extractive_facts._DECISION_RE, extractive_facts._DECISION_ASCII_RE),
    (extractive_facts._TALK_RE, extractive_facts._TALK_ASCII_RE),
    (extractive_facts._LOOP_RE, extractive_facts._LOOP_ASCII_RE),
    (extractive_facts._PERSONAL_RE, extractive_facts._PERSONAL_ASCII_RE),
    (extractive_facts._FIRST_PERSON_RE, extractive_facts._FIRST_PERSON_ASCII_RE),
]


@settings(max_examples=800, deadline=None)
@given(_ascii_texts)
def test_ascii_twins_find_what_the_patterns_find(text: str) -> None:
    for pattern, twin in _TWINNED:
        assert twin.flags & re.ASCII and twin is not pattern
        found = [(m.start(), m.end()) for m in pattern.finditer(text)]
        assert [(m.start(), m.end()) for m in twin.finditer(text)] == found, pattern.pattern[:60]
        assert bool(twin.fullmatch(text)) == bool(pattern.fullmatch(text))


def test_ascii_twin_keeps_unicode_whitespace_of_the_ascii_range() -> None:
    twin = extractive_text.ascii_twin(re.compile(r"a\s+b|[^\s]x"))
    for space in (" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f"):
        assert twin.fullmatch(f"a{space}b")
        assert not twin.fullmatch(f"{space}x")
    assert not twin.fullmatch("a\x1bb")
