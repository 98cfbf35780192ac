"""OgmemStore as LangGraph's BaseStore: LangGraph's InMemoryStore as the oracle, SqliteStore's
test cases ported (batch ops, vectors, namespace validation, TTL), and create_agent end to end."""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ogmem import OgmemMemoryMiddleware, history_factory
from langchain_ogmem.store import OgmemStore
from langgraph.config import get_store
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore as LangGraphInMemoryStore

from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError, EmbeddingError, InvalidInputError
from ogmem_memory.extract import MemoryRecord
from ogmem_memory.manager import SessionManager
from ogmem_memory.models import RequestContext, utc_now
from ogmem_memory.stores import InMemoryStore, SQLiteStore
from ogmem_memory.stores.items import item_store_for
from ogmem_memory.stores.items_sql import SQLiteItemStore
from tests.adapters.langchain_fakes import FakeToolCallingChatModel
from tests.conftest import postgres_dsn_or_skip

EXPIRED_AT_ONCE = 1e-9  # minutes: the item is expired as soon as it is written


class CharEmbeddings(Embeddings):
    """Deterministic embeddings: character frequencies through fixed random projections."""

    def __init__(self, dims: int = 64, seed: int = 7) -> None:
        self.dims = dims
        self._seed = seed
        self._proj: dict[str, list[float]] = {}
        self.calls = 0

    def _projection(self, ch: str) -> list[float]:
        if ch not in self._proj:
            rng = random.Random(f"{self._seed}:{ch}")
            self._proj[ch] = [rng.gauss(0, 1) for _ in range(self.dims)]
        return self._proj[ch]

    def _embed(self, text: str) -> list[float]:
        counts = Counter(text)
        vector = [0.0] * self.dims
        for ch, n in counts.items():
            for i, p in enumerate(self._projection(ch)):
                vector[i] += n * p
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        return self._embed(text)


def _manager(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, config: MemoryConfig | None = None
) -> SessionManager:
    if kind == "memory":
        return SessionManager(InMemoryStore(), config=config)
    if kind == "sqlite":
        return SessionManager(SQLiteStore(tmp_path / f"{uuid.uuid4().hex[:8]}.db"), config=config)
    from ogmem_memory.stores.postgres import PostgresStore

    return SessionManager(
        PostgresStore(postgres_dsn_or_skip(), schema=request.getfixturevalue("postgres_schema")),
        config=config,
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionManager]:
    m = _manager(request.param, tmp_path, request)
    yield m
    item_store_for(m.store).close()
    m.close()


@pytest.fixture
def store(manager: SessionManager) -> Iterator[OgmemStore]:
    with OgmemStore(manager=manager) as s:
        yield s


@pytest.fixture
def embeddings() -> CharEmbeddings:
    return CharEmbeddings(dims=128)


@pytest.fixture
def vector_store(manager: SessionManager, embeddings: CharEmbeddings) -> Iterator[OgmemStore]:
    with OgmemStore(manager=manager, index={"dims": embeddings.dims, "embed": embeddings}) as s:
        yield s


def _with_fields(manager: SessionManager, embeddings: CharEmbeddings, fields: list[str]) -> OgmemStore:
    return OgmemStore(manager=manager, index={"dims": embeddings.dims, "embed": embeddings, "fields": fields})


# -- LangGraph's InMemoryStore as the oracle ---------------------------------------------------


def _view(item: Item | None) -> tuple[Any, ...] | None:
    return None if item is None else (item.namespace, item.key, item.value)


def test_same_answers_as_langgraph_inmemory_store(store: OgmemStore) -> None:
    oracle = LangGraphInMemoryStore()
    docs = [
        (("test", "documents", "public"), "doc1", {"title": "A", "author": "Alice", "n": 1, "tag": "x"}),
        (("test", "documents", "private"), "doc2", {"title": "B", "author": "Bob", "n": 2, "tag": "y"}),
        (("test", "images", "public"), "img1", {"title": "C", "author": "Alice", "n": 3, "tag": "x"}),
        (("prod", "documents", "public"), "doc3", {"title": "D", "author": "Carol", "n": 4, "tag": "y"}),
        (("prod",), "root", {"title": "E", "author": "Dan", "n": 5, "tag": "z"}),
        (("prod",), "root2", {"title": "F", "author": "Eve", "n": 6, "tag": "z"}),
    ]
    for s in (store, oracle):
        for namespace, key, value in docs:
            s.put(namespace, key, value)
        s.put(
            ("test", "documents", "public"), "doc1", {"title": "A2", "author": "Alice", "n": 10, "tag": "x"}
        )
        # (LangGraph's InMemoryStore keeps listing a namespace whose last item was deleted;
        # SqliteStore and we do not, so the oracle deletes only from a namespace that stays.)
        s.delete(("prod",), "root")
        s.delete(("prod",), "never-existed")

    for namespace, key, _ in docs:
        assert _view(store.get(namespace, key)) == _view(oracle.get(namespace, key))

    searches: list[dict[str, Any]] = [
        {"namespace_prefix": ()},
        {"namespace_prefix": ("test",)},
        {"namespace_prefix": ("test", "documents")},
        {"namespace_prefix": ("nothing",)},
        {"namespace_prefix": ("test",), "filter": {"author": "Alice"}},
        {"namespace_prefix": (), "filter": {"n": {"$gt": 2}}},
        {"namespace_prefix": (), "filter": {"n": {"$gte": 2, "$lt": 10}}},
        {"namespace_prefix": (), "filter": {"tag": {"$ne": "x"}}},
        {"namespace_prefix": (), "filter": {"tag": "x", "n": {"$lte": 3}}},
    ]
    for kwargs in searches:
        prefix = kwargs.pop("namespace_prefix")
        # order differs by design (ours newest first, theirs insertion order): compare sorted
        ours = sorted(map(_view, store.search(prefix, limit=100, **kwargs)), key=repr)
        theirs = sorted(map(_view, oracle.search(prefix, limit=100, **kwargs)), key=repr)
        assert ours == theirs, (prefix, kwargs)

    listings: list[dict[str, Any]] = [
        {},
        {"prefix": ("test",)},
        {"prefix": ("test", "*", "public")},
        {"suffix": ("public",)},
        {"prefix": ("test",), "suffix": ("private",)},
        {"max_depth": 1},
        {"max_depth": 2},
        {"prefix": ("test",), "max_depth": 2},
        {"limit": 2},
        {"limit": 2, "offset": 1},
    ]
    for kwargs in listings:
        assert store.list_namespaces(**kwargs) == oracle.list_namespaces(**kwargs), kwargs


