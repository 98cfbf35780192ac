"""Merge several archives of a session into one, without copying or dropping any message.

Raw turns stay in the store; a merged archive only covers the seq range of its sources, so merging
bounds the number of live archives without making history lossy (the seed capped messages at 200).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from ogmem_memory.compress.base import (
    ABSTRACT_MAX_CHARS,
    Sections,
    bound_sections,
    bullet_key,
    merge_sections,
    one_line,
    parse_sections,
    render_sections,
)
from ogmem_memory.errors import ConfigError
from ogmem_memory.tokens import TokenCounter, as_token_counter, truncate_to_tokens

_PLAIN_HEADING: Final = "Facts"


class ArchiveLike(Protocol):
    """What the merger reads from an archive (the store's archive type satisfies it)."""

    @property
    def archive_id(self) -> str: ...
    @property
    def created_at(self) -> datetime | str: ...
    @property
    def overview(self) -> str: ...
    @property
    def abstract(self) -> str: ...
    @property
    def first_seq(self) -> int: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def message_count(self) -> int: ...
    @property
    def token_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class MergedArchive:
    """The union of several archives: covers seqs ``first_seq..last_seq`` of the session."""

    overview: str
    abstract: str
    first_seq: int
    last_seq: int
    message_count: int
    metadata: dict[str, Any] = field(default_factory=dict)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _time_key(value: datetime | str) -> tuple[int, datetime | str]:
    """Sort key for timestamps (datetimes or ISO text); unparseable ones sort after, by text."""
    if isinstance(value, datetime):
        return (0, value if value.tzinfo else value.replace(tzinfo=UTC))
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return (1, str(value))
    return (0, parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def merge_abstracts(abstracts: Sequence[str]) -> str:
    """``"a | b | c"`` when it fits 100 characters, else ``"first | … | last"``."""
    unique: list[str] = []
    keys: set[str] = set()  # the kept ones' keys, instead of keying them all again per abstract
    for text in map(one_line, abstracts):
        if text and (key := bullet_key(text)) not in keys:
            keys.add(key)
            unique.append(text)
    joined = " | ".join(unique)
    if len(joined) <= ABSTRACT_MAX_CHARS or len(unique) < 2:
        return joined[:ABSTRACT_MAX_CHARS].rstrip()
    return f"{unique[0][:45].rstrip()} | … | {unique[-1][:47].rstrip()}"[:ABSTRACT_MAX_CHARS]


class ArchiveMerger:
    """Deterministic, section-aware union of archives (no LLM)."""

    def __init__(
        self,
        *,
        max_overview_tokens: int = 800,
        token_counter: TokenCounter | Callable[[str], object] | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        if max_overview_tokens < 50:
            raise ConfigError(f"max_overview_tokens must be at least 50, got {max_overview_tokens}")
        self.max_overview_tokens = max_overview_tokens
        self._counter = as_token_counter(token_counter)
        self._now = now

    def merge(self, entries: Sequence[ArchiveLike]) -> MergedArchive:
        """Merge ``entries`` (any order) into one archive.

        Returns:
            The merged archive; an empty overview and ``message_count == 0`` when ``entries`` is empty.
        """
        ordered = sorted(entries, key=lambda e: (e.first_seq, _time_key(e.created_at), e.archive_id))
        overview, dropped = self._merge_overviews([e.overview for e in ordered])
        created = sorted((e.created_at for e in ordered), key=_time_key)
        metadata: dict[str, Any] = {
            "kind": "merged",
            "merged_from": [e.archive_id for e in ordered],
            "source_count": len(ordered),
            "source_created_at_min": _iso_or_none(created[0]) if created else None,
            "source_created_at_max": _iso_or_none(created[-1]) if created else None,
            "merged_at": self._now().isoformat(),
            "original_message_count": sum(e.message_count for e in ordered),
            "original_token_count": sum(e.token_count for e in ordered),
            "overview_items_dropped": dropped,
        }
        return MergedArchive(
            overview=overview,
            abstract=merge_abstracts([e.abstract for e in ordered]),
            first_seq=min((e.first_seq for e in ordered), default=0),
            last_seq=max((e.last_seq for e in ordered), default=0),
            message_count=metadata["original_message_count"],
            metadata=metadata,
        )

    def _merge_overviews(self, overviews: Sequence[str]) -> tuple[str, int]:
        texts = [t for t in map(str.strip, overviews) if t]
        parsed = [parse_sections(t) for t in texts]
        if texts and all(p is None for p in parsed):
            return self._concatenate(texts)
        parts: list[Sections] = [
            p if p is not None else {_PLAIN_HEADING: [one_line(t)]}
            for p, t in zip(parsed, texts, strict=True)
        ]
        merged = merge_sections(parts)
        if not merged:
            return "", 0
        rendered = render_sections(merged, list(merged))
        if self._counter.count(rendered) <= self.max_overview_tokens:
            return rendered, 0
        return bound_sections(merged, self.max_overview_tokens, self._counter, order=list(merged))

    def _concatenate(self, texts: list[str]) -> tuple[str, int]:
        """Unsectioned overviews: per-archive blocks, the oldest dropped first when over budget."""
        blocks = [f"--- archive {i + 1} of {len(texts)} ---\n{t}" for i, t in enumerate(texts)]
        dropped = 0
        while len(blocks) > 1 and self._counter.count("\n\n".join(blocks)) > self.max_overview_tokens:
            blocks.pop(0)
            dropped += 1
        return truncate_to_tokens("\n\n".join(blocks), self.max_overview_tokens, self._counter), dropped


def _iso_or_none(value: object) -> str | None:
    """Metadata is stored as JSON: timestamps become ISO-8601 strings."""
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)
