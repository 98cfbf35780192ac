"""What an in-flight commit or merge on PostgreSQL lets other writers of its session do.

Writers waiting for a commit (which holds the session row from before its flip) land after
it, a retry of a message being flipped included, with no deadlock; nothing of a stalled
commit shows before it ends. A merge holds the session row FOR KEY SHARE only: appends go on
meanwhile, and archive changes wait for it. Each test stalls the commit or merge on a row
lock held by another transaction, then checks what the other writers can do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ogmem_memory.models import RequestContext
from ogmem_memory.stores.postgres import PostgresStore
from ogmem_memory.testing.conformance import archive, msg
from tests.conftest import postgres_dsn_or_skip

pytestmark = pytest.mark.postgres

ALICE = RequestContext(account_id="acme", user_id="alice")
STALLED = "ogmem-stalled"  # application_name of the store whose commit is stalled


@pytest.fixture
def dsn() -> str:
    return postgres_dsn_or_skip()


@pytest.fixture
def stores(dsn: str, postgres_schema: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    stalled = PostgresStore(dsn, schema=postgres_schema, application_name=STALLED, timeout=30)
    other = PostgresStore(dsn, schema=postgres_schema, timeout=5)
    try:
        yield stalled, other
    finally:
        stalled.close()
        other.close()


def _table(schema: str, name: str) -> sql.Composable:
    return sql.Identifier(schema, name)


def _waiting(dsn: str, application_name: str = STALLED) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchall()
    return bool(rows)


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = call()
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_writers_waiting_for_a_commit_land_after_it_without_deadlock(
    dsn: str, postgres_schema: str, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    stalled, other = stores
    stalled.bind_session("s", ALICE)
    ids = [m.id for m in stalled.append_messages("s", [msg(f"message {i}") for i in range(5)])]
    with psycopg.connect(dsn) as locker:  # holds the last flipped message's row: the flip waits
        locker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE session_id = 's' AND id = %s FOR UPDATE").format(
                _table(postgres_schema, "ogmem_messages")
            ),
            (ids[3],),
        )
        committing, outcome = _in_thread(
            lambda: stalled.commit_archive("s", archive("s", 1, 4, "s-a1"), ids[:4])
        )
        _wait_until(lambda: _waiting(dsn), "the commit to wait for the message row")
        # an append, and a retry of a message being flipped, wait for the session row
        appending, appended = _in_thread(lambda: other.append_messages("s", [msg("while committing")]))
        retrying, retried = _in_thread(lambda: other.append_messages("s", [replace(msg("x"), id=ids[1])]))
        time.sleep(0.3)
        assert committing.is_alive() and appending.is_alive() and retrying.is_alive()
        locker.rollback()
    for thread in (committing, appending, retrying):
        thread.join(20)
        assert not thread.is_alive()
    for result in (outcome, appended, retried):
        assert "error" not in result, result
    [new] = appended["result"]
    [again] = retried["result"]
    assert new.seq == 6
    assert (again.id, again.seq, again.content) == (ids[1], 2, "message 1")  # the stored one
    assert [m.status for m in other.list_messages("s")] == ["archived"] * 4 + ["active"] * 2


def test_a_stalled_commit_keeps_its_effects_together(
    dsn: str, postgres_schema: str, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    stalled, other = stores
    stalled.bind_session("s", ALICE)
    ids = [m.id for m in stalled.append_messages("s", [msg(f"message {i}") for i in range(4)])]
    head_before = stalled.head("s")
    assert head_before is not None
    with psycopg.connect(dsn) as locker:
        locker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE session_id = 's' AND id = %s FOR UPDATE").format(
                _table(postgres_schema, "ogmem_messages")
            ),
            (ids[2],),
        )
        committing, outcome = _in_thread(
            lambda: stalled.commit_archive("s", archive("s", 1, 3, "s-a1"), ids[:3])
        )
        _wait_until(lambda: _waiting(dsn), "the commit to wait for the message row")
        # nothing of the commit is visible before it ends: version, archive and flips together
        record = other.get_session_record("s")
        assert record is not None and record.archive_version == head_before.archive_version
        assert record.commit_count == 0 and other.list_archives("s") == []
        assert [m.status for m in other.list_messages("s")] == ["active"] * 4
        locker.rollback()
    committing.join(20)
    assert "error" not in outcome, outcome
    record = other.get_session_record("s")
    assert record is not None and record.commit_count == 1
    assert record.archive_version == head_before.archive_version + 1
    assert [m.status for m in other.list_messages("s")] == ["archived"] * 3 + ["active"]
    assert [a.archive_id for a in other.list_archives("s")] == ["s-a1"]


def test_appends_go_on_while_a_merge_marks_its_sources(
    dsn: str, postgres_schema: str, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    stalled, other = stores
    stalled.bind_session("s", ALICE)
    ids = [m.id for m in stalled.append_messages("s", [msg(f"message {i}") for i in range(4)])]
    stalled.commit_archive("s", archive("s", 1, 2, "s-a1"), ids[:2])
    stalled.commit_archive("s", archive("s", 3, 4, "s-a2"), ids[2:])
    merged = replace(archive("s", 1, 4, "s-m1"), message_count=4)
    with psycopg.connect(dsn) as locker:
        locker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE session_id = 's' AND archive_id = 's-a2' FOR UPDATE").format(
                _table(postgres_schema, "ogmem_archives")
            )
        )
        merging, outcome = _in_thread(lambda: stalled.merge_archives("s", merged, ["s-a1", "s-a2"]))
        _wait_until(lambda: _waiting(dsn), "the merge to wait for the archive row")
        began = time.monotonic()
        other.append_messages("s", [msg("while merging")])
        assert time.monotonic() - began < 3, "the append waited for the merge"
        # changing an archive waits for the merge (FOR UPDATE) instead of deadlocking with it
        deleting, deleted = _in_thread(lambda: other.delete_archive("s", "s-a1"))
        time.sleep(0.3)
        assert merging.is_alive() and deleting.is_alive()
        locker.rollback()
    for thread in (merging, deleting):
        thread.join(20)
        assert not thread.is_alive()
    assert "error" not in outcome, outcome
    assert deleted == {"result": True}
    assert [a.archive_id for a in other.list_archives("s")] == ["s-m1"]
    assert {a.archive_id: a.merged_into for a in other.list_archives("s", include_merged=True)} == {
        "s-m1": "",
        "s-a2": "s-m1",
    }