def test_same_vector_ranking_as_langgraph_inmemory_store(
    manager: SessionManager, embeddings: CharEmbeddings
) -> None:
    index = {"dims": embeddings.dims, "embed": embeddings, "fields": ["text", "extra"]}
    oracle = LangGraphInMemoryStore(index=index)  # type: ignore[arg-type]
    ours = OgmemStore(manager=manager, index=index)  # type: ignore[arg-type]
    docs = {
        "d1": {"text": "the quick brown fox", "extra": "zebra"},
        "d2": {"text": "lazy dogs sleep all day"},
        "d3": {"text": "foxes and hounds", "extra": "quick quick"},
        "d4": {"text": "an unrelated note about taxes"},
    }
    for s in (ours, oracle):
        for key, value in docs.items():
            s.put(("docs",), key, value)
        s.put(("docs",), "unindexed", {"text": "quick fox"}, index=False)
    for query in ("quick fox", "sleepy dog", "zebra", "taxes"):
        mine = ours.search(("docs",), query=query, limit=10)
        theirs = oracle.search(("docs",), query=query, limit=10)
        assert [i.key for i in mine] == [i.key for i in theirs], query
        for a, b in zip(mine, theirs, strict=True):
            assert (a.score is None) == (b.score is None)
            assert a.score == pytest.approx(b.score, abs=1e-5)  # float32 storage
    assert mine[-1].key == "unindexed" and mine[-1].score is None


# -- ported from LangGraph's SqliteStore tests --------------------------------------------------


def test_batch_order(store: OgmemStore) -> None:
    store.put(("test", "foo"), "key1", {"data": "value1"})
    store.put(("test", "bar"), "key2", {"data": "value2"})
    results = store.batch(
        [
            GetOp(namespace=("test", "foo"), key="key1"),
            PutOp(namespace=("test", "bar"), key="key2", value={"data": "value2"}),
            SearchOp(namespace_prefix=("test",), filter={"data": "value1"}, limit=10, offset=0),
            ListNamespacesOp(match_conditions=None, max_depth=None, limit=10, offset=0),
            GetOp(namespace=("test",), key="key3"),
        ]
    )
    assert isinstance(results[0], Item) and results[0].value == {"data": "value1"}
    assert results[0].namespace == ("test", "foo") and results[0].key == "key1"
    assert results[1] is None
    assert isinstance(results[2], list) and [i.key for i in results[2]] == ["key1"]
    assert results[3] == [("test", "bar"), ("test", "foo")]
    assert results[4] is None
    reordered = store.batch(
        [
            SearchOp(namespace_prefix=("test",), filter=None, limit=5, offset=0),
            GetOp(namespace=("test", "bar"), key="key2"),
            ListNamespacesOp(match_conditions=None, max_depth=None, limit=5, offset=0),
            PutOp(namespace=("test",), key="key3", value={"data": "value3"}),
            GetOp(namespace=("test", "foo"), key="key1"),
        ]
    )
    assert isinstance(reordered[0], list) and len(reordered[0]) == 2
    assert isinstance(reordered[1], Item) and reordered[1].value == {"data": "value2"}
    assert reordered[3] is None
    assert isinstance(reordered[4], Item) and reordered[4].key == "key1"
    item3 = store.get(("test",), "key3")
    assert item3 is not None and item3.value == {"data": "value3"}


def test_batch_put_and_delete_ops(store: OgmemStore) -> None:
    results = store.batch(
        [
            PutOp(namespace=("test",), key="key1", value={"data": "value1"}),
            PutOp(namespace=("test",), key="key2", value={"data": "value2"}),
            PutOp(namespace=("test",), key="key3", value=None),
        ]
    )
    assert results == [None, None, None]
    item1, item2 = store.get(("test",), "key1"), store.get(("test",), "key2")
    assert item1 is not None and item1.value == {"data": "value1"}
    assert item2 is not None and item2.value == {"data": "value2"}
    assert store.get(("test",), "key3") is None


