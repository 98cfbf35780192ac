"""ogmem as a plug-in memory for the LoCoMo retention scorer (shared/bench/locomo_retention.py).

Run from the repository root:
  PYTHONPATH=. python ../shared/bench/locomo_retention.py --population extractive \
      --budgets 1000,2000 --plugin ogmem=benchmarks.locomo_plugin:OgmemMemory [--query-aware]
"""

from __future__ import annotations

from typing import Any

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore

CONFIG = MemoryConfig(
    commit_token_threshold=2000,
    commit_turn_threshold=0,
    keep_recent_messages=2,  # each turn is a whole utterance; recall needs the room
    keep_recent_tokens=300,
    archive_max_count=12,
    archive_merge_threshold=12,
    recall_limit=40,
)


class OgmemMemory:
    """Feeds each turn to a SessionManager and renders ``get_context`` as plain text."""

    name = "ogmem"

    def __init__(self) -> None:
        # the default store (SQLite, FTS5 with stemming), in a private in-memory database
        self.manager = SessionManager(SQLiteStore(":memory:"), config=CONFIG)
        self._speakers: dict[str, str] = {}

    def add(self, turn: Any) -> None:
        # two speakers: the first to talk plays "user", the other "assistant"
        role = "user"  # both speakers are people: neither one's facts are echoes
        self.manager.add_message("locomo", role, turn.render())

    def context(self, budget_tokens: int | None, query: str | None = None) -> str:
        self.manager.wait_for_tasks()
        budget = budget_tokens if budget_tokens is not None else 10**9
        ctx = self.manager.get_context("locomo", budget, query=query)
        # the turn lines carry speaker and date already: no role prefixes, nothing uncounted
        lines = [m.content for m in ctx.messages]
        return "\n\n".join(part for part in (ctx.preamble(), "\n".join(lines)) if part)
