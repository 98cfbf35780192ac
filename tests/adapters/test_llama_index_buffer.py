"""OgmemChatMemoryBuffer: conversion, the stock contract side by side with ChatMemoryBuffer,
serialisation, concurrency, bad input and the ogmem context (summary, recall)."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.base.llms.types import (
    ChatMessage,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms import MockLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.memory.ogmem import MessageTypeError, OgmemChatMemoryBuffer, OgmemChatStore
from llama_index.memory.ogmem.convert import ogmem_role, text_view, to_chat_message, to_record

from ogmem_memory import MemoryConfig, RequestContext, SessionManager
from ogmem_memory.errors import AccessDeniedError, ConfigError, InvalidInputError, OgmemError
from ogmem_memory.models import SessionMessage
from ogmem_memory.stores import InMemoryStore, SQLiteStore
from tests.adapters.llama_index_fakes import ConceptEmbedding, ws_tokenizer

# No commit can happen: the whole history stays live, as in ChatMemoryBuffer.
HIGH = MemoryConfig(commit_token_threshold=10**9, commit_turn_threshold=0)
# Commits after a few turns, keeping a short tail.
LOW = MemoryConfig(
    commit_token_threshold=120, commit_turn_threshold=4, keep_recent_messages=4, keep_recent_tokens=30
)

WORDS = ["alpha", "beta", "gamma", "delta", "Paris", "42", "blue", "river", "x"]


def _pair(token_limit: int, *, config: MemoryConfig = HIGH) -> tuple[OgmemChatMemoryBuffer, ChatMemoryBuffer]:
    manager = SessionManager(InMemoryStore(), config=config, token_counter=ws_tokenizer)
    ours = OgmemChatMemoryBuffer.from_defaults(token_limit=token_limit, manager=manager, session_id="s")
    stock = ChatMemoryBuffer.from_defaults(token_limit=token_limit, tokenizer_fn=ws_tokenizer)
    return ours, stock


def _text(n: int, seed: int = 0) -> str:
    return " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(n))


def _tool_turn(i: int) -> list[ChatMessage]:
    call_id = f"call_{i}"
    return [
        ChatMessage(role="user", content=f"add {i} and {i + 1} please"),
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id=call_id, tool_name="add", tool_kwargs={"a": i, "b": i + 1})],
        ),
        ChatMessage(role="tool", content=str(2 * i + 1), additional_kwargs={"tool_call_id": call_id}),
        ChatMessage(role="assistant", content=f"The sum is {2 * i + 1}."),
    ]


# -- conversion ------------------------------------------------------------------------


RICH = [
    ChatMessage(role="user", content="hello"),
    ChatMessage(role="developer", content="be brief"),
    ChatMessage(role="chatbot", content="cohere says hi"),
    ChatMessage(role="model", content="gemini says hi"),
    ChatMessage(role="function", content="42", additional_kwargs={"name": "answer"}),
    ChatMessage(
        role="assistant",
        blocks=[
            ThinkingBlock(content="hmm"),
            TextBlock(text="calling"),
            ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 1, "b": 2}),
        ],
    ),
    ChatMessage(
        role="assistant",
        content="",
        additional_kwargs={
            "tool_calls": [
                {"id": "c2", "type": "function", "function": {"name": "mul", "arguments": '{"a": 2}'}}
            ]
        },
    ),
    ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "c1"}),
    ChatMessage(role="user", blocks=[TextBlock(text="look"), ImageBlock(image=b"\x89PNG\r\n\x1a\nfake")]),
    ChatMessage(role="user", blocks=[DocumentBlock(data=b"%PDF-1.4 fake", title="spec.pdf")]),
    ChatMessage(role="assistant", blocks=[]),
    ChatMessage(
        role="user", content="emoji 🎉 and 中文", additional_kwargs={"nested": {"k": [1, 2.5, None]}}
    ),
]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("user", "user"),
        ("assistant", "assistant"),
        ("chatbot", "assistant"),
        ("model", "assistant"),
        ("system", "system"),
        ("developer", "system"),
        ("tool", "tool"),
        ("function", "tool"),
    ],
)
def test_role_mapping(role: str, expected: str) -> None:
    assert ogmem_role(MessageRole(role)) == expected


@pytest.mark.parametrize("message", RICH, ids=lambda m: f"{m.role.value}-{len(m.blocks)}")
def test_record_round_trips_every_field(message: ChatMessage) -> None:
    record = to_record(message)
    json.dumps(record)  # JSON-safe
    stored = SessionMessage(
        id="msg_1", role=record["role"], content=record["content"], payload=record["payload"]
    )
    assert to_chat_message(stored) == message


def test_text_view_names_tool_calls_and_media() -> None:
    assert "[tool call: add(" in text_view(RICH[5]) and "calling" in text_view(RICH[5])
    assert "[tool call: mul(" in text_view(RICH[6])
    assert text_view(RICH[8]) == "look\n[image]"
    assert text_view(RICH[9]) == "[document: spec.pdf]"


def test_message_without_llama_index_payload_becomes_text() -> None:
    foreign = SessionMessage(id="msg_1", role="assistant", content="from langchain", payload={"type": "ai"})
    assert to_chat_message(foreign) == ChatMessage(role="assistant", content="from langchain")


def test_every_field_round_trips_through_sqlite(tmp_path: Path) -> None:
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{tmp_path}/x.db", config=HIGH, session_id="rich"
    )
    memory.put_messages(RICH)
    assert memory.get_all() == RICH


# -- the stock contract, side by side ----------------------------------------------------------


message_st = st.one_of(
    st.builds(
        lambda role, n, seed: ChatMessage(role=role, content=_text(n, seed)),
        st.sampled_from(["user", "assistant", "system", "tool"]),
        st.integers(0, 12),
        st.integers(0, 8),
    ),
    st.builds(lambda i: _tool_turn(i)[1], st.integers(0, 5)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(message_st, max_size=25),
    token_limit=st.integers(1, 80),
    initial=st.integers(0, 90),
    query=st.one_of(st.none(), st.sampled_from(["Paris", "river 42"])),
)
def test_get_equals_stock_buffer(
    messages: list[ChatMessage], token_limit: int, initial: int, query: str | None
) -> None:
    ours, stock = _pair(token_limit)
    for m in messages:
        ours.put(m)
        stock.put(m)
    assert ours.get_all() == stock.get_all()
    if initial > token_limit:
        with pytest.raises(ValueError, match="Initial token count exceeds token limit"):
            stock.get(input=query, initial_token_count=initial)
        with pytest.raises(ValueError, match="Initial token count exceeds token limit"):
            ours.get(input=query, initial_token_count=initial)
    else:
        assert ours.get(input=query, initial_token_count=initial) == stock.get(
            input=query, initial_token_count=initial
        )


@pytest.mark.parametrize(
    ("token_limit", "initial"),
    [(1000, 0), (17, 0), (16, 0), (9, 0), (5, 0), (1, 0), (20, 20), (20, 19), (20, 8), (3, 3)],
)
def test_token_limit_edge_cases_equal_stock(token_limit: int, initial: int) -> None:
    ours, stock = _pair(token_limit)
    history = [
        ChatMessage(role="assistant", content="welcome how can I help"),  # leading assistant
        *_tool_turn(1),
        ChatMessage(role="system", content="mid system note"),
        *_tool_turn(2),
        ChatMessage(role="user", content=_text(12)),  # the newest message is large
    ]
    ours.put_messages(history)
    stock.put_messages(history)
    assert ours.get(initial_token_count=initial) == stock.get(initial_token_count=initial)


def test_leading_assistant_kept_when_everything_fits() -> None:
    ours, stock = _pair(100)
    history = [ChatMessage(role="assistant", content="hi there"), ChatMessage(role="user", content="hello")]
    ours.set(history)
    stock.set(history)
    assert ours.get() == stock.get() == history


def test_newest_message_alone_when_it_exceeds_the_budget() -> None:
    ours, stock = _pair(5)
    history = [ChatMessage(role="user", content="short"), *_tool_turn(3)[:3]]
    history[-1] = ChatMessage(role="tool", content=_text(9), additional_kwargs={"tool_call_id": "call_3"})
    ours.put_messages(history)
    stock.put_messages(history)
    assert ours.get() == stock.get() == history[-1:]


def test_set_reset_put_messages_equal_stock() -> None:
    ours, stock = _pair(40)
    for memory in (ours, stock):
        memory.put_messages(_tool_turn(1))
        memory.set(_tool_turn(2) + _tool_turn(3))
        memory.put(ChatMessage(role="user", content="and now?"))
    assert ours.get_all() == stock.get_all()
    assert ours.get() == stock.get()
    ours.reset()
    stock.reset()
    assert ours.get_all() == stock.get_all() == []
    assert ours.get() == stock.get() == []


async def test_async_twins_equal_stock() -> None:
    ours, stock = _pair(30)
    for memory in (ours, stock):
        await memory.aput(ChatMessage(role="user", content="first question here"))
        await memory.aput_messages(_tool_turn(4))
        await memory.aset((await memory.aget_all()) + _tool_turn(5))
    assert await ours.aget_all() == await stock.aget_all()
    for initial in (0, 5, 29, 30):
        assert await ours.aget(initial_token_count=initial) == await stock.aget(initial_token_count=initial)
    with pytest.raises(ValueError):
        await ours.aget(initial_token_count=31)
    await ours.areset()
    await stock.areset()
    assert await ours.aget_all() == await stock.aget_all() == []


def test_set_with_the_stored_history_as_prefix_appends_only() -> None:
    manager = SessionManager(InMemoryStore(), config=HIGH)
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="p")
    memory.put_messages(_tool_turn(1))
    ids = [m.id for m in manager.get_history("p")]
    memory.set(_tool_turn(1) + _tool_turn(2))
    after = manager.get_history("p")
    assert [m.id for m in after[:4]] == ids and len(after) == 8
    memory.set(_tool_turn(3))  # not a continuation: rewritten
    assert memory.get_all() == _tool_turn(3)


def test_returned_messages_are_fresh_objects() -> None:
    """Agents edit the last message's text in place; the stored history must not change."""
    memory, _ = _pair(100)
    memory.put(ChatMessage(role="user", content="original"))
    memory.get()[-1].blocks[0].text = "edited"  # type: ignore[union-attr]
    assert memory.get_all()[0].content == "original"