def test_batch_search_and_list_ops(store: OgmemStore) -> None:
    store.put(("test", "foo"), "key1", {"data": "value1", "tag": "a"})
    store.put(("test", "bar"), "key2", {"data": "value2", "tag": "a"})
    store.put(("test", "baz"), "key3", {"data": "value3", "tag": "b"})
    results = store.batch(
        [
            SearchOp(namespace_prefix=("test",), filter={"tag": "a"}, limit=10, offset=0),
            SearchOp(namespace_prefix=("test",), filter=None, limit=2, offset=0),
            SearchOp(namespace_prefix=("test", "foo"), filter=None, limit=10, offset=0),
            ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("baz",)),)),
            ListNamespacesOp(max_depth=1),
        ]
    )
    assert sorted(i.key for i in results[0]) == ["key1", "key2"]  # type: ignore[union-attr]
    assert [i.key for i in results[1]] == ["key3", "key2"]  # type: ignore[union-attr]  # newest first
    assert [i.namespace for i in results[2]] == [("test", "foo")]  # type: ignore[union-attr]
    assert results[3] == [("test", "baz")]
    assert results[4] == [("test",)]


def test_basic_store_ops_and_lists_accepted_as_namespaces(store: OgmemStore) -> None:
    namespace = ("test", "documents")
    store.put(namespace, "doc1", {"title": "Test Document", "content": "Hello, World!"})
    item = store.get(namespace, "doc1")
    assert item is not None and item.namespace == namespace and item.value["title"] == "Test Document"
    store.put(namespace, "doc1", {"title": "Updated Document"})
    updated = store.get(namespace, "doc1")
    assert updated is not None and updated.value == {"title": "Updated Document"}
    assert updated.updated_at >= item.updated_at and updated.created_at == item.created_at
    assert store.get(("test", "other_documents"), "doc1") is None
    assert [i.key for i in store.search(["test"])] == ["doc1"]  # type: ignore[arg-type]
    assert store.list_namespaces(prefix=["test"]) == [namespace]  # type: ignore[arg-type]
    store.delete(namespace, "doc1")
    assert store.get(namespace, "doc1") is None


def test_search_filters_and_pages(store: OgmemStore) -> None:
    data = [
        (("test", "docs"), "doc1", {"title": "First Doc", "author": "Alice", "tags": ["important"]}),
        (("test", "docs"), "doc2", {"title": "Second Doc", "author": "Bob", "tags": ["draft"]}),
        (("test", "images"), "img1", {"title": "Image 1", "author": "Alice", "tags": ["final"]}),
    ]
    for namespace, key, value in data:
        store.put(namespace, key, value)
    assert len(store.search(("test",))) == 3
    assert {i.namespace for i in store.search(("test", "docs"))} == {("test", "docs")}
    assert sorted(i.key for i in store.search(("test",), filter={"author": "Alice"})) == ["doc1", "img1"]
    assert [i.key for i in store.search(("test",), filter={"tags": ["draft"]})] == ["doc2"]
    assert len(store.search(("test",), limit=2)) == 2
    assert len(store.search(("test",), offset=2)) == 1
    with pytest.raises(ValueError, match="unsupported filter operator"):
        store.search(("test",), filter={"author": {"$like": "A%"}})


def test_nested_filters_with_dotted_keys(store: OgmemStore) -> None:
    store.put(("p",), "a", {"user": {"profile": {"age": 31, "city": "Lisbon"}}, "active": True})
    store.put(("p",), "b", {"user": {"profile": {"age": 25, "city": "Porto"}}, "active": False})
    assert [i.key for i in store.search(("p",), filter={"user.profile.city": "Lisbon"})] == ["a"]
    assert [i.key for i in store.search(("p",), filter={"user.profile.age": {"$lt": 30}})] == ["b"]
    assert [i.key for i in store.search(("p",), filter={"active": True})] == ["a"]
    assert [
        i.key for i in store.search(("p",), filter={"user.profile.city": {"$in": ["Porto", "Faro"]}})
    ] == ["b"]


def test_lexical_query_without_index(store: OgmemStore) -> None:
    store.put(("m", "u1"), "1", {"text": "User prefers dark mode"})
    store.put(("m", "u1"), "2", {"text": "User lives in Lisbon"})
    store.put(("m", "u1"), "3", {"text": "Favourite colour: dark green"}, index=["text"])
    found = store.search(("m", "u1"), query="where does the user live? lisbon")
    assert found[0].key == "2" and found[0].score is not None and found[0].score > 0
    assert [i.key for i in store.search(("m", "u1"), query="dark", limit=2)] == ["3", "1"]


def test_vector_insert_update_and_index_false(vector_store: OgmemStore) -> None:
    vector_store.put(("test",), "doc1", {"text": "zany zebra Xerxes"})
    vector_store.put(("test",), "doc2", {"text": "something about dogs"})
    vector_store.put(("test",), "doc3", {"text": "text about birds"})
    first = vector_store.search(("test",), query="Zany Xerxes")
    assert first[0].key == "doc1" and first[0].score is not None
    vector_store.put(("test",), "doc1", {"text": "new text about dogs"})
    after = vector_store.search(("test",), query="Zany Xerxes")
    assert next(r.score for r in after if r.key == "doc1") < first[0].score  # type: ignore[operator]
    vector_store.put(("test",), "doc4", {"text": "new text about dogs"}, index=False)
    top3 = vector_store.search(("test",), query="new text about dogs", limit=3)
    assert "doc4" not in [r.key for r in top3]
    assert vector_store.search(("test",), query="new text about dogs", limit=10)[-1].key == "doc4"


