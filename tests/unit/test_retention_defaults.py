"""The defaults remember an ordinary assistant chat: planted facts survive many commits.

A synthetic conversation of our own (user/assistant alternation, assistant echoes, tool calls,
small talk with numbers of its own) plants a name, a city, a date, a number and a preference
early on, then talks about other things long enough for several threshold commits on the
default ``MemoryConfig()``. With the question as the query, each fact is in the context at a
small budget; without a query, the running summary still holds them. The demo's summary is
checked too (issue 10 item 13): topics are content words, decisions are decisions, questions
are not facts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks import locomo_cross_session as xs
from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore
from ogmem_memory.compress import ExtractiveCompressor
from ogmem_memory.compress.base import parse_sections
from ogmem_memory.demo import DEMO_CONFIG, demo_script
from ogmem_memory.stores import InMemoryStore

SESSION = "chat"

# (user statement, assistant echo, what must be remembered, a question about it)
PLANTED = (
    (
        "Hi, I'm Ingrid Solberg and I run a small bakery.",
        "Nice to meet you, Ingrid Solberg! A bakery sounds lovely.",
        "Ingrid Solberg",
        "What is my full name again, the one I introduced myself with?",
    ),
    (
        "We moved to Tromsø last autumn, right by the harbour.",
        "Tromsø by the harbour, noted. The northern lights must be something.",
        "Tromsø",
        "Which town did we move to last autumn?",
    ),
    (
        "My daughter Mira was born on 3 March 2019.",
        "Mira, born on 3 March 2019. I'll remember her birthday.",
        "3 March 2019",
        "When was my daughter Mira born?",
    ),
    (
        "The new oven costs 1,850 euros including delivery.",
        "Got it: 1,850 euros for the oven, delivery included.",
        "1,850",
        "How much does the new oven cost?",
    ),
    (
        "I prefer rye sourdough over white bread, always.",
        "Rye sourdough it is; I'll keep white bread out of the suggestions.",
        "rye sourdough",
        "Which bread do I prefer?",
    ),
)

SMALL_TALK = (
    ("How long should I proof a batch of croissants?", "Usually about 2 hours at room temperature."),
    ("Any tips for a tidy counter at closing time?", "Wipe as you go and keep a bench scraper handy."),
    ("What is a good warm-up before a run?", "Ten minutes of brisk walking and a few leg swings."),
    ("Can you suggest a podcast for the morning shift?", "Try a history podcast; episodes run 40 minutes."),
    ("How do I keep the starter alive on holiday?", "Feed it, refrigerate it, and it will wait a week."),
    ("What should I water the tomatoes with?", "Rainwater in the morning, around 1 litre per plant."),
    ("Is it worth repainting the shop sign?", "A fresh coat in a bold colour usually pays off."),
    ("How can I sleep better before early shifts?", "Keep the room dark and cool, and skip late coffee."),
)


def chat_script(exchanges: int) -> Iterator[tuple[str, str]]:
    """(role, content) in order: the planted facts first, then small talk with tool calls."""
    for user, echo, _, _ in PLANTED:
        yield "user", user
        yield "assistant", echo
    for i in range(exchanges):
        question, answer = SMALL_TALK[i % len(SMALL_TALK)]
        yield "user", f"{question} (asking for day {i})"
        if i % 25 == 0:  # now and then the assistant calls a tool before answering
            yield "assistant", "Let me check the forecast first."
            yield "tool", f'{{"city": "Bodø", "temp_c": {i % 7}, "wind_kmh": {10 + i % 5}}}'
        yield "assistant", answer


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionManager]:
    """400 exchanges after the facts on the default config: several commits through the turn trigger."""
    path: Path = tmp_path_factory.mktemp("retention") / "chat.db"
    manager = SessionManager(SQLiteStore(path), config=MemoryConfig())
    for role, content in chat_script(400):
        manager.add_message(SESSION, role, content)
    manager.wait_for_tasks()
    yield manager
    manager.close()


def test_the_chat_commits_many_times_and_archives_the_facts(chat: SessionManager) -> None:
    archived = [m for m in chat.get_history(SESSION) if m.status == "archived"]
    assert len(chat.get_context(SESSION, 4000).archives) >= 3
    assert any(m.content == PLANTED[0][0] for m in archived)  # recall, not recency, must find them


@pytest.mark.parametrize(("fact", "question"), [(p[2], p[3]) for p in PLANTED])
def test_with_the_query_each_fact_is_in_a_small_context(
    chat: SessionManager, fact: str, question: str
) -> None:
    ctx = chat.get_context(SESSION, 600, query=question)
    assert ctx.token_count <= 600
    assert fact in ctx.to_text()


def test_without_a_query_the_summary_keeps_names_places_dates_numbers(chat: SessionManager) -> None:
    ctx = chat.get_context(SESSION, 4000)
    for _, _, fact, _ in PLANTED:
        assert fact in ctx.summary
    facts = (parse_sections(ctx.summary) or {}).get("Facts", [])
    assert facts and not any(f.rstrip().endswith("?") for f in facts)  # questions are not facts


def test_each_abstract_says_what_its_span_was_about(chat: SessionManager) -> None:
    archives = chat.get_context(SESSION, 4000).archives
    first = min(archives, key=lambda a: a.first_seq)
    assert "Ingrid" in first.abstract or "Solberg" in first.abstract
    for archive in archives:
        assert len(archive.abstract) <= 100 and not archive.abstract.startswith("Question")


@pytest.fixture(scope="module")
def demo_summary() -> dict[str, list[str]]:
    """The running summary of the scripted demo conversation, on the demo's own config."""
    with InMemoryStore() as store:
        manager = SessionManager(store, config=DEMO_CONFIG)
        for user, assistant in demo_script(300):
            manager.add_message("demo", "user", user)
            manager.add_message("demo", "assistant", assistant)
        manager.wait_for_tasks()
        summary = manager.get_context("demo", 4000).archives[0].overview
        manager.close()
    parsed = parse_sections(summary)
    assert parsed is not None
    return parsed


