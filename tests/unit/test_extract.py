"""Long-term memory extraction: the rule-based and LLM extractors, write planning, ranking."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel

from ogmem_memory.errors import AccessDeniedError, ConfigError, InvalidInputError
from ogmem_memory.extract import (
    ExtractionOutcome,
    LLMExtractor,
    MemoryCandidate,
    MemoryExtractor,
    MemoryRecord,
    RuleBasedExtractor,
    WritePlan,
    apply_plans,
    is_single_valued,
    memory_uri,
    normalize_key,
    parse_memories_output,
    plan_writes,
    profile_memories,
    rank_memories,
    render_memories,
    tool_memories,
)
from ogmem_memory.models import RequestContext
from ogmem_memory.tokens import EstimatingTokenCounter
from ogmem_memory.usage import UsageTracker

CTX = RequestContext(account_id="acme", user_id="ada", agent_id="helper", session_id="s1")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def user(text: str, mid: str = "m1", **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": text, "id": mid, **extra}


def assistant(text: str, mid: str = "a1") -> dict[str, Any]:
    return {"role": "assistant", "content": text, "id": mid}


def extract(*texts: str) -> list[MemoryCandidate]:
    return RuleBasedExtractor().extract([user(t, f"m{i}") for i, t in enumerate(texts)])


def ids() -> Iterator[str]:
    n = 0
    while True:
        yield f"mem_{n:012x}"
        n += 1


class Memory:
    """The lead's storage in miniature: plan and apply against what the previous commits stored."""

    def __init__(self, extractor: MemoryExtractor | None = None) -> None:
        self.extractor: MemoryExtractor = extractor or RuleBasedExtractor()
        self.records: dict[str, MemoryRecord] = {}
        self._ids = ids()
        self._day = 0

    def commit(self, *texts: str, session_id: str = "s1", threshold: float = 0.5) -> dict[str, Any]:
        self._day += 1
        messages = [user(t, f"{session_id}-{i}") for i, t in enumerate(texts)]
        existing = list(self.records.values())
        plans = plan_writes(self.extractor.extract(messages), existing, confidence_threshold=threshold)
        upserts, result = apply_plans(
            plans,
            existing,
            CTX,
            session_id=session_id,
            now=T0 + timedelta(days=self._day),
            new_id=lambda: next(self._ids),
        )
        self.records.update((r.memory_id, r) for r in upserts)
        return result

    def by_key(self, key: str) -> list[MemoryRecord]:
        return [r for r in self.records.values() if r.key == key]


# --- the rule-based extractor -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category", "key", "content"),
    [
        ("Hi, I'm Ada!", "profile", "user.name", "User's name is Ada."),
        ("My name is Ada Lovelace.", "profile", "user.name", "User's name is Ada Lovelace."),
        ("I live in Lisbon.", "profile", "user.location", "User lives in Lisbon."),
        (
            "On 12 March 2023, I moved to Porto.",
            "profile",
            "user.location",
            "User moved to Porto on 12 March 2023.",
        ),
        ("I work at Google.", "profile", "user.employer", "User works at Google."),
        (
            "I'm a software engineer at Acme.",
            "profile",
            "user.occupation",
            "User is a software engineer at Acme.",
        ),
        ("I'm 34 years old.", "profile", "user.age", "User is 34 years old."),
        ("I was born in 1990.", "profile", "user.birthday", "User was born in 1990."),
        ("I'm originally from Brazil.", "profile", "user.hometown", "User is originally from Brazil."),
        ("I'm vegetarian.", "profile", "user.diet", "User is vegetarian."),
        ("I speak Portuguese.", "profile", "user.language:portuguese", "User speaks Portuguese."),
        ("I like Python.", "preferences", "pref:python", "User likes Python."),
        ("I really love hiking in the mountains.", "preferences", "pref:hiking", "User really loves hiking"),
        ("I don't like Java.", "preferences", "pref:java", "User doesn't like Java."),
        ("I prefer tea over coffee.", "preferences", "pref:tea", "User prefers tea over coffee."),
        ("I'm allergic to peanuts.", "preferences", "pref:allergy-peanut", "User is allergic to peanuts."),
        (
            "My favourite color is blue.",
            "preferences",
            "pref:favourite-color",
            "User's favourite color is blue.",
        ),
        ("My cat is called Whiskers.", "entities", "entity:cat", "User's cat is called Whiskers."),
        ("My sister's name is Maria.", "entities", "entity:sister", "User's sister's name is Maria."),
        ("I have a dog named Rex.", "entities", "entity:dog", "User has a dog named Rex."),
        ("I got married in June 2019.", "events", "event:got-married", "User got married in June 2019."),
        ("I graduated from MIT in 2015.", "events", "event:graduated", "User graduated from MIT in 2015."),
        (
            "Let's go with PostgreSQL for the backend.",
            "decisions",
            "decision:postgresql",
            "Decision: go with PostgreSQL for the backend.",
        ),
        (
            "We decided to use SQLite for tests.",
            "decisions",
            "decision:sqlite",
            "Decision: use SQLite for tests.",
        ),
    ],
)
def test_each_statement_kind(text: str, category: str, key: str, content: str) -> None:
    [candidate] = extract(text)
    assert (candidate.category, candidate.key) == (category, key)
    assert candidate.content.startswith(content)
    assert candidate.source_message_ids == ("m0",)
    assert 0.5 <= candidate.confidence <= 1.0


