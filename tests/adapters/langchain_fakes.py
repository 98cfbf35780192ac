"""Fake LangChain chat models for the adapter tests: scripted, tool-calling, failing. No network."""

from __future__ import annotations

import json
import math
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from pydantic import Field, PrivateAttr

from ogmem_memory import MemoryConfig

_TURN_RE = re.compile(r"turn (\d+)")


@tool
def lookup(key: str) -> str:
    """Look up the stored value of ``key``."""
    return f"value of {key} is {sum(map(ord, key)) % 997}"


def default_agent_script(messages: Sequence[BaseMessage]) -> AIMessage:
    """Answer from the input alone, so the conversation is the same whatever context is given.

    A human message ``"turn N ..."`` with N even asks for a ``lookup`` tool call; after the tool
    result (or for odd N) the model answers in text.
    """
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return AIMessage(content=f"The tool said: {last.content}. Anything else?")
    text = last.text if isinstance(last, HumanMessage) else ""
    match = _TURN_RE.search(str(text))
    turn = int(match.group(1)) if match else -1
    if turn >= 0 and turn % 2 == 0:
        return AIMessage(
            content="",
            tool_calls=[
                {"name": "lookup", "args": {"key": f"k{turn}"}, "id": f"call_{turn}", "type": "tool_call"}
            ],
        )
    return AIMessage(content=f"Noted for turn {turn}: {str(text)[:60]}")


class ScriptedToolChatModel(BaseChatModel):
    """A tool-calling chat model whose replies come from ``script(messages)``.

    ``bind_tools`` returns the model itself; ``received`` records the messages of every call.
    """

    script: Callable[[Sequence[BaseMessage]], AIMessage] = default_agent_script
    received: list[list[BaseMessage]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-chat"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedToolChatModel:  # type: ignore[override]
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            self.received.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=self.script(messages))])


class FakeToolCallingChatModel(GenericFakeChatModel):
    """``GenericFakeChatModel`` that ``create_agent`` can bind tools to; records what it reads.

    The stock fake raises ``NotImplementedError`` in ``bind_tools``; replies (tool calls
    included) come from ``messages`` as usual.
    """

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> FakeToolCallingChatModel:  # type: ignore[override]
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.received.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


class SummaryChatModel(BaseChatModel):
    """A chat model that answers every prompt with a scripted JSON summary (an LLM compressor)."""

    overview: str = "\n".join(
        ["## Topics", "- scripted", "## Facts", "- scripted summary fact", "## Decisions", "- None"]
    )
    abstract: str = "scripted summary"
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-summary"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.prompts.append(str(messages[-1].text))
        reply = json.dumps({"overview": self.overview, "abstract": self.abstract})
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


class ExplodingChatModel(BaseChatModel):
    """A chat model whose every call raises."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "exploding"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        raise RuntimeError("model is down")


class ConceptEmbeddings(Embeddings):
    """Deterministic embeddings with a little meaning: synonyms share a dimension.

    Each word of a ``concepts`` group counts in that group's dimension; any other word in one
    of ``buckets`` dimensions chosen by its CRC-32 (stable across runs and processes). So
    "Our kitten answers to Whiskers" and "What do I call my pet?" are close while sharing no
    word, which is what recall by meaning must find and lexical recall cannot.
    """

    CONCEPTS: tuple[frozenset[str], ...] = (
        frozenset({"cat", "cats", "kitten", "kitty", "pet", "pets", "feline", "dog", "puppy"}),
        frozenset({"name", "named", "called", "call", "answers", "nickname"}),
        frozenset({"doctor", "dentist", "physician", "appointment", "checkup", "clinic"}),
        frozenset({"monday", "tuesday", "wednesday", "thursday", "friday", "weekday", "day", "when"}),
    )

    def __init__(self, buckets: int = 32) -> None:
        self.dims = len(self.CONCEPTS) + buckets
        self._buckets = buckets
        self.documents_embedded = 0
        self.queries_embedded = 0
        self._lock = threading.Lock()

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dims
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            slot = next((i for i, group in enumerate(self.CONCEPTS) if word in group), None)
            if slot is None:
                slot = len(self.CONCEPTS) + zlib.crc32(word.encode()) % self._buckets
            vector[slot] += 1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.documents_embedded += len(texts)
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            self.queries_embedded += 1
        return self._embed(text)


# -- a planted fact and a question sharing no word with it (recall by meaning tests) -------------

PET = "Our kitten answers to Whiskers."
ASK_PET = "What do I call my pet?"  # no word in common with PET
MEANING = MemoryConfig(
    commit_token_threshold=200,
    commit_turn_threshold=4,
    keep_recent_messages=2,
    keep_recent_tokens=0,
    context_token_budget=300,
    extract_memories=False,  # the context then shows recall, not a memory of the pet
)
