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
from langchain_ogmem import OgmemChatMessageHistory, history_factory
from langchain_ogmem.convert import is_summary_message, message_text

from ogmem_memory import MemoryConfig, SessionManager

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


def unkeyed_chain(manager: SessionManager, recorder: Recorder, **history: Any) -> RunnableWithMessageHistory:
    model = GenericFakeChatModel(messages=answers())
    runnable: Runnable[Any, Any] = RunnableLambda(recorder) | model
    return RunnableWithMessageHistory(
        runnable, lambda session_id: OgmemChatMessageHistory(session_id, manager=manager, **history)
    )


def keyed_chain(manager: SessionManager, recorder: Recorder) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = GenericFakeChatModel(messages=answers())
    return RunnableWithMessageHistory(
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


def test_fake_list_chat_model_and_user_conversation_factory(db: str) -> None:
    factory = history_factory(url=db, config=HIGH)
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    chain = RunnableWithMessageHistory(
        prompt | FakeListChatModel(responses=["one", "two", "three"]),
        factory,
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=factory.config_specs,
    )
    alice = {"configurable": {"user_id": "alice", "conversation_id": "trip"}}
    assert chain.invoke({"question": "hi"}, alice).text == "one"
    assert chain.invoke({"question": "again"}, alice).text == "two"
    history = OgmemChatMessageHistory("trip", user_id="alice", manager=factory.manager)
    assert [m.text for m in history.messages] == ["hi", "one", "again", "two"]
    from ogmem_memory.errors import AccessDeniedError

    with pytest.raises(AccessDeniedError):
        chain.invoke({"question": "peek"}, {"configurable": {"user_id": "bob", "conversation_id": "trip"}})
    assert len(factory.manager.get_history("trip")) == 4


def test_empty_session_id_is_a_clear_error(manager: SessionManager) -> None:
    from ogmem_memory.errors import InvalidSessionIdError

    chain = unkeyed_chain(manager, Recorder())
    with pytest.raises(InvalidSessionIdError):
        chain.invoke("hi", {"configurable": {"session_id": ""}})
    assert manager.list_sessions() == []


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
@pytest.mark.parametrize("keyed", [False, True])
def test_commits_landing_mid_turn_change_nothing(manager: SessionManager, keyed: bool) -> None:
    # Between the two reads of a turn (before the model runs, and after), a commit lands:
    # every third turn inline, the others in the background.
    def land_commit(call: int) -> None:
        manager.commit("mid", wait=call % 3 == 0)

    recorder = Recorder(hook=land_commit)
    chain = keyed_chain(manager, recorder) if keyed else unkeyed_chain(manager, recorder)
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
