"""The item store contract: :class:`ItemTransaction` (what a backend provides) and :class:`ItemStore`.

:meth:`ItemStore.batch` is the one algorithm every backend runs, so filters, ranking, TTLs
and pagination are the same in memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from ogmem_memory.stores import items_model
from ogmem_memory.stores.items_checks import check_namespace, check_op
from ogmem_memory.stores.items_filters import check_filter, matches_filter
from ogmem_memory.stores.items_ranking import rank_rows
from ogmem_memory.stores.lifecycle import Lifecycle
from ogmem_memory.twins import in_thread
from ogmem_memory.vectors import MAX_EXACT_CANDIDATES

# Rows per page when a filtered search streams the rows under its prefix.
_SCAN_CHUNK: Final = 500


class ItemTransaction(Protocol):
    """What a backend provides inside one transaction; :meth:`ItemStore.batch` does the rest.

    ``alive_at`` (when not ``None``) hides rows expired at that instant. Scans return rows
    in :func:`canonical_order`.
    """

    def fetch(
        self, idents: Sequence[tuple[str, str]], alive_at: datetime | None
    ) -> dict[tuple[str, str], items_model.ItemRow]:
        """The rows of these ``(ns, key)`` pairs that exist."""
        ...

    def scan(
        self, prefix: items_model.Namespace, alive_at: datetime | None, limit: int, offset: int
    ) -> list[items_model.ItemRow]:
        """A page of the rows under ``prefix``, newest first."""
        ...

    def vectors(
        self, prefix: items_model.Namespace, idents: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes]]:
        """The vectors of these rows (all under ``prefix``), by field name."""
        ...

    def namespaces(self, prefix: items_model.Namespace, alive_at: datetime | None) -> list[str]:
        """The distinct ``ns`` values under ``prefix``."""
        ...

    def refresh(self, rows: Sequence[tuple[items_model.ItemRow, datetime]]) -> None:
        """Set each row's ``expires_at`` unless it changed since it was read."""
        ...

    def upsert(self, write: items_model.ItemWrite, now: datetime) -> None:
        """Create or replace a row (keeping ``created_at``) and replace its vectors."""
        ...

    def delete(self, ns: str, key: str) -> bool:
        """Delete a row and its vectors; whether it existed."""
        ...

    def delete_prefix(self, prefix: items_model.Namespace) -> int:
        """Delete every row under ``prefix`` (non-empty) and their vectors."""
        ...

    def delete_expired(self, now: datetime) -> int:
        """Delete the rows expired at ``now``."""
        ...


