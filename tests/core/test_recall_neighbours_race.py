"""Recall never brings another user's turns as the neighbours of a hit.

``get_context`` searches the session's archived turns (owner-checked), then fetches each hit's
neighbours by seq in a second read. Before this fix that second read was not owner-checked in
session scope: when the session was deleted and re-created by another user in between (seqs
start again at 1), alice's context recalled bob's messages. Seen in CI as a cross-tenant read
in ``tests/stress/test_cross_tenant.py`` (two managers on one SQLite file); made deterministic
here by running bob's writes exactly between the search and the neighbour read. Fails on the
code before the fix, on every store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogmem_memory import MemoryConfig, RequestContext, SessionManager
from ogmem_memory.errors import AccessDeniedError, SessionNotFoundError
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore
from tests.conftest import postgres_dsn_or_skip

ALICE = RequestContext(account_id="acme", user_id="alice")
BOB = RequestContext(account_id="acme", user_id="bob")
CONFIG = MemoryConfig(auto_commit=False, keep_recent_messages=0, keep_recent_tokens=0)


def racing(base: type[SessionStore]) -> type[SessionStore]:
    """``base`` whose ``search_messages`` runs ``meddle`` (once) after the search, before returning."""

    class Racing(base):  # type: ignore[valid-type, misc]
        meddle: Any = None

        def search_messages(self, *args: Any, **kwargs: Any) -> Any:
            found = super().search_messages(*args, **kwargs)
            meddle, self.meddle = self.meddle, None
            if meddle is not None:
                meddle()
            return found

    return Racing


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, SessionStore]]:
    if request.param == "postgres":
        from ogmem_memory.stores.postgres import PostgresStore

        dsn, schema = postgres_dsn_or_skip(), request.getfixturevalue("postgres_schema")
        one, two = racing(PostgresStore)(dsn, schema=schema), PostgresStore(dsn, schema=schema)
        yield one, two
        one.close()
        two.close()
    elif request.param == "sqlite":
        yield racing(SQLiteStore)(tmp_path / "r.db"), SQLiteStore(tmp_path / "r.db")
    else:
        shared = racing(InMemoryStore)()
        yield shared, shared


def test_a_hits_neighbours_never_come_from_the_next_owner_of_the_session(
    stores: tuple[Any, SessionStore],
) -> None:
    mine, theirs = stores
    with (
        SessionManager(mine, config=CONFIG) as alice,
        SessionManager(theirs, config=CONFIG, owns_store=mine is not theirs) as bob,
    ):
        for i in range(4):
            alice.add_message("S", "user", f"alice asks about the lisbon train {i}", ALICE)
            alice.add_message("S", "assistant", f"reply {i} for alice", ALICE)
        assert alice.commit("S", ALICE, wait=True).status == "completed"

        def bob_takes_the_id() -> None:
            assert bob.delete_session("S", ALICE)
            for i in range(8):
                bob.add_message("S", "user", f"bob's private note {i}", BOB)

        mine.meddle = bob_takes_the_id
        try:
            context = alice.get_context("S", 2000, ALICE, query="lisbon train")
        except (AccessDeniedError, SessionNotFoundError):
            assert mine.meddle is None  # refused after bob took the id, not before
            return  # refused: the session is bob's now, which is right
        assert mine.meddle is None  # it ran between the search and the neighbour read
        leaked = [m.content for m in (*context.recalled, *context.messages) if "bob" in m.content]
        assert not leaked
