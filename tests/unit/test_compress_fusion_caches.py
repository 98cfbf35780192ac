"""What a fusion remembers between commits never changes what it returns.

The extractive compressor keeps, across calls, the sections of the overviews it wrote (so the next
commit does not parse them again), per-bullet token counts, scores and frame candidates. Each is
checked here against the computation it replaces, with the caches warm from other inputs: the same
bullet text under another frame, another set of companions or another counter must give the
uncached answer.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ogmem_memory import gil
from ogmem_memory.compress import extractive, extractive_facts, extractive_text
from ogmem_memory.compress import sections as sections_module
from ogmem_memory.compress.base import SECTIONS, Sections, render_sections
from ogmem_memory.compress.extractive import ExtractiveCompressor, previous_sections
from ogmem_memory.compress.extractive_facts import (
    fact_scores,
    features_of,
    frame_tokens,
    idf_weights,
    per_token,
    rarity_of,
    salience,
)
from ogmem_memory.compress.sections import parse_cache_clear
from ogmem_memory.tokens import estimate_tokens


def _uncached_scores(texts: Sequence[str], sizes: Sequence[int]) -> list[float]:
    """What fact_scores's docstring says it gives, from the plain definitions."""
    frame = frame_tokens(texts)
    features = [features_of(text, frame) for text in texts]
    idf = idf_weights([f.words for f in features])
    return [per_token(salience(f, rarity_of(f, idf)), size) for f, size in zip(features, sizes, strict=True)]


# Words that make frames: a speaker's name and a stamp on many lines, names, dates, rare words.
_STAMPS = ["[1:56 pm on 8 May, 2023] ", "[7:55 pm on 9 June, 2023] ", ""]
_SPEAKERS = ["Ada: ", "Grace: ", ""]
_WORDS = [
    "Lisbon",
    "Ada",
    "Grace",
    "booked",
    "flight",
    "LX12",
    "on",
    "May",
    "3",
    "2023",
    "hotel",
    "I",
    "love",
    "pottery",
    "my",
    "sister",
    "moved",
    "to",
    "Berlin",
    "the",
    "slides",
    "v1.2.3",
    "we",
    "agreed",
    "painting",
    "Lisbon's",
    "ADA",
    "ada",
    "camping",
    "Tuesday",
    "9",
    "June",
]
_sentences = st.builds(
    lambda stamp, speaker, words: f"{stamp}{speaker}{' '.join(words)}.",
    st.sampled_from(_STAMPS),
    st.sampled_from(_SPEAKERS),
    st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_sentences, min_size=1, max_size=30), st.lists(_sentences, max_size=30), st.data())
