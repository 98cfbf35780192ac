"""The four chat engines with OgmemChatMemoryBuffer as ``memory=`` and as ``memory_cls``."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine import (
    CondensePlusContextChatEngine,
    CondenseQuestionChatEngine,
    ContextChatEngine,
    SimpleChatEngine,
)
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.memory.ogmem import OgmemChatMemoryBuffer

from ogmem_memory import MemoryConfig
from tests.adapters.llama_index_fakes import FixedRetriever, RecordingMockLLM

KINDS = ["simple", "context", "condense_plus_context", "condense_question"]
MODES = ["chat", "stream_chat", "achat", "astream_chat"]
LOW = MemoryConfig(
    commit_token_threshold=300, commit_turn_threshold=6, keep_recent_messages=4, keep_recent_tokens=60
)
HIGH = MemoryConfig(commit_token_threshold=10**9, commit_turn_threshold=0)


def make_engine(kind: str, llm: RecordingMockLLM, memory: OgmemChatMemoryBuffer | None) -> BaseChatEngine:
    """``memory=None`` lets the engine build it through ``memory_cls`` (where it has one)."""
    cls_kwargs: dict[str, Any] = (
        {"memory": memory} if memory is not None else {"memory_cls": OgmemChatMemoryBuffer}
    )
    if kind == "simple":
        return SimpleChatEngine.from_defaults(llm=llm, **cls_kwargs)
    if kind == "condense_question":
        query_engine = RetrieverQueryEngine.from_args(FixedRetriever(), llm=llm)
        return CondenseQuestionChatEngine.from_defaults(query_engine=query_engine, llm=llm, **cls_kwargs)
    assert memory is not None  # these two engines have no memory_cls parameter
    if kind == "context":
        return ContextChatEngine.from_defaults(retriever=FixedRetriever(), llm=llm, memory=memory)
    return CondensePlusContextChatEngine.from_defaults(retriever=FixedRetriever(), llm=llm, memory=memory)


def run_turn(engine: BaseChatEngine, mode: str, text: str) -> str:
    if mode == "chat":
        return str(engine.chat(text))
    if mode == "stream_chat":
        response = engine.stream_chat(text)
        return "".join(response.response_gen)

    async def go() -> str:
        if mode == "achat":
            return str(await engine.achat(text))
        response = await engine.astream_chat(text)
        return "".join([d async for d in response.async_response_gen()])

    return asyncio.run(go())


def engine_memory(engine: BaseChatEngine) -> OgmemChatMemoryBuffer:
    memory = engine._memory  # type: ignore[attr-defined]
    assert isinstance(memory, OgmemChatMemoryBuffer)
    return memory


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_engine_with_memory(kind: str, mode: str, tmp_path: Path) -> None:
    llm = RecordingMockLLM()
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{tmp_path}/e.db", config=HIGH, session_id=f"{kind}-{mode}", token_limit=2000
    )
    engine = make_engine(kind, llm, memory)
    for i in range(3):
        run_turn(engine, mode, f"question number {i} about zebras{i}")
    history = memory.get_all()
    assert [m.role for m in history] == [MessageRole.USER, MessageRole.ASSISTANT] * 3
    assert [m.content for m in history[::2]] == [f"question number {i} about zebras{i}" for i in range(3)]
    assert engine.chat_history == history
    # The engine read earlier turns from our memory (condense_question: to condense the question).
    assert any("zebras1" in p for p in llm.prompts[-2:])
    engine.reset()
    assert memory.get_all() == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["simple", "condense_question"])
def test_engine_with_memory_cls(
    kind: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OGMEM_DB", str(tmp_path / "cls.db"))
    llm = RecordingMockLLM()
    engine = make_engine(kind, llm, None)
    memory = engine_memory(engine)
    assert memory.session_id.startswith("private-")
    assert memory.token_limit == llm.metadata.context_window - 256
    for i in range(2):
        run_turn(engine, mode, f"hello {i}")
    assert [m.content for m in memory.get_all()[::2]] == ["hello 0", "hello 1"]
    # A second engine built the same way has its own, empty memory, as with the stock class;
    # and nothing was written to the default database.
    again = engine_memory(make_engine(kind, llm, None))
    assert again.get_all() == [] and again.session_id != memory.session_id
    assert not (tmp_path / "cls.db").exists()


def _within_limit(memory: OgmemChatMemoryBuffer, messages: list[ChatMessage]) -> bool:
    joined = " ".join(str(m.content) for m in messages)
    return len(memory.tokenizer_fn(joined)) <= memory.token_limit


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_hundred_turns_with_low_thresholds(kind: str, tmp_path: Path) -> None:
    db = tmp_path / "long.db"
    session = f"long-{kind}"
    memory = OgmemChatMemoryBuffer.from_defaults(
        url=f"sqlite:///{db}", config=LOW, session_id=session, token_limit=160
    )
    engine = make_engine(kind, RecordingMockLLM(max_tokens=8), memory)
    sent = []
    for i in range(200):
        text = (
            f"turn {i}: my locker code is 7319"
            if i == 3
            else f"turn {i}: tell me about topic{i % 17} and item{i}"
        )
        sent.append(text)
        run_turn(engine, MODES[i % 4], text)
        got = memory.get(input=text)
        assert _within_limit(memory, got), i
    memory.manager.wait_for_tasks()
    got = memory.get(input="what is my locker code?")
    assert _within_limit(memory, got)
    assert got[0].role == MessageRole.SYSTEM and "Summary of the earlier conversation" in (
        got[0].content or ""
    )
    assert "7319" in (got[0].content or "")  # recalled from the archive for the query
    history = memory.get_all()
    assert len(history) == 400
    assert [m.content for m in history[::2]] == sent
    assert all(m.role == MessageRole.ASSISTANT for m in history[1::2])

    # A new process continues the conversation from the SQLite file.
    code = f"""
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.memory.ogmem import OgmemChatMemoryBuffer
from ogmem_memory import MemoryConfig
memory = OgmemChatMemoryBuffer.from_defaults(
    url={f"sqlite:///{db}"!r}, config=MemoryConfig(**{dataclasses.asdict(LOW)!r}),
    session_id={session!r}, token_limit=160)
engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4), memory=memory)
engine.chat("turn 200: still there?")
memory.manager.wait_for_tasks()
got = memory.get()
print(len(memory.get_all()), got[0].role.value, got[-1].content)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["402", "system", "text", "text", "text", "text"]
    assert memory.get_all()[400].content == "turn 200: still there?"
