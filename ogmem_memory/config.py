"""MemoryConfig: thresholds, budgets and limits, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Final, Literal, TypeVar

from ogmem_memory.errors import ConfigError

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool}
RECALL_SCOPES: Final = ("session", "user")
_Number = TypeVar("_Number", int, float)


# A number field's range is declared with the field (its ``metadata["range"]``): the range
# stands beside the default it bounds, and ``__post_init__`` checks every range the same way.
def _at_least(low: int, default: _Number) -> _Number:
    """A field whose value must be ``>= low`` and finite."""
    return field(default=default, metadata={"range": (low, math.inf)})


def _share(default: float) -> float:
    """A field that is a fraction of a budget: within ``[0, 1]``."""
    return field(default=default, metadata={"range": (0, 1)})


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """How much a session keeps live, when it commits and what a context may hold.

    Attributes:
        commit_token_threshold: Commit when the active messages reach this many tokens.
        commit_turn_threshold: Commit when this many user turns accumulated since the last
            commit (0 disables the turn trigger).
        keep_recent_messages: A threshold commit keeps at least this many newest messages live.
        keep_recent_tokens: ... and at least this many tokens of them (whichever keeps more).
        context_token_budget: Budget ``get_context`` uses when none is given.
        archive_max_count: Live archives kept before the oldest are merged.
        archive_merge_threshold: Archive count at which a merge is considered.
        max_message_chars: Largest accepted message content.
        max_session_id_length: Longest accepted session id.
        background_workers: Threads that run commits and merges.
        auto_commit: Commit in the background when a threshold is crossed.
        summary_share: Largest fraction of a context budget the summary may take; also sizes
            the extractive overview (this share of ``context_token_budget``).
        summary_share_without_query: The same when the caller names no query (recall then
            keys on the newest user message, which says less about what is needed: the
            overview deserves more of the budget; tuned on LoCoMo).
        summary_share_with_query: The same when the caller names a query: recall then finds
            what the question needs, and recalled turns serve it better than the overview,
            which only takes what recall, the memories and the recent turns leave (LoCoMo,
            answer_hit at 1,000 tokens: 0.829 with 0.25, 0.845 with 0.1).
        recall_share: Largest fraction of a context budget recalled turns may take when the
            caller names no query (the overview and the recent turns claim theirs first).
        recall_share_with_query: The same when the caller names a query: recalled turns then
            claim their share first, right after the current turn, and the memories, the
            recent turns and the summary share what recall leaves (tuned on LoCoMo).
        recall_limit: Search hits recalled for one query (each with its neighbouring turns);
            for a query, a budget whose ``recall_share_with_query`` holds more fetches more,
            one per 80 tokens (at most 100). 0 turns recall off.
        task_history_limit: Finished tasks remembered for ``get_task``.
        compress_timeout: Seconds a compressor may take before it is abandoned (the extractive
            fallback then writes the summary; 0 disables the limit).
        max_cached_sessions: Session buffers a manager caches (least recently used evicted
            first; the store keeps everything).
        extract_memories: After each commit, extract long-term memories of the user.
        memory_share: Largest fraction of a context budget the user's memories may take.
        memory_limit: Most memories shown in one context.
        recall_scope: What ``get_context`` recalls from. ``"session"`` (the default): the
            session's own archived turns only, never another session's text. ``"user"``: every
            session of the caller's owner (``RequestContext`` account and user), labelled with
            their session, and a new session with no archives of its own starts from a digest
            of the owner's latest sessions; never another owner's text. Without a
            ``RequestContext``, ``"user"`` recalls like ``"session"``.
    """

    commit_token_threshold: int = _at_least(1, 3000)
    commit_turn_threshold: int = _at_least(0, 100)
    keep_recent_messages: int = _at_least(0, 2)
    keep_recent_tokens: int = _at_least(0, 600)
    context_token_budget: int = _at_least(1, 4000)
    archive_max_count: int = _at_least(1, 10)
    archive_merge_threshold: int = _at_least(1, 10)  # and >= 2: see __post_init__
    max_message_chars: int = _at_least(1, 1_000_000)
    max_session_id_length: int = _at_least(1, 256)
    background_workers: int = _at_least(1, 2)
    auto_commit: bool = True
    summary_share: float = _share(0.25)
    summary_share_without_query: float = _share(0.6)
    summary_share_with_query: float = _share(0.1)
    recall_share: float = _share(0.7)
    recall_share_with_query: float = _share(0.9)
    recall_limit: int = _at_least(0, 8)
    task_history_limit: int = _at_least(1, 1000)
    compress_timeout: float = _at_least(0, 120.0)
    max_cached_sessions: int = _at_least(1, 10_000)
    extract_memories: bool = True
    memory_share: float = _share(0.1)
    memory_limit: int = _at_least(0, 8)
    recall_scope: Literal["session", "user"] = "session"

    def __post_init__(self) -> None:
        if not isinstance(self.recall_scope, str) or self.recall_scope not in RECALL_SCOPES:
            raise ConfigError(
                f"MemoryConfig.recall_scope must be 'session' or 'user', got {self.recall_scope!r}"
            )
        for f in fields(self):
            if f.name == "recall_scope":
                continue
            value = getattr(self, f.name)
            expected = _FIELD_TYPES[str(f.type)]
            if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
                raise ConfigError(f"MemoryConfig.{f.name} must be {f.type}, got {value!r}")
        for f in fields(self):
            if "range" in f.metadata:
                _check_range(f.name, getattr(self, f.name), *f.metadata["range"])
        if self.archive_merge_threshold < 2:
            raise ConfigError(
                "MemoryConfig.archive_merge_threshold must be >= 2 (a merge needs two archives)"
            )


def _check_range(name: str, value: float, low: int, high: float) -> None:
    # NaN is within no range; infinity is refused even where the range is open upwards
    if not low <= value <= high or value == math.inf:
        bound = f">= {low}" if high == math.inf else f"within [{low}, {high}]"
        raise ConfigError(f"MemoryConfig.{name} must be {bound}, got {value!r}")