def test_vector_search_with_filters_and_pages(vector_store: OgmemStore) -> None:
    docs = [
        ("doc1", {"text": "red apple", "color": "red", "score": 4.5}),
        ("doc2", {"text": "red car", "color": "red", "score": 3.0}),
        ("doc3", {"text": "green apple", "color": "green", "score": 4.0}),
        ("doc4", {"text": "blue car", "color": "blue", "score": 3.5}),
    ]
    for key, value in docs:
        vector_store.put(("test",), key, value)
    results = vector_store.search(("test",), query="apple", filter={"color": "red"})
    assert [r.key for r in results] == ["doc1", "doc2"]
    assert vector_store.search(("test",), query="car", filter={"color": "red"})[0].key == "doc2"
    high = vector_store.search(("test",), query="blue", filter={"score": {"$gt": 3.2}})
    assert {r.key for r in high} == {"doc1", "doc3", "doc4"}
    page1 = vector_store.search(("test",), query="car", limit=2)
    page2 = vector_store.search(("test",), query="car", limit=2, offset=2)
    assert len(page1) == len(page2) == 2 and not {r.key for r in page1} & {r.key for r in page2}
    scores = [r.score for r in page1 + page2]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    for q in ("", None, "test " * 100, "test!@#$%^&*()"):
        assert len(vector_store.search(("test",), query=q)) == 4


def test_embed_with_paths_and_per_put_fields(manager: SessionManager, embeddings: CharEmbeddings) -> None:
    with _with_fields(manager, embeddings, ["key0", "key1", "key3"]) as s:
        s.put(("test",), "doc1", {"key1": "xxx", "key2": "yyy", "key3": "zzz"})  # no key0: fine
        s.put(("test",), "doc2", {"key0": "uuu", "key1": "vvv", "key2": "www", "key3": "xxx"})
        both = s.search(("test",), query="xxx")
        assert {r.key for r in both} == {"doc1", "doc2"} and all(r.score > 0.99 for r in both)  # type: ignore[operator]
        assert s.search(("test",), query="uuu")[0].key == "doc2"
        assert s.search(("test",), query="zzz")[0].key == "doc1"
        s.put(("test",), "doc3", {"key0": "aaa", "key1": "bbb"}, index=["key0"])
        assert s.search(("test",), query="aaa")[0].key == "doc3"
        s.put(("test",), "doc4", {"items": [{"t": "ppp"}, {"t": "qqq"}]}, index=["items[*].t"])
        assert s.search(("test",), query="qqq")[0].key == "doc4"


def test_scores_are_cosine_similarities(vector_store: OgmemStore, embeddings: CharEmbeddings) -> None:
    vector_store.put(("test",), "doc", {"key0": "aaa"})
    for query in ("aaa", "bbb", "abcd", "poisson"):
        [result] = vector_store.search((), query=query)
        a, b = (
            embeddings.embed_query(query),
            embeddings.embed_documents([vector_store_text({"key0": "aaa"})])[0],
        )
        assert result.score == pytest.approx(sum(x * y for x, y in zip(a, b, strict=True)), abs=1e-4)


def vector_store_text(value: dict[str, Any]) -> str:
    """What fields=["$"] (the default) embeds: LangGraph's JSON of the whole value."""
    from langgraph.store.base import get_text_at_path

    return get_text_at_path(value, "$")[0]


# -- namespace validation ------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", [("foo.bar",), ("foo", ""), ("foo", 1), ("a\x00",)])
@pytest.mark.parametrize("kind", ["get", "put", "delete", "search", "prefix", "suffix"])
def test_invalid_namespace_in_a_batch_changes_nothing(store: OgmemStore, namespace: Any, kind: str) -> None:
    ops = {
        "get": GetOp(namespace, "key"),
        "put": PutOp(namespace, "key", {"changed": True}),
        "delete": PutOp(namespace, "key", None),
        "search": SearchOp(namespace),
        "prefix": ListNamespacesOp((MatchCondition("prefix", namespace),)),
        "suffix": ListNamespacesOp((MatchCondition("suffix", namespace),)),
    }
    store.put(("foo", "bar"), "key", {"original": True})
    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp(("valid",), "key", {}), ops[kind]])
    item = store.get(("foo", "bar"), "key")
    assert item is not None and item.value == {"original": True}
    assert store.get(("valid",), "key") is None


def test_invalid_namespaces_on_public_methods(store: OgmemStore) -> None:
    store.put(("foo", "bar"), "key", {"original": True})
    for call in (
        lambda: store.get(("foo.bar",), "key"),
        lambda: store.delete(("foo.bar",), "key"),
        lambda: store.search(("foo.bar",)),
        lambda: store.put((), "key", {}),
        lambda: store.put(("langgraph", "x"), "key", {}),
        lambda: store.batch([PutOp((), "key", {})]),
    ):
        with pytest.raises(InvalidNamespaceError):
            call()
    with pytest.raises(InvalidInputError):
        store.put(("ok",), "key", {"bad": float("nan")})
    item = store.get(("foo", "bar"), "key")
    assert item is not None and item.value == {"original": True}