def test_one_message_with_several_statements_gives_one_candidate_each() -> None:
    found = extract("I'm Ada and I live in Lisbon, and I love Python.")
    assert [(c.key, c.content) for c in found] == [
        ("user.name", "User's name is Ada."),
        ("user.location", "User lives in Lisbon."),
        ("pref:python", "User loves Python."),
    ]


def test_compound_subject_keeps_the_other_person() -> None:
    [event] = extract("My wife and I went to Paris last week.")
    assert event.key == "event:went-paris"
    assert event.content.startswith("User's wife and the user went to Paris last week")


def test_relative_dates_are_anchored_to_the_day_they_were_said() -> None:
    said = datetime(2023, 5, 8, 10, tzinfo=UTC)
    [event] = RuleBasedExtractor().extract([user("I went to Paris last week.", created_at=said)])
    assert event.content == "User went to Paris last week (said on 8 May 2023)."
    [again] = RuleBasedExtractor().extract([user("I went to Paris last week.", created_at=said.isoformat())])
    assert again.content == event.content


@pytest.mark.parametrize(
    "text",
    [
        "Where do I live?",
        "Do you like Python?",
        "what's my name",
        "Can you tell me about Lisbon",
        "Hello!",
        "Thanks a lot, bye",
        "I'm tired.",
        "I'm fine, thanks.",
        "If I moved to Paris I would be happy.",
        "I wish I lived in Lisbon.",
        "I live in fear of deadlines.",
        "I moved to a new apartment.",
        "I love it!",
        "I like your idea.",
        "Let's discuss this later.",
        "Let's do it.",
        "```python\nI like Python = True\n```",
    ],
)
def test_questions_greetings_and_non_statements_are_not_memories(text: str) -> None:
    assert extract(text) == []


def test_only_the_users_statements_count_not_the_assistants() -> None:
    messages = [
        assistant("I live in Paris and I love cheese.", "a1"),
        user("Cool. I live in Lisbon.", "u1"),
        {"role": "system", "content": "My name is Bot.", "id": "s1"},
        {"role": "tool", "content": "I like JSON.", "id": "t1"},
    ]
    found = RuleBasedExtractor().extract(messages)
    assert [(c.content, c.source_message_ids) for c in found] == [("User lives in Lisbon.", ("u1",))]


@pytest.mark.parametrize(
    ("question", "answer", "stated", "content"),
    [
        ("So you live in Lisbon?", "Yes.", "I live in Lisbon.", "User lives in Lisbon."),
        ("Is your name Ada?", "Yes, that's right", "My name is Ada.", "User's name is Ada."),
        ("You're a teacher, right?", "Correct", "I'm a teacher.", "User is a teacher."),
        (
            "Shall we go with PostgreSQL?",
            "Sounds good",
            "Let's go with PostgreSQL.",
            "Decision: go with PostgreSQL.",
        ),
    ],
)
def test_a_fact_the_user_confirms_is_extracted_at_lower_confidence(
    question: str, answer: str, stated: str, content: str
) -> None:
    [confirmed] = RuleBasedExtractor().extract([assistant(question, "a1"), user(answer, "u1")])
    [direct] = extract(stated)
    assert (confirmed.key, confirmed.content) == (direct.key, direct.content) == (direct.key, content)
    assert confirmed.source_message_ids == ("a1", "u1")
    assert confirmed.confidence < direct.confidence


