"""The rule-based extractor tries subject-led patterns only where a subject starts: same matches as a search."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ogmem_memory import extract_match as em
from ogmem_memory import extract_rules as er
from ogmem_memory.extract_text import ABSOLUTE_TIME_RE, RELATIVE_TIME_RE


def _split(text: str) -> list[str]:
    return text.split(" ")


# Every pattern the matchers look for through _find: each starts with "i", "im" or "my".
_ANCHORED: list[re.Pattern[str]] = [
    em._NAME_RES[0][0],
    em._NAME_RES[2][0],
    *em._AGE_RES,
    em._BIRTHDAY_RE,
    em._BORN_RE,
    *em._HOMETOWN_RES,
    *em._LOCATION_RES,
    *em._EMPLOYER_RES,
    *em._STUDIES_RES,
    *em._OCCUPATION_RES,
    em._DIET_RE,
    em._JOB_RE,
    em._NATIONALITY_RE,
    em._LANGUAGE_RE,
    em._LEARNING_RE,
    *em._ENTITY_NAMED_RES,
    em._ENTITY_MENTION_RE,
    em._ENTITY_COUNT_RE,
    em._FAVOURITE_RE,
    *em._PREFERENCE_RES,
    em._EVENT_RE,
]
_WORDS = _split(
    "i I i'm I'm im Im IM I am i've I have my My MY we \u0130 \u0131 \u017f \u212a am name is call me years old turned "
    "34 born in on from grew up live lives moved to work at for as an a engineer nurse vegan study "
    "studying student speak learning wife dog named Rex called have two cats like love hate allergic "
    "fan of favourite favorite color blue visited went Paris yesterday last week 2023 May 5 . , ! ' \t"
)
_clauses = st.lists(st.sampled_from(_WORDS), min_size=1, max_size=14).map(" ".join)


@settings(max_examples=800, deadline=None)
@given(_clauses, st.sampled_from(["", "x", "xi", "a-", "'"]))
def test_subject_anchored_find_equals_search(clause: str, glue: str) -> None:
    clause = clause.replace(" ", f" {glue}", 1) if glue else clause
    for pattern in _ANCHORED:
        found, searched = em._find(pattern, clause), pattern.search(clause)
        assert (found and (found.span(), found.groupdict())) == (
            searched and (searched.span(), searched.groupdict())
        ), pattern.pattern


def test_matchers_still_recognise_statements() -> None:
    hits = [next((h for m in em.MATCHERS if (h := m(c)) is not None), None) for c in _EXAMPLES]
    assert [h.key if h else None for h in hits] == [
        "user.name",
        "user.age",
        "user.location",
        "entity:dog",
        "pref:cook-italian-food",
        "event:visited-paris",
        None,
    ]


_EXAMPLES = [
    "my name is Ada",
    "I'm 34 years old",
    "I live in Lisbon",
    "my dog is called Rex",
    "I love to cook Italian food",
    "I visited Paris last week",
    "we met in the lobby",
]


_LOOKAHEAD_RE = re.compile(r"^\(\?=(?:\[[^\]]*\]|\w)\)")
_TIME_WORDS = _split(
    "on in since by the 12 3rd of May may 2023 1999 2024-05-01 5/12/23 yesterday today tonight "
    "recently other day earlier last week this morning a an one two few couple days ago Monday "
    "let's let us we we'll i'll I \u0130 \u0131 \u017f \u212a will go with stick plan is to decided chose , ."
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_TIME_WORDS), max_size=12).map(" ".join))
def test_first_letter_lookaheads_change_no_match(text: str) -> None:
    for pattern in (ABSOLUTE_TIME_RE, RELATIVE_TIME_RE, *em._DECISION_RES, er._SPEAKER_RE, er._HEDGES_RE):
        assert _LOOKAHEAD_RE.match(pattern.pattern), pattern.pattern
        plain = re.compile(_LOOKAHEAD_RE.sub("", pattern.pattern), pattern.flags)
        assert [m.span() for m in pattern.finditer(text)] == [m.span() for m in plain.finditer(text)]


_SPLIT_PIECES = [
    *" \t\n\r\x0b\x1c\u2028;,.!?'",
    "and ",
    "but ",
    "so ",
    "because ",
    "plus ",
    "I ",
    "i'm ",
    "my ",
]
_SPLIT_PIECES += ["we ", "let's ", "Ada ", "went ", "\u0130", "\u017f"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_SPLIT_PIECES), max_size=20).map("".join))
def test_split_lookaheads_change_no_split(text: str) -> None:
    """The sentence and clause splitters: ``(?=...)(?:original)``, the same pieces as the original."""
    for pattern, prefix in ((er._SENTENCE_RE, "(?=\\s)"), (er._CLAUSE_RE, "(?=[\\s;,])")):
        assert pattern.pattern.startswith(prefix + "(?:") and pattern.pattern.endswith(")")
        plain = re.compile(pattern.pattern[len(prefix) + 3 : -1], pattern.flags)
        assert pattern.split(text) == plain.split(text)