# -- from_defaults ------------------------------------------------------------------------


def test_token_limit_defaults_like_stock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    llm = MockLLM()
    assert OgmemChatMemoryBuffer.from_defaults(url=url).token_limit == 3000
    assert (
        OgmemChatMemoryBuffer.from_defaults(url=url, llm=llm).token_limit
        == ChatMemoryBuffer.from_defaults(llm=llm, tokenizer_fn=ws_tokenizer).token_limit
        == int(llm.metadata.context_window * 0.75)
    )
    assert OgmemChatMemoryBuffer.from_defaults(url=url, llm=llm, token_limit=77).token_limit == 77


def test_session_id_defaults_to_chat_store_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    unnamed = OgmemChatMemoryBuffer.from_defaults(url=url).session_id
    assert (
        unnamed.startswith("private-") and unnamed != OgmemChatMemoryBuffer.from_defaults(url=url).session_id
    )
    memory = OgmemChatMemoryBuffer.from_defaults(url=url, chat_store_key="k1")
    assert memory.session_id == memory.chat_store_key == "k1"
    memory = OgmemChatMemoryBuffer.from_defaults(url=url, session_id="s1")
    assert memory.session_id == memory.chat_store_key == "s1"


def test_chat_history_is_stored_and_not_duplicated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    history = _tool_turn(1)
    OgmemChatMemoryBuffer.from_defaults(url=url, chat_history=history, session_id="h")
    again = OgmemChatMemoryBuffer.from_defaults(url=url, chat_history=history, session_id="h")
    assert again.get_all() == history
    empty = OgmemChatMemoryBuffer.from_defaults(url=url, chat_history=[], session_id="h")
    assert empty.get_all() == history  # chat engines pass [] every time: never a reset


