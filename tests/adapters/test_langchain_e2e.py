"""RunnableWithMessageHistory end to end: real LangChain objects, fake models, SQLite, no network."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_ogmem import OgmemChatMessageHistory, OgmemRunnableWithMessageHistory, history_factory
from langchain_ogmem.convert import is_summary_message, message_text, summary_text

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.errors import AccessDeniedError, InvalidInputError, InvalidSessionIdError

# RunnableWithMessageHistory is deprecated since langchain-core 1.3.3 (still what LCEL users
# have); its warning is attributed to the caller, so the pyproject's module ignores miss it.
pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")

BUDGET = 400
LOW = MemoryConfig(
    commit_token_threshold=300,
    commit_turn_threshold=6,
    keep_recent_messages=4,
    keep_recent_tokens=100,
    context_token_budget=BUDGET,
)
HIGH = MemoryConfig(commit_token_threshold=1_000_000, commit_turn_threshold=0, context_token_budget=1_000_000)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/e2e.db"


@pytest.fixture
def manager(db: str) -> Iterator[SessionManager]:
    with SessionManager(db, config=LOW) as m:
        yield m


def answers() -> Iterator[AIMessage]:
    return (AIMessage(f"answer {i}: the Lisbon office opens at {i % 12 + 1} pm") for i in itertools.count())


class Recorder:
    """Records the messages the model receives; optionally runs a hook inside the turn."""

    def __init__(self, hook: Any = None) -> None:
        self.calls: list[list[BaseMessage]] = []
        self.hook = hook

    def __call__(self, value: Any) -> Any:
        messages = value.to_messages() if hasattr(value, "to_messages") else list(value)
        self.calls.append(messages)
        if self.hook is not None:
            self.hook(len(self.calls))
        return value


def tokens(manager: SessionManager, messages: Sequence[BaseMessage]) -> int:
    return sum(manager.token_counter.count(message_text(m)) for m in messages)


Chain = type[RunnableWithMessageHistory]
# Both classes in the tests of what the history guarantees to any RunnableWithMessageHistory.
CHAINS = [OgmemRunnableWithMessageHistory, RunnableWithMessageHistory]


def unkeyed_chain(
    manager: SessionManager, recorder: Recorder, cls: Chain = OgmemRunnableWithMessageHistory
) -> RunnableWithMessageHistory:
    model = GenericFakeChatModel(messages=answers())
    runnable: Runnable[Any, Any] = RunnableLambda(recorder) | model
    return cls(runnable, lambda session_id: OgmemChatMessageHistory(session_id, manager=manager))


def keyed_chain(
    manager: SessionManager, recorder: Recorder, cls: Chain = OgmemRunnableWithMessageHistory
) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = GenericFakeChatModel(messages=answers())
    return cls(
        prompt | RunnableLambda(recorder) | model,
        lambda session_id: OgmemChatMessageHistory(session_id, manager=manager),
        input_messages_key="question",
        history_messages_key="history",
    )


def question(i: int) -> str:
    return f"turn {i}: my locker code is {1000 + i} and I like topic-{i % 7}"


def assert_transcript(manager: SessionManager, session_id: str, turns: int) -> None:
    full = OgmemChatMessageHistory(session_id, manager=manager, view="full").messages
    assert len(full) == 2 * turns
    assert [m.text for m in full[0::2]] == [question(i) for i in range(turns)]
    assert all(isinstance(m, HumanMessage) for m in full[0::2])
    assert all(isinstance(m, AIMessage) and m.text.startswith("answer ") for m in full[1::2])
    assert [int(m.text.split()[1].rstrip(":")) for m in full[1::2]] == list(range(turns))


# -- the forms and the invocation paths -------------------------------------------------------


def test_unkeyed_invoke_stream_and_list_input(manager: SessionManager) -> None:
    recorder = Recorder()
    chain = unkeyed_chain(manager, recorder)
    config = {"configurable": {"session_id": "u1"}}
    out = chain.invoke(question(0), config)
    assert out.text.startswith("answer 0")
    chunks = list(chain.stream([HumanMessage(question(1))], config))
    assert "".join(c.text for c in chunks).startswith("answer 1")
    assert recorder.calls[1][:2] == [HumanMessage(question(0)), out]
    assert_transcript(manager, "u1", 2)


async def test_unkeyed_ainvoke_and_astream(manager: SessionManager) -> None:
    chain = unkeyed_chain(manager, Recorder())
    config = {"configurable": {"session_id": "u2"}}
    await chain.ainvoke(question(0), config)
    chunks = [c async for c in chain.astream(question(1), config)]
    assert chunks
    assert_transcript(manager, "u2", 2)


def test_keyed_invoke_and_batch(manager: SessionManager) -> None:
    recorder = Recorder()
    chain = keyed_chain(manager, recorder)
    chain.invoke({"question": question(0)}, {"configurable": {"session_id": "k1"}})
    chain.invoke({"question": question(1)}, {"configurable": {"session_id": "k1"}})
    assert recorder.calls[-1][0].text == "You are terse."
    assert recorder.calls[-1][-1] == HumanMessage(question(1))
    assert_transcript(manager, "k1", 2)
    outs = chain.batch(
        [{"question": question(0)} for _ in range(4)],
        [{"configurable": {"session_id": f"b{i}"}} for i in range(4)],
    )
    assert len(outs) == 4
    for i in range(4):
        full = manager.get_history(f"b{i}")
        assert [m.role for m in full] == ["user", "assistant"]


async def test_keyed_ainvoke_and_abatch(manager: SessionManager) -> None:
    chain = keyed_chain(manager, Recorder())
    for i in range(3):
        await chain.ainvoke({"question": question(i)}, {"configurable": {"session_id": "ak"}})
    assert_transcript(manager, "ak", 3)
    await chain.abatch(
        [{"question": question(0)} for _ in range(3)],
        [{"configurable": {"session_id": f"ab{i}"}} for i in range(3)],
    )
    assert all(len(manager.get_history(f"ab{i}")) == 2 for i in range(3))


def factory_chain(factory: Any, responses: list[str]) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    return OgmemRunnableWithMessageHistory(
        prompt | FakeListChatModel(responses=responses),
        factory,
        input_messages_key="question",
        history_messages_key="history",
    )


def user(user_id: Any, conversation_id: Any = "c-1") -> dict[str, Any]:
    return {"configurable": {"user_id": user_id, "conversation_id": conversation_id}}


def test_two_users_same_conversation_id_are_two_sessions(db: str) -> None:
    """Regression (issue 10, item 5): bob's "c-1" hit ada's session (AccessDeniedError)."""
    factory = history_factory(url=db, config=HIGH)
    chain = factory_chain(factory, ["one", "two", "three", "four"])
    assert chain.invoke({"question": "ada: my PIN is 1111"}, user("ada")).text == "one"
    assert chain.invoke({"question": "bob: hello"}, user("bob")).text == "two"
    assert chain.invoke({"question": "ada: again"}, user("ada")).text == "three"
    assert [m.text for m in factory("ada", "c-1").messages] == [
        "ada: my PIN is 1111",
        "one",
        "ada: again",
        "three",
    ]
    assert [m.text for m in factory("bob", "c-1").messages] == ["bob: hello", "two"]
    assert _session_ids(factory.manager) == sorted(
        [factory.session_id("ada", "c-1"), factory.session_id("bob", "c-1")]
    )
    # A history built by hand on the factory's session id belongs to that user only.
    with pytest.raises(AccessDeniedError):
        _ = OgmemChatMessageHistory(
            factory.session_id("ada", "c-1"), user_id="bob", manager=factory.manager
        ).messages


def _session_ids(manager: SessionManager) -> list[str]:
    return sorted(meta.session_id for meta in manager.list_sessions())


@pytest.mark.parametrize(
    ("configurable", "error"),
    [
        ({"user_id": None, "conversation_id": "c-1"}, InvalidInputError),
        ({"user_id": "", "conversation_id": "c-1"}, InvalidInputError),
        ({"user_id": "   ", "conversation_id": "c-1"}, InvalidInputError),
        ({"user_id": 7, "conversation_id": "c-1"}, InvalidInputError),
        ({"user_id": "default", "conversation_id": "c-1"}, InvalidInputError),
        ({"user_id": "bob\x00", "conversation_id": "c-1"}, InvalidInputError),
        ({"user_id": "bob", "conversation_id": ""}, InvalidSessionIdError),
        ({"user_id": "bob", "conversation_id": None}, InvalidSessionIdError),
        ({"user_id": "bob", "conversation_id": "x" * 300}, InvalidSessionIdError),
        ({"conversation_id": "c-1"}, ValueError),  # LangChain itself: "Missing keys ['user_id']"
    ],
)
def test_a_request_without_a_real_user_reads_and_writes_nothing(
    db: str, configurable: dict[str, Any], error: type[Exception]
) -> None:
    """Regression (issue 10, item 5): user_id=None through configurable was trusted."""
    factory = history_factory(url=db, config=HIGH)
    chain = factory_chain(factory, ["alice's answer", "leak"])
    chain.invoke({"question": "alice: my secret is 1234"}, user("alice"))
    before = factory.manager.get_history(factory.session_id("alice", "c-1"))
    sessions = _session_ids(factory.manager)
    with pytest.raises(error):
        chain.invoke({"question": "show me everything"}, {"configurable": configurable})
    assert _session_ids(factory.manager) == sessions
    assert factory.manager.get_history(factory.session_id("alice", "c-1")) == before


def test_the_implicit_default_owner_cannot_be_claimed(db: str) -> None:
    """A single-user app's sessions (ctx=None binds the default owner) stay out of reach."""
    factory = history_factory(url=db, config=HIGH)
    OgmemChatMessageHistory("c-1", manager=factory.manager).add_messages([HumanMessage("owner's note")])
    chain = factory_chain(factory, ["x"])
    with pytest.raises(InvalidInputError, match="implicit"):
        chain.invoke({"question": "peek"}, user("default"))
    assert [m.content for m in factory.manager.get_history("c-1")] == ["owner's note"]


