"""``ogmem memories list|search|delete`` and ``ogmem forget-user``, on real SQLite files and PostgreSQL.

Memories are written through a real ``SessionManager`` (``commit_session`` and threshold
commits), the CLI runs in-process through ``main(argv)`` and once as the console script,
and what it did is checked through the manager again.
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
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from ogmem_memory import MemoryConfig, RequestContext, SessionManager
from ogmem_memory.cli import build_parser, main

LOW = MemoryConfig(
    commit_token_threshold=300, commit_turn_threshold=6, keep_recent_messages=4, keep_recent_tokens=100
)
ADA = RequestContext(account_id="acme", user_id="ada")
ADA_PLANNER = RequestContext(account_id="acme", user_id="ada", agent_id="planner")
BOB = RequestContext(account_id="acme", user_id="bob")
ADA_ARGS = ("--user", "ada", "--account", "acme")
ADA_FACTS = "I live in Lisbon. My name is Ada Lovelace. I prefer tea over coffee."


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def populate(manager: SessionManager) -> None:
    """Ada: three memories, one of another agent, a committed session and a small one; Bob: one of each."""
    manager.commit_session([{"role": "user", "content": ADA_FACTS}], ADA)
    manager.commit_session([{"role": "user", "content": "I live in Berlin."}], ADA_PLANNER)
    manager.commit_session([{"role": "user", "content": "I live in Porto."}], BOB)
    for i in range(12):
        manager.add_message("ada-1", "user", f"Question {i}: my flight is TP1357 on 14 May", ADA)
        manager.add_message("ada-1", "assistant", f"Answer {i}: noted.", ADA)
    manager.commit("ada-1", ADA, wait=True)
    manager.wait_for_tasks()
    manager.add_message("ada-2", "user", "hello again", ADA)
    manager.add_message("bob-1", "user", "hello from bob", BOB)


@pytest.fixture
def mdb(tmp_path: Path) -> Iterator[str]:
    """A SQLite file with the memories and sessions of ``populate``."""
    path = str(tmp_path / "memories.db")
    with SessionManager(path, config=LOW) as manager:
        populate(manager)
        assert manager.list_archives("ada-1", ADA)  # the commit landed: archives to forget too
    yield path


def contents(path: str, ctx: RequestContext) -> list[str]:
    with SessionManager(path) as manager:
        return sorted(m.content for m in manager.list_memories(ctx))


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------------------- list and search


def test_list_shows_the_users_memories_only(mdb: str) -> None:
    code, out = run("memories", "list", *ADA_ARGS, "--db", mdb)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["memory", "category", "key", "updated", "(UTC)", "content"]
    assert len(lines) == 4
    assert any(line.endswith("User lives in Lisbon.") for line in lines)
    assert "Berlin" not in out and "Porto" not in out  # another agent's, another user's


def test_list_json_is_the_managers_records(mdb: str) -> None:
    code, out = run("memories", "list", *ADA_ARGS, "--format", "json", "--db", mdb)
    assert code == 0
    with SessionManager(mdb) as manager:
        assert json.loads(out) == [m.to_dict() for m in manager.list_memories(ADA)]
    code, out = run("memories", "list", *ADA_ARGS, "--agent", "planner", "--format", "json", "--db", mdb)
    assert code == 0 and [m["content"] for m in json.loads(out)] == ["User lives in Berlin."]


def test_list_limit(mdb: str) -> None:
    code, out = run("memories", "list", *ADA_ARGS, "--limit", "2", "--format", "json", "--db", mdb)
    assert code == 0 and len(json.loads(out)) == 2


def test_list_reads_every_page(mdb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With pages of two, the three memories take two pages and an empty one; none is lost."""
    import ogmem_memory.cli_memories as cli_memories

    monkeypatch.setattr(cli_memories, "PAGE", 2)
    code, out = run("memories", "list", *ADA_ARGS, "--format", "json", "--db", mdb)
    assert code == 0
    assert sorted(m["content"] for m in json.loads(out)) == contents(mdb, ADA)
    assert len(json.loads(out)) == 3