def test_llm_becomes_the_compressor(tmp_path: Path) -> None:
    llm = MockLLM()
    memory = OgmemChatMemoryBuffer.from_defaults(url=f"sqlite:///{tmp_path}/x.db", llm=llm)
    assert type(memory.manager.compressor).__name__ == "LLMCompressor"


def test_no_len_or_bool() -> None:
    memory, _ = _pair(10)
    assert "__len__" not in type(memory).__dict__ and "__bool__" not in type(memory).__dict__
    assert (memory or None) is memory


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"role": "user", "content": "hi"}, "hi", None, 42])
def test_non_chat_message_is_rejected_and_nothing_stored(bad: object) -> None:
    memory, _ = _pair(100)
    memory.put(ChatMessage(role="user", content="kept"))
    with pytest.raises(MessageTypeError) as info:
        memory.put(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError | ValueError | OgmemError)
    with pytest.raises(MessageTypeError):
        memory.put_messages([ChatMessage(role="user", content="not stored"), bad])  # type: ignore[list-item]
    with pytest.raises(MessageTypeError):
        memory.set([bad])  # type: ignore[list-item]
    assert [m.content for m in memory.get_all()] == ["kept"]


async def test_async_non_chat_message_is_rejected() -> None:
    memory, _ = _pair(100)
    with pytest.raises(MessageTypeError):
        await memory.aput("hi")  # type: ignore[arg-type]
    with pytest.raises(MessageTypeError):
        await memory.aput_messages([ChatMessage(role="user", content="x"), 1])  # type: ignore[list-item]
    assert await memory.aget_all() == []