def test_the_assistants_own_first_person_never_becomes_the_users() -> None:
    assert RuleBasedExtractor().extract([assistant("I love Python too!"), user("yes")]) == []
    assert RuleBasedExtractor().extract([assistant("Do you like Python?"), user("No")]) == []


def test_hedged_statements_have_lower_confidence() -> None:
    [sure] = extract("I like Rust.")
    [hedged] = extract("I think I like Rust.")
    assert hedged.key == sure.key
    assert hedged.confidence < sure.confidence


def test_extraction_is_deterministic() -> None:
    texts = ["I'm Ada.", "I moved to Porto on 12 March 2023.", "Let's go with SQLite.", "I like tea."]
    assert extract(*texts) == extract(*texts)


def test_non_mapping_messages_are_rejected() -> None:
    with pytest.raises(InvalidInputError):
        RuleBasedExtractor().extract(["I like Python."])  # type: ignore[list-item]


# --- planning and applying writes --------------------------------------------------------


def test_the_same_fact_three_times_in_one_batch_is_one_memory() -> None:
    memory = Memory()
    result = memory.commit("I like Python.", "I like Python!", "I really like Python.")
    assert [p["operation"] for p in result["plans"]] == ["create", "merge", "merge"]
    [record] = memory.by_key("pref:python")
    assert record.source_message_ids == ("s1-0", "s1-1", "s1-2")
    assert record.confidence > 0.8
    assert len({p["target_uri"] for p in result["plans"]}) == 1


def test_the_same_fact_in_later_sessions_merges_into_one_memory() -> None:
    memory = Memory()
    memory.commit("I like Python.", session_id="s1")
    second = memory.commit("I love Python.", session_id="s2")
    third = memory.commit("I like Python.", session_id="s3")
    assert [p["operation"] for p in second["plans"] + third["plans"]] == ["merge", "merge"]
    [record] = memory.records.values()
    assert record.content == "User likes Python."
    assert record.source_message_ids == ("s1-0", "s2-0", "s3-0")
    assert record.source_session_id == "s1"


def test_a_moved_city_updates_the_location_and_keeps_its_history() -> None:
    memory = Memory()
    memory.commit("I live in Lisbon.", session_id="s1")
    result = memory.commit("I moved to Porto.", session_id="s2")
    [plan] = result["plans"]
    assert (plan["action"], plan["operation"]) == ("merge", "update")
    assert "content" in plan["merged_fields"] and "history" in plan["merged_fields"]
    [record] = memory.by_key("user.location")
    assert record.content == "User moved to Porto."
    assert record.history == ("User lives in Lisbon.",)
    assert record.source_session_id == "s2"
    assert record.source_message_ids == ("s2-0",)


def test_a_restatement_with_more_detail_merges_and_adopts_the_richer_content() -> None:
    memory = Memory()
    memory.commit("I like Python.")
    [plan] = memory.commit("I like Python for data science.")["plans"]
    assert plan["operation"] == "merge"
    [record] = memory.records.values()
    assert record.content == "User likes Python for data science."
    assert record.history == ("User likes Python.",)
    [poorer] = memory.commit("I like Python.")["plans"]
    assert poorer["operation"] == "merge"
    assert memory.by_key("pref:python")[0].content == "User likes Python for data science."


def test_a_reversed_stance_updates_the_preference() -> None:
    memory = Memory()
    memory.commit("I love Python.")
    [plan] = memory.commit("I hate Python.")["plans"]
    assert plan["operation"] == "update"
    [record] = memory.by_key("pref:python")
    assert (record.content, record.history) == ("User hates Python.", ("User loves Python.",))


def test_multi_valued_keys_keep_distinct_memories() -> None:
    memory = Memory()
    memory.commit("My cat is called Whiskers.", "My cat is called Tom.", "I like tea.", "I like coffee.")
    assert sorted(r.content for r in memory.by_key("entity:cat")) == [
        "User's cat is called Tom.",
        "User's cat is called Whiskers.",
    ]
    assert len(memory.records) == 4
    assert not is_single_valued("entity:cat") and is_single_valued("user.location")


