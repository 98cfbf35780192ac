"""Issue 12: ``MemoryConfig(recall_scope="user")``: what a user said in one session is recalled in
the next, labelled with its session, and a new session starts from a digest of the latest ones;
never another user's text, and never on the default scope (issue 11's rule).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ogmem_memory import AccessDeniedError, ConfigError, MemoryConfig, RequestContext, SessionManager
from ogmem_memory.compress.base import compact_overview
from ogmem_memory.reading import DIGEST_SESSIONS
from ogmem_memory.rendering import DIGEST_HEADER, RECALLED_HEADER, RECALLED_SESSIONS_HEADER
from ogmem_memory.stores import InMemoryStore, SQLiteStore
from ogmem_memory.stores.base import SessionStore
from tests.conftest import postgres_dsn_or_skip
from tests.core.test_recall_meaning import ConceptEmbedder

if TYPE_CHECKING:
    from tests.pg_throwaway import ThrowawayPostgres

pytest_plugins = ["tests.pg_throwaway"]

ADA = RequestContext(account_id="acme", user_id="ada")
BOB = RequestContext(account_id="acme", user_id="bob")
SESSION = MemoryConfig(
    commit_token_threshold=60,
    commit_turn_threshold=3,
    keep_recent_messages=1,
    keep_recent_tokens=0,
    extract_memories=False,  # what crosses sessions here is recall, not extracted memories
)
USER = replace(SESSION, recall_scope="user")
FACT = "My sister Carla moved to Porto with her parrot Mango."
REPLY = "Porto suits Carla: the tram line 28 passes her flat."
FILLER = [
    "What should we cook tonight?",
    "Pasta with tomatoes sounds good.",
    "Did you water the plants?",
    "Yes, this morning.",
    "The weather is grey again.",
    "Bring an umbrella tomorrow.",
]


def _store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if kind == "memory":
        return InMemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "scope.db")
    from ogmem_memory.stores.postgres import PostgresStore

    return PostgresStore(postgres_dsn_or_skip(), schema=request.getfixturevalue("postgres_schema"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def user_scope(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionManager]:
    m = SessionManager(_store(kind, request, tmp_path), config=USER)
    yield m
    m.close()


def talk(m: SessionManager, sid: str, ctx: RequestContext | None, *facts: str, turns: int = 6) -> None:
    """A session: the facts (each answered), some filler, everything committed."""
    for fact in facts:
        m.add_message(sid, "user", fact, ctx)
        m.add_message(sid, "assistant", REPLY if fact == FACT else "Noted.", ctx)
    for i in range(turns):
        m.add_message(sid, "user", f"{FILLER[i % len(FILLER)]} ({sid} {i})", ctx)
        m.add_message(sid, "assistant", FILLER[(i + 1) % len(FILLER)], ctx)
    m.commit(sid, ctx, wait=True)
    m.wait_for_tasks()


def test_a_fact_of_session_one_is_recalled_in_session_two_labelled_with_its_session(
    user_scope: SessionManager,
) -> None:
    m = user_scope
    talk(m, "ada-1", ADA, FACT)
    talk(m, "ada-2", ADA)  # another session with archives of its own, at the same seqs
    m.add_message("ada-3", "user", "Hello again!", ADA)
    for sid in ("ada-2", "ada-3"):
        context = m.get_context(sid, 600, ADA, query="Where did Carla move?")
        assert FACT in [r.content for r in context.recalled]
        assert {r.session_id for r in context.recalled if "Carla" in r.content} == {"ada-1"}
        # the neighbour comes from the hit's own session: the reply, not ada-2's turn at that seq
        assert REPLY in [r.content for r in context.recalled]
        text = context.to_text()
        assert RECALLED_SESSIONS_HEADER.strip() in text
        label = text.index("[session ada-1]")
        assert label < text.index(FACT) < text.index(REPLY)
        assert context.token_count <= 600
        assert context.to_dict()["recalled"][0]["session_id"]


def test_never_another_users_text_even_at_the_same_account(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with SessionManager(_store(kind, request, tmp_path), config=USER) as m:
        talk(m, "ada-1", ADA, FACT)
        talk(m, "bob-1", BOB, "My sister Carla lives in Faro.")
        m.add_message("bob-2", "user", "Where did Carla move?", BOB)
        for query in ("Where did Carla move?", None):
            text = m.get_context("bob-2", 2000, BOB, query=query).to_text()
            assert "Porto" not in text and "Mango" not in text and "ada" not in text
        assert "Faro" in m.get_context("bob-2", 2000, BOB, query="Carla").to_text()  # Bob's own
        with pytest.raises(AccessDeniedError):  # Bob cannot read through Ada's session id
            m.get_context("ada-1", 2000, BOB, query="Carla")
        assert all(x.session_id.startswith("bob") for x in m.store.search_messages("Carla", owner=BOB.owner))


def test_the_default_scope_never_reads_another_session(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    assert MemoryConfig().recall_scope == "session"
    with SessionManager(_store(kind, request, tmp_path), config=SESSION) as m:
        talk(m, "ada-1", ADA, FACT)
        talk(m, "ada-2", ADA)
        m.add_message("ada-3", "user", "Hello again!", ADA)
        for sid in ("ada-2", "ada-3"):
            for query in ("Where did Carla move?", None):
                context = m.get_context(sid, 2000, ADA, query=query)
                assert "Carla" not in context.to_text()
                assert context.digest == ()
                assert all(r.session_id == sid for r in context.recalled)


def test_without_a_request_context_user_scope_recalls_like_session(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with SessionManager(_store(kind, request, tmp_path), config=USER) as m:
        talk(m, "one", None, FACT)
        talk(m, "two", None)
        m.add_message("three", "user", "Hello again!")
        for sid in ("two", "three"):
            context = m.get_context(sid, 2000, query="Where did Carla move?")
            assert "Carla" not in context.to_text() and context.digest == ()


def test_a_new_session_starts_from_a_digest_of_the_latest_sessions(user_scope: SessionManager) -> None:
    m = user_scope
    talk(m, "ada-1", ADA, FACT)
    talk(m, "ada-2", ADA, "The quarterly report is due on Friday.")
    m.add_message("ada-3", "user", "Hello again!", ADA)
    context = m.get_context("ada-3", 2000, ADA)
    assert len(context.digest) == 2
    assert context.digest[0].startswith("[session ada-2]\n")
    assert context.digest[1].startswith("[session ada-1]\n")
    newest = m.store.list_recent_archives(ADA.owner, exclude_session="ada-3")
    assert [a.session_id for a in newest] == ["ada-2", "ada-1"]
    # the newest session's overview, without its empty sections
    assert compact_overview(newest[0].overview) in context.digest[0]
    assert "- None" not in context.digest[0]
    assert DIGEST_HEADER.strip() in context.to_text() and "Carla" in context.to_text()
    # a session with a summary of its own reads that instead
    own = m.get_context("ada-2", 2000, ADA)
    assert own.digest == () and own.summary
    # the same without the option: no digest
    plain = SessionManager(m.store, config=SESSION)
    assert plain.get_context("ada-3", 2000, ADA).digest == ()


def test_the_budget_holds_with_many_sessions(user_scope: SessionManager) -> None:
    m = user_scope
    for i in range(12):
        talk(m, f"ada-{i}", ADA, FACT if i == 3 else f"Session {i} was about the garden shed.", turns=4)
    m.add_message("ada-new", "user", "Where did Carla move? And what about the garden shed?", ADA)
    counter = m.token_counter
    for budget in (1, 20, 60, 150, 400, 1000, 4000):
        for query in (None, "Carla Porto garden shed"):
            context = m.get_context("ada-new", budget, ADA, query=query)
            live = sum(x.tokens for x in context.messages)
            preamble = context.preamble()
            assert context.token_count == (counter.count(preamble) if preamble else 0) + live
            assert context.token_count <= max(budget, live)
    digest = m.get_context("ada-new", 4000, ADA).digest
    assert len(digest) == 12 <= DIGEST_SESSIONS  # every other session, newest first
    assert [d.split("]")[0] for d in digest] == [f"[session ada-{i}" for i in range(11, -1, -1)]
    # a backend's own query returns what the contract's default does
    for limit, exclude in ((3, None), (3, "ada-new"), (40, "ada-5"), (0, None)):
        fast = m.store.list_recent_archives(ADA.owner, session_limit=limit, exclude_session=exclude)
        slow = SessionStore.list_recent_archives(
            m.store, ADA.owner, session_limit=limit, exclude_session=exclude
        )
        assert [(a.session_id, a.archive_id, a.overview) for a in fast] == [
            (a.session_id, a.archive_id, a.overview) for a in slow
        ]
    assert len(m.store.list_recent_archives(ADA.owner, session_limit=3)) == 2  # ada-new has none
    assert len(m.store.list_recent_archives(ADA.owner, session_limit=3, exclude_session="ada-new")) == 3


@pytest.mark.parametrize("value", ["everyone", "", "USER", 1, None])
def test_a_bad_recall_scope_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match="recall_scope"):
        MemoryConfig(recall_scope=value)


def test_search_results_name_their_session(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with SessionManager(_store(kind, request, tmp_path), config=USER) as m:
        talk(m, "ada-1", ADA, FACT)
        talk(m, "ada-2", ADA, "Carla sent a postcard.")
        found = m.store.search_messages("Carla", owner=ADA.owner, limit=10)
        assert {x.session_id for x in found} == {"ada-1", "ada-2"}
        assert {x.session_id for x in m.store.search_messages("Carla", session_id="ada-2")} == {"ada-2"}
        assert m.store.list_recent_archives(BOB.owner) == []


def _meaning(m: SessionManager) -> None:
    talk(m, "ada-1", ADA, "My cat is called Whiskers.")
    talk(m, "bob-1", BOB, "My kitten is named Tiger.")
    m.add_message("ada-2", "user", "Hello!", ADA)
    context = m.get_context("ada-2", 600, ADA, query="What is the name of the pet?")
    recalled = {r.content: r.session_id for r in context.recalled}
    assert recalled.get("My cat is called Whiskers.") == "ada-1"  # no shared word: by meaning
    assert not any("Tiger" in r for r in recalled)
    near = m.store.search_vectors(ConceptEmbedder._vector("pet name"), owner=ADA.owner, limit=50)
    assert near and all(x.session_id == "ada-1" for x in near)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_recall_by_meaning_crosses_the_users_sessions_only(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with SessionManager(_store(kind, request, tmp_path), config=USER, embedder=ConceptEmbedder()) as m:
        _meaning(m)


def test_pgvector_recall_crosses_the_users_sessions_only(
    throwaway_pg: ThrowawayPostgres, throwaway_schema: str
) -> None:
    from ogmem_memory.stores.postgres import PostgresStore

    store = PostgresStore(throwaway_pg.dsn, schema=throwaway_schema)
    with SessionManager(store, config=USER, embedder=ConceptEmbedder()) as m:
        _meaning(m)


def test_default_rendering_is_unchanged_for_one_session(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A context recalling only its own session reads as before: no labels, the plain header."""
    with SessionManager(_store(kind, request, tmp_path), config=USER) as m:
        talk(m, "ada-1", ADA, FACT, turns=30)
        m.add_message("ada-1", "user", "Tell me about the weather.", ADA)
        context = m.get_context("ada-1", 150, ADA, query="Where did Carla move?")
        assert FACT in [r.content for r in context.recalled]
        assert RECALLED_HEADER.strip() in context.to_text() and "[session" not in context.to_text()