def test_unserialisable_kwargs_are_rejected() -> None:
    memory, _ = _pair(100)
    with pytest.raises(InvalidInputError):
        memory.put(ChatMessage(role="user", content="x", additional_kwargs={"obj": object()}))
    assert memory.get_all() == []


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "10"])
def test_bad_token_limit(limit: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        OgmemChatMemoryBuffer.from_defaults(url=f"sqlite:///{tmp_path}/x.db", token_limit=limit)  # type: ignore[arg-type]


def test_conflicting_options(tmp_path: Path) -> None:
    manager = SessionManager(InMemoryStore())
    with pytest.raises(ConfigError):
        OgmemChatMemoryBuffer.from_defaults(manager=manager, url="memory://")
    with pytest.raises(ConfigError):
        OgmemChatMemoryBuffer.from_defaults(manager=manager, tokenizer_fn=ws_tokenizer)
    with pytest.raises(ConfigError):
        OgmemChatMemoryBuffer.from_defaults(chat_store=SimpleChatStore())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OgmemChatMemoryBuffer.from_defaults(chat_store=OgmemChatStore(manager=manager), url="memory://")


def test_other_users_session_is_denied_and_untouched() -> None:
    manager = SessionManager(InMemoryStore(), config=HIGH)
    alice = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="shared", user_id="alice")
    alice.put(ChatMessage(role="user", content="secret"))
    bob = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="shared", user_id="bob")
    calls = [
        lambda: bob.put(ChatMessage(role="user", content="intrusion")),
        lambda: bob.put_messages([ChatMessage(role="user", content="intrusion")]),
        lambda: bob.set([ChatMessage(role="user", content="intrusion")]),
        bob.get,
        bob.get_all,
        bob.reset,
    ]
    for call in calls:
        with pytest.raises(AccessDeniedError):
            call()
    assert [m.content for m in alice.get_all()] == ["secret"]


async def test_other_users_session_is_denied_async() -> None:
    manager = SessionManager(InMemoryStore(), config=HIGH)
    alice = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="shared", user_id="alice")
    await alice.aput(ChatMessage(role="user", content="secret"))
    bob = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="shared", user_id="bob")
    with pytest.raises(AccessDeniedError):
        await bob.aput(ChatMessage(role="user", content="intrusion"))
    with pytest.raises(AccessDeniedError):
        await bob.aset([])
    with pytest.raises(AccessDeniedError):
        await bob.areset()
    with pytest.raises(AccessDeniedError):
        await bob.aget()
    assert [m.content for m in await alice.aget_all()] == ["secret"]


# -- serialisation ------------------------------------------------------------------------------


def test_to_dict_is_json_and_reattaches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=url, config=HIGH, session_id="ser", user_id="u1", token_limit=123, tokenizer_fn=ws_tokenizer
    )
    memory.put_messages(_tool_turn(1))
    data = json.loads(json.dumps(memory.to_dict()))
    assert data["class_name"] == "OgmemChatMemoryBuffer" and data["session_id"] == "ser"
    restored = OgmemChatMemoryBuffer.from_dict(data)
    assert restored.manager is memory.manager  # same process: the same manager
    assert (restored.session_id, restored.user_id, restored.token_limit) == ("ser", "u1", 123)
    assert restored.get_all() == memory.get_all() and restored.get() == memory.get()
    assert len(restored.tokenizer_fn("a b c")) == 3  # counts as the original tokenizer
    assert OgmemChatMemoryBuffer.from_string(memory.to_string()).get_all() == memory.get_all()


