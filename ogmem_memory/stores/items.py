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
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, Self, TypeAlias

from ogmem_memory.errors import ConfigError, InvalidInputError
from ogmem_memory.recall import overlap_score, search_terms
from ogmem_memory.vectors import MAX_EXACT_CANDIDATES, as_finite_vector, cosine_top_k, pack

if TYPE_CHECKING:
    from ogmem_memory.stores.base import SessionStore

Namespace: TypeAlias = tuple[str, ...]

#: Operators of search filters (``{"field": {"$gt": 3}}``); a plain value means ``$eq``.
FILTER_OPERATORS: Final = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"})
_SCAN_CHUNK: Final = 500
_MISSING: Final = object()


# -- values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredItem:
    """One stored item; ``score`` is set by searches with a query (higher is better)."""

    namespace: Namespace
    key: str
    value: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    ttl_minutes: float | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class GetItem:
    """Read one item. ``refresh_ttl`` restarts its TTL; ``omit_expired`` hides it once expired."""

    namespace: Namespace
    key: str
    refresh_ttl: bool = False
    omit_expired: bool = False


@dataclass(frozen=True, slots=True)
class PutItem:
    """Create or replace one item (``created_at`` is kept on replace).

    ``text`` is what lexical search matches (default: the string leaves of ``value``);
    ``vectors`` maps a field name to its embedding and replaces the item's previous vectors.
    """

    namespace: Namespace
    key: str
    value: Mapping[str, Any]
    ttl_minutes: float | None = None
    text: str | None = None
    vectors: Mapping[str, Sequence[float]] | None = None


@dataclass(frozen=True, slots=True)
class DeleteItem:
    """Delete one item and its vectors; the result says whether it existed."""

    namespace: Namespace
    key: str


@dataclass(frozen=True, slots=True)
class SearchItems:
    """Items under ``namespace_prefix`` matching ``filter``.

    Without a query: newest first (``updated_at``). With ``query_vector``: by cosine
    similarity (the best of an item's vectors), items without vectors last with
    ``score=None``. With ``query`` only: by lexical term overlap (score in [0, 1]).
    """

    namespace_prefix: Namespace
    filter: Mapping[str, Any] | None = None
    limit: int = 10
    offset: int = 0
    query: str | None = None
    query_vector: Sequence[float] | None = None
    refresh_ttl: bool = False
    omit_expired: bool = False


@dataclass(frozen=True, slots=True)
class ListNamespaces:
    """Distinct namespaces, sorted; ``"*"`` in ``prefix``/``suffix`` matches any one label."""

    prefix: tuple[str, ...] | None = None
    suffix: tuple[str, ...] | None = None
    max_depth: int | None = None
    limit: int = 100
    offset: int = 0
    omit_expired: bool = False


ItemOp: TypeAlias = GetItem | PutItem | DeleteItem | SearchItems | ListNamespaces
ItemResult: TypeAlias = StoredItem | list[StoredItem] | list[Namespace] | bool | None


class ItemRow(NamedTuple):
    """A stored row as a transaction returns it (``ns`` joined, ``value`` decoded)."""

    ns: str
    key: str
    value: dict[str, Any]
    text: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    ttl_minutes: float | None


class ItemWrite(NamedTuple):
    """A validated put, ready for a transaction: value as JSON text, vectors as float32 blobs."""

    ns: str
    key: str
    value_json: str
    text: str
    ttl_minutes: float | None
    vectors: tuple[tuple[str, bytes], ...]


# -- validation and pure semantics ---------------------------------------------------------


def check_namespace(namespace: object, *, allow_empty: bool = True) -> Namespace:
    """``namespace`` as a tuple of valid labels.

    Raises:
        InvalidInputError: Not a tuple/list of non-empty strings without ``.`` or NUL (or
            empty when ``allow_empty`` is false).
    """
    if isinstance(namespace, str) or not isinstance(namespace, tuple | list):
        raise InvalidInputError(f"a namespace is a tuple of strings, got {type(namespace).__name__}")
    labels = tuple(namespace)
    if not labels and not allow_empty:
        raise InvalidInputError("the namespace of an item cannot be empty")
    for label in labels:
        if not isinstance(label, str):
            raise InvalidInputError(
                f"namespace labels must be strings, got {type(label).__name__} in {labels}"
            )
        if not label:
            raise InvalidInputError(f"namespace labels cannot be empty strings: {labels}")
        if "." in label or "\x00" in label:
            raise InvalidInputError(f"namespace label {label!r} contains '.' or NUL: {labels}")
    return labels


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidInputError(f"an item key must be a str, got {type(key).__name__}")
    if "\x00" in key:
        raise InvalidInputError("an item key cannot contain NUL (PostgreSQL cannot store it)")
    return key


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{what} must be a non-negative int, got {value!r}")
    return value