def test_the_same_content_under_another_key_merges() -> None:
    existing = [record("mem_a", "pref:python-language", "User likes Python.")]
    [plan] = plan_writes([MemoryCandidate("preferences", "pref:python", "User likes Python.", 0.8)], existing)
    assert (plan.action, plan.target) == ("merge", existing[0])


def test_inactive_memories_are_neither_merged_into_nor_updated() -> None:
    deleted = record("mem_a", "user.location", "User lives in Lisbon.", active=False)
    [plan] = plan_writes(
        [MemoryCandidate("profile", "user.location", "User lives in Lisbon.", 0.9)], [deleted]
    )
    assert plan.action == "create"


def test_confidence_threshold_skips_and_is_counted() -> None:
    memory = Memory()
    result = memory.commit("I think I like Rust.", "I like tea.", threshold=0.6)
    assert [p["operation"] for p in result["plans"]] == ["skip", "create"]
    assert result["plans"][0]["target_uri"] == ""
    assert (result["candidates_extracted"], result["candidates_filtered"]) == (2, 1)
    assert (result["writes_completed"], result["writes_skipped"]) == (1, 1)
    assert [r.content for r in memory.records.values()] == ["User likes tea."]
    assert Memory().commit("I think I like Rust.")["writes_completed"] == 1  # 0.55 passes the default 0.5


@pytest.mark.parametrize("threshold", [-0.1, 1.5, True, "0.5"])
def test_invalid_threshold_is_a_config_error(threshold: Any) -> None:
    with pytest.raises(ConfigError):
        plan_writes([], [], confidence_threshold=threshold)


def test_result_has_the_seed_shape() -> None:
    result = Memory().commit("I live in Lisbon.", "I moved to Porto.")
    assert set(result) == {
        "candidates_extracted",
        "candidates_filtered",
        "writes_completed",
        "writes_skipped",
        "writes_failed",
        "plans",
    }
    assert result["candidates_extracted"] == 2 and result["writes_completed"] == 2
    assert result["writes_failed"] == 0
    create, update = result["plans"]
    assert set(create) == {
        "action",
        "operation",
        "target_uri",
        "memory_id",
        "category",
        "key",
        "content",
        "reason",
        "merged_fields",
    }
    assert create["action"] == "create" and update["action"] == "merge"  # the seed knows create|merge|skip
    assert create["target_uri"] == "ogmem://memories/acme/ada/mem_000000000000" == update["target_uri"]
    assert (update["category"], update["content"]) == ("profile", "User moved to Porto.")
    # The seed's _extract_memories summarises exactly these two keys of non-skip plans.
    assert [f"- [{p['action']}] {p['target_uri']}" for p in result["plans"]] == [
        "- [create] ogmem://memories/acme/ada/mem_000000000000",
        "- [merge] ogmem://memories/acme/ada/mem_000000000000",
    ]


def test_merges_and_updates_of_one_memory_yield_one_record_in_its_final_state() -> None:
    existing = [record("mem_a", "user.location", "User lives in Lisbon.")]
    candidates = [
        MemoryCandidate("profile", "user.location", "User lives in Lisbon.", 0.9, ("x1",)),
        MemoryCandidate("profile", "user.location", "User moved to Porto.", 0.9, ("x2",)),
        MemoryCandidate("profile", "user.location", "User moved to Porto.", 0.9, ("x3",)),
    ]
    plans = plan_writes(candidates, existing)
    assert [p.action for p in plans] == ["merge", "update", "merge"]
    records, _ = apply_plans(plans, existing, CTX, now=T0)
    [final] = records
    assert final.content == "User moved to Porto."
    assert final.history == ("User lives in Lisbon.",)
    assert final.source_message_ids == ("x2", "x3")
    assert final.created_at == existing[0].created_at


def test_apply_refuses_another_users_memory() -> None:
    theirs = record("mem_a", "user.location", "User lives in Lisbon.", user_id="bob")
    plans = plan_writes([MemoryCandidate("profile", "user.location", "User moved to Porto.", 0.9)], [theirs])
    with pytest.raises(AccessDeniedError):
        apply_plans(plans, [theirs], CTX, now=T0)


