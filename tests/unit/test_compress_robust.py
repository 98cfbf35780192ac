"""run_compression: invalid output, escaping exceptions and hung compressors all end in the fallback.

Issue 9 defects 5 (unvalidated compressor output, SystemExit escaping the worker) and 6 (no
timeout), issue 10 item 7 (a malformed LLM reply left no log record). Every test here fails on the
code as it was: ``compress_with_fallback`` stored ``(1, 2)``-shaped, NUL and surrogate output or
crashed on it, let SystemExit through, waited for a hung compressor forever, took no ``timeout``
or ``session_id`` and logged nothing.
"""

from __future__ import annotations

import contextvars
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from ogmem_memory.compress import (
    CompressionOutcome,
    ExtractiveCompressor,
    LLMCompressor,
    TemplateCompressor,
    compress_with_fallback,
    run_compression,
    validate_output,
)
from ogmem_memory.compress.base import (
    MAX_ABANDONED_CALLS,
    MIN_OUTPUT_CHAR_LIMIT,
    abandoned_calls,
    output_char_limit,
)
from ogmem_memory.errors import CompressionError, ConfigError

SID = "sess-robust-1"
MESSAGES = [
    {"role": "user", "content": "My invoice INV-2024-0042 for $1,249.99 is due 2024-07-01.", "id": "1"},
    {"role": "assistant", "content": "Noted, I will remind you about the invoice.", "id": "2"},
]
EXTRACTIVE = ExtractiveCompressor().compress(MESSAGES)


class Returns:
    """A compressor that returns whatever it was given, unchecked."""

    def __init__(self, result: object) -> None:
        self.result = result

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        return self.result  # type: ignore[return-value]


class Raises:
    """A compressor that raises the given exception, BaseException subclasses included."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        raise self.exc


class Blocks:
    """A compressor that hangs until released (or ``seconds`` pass), then returns a late result."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self.release = threading.Event()
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        self.thread = threading.current_thread()
        self.release.wait(self.seconds)
        self.finished.set()
        return "## Facts\n- late result", "late"


@pytest.fixture
def blocker() -> Iterator[Blocks]:
    compressor = Blocks()
    yield compressor
    compressor.release.set()  # let the abandoned thread end with the test
    if compressor.thread is not None:
        compressor.thread.join(10)


def warnings_for(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("ogmem") and r.levelno == logging.WARNING
    ]


def assert_fell_back(outcome: CompressionOutcome, caplog: pytest.LogCaptureFixture, error_part: str) -> None:
    assert outcome.fallback_used
    assert outcome.compressor == "ExtractiveCompressor"
    assert (outcome.overview, outcome.abstract) == EXTRACTIVE
    assert outcome.error is not None and error_part in outcome.error
    (warning,) = warnings_for(caplog)
    assert SID in warning and outcome.error in warning


