"""Issue 11: recall by meaning (an embedder), hybrid ranking, and recall that belongs to its user.

Unit tests use a deterministic concept embedder (a fixed word -> concept table, so a
question and a fact that share no word can still be near); one end-to-end test uses the
shipped ``WordLlamaEmbedder``; the pgvector path runs on a throwaway server.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ogmem_memory import ConfigError, MemoryConfig, RequestContext, SessionManager
from ogmem_memory.recall import STOPWORDS
from ogmem_memory.stores import InMemoryStore, SQLiteStore
from tests.conftest import postgres_dsn_or_skip

if TYPE_CHECKING:
    from tests.pg_throwaway import ThrowawayPostgres

pytest_plugins = ["tests.pg_throwaway"]

ALICE = RequestContext(account_id="acme", user_id="alice")
BOB = RequestContext(account_id="acme", user_id="bob")
SMALL = MemoryConfig(commit_token_threshold=60, commit_turn_threshold=3, keep_recent_messages=1, keep_recent_tokens=0)

# Words that mean the same thing share a concept axis; every other word gets its own.
CONCEPTS = {
    "cat": "pet", "pet": "pet", "dog": "pet", "kitten": "pet",
    "called": "name", "name": "name", "named": "name",
    "fly": "travel", "flying": "travel", "flight": "travel", "travel": "travel", "trip": "travel",
    "afraid": "fear", "scared": "fear", "fear": "fear",
}
DIMS = 64


class ConceptEmbedder:
    """Deterministic bag of concepts, L2-normalised: a stand-in with a notion of synonymy."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    @staticmethod
    def _vector(text: str) -> list[float]:
        v = [0.0] * DIMS
        for word in re.findall(r"[a-z]+", text.lower()):
            if word in STOPWORDS:
                continue
            concept = CONCEPTS.get(word, word)
            v[sum(map(ord, concept)) % DIMS] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


FILLER = [
    "What should we cook tonight?",
    "Pasta with tomatoes sounds good.",
    "Did you water the plants?",
    "Yes, this morning.",
    "The weather is grey again.",
    "Bring an umbrella tomorrow.",
]


def _conversation(m: SessionManager, sid: str, ctx: RequestContext | None, fact: str) -> None:
    m.add_message(sid, "user", fact, ctx)
    m.add_message(sid, "assistant", "Noted.", ctx)
    for i in range(30):
        m.add_message(sid, "user", f"{FILLER[i % len(FILLER)]} ({i})", ctx)
        m.add_message(sid, "assistant", FILLER[(i + 1) % len(FILLER)], ctx)
    m.wait_for_tasks()


def _recalled(m: SessionManager, sid: str, query: str, ctx: RequestContext | None = None) -> list[str]:
    return [x.content for x in m.get_context(sid, 400, ctx, query=query).recalled]


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'r.db'}"


def test_a_paraphrased_question_finds_a_fact_that_shares_no_word(store_url: str) -> None:
    fact = "My cat is called Whiskers."
    question = "What is the name of the pet?"
    with SessionManager(store_url, config=SMALL) as lexical:
        _conversation(lexical, "s", None, fact)
        assert fact not in _recalled(lexical, "s", question)  # no shared word: words alone miss it
    embedder = ConceptEmbedder()
    url = store_url if store_url == "memory://" else store_url.replace("r.db", "r2.db")
    with SessionManager(url, config=SMALL, embedder=embedder) as m:
        _conversation(m, "s", None, fact)
        assert fact in _recalled(m, "s", question)
        assert embedder.calls and max(embedder.calls) > 1  # embedded in batches, at commit


def test_hybrid_is_never_worse_than_lexical_on_lexical_questions(store_url: str) -> None:
    facts = ["Invoice INV-2024-0042 is overdue.", "The locker code is 4471.", "Grace Hopper wrote COBOL."]
    questions = ["Which invoice INV-2024-0042?", "locker code 4471", "Grace Hopper COBOL"]
    url2 = store_url if store_url == "memory://" else store_url.replace("r.db", "r2.db")
    with SessionManager(store_url, config=SMALL) as lexical, SessionManager(
        url2, config=SMALL, embedder=ConceptEmbedder()
    ) as hybrid:
        for m in (lexical, hybrid):
            for fact in facts:
                _conversation(m, "s", None, fact)
        for fact, q in zip(facts, questions, strict=True):
            assert fact in _recalled(lexical, "s", q)
            assert fact in _recalled(hybrid, "s", q)


def test_recall_by_meaning_never_crosses_sessions_or_users(store_url: str) -> None:
    with SessionManager(store_url, config=SMALL, embedder=ConceptEmbedder()) as m:
        _conversation(m, "bob-s", BOB, "My cat is called Tiger.")
        _conversation(m, "alice-s", ALICE, "The train leaves at nine.")
        _conversation(m, "alice-2", ALICE, "My dog is named Rex.")
        recalled = _recalled(m, "alice-s", "What is the name of the pet?", ALICE)
        assert not any("Tiger" in r or "Rex" in r for r in recalled)
        everywhere = m.store.search_vectors(ConceptEmbedder._vector("pet name"), owner=ALICE.owner, limit=50)
        assert all(x.content != "My cat is called Tiger." for x in everywhere)