def test_list_of_a_user_without_memories(mdb: str) -> None:
    code, out = run("memories", "list", "--user", "ada", "--db", mdb)  # the default account
    assert code == 0
    assert out.strip() == f"no memories of user 'ada' (account 'default', agent 'default') in {mdb}"
    code, out = run("memories", "list", "--user", "ada", "--format", "json", "--db", mdb)
    assert code == 0 and json.loads(out) == []


def test_search_ranks_by_the_query(mdb: str) -> None:
    code, out = run("memories", "search", "where does she live", *ADA_ARGS, "--format", "json", "--db", mdb)
    assert code == 0
    found = json.loads(out)
    assert found and found[0]["content"] == "User lives in Lisbon."
    assert all(m["user_id"] == "ada" and m["agent_id"] == "default" for m in found)
    code, out = run("memories", "search", "tea", *ADA_ARGS, "--limit", "1", "--db", mdb)
    assert code == 0
    assert len(out.splitlines()) == 2 and out.splitlines()[1].endswith("User prefers tea over coffee.")
    code, out = run("memories", "search", "quantum chromodynamics", *ADA_ARGS, "--db", mdb)
    assert code == 0
    assert out.strip() == (
        f"no memories of user 'ada' (account 'acme', agent 'default') match 'quantum chromodynamics' in {mdb}"
    )


def test_read_commands_leave_an_ogmem_database_untouched(mdb: str) -> None:
    directory = Path(mdb).parent
    before = snapshot(directory)
    for argv in (
        ["memories", "list", *ADA_ARGS],
        ["memories", "list", *ADA_ARGS, "--format", "json"],
        ["memories", "search", "Lisbon", *ADA_ARGS],
    ):
        code, out = run(*argv, "--db", mdb)
        assert code == 0 and out
    assert snapshot(directory) == before


# ---------------------------------------------------------------------------- delete


def memory_id(path: str, ctx: RequestContext, content: str) -> str:
    with SessionManager(path) as manager:
        (found,) = [m.memory_id for m in manager.list_memories(ctx) if m.content == content]
    return found


def context_memories(path: str) -> tuple[str, ...]:
    with SessionManager(path) as manager:
        return manager.get_context("ada-2", 2000, ADA, query="Where do I live?").memories


def test_delete_removes_one_memory(mdb: str) -> None:
    lisbon = memory_id(mdb, ADA, "User lives in Lisbon.")
    assert "User lives in Lisbon." in context_memories(mdb)
    code, out = run("memories", "delete", lisbon, *ADA_ARGS, "--yes", "--db", mdb)
    assert code == 0
    assert out.strip() == (
        f"deleted memory {lisbon} of user 'ada' (account 'acme', agent 'default') "
        f"('User lives in Lisbon.') from {mdb}"
    )
    assert contents(mdb, ADA) == ["User prefers tea over coffee.", "User's name is Ada Lovelace."]
    assert contents(mdb, ADA_PLANNER) == ["User lives in Berlin."]
    with SessionManager(mdb) as manager:
        assert all("Lisbon" not in m.content for m in manager.search_memories(ADA, "where does she live"))
    # an explicit question shows only memories relevant to it: none is left about where she lives
    assert not any("Lisbon" in m for m in context_memories(mdb))
    with SessionManager(mdb) as manager:  # without a question the profile still shows the rest
        profile = manager.get_context("ada-2", 2000, ADA).memories
    assert profile and not any("Lisbon" in m for m in profile)


def test_delete_a_missing_memory_changes_nothing(mdb: str, capsys: pytest.CaptureFixture[str]) -> None:
    lisbon = memory_id(mdb, ADA, "User lives in Lisbon.")
    before = snapshot(Path(mdb).parent)
    assert main(["memories", "delete", "mem_000000000000", *ADA_ARGS, "--yes", "--db", mdb]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: memory 'mem_000000000000' of user 'ada' (account 'acme', agent 'default') not found in {mdb}"
    )
    # Bob cannot delete Ada's memory, nor can Ada through another agent.
    assert (
        main(["memories", "delete", lisbon, "--user", "bob", "--account", "acme", "--yes", "--db", mdb]) == 2
    )
    assert "not found" in one_error_line(capsys.readouterr().err)
    assert main(["memories", "delete", lisbon, *ADA_ARGS, "--agent", "planner", "--yes", "--db", mdb]) == 2
    assert "not found" in one_error_line(capsys.readouterr().err)
    assert snapshot(Path(mdb).parent) == before


