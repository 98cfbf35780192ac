"""Which store an ``ogmem`` command names, and whether it holds ogmem data, checked read-only.

Before a store is opened (opening one creates its file, directory, schema and tables),
the target is checked through a read-only SQLite connection or a plain PostgreSQL
query for an ogmem schema; without one the command says ``no ogmem data in ...`` and
leaves the file byte for byte as it was (no ``-wal``/``-shm`` either).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

from ogmem_memory.cli_common import EXIT_FAILURE, CliError
from ogmem_memory.manager import SessionManager
from ogmem_memory.stores import SessionStore, open_store

POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://", "postgresql+psycopg://")
SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def default_db() -> str:
    """``$OGMEM_DB`` or ``ogmem.db``: the same default as ``SessionManager()``."""
    return os.environ.get("OGMEM_DB") or "ogmem.db"


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL or bare path; ``None`` for other stores and ``:memory:``."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path
    elif "://" in url:
        return None
    else:
        path = url
    return None if path in ("", ":memory:") else path


def display_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages and output)."""
    try:
        password = urlsplit(url).password
    except ValueError:  # a malformed port; the store reports that, not the redaction
        return url
    if password is None:
        return url
    scheme, _, rest = url.partition("://")
    userinfo, _, hostpart = rest.partition("@")
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hostpart}"


@dataclass(frozen=True, slots=True)
class Target:
    """The store a command names: ``--db`` and, for PostgreSQL, ``--schema``."""

    url: str
    schema: str | None = None

    @property
    def postgres(self) -> bool:
        """True for a ``postgresql://`` URL."""
        return self.url.startswith(POSTGRES_SCHEMES)

    @property
    def path(self) -> str | None:
        """The SQLite file, or ``None`` (PostgreSQL, ``memory://``, ``:memory:``)."""
        return None if self.postgres else sqlite_path(self.url)

    @property
    def dsn(self) -> str:
        """The URL as psycopg takes it."""
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)

    @property
    def schema_name(self) -> str:
        """The PostgreSQL schema: ``--schema`` or ``public`` (PostgresStore's default)."""
        return self.schema or "public"

    def __str__(self) -> str:
        if self.postgres:
            return f"{display_url(self.url)} (schema {self.schema_name})"
        return self.url


def target_of(args: argparse.Namespace) -> Target:
    """The target of parsed arguments (``--db``, ``--schema``), checked for consistency."""
    schema: str | None = getattr(args, "schema", None)
    target = Target(args.db, schema)
    if schema is not None and not target.postgres:
        raise CliError(f"--schema applies to postgresql:// URLs only, not {display_url(args.db)!r}")
    if schema is not None and not schema.strip():
        raise CliError("--schema must not be empty")
    return target


def sqlite_ogmem_version(path: str) -> int | None:
    """The ogmem schema version recorded in a SQLite file, read without changing anything.

    Args:
        path: An existing file.

    Returns:
        The version, or ``None`` when the file holds no ogmem schema (an empty file,
        another application's database).

    Raises:
        CliError: The file is not an SQLite database or cannot be read (exit code 1).
    """
    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_FAILURE) from exc
    if not header:
        return None  # SQLite treats an empty file as an empty database
    if not header.startswith(SQLITE_MAGIC):
        raise CliError(f"{path} is not an SQLite database", EXIT_FAILURE)
    # A read-only connection to a WAL database creates -wal and -shm files and leaves them
    # behind. With no -wal file, every committed page is in the main file and no connection
    # is open (the last one to close removes it), so reading the file as immutable is exact
    # and creates nothing. Bytes 18-19 are the write/read format versions: 2 means WAL.
    wal = len(header) >= 20 and 2 in (header[18], header[19])
    immutable = wal and not os.path.exists(path + "-wal")
    # quote(): a ? or # in the path would otherwise start the URI's query or fragment.
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ogmem_schema'"
            ).fetchone()
            row = conn.execute("SELECT max(version) FROM ogmem_schema").fetchone() if found else None
    except sqlite3.Error as exc:
        raise CliError(f"cannot read {path}: {exc}", EXIT_FAILURE) from exc
    return int(row[0]) if row and row[0] else None


def _psycopg() -> Any:
    # Imported on use: the core never imports psycopg at import time.
    try:
        return importlib.import_module("psycopg")
    except ImportError as exc:
        raise ImportError('PostgreSQL needs: pip install "ogmem-memory[postgres]"') from exc


