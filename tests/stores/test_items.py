"""The item store (backend of OgmemStore and of long-term memories) on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ogmem_memory.errors import ConfigError, InvalidInputError, SchemaVersionError, StoreError
from ogmem_memory.models import RequestContext, SessionMessage, new_message_id
from ogmem_memory.stores import InMemoryStore, SQLiteStore
from ogmem_memory.stores.items import (
    DeleteItem,
    GetItem,
    InMemoryItemStore,
    ItemStore,
    ListNamespaces,
    PutItem,
    SearchItems,
    check_filter,
    item_store_for,
    matches_filter,
    open_item_store,
)
from ogmem_memory.stores.items_sql import PostgresItemStore, SQLiteItemStore
from tests.conftest import postgres_dsn_or_skip

EXPIRED_AT_ONCE = 1e-9  # minutes: rounds to 0 microseconds, so the item is expired when written


def make_items(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> ItemStore:
    if kind == "memory":
        return InMemoryItemStore()
    if kind == "sqlite":
        return SQLiteItemStore(tmp_path / f"{uuid.uuid4().hex[:8]}.db")
    return PostgresItemStore(postgres_dsn_or_skip(), schema=request.getfixturevalue("postgres_schema"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def items(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ItemStore]:
    store = make_items(request.param, tmp_path, request)
    with store:
        yield store


def keys(found: list[object]) -> list[str]:
    return [item.key for item in found]  # type: ignore[attr-defined]


# -- put / get / delete -----------------------------------------------------------------------


def test_put_get_replace_keeps_created_at(items: ItemStore) -> None:
    items.put(("users", "u1"), "prefs", {"theme": "dark", "n": 1})
    first = items.get(("users", "u1"), "prefs")
    assert first is not None
    assert (first.namespace, first.key, first.value) == (("users", "u1"), "prefs", {"theme": "dark", "n": 1})
    assert first.created_at.tzinfo is not None and first.created_at == first.updated_at
    items.put(("users", "u1"), "prefs", {"theme": "light"})
    second = items.get(("users", "u1"), "prefs")
    assert second is not None and second.value == {"theme": "light"}
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert items.get(("users", "u2"), "prefs") is None
    assert items.get(("users",), "prefs") is None


def test_delete_reports_whether_the_item_existed(items: ItemStore) -> None:
    items.put(("a",), "k", {"v": 1}, vectors={"v": [1.0, 2.0]})
    assert items.delete(("a",), "k") is True
    assert items.delete(("a",), "k") is False
    assert items.get(("a",), "k") is None
    assert items.search(("a",), query_vector=[1.0, 2.0]) == []


def test_values_round_trip_as_json(items: ItemStore) -> None:
    value = {
        "unicode": "naïve 日本 🙂",
        "nested": {"list": [1, 2.5, None, True]},
        "sql": "'; DROP TABLE x; --",
    }
    items.put(("a",), "k'; --", value)
    found = items.get(("a",), "k'; --")
    assert found is not None and found.value == value


@pytest.mark.parametrize(
    "bad",
    [
        PutItem((), "k", {"v": 1}),
        PutItem(("a.b",), "k", {"v": 1}),
        PutItem(("a", ""), "k", {"v": 1}),
        PutItem(("a", 1), "k", {"v": 1}),  # type: ignore[arg-type]
        PutItem("abc", "k", {"v": 1}),  # type: ignore[arg-type]
        PutItem(("a",), "k\x00", {"v": 1}),
        PutItem(("a",), "k", {"v": float("nan")}),
        PutItem(("a",), "k", {"v": object()}),
        PutItem(("a",), "k", ["not", "a", "dict"]),  # type: ignore[arg-type]
        PutItem(("a",), "k", {"v": "\ud800"}),
        PutItem(("a",), "k", {"v": 1}, ttl_minutes=0),
        PutItem(("a",), "k", {"v": 1}, ttl_minutes=float("inf")),
        PutItem(("a",), "k", {"v": 1}, vectors={"v": [float("nan")]}),
        PutItem(("a",), "k", {"v": 1}, vectors={"v": []}),
        SearchItems(("a",), filter={"v": {"$regex": "x"}}),
        SearchItems(("a",), filter={"v": {"$in": "x"}}),
        SearchItems(("a",), limit=-1),
        ListNamespaces(max_depth=0),
    ],
)
def test_an_invalid_op_in_a_batch_changes_nothing(items: ItemStore, bad: object) -> None:
    items.put(("keep",), "k", {"original": True})
    with pytest.raises(InvalidInputError):
        items.batch([PutItem(("valid",), "k", {}), DeleteItem(("keep",), "k"), bad])  # type: ignore[list-item]
    assert items.get(("valid",), "k") is None
    kept = items.get(("keep",), "k")
    assert kept is not None and kept.value == {"original": True}


def test_a_failed_transaction_is_rolled_back(items: ItemStore) -> None:
    from datetime import UTC, datetime

    from ogmem_memory.stores.items import ItemWrite

    items.put(("a",), "keep", {"v": 1}, vectors={"v": [1.0, 0.0]})
    items.put(("a",), "gone", {"v": 2})
    now = datetime.now(UTC)
    with pytest.raises(RuntimeError, match="crash"):
        with items.transaction(write=True) as tx:
            tx.upsert(ItemWrite("a", "keep", '{"v": 99}', "", None, ()), now)
            tx.upsert(ItemWrite("a", "new", '{"v": 3}', "", None, ()), now)
            assert tx.delete("a", "gone") is True
            assert tx.delete_prefix(("a",)) == 2
            raise RuntimeError("crash between two statements")
    keep = items.get(("a",), "keep")
    assert keep is not None and keep.value == {"v": 1}
    assert items.get(("a",), "new") is None
    assert items.get(("a",), "gone") is not None
    assert keys(items.search(("a",), query_vector=[1.0, 0.0]))[0] == "keep"


def test_a_batch_reads_the_state_before_its_writes(items: ItemStore) -> None:
    items.put(("a",), "old", {"v": 0})
    results = items.batch(
        [
            PutItem(("a",), "new", {"v": 1}),
            GetItem(("a",), "new"),
            DeleteItem(("a",), "old"),
            GetItem(("a",), "old"),
            DeleteItem(("a",), "never"),
            PutItem(("a",), "new", {"v": 2}),  # the last write of a key wins
        ]
    )
    assert results[0] is None and results[1] is None
    assert results[2] is True and results[4] is False
    assert results[3] is not None and results[3].value == {"v": 0}  # type: ignore[union-attr]
    assert items.get(("a",), "old") is None
    new = items.get(("a",), "new")
    assert new is not None and new.value == {"v": 2}


# -- namespaces and prefixes ------------------------------------------------------------------


def test_prefix_search_matches_whole_labels_case_sensitively(items: ItemStore) -> None:
    namespaces = [("user_%",), ("user_%", "child"), ("userX%",), ("USER_%",), ("user_%x",)]
    for namespace in namespaces:
        items.put(namespace, "key", {})
    assert {i.namespace for i in items.search((), limit=100)} == set(namespaces)
    assert {i.namespace for i in items.search(("user_%",))} == {("user_%",), ("user_%", "child")}
    assert items.list_namespaces(prefix=("user_%", "*")) == [("user_%", "child")]
    items.put(("a", "b"), "k", {})
    items.put(("a", "bc"), "k", {})
    items.put(("a", "b", "c"), "k", {})
    assert {i.namespace for i in items.search(("a", "b"))} == {("a", "b"), ("a", "b", "c")}


def test_list_namespaces_prefix_suffix_depth_and_pages(items: ItemStore) -> None:
    test_namespaces = [
        ("test", "documents", "public"),
        ("test", "documents", "private"),
        ("test", "images", "public"),
        ("test", "images", "private"),
        ("prod", "documents", "public"),
        ("prod", "documents", "private"),
    ]
    for namespace in test_namespaces:
        items.put(namespace, "dummy", {"content": "dummy"})
    assert items.list_namespaces() == sorted(test_namespaces)
    assert items.list_namespaces(prefix=("test",)) == sorted(ns for ns in test_namespaces if ns[0] == "test")
    assert items.list_namespaces(suffix=("public",)) == sorted(
        ns for ns in test_namespaces if ns[-1] == "public"
    )
    assert items.list_namespaces(prefix=("*", "documents")) == sorted(
        ns for ns in test_namespaces if ns[1] == "documents"
    )
    assert items.list_namespaces(prefix=("test",), suffix=("*", "private")) == [
        ("test", "documents", "private"),
        ("test", "images", "private"),
    ]
    assert items.list_namespaces(max_depth=2) == [
        ("prod", "documents"),
        ("test", "documents"),
        ("test", "images"),
    ]
    assert items.list_namespaces(limit=3) == sorted(test_namespaces)[:3]
    assert items.list_namespaces(limit=3, offset=4) == sorted(test_namespaces)[4:]


def test_delete_namespace_prefix_forgets_a_user_and_nothing_else(items: ItemStore) -> None:
    items.put(("memories", "alice"), "m1", {"text": "likes tea"}, vectors={"text": [1.0, 0.0]})
    items.put(("memories", "alice", "work"), "m2", {"text": "works at ACME"}, vectors={"text": [0.0, 1.0]})
    items.put(("memories", "alice2"), "m3", {"text": "likes coffee"}, vectors={"text": [1.0, 0.0]})
    items.put(("memories", "bob"), "m4", {"text": "likes tea too"})
    assert items.delete_namespace_prefix(("memories", "alice")) == 2
    assert items.search(("memories", "alice")) == []
    assert items.search(("memories", "alice"), query_vector=[1.0, 0.0]) == []
    assert sorted(keys(items.search(("memories",)))) == ["m3", "m4"]
    assert keys(items.search(("memories",), query_vector=[1.0, 0.0]))[0] == "m3"
    with pytest.raises(InvalidInputError):
        items.delete_namespace_prefix(())
    assert len(items.search(())) == 2


# -- search -----------------------------------------------------------------------------------


def test_search_is_newest_first_with_pages(items: ItemStore) -> None:
    for n in range(7):
        items.put(("docs", f"g{n % 2}"), f"d{n}", {"n": n})
    newest_first = [f"d{n}" for n in reversed(range(7))]
    assert keys(items.search(("docs",), limit=100)) == newest_first
    assert keys(items.search(("docs",), limit=3)) == newest_first[:3]
    assert keys(items.search(("docs",), limit=3, offset=5)) == newest_first[5:]
    assert keys(items.search(("docs",), limit=0)) == []
    # a replaced item moves to the front
    items.put(("docs", "g0"), "d0", {"n": 0})
    assert keys(items.search(("docs",), limit=2)) == ["d0", "d6"]


def test_filter_pagination_counts_matches_only(items: ItemStore) -> None:
    # more than two scan pages (500 rows each); one batch, so one updated_at: ties go by key
    items.batch([PutItem(("big",), f"k{n:04d}", {"even": n % 2 == 0, "n": n}) for n in range(1200)])
    page = items.search(("big",), filter={"even": False}, limit=5, offset=550)
    assert [i.value["n"] % 2 for i in page] == [1] * 5
    everything = items.search(("big",), filter={"even": False}, limit=1000)
    assert len(everything) == 600
    assert keys(page) == keys(everything[550:555])


FILTER_DOCS = {
    "a": {"color": "red", "score": 4.5, "flag": True, "meta": {"lang": "en", "n": 1}, "tags": ["x", "y"]},
    "b": {"color": "red", "score": 3, "flag": False, "meta": {"lang": "fr", "n": 2}, "tags": ["y"]},
    "c": {"color": "green", "score": 4.0, "flag": 1, "meta": {"lang": "en"}, "note": None},
    "d": {"color": "blue", "score": "high"},
}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"color": "red"}, {"a", "b"}),
        ({"color": {"$eq": "red"}}, {"a", "b"}),
        ({"color": {"$ne": "red"}}, {"c", "d"}),
        ({"score": {"$gt": 3.2}}, {"a", "c"}),
        ({"score": {"$gte": 4}}, {"a", "c"}),
        ({"score": {"$lt": 4}}, {"b"}),
        ({"score": {"$lte": 4, "$gt": 3}}, {"c"}),
        ({"score": {"$gt": "a"}}, {"d"}),  # strings compare with strings only
        ({"score": 3.0}, {"b"}),  # 3 == 3.0
        ({"flag": True}, {"a"}),  # True is not 1
        ({"flag": 1}, {"c"}),
        ({"meta.lang": "en"}, {"a", "c"}),
        ({"meta.n": {"$gte": 2}}, {"b"}),
        ({"meta": {"lang": "en", "n": 1}}, {"a"}),  # a dict compares whole
        ({"tags": ["x", "y"]}, {"a"}),
        ({"note": None}, {"a", "b", "c", "d"}),  # null or missing
        ({"note": {"$ne": None}}, set()),
        ({"meta.n": {"$ne": 1}}, {"b"}),  # a missing field fails $ne (SQL NULL semantics)
        ({"color": {"$in": ["red", "blue"]}}, {"a", "b", "d"}),
        ({"color": {"$nin": ["red", "blue"]}}, {"c"}),
        ({"meta.lang": {"$nin": ["fr"]}}, {"a", "c"}),
        ({"color": "red", "score": {"$gt": 4}}, {"a"}),
        ({"missing.deep.path": "x"}, set()),
    ],
)
def test_filter_semantics(items: ItemStore, flt: dict[str, object], expected: set[str]) -> None:
    for key, value in FILTER_DOCS.items():
        items.put(("f",), key, value)
    assert set(keys(items.search(("f",), filter=flt, limit=100))) == expected
    # the pure predicate is the one definition every backend runs
    assert {k for k, v in FILTER_DOCS.items() if matches_filter(v, check_filter(flt))} == expected


def test_lexical_query_ranks_by_term_overlap(items: ItemStore) -> None:
    items.put(("m",), "tea", {"text": "Alice likes green tea in the morning"})
    items.put(("m",), "coffee", {"text": "Bob drinks coffee"})
    items.put(("m",), "both", {"text": "green tea and coffee", "extra": {"place": "Lisbon"}})
    items.put(("m",), "custom", {"text": "nothing here"}, text="tea tea tea")
    found = items.search(("m",), query="green tea", limit=10)
    assert keys(found)[:2] == ["both", "tea"]  # equal scores: the newest first
    assert found[0].score == pytest.approx(1.0)
    assert keys(found)[2] == "custom" and 0 < (found[2].score or 0) < 1
    assert found[-1].key == "coffee" and found[-1].score == 0.0
    assert keys(items.search(("m",), query="lisbon", limit=1)) == ["both"]
    assert keys(items.search(("m",), query="   ")) == keys(items.search(("m",)))


def test_vector_query_ranks_by_best_vector_and_puts_unembedded_last(items: ItemStore) -> None:
    items.put(("v",), "x", {"t": "x"}, vectors={"a": [1.0, 0.0], "b": [0.0, 1.0]})  # max pooling
    items.put(("v",), "y", {"t": "y"}, vectors={"a": [0.6, 0.8]})
    items.put(("v",), "z", {"t": "z"})
    items.put(("v",), "w", {"t": "w"}, vectors={"a": [1.0, 0.0, 0.0]})  # another model: skipped
    found = items.search(("v",), query_vector=[0.0, 1.0], limit=10)
    assert keys(found)[:2] == ["x", "y"]
    assert found[0].score == pytest.approx(1.0) and found[1].score == pytest.approx(0.8)
    assert set(keys(found)[2:]) == {"z", "w"} and all(i.score is None for i in found[2:])
    assert keys(items.search(("v",), query_vector=[0.0, 1.0], limit=1, offset=1)) == ["y"]
    for offset in range(len(found)):  # a page ranks only what it shows, and agrees with the whole
        page = items.search(("v",), query_vector=[0.0, 1.0], limit=1, offset=offset)
        assert [(i.key, i.score) for i in page] == [(i.key, i.score) for i in found[offset : offset + 1]]
    items.put(("v",), "x", {"t": "x"})  # a put replaces the vectors
    assert keys(items.search(("v",), query_vector=[0.0, 1.0], limit=1)) == ["y"]
    assert keys(items.search(("v",), query_vector=[1.0, 0.0], filter={"t": "x"})) == ["x"]


# -- TTL ----------------------------------------------------------------------------------------


def test_expired_items_are_hidden_on_request_and_swept(items: ItemStore) -> None:
    items.put(("t", "gone"), "e", {"v": 1}, ttl_minutes=EXPIRED_AT_ONCE)
    items.put(("t", "keep"), "c", {"v": 2})
    items.put(("t", "keep"), "l", {"v": 3}, ttl_minutes=60)
    assert items.get(("t", "gone"), "e") is not None  # like LangGraph: unswept rows stay readable
    assert items.get(("t", "gone"), "e", omit_expired=True) is None
    assert items.search(("t", "gone"), omit_expired=True) == []
    assert sorted(keys(items.search(("t",), omit_expired=True))) == ["c", "l"]
    assert items.list_namespaces(prefix=("t",), omit_expired=True) == [("t", "keep")]
    assert items.list_namespaces(prefix=("t",)) == [("t", "gone"), ("t", "keep")]
    assert items.sweep_expired() == 1
    assert items.get(("t", "gone"), "e") is None
    assert sorted(keys(items.search(("t",)))) == ["c", "l"]
    assert items.sweep_expired() == 0


def test_refresh_extends_live_items_and_never_resurrects(items: ItemStore) -> None:
    items.put(("r",), "live", {"v": 1}, ttl_minutes=60)
    items.put(("r",), "dead", {"v": 2}, ttl_minutes=EXPIRED_AT_ONCE)
    items.put(("r",), "forever", {"v": 3})
    before = items.get(("r",), "live")
    dead_before = items.get(("r",), "dead")
    assert before is not None and before.expires_at is not None and dead_before is not None
    refreshed = items.get(("r",), "live", refresh_ttl=True)
    assert refreshed is not None and refreshed.expires_at is not None
    assert refreshed.expires_at >= before.expires_at
    stored = items.get(("r",), "live")
    assert stored is not None and stored.expires_at == refreshed.expires_at  # written, not just returned
    found = {i.key: i for i in items.search(("r",), refresh_ttl=True)}
    assert found["forever"].expires_at is None
    dead_after = items.get(("r",), "dead")
    assert dead_after is not None and dead_after.expires_at == dead_before.expires_at
    assert items.sweep_expired() == 1


def test_expired_rows_are_filtered_before_the_page(items: ItemStore) -> None:
    for key in ("c", "b", "expired", "a"):  # newest first: a, expired, b, c
        items.put(("page",), key, {"k": key}, ttl_minutes=EXPIRED_AT_ONCE if key == "expired" else 60)
    assert keys(items.search(("page",), limit=2, omit_expired=True)) == ["a", "b"]
    assert keys(items.search(("page",), limit=2, offset=2, omit_expired=True)) == ["c"]


# -- async ----------------------------------------------------------------------------------------


async def test_async_twins(items: ItemStore) -> None:
    await items.aput(("a",), "k", {"v": "async value"}, ttl_minutes=60, vectors={"v": [1.0, 1.0]})
    found = await items.aget(("a",), "k")
    assert found is not None and found.value == {"v": "async value"}
    assert keys(await items.asearch(("a",), query="async")) == ["k"]
    assert await items.alist_namespaces() == [("a",)]
    assert [r is None for r in await items.abatch([GetItem(("a",), "zz")])] == [True]
    assert await items.adelete(("a",), "k") is True
    assert await items.asweep_expired() == 0
    await items.aput(("b", "c"), "k", {})
    assert await items.adelete_namespace_prefix(("b",)) == 1


# -- backend specifics --------------------------------------------------------------------------


def test_open_item_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_item_store("memory://"), InMemoryItemStore)
    rel = open_item_store("sqlite:///rel.db")
    assert isinstance(rel, SQLiteItemStore) and rel.path == "rel.db"
    absolute = open_item_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteItemStore) and absolute.path == f"{tmp_path}/abs.db"
    bare = open_item_store(str(tmp_path / "bare.db"))
    assert isinstance(bare, SQLiteItemStore)
    pg = open_item_store("postgresql+psycopg://u@h/db")
    assert isinstance(pg, PostgresItemStore) and pg.dsn == "postgresql://u@h/db"
    for bad in ("", "redis://x", 3):
        with pytest.raises(ConfigError):
            open_item_store(bad)  # type: ignore[arg-type]
    assert not (tmp_path / "abs.db").exists()  # constructors do no I/O


def test_sqlite_items_share_the_session_file_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ogmem.db"
    sessions = SQLiteStore(path)
    items = item_store_for(sessions)
    assert item_store_for(sessions) is items
    assert isinstance(items, SQLiteItemStore) and items.path == str(path)
    assert not path.exists()
    items.put(("memories", "alice"), "m1", {"text": "likes tea"})
    sessions.bind_session("s1", RequestContext(account_id="acme", user_id="alice"))
    sessions.append("s1", [SessionMessage(id=new_message_id(), role="user", content="hi", tokens=1)])
    items.close()
    sessions.close()
    with SQLiteItemStore(path) as again:
        found = again.get(("memories", "alice"), "m1")
        assert found is not None and found.value == {"text": "likes tea"}
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"ogmem_items", "ogmem_item_vectors", "ogmem_items_schema", "ogmem_sessions"} <= tables
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SQLiteStore(path) as reopened:
        assert [m.content for m in reopened.list_messages("s1")] == ["hi"]


def test_item_store_for_memory_stores_and_unknown_stores() -> None:
    memory = InMemoryStore()
    assert isinstance(item_store_for(memory), InMemoryItemStore)
    assert item_store_for(memory) is item_store_for(memory)
    private = SQLiteStore(":memory:")
    assert isinstance(item_store_for(private), InMemoryItemStore)  # no second connection can see it
    with pytest.raises(ConfigError):
        item_store_for(object())  # type: ignore[arg-type]


def test_item_store_for_closes_with_its_session_store(tmp_path: Path) -> None:
    sessions = SQLiteStore(tmp_path / "x.db")
    items = item_store_for(sessions)
    assert isinstance(items, SQLiteItemStore)
    items.setup()
    assert items._conn is not None
    del sessions
    gc.collect()
    assert items._conn is None


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with SQLiteItemStore(path) as items:
        items.put(("a",), "k", {})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE ogmem_items_schema SET version = 99")
    with pytest.raises(SchemaVersionError):
        SQLiteItemStore(path).setup()


def test_sqlite_locked_database_is_a_store_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    items = SQLiteItemStore(path, busy_timeout_ms=50)
    items.setup()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError):
            items.put(("a",), "k", {"v": 1})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert items.get(("a",), "k") is None


def test_sqlite_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    stores = [SQLiteItemStore(path) for _ in range(3)]  # three connections to one file
    errors: list[BaseException] = []

    def write(store: SQLiteItemStore, worker: int) -> None:
        try:
            for n in range(40):
                store.put(("w", str(worker)), f"k{n}", {"n": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(stores[i % 3], i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stores[0].search(("w",), limit=1000)) == 240
    for store in stores:
        store.close()


def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        SQLiteItemStore("x.db", synchronous="SOMETIMES")
    with pytest.raises(ConfigError):
        SQLiteItemStore("x.db", busy_timeout_ms=-1)
    with pytest.raises(ConfigError):
        PostgresItemStore("")
    with pytest.raises(ConfigError):
        PostgresItemStore("postgresql://x", schema="")
    with pytest.raises(ConfigError):
        PostgresItemStore("postgresql://x", timeout=0)


def test_postgres_schema_names_are_quoted(postgres_schema: str) -> None:
    import psycopg

    dsn = postgres_dsn_or_skip()
    odd = f'{postgres_schema}%s"x'  # a placeholder and a quote inside the name
    try:
        with PostgresItemStore(dsn, schema=odd) as items:
            items.put(("a",), "k", {"v": 1})
            found = items.get(("a",), "k")
            assert found is not None and found.value == {"v": 1}
        with PostgresItemStore(dsn, schema=odd) as again:  # migrations are recorded once
            assert again.list_namespaces() == [("a",)]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(odd))
            )


def test_postgres_concurrent_setup_and_writers(postgres_schema: str) -> None:
    dsn = postgres_dsn_or_skip()
    stores = [PostgresItemStore(dsn, schema=postgres_schema, min_size=0, max_size=2) for _ in range(3)]
    errors: list[BaseException] = []

    def write(store: PostgresItemStore, worker: int) -> None:
        try:
            for n in range(15):
                store.put(("w", str(worker)), f"k{n}", {"n": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(stores[i], i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stores[0].search(("w",), limit=100)) == 45
    for store in stores:
        store.close()


def test_postgres_items_use_the_session_store_schema(postgres_schema: str) -> None:
    from ogmem_memory.stores.postgres import PostgresStore

    sessions = PostgresStore(postgres_dsn_or_skip(), schema=postgres_schema)
    items = item_store_for(sessions)
    assert isinstance(items, PostgresItemStore) and items.schema == postgres_schema
    try:
        items.put(("memories", "bob"), "m", {"text": "x"})
        sessions.bind_session("s1", RequestContext(account_id="acme", user_id="bob"))
        import psycopg

        with psycopg.connect(sessions.dsn) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (postgres_schema,),
                )
            }
        assert {"ogmem_items", "ogmem_item_vectors", "ogmem_items_migrations", "ogmem_sessions"} <= tables
    finally:
        items.close()
        sessions.close()


def test_a_read_before_any_write_creates_no_item_tables(tmp_path: Path) -> None:
    """A first get_context (or `ogmem show`) reads memories: it must not create their tables."""
    from ogmem_memory import RequestContext, SessionManager

    path = tmp_path / "reads.db"
    ada = RequestContext(account_id="acme", user_id="ada")
    with SessionManager(f"sqlite:///{path}") as manager:
        manager.add_message("s", "user", "Where do I live?", ada)
        assert manager.get_context("s", 500, ada).memories == ()
        assert manager.search_memories(ada, "live") == []

        def tables() -> set[str]:
            with sqlite3.connect(path) as conn:
                return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

        assert not {t for t in tables() if t.startswith("ogmem_item")}
        manager.add_message("s", "user", "I live in Lisbon.", ada)
        manager.extract_memories("s", ada)  # the first write creates them
        assert "ogmem_items" in tables()
        assert any("Lisbon" in m for m in manager.get_context("s", 500, ada, query="Lisbon").memories)


def test_memories_written_by_another_manager_after_an_empty_read_are_seen(tmp_path: Path) -> None:
    """The empty-schema shortcut of a read must not hide tables another writer creates later."""
    from ogmem_memory import RequestContext, SessionManager

    url = f"sqlite:///{tmp_path / 'two.db'}"
    ada = RequestContext(account_id="acme", user_id="ada")
    with SessionManager(url) as reader, SessionManager(url) as writer:
        reader.add_message("s", "user", "Hello.", ada)
        assert reader.get_context("s", 500, ada, query="Lisbon").memories == ()
        writer.add_message("t", "user", "I live in Lisbon.", ada)
        writer.extract_memories("t", ada)
        assert any("Lisbon" in m for m in reader.get_context("s", 500, ada, query="Lisbon").memories)
