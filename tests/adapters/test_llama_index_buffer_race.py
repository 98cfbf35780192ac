"""``OgmemChatMemoryBuffer.get`` never returns another user's messages.

``get`` asks ``get_context`` (owner-checked) and, when the context does not hold the whole live
window (messages without a payload, written by other code), reads the window from the store
in a second call. Before this fix that read was not owner-checked: a session deleted and
re-created by another user between the two calls put bob's messages in alice's chat history.
Made deterministic by running bob's writes exactly between the two reads; fails on the code
before the fix (the same pattern was found in the core's recall by CI's stress test).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from llama_index.memory.ogmem import OgmemChatMemoryBuffer

from ogmem_memory import MemoryConfig, RequestContext, SessionManager, SQLiteStore
from ogmem_memory.errors import AccessDeniedError, SessionNotFoundError

ALICE = RequestContext(user_id="alice")
BOB = RequestContext(user_id="bob")


class BetweenContextAndWindow(SessionManager):
    """Runs ``meddle`` (once) right after ``get_context`` returns."""

    meddle: Any = None

    def get_context(self, *args: Any, **kwargs: Any) -> Any:
        context = super().get_context(*args, **kwargs)
        meddle, self.meddle = self.meddle, None
        if meddle is not None:
            meddle()
        return context


@pytest.mark.parametrize("call", ["get", "aget"])
def test_get_never_returns_the_next_owners_messages(tmp_path: Path, call: str) -> None:
    config = MemoryConfig(auto_commit=False)
    alice = BetweenContextAndWindow(SQLiteStore(tmp_path / "m.db"), config=config)
    other = SessionManager(SQLiteStore(tmp_path / "m.db"), config=config)
    try:
        for i in range(3):  # written without a payload: get() reads the window from the store
            alice.add_message("S", "user", f"alice's question {i}", ALICE)
            alice.add_message("S", "assistant", f"an answer {i}", ALICE)
        memory = OgmemChatMemoryBuffer.from_defaults(manager=alice, session_id="S", user_id="alice")

        def bob_takes_the_id() -> None:
            assert other.delete_session("S", ALICE)
            for i in range(3):
                other.add_message("S", "user", f"bob's private note {i}", BOB)

        alice.meddle = bob_takes_the_id
        try:
            history = memory.get() if call == "get" else asyncio.run(memory.aget())
        except (AccessDeniedError, SessionNotFoundError):
            assert alice.meddle is None  # refused after bob took the id, not before
            return  # refused: the session is bob's now, which is right
        assert alice.meddle is None
        assert not [m.content for m in history if "bob" in str(m.content)]
    finally:
        alice.close()
        other.close()
