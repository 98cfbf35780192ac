"""The SessionStore ABC: public signatures once, backends' ``_impl``s, and backends written the old way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ogmem_memory.errors import InvalidInputError
from ogmem_memory.models import RequestContext, SessionMessage, new_message_id
from ogmem_memory.stores.base import SessionStore
from ogmem_memory.stores.memory import InMemoryStore

ALICE = RequestContext(account_id="acme", user_id="alice")

# The abstract methods of SessionStore before the ``_impl`` split: a backend of that time
# implements exactly these, with the public keyword signatures.
PUBLIC_ABSTRACT = (
    "setup",
    "close",
    "bind_session",
    "get_session_record",
    "list_sessions",
    "delete_session",
    "delete_owner",
    "clear_session",
    "append",
    "replace_messages",
    "read_window",
    "list_messages",
    "head",
    "commit_archive",
    "list_archives",
    "read_archive",
    "merge_archives",
    "mark_archive_merged",
    "unmark_archive_merged",
    "delete_archive",
    "save_state",
    "load_state",
    "search_messages",
    "search_vectors",
)


def _forward(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(name)
        return getattr(self.inner, name)(*args, **kwargs)

    return method


def legacy_store() -> Any:
    """A backend overriding the public methods itself (no ``_impl``), forwarding to memory."""
    namespace: dict[str, Any] = {name: _forward(name) for name in PUBLIC_ABSTRACT}
    cls = type("LegacyStore", (SessionStore,), namespace)
    store = cls()
    store.inner = InMemoryStore()
    store.calls = []
    return store


def msg(content: str) -> SessionMessage:
    return SessionMessage(id=new_message_id(), role="user", content=content, tokens=1)


def test_a_backend_that_overrides_the_public_methods_needs_no_impls() -> None:
    store = legacy_store()
    result = store.append("s", [msg("hello")], create_as=ALICE)
    assert result.created and [m.seq for m in result.messages] == [1]
    assert [m.content for m in store.list_messages("s", owner=ALICE.owner)] == ["hello"]
    window = store.read_window("s", owner=ALICE.owner)
    assert window is not None and [m.content for m in window.messages] == ["hello"]
    assert store.calls == ["append", "list_messages", "read_window"]


def test_the_async_twins_reach_a_legacy_backends_overrides() -> None:
    store = legacy_store()

    async def run() -> list[str]:
        await store.aappend("s", [msg("one"), msg("two")], create_as=ALICE)
        listed = await store.alist_messages("s", after_seq=1)
        archives = await store.alist_archives("s", owner=ALICE.owner)
        assert archives == []
        return [m.content for m in listed]

    assert asyncio.run(run()) == ["two"]
    assert store.calls == ["append", "list_messages", "list_archives"]


def test_a_backend_with_neither_the_public_method_nor_its_impl_is_abstract() -> None:
    namespace = {name: _forward(name) for name in PUBLIC_ABSTRACT if name != "list_messages"}
    cls = type("Incomplete", (SessionStore,), namespace)
    with pytest.raises(TypeError, match="_list_messages_impl"):
        cls()


def test_the_scope_check_is_the_contracts_for_every_backend() -> None:
    store = InMemoryStore()
    with pytest.raises(InvalidInputError, match="search_messages needs a session_id or an owner"):
        store.search_messages("x")
    with pytest.raises(InvalidInputError, match="search_vectors needs a session_id or an owner"):
        store.search_vectors([1.0, 0.0])
    with pytest.raises(InvalidInputError, match="search_messages needs a session_id or an owner"):
        asyncio.run(store.asearch_messages("x"))
