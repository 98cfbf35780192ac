"""Query-aware recall: the words of a query, and ranking of archived messages for it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from ogmem_memory.models import SessionMessage

T = TypeVar("T")
K = TypeVar("K", bound=Any)


_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# Query terms found in more archived messages than this are left out of recall searches:
# they say little about any one message, and ranking their matches would make recall cost
# grow with the history.
MAX_TERM_DOCS: Final = 200

STOPWORDS: Final[frozenset[str]] = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "yes",
        "ok",
        "okay",
        "also",
        "really",
        "like",
        "get",
        "got",
        "did",
        "said",
        "tell",
        "told",
        "know",
        "think",
        "going",
        "go",
        "went",
        "one",
        "thing",
        "things",
        "much",
        "many",
        "well",
    ]
)


def query_terms(text: str, *, max_terms: int = 24) -> list[str]:
    """Distinct lower-case words of ``text`` worth searching for, in first-seen order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        seen.setdefault(word, None)
        if len(seen) >= max_terms:
            break
    return list(seen)


def search_terms(text: str, *, limit: int = 10) -> list[str]:
    """The words a recall search uses: ``query_terms``, at most ``limit`` of them.

    A long query (a pasted paragraph) keeps its longest words, which are usually the most
    specific; each term costs the store a bounded frequency probe.
    """
    terms = query_terms(text)
    if len(terms) <= limit:
        return terms
    keep = set(sorted(terms, key=len, reverse=True)[:limit])
    return [t for t in terms if t in keep][:limit]


def fts5_query(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression that ORs quoted terms (quoting neutralises FTS syntax)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def overlap_score(terms: Sequence[str], text: str) -> float:
    """A small BM25-like score: matched distinct terms, weighted by rarity of length."""
    if not terms:
        return 0.0
    words = set(_WORD.findall(text.lower()))
    return sum(1.0 + min(len(t), 10) / 10 for t in terms if t in words)


def rank_by_overlap(terms: Sequence[str], messages: Iterable[SessionMessage]) -> list[SessionMessage]:
    """Messages that share words with ``terms``, best first (ties: conversation order)."""
    scored = [(overlap_score(terms, m.content), m) for m in messages]
    return [m for score, m in sorted(scored, key=lambda p: (-p[0], p[1].seq)) if score > 0]


def term_weight(term: str, doc_count: int) -> float:
    """How much one matched term says: rarer (in the scope) and longer terms say more."""
    return (1.0 + min(len(term), 10) / 10) * (1.0 + math.log((MAX_TERM_DOCS + 1) / max(doc_count, 1)))


def rank_by_term_hits(hits: Mapping[str, Sequence[K]], limit: int) -> list[K]:
    """Ids matched by each term (within one scope), best first: summed ``term_weight``.

    The counts are the scope's own, so the ranking never depends on other tenants' data.
    Ties keep the smaller id first (conversation order).
    """
    scores: dict[K, float] = {}
    for term, ids in hits.items():
        weight = term_weight(term, len(ids))
        for key in ids:
            scores[key] = scores.get(key, 0.0) + weight
    return sorted(scores, key=lambda key: (-scores[key], key))[:limit]


def interleave(first: Sequence[T], second: Sequence[T], limit: int) -> list[T]:
    """Alternate two ranked lists (e.g. archived and active matches), best of each first."""
    out: list[T] = []
    for pair in zip(first, second, strict=False):
        out.extend(pair)
    longer = first if len(first) > len(second) else second
    out.extend(longer[min(len(first), len(second)) :])
    return out[:limit]