def _check_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidInputError(f"ttl_minutes must be a positive finite number or None, got {ttl!r}")
    return float(ttl)


def ns_text(namespace: Namespace) -> str:
    """The stored form of a namespace: its labels joined by ``.``."""
    return ".".join(namespace)


def ns_tuple(text: str) -> Namespace:
    """The namespace of a stored ``ns`` column."""
    return tuple(text.split(".")) if text else ()


def prefix_range(prefix: Namespace) -> tuple[str, str, str] | None:
    """``(exact, low, high)`` of a namespace prefix: ``ns = exact OR low <= ns < high``.

    ``None`` for the empty prefix (everything). ``"/"`` is the character after ``"."``, so
    the range holds exactly the namespaces that continue ``prefix`` with more labels.
    """
    if not prefix:
        return None
    exact = ns_text(prefix)
    return exact, exact + ".", exact + "/"


def check_filter(flt: object) -> dict[str, Any] | None:
    """Validate a search filter before any I/O.

    Raises:
        InvalidInputError: Not a mapping of non-empty string keys, an unknown ``$`` operator,
            operators mixed with plain keys, or ``$in``/``$nin`` without a list.
    """
    if flt is None:
        return None
    if not isinstance(flt, Mapping):
        raise InvalidInputError(f"a filter is a mapping, got {type(flt).__name__}")
    for key, condition in flt.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"filter keys must be non-empty strings, got {key!r}")
        if isinstance(condition, Mapping) and any(str(k).startswith("$") for k in condition):
            for op, operand in condition.items():
                if op not in FILTER_OPERATORS:
                    raise InvalidInputError(
                        f"unsupported filter operator {op!r} for {key!r}; use {sorted(FILTER_OPERATORS)}"
                    )
                if op in ("$in", "$nin") and not isinstance(operand, list | tuple):
                    raise InvalidInputError(f"{op} of {key!r} needs a list, got {type(operand).__name__}")
    return dict(flt)


def _lookup(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``True`` is not ``1``, ``1`` is ``1.0``, tuples are lists."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is bool and type(b) is bool and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _present(value: Any) -> bool:
    return value is not _MISSING and value is not None


def _compare(value: Any, op: str, operand: Any) -> bool:
    """SQL-like semantics: a missing or null field fails every operator but ``$eq: None``."""
    if op == "$eq":
        return not _present(value) if operand is None else _present(value) and _json_equal(value, operand)
    if op == "$ne":
        return _present(value) and (operand is None or not _json_equal(value, operand))
    if op == "$in":
        return any(_compare(value, "$eq", o) for o in operand)
    if op == "$nin":
        return _present(value) and not any(_json_equal(value, o) for o in operand)
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (value, operand))
    if not numbers and not (isinstance(value, str) and isinstance(operand, str)):
        return False  # ordering compares numbers with numbers and strings with strings only
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    return bool(value <= operand)  # $lte