def test_stock_class_with_the_factory_config_specs(db: str) -> None:
    factory = history_factory(url=db, config=HIGH)
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    chain = RunnableWithMessageHistory(
        prompt | FakeListChatModel(responses=["one", "two"]),
        factory,
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=factory.config_specs,
    )
    chain.invoke({"question": "hi"}, user("alice", "trip"))
    chain.invoke({"question": "again"}, user("alice", "trip"))
    assert [m.text for m in factory("alice", "trip").messages] == ["hi", "one", "again", "two"]


def test_empty_session_id_is_a_clear_error(manager: SessionManager) -> None:
    from ogmem_memory.errors import InvalidSessionIdError

    chain = unkeyed_chain(manager, Recorder())
    with pytest.raises(InvalidSessionIdError):
        chain.invoke("hi", {"configurable": {"session_id": ""}})
    assert manager.list_sessions() == []


# -- recall follows the question being asked (issue 10, item 4) ------------------------------

CAT = "My cat is called Whiskers"
ASK_CAT = "What is my cat called?"


def filler(i: int) -> str:
    return f"turn {i}: the train to Porto leaves from platform {i % 9}"


def recall_chain(
    manager: SessionManager, recorder: Recorder, cls: Chain, *, keyed: bool, cached: bool
) -> RunnableWithMessageHistory:
    """A chain whose factory makes a history per invoke, or (cached) returns one per session."""
    cache: dict[str, OgmemChatMessageHistory] = {}

    def get_history(session_id: str) -> OgmemChatMessageHistory:
        if not cached:
            return OgmemChatMessageHistory(session_id, manager=manager)
        return cache.setdefault(session_id, OgmemChatMessageHistory(session_id, manager=manager))

    model = GenericFakeChatModel(messages=answers())
    if not keyed:
        return cls(RunnableLambda(recorder) | model, get_history)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    return cls(
        prompt | RunnableLambda(recorder) | model,
        get_history,
        input_messages_key="question",
        history_messages_key="history",
    )


