"""Managers shared in one process, for framework factories called on every turn.

``SessionManager.shared(url, ...)`` hands out one manager per (url, config, llm, token
counter, embedder). All managers of one URL share one store (one file handle or one pool),
so distinct ``llm`` objects cost no connections, and at most ``limit`` managers are
remembered: a forgotten one keeps working for whoever holds it, and its worker threads end
when idle.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ogmem_memory.config import MemoryConfig
    from ogmem_memory.manager import SessionManager
    from ogmem_memory.stores.base import SessionStore


def _identity(obj: object) -> int | None:
    # ids are safe keys: a remembered manager holds the object, so it cannot be collected and
    # its id reused while the entry exists
    return id(obj) if obj is not None else None


class SharedManagers:
    """The process-wide registry behind ``SessionManager.shared``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()  # a leaf lock (held while constructing; no I/O: constructors do none)
        self._managers: OrderedDict[tuple[Any, ...], SessionManager] = OrderedDict()
        self._stores: dict[str, SessionStore] = {}

    def get(
        self,
        make: Callable[..., SessionManager],
        url: str | None,
        *,
        config: MemoryConfig | None,
        llm: Any,
        token_counter: Any,
        embedder: Any,
    ) -> SessionManager:
        resolved = url or os.environ.get("OGMEM_DB") or "ogmem.db"
        key = (resolved, config, _identity(llm), _identity(token_counter), _identity(embedder))
        with self._lock:
            manager = self._managers.get(key)
            if manager is not None and not manager.closed:
                self._managers.move_to_end(key)
                return manager
            store = self._stores.get(resolved)
            if store is None:
                from ogmem_memory.stores import open_store

                store = self._stores[resolved] = open_store(resolved)
            manager = make(
                store,
                config=config,
                llm=llm,
                token_counter=token_counter,
                embedder=embedder,
                owns_store=False,
            )
            self._managers[key] = manager
            while len(self._managers) > self.limit:
                self._managers.popitem(last=False)
            return manager

    def __len__(self) -> int:
        with self._lock:
            return len(self._managers)

    def close_all(self) -> None:
        """Close every shared manager and the stores they share."""
        with self._lock:
            managers = list(self._managers.values())
            stores = list(self._stores.values())
            self._managers.clear()
            self._stores.clear()
        for manager in managers:
            manager.close()
        for store in stores:
            store.close()