def test_hierarchical_search_and_listing_preserved(store: OgmemStore) -> None:
    namespaces = [("user_%",), ("user_%", "child"), ("userX%",), ("USER_%",)]
    for namespace in namespaces:
        store.put(namespace, "key", {})
    assert {item.namespace for item in store.search(())} == set(namespaces)
    assert {item.namespace for item in store.search(("user_%",))} == set(namespaces[:2])
    assert store.list_namespaces(prefix=("user_%", "*")) == [("user_%", "child")]


# -- TTL -------------------------------------------------------------------------------------------


def _ttl_store(manager: SessionManager, **ttl: Any) -> OgmemStore:
    return OgmemStore(manager=manager, ttl=ttl)  # type: ignore[arg-type]


def test_omit_expired_hides_expired_rows_from_every_read(manager: SessionManager) -> None:
    store = _ttl_store(manager, default_ttl=5, omit_expired=True)
    assert store.supports_ttl
    store.put(("omit", "expired"), "e", {"data": "gone"}, ttl=EXPIRED_AT_ONCE)
    store.put(("omit", "control"), "c", {"data": "keep"}, ttl=None)
    assert store.get(("omit", "expired"), "e") is None
    assert store.get(("omit", "control"), "c") is not None
    assert store.search(("omit", "expired")) == []
    assert [i.key for i in store.search(("omit", "control"))] == ["c"]
    assert store.list_namespaces(prefix=("omit",)) == [("omit", "control")]
    assert store.item_store.get(("omit", "expired"), "e") is not None  # unswept, just hidden
    assert store.sweep_ttl() == 1


@pytest.mark.parametrize("omit", [None, False])
def test_without_omit_expired_unswept_rows_stay_readable(manager: SessionManager, omit: bool | None) -> None:
    store = (
        _ttl_store(manager, default_ttl=5)
        if omit is None
        else _ttl_store(manager, default_ttl=5, omit_expired=omit)
    )
    store.put(("keep",), "k", {"data": "still-here"}, ttl=EXPIRED_AT_ONCE)
    assert store.get(("keep",), "k", refresh_ttl=False) is not None
    assert [i.key for i in store.search(("keep",), refresh_ttl=False)] == ["k"]
    assert ("keep",) in store.list_namespaces(prefix=("keep",))
    assert store.sweep_ttl() == 1
    assert store.get(("keep",), "k") is None


def test_default_ttl_refresh_and_override(manager: SessionManager) -> None:
    store = _ttl_store(manager, default_ttl=60, refresh_on_read=True, omit_expired=True)
    store.put(("t",), "default", {"v": 1})
    store.put(("t",), "never", {"v": 2}, ttl=None)
    store.put(("t",), "dead", {"v": 3}, ttl=EXPIRED_AT_ONCE)
    raw = store.item_store
    default, never, dead = (raw.get(("t",), k) for k in ("default", "never", "dead"))
    assert default is not None and default.ttl_minutes == 60 and default.expires_at is not None
    assert never is not None and never.expires_at is None
    assert dead is not None
    assert store.get(("t",), "default") is not None  # refresh_on_read: the TTL restarts
    refreshed = raw.get(("t",), "default")
    assert (
        refreshed is not None
        and refreshed.expires_at is not None
        and refreshed.expires_at >= default.expires_at
    )
    assert store.get(("t",), "dead", refresh_ttl=True) is None  # never resurrected
    after = raw.get(("t",), "dead")
    assert after is not None and after.expires_at == dead.expires_at
    assert [i.key for i in store.search(("t",))] == ["never", "default"]


def test_ttl_sweeper_thread(manager: SessionManager) -> None:
    store = _ttl_store(manager, default_ttl=EXPIRED_AT_ONCE, sweep_interval_minutes=0.001)
    store.put(("s",), "item", {"v": 1})
    future = store.start_ttl_sweeper()
    try:
        deadline = time.monotonic() + 20
        while store.get(("s",), "item") is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.get(("s",), "item") is None
    finally:
        assert store.stop_ttl_sweeper(timeout=10)
    assert future.result(timeout=10) is None
    assert store.stop_ttl_sweeper() is True  # idempotent


def test_ttl_sweeper_without_ttl_config_does_nothing(store: OgmemStore) -> None:
    assert store.start_ttl_sweeper().done()
    assert store.stop_ttl_sweeper() is True


