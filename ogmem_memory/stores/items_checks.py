"""Validation of item operations before any I/O: namespaces, keys, TTLs, values, vectors.

A put becomes its :class:`~ogmem_memory.stores.items_model.ItemWrite` (value as JSON text,
vectors as float32 blobs), ready for any backend's transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ogmem_memory.errors import InvalidInputError
from ogmem_memory.stores.items_filters import check_filter
from ogmem_memory.stores.items_model import (
    DeleteItem,
    GetItem,
    ItemOp,
    ItemWrite,
    ListNamespaces,
    Namespace,
    PutItem,
    SearchItems,
    ns_text,
)
from ogmem_memory.vectors import as_finite_vector, pack


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


def check_op(op: object) -> ItemOp | ItemWrite:
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
