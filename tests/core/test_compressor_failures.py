"""Issue 9, defects 5 and 6: bad, failing and hanging compressors, through the manager.

Each failed on the code before issue 9: bad output made every commit fail forever (no
fallback), SystemExit left the task "processing", and a hung compressor hung close().
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ogmem_memory import MemoryConfig, SessionManager

SMALL = MemoryConfig(commit_token_threshold=30, commit_turn_threshold=2, keep_recent_messages=1, keep_recent_tokens=0)


class Returns:
    def __init__(self, value: object) -> None:
        self.value = value

    def compress(self, messages: Sequence[Mapping[str, Any]], prev_overview: str, prev_abstract: str) -> Any:
        return self.value


class Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def compress(self, messages: Sequence[Mapping[str, Any]], prev_overview: str, prev_abstract: str) -> Any:
        raise self.exc


class Hangs:
    def __init__(self) -> None:
        self.release = threading.Event()

    def compress(self, messages: Sequence[Mapping[str, Any]], prev_overview: str, prev_abstract: str) -> Any:
        self.release.wait(60)
        return ("late", "late")


def _fill(m: SessionManager, n: int = 6) -> None:
    for i in range(n):
        m.add_message("s", "user", f"Ada moved to Lisbon in 2023, turn {i}")
        m.add_message("s", "assistant", f"noted {i}")


@pytest.mark.parametrize(
    "compressor",
    [Returns((1, 2)), Returns(None), Returns(("a", "b", "c")), Returns(("lone \ud800", "x")), Returns(("nul\x00", "x"))],
    ids=["ints", "none", "triple", "surrogate", "nul"],
)
def test_defect5_bad_output_falls_back_and_is_recorded(compressor: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ogmem"), SessionManager(
        "memory://", config=SMALL, compressor=compressor  # type: ignore[arg-type]
    ) as m:
        _fill(m)
        m.wait_for_tasks()
        archives = m.list_archives("s", include_merged=True)
        assert archives, "commits must land through the extractive fallback"
        meta = archives[0].metadata["compression"]
        assert meta["fallback_used"] is True and meta["error"]
        assert "Lisbon" in m.get_context("s", 2000).summary
        assert m.get_context("s", 2000).active_message_count < 12  # the live window stays bounded
    assert any(r.levelno == logging.WARNING and "'s'" in r.getMessage() for r in caplog.records)


def test_defect5_system_exit_in_a_compressor_never_leaves_a_task_processing() -> None:
    with SessionManager("memory://", config=MemoryConfig(auto_commit=False), compressor=Raises(SystemExit(3))) as m:  # type: ignore[arg-type]
        _fill(m, 2)
        result = m.commit("s")
        m.wait_for_tasks(30)
        task = m.get_task(result.task_id or "")
        assert task is not None and task["status"] == "completed"
        assert m.list_archives("s")[0].metadata["compression"]["fallback_used"] is True


def test_defect6_a_hung_compressor_is_abandoned_after_compress_timeout() -> None:
    hung = Hangs()
    config = MemoryConfig(auto_commit=False, compress_timeout=0.3)
    with SessionManager("memory://", config=config, compressor=hung) as m:  # type: ignore[arg-type]
        _fill(m, 2)
        m.commit("s")
        m.wait_for_tasks(30)  # returns: the fallback wrote the summary
        archive = m.list_archives("s")[0]
        assert "timed out" in archive.metadata["compression"]["error"]
        hung.release.set()


def test_defect6_close_with_a_timeout_returns_while_a_compressor_hangs() -> None:
    hung = Hangs()
    m = SessionManager("memory://", config=MemoryConfig(auto_commit=False, compress_timeout=0), compressor=hung)  # type: ignore[arg-type]
    _fill(m, 2)
    m.commit("s")
    started = time.monotonic()
    m.close(timeout=0.5)
    assert m.closed and time.monotonic() - started < 20
    assert [x.status for x in m.store.list_messages("s")] == ["active"] * 4  # nothing half-archived
    hung.release.set()


def test_defect6_a_hung_compressor_does_not_block_interpreter_exit() -> None:
    script = textwrap.dedent(
        """
        import threading
        from ogmem_memory import MemoryConfig, SessionManager

        class Hangs:
            def compress(self, messages, prev_overview, prev_abstract):
                threading.Event().wait()

        m = SessionManager("memory://", config=MemoryConfig(auto_commit=False, compress_timeout=0), compressor=Hangs())
        m.add_message("s", "user", "hello")
        m.commit("s")
        print("committing", flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "committing" in done.stdout
