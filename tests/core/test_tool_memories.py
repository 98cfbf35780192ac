"""Issue 12: the tool calls of a committed span become the user's ``tools`` memories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogmem_memory import MemoryConfig, RequestContext, SessionManager
from ogmem_memory.extract import tool_usage
from ogmem_memory.stores import InMemoryStore, SQLiteStore

ADA = RequestContext(account_id="acme", user_id="ada")
BOB = RequestContext(account_id="acme", user_id="bob")
MANUAL = MemoryConfig(auto_commit=False)


@pytest.fixture(params=["memory", "sqlite"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionManager]:
    store: Any = InMemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "tools.db")
    m = SessionManager(store, config=MANUAL)
    yield m
    m.close()


def _call(call_id: str, name: str) -> dict[str, Any]:
    """An assistant message asking for a tool, stored the way the LangChain adapter stores it."""
    data = {"content": "", "type": "ai", "tool_calls": [{"name": name, "args": {}, "id": call_id}]}
    return {"role": "assistant", "content": "", "payload": {"type": "ai", "data": data}}


def _result(call_id: str, status: str = "success", name: str | None = None) -> dict[str, Any]:
    data = {"content": "42", "type": "tool", "tool_call_id": call_id, "status": status, "name": name}
    return {"role": "tool", "content": "42", "payload": {"type": "tool", "data": data}}


def _tools(m: SessionManager, ctx: RequestContext) -> dict[str, str]:
    return {r.key: r.content for r in m.list_memories(ctx) if r.category == "tools"}


def test_tool_messages_of_a_commit_become_a_tools_memory_of_the_user(manager: SessionManager) -> None:
    manager.add_messages(
        "s1",
        [
            {"role": "user", "content": "What is 6 times 7?"},
            _call("c1", "calculator"),
            _result("c1"),
            _call("c2", "calculator"),
            _result("c2", status="error"),
            {"role": "assistant", "content": "42."},
        ],
        ADA,
    )
    assert manager.commit("s1", ADA, wait=True).archived
    manager.wait_for_tasks()
    assert _tools(manager, ADA) == {
        "tool:calculator": "Tool 'calculator' succeeded in 1 of 2 calls (50%, 1 failed)."
    }
    assert _tools(manager, BOB) == {}


def test_later_calls_add_up_in_the_same_memory(manager: SessionManager) -> None:
    manager.add_messages(
        "s1", [{"role": "user", "content": "Search."}, _call("a", "web_search"), _result("a")], ADA
    )
    manager.commit("s1", ADA, wait=True)
    manager.add_messages(
        "s2",
        [
            {"role": "user", "content": "Search again."},
            _result("b", name="web_search"),
            _result("c", status="error", name="web_search"),
        ],
        ADA,
    )
    manager.commit("s2", ADA, wait=True)
    manager.wait_for_tasks()
    [memory] = [r for r in manager.list_memories(ADA) if r.category == "tools"]
    assert memory.content == "Tool 'web_search' succeeded in 2 of 3 calls (67%, 1 failed)."
    assert memory.history == ("Tool 'web_search' succeeded in 1 of 1 calls (100%, 0 failed).",)


def test_a_commit_without_tool_calls_writes_no_tools_memory(manager: SessionManager) -> None:
    manager.add_messages(
        "s1", [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}], ADA
    )
    manager.commit("s1", ADA, wait=True)
    manager.wait_for_tasks()
    assert _tools(manager, ADA) == {}


def test_tool_usage_reads_llama_index_and_plain_payloads() -> None:
    llama_call = {
        "role": "assistant",
        "payload": {
            "role": "assistant",
            "additional_kwargs": {"tool_calls": [{"id": "x", "function": {"name": "lookup"}}]},
        },
    }
    llama_result = {"role": "tool", "payload": {"role": "tool", "additional_kwargs": {"tool_call_id": "x"}}}
    plain = {"role": "tool", "payload": {"name": "lookup", "is_error": True, "duration_ms": 30}}
    unnamed = {"role": "tool", "payload": {"tool_call_id": "nobody"}}
    too_long = {"role": "tool", "payload": {"name": "x" * 101}}
    stats = tool_usage([llama_call, llama_result, plain, unnamed, too_long, {"role": "tool"}]).tool_stats
    assert stats == {
        "lookup": {
            "call_count": 2,
            "success_count": 1,
            "fail_count": 1,
            "total_duration_ms": 30.0,
            "total_prompt_tokens": 0,
            "total_completion_tokens": 0,
        }
    }