def test_to_dict_reattaches_in_a_new_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/x.db"
    memory = OgmemChatMemoryBuffer.from_defaults(url=url, config=HIGH, session_id="ser")
    memory.put_messages(_tool_turn(1))
    code = (
        "import sys, json\n"
        "from llama_index.core.llms import ChatMessage\n"
        "from llama_index.memory.ogmem import OgmemChatMemoryBuffer\n"
        "m = OgmemChatMemoryBuffer.from_string(sys.stdin.read())\n"
        "m.put(ChatMessage(role='user', content='from the other process'))\n"
        "print(len(m.get_all()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=memory.to_string(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"
    assert memory.get_all()[-1].content == "from the other process"


def test_pickle_reattaches(tmp_path: Path) -> None:
    manager = SessionManager(InMemoryStore(), config=HIGH, token_counter=ws_tokenizer)
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="pk", token_limit=9)
    memory.put_messages(_tool_turn(2))
    clone = pickle.loads(pickle.dumps(memory))
    assert clone.manager is manager  # a non-URL manager re-attaches inside this process
    assert clone.get() == memory.get() and clone.get_all() == memory.get_all()
    clone.put(ChatMessage(role="user", content="via clone"))
    assert memory.get_all()[-1].content == "via clone"


# -- concurrency --------------------------------------------------------------------------------


def test_eight_threads_put_and_get(tmp_path: Path) -> None:
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{tmp_path}/x.db", config=HIGH, session_id="threads", token_limit=10**6
    )
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(25):
                memory.put(ChatMessage(role="user", content=f"t{t} m{i}"))
                got = memory.get()
                mine = [m.content for m in got if (m.content or "").startswith(f"t{t} ")]
                assert mine[-1] == f"t{t} m{i}"  # read-your-writes
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    contents = [m.content for m in memory.get_all()]
    assert len(contents) == 200
    for t in range(8):
        assert [c for c in contents if c.startswith(f"t{t} ")] == [f"t{t} m{i}" for i in range(25)]


async def test_fifty_concurrent_aput(tmp_path: Path) -> None:
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{tmp_path}/x.db", config=HIGH, session_id="tasks"
    )
    await asyncio.gather(*(memory.aput(ChatMessage(role="user", content=f"task {i}")) for i in range(50)))
    contents = [m.content for m in await memory.aget_all()]
    assert sorted(contents) == sorted(f"task {i}" for i in range(50))
    assert len(contents) == 50


# -- the ogmem context ------------------------------------------------------------------------


def test_summary_and_recall_within_token_limit() -> None:
    manager = SessionManager(InMemoryStore(), config=LOW, token_counter=ws_tokenizer)
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="long", token_limit=90)
    memory.put(ChatMessage(role="user", content="my locker code is 7319 remember it"))
    memory.put(ChatMessage(role="assistant", content="noted the locker code"))
    for i in range(30):
        memory.put(ChatMessage(role="user", content=f"question {i} about {_text(6, i)}"))
        memory.put(ChatMessage(role="assistant", content=f"answer {i} {_text(5, i + 1)}"))
    manager.wait_for_tasks()
    got = memory.get(input="what was my locker code?")
    assert got[0].role == MessageRole.SYSTEM
    assert "Summary of the earlier conversation" in (got[0].content or "")
    assert "7319" in (got[0].content or "")  # recalled verbatim for the query
    assert len(ws_tokenizer(" ".join(str(m.content) for m in got))) <= 90
    assert got[1].role == MessageRole.USER
    assert len(memory.get_all()) == 62  # nothing lost
    for initial in (0, 30, 60, 89):
        got = memory.get(initial_token_count=initial)
        assert len(ws_tokenizer(" ".join(str(m.content) for m in got))) + initial <= 90 or len(got) == 1


def test_everything_committed_returns_the_summary() -> None:
    manager = SessionManager(InMemoryStore(), config=HIGH, token_counter=ws_tokenizer)
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="all", token_limit=500)
    memory.put_messages(_tool_turn(1))
    manager.commit("all", wait=True)
    got = memory.get()
    assert len(got) == 1 and got[0].role == MessageRole.SYSTEM
    assert len(memory.get_all()) == 4


