"""FunctionAgent, ReActAgent and AgentWorkflow with OgmemChatMemoryBuffer as their memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.workflow import Context
from llama_index.memory.ogmem import OgmemChatMemoryBuffer

from ogmem_memory import MemoryConfig
from tests.adapters.llama_index_fakes import (
    ADD_TOOL,
    ScriptedReActLLM,
    ScriptedToolLLM,
    orphaned_tool_messages,
    ws_tokenizer,
)

# llama-index-workflows walks the agent with inspect.getmembers(), which touches pydantic's
# deprecated instance attributes; pydantic attributes those warnings to inspect.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")

LOW = MemoryConfig(
    commit_token_threshold=250, commit_turn_threshold=5, keep_recent_messages=4, keep_recent_tokens=40
)
TOKEN_LIMIT = 120


def _memory(tmp_path: Path, session: str) -> OgmemChatMemoryBuffer:
    return OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{tmp_path}/agents.db",
        config=LOW,
        session_id=session,
        token_limit=TOKEN_LIMIT,
        tokenizer_fn=ws_tokenizer,
    )


def _function_agent(llm: ScriptedToolLLM) -> FunctionAgent:
    return FunctionAgent(tools=[ADD_TOOL], llm=llm, system_prompt="You add numbers.")


def _react_agent(llm: ScriptedReActLLM) -> ReActAgent:
    # ReActAgent drops a leading system message of its input unless it has its own
    # system_prompt in front: with one, ogmem's summary message reaches the model.
    return ReActAgent(tools=[ADD_TOOL], llm=llm, system_prompt="You add numbers.")


def _workflow(llm: ScriptedToolLLM) -> AgentWorkflow:
    agent = FunctionAgent(
        name="adder", description="adds", tools=[ADD_TOOL], llm=llm, system_prompt="You add."
    )
    return AgentWorkflow(agents=[agent], root_agent="adder")


def _assert_tool_calls_stored(history: list[ChatMessage], turns: int) -> None:
    calls = [b for m in history for b in m.blocks if isinstance(b, ToolCallBlock)]
    results = [m for m in history if m.role == MessageRole.TOOL]
    assert len(calls) == len(results) == turns
    assert [r.additional_kwargs["tool_call_id"] for r in results] == [c.tool_call_id for c in calls]
    assert not orphaned_tool_messages(history)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["function", "workflow"])
async def test_function_calling_agents_over_fifty_turns(kind: str, tmp_path: Path) -> None:
    llm = ScriptedToolLLM()
    agent = _function_agent(llm) if kind == "function" else _workflow(llm)
    memory = _memory(tmp_path, f"agent-{kind}")
    for i in range(50):
        result = await agent.run(user_msg=f"add {i} and {i + 1}", memory=memory)
        assert str(result).strip() == f"The sum is {2 * i + 1}."
        got = await memory.aget()
        assert not orphaned_tool_messages(got)
        assert len(ws_tokenizer(" ".join(str(m.content) for m in got))) <= TOKEN_LIMIT
    history = await memory.aget_all()
    assert len(history) == 50 * 4  # user, assistant tool call, tool result, final answer
    assert [m.content for m in history if m.role == MessageRole.USER] == [
        f"add {i} and {i + 1}" for i in range(50)
    ]
    _assert_tool_calls_stored(history, 50)
    for seen in llm.inputs:  # what the model was sent, memory plus scratchpad, is well formed
        assert not orphaned_tool_messages(seen)
    memory.manager.wait_for_tasks()
    assert any("Summary of the earlier conversation" in (m.content or "") for m in llm.inputs[-1])


@pytest.mark.slow
async def test_react_agent_over_fifty_turns(tmp_path: Path) -> None:
    llm = ScriptedReActLLM()
    agent = _react_agent(llm)
    memory = _memory(tmp_path, "react")
    for i in range(50):
        result = await agent.run(user_msg=f"add {i} and {i + 1}", memory=memory)
        assert f"The sum is {2 * i + 1}" in str(result)
        got = await memory.aget()
        assert len(ws_tokenizer(" ".join(str(m.content) for m in got))) <= TOKEN_LIMIT
    history = await memory.aget_all()
    users = [m.content for m in history if m.role == MessageRole.USER]
    assert users == [f"add {i} and {i + 1}" for i in range(50)]
    assert sum("Action: add" in (m.content or "") for m in history) == 50  # the reasoning is stored
    memory.manager.wait_for_tasks()
    await agent.run(user_msg="add 1 and 1", memory=memory)
    assert any("Summary of the earlier conversation" in (m.content or "") for m in llm.inputs[-1])


@pytest.mark.parametrize("kind", ["function", "react", "workflow"])
async def test_run_with_ctx_continues_the_same_history(kind: str, tmp_path: Path) -> None:
    llm: ScriptedToolLLM | ScriptedReActLLM
    if kind == "react":
        llm = ScriptedReActLLM()
        agent = _react_agent(llm)
    else:
        llm = ScriptedToolLLM()
        agent = _function_agent(llm) if kind == "function" else _workflow(llm)
    memory = _memory(tmp_path, f"ctx-{kind}")
    ctx = Context(agent)
    await agent.run(user_msg="add 2 and 3", memory=memory, ctx=ctx)
    await agent.run(user_msg="add 4 and 5", ctx=ctx)  # the ctx state (memory) is serialised and restored
    restored = await ctx.store.get("memory")
    assert isinstance(restored, OgmemChatMemoryBuffer)
    assert restored is not memory and restored.session_id == memory.session_id
    history = await memory.aget_all()
    assert [m.content for m in history if m.role == MessageRole.USER] == ["add 2 and 3", "add 4 and 5"]
    assert await restored.aget_all() == history
    # The second run's model call saw the first turn.
    assert any("add 2 and 3" in (m.content or "") for m in llm.inputs[-1])
