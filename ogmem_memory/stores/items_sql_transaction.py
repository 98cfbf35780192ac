"""What both SQL item stores run: the statements, the dialect, and one transaction class.

The statements are written once with ``?`` placeholders; a :class:`SQLDialect` holds what
differs between SQLite and PostgreSQL (table names, JSON and timestamp types, the
placeholder), and :class:`SQLTransaction` implements the item transaction over either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ogmem_memory.errors import InvalidInputError, OgmemError, StoreError
from ogmem_memory.stores.items_base import ItemTransaction
from ogmem_memory.stores.items_model import ItemRow, ItemWrite, Namespace, expiry, prefix_range

# Statements are written with ``?`` placeholders (PostgreSQL gets ``%s``), each where it runs,
# beside the values it binds; only the parts several statements share are named here.
_COLS: Final = "ns, key, {json_out}, search_text, created_at, updated_at, expires_at, ttl_minutes"
_ALIVE: Final = "(expires_at IS NULL OR expires_at > ?)"
_EXPIRED: Final = "expires_at IS NOT NULL AND expires_at <= ?"
_DELETE_VECTORS: Final = "DELETE FROM {vectors} WHERE ns = ? AND key = ?"
_FETCH_CHUNK: Final = 400  # (ns, key) pairs per statement: 800 variables, far below SQLite's limit


@dataclass(frozen=True, slots=True)
class SQLDialect:
    """What differs between the SQL backends; everything else is shared."""

    names: dict[str, str]
    placeholder: str
    to_db: Callable[[datetime], Any]
    from_db: Callable[[Any], datetime]

    def q(self, template: str) -> str:
        # Templates hold no "%" and no "?" but placeholders; names are pre-escaped for psycopg.
        text = template.format(**self.names)
        return text if self.placeholder == "?" else text.replace("?", "%s")


class SQLCursor:
    """The two things a transaction needs from a DB-API connection: rows and row counts."""

    def __init__(self, execute: Callable[[str, Sequence[Any]], Any]) -> None:
        self._execute = execute

    def rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._execute(query, params).fetchall())

    def count(self, query: str, params: Sequence[Any]) -> int:
        return int(self._execute(query, params).rowcount)


class SQLTransaction(ItemTransaction):
    """:class:`ItemTransaction` over one open SQL transaction (SQLite or PostgreSQL)."""

    def __init__(self, cursor: SQLCursor, dialect: SQLDialect) -> None:
        self._cur = cursor
        self._d = dialect

    def _row(self, r: Sequence[Any]) -> ItemRow:
        d = self._d
        return ItemRow(
            r[0],
            r[1],
            json.loads(r[2]),
            r[3],
            d.from_db(r[4]),
            d.from_db(r[5]),
            d.from_db(r[6]) if r[6] is not None else None,
            float(r[7]) if r[7] is not None else None,
        )

    def _where(self, prefix: Namespace, alive_at: datetime | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        bounds = prefix_range(prefix)
        if bounds is not None:
            clauses.append("(ns = ? OR (ns >= ? AND ns < ?))")
            params.extend(bounds)
        if alive_at is not None:
            clauses.append(_ALIVE)
            params.append(self._d.to_db(alive_at))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def fetch(
        self, idents: Sequence[tuple[str, str]], alive_at: datetime | None
    ) -> dict[tuple[str, str], ItemRow]:
        found: dict[tuple[str, str], ItemRow] = {}
        for start in range(0, len(idents), _FETCH_CHUNK):
            chunk = idents[start : start + _FETCH_CHUNK]
            where = " OR ".join(["(ns = ? AND key = ?)"] * len(chunk))
            params: list[Any] = [part for ident in chunk for part in ident]
            if alive_at is not None:
                where = f"({where}) AND {_ALIVE}"
                params.append(self._d.to_db(alive_at))
            query = self._d.q(f"SELECT {_COLS} FROM {{items}} WHERE {where}")
            for r in self._cur.rows(query, params):
                row = self._row(r)
                found[(row.ns, row.key)] = row
        return found

    def scan(self, prefix: Namespace, alive_at: datetime | None, limit: int, offset: int) -> list[ItemRow]:
        where, params = self._where(prefix, alive_at)
        query = self._d.q(
            f"SELECT {_COLS} FROM {{items}}{where} ORDER BY updated_at DESC, ns, key LIMIT ? OFFSET ?"
        )
        return [self._row(r) for r in self._cur.rows(query, [*params, limit, offset])]

    def vectors(
        self, prefix: Namespace, idents: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, bytes]]:
        where, params = self._where(prefix, None)
        query = self._d.q(f"SELECT ns, key, field, embedding FROM {{vectors}}{where} ORDER BY ns, key, field")
        out: dict[tuple[str, str], dict[str, bytes]] = {}
        for ns, key, name, blob in self._cur.rows(query, params):
            if (ns, key) in idents:
                out.setdefault((ns, key), {})[name] = bytes(blob)
        return out

    def namespaces(self, prefix: Namespace, alive_at: datetime | None) -> list[str]:
        where, params = self._where(prefix, alive_at)
        return [r[0] for r in self._cur.rows(self._d.q(f"SELECT DISTINCT ns FROM {{items}}{where}"), params)]

    def refresh(self, rows: Sequence[tuple[ItemRow, datetime]]) -> None:
        query = self._d.q("UPDATE {items} SET expires_at = ? WHERE ns = ? AND key = ? AND updated_at = ?")
        for row, until in rows:
            self._cur.count(query, [self._d.to_db(until), row.ns, row.key, self._d.to_db(row.updated_at)])

    def upsert(self, write: ItemWrite, now: datetime) -> None:
        d = self._d
        until = expiry(now, write.ttl_minutes)
        self._cur.count(
            d.q(
                "INSERT INTO {items} (ns, key, value, search_text, created_at, updated_at, expires_at, "
                "ttl_minutes) VALUES (?, ?, {json_in}, ?, ?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET "
                "value = excluded.value, search_text = excluded.search_text, updated_at = excluded.updated_at, "
                "expires_at = excluded.expires_at, ttl_minutes = excluded.ttl_minutes"
            ),
            [
                write.ns,
                write.key,
                write.value_json,
                write.text,
                d.to_db(now),
                d.to_db(now),
                d.to_db(until) if until is not None else None,
                write.ttl_minutes,
            ],
        )
        self._cur.count(d.q(_DELETE_VECTORS), [write.ns, write.key])
        for name, blob in write.vectors:
            self._cur.count(
                d.q("INSERT INTO {vectors} (ns, key, field, embedding) VALUES (?, ?, ?, ?)"),
                [write.ns, write.key, name, blob],
            )

    def delete(self, ns: str, key: str) -> bool:
        self._cur.count(self._d.q(_DELETE_VECTORS), [ns, key])
        return self._cur.count(self._d.q("DELETE FROM {items} WHERE ns = ? AND key = ?"), [ns, key]) > 0

    def delete_prefix(self, prefix: Namespace) -> int:
        where, params = self._where(prefix, None)
        self._cur.count(self._d.q(f"DELETE FROM {{vectors}}{where}"), params)
        return self._cur.count(self._d.q(f"DELETE FROM {{items}}{where}"), params)

    def delete_expired(self, now: datetime) -> int:
        at = self._d.to_db(now)
        self._cur.count(
            self._d.q(
                f"DELETE FROM {{vectors}} WHERE (ns, key) IN (SELECT ns, key FROM {{items}} WHERE {_EXPIRED})"
            ),
            [at],
        )
        return self._cur.count(self._d.q(f"DELETE FROM {{items}} WHERE {_EXPIRED}"), [at])


def translate_error(exc: BaseException, what: str) -> OgmemError:
    """The OgmemError of a driver error: bad text is the caller's input, the rest the store's."""
    if isinstance(exc, UnicodeEncodeError):
        return InvalidInputError(f"text is not valid UTF-8 (lone surrogate?): {exc}")
    return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")
