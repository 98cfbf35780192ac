"""A PostgreSQL search never hands the searcher another user's messages, whatever happens
between finding its hits and fetching them.

``search_messages`` finds the hits (and checks the owner) in one snapshot, then fetches the
hit messages by seq in a second statement. Before this fix the fetch took whatever the session
id held at that moment: when the session was deleted and re-created by another user in between
(seqs start again at 1), bob's search returned alice's messages. Seen once in CI as a
cross-tenant read in ``tests/stress/test_cross_tenant.py`` (two worker processes on PostgreSQL);
made deterministic here by running the other users' writes exactly between the two steps.
Both tests fail on the code before the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ogmem_memory import MemoryConfig, RequestContext, SessionManager
from ogmem_memory.stores.postgres import PostgresStore
from tests.conftest import postgres_dsn_or_skip

ALICE = RequestContext(account_id="acme", user_id="alice")
BOB = RequestContext(account_id="acme", user_id="bob")
CONFIG = MemoryConfig(auto_commit=False)


class BetweenSnapshotAndFetch(PostgresStore):
    """Runs ``meddle`` (once) after a search's snapshot, before its hits are fetched."""

    meddle: Callable[[], None] | None = None

    def _session_hits(self, *args: Any) -> Any:
        self._meddle_once()
        return (yield from super()._session_hits(*args))

    def _owner_hits(self, *args: Any) -> Any:
        self._meddle_once()
        return (yield from super()._owner_hits(*args))

    def _meddle_once(self) -> None:
        meddle, self.meddle = self.meddle, None
        if meddle is not None:
            meddle()


@pytest.fixture
def stores(postgres_schema: str) -> Iterator[tuple[BetweenSnapshotAndFetch, PostgresStore]]:
    dsn = postgres_dsn_or_skip()
    racing, other = (
        BetweenSnapshotAndFetch(dsn, schema=postgres_schema),
        PostgresStore(dsn, schema=postgres_schema),
    )
    yield racing, other
    racing.close()
    other.close()


def _bob_archives_his_trip(bob: SessionManager) -> None:
    for i in range(6):
        bob.add_message("S", "user", f"bob's lisbon train plan, part {i}", BOB)
    assert bob.commit("S", BOB, wait=True).status == "completed"


def _alice_takes_the_id(other: SessionManager) -> None:
    # bob's session is deleted; alice re-creates the id and writes at the same seqs
    assert other.delete_session("S", BOB)
    for i in range(6):
        other.add_message("S", "user", f"alice's secret lisbon train booking {i}", ALICE)


@pytest.mark.parametrize("scope", ["session", "owner"])
def test_a_search_never_returns_the_next_owners_messages(
    stores: tuple[BetweenSnapshotAndFetch, PostgresStore], scope: str
) -> None:
    """``session``: a search of the session; ``owner``: over all of bob's sessions."""
    racing, shared = stores
    in_session = {"session_id": "S"} if scope == "session" else {}
    with (
        SessionManager(racing, config=CONFIG) as bob,
        SessionManager(shared, config=CONFIG, owns_store=False) as other,
    ):
        _bob_archives_his_trip(bob)
        assert bob.search("lisbon train", BOB, **in_session)  # the premise: hits exist
        racing.meddle = lambda: _alice_takes_the_id(other)
        found = bob.search("lisbon train", BOB, **in_session)
        assert racing.meddle is None  # it ran between the two steps
        assert not [m.content for m in found if "alice" in m.content]
