"""After its own commit or merge, a manager updates its cached archives as a re-read would return
them, without reading the window again; an archive change by anyone else still makes it re-read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.models import WindowRead
from ogmem_memory.stores import InMemoryStore, SessionStore, SQLiteStore
from tests.conftest import postgres_dsn_or_skip

SID = "s"
CONFIG = MemoryConfig(auto_commit=False, archive_max_count=3, archive_merge_threshold=3)


class CountsFullReads:
    """Mixed into a store: counts the full window reads."""

    full_reads = 0

    def read_window(self, *args: Any, **kwargs: Any) -> WindowRead | None:
        window = super().read_window(*args, **kwargs)  # type: ignore[misc]
        if window is not None and window.full:
            self.full_reads += 1
        return window


class CountingSQLite(CountsFullReads, SQLiteStore):
    """``meddle`` runs right after each archive commit lands."""

    meddle: Any = None

    def commit_archive(self, *args: Any, **kwargs: Any) -> Any:
        result = super().commit_archive(*args, **kwargs)
        if self.meddle is not None:
            self.meddle(self)
        return result


class CountingMemory(CountsFullReads, InMemoryStore):
    pass


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "postgres":
        from ogmem_memory.stores.postgres import PostgresStore

        class CountingPostgres(CountsFullReads, PostgresStore):
            pass

        yield CountingPostgres(postgres_dsn_or_skip(), schema=request.getfixturevalue("postgres_schema"))
        return
    yield CountingMemory() if request.param == "memory" else CountingSQLite(tmp_path / "c.db")


def _cached_as_read(m: SessionManager, store: SessionStore) -> None:
    buf = m._cache.peek(SID)
    assert buf is not None and buf.head is not None
    listed = store.list_archives(SID, limit=CONFIG.archive_max_count + 1)
    assert [(a.archive_id, a.overview, a.abstract, a.first_seq, a.last_seq) for a in buf.archives] == [
        (a.archive_id, a.overview, a.abstract, a.first_seq, a.last_seq) for a in listed
    ]
    assert [dict(a.metadata) for a in buf.archives] == [dict(a.metadata) for a in listed]
    head = store.head(SID)
    assert head is not None and head.archive_version == buf.head.archive_version


def _turn(m: SessionManager, i: int) -> None:
    m.add_message(SID, "user", f"user turn {i} about the Lisbon trip")
    m.add_message(SID, "assistant", f"reply {i} with the plan")


def test_own_commits_and_merges_update_the_cache_without_a_full_read(store: SessionStore) -> None:
    with SessionManager(store, config=CONFIG) as m:
        _turn(m, 0)
        m.get_context(SID)  # the first full read
        reads = store.full_reads  # type: ignore[attr-defined]
        for i in range(1, 8):  # merges from the third commit on
            _turn(m, i)
            assert m.commit(SID, wait=True).status == "completed"
            _cached_as_read(m, store)
        assert store.full_reads == reads  # type: ignore[attr-defined]
        assert any(a.archive_id.startswith("merged_") for a in store.list_archives(SID))
        context = m.get_context(SID)
        assert [m.content for m in context.messages] == []  # everything archived, nothing lost
        assert len(m.get_history(SID)) == 16


def test_an_archive_change_right_after_the_commit_is_read_from_the_store(tmp_path: Path) -> None:
    store = CountingSQLite(tmp_path / "c.db")
    with SessionManager(store, config=CONFIG) as m:
        _turn(m, 0)
        m.commit(SID, wait=True)
        first = store.list_archives(SID)[0].archive_id
        # another writer deletes the first archive between this commit and its cache update
        store.meddle = lambda s: s.delete_archive(SID, first)
        _turn(m, 1)
        reads = store.full_reads
        m.commit(SID, wait=True)
        store.meddle = None
        buf = m._synced(SID, None)
        assert store.full_reads == reads + 1  # the version did not match: re-read once
        assert first not in {a.archive_id for a in buf.archives}
        _cached_as_read(m, store)


def test_another_manager_sees_the_commit_and_its_own_cache_stays_true(tmp_path: Path) -> None:
    one = SessionManager(CountingSQLite(tmp_path / "c.db"), config=CONFIG)
    two = SessionManager(CountingSQLite(tmp_path / "c.db"), config=CONFIG)
    try:
        for i in range(6):
            writer = (one, two)[i % 2]
            _turn(writer, i)
            assert writer.commit(SID, wait=True).status == "completed"
            for m in (one, two):
                m._synced(SID, None)
                _cached_as_read(m, m.store)
        assert len(one.get_history(SID)) == 12
    finally:
        one.close()
        two.close()


def test_metadata_json_cannot_hold_leaves_the_cache_to_a_re_read() -> None:
    class OddQuality:
        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return {"kinds": {"a", "b"}}  # the in-memory store keeps it; JSON could not

    store = CountingMemory()
    with SessionManager(store, config=CONFIG) as m:
        m.quality_evaluator = OddQuality()  # type: ignore[assignment]
        for i in range(2):
            _turn(m, i)
            result = m.commit(SID, wait=True)
            assert result.status == "completed" and result.archived
        buf = m._synced(SID, None)
        assert not buf.commit_in_progress
        assert [a.archive_id for a in buf.archives] == [a.archive_id for a in store.list_archives(SID)]