def matches_filter(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """Whether ``value`` satisfies a (validated) filter; dotted keys address nested fields."""
    if not flt:
        return True
    for key, condition in flt.items():
        found = _lookup(value, key)
        if isinstance(condition, Mapping) and any(str(k).startswith("$") for k in condition):
            if not all(_compare(found, op, operand) for op, operand in condition.items()):
                return False
        elif not _compare(found, "$eq", condition):
            return False
    return True


def value_text(value: Any) -> str:
    """The words of a value for lexical search: its string and number leaves, in order."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, bool):
            return
        elif isinstance(node, int | float):
            parts.append(str(node))
        elif isinstance(node, Mapping):
            for child in node.values():
                walk(child)
        elif isinstance(node, list | tuple):
            for child in node:
                walk(child)

    walk(value)
    # PostgreSQL text cannot hold NUL; it is no word anyway.
    return "\n".join(parts).replace("\x00", " ")


def _dump_value(value: object) -> str:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"an item value must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"an item value must be JSON-serialisable: {exc}") from exc


def _check_utf8(text: str, what: str) -> None:
    # SQLite and PostgreSQL refuse lone surrogates at bind time; refusing them here keeps the
    # in-memory store identical and the error ahead of any I/O.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid UTF-8 (lone surrogate?): {exc}") from None


def _check_write(op: PutItem) -> ItemWrite:
    namespace = check_namespace(op.namespace, allow_empty=False)
    key = _check_key(op.key)
    value_json = _dump_value(op.value)
    if op.text is not None and not isinstance(op.text, str):
        raise InvalidInputError(f"text must be a str or None, got {type(op.text).__name__}")
    text = (op.text if op.text is not None else value_text(op.value)).replace("\x00", " ")
    vectors: list[tuple[str, bytes]] = []
    for name, vector in (op.vectors or {}).items():
        if not isinstance(name, str) or not name or "\x00" in name:
            raise InvalidInputError(f"vector field names must be non-empty strings, got {name!r}")
        vectors.append((name, pack(as_finite_vector(vector, f"vector {name!r}"))))
    for part, what in (
        (ns_text(namespace), "the namespace"),
        (key, "the key"),
        (value_json, "the value"),
        (text, "the text"),
    ):
        _check_utf8(part, what)
    return ItemWrite(ns_text(namespace), key, value_json, text, _check_ttl(op.ttl_minutes), tuple(vectors))


def _check_op(op: object) -> ItemOp | ItemWrite:
    """Validate one op (a put becomes its ``ItemWrite``). Raises InvalidInputError."""
    if isinstance(op, PutItem):
        return _check_write(op)
    if isinstance(op, GetItem | DeleteItem):
        check_namespace(op.namespace)
        _check_key(op.key)
    elif isinstance(op, SearchItems):
        check_namespace(op.namespace_prefix)
        check_filter(op.filter)
        _check_count(op.limit, "limit")
        _check_count(op.offset, "offset")
        if op.query is not None and not isinstance(op.query, str):
            raise InvalidInputError(f"query must be a str or None, got {type(op.query).__name__}")
        if op.query_vector is not None:
            as_finite_vector(op.query_vector, "query vector")
    elif isinstance(op, ListNamespaces):
        check_namespace(op.prefix or ())
        check_namespace(op.suffix or ())
        if op.max_depth is not None and (_check_count(op.max_depth, "max_depth") == 0):
            raise InvalidInputError("max_depth must be at least 1")
        _check_count(op.limit, "limit")
        _check_count(op.offset, "offset")
    else:
        raise InvalidInputError(f"unknown item operation {type(op).__name__}")
    return op


def _matches_path(namespace: Namespace, path: tuple[str, ...], *, suffix: bool) -> bool:
    if len(namespace) < len(path):
        return False
    part = namespace[len(namespace) - len(path) :] if suffix else namespace[: len(path)]
    return all(p == "*" or p == label for p, label in zip(path, part, strict=True))


def select_namespaces(stored: Iterable[str], op: ListNamespaces) -> list[Namespace]:
    """The page of namespaces ``op`` asks for, from the distinct stored ``ns`` values."""
    found: set[Namespace] = set()
    for text in stored:
        namespace = ns_tuple(text)
        if op.prefix and not _matches_path(namespace, op.prefix, suffix=False):
            continue
        if op.suffix and not _matches_path(namespace, op.suffix, suffix=True):
            continue
        found.add(namespace[: op.max_depth] if op.max_depth is not None else namespace)
    return sorted(found)[op.offset : op.offset + op.limit]


def literal_prefix(path: tuple[str, ...] | None) -> Namespace:
    """The labels of a list_namespaces prefix before its first wildcard (an index range)."""
    out: list[str] = []
    for label in path or ():
        if label == "*":
            break
        out.append(label)
    return tuple(out)


def lexical_scores(query: str, rows: Sequence[ItemRow]) -> list[float]:
    """Term-overlap score of each row's text for ``query``, normalised to [0, 1]."""
    terms = search_terms(query)
    if not terms:
        return [0.0] * len(rows)
    best = overlap_score(terms, " ".join(terms))
    return [overlap_score(terms, row.text) / best if best else 0.0 for row in rows]


def rank_rows(
    rows: Sequence[ItemRow],
    *,
    query: str | None,
    query_vector: Sequence[float] | None,
    vectors: Mapping[tuple[str, str], Mapping[str, bytes]],
    top: int | None = None,
) -> list[tuple[ItemRow, float | None]]:
    """Rows (given newest first) ranked for a search; equal scores keep the newest first.

    ``top`` (the end of the page asked for) bounds the vector ranking to what the page can
    show; rows with vectors beyond it are omitted rather than listed unscored.
    """
    if query_vector is not None:
        # Vectors of another width (another model) cannot be scored: their rows rank as unembedded.
        width = 4 * len(query_vector)
        pairs = [
            ((row.ns, row.key), blob)
            for row in rows
            for blob in vectors.get((row.ns, row.key), {}).values()
            if len(blob) == width
        ]
        # An item holds at most `widest` of the best pairs, so this many pairs always cover
        # `top` distinct items: exact, at the cost of a partial sort instead of a full one.
        widest = max((len(v) for v in vectors.values()), default=1)
        k = len(pairs) if top is None else min(len(pairs), top * widest)
        best: dict[tuple[str, str], float] = {}
        for ident, score in cosine_top_k(query_vector, pairs, k):
            best.setdefault(ident, score)  # results come best first: the first is the max
        scored = sorted(
            ((row, best[(row.ns, row.key)]) for row in rows if (row.ns, row.key) in best),
            key=lambda pair: -pair[1],
        )
        embedded = {ident for ident, _ in pairs}
        rest: list[tuple[ItemRow, float | None]] = [
            (row, None) for row in rows if (row.ns, row.key) not in embedded
        ]
        if top is not None and len(scored) >= top:
            return list(scored)
        return [*scored, *rest]
    if query is not None:
        lexical = sorted(zip(rows, lexical_scores(query, rows), strict=True), key=lambda pair: -pair[1])
        return [(row, score) for row, score in lexical]
    return [(row, None) for row in rows]


def canonical_order(rows: Iterable[ItemRow]) -> list[ItemRow]:
    """Newest first; ties by namespace then key (the order every backend scans in)."""
    ordered = sorted(rows, key=lambda r: (r.ns, r.key))
    return sorted(ordered, key=lambda r: r.updated_at, reverse=True)


def _expired(row: ItemRow, now: datetime) -> bool:
    return row.expires_at is not None and row.expires_at <= now


def _to_item(row: ItemRow, score: float | None = None, expires_at: datetime | None = None) -> StoredItem:
    return StoredItem(
        namespace=ns_tuple(row.ns),
        key=row.key,
        value=row.value,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=expires_at if expires_at is not None else row.expires_at,
        ttl_minutes=row.ttl_minutes,
        score=score,
    )


def expiry(now: datetime, ttl_minutes: float | None) -> datetime | None:
    """When an item written or refreshed at ``now`` expires."""
    return None if ttl_minutes is None else now + timedelta(minutes=ttl_minutes)


# -- the transaction protocol and the one algorithm ----------------------------------------------


class ItemTransaction(Protocol):
    """What a backend provides inside one transaction; :meth:`ItemStore.batch` does the rest.

    ``alive_at`` (when not ``None``) hides rows expired at that instant. Scans return rows
    in :func:`canonical_order`.
    """

    def fetch(
        self, idents: Sequence[tuple[str, str]], alive_at: datetime | None
    ) -> dict[tuple[str, str], ItemRow]:
        """The rows of these ``(ns, key)`` pairs that exist."""
        ...

    def scan(self, prefix: Namespace, alive_at: datetime | None, limit: int, offset: int) -> list[ItemRow]:
        """A page of the rows under ``prefix``, newest first."""
        ...

    def vectors(
        self, prefix: Namespace, idents: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes]]:
        """The vectors of these rows (all under ``prefix``), by field name."""
        ...

    def namespaces(self, prefix: Namespace, alive_at: datetime | None) -> list[str]:
        """The distinct ``ns`` values under ``prefix``."""
        ...

    def refresh(self, rows: Sequence[tuple[ItemRow, datetime]]) -> None:
        """Set each row's ``expires_at`` unless it changed since it was read."""
        ...

    def upsert(self, write: ItemWrite, now: datetime) -> None:
        """Create or replace a row (keeping ``created_at``) and replace its vectors."""
        ...

    def delete(self, ns: str, key: str) -> bool:
        """Delete a row and its vectors; whether it existed."""
        ...

    def delete_prefix(self, prefix: Namespace) -> int:
        """Delete every row under ``prefix`` (non-empty) and their vectors."""
        ...

    def delete_expired(self, now: datetime) -> int:
        """Delete the rows expired at ``now``."""
        ...