def prompt_text(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(message_text(m) for m in messages)


async def talk_about_the_cat(
    manager: SessionManager, chain: RunnableWithMessageHistory, *, keyed: bool, sync: bool
) -> None:
    """300 turns: the cat's name at turn 150, the question at turn 300, every commit landed."""
    config = {"configurable": {"session_id": "cat"}}
    for i in range(300):
        text = ASK_CAT if i == 299 else CAT if i == 150 else filler(i)
        if i == 299:
            manager.wait_for_tasks()
        value: Any = {"question": text} if keyed else text
        if sync:
            chain.invoke(value, config)
        else:
            await chain.ainvoke(value, config)
    # The scenario is the issue's: the name is archived and out of the summary, so only recall
    # for this very question can put it into the prompt.
    assert not any(m.content == CAT for m in manager.get_context("cat").messages)
    assert CAT not in summary_text(manager.get_context("cat", query=filler(0)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("keyed", "sync", "cached"),
    [(True, True, False), (True, False, False), (True, True, True), (False, True, False)],
    ids=["keyed", "keyed-async", "keyed-one-history-object", "unkeyed"],
)
async def test_recall_follows_the_question_of_this_very_turn(
    manager: SessionManager, keyed: bool, sync: bool, cached: bool
) -> None:
    """Regression (issue 10, item 4): the prompt of the turn that asks lacked the answer."""
    recorder = Recorder()
    chain = recall_chain(manager, recorder, OgmemRunnableWithMessageHistory, keyed=keyed, cached=cached)
    await talk_about_the_cat(manager, chain, keyed=keyed, sync=sync)
    asked = recorder.calls[-1]
    assert message_text(asked[-1]) == ASK_CAT
    assert CAT in prompt_text(asked)
    history = asked[1:-1] if keyed else asked[:-1]
    assert tokens(manager, history) <= BUDGET
    assert_transcript_texts(manager, "cat", 300)


@pytest.mark.slow
async def test_stock_class_recalls_for_the_previous_question(manager: SessionManager) -> None:
    """What the subclass fixes: stock RunnableWithMessageHistory reads before storing the input."""
    recorder = Recorder()
    chain = recall_chain(manager, recorder, RunnableWithMessageHistory, keyed=True, cached=False)
    await talk_about_the_cat(manager, chain, keyed=True, sync=True)
    assert CAT not in prompt_text(recorder.calls[-1])
    chain.invoke({"question": "thanks"}, {"configurable": {"session_id": "cat"}})
    assert CAT in prompt_text(recorder.calls[-1])  # one turn late


def assert_transcript_texts(manager: SessionManager, session_id: str, turns: int) -> None:
    full = manager.get_history(session_id)
    assert len(full) == 2 * turns
    assert [m.content for m in full[0::2]][150] == CAT
    assert full[-2].content == ASK_CAT


def test_query_is_the_last_human_message_of_the_input(manager: SessionManager) -> None:
    seen: list[str | None] = []

    class Spy(OgmemChatMessageHistory):
        @property
        def messages(self) -> list[BaseMessage]:
            seen.append(self.query)
            return super().messages

    model = GenericFakeChatModel(messages=answers())
    chain = OgmemRunnableWithMessageHistory(
        RunnableLambda(lambda v: v) | model, lambda sid: Spy(sid, manager=manager)
    )
    config = {"configurable": {"session_id": "spy"}}
    chain.invoke([HumanMessage("first part"), AIMessage("ack"), HumanMessage("the actual question")], config)
    chain.invoke([AIMessage("no human message")], config)
    # Each turn reads twice (before the model, and after it to slice the input): same query.
    assert seen == ["the actual question", "the actual question", None, None]


# -- 200 turns with low thresholds -------------------------------------------------------------


def _check_contexts(manager: SessionManager, recorder: Recorder, *, keyed: bool) -> None:
    summaries = 0
    for call in recorder.calls:
        # The history part: everything but the new input (and the prompt's system message).
        history = call[1:-1] if keyed else call[:-1]
        assert tokens(manager, history) <= BUDGET
        summaries += bool(history) and is_summary_message(history[0])
    assert summaries > len(recorder.calls) // 2


@pytest.mark.slow
@pytest.mark.parametrize("keyed", [False, True])
def test_200_turns_stay_within_budget_and_lose_nothing(manager: SessionManager, keyed: bool) -> None:
    recorder = Recorder()
    chain = keyed_chain(manager, recorder) if keyed else unkeyed_chain(manager, recorder)
    config = {"configurable": {"session_id": "long"}}
    for i in range(200):
        chain.invoke({"question": question(i)} if keyed else question(i), config)
    manager.wait_for_tasks()
    _check_contexts(manager, recorder, keyed=keyed)
    assert_transcript(manager, "long", 200)
    assert manager.list_archives("long")


@pytest.mark.slow
@pytest.mark.parametrize("cls", CHAINS, ids=["ogmem", "stock"])
@pytest.mark.parametrize("keyed", [False, True])
def test_commits_landing_mid_turn_change_nothing(manager: SessionManager, keyed: bool, cls: Chain) -> None:
    # Between the two reads of a turn (before the model runs, and after), a commit lands:
    # every third turn inline, the others in the background.
    def land_commit(call: int) -> None:
        manager.commit("mid", wait=call % 3 == 0)

    recorder = Recorder(hook=land_commit)
    chain = keyed_chain(manager, recorder, cls) if keyed else unkeyed_chain(manager, recorder, cls)
    config = {"configurable": {"session_id": "mid"}}
    for i in range(200):
        chain.invoke({"question": question(i)} if keyed else question(i), config)
    manager.wait_for_tasks()
    _check_contexts(manager, recorder, keyed=keyed)
    assert_transcript(manager, "mid", 200)


@pytest.mark.slow
async def test_200_turns_async(manager: SessionManager) -> None:
    recorder = Recorder(hook=lambda call: manager.commit("along") if call % 5 == 0 else None)
    chain = unkeyed_chain(manager, recorder)
    config = {"configurable": {"session_id": "along"}}
    for i in range(200):
        await chain.ainvoke(question(i), config)
    await manager.await_for_tasks()
    _check_contexts(manager, recorder, keyed=False)
    assert_transcript(manager, "along", 200)


@pytest.mark.slow
def test_a_new_process_continues_the_conversation(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/proc.db"
    with SessionManager(db, config=LOW) as manager:
        chain = unkeyed_chain(manager, Recorder())
        for i in range(200):
            chain.invoke(question(i), {"configurable": {"session_id": "p"}})
        manager.wait_for_tasks()
    code = textwrap.dedent(
        f"""
        import json, warnings
        warnings.simplefilter("ignore")
        from langchain_core.language_models import GenericFakeChatModel
        from langchain_core.runnables import RunnableLambda
        from langchain_core.runnables.history import RunnableWithMessageHistory
        from langchain_ogmem import OgmemChatMessageHistory
        from ogmem_memory import MemoryConfig
        config = MemoryConfig(commit_token_threshold=300, commit_turn_threshold=6, keep_recent_messages=4,
                              keep_recent_tokens=100, context_token_budget={BUDGET})
        seen = []
        fake = GenericFakeChatModel(messages=iter(["answer 200: bye"]))
        model = RunnableLambda(lambda m: seen.append(m) or m) | fake
        chain = RunnableWithMessageHistory(
            model, lambda sid: OgmemChatMessageHistory(sid, url={db!r}, config=config))
        chain.invoke("turn 200: what was my first locker code?", {{"configurable": {{"session_id": "p"}}}})
        history = OgmemChatMessageHistory("p", url={db!r}, config=config)
        history.manager.wait_for_tasks()
        print(json.dumps({{"first": seen[0][0].content, "first_id": seen[0][0].id, "n": len(seen[0])}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["first_id"].startswith("ogmem-summary-")
    assert "locker code" in report["first"]
    with SessionManager(db, config=LOW) as manager:
        full = OgmemChatMessageHistory("p", manager=manager, view="full").messages
        assert len(full) == 402
        assert full[-2].text == "turn 200: what was my first locker code?"
        assert full[-1].text == "answer 200: bye"


# -- what is known about the user reaches the prompt of their next conversation (issue 12) ----


def test_a_users_fact_reaches_the_prompt_of_their_next_conversation(tmp_path: Path) -> None:
    """Ada's "c-1" facts are in the prompt the model receives in "c-2", and never in bob's."""
    soon = MemoryConfig(
        commit_token_threshold=40, commit_turn_threshold=2, keep_recent_messages=1, keep_recent_tokens=0
    )
    with SessionManager(f"sqlite:///{tmp_path}/lt.db", config=soon) as manager:
        factory = history_factory(manager=manager, account_id="acme")
        recorder = Recorder()
        prompt = ChatPromptTemplate.from_messages(
            [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
        )
        chain = OgmemRunnableWithMessageHistory(
            # replies that name no place or pet: only the user's own words can bring them
            prompt
            | RunnableLambda(recorder)
            | GenericFakeChatModel(messages=itertools.repeat(AIMessage("Noted."))),
            factory,
            input_messages_key="question",
            history_messages_key="history",
        )
        for line in ["I live in Lisbon.", "My cat is called Whiskers.", "Thanks!", "Bye for now."]:
            chain.invoke({"question": line}, user("ada", "c-1"))
        manager.wait_for_tasks()

        chain.invoke({"question": "Where do I live?"}, user("ada", "c-2"))
        asked = recorder.calls[-1]
        assert [message_text(m) for m in (asked[0], asked[-1])] == ["You are terse.", "Where do I live?"]
        # a memory of the user, not a turn of another conversation
        assert "Lisbon" in prompt_text(asked) and "I live in Lisbon." not in prompt_text(asked)
        chain.invoke({"question": "What is my cat called?"}, user("ada", "c-2"))
        assert "Whiskers" in prompt_text(recorder.calls[-1])

        for question_ in ["Where do I live?", "What is my cat called?"]:
            chain.invoke({"question": question_}, user("bob", "c-2"))
            seen = prompt_text(recorder.calls[-1])
            assert "Lisbon" not in seen and "Whiskers" not in seen