def test_invalid_ttl_configs() -> None:
    for ttl in (
        {"default_ttl": 0},
        {"default_ttl": "5"},
        {"sweep_interval_minutes": -1},
        {"refresh": True},
        [],
    ):
        with pytest.raises(ConfigError):
            OgmemStore("memory://", ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        OgmemStore("memory://").put(("a",), "k", {}, ttl=-1)


# -- async ----------------------------------------------------------------------------------------


async def test_async_twins_with_an_async_embedder(manager: SessionManager) -> None:
    sync = CharEmbeddings(dims=32)

    async def aembed(texts: list[str]) -> list[list[float]]:
        await asyncio.sleep(0)
        return sync.embed_documents(texts)

    store = OgmemStore(manager=manager, index={"dims": 32, "embed": aembed, "fields": ["text"]})
    await store.asetup()
    await store.aput(("docs",), "a", {"text": "apple pie"})
    await store.aput(("docs",), "b", {"text": "car engine"})
    got = await store.aget(("docs",), "a")
    assert got is not None and got.value == {"text": "apple pie"}
    assert (await store.asearch(("docs",), query="apple"))[0].key == "a"
    assert await store.alist_namespaces() == [("docs",)]
    await store.adelete(("docs",), "a")
    assert await store.aget(("docs",), "a") is None
    results = await store.abatch([GetOp(("docs",), "b"), SearchOp(("docs",), query="engine", limit=1)])
    assert isinstance(results[0], Item) and [i.key for i in results[1]] == ["b"]  # type: ignore[union-attr]
    assert await store.asweep_ttl() == 0


# -- options, failures, sharing ---------------------------------------------------------------------


def test_index_options_are_checked(embeddings: CharEmbeddings) -> None:
    with pytest.raises(ConfigError, match="provider strings"):
        OgmemStore("memory://", index={"dims": 3, "embed": "openai:text-embedding-3-small"})
    for index in (
        {"embed": embeddings},
        {"dims": 0, "embed": embeddings},
        {"dims": 3},
        {"dims": 3, "embed": embeddings, "fields": "text"},
        {"dims": 3, "embed": embeddings, "distance": "l2"},
    ):
        with pytest.raises(ConfigError):
            OgmemStore("memory://", index=index)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OgmemStore("memory://", manager=SessionManager(InMemoryStore()))


def test_embedding_failures_write_nothing(manager: SessionManager) -> None:
    wrong = OgmemStore(manager=manager, index={"dims": 5, "embed": CharEmbeddings(dims=4)})
    with pytest.raises(EmbeddingError, match="dimensions"):
        wrong.batch([PutOp(("a",), "ok", {"x": 1}, index=False), PutOp(("a",), "k", {"text": "hello"})])
    assert wrong.get(("a",), "ok") is None

    def broken(texts: list[str]) -> list[list[float]]:
        raise RuntimeError("embedding service down")

    failing = OgmemStore(manager=manager, index={"dims": 4, "embed": broken})
    with pytest.raises(EmbeddingError, match="embedding service down"):
        failing.put(("a",), "k", {"text": "hello"})
    assert failing.get(("a",), "k") is None
    failing.put(("a",), "k2", {"text": "not embedded"}, index=False)  # nothing to embed: no call
    assert failing.get(("a",), "k2") is not None


def test_default_url_is_ogmem_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.db"
    monkeypatch.setenv("OGMEM_DB", str(path))
    with OgmemStore() as store:
        assert isinstance(store.item_store, SQLiteItemStore) and store.item_store.path == str(path)
        store.put(("a",), "k", {"v": 1})
    with OgmemStore(f"sqlite:///{path}") as again:
        item = again.get(("a",), "k")
        assert item is not None and item.value == {"v": 1}


def test_manager_store_shares_the_session_database(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    manager = SessionManager(SQLiteStore(path))
    try:
        store = OgmemStore(manager=manager)
        assert store.item_store is item_store_for(manager.store)
        store.put(("memories", "alice"), "m1", {"text": "Alice likes tea"})
        manager.add_message("s1", "user", "hello")
        store.close()  # the item store belongs to the manager's store: it stays usable
        found = item_store_for(manager.store).search(("memories", "alice"), query="tea")
        assert [i.key for i in found] == ["m1"]
    finally:
        item_store_for(manager.store).close()
        manager.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM ogmem_items WHERE ns = 'memories.alice'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM ogmem_messages").fetchone()[0] == 1


# -- create_agent end to end ---------------------------------------------------------------------------

USER_NS = ("memories", "user-1")


@tool
def save_memory(fact: str, runtime: ToolRuntime) -> str:
    """Remember a fact about the user for later conversations."""
    assert runtime.store is not None
    key = f"fact-{len(runtime.store.search(USER_NS, limit=100))}"
    runtime.store.put(USER_NS, key, {"text": fact})
    return f"saved {key}"


@tool
def recall_memories(query: str) -> str:
    """Look up what is known about the user."""
    store = get_store()
    found = store.search(USER_NS, query=query, limit=3)
    return " | ".join(item.value["text"] for item in found) or "nothing"


def _call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_create_agent_keeps_memories_across_threads(tmp_path: Path, use_async: bool) -> None:
    url = f"sqlite:///{tmp_path}/agent.db"
    model = FakeToolCallingChatModel(
        messages=iter(
            [
                _call("save_memory", {"fact": "The user's favourite tea is genmaicha"}, "c1"),
                AIMessage("Noted: genmaicha."),
                _call("recall_memories", {"query": "favourite tea"}, "c2"),
                AIMessage("Your favourite tea is genmaicha."),
            ]
        )
    )
    with OgmemStore(url) as store:
        agent = create_agent(model, [save_memory, recall_memories], store=store)
        first = {"messages": [HumanMessage("Remember that my favourite tea is genmaicha.")]}
        second = {"messages": [HumanMessage("What is my favourite tea?")]}
        if use_async:
            await agent.ainvoke(first, {"configurable": {"thread_id": "t1"}})
            out = await agent.ainvoke(second, {"configurable": {"thread_id": "t2"}})
        else:
            agent.invoke(first, {"configurable": {"thread_id": "t1"}})
            out = agent.invoke(second, {"configurable": {"thread_id": "t2"}})
    tool_messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_messages] == ["The user's favourite tea is genmaicha"]
    assert out["messages"][-1].content == "Your favourite tea is genmaicha."
    # thread t2 started empty: the fact reached it through the store only
    assert not any("Remember" in str(m.content) for m in out["messages"])
    with OgmemStore(url) as reopened:  # durable: a new store (a new process) reads it back
        [item] = reopened.search(USER_NS)
        assert item.key == "fact-0" and item.value == {"text": "The user's favourite tea is genmaicha"}


# -- the memories ogmem extracts, through LangGraph's store (issue 12, item 6) -------------------

# Commits after two turns, so a short conversation lands an archive and its extraction.
COMMIT_SOON = MemoryConfig(
    commit_token_threshold=40, commit_turn_threshold=2, keep_recent_messages=1, keep_recent_tokens=0
)
ADA = RequestContext("acme", "ada")
ADA_NS = ("memories", "acme", "ada", "default")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def talked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionManager]:
    """A manager whose users told it facts in conversations, every extraction landed."""
    m = _manager(request.param, tmp_path, request, COMMIT_SOON)
    factory = history_factory(manager=m, account_id="acme")
    for user_id, facts in [
        ("ada", ["I live in Lisbon.", "My cat is called Whiskers."]),
        ("bob", ["I live in Oslo."]),
        ("ada.l@example.org", ["I work at Initech."]),
    ]:
        history = factory(user_id, "c-1")
        for fact in (*facts, "Anything else for today?"):
            history.add_messages([HumanMessage(fact), AIMessage("Got it.")])
    m.wait_for_tasks()
    yield m
    item_store_for(m.store).close()
    m.close()


