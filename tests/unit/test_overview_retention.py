"""The running overview keeps what people ask about (issue 11): at a fixed size, across many commits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ogmem_memory.compress import ExtractiveCompressor
from ogmem_memory.compress import extractive_facts as ef
from ogmem_memory.compress.base import parse_sections
from ogmem_memory.compress.extractive_facts import extract_sections, frame_tokens
from ogmem_memory.tokens import EstimatingTokenCounter, truncate_to_tokens

ROOT = Path(__file__).resolve().parents[2]
COUNTER = EstimatingTokenCounter()

# What a later question asks about, one per commit among small talk: a name, a place, a date,
# a number, a preference, a code.
PLANTED = {
    2: ("My sister Ingrid moved to Trondheim last spring.", ["Ingrid", "Trondheim"]),
    5: ("Our wedding anniversary is on 14 September 2019.", ["14 September 2019"]),
    9: ("I ran the Berlin marathon in 3:41 and raised $2,350 for the shelter.", ["3:41", "$2,350"]),
    13: ("I'm allergic to peanuts, so Dr. Okafor gave me an EpiPen.", ["peanuts", "Okafor"]),
    17: ("The gym locker code is 5529 and my trainer is called Bastien.", ["5529", "Bastien"]),
    21: ("We adopted a beagle named Pretzel from the Oakridge rescue.", ["Pretzel", "Oakridge"]),
    26: ("My favourite book is Pachinko by Min Jin Lee.", ["Pachinko"]),
}
SMALL_TALK = [
    "Haha, that is so true!",
    "Wow, that sounds amazing, I'm so happy for you.",
    "Thanks, it really means a lot to me.",
    "Totally agree, let's keep going!",
    "It was such a fun day, we laughed a lot.",
    "Take care and talk soon!",
    "I hope the rest of your week goes well.",
    "Yeah, life has been busy but good lately.",
]


def batch(commit: int) -> list[dict[str, Any]]:
    """Six messages of small talk, one of them replaced by the planted fact of this commit."""
    messages = []
    for i in range(6):
        role = "user" if i % 2 == 0 else "assistant"
        text = SMALL_TALK[(commit * 3 + i) % len(SMALL_TALK)]
        messages.append({"role": role, "content": text})
    if commit in PLANTED:
        messages[2] = {"role": "user", "content": PLANTED[commit][0]}
    return messages


def run_commits(size: int, commits: int = 30) -> list[str]:
    compressor = ExtractiveCompressor(max_overview_tokens=size)
    overview, abstract = "", ""
    overviews = []
    for commit in range(commits):
        overview, abstract = compressor.compress(batch(commit), overview, abstract)
        assert COUNTER.count(overview) <= size
        overviews.append(overview)
    return overviews


def facts_of(overview: str) -> list[str]:
    parsed = parse_sections(overview)
    assert parsed is not None
    return parsed.get("Facts", [])


def test_planted_names_places_dates_and_numbers_survive_thirty_commits_at_a_fixed_size() -> None:
    final = run_commits(size=300)[-1]
    for _, tokens in PLANTED.values():
        for token in tokens:
            assert token in final, f"{token!r} lost from the overview"
    assert "Haha, that is so true!" not in final  # small talk is never a fact


def test_a_planted_fact_stays_from_the_commit_that_said_it_to_the_last() -> None:
    overviews = run_commits(size=300)
    for commit, (_, tokens) in PLANTED.items():
        for overview in overviews[commit:]:
            assert all(t in overview for t in tokens), (commit, tokens)


GARDENING = ["compost", "mulch", "pruning", "seedlings", "trellis", "aphids", "perennials", "loam"]


def test_a_small_overview_keeps_the_planted_facts_over_filler_facts() -> None:
    compressor = ExtractiveCompressor(max_overview_tokens=220)
    overview = ""
    for commit in range(30):
        messages = batch(commit)
        # filler that passes for a fact (rare words) but names nothing
        a, b, c = (GARDENING[(commit + k) % len(GARDENING)] for k in range(3))
        messages.append({"role": "assistant", "content": f"Gardening involves {a}, {b} and careful {c}."})
        overview, _ = compressor.compress(messages, overview)
        assert COUNTER.count(overview) <= 220
    facts = facts_of(overview)
    kept = " ".join(facts)
    for _, tokens in PLANTED.values():
        assert all(t in kept for t in tokens), tokens
    assert sum("Gardening" in f for f in facts) <= 3


def test_the_facts_come_densest_first_so_a_cut_overview_keeps_the_best() -> None:
    """Long filler facts early, the planted ones late: a cut keeps the planted, not the oldest."""
    compressor = ExtractiveCompressor(max_overview_tokens=700)
    overview = ""
    late = {commit + 14: fact for commit, fact in PLANTED.items() if commit + 14 < 40}
    for commit in range(40):
        messages = [{"role": "user", "content": late[commit][0]}] if commit in late else []
        words = [GARDENING[(commit + k) % len(GARDENING)] for k in range(5)]
        messages.append(
            {
                "role": "assistant",
                "content": f"Gardening with Hilde in autumn involves {', '.join(words)}, which keeps the soil "
                "healthy and the beds ready for the colder months ahead.",
            }
        )
        overview, _ = compressor.compress(messages, overview)
        assert COUNTER.count(overview) <= 700
    assert all(all(t in overview for t in tokens) for _, tokens in late.values())
    facts = facts_of(overview)
    planted = [i for i, f in enumerate(facts) if any(text in f for text, _ in late.values())]
    filler = [i for i, f in enumerate(facts) if i not in planted and i >= 3]  # after the anchored
    assert filler and max(planted) < min(filler)
    # a context that gives the summary a third of this size still shows most of them
    cut = truncate_to_tokens(overview, 700 // 3, COUNTER)
    assert sum(all(t in cut for t in tokens) for _, tokens in late.values()) >= 4


def test_bracketed_stamps_on_every_line_are_frame_not_facts() -> None:
    lines = [
        "[1:56 pm on 8 May, 2023] Ada: Agreed, that was fun!",
        "[1:58 pm on 8 May, 2023] Ben: Totally, let's keep going!",
        "[2:04 pm on 8 May, 2023] Ada: I moved to Porto in 2019 and work at Farfetch.",
        "[9:10 am on 2 June, 2023] Ben: Haha yes!",
        "[9:12 am on 2 June, 2023] Ada: Thanks so much!",
        "[9:15 am on 2 June, 2023] Ben: Wow, amazing!",
    ]
    frame = frame_tokens(lines)
    assert {"8 May, 2023", "2 June, 2023", "1:56 pm", "Ada", "Ben"} <= frame
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(lines)]
    sections = extract_sections(messages, max_facts=10)
    # the stamps' dates and times and the speakers make no line a fact
    assert [f for f in sections["Facts"] if "Porto" in f] and len(sections["Facts"]) == 1


def test_a_decision_needs_something_to_act_on() -> None:
    messages = [
        {"role": "user", "content": "Agreed!"},
        {"role": "assistant", "content": "Let's keep going!"},
        {"role": "user", "content": "What made you decide to move?"},
        {"role": "assistant", "content": "We decided to book the Lisbon flat for 12 nights."},
    ]
    assert extract_sections(messages, max_facts=10)["Decisions"] == [
        "assistant: We decided to book the Lisbon flat for 12 nights."
    ]


_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from hypothesis import given, settings
from hypothesis import strategies as st

from ogmem_memory.compress import ExtractiveCompressor
from ogmem_memory.compress import extractive_facts as ef
batches = json.loads(sys.argv[2])
compressor = ExtractiveCompressor(max_overview_tokens=300)
overview, abstract, out = "", "", []
for messages in batches:
    overview, abstract = compressor.compress(messages, overview, abstract)
    out.append([overview, abstract])
print(json.dumps(out))
"""


