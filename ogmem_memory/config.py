"""MemoryConfig: thresholds, budgets and limits, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal

from ogmem_memory.errors import ConfigError

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool}
RECALL_SCOPES: Final = ("session", "user")


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

    commit_token_threshold: int = 3000
    commit_turn_threshold: int = 100
    keep_recent_messages: int = 2
    keep_recent_tokens: int = 600
    context_token_budget: int = 4000
    archive_max_count: int = 10
    archive_merge_threshold: int = 10
    max_message_chars: int = 1_000_000
    max_session_id_length: int = 256
    background_workers: int = 2
    auto_commit: bool = True
    summary_share: float = 0.25
    summary_share_without_query: float = 0.6
    summary_share_with_query: float = 0.1
    recall_share: float = 0.7
    recall_share_with_query: float = 0.9
    recall_limit: int = 8
    task_history_limit: int = 1000
    compress_timeout: float = 120.0
    max_cached_sessions: int = 10_000
    extract_memories: bool = True
    memory_share: float = 0.1
    memory_limit: int = 8
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
        positive = (
            "commit_token_threshold",
            "context_token_budget",
            "archive_max_count",
            "archive_merge_threshold",
            "max_message_chars",
            "max_session_id_length",
            "background_workers",
            "task_history_limit",
            "max_cached_sessions",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"MemoryConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("commit_turn_threshold", "keep_recent_messages", "keep_recent_tokens", "recall_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"MemoryConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.compress_timeout < float("inf"):
            raise ConfigError(f"MemoryConfig.compress_timeout must be >= 0, got {self.compress_timeout!r}")
        if self.memory_limit < 0:
            raise ConfigError(f"MemoryConfig.memory_limit must be >= 0, got {self.memory_limit!r}")
        shares = ("summary_share", "summary_share_without_query", "summary_share_with_query")
        for name in (*shares, "recall_share", "recall_share_with_query", "memory_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"MemoryConfig.{name} must be within [0, 1], got {getattr(self, name)!r}")
        if self.archive_merge_threshold < 2:
            raise ConfigError(
                "MemoryConfig.archive_merge_threshold must be >= 2 (a merge needs two archives)"
            )