def test_fact_scores_equal_the_uncached_definition_whatever_the_caches_hold(
    texts: list[str], others: list[str], data: st.DataObject
) -> None:
    """The same texts scored among other companions (another frame, other counts) first."""
    sizes = [len(t) // 4 + 2 for t in texts]
    # warm every cache with the same texts in another company, so their rows are remembered
    # under another frame and another idf
    mixed = data.draw(st.permutations(texts + others))
    fact_scores(mixed, [len(t) // 4 + 2 for t in mixed])
    assert fact_scores(texts, sizes) == _uncached_scores(texts, sizes)
    assert fact_scores(mixed, [len(t) // 4 + 2 for t in mixed]) == _uncached_scores(
        mixed, [len(t) // 4 + 2 for t in mixed]
    )


def test_a_bullet_scored_in_a_frame_then_out_of_it_gets_each_uncached_answer() -> None:
    bullet = "[1:56 pm on 8 May, 2023] Ada: I booked flight LX12 to Lisbon for the pottery fair."
    plain = [f"Grace booked hotel number {k} near Berlin for painting." for k in range(6)]
    # Ada and the stamp frame the lines when most of them carry it
    framed = [f"[1:56 pm on 8 May, 2023] Ada: Grace booked hotel {k} near Berlin." for k in range(6)]
    assert "Ada" in frame_tokens([bullet, *framed])
    assert "Ada" not in frame_tokens([bullet, *plain])
    for companions in (framed, plain, framed, plain):
        texts = [bullet, *companions]
        sizes = [len(t) // 4 + 2 for t in texts]
        assert fact_scores(texts, sizes) == _uncached_scores(texts, sizes)
    framed_score = fact_scores([bullet, *framed], [30] * 7)[0]
    plain_score = fact_scores([bullet, *plain], [30] * 7)[0]
    assert framed_score < plain_score  # the frame's name and stamp count for nothing


# pieces that a parse strips, splits at or drops: marks, whitespace, line boundaries, placeholders
_bullet_text = st.lists(
    st.sampled_from(
        [*"aB -#*:.N1)", "None", "none.", "N/A", "n/a", "\n", "\r", "\x1c", "\u2028", "\t", "\xa0"]
    ),
    max_size=8,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(_bullet_text, max_size=4), st.lists(_bullet_text, max_size=4), st.lists(_bullet_text, max_size=3)
)
def test_a_remembered_overview_reads_back_as_parsing_it_would(
    facts: list[str], decisions: list[str], loops: list[str]
) -> None:
    """Whatever bullets an overview has, what the next commit reads is previous_sections's answer."""
    compressor = ExtractiveCompressor()
    sections: Sections = {"Topics": ["Lisbon"], "Facts": facts, "Decisions": decisions, "Open loops": loops}
    overview = render_sections(sections)
    parse_cache_clear()
    parsed = previous_sections(overview)
    parse_cache_clear()
    compressor._remember(overview, sections)
    assert previous_sections(overview) == parsed
    for bullet in itertools.chain(facts, decisions, loops):
        if extractive._parses_back(bullet):
            assert previous_sections(render_sections({"Facts": [bullet]}))["Facts"] == [bullet]


def test_overviews_with_other_headings_are_parsed_again() -> None:
    compressor = ExtractiveCompressor()
    sections: Sections = {
        "Topics": [],
        "Facts": ["user: Ada lives in Lisbon."],
        "Decisions": [],
        "Open loops": [],
    }
    sections["Notes"] = ["user: a note"]
    overview = render_sections(sections)
    parse_cache_clear()
    compressor._remember(overview, sections)
    assert overview not in sections_module._parsed
    # an overview it remembers comes back as fresh lists: the caller may change them
    plain: Sections = {h: [f"user: {h} one."] for h in SECTIONS}
    text = render_sections(plain)
    compressor._remember(text, plain)
    assert text in sections_module._parsed
    first = previous_sections(text)
    first["Facts"].append("changed")
    plain["Facts"].append("changed too")
    assert previous_sections(text) == {h: [f"user: {h} one."] for h in SECTIONS}


def _chain(compressor_for: object, batches: Sequence[Sequence[dict[str, str]]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    overview = abstract = ""
    for batch in batches:
        compressor = compressor_for() if callable(compressor_for) else compressor_for
        assert isinstance(compressor, ExtractiveCompressor)
        overview, abstract = compressor.compress(batch, overview, abstract)
        out.append((overview, abstract))
    return out


def _conversation(turns: int, offset: int = 0) -> list[dict[str, str]]:
    people = ["Ada", "Grace"]
    return [
        {
            "role": "user" if k % 2 == 0 else "assistant",
            "content": f"[1:{10 + k % 50:02d} pm on {1 + k // 20} May, 2023] {people[k % 2]}: "
            f"I visited {['Lisbon', 'Berlin', 'Porto', 'Oslo'][k % 4]} on day {k + offset} with my sister "
            f"and we {'decided to book' if k % 7 == 0 else 'talked about'} hotel H{k * 3 + offset}.",
        }
        for k in range(turns)
    ]


def test_a_running_compressor_fuses_as_a_fresh_one_with_cold_caches_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = _conversation(150)
    batches = [messages[k : k + 13] for k in range(0, len(messages), 13)] + [messages[:2], messages[5:6]]
    running = ExtractiveCompressor(max_overview_tokens=300)
    remembered: list[str] = []
    remember = extractive.remember_parse
    monkeypatch.setattr(extractive, "remember_parse", lambda t, s: (remembered.append(t), remember(t, s)))
    warm = _chain(running, batches)
    handed_on = list(remembered)

    def cold() -> ExtractiveCompressor:
        for module in (extractive, extractive_facts, extractive_text):
            for value in vars(module).values():
                clear = getattr(value, "cache_clear", None)
                if callable(clear):
                    clear()
        parse_cache_clear()
        return ExtractiveCompressor(max_overview_tokens=300)

    assert warm == _chain(cold, batches)
    # the running one handed on its own overviews unparsed
    assert any(overview in handed_on for overview, _ in warm)


def test_a_callers_counter_is_asked_every_time_the_default_one_is_remembered() -> None:
    asked: list[str] = []

    class Growing:
        def count(self, text: str) -> int:
            asked.append(text)
            return len(text) + len(asked)  # not a function of the text alone

    bullets = ["user: Ada lives in Lisbon.", "user: Grace likes Porto."]
    first = extractive._bullet_sizes(bullets, Growing())
    second = extractive._bullet_sizes(bullets, Growing())
    assert first != second and len(asked) == 4
    default = ExtractiveCompressor()._counter
    assert extractive._bullet_sizes(bullets, default) == [estimate_tokens(f"- {b}\n") for b in bullets]


def test_the_frame_loop_hands_the_gil_over_as_it_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"[1:{k:02d} pm] Ada: item {k} of the run, on May {k % 28 + 1}." for k in range(40)]
    expected = [extractive_text._frame_candidates(t) for t in texts]
    slept: list[float] = []
    ticks = itertools.count()
    monkeypatch.setattr(time, "sleep", slept.append)
    # every look at the clock finds a second gone: each text is a long computation
    gil._pace.at = -1.0
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    assert extractive_text._candidates_of(texts) == expected
    assert len(slept) == len(texts)
    slept.clear()
    gil._pace.at = 1.0
    monkeypatch.setattr(time, "perf_counter", lambda: 1.0)  # no time passes: nothing to hand over
    assert extractive_text._candidates_of(texts) == expected
    assert slept == []
