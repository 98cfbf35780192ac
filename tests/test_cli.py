"""The ``ogmem`` command: demo, sessions, show, export, stats, and one-line errors."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.cli import main, sqlite_path
from ogmem_memory.demo import FACT_TURNS, demo_script, run_demo

LOW = MemoryConfig(
    commit_token_threshold=300, commit_turn_threshold=6, keep_recent_messages=4, keep_recent_tokens=100
)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    """A SQLite file with a committed session ``chat`` (archives and a summary) and a small ``other``."""
    path = str(tmp_path / "cli.db")
    with SessionManager(path, config=LOW) as manager:
        for i in range(30):
            manager.add_message("chat", "user", f"Question {i} | my flight is TP1357 on 14 May 2025")
            manager.add_message("chat", "assistant", f"Answer {i}: noted, flight TP1357.")
        manager.wait_for_tasks()
        manager.commit("chat", wait=True)
        manager.add_message("chat", "user", "latest question")
        manager.add_message("other", "user", "hello")
    yield path


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------- demo


def test_demo_reports_what_memory_did(tmp_path: Path) -> None:
    path = str(tmp_path / "demo.db")
    code, out = run("demo", "--turns", "80", "--db", path, "--no-progress")
    assert code == 0
    assert "80 turns through langchain" in out
    assert "(session demo-1)" in out
    assert "commits" in out and "archived" in out
    assert "tokens per turn" in out and "full history" in out
    assert "Final summary:" in out and "TP1357" in out
    with SessionManager(path) as manager:
        history = manager.get_history("demo-1")
        assert len(history) == 160
        assert any(m.status == "archived" for m in history)
        assert manager.list_archives("demo-1")


def test_demo_reruns_use_a_new_session(tmp_path: Path) -> None:
    path = str(tmp_path / "demo.db")
    assert run("demo", "--turns", "5", "--db", path, "--no-progress")[0] == 0
    code, out = run("demo", "--turns", "5", "--db", path, "--no-progress")
    assert code == 0 and "(session demo-2)" in out


def test_demo_with_llama_index(tmp_path: Path) -> None:
    code, out = run("demo", "--framework", "llama-index", "--turns", "60", "--db", str(tmp_path / "d.db"))
    assert code == 0
    assert "60 turns through llama-index" in out


@pytest.mark.parametrize("framework", ["langchain", "llama-index"])
def test_demo_keeps_the_early_facts_and_stays_within_budget(framework: str) -> None:
    report = run_demo(db="memory://", turns=200, framework=framework)
    assert report.turns == 200 and report.messages == 400
    assert report.commits >= 2 and report.archived_messages > 300
    assert all(kept for _, kept in report.facts), report.facts
    assert len(report.prompt_tokens) == 200
    # The model's prompt stays near the budget while the history grows without bound.
    assert max(report.prompt_tokens) < report.budget + 100
    assert report.history_tokens[-1] > 5 * max(report.prompt_tokens)


def test_demo_script_states_facts_first() -> None:
    pairs = demo_script(300)
    assert len(pairs) == 300
    assert [user for user, _ in pairs[: len(FACT_TURNS)]] == [user for user, _, _ in FACT_TURNS]
    assert demo_script(2) == pairs[:2]


def test_the_readme_first_command_is_fast_and_shows_progress(tmp_path: Path) -> None:
    """``ogmem demo`` as a user types it: default turns, default database in the cwd."""
    exe = shutil.which("ogmem", path=os.path.dirname(sys.executable)) or shutil.which("ogmem")
    command = [exe] if exe else [sys.executable, "-m", "ogmem_memory.cli"]
    env = {k: v for k, v in os.environ.items() if k != "OGMEM_DB"}
    started = time.monotonic()
    proc = subprocess.run(
        [*command, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 45, f"ogmem demo took {elapsed:.0f}s"
    assert "300 turns through langchain" in proc.stdout
    assert "conversation" in proc.stderr  # the progress bar
    assert "Warning" not in proc.stderr
    assert (tmp_path / "ogmem.db").is_file()


def test_progress_without_tqdm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # a bare `pip install ogmem-memory[langchain]`
    assert main(["demo", "--turns", "8", "--db", str(tmp_path / "d.db")]) == 0
    assert "conversation: 8/8 turns" in capsys.readouterr().err


def test_demo_without_the_framework_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_ogmem", None)
    assert main(["demo", "--turns", "3", "--db", str(tmp_path / "d.db")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert 'pip install "ogmem-memory[langchain]"' in line


# ---------------------------------------------------------------------------- read commands


def test_sessions(db: str) -> None:
    code, out = run("sessions", "--db", db)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["session", "user", "messages"]
    assert {line.split()[0] for line in lines[1:]} == {"chat", "other"}


def test_sessions_json_and_limit(db: str) -> None:
    code, out = run("sessions", "--db", db, "--json", "--limit", "1")
    assert code == 0
    data = json.loads(out)
    assert len(data) == 1 and data[0]["session_id"] in {"chat", "other"}


def test_db_before_the_command(db: str) -> None:
    code, out = run("--db", db, "sessions")
    assert code == 0 and "chat" in out
    code, out = run("--db", "memory://", "sessions", "--db", db)  # the later one wins
    assert code == 0 and "chat" in out


def test_sessions_uses_ogmem_db_by_default(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OGMEM_DB", db)
    code, out = run("sessions")
    assert code == 0 and "chat" in out


def test_sessions_of_an_empty_store() -> None:
    code, out = run("sessions", "--db", "memory://")
    assert code == 0 and "no sessions" in out


def test_show(db: str) -> None:
    code, out = run("show", "chat", "--db", db, "--messages", "3")
    assert code == 0
    assert "session   chat" in out
    assert "archived" in out and "archives  " in out
    assert "summary" in out and "TP1357" in out
    assert "recent messages (last 3)" in out
    assert "latest question" in out


def test_show_json(db: str) -> None:
    code, out = run("show", "chat", "--db", db, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["session"]["session_id"] == "chat"
    assert data["archived_messages"] > 0 and data["archives"]
    assert data["recent"][-1]["content"] == "latest question"


def test_export_json_is_the_whole_transcript(db: str) -> None:
    code, out = run("export", "chat", "--db", db, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert len(data["messages"]) == 61
    assert [m["seq"] for m in data["messages"]] == sorted(m["seq"] for m in data["messages"])
    assert {m["status"] for m in data["messages"]} == {"active", "archived"}
    assert data["archives"] and "messages" not in data["archives"][0]


def test_export_markdown(db: str, tmp_path: Path) -> None:
    target = tmp_path / "chat.md"
    code, out = run("export", "chat", "--db", db, "--format", "markdown", "-o", str(target))
    assert code == 0 and out == ""
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Session `chat`")
    assert "## Summary" in text and "## Archives" in text and "## Transcript" in text
    assert text.count("**user**") == 31
    table = text.split("## Archives")[1].split("## Transcript")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows and any("Question 0 \\| my flight" in row for row in rows)
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 6 for row in rows)  # pipes in cells are escaped


def test_stats(db: str) -> None:
    code, out = run("stats", "--db", db, "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["sessions"] == 2
    assert stats["messages"] == 62
    assert stats["active_messages"] + stats["archived_messages"] == 62
    assert stats["archived_messages"] >= 60
    assert stats["archives"] >= 1
    assert stats["db_bytes"] > 0
    code, out = run("stats", "--db", db)
    assert code == 0 and "sessions  2" in out and "messages  62" in out


# ---------------------------------------------------------------------------- errors


def test_missing_session_is_one_line(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "missing-session", "--db", db]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: session 'missing-session' not found in {db}"
    assert main(["export", "missing-session", "--db", db]) == 2
    one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["sessions", "stats", "show x", "export x"])
def test_missing_database_is_one_line_and_not_created(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope" / "x.db"
    assert main([*command.split(), "--db", str(missing)]) == 2
    assert "not found" in one_error_line(capsys.readouterr().err)
    assert not missing.exists() and not missing.parent.exists()


def test_nonexistent_db_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "--db", "/nonexistent/x.db"]) == 2
    one_error_line(capsys.readouterr().err)
    assert not Path("/nonexistent/x.db").exists()


def test_a_file_that_is_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    assert main(["sessions", "--db", str(bad)]) == 1
    one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["demo", "--turns", "0"],
        ["demo", "--turns", "many"],
        ["demo", "--framework", "haystack"],
        ["show"],
        ["export", "x", "--format", "pdf"],
        ["sessions", "--nope"],
        ["--db"],
        ["sessions", "--db"],
    ],
)
def test_bad_arguments_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err)
    assert captured.out == ""


def test_bad_session_id_is_one_line(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "bad\x01id", "--db", db]) == 2
    one_error_line(capsys.readouterr().err)


def test_console_script_errors_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ogmem_memory.cli", "sessions", "--db", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    one_error_line(proc.stderr)
    assert not (tmp_path / "none.db").exists()


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "sessions", "show", "export", "stats"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "ogmem-memory" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("ogmem.db", "ogmem.db"),
        ("sqlite:///rel.db", "rel.db"),
        ("sqlite:////abs/x.db", "/abs/x.db"),
        ("memory://", None),
        ("postgresql://u@h/db", None),
        ("sqlite:///:memory:", None),
    ],
)
def test_sqlite_path(url: str, path: str | None) -> None:
    assert sqlite_path(url) == path


def test_unreachable_postgres_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg")
    assert main(["sessions", "--db", "postgresql://postgres@127.0.0.1:1/none"]) == 1
    assert "127.0.0.1" in one_error_line(capsys.readouterr().err)