def test_apply_refuses_targets_it_was_not_given_and_bad_links() -> None:
    mine = record("mem_a", "user.location", "User lives in Lisbon.")
    cand = MemoryCandidate("profile", "user.location", "User moved to Porto.", 0.9)
    with pytest.raises(InvalidInputError):
        apply_plans([WritePlan("update", cand, target=mine)], [], CTX, now=T0)
    with pytest.raises(InvalidInputError):
        apply_plans([WritePlan("merge", cand, into=0)], [], CTX, now=T0)
    with pytest.raises(InvalidInputError):
        apply_plans([WritePlan("create", cand)], [], CTX, now=datetime(2024, 1, 1))
    with pytest.raises(InvalidInputError):
        apply_plans(
            [WritePlan("create", cand), WritePlan("create", cand)], [], CTX, now=T0, new_id=lambda: "x"
        )


def test_created_memories_take_the_callers_scope_and_session() -> None:
    plans = plan_writes([MemoryCandidate("profile", "user.name", "User's name is Ada.", 0.9, ("m1",))], [])
    [created], _ = apply_plans(plans, [], CTX, now=T0)
    assert (created.account_id, created.user_id, created.agent_id) == ("acme", "ada", "helper")
    assert created.source_session_id == "s1"
    assert created.memory_id.startswith("mem_") and len(created.memory_id) == 16
    assert created.uri == f"ogmem://memories/acme/ada/{created.memory_id}"


def test_memory_uri_encodes_its_parts() -> None:
    assert memory_uri("a/b", "u s", "mem_1") == "ogmem://memories/a%2Fb/u%20s/mem_1"


# --- values --------------------------------------------------------------------------------


def record(
    memory_id: str,
    key: str,
    content: str,
    *,
    user_id: str = "ada",
    category: Any = None,
    active: bool = True,
    updated: datetime = T0,
) -> MemoryRecord:
    return MemoryRecord(
        memory_id=memory_id,
        account_id="acme",
        user_id=user_id,
        agent_id="helper",
        category=category or ("profile" if key.startswith("user.") else "preferences"),
        key=key,
        content=content,
        confidence=0.8,
        source_session_id="s0",
        source_message_ids=("m0",),
        created_at=T0,
        updated_at=updated,
        active=active,
    )


def test_record_round_trips_through_json() -> None:
    original = replace(
        record("mem_a", "user.location", "User moved to Porto."), history=("User lives in Lisbon.",)
    )
    data = json.loads(json.dumps(original.to_dict()))
    assert MemoryRecord.from_dict(data) == original


@pytest.mark.parametrize(
    "change",
    [
        {"category": "gossip"},
        {"confidence": 1.5},
        {"confidence": float("nan")},
        {"content": "   "},
        {"key": "!!!"},
        {"created_at": "yesterday"},
        {"memory_id": ""},
        {"history": "not a tuple"},
    ],
)
def test_invalid_records_are_rejected(change: dict[str, Any]) -> None:
    data = record("mem_a", "user.location", "User lives in Lisbon.").to_dict() | change
    with pytest.raises(InvalidInputError):
        MemoryRecord.from_dict(data)


def test_from_dict_names_a_missing_field() -> None:
    data = record("mem_a", "user.location", "User lives in Lisbon.").to_dict()
    del data["content"]
    with pytest.raises(InvalidInputError, match="content"):
        MemoryRecord.from_dict(data)


def test_candidate_normalises_key_and_content_and_validates() -> None:
    cand = MemoryCandidate("preferences", "  Pref: Python Language ", "User  likes\nPython.", 1)
    assert (cand.key, cand.content, cand.confidence) == ("pref:-python-language", "User likes Python.", 1.0)
    assert normalize_key("User.Location") == "user.location"
    for bad in ({"confidence": True}, {"confidence": -0.1}, {"category": "x"}, {"content": ""}):
        kwargs: dict[str, Any] = {
            "category": "profile",
            "key": "user.name",
            "content": "Ada",
            "confidence": 0.5,
        }
        with pytest.raises(InvalidInputError):
            MemoryCandidate(**(kwargs | bad))


# --- the LLM extractor ---------------------------------------------------------------------

GOOD = [
    {
        "category": "profile",
        "key": "user.location",
        "content": "User lives in Lisbon.",
        "confidence": 0.9,
        "sources": [1],
    },
    {"category": "preferences", "key": "pref:python", "content": "User likes Python.", "confidence": 0.8},
]
MESSAGES = [
    user("I live in Lisbon and I like Python.", "u1", created_at=T0),
    assistant("Nice, Lisbon is lovely.", "a1"),
]


