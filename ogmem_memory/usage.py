"""UsageTracker: thread-safe LLM, embedding and tool usage counters for one session."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

ToolStats = dict[str, int | float]
"""Per-tool counters: the six keys of :data:`TOOL_STAT_KEYS`."""

TOOL_STAT_KEYS: Final[tuple[str, ...]] = (
    "call_count",
    "success_count",
    "fail_count",
    "total_duration_ms",
    "total_prompt_tokens",
    "total_completion_tokens",
)
SUCCESS_STATUSES: Final[frozenset[str]] = frozenset({"completed", "success"})
TOOL_STATS_HEADER: Final[str] = "**Tool Usage Statistics (this session):**"


def _new_tool_stats() -> ToolStats:
    return {
        "call_count": 0,
        "success_count": 0,
        "fail_count": 0,
        "total_duration_ms": 0.0,
        "total_prompt_tokens": 0,
        "total_completion_tokens": 0,
    }


def _number(value: object) -> int | float:
    # Merged stats come from persisted JSON or legacy callers: anything that is not a
    # real number counts as 0 rather than poisoning the totals (bool is not a count).
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return value


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """A consistent copy of a tracker's counters at one instant."""

    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    llm_cache_read: int = 0
    llm_cache_write: int = 0
    llm_calls: int = 0
    embedding_tokens: int = 0
    embedding_calls: int = 0
    tool_stats: dict[str, ToolStats] = field(default_factory=dict)

    @property
    def llm_total_tokens(self) -> int:
        """Input plus output tokens of all LLM calls."""
        return self.llm_input_tokens + self.llm_output_tokens

    @property
    def total_tokens(self) -> int:
        """LLM total plus embedding tokens."""
        return self.llm_total_tokens + self.embedding_tokens

    def to_dict(self) -> dict[str, Any]:
        """Return the token usage in the lineage ``TokenTracker`` shape (tool stats excluded)."""
        return {
            "llm": {
                "input_tokens": self.llm_input_tokens,
                "output_tokens": self.llm_output_tokens,
                "cache_read": self.llm_cache_read,
                "cache_write": self.llm_cache_write,
                "total_tokens": self.llm_total_tokens,
                "calls": self.llm_calls,
            },
            "embedding": {"total_tokens": self.embedding_tokens, "calls": self.embedding_calls},
            "total_tokens": self.total_tokens,
        }


# The snapshot's counters, which the tracker keeps in one dict under these names: snapshot,
# reset and copy then name no counter, so a new one is a field of UsageSnapshot only.
_COUNTERS: Final[tuple[str, ...]] = tuple(f.name for f in fields(UsageSnapshot) if f.name != "tool_stats")


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(_COUNTERS, 0)


