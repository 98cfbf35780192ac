"""Issue 9: a merge takes all but the newest half of the live archives, so merges are rarer and
the live count stays within ``archive_max_count``; never fewer sources than the seed's rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.models import ArchiveEntry
from ogmem_memory.policy import plan_merge
from ogmem_memory.stores import InMemoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _archives(n: int) -> list[ArchiveEntry]:
    """``n`` archives of ten messages each, newest first."""
    made = [
        ArchiveEntry(
            f"a{i}", "s", f"o{i}", f"b{i}", 10 * i + 1, 10 * i + 10, 10, created_at=T0 + timedelta(i)
        )
        for i in range(n)
    ]
    return made[::-1]


@pytest.mark.parametrize(
    ("max_count", "threshold", "count", "taken"),
    [
        (10, 10, 9, 0),  # under the threshold
        (10, 10, 10, 5),  # the newest 5 stay: 6 live after
        (10, 10, 14, 9),
        (10, 20, 20, 15),
        (3, 5, 5, 4),
        (3, 3, 3, 2),
        (2, 2, 2, 2),
        (2, 3, 3, 2),
        (1, 2, 2, 2),  # the seed's max(2, count - max + 1) when it is more
        (1, 2, 5, 5),
    ],
)
def test_merge_takes_the_oldest_all_but_half(max_count: int, threshold: int, count: int, taken: int) -> None:
    cfg = MemoryConfig(archive_max_count=max_count, archive_merge_threshold=threshold)
    sources = plan_merge(_archives(count), cfg)
    assert [a.archive_id for a in sources] == [f"a{i}" for i in range(taken)]  # oldest first
    assert len(sources) >= (max(2, count - max_count + 1) if count >= threshold else 0)
    if sources:
        assert count - len(sources) + 1 <= max_count


def test_default_config_merges_every_few_commits_and_keeps_every_message() -> None:
    cfg = MemoryConfig(auto_commit=False)
    with SessionManager(InMemoryStore(), config=cfg) as m:
        for i in range(30):
            m.add_message("s", "user", f"question {i} about the Lisbon budget")
            m.add_message("s", "assistant", f"answer {i}: 1299 EUR")
            m.commit("s", wait=True)
            live = m.list_archives("s")
            assert len(live) <= cfg.archive_max_count
        every = m.list_archives("s", include_merged=True)
        made = [a for a in every if a.archive_id.startswith("merged_")]
        assert len(made) == 6  # at commits 10, 14, ..., 30 (the seed's rule merged at 21 of them)
        assert len(m.get_history("s")) == 60
        covered = sorted(s for a in m.list_archives("s") for s in range(a.first_seq, a.last_seq + 1))
        assert covered == list(range(1, 61))  # live archives cover every seq exactly once