def test_a_users_recall_does_not_change_when_others_fill_the_database(tmp_path: Path) -> None:
    """Ranking statistics are the session's own: 1,000 other users' sessions, full of the
    query's words, change nothing in what alice gets recalled."""
    config = MemoryConfig(
        commit_token_threshold=60, commit_turn_threshold=3, keep_recent_messages=1, keep_recent_tokens=0
    )
    question = "What did we say about the invoice and the locker?"
    with SessionManager(f"sqlite:///{tmp_path / 'x.db'}", config=config, embedder=ConceptEmbedder()) as m:
        for fact in ("The invoice is paid.", "The locker is on floor two.", "The invoice was late once."):
            _conversation(m, "alice-s", ALICE, fact)
        before = _recalled(m, "alice-s", question, ALICE)
        assert before
        for i in range(1000):
            other = RequestContext(account_id="acme", user_id=f"user{i}")
            m.add_messages(
                f"other-{i}",
                [
                    {"role": "user", "content": f"invoice locker invoice {i}"},
                    {"role": "assistant", "content": "the locker and the invoice"},
                ],
                other,
            )
            m.commit(f"other-{i}", other, wait=True)
        assert _recalled(m, "alice-s", question, ALICE) == before


def test_an_embedder_that_fails_leaves_recall_by_words(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(ConceptEmbedder):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("service down")

        def embed_query(self, text: str) -> list[float]:
            raise RuntimeError("service down")

    with caplog.at_level("WARNING", logger="ogmem"), SessionManager(store_url, config=SMALL, embedder=Broken()) as m:
        _conversation(m, "s", None, "The locker code is 4471.")
        assert m.list_archives("s"), "commits land without vectors"
        assert "The locker code is 4471." in _recalled(m, "s", "locker code")
    assert any("service down" in r.getMessage() for r in caplog.records)


def test_postgres_without_pgvector_is_a_clear_error() -> None:
    """The shared server of this machine has no pgvector: configuring an embedder says so."""
    import psycopg

    from ogmem_memory.stores.postgres import PostgresStore

    dsn = postgres_dsn_or_skip()
    with psycopg.connect(dsn, autocommit=True) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if available:
        pytest.skip("this server has pgvector; the pgvector test covers it")  # pragma: no cover
    schema = "t_novec_" + str(abs(hash(dsn)) % 10_000)
    store = PostgresStore(dsn, schema=schema)
    try:
        with pytest.raises(ConfigError, match="pgvector"):
            SessionManager(store, embedder=ConceptEmbedder()).add_message("s", "user", "hi")
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_pgvector_recall_on_a_throwaway_server(throwaway_pg: ThrowawayPostgres, throwaway_schema: str) -> None:
    from ogmem_memory.stores.postgres import PostgresStore

    assert throwaway_pg.has_pgvector
    store = PostgresStore(throwaway_pg.dsn, schema=throwaway_schema)
    with SessionManager(store, config=SMALL, embedder=ConceptEmbedder()) as m:
        _conversation(m, "s", ALICE, "My cat is called Whiskers.")
        _conversation(m, "bob", BOB, "My kitten is named Tiger.")
        recalled = _recalled(m, "s", "What is the name of the pet?", ALICE)
        assert "My cat is called Whiskers." in recalled
        assert not any("Tiger" in r for r in recalled)
        m.delete_session("s", ALICE)  # vectors go with their messages
        assert m.store.search_vectors(ConceptEmbedder._vector("pet"), owner=ALICE.owner, limit=10) == []


def test_wordllama_end_to_end(tmp_path: Path) -> None:
    from ogmem_memory.embeddings import WordLlamaEmbedder

    with SessionManager(f"sqlite:///{tmp_path / 'w.db'}", config=SMALL, embedder=WordLlamaEmbedder()) as m:
        _conversation(m, "s", None, "My cat is called Whiskers.")
        assert "My cat is called Whiskers." in _recalled(m, "s", "What is the name of my pet?")


def test_in_memory_and_sqlite_store_vectors_with_their_messages(tmp_path: Path) -> None:
    for store in (InMemoryStore(), SQLiteStore(tmp_path / "v.db")):
        with SessionManager(store, config=SMALL, embedder=ConceptEmbedder()) as m:
            _conversation(m, "s", None, "My cat is called Whiskers.")
            assert m.store.search_vectors(ConceptEmbedder._vector("pet"), session_id="s", limit=3)
            m.clear_session("s")
            assert m.store.search_vectors(ConceptEmbedder._vector("pet"), session_id="s", limit=3) == []
