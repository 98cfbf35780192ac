"""The in-memory item store: the reference backend (not persistent)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from ogmem_memory.stores.items_base import ItemStore, ItemTransaction
from ogmem_memory.stores.items_model import ItemRow, ItemWrite, Namespace, expiry, is_expired, prefix_range
from ogmem_memory.stores.items_ranking import canonical_order


@dataclass
class _MemoryTx:
    rows: dict[tuple[str, str], ItemRow]
    vecs: dict[tuple[str, str], dict[str, bytes]]
    # The first state of every key a write touched, to put back if the batch fails: a write
    # costs O(what it changes), not a copy of the whole store.
    journal: dict[tuple[str, str], tuple[ItemRow | None, dict[str, bytes] | None]] = field(
        default_factory=dict
    )
    _ordered: dict[Namespace, list[ItemRow]] = field(default_factory=dict)

    def _touch(self, ident: tuple[str, str]) -> None:
        if ident not in self.journal:
            self.journal[ident] = (self.rows.get(ident), self.vecs.get(ident))
        self._ordered.clear()

    def rollback(self) -> None:
        for ident, (row, vecs) in self.journal.items():
            if row is None:
                self.rows.pop(ident, None)
            else:
                self.rows[ident] = row
            if vecs is None:
                self.vecs.pop(ident, None)
            else:
                self.vecs[ident] = vecs

    @staticmethod
    def _under(ns: str, prefix: Namespace) -> bool:
        bounds = prefix_range(prefix)
        return bounds is None or ns == bounds[0] or bounds[1] <= ns < bounds[2]

    def fetch(
        self, idents: Sequence[tuple[str, str]], alive_at: datetime | None
    ) -> dict[tuple[str, str], ItemRow]:
        found = {i: self.rows[i] for i in idents if i in self.rows}
        return {i: r for i, r in found.items() if alive_at is None or not is_expired(r, alive_at)}

    def scan(self, prefix: Namespace, alive_at: datetime | None, limit: int, offset: int) -> list[ItemRow]:
        ordered = self._ordered.get(prefix)
        if ordered is None:  # sorted once per transaction: a streamed search reads many pages
            ordered = self._ordered[prefix] = canonical_order(
                r for r in self.rows.values() if self._under(r.ns, prefix)
            )
        if alive_at is not None:
            ordered = [r for r in ordered if not is_expired(r, alive_at)]
        return ordered[offset : offset + limit]

    def vectors(
        self, prefix: Namespace, idents: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes]]:
        return {i: dict(self.vecs[i]) for i in idents if i in self.vecs}

    def namespaces(self, prefix: Namespace, alive_at: datetime | None) -> list[str]:
        return sorted(
            {
                r.ns
                for r in self.rows.values()
                if self._under(r.ns, prefix) and (alive_at is None or not is_expired(r, alive_at))
            }
        )

    def refresh(self, rows: Sequence[tuple[ItemRow, datetime]]) -> None:
        for row, until in rows:
            ident = (row.ns, row.key)
            if self.rows.get(ident) == row:
                self._touch(ident)
                self.rows[ident] = row._replace(expires_at=until)

    def upsert(self, write: ItemWrite, now: datetime) -> None:
        ident = (write.ns, write.key)
        self._touch(ident)
        old = self.rows.get(ident)
        self.rows[ident] = ItemRow(
            write.ns,
            write.key,
            json.loads(write.value_json),
            write.text,
            old.created_at if old is not None else now,
            now,
            expiry(now, write.ttl_minutes),
            write.ttl_minutes,
        )
        self.vecs.pop(ident, None)
        if write.vectors:
            self.vecs[ident] = dict(write.vectors)

    def delete(self, ns: str, key: str) -> bool:
        self._touch((ns, key))
        self.vecs.pop((ns, key), None)
        return self.rows.pop((ns, key), None) is not None

    def delete_prefix(self, prefix: Namespace) -> int:
        doomed = [i for i in self.rows if self._under(i[0], prefix)]
        for ident in doomed:
            self.delete(*ident)
        return len(doomed)

    def delete_expired(self, now: datetime) -> int:
        doomed = [i for i, r in self.rows.items() if is_expired(r, now)]
        for ident in doomed:
            self.delete(*ident)
        return len(doomed)


class InMemoryItemStore(ItemStore):
    """Items in process memory, one lock; the reference backend. Not persistent.

    A write transaction journals the first state of every key it touches and puts it back
    if the batch fails, so a failed batch changes nothing. Values are JSON round-tripped
    like the SQL backends store them.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._rows: dict[tuple[str, str], ItemRow] = {}
        self._vecs: dict[tuple[str, str], dict[str, bytes]] = {}

    def __repr__(self) -> str:
        return f"InMemoryItemStore({len(self._rows)} items)"

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[ItemTransaction]:
        with self._lock:
            if not write:
                yield _MemoryTx(self._rows, self._vecs)
                return
            tx = _MemoryTx(self._rows, self._vecs)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise
