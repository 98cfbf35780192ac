"""ExtractiveCompressor and TemplateCompressor: deterministic, verbatim, bounded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ogmem_memory.compress import ExtractiveCompressor, TemplateCompressor
from ogmem_memory.compress.base import parse_sections
from ogmem_memory.compress.extractive import find_identifiers, split_sentences, trim_sentence
from ogmem_memory.errors import ConfigError
from ogmem_memory.tokens import EstimatingTokenCounter

FILLER = [
    "Can you help me plan the week ahead?",
    "Sure, tell me what is on your mind.",
    "I keep thinking about groceries and laundry.",
    "That sounds like a normal busy week.",
    "The weather has been rather grey lately.",
]


def msg(role: str, content: Any, n: int = 0) -> dict[str, Any]:
    return {"role": role, "content": content, "id": f"m{n}", "created_at": "2024-05-01T10:00:00+00:00"}


def conversation(n: int, facts: dict[int, str] | None = None) -> list[dict[str, Any]]:
    facts = facts or {}
    out = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        out.append(msg(role, facts.get(i, FILLER[i % len(FILLER)]), i))
    return out


def sections_of(overview: str) -> dict[str, list[str]]:
    parsed = parse_sections(overview)
    assert parsed is not None
    return parsed


def test_compress_is_deterministic() -> None:
    messages = conversation(40, {4: "My sister Maria moved to Lisbon on 12 March 2023."})
    first = ExtractiveCompressor().compress(messages, "## Facts\n- user: old fact 42", "old")
    second = ExtractiveCompressor().compress(messages, "## Facts\n- user: old fact 42", "old")
    assert first == second


def test_sections_in_fixed_order_with_none_placeholder() -> None:
    overview, _ = ExtractiveCompressor().compress([msg("user", "hello there")])
    headings = [line for line in overview.splitlines() if line.startswith("## ")]
    assert headings == ["## Topics", "## Facts", "## Decisions", "## Open loops"]
    assert "## Decisions\n- None" in overview


def test_names_numbers_dates_survive_three_fused_chunks() -> None:
    messages = conversation(
        60,
        {
            2: "My sister Maria moved to Lisbon on 12 March 2023.",
            24: "Also, order #A-7731 costs $1,249.99 including shipping.",
            46: "My dentist appointment is at 10:30 am with Dr. Okafor.",
        },
    )
    compressor = ExtractiveCompressor()
    overview, abstract = "", ""
    for start in range(0, 60, 20):
        overview, abstract = compressor.compress(messages[start : start + 20], overview, abstract)
    for needle in ["Maria", "Lisbon", "12 March 2023", "#A-7731", "$1,249.99", "10:30 am", "Okafor"]:
        assert needle in overview
    facts = sections_of(overview)["Facts"]
    assert "user: My sister Maria moved to Lisbon on 12 March 2023." in facts


def test_facts_are_kept_verbatim_in_chronological_order() -> None:
    messages = [
        msg("user", "I booked flight LH 1234 to Berlin for 3 June."),
        msg("assistant", "Noted: it leaves from Terminal 2 at 07:45."),
        msg("user", "Thanks, the hotel is the Adlon on Pariser Platz 7."),
    ]
    overview, _ = ExtractiveCompressor().compress(messages)
    assert sections_of(overview)["Facts"] == [
        "user: I booked flight LH 1234 to Berlin for 3 June.",
        "assistant: Noted: it leaves from Terminal 2 at 07:45.",
        "user: Thanks, the hotel is the Adlon on Pariser Platz 7.",
    ]


def test_decisions_and_open_loops_are_detected() -> None:
    messages = [
        msg("user", "We decided to host the party at Rosa's place."),
        msg("assistant", "Great, let's send invites by Friday."),
        msg("user", "I need to buy 12 chairs before then."),
        msg("assistant", "Anything else?"),
        msg("user", "Which cake should I order?"),
    ]
    parsed = sections_of(ExtractiveCompressor().compress(messages)[0])
    assert parsed["Decisions"] == [
        "user: We decided to host the party at Rosa's place.",
        "assistant: Great, let's send invites by Friday.",
    ]
    assert "user: I need to buy 12 chairs before then." in parsed["Open loops"]
    assert "user: Which cake should I order?" in parsed["Open loops"]  # asked after the last reply


def test_answered_question_is_not_an_open_loop() -> None:
    messages = [msg("user", "What is the capital of Peru?"), msg("assistant", "It is Lima.")]
    parsed = sections_of(ExtractiveCompressor().compress(messages)[0])
    assert parsed["Open loops"] == []  # rendered as "- None"


def test_topics_are_frequent_user_keywords() -> None:
    messages = [
        msg("user", "The garden needs watering; the garden hose leaks."),
        msg("assistant", "Replace the hose washer."),
        msg("user", "Garden tools are in the shed."),
    ]
    topics = sections_of(ExtractiveCompressor().compress(messages)[0])["Topics"]
    assert topics[0] == "garden"  # twice in user turns
    assert "hose" in topics and "washer" not in topics  # assistant-only words are not topics


def test_overview_stays_bounded_after_fusing_50_chunks() -> None:
    counter = EstimatingTokenCounter()
    compressor = ExtractiveCompressor(max_overview_tokens=300)
    overview, abstract = "", ""
    for chunk in range(50):
        batch = [
            msg("user", f"Order #{chunk}-{i} for customer Jane Doe-{chunk} costs ${chunk * 10 + i}.99.")
            for i in range(10)
        ]
        overview, abstract = compressor.compress(batch, overview, abstract)
        assert counter.count(overview) <= 300
        assert len(abstract) <= 100
    parsed = sections_of(overview)
    facts = parsed["Facts"]
    assert any("#49-9" in fact for fact in facts)  # the newest fact always survives
    assert any("#0-0 " in fact for fact in facts[:3])  # the opening facts are anchored
    assert not any("#1-0 " in fact for fact in facts)  # the oldest after the anchors went first


def test_oldest_facts_after_the_opening_ones_dropped_first_within_budget() -> None:
    compressor = ExtractiveCompressor(max_overview_tokens=200)
    overview = ""
    for day in range(1, 41):
        overview, _ = compressor.compress(
            [msg("user", f"On day {day} I paid Alice {day * 7} euros.")], overview
        )
    facts = sections_of(overview)["Facts"]
    days = [int(f.split("day ")[1].split(" ")[0]) for f in facts]
    assert days[:3] == [1, 2, 3]  # the opening facts are anchored
    assert days[-1] == 40 and 4 not in days
    assert days[3:] == list(range(days[3], 41))  # then a contiguous, newest suffix survives


def test_fusion_drops_exact_and_near_duplicates() -> None:
    prev = "## Facts\n- user: My sister Maria moved to Lisbon on 12 March 2023."
    overview, _ = ExtractiveCompressor().compress(
        [msg("user", "my sister maria moved to Lisbon on 12 March 2023"), msg("user", "Bob lives in Oslo.")],
        prev,
    )
    assert sections_of(overview)["Facts"] == [
        "user: My sister Maria moved to Lisbon on 12 March 2023.",
        "user: Bob lives in Oslo.",
    ]


def test_unsectioned_previous_overview_becomes_earlier_facts() -> None:
    prev = "The user owns a cat named Tom. Tom is 4 years old."
    overview, _ = ExtractiveCompressor().compress([msg("user", "I live in Porto.")], prev)
    assert sections_of(overview)["Facts"] == [
        "earlier: The user owns a cat named Tom.",
        "earlier: Tom is 4 years old.",
        "user: I live in Porto.",
    ]


def test_previous_sections_with_other_casing_are_merged() -> None:
    prev = "## facts\n- user: Ana is 31.\n\n## Extra notes\n- keep me"
    overview, _ = ExtractiveCompressor().compress([msg("user", "Ana works at Siemens.")], prev)
    parsed = sections_of(overview)
    assert parsed["Facts"] == ["user: Ana is 31.", "user: Ana works at Siemens."]
    assert parsed["Extra notes"] == ["keep me"]


def test_long_sentence_is_trimmed_at_words_around_the_salient_part() -> None:
    sentence = (
        " ".join(["blah"] * 80)
        + " and the invoice INV-2024-0042 is due on 12 March 2023 "
        + " ".join(["etc"] * 80)
    )
    trimmed = trim_sentence(sentence, 120)
    assert "INV-2024-0042" in trimmed and "12 March 2023" in trimmed
    assert trimmed.startswith("… ") and trimmed.endswith(" …")
    inner = trimmed.removeprefix("… ").removesuffix(" …")
    assert inner in sentence and inner.split()[0] in {"blah", "and"}


def test_trim_never_cuts_inside_an_identifier() -> None:
    sentence = "x " * 60 + "the date was 12 March 2023 ok"
    trimmed = trim_sentence(sentence.strip(), 130)
    assert "12 March 2023" in trimmed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail bob@example.com or see https://example.com/a.", ["bob@example.com", "https://example.com/a"]),
        ("Upgrade to v2.4.1 in /etc/app/config.yaml", ["v2.4.1", "/etc/app/config.yaml"]),
        ("Meet on 2024-05-01 at 14:30, bring $1,249.99", ["2024-05-01", "14:30", "$1,249.99"]),
        ("Ticket #A-7731 raised E1101 in user_id", ["#A-7731", "E1101", "user_id"]),
    ],
)
def test_find_identifiers(text: str, expected: list[str]) -> None:
    assert find_identifiers(text) == expected


def test_split_sentences_keeps_abbreviations_and_numbers() -> None:
    assert split_sentences("Dr. Smith paid $3.50. Then he left!\nNew line here") == [
        "Dr. Smith paid $3.50.",
        "Then he left!",
        "New line here",
    ]


def test_empty_messages_give_empty_session() -> None:
    assert ExtractiveCompressor().compress([]) == ("", "Empty session")


def test_no_messages_keep_previous_archive() -> None:
    compressor = ExtractiveCompressor()
    assert compressor.compress([], "## Facts\n- a", "prev") == ("## Facts\n- a", "prev")
    assert compressor.compress([], "## Facts\n- a") == ("## Facts\n- a", "Empty session")


def test_abstract_is_one_line_of_at_most_100_chars() -> None:
    messages = [msg("user", "line one\nline two " * 30), msg("assistant", "answer\n" * 30)]
    _, abstract = ExtractiveCompressor().compress(messages, "", "previous\nabstract " * 20)
    assert "\n" not in abstract and len(abstract) <= 100
    # the abstract names this span only; earlier spans live on in the fused overview
    assert "line" in abstract and "previous" not in abstract


def test_abstract_says_who_what_and_when_of_its_span() -> None:
    messages = [
        msg("user", "Grace Hopper and I fly to Lisbon on 14 May 2025."),
        msg("assistant", "Lisbon on 14 May 2025, noted."),
        msg("user", "Grace wants a hotel near the river; the hotel budget is tight."),
    ]
    _, abstract = ExtractiveCompressor().compress(messages)
    assert abstract.startswith("Lisbon, Grace")  # names first, the most mentioned leading
    assert "hotel" in abstract and abstract.endswith("(14 May 2025)")


def test_small_talk_and_framing_prefixes_are_not_facts() -> None:
    """A date and speaker prefixed to every line frame it: they alone make no sentence a fact."""
    lines = [
        "Hey Mel!",
        "Thanks, Melanie!",
        "I went to a LGBTQ support group yesterday and it was so powerful.",
        "Wow, cool!",
        "Hey Mel, long time no chat!",
        "Researching adoption agencies has been a dream for years.",
    ]
    messages = [msg("user", f"[1:56 pm on 8 May, 2023] Caroline: {line}", i) for i, line in enumerate(lines)]
    facts = sections_of(ExtractiveCompressor().compress(messages)[0])["Facts"]
    assert [f.split("Caroline: ")[1] for f in facts] == [lines[2], lines[5]]


def test_an_echo_of_a_kept_fact_is_left_out() -> None:
    messages = [
        msg("user", "I fly to Lisbon on flight TP1357 on 14 May 2025 at 09:40."),
        msg("assistant", "Noted: TP1357 to Lisbon on 14 May 2025 at 09:40."),
        msg("assistant", "Your hotel is Aurora, reference AUR-88412."),
    ]
    facts = sections_of(ExtractiveCompressor().compress(messages)[0])["Facts"]
    assert facts == [
        "user: I fly to Lisbon on flight TP1357 on 14 May 2025 at 09:40.",
        "assistant: Your hotel is Aurora, reference AUR-88412.",
    ]


def test_a_proposal_to_talk_is_not_a_decision() -> None:
    messages = [
        msg("user", "Let's revisit the opening slides once more."),
        msg("user", "Let's book the 09:40 train, then."),
        msg("user", "Remind me what we said about dinner."),
        msg("assistant", "A seafood place near the river."),
    ]
    parsed = sections_of(ExtractiveCompressor().compress(messages)[0])
    assert parsed["Decisions"] == ["user: Let's book the 09:40 train, then."]
    assert parsed["Open loops"] == []  # a recap request, answered, is no loop


def test_fixed_size_fusion_keeps_the_salient_facts_of_every_span() -> None:
    """Over many commits the overview keeps what carries names, dates and numbers, not the newest filler."""
    compressor = ExtractiveCompressor(max_overview_tokens=200)
    overview = ""
    planted = {
        3: "My brother Tomasz moved to Gdańsk on 2 June 2021, flat 14B.",
        11: "Order ZX-4410 ships on 9 July.",
    }
    for chunk in range(20):
        filler = f"The weather stayed grey and rainy again, day {chunk * 7}."
        batch = [msg("user", planted.get(chunk, filler))]
        overview, _ = compressor.compress(batch, overview)
        assert EstimatingTokenCounter().count(overview) <= 200
    facts = " ".join(sections_of(overview)["Facts"])
    assert "Gdańsk" in facts and "ZX-4410" in facts and "day 133" in facts  # the newest stays too
    assert "day 28." not in facts  # filler went first


message_values = st.one_of(
    st.none(), st.integers(), st.text(max_size=80), st.lists(st.text(max_size=5), max_size=3)
)
malformed = st.lists(
    st.dictionaries(st.sampled_from(["role", "content", "id", "seq", "other"]), message_values, max_size=5),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(messages=malformed, prev=st.text(max_size=200))
def test_malformed_messages_never_raise(messages: list[dict[str, Any]], prev: str) -> None:
    for compressor in (ExtractiveCompressor(max_overview_tokens=80), TemplateCompressor()):
        overview, abstract = compressor.compress(messages, prev, "p")
        assert isinstance(overview, str) and "\n" not in abstract and len(abstract) <= 100


def test_content_blocks_are_read_as_text() -> None:
    messages = [msg("user", [{"type": "text", "text": "Paris trip on 4 July."}, "Budget 900 EUR."])]
    overview, _ = ExtractiveCompressor().compress(messages)
    assert "Paris trip on 4 July." in overview and "900" in overview


def test_invalid_options_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        ExtractiveCompressor(max_overview_tokens=10)
    with pytest.raises(ConfigError):
        ExtractiveCompressor(max_facts=0)


def test_fallback_template_matches_seed_format() -> None:
    messages = [
        msg("user", "Please help me write a cover letter for a junior data analyst position at Acme Corp"),
        msg("assistant", "Of course! Here is a first draft for you."),
        msg("user", "Make it shorter."),
        msg("assistant", "Here is the shorter version."),
        msg("tool", "ignored"),
    ]
    overview, abstract = TemplateCompressor().compress(messages)
    assert overview == (
        "Session with 5 messages (2 from user, 2 from assistant).\n\n"
        "Started with: Please help me write a cover letter for a junior data analyst position at Acme Corp"
    )
    assert abstract == "Please help me write a cover letter for a junior d... → Here is the shorter version."


def test_fallback_template_with_previous_abstract_and_long_opening() -> None:
    first = "word " * 30
    overview, abstract = TemplateCompressor().compress([msg("user", first)], "ignored", "Earlier we talked")
    assert overview.startswith("Previous context: Previous abstract: Earlier we talked\n\n")
    assert overview.endswith("Started with: " + first[:100] + "...")
    assert abstract == ("Earlier we talked | " + (first[:97] + "...")[:52]).rstrip()


def test_fallback_template_without_user_and_empty() -> None:
    assert TemplateCompressor().compress([msg("assistant", "hi")]) == (
        "Session with 1 messages (0 from user, 1 from assistant).",
        "Session with 1 messages",
    )
    assert TemplateCompressor().compress([]) == ("", "Empty session")