def test_demo_topics_are_content_words(demo_summary: dict[str, list[str]]) -> None:
    """Regression (issue 10 item 13): the topics were "keep, thinking, quick, said, remind"."""
    topics = {t.casefold() for t in demo_summary["Topics"]}
    assert topics and not topics & {"keep", "thinking", "quick", "said", "remind", "revisit", "move", "list"}
    subjects = {"slides", "packing", "pack", "museum", "museums", "dinner", "weather", "rehearse", "talk"}
    assert topics & subjects


def test_demo_decisions_are_decisions(demo_summary: dict[str, list[str]]) -> None:
    """Regression (issue 10 item 13): "Let's revisit ... once more" was listed as a decision."""
    assert not any("revisit" in d.casefold() for d in demo_summary.get("Decisions", []))
    assert not any("remind me what" in loop.casefold() for loop in demo_summary.get("Open loops", []))


def test_demo_facts_keep_the_early_facts_and_no_questions(demo_summary: dict[str, list[str]]) -> None:
    facts = " ".join(demo_summary["Facts"])
    for needle in ("Ada Lovelace", "TP1357", "3,200", "AUR-88412", "16 May 2025", "Grace Hopper"):
        assert needle in facts
    assert not any(f.endswith("?") for f in demo_summary["Facts"])


def test_questions_are_not_facts() -> None:
    """Regression (issue 10 item 13): "Question 0: what should I see on day 0?" was a fact."""
    sights = ("Belém Tower", "Jerónimos Monastery", "Alfama", "LX Factory", "Oceanário", "Sintra")
    messages = []
    for day, sight in enumerate(sights):
        messages.append({"role": "user", "content": f"Question {day}: what should I see on day {day}?"})
        messages.append({"role": "assistant", "content": f"On day {day}, visit {sight} at {9 + day}:00."})
    overview, _ = ExtractiveCompressor().compress(messages)
    facts = (parse_sections(overview) or {}).get("Facts", [])
    assert facts and all("Question" not in f for f in facts)
    assert any("Belém Tower" in f for f in facts)


