"""Long-term memory: facts about the user extracted from committed messages, and the write planning.

Everything here is pure (no store, no clock unless given, no framework import). The write path is::

    candidates = extractor.extract(messages, session_summary=summary)   # RuleBasedExtractor / LLMExtractor
    plans = plan_writes(candidates, existing)                            # create | merge | update | skip
    records, result = apply_plans(plans, existing, ctx, session_id=sid, now=now)
    # the store upserts ``records`` in one transaction; ``result`` is the seed's commit_session shape

Keys name what a memory is about, so a restated or changed fact finds its memory again:

- ``user.<attribute>`` (``user.name``, ``user.location``, ``user.employer``, ``user.occupation``,
  ``user.age``, ``user.birthday``, ``user.hometown``, ``user.diet``, ``user.language:<x>``, ...) and
  ``tool:<name>`` and ``pref:favourite-<x>`` are **single-valued**: a different content updates the
  memory and pushes the old content to its history.
- ``pref:<subject>``, ``entity:<relation>``, ``event:<slug>``, ``decision:<slug>`` are
  **multi-valued**: a different content is a new memory, except a near duplicate (merged) and a
  reversed stance on the same subject ("likes" -> "hates", updated).

Where each part lives (every public name is importable from here):

- :mod:`~ogmem_memory.extract_records`: keys, :class:`MemoryCandidate`, :class:`MemoryRecord`,
  the :class:`MemoryExtractor` protocol;
- :mod:`~ogmem_memory.extract_plan`: :func:`plan_writes` and :func:`apply_plans`;
- :mod:`~ogmem_memory.extract_ranking`: :func:`rank_memories`, :func:`profile_memories`,
  :func:`render_memories`;
- :mod:`~ogmem_memory.extract_rules`: :class:`RuleBasedExtractor` (its patterns in
  ``extract_match``, its rewriting in ``extract_rewrite``) and :func:`tool_memories`;
- :mod:`~ogmem_memory.extract_llm`: :class:`LLMExtractor` and :func:`parse_memories_output`;
- ``extract_text``: the word, stem, date and message helpers the others share.
"""

from ogmem_memory.extract_llm import ExtractionOutcome, LLMExtractor, parse_memories_output
from ogmem_memory.extract_plan import (
    BELOW_THRESHOLD,
    NEAR_DUPLICATE_JACCARD,
    PlanAction,
    Relation,
    WritePlan,
    apply_plans,
    content_signature,
    plan_writes,
)
from ogmem_memory.extract_ranking import profile_memories, rank_memories, render_memories
from ogmem_memory.extract_records import (
    CATEGORIES,
    MAX_CONTENT_CHARS,
    MAX_HISTORY,
    MAX_KEY_CHARS,
    MAX_SOURCES,
    MEMORY_URI_PREFIX,
    Category,
    MemoryCandidate,
    MemoryExtractor,
    MemoryRecord,
    is_single_valued,
    memory_uri,
    new_memory_id,
    normalize_key,
)
from ogmem_memory.extract_rules import RuleBasedExtractor, tool_memories, tool_stats_of, tool_usage

__all__ = [
    "BELOW_THRESHOLD",
    "CATEGORIES",
    "MAX_CONTENT_CHARS",
    "MAX_HISTORY",
    "MAX_KEY_CHARS",
    "MAX_SOURCES",
    "MEMORY_URI_PREFIX",
    "NEAR_DUPLICATE_JACCARD",
    "Category",
    "ExtractionOutcome",
    "LLMExtractor",
    "MemoryCandidate",
    "MemoryExtractor",
    "MemoryRecord",
    "PlanAction",
    "Relation",
    "RuleBasedExtractor",
    "WritePlan",
    "apply_plans",
    "content_signature",
    "is_single_valued",
    "memory_uri",
    "new_memory_id",
    "normalize_key",
    "parse_memories_output",
    "plan_writes",
    "profile_memories",
    "rank_memories",
    "render_memories",
    "tool_memories",
    "tool_stats_of",
    "tool_usage",
]