class ItemStore(Lifecycle, ABC):
    """Durable home of namespaced items. Sync is the contract; ``a*`` twins use a thread.

    Every :meth:`batch` is one transaction: its reads see the state before its writes (as
    in LangGraph's stores), and its puts and deletes apply together, last write per key
    winning. Invalid input raises ``InvalidInputError`` before anything is read or written.
    Constructors do no I/O; :meth:`setup` is idempotent and also run by ``with`` and by the
    first operation.
    """

    def setup(self) -> None:
        """Open connections and apply migrations. Idempotent."""

    asetup = in_thread(setup)

    def close(self) -> None:
        """Release connections. Idempotent; a later call reopens them."""

    aclose = in_thread(close)

    @abstractmethod
    def transaction(self, *, write: bool) -> AbstractContextManager[ItemTransaction]:
        """One transaction: committed on success, rolled back on any exception."""

    # -- the operations ---------------------------------------------------------------

    def batch(self, ops: Iterable[items_model.ItemOp]) -> list[items_model.ItemResult]:
        """Run ``ops`` in one transaction and return one result per op, in order.

        Results: ``GetItem`` -> ``StoredItem | None``; ``SearchItems`` -> ``list[StoredItem]``;
        ``ListNamespaces`` -> ``list[tuple[str, ...]]``; ``PutItem`` -> ``None``;
        ``DeleteItem`` -> whether the item existed before the batch.

        Raises:
            InvalidInputError: An op is invalid (nothing was read or written).
            StoreError: The backend failed (nothing was written).
        """
        checked = [check_op(op) for op in ops]
        writes: dict[tuple[str, str], items_model.ItemWrite | items_model.DeleteItem] = {}
        for op in checked:
            if isinstance(op, items_model.ItemWrite):
                writes.pop((op.ns, op.key), None)  # re-insert: the last write's position counts
                writes[(op.ns, op.key)] = op
            elif isinstance(op, items_model.DeleteItem):
                ident = (items_model.ns_text(op.namespace), op.key)
                writes.pop(ident, None)
                writes[ident] = op
        now = datetime.now(UTC)
        refreshes: dict[tuple[str, str], tuple[items_model.ItemRow, datetime]] = {}
        with self.transaction(write=bool(writes)) as tx:
            results = self._read(tx, checked, now, refreshes)
            if writes:
                self._write(tx, writes, now, refreshes)
        if refreshes and not writes:
            # A TTL refresh extends a lease; it needs no snapshot of the read, so a read-only
            # batch stays a read transaction and only pays for a write when a TTL is touched.
            with self.transaction(write=True) as tx:
                tx.refresh(list(refreshes.values()))
        return results

    async def abatch(self, ops: Iterable[items_model.ItemOp]) -> list[items_model.ItemResult]:
        """Async ``batch``."""
        return await asyncio.to_thread(self.batch, list(ops))  # the ops are read on the caller's thread

    def _read(
        self,
        tx: ItemTransaction,
        ops: Sequence[items_model.ItemOp | items_model.ItemWrite],
        now: datetime,
        refreshes: dict[tuple[str, str], tuple[items_model.ItemRow, datetime]],
    ) -> list[items_model.ItemResult]:
        results: list[items_model.ItemResult] = [None] * len(ops)
        gets = [op for op in ops if isinstance(op, items_model.GetItem)]
        fetched: dict[tuple[str, str], items_model.ItemRow] = {}
        if gets:
            fetched = tx.fetch(list({(items_model.ns_text(g.namespace), g.key): None for g in gets}), None)
        deletes = [
            (items_model.ns_text(op.namespace), op.key)
            for op in ops
            if isinstance(op, items_model.DeleteItem)
        ]
        existed = tx.fetch(deletes, None) if deletes else {}
        for i, op in enumerate(ops):
            if isinstance(op, items_model.GetItem):
                row = fetched.get((items_model.ns_text(op.namespace), op.key))
                if row is None or (op.omit_expired and items_model.is_expired(row, now)):
                    continue
                results[i] = items_model.to_item(
                    row, expires_at=self._plan_refresh(row, op.refresh_ttl, now, refreshes)
                )
            elif isinstance(op, items_model.SearchItems):
                results[i] = self._search(tx, op, now, refreshes)
            elif isinstance(op, items_model.ListNamespaces):
                alive = now if op.omit_expired else None
                results[i] = items_model.select_namespaces(
                    tx.namespaces(items_model.literal_prefix(op.prefix), alive), op
                )
            elif isinstance(op, items_model.DeleteItem):
                results[i] = (items_model.ns_text(op.namespace), op.key) in existed
        return results

    @staticmethod
    def _plan_refresh(
        row: items_model.ItemRow,
        wanted: bool,
        now: datetime,
        refreshes: dict[tuple[str, str], tuple[items_model.ItemRow, datetime]],
    ) -> datetime | None:
        # An expired row is never refreshed: a read must not resurrect it.
        if not wanted or row.ttl_minutes is None or items_model.is_expired(row, now):
            return None
        until = items_model.expiry(now, row.ttl_minutes)
        assert until is not None
        refreshes[(row.ns, row.key)] = (row, until)
        return until

    def _search(
        self,
        tx: ItemTransaction,
        op: items_model.SearchItems,
        now: datetime,
        refreshes: dict[tuple[str, str], tuple[items_model.ItemRow, datetime]],
    ) -> list[items_model.StoredItem]:
        prefix = check_namespace(op.namespace_prefix)
        alive = now if op.omit_expired else None
        flt = check_filter(op.filter)
        ranked_search = op.query_vector is not None or bool(op.query and op.query.strip())
        page: list[tuple[items_model.ItemRow, float | None]]
        if not ranked_search:
            if flt is None:
                rows = tx.scan(prefix, alive, op.limit, op.offset) if op.limit else []
            else:
                rows = []
                skipped = 0
                for row in _stream(tx, prefix, alive):
                    if len(rows) >= op.limit:
                        break
                    if matches_filter(row.value, flt):
                        if skipped < op.offset:
                            skipped += 1
                        else:
                            rows.append(row)
            page = [(row, None) for row in rows]
        else:
            candidates = tx.scan(prefix, alive, MAX_EXACT_CANDIDATES, 0)
            candidates = [row for row in candidates if matches_filter(row.value, flt)]
            vectors: dict[tuple[str, str], dict[str, bytes]] = {}
            if op.query_vector is not None and candidates:
                vectors = tx.vectors(prefix, {(row.ns, row.key) for row in candidates})
            ranked = rank_rows(
                candidates,
                query=op.query,
                query_vector=op.query_vector,
                vectors=vectors,
                top=op.offset + op.limit,
            )
            page = ranked[op.offset : op.offset + op.limit]
        return [
            items_model.to_item(row, score, self._plan_refresh(row, op.refresh_ttl, now, refreshes))
            for row, score in page
        ]

    @staticmethod
    def _write(
        tx: ItemTransaction,
        writes: Mapping[tuple[str, str], items_model.ItemWrite | items_model.DeleteItem],
        now: datetime,
        refreshes: dict[tuple[str, str], tuple[items_model.ItemRow, datetime]],
    ) -> None:
        for ident in writes:
            refreshes.pop(ident, None)  # the write sets the TTL itself
        if refreshes:
            tx.refresh(list(refreshes.values()))
        for ident, write in writes.items():
            if isinstance(write, items_model.ItemWrite):
                tx.upsert(write, now)
            else:
                tx.delete(*ident)

    def get(
        self,
        namespace: items_model.Namespace,
        key: str,
        *,
        refresh_ttl: bool = False,
        omit_expired: bool = False,
    ) -> items_model.StoredItem | None:
        """The item at ``namespace``/``key``, or ``None``."""
        result = self.batch([items_model.GetItem(namespace, key, refresh_ttl, omit_expired)])[0]
        assert result is None or isinstance(result, items_model.StoredItem)
        return result

    aget = in_thread(get)

    def put(
        self,
        namespace: items_model.Namespace,
        key: str,
        value: Mapping[str, Any],
        *,
        ttl_minutes: float | None = None,
        text: str | None = None,
        vectors: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """Create or replace an item (see :class:`PutItem`)."""
        self.batch([items_model.PutItem(namespace, key, value, ttl_minutes, text, vectors)])

    aput = in_thread(put)

    def delete(self, namespace: items_model.Namespace, key: str) -> bool:
        """Delete an item; whether it existed."""
        return bool(self.batch([items_model.DeleteItem(namespace, key)])[0])

    adelete = in_thread(delete)

    def search(
        self,
        namespace_prefix: items_model.Namespace,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        query: str | None = None,
        query_vector: Sequence[float] | None = None,
        refresh_ttl: bool = False,
        omit_expired: bool = False,
    ) -> list[items_model.StoredItem]:
        """Items under a namespace prefix (see :class:`SearchItems`)."""
        op = items_model.SearchItems(
            namespace_prefix, filter, limit, offset, query, query_vector, refresh_ttl, omit_expired
        )
        result = self.batch([op])[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    asearch = in_thread(search)

    def list_namespaces(
        self,
        *,
        prefix: tuple[str, ...] | None = None,
        suffix: tuple[str, ...] | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
        omit_expired: bool = False,
    ) -> list[items_model.Namespace]:
        """Distinct namespaces (see :class:`ListNamespaces`)."""
        result = self.batch(
            [items_model.ListNamespaces(prefix, suffix, max_depth, limit, offset, omit_expired)]
        )[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    alist_namespaces = in_thread(list_namespaces)

    def sweep_expired(self) -> int:
        """Delete every expired item (and its vectors); how many were deleted."""
        with self.transaction(write=True) as tx:
            return tx.delete_expired(datetime.now(UTC))

    asweep_expired = in_thread(sweep_expired)

    def delete_namespace_prefix(self, prefix: items_model.Namespace) -> int:
        """Delete every item whose namespace starts with ``prefix`` (whole labels); how many.

        For "forget this user": ``delete_namespace_prefix(("memories", user_id))``.

        Raises:
            InvalidInputError: ``prefix`` is empty (that would delete everything) or invalid.
        """
        labels = check_namespace(prefix, allow_empty=False)
        with self.transaction(write=True) as tx:
            return tx.delete_prefix(labels)

    adelete_namespace_prefix = in_thread(delete_namespace_prefix)


def _stream(
    tx: ItemTransaction, prefix: items_model.Namespace, alive: datetime | None
) -> Iterator[items_model.ItemRow]:
    """The rows under ``prefix`` newest first, fetched a page at a time (one snapshot)."""
    offset = 0
    while True:
        rows = tx.scan(prefix, alive, _SCAN_CHUNK, offset)
        yield from rows
        if len(rows) < _SCAN_CHUNK:
            return
        offset += _SCAN_CHUNK
