"""Issue 9: a commit's memory extraction costs what its candidates cost, not what the user has.

The planner's candidates are found through the identity's planning index (one entry per memory
key and per content signature), so the rows an extraction reads do not grow with the number of
memories already stored. Rows are counted on a real SQLite item store, at the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ogmem_memory import RequestContext
from ogmem_memory.extract import MemoryCandidate, MemoryRecord, plan_writes
from ogmem_memory.longterm import LongTermMemory, memory_namespace
from ogmem_memory.models import utc_now
from ogmem_memory.stores.items import ItemTransaction, PutItem
from ogmem_memory.stores.items_model import ItemRow, Namespace
from ogmem_memory.stores.items_sql import SQLiteItemStore

ADA = RequestContext(account_id="acme", user_id="ada")
_WORDS = [
    "amber",
    "basil",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lagoon",
]


class _CountingTx:
    """Passes every call to the backend's transaction, counting the rows it returns."""

    def __init__(self, inner: ItemTransaction, counts: dict[str, int]) -> None:
        self._inner = inner
        self._counts = counts

    def fetch(
        self, idents: Sequence[tuple[str, str]], alive_at: datetime | None
    ) -> dict[tuple[str, str], ItemRow]:
        found = self._inner.fetch(idents, alive_at)
        self._counts["fetched"] += len(found)
        return found

    def scan(self, prefix: Namespace, alive_at: datetime | None, limit: int, offset: int) -> list[ItemRow]:
        rows = self._inner.scan(prefix, alive_at, limit, offset)
        self._counts["scanned"] += len(rows)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CountingSQLiteItemStore(SQLiteItemStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.counts = {"fetched": 0, "scanned": 0}

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[ItemTransaction]:
        with super().transaction(write=write) as tx:
            yield _CountingTx(tx, self.counts)  # type: ignore[misc]

    def reset(self) -> None:
        self.counts.update(fetched=0, scanned=0)


def _filler(i: int) -> MemoryCandidate:
    words = " ".join(_WORDS[(i * k + k) % len(_WORDS)] for k in range(1, 4))
    return MemoryCandidate("preferences", f"pref:thing-{i}", f"User likes thing {i} {words}.", 0.9)


def _with_memories(tmp_path: Path, name: str, count: int) -> tuple[LongTermMemory, CountingSQLiteItemStore]:
    items = CountingSQLiteItemStore(tmp_path / f"{name}.db")
    long_term = LongTermMemory(items)
    long_term.write_candidates([_filler(i) for i in range(count)], ADA, session_id="seed")
    return long_term, items


TALK = [
    {"role": "user", "content": "I live in Lisbon. I like Python.", "id": "m1"},
    {"role": "assistant", "content": "Noted.", "id": "m2"},
    {"role": "user", "content": "My name is Ada.", "id": "m3"},
]


def test_rows_read_by_an_extraction_do_not_grow_with_the_users_memories(tmp_path: Path) -> None:
    reads: dict[int, dict[str, int]] = {}
    for count in (20, 400):
        long_term, items = _with_memories(tmp_path, f"n{count}", count)
        long_term.commit_session(TALK, ADA, session_id="s1")  # the facts exist now
        items.reset()
        result = long_term.commit_session(TALK, ADA, session_id="s2")  # the same facts again
        assert [p["operation"] for p in result["plans"]] == ["merge", "merge", "merge"]
        reads[count] = dict(items.counts)
        assert len(long_term.memories(ADA, limit=1000)) == count + 3
    assert reads[20] == reads[400]
    assert reads[400]["scanned"] == 0  # no scan at all: index entries and memories by key


def test_memories_stored_before_the_index_are_indexed_once_and_merged_into(tmp_path: Path) -> None:
    items = CountingSQLiteItemStore(tmp_path / "old.db")
    now = utc_now()
    old = MemoryRecord(
        "mem_000000000001", ADA.account_id, ADA.user_id, ADA.agent_id, "profile", "user.location",
        "User lives in Lisbon.", 0.8, "old", ("m0",), now, now,
    )  # fmt: skip
    items.batch([PutItem(memory_namespace(ADA), old.memory_id, old.to_dict(), text=old.content)])
    long_term = LongTermMemory(items)
    first = long_term.commit_session(TALK[:1], ADA, session_id="s1")
    lisbon = next(p for p in first["plans"] if p["key"] == "user.location")
    assert (lisbon["operation"], lisbon["memory_id"]) == ("merge", old.memory_id)
    assert items.counts["scanned"] >= 1  # the one-time build read the memories
    items.reset()
    long_term.commit_session(TALK[:1], ADA, session_id="s2")
    assert items.counts["scanned"] == 0


def test_an_edited_memory_is_found_by_its_new_content(tmp_path: Path) -> None:
    long_term, _ = _with_memories(tmp_path, "edit", 5)
    [record] = [r for r in long_term.memories(ADA, limit=100) if r.key == "pref:thing-3"]
    long_term.edit(ADA, record.memory_id, "User enjoys sailing on the lagoon.")
    same = MemoryCandidate("preferences", "pref:sailing", "User enjoys sailing on the lagoon.", 0.9)
    result = long_term.write_candidates([same], ADA, session_id="s")
    assert [(p["operation"], p["memory_id"]) for p in result["plans"]] == [("merge", record.memory_id)]


def test_the_index_plans_what_the_full_list_of_memories_would(tmp_path: Path) -> None:
    long_term, _ = _with_memories(tmp_path, "same", 60)
    candidates = [
        _filler(7),  # the same fact again
        MemoryCandidate("preferences", "pref:thing-9", "User hates thing 9.", 0.9),  # a reversed stance
        MemoryCandidate("preferences", "pref:other", _filler(11).content, 0.9),  # same content, other key
        MemoryCandidate("profile", "user.location", "User lives in Porto.", 0.9),  # new
    ]
    everything = long_term.memories(ADA, limit=1000)
    expected = plan_writes(candidates, everything)
    result = long_term.write_candidates(candidates, ADA, session_id="s")
    got = [(p["operation"], p["memory_id"] if p["operation"] != "create" else "") for p in result["plans"]]
    want = [(p.action, p.target.memory_id if p.target is not None else "") for p in expected]
    assert got == want
    assert [a for a, _ in got] == ["merge", "update", "merge", "create"]


def test_forgetting_a_user_drops_the_index_too(tmp_path: Path) -> None:
    long_term, items = _with_memories(tmp_path, "forget", 3)
    assert long_term.forget(ADA) == 3
    assert items.list_namespaces(prefix=("memory_index",)) == []
    fresh = long_term.write_candidates([_filler(1)], ADA, session_id="s")
    assert [p["operation"] for p in fresh["plans"]] == ["create"]
