"""Fakes for tests: compressors that block or fail, and a scripted LLM callable."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class BlockingCompressor:
    """Compresses only after ``release()``; ``started`` is set when a compression begins."""

    def __init__(self, overview: str = "## Facts\n- blocked summary", abstract: str = "blocked") -> None:
        self.started = threading.Event()
        self._release = threading.Event()
        self.overview = overview
        self.abstract = abstract
        self.calls = 0

    def release(self) -> None:
        self._release.set()

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        self.calls += 1
        self.started.set()
        if not self._release.wait(timeout=60):
            raise TimeoutError("BlockingCompressor was never released")
        return self.overview, self.abstract


class FailingCompressor:
    """Raises on the first ``failures`` calls, then summarises like a trivial compressor."""

    def __init__(self, failures: int = 1, error: str = "compressor exploded") -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(self.error)
        lines = [f"- {m.get('role')}: {m.get('content')}" for m in messages]
        return "## Facts\n" + "\n".join(lines), f"{len(messages)} messages"


class ScriptedLLM:
    """A ``callable(prompt) -> str`` that replays scripted answers (the last one repeats)."""

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        index = min(len(self.prompts), len(self.answers)) - 1
        return self.answers[index]