async def test_async_get_keeps_leading_assistant_like_stock() -> None:
    ours, stock = _pair(100)
    history = [ChatMessage(role="assistant", content="hi there"), ChatMessage(role="user", content="hello")]
    await ours.aset(history)
    await stock.aset(history)
    assert await ours.aget() == await stock.aget() == history


@pytest.mark.parametrize("session_id", ["", "   ", 42])
def test_bad_session_id(session_id: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        OgmemChatMemoryBuffer.from_defaults(url=f"sqlite:///{tmp_path}/x.db", session_id=session_id)  # type: ignore[arg-type]


def test_from_dict_in_a_new_process_takes_the_tokenizer(tmp_path: Path) -> None:
    import subprocess
    import sys

    memory = OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{tmp_path}/x.db",
        config=HIGH,
        session_id="tok",
        tokenizer_fn=ws_tokenizer,
        token_limit=9,
    )
    memory.put_messages([*_tool_turn(1), ChatMessage(role="user", content="one two three four")])
    code = (
        "import sys, json\n"
        "from llama_index.memory.ogmem import OgmemChatMemoryBuffer\n"
        "from tests.adapters.llama_index_fakes import ws_tokenizer\n"
        "m = OgmemChatMemoryBuffer.from_dict(json.loads(sys.stdin.read()), tokenizer_fn=ws_tokenizer)\n"
        "print(json.dumps([x.model_dump(mode='json') for x in m.get()]), len(m.tokenizer_fn('a b c')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=memory.to_string(),
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    got, words = out.stdout.rsplit(" ", 1)
    assert [ChatMessage.model_validate(x) for x in json.loads(got)] == memory.get()
    assert words.strip() == "3"


def test_threads_with_background_commits(tmp_path: Path) -> None:
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{tmp_path}/x.db",
        config=LOW,
        session_id="busy",
        token_limit=60,
        tokenizer_fn=ws_tokenizer,
    )
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(20):
                memory.put_messages(
                    [
                        ChatMessage(role="user", content=f"t{t} q{i} {_text(5, i)}"),
                        ChatMessage(role="assistant", content=f"t{t} a{i} {_text(4, t)}"),
                    ]
                )
                got = memory.get()
                assert len(ws_tokenizer(" ".join(str(m.content) for m in got))) <= 60 or len(got) == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    memory.manager.wait_for_tasks()
    assert not errors
    contents = [m.content or "" for m in memory.get_all()]
    assert len(contents) == 320
    for t in range(8):
        mine = [c.split()[1] for c in contents if c.startswith(f"t{t} ")]
        assert mine == [x for i in range(20) for x in (f"q{i}", f"a{i}")]
    assert memory.get()[0].role == MessageRole.SYSTEM  # commits happened meanwhile


# -- the user's long-term memories (issue 12) ---------------------------------------------------


def _teach(manager: SessionManager, session_id: str, user_id: str, *facts: str) -> None:
    """A finished session of ``user_id``: its commit extracts the facts as long-term memories."""
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id=session_id, user_id=user_id)
    for fact in facts:
        memory.put(ChatMessage(role="user", content=fact))
        memory.put(ChatMessage(role="assistant", content="Noted."))
    manager.commit(session_id, RequestContext(user_id=user_id), wait=True)
    manager.wait_for_tasks()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_system_message_shows_the_users_memories_from_another_session(backend: str, tmp_path: Path) -> None:
    store = InMemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "lt.db")
    manager = SessionManager(store, config=HIGH, token_counter=ws_tokenizer)
    _teach(manager, "ada-1", "ada", "My cat is called Whiskers.", "I live in Lisbon.")
    question = ChatMessage(role="user", content="What is my cat called?")

    ada = OgmemChatMemoryBuffer.from_defaults(
        manager=manager, session_id="ada-2", user_id="ada", token_limit=200
    )
    ada.put(question)
    got = ada.get()
    assert got[0].role == MessageRole.SYSTEM
    assert (got[0].content or "").startswith(
        "What is known about the user:\n- User's cat is called Whiskers."
    )
    assert [m.content for m in got[1:]] == [question.content]  # the window, as the stock class gives it

    bob = OgmemChatMemoryBuffer.from_defaults(
        manager=manager, session_id="bob-1", user_id="bob", token_limit=200
    )
    bob.put(question.model_copy())
    assert [(m.role, m.content) for m in bob.get()] == [(MessageRole.USER, question.content)]
    manager.close()


