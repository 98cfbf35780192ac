"""An unnamed OgmemChatMemoryBuffer is private to its instance, as ChatMemoryBuffer is; naming a
session (``session_id`` or ``chat_store_key``) opts into one shared, persistent conversation.

Regression (issue 10, item 2): before, every unnamed memory was the session "chat_history" of
./ogmem.db, so the engine tests below saw each other's secrets and one reset wiped the other.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine import CondensePlusContextChatEngine, SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.workflow import Context
from llama_index.memory.ogmem import OgmemChatMemoryBuffer

from tests.adapters.llama_index_fakes import ADD_TOOL, FixedRetriever, RecordingMockLLM, ScriptedToolLLM

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")

MEMORY_CLASSES = [ChatMemoryBuffer, OgmemChatMemoryBuffer]


@pytest.fixture(autouse=True)
def _no_default_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder with no $OGMEM_DB: a stray default database would show there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OGMEM_DB", raising=False)


def _texts(messages: list[ChatMessage]) -> str:
    return " | ".join(str(m.content) for m in messages)


@pytest.mark.parametrize("memory_cls", MEMORY_CLASSES, ids=lambda c: c.__name__)
def test_two_simple_engines_do_not_share_memory(memory_cls: Any, tmp_path: Path) -> None:
    llm = RecordingMockLLM()
    one = SimpleChatEngine.from_defaults(llm=llm, memory_cls=memory_cls)
    two = SimpleChatEngine.from_defaults(llm=llm, memory_cls=memory_cls)
    one.chat("my secret is 1111")
    two.chat("hello")
    assert "1111" not in _texts(two.chat_history)
    assert "1111" not in llm.prompts[-1]  # the second engine's model never saw it
    two.reset()
    assert "my secret is 1111" in _texts(one.chat_history)  # untouched by the other's reset
    assert list(tmp_path.iterdir()) == []  # nothing persisted, as with the stock memory


@pytest.mark.parametrize("memory_cls", MEMORY_CLASSES, ids=lambda c: c.__name__)
def test_two_condense_plus_context_engines_do_not_share_memory(memory_cls: Any) -> None:
    def engine() -> CondensePlusContextChatEngine:
        return CondensePlusContextChatEngine.from_defaults(
            retriever=FixedRetriever(), llm=MockLLM(), memory=memory_cls.from_defaults(token_limit=2000)
        )

    one, two = engine(), engine()
    one.chat("my secret is 1111")
    two.chat("hello")
    assert "1111" not in _texts(two.chat_history)
    two.reset()
    assert [m.role for m in one.chat_history] == [MessageRole.USER, MessageRole.ASSISTANT]


@pytest.mark.parametrize("name", ["session_id", "chat_store_key"])
def test_a_named_session_is_shared_and_persistent(name: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"

    def memory() -> OgmemChatMemoryBuffer:
        if name == "session_id":
            return OgmemChatMemoryBuffer.from_defaults(url=url, session_id="team-chat")
        return OgmemChatMemoryBuffer.from_defaults(url=url, chat_store_key="team-chat")

    one = SimpleChatEngine.from_defaults(llm=MockLLM(), memory=memory())
    two = SimpleChatEngine.from_defaults(llm=MockLLM(), memory=memory())
    one.chat("the code is 1111")
    assert "the code is 1111" in _texts(two.chat_history)
    assert memory().get_all() == one.chat_history  # a new object, the same stored conversation


def test_default_store_only_for_named_sessions(tmp_path: Path) -> None:
    named = OgmemChatMemoryBuffer.from_defaults(session_id="kept")
    named.put(ChatMessage(role="user", content="stored"))
    assert (tmp_path / "ogmem.db").exists()
    assert OgmemChatMemoryBuffer.from_defaults(session_id="kept").get_all() == named.get_all()
    assert OgmemChatMemoryBuffer.from_defaults().get_all() == []


def test_unnamed_memory_with_a_store_writes_there_under_its_own_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/given.db"
    one = OgmemChatMemoryBuffer.from_defaults(url=url)
    two = OgmemChatMemoryBuffer.from_defaults(url=url)
    one.put(ChatMessage(role="user", content="mine"))
    assert two.get_all() == []
    again = OgmemChatMemoryBuffer.from_defaults(url=url, session_id=one.session_id)
    assert again.get_all() == one.get_all()  # reachable by its id


def test_direct_construction_is_private_too() -> None:
    one = OgmemChatMemoryBuffer(token_limit=100)
    two = OgmemChatMemoryBuffer(token_limit=100)
    one.put(ChatMessage(role="user", content="mine"))
    assert one.session_id != two.session_id and two.get_all() == []
    assert one.chat_store.url == "memory://"


def test_private_memory_round_trips_through_dict_and_pickle() -> None:
    import pickle

    memory = OgmemChatMemoryBuffer.from_defaults(token_limit=500)
    memory.put(ChatMessage(role="user", content="remember me"))
    restored = OgmemChatMemoryBuffer.from_dict(json.loads(json.dumps(memory.to_dict())))
    assert restored.session_id == memory.session_id and restored.get_all() == memory.get_all()
    restored.put(ChatMessage(role="assistant", content="I do"))
    assert memory.get_all() == restored.get_all()
    assert pickle.loads(pickle.dumps(memory)).get_all() == memory.get_all()


@pytest.mark.parametrize("memory_cls", MEMORY_CLASSES, ids=lambda c: c.__name__)
async def test_function_agent_ctx_keeps_a_private_memory(memory_cls: Any) -> None:
    """Agents round-trip memory through to_dict/from_dict between runs: the restored memory
    must be the same conversation, even when the original object is gone."""
    llm = ScriptedToolLLM()
    agent = FunctionAgent(tools=[ADD_TOOL], llm=llm, system_prompt="You add numbers.")
    ctx = Context(agent)
    await agent.run(user_msg="add 2 and 3", memory=memory_cls.from_defaults(token_limit=3000), ctx=ctx)
    gc.collect()
    result = await agent.run(user_msg="add 4 and 5", ctx=ctx)
    assert str(result).strip() == "The sum is 9."
    assert any("add 2 and 3" in (m.content or "") for m in llm.inputs[-1])
    memory = await ctx.store.get("memory")
    history = await memory.aget_all()
    assert [m.content for m in history if m.role == MessageRole.USER] == ["add 2 and 3", "add 4 and 5"]

    other = Context(agent)  # another conversation with the same agent starts empty
    await agent.run(user_msg="add 1 and 1", memory=memory_cls.from_defaults(token_limit=3000), ctx=other)
    assert not any("add 2 and 3" in (m.content or "") for m in llm.inputs[-1])


def test_private_sessions_are_not_persisted_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    memory = OgmemChatMemoryBuffer.from_defaults()
    memory.put(ChatMessage(role="user", content="in this process only"))
    code = (
        "import sys\n"
        "from llama_index.memory.ogmem import OgmemChatMemoryBuffer\n"
        "print(len(OgmemChatMemoryBuffer.from_string(sys.stdin.read()).get_all()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OGMEM_DB"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=memory.to_string(), capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert list(tmp_path.iterdir()) == []