@dataclass(eq=False)
class UsageTracker:
    """Accumulates provider and tool usage; every method is safe to call from any thread.

    ``tool_stats`` returns a copy: record calls with :meth:`record_tool_call` or fold in
    another stats dict with :meth:`merge_tool_stats` (additive).
    """

    _counts: dict[str, int] = field(default_factory=_zero_counts, init=False)
    _tools: dict[str, ToolStats] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def record_llm(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> None:
        """Count one LLM call and its token usage (negative values count as 0)."""
        with self._lock:
            counts = self._counts
            counts["llm_input_tokens"] += max(0, input_tokens)
            counts["llm_output_tokens"] += max(0, output_tokens)
            counts["llm_cache_read"] += max(0, cache_read)
            counts["llm_cache_write"] += max(0, cache_write)
            counts["llm_calls"] += 1

    def record_embed(self, total_tokens: int) -> None:
        """Count one embedding call and its tokens (negative values count as 0)."""
        with self._lock:
            self._counts["embedding_tokens"] += max(0, total_tokens)
            self._counts["embedding_calls"] += 1

    def record_tool_call(
        self,
        name: str,
        status: str,
        duration_ms: float = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Count one tool call; ``completed``/``success`` is a success, any other status a failure.

        Calls with a blank tool name are ignored.
        """
        name = name.strip()
        if not name:
            return
        with self._lock:
            stats = self._tools.setdefault(name, _new_tool_stats())
            stats["call_count"] += 1
            if status in SUCCESS_STATUSES:
                stats["success_count"] += 1
            else:
                stats["fail_count"] += 1
            stats["total_duration_ms"] += max(0, duration_ms)
            stats["total_prompt_tokens"] += max(0, prompt_tokens)
            stats["total_completion_tokens"] += max(0, completion_tokens)

    @property
    def tool_stats(self) -> dict[str, ToolStats]:
        """A copy of the per-tool counters; mutating it does not change the tracker."""
        with self._lock:
            return {name: dict(stats) for name, stats in self._tools.items()}

    def merge_tool_stats(self, stats: Mapping[str, Mapping[str, object]]) -> None:
        """Add another stats dict to this tracker's tool counters.

        Args:
            stats: Per-tool counters in the :attr:`tool_stats` shape. Missing or non-numeric
                keys count as 0; unknown tools are created; blank tool names are ignored.
        """
        with self._lock:
            for name, other in stats.items():
                if not isinstance(name, str) or not name.strip() or not isinstance(other, Mapping):
                    continue
                mine = self._tools.setdefault(name.strip(), _new_tool_stats())
                for key in TOOL_STAT_KEYS:
                    mine[key] += _number(other.get(key, 0))

    def snapshot(self) -> UsageSnapshot:
        """Return a consistent copy of all counters."""
        with self._lock:
            return self._snapshot_locked()

    def snapshot_and_reset(self) -> UsageSnapshot:
        """Return a copy of all counters and zero them atomically, so no call is lost."""
        with self._lock:
            snap = self._snapshot_locked()
            self._reset_locked()
            return snap

    def reset(self) -> None:
        """Zero every counter, tool stats included."""
        with self._lock:
            self._reset_locked()

    def to_dict(self) -> dict[str, Any]:
        """Return the token usage in the lineage ``TokenTracker`` shape.

        Returns:
            ``{"llm": {input_tokens, output_tokens, cache_read, cache_write, total_tokens,
            calls}, "embedding": {total_tokens, calls}, "total_tokens": int}``.
        """
        return self.snapshot().to_dict()

    def format_tool_stats_text(self) -> str:
        """Render tool stats for an extraction prompt: a header and one line per tool.

        Returns:
            The text, tools sorted by call count (most first), or ``""`` without tool calls.
        """
        stats = self.tool_stats
        if not stats:
            return ""
        lines = [TOOL_STATS_HEADER]
        for name, s in sorted(stats.items(), key=lambda item: (-item[1]["call_count"], item[0])):
            calls, ok, fail = int(s["call_count"]), int(s["success_count"]), int(s["fail_count"])
            rate = ok / calls if calls else 0.0
            lines.append(f"- Tool '{name}': {calls} calls, {rate:.0%} success ({ok} ok, {fail} fail)")
        return "\n".join(lines)

    def __deepcopy__(self, memo: dict[int, object]) -> UsageTracker:
        # A lock cannot be copied, and callers deep-copy session buffers: copy the counters.
        clone = UsageTracker()
        with self._lock:
            clone._counts = dict(self._counts)
            clone._tools = {name: dict(stats) for name, stats in self._tools.items()}
        return clone

    def _snapshot_locked(self) -> UsageSnapshot:
        tools = {name: dict(stats) for name, stats in self._tools.items()}
        return UsageSnapshot(**self._counts, tool_stats=tools)

    def _reset_locked(self) -> None:
        self._counts = _zero_counts()
        self._tools = {}


__all__ = ["TOOL_STAT_KEYS", "ToolStats", "UsageSnapshot", "UsageTracker"]
