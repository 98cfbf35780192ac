"""Issue 12: long-term memory of a user, extracted after commits, carried across sessions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogmem_memory import InvalidInputError, MemoryConfig, RequestContext, SessionManager
from ogmem_memory.extract import RuleBasedExtractor
from ogmem_memory.stores import InMemoryStore, SQLiteStore
from tests.conftest import postgres_dsn_or_skip

ADA = RequestContext(account_id="acme", user_id="ada.lovelace@example.com")
BOB = RequestContext(account_id="acme", user_id="bob")
SMALL = MemoryConfig(commit_token_threshold=40, commit_turn_threshold=2, keep_recent_messages=1, keep_recent_tokens=0)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionManager]:
    if request.param == "memory":
        store: Any = InMemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "lt.db")
    else:
        from ogmem_memory.stores.postgres import PostgresStore

        store = PostgresStore(postgres_dsn_or_skip(), schema=request.getfixturevalue("postgres_schema"))
    m = SessionManager(store, config=SMALL)
    yield m
    m.close()


def talk(m: SessionManager, sid: str, ctx: RequestContext, *lines: str) -> None:
    for line in lines:
        m.add_message(sid, "user", line, ctx)
        m.add_message(sid, "assistant", "Got it.", ctx)
    m.add_message(sid, "user", "Anything else for today?", ctx)
    m.add_message(sid, "assistant", "Nothing else.", ctx)
    m.commit(sid, ctx, wait=True)
    m.wait_for_tasks()


def memory_text(m: SessionManager, sid: str, ctx: RequestContext, query: str | None = None) -> str:
    return "\n".join(m.get_context(sid, 2000, ctx, query=query).memories)


def test_a_fact_of_session_one_is_in_session_two_and_never_another_users(manager: SessionManager) -> None:
    talk(manager, "ada-1", ADA, "I live in Lisbon.", "My cat is called Whiskers.")
    manager.add_message("ada-2", "user", "Hello again!", ADA)
    seen = memory_text(manager, "ada-2", ADA, query="Where do I live?")
    assert "Lisbon" in seen
    assert "Whiskers" in memory_text(manager, "ada-2", ADA, query="my cat")
    assert "Lisbon" in manager.get_context("ada-2", 2000, ADA).to_text()  # the profile, with no query
    manager.add_message("bob-1", "user", "Hello!", BOB)
    assert memory_text(manager, "bob-1", BOB, query="Where do I live?") == ""
    assert manager.list_memories(BOB) == []


def test_duplicates_do_not_multiply_and_a_changed_fact_replaces_the_old(manager: SessionManager) -> None:
    for i in range(3):
        talk(manager, f"s{i}", ADA, "I like Python.")
    likes = [m for m in manager.list_memories(ADA) if "Python" in m.content]
    assert len(likes) == 1
    talk(manager, "s3", ADA, "I live in Lisbon.")
    talk(manager, "s4", ADA, "I moved to Porto.")
    places = [m for m in manager.list_memories(ADA) if m.key == "user.location"]
    assert len(places) == 1 and "Porto" in places[0].content
    assert any("Lisbon" in h for h in places[0].history)
    seen = memory_text(manager, "s4", ADA, query="where do I live")
    assert "Porto" in seen and "Lisbon" not in seen


def test_deleting_a_memory_removes_it_from_every_later_context(manager: SessionManager) -> None:
    talk(manager, "s", ADA, "My cat is called Whiskers.")
    (cat,) = [m for m in manager.list_memories(ADA) if "Whiskers" in m.content]
    assert manager.delete_memory(ADA, cat.memory_id)
    assert "Whiskers" not in memory_text(manager, "s", ADA, query="my cat")
    assert manager.delete_memory(ADA, cat.memory_id) is False
    edited = None
    talk(manager, "t", ADA, "I live in Lisbon.")
    (home,) = [m for m in manager.list_memories(ADA) if m.key == "user.location"]
    edited = manager.edit_memory(ADA, home.memory_id, "User lives in Madrid.")
    assert "Madrid" in memory_text(manager, "t", ADA, query="where do I live")
    assert edited.history[-1] == home.content
    with pytest.raises(InvalidInputError):
        manager.edit_memory(ADA, home.memory_id, "")
    assert [m.memory_id for m in manager.search_memories(ADA, "Madrid")] == [home.memory_id]


def test_extraction_failure_loses_nothing_and_is_retried(tmp_path: Path) -> None:
    class Flaky(RuleBasedExtractor):
        failing = True

        def extract(self, messages: Any, *, session_summary: str = "") -> Any:
            if self.failing:
                raise RuntimeError("extractor down")
            return super().extract(messages, session_summary=session_summary)

    flaky = Flaky()
    with SessionManager(f"sqlite:///{tmp_path / 'f.db'}", config=SMALL, extractor=flaky) as m:
        talk(m, "s", ADA, "I live in Lisbon.")
        assert m.list_memories(ADA) == []
        assert len(m.get_history("s", ADA)) == 4  # nothing lost
        buf = m.get_or_create("s", ADA)
        assert buf.extraction_pending and buf.extracted_seq == 0
        assert m.evict_idle_sessions(1, now_iso="2100-01-01T00:00:00+00:00") == []  # kept: work pending
        flaky.failing = False
        talk(m, "s", ADA, "My cat is called Whiskers.")  # the next commit retries the earlier turns too
        contents = " ".join(x.content for x in m.list_memories(ADA))
        assert "Lisbon" in contents and "Whiskers" in contents
        assert not m.get_or_create("s", ADA).extraction_pending


def test_commit_session_has_the_seeds_result_shape(manager: SessionManager) -> None:
    result = manager.commit_session(
        [{"role": "user", "content": "I work at Acme as a nurse.", "id": "m1"}], ADA, confidence_threshold=0.5
    )
    assert result["candidates_extracted"] >= 1 and result["writes_completed"] >= 1
    assert {p["action"] for p in result["plans"]} <= {"create", "merge", "skip"}
    assert all(p["target_uri"].startswith("ogmem://memories/") for p in result["plans"] if p["action"] != "skip")
    again = manager.commit_session([{"role": "user", "content": "I work at Acme as a nurse."}], ADA)
    assert all(p["action"] in ("merge", "skip") for p in again["plans"])
    with pytest.raises(InvalidInputError):
        manager.commit_session([{"role": "user", "content": "x"}], None)  # type: ignore[arg-type]


def test_on_demand_extraction_reads_active_messages_once(manager: SessionManager) -> None:
    manager.add_message("s", "user", "My name is Ada.", ADA)
    first = manager.extract_memories("s", ADA)
    assert first["writes_completed"] >= 1
    assert manager.extract_memories("s", ADA)["candidates_extracted"] == 0  # the watermark moved


def _sqlite_rows_mentioning(path: Path, needles: list[str]) -> dict[str, int]:
    conn = sqlite3.connect(path)
    found: dict[str, int] = {}
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            text = " ".join(str(v) for v in row)
            if any(n in text for n in needles):
                found[table] = found.get(table, 0) + 1
    conn.close()
    return found


def test_forget_user_leaves_no_row_behind_in_any_sqlite_table(tmp_path: Path) -> None:
    path = tmp_path / "forget.db"
    secret = "Zanzibarian"
    with SessionManager(f"sqlite:///{path}", config=SMALL) as m:
        for sid in ("ada-1", "ada-2"):
            talk(m, sid, ADA, f"I live in {secret}.", f"My cat is called {secret}cat.")
        talk(m, "bob-1", BOB, "I live in Oslo.")
        assert _sqlite_rows_mentioning(path, [secret, ADA.user_id])
        result = m.forget_user(ADA)
        assert result["sessions"] == 2 and result["memories"] >= 1
        assert m.list_memories(ADA) == [] and m.list_sessions(ADA) == []
        assert m.list_sessions(BOB) and m.list_memories(BOB)
    assert _sqlite_rows_mentioning(path, [secret, ADA.user_id, "ada.lovelace"]) == {}


def test_forget_user_on_postgres_scans_every_table(postgres_schema: str) -> None:
    import psycopg
    from psycopg import sql

    from ogmem_memory.stores.postgres import PostgresStore

    dsn = postgres_dsn_or_skip()
    secret = "Zanzibarian"
    with SessionManager(PostgresStore(dsn, schema=postgres_schema), config=SMALL) as m:
        talk(m, "ada-1", ADA, f"I live in {secret}.")
        talk(m, "bob-1", BOB, "I live in Oslo.")
        m.forget_user(ADA)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (postgres_schema,)
            )
        ]
        assert len(tables) >= 5
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(postgres_schema, table)))
            leaked = [r[0] for r in rows if secret in r[0] or "ada.lovelace" in r[0]]
            assert leaked == [], table


def test_foreign_items_in_the_memory_namespace_never_break_a_users_memories(tmp_path: Path) -> None:
    from ogmem_memory.longterm import memory_namespace
    from ogmem_memory.stores.items import PutItem, item_store_for

    with SessionManager(f"sqlite:///{tmp_path / 'x.db'}", config=SMALL) as m:
        talk(m, "s", ADA, "I live in Lisbon.")
        items = item_store_for(m.store)
        ns = memory_namespace(ADA)
        items.batch([PutItem(ns, "raw", {"text": "not a memory"}), PutItem((*ns, "notes"), "n", {"text": "t"})])
        assert any("Lisbon" in r.content for r in m.list_memories(ADA))
        assert "Lisbon" in memory_text(m, "s", ADA, query="where do I live")
        talk(m, "s", ADA, "My cat is called Whiskers.")  # extraction still works
        assert any("Whiskers" in r.content for r in m.list_memories(ADA))
