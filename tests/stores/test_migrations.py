"""Applied migrations never change: the text of every script a database may have run is pinned.

The migrations are append-only lists whose index is the schema version; a database records the
version it reached and never runs an older script again, so an edit to one would leave old and
new databases with different schemas. Some scripts share a constant (``sqlite_schema``'s archive
columns); this test is what keeps such a constant from changing an applied script. A new
migration is appended to its list and pinned here once it ships.
"""

from __future__ import annotations

import hashlib

import pytest

from ogmem_memory.stores.items_postgres import POSTGRES_ITEM_MIGRATIONS
from ogmem_memory.stores.items_sqlite import SQLITE_ITEM_MIGRATIONS
from ogmem_memory.stores.postgres_sql import POSTGRES_MIGRATIONS
from ogmem_memory.stores.sqlite_schema import SQLITE_MIGRATIONS

MIGRATIONS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "SQLITE_MIGRATIONS": SQLITE_MIGRATIONS,
    "POSTGRES_MIGRATIONS": POSTGRES_MIGRATIONS,
    "SQLITE_ITEM_MIGRATIONS": SQLITE_ITEM_MIGRATIONS,
    "POSTGRES_ITEM_MIGRATIONS": POSTGRES_ITEM_MIGRATIONS,
}

# sha256 of each script (an item migration's statements joined by NUL), in version order.
PINNED: dict[str, tuple[str, ...]] = {
    "SQLITE_MIGRATIONS": (
        "4dba6c63367a6fb345c90686d6450e29d01d91f95f6ed4009f322f76e49fee55",
        "5909ebb57e2ee5eae131954ae45f20a8595580bcb4f2dc1becfd6f982bb27382",
        "b09e70cdb35b7a9891f4c01e4385954255c688ce574f66eaf3ee7358ff7a28e2",
        "f9424e28c45e75d6e89b7d77f3835e44ed7c26d338e96c700bebf98e9581e170",
        "cc2c058078b8392bc56452cbce2b09ca931ae1f2091e8ce6cf4d8dbaa692491a",
    ),
    "POSTGRES_MIGRATIONS": (
        "21fc70a28785f89f077348268491d0730093eaa0a5ad9c7844edb5c9c50f0962",
        "eeed121c8cf4ab2f65585a2724614e4112f59a083edb1dd8ad518bbfe5c0167f",
        "d2ce6dacf48270a1b9b21861eaf656fbb6f7fc2b73b498958e1005f4c66e3a4d",
        "75b3b0ccacbf1a855cd2d347366557a97015e01605bacab2fbac2feb28d0b513",
    ),
    "SQLITE_ITEM_MIGRATIONS": ("c15dae718eb29ac5a40f449fa432e02873c75b66afc5ec6935696873c643f778",),
    "POSTGRES_ITEM_MIGRATIONS": ("31ec189a060a9b6d090bd37ba31d984643da309822cb920af891dc423d3b48fb",),
}


def _digest(script: str | tuple[str, ...]) -> str:
    text = "\x00".join(script) if isinstance(script, tuple) else script
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_applied_migrations_keep_their_text(name: str) -> None:
    scripts = MIGRATIONS[name]
    pinned = PINNED[name]
    assert len(scripts) >= len(pinned), f"{name}: an applied migration was removed"
    for version, (script, digest) in enumerate(zip(scripts, pinned, strict=False), 1):
        assert _digest(script) == digest, f"{name}: migration {version} was edited; append a new one"
