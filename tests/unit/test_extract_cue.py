"""The extractor scans a message once for a statement cue and skips it when none is there: same results."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ogmem_memory import extract_rules as er
from ogmem_memory.extract_match import may_state


# Words of every matcher's patterns, case and Unicode variants that IGNORECASE folds (the dotted
# and dotless i, the long s, the Kelvin sign), and every separator the clauses are cut at.
def _split(text: str) -> list[str]:
    return text.split(" ")


_WORDS = _split(
    "i I \u0130 \u0131 i'm I'm I\u2019m im Im my My MY me call Call people you can we We we've we'll "
    "we're will are have let's Let let us the plan is to decided agreed settled chose opted committed "
    "really still also go going stick sticking with revisit name Ada years old 34 turned born in on from "
    "grew up live moved work at as an a engineer vegan study speak learning wife dog named Rex two cats "
    "like love hate fan of favourite color blue visited went Paris yesterday 2023 and but so because "
    "\u017f \u212a . , ; ! ? ' \u2018 ``` \n \t"
)
# Each statement pattern's opening words, whole, so texts whose only cue is one of them are common.
_OPENINGS = [
    "the plan is to",
    "let us",
    "let's",
    "call me",
    "people call me",
    "we decided",
    "we have really agreed",
    "we've chose",
    "we will go with",
    "we're sticking with",
    "we'll stick with",
    "I am going with",
    "my name's",
    "im 34",
    "im Ada",
]
_parts = st.one_of(st.sampled_from(_OPENINGS), st.sampled_from(_WORDS))
_texts = st.lists(_parts, min_size=1, max_size=8).map(" ".join)
_glued = st.lists(_parts, min_size=1, max_size=8).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_texts, _glued))
def test_text_without_a_cue_has_no_statement(text: str) -> None:
    prepared = er._prepared(text)
    if not may_state(prepared):
        assert er._scan(prepared, ("m",), None, 1.0) == []


@settings(max_examples=300, deadline=None)
@given(_texts)
def test_folded_and_ignorecase_cues_agree(text: str) -> None:
    from ogmem_memory import extract_match as em

    assert (em._CUE_RE.search(text) is not None) == may_state(text)


def test_cue_finds_every_kind_of_statement() -> None:
    found = [
        "my name is Ada",
        "Call me Al",
        "I\u2019m 34",
        "we still decided to use Postgres",
        "Let's go with plan B",
        "we'll stick with Rust",
        "the plan is to ship Friday",
    ]
    assert all(may_state(er._prepared(t)) for t in found)
    assert not may_state("the deadline moved to Friday so Maria will review the invoice")
    extractor = er.RuleBasedExtractor()
    keys = [c.key for c in extractor.extract([{"role": "user", "content": t} for t in found])]
    assert "user.name" in keys and "user.age" in keys and len(keys) >= 5
