"""Search filters of the item store: validation and JSON-value semantics (``$eq``, ``$gt``, ``$in``, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ogmem_memory.errors import InvalidInputError

#: Operators of search filters (``{"field": {"$gt": 3}}``); a plain value means ``$eq``.
FILTER_OPERATORS: Final = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"})
# A field the value does not have (unlike a JSON null, which it has).
_MISSING: Final = object()


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
