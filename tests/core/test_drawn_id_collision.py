"""A message id we drew (48 random bits) that meets one the session holds is not a retry.

Before this fix, ``add_message`` without ``id=`` took such a message for a retried write: the
store's retry-safety returned the earlier message and the new one was silently never stored
(and two drawn ids meeting inside one ``add_messages`` call raised ``InvalidInputError``).
Rare (about 2e-7 for a session of 10,000 messages) but a lost message; these tests force the
meeting and fail on the code before the fix. A caller's own repeated ``id=`` stays a no-op.
SQLite (since its migration 5) stores such messages under ids made from their rows, which
never meet; the tests hold for it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ogmem_memory import MemoryConfig, SessionManager, models
from ogmem_memory.errors import InvalidInputError
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore
from tests.conftest import postgres_dsn_or_skip

CONFIG = MemoryConfig(auto_commit=False)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "postgres":
        from ogmem_memory.stores.postgres import PostgresStore

        yield PostgresStore(postgres_dsn_or_skip(), schema=request.getfixturevalue("postgres_schema"))
    elif request.param == "sqlite":
        yield SQLiteStore(tmp_path / "ids.db")
    else:
        yield InMemoryStore()


def draw(monkeypatch: pytest.MonkeyPatch, *bits: int) -> None:
    """The next ids drawn are ``msg_`` + these numbers, then random ones again."""
    queue = list(bits)
    real = models._IDS.getrandbits

    def next_bits(k: int) -> int:
        return queue.pop(0) if queue else real(k)

    monkeypatch.setattr(models._IDS, "getrandbits", next_bits)


def test_a_drawn_id_that_meets_a_stored_one_is_stored_under_a_new_id(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SessionManager(store, config=CONFIG) as m:
        draw(monkeypatch, 7, 7, 8)
        first = m.add_message("s", "user", "the first message")
        second = m.add_message("s", "assistant", "the second message")
        if isinstance(store, SQLiteStore):  # it stores a drawn id's message under its row's id
            assert first.message.id != second.message.id
        else:
            assert first.message.id == "msg_000000000007"
            assert second.message.id == "msg_000000000008"
        assert second.message.content == "the second message"
        history = m.get_history("s")
        assert [(x.id, x.content) for x in history] == [
            (first.message.id, "the first message"),
            (second.message.id, "the second message"),
        ]
        assert [x.content for x in m.get_context("s").messages] == ["the first message", "the second message"]


def test_drawn_ids_meeting_in_one_batch_or_with_the_session_are_all_stored(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SessionManager(store, config=CONFIG) as m:
        draw(monkeypatch, 1)
        m.add_message("s", "user", "already there")
        # a batch of three: its first two draws meet each other, its third meets the session
        draw(monkeypatch, 2, 2, 3, 1, 4)
        stored = m.add_messages(
            "s",
            [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "two"},
                {"role": "user", "content": "three"},
            ],
        )
        assert [x.content for x in stored] == ["one", "two", "three"]
        assert len({x.id for x in stored} | {"msg_000000000001"}) == 4
        assert sorted(x.content for x in m.get_history("s")) == ["already there", "one", "three", "two"]


def test_the_callers_own_repeated_id_is_still_a_retry(store: SessionStore) -> None:
    with SessionManager(store, config=CONFIG) as m:
        m.add_message("s", "user", "hello", id="client-1")
        again = m.add_message("s", "user", "hello", id="client-1")
        assert again.message.content == "hello"
        assert [x.id for x in m.get_history("s")] == ["client-1"]
        with pytest.raises(InvalidInputError, match="distinct"):
            m.add_messages(
                "s",
                [{"role": "user", "content": "a", "id": "x"}, {"role": "user", "content": "b", "id": "x"}],
            )
        assert [x.id for x in m.get_history("s")] == ["client-1"]
