"""ogmem as a plug-in memory for the LoCoMo retention scorer (shared/bench/locomo_retention.py).

The plug-in is what an application does with the public API and nothing more: the default
``MemoryConfig()``, the default store (SQLite with FTS5, here in a private in-memory database),
the first speaker of a conversation as "user" and the second as "assistant", and the context
rendered by ``Context.to_text()``. What the benchmark teaches belongs in the library or its
defaults, not here.

Run from the repository root (or use benchmarks/retention.py, which prints the whole table):
  PYTHONPATH=. python ../shared/bench/locomo_retention.py --population extractive \
      --budgets 1000,2000,4000 --plugin ogmem=benchmarks.locomo_plugin:OgmemMemory [--query-aware]

``OGMEM_EXPERIMENT_CONFIG`` (a JSON object of MemoryConfig fields) tries other settings without
editing the library, e.g. ``OGMEM_EXPERIMENT_CONFIG='{"keep_recent_messages": 4}'``. It exists to
tune the defaults; the numbers the README reports are measured without it.
``OGMEM_EXPERIMENT_EMBEDDER=wordllama`` recalls by meaning as well, with ``WordLlamaEmbedder``
from ``ogmem_memory.embeddings`` (when that module exists).
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore

EXPERIMENT_CONFIG_ENV = "OGMEM_EXPERIMENT_CONFIG"
EXPERIMENT_EMBEDDER_ENV = "OGMEM_EXPERIMENT_EMBEDDER"
SESSION_ID = "locomo"


class Turn(Protocol):
    """The scorer's turn: who spoke, and the rendered line ("[date] Speaker: text")."""

    @property
    def speaker(self) -> str: ...

    def render(self) -> str: ...


def experiment_config() -> MemoryConfig:
    """``MemoryConfig()``, or the overrides of ``OGMEM_EXPERIMENT_CONFIG`` while tuning defaults."""
    raw = os.environ.get(EXPERIMENT_CONFIG_ENV, "").strip()
    overrides: dict[str, Any] = json.loads(raw) if raw else {}
    return MemoryConfig(**overrides)


def experiment_embedder() -> object | None:
    """The embedder named by ``OGMEM_EXPERIMENT_EMBEDDER`` (only ``wordllama``), else None."""
    name = os.environ.get(EXPERIMENT_EMBEDDER_ENV, "").strip().casefold()
    if not name:
        return None
    if name != "wordllama":
        raise ValueError(f"{EXPERIMENT_EMBEDDER_ENV} must be 'wordllama', got {name!r}")
    from ogmem_memory.embeddings import WordLlamaEmbedder  # type: ignore[import-not-found,unused-ignore]

    embedder: object = WordLlamaEmbedder()
    return embedder


_EMBEDDERS: dict[str, object | None] = {}


def shared_embedder() -> object | None:
    """One embedder per name for every conversation of a run (loading the model is the slow part)."""
    name = os.environ.get(EXPERIMENT_EMBEDDER_ENV, "").strip().casefold()
    if name not in _EMBEDDERS:
        _EMBEDDERS[name] = experiment_embedder()
    return _EMBEDDERS[name]


class OgmemMemory:
    """Feeds each turn to a SessionManager and hands back ``Context.to_text()``."""

    name = "ogmem"

    def __init__(self) -> None:
        embedder = shared_embedder()
        store = SQLiteStore(":memory:")
        if embedder is None:
            self.manager = SessionManager(store, config=experiment_config())
        else:
            self.manager = SessionManager(store, config=experiment_config(), embedder=embedder)  # type: ignore[call-arg,unused-ignore]
        self._roles: dict[str, str] = {}

    def add(self, turn: Turn) -> None:
        """Store one turn: the conversation's first speaker is "user", the other "assistant"."""
        role = self._roles.setdefault(turn.speaker, "user" if not self._roles else "assistant")
        self.manager.add_message(SESSION_ID, role, turn.render())

    def context(self, budget_tokens: int | None, query: str | None = None) -> str:
        """The context at ``budget_tokens`` (everything when None), as a model would read it."""
        self.manager.wait_for_tasks()
        budget = budget_tokens if budget_tokens is not None else 10**9
        return self.manager.get_context(SESSION_ID, budget, query=query).to_text()

    def close(self) -> None:
        """Release the manager's workers and the store."""
        self.manager.close()