def test_delete_without_yes_in_a_script_refuses(mdb: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stdin.isatty()
    lisbon = memory_id(mdb, ADA, "User lives in Lisbon.")
    assert main(["memories", "delete", lisbon, *ADA_ARGS, "--db", mdb]) == 2
    assert "without --yes" in one_error_line(capsys.readouterr().err)
    assert "User lives in Lisbon." in contents(mdb, ADA)


class Terminal(io.StringIO):
    """Stdin as a person at a terminal: typed answers, ``isatty()`` true."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code", "kept"), [("y\n", 0, False), ("n\n", 1, True), ("\n", 1, True)])
def test_delete_asks_at_a_terminal(
    answer: str,
    code: int,
    kept: bool,
    mdb: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lisbon = memory_id(mdb, ADA, "User lives in Lisbon.")
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    assert main(["memories", "delete", lisbon, *ADA_ARGS, "--db", mdb]) == code
    err = capsys.readouterr().err
    assert f"delete memory {lisbon} of user 'ada'" in err and "'User lives in Lisbon.'" in err
    assert "[y/N]" in err
    assert ("User lives in Lisbon." in contents(mdb, ADA)) is kept


# ---------------------------------------------------------------------------- forget-user


def assert_only_bob_is_left(manager: SessionManager) -> None:
    assert manager.list_sessions(ADA) == []
    assert manager.list_memories(ADA) == [] and manager.list_memories(ADA_PLANNER) == []
    assert manager.search_memories(ADA, "Lisbon") == []
    assert [r.session_id for r in manager.list_sessions(BOB)] == ["bob-1"]
    assert [m.content for m in manager.list_memories(BOB)] == ["User lives in Porto."]
    assert [m.content for m in manager.get_history("bob-1", BOB)] == ["hello from bob"]


def test_forget_user_deletes_every_session_and_memory_of_the_user(mdb: str) -> None:
    code, out = run("forget-user", *ADA_ARGS, "--yes", "--db", mdb)
    assert code == 0
    # 2 sessions; 3 memories of the default agent and 1 of the planner
    assert out.strip() == f"deleted 2 sessions and 4 memories of user 'ada' (account 'acme') from {mdb}"
    with SessionManager(mdb) as manager:
        assert_only_bob_is_left(manager)
        assert manager.get_history("ada-1") == []
        assert manager.store.list_archives("ada-1", include_merged=True) == []
        assert manager.search("TP1357") == []
    code, out = run("memories", "list", *ADA_ARGS, "--db", mdb)
    assert code == 0 and out.startswith("no memories of user 'ada'")


def test_forget_user_leaves_no_row_of_the_user_in_the_file(mdb: str) -> None:
    """Every table of the SQLite file, scanned: no row names ada or her facts afterwards."""
    assert run("forget-user", *ADA_ARGS, "--yes", "--db", mdb)[0] == 0

    def rows_naming(words: tuple[str, ...]) -> list[tuple[str, str]]:
        hits: list[tuple[str, str]] = []
        with closing(sqlite3.connect(mdb)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    text = " ".join(map(str, row))
                    # whole words: "ada" inside a hex message id ("msg_3ada91...") names nobody
                    hits += [(table, w) for w in words if re.search(rf"\b{re.escape(w)}\b", text)]
        return hits

    assert rows_naming(("ada", "Lisbon", "Lovelace", "TP1357", "Berlin")) == []
    assert rows_naming(("bob", "Porto"))  # the scan does see what is stored


def test_forget_user_twice_and_an_unknown_user(mdb: str) -> None:
    assert run("forget-user", *ADA_ARGS, "--yes", "--db", mdb)[0] == 0
    code, out = run("forget-user", *ADA_ARGS, "--yes", "--db", mdb)
    assert code == 0
    assert out.strip() == f"deleted 0 sessions and 0 memories of user 'ada' (account 'acme') from {mdb}"
    code, out = run("forget-user", "--user", "bob", "--yes", "--db", mdb)  # bob of the default account
    assert code == 0 and out.startswith("deleted 0 sessions and 0 memories")
    with SessionManager(mdb) as manager:
        assert [m.content for m in manager.list_memories(BOB)] == ["User lives in Porto."]


def test_forget_user_without_yes_in_a_script_refuses(mdb: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(Path(mdb).parent)
    assert main(["forget-user", *ADA_ARGS, "--db", mdb]) == 2
    assert "without --yes" in one_error_line(capsys.readouterr().err)
    assert snapshot(Path(mdb).parent) == before


@pytest.mark.parametrize(("answer", "code"), [("yes\n", 0), ("n\n", 1)])
def test_forget_user_asks_at_a_terminal(
    answer: str, code: int, mdb: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    assert main(["forget-user", *ADA_ARGS, "--db", mdb]) == code
    err = capsys.readouterr().err
    assert "delete everything of user 'ada' (account 'acme') (2 sessions and every memory)" in err
    with SessionManager(mdb) as manager:
        assert len(manager.list_sessions(ADA)) == (0 if code == 0 else 2)
        assert len(manager.list_memories(ADA)) == (0 if code == 0 else 3)


def test_memory_store() -> None:
    code, out = run("memories", "list", "--user", "ada", "--db", "memory://")
    assert code == 0 and out.startswith("no memories of user 'ada'")
    code, out = run("forget-user", "--user", "ada", "--yes", "--db", "memory://")
    assert code == 0 and out.startswith("deleted 0 sessions and 0 memories")


# ---------------------------------------------------------------------------- refusals


COMMANDS = [
    "memories list --user ada",
    "memories search Lisbon --user ada",
    "memories delete mem_000000000000 --user ada --yes",
    "forget-user --user ada --yes",
]


def app_database(path: Path, *, wal: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
        conn.commit()
    return path


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback-journal"])
@pytest.mark.parametrize("command", COMMANDS)
def test_another_applications_database_is_untouched(
    command: str, wal: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = app_database(tmp_path / "app" / "app.db", wal=wal)
    before = snapshot(path.parent)
    assert main([*command.split(), "--db", str(path)]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: no ogmem data in {path}"
    assert snapshot(path.parent) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_database_is_not_created(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope" / "x.db"
    assert main([*command.split(), "--db", str(missing)]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(
        f"error: no ogmem data in {missing} (file not found"
    )
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["memories"], "required: ACTION"),
        (["memories", "bogus"], "invalid choice"),
        (["memories", "list"], "required: --user"),
        (["memories", "search", "--user", "ada"], "required: QUERY"),
        (["memories", "delete", "--user", "ada"], "required: MEMORY_ID"),
        (["forget-user"], "required: --user"),
        (["memories", "list", "--user", ""], "argument --user: user id"),
        (["memories", "list", "--user", "ada\x01"], "argument --user: user id"),
        (["memories", "list", "--user", "ada", "--account", "\t"], "argument --account: account id"),
        (["forget-user", "--user", "ada", "--agent", "x"], "unrecognized arguments: --agent"),
        (["memories", "list", "--user", "ada", "--limit", "0"], "positive integer"),
        (["memories", "list", "--user", "ada", "--format", "xml"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_and_touch_nothing(
    argv: list[str], says: str, mdb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(Path(mdb).parent)
    assert main([*argv, "--db", mdb]) == 2
    captured = capsys.readouterr()
    assert says in one_error_line(captured.err) and captured.out == ""
    assert snapshot(Path(mdb).parent) == before


def test_every_memory_action_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (top,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"memories", "forget-user"} <= set(top.choices)
    memories = top.choices["memories"]
    (actions,) = [a for a in memories._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {choice.dest: choice.help for choice in actions._choices_actions}
    assert set(listed) == set(actions.choices) == {"list", "search", "delete"}
    with pytest.raises(SystemExit):
        main(["memories", "--help"])
    group = " ".join(capsys.readouterr().out.split())
    for name, summary in listed.items():
        assert summary and f"{name} {summary}" in group
        with pytest.raises(SystemExit) as exit_:
            main(["memories", name, "--help"])
        assert exit_.value.code == 0
        blocks = capsys.readouterr().out.split("\n\n")
        description = actions.choices[name].description
        assert description and len(description) > len(summary)
        assert blocks[0].startswith(f"usage: ogmem memories {name}")
        assert " ".join(blocks[1].split()) == description


# ---------------------------------------------------------------------------- the console script


def test_console_script_lists_and_forgets(mdb: str) -> None:
    exe = shutil.which("ogmem", path=os.path.dirname(sys.executable))
    command = [exe] if exe else [sys.executable, "-m", "ogmem_memory.cli"]

    def ogmem(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *argv, "--db", mdb], capture_output=True, text=True, timeout=60)

    listed = ogmem("memories", "list", *ADA_ARGS, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(m["content"] for m in json.loads(listed.stdout)) == contents(mdb, ADA)
    refused = ogmem("forget-user", *ADA_ARGS)  # stdin is no terminal here
    assert refused.returncode == 2 and "without --yes" in one_error_line(refused.stderr)
    forgot = ogmem("forget-user", *ADA_ARGS, "--yes")
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stdout.strip().startswith("deleted 2 sessions and 4 memories of user 'ada'")
    with SessionManager(mdb) as manager:
        assert_only_bob_is_left(manager)


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(postgres_schema: str) -> Iterator[tuple[str, str]]:
    """(dsn, schema): a PostgreSQL schema holding the memories and sessions of ``populate``."""
    from ogmem_memory.stores.postgres import PostgresStore

    dsn = os.environ["OGMEM_TEST_POSTGRES_DSN"]
    with SessionManager(PostgresStore(dsn, schema=postgres_schema), config=LOW) as manager:
        populate(manager)
    yield dsn, postgres_schema


def pg_manager(dsn: str, schema: str) -> SessionManager:
    from ogmem_memory.stores.postgres import PostgresStore

    return SessionManager(PostgresStore(dsn, schema=schema))


def test_postgres_list_search_delete(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    where = ("--db", dsn, "--schema", schema)
    code, out = run("memories", "list", *ADA_ARGS, "--format", "json", *where)
    assert code == 0
    listed = json.loads(out)
    assert sorted(m["content"] for m in listed) == [
        "User lives in Lisbon.",
        "User prefers tea over coffee.",
        "User's name is Ada Lovelace.",
    ]
    code, out = run("memories", "search", "where does she live", *ADA_ARGS, *where)
    assert code == 0 and out.splitlines()[1].endswith("User lives in Lisbon.")
    (lisbon,) = [m["memory_id"] for m in listed if "Lisbon" in m["content"]]
    code, out = run("memories", "delete", lisbon, *ADA_ARGS, "--yes", *where)
    assert code == 0 and out.startswith(f"deleted memory {lisbon} of user 'ada'")
    with pg_manager(dsn, schema) as manager:
        assert sorted(m.content for m in manager.list_memories(ADA)) == [
            "User prefers tea over coffee.",
            "User's name is Ada Lovelace.",
        ]
    code, _ = run("memories", "delete", lisbon, *ADA_ARGS, "--yes", *where)
    assert code == 2


def test_postgres_forget_user(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    code, out = run("forget-user", *ADA_ARGS, "--yes", "--db", dsn, "--schema", schema)
    assert code == 0
    assert out.strip() == (
        f"deleted 2 sessions and 4 memories of user 'ada' (account 'acme') from {dsn} (schema {schema})"
    )
    with pg_manager(dsn, schema) as manager:
        assert_only_bob_is_left(manager)


def test_postgres_schema_without_ogmem_data_creates_nothing(
    pg: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    dsn, schema = pg
    missing = f"{schema}_none"
    try:
        for command in COMMANDS:
            assert main([*command.split(), "--db", dsn, "--schema", missing]) == 2
            assert (
                one_error_line(capsys.readouterr().err) == f"error: no ogmem data in {dsn} (schema {missing})"
            )
        with psycopg.connect(dsn) as conn:
            assert (
                conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (missing,)).fetchone() is None
            )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{missing}" CASCADE')