def test_langchain_ogmem_exports_the_store() -> None:
    import langchain_ogmem

    assert langchain_ogmem.OgmemStore is OgmemStore and "OgmemStore" in langchain_ogmem.__all__


def test_extracted_memories_are_items_of_the_documented_namespace(talked: SessionManager) -> None:
    records = {r.memory_id: r for r in talked.list_memories(ADA)}
    assert any("Lisbon" in r.content for r in records.values())
    with OgmemStore(manager=talked) as store:
        found = store.search(ADA_NS, limit=100)
        assert {i.key: i.value for i in found} == {k: r.to_dict() for k, r in records.items()}
        assert {i.namespace for i in found} == {ADA_NS}
        # the user's prefix holds every agent's memories of the user: here, the same ones
        assert sorted(i.key for i in store.search(("memories", "acme", "ada"), limit=100)) == sorted(records)
        (key, record), *_ = records.items()
        item = store.get(ADA_NS, key)
        assert item is not None and item.value == record.to_dict() and item.key == record.memory_id
        [best, *_] = store.search(ADA_NS, query="Lisbon")
        assert "Lisbon" in best.value["content"]
        # labels are percent-encoded: "." is "%2E" (LangGraph labels hold no dot), "%" is "%25"
        assert store.list_namespaces(prefix=("memories", "acme")) == [
            ("memories", "acme", "ada", "default"),
            ("memories", "acme", "ada%2El@example%2Eorg", "default"),
            ("memories", "acme", "bob", "default"),
        ]
        dotted = store.search(("memories", "acme", "ada%2El@example%2Eorg"))
        assert [i.value["user_id"] for i in dotted] == ["ada.l@example.org"] * len(dotted) and dotted
        bob = " ".join(i.value["content"] for i in store.search(("memories", "acme", "bob")))
        assert "Oslo" in bob and "Lisbon" not in bob and "Whiskers" not in bob
        assert store.search(("memories", "globex")) == []


def test_the_store_and_the_manager_see_the_same_changes(talked: SessionManager) -> None:
    (cat,) = [r for r in talked.list_memories(ADA) if "Whiskers" in r.content]
    (home,) = [r for r in talked.list_memories(ADA) if "Lisbon" in r.content]
    with OgmemStore(manager=talked) as store:
        store.delete(ADA_NS, cat.memory_id)  # deleted through LangGraph: gone from ogmem's context
        talked.add_message("later", "user", "What is my cat called?", ADA)
        assert all("Whiskers" not in text for text in talked.get_context("later", ctx=ADA).memories)
        assert cat.memory_id not in {r.memory_id for r in talked.list_memories(ADA)}
        talked.edit_memory(ADA, home.memory_id, "User lives in Porto.")  # edited by ogmem: seen here
        item = store.get(ADA_NS, home.memory_id)
        assert item is not None and item.value["content"] == "User lives in Porto."
        assert item.value["history"][-1] == home.content