@contextmanager
def _pg_connect(target: Target) -> Iterator[Any]:
    """A plain autocommit connection for catalog queries, with a one-line error when it fails."""
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(target.dsn, autocommit=True, connect_timeout=10, application_name="ogmem-cli")
    except psycopg.Error as exc:
        raise CliError(f"cannot connect to {display_url(target.url)}: {exc}", EXIT_FAILURE) from exc
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise CliError(f"cannot read {target}: {exc}", EXIT_FAILURE) from exc


def postgres_ogmem_version(target: Target) -> int | None:
    """The ogmem schema version in ``target``'s PostgreSQL schema, or ``None`` when it has none.

    Only catalog and ``SELECT`` queries: a schema or table that is missing stays missing.
    """
    sql = _psycopg().sql
    with _pg_connect(target) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'ogmem_migrations' AND c.relkind IN ('r', 'p')",
            (target.schema_name,),
        ).fetchone()
        if found is None:
            return None
        query = sql.SQL("SELECT max(version) FROM {}").format(
            sql.Identifier(target.schema_name, "ogmem_migrations")
        )
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] else None


def postgres_ogmem_bytes(target: Target) -> int:
    """Bytes on disk of the ``ogmem_*`` tables of the schema, indexes and TOAST included."""
    with _pg_connect(target) as conn:
        row = conn.execute(
            # relkind r/p: tables only; pg_total_relation_size already counts their indexes.
            "SELECT coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname LIKE 'ogmem\\_%%'",
            (target.schema_name,),
        ).fetchone()
    return int(row[0])


def require_ogmem_data(target: Target) -> None:
    """Refuse, changing nothing, when ``target`` holds no ogmem schema.

    Raises:
        CliError: ``no ogmem data in ...`` (exit code 2), or the target cannot be read (1).
    """
    if target.postgres:
        if postgres_ogmem_version(target) is None:
            raise CliError(f"no ogmem data in {target}")
        return
    path = target.path
    if path is None:
        return  # memory:// and :memory: start empty; there is nothing to protect
    if not Path(path).is_file():
        reason = "not a file" if Path(path).exists() else "file not found"
        raise CliError(f"no ogmem data in {path} ({reason}; run 'ogmem demo' to create one, or pass --db)")
    if sqlite_ogmem_version(path) is None:
        raise CliError(f"no ogmem data in {path}")


def check_demo_target(target: Target) -> None:
    """Refuse a demo database that would need a new directory or belongs to another application.

    Raises:
        CliError: Exit code 2, before anything is created.
    """
    if target.schema is not None:
        raise CliError("'ogmem demo' does not take --schema; it writes to the URL's default schema, public")
    path = target.path
    if path is None:
        return
    directory = Path(path).parent
    if not directory.is_dir():
        raise CliError(f"directory {str(directory)!r} does not exist; create it first or pass another --db")
    if Path(path).exists():
        if not Path(path).is_file():
            raise CliError(f"{path} is not a file")
        if sqlite_ogmem_version(path) is None and Path(path).stat().st_size > 0:
            raise CliError(
                f"no ogmem data in {path}: 'ogmem demo' writes only to a new file or an ogmem database"
            )


def open_target(target: Target) -> SessionStore:
    """The store for ``target`` (not set up: no I/O)."""
    if target.postgres:
        try:
            from ogmem_memory.stores.postgres import PostgresStore
        except ImportError as exc:
            raise ImportError('PostgreSQL needs: pip install "ogmem-memory[postgres]"') from exc
        return PostgresStore(target.dsn, schema=target.schema_name)
    return open_store(target.url)


@contextmanager
def open_manager(target: Target) -> Iterator[SessionManager]:
    """A manager on an existing ogmem store; refuses (creating nothing) when there is none."""
    require_ogmem_data(target)
    with SessionManager(open_target(target)) as manager:
        yield manager


def db_size(target: Target) -> int | None:
    """Bytes on disk: the SQLite file with its -wal/-shm, or the schema's ogmem tables."""
    if target.postgres:
        return postgres_ogmem_bytes(target)
    path = target.path
    if path is None:
        return None
    files = (Path(path), Path(path + "-wal"), Path(path + "-shm"))
    return sum(f.stat().st_size for f in files if f.is_file())
