"""SQL backends of the item store: SQLite (the session store's file) and PostgreSQL.

Both run the same statements through one transaction class, ``SQLTransaction``; what
differs is written in a ``SQLDialect`` (table names, JSON and timestamp types, the
placeholder) and in how a transaction is opened. psycopg is imported only when a
``PostgresItemStore`` is set up, so importing this module loads no driver.

Vectors are float32 blobs (``BLOB`` / ``BYTEA``) ranked exactly in Python, in PostgreSQL
too: no pgvector needed, and the same bound as everywhere (see ``ogmem_memory.vectors``).

The shared part is in ``items_sql_transaction``, the backends in ``items_sqlite`` and
``items_postgres``; both are importable from here.
"""

from ogmem_memory.stores.items_postgres import POSTGRES_ITEM_MIGRATIONS, PostgresItemStore
from ogmem_memory.stores.items_sqlite import SQLITE_ITEM_MIGRATIONS, SQLiteItemStore

__all__ = ["POSTGRES_ITEM_MIGRATIONS", "PostgresItemStore", "SQLITE_ITEM_MIGRATIONS", "SQLiteItemStore"]