# -- the cross-session benchmark's plumbing (benchmarks/locomo_cross_session.py, issue 12) --------


@dataclass(frozen=True)
class _Turn:
    """The shared scorer's turn, as far as the plug-ins read it."""

    session: int
    date: str
    speaker: str
    text: str

    def render(self) -> str:
        return f"[{self.date}] {self.speaker}: {self.text}"


TWO_SESSIONS = (
    _Turn(1, "1:56 pm on 8 May, 2023", "Ingrid", "Hi! I moved to Tromsø last autumn, right by the harbour."),
    _Turn(1, "1:56 pm on 8 May, 2023", "Bo", "Tromsø by the harbour sounds lovely."),
    _Turn(1, "1:56 pm on 8 May, 2023", "Ingrid", "I prefer rye sourdough over white bread, always."),
    _Turn(1, "1:56 pm on 8 May, 2023", "Bo", "Rye sourdough, noted."),
    _Turn(2, "10:37 am on 27 June, 2023", "Ingrid", "The bakery opened last week, finally."),
    _Turn(2, "10:37 am on 27 June, 2023", "Bo", "Congratulations on the bakery!"),
)


def test_locomo_session_dates_parse_as_utc() -> None:
    assert xs.session_time("1:56 pm on 8 May, 2023") == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert xs.session_time("not a date") is None


def test_each_locomo_session_is_its_own_committed_session_of_one_user() -> None:
    memory = xs.CrossSessionMemory("conv-x", TWO_SESSIONS[0].render())
    try:
        for turn in TWO_SESSIONS:
            memory.add(turn)
        memory.context(1000)
        sessions = memory.manager.list_sessions(memory.ctx)
        assert sorted(s.session_id for s in sessions) == ["conv-x/session-1", "conv-x/session-2"]
        assert all(s.user_id == "conv-x" and s.account_id == "locomo" for s in sessions)
        first = memory.manager.get_history("conv-x/session-1", memory.ctx)
        assert [m.role for m in first] == ["user", "assistant", "user", "assistant"]
        assert all(m.status == "archived" for m in first)  # committed when the session ended
        assert first[0].created_at == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
        assert memory.manager.get_history(xs.NEW_SESSION, memory.ctx) == []  # asking stores nothing
    finally:
        memory.close()


def test_what_the_user_said_in_session_one_reaches_a_new_session() -> None:
    memory = xs.CrossSessionMemory("conv-x")
    try:
        for turn in TWO_SESSIONS:
            memory.add(turn)
        assert any("Tromsø" in m for m in memory.memory_texts())
        text = memory.context(600, query="Which town did I move to last autumn?")
        assert "Tromsø" in text
        assert "rye sourdough" in memory.context(600, query="Which bread do I prefer?")
    finally:
        memory.close()


def test_the_factory_refuses_turns_of_another_conversation() -> None:
    data = [{"sample_id": "conv-a"}, {"sample_id": "conv-b"}]
    factory = xs.ConversationFactory(data, ["[d] A: first of a", "[d] B: first of b"], xs.CrossSessionMemory)
    try:
        first = factory()
        assert first.ctx.user_id == "conv-a"
        with pytest.raises(RuntimeError, match="conv-a"):
            first.add(_Turn(1, "d", "B", "first of b"))
        assert factory().ctx.user_id == "conv-b"
        assert factory().ctx.user_id == "conv-a"  # the next budget starts over
    finally:
        factory.close()


def test_last_session_truncation_keeps_the_newest_turns_of_the_last_session_only() -> None:
    baseline = xs.LastSessionTruncation()
    for turn in TWO_SESSIONS:
        baseline.add(turn)
    assert baseline.context(None).splitlines() == [t.render() for t in TWO_SESSIONS[4:]]
    last = TWO_SESSIONS[5].render()
    assert baseline.context((len(last) + 1 + 3) // 4) == last
