"""Values of the item store: the operations, their results, rows and writes; namespace forms.

A namespace is stored as its labels joined by ``.``: :func:`prefix_range` turns a prefix
into an index range, :func:`select_namespaces` answers a ``ListNamespaces`` from the stored
forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeAlias

Namespace: TypeAlias = tuple[str, ...]


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


def is_expired(row: ItemRow, now: datetime) -> bool:
    """Whether the row's TTL has run out at ``now``."""
    return row.expires_at is not None and row.expires_at <= now


def to_item(row: ItemRow, score: float | None = None, expires_at: datetime | None = None) -> StoredItem:
    """The item a read returns for ``row`` (``expires_at``: a refreshed TTL's new expiry)."""
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
