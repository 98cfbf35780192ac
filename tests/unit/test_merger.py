"""ArchiveMerger: non-destructive, section-aware, ordered, bounded, with full metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ogmem_memory.compress import ArchiveMerger, MergedArchive
from ogmem_memory.compress.base import parse_sections
from ogmem_memory.errors import ConfigError
from ogmem_memory.tokens import EstimatingTokenCounter

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Archive:
    archive_id: str
    created_at: str
    overview: str
    abstract: str
    first_seq: int
    last_seq: int
    message_count: int
    token_count: int = 100


def archive(n: int, overview: str, abstract: str = "", created_at: str = "") -> Archive:
    return Archive(
        archive_id=f"a{n}",
        created_at=created_at or f"2024-05-0{n}T10:00:00+00:00",
        overview=overview,
        abstract=abstract or f"part {n}",
        first_seq=n * 10 + 1,
        last_seq=n * 10 + 10,
        message_count=10,
    )


def merger(max_overview_tokens: int = 800) -> ArchiveMerger:
    return ArchiveMerger(max_overview_tokens=max_overview_tokens, now=lambda: NOW)


def test_sections_are_unioned_in_first_appearance_order_without_duplicates() -> None:
    first = archive(
        1, "## Topics\n- travel\n\n## Facts\n- Maria lives in Lisbon\n- Order #A-7731 is $1,249.99"
    )
    second = archive(2, "## Facts\n- maria  lives in Lisbon.\n- Bob is 40\n\n## Open loops\n- call the bank")
    result = merger().merge([second, first])  # input order does not matter
    assert parse_sections(result.overview) == {
        "Topics": ["travel"],
        "Facts": ["Maria lives in Lisbon", "Order #A-7731 is $1,249.99", "Bob is 40"],
        "Open loops": ["call the bank"],
    }
    assert result.overview.index("## Topics") < result.overview.index("## Facts")


def test_seq_range_counts_and_order_follow_first_seq() -> None:
    entries = [archive(3, "## Facts\n- c"), archive(1, "## Facts\n- a"), archive(2, "## Facts\n- b")]
    result = merger().merge(entries)
    assert (result.first_seq, result.last_seq, result.message_count) == (11, 40, 30)
    assert result.metadata["merged_from"] == ["a1", "a2", "a3"]
    assert parse_sections(result.overview) == {"Facts": ["a", "b", "c"]}


def test_ties_on_first_seq_are_broken_by_created_at_then_id() -> None:
    a = Archive("b", "2024-05-01T10:00:00Z", "## Facts\n- x", "x", 1, 5, 5)
    b = Archive("a", "2024-05-01T10:00:00+00:00", "## Facts\n- y", "y", 1, 5, 5)
    c = Archive("c", "2024-05-01T09:00:00+00:00", "## Facts\n- z", "z", 1, 5, 5)
    assert merger().merge([a, b, c]).metadata["merged_from"] == ["c", "a", "b"]


def test_metadata_is_complete_and_json_serialisable() -> None:
    entries = [
        archive(2, "## Facts\n- b", created_at="2024-05-03T00:00:00+00:00"),
        archive(1, "## Facts\n- a"),
    ]
    metadata = merger().merge(entries).metadata
    assert metadata == {
        "kind": "merged",
        "merged_from": ["a1", "a2"],
        "source_count": 2,
        "source_created_at_min": "2024-05-01T10:00:00+00:00",
        "source_created_at_max": "2024-05-03T00:00:00+00:00",
        "merged_at": "2024-06-01T12:00:00+00:00",
        "original_message_count": 20,
        "original_token_count": 200,
        "overview_items_dropped": 0,
    }
    json.dumps(metadata)


def test_abstracts_are_joined_when_short() -> None:
    entries = [archive(1, "## Facts\n- a", "Trip planning"), archive(2, "## Facts\n- b", "Budget talk")]
    assert merger().merge(entries).abstract == "Trip planning | Budget talk"


def test_long_abstracts_keep_first_and_last_within_100_chars() -> None:
    entries = [archive(i, f"## Facts\n- {i}", f"Abstract number {i} " + "x" * 40) for i in range(1, 6)]
    abstract = merger().merge(entries).abstract
    assert len(abstract) <= 100 and "\n" not in abstract
    assert abstract.startswith("Abstract number 1 ") and " | … | Abstract number 5 " in abstract


def test_duplicate_abstracts_are_collapsed() -> None:
    entries = [archive(1, "## Facts\n- a", "Same"), archive(2, "## Facts\n- b", "same")]
    assert merger().merge(entries).abstract == "Same"


def test_unsectioned_overviews_are_concatenated_with_separators() -> None:
    result = merger().merge([archive(2, "Second part."), archive(1, "First part.")])
    assert result.overview == "--- archive 1 of 2 ---\nFirst part.\n\n--- archive 2 of 2 ---\nSecond part."


def test_mixed_overviews_keep_plain_text_as_facts() -> None:
    result = merger().merge(
        [archive(1, "Plain summary\nof the start."), archive(2, "## Facts\n- later fact")]
    )
    assert parse_sections(result.overview) == {"Facts": ["Plain summary of the start.", "later fact"]}


def test_overview_is_bounded_dropping_oldest_bullets_first() -> None:
    counter = EstimatingTokenCounter()
    entries = [
        archive(i, "## Facts\n" + "\n".join(f"- fact {i}.{j} about Lisbon and Porto" for j in range(20)))
        for i in range(1, 9)
    ]
    result = merger(max_overview_tokens=150).merge(entries)
    assert counter.count(result.overview) <= 150
    facts = (parse_sections(result.overview) or {})["Facts"]
    assert facts[-1] == "fact 8.19 about Lisbon and Porto"
    assert facts[:3] == [f"fact 1.{i} about Lisbon and Porto" for i in range(3)]  # anchored opening
    assert "fact 1.3 about Lisbon and Porto" not in facts  # then the oldest go first
    assert result.metadata["overview_items_dropped"] == 160 - len(facts)


def test_unsectioned_overviews_are_bounded_dropping_oldest_archive_first() -> None:
    counter = EstimatingTokenCounter()
    entries = [archive(i, f"Summary {i}: " + "words " * 60) for i in range(1, 6)]
    result = merger(max_overview_tokens=100).merge(entries)
    assert counter.count(result.overview) <= 100
    assert "Summary 5:" in result.overview and "Summary 1:" not in result.overview


def test_empty_input_gives_empty_archive() -> None:
    result = merger().merge([])
    assert isinstance(result, MergedArchive)
    assert (result.overview, result.abstract, result.message_count) == ("", "", 0)
    assert result.metadata["source_count"] == 0 and result.metadata["merged_from"] == []


def test_merge_is_deterministic() -> None:
    entries = [archive(i, f"## Facts\n- f{i}\n\n## Decisions\n- d{i}") for i in range(1, 4)]
    assert merger().merge(entries) == merger().merge(list(reversed(entries)))


def test_default_clock_is_utc() -> None:
    merged_at = ArchiveMerger().merge([archive(1, "## Facts\n- a")]).metadata["merged_at"]
    assert datetime.fromisoformat(merged_at).utcoffset() is not None


def test_invalid_budget_raises_config_error() -> None:
    with pytest.raises(ConfigError):
        ArchiveMerger(max_overview_tokens=0)
