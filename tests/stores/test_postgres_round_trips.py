"""PostgresStore's few-round-trip paths: snapshot reads, one-statement commits, VALUES
appends, recall scoped to the session's rows, and the scope lexeme the server computes."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from ogmem_memory.errors import AccessDeniedError, ConcurrencyError, OgmemError, SessionNotFoundError
from ogmem_memory.models import RequestContext
from ogmem_memory.stores import postgres_sql as q
from ogmem_memory.stores.postgres import PostgresStore
from ogmem_memory.testing.conformance import archive, msg
from tests.conftest import postgres_dsn_or_skip

pytestmark = pytest.mark.postgres

ALICE = RequestContext(account_id="acme", user_id="alice")
BOB = RequestContext(account_id="acme", user_id="bob")


@pytest.fixture
def dsn() -> str:
    return postgres_dsn_or_skip()


def _archived_session(store: PostgresStore, sid: str, owner: RequestContext, texts: list[str]) -> list[str]:
    store.bind_session(sid, owner)
    stored = store.append_messages(sid, [msg(t) for t in texts])
    ids = [m.id for m in stored]
    store.commit_archive(sid, archive(sid, 1, len(ids), f"{sid}-a1"), ids[:-1])  # the last stays active
    return ids


def test_snapshot_reads_sync_and_async_agree_and_check_the_owner(dsn: str, postgres_schema: str) -> None:
    store = PostgresStore(dsn, schema=postgres_schema, max_size=1)
    try:
        _archived_session(store, "s", ALICE, ["the Lisbon trip", "the hotel in Porto", "the invoice"])
        window = store.read_window("s", owner=ALICE.owner)
        assert window is not None and window.full
        assert [m.content for m in window.messages] == ["the invoice"]
        assert [a.archive_id for a in window.archives] == ["s-a1"]
        assert [m.content for m in store.list_messages("s", owner=ALICE.owner)] == [
            "the Lisbon trip",
            "the hotel in Porto",
            "the invoice",
        ]
        assert [a.archive_id for a in store.list_archives("s", owner=ALICE.owner)] == ["s-a1"]
        full = store.read_archive("s", "s-a1", owner=ALICE.owner)
        assert full is not None and [m.content for m in full.messages] == [
            "the Lisbon trip",
            "the hotel in Porto",
        ]
        assert [
            m.content for m in store.search_messages("Porto hotel", session_id="s", owner=ALICE.owner)
        ] == ["the hotel in Porto"]
        assert [m.seq for m in store.list_messages_by_seq("s", [3, 1], owner=ALICE.owner)] == [1, 3]
        for call in (
            lambda: store.read_window("s", owner=BOB.owner),
            lambda: store.list_messages("s", owner=BOB.owner),
            lambda: store.list_archives("s", owner=BOB.owner),
            lambda: store.read_archive("s", "s-a1", owner=BOB.owner),
            lambda: store.search_messages("Porto", session_id="s", owner=BOB.owner),
            lambda: store.list_messages_by_seq("s", [1], owner=BOB.owner),
        ):
            with pytest.raises(AccessDeniedError):
                call()
        assert store.read_window("missing", owner=ALICE.owner) is None
        assert store.list_messages("missing", owner=ALICE.owner) == []
        assert store.read_archive("s", "no-such-archive", owner=ALICE.owner) is None
        assert store.search_messages("Porto", session_id="missing", owner=ALICE.owner) == []

        async def twins() -> None:
            awindow = await store.aread_window("s", owner=ALICE.owner)
            assert awindow == window
            assert await store.alist_messages("s", owner=ALICE.owner) == store.list_messages("s")
            assert await store.alist_archives("s", owner=ALICE.owner) == store.list_archives("s")
            found = await store.asearch_messages("Porto hotel", session_id="s", owner=ALICE.owner)
            assert [m.content for m in found] == ["the hotel in Porto"]
            with pytest.raises(AccessDeniedError):
                await store.alist_messages("s", owner=BOB.owner)
            with pytest.raises(AccessDeniedError):
                await store.aread_window("s", owner=BOB.owner)
            await store.aclose()

        asyncio.run(twins())
    finally:
        store.close()


def test_an_error_inside_a_snapshot_leaves_the_pooled_connection_clean(
    dsn: str, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="psycopg")
    with PostgresStore(dsn, schema=postgres_schema, max_size=1) as store:
        store.bind_session("s", ALICE)
        store.append_messages("s", [msg("one"), msg("two")])
        for k in range(3):  # a negative LIMIT fails on the server, inside the snapshot
            with pytest.raises(OgmemError):
                store.list_messages("s", limit=-1, owner=ALICE.owner)
            # the one pooled connection is idle again: reads and writes work, nothing leaked
            assert [m.content for m in store.list_messages("s", owner=ALICE.owner)] == ["one", "two"] + [
                "more"
            ] * k
            assert store.append_messages("s", [msg("more")])[0].seq == 3 + k

        async def twin() -> None:
            with pytest.raises(OgmemError):
                await store.alist_messages("s", limit=-1, owner=ALICE.owner)
            assert len(await store.alist_messages("s", owner=ALICE.owner)) == 5
            await store.aclose()

        asyncio.run(twin())
    # the store ended its failed transaction itself: the pool never had to roll one back
    assert not [r for r in caplog.records if "rolling back" in r.getMessage()], caplog.records


@pytest.mark.parametrize("count", [2, q.FEW_MAX, q.FEW_MAX + 1])
def test_batches_of_every_size_keep_order_payloads_and_times(
    dsn: str, postgres_schema: str, count: int
) -> None:
    when = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
    batch = [
        msg(
            f"m{i}",
            role="user" if i % 2 == 0 else "assistant",
            payload={"i": i, "k": "\u00e9"} if i % 3 else None,
            created_at=when + timedelta(seconds=i),
        )
        for i in range(count)
    ]
    with PostgresStore(dsn, schema=postgres_schema) as store:
        store.bind_session("s", ALICE)
        store.append_messages("s", [msg("first")])
        result = store.append("s", batch, owner=ALICE.owner)
        assert [m.seq for m in result.messages] == list(range(2, count + 2))
        assert result.record.last_seq == count + 1 and result.record.message_count == count + 1
        listed = store.list_messages("s")[1:]
        assert [(m.id, m.role, m.content, m.payload, m.created_at, m.tokens) for m in listed] == [
            (m.id, m.role, m.content, m.payload, m.created_at, m.tokens) for m in batch
        ]
        with pytest.raises(AccessDeniedError):
            store.append("s", [msg("x"), msg("y")], owner=BOB.owner)
        assert len(store.list_messages("s")) == count + 1  # nothing of the refused batch


def test_a_commit_is_one_statement_that_writes_all_or_nothing(dsn: str, postgres_schema: str) -> None:
    with PostgresStore(dsn, schema=postgres_schema) as store:
        ids = _archived_session(store, "s", ALICE, ["a", "b", "c", "d"])
        head = store.head("s")
        assert head is not None
        # one of the ids is archived already: the whole commit fails, nothing of it stays
        with pytest.raises(ConcurrencyError):
            store.commit_archive("s", archive("s", 1, 4, "late"), [ids[0], ids[3]])
        assert store.head("s") == head
        assert [m.status for m in store.list_messages("s")] == ["archived"] * 3 + ["active"]
        assert [a.archive_id for a in store.list_archives("s", include_merged=True)] == ["s-a1"]
        record = store.get_session_record("s")
        assert record is not None and record.commit_count == 1
        with pytest.raises(ConcurrencyError):  # another incarnation's epoch
            store.commit_archive("s", archive("s", 4, 4, "x"), [ids[3]], epoch="not-this-one")
        with pytest.raises(SessionNotFoundError):
            store.commit_archive("missing", archive("missing", 1, 1, "y"), ["nope"])
        with pytest.raises(ConcurrencyError):  # the archive id is taken
            store.commit_archive("s", archive("s", 4, 4, "s-a1"), [ids[3]], epoch=head.epoch)
        assert store.head("s") == head
        done = store.commit_archive("s", archive("s", 4, 4, "s-a2"), [ids[3]], epoch=head.epoch)
        assert done.archive_id == "s-a2"
        assert [m.archive_id for m in store.list_messages("s")] == ["s-a1"] * 3 + ["s-a2"]


def test_the_scope_lexemes_written_by_the_server_are_the_ones_older_versions_wrote(
    dsn: str, postgres_schema: str
) -> None:
    """Rows archived by an older ogmem carry lexemes computed in Python; the server's md5 must
    give the same ones (and owner search find both), also for non-ASCII owners."""
    owner = RequestContext(account_id="\u00e1cme", user_id="zo\u00eb \u6771\u4eac")
    with PostgresStore(dsn, schema=postgres_schema) as store:
        _archived_session(store, "s\u00e9", owner, ["Porto hotel booking", "the Lisbon trip", "open"])
        expected_owner = "u" + hashlib.md5(f"{owner.account_id}\x01{owner.user_id}".encode()).hexdigest()
        expected_session = "s" + hashlib.md5("s\u00e9".encode()).hexdigest()
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT search @@ %s::tsquery AND search @@ %s::tsquery FROM {} WHERE status = 'archived'"
                ).format(sql.Identifier(postgres_schema, "ogmem_messages")),
                (expected_owner, expected_session),
            ).fetchall()
        assert rows == [(True,), (True,)]
        found = store.search_messages("Porto booking", owner=owner.owner)
        assert [m.content for m in found] == ["Porto hotel booking"]
        assert store.search_messages("Porto booking", owner=ALICE.owner) == []


def test_session_recall_reads_that_sessions_rows_not_the_search_index(dsn: str, postgres_schema: str) -> None:
    """The lexical search of one session scans that session's archived rows (its range of a
    B-tree), so other tenants' rows, however many, are never read."""
    with PostgresStore(dsn, schema=postgres_schema) as store:
        for k in range(30):
            _archived_session(
                store, f"other-{k}", BOB, [f"the invoice and the Porto hotel {i}" for i in range(20)]
            )
        _archived_session(store, "s", ALICE, ["the Porto hotel", "the invoice", "open"])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(postgres_schema, "ogmem_messages")))
            query = store._q(q.SESSION_TERM_HITS)
            params = (["porto", "invoice"], ["'porto'", "'invoice'"], 200, "s")
            plan = "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + query, params).fetchall())  # type: ignore[operator]
            assert "ogmem_messages_search" not in plan, plan
            assert "session_id = 's'" in plan, plan
            counted = {term: len(seqs) for term, seqs in conn.execute(query, params).fetchall()}
        assert counted == {"porto": 1, "invoice": 1}  # the session's own counts, not the database's
        assert [m.content for m in store.search_messages("Porto invoice", session_id="s")] in (
            ["the Porto hotel", "the invoice"],
            ["the invoice", "the Porto hotel"],
        )
