"""Replacing history is atomic: bad input raises and leaves the stored conversation exactly as it
was (issue 10, item 6), and a message id carried in ``additional_kwargs`` makes writes retry-safe.

Regression: before, ``set_messages``, ``add_message(idx=...)``, ``delete_message`` and
``OgmemChatMemoryBuffer.set`` cleared the session and then added, so each case below lost the
whole conversation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.memory.ogmem import OgmemChatMemoryBuffer, OgmemChatStore

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.errors import InvalidInputError, MessageTooLargeError
from ogmem_memory.models import SessionMessage
from ogmem_memory.stores import SQLiteStore
from tests.conftest import make_store

HIGH = MemoryConfig(commit_token_threshold=10**9, commit_turn_threshold=0)
KEY = "conv"
BAD = {
    "oversized": ChatMessage(role="user", content="x" * 1_000_001),
    "lone_surrogate": ChatMessage(role="user", content="broken \ud800 text"),
}
BAD_ERRORS = {"oversized": MessageTooLargeError, "lone_surrogate": InvalidInputError}


def _history() -> list[ChatMessage]:
    return [
        ChatMessage(role="user", content="my locker code is 7319"),
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="c1", tool_name="note", tool_kwargs={"code": 7319})],
        ),
        ChatMessage(role="tool", content="noted", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="assistant", content="Noted."),
    ]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionManager]:
    manager = SessionManager(make_store(request.param, tmp_path, request), config=HIGH)
    yield manager
    manager.close()


def _snapshot(manager: SessionManager) -> list[SessionMessage]:
    return manager.get_history(KEY)


@pytest.mark.parametrize("bad", sorted(BAD))
def test_chat_store_writes_change_nothing_on_bad_input(manager: SessionManager, bad: str) -> None:
    store = OgmemChatStore(manager=manager)
    store.set_messages(KEY, _history())
    before = _snapshot(manager)
    calls: list[Callable[[], object]] = [
        lambda: store.set_messages(KEY, [ChatMessage(role="user", content="new"), BAD[bad]]),
        lambda: store.add_message(KEY, BAD[bad], idx=0),
        lambda: store.add_message(KEY, BAD[bad], idx=2),
        lambda: store.add_message(KEY, BAD[bad]),
    ]
    for call in calls:
        with pytest.raises(BAD_ERRORS[bad]):
            call()
        assert _snapshot(manager) == before  # same ids, seqs, payloads and timestamps
    assert store.get_messages(KEY) == _history()


@pytest.mark.parametrize("bad", sorted(BAD))
async def test_async_chat_store_writes_change_nothing_on_bad_input(manager: SessionManager, bad: str) -> None:
    store = OgmemChatStore(manager=manager)
    await store.aset_messages(KEY, _history())
    before = _snapshot(manager)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.aset_messages(KEY, [BAD[bad]]),
        lambda: store.async_add_message(KEY, BAD[bad], idx=1),
    ]
    for call in calls:
        with pytest.raises(BAD_ERRORS[bad]):
            await call()
        assert _snapshot(manager) == before


@pytest.mark.parametrize("bad", sorted(BAD))
def test_memory_set_changes_nothing_on_bad_input(manager: SessionManager, bad: str) -> None:
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id=KEY)
    memory.set(_history())
    before = _snapshot(manager)
    with pytest.raises(BAD_ERRORS[bad]):
        memory.set([ChatMessage(role="user", content="a new start"), BAD[bad]])
    assert _snapshot(manager) == before
    with pytest.raises(BAD_ERRORS[bad]):
        memory.set([*_history(), BAD[bad]])  # a continuation: the append path
    assert _snapshot(manager) == before and memory.get_all() == _history()


@pytest.mark.parametrize("bad", sorted(BAD))
async def test_memory_aset_changes_nothing_on_bad_input(manager: SessionManager, bad: str) -> None:
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id=KEY)
    await memory.aset(_history())
    before = _snapshot(manager)
    with pytest.raises(BAD_ERRORS[bad]):
        await memory.aset([BAD[bad]])
    assert _snapshot(manager) == before


def test_delete_message_that_cannot_rewrite_changes_nothing(tmp_path: Path) -> None:
    """A message stored under a larger ``max_message_chars`` cannot be rewritten under a smaller
    one: deleting another message raises and keeps all of them."""
    path = tmp_path / "limits.db"
    with SessionManager(SQLiteStore(path), config=HIGH) as roomy:
        OgmemChatStore(manager=roomy).set_messages(
            KEY, [ChatMessage(role="user", content="y" * 500), *_history()]
        )
        before = roomy.get_history(KEY)
    with SessionManager(SQLiteStore(path), config=MemoryConfig(max_message_chars=100)) as strict:
        store = OgmemChatStore(manager=strict)
        with pytest.raises(MessageTooLargeError):
            store.delete_message(KEY, 2)
        with pytest.raises(MessageTooLargeError):
            store.delete_last_message(KEY)
        assert strict.get_history(KEY) == before


def test_rewrites_keep_the_other_messages_ids(manager: SessionManager) -> None:
    store = OgmemChatStore(manager=manager)
    oracle = SimpleChatStore()
    for s in (store, oracle):
        s.set_messages(KEY, _history())
    ids = [m.id for m in manager.get_history(KEY)]
    assert store.delete_message(KEY, 1) == oracle.delete_message(KEY, 1)
    assert [m.id for m in manager.get_history(KEY)] == ids[:1] + ids[2:]
    for s in (store, oracle):
        s.add_message(KEY, ChatMessage(role="user", content="inserted"), idx=-1)
        s.add_message(KEY, ChatMessage(role="user", content="at the end"), idx=99)
    assert store.get_messages(KEY) == oracle.get_messages(KEY)
    kept = [m.id for m in manager.get_history(KEY)]
    assert kept[:2] == ids[:1] + ids[2:3] and kept[3] == ids[3]


def test_message_id_in_additional_kwargs_is_the_stored_id(manager: SessionManager) -> None:
    memory = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id=KEY)
    message = ChatMessage(role="user", content="hello", additional_kwargs={"id": "client-1"})
    memory.put(message)
    memory.put(message)  # a retry of the same write
    stored = manager.get_history(KEY)
    assert [m.id for m in stored] == ["client-1"]
    assert memory.get_all() == [message]
