"""Issue 12 through LangChain: the ToolMessages a history stores become the user's ``tools`` memories."""

from __future__ import annotations

from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_ogmem import OgmemChatMessageHistory

from ogmem_memory import MemoryConfig, RequestContext, SessionManager, SQLiteStore


def test_tool_messages_of_a_langchain_history_become_a_tools_memory(tmp_path: Path) -> None:
    with SessionManager(SQLiteStore(tmp_path / "lc.db"), config=MemoryConfig(auto_commit=False)) as manager:
        history = OgmemChatMessageHistory("s", user_id="ada", account_id="acme", manager=manager)
        history.add_messages(
            [
                HumanMessage("What's the weather in Lisbon and in Porto?"),
                AIMessage(
                    "",
                    tool_calls=[
                        {"name": "get_weather", "args": {"city": "Lisbon"}, "id": "call_1"},
                        {"name": "get_weather", "args": {"city": "Porto"}, "id": "call_2"},
                    ],
                ),
                ToolMessage("21 C, sunny", tool_call_id="call_1"),
                ToolMessage("service unavailable", tool_call_id="call_2", status="error"),
                AIMessage("Lisbon is sunny; Porto is unknown."),
            ]
        )
        ctx = RequestContext(account_id="acme", user_id="ada")
        assert manager.commit("s", ctx, wait=True).archived
        tools = [m for m in manager.list_memories(ctx) if m.category == "tools"]
        assert [(m.key, m.content) for m in tools] == [
            ("tool:get_weather", "Tool 'get_weather' succeeded in 1 of 2 calls (50%, 1 failed).")
        ]
