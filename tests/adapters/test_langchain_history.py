"""OgmemChatMessageHistory and message conversion, side by side with InMemoryChatMessageHistory."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    message_chunk_to_message,
)
from langchain_ogmem import NotAMessageError, OgmemChatMessageHistory, history_factory
from langchain_ogmem.convert import (
    SUMMARY_ID_PREFIX,
    context_to_messages,
    from_session_message,
    is_summary_message,
    keep_tool_pairs_whole,
    message_text,
    summary_message,
    to_record,
    to_records,
)

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidInputError,
    InvalidSessionIdError,
)
from ogmem_memory.models import RequestContext, SessionMessage
from ogmem_memory.rendering import MEMORIES_HEADER, RECALLED_HEADER
from tests.adapters.langchain_fakes import (
    ASK_PET,
    MEANING,
    PET,
    ConceptEmbeddings,
    ExplodingChatModel,
    SummaryChatModel,
)

# InMemoryChatMessageHistory (our oracle) is deprecated since langchain-core 1.6.4; the warning is
# attributed to this module, so the pyproject's module-based ignores do not cover it.
pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")

HIGH = MemoryConfig(commit_token_threshold=1_000_000, commit_turn_threshold=0, context_token_budget=1_000_000)
LOW = MemoryConfig(
    commit_token_threshold=300,
    commit_turn_threshold=6,
    keep_recent_messages=4,
    keep_recent_tokens=100,
    context_token_budget=600,
)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[SessionManager]:
    with SessionManager(f"sqlite:///{tmp_path}/h.db", config=HIGH) as m:
        yield m


def every_message_type() -> list[BaseMessage]:
    """One of each message kind, with the fields message_to_dict must keep."""
    return [
        SystemMessage("You are terse.", id="sys-1"),
        HumanMessage("Hi, I'm Ada. Order #4471 is late.", id="h-1", name="ada"),
        AIMessage(
            content="Let me check.",
            id="ai-1",
            tool_calls=[{"name": "lookup", "args": {"order": 4471}, "id": "call_1", "type": "tool_call"}],
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
            additional_kwargs={"refusal": None, "x": [1, 2]},
            response_metadata={"model_name": "fake", "finish_reason": "tool_calls"},
        ),
        ToolMessage(
            "shipped 2024-05-01", tool_call_id="call_1", name="lookup", id="t-1", artifact={"raw": 1}
        ),
        AIMessage(content=[{"type": "text", "text": "It shipped"}, {"type": "text", "text": "on May 1."}]),
        HumanMessage(
            content=[{"type": "text", "text": "thanks"}, {"type": "image", "url": "https://x/y.png"}]
        ),
        AIMessageChunk(content="You're welcome", id="chunk-1", usage_metadata=None),
        ChatMessage(role="user", content="chat-role message"),
        FunctionMessage(name="legacy", content="legacy function result"),
        AIMessage(content="Bye 👋 — 再见"),
    ]


def normalised(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """What a store returns for what the oracle keeps: chunks become messages."""
    return [message_chunk_to_message(m) for m in messages]


# -- conversion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "role"),
    [
        (HumanMessage("a"), "user"),
        (AIMessage("a"), "assistant"),
        (SystemMessage("a"), "system"),
        (ToolMessage("a", tool_call_id="c"), "tool"),
        (FunctionMessage(name="f", content="a"), "tool"),
        (ChatMessage(role="assistant", content="a"), "assistant"),
        (ChatMessage(role="Human", content="a"), "user"),
        (ChatMessage(role="developer", content="a"), "system"),
        (AIMessageChunk(content="a"), "assistant"),
        (HumanMessageChunk(content="a"), "user"),
    ],
)
def test_roles_map_to_ogmem_roles(message: BaseMessage, role: str) -> None:
    assert to_record(message)["role"] == role


@pytest.mark.parametrize("message", every_message_type())
def test_payload_round_trips_exactly_and_is_json(message: BaseMessage) -> None:
    record = to_record(message)
    stored = SessionMessage(
        id="msg_000000000001", role=record["role"], content=record["content"], payload=record["payload"]
    )
    restored = from_session_message(stored)
    assert restored == message_chunk_to_message(message)
    assert json.loads(json.dumps(record["payload"])) == record["payload"]


def test_text_view_joins_text_blocks_and_shows_tool_calls() -> None:
    ai = every_message_type()[2]
    assert message_text(ai) == 'Let me check.\n[tool call lookup({"order": 4471})]'
    blocks = AIMessage(content=[{"type": "text", "text": "a"}, {"type": "image", "url": "u"}, "b"])
    assert message_text(blocks) == "a\nb"
    long_args = AIMessage("", tool_calls=[{"name": "f", "args": {"x": "y" * 1000}, "id": "c"}])
    assert len(message_text(long_args)) < 400


def test_non_json_kwargs_fall_back_to_json_mode() -> None:
    from datetime import UTC, datetime

    message = HumanMessage("hi", additional_kwargs={"when": datetime(2024, 1, 2, tzinfo=UTC)})
    payload = to_record(message)["payload"]
    assert payload["data"]["additional_kwargs"]["when"].startswith("2024-01-02")


@pytest.mark.parametrize(
    "bad",
    [
        "just a string",
        {"role": "user", "content": "dict"},
        ("human", "tuple"),
        None,
        42,
    ],
)
def test_non_messages_are_rejected_with_a_type_error(bad: object) -> None:
    with pytest.raises(NotAMessageError) as info:
        to_record(bad)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, InvalidInputError)


@pytest.mark.parametrize(
    "bad",
    [ChatMessage(role="narrator", content="x"), RemoveMessage(id="m1")],
)
def test_unplaceable_messages_are_rejected(bad: BaseMessage) -> None:
    with pytest.raises(InvalidInputError):
        to_record(bad)


def test_to_records_is_all_or_nothing_and_skips_summary_messages() -> None:
    summary = summary_message("Summary of the earlier conversation:\n- x")
    assert is_summary_message(summary)
    assert summary.id is not None and summary.id.startswith(SUMMARY_ID_PREFIX)
    assert [r["content"] for r in to_records([summary, HumanMessage("a")])] == ["a"]
    with pytest.raises(NotAMessageError, match="message 1"):
        to_records([HumanMessage("a"), "b"])
    with pytest.raises(NotAMessageError):
        to_records(HumanMessage("a"))  # type: ignore[arg-type]


def test_summary_message_id_is_stable_per_text_and_role_is_configurable() -> None:
    a, b, c = summary_message("s1"), summary_message("s1"), summary_message("s2")
    assert a.id == b.id != c.id
    assert isinstance(a, SystemMessage)
    assert isinstance(summary_message("s1", role="human"), HumanMessage)


def test_foreign_messages_without_langchain_payload_become_role_messages() -> None:
    plain = [
        SessionMessage(id="msg_aaaaaaaaaaaa", role="user", content="u"),
        SessionMessage(id="msg_bbbbbbbbbbbb", role="assistant", content="a", payload={"role": "assistant"}),
        SessionMessage(
            id="msg_cccccccccccc",
            role="tool",
            content="t",
            payload={"additional_kwargs": {"tool_call_id": "c9"}},
        ),
        SessionMessage(
            id="msg_dddddddddddd", role="system", content="s", payload={"type": "bogus", "data": {}}
        ),
    ]
    out = [from_session_message(m) for m in plain]
    assert [type(m) for m in out] == [HumanMessage, AIMessage, ToolMessage, SystemMessage]
    assert out[0].id == "msg_aaaaaaaaaaaa"
    assert isinstance(out[2], ToolMessage) and out[2].tool_call_id == "c9"


def test_keep_tool_pairs_whole() -> None:
    call = AIMessage(
        "", tool_calls=[{"name": "f", "args": {}, "id": "c1"}, {"name": "g", "args": {}, "id": "c2"}]
    )
    r1, r2 = ToolMessage("1", tool_call_id="c1"), ToolMessage("2", tool_call_id="c2")
    human = HumanMessage("h")
    assert keep_tool_pairs_whole([human, call, r1, r2]) == [human, call, r1, r2]
    assert keep_tool_pairs_whole([r1, r2, human]) == [human]  # results without their call
    assert keep_tool_pairs_whole([human, call, r1]) == [human]  # a call missing a result


# -- contract: side by side with InMemoryChatMessageHistory ----------------------------------


def oracle() -> InMemoryChatMessageHistory:
    return InMemoryChatMessageHistory()


@pytest.mark.parametrize("view", ["context", "full"])
def test_contract_every_message_type_round_trips(manager: SessionManager, view: Any) -> None:
    ours = OgmemChatMessageHistory("c1", manager=manager, view=view)
    theirs = oracle()
    assert ours.messages == theirs.messages == []
    batch = every_message_type()
    for chunk in (batch[:2], batch[2:4], batch[4:]):
        ours.add_messages(chunk)
        theirs.add_messages(chunk)
        assert ours.messages == normalised(theirs.messages)
    ours.add_user_message("plain user")
    theirs.add_user_message("plain user")
    ours.add_ai_message("plain ai")
    theirs.add_ai_message("plain ai")
    ours.add_message(HumanMessage("single"))
    theirs.add_message(HumanMessage("single"))
    assert ours.messages == normalised(theirs.messages)
    assert str(ours) == str(InMemoryChatMessageHistory(messages=normalised(theirs.messages)))
    # A fresh object (a new invoke of RunnableWithMessageHistory) reads the same.
    assert OgmemChatMessageHistory("c1", manager=manager, view=view).messages == normalised(theirs.messages)
    ours.clear()
    theirs.clear()
    assert ours.messages == theirs.messages == []


@pytest.mark.parametrize("view", ["context", "full"])
async def test_contract_async(manager: SessionManager, view: Any) -> None:
    ours = OgmemChatMessageHistory("c2", manager=manager, view=view)
    theirs = oracle()
    assert await ours.aget_messages() == await theirs.aget_messages() == []
    batch = every_message_type()
    for chunk in (batch[:3], batch[3:]):
        await ours.aadd_messages(chunk)
        await theirs.aadd_messages(chunk)
        assert await ours.aget_messages() == normalised(await theirs.aget_messages())
    assert ours.messages == await ours.aget_messages()
    await ours.aclear()
    await theirs.aclear()
    assert await ours.aget_messages() == await theirs.aget_messages() == []


def test_contract_setter_replaces_the_conversation(manager: SessionManager) -> None:
    ours = OgmemChatMessageHistory("c3", manager=manager)
    theirs = oracle()
    ours.add_messages([HumanMessage("old")])
    theirs.add_messages([HumanMessage("old")])
    replacement = [HumanMessage("new 1"), AIMessage("new 2")]
    ours.messages = replacement
    theirs.messages = replacement
    assert ours.messages == theirs.messages
    assert [m.content for m in manager.get_history("c3")] == ["new 1", "new 2"]


def test_contract_setter_replaces_archives_and_summary_too(tmp_path: Path) -> None:
    with SessionManager(f"sqlite:///{tmp_path}/s.db", config=LOW) as m:
        ours, theirs = OgmemChatMessageHistory("s", manager=m), oracle()
        for i in range(10):
            turn = [HumanMessage(f"turn {i}: the Zeta project is due on day {i}"), AIMessage(f"ok {i}")]
            ours.add_messages(turn)
            theirs.add_messages(turn)
        m.wait_for_tasks()
        assert m.list_archives("s")
        replacement = [HumanMessage("fresh start", id="f-1"), AIMessage("hello again", id="f-2")]
        ours.messages = replacement
        theirs.messages = replacement
        assert ours.messages == theirs.messages == replacement
        assert m.list_archives("s") == []
        assert [x.id for x in m.get_history("s")] == ["f-1", "f-2"]
        ours.messages = []
        theirs.messages = []
        assert ours.messages == theirs.messages == []


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (HumanMessage("x" * 1_000_001), InvalidInputError),
        (HumanMessage("lone \ud800 surrogate"), InvalidInputError),
        (AIMessage("fine", additional_kwargs={"k": "\udfff"}), InvalidInputError),
        (ChatMessage(role="narrator", content="?"), InvalidInputError),
        ("not a message", TypeError),
    ],
    ids=["1000001-chars", "surrogate-content", "surrogate-payload", "unknown-role", "not-a-message"],
)
def test_setter_with_bad_input_changes_nothing(tmp_path: Path, bad: Any, error: type[Exception]) -> None:
    """Regression (issue 10, item 6): the setter cleared the session, then the add failed."""
    with SessionManager(f"sqlite:///{tmp_path}/bad.db", config=LOW) as m:
        history = OgmemChatMessageHistory("keep", manager=m)
        for i in range(10):
            history.add_messages([HumanMessage(f"turn {i}: locker {1000 + i}"), AIMessage(f"ok {i}")])
        served = history.messages
        m.add_message("keep", "user", "written by another process")  # the published view is now stale
        m.wait_for_tasks()  # no commit may land during the check below
        stored, archives = m.get_history("keep"), m.list_archives("keep")
        assert archives
        with pytest.raises(error):
            history.messages = [HumanMessage("replacement"), bad]
        assert m.get_history("keep") == stored
        assert m.list_archives("keep") == archives
        # Not the view published before the failure: the conversation as stored now.
        assert history.messages != served
        assert history.messages == OgmemChatMessageHistory("keep", manager=m).messages
        assert history.messages[-1] == HumanMessage("written by another process", id=history.messages[-1].id)


def test_setter_of_another_users_session_is_refused(manager: SessionManager) -> None:
    OgmemChatMessageHistory("mine", manager=manager, user_id="alice").add_messages([HumanMessage("a")])
    with pytest.raises(AccessDeniedError):
        OgmemChatMessageHistory("mine", manager=manager, user_id="mallory").messages = [HumanMessage("m")]
    assert [x.content for x in manager.get_history("mine")] == ["a"]


def test_a_retried_write_stores_nothing_twice(manager: SessionManager) -> None:
    """A turn written again (a retry after a timeout) is one turn; stock would keep two copies."""
    history = OgmemChatMessageHistory("retry", manager=manager)
    turn = [HumanMessage("q", id="h-9"), AIMessage("a", id="a-9")]
    history.add_messages(turn)
    history.add_messages(turn)
    history.add_messages([*turn, HumanMessage("next", id="h-10")])
    assert [x.id for x in manager.get_history("retry")] == ["h-9", "a-9", "h-10"]
    assert history.messages == [*turn, HumanMessage("next", id="h-10")]


async def test_a_retried_async_write_stores_nothing_twice(manager: SessionManager) -> None:
    history = OgmemChatMessageHistory("aretry", manager=manager)
    turn = [HumanMessage("q", id="h-1"), AIMessage("a", id="a-1")]
    await history.aadd_messages(turn)
    await history.aadd_messages(turn)
    assert await history.aget_messages() == turn


_any_id = st.text(min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message_id=_any_id)
def test_every_id_we_pass_is_one_the_core_keeps(manager: SessionManager, message_id: str) -> None:
    """Our id filter never sends the core an id it refuses (that would make the write fail)."""
    import uuid

    from langchain_ogmem.convert import storable_id

    session = f"any-{uuid.uuid4().hex}"
    kept = storable_id(message_id)
    try:
        manager.add_messages(session, [{"role": "user", "content": "x", "id": message_id}])
        accepted = True
    except InvalidInputError:
        accepted = False
    assert kept is None or accepted
    if accepted:
        # What the core takes and we leave out can only be an id our filter is stricter on.
        assert kept == message_id or len(message_id) > 200


def test_clear_of_a_session_never_written_is_a_no_op(manager: SessionManager) -> None:
    history = OgmemChatMessageHistory("never", manager=manager)
    history.clear()
    assert history.messages == []


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
_message = st.one_of(
    st.builds(HumanMessage, content=_text),
    st.builds(AIMessage, content=_text),
    st.builds(SystemMessage, content=_text),
    st.builds(
        lambda text, n: AIMessage(
            content=text, tool_calls=[{"name": "t", "args": {"n": n}, "id": f"c{n}", "type": "tool_call"}]
        ),
        _text,
        st.integers(0, 99),
    ),
    st.builds(lambda text, n: ToolMessage(content=text, tool_call_id=f"c{n}"), _text, st.integers(0, 99)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(_message, min_size=1, max_size=4), min_size=1, max_size=5))
def test_contract_property_any_batches_full_view(
    manager: SessionManager, batches: list[list[BaseMessage]]
) -> None:
    import uuid

    ours = OgmemChatMessageHistory(f"p-{uuid.uuid4().hex}", manager=manager, view="full")
    theirs = oracle()
    for batch in batches:
        ours.add_messages(batch)
        theirs.add_messages(batch)
    assert ours.messages == theirs.messages


# -- what `messages` returns changes only at writes through the history ---------------------


def test_view_is_stable_between_writes_even_when_a_commit_lands(tmp_path: Path) -> None:
    with SessionManager(f"sqlite:///{tmp_path}/v.db", config=LOW) as m:
        history = OgmemChatMessageHistory("v", manager=m)
        for i in range(3):
            history.add_messages(
                [HumanMessage(f"question {i} about the Zeta project"), AIMessage(f"answer {i}")]
            )
        before = history.messages
        assert not any(is_summary_message(x) for x in before)
        m.commit("v", wait=True)  # a background commit landing between the two reads of a turn
        m.add_message("v", "user", "written by another process")
        assert history.messages == before
        # The next write through the history publishes the new view: summary first.
        history.add_messages([HumanMessage("next question"), AIMessage("next answer")])
        after = history.messages
        assert is_summary_message(after[0])
        assert isinstance(after[0], SystemMessage)
        assert after[-2:] == [HumanMessage("next question"), AIMessage("next answer")]


def test_summary_role_human_and_token_budget(tmp_path: Path) -> None:
    with SessionManager(f"sqlite:///{tmp_path}/r.db", config=LOW) as m:
        history = OgmemChatMessageHistory("r", manager=m, summary_role="human", token_budget=200)
        for i in range(12):
            history.add_messages(
                [HumanMessage(f"turn {i}: the code word is alpha-{i}"), AIMessage(f"noted {i}")]
            )
        m.wait_for_tasks()
        history.add_messages([HumanMessage("last"), AIMessage("done")])
        m.wait_for_tasks()
        view = history.messages
        assert isinstance(view[0], HumanMessage) and is_summary_message(view[0])
        context = m.get_context("r", 200)
        assert context.token_count <= 200
        assert view == context_to_messages(context, summary_role="human")
        full = OgmemChatMessageHistory("r", manager=m, view="full").messages
        assert len(full) == 26


def test_summary_message_coming_back_is_not_stored_again(tmp_path: Path) -> None:
    with SessionManager(f"sqlite:///{tmp_path}/d.db", config=LOW) as m:
        history = OgmemChatMessageHistory("d", manager=m)
        for i in range(8):
            history.add_messages([HumanMessage(f"turn {i}"), AIMessage(f"ok {i}")])
        m.wait_for_tasks()
        history.add_messages([HumanMessage("x"), AIMessage("y")])
        view = history.messages
        assert is_summary_message(view[0])
        count = len(m.get_history("d"))
        history.add_messages([view[0], HumanMessage("z")])
        assert len(m.get_history("d")) == count + 1


def recalled_section(text: str) -> str:
    """The recalled turns of a leading message (the last section of ``Context.preamble()``)."""
    return text.split(RECALLED_HEADER, 1)[1] if RECALLED_HEADER in text else ""


def test_set_query_publishes_a_new_view_only_when_the_query_changes(tmp_path: Path) -> None:
    # 40 turns: more than the budget holds, so the unused budget (filled with the archived
    # turns just before the live window) cannot reach back to the cat, and only recall can.
    with SessionManager(f"sqlite:///{tmp_path}/q.db", config=LOW) as m:
        history = OgmemChatMessageHistory("q", manager=m)
        history.add_messages([HumanMessage("My cat is called Whiskers"), AIMessage("Lovely name.")])
        for i in range(40):
            history.add_messages(
                [HumanMessage(f"turn {i}: the train to Porto leaves at {i}"), AIMessage("ok")]
            )
            m.wait_for_tasks()
        assert history.query is None
        plain = history.messages
        assert "Whiskers" not in recalled_section(plain[0].text)
        history.set_query("What is my cat called?")
        asked = history.messages
        assert "My cat is called Whiskers" in recalled_section(asked[0].text) and asked != plain
        assert asked == context_to_messages(m.get_context("q", query="What is my cat called?"))
        m.add_message("q", "user", "written by another process")
        history.set_query("What is my cat called?")  # the same query: the same view
        assert history.messages == asked
        history.add_messages([HumanMessage("thanks"), AIMessage("you're welcome")])
        assert history.query is None  # a write resets it: the default is the latest user message
        with pytest.raises(InvalidInputError):
            history.set_query(3)  # type: ignore[arg-type]
        full = OgmemChatMessageHistory("q", manager=m, view="full")
        full.set_query("cat")
        assert len(full.messages) == len(m.get_history("q"))


# -- message ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("message_id", ["h-1", "lc_run--0195-ab", "x" * 200, "ünï 💬"])
def test_storable_langchain_ids_become_ogmem_ids(manager: SessionManager, message_id: str) -> None:
    assert to_record(HumanMessage("hi", id=message_id))["id"] == message_id
    OgmemChatMessageHistory("ids", manager=manager).add_messages([HumanMessage("hi", id=message_id)])
    assert [m.id for m in manager.get_history("ids")] == [message_id]


@pytest.mark.parametrize(
    "message_id",
    [None, "", "   ", "x" * 201, "a\nb", "tab\there", "\x7f", "\ue000", "line\u2028sep", "\u200b"],
)
def test_other_ids_are_left_to_the_core(manager: SessionManager, message_id: str | None) -> None:
    message = HumanMessage("hi", id=message_id)
    assert "id" not in to_record(message)
    history = OgmemChatMessageHistory("ids2", manager=manager, view="full")
    history.add_messages([message])
    stored = manager.get_history("ids2")
    assert len(stored) == 1 and stored[0].id.startswith("msg_")
    assert history.messages == [message]  # the LangChain id still round-trips in the payload


def test_a_repeated_id_within_one_batch_is_stored_once(manager: SessionManager) -> None:
    """Deliberately unlike InMemoryChatMessageHistory, which keeps both copies: one id, one message."""
    message = HumanMessage("once", id="dup")
    assert len(to_records([message, AIMessage("a", id="other"), message])) == 2
    OgmemChatMessageHistory("dup", manager=manager).add_messages([message, message])
    assert [m.content for m in manager.get_history("dup")] == ["once"]


# -- bad input -------------------------------------------------------------------------------


def test_non_messages_store_nothing(manager: SessionManager) -> None:
    history = OgmemChatMessageHistory("bad", manager=manager)
    with pytest.raises(TypeError):
        history.add_messages([HumanMessage("ok"), "not a message"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        history.add_messages([HumanMessage("ok"), ChatMessage(role="narrator", content="?")])
    with pytest.raises(TypeError):
        history.add_message({"role": "user", "content": "dict"})  # type: ignore[arg-type]
    assert manager.get_history("bad") == []
    assert history.messages == []


async def test_non_messages_store_nothing_async(manager: SessionManager) -> None:
    history = OgmemChatMessageHistory("abad", manager=manager)
    with pytest.raises(TypeError):
        await history.aadd_messages([HumanMessage("ok"), 3])  # type: ignore[list-item]
    assert await manager.aget_history("abad") == []


def test_user_who_does_not_own_the_session_is_refused(manager: SessionManager) -> None:
    alice = OgmemChatMessageHistory("owned", manager=manager, user_id="alice")
    alice.add_messages([HumanMessage("alice's secret: 1234")])
    mallory = OgmemChatMessageHistory("owned", manager=manager, user_id="mallory")
    with pytest.raises(AccessDeniedError):
        mallory.add_messages([HumanMessage("mallory was here")])
    with pytest.raises(AccessDeniedError):
        _ = mallory.messages
    with pytest.raises(AccessDeniedError):
        mallory.clear()
    assert [m.content for m in manager.get_history("owned")] == ["alice's secret: 1234"]
    assert alice.messages == [HumanMessage("alice's secret: 1234")]


async def test_user_who_does_not_own_the_session_is_refused_async(manager: SessionManager) -> None:
    await OgmemChatMessageHistory("aowned", manager=manager, user_id="alice").aadd_messages(
        [HumanMessage("a")]
    )
    mallory = OgmemChatMessageHistory("aowned", manager=manager, user_id="mallory")
    with pytest.raises(AccessDeniedError):
        await mallory.aadd_messages([HumanMessage("m")])
    with pytest.raises(AccessDeniedError):
        await mallory.aget_messages()
    with pytest.raises(AccessDeniedError):
        await mallory.aclear()
    assert len(await manager.aget_history("aowned")) == 1


@pytest.mark.parametrize("session_id", ["", "   ", None, 7, "bad\x00id"])
def test_invalid_session_ids_fail_at_construction(manager: SessionManager, session_id: Any) -> None:
    with pytest.raises(InvalidSessionIdError):
        OgmemChatMessageHistory(session_id, manager=manager)


def test_too_long_session_id_stores_nothing(manager: SessionManager) -> None:
    history = OgmemChatMessageHistory("x" * 10_000, manager=manager)
    with pytest.raises(InvalidSessionIdError):
        history.add_messages([HumanMessage("hi")])
    assert manager.list_sessions() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"view": "recent"},
        {"token_budget": 0},
        {"token_budget": True},
        {"summary_role": "tool"},
        {"user_id": ""},
        {"url": "memory://"},
        {"llm": object()},
    ],
)
def test_invalid_options_are_config_errors(manager: SessionManager, kwargs: dict[str, Any]) -> None:
    with pytest.raises((ConfigError, InvalidInputError)):
        OgmemChatMessageHistory("s", manager=manager, **kwargs)


# -- shared managers, factory, LLM compression -----------------------------------------------


def test_construction_is_cheap_and_managers_are_shared(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    a = OgmemChatMessageHistory("s1", url=url)
    b = OgmemChatMessageHistory("s2", url=url)
    assert a.manager is b.manager
    assert not (tmp_path / "shared.db").exists()  # no I/O until the first read or write
    a.add_messages([HumanMessage("hi")])
    assert OgmemChatMessageHistory("s1", url=url).messages == [HumanMessage("hi")]


def test_history_factory_keys_by_user_and_conversation(manager: SessionManager) -> None:
    factory = history_factory(manager=manager)
    assert [spec.id for spec in factory.config_specs] == ["user_id", "conversation_id"]
    alice = factory("alice", "conv-1")
    assert alice.session_id == "user:5:alice:conv-1" == factory.session_id("alice", "conv-1")
    assert alice.user_id == "alice"
    alice.add_messages([HumanMessage("hello")])
    factory("bob", "conv-1").add_messages([HumanMessage("bob's own")])
    assert factory("alice", "conv-1").messages == [HumanMessage("hello")]
    assert factory("bob", "conv-1").messages == [HumanMessage("bob's own")]
    with pytest.raises(AccessDeniedError):
        OgmemChatMessageHistory(alice.session_id, user_id="bob", manager=manager).add_messages(
            [HumanMessage("hijack")]
        )
    with pytest.raises(ConfigError):
        history_factory(manager=manager, view="everything")  # type: ignore[arg-type]


_id_part = st.text(alphabet="ab:1 /\\é", min_size=1, max_size=8).filter(
    lambda t: t.strip() != "" and t != "default"
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=st.tuples(st.sampled_from([None, "acme", "a:1"]), _id_part, _id_part),
    b=st.tuples(st.sampled_from([None, "acme", "a:1"]), _id_part, _id_part),
)
def test_factory_session_ids_are_one_to_one(
    manager: SessionManager, a: tuple[str | None, str, str], b: tuple[str | None, str, str]
) -> None:
    def session_id(account: str | None, user_id: str, conversation_id: str) -> str:
        return history_factory(manager=manager, account_id=account).session_id(user_id, conversation_id)

    same = (a[0] or "default", *a[1:]) == (b[0] or "default", *b[1:])
    assert (session_id(*a) == session_id(*b)) == same


def test_factory_accounts_are_separate_and_bound(manager: SessionManager) -> None:
    acme = history_factory(manager=manager, account_id="acme")
    plain = history_factory(manager=manager)
    acme("ada", "c").add_messages([HumanMessage("acme ada")])
    plain("ada", "c").add_messages([HumanMessage("default-account ada")])
    assert acme.session_id("ada", "c") == "account:4:acme:user:3:ada:c"
    assert acme("ada", "c").messages == [HumanMessage("acme ada")]
    owned = manager.list_sessions(RequestContext(account_id="acme", user_id="ada"))
    assert [meta.session_id for meta in owned] == [acme.session_id("ada", "c")]
    with pytest.raises(ConfigError):
        history_factory(manager=manager, account_id="")


@pytest.mark.parametrize(
    ("user_id", "conversation_id", "error"),
    [
        (None, "c", InvalidInputError),
        ("", "c", InvalidInputError),
        (" ", "c", InvalidInputError),
        (42, "c", InvalidInputError),
        ("default", "c", InvalidInputError),
        ("a\nb", "c", InvalidInputError),
        ("\ud800", "c", InvalidInputError),
        ("ada", "", InvalidSessionIdError),
        ("ada", None, InvalidSessionIdError),
        ("ada", "c\x00", InvalidSessionIdError),
        ("ada", "c" * 246, InvalidSessionIdError),  # 257 characters with "user:3:ada:"
    ],
)
def test_factory_refuses_bad_users_before_any_io(
    manager: SessionManager, user_id: Any, conversation_id: Any, error: type[Exception]
) -> None:
    factory = history_factory(manager=manager)
    with pytest.raises(error):
        factory(user_id, conversation_id)
    assert manager.list_sessions() == []


def test_factory_session_id_at_the_length_limit_is_accepted(manager: SessionManager) -> None:
    factory = history_factory(manager=manager)
    history = factory("ada", "c" * 245)
    assert len(history.session_id) == manager.config.max_session_id_length
    history.add_messages([HumanMessage("fits")])
    assert history.messages == [HumanMessage("fits")]


def _fill(history: OgmemChatMessageHistory, turns: int) -> None:
    for i in range(turns):
        history.add_messages(
            [
                HumanMessage(f"turn {i}: my favourite city is Lisbon and my badge is B-{i}"),
                AIMessage(f"noted {i}"),
            ]
        )


def _make(tmp_path: Path, llm: object) -> Callable[[], OgmemChatMessageHistory]:
    url = f"sqlite:///{tmp_path}/llm-{type(llm).__name__}.db"
    return lambda: OgmemChatMessageHistory("llm", url=url, config=LOW, llm=llm)


def test_llm_compression_uses_the_chat_model(tmp_path: Path) -> None:
    llm = SummaryChatModel()
    history = _make(tmp_path, llm)()
    _fill(history, 10)
    history.manager.wait_for_tasks()
    history.add_messages([HumanMessage("and now?"), AIMessage("still here")])
    view = history.messages
    assert is_summary_message(view[0])
    assert "scripted summary fact" in view[0].text
    assert llm.prompts and "Lisbon" in llm.prompts[0]
    archive = history.manager.list_archives("llm")[0]
    assert archive.metadata["compression"]["fallback_used"] is False


def test_llm_failure_keeps_messages_and_falls_back(tmp_path: Path) -> None:
    llm = ExplodingChatModel()
    history = _make(tmp_path, llm)()
    _fill(history, 10)
    history.manager.wait_for_tasks()
    assert llm.calls > 0
    full = OgmemChatMessageHistory("llm", manager=history.manager, view="full").messages
    assert len(full) == 20  # nothing lost
    history.add_messages([HumanMessage("and now?"), AIMessage("still here")])
    view = history.messages
    assert is_summary_message(view[0])
    assert "Lisbon" in view[0].text  # the extractive fallback wrote the summary


def test_llm_failure_is_recorded_in_archive_metadata(tmp_path: Path) -> None:
    history = _make(tmp_path, ExplodingChatModel())()
    _fill(history, 10)
    history.manager.wait_for_tasks()
    compression = history.manager.list_archives("llm")[0].metadata["compression"]
    assert compression["fallback_used"] is True
    assert "model is down" in (compression["error"] or "")


# -- long-term memories of the user (issue 12, item 4) -------------------------------------------

# Commits after two turns, so a short conversation lands an archive and its extraction.
COMMIT_SOON = MemoryConfig(
    commit_token_threshold=40, commit_turn_threshold=2, keep_recent_messages=1, keep_recent_tokens=0
)


def _tell(history: OgmemChatMessageHistory, *facts: str) -> None:
    for fact in (*facts, "Anything else for today?"):
        history.add_messages([HumanMessage(fact), AIMessage("Got it.")])


async def test_messages_lead_with_what_is_known_about_the_user(tmp_path: Path) -> None:
    """What ada said in conversation "c-1" leads "c-2" (sync and async reads), never bob's.

    Fails on the adapter as it was: the leading message rendered summary, abstracts and
    recalled turns only, so a new conversation of the same user started with nothing.
    """
    with SessionManager(f"sqlite:///{tmp_path}/lt.db", config=COMMIT_SOON) as m:
        acme = history_factory(manager=m, account_id="acme")
        _tell(acme("ada", "c-1"), "I live in Lisbon.", "My cat is called Whiskers.")
        m.wait_for_tasks()
        assert any("Lisbon" in r.content for r in m.list_memories(RequestContext("acme", "ada")))

        fresh = acme("ada", "c-2")
        fresh.add_messages([HumanMessage("Where do I live?")])
        view = fresh.messages
        assert is_summary_message(view[0]) and view[0].text.startswith(MEMORIES_HEADER)
        assert "Lisbon" in view[0].text
        assert [m.text for m in view[1:]] == ["Where do I live?"]  # a new conversation: no turns
        again = acme("ada", "c-2")
        again.set_query("my cat")
        assert "Whiskers" in (await again.aget_messages())[0].text
        # the history renders exactly the core's preamble, memories first
        assert view == context_to_messages(m.get_context(fresh.session_id, ctx=RequestContext("acme", "ada")))

        for other in (acme("bob", "c-2"), history_factory(manager=m, account_id="globex")("ada", "c-2")):
            other.add_messages([HumanMessage("Where do I live?")])
            seen = " ".join(message.text for message in other.messages)
            assert "Lisbon" not in seen and "Whiskers" not in seen and MEMORIES_HEADER not in seen


def test_a_deleted_memory_leaves_the_next_view(tmp_path: Path) -> None:
    with SessionManager(f"sqlite:///{tmp_path}/del.db", config=COMMIT_SOON) as m:
        factory = history_factory(manager=m)
        _tell(factory("ada", "c-1"), "My cat is called Whiskers.")
        m.wait_for_tasks()
        ada = RequestContext(user_id="ada")
        (cat,) = [r for r in m.list_memories(ada) if "Whiskers" in r.content]
        later = factory("ada", "c-2")
        later.add_messages([HumanMessage("What is my cat called?")])
        assert "Whiskers" in later.messages[0].text
        assert m.delete_memory(ada, cat.memory_id)
        later.add_messages([HumanMessage("And again: my cat?")])  # a write publishes a new view
        assert all("Whiskers" not in message.text for message in later.messages)


# -- recall by meaning: the embedder is passed to the manager (issue 11, item 3) -----------------


def _talk_about_the_pet(history: OgmemChatMessageHistory) -> str:
    """40 turns after the pet's name, every commit landed, then the question: its recall."""
    history.add_messages([HumanMessage(PET), AIMessage("Sweet.")])
    for i in range(40):
        history.add_messages(
            [HumanMessage(f"the train to Porto leaves from platform {i % 9}"), AIMessage("ok")]
        )
    history.manager.wait_for_tasks()
    history.add_messages([HumanMessage(ASK_PET)])
    return recalled_section(history.messages[0].text)


