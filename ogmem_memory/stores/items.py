"""Durable items: namespaced JSON documents with TTLs, filters, lexical and vector search.

The backend of ``langchain_ogmem.OgmemStore`` (LangGraph's long-term store) and of the
extracted long-term memories (namespace ``("memories", <user_id>)``). Framework-free: the
caller computes embeddings and passes vectors; this module only stores and ranks them.

An item is addressed by a *namespace* (a tuple of labels: non-empty strings without ``.``
or NUL, LangGraph's rule) and a *key*. Namespaces are stored as their labels joined by
``.``, so a prefix query is an index range (``ns = 'a.b' OR 'a.b.' <= ns < 'a.b/'``): it
matches whole labels only, needs no LIKE escaping and is case-sensitive.

Every backend runs one algorithm (:meth:`ItemStore.batch`) over a small transaction
protocol (:class:`ItemTransaction`), so filters, ranking, TTLs and pagination are the same
in memory, SQLite and PostgreSQL. The SQL backends are in ``items_sql``.

Search bounds: a search without ``query`` costs O(offset + limit) rows without a filter and
stops at ``offset + limit`` matches with one; a search with ``query`` or ``query_vector``
scores the newest :data:`~ogmem_memory.vectors.MAX_EXACT_CANDIDATES` items under the prefix
exactly (about 0.15 s at 50,000 vectors of 256 dimensions with numpy). ``list_namespaces``
reads the distinct namespaces under the literal part of its prefix.

Where each part lives (every public name is importable from here): the values in
``items_model``, their validation in ``items_checks``, filters in ``items_filters``, the
search order in ``items_ranking``, the contract and the algorithm in ``items_base``, the
in-memory backend in ``items_memory``; this module opens a store for a URL or a session store.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import TYPE_CHECKING, Final

from ogmem_memory.errors import ConfigError
from ogmem_memory.stores.items_base import ItemStore, ItemTransaction
from ogmem_memory.stores.items_checks import check_namespace, value_text
from ogmem_memory.stores.items_filters import FILTER_OPERATORS, check_filter, matches_filter
from ogmem_memory.stores.items_memory import InMemoryItemStore
from ogmem_memory.stores.items_model import (
    DeleteItem,
    GetItem,
    ItemOp,
    ItemResult,
    ItemRow,
    ItemWrite,
    ListNamespaces,
    Namespace,
    PutItem,
    SearchItems,
    StoredItem,
    expiry,
    literal_prefix,
    ns_text,
    ns_tuple,
    prefix_range,
    select_namespaces,
)
from ogmem_memory.stores.items_ranking import canonical_order, lexical_scores, rank_rows

if TYPE_CHECKING:
    from ogmem_memory.stores.base import SessionStore


def open_item_store(url: str) -> ItemStore:
    """An item store for ``url``: ``memory://``, ``sqlite:///path.db`` (or a bare path), ``postgresql://...``.

    Nothing is opened yet (no I/O); ``setup()`` or the first operation does that.

    Raises:
        ConfigError: The URL is empty or its scheme is not supported.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"item store URL must be a non-empty string, got {url!r}")
    if url.startswith("memory://"):
        return InMemoryItemStore()
    from ogmem_memory.stores.items_sql import PostgresItemStore, SQLiteItemStore

    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:////abs.db -> /abs.db
        return SQLiteItemStore(path or ":memory:")
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return PostgresItemStore(url.replace("postgresql+psycopg://", "postgresql://", 1))
    if "://" not in url:
        return SQLiteItemStore(url)
    raise ConfigError(
        f"unsupported item store URL {url!r}: use memory://, sqlite:///path.db or postgresql://..."
    )


def _is_postgres_store(store: object) -> bool:
    # A PostgresStore exists only once its module (and psycopg) is imported: look there
    # rather than import it, which would load psycopg for every caller.
    module = sys.modules.get("ogmem_memory.stores.postgres")
    return module is not None and isinstance(store, module.PostgresStore)


_FOR_SESSION_STORE: weakref.WeakKeyDictionary[SessionStore, ItemStore] = weakref.WeakKeyDictionary()
_FOR_SESSION_STORE_LOCK: Final = threading.Lock()


def item_store_for(session_store: SessionStore) -> ItemStore:
    """The item store of the same database as ``session_store``, one per store object.

    ``SQLiteStore`` -> ``SQLiteItemStore`` on the same file (its own connection, the same
    ``synchronous`` and busy timeout); ``PostgresStore`` -> ``PostgresItemStore`` of the same
    DSN and schema; ``InMemoryStore`` and ``SQLiteStore(":memory:")`` (a private database no
    second connection can see) -> an ``InMemoryItemStore`` living as long as the session
    store. The item store is closed when the session store is garbage-collected; the owner
    of the session store may close it earlier (a closed one reopens on use).

    Raises:
        ConfigError: The session store is of a kind this function does not know.
    """
    from ogmem_memory.stores.base import SessionStore as _SessionStore
    from ogmem_memory.stores.memory import InMemoryStore
    from ogmem_memory.stores.sqlite import SQLiteStore

    if not isinstance(session_store, _SessionStore):
        raise ConfigError(f"item_store_for needs a SessionStore, got {type(session_store).__name__}")
    with _FOR_SESSION_STORE_LOCK:
        existing = _FOR_SESSION_STORE.get(session_store)
        if existing is not None:
            return existing
        items: ItemStore
        if isinstance(session_store, InMemoryStore) or (
            isinstance(session_store, SQLiteStore) and session_store.path == ":memory:"
        ):
            items = InMemoryItemStore()
        elif isinstance(session_store, SQLiteStore):
            from ogmem_memory.stores.items_sql import SQLiteItemStore

            items = SQLiteItemStore(
                session_store.path,
                synchronous=session_store.synchronous,
                busy_timeout_ms=session_store.busy_timeout_ms,
            )
        elif _is_postgres_store(session_store):
            from ogmem_memory.stores.items_sql import PostgresItemStore

            items = PostgresItemStore(session_store.dsn, schema=session_store.schema)  # type: ignore[attr-defined]
        else:
            raise ConfigError(
                f"no item store for {type(session_store).__name__}; pass an ItemStore explicitly"
            )
        _FOR_SESSION_STORE[session_store] = items
        weakref.finalize(session_store, items.close)
        return items


__all__ = [
    "FILTER_OPERATORS",
    "DeleteItem",
    "GetItem",
    "InMemoryItemStore",
    "ItemOp",
    "ItemResult",
    "ItemRow",
    "ItemStore",
    "ItemTransaction",
    "ItemWrite",
    "ListNamespaces",
    "Namespace",
    "PutItem",
    "SearchItems",
    "StoredItem",
    "canonical_order",
    "check_filter",
    "check_namespace",
    "expiry",
    "item_store_for",
    "lexical_scores",
    "literal_prefix",
    "matches_filter",
    "ns_text",
    "ns_tuple",
    "open_item_store",
    "prefix_range",
    "rank_rows",
    "select_namespaces",
    "value_text",
]
