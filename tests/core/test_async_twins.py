"""The ``a*`` twins of SessionManager: the sync signature, awaited in a thread.

The twins are made by ``in_thread(<sync method>)`` (``ogmem_memory/twins.py``); these tests pin that the public twin keeps
the sync method's parameters and return annotation, really is a coroutine function, runs the
instance's (possibly overridden) sync method, and rejects arguments the sync method rejects.
The ``type: ignore[call-arg]`` below is part of the check: under ``mypy --strict``
(warn_unused_ignores) it is an error the day the twin loses the sync signature.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from ogmem_memory import InMemoryStore, SessionManager
from ogmem_memory.manager import AddResult

TWINS = (
    "add_message",
    "add_messages",
    "replace_messages",
    "get_context",
    "get_history",
    "clear_session",
    "delete_session",
    "list_sessions",
    "wait_for_tasks",
    "close",
)


@pytest.mark.parametrize("name", TWINS)
def test_twin_has_the_sync_signature_and_says_it_is_a_twin(name: str) -> None:
    sync, twin = getattr(SessionManager, name), getattr(SessionManager, f"a{name}")
    assert inspect.iscoroutinefunction(twin)
    assert twin.__name__ == f"a{name}"
    assert inspect.signature(twin) == inspect.signature(sync)
    doc = inspect.getdoc(twin)
    assert doc is not None and f"Async twin of ``{name}``" in doc


def test_acommit_keeps_its_own_parameters() -> None:
    # commit() also takes the seed's skip_extraction/session_time; acommit never did
    assert list(inspect.signature(SessionManager.acommit).parameters) == [
        "self",
        "session_id",
        "ctx",
        "wait",
        "archive_id",
    ]
    assert inspect.iscoroutinefunction(SessionManager.acommit)


async def test_twins_return_what_the_sync_methods_return() -> None:
    with SessionManager(InMemoryStore()) as manager:
        added = await manager.aadd_message("s", "user", "hello there", id="msg_000000000001")
        assert isinstance(added, AddResult)
        again = await manager.aadd_message("s", "user", "hello there", id="msg_000000000001")
        assert again.message.id == added.message.id
        await manager.aadd_messages("s", [{"role": "assistant", "content": "hi"}])
        history = await manager.aget_history("s")
        assert [m.content for m in history] == [m.content for m in manager.get_history("s")]
        assert [m.content for m in history] == ["hello there", "hi"]
        context = await manager.aget_context("s", 500, query="hello")
        assert [m.content for m in context.messages] == ["hello there", "hi"]
        assert [r.session_id for r in await manager.alist_sessions(limit=5)] == ["s"]
        result = await manager.acommit("s", wait=True)
        assert result.archived
        await manager.await_for_tasks(5.0)
        await manager.areplace_messages("s", [{"role": "user", "content": "fresh"}])
        assert [m.content for m in manager.get_history("s")] == ["fresh"]
        await manager.aclear_session("s")
        assert await manager.adelete_session("s") is True
        await manager.aclose(5.0)
        assert manager.closed


async def test_twin_rejects_a_keyword_the_sync_method_rejects() -> None:
    with SessionManager(InMemoryStore()) as manager:
        with pytest.raises(TypeError, match="idd"):
            await manager.aadd_message("s", "user", "hi", idd="x")  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            await manager.aget_history()  # type: ignore[call-arg]
        assert manager.get_history("s") == []


async def test_twin_runs_the_instances_override() -> None:
    seen: list[tuple[Any, ...]] = []

    class Recording(SessionManager):
        def get_history(self, session_id: str, ctx: Any = None) -> list[Any]:
            seen.append((session_id, ctx))
            return []

    with Recording(InMemoryStore()) as manager:
        assert await manager.aget_history("s") == []
    assert seen == [("s", None)]
