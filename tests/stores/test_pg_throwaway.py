"""The throwaway PostgreSQL of tests/pg_throwaway.py: private, controllable, torn down.

Destructive tests rely on it touching nothing but its own temporary directory, so
these tests check what it listens on, that its controls act on it alone, and that
committed data behaves as on a real server across restarts and crashes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

if TYPE_CHECKING:
    # Annotations only: importing the plugin module before pytest registers it below
    # would stop its asserts from being rewritten (a warning, hence an error).
    from tests.pg_throwaway import StopMode, ThrowawayPostgres

pytestmark = pytest.mark.postgres
pytest_plugins = ["tests.pg_throwaway"]


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier("notes"))


def _write_note(dsn: str, schema: str, note: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (note TEXT)").format(_table(schema)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(_table(schema)), (note,))


def _notes(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("SELECT note FROM {} ORDER BY note").format(_table(schema))).fetchall()
    return [r[0] for r in rows]


def test_server_listens_only_on_a_socket_in_its_own_directory(throwaway_pg: ThrowawayPostgres) -> None:
    with psycopg.connect(throwaway_pg.dsn, autocommit=True) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'unix_socket_directories', 'data_directory', 'fsync')"
            ).fetchall()
        )
        peer = conn.execute("SELECT inet_server_addr()").fetchone()
    assert settings["listen_addresses"] == ""  # no TCP: nothing else can reach it, no port to collide on
    base = throwaway_pg.base.resolve()
    assert Path(settings["unix_socket_directories"]).resolve() == base / "sock"
    assert Path(settings["data_directory"]).resolve() == base / "data"
    assert settings["fsync"] == "off"
    assert peer == (None,)  # this very connection came through the unix socket


def test_restart_ends_every_session_and_keeps_committed_data(
    throwaway_pg: ThrowawayPostgres, throwaway_schema: str
) -> None:
    _write_note(throwaway_pg.dsn, throwaway_schema, "before the restart")
    with psycopg.connect(throwaway_pg.dsn, autocommit=True) as old:
        throwaway_pg.restart()
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    assert throwaway_pg.is_running()
    assert _notes(throwaway_pg.dsn, throwaway_schema) == ["before the restart"]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_stop_refuses_connections_until_start_and_loses_nothing_committed(
    throwaway_pg: ThrowawayPostgres, throwaway_schema: str, mode: StopMode
) -> None:
    """``immediate`` is a crash: the next start recovers from the WAL."""
    _write_note(throwaway_pg.dsn, throwaway_schema, f"before a {mode} stop")
    try:
        throwaway_pg.stop(mode=mode)
        assert not throwaway_pg.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(throwaway_pg.dsn, connect_timeout=2).close()
    finally:
        throwaway_pg.start()
    assert throwaway_pg.is_running()
    assert _notes(throwaway_pg.dsn, throwaway_schema) == [f"before a {mode} stop"]


def test_session_server_runs_the_pgserver_wheel_with_pgvector(throwaway_pg: ThrowawayPostgres) -> None:
    """The dev extra ships ``pgserver``; its PostgreSQL has pgvector, which issue 11's tests need."""
    assert throwaway_pg.source == "pgserver wheel"
    assert throwaway_pg.has_pgvector
    with psycopg.connect(throwaway_pg.dsn) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        row = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector").fetchone()
        conn.rollback()
    assert row == (2.0,)


def test_controls_of_one_server_leave_every_other_server_alone(throwaway_pg: ThrowawayPostgres) -> None:
    from tests.pg_throwaway import launch_or_skip

    with psycopg.connect(throwaway_pg.dsn, autocommit=True) as bystander:
        pid = bystander.execute("SELECT pg_backend_pid()").fetchone()
        second = launch_or_skip(throwaway_pg.binaries)
        try:
            assert second.dsn != throwaway_pg.dsn
            second.restart()
            second.restart(mode="immediate")
            second.stop()
            assert not second.is_running()
        finally:
            second.destroy()
        assert not second.base.exists()  # destroy leaves no data, socket or log behind
        # Same backend, never interrupted: the other server's restarts and stop did not reach it.
        assert bystander.execute("SELECT pg_backend_pid()").fetchone() == pid
    assert throwaway_pg.is_running()


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_server_that_cannot_start_skips_locally_and_fails_under_ci(
    throwaway_pg: ThrowawayPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ci: str,
    outcome: type[BaseException],
) -> None:
    from tests.pg_throwaway import launch_or_skip

    missing = dataclasses.replace(throwaway_pg.binaries, label="missing", home=tmp_path, parts=())
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"initdb|No such file") as raised:
        launch_or_skip(missing)
    assert "throwaway PostgreSQL" in str(raised.value)