class ItemStore(ABC):
    """Durable home of namespaced items. Sync is the contract; ``a*`` twins use a thread.

    Every :meth:`batch` is one transaction: its reads see the state before its writes (as
    in LangGraph's stores), and its puts and deletes apply together, last write per key
    winning. Invalid input raises ``InvalidInputError`` before anything is read or written.
    Constructors do no I/O; :meth:`setup` is idempotent and also run by ``with`` and by the
    first operation.
    """

    def setup(self) -> None:  # noqa: B027 - a backend without connections needs no setup
        """Open connections and apply migrations. Idempotent."""

    def close(self) -> None:  # noqa: B027 - nor a close
        """Release connections. Idempotent; a later call reopens them."""

    def __enter__(self) -> Self:
        self.setup()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def transaction(self, *, write: bool) -> AbstractContextManager[ItemTransaction]:
        """One transaction: committed on success, rolled back on any exception."""

    # -- the operations ---------------------------------------------------------------

    def batch(self, ops: Iterable[ItemOp]) -> list[ItemResult]:
        """Run ``ops`` in one transaction and return one result per op, in order.

        Results: ``GetItem`` -> ``StoredItem | None``; ``SearchItems`` -> ``list[StoredItem]``;
        ``ListNamespaces`` -> ``list[tuple[str, ...]]``; ``PutItem`` -> ``None``;
        ``DeleteItem`` -> whether the item existed before the batch.

        Raises:
            InvalidInputError: An op is invalid (nothing was read or written).
            StoreError: The backend failed (nothing was written).
        """
        checked = [_check_op(op) for op in ops]
        writes: dict[tuple[str, str], ItemWrite | DeleteItem] = {}
        for op in checked:
            if isinstance(op, ItemWrite):
                writes.pop((op.ns, op.key), None)  # re-insert: the last write's position counts
                writes[(op.ns, op.key)] = op
            elif isinstance(op, DeleteItem):
                ident = (ns_text(op.namespace), op.key)
                writes.pop(ident, None)
                writes[ident] = op
        now = datetime.now(UTC)
        refreshes: dict[tuple[str, str], tuple[ItemRow, datetime]] = {}
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

    def _read(
        self,
        tx: ItemTransaction,
        ops: Sequence[ItemOp | ItemWrite],
        now: datetime,
        refreshes: dict[tuple[str, str], tuple[ItemRow, datetime]],
    ) -> list[ItemResult]:
        results: list[ItemResult] = [None] * len(ops)
        gets = [op for op in ops if isinstance(op, GetItem)]
        fetched: dict[tuple[str, str], ItemRow] = {}
        if gets:
            fetched = tx.fetch(list({(ns_text(g.namespace), g.key): None for g in gets}), None)
        deletes = [(ns_text(op.namespace), op.key) for op in ops if isinstance(op, DeleteItem)]
        existed = tx.fetch(deletes, None) if deletes else {}
        for i, op in enumerate(ops):
            if isinstance(op, GetItem):
                row = fetched.get((ns_text(op.namespace), op.key))
                if row is None or (op.omit_expired and _expired(row, now)):
                    continue
                results[i] = _to_item(row, expires_at=self._plan_refresh(row, op.refresh_ttl, now, refreshes))
            elif isinstance(op, SearchItems):
                results[i] = self._search(tx, op, now, refreshes)
            elif isinstance(op, ListNamespaces):
                alive = now if op.omit_expired else None
                results[i] = select_namespaces(tx.namespaces(literal_prefix(op.prefix), alive), op)
            elif isinstance(op, DeleteItem):
                results[i] = (ns_text(op.namespace), op.key) in existed
        return results

    @staticmethod
    def _plan_refresh(
        row: ItemRow, wanted: bool, now: datetime, refreshes: dict[tuple[str, str], tuple[ItemRow, datetime]]
    ) -> datetime | None:
        # An expired row is never refreshed: a read must not resurrect it.
        if not wanted or row.ttl_minutes is None or _expired(row, now):
            return None
        until = expiry(now, row.ttl_minutes)
        assert until is not None
        refreshes[(row.ns, row.key)] = (row, until)
        return until

    def _search(
        self,
        tx: ItemTransaction,
        op: SearchItems,
        now: datetime,
        refreshes: dict[tuple[str, str], tuple[ItemRow, datetime]],
    ) -> list[StoredItem]:
        prefix = check_namespace(op.namespace_prefix)
        alive = now if op.omit_expired else None
        flt = check_filter(op.filter)
        ranked_search = op.query_vector is not None or bool(op.query and op.query.strip())
        page: list[tuple[ItemRow, float | None]]
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
            _to_item(row, score, self._plan_refresh(row, op.refresh_ttl, now, refreshes))
            for row, score in page
        ]

    @staticmethod
    def _write(
        tx: ItemTransaction,
        writes: Mapping[tuple[str, str], ItemWrite | DeleteItem],
        now: datetime,
        refreshes: dict[tuple[str, str], tuple[ItemRow, datetime]],
    ) -> None:
        for ident in writes:
            refreshes.pop(ident, None)  # the write sets the TTL itself
        if refreshes:
            tx.refresh(list(refreshes.values()))
        for ident, write in writes.items():
            if isinstance(write, ItemWrite):
                tx.upsert(write, now)
            else:
                tx.delete(*ident)

    def get(
        self, namespace: Namespace, key: str, *, refresh_ttl: bool = False, omit_expired: bool = False
    ) -> StoredItem | None:
        """The item at ``namespace``/``key``, or ``None``."""
        result = self.batch([GetItem(namespace, key, refresh_ttl, omit_expired)])[0]
        assert result is None or isinstance(result, StoredItem)
        return result

    def put(
        self,
        namespace: Namespace,
        key: str,
        value: Mapping[str, Any],
        *,
        ttl_minutes: float | None = None,
        text: str | None = None,
        vectors: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """Create or replace an item (see :class:`PutItem`)."""
        self.batch([PutItem(namespace, key, value, ttl_minutes, text, vectors)])

    def delete(self, namespace: Namespace, key: str) -> bool:
        """Delete an item; whether it existed."""
        return bool(self.batch([DeleteItem(namespace, key)])[0])

    def search(
        self,
        namespace_prefix: Namespace,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        query: str | None = None,
        query_vector: Sequence[float] | None = None,
        refresh_ttl: bool = False,
        omit_expired: bool = False,
    ) -> list[StoredItem]:
        """Items under a namespace prefix (see :class:`SearchItems`)."""
        op = SearchItems(
            namespace_prefix, filter, limit, offset, query, query_vector, refresh_ttl, omit_expired
        )
        result = self.batch([op])[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    def list_namespaces(
        self,
        *,
        prefix: tuple[str, ...] | None = None,
        suffix: tuple[str, ...] | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
        omit_expired: bool = False,
    ) -> list[Namespace]:
        """Distinct namespaces (see :class:`ListNamespaces`)."""
        result = self.batch([ListNamespaces(prefix, suffix, max_depth, limit, offset, omit_expired)])[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    def sweep_expired(self) -> int:
        """Delete every expired item (and its vectors); how many were deleted."""
        with self.transaction(write=True) as tx:
            return tx.delete_expired(datetime.now(UTC))

    def delete_namespace_prefix(self, prefix: Namespace) -> int:
        """Delete every item whose namespace starts with ``prefix`` (whole labels); how many.

        For "forget this user": ``delete_namespace_prefix(("memories", user_id))``.

        Raises:
            InvalidInputError: ``prefix`` is empty (that would delete everything) or invalid.
        """
        labels = check_namespace(prefix, allow_empty=False)
        with self.transaction(write=True) as tx:
            return tx.delete_prefix(labels)

    # -- async twins -------------------------------------------------------------------

    async def asetup(self) -> None:
        """Async ``setup``."""
        await asyncio.to_thread(self.setup)

    async def aclose(self) -> None:
        """Async ``close``."""
        await asyncio.to_thread(self.close)

    async def abatch(self, ops: Iterable[ItemOp]) -> list[ItemResult]:
        """Async ``batch``."""
        return await asyncio.to_thread(self.batch, list(ops))

    async def aget(
        self, namespace: Namespace, key: str, *, refresh_ttl: bool = False, omit_expired: bool = False
    ) -> StoredItem | None:
        """Async ``get``."""
        return await asyncio.to_thread(
            self.get, namespace, key, refresh_ttl=refresh_ttl, omit_expired=omit_expired
        )

    async def aput(
        self,
        namespace: Namespace,
        key: str,
        value: Mapping[str, Any],
        *,
        ttl_minutes: float | None = None,
        text: str | None = None,
        vectors: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """Async ``put``."""
        await asyncio.to_thread(
            self.put, namespace, key, value, ttl_minutes=ttl_minutes, text=text, vectors=vectors
        )

    async def adelete(self, namespace: Namespace, key: str) -> bool:
        """Async ``delete``."""
        return await asyncio.to_thread(self.delete, namespace, key)

    async def asearch(
        self,
        namespace_prefix: Namespace,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        query: str | None = None,
        query_vector: Sequence[float] | None = None,
        refresh_ttl: bool = False,
        omit_expired: bool = False,
    ) -> list[StoredItem]:
        """Async ``search``."""
        op = SearchItems(
            namespace_prefix, filter, limit, offset, query, query_vector, refresh_ttl, omit_expired
        )
        result = (await self.abatch([op]))[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    async def alist_namespaces(
        self,
        *,
        prefix: tuple[str, ...] | None = None,
        suffix: tuple[str, ...] | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
        omit_expired: bool = False,
    ) -> list[Namespace]:
        """Async ``list_namespaces``."""
        result = (
            await self.abatch([ListNamespaces(prefix, suffix, max_depth, limit, offset, omit_expired)])
        )[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    async def asweep_expired(self) -> int:
        """Async ``sweep_expired``."""
        return await asyncio.to_thread(self.sweep_expired)

    async def adelete_namespace_prefix(self, prefix: Namespace) -> int:
        """Async ``delete_namespace_prefix``."""
        return await asyncio.to_thread(self.delete_namespace_prefix, prefix)


def _stream(tx: ItemTransaction, prefix: Namespace, alive: datetime | None) -> Iterator[ItemRow]:
    """The rows under ``prefix`` newest first, fetched a page at a time (one snapshot)."""
    offset = 0
    while True:
        rows = tx.scan(prefix, alive, _SCAN_CHUNK, offset)
        yield from rows
        if len(rows) < _SCAN_CHUNK:
            return
        offset += _SCAN_CHUNK


# -- the in-memory backend ----------------------------------------------------------------


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
        return {i: r for i, r in found.items() if alive_at is None or not _expired(r, alive_at)}

    def scan(self, prefix: Namespace, alive_at: datetime | None, limit: int, offset: int) -> list[ItemRow]:
        ordered = self._ordered.get(prefix)
        if ordered is None:  # sorted once per transaction: a streamed search reads many pages
            ordered = self._ordered[prefix] = canonical_order(
                r for r in self.rows.values() if self._under(r.ns, prefix)
            )
        if alive_at is not None:
            ordered = [r for r in ordered if not _expired(r, alive_at)]
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
                if self._under(r.ns, prefix) and (alive_at is None or not _expired(r, alive_at))
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
        doomed = [i for i, r in self.rows.items() if _expired(r, now)]
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


# -- opening ------------------------------------------------------------------------------------


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
    "check_filter",
    "check_namespace",
    "item_store_for",
    "matches_filter",
    "open_item_store",
    "rank_rows",
    "select_namespaces",
    "value_text",
]