async def test_memories_are_counted_within_token_limit_and_keep_the_stock_contract() -> None:
    manager = SessionManager(InMemoryStore(), config=HIGH, token_counter=ws_tokenizer)
    _teach(manager, "old", "ada", "My cat is called Whiskers.", "I live in Lisbon.", "My name is Ada.")
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="new", user_id="ada")
    await memory.aput_messages([*_tool_turn(1), ChatMessage(role="user", content="Where do I live now?")])
    history = memory.get_all()
    shown = 0
    for limit in range(1, 120, 3):
        memory.token_limit = limit
        for initial in sorted({0, limit // 2, limit}):
            for got in (
                memory.get(initial_token_count=initial),
                await memory.aget(initial_token_count=initial),
            ):
                window = got[1:] if got and got[0].role == MessageRole.SYSTEM else got
                total = len(ws_tokenizer(" ".join(str(m.content) for m in got)))
                assert total + initial <= limit or [m.content for m in got] == [history[-1].content]
                assert [m.content for m in window] == [
                    m.content for m in history[len(history) - len(window) :]
                ]
                if len(window) < len(history):  # the stock class never starts a cut window with these
                    assert window[0].role not in (MessageRole.ASSISTANT, MessageRole.TOOL)
                shown += "Lisbon" in str(got[0].content)
        with pytest.raises(ValueError):
            memory.get(initial_token_count=limit + 1)
    assert shown  # the memories did take part
    manager.close()


def test_embedder_reaches_the_manager_built_by_from_defaults_and_recalls_by_meaning(tmp_path: Path) -> None:
    def conversation(memory: OgmemChatMemoryBuffer) -> None:
        memory.put(ChatMessage(role="user", content="My kitten sleeps on the sofa all day."))
        memory.put(ChatMessage(role="assistant", content="Noted."))
        for i in range(12):
            memory.put(ChatMessage(role="user", content=f"question {i} about {_text(6, i)}"))
            memory.put(ChatMessage(role="assistant", content=f"answer {i} {_text(5, i + 1)}"))
        memory.manager.wait_for_tasks()

    embedder = ConceptEmbedding()
    common: dict[str, Any] = {"config": LOW, "tokenizer_fn": ws_tokenizer, "token_limit": 120}
    url = f"sqlite:///{tmp_path / 'vec.db'}"
    with_vectors = OgmemChatMemoryBuffer.from_defaults(session_id="v", url=url, embedder=embedder, **common)
    plain = OgmemChatMemoryBuffer.from_defaults(session_id="p", url=url, **common)
    assert with_vectors.manager.embedder is not None and with_vectors.manager.embedder.wrapped is embedder
    assert plain.manager.embedder is None
    conversation(with_vectors)
    conversation(plain)
    assert any("kitten" in text for text in embedder.texts)  # embedded in a commit
    question = "anything about the feline?"  # shares no word with the kitten turn
    turn = "user: My kitten sleeps on the sofa all day."  # recalled verbatim
    assert turn in str(with_vectors.get(input=question)[0].content)
    assert turn not in " ".join(str(m.content) for m in plain.get(input=question))
    SessionManager.close_shared()


def test_embedder_reaches_the_chat_store_manager_and_survives_from_dict(tmp_path: Path) -> None:
    embedder = ConceptEmbedding()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert OgmemChatStore(url=url, embedder=embedder).manager.embedder.wrapped is embedder  # type: ignore[union-attr]
    memory = OgmemChatMemoryBuffer.from_defaults(session_id="s", url=url, embedder=embedder)
    data = memory.to_dict()
    SessionManager.close_shared()  # the original manager is gone, as in another process
    other = ConceptEmbedding()
    restored = OgmemChatMemoryBuffer.from_dict(data, embedder=other)
    assert restored.manager.embedder is not None and restored.manager.embedder.wrapped is other
    manager = SessionManager(InMemoryStore())
    with pytest.raises(ConfigError, match="embedder"):
        OgmemChatStore(manager=manager, embedder=embedder)
    with pytest.raises(ConfigError, match="embedder"):
        OgmemChatMemoryBuffer.from_defaults(manager=manager, embedder=embedder)
    with pytest.raises(ConfigError, match="embedder"):
        OgmemChatMemoryBuffer.from_defaults(chat_store=OgmemChatStore(manager=manager), embedder=embedder)
    manager.close()
    SessionManager.close_shared()
