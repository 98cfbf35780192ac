"""OgmemChatStore: the BaseChatStore contract side by side with SimpleChatStore."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.memory.ogmem import MessageTypeError, OgmemChatMemoryBuffer, OgmemChatStore

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.errors import AccessDeniedError, ConfigError
from ogmem_memory.stores import InMemoryStore
from tests.conftest import make_store

HIGH = MemoryConfig(commit_token_threshold=10**9, commit_turn_threshold=0)
LOW = MemoryConfig(
    commit_token_threshold=120, commit_turn_threshold=4, keep_recent_messages=4, keep_recent_tokens=30
)


def _messages(tag: str, n: int = 3) -> list[ChatMessage]:
    out = [ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"{tag} {i}") for i in range(n)]
    out.append(
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id=f"{tag}-c", tool_name="add", tool_kwargs={"a": 1})],
        )
    )
    out.append(ChatMessage(role="tool", content="1", additional_kwargs={"tool_call_id": f"{tag}-c"}))
    return out


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OgmemChatStore]:
    if request.param == "sqlite":
        yield OgmemChatStore(url=f"sqlite:///{tmp_path}/cs.db", config=HIGH)
        return
    manager = SessionManager(make_store(request.param, tmp_path, request), config=HIGH)
    yield OgmemChatStore(manager=manager)
    manager.close()


@pytest.mark.postgres
def test_memory_on_postgres(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    manager = SessionManager(make_store("postgres", tmp_path, request), config=LOW)
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="pg", token_limit=80)
    for i in range(30):
        memory.put_messages(_messages(f"turn{i}"))
    manager.wait_for_tasks()
    assert len(memory.get_all()) == 150
    got = memory.get()
    assert got[0].role == "system" and "Summary of the earlier conversation" in (got[0].content or "")
    assert len(memory.tokenizer_fn(" ".join(str(m.content) for m in got))) <= 80
    manager.close()


def test_contract_equals_simple_chat_store(store: OgmemChatStore) -> None:
    oracle = SimpleChatStore()
    for s in (store, oracle):
        s.set_messages("a", _messages("a"))
        s.add_message("a", ChatMessage(role="user", content="appended"))
        s.add_message("b", ChatMessage(role="user", content="b only"))
        s.add_message("a", ChatMessage(role="user", content="inserted"), idx=1)
    assert store.get_messages("a") == oracle.get_messages("a")
    assert store.get_keys() == oracle.get_keys() == ["a", "b"]
    assert store.delete_message("a", 2) == oracle.delete_message("a", 2)
    assert store.delete_message("a", 99) is oracle.delete_message("a", 99) is None
    assert store.delete_last_message("a") == oracle.delete_last_message("a")
    assert store.get_messages("a") == oracle.get_messages("a")
    assert store.delete_messages("b") == oracle.delete_messages("b")
    assert store.get_messages("b") == oracle.get_messages("b") == []
    assert store.get_keys() == oracle.get_keys() == ["a"]
    assert store.delete_messages("never") is oracle.delete_messages("never") is None
    assert store.get_messages("never") == []


async def test_async_twins_equal_simple_chat_store(store: OgmemChatStore) -> None:
    oracle = SimpleChatStore()
    for s in (store, oracle):
        await s.aset_messages("a", _messages("a"))
        await s.async_add_message("a", ChatMessage(role="user", content="appended"))
    assert await store.aget_messages("a") == await oracle.aget_messages("a")
    assert await store.adelete_message("a", 0) == await oracle.adelete_message("a", 0)
    assert await store.adelete_last_message("a") == await oracle.adelete_last_message("a")
    assert await store.aget_keys() == await oracle.aget_keys() == ["a"]
    assert await store.adelete_messages("a") == await oracle.adelete_messages("a")
    assert await store.aget_messages("a") == []


def test_bad_input_changes_nothing(store: OgmemChatStore) -> None:
    store.set_messages("a", _messages("a"))
    with pytest.raises(MessageTypeError):
        store.add_message("a", {"role": "user", "content": "x"})  # type: ignore[arg-type]
    with pytest.raises(MessageTypeError):
        store.set_messages("a", [ChatMessage(role="user", content="x"), "y"])  # type: ignore[list-item]
    assert store.get_messages("a") == _messages("a")


def test_user_scoping() -> None:
    manager = SessionManager(InMemoryStore(), config=HIGH)
    alice = OgmemChatStore(manager=manager, user_id="alice")
    bob = OgmemChatStore(manager=manager, user_id="bob")
    alice.set_messages("k", _messages("a"))
    bob.add_message("mine", ChatMessage(role="user", content="bob's"))
    assert alice.get_keys() == ["k"] and bob.get_keys() == ["mine"]
    for call in (
        lambda: bob.get_messages("k"),
        lambda: bob.add_message("k", ChatMessage(role="user", content="x")),
        lambda: bob.set_messages("k", []),
        lambda: bob.delete_messages("k"),
        lambda: bob.delete_last_message("k"),
    ):
        with pytest.raises(AccessDeniedError):
            call()
    assert alice.get_messages("k") == _messages("a")


def test_serialises_and_reattaches(tmp_path: Path) -> None:
    store = OgmemChatStore(url=f"sqlite:///{tmp_path}/cs.db", config=HIGH, user_id="u")
    store.set_messages("k", _messages("k"))
    data = json.loads(json.dumps(store.to_dict()))
    assert data["class_name"] == "OgmemChatStore" and data["config"]["commit_turn_threshold"] == 0
    for restored in (OgmemChatStore.from_dict(data), pickle.loads(pickle.dumps(store))):
        assert restored.get_messages("k") == _messages("k")
        assert restored.manager is store.manager


def test_memory_can_use_a_chat_store(tmp_path: Path) -> None:
    store = OgmemChatStore(url=f"sqlite:///{tmp_path}/cs.db", config=HIGH)
    memory = OgmemChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="conv-1")
    memory.put_messages(_messages("m"))
    assert store.get_messages("conv-1") == memory.get_all() == _messages("m")
    assert memory.chat_store.get_messages(memory.chat_store_key) == memory.get_all()


def test_options_are_validated() -> None:
    manager = SessionManager(InMemoryStore())
    with pytest.raises(ConfigError):
        OgmemChatStore(manager=manager, config=HIGH)
    with pytest.raises(ConfigError):
        OgmemChatStore(manager="memory://")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OgmemChatStore(url="memory://", user_id="")
    with pytest.raises(ConfigError):
        OgmemChatStore(url="memory://", config={"no_such_option": 1}).manager  # noqa: B018