def test_the_embedder_recalls_by_meaning(tmp_path: Path) -> None:
    # Without an embedder the question shares no word with the answer: nothing is recalled.
    assert PET not in _talk_about_the_pet(
        OgmemChatMessageHistory("pet", url=f"sqlite:///{tmp_path}/words.db", config=MEANING)
    )
    embeddings = ConceptEmbeddings()
    history = OgmemChatMessageHistory(
        "pet", url=f"sqlite:///{tmp_path}/meaning.db", config=MEANING, embedder=embeddings
    )
    assert PET in _talk_about_the_pet(history)
    assert embeddings.documents_embedded > 0 and embeddings.queries_embedded > 0


def test_history_factory_passes_the_embedder(tmp_path: Path) -> None:
    embeddings = ConceptEmbeddings()
    factory = history_factory(url=f"sqlite:///{tmp_path}/f.db", config=MEANING, embedder=embeddings)
    assert PET in _talk_about_the_pet(factory("ada", "pets"))
    assert embeddings.queries_embedded > 0


def test_shared_managers_are_keyed_by_embedder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keyed.db"
    one, two = ConceptEmbeddings(), ConceptEmbeddings()
    a = OgmemChatMessageHistory("s1", url=url, embedder=one)
    assert OgmemChatMessageHistory("s2", url=url, embedder=one).manager is a.manager
    assert history_factory(url=url, embedder=one).manager is a.manager
    assert OgmemChatMessageHistory("s1", url=url, embedder=two).manager is not a.manager
    assert OgmemChatMessageHistory("s1", url=url).manager is not a.manager
    assert a.manager.embedder is not None and OgmemChatMessageHistory("s1", url=url).manager.embedder is None


def test_embedder_options_are_config_errors(manager: SessionManager, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="embedder"):
        OgmemChatMessageHistory("s", manager=manager, embedder=ConceptEmbeddings())
    with pytest.raises(ConfigError, match="embedder"):
        history_factory(manager=manager, embedder=ConceptEmbeddings())
    with pytest.raises(ConfigError):
        OgmemChatMessageHistory("s", url=f"sqlite:///{tmp_path}/bad.db", embedder="not an embedder")
    assert manager.list_sessions() == []
