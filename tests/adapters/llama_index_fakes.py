"""Offline LlamaIndex doubles: a whitespace tokenizer, scripted LLMs, a retriever and a query engine."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.tools import FunctionTool


def ws_tokenizer(text: str) -> list[str]:
    """Whitespace tokens: the joined text counts exactly the sum of its parts."""
    return text.split()


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD_TOOL = FunctionTool.from_defaults(fn=add)


def _numbers(text: str) -> tuple[int, int]:
    found = [int(n) for n in re.findall(r"-?\d+", text)]
    padded = [*found, 0, 0]
    return padded[0], padded[1]


def orphaned_tool_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Tool results whose call (an earlier assistant tool-call block or kwarg) is missing."""
    seen: set[str] = set()
    orphans = []
    for m in messages:
        for block in m.blocks:
            if isinstance(block, ToolCallBlock) and block.tool_call_id:
                seen.add(block.tool_call_id)
        for call in m.additional_kwargs.get("tool_calls", []) or []:
            if isinstance(call, dict) and call.get("id"):
                seen.add(call["id"])
        if m.role == MessageRole.TOOL and m.additional_kwargs.get("tool_call_id") not in seen:
            orphans.append(m)
    return orphans


class ScriptedToolLLM(MockFunctionCallingLLM):
    """Function-calling LLM: a user turn "add A and B" calls ``add``; a tool result is answered.

    Every input it receives is kept in ``inputs`` so tests can inspect what the model saw.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(callback_manager=CallbackManager([]), response_generator=self._respond, **kwargs)
        self._inputs: list[list[ChatMessage]] = []

    @property
    def inputs(self) -> list[list[ChatMessage]]:
        return self._inputs

    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self._inputs.append([m.model_copy(deep=True) for m in messages])
        last = messages[-1]
        if last.role == MessageRole.TOOL:
            return ChatMessage(role=MessageRole.ASSISTANT, content=f"The sum is {last.content}.")
        a, b = _numbers(last.content or "")
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[
                TextBlock(text="Let me add those."),
                ToolCallBlock(
                    tool_call_id=f"call_{uuid.uuid4().hex[:8]}", tool_name="add", tool_kwargs={"a": a, "b": b}
                ),
            ],
        )


class ScriptedReActLLM(CustomLLM):
    """Non-function-calling LLM speaking the ReAct format: one ``add`` action, then the answer."""

    def __init__(self) -> None:
        super().__init__(callback_manager=CallbackManager([]))
        self._inputs: list[list[ChatMessage]] = []

    @property
    def inputs(self) -> list[list[ChatMessage]]:
        return self._inputs

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, context_window=8000)

    def _reply(self, messages: Sequence[ChatMessage]) -> str:
        self._inputs.append([m.model_copy(deep=True) for m in messages])
        last = messages[-1].content or ""
        if last.startswith("Observation:"):
            result = last.split(":", 1)[1].strip()
            return f"Thought: I can answer without using any more tools.\nAnswer: The sum is {result}."
        a, b = _numbers(last)
        return (
            "Thought: I need to use a tool to help me answer the question.\n"
            f'Action: add\nAction Input: {{"a": {a}, "b": {b}}}'
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self._reply(messages)))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> Generator[ChatResponse, None, None]:
        text = self._reply(messages)

        def gen() -> Generator[ChatResponse, None, None]:
            yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=text)

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> AsyncGenerator[ChatResponse, None]:
        text = self._reply(messages)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=text)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Generator[CompletionResponse, None, None]:
        def gen() -> Generator[CompletionResponse, None, None]:
            yield CompletionResponse(text="", delta="")

        return gen()


class RecordingMockLLM(MockLLM):
    """``MockLLM`` answering ``max_tokens`` words; every prompt it completes is kept in ``prompts``."""

    def __init__(self, max_tokens: int = 6) -> None:
        super().__init__(max_tokens=max_tokens)
        self._prompts: list[str] = []

    @property
    def prompts(self) -> list[str]:
        return self._prompts

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._prompts.append(prompt)
        return super().complete(prompt, formatted=formatted, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Generator[CompletionResponse, None, None]:
        self._prompts.append(prompt)
        return super().stream_complete(prompt, formatted=formatted, **kwargs)


class FixedRetriever(BaseRetriever):
    """Returns the same one-sentence node for every query."""

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(text="Paris is the capital of France."), score=1.0)]


# Words of one concept share a dimension, so texts that share no word can still be near.
CONCEPTS: tuple[frozenset[str], ...] = (
    frozenset({"cat", "cats", "kitten", "feline", "whiskers", "pet"}),
    frozenset({"car", "vehicle", "engine", "drive"}),
    frozenset({"food", "meal", "dinner", "cook", "eat"}),
)


class ConceptEmbedding(BaseEmbedding):
    """Deterministic LlamaIndex embedding: one dimension per concept in ``CONCEPTS``, plus a
    small constant one (no zero vectors). Every text it embeds is kept in ``texts``."""

    _texts: list[str] = PrivateAttr(default_factory=list)

    def __init__(self) -> None:
        super().__init__(model_name="concept-fake", embed_batch_size=16)

    @property
    def texts(self) -> list[str]:
        return self._texts

    def _vector(self, text: str) -> list[float]:
        self._texts.append(text)
        words = set(re.findall(r"[a-z]+", text.lower()))
        return [float(len(words & concept)) for concept in CONCEPTS] + [0.01]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)