def test_overview_and_abstract_do_not_depend_on_the_hash_seed() -> None:
    batches = json.dumps([batch(c) for c in range(12)])
    outputs = []
    for seed in ("1", "2024"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(ROOT), batches],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert all(abstract for _, abstract in outputs[0])


def test_planted_facts_survive_when_every_line_is_stamped_with_its_date_and_speaker() -> None:
    """LoCoMo-style lines ("[1:56 pm on 8 May, 2023] Ada: ..."): the stamps make no small talk a fact."""
    compressor = ExtractiveCompressor(max_overview_tokens=300)
    overview = ""
    for commit in range(30):
        day = f"{commit % 28 + 1} May, 2023"
        messages = [
            {**m, "content": f"[{10 + i}:0{i} am on {day}] {'Ada' if i % 2 == 0 else 'Ben'}: {m['content']}"}
            for i, m in enumerate(batch(commit))
        ]
        overview, _ = compressor.compress(messages, overview)
        assert COUNTER.count(overview) <= 300
    for _, tokens in PLANTED.values():
        assert all(t in overview for t in tokens), tokens
    assert not any(talk in overview for talk in SMALL_TALK)


_CUES = [
    "decided",
    "decide to",
    "we'll go with",
    "We will go with",
    "agreed",
    "AGREE TO",
    "will use",
    "chose",
    "choose to",
    "going with",
    "go with",
    "settled on",
    "opted",
    "the plan is",
    "Let's",
    "let us",
    "todo",
    "to-do",
    "need to",
    "needs to",
    "have to",
    "remind me to",
    "follow up",
    "Follow-up",
    "don't forget",
    "do not forget",
    "pending",
    "TBD",
    "loves",
    "like to",
    "prefers",
    "favourite",
    "favorite",
    "enjoyed",
    "hates",
    "allergic",
    "vegan",
    "vegetarian",
    "live in",
    "lives in",
    "moved to",
    "work at",
    "works as",
    "born",
    "married",
    "my wife",
    "My Husband",
    "my friend",
    "my name",
]


@given(st.lists(st.sampled_from([*_CUES, "ok", "the", "Lisbon", "?", ",", "\u017f", "\u212a"]), max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_cheap_scans_never_hide_a_decision_a_loop_or_a_personal_detail(words: list[str]) -> None:
    text = " ".join(words)
    low = text.casefold()
    assert not ef._DECISION_RE.search(text) or ef.may_decide(low)
    assert not ef._LOOP_RE.search(text) or ef.may_loop(low)
    assert not ef._PERSONAL_RE.search(text) or ef.may_be_personal(low)