class Scripted:
    """A plain callable model with canned replies; records its prompts."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_llm_extractor_parses_valid_json_from_a_callable() -> None:
    llm = Scripted(json.dumps(GOOD))
    found = LLMExtractor(llm).extract(MESSAGES, session_summary="- [create] ogmem://memories/acme/ada/mem_1")
    assert [(c.key, c.content, c.source_message_ids) for c in found] == [
        ("user.location", "User lives in Lisbon.", ("u1",)),
        ("pref:python", "User likes Python.", ("u1", "a1")),  # no sources: every message of the prompt
    ]
    [prompt] = llm.prompts
    assert "[1] (2024-01-01) user: I live in Lisbon and I like Python." in prompt
    assert "[2] assistant: Nice, Lisbon is lovely." in prompt
    assert "mem_1" in prompt  # what was already extracted is shown, so it is not repeated


def test_llm_output_in_a_fence_or_an_object_is_accepted() -> None:
    fenced = "Here you go:\n```json\n" + json.dumps({"memories": GOOD}) + "\n```"
    assert len(parse_memories_output(fenced, ["u1"])) == 2
    assert parse_memories_output("[]", ["u1"]) == []


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "I could not find anything.",
        '{"overview": "not memories"}',
        json.dumps([{"category": "gossip", "key": "k", "content": "c", "confidence": 0.5}]),
        json.dumps([{"category": "profile", "key": "user.name", "content": "", "confidence": 0.5}]),
        json.dumps([{"category": "profile", "key": "user.name", "content": "Ada", "confidence": "high"}]),
        json.dumps([{"category": "profile", "key": "user.name", "content": "Ada"}]),
        json.dumps(["User likes Python."]),
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_malformed_llm_output_falls_back_with_a_warning(reply: str, caplog: pytest.LogCaptureFixture) -> None:
    extractor = LLMExtractor(Scripted(reply))
    with caplog.at_level(logging.WARNING, logger="ogmem"):
        outcome = extractor.extract_detailed(MESSAGES)
    assert outcome.used == "fallback" and len(outcome.errors) == 1
    assert [c.content for c in outcome.candidates] == ["User lives in Lisbon.", "User likes Python."]
    assert outcome.candidates == tuple(RuleBasedExtractor().extract(MESSAGES))
    [warning] = [r for r in caplog.records if r.name == "ogmem.extract"]
    assert warning.levelno == logging.WARNING and "RuleBasedExtractor" in warning.getMessage()


def test_a_failing_llm_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ogmem.extract"):
        found = LLMExtractor(Scripted(RuntimeError("rate limited"))).extract(MESSAGES)
    assert [c.key for c in found] == ["user.location", "pref:python"]
    assert "rate limited" in caplog.text


def test_a_custom_fallback_is_used() -> None:
    class Nothing:
        def extract(self, messages: Sequence[Any], *, session_summary: str = "") -> list[MemoryCandidate]:
            return []

    assert LLMExtractor(Scripted("nope"), fallback=Nothing()).extract(MESSAGES) == []


def test_llm_extractor_drives_a_langchain_chat_model() -> None:
    model = FakeListChatModel(responses=[json.dumps(GOOD), "not json"])
    extractor = LLMExtractor(model)
    first = extractor.extract_detailed(MESSAGES)
    assert first.used == "llm" and [c.key for c in first.candidates] == ["user.location", "pref:python"]
    second = extractor.extract_detailed(MESSAGES)
    assert second.used == "fallback"


def test_llm_extractor_accepts_a_complete_model() -> None:
    class Response:
        def __init__(self, text: str) -> None:
            self.text = text

    class CompleteModel:
        def complete(self, prompt: str) -> Response:
            return Response(json.dumps(GOOD[:1]))

    assert [c.key for c in LLMExtractor(CompleteModel()).extract(MESSAGES)] == ["user.location"]


def test_long_input_is_split_into_bounded_prompts() -> None:
    llm = Scripted("[]")
    messages = [user(f"Message number {i} is about the weather in town today.", f"u{i}") for i in range(100)]
    extractor = LLMExtractor(llm, max_input_tokens=1000)
    outcome = extractor.extract_detailed(messages)
    assert outcome == ExtractionOutcome((), "llm", ())
    assert len(llm.prompts) > 1
    joined = "\n".join(llm.prompts)
    assert all(f"Message number {i} " in joined for i in range(100))
    assert all(EstimatingTokenCounter().count(p) <= 1000 for p in llm.prompts)
    assert all(p.count("[1] user:") == 1 for p in llm.prompts)  # numbering restarts per prompt


def test_llm_extractor_rejects_what_is_not_a_model() -> None:
    with pytest.raises(ConfigError):
        LLMExtractor(42)
    with pytest.raises(ConfigError):
        LLMExtractor(Scripted("[]"), max_input_tokens=10)


def test_extract_module_imports_no_framework() -> None:
    code = (
        "import sys, ogmem_memory.extract; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'langchain_core', 'langchain', 'llama_index'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- ranking, profile, rendering -----------------------------------------------------------


def sample_memories() -> list[MemoryRecord]:
    day = timedelta(days=1)
    return [
        record("m_event", "event:went-paris", "User went to Paris.", category="events", updated=T0 + 5 * day),
        record("m_pref_old", "pref:tea", "User likes tea.", updated=T0),
        record("m_pref_new", "pref:python", "User likes Python.", updated=T0 + 3 * day),
        record("m_loc", "user.location", "User moved to Porto.", updated=T0 + day),
        record("m_name", "user.name", "User's name is Ada.", updated=T0 + 2 * day),
        record("m_gone", "user.employer", "User works at Google.", active=False),
        record(
            "m_cat", "entity:cat", "User's cat is called Whiskers.", category="entities", updated=T0 + 4 * day
        ),
    ]


def test_rank_memories_by_words_shared_with_the_query() -> None:
    memories = sample_memories()
    assert [m.memory_id for m in rank_memories(memories, "Where does the user live now?")] == ["m_loc"]
    # "called" also names user.name: the cat, matching two words, comes first.
    assert [m.memory_id for m in rank_memories(memories, "What is my cat called?")] == ["m_cat", "m_name"]
    assert [m.memory_id for m in rank_memories(memories, "python or tea?", limit=1)] == ["m_pref_new"]
    assert rank_memories(memories, "Google job") == []  # the inactive memory never comes back
    assert rank_memories(memories, "the and of") == []
    with pytest.raises(InvalidInputError):
        rank_memories(memories, "x", limit=-1)


def test_profile_lists_profile_then_preferences_newest_first() -> None:
    ordered = [m.memory_id for m in profile_memories(sample_memories())]
    assert ordered == ["m_name", "m_loc", "m_pref_new", "m_pref_old", "m_cat", "m_event"]
    assert [m.memory_id for m in profile_memories(sample_memories(), limit=3)] == [
        "m_name",
        "m_loc",
        "m_pref_new",
    ]


def test_render_memories_as_lines() -> None:
    assert render_memories(profile_memories(sample_memories(), limit=2)) == (
        "- User's name is Ada.\n- User moved to Porto."
    )
    assert render_memories([]) == ""


# --- tool usage ----------------------------------------------------------------------------


def test_tool_memories_from_a_usage_tracker() -> None:
    tracker = UsageTracker()
    for status in ("completed", "completed", "error"):
        tracker.record_tool_call("web_search", status, duration_ms=300)
    tracker.record_tool_call("calculator", "success")
    found = tool_memories(tracker, min_calls=2)
    assert [(c.category, c.key, c.content) for c in found] == [
        (
            "tools",
            "tool:web_search",
            "Tool 'web_search' succeeded in 2 of 3 calls (67%, 1 failed), 300 ms per call on average.",
        )
    ]
    assert [c.key for c in tool_memories(tracker.tool_stats)] == ["tool:calculator", "tool:web_search"]


def test_tool_memories_update_when_the_stats_change() -> None:
    tracker = UsageTracker()
    tracker.record_tool_call("web_search", "completed")
    first = plan_writes(tool_memories(tracker), [])
    [created], _ = apply_plans(first, [], CTX, now=T0)
    assert [p.action for p in plan_writes(tool_memories(tracker), [created])] == ["merge"]
    tracker.record_tool_call("web_search", "error")
    [plan] = plan_writes(tool_memories(tracker), [created])
    assert plan.action == "update"
