"""PostgresStore: the conformance suite plus what is specific to PostgreSQL.

Multi-process races, SIGKILL and server faults live in ``test_postgres_processes.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ogmem_memory.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidInputError,
    SchemaVersionError,
    StoreError,
)
from ogmem_memory.models import RequestContext
from ogmem_memory.stores import SessionStore, open_store
from ogmem_memory.stores.base import SessionStore as BaseStore
from ogmem_memory.stores.postgres import POSTGRES_MIGRATIONS, PostgresStore
from ogmem_memory.testing import StoreConformance
from ogmem_memory.testing.conformance import archive, msg
from tests.conftest import make_store, postgres_dsn_or_skip

pytestmark = pytest.mark.postgres

ALICE = RequestContext(account_id="acme", user_id="alice")
BOB = RequestContext(account_id="acme", user_id="bob")
ALICE_ELSEWHERE = RequestContext(account_id="globex", user_id="alice")


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    with make_store("postgres", tmp_path, request) as s:
        yield s


@pytest.fixture
def dsn() -> str:
    return postgres_dsn_or_skip()


def _versions(dsn: str, schema: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT version FROM {} ORDER BY version").format(
            sql.Identifier(schema, "ogmem_migrations")
        )
        return [r[0] for r in conn.execute(query).fetchall()]


class TestPostgresConformance(StoreConformance):
    """The shared suite, unchanged, on PostgresStore."""


# -- migrations ----------------------------------------------------------------


def test_migrations_are_idempotent_and_recorded(dsn: str, postgres_schema: str) -> None:
    with PostgresStore(dsn, schema=postgres_schema) as first:
        first.setup()  # again: a no-op
        first.bind_session("s", ALICE)
        first.append_messages("s", [msg("kept across setups")])
    with PostgresStore(dsn, schema=postgres_schema) as second:  # a new process would do this
        assert [m.content for m in second.list_messages("s")] == ["kept across setups"]
    assert _versions(dsn, postgres_schema) == list(range(1, len(POSTGRES_MIGRATIONS) + 1))


def test_migrations_from_four_threads_run_once(dsn: str, postgres_schema: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def migrate() -> None:
        s = PostgresStore(dsn, schema=postgres_schema)
        try:
            barrier.wait()
            s.setup()
        except BaseException as exc:
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _versions(dsn, postgres_schema) == list(range(1, len(POSTGRES_MIGRATIONS) + 1))


def test_newer_schema_version_raises(dsn: str, postgres_schema: str) -> None:
    PostgresStore(dsn, schema=postgres_schema).setup()
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(
                sql.Identifier(postgres_schema, "ogmem_migrations")
            ),
            (len(POSTGRES_MIGRATIONS) + 1,),
        )
    newer = PostgresStore(dsn, schema=postgres_schema)
    with pytest.raises(SchemaVersionError):
        newer.setup()
    with pytest.raises(SchemaVersionError):  # lazily, on first use, too
        newer.get_session_record("s")
    newer.close()


def test_schema_name_is_quoted_as_an_identifier(dsn: str) -> None:
    schema = f'odd "Schema"; DROP TABLE x; -- {uuid.uuid4().hex[:6]}'
    try:
        with PostgresStore(dsn, schema=schema) as s:
            s.bind_session("s", ALICE)
            assert s.append_messages("s", [msg("in an odd schema")])[0].seq == 1
        with psycopg.connect(dsn) as conn:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        assert found is not None
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- construction ----------------------------------------------------------------


def test_open_store_returns_postgres_store(dsn: str, postgres_schema: str) -> None:
    s = open_store(dsn)
    assert isinstance(s, PostgresStore) and s.dsn == dsn and s.schema == "public"
    assert isinstance(open_store(dsn.replace("postgresql://", "postgresql+psycopg://", 1)), PostgresStore)
    with PostgresStore(dsn, schema=postgres_schema) as direct:
        direct.bind_session("s", ALICE)
        assert direct.get_session_record("s") is not None


def test_constructor_does_no_io() -> None:
    started = time.monotonic()
    s = PostgresStore("postgresql://nobody:secret@127.0.0.1:1/nowhere", timeout=1)
    assert time.monotonic() - started < 0.5
    assert "secret" not in repr(s)
    with pytest.raises(StoreError):
        s.setup()
    with pytest.raises(StoreError):
        s.bind_session("s", ALICE)
    s.close()


def test_invalid_options_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        PostgresStore()
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://x/y", schema="")
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://x/y", min_size=5, max_size=2)
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://x/y", timeout=0)


def test_ready_pool_is_used_and_left_open(dsn: str, postgres_schema: str) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(dsn, kwargs={"autocommit": True}, min_size=1, max_size=2) as pool:
        with PostgresStore(pool=pool, schema=postgres_schema) as s:
            s.bind_session("s", ALICE)
            assert s.append_messages("s", [msg("via a ready pool")])[0].seq == 1
        assert not pool.closed
        with pool.connection() as conn:
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(postgres_schema, "ogmem_messages"))
            ).fetchone()
        assert count == (1,)


# -- values are data, never SQL ----------------------------------------------------


def test_sql_looking_ids_and_content_are_stored_verbatim(store: SessionStore) -> None:
    nasty_ids = ["'; DROP TABLE ogmem_sessions; --", 'x") OR 1=1 --', "%s %(n)s {schema} $1 \\"]
    contents = [
        "Robert'); DROP TABLE students;--",
        "$$ ; SELECT pg_sleep(10); $$",
        "%s %% %(sid)s {messages} {} \\x00 \\ '' \"",
        "alpha' & !beta | gamma:* <-> (delta",
    ]
    for sid in nasty_ids:
        store.bind_session(sid, ALICE)
        sent = [msg(c) for c in contents]
        store.append_messages(sid, sent)
        assert [m.content for m in store.list_messages(sid)] == contents
        store.commit_archive(sid, archive(sid, 1, 2, "a'; --"), [m.id for m in sent[:2]])
        assert store.read_archive(sid, "a'; --") is not None
        store.save_state(sid, {"'; DROP": "{x}"})
        assert store.load_state(sid) == {"'; DROP": "{x}"}
    assert sorted(r.session_id for r in store.list_sessions(ALICE.owner)) == sorted(nasty_ids)
    # tsquery operators in a query are data too
    found = store.search_messages("alpha' & !beta | gamma:* <-> (delta", session_id=nasty_ids[0], status=None)
    assert [m.content for m in found] == [contents[3]]
    assert (
        store.search_messages("'); DROP TABLE students;--", session_id=nasty_ids[0])[0].content == contents[0]
    )


def test_search_matches_names_numbers_and_unicode(store: SessionStore) -> None:
    store.bind_session("s", ALICE)
    sent = [msg("Invoice INV-2024-0042 for Zoë, total 1299 EUR, version 3.5"), msg("你好 世界"), msg("other")]
    store.append_messages("s", sent)
    store.commit_archive("s", archive("s", 1, 3), [m.id for m in sent])
    assert [m.content for m in store.search_messages("what about 0042?", session_id="s")] == [sent[0].content]
    assert [m.content for m in store.search_messages("zoë 1299", session_id="s")] == [sent[0].content]
    assert [m.content for m in store.search_messages("version 3.5", session_id="s")] == [sent[0].content]
    assert [m.content for m in store.search_messages("世界", session_id="s")] == [sent[1].content]


def test_unstorable_text_is_invalid_input_and_changes_nothing(store: SessionStore) -> None:
    store.bind_session("s", ALICE)
    with pytest.raises(InvalidInputError):
        store.append_messages("s", [msg("fine"), msg("nul \x00 byte")])
    with pytest.raises(InvalidInputError):
        store.append_messages("s", [msg("lone surrogate \udc80")])
    with pytest.raises(InvalidInputError):
        store.append_messages("s", [msg("not json", payload={"x": object()})])
    assert store.list_messages("s") == []
    head = store.head("s")
    assert head is not None and head.last_seq == 0
    # JSON text, not JSONB: key order and NUL escapes in payloads round-trip exactly
    payload = {"z": 1, "a": {"nul": "\x00", "y": [3, 2]}}
    store.append_messages("s", [msg("ok", payload=payload)])
    stored = store.list_messages("s")[0].payload
    assert stored == payload and list(stored or {}) == ["z", "a"]


# -- identity ----------------------------------------------------------------------


def test_identity_is_enforced_in_every_path(store: SessionStore) -> None:
    store.bind_session("alice-chat", ALICE)
    store.append_messages("alice-chat", [msg("alice's secret mango")])
    store.bind_session("bob-chat", BOB)
    store.append_messages("bob-chat", [msg("bob's mango")])
    for intruder in (BOB, ALICE_ELSEWHERE):  # another user, or the same user name in another account
        with pytest.raises(AccessDeniedError):
            store.bind_session("alice-chat", intruder)
        with pytest.raises(AccessDeniedError):
            store.search_messages("mango", session_id="alice-chat", owner=intruder.owner, status=None)
        found = store.search_messages("mango", owner=intruder.owner, status=None)
        assert all("alice" not in m.content for m in found)
    assert [r.session_id for r in store.list_sessions(ALICE.owner)] == ["alice-chat"]
    assert [r.session_id for r in store.list_sessions(BOB.owner)] == ["bob-chat"]
    assert store.list_sessions(ALICE_ELSEWHERE.owner) == []
    assert [m.content for m in store.list_messages("alice-chat")] == ["alice's secret mango"]


async def test_identity_is_enforced_by_async_methods(store: SessionStore) -> None:
    await store.abind_session("alice-chat", ALICE)
    with pytest.raises(AccessDeniedError):
        await store.abind_session("alice-chat", BOB)
    with pytest.raises(AccessDeniedError):
        await store.asearch_messages("mango", session_id="alice-chat", owner=BOB.owner)


# -- async -------------------------------------------------------------------------


def test_async_twins_are_native() -> None:
    for name in (
        "asetup",
        "abind_session",
        "aappend_messages",
        "_aappend_impl",
        "_aread_window_impl",
        "_alist_messages_impl",
        "ahead",
        "_alist_archives_impl",
        "_asearch_messages_impl",
        "aclose",
    ):  # the public a* twins of the long-signature methods call these ``_impl``s
        assert getattr(PostgresStore, name) is not getattr(BaseStore, name), name


async def test_fifty_concurrent_async_appends_get_seqs_1_to_50(dsn: str, postgres_schema: str) -> None:
    s = PostgresStore(dsn, schema=postgres_schema, max_size=8)
    await s.asetup()
    try:
        await s.abind_session("s", ALICE)
        results = await asyncio.gather(*(s.aappend_messages("s", [msg(f"task {i}")]) for i in range(50)))
        assert sorted(r[0].seq for r in results) == list(range(1, 51))
        listed = await s.alist_messages("s")
        assert [m.seq for m in listed] == list(range(1, 51))
        assert {m.content for m in listed} == {f"task {i}" for i in range(50)}
        by_id = {r[0].id: r[0].seq for r in results}
        assert all(by_id[m.id] == m.seq for m in listed)  # the seq each call returned is the stored one
        head = await s.ahead("s")
        assert head is not None and head.last_seq == 50
        assert s._pool is None  # nothing went through the sync pool / threads
    finally:
        await s.aclose()


@pytest.mark.timeout(60)
def test_async_pool_per_event_loop_and_loop_shutdown_without_aclose(dsn: str, postgres_schema: str) -> None:
    """Each ``asyncio.run`` gets its own pool, and ends cleanly even though nobody awaited aclose().

    (psycopg_pool's tasks can swallow the cancellation asyncio.run sends at exit; an open
    pool hung it within 30 loops without the fix, so this runs 20.)
    """
    s = PostgresStore(dsn, schema=postgres_schema)

    async def append(text: str) -> int:
        await s.abind_session("s", ALICE)
        return (await s.aappend_messages("s", [msg(text)]))[0].seq

    assert [asyncio.run(append(f"loop {i}")) for i in range(20)] == list(range(1, 21))
    assert [m.content for m in s.list_messages("s")] == [f"loop {i}" for i in range(20)]
    s.close()


# -- bounded calls -----------------------------------------------------------------


def test_blocked_call_fails_within_timeout(dsn: str, postgres_schema: str) -> None:
    with PostgresStore(dsn, schema=postgres_schema, timeout=1) as s:
        s.bind_session("s", ALICE)
        with psycopg.connect(dsn) as blocker:
            query = sql.SQL("SELECT 1 FROM {} WHERE session_id = 's' FOR UPDATE")
            blocker.execute(query.format(sql.Identifier(postgres_schema, "ogmem_sessions")))
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                s.append_messages("s", [msg("waits for the row lock")])
            assert time.monotonic() - started < 3
            assert isinstance(info.value.__cause__, psycopg.Error)
            blocker.rollback()
        assert s.append_messages("s", [msg("after")])[0].seq == 1  # the failed one left no trace
