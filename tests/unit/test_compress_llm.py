"""LLMCompressor: model duck typing, JSON parsing, bounded input and the recorded fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from ogmem_memory.compress import (
    CompressionOutcome,
    ExtractiveCompressor,
    LLMCompressor,
    TemplateCompressor,
    compress_with_fallback,
)
from ogmem_memory.compress.llm import parse_llm_output
from ogmem_memory.errors import CompressionError, ConfigError
from ogmem_memory.tokens import EstimatingTokenCounter

OVERVIEW = "## Topics\n- travel\n\n## Facts\n- Maria moved to Lisbon on 12 March 2023\n\n## Decisions\n- None"
REPLY = json.dumps({"overview": OVERVIEW, "abstract": "Maria's move to Lisbon"})
MESSAGES = [
    {"role": "user", "content": "My sister Maria moved to Lisbon on 12 March 2023.", "id": "1"},
    {"role": "assistant", "content": "Lisbon is lovely in spring.", "id": "2"},
]


class Recorder:
    """A plain callable model that records its prompts."""

    def __init__(self, reply: str | Exception = REPLY) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


@dataclass
class ChatMessage:
    content: Any


class InvokeModel:
    """Shaped like a LangChain chat model: ``invoke`` returns a message with ``content``."""

    def __init__(self, content: Any) -> None:
        self.content = content
        self.prompts: list[str] = []

    def invoke(self, prompt: str) -> ChatMessage:
        self.prompts.append(prompt)
        return ChatMessage(self.content)


@dataclass
class CompletionResponse:
    text: str


class CompleteModel:
    """Shaped like a LlamaIndex LLM: ``complete`` returns a response with ``text``."""

    def complete(self, prompt: str) -> CompletionResponse:
        return CompletionResponse(f"Here you go:\n```json\n{REPLY}\n```\nHope this helps.")


def test_plain_callable_returning_json() -> None:
    model = Recorder()
    compressor = LLMCompressor(model)
    assert compressor.compress(MESSAGES) == (OVERVIEW, "Maria's move to Lisbon")
    assert compressor.last_outcome == CompressionOutcome(OVERVIEW, "Maria's move to Lisbon", "LLMCompressor")
    assert len(model.prompts) == 1


def test_prompt_renders_conversation_previous_archive_and_json_request() -> None:
    model = Recorder()
    LLMCompressor(model).compress(MESSAGES, "## Facts\n- Bob is 40", "Bob's age")
    prompt = model.prompts[0]
    assert "user: My sister Maria moved to Lisbon on 12 March 2023.\nassistant: Lisbon is lovely" in prompt
    assert "Abstract: Bob's age\n## Facts\n- Bob is 40" in prompt
    assert "Integrate the still-relevant context" in prompt
    assert '{"overview"' in prompt and "## Open loops" in prompt


def test_fenced_json_is_accepted() -> None:
    compressor = LLMCompressor(Recorder(f"```json\n{REPLY}\n```"))
    assert compressor.compress(MESSAGES)[0] == OVERVIEW
    assert compressor.last_outcome is not None and not compressor.last_outcome.fallback_used


def test_invoke_model_with_string_content() -> None:
    model = InvokeModel(REPLY)
    assert LLMCompressor(model).compress(MESSAGES)[0] == OVERVIEW
    assert len(model.prompts) == 1


def test_invoke_model_with_content_blocks() -> None:
    model = InvokeModel([{"type": "text", "text": "Result: "}, {"type": "text", "text": REPLY}])
    assert LLMCompressor(model).compress(MESSAGES) == (OVERVIEW, "Maria's move to Lisbon")


def test_complete_model_with_prose_around_fenced_json() -> None:
    assert LLMCompressor(CompleteModel()).compress(MESSAGES)[0] == OVERVIEW


@pytest.mark.parametrize(
    ("reply", "error_part"),
    [
        (RuntimeError("rate limited"), "rate limited"),
        ("", "empty output"),
        ("Sorry, I cannot help with that.", "no JSON object"),
        (json.dumps({"overview": "   ", "abstract": "x"}), "empty or non-text overview"),
        (json.dumps({"summary": "wrong key"}), "no JSON object"),
    ],
)
def test_failures_fall_back_to_extractive_and_are_recorded(reply: str | Exception, error_part: str) -> None:
    compressor = LLMCompressor(Recorder(reply))
    outcome = compressor.compress_detailed(MESSAGES)
    assert outcome.fallback_used
    assert outcome.compressor == "ExtractiveCompressor"
    assert outcome.error is not None and error_part in outcome.error
    assert outcome.overview == ExtractiveCompressor(max_overview_tokens=800).compress(MESSAGES)[0]
    assert compressor.compress(MESSAGES) == (outcome.overview, outcome.abstract)
    assert compressor.last_outcome == outcome


def test_custom_fallback_is_used() -> None:
    compressor = LLMCompressor(Recorder(""), fallback=TemplateCompressor())
    overview, _ = compressor.compress(MESSAGES)
    assert overview.startswith("Session with 2 messages")
    assert compressor.last_outcome is not None and compressor.last_outcome.compressor == "TemplateCompressor"


def test_compress_strict_raises_compression_error() -> None:
    with pytest.raises(CompressionError, match="rate limited"):
        LLMCompressor(Recorder(RuntimeError("rate limited"))).compress_strict(MESSAGES)


def test_missing_abstract_is_derived_from_first_bullet_and_long_one_is_cut() -> None:
    assert parse_llm_output(json.dumps({"overview": OVERVIEW}))[1] == "travel"
    overview = "## Topics\n- None\n\n## Facts\n- " + "a" * 150
    assert parse_llm_output(json.dumps({"overview": overview, "abstract": None}))[1] == "a" * 100
    long_abstract = "first line\nsecond " + "b" * 200
    abstract = parse_llm_output(json.dumps({"overview": OVERVIEW, "abstract": long_abstract}))[1]
    assert abstract.startswith("first line second bbb") and len(abstract) == 100


def test_first_parsable_object_with_overview_wins() -> None:
    text = 'Thinking {not json} then {"note": 1} and finally {"overview": "## Facts\\n- x", "abstract": "y"}'
    assert parse_llm_output(text) == ("## Facts\n- x", "y")


def test_huge_input_is_chunked_and_every_prompt_is_bounded() -> None:
    counter = EstimatingTokenCounter()
    model = Recorder()
    compressor = LLMCompressor(model, max_input_tokens=1500, max_overview_tokens=300)
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Message {i}: " + "lorem ipsum " * 40}
        for i in range(200)
    ]
    messages.append({"role": "user", "content": "enormous " * 5000})  # one message over the whole budget
    overview, _ = compressor.compress(messages)
    assert overview == OVERVIEW
    assert len(model.prompts) >= 10
    assert all(counter.count(p) <= 1500 for p in model.prompts)
    # every chunk after the first carries the previous chunk's result as the previous archive
    assert all("Abstract: Maria's move to Lisbon" in p for p in model.prompts[1:])
    conversation = "".join(
        p.split("<conversation>\n")[1].split("\n</conversation>")[0] for p in model.prompts
    )
    assert all(f"Message {i}: " in conversation for i in range(200))
    assert conversation.count("enormous") == 5000


def test_oversized_model_overview_is_bounded() -> None:
    counter = EstimatingTokenCounter()
    bullets = "\n".join(f"- fact number {i} about Lisbon" for i in range(400))
    reply = json.dumps({"overview": f"## Facts\n{bullets}\n\n## Decisions\n- keep", "abstract": "a"})
    overview, _ = LLMCompressor(Recorder(reply), max_overview_tokens=200).compress(MESSAGES)
    assert counter.count(overview) <= 200
    assert "- fact number 399 about Lisbon" in overview and "- keep" in overview
    assert "- fact number 0 about Lisbon" in overview  # the opening facts are anchored
    assert "- fact number 3 about Lisbon" not in overview  # then the oldest go first


def test_empty_messages_do_not_call_the_model() -> None:
    model = Recorder()
    compressor = LLMCompressor(model)
    assert compressor.compress([]) == ("", "Empty session")
    assert compressor.compress([], "## Facts\n- a", "b") == ("## Facts\n- a", "b")
    assert model.prompts == []
    assert compressor.last_outcome is not None and not compressor.last_outcome.fallback_used


def test_malformed_messages_do_not_raise() -> None:
    messages: Sequence[Any] = [{"content": 3}, {"role": None}, {}, "junk", {"role": "user", "content": "hi"}]
    model = Recorder()
    compressor = LLMCompressor(model)
    assert compressor.compress(messages)[0] == OVERVIEW
    assert "user: hi" in model.prompts[0]
    assert LLMCompressor(Recorder()).compress([{"content": None}])[0]  # nothing to send: fallback


def test_invalid_models_and_budgets_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        LLMCompressor(object())
    with pytest.raises(ConfigError, match="max_input_tokens"):
        LLMCompressor(Recorder(), max_input_tokens=500, max_overview_tokens=400)


class FailingCompressor:
    def __init__(self, overview: str = "", exc: Exception | None = None) -> None:
        self.overview, self.exc = overview, exc

    def compress(
        self, messages: Sequence[Any], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        if self.exc is not None:
            raise self.exc
        return self.overview, "abstract"


def test_compress_with_fallback_on_empty_overview() -> None:
    outcome = compress_with_fallback(FailingCompressor(""), TemplateCompressor(), MESSAGES)
    assert outcome.fallback_used and outcome.error == "FailingCompressor returned an empty overview"
    assert outcome.overview.startswith("Session with 2 messages")


def test_compress_with_fallback_accepts_empty_result_for_empty_input() -> None:
    outcome = compress_with_fallback(FailingCompressor(""), TemplateCompressor(), [])
    assert outcome == CompressionOutcome("", "abstract", "FailingCompressor")


def test_compress_with_fallback_raises_when_fallback_fails() -> None:
    with pytest.raises(CompressionError, match="ValueError: first"):
        compress_with_fallback(
            FailingCompressor(exc=ValueError("first")), FailingCompressor(exc=KeyError("second")), MESSAGES
        )


def test_compress_package_imports_no_framework() -> None:
    code = (
        "import sys, ogmem_memory.compress; "
        "frameworks = {'langchain_core', 'langchain', 'llama_index'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in frameworks))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
