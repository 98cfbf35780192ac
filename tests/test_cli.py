"""The ``ogmem`` command: demo, sessions, show, export, stats, delete, and one-line errors.

(The memory commands, ``memories`` and ``forget-user``, are tested in test_cli_memories.py.)

Read commands must never write where they only read: the tests compare the bytes, mtimes
and sibling files (``-wal``/``-shm``) of real SQLite files before and after, and the
catalog of a real PostgreSQL schema.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.cli import display_url, main, nest_markdown, sqlite_path
from ogmem_memory.demo import FACT_TURNS, demo_script, run_demo

LOW = MemoryConfig(
    commit_token_threshold=300, commit_turn_threshold=6, keep_recent_messages=4, keep_recent_tokens=100
)


COMMANDS = ("demo", "sessions", "show", "export", "stats", "delete", "memories", "forget-user")


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
    assert [line for line in table.splitlines() if line.startswith("| ")]


class PipeCompressor:
    """A scripted compressor whose abstract holds a pipe and a line break."""

    def compress(
        self, messages: Sequence[Mapping[str, Any]], prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]:
        first = str(messages[0]["content"])
        return f"## Facts\n- {first}", f"{first}\nsecond line"


def test_export_markdown_escapes_pipes_in_table_cells(tmp_path: Path) -> None:
    path = str(tmp_path / "pipes.db")
    with SessionManager(path, config=LOW, compressor=PipeCompressor()) as manager:
        for i in range(10):
            manager.add_message("p", "user", f"Question {i} | my flight is TP1357")
            manager.add_message("p", "assistant", f"Answer {i}.")
        manager.commit("p", wait=True)
        manager.wait_for_tasks()
    code, text = run("export", "p", "--db", path, "--format", "markdown")
    assert code == 0
    table = text.split("## Archives")[1].split("## Transcript")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # without the header
    assert rows and all("Question " in row and " \\| my flight" in row for row in rows)
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 6 for row in rows)  # only the column pipes
    assert all("second line" in row for row in rows)  # the line break did not end the row


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
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: no ogmem data in {missing} (file not found")
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
    for command in COMMANDS:
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


# ---------------------------------------------------------------------------- read-only reads

READ_COMMANDS = ["sessions", "show chat", "export chat", "export chat --format markdown", "stats"]


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of ``directory``: bytes and mtime (so a -wal/-shm left behind shows too)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def app_database(path: Path, *, wal: bool) -> Path:
    """Another application's SQLite file: its own table, no ogmem schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
        conn.commit()
    return path


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback-journal"])
@pytest.mark.parametrize("command", [*READ_COMMANDS, "delete chat --yes"])
def test_commands_leave_another_applications_database_untouched(
    command: str, wal: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: ``sessions``/``stats`` used to add ten ``ogmem_*`` tables to this file."""
    path = app_database(tmp_path / "app" / "app.db", wal=wal)
    before = snapshot(path.parent)
    assert main([*command.split(), "--db", str(path)]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: no ogmem data in {path}"
    assert snapshot(path.parent) == before
    with closing(sqlite3.connect(path)) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("invoices",)]


def test_reads_while_the_other_application_holds_its_wal_database_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = app_database(tmp_path / "app" / "app.db", wal=True)
    with closing(sqlite3.connect(path)) as other:
        other.execute("INSERT INTO invoices (total) VALUES (7.0)")
        other.commit()  # the row lives in app.db-wal until a checkpoint
        names = sorted(p.name for p in path.parent.iterdir())
        assert names == ["app.db", "app.db-shm", "app.db-wal"]
        db_and_wal = (path.read_bytes(), Path(f"{path}-wal").read_bytes())
        assert main(["stats", "--db", str(path)]) == 2
        assert "no ogmem data in" in one_error_line(capsys.readouterr().err)
        assert sorted(p.name for p in path.parent.iterdir()) == names
        assert (path.read_bytes(), Path(f"{path}-wal").read_bytes()) == db_and_wal
        assert other.execute("SELECT count(*) FROM invoices").fetchone() == (2,)


def test_an_empty_file_stays_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app" / "empty.db"
    path.parent.mkdir()
    path.touch()
    before = snapshot(path.parent)
    for command in ("sessions", "stats", "show x", "delete x --yes"):
        assert main([*command.split(), "--db", str(path)]) == 2
        assert one_error_line(capsys.readouterr().err) == f"error: no ogmem data in {path}"
    assert snapshot(path.parent) == before


def test_a_directory_is_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "--db", str(tmp_path)]) == 2
    assert f"no ogmem data in {tmp_path} (not a file" in one_error_line(capsys.readouterr().err)


def test_read_commands_leave_an_ogmem_database_untouched(db: str) -> None:
    directory = Path(db).parent
    before = snapshot(directory)
    for command in READ_COMMANDS:
        code, out = run(*command.split(), "--db", db)
        assert code == 0 and out
    assert snapshot(directory) == before


@pytest.mark.parametrize("name", ["odd?name.db", "odd#name.db", "100%20sure.db", "sp ace?x=1#y.db"])
def test_paths_with_uri_characters(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``?``, ``#`` and ``%`` in a path must not become the URI's query, fragment or escapes."""
    ours = tmp_path / "ours" / name
    ours.parent.mkdir()
    with SessionManager(str(ours)) as manager:
        manager.add_message("s", "user", "hello from an odd path")
    code, out = run("show", "s", "--db", str(ours))
    assert code == 0 and "hello from an odd path" in out
    theirs = app_database(tmp_path / "theirs" / name, wal=True)
    before = snapshot(theirs.parent)
    assert main(["sessions", "--db", str(theirs)]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: no ogmem data in {theirs}"
    assert snapshot(theirs.parent) == before


def test_sqlite_url_without_ogmem_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = app_database(tmp_path / "app.db", wal=False)
    assert main(["sessions", "--db", f"sqlite:///{path}"]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: no ogmem data in {path}"


def test_console_script_leaves_another_applications_database_untouched(tmp_path: Path) -> None:
    path = app_database(tmp_path / "app" / "app.db", wal=True)
    before = snapshot(path.parent)
    exe = shutil.which("ogmem", path=os.path.dirname(sys.executable))
    command = [exe] if exe else [sys.executable, "-m", "ogmem_memory.cli"]
    for sub in (["sessions"], ["stats", "--json"]):
        proc = subprocess.run([*command, *sub, "--db", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert one_error_line(proc.stderr) == f"error: no ogmem data in {path}"
        assert proc.stdout == ""
    assert snapshot(path.parent) == before


# ---------------------------------------------------------------------------- demo targets


@pytest.mark.parametrize("where", ["missing-dir/x.db", "missing/nested/x.db"])
def test_demo_refuses_a_directory_that_does_not_exist(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: ``ogmem demo --db /nonexistent/dir/x.db`` used to create the directory."""
    target = tmp_path / where
    assert main(["demo", "--turns", "3", "--no-progress", "--db", str(target)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"directory '{target.parent}' does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_an_absolute_nonexistent_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--turns", "3", "--no-progress", "--db", "/nonexistent/dir/x.db"]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    assert not Path("/nonexistent").exists()


def test_demo_refuses_another_applications_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = app_database(tmp_path / "app" / "app.db", wal=False)
    before = snapshot(path.parent)
    assert main(["demo", "--turns", "3", "--no-progress", "--db", str(path)]) == 2
    assert f"no ogmem data in {path}" in one_error_line(capsys.readouterr().err)
    assert snapshot(path.parent) == before


def test_demo_writes_into_an_existing_ogmem_database(db: str) -> None:
    code, out = run("demo", "--turns", "3", "--no-progress", "--db", db)
    assert code == 0 and "(session demo-1)" in out
    code, out = run("sessions", "--db", db)
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"chat", "other", "demo-1"}


# ---------------------------------------------------------------------------- delete


def test_delete_removes_one_session_whole(db: str) -> None:
    with SessionManager(db) as manager:
        archives = manager.list_archives("chat", include_merged=True)
        assert archives and len(manager.get_history("chat")) == 61
    code, out = run("delete", "chat", "--yes", "--db", db)
    assert code == 0
    assert out.strip() == f"deleted session 'chat' (61 messages, {len(archives)} archives) from {db}"
    with SessionManager(db) as manager:
        assert [r.session_id for r in manager.list_sessions()] == ["other"]
        assert manager.get_history("chat") == []
        assert manager.store.list_archives("chat", include_merged=True) == []
        assert manager.search("TP1357") == []
        assert [m.content for m in manager.get_history("other")] == ["hello"]
    code, out = run("show", "chat", "--db", db)
    assert code == 2


def test_delete_a_missing_session_changes_nothing(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(Path(db).parent)
    assert main(["delete", "nope", "--yes", "--db", db]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: session 'nope' not found in {db}"
    assert main(["delete", "bad\x01id", "--yes", "--db", db]) == 2
    one_error_line(capsys.readouterr().err)
    assert snapshot(Path(db).parent) == before


def test_delete_without_yes_in_a_script_refuses(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stdin.isatty()
    assert main(["delete", "chat", "--db", db]) == 2
    assert "without --yes" in one_error_line(capsys.readouterr().err)
    with SessionManager(db) as manager:
        assert len(manager.get_history("chat")) == 61


class Terminal(io.StringIO):
    """Stdin as a person at a terminal: typed answers, ``isatty()`` true."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code", "left"), [("y\n", 0, 0), ("n\n", 1, 61), ("\n", 1, 61)])
def test_delete_asks_at_a_terminal(
    answer: str,
    code: int,
    left: int,
    db: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    assert main(["delete", "chat", "--db", db]) == code
    err = capsys.readouterr().err
    assert "delete session 'chat' (61 messages, " in err and "[y/N]" in err
    with SessionManager(db) as manager:
        assert len(manager.get_history("chat")) == left


# ---------------------------------------------------------------------------- help


def test_every_command_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    from ogmem_memory.cli import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert set(listed) == set(subparsers.choices) == set(COMMANDS)
    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    for name, summary in listed.items():
        assert summary and f"{name} {summary}" in top
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        blocks = capsys.readouterr().out.split("\n\n")
        description = subparsers.choices[name].description
        assert description and len(description) > len(summary)
        # usage, then the description paragraph, then the arguments
        assert blocks[0].startswith(f"usage: ogmem {name}")
        assert " ".join(blocks[1].split()) == description


# ---------------------------------------------------------------------------- Markdown nesting


def outline(markdown: str) -> list[tuple[int, str]]:
    """The ATX headings of a document outside code fences: what a Markdown viewer's outline shows."""
    headings: list[tuple[int, str]] = []
    fence = ""
    for line in markdown.split("\n"):
        mark = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if fence:
            if (
                mark
                and mark.group(1)[0] == fence[0]
                and len(mark.group(1)) >= len(fence)
                and (line.strip() == mark.group(1))
            ):
                fence = ""
            continue
        if mark:
            fence = mark.group(1)
            continue
        heading = re.match(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$", line)
        if heading:
            headings.append((len(heading.group(1)), heading.group(2) or ""))
    assert not fence, "a code fence is left open"
    return headings


def test_markdown_export_nests_the_summary_sections(db: str) -> None:
    """Regression: the overview's ``## Facts`` sat beside ``## Summary``, not under it."""
    with SessionManager(db) as manager:
        overview = manager.list_archives("chat")[0].overview
    sections = [title for level, title in outline(overview) if level == 2]
    assert len(sections) >= 2  # the extractive overview: Topics, Facts, Decisions, Open loops
    code, text = run("export", "chat", "--db", db, "--format", "markdown")
    assert code == 0
    assert outline(text) == [
        (1, "Session `chat`"),
        (2, "Summary"),
        *[(3, title) for title in sections],
        (2, "Archives"),
        (2, "Transcript"),
    ]
    # only the heading marks changed: every bullet of the overview is there
    bullets = [line for line in overview.splitlines() if line.startswith("- ")]
    summary = text.split("## Summary")[1].split("## Archives")[0]
    assert [line for line in summary.splitlines() if line.startswith("- ")] == bullets


def test_markdown_export_nests_headings_and_closes_fences_in_messages(tmp_path: Path) -> None:
    path = str(tmp_path / "md.db")
    with SessionManager(path) as manager:
        manager.add_message("md", "user", "# Plan\n## Steps\n```\n# not a heading\n```\nthanks")
        manager.add_message("md", "assistant", "Title\n=====\n\nHere:\n```python\nprint(1)")
        manager.add_message("md", "user", "after the open fence")
    code, text = run("export", "md", "--db", path, "--format", "markdown")
    assert code == 0
    assert outline(text) == [(1, "Session `md`"), (2, "Transcript"), (3, "Plan"), (4, "Steps"), (3, "Title")]
    assert "```\n# not a heading\n```" in text  # code is never touched
    assert "print(1)\n```" in text
    # the label after the unclosed fence is outside any code block
    assert text.count("**user**") == 2 and text.rstrip().endswith("after the open fence")


@pytest.mark.parametrize(
    ("text", "level", "nested"),
    [
        ("## Facts\n- a\n## Decisions\n- b", 2, "### Facts\n- a\n### Decisions\n- b"),
        ("# A\n## B\n### C", 2, "### A\n#### B\n##### C"),
        ("### already deep\n#### deeper", 2, "### already deep\n#### deeper"),
        ("##### five\n# one", 2, "###### five\n### one"),  # Markdown stops at 6
        ("no headings\njust text", 2, "no headings\njust text"),
        ("#hashtag, not a heading\n## real", 1, "#hashtag, not a heading\n## real"),
        ("    # indented code", 2, "    # indented code"),
        ("~~~\n## in code\n~~~\n## out", 2, "~~~\n## in code\n~~~\n### out"),
        ("````\n```\n# still code\n````", 2, "````\n```\n# still code\n````"),
        ("Title\nsecond line\n---\nbody", 2, "### Title second line\nbody"),
        ("- item\n---\n", 2, "- item\n---\n"),  # a rule after a list, not a heading
        ("text\n\n---\n\nmore", 2, "text\n\n---\n\nmore"),  # a rule after a blank line
        ("```python\nx = 1", 2, "```python\nx = 1\n```"),
        ("## Facts ##", 2, "### Facts ##"),
    ],
)
def test_nest_markdown(text: str, level: int, nested: str) -> None:
    assert nest_markdown(text, level) == nested


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(postgres_schema: str) -> Iterator[tuple[str, str]]:
    """(dsn, schema): a PostgreSQL schema holding a committed session ``chat`` and ``other``."""
    from ogmem_memory.stores.postgres import PostgresStore

    dsn = os.environ["OGMEM_TEST_POSTGRES_DSN"]
    with SessionManager(PostgresStore(dsn, schema=postgres_schema), config=LOW) as manager:
        for i in range(15):
            manager.add_message("chat", "user", f"Question {i} | my flight is TP1357")
            manager.add_message("chat", "assistant", f"Answer {i}: noted.")
        manager.wait_for_tasks()
        manager.commit("chat", wait=True)
        manager.add_message("other", "user", "hello")
    yield dsn, postgres_schema


def pg_tables(dsn: str, schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
        ).fetchall()
    return [r[0] for r in rows]


def pg_schema_exists(dsn: str, schema: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def test_schema_option_reads_that_schema(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    code, out = run("sessions", "--db", dsn, "--schema", schema)
    assert code == 0 and {line.split()[0] for line in out.splitlines()[1:]} == {"chat", "other"}
    code, out = run("--db", dsn, "--schema", schema, "show", "chat")  # before the command too
    assert code == 0 and "TP1357" in out
    code, out = run("export", "chat", "--db", dsn, "--schema", schema)
    assert code == 0 and len(json.loads(out)["messages"]) == 30


def test_postgres_without_ogmem_data_creates_nothing(
    pg: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    dsn, schema = pg
    other_app, missing = f"{schema}_app", f"{schema}_none"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{other_app}"')
            conn.execute(f'CREATE TABLE "{other_app}".invoices (id int)')
        for command in ("sessions", "stats", "show chat", "export chat", "delete chat --yes"):
            assert main([*command.split(), "--db", dsn, "--schema", other_app]) == 2
            line = one_error_line(capsys.readouterr().err)
            assert line == f"error: no ogmem data in {dsn} (schema {other_app})"
            assert main([*command.split(), "--db", dsn, "--schema", missing]) == 2
            assert "no ogmem data in" in one_error_line(capsys.readouterr().err)
        assert pg_tables(dsn, other_app) == ["invoices"]
        assert not pg_schema_exists(dsn, missing)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other_app}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{missing}" CASCADE')


def test_postgres_stats_give_the_size_of_the_ogmem_tables(pg: tuple[str, str]) -> None:
    import psycopg

    from ogmem_memory.stores.postgres import PostgresStore

    dsn, schema = pg
    code, out = run("stats", "--json", "--db", dsn, "--schema", schema)
    assert code == 0
    stats = json.loads(out)
    assert (stats["sessions"], stats["messages"], stats["schema"]) == (2, 31, schema)
    with psycopg.connect(dsn) as conn:
        messages_table = conn.execute(
            "SELECT pg_total_relation_size(format('%%I.%%I', %s::text, 'ogmem_messages')::regclass)",
            (schema,),
        ).fetchone()
    assert messages_table is not None and stats["db_bytes"] > messages_table[0] > 0
    with SessionManager(PostgresStore(dsn, schema=schema)) as manager:
        manager.add_messages("big", [{"role": "user", "content": f"{i} " + "x" * 2000} for i in range(200)])
    code, out = run("stats", "--json", "--db", dsn, "--schema", schema)
    assert code == 0 and json.loads(out)["db_bytes"] > stats["db_bytes"] + 100_000
    code, out = run("stats", "--db", dsn, "--schema", schema)
    assert code == 0
    shown = rf"database  {re.escape(dsn)} \(schema {schema}; [\d.]+ [KMG]?B in ogmem tables\)"
    assert re.search(rf"^{shown}$", out, re.M), out


def test_postgres_delete(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    code, out = run("delete", "chat", "--yes", "--db", dsn, "--schema", schema)
    assert code == 0 and out.startswith("deleted session 'chat' (30 messages, ")
    code, out = run("sessions", "--json", "--db", dsn, "--schema", schema)
    assert [r["session_id"] for r in json.loads(out)] == ["other"]


@pytest.mark.parametrize("command", ["sessions", "demo --turns 2 --no-progress"])
def test_schema_needs_a_postgresql_url(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.db"
    assert main([*command.split(), "--db", str(path), "--schema", "s"]) == 2
    assert "--schema applies to postgresql:// URLs only" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_demo_does_not_take_a_schema(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://postgres@127.0.0.1:1/none"
    assert main(["demo", "--turns", "2", "--no-progress", "--db", url, "--schema", "s"]) == 2
    assert "does not take --schema" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ada:s3cret@db.example:5432/app", "postgresql://ada:***@db.example:5432/app"),
        ("postgresql://ada:p%40ss@h/app", "postgresql://ada:***@h/app"),
        ("postgresql://ada@h/app", "postgresql://ada@h/app"),
        ("chat.db", "chat.db"),
    ],
)
def test_display_url_hides_the_password(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_a_password_never_reaches_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg")
    assert main(["sessions", "--db", "postgresql://ada:s3cret@127.0.0.1:1/none"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "s3cret" not in line and "127.0.0.1" in line
