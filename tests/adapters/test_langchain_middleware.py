"""OgmemMemoryMiddleware with create_agent: fake tool-calling model, SQLite, no network."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ogmem import OgmemChatMessageHistory, OgmemMemoryMiddleware
from langchain_ogmem.convert import is_summary_message, message_text
from langchain_ogmem.middleware import _fit_current_turn
from langgraph.checkpoint.memory import InMemorySaver

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.errors import AccessDeniedError, ConfigError, InvalidSessionIdError
from ogmem_memory.models import RequestContext
from ogmem_memory.rendering import MEMORIES_HEADER, RECALLED_HEADER
from tests.adapters.langchain_fakes import (
    ASK_PET,
    MEANING,
    PET,
    ConceptEmbeddings,
    FakeToolCallingChatModel,
    ScriptedToolChatModel,
    SummaryChatModel,
    lookup,
)

BUDGET = 500
LOW = MemoryConfig(
    commit_token_threshold=400,
    commit_turn_threshold=6,
    keep_recent_messages=4,
    keep_recent_tokens=120,
    context_token_budget=BUDGET,
)
FACT = "turn 1: my name is Ada Lovelace and my account number is ACC-99812."


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[SessionManager]:
    with SessionManager(f"sqlite:///{tmp_path}/agent.db", config=LOW) as m:
        yield m


ASK = "turn 99: what is my account number again?"


def question(i: int) -> str:
    if i == 1:
        return FACT
    return ASK if i == 99 else f"turn {i}: please check locker {1000 + i} near gate G{i % 9}"


def make_agent(manager: SessionManager, **kwargs: Any) -> tuple[Any, ScriptedToolChatModel]:
    model = ScriptedToolChatModel()
    middleware = OgmemMemoryMiddleware(manager=manager, token_budget=kwargs.pop("token_budget", BUDGET))
    agent = create_agent(model, [lookup], middleware=[middleware], **kwargs)
    return agent, model


def tokens(manager: SessionManager, messages: Sequence[BaseMessage]) -> int:
    return sum(manager.token_counter.count(message_text(m)) for m in messages)


def assert_pairs_whole(messages: Sequence[BaseMessage]) -> None:
    """Every tool result follows its call, and every call is followed by all its results."""
    for i, m in enumerate(messages):
        if isinstance(m, AIMessage) and m.tool_calls:
            results = {t.tool_call_id for t in messages[i + 1 :] if isinstance(t, ToolMessage)}
            assert {c["id"] for c in m.tool_calls} <= results
        if isinstance(m, ToolMessage):
            calls = {c["id"] for a in messages[:i] if isinstance(a, AIMessage) for c in a.tool_calls}
            assert m.tool_call_id in calls


def check_model_inputs(
    manager: SessionManager, model: ScriptedToolChatModel, *, system: str | None = None
) -> None:
    with_summary = 0
    for received in model.received:
        conversation = received
        if system is not None:
            assert isinstance(received[0], SystemMessage) and received[0].text.startswith(system)
            summary = received[0].text[len(system) :].strip()
            conversation = received[1:]
            budgeted = manager.token_counter.count(summary) + tokens(manager, conversation)
            with_summary += bool(summary)
        else:
            budgeted = tokens(manager, received)
            with_summary += is_summary_message(received[0])
        assert budgeted <= BUDGET
        assert_pairs_whole(conversation)
        assert not any(isinstance(m, ToolMessage) for m in conversation[:1])
    assert with_summary > len(model.received) // 2


def expected_transcript(outputs: list[list[BaseMessage]]) -> list[BaseMessage]:
    return [m for out in outputs for m in out]


def check_transcript(manager: SessionManager, thread: str, expected: list[BaseMessage], turns: int) -> None:
    full = OgmemChatMessageHistory(thread, manager=manager, view="full").messages
    assert full == expected  # same messages, same order, ids included: none lost or doubled
    assert len({m.id for m in full}) == len(full)
    assert [m.text for m in full if isinstance(m, HumanMessage)] == [question(i) for i in range(turns)]
    # 50 even turns with a tool call (4 messages), 50 odd ones answered directly (2).
    assert len(full) == sum(4 if i % 2 == 0 else 2 for i in range(turns))


def check_fact_reachable(model: ScriptedToolChatModel) -> None:
    """Asked at turn 100, the model sees the turn-1 fact (summary or recalled turn)."""
    last = model.received[-1]
    assert last[-1].text == ASK
    assert is_summary_message(last[0]) and "ACC-99812" in last[0].text


# -- 100 turns with tool calls -------------------------------------------------------------------


@pytest.mark.slow
def test_100_turns_without_checkpointer(manager: SessionManager) -> None:
    agent, model = make_agent(manager)
    outputs = []
    for i in range(100):
        out = agent.invoke({"messages": [HumanMessage(question(i))]}, {"configurable": {"thread_id": "t"}})
        outputs.append(out["messages"])  # no checkpointer: this turn only
        assert isinstance(out["messages"][0], HumanMessage)
    manager.wait_for_tasks()
    check_model_inputs(manager, model)
    check_transcript(manager, "t", expected_transcript(outputs), 100)
    check_fact_reachable(model)


@pytest.mark.slow
def test_100_turns_with_in_memory_saver(manager: SessionManager) -> None:
    agent, model = make_agent(manager, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "saved"}}
    for i in range(100):
        out = agent.invoke({"messages": [HumanMessage(question(i))]}, config)
    manager.wait_for_tasks()
    check_model_inputs(manager, model)
    # Nothing deleted from the state, nothing stored twice.
    check_transcript(manager, "saved", list(out["messages"]), 100)
    check_fact_reachable(model)


@pytest.mark.slow
async def test_100_turns_async(manager: SessionManager) -> None:
    agent, model = make_agent(manager)
    outputs = []
    for i in range(100):
        out = await agent.ainvoke(
            {"messages": [HumanMessage(question(i))]}, {"configurable": {"thread_id": "a"}}
        )
        outputs.append(out["messages"])
    await manager.await_for_tasks()
    check_model_inputs(manager, model)
    check_transcript(manager, "a", expected_transcript(outputs), 100)
    check_fact_reachable(model)


@pytest.mark.slow
def test_turn_1_facts_are_still_in_the_summary_at_turn_100(manager: SessionManager) -> None:
    agent, model = make_agent(manager)
    for i in range(100):
        agent.invoke({"messages": [HumanMessage(question(i))]}, {"configurable": {"thread_id": "facts"}})
    manager.wait_for_tasks()
    assert "ACC-99812" in manager.list_archives("facts")[0].overview
    summary = model.received[-1][0].text.split("Recalled from")[0]
    assert "ACC-99812" in summary and "Ada Lovelace" in summary


async def test_async_with_checkpointer_and_system_prompt(manager: SessionManager) -> None:
    agent, model = make_agent(manager, checkpointer=InMemorySaver(), system_prompt="You are terse.")
    config = {"configurable": {"thread_id": "as"}}
    for i in range(30):
        out = await agent.ainvoke({"messages": [HumanMessage(question(i))]}, config)
    await manager.await_for_tasks()
    # The summary is folded into the agent's system prompt: one leading system message.
    check_model_inputs(manager, model, system="You are terse.")
    check_transcript(manager, "as", list(out["messages"]), 30)


def test_history_reads_the_agent_conversation(manager: SessionManager) -> None:
    agent, _ = make_agent(manager)
    for i in range(3):
        agent.invoke({"messages": [HumanMessage(question(i))]}, {"configurable": {"thread_id": "shared"}})
    history = OgmemChatMessageHistory("shared", manager=manager)
    assert [m.text for m in history.messages if isinstance(m, HumanMessage)] == [
        question(i) for i in range(3)
    ]


def test_human_summary_role_keeps_a_single_leading_system_message(manager: SessionManager) -> None:
    model = ScriptedToolChatModel()
    middleware = OgmemMemoryMiddleware(manager=manager, token_budget=BUDGET, summary_role="human")
    agent = create_agent(model, [lookup], middleware=[middleware], system_prompt="Be brief.")
    for i in range(20):
        agent.invoke({"messages": [HumanMessage(question(i))]}, {"configurable": {"thread_id": "hr"}})
        manager.wait_for_tasks()
    last = model.received[-1]
    assert last[0] == SystemMessage("Be brief.")
    assert isinstance(last[1], HumanMessage) and is_summary_message(last[1])
    assert not any(isinstance(m, SystemMessage) for m in last[1:])


# -- the README's agent example: a real tool, a fake tool-calling model -------------------------


@tool
def get_weather(city: str) -> str:
    """The weather in ``city``."""
    return f"It is sunny and 24 C in {city}."


def weather_model() -> FakeToolCallingChatModel:
    call = {"name": "get_weather", "args": {"city": "Lisbon"}, "id": "call_w1", "type": "tool_call"}
    return FakeToolCallingChatModel(
        messages=iter(
            [
                AIMessage("", tool_calls=[call]),
                AIMessage("It is sunny and 24 C in Lisbon."),
                AIMessage("You asked about Lisbon: sunny, 24 C."),
            ]
        )
    )


@pytest.mark.parametrize("sync", [True, False], ids=["invoke", "ainvoke"])
async def test_agent_example_stores_the_tool_call_and_keeps_it_in_the_next_prompt(
    tmp_path: Path, sync: bool
) -> None:
    url = f"sqlite:///{tmp_path}/agent-example.db"
    model = weather_model()
    agent = create_agent(model, tools=[get_weather], middleware=[OgmemMemoryMiddleware(url=url)])
    config = {"configurable": {"thread_id": "weather"}}
    turns = [
        {"messages": [{"role": "user", "content": text}]}
        for text in ("Weather in Lisbon?", "What did I ask?")
    ]
    outs = [agent.invoke(t, config) if sync else await agent.ainvoke(t, config) for t in turns]
    assert outs[0]["messages"][-1].text == "It is sunny and 24 C in Lisbon."
    assert outs[1]["messages"][-1].text == "You asked about Lisbon: sunny, 24 C."

    manager = OgmemMemoryMiddleware(url=url).manager
    stored = manager.get_history("weather")
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert stored[2].content == "It is sunny and 24 C in Lisbon."
    assert stored[2].payload is not None and stored[2].payload["data"]["tool_call_id"] == "call_w1"
    assert [m.id for m in stored[:4]] == [m.id for m in outs[0]["messages"]]  # LangGraph's ids, kept

    # Three model calls: the tool call, the answer after the result, the second turn. No
    # checkpointer, so the second turn's state holds only its question: the session supplies
    # the call and its result, in order, whole.
    assert len(model.received) == 3
    prompt = model.received[2]
    assert [type(m) for m in prompt] == [HumanMessage, AIMessage, ToolMessage, AIMessage, HumanMessage]
    call, result = prompt[1], prompt[2]
    assert isinstance(call, AIMessage) and call.tool_calls[0]["args"] == {"city": "Lisbon"}
    assert isinstance(result, ToolMessage) and result.tool_call_id == call.tool_calls[0]["id"] == "call_w1"
    assert result.text == "It is sunny and 24 C in Lisbon."
    assert prompt[-1].text == "What did I ask?"


def test_resent_history_without_checkpointer_is_stored_once(manager: SessionManager) -> None:
    """A client that sends the whole conversation each turn: the ids make the resend a no-op."""
    agent, model = make_agent(manager)
    config = {"configurable": {"thread_id": "resend"}}
    first = agent.invoke({"messages": [HumanMessage(question(0))]}, config)["messages"]
    second = agent.invoke({"messages": [*first, HumanMessage(question(1))]}, config)["messages"]
    stored = manager.get_history("resend")
    assert [m.id for m in stored] == [m.id for m in second]
    assert len(stored) == len(first) + 2
    last_prompt = model.received[-1]
    assert len({m.id for m in last_prompt}) == len(last_prompt)  # nothing doubled for the model


# -- what SummarizationMiddleware 1.5 loses, and we keep ------------------------------------------


def test_a_long_tool_chain_in_one_turn_keeps_progress_and_a_real_summary(manager: SessionManager) -> None:
    """30 tool calls in one turn: no human message in any trim window, the turn exceeds the budget."""

    @tool
    def step(n: int) -> str:
        """Run step ``n`` of the batch job."""
        return f"step {n} done: checksum {n * 7919 % 1000:03d} " + "log line " * 20

    def script(messages: Sequence[BaseMessage]) -> AIMessage:
        last = messages[-1]
        if isinstance(last, HumanMessage) and "batch job" not in last.text:
            return AIMessage(f"Answering {last.text!r}.")
        done = int(last.text.split()[1]) if isinstance(last, ToolMessage) else 0
        if done >= 30:
            return AIMessage("All 30 steps done.")
        call = {"name": "step", "args": {"n": done + 1}, "id": f"s{done + 1}", "type": "tool_call"}
        return AIMessage("", tool_calls=[call])

    model = ScriptedToolChatModel(script=script)
    agent = create_agent(
        model, [step], middleware=[OgmemMemoryMiddleware(manager=manager, token_budget=BUDGET)]
    )
    config = {"configurable": {"thread_id": "chain"}, "recursion_limit": 200}
    out = agent.invoke({"messages": [HumanMessage("turn 0: run the batch job BJ-7 with 30 steps")]}, config)
    assert out["messages"][-1].text == "All 30 steps done."
    assert len(model.received) == 31  # progress every call: no tool loop
    for received in model.received:
        assert received[0] == HumanMessage("turn 0: run the batch job BJ-7 with 30 steps", id=received[0].id)
        assert_pairs_whole(received)
        assert tokens(manager, received) <= BUDGET
    agent.invoke({"messages": [HumanMessage("turn 1: what was the job id?")]}, config)
    manager.wait_for_tasks()
    agent.invoke({"messages": [HumanMessage("turn 2: thanks")]}, config)
    assert len(manager.get_history("chain")) == 1 + 60 + 1 + 2 + 2
    summary = model.received[-1][0]
    assert is_summary_message(summary)
    assert "BJ-7" in summary.text  # a real summary of the span, not a placeholder


def _big_span_agent(manager: SessionManager) -> tuple[Any, ScriptedToolChatModel]:
    @tool
    def fetch_log(name: str) -> str:
        """Fetch a long log."""
        return "the quick brown fox jumps over the lazy dog and then rests a while. " * 300  # ~5,000 tokens

    def script(messages: Sequence[BaseMessage]) -> AIMessage:
        last = messages[-1]
        if isinstance(last, HumanMessage) and "log" in last.text:
            call = {"name": "fetch_log", "args": {"name": "app"}, "id": "log1", "type": "tool_call"}
            return AIMessage("", tool_calls=[call])
        return AIMessage("Done.")

    model = ScriptedToolChatModel(script=script)
    agent = create_agent(
        model, [fetch_log], middleware=[OgmemMemoryMiddleware(manager=manager, token_budget=BUDGET)]
    )
    return agent, model


def test_previous_summary_survives_an_evicted_span_over_4000_tokens(manager: SessionManager) -> None:
    agent, model = _big_span_agent(manager)
    config = {"configurable": {"thread_id": "big"}}
    for text in [question(0), FACT, question(2), question(3), question(4), question(5), question(6)]:
        agent.invoke({"messages": [HumanMessage(text)]}, config)
        manager.wait_for_tasks()
    assert "ACC-99812" in manager.list_archives("big")[0].overview
    agent.invoke({"messages": [HumanMessage("turn 7: fetch the app log")]}, config)
    for i in range(8, 12):
        agent.invoke({"messages": [HumanMessage(question(i))]}, config)
        manager.wait_for_tasks()
    archives = manager.list_archives("big")
    spans = [a for a in archives if a.token_count > 4000]
    assert spans, "the log turn was archived in one span of more than 4,000 tokens"
    assert "ACC-99812" in archives[0].overview and "Ada Lovelace" in archives[0].overview
    assert "ACC-99812" in model.received[-1][0].text


def test_llm_compression_gets_the_previous_summary_with_a_large_span(tmp_path: Path) -> None:
    summarizer = SummaryChatModel()
    manager = SessionManager(f"sqlite:///{tmp_path}/llm.db", config=LOW, llm=summarizer)
    with manager:
        agent, _ = _big_span_agent(manager)
        config = {"configurable": {"thread_id": "llm"}}
        for text in [question(0), FACT, question(2), question(3), question(4), question(5), question(6)]:
            agent.invoke({"messages": [HumanMessage(text)]}, config)
            manager.wait_for_tasks()
        first = len(summarizer.prompts)
        assert first >= 1
        agent.invoke({"messages": [HumanMessage("turn 7: fetch the app log")]}, config)
        for i in range(8, 12):
            agent.invoke({"messages": [HumanMessage(question(i))]}, config)
            manager.wait_for_tasks()
        later = summarizer.prompts[first:]
        assert later and all("<previous_archive>" in p and "scripted summary fact" in p for p in later)


def test_fit_current_turn_keeps_newest_whole_steps() -> None:
    human = HumanMessage("go", id="h")
    steps: list[BaseMessage] = []
    for n in range(5):
        steps += [
            AIMessage("", tool_calls=[{"name": "s", "args": {}, "id": f"c{n}", "type": "tool_call"}]),
            ToolMessage("x" * 40, tool_call_id=f"c{n}"),
        ]

    def count(m: BaseMessage) -> int:
        return len(message_text(m)) // 4 + 1

    fitted = _fit_current_turn([HumanMessage("old"), AIMessage("old answer"), human, *steps], 50, count)
    assert fitted[0] is human
    assert fitted[1:] == steps[-6:]  # 1 + 3 steps of 16 tokens fit in 50
    assert_pairs_whole(fitted)
    # The newest step is kept even when it alone overflows.
    assert _fit_current_turn([human, *steps], 1, count) == [human, *steps[-2:]]


# -- bad input -------------------------------------------------------------------------------------


def test_missing_thread_id_is_a_clear_error(manager: SessionManager) -> None:
    agent, _ = make_agent(manager)
    with pytest.raises(InvalidSessionIdError, match="thread_id"):
        agent.invoke({"messages": [HumanMessage("hi")]})
    with pytest.raises(InvalidSessionIdError):
        agent.invoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": ""}})
    assert manager.list_sessions() == []


def test_another_users_thread_is_refused(manager: SessionManager) -> None:
    model = ScriptedToolChatModel()
    alice = create_agent(
        model, [lookup], middleware=[OgmemMemoryMiddleware(manager=manager, user_id="alice")]
    )
    alice.invoke({"messages": [HumanMessage("turn 1: secret 42")]}, {"configurable": {"thread_id": "own"}})
    stored = len(manager.get_history("own"))
    mallory = create_agent(
        model, [lookup], middleware=[OgmemMemoryMiddleware(manager=manager, user_id="mallory")]
    )
    with pytest.raises(AccessDeniedError):
        mallory.invoke(
            {"messages": [HumanMessage("turn 1: show me")]}, {"configurable": {"thread_id": "own"}}
        )
    assert len(manager.get_history("own")) == stored


def test_options_are_validated(manager: SessionManager) -> None:
    with pytest.raises(ConfigError):
        OgmemMemoryMiddleware(manager=manager, url="memory://")
    with pytest.raises(ConfigError):
        OgmemMemoryMiddleware(manager=manager, token_budget=-1)
    with pytest.raises(ConfigError):
        OgmemMemoryMiddleware(manager=manager, user_id="")
    with pytest.raises(ConfigError):
        OgmemMemoryMiddleware(manager=manager, account_id="acme")  # an account needs its user
    with pytest.raises(ConfigError, match="embedder"):
        OgmemMemoryMiddleware(manager=manager, embedder=ConceptEmbeddings())


def test_shared_manager_from_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mw.db"
    a = OgmemMemoryMiddleware(url=url, config=LOW)
    b = OgmemMemoryMiddleware(url=url, config=LOW)
    assert a.manager is b.manager


# -- what is known about the user reaches every thread of that user (issue 12) ------------------

COMMIT_SOON = MemoryConfig(
    commit_token_threshold=40, commit_turn_threshold=2, keep_recent_messages=1, keep_recent_tokens=0
)


def _noted(messages: Sequence[BaseMessage]) -> AIMessage:
    return AIMessage("Noted.")  # names nothing: only the user's own words can bring a fact


def _user_agent(manager: SessionManager, user_id: str, model: ScriptedToolChatModel) -> Any:
    middleware = OgmemMemoryMiddleware(manager=manager, user_id=user_id, account_id="acme")
    return create_agent(model, [], system_prompt="You are terse.", middleware=[middleware])


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_memories_of_one_thread_reach_the_users_other_threads(tmp_path: Path, use_async: bool) -> None:
    """Ada's thread "t-1" facts are in what the model reads in "t-2"; bob's agent never sees them.

    Fails on the adapter as it was: the context message carried no memories, and a new
    thread's session has no summary, so "t-2" started from nothing.
    """
    with SessionManager(f"sqlite:///{tmp_path}/lt.db", config=COMMIT_SOON) as manager:
        model = ScriptedToolChatModel(script=_noted)
        ada, bob = _user_agent(manager, "ada", model), _user_agent(manager, "bob", model)

        async def ask(agent: Any, text: str, thread: str) -> list[BaseMessage]:
            value = {"messages": [HumanMessage(text)]}
            config: Any = {"configurable": {"thread_id": thread}}
            await agent.ainvoke(value, config) if use_async else agent.invoke(value, config)
            return model.received[-1]

        for line in ["I live in Lisbon.", "My cat is called Whiskers.", "Thanks!", "Bye for now."]:
            await ask(ada, line, "t-1")
        manager.wait_for_tasks()
        assert manager.list_memories(RequestContext("acme", "ada"))

        where = await ask(ada, "Where do I live?", "t-2")
        assert isinstance(where[0], SystemMessage) and where[0].text.startswith("You are terse.")
        assert MEMORIES_HEADER in where[0].text and "Lisbon" in where[0].text  # folded into the prompt
        assert [m.text for m in where[1:]] == ["Where do I live?"]  # t-2 has no turns of t-1
        assert "Whiskers" in (await ask(ada, "What is my cat called?", "t-2"))[0].text

        for text in ["Where do I live?", "What is my cat called?"]:
            seen = " ".join(m.text for m in await ask(bob, text, "b-1"))
            assert "Lisbon" not in seen and "Whiskers" not in seen and MEMORIES_HEADER not in seen


# -- recall by meaning: the embedder is passed to the manager (issue 11, item 3) ------------------


def _recalled_for_the_pet(url: str, embedder: ConceptEmbeddings | None) -> str:
    model = ScriptedToolChatModel(script=_noted)
    middleware = OgmemMemoryMiddleware(url=url, config=MEANING, embedder=embedder)
    agent = create_agent(model, [], middleware=[middleware])
    config: Any = {"configurable": {"thread_id": "pets"}}
    agent.invoke({"messages": [HumanMessage(PET)]}, config)
    for i in range(40):
        agent.invoke({"messages": [HumanMessage(f"the train to Porto leaves from platform {i % 9}")]}, config)
    middleware.manager.wait_for_tasks()
    agent.invoke({"messages": [HumanMessage(ASK_PET)]}, config)
    lead = model.received[-1][0]
    assert model.received[-1][-1].text == ASK_PET and is_summary_message(lead)
    return lead.text.split(RECALLED_HEADER, 1)[1] if RECALLED_HEADER in lead.text else ""


def test_the_embedder_recalls_by_meaning_for_the_model(tmp_path: Path) -> None:
    assert PET not in _recalled_for_the_pet(f"sqlite:///{tmp_path}/words.db", None)
    embeddings = ConceptEmbeddings()
    assert PET in _recalled_for_the_pet(f"sqlite:///{tmp_path}/meaning.db", embeddings)
    assert embeddings.documents_embedded > 0 and embeddings.queries_embedded > 0
