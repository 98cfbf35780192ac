"""Issue 9: the store is the only truth. Several managers on one store, as several workers are.

Each test names the defect it guards against; each failed on the code before issue 9.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ogmem_memory import (
    AccessDeniedError,
    ClosedError,
    ConfigError,
    InvalidInputError,
    MemoryConfig,
    RequestContext,
    SessionManager,
    StoreError,
)
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore
from tests.conftest import postgres_dsn_or_skip

ALICE = RequestContext(account_id="a", user_id="alice")
BOB = RequestContext(account_id="a", user_id="bob")

Workers = Callable[..., tuple[SessionManager, SessionManager]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    """Two managers on one store, as two worker processes would be (their own caches)."""
    made: list[SessionManager] = []

    def make(**kw: object) -> tuple[SessionManager, SessionManager]:
        stores: list[SessionStore]
        if request.param == "memory":
            shared = InMemoryStore()
            stores = [shared, shared]
        elif request.param == "sqlite":
            stores = [SQLiteStore(tmp_path / "x.db"), SQLiteStore(tmp_path / "x.db")]
        else:
            from ogmem_memory.stores.postgres import PostgresStore

            schema = request.getfixturevalue("postgres_schema")
            stores = [PostgresStore(postgres_dsn_or_skip(), schema=schema) for _ in range(2)]
        pair = tuple(SessionManager(s, **kw) for s in stores)  # type: ignore[arg-type]
        made.extend(pair)
        return pair  # type: ignore[return-value]

    yield make
    for m in made:
        m.close()


def test_defect1_a_stale_owner_cache_never_lets_another_user_in(workers: Workers) -> None:
    """Defect 1: w1 cached alice as owner; after w2 deleted the session and bob re-created it,
    w1 served bob's messages to alice and let her write into and clear bob's session."""
    w1, w2 = workers()
    w1.add_message("S", "user", "alice secret", ALICE)
    assert [m.content for m in w1.get_history("S", ALICE)] == ["alice secret"]
    w1.get_context("S", 1000, ALICE)  # cache warm in w1
    assert w2.delete_session("S", ALICE)
    w2.add_message("S", "user", "bob private", BOB)

    with pytest.raises(AccessDeniedError):
        w1.get_history("S", ALICE)
    with pytest.raises(AccessDeniedError):
        w1.get_context("S", 1000, ALICE)
    with pytest.raises(AccessDeniedError):
        w1.add_message("S", "user", "alice again", ALICE)
    with pytest.raises(AccessDeniedError):
        w1.clear_session("S", ALICE)
    with pytest.raises(AccessDeniedError):
        w1.delete_session("S", ALICE)
    assert [m.content for m in w2.get_history("S", BOB)] == ["bob private"]
    context = w1.get_context("S", 1000, BOB)
    assert [m.content for m in context.messages] == ["bob private"]  # not "alice secret"


def test_defect1_a_deleted_session_is_gone_for_every_manager(workers: Workers) -> None:
    """Defect 1: after another worker deleted a session, w1 still showed the deleted message
    in get_context and refused every add to that id with SessionNotFoundError."""
    w1, w2 = workers()
    w1.add_message("S", "user", "first life", ALICE)
    w1.get_context("S", 1000, ALICE)
    w2.delete_session("S", ALICE)
    assert w1.get_context("S", 1000, ALICE).messages == ()
    w1.add_message("S", "user", "second life", ALICE)  # re-creating binds it to its new writer
    assert [m.content for m in w2.get_history("S", ALICE)] == ["second life"]
    assert [m.content for m in w1.get_context("S", 1000, ALICE).messages] == ["second life"]


def test_defect1_clear_by_another_worker_is_seen(workers: Workers) -> None:
    w1, w2 = workers()
    w1.add_message("S", "user", "before clear", ALICE)
    w1.get_context("S", 1000, ALICE)
    w2.clear_session("S", ALICE)
    w2.add_message("S", "user", "after clear", ALICE)
    assert [m.content for m in w1.get_context("S", 1000, ALICE).messages] == ["after clear"]


def test_defect3_an_append_between_head_and_read_is_never_doubled(workers: Workers) -> None:
    """Defect 3: w1's refresh set last_seq from a head read before the rows, so a concurrent
    append appeared twice in get_context().messages and archives overcounted."""
    w1, w2 = workers(config=MemoryConfig(auto_commit=False))
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            i = 0
            while not stop.is_set() and i < 300:
                w2.add_message("S", "user", f"m{i}", ALICE)
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    w1.add_message("S", "user", "start", ALICE)
    writer = threading.Thread(target=write)
    writer.start()
    seen = 0
    try:
        while writer.is_alive() or seen < 2:
            ids = [m.id for m in w1.get_context("S", 100_000, ALICE).messages]
            assert len(ids) == len(set(ids)), "a message appeared twice"
            seen += 1
    finally:
        stop.set()
        writer.join()
    assert not errors
    final = w1.get_context("S", 100_000, ALICE).messages
    assert [m.content for m in final] == ["start", *(f"m{i}" for i in range(len(final) - 1))]
    result = w1.commit("S", ALICE, wait=True)
    archive = w1.read_archive("S", result.archive_id or "", ALICE)
    assert archive is not None and archive.message_count == len(final) == len(archive.messages)


def test_defect4_a_retried_write_with_the_same_id_is_stored_once(workers: Workers) -> None:
    """Defect 4: a retry after a write reported as failed stored the message twice."""
    w1, w2 = workers()
    first = w1.add_message("S", "user", "hello", ALICE, id="client-1")
    again = w2.add_message("S", "user", "hello", ALICE, id="client-1")
    assert again.message.id == first.message.id and again.message.seq == first.message.seq
    w1.add_messages("S", [{"role": "user", "content": "hello", "id": "client-1"}], ALICE)
    assert [m.content for m in w1.get_history("S", ALICE)] == ["hello"]
    assert [m.content for m in w1.get_context("S", 1000, ALICE).messages] == ["hello"]


def test_defect4_a_refresh_failure_after_a_landed_write_reports_success(tmp_path: Path) -> None:
    """Defect 4: the write landed but the cache refresh after it raised StoreError."""

    class RefreshFails(SQLiteStore):
        broken = False

        def read_window(self, *args: object, **kw: object):  # type: ignore[no-untyped-def]
            if self.broken:
                raise StoreError("connection dropped")
            return super().read_window(*args, **kw)  # type: ignore[arg-type]

    store = RefreshFails(tmp_path / "x.db")
    with SessionManager(store) as m:
        m.add_message("S", "user", "one", ALICE)
        other = SessionManager(SQLiteStore(tmp_path / "x.db"))
        other.add_message("S", "user", "two", ALICE)  # m's cache is now one step behind
        store.broken = True
        result = m.add_message("S", "user", "three", ALICE, id="m-3")  # refresh fails: still a success
        assert result.message.id == "m-3"
        store.broken = False
        assert [x.content for x in m.get_context("S", 1000, ALICE).messages] == ["one", "two", "three"]
        assert m.add_message("S", "user", "three", ALICE, id="m-3").message.seq == result.message.seq
        assert len(m.get_history("S", ALICE)) == 3
        other.close()


def test_defect8_poison_timestamps_are_refused_on_every_store(workers: Workers) -> None:
    """Defect 8: on PostgreSQL these were inserted, the call raised anyway and every later read
    of the session failed."""
    w1, _ = workers()
    w1.add_message("S", "user", "fine", ALICE)
    for when in (
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
    ):
        with pytest.raises(InvalidInputError):
            w1.add_message("S", "user", "poison", ALICE, created_at=when)
    ok = w1.add_message("S", "user", "east", ALICE, created_at=datetime(2024, 5, 1, 3, tzinfo=timezone(timedelta(hours=5))))
    assert ok.message.created_at == datetime(2024, 4, 30, 22, tzinfo=UTC)
    assert [m.content for m in w1.get_history("S", ALICE)] == ["fine", "east"]


@pytest.mark.parametrize(
    "bad",
    ["\x00", "a\x00b"],
)
def test_defect12_nul_in_content_is_refused_by_every_store(workers: Workers, bad: str) -> None:
    """Defect 12: NUL was accepted by SQLite and memory but rejected by PostgreSQL."""
    w1, _ = workers()
    with pytest.raises(InvalidInputError):
        w1.add_message("S", "user", bad, ALICE)
    assert w1.get_history("S", ALICE) == []
    assert w1.list_sessions(ALICE) == []  # no session row left behind (PostgreSQL left one)


def test_defect12_session_row_is_not_left_when_the_first_append_fails(workers: Workers) -> None:
    w1, _ = workers()
    with pytest.raises(InvalidInputError):
        w1.add_messages("S", [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud800"}], ALICE)
    assert w1.list_sessions() == []


@pytest.mark.parametrize("sid", ["\x85", "a\u2028b", "\u200b", " \u200b ", "x\x00"])
def test_defect12_invisible_or_separator_session_ids_are_refused(sid: str) -> None:
    with SessionManager("memory://") as m, pytest.raises(InvalidInputError):
        m.add_message(sid, "user", "hi")


@pytest.mark.parametrize("mid", ["a\x00b", "x" * 10_000, "", "\n"])
def test_defect12_bad_message_ids_are_refused(mid: str) -> None:
    with SessionManager("memory://") as m:
        with pytest.raises(InvalidInputError):
            m.add_message("s", "user", "hi", id=mid)
        assert m.get_history("s") == []


@pytest.mark.parametrize(
    "ctx",
    [
        RequestContext(account_id="a", user_id=123),  # type: ignore[arg-type]
        RequestContext(account_id=None, user_id="u"),  # type: ignore[arg-type]
        RequestContext(account_id="a", user_id=""),
        RequestContext(account_id="a", user_id="u\x00"),
    ],
)
def test_defect12_request_context_is_validated(ctx: RequestContext, tmp_path: Path) -> None:
    """Defect 12: user_id=123 created a session its creator was then denied; account_id=None
    raised a raw TypeError on SQLite."""
    with SessionManager(f"sqlite:///{tmp_path / 'x.db'}") as m:
        with pytest.raises(InvalidInputError):
            m.add_message("s", "user", "hi", ctx)
        assert m.list_sessions() == []


def test_defect12_other_input_that_slipped_through() -> None:
    """Defect 12: RecursionError, OverflowError, silent [] for limit=-1, negative token counts,
    SessionManager(123)."""
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with SessionManager("memory://") as m:
        with pytest.raises(InvalidInputError):
            m.add_message("s", "user", "hi", payload=deep)
        for limit, offset in ((2**64, 0), (1, 2**64), (-1, 0)):
            with pytest.raises(InvalidInputError):
                m.list_sessions(limit=limit, offset=offset)
        with pytest.raises(InvalidInputError):
            m.search("x", limit=-1)
        with pytest.raises(InvalidInputError):
            m.search("x", limit=2**64)
        assert m.get_history("s") == []
    with pytest.raises(InvalidInputError):
        SessionManager(123)  # type: ignore[arg-type]
    with SessionManager("memory://", token_counter=lambda text: -50) as m:
        with pytest.raises(ConfigError):
            m.add_message("s", "user", "hi")
        assert m.get_history("s") == []


def test_defect12_archive_ids_do_not_leak_across_sessions(tmp_path: Path) -> None:
    """Defect 12: SQLite archive ids were a global key, so another user's commit(archive_id=...)
    learned that the id existed."""
    with SessionManager(f"sqlite:///{tmp_path / 'x.db'}") as m:
        m.add_message("alice-s", "user", "a", ALICE)
        m.add_message("bob-s", "user", "b", BOB)
        assert m.commit("alice-s", ALICE, wait=True, archive_id="arc-1").status == "completed"
        assert m.commit("bob-s", BOB, wait=True, archive_id="arc-1").status == "completed"


def test_defect11_a_closed_manager_refuses_every_call_and_stays_closed(tmp_path: Path) -> None:
    """Defect 11: add_message after close() silently reopened the store; commit raised
    RuntimeError and left commit_in_progress stuck."""
    m = SessionManager(f"sqlite:///{tmp_path / 'x.db'}")
    m.add_message("s", "user", "hi")
    m.close()
    for call in (
        lambda: m.add_message("s", "user", "again"),
        lambda: m.commit("s", wait=True),
        lambda: m.get_context("s"),
        lambda: m.get_history("s"),
        lambda: m.replace_messages("s", []),
    ):
        with pytest.raises(ClosedError):
            call()
    assert m.store._conn is None  # type: ignore[attr-defined]
    assert isinstance(ClosedError("x"), RuntimeError)


def test_defect11_racing_close_raises_only_closed_error(tmp_path: Path) -> None:
    """Defect 11: racing close() raised AssertionError (``assert self._conn`` in sqlite.py)."""
    for _round in range(5):
        m = SessionManager(f"sqlite:///{tmp_path / 'race.db'}", config=MemoryConfig(auto_commit=False))
        m.add_message("s", "user", "warm")
        unexpected: list[BaseException] = []
        go = threading.Event()

        def add(
            m: SessionManager = m, unexpected: list[BaseException] = unexpected, go: threading.Event = go
        ) -> None:
            go.wait()
            for i in range(200):
                try:
                    m.add_message("s", "user", f"m{i}")
                except ClosedError:
                    return
                except BaseException as exc:
                    unexpected.append(exc)
                    return

        threads = [threading.Thread(target=add) for _ in range(3)]
        for t in threads:
            t.start()
        go.set()
        m.close()
        for t in threads:
            t.join(30)
        assert not unexpected, unexpected


def test_defect9_shared_managers_do_not_leak_connections(tmp_path: Path) -> None:
    """Defect 9: one manager per llm object, each with its own store: 300 histories held 300
    managers and 600 open files."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    try:
        managers = [SessionManager.shared(url, llm=lambda prompt: "x") for _ in range(300)]
        stores = {id(m.store) for m in managers}
        assert len(stores) == 1  # one connection for the URL, whatever the llm objects
        assert len(SessionManager._shared) <= 32
        managers[0].add_message("s", "user", "works")
        assert [x.content for x in managers[-1].get_history("s")] == ["works"]
    finally:
        SessionManager.close_shared()


def test_defect10_the_buffer_cache_is_bounded() -> None:
    """Defect 10: every touched session kept a buffer until evict_idle_sessions."""
    with SessionManager("memory://", config=MemoryConfig(max_cached_sessions=50)) as m:
        for i in range(2000):
            m.add_message(f"s{i}", "user", "hello")
        assert len(m._cache) <= 50
        assert [x.content for x in m.get_context("s0", 100).messages] == ["hello"]
