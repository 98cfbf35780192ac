"""The PostgreSQL item store: psycopg 3 and a connection pool, in a given schema.

psycopg is imported only when a ``PostgresItemStore`` is set up, so importing this module
loads no driver. Vectors are float32 ``BYTEA`` ranked exactly in Python: no pgvector needed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from ogmem_memory.errors import ClosedError, ConfigError, InvalidInputError, SchemaVersionError, StoreError
from ogmem_memory.stores.items_base import ItemStore, ItemTransaction
from ogmem_memory.stores.items_sql_transaction import SQLCursor, SQLDialect, SQLTransaction, translate_error

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool


# ``{items}``, ``{vectors}`` and ``{schema}`` are quoted identifiers; COLLATE "C" makes text
# order bytewise, so the namespace prefix range and the scan order match SQLite's.
POSTGRES_ITEM_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE {items} (
            ns TEXT COLLATE "C" NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            value JSON NOT NULL,
            search_text TEXT NOT NULL DEFAULT '',
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ,
            ttl_minutes DOUBLE PRECISION,
            PRIMARY KEY (ns, key)
        )""",
        "CREATE INDEX ogmem_items_expiry ON {items} (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE {vectors} (
            ns TEXT COLLATE "C" NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            field TEXT NOT NULL,
            embedding BYTEA NOT NULL,
            PRIMARY KEY (ns, key, field),
            FOREIGN KEY (ns, key) REFERENCES {items} (ns, key) ON DELETE CASCADE
        )""",
    ),
)


def _pg_from_ts(value: Any) -> datetime:
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


class PostgresItemStore(ItemStore):
    """Items in PostgreSQL (psycopg 3 and a connection pool), in the given schema.

    Safe across threads, processes and machines: every batch is one transaction (reads in
    ``REPEATABLE READ, READ ONLY``), migrations run once under an advisory lock and are
    recorded in ``<schema>.ogmem_items_migrations``. Vectors are float32 ``BYTEA`` ranked
    exactly in Python (no pgvector needed). The async twins run the sync methods in a thread.

    Args:
        dsn: libpq connection string or ``postgresql://`` URL.
        schema: Schema of the tables; created by ``setup()`` when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        timeout: Seconds bounding a pool wait, each statement and the connect.

    Raises:
        ConfigError: An invalid option (checked without I/O).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 5,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError("PostgresItemStore needs a dsn")
        if not isinstance(schema, str) or not schema or "\x00" in schema:
            raise ConfigError(f"schema must be a non-empty string, got {schema!r}")
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigError(f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self._pool: ConnectionPool[Any] | None = None
        self._migrated = False
        self._lock = threading.Lock()  # setup/close only; held during the migration's I/O
        self._dialect: SQLDialect | None = None

    def __repr__(self) -> str:
        return f"PostgresItemStore(schema={self.schema!r})"

    def _names(self) -> dict[str, str]:
        from psycopg import sql

        def ident(*parts: str) -> str:
            # psycopg reads "%" in a rendered query as a placeholder, even inside a quoted name.
            return sql.Identifier(*parts).as_string(None).replace("%", "%%")

        return {
            "schema": ident(self.schema),
            "items": ident(self.schema, "ogmem_items"),
            "vectors": ident(self.schema, "ogmem_item_vectors"),
            "migrations": ident(self.schema, "ogmem_items_migrations"),
        }

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(self.timeout)),
            "application_name": "ogmem-memory-items",
        }

    def _configure(self, conn: Any) -> None:
        ms = str(math.ceil(self.timeout * 1000))
        # A client stopped mid-transaction must not hold row locks forever.
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (ms, ms),
        )

    def _migrate(self, conn: Any, names: dict[str, str]) -> None:
        def run(template: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            # Always with params (maybe empty): psycopg then reads the "%%" of escaped names as "%".
            cur = conn.execute(template.format(**names), params)
            return list(cur.fetchall()) if cur.description is not None else []

        with conn.transaction():
            run(
                "SELECT pg_advisory_xact_lock(hashtext('ogmem_memory.item_migrations'), hashtext(%s))",
                (self.schema,),
            )
            if not run("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)):
                run("CREATE SCHEMA {schema}")
            run(
                "CREATE TABLE IF NOT EXISTS {migrations} "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            version = int(run("SELECT coalesce(max(version), 0) FROM {migrations}")[0][0])
            if version > len(POSTGRES_ITEM_MIGRATIONS):
                raise SchemaVersionError(
                    f"item schema of {self.schema!r} is at version {version}, newer than this "
                    f"ogmem-memory ({len(POSTGRES_ITEM_MIGRATIONS)}); upgrade ogmem-memory"
                )
            for number, script in enumerate(POSTGRES_ITEM_MIGRATIONS[version:], start=version + 1):
                for statement in script:
                    run(statement)
                run("INSERT INTO {migrations} (version) VALUES (%s)", (number,))

    def setup(self) -> None:
        """Apply migrations (once, under an advisory lock) and open the pool. Idempotent.

        Raises:
            ImportError: psycopg is not installed (with the install command).
            SchemaVersionError: The database's item schema is newer than this code.
            StoreError: The server cannot be reached or the migration failed.
        """
        with self._lock:
            if self._pool is not None:
                return
            try:
                import psycopg
                from psycopg_pool import ConnectionPool

                from ogmem_memory.stores.postgres_pool import pool_options
            except ImportError as exc:
                raise ImportError('PostgresItemStore needs: pip install "ogmem-memory[postgres]"') from exc
            names = self._names()
            if not self._migrated:
                try:
                    with psycopg.connect(self.dsn, **self._connect_kwargs()) as conn:
                        self._migrate(conn, names)
                except (psycopg.Error, UnicodeError) as exc:
                    raise StoreError(f"cannot set up {self!r}: {exc}") from exc
                self._migrated = True
            self._dialect = SQLDialect(
                names={**names, "json_in": "?::json", "json_out": "value::text"},
                placeholder="%s",
                to_db=lambda ts: ts,
                from_db=_pg_from_ts,
            )
            options = pool_options(self, f"ogmem-items:{self.schema}")
            pool: ConnectionPool[Any] = ConnectionPool(
                self.dsn, configure=self._configure, check=ConnectionPool.check_connection, **options
            )
            try:
                pool.open(wait=False)
            except psycopg.Error as exc:
                raise StoreError(f"cannot open the pool of {self!r}: {exc}") from exc
            self._pool = pool

    def close(self) -> None:
        """Close the pool. Idempotent; a later operation opens a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=self.timeout)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[ItemTransaction]:
        import psycopg
        from psycopg_pool import PoolTimeout

        self.setup()
        pool, dialect = self._pool, self._dialect
        if pool is None or dialect is None:
            raise ClosedError(f"{self!r} was closed during the call")
        try:
            with pool.connection(timeout=self.timeout) as conn, conn.transaction():
                if not write:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield SQLTransaction(SQLCursor(conn.execute), dialect)
        except PoolTimeout as exc:
            raise StoreError(f"no PostgreSQL connection within {self.timeout:g}s") from exc
        except (psycopg.Error, UnicodeEncodeError) as exc:
            if isinstance(exc, psycopg.DataError) and "NUL" in str(exc):
                raise InvalidInputError("PostgreSQL text cannot contain NUL (0x00) characters") from exc
            raise translate_error(exc, "PostgreSQL item operation") from exc