def _record(
    memory_id: str, *, user_id: str = "ada", content: str = "User likes genmaicha tea."
) -> MemoryRecord:
    now = utc_now()
    return MemoryRecord(
        memory_id=memory_id,
        account_id="acme",
        user_id=user_id,
        agent_id="default",
        category="preferences",
        key="pref:tea",
        content=content,
        confidence=0.9,
        source_session_id="",
        source_message_ids=(),
        created_at=now,
        updated_at=now,
    )


@pytest.mark.parametrize(
    ("namespace", "key", "value"),
    [
        (ADA_NS, "note-1", {"text": "likes tea"}),  # what an agent's tool would naturally write
        ((*ADA_NS, "notes"), "note-1", {"text": "likes tea"}),  # below it: ogmem reads that too
        (ADA_NS, "mem_other", _record("mem_tea").to_dict()),  # a record under another key
        (("memories", "acme", "bob", "default"), "mem_tea", _record("mem_tea").to_dict()),  # ada's, at bob's
    ],
    ids=["plain-value", "deeper-namespace", "wrong-key", "wrong-user"],
)
def test_a_put_that_would_corrupt_a_users_memories_is_refused(
    talked: SessionManager, namespace: tuple[str, ...], key: str, value: dict[str, Any]
) -> None:
    """Regression: a plain value at or below ada's namespace made ogmem drop all of her
    memories from every context (the read failed on it, logged) and ``list_memories`` raise;
    a record under another key could never be deleted by ``delete_memory``, and one at
    another user's place would reach that user's context."""
    before = talked.list_memories(ADA)
    with OgmemStore(manager=talked) as store:
        with pytest.raises(InvalidInputError, match="MemoryRecord"):
            store.batch([PutOp(("elsewhere",), "fine", {"v": 1}), PutOp(namespace, key, value)])
        assert store.get(("elsewhere",), "fine") is None  # the whole batch wrote nothing
        assert store.get(namespace, key) is None
    assert talked.list_memories(ADA) == before
    talked.add_message("after", "user", "Where do I live?", ADA)
    assert any("Lisbon" in text for text in talked.get_context("after", ctx=ADA).memories)


async def test_a_memory_record_put_through_the_store_is_a_memory(talked: SessionManager) -> None:
    with OgmemStore(manager=talked) as store:
        store.put(ADA_NS, "mem_tea", _record("mem_tea").to_dict())
        await store.aput(ADA_NS, "mem_coffee", _record("mem_coffee", content="User likes coffee.").to_dict())
        store.put(("memories", "ada"), "fact-0", {"text": "LangMem's own layout: any value"})
    ids = {r.memory_id for r in talked.list_memories(ADA)}
    assert {"mem_tea", "mem_coffee"} <= ids
    talked.add_message("tea", "user", "What tea do I like?", ADA)
    assert "User likes genmaicha tea." in talked.get_context("tea", ctx=ADA).memories


THREAD_NOTES = ("notes", "acme", "ada")


@tool
def save_note(fact: str) -> str:
    """Remember a fact about the user for later conversations."""
    store = get_store()
    key = f"note-{len(store.search(THREAD_NOTES, limit=100))}"
    store.put(THREAD_NOTES, key, {"text": fact})
    return f"saved {key}"


@tool
def what_is_known(query: str) -> str:
    """Everything known about the user: ogmem's extracted memories and the saved notes."""
    store = get_store()
    memories = [i.value["content"] for i in store.search(("memories", "acme", "ada"), query=query, limit=5)]
    notes = [i.value["text"] for i in store.search(THREAD_NOTES, limit=5)]
    return " | ".join(memories + notes) or "nothing"


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_create_agent_reads_what_ogmem_extracted_in_another_thread(
    tmp_path: Path, use_async: bool
) -> None:
    """Thread t1 says where the user lives and saves a note; in t2 a tool finds both in the store."""
    model = FakeToolCallingChatModel(
        messages=iter(
            [
                _call("save_note", {"fact": "Prefers the window seat"}, "c1"),
                AIMessage("Noted."),
                AIMessage("You're welcome."),
                AIMessage("Bye."),
                _call("what_is_known", {"query": "where does the user live"}, "c2"),
                AIMessage("You live in Lisbon and prefer the window seat."),
            ]
        )
    )
    with SessionManager(f"sqlite:///{tmp_path}/agent.db", config=COMMIT_SOON) as manager:
        store = OgmemStore(manager=manager)
        middleware = OgmemMemoryMiddleware(manager=manager, user_id="ada", account_id="acme")
        agent = create_agent(model, [save_note, what_is_known], middleware=[middleware], store=store)

        async def run(text: str, thread: str) -> dict[str, Any]:
            value = {"messages": [HumanMessage(text)]}
            config: Any = {"configurable": {"thread_id": thread}}
            out: dict[str, Any] = (
                await agent.ainvoke(value, config) if use_async else agent.invoke(value, config)
            )
            return out

        for text in ["I live in Lisbon. Remember my seat preference.", "Thanks!", "Bye for now."]:
            await run(text, "t1")
        manager.wait_for_tasks()
        out = await run("What do you know about me?", "t2")
        [result] = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        assert "User lives in Lisbon." in str(result.content) and "Prefers the window seat" in str(
            result.content
        )
        assert not any("Lisbon" in str(m.content) for m in out["messages"] if isinstance(m, HumanMessage))
        store.close()
