"""Which memories go into a context, and how they read there: ranking, the profile, rendering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ogmem_memory.errors import InvalidInputError
from ogmem_memory.extract_records import CATEGORIES, MemoryRecord
from ogmem_memory.extract_text import TOKEN_RE, stem
from ogmem_memory.recall import search_terms

_CATEGORY_ORDER: Final[Mapping[str, int]] = {c: i for i, c in enumerate(CATEGORIES)}
# Words a question about a key uses that its content may not ("where do I live" -> user.location).
_KEY_WORDS: Final[Mapping[str, str]] = {
    "user.name": "name called named",
    "user.location": "live lives living location city country home based address",
    "user.hometown": "from hometown origin grew born",
    "user.employer": "work works job employer company",
    "user.occupation": "job work profession occupation career",
    "user.age": "age old",
    "user.birthday": "birthday born birth",
    "user.nationality": "nationality country",
    "user.diet": "diet eat food",
    "user.studies": "study studies student school university education",
    "user.language": "language languages speak",
    "pref": "prefer preference favourite favorite",
}
_QUERY_NOISE: Final = frozenset({"user", "users"})


def _key_text(memory: MemoryRecord) -> str:
    head, _, rest = memory.key.partition(":")
    extra = _KEY_WORDS.get(head) or _KEY_WORDS.get(memory.key) or ""
    return f"{memory.key.replace('.', ' ')} {rest} {extra}"


def _recency(memory: MemoryRecord) -> tuple[float, float, str]:
    return (-memory.updated_at.timestamp(), -memory.confidence, memory.memory_id)


def rank_memories(memories: Sequence[MemoryRecord], query: str, *, limit: int = 10) -> list[MemoryRecord]:
    """Active memories sharing words with ``query``, best first; at most ``limit``.

    The words are :func:`ogmem_memory.recall.search_terms` of the query, compared stemmed with the
    memory's content and key (keys bring their synonyms: ``user.location`` matches "live").
    Ties go to the more recent, then the more confident memory.

    Raises:
        InvalidInputError: ``limit`` is negative.
    """
    _check_limit(limit)
    terms = {stem(t) for t in search_terms(query, limit=12) if t not in _QUERY_NOISE}
    if not terms or limit == 0:
        return []
    scored: list[tuple[float, MemoryRecord]] = []
    for memory in memories:
        if not memory.active:
            continue
        words = {stem(w) for w in TOKEN_RE.findall(f"{memory.content} {_key_text(memory)}".casefold())}
        score = sum(1.0 + min(len(t), 10) / 10 for t in terms if t in words)
        if score > 0:
            scored.append((score, memory))
    scored.sort(key=lambda p: (-p[0], *_recency(p[1])))
    return [m for _, m in scored[:limit]]


def profile_memories(memories: Sequence[MemoryRecord], *, limit: int = 10) -> list[MemoryRecord]:
    """What to show without a query: profile, then preferences, then the other categories.

    Newest first within a category; inactive memories are left out.

    Raises:
        InvalidInputError: ``limit`` is negative.
    """
    _check_limit(limit)
    active = [m for m in memories if m.active]
    active.sort(key=lambda m: (_CATEGORY_ORDER[m.category], *_recency(m)))
    return active[:limit]


def render_memories(memories: Sequence[MemoryRecord]) -> str:
    """One ``- content`` line per active memory, in the given order; ``""`` when none."""
    return "\n".join(f"- {m.content}" for m in memories if m.active)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