# -- 1. invalid output ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "error_part"),
    [
        ((1, 2), "returned a int overview, expected str"),
        (("## Facts\n- ok", 2), "returned a int abstract, expected str"),
        (None, "returned NoneType, expected (overview, abstract)"),
        (("a", "b", "c"), "returned a 3-tuple, expected (overview, abstract)"),
        (["## Facts\n- ok", "abstract"], "returned list, expected (overview, abstract)"),
        (("## Facts\n- amount\x00 due", "abstract"), "overview with a NUL character at index 17"),
        (("## Facts\n- ok", "abs\x00tract"), "abstract with a NUL character at index 3"),
        (
            ("## Facts\n- \ud83d broken emoji", "abstract"),
            "overview with a lone surrogate U+D83D at index 11",
        ),
        (("## Facts\n- ok", "\udfff"), "abstract with a lone surrogate U+DFFF"),
        (("x" * (MIN_OUTPUT_CHAR_LIMIT + 1), "abstract"), f"limit {MIN_OUTPUT_CHAR_LIMIT}"),
        (("## Facts\n- ok", "y" * (MIN_OUTPUT_CHAR_LIMIT + 1)), "abstract of 65537 characters"),
        (("   \n", "abstract"), "returned an empty overview"),
    ],
)
def test_invalid_output_falls_back_records_and_warns(
    result: object, error_part: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = run_compression(Returns(result), ExtractiveCompressor(), MESSAGES, session_id=SID)
    assert_fell_back(outcome, caplog, error_part)
    assert outcome.error is not None and outcome.error.startswith("Returns ")


def test_output_bound_scales_with_the_input() -> None:
    """64 KiB is a floor, not a cap: a big input may give an overview longer than 64 KiB."""
    messages = [{"role": "user", "content": "word " * 20_000}]  # 100,000 characters
    assert output_char_limit(messages) == 400_000
    big = "## Facts\n- " + "fact " * 30_000  # 150,000 characters: long, but within 4x the input
    outcome = run_compression(Returns((big, "a")), ExtractiveCompressor(), messages, session_id=SID)
    assert not outcome.fallback_used and outcome.overview == big
    assert output_char_limit([], "p" * 50_000) == 200_000  # the previous overview counts as input


def test_valid_output_is_returned_unchanged_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    result = ("## Facts\n- Maria moved to Lisbon 🇵🇹", "Maria's move")
    outcome = run_compression(Returns(result), ExtractiveCompressor(), MESSAGES, session_id=SID)
    assert outcome == CompressionOutcome(*result, "Returns")
    assert warnings_for(caplog) == []


def test_validate_output_returns_plain_str() -> None:
    class Text(str):
        pass

    overview, abstract = validate_output((Text("o"), Text("a")), max_chars=10)
    assert type(overview) is str and type(abstract) is str


def test_fallback_failing_raises_compression_error_chained_from_its_cause() -> None:
    cause = KeyError("extractive broke")
    with pytest.raises(CompressionError, match="after: Returns returned a int overview") as info:
        run_compression(Returns((1, 2)), Raises(cause), MESSAGES, session_id=SID)
    assert info.value.__cause__ is cause
    assert "Raises failed (KeyError: 'extractive broke')" in str(info.value)


@pytest.mark.parametrize("bad", [(1, 2), None, ("ok\x00", "a"), ("x" * (MIN_OUTPUT_CHAR_LIMIT + 1), "a")])
def test_fallback_returning_invalid_output_raises(bad: object) -> None:
    with pytest.raises(CompressionError, match=r"fallback compressor Returns failed \(CompressionError"):
        run_compression(Raises(RuntimeError("llm down")), Returns(bad), MESSAGES, session_id=SID)


def test_fallback_raising_system_exit_is_a_compression_error_not_an_exit() -> None:
    with pytest.raises(CompressionError, match="SystemExit: 3"):
        run_compression(Raises(RuntimeError("llm down")), Raises(SystemExit(3)), MESSAGES)


def test_error_recorded_is_storable_and_bounded() -> None:
    exc = RuntimeError("model said \x00 and \ud800 " + "z" * 5000)
    outcome = run_compression(Raises(exc), ExtractiveCompressor(), MESSAGES, session_id=SID)
    assert outcome.error is not None and len(outcome.error) <= 500
    assert "\x00" not in outcome.error and "\ud800" not in outcome.error
    outcome.error.encode("utf-8")
    json.dumps({"error": outcome.error})


def test_exception_with_broken_str_is_still_recorded() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise ValueError("no text")

    outcome = run_compression(Raises(Weird()), ExtractiveCompressor(), MESSAGES, session_id=SID)
    assert outcome.fallback_used and outcome.error == "Weird"


# -- 2. exceptions that are not Exception ------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("exc", [SystemExit(1), SystemExit("bye"), GeneratorExit()], ids=repr)
def test_base_exceptions_from_the_primary_fall_back(
    exc: BaseException, timeout: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = run_compression(Raises(exc), ExtractiveCompressor(), MESSAGES, timeout=timeout, session_id=SID)
    assert_fell_back(outcome, caplog, type(exc).__name__)


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_keyboard_interrupt_propagates(timeout: float | None) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_compression(Raises(KeyboardInterrupt()), ExtractiveCompressor(), MESSAGES, timeout=timeout)


# -- 3. timeout ----------------------------------------------------------------------------------


def test_hung_primary_is_abandoned_after_the_timeout(
    blocker: Blocks, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = run_compression(blocker, ExtractiveCompressor(), MESSAGES, timeout=0.2, session_id=SID)
    assert not blocker.finished.is_set()  # returned while the primary was still hung
    assert_fell_back(outcome, caplog, "Blocks timed out after 0.2s")
    assert outcome.error == "Blocks timed out after 0.2s"
    assert blocker.thread is not None and blocker.thread.daemon
    blocker.release.set()
    assert blocker.finished.wait(10)
    blocker.thread.join(10)
    assert outcome.overview == EXTRACTIVE[0]  # the late result is ignored


def test_primary_within_the_timeout_is_used_from_a_daemon_thread_with_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="unset")
    seen: list[tuple[bool, str]] = []

    class Traced:
        def compress(
            self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
        ) -> tuple[str, str]:
            seen.append((threading.current_thread().daemon, var.get()))
            return "## Facts\n- traced", "traced"

    token = var.set("request-42")
    try:
        outcome = run_compression(Traced(), ExtractiveCompressor(), MESSAGES, timeout=30, session_id=SID)
    finally:
        var.reset(token)
    assert outcome == CompressionOutcome("## Facts\n- traced", "traced", "Traced")
    assert seen == [(True, "request-42")]


def test_no_timeout_runs_inline() -> None:
    threads: list[threading.Thread] = []

    class Where:
        def compress(
            self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
        ) -> tuple[str, str]:
            threads.append(threading.current_thread())
            return "## Facts\n- here", "here"

    for timeout in (None, 0, float("inf")):
        run_compression(Where(), ExtractiveCompressor(), MESSAGES, timeout=timeout)
    fallback = Where()
    run_compression(fallback, fallback, MESSAGES, timeout=5)  # nothing else to fall back to
    assert threads == [threading.current_thread()] * 4


def test_hung_calls_are_capped_then_released() -> None:
    """A model that never answers costs at most MAX_ABANDONED_CALLS threads, not one per commit."""

    class Counting(Blocks):
        def __init__(self) -> None:
            super().__init__(seconds=60)
            self.calls = 0
            self.threads: list[threading.Thread] = []

        def compress(
            self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
        ) -> tuple[str, str]:
            self.calls += 1
            self.threads.append(threading.current_thread())
            return super().compress(messages, prev_overview, prev_abstract)

    hung = Counting()
    before = abandoned_calls()  # hung threads of earlier tests, if any are still finishing
    try:
        while abandoned_calls() < MAX_ABANDONED_CALLS:
            outcome = run_compression(hung, ExtractiveCompressor(), MESSAGES, timeout=0.01, session_id=SID)
            assert outcome.error == "Counting timed out after 0.01s"
        calls = hung.calls
        outcome = run_compression(hung, ExtractiveCompressor(), MESSAGES, timeout=0.01, session_id=SID)
        assert hung.calls == calls  # refused without starting another thread
        assert outcome.fallback_used
        assert outcome.error == f"Counting not called: {MAX_ABANDONED_CALLS} earlier calls still hung"
    finally:
        hung.release.set()
    for thread in hung.threads:
        thread.join(10)
    assert abandoned_calls() <= before
    outcome = run_compression(Returns(EXTRACTIVE), TemplateCompressor(), MESSAGES, timeout=5, session_id=SID)
    assert not outcome.fallback_used


@pytest.mark.parametrize("timeout", [-1, float("nan"), "1", True])
def test_invalid_timeout_is_a_config_error(timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        run_compression(Returns(EXTRACTIVE), ExtractiveCompressor(), MESSAGES, timeout=timeout)


def test_hung_compressor_does_not_block_interpreter_exit() -> None:
    """Called from a non-daemon pool worker, as the manager does; the process must still exit."""
    script = textwrap.dedent(
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor
        from ogmem_memory.compress import ExtractiveCompressor, run_compression

        class Hangs:
            def compress(self, messages, prev_overview="", prev_abstract=""):
                threading.Event().wait()  # forever
                return "never", "never"

        messages = [{"role": "user", "content": "Book the 7:15 train to Porto."}]
        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(
                run_compression, Hangs(), ExtractiveCompressor(), messages, timeout=0.2, session_id="s"
            ).result()
        print(outcome.fallback_used, outcome.error)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True Hangs timed out after 0.2s"


# -- 4. LLMCompressor goes through the same runner ------------------------------------------------


class Model:
    """A plain callable model with a scripted reply."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls = 0

    def __call__(self, prompt: str) -> str:
        self.calls += 1
        return self.reply


REPLY = json.dumps({"overview": "## Facts\n- invoice INV-2024-0042 due 2024-07-01", "abstract": "Invoice"})


def test_llm_non_json_reply_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    compressor = LLMCompressor(Model("Sure! Here is a summary: the user has an invoice."))
    outcome = compressor.compress_detailed(MESSAGES, session_id=SID)
    assert_fell_back(outcome, caplog, "no JSON object")


def test_llm_through_run_compression_is_validated_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    reply = json.dumps({"overview": "## Facts\n- amount \x00 due", "abstract": "x"})
    outcome = run_compression(LLMCompressor(Model(reply)), ExtractiveCompressor(), MESSAGES, session_id=SID)
    assert_fell_back(outcome, caplog, "LLMCompressor returned an overview with a NUL character")


def test_llm_success_through_run_compression() -> None:
    model = Model(REPLY)
    outcome = run_compression(
        LLMCompressor(model), ExtractiveCompressor(), MESSAGES, timeout=30, session_id=SID
    )
    assert outcome == CompressionOutcome(
        "## Facts\n- invoice INV-2024-0042 due 2024-07-01", "Invoice", "LLMCompressor"
    )
    assert model.calls == 1


def test_llm_keeps_its_own_fallback_under_run_compression() -> None:
    compressor = LLMCompressor(Model("not json"), fallback=TemplateCompressor())
    outcome = run_compression(compressor, ExtractiveCompressor(), MESSAGES, session_id=SID)
    assert outcome.fallback_used and outcome.compressor == "TemplateCompressor"
    assert outcome == compressor.compress_detailed(MESSAGES)


def test_hung_llm_times_out(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    threads: list[threading.Thread] = []

    def hung_model(prompt: str) -> str:
        threads.append(threading.current_thread())
        release.wait(5)
        return REPLY

    try:
        outcome = LLMCompressor(hung_model).compress_detailed(MESSAGES, timeout=0.2, session_id=SID)
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert_fell_back(outcome, caplog, "LLMCompressor timed out after 0.2s")


def test_compress_with_fallback_is_the_same_runner(caplog: pytest.LogCaptureFixture) -> None:
    outcome = compress_with_fallback(Returns(None), ExtractiveCompressor(), MESSAGES, session_id=SID)
    assert_fell_back(outcome, caplog, "returned NoneType")
