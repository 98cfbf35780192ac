"""Cheap, deterministic quality metrics for a compression (no LLM, no I/O)."""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from ogmem_memory.compress.base import ABSTRACT_MAX_CHARS, message_role, message_text
from ogmem_memory.compress.extractive import find_identifiers, find_names
from ogmem_memory.compress.extractive_text import cached_sentences, joined_words
from ogmem_memory.gil import gil_pause
from ogmem_memory.tokens import TokenCounter, as_token_counter

_TEMPLATE_RE: Final = re.compile(r"Session with \d+ messages \(\d+ from user, \d+ from assistant\)\.")
_HEADING_RE: Final = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_WEIGHTS: Final[Mapping[str, float]] = {
    "identifier_retention": 0.3,
    "keyword_recall": 0.25,
    "section_coverage": 0.15,
    "user_turn_coverage": 0.15,
    "abstract_ok": 0.05,
    "size_ok": 0.1,
}
_TOP_K: Final = 10


_WORD_RE: Final = re.compile(r"\w+")


class _Haystack:
    """An overview indexed once so that each term lookup costs its occurrences, not the text.

    A term is present when it occurs verbatim, case-insensitively, not inside a longer word or
    number. Its first run of word characters must then be a whole word of the text, so only the
    positions of that word are tried: evaluating every identifier and turn stays linear.
    """

    def __init__(self, text: str) -> None:
        self._text = text.casefold()
        # the words at once (one C-level scan), a word's positions only when a term needs them
        self._words = frozenset(_WORD_RE.findall(self._text))
        self._positions: dict[str, list[int]] = {}

    def __contains__(self, term: str) -> bool:
        needle = term.casefold()
        if needle.isalnum():  # a plain word, the common case: no regex needed
            return needle in self._words
        first = _WORD_RE.search(needle)
        if first is None:  # punctuation only: no word to anchor on, scan
            return any(self._bounded(i, needle) for i in _occurrences(self._text, needle))
        word = first.group()
        if word not in self._words:
            return False
        offset = first.start()
        return any(self._bounded(start - offset, needle) for start in self._starts(word))

    def _starts(self, word: str) -> list[int]:
        """Where ``word`` is a whole run of word characters of the text, in order."""
        starts = self._positions.get(word)
        if starts is None:
            text, size = self._text, len(word)
            starts = [
                i
                for i in _occurrences(text, word)
                if not (i and _is_word_char(text[i - 1]))
                and not (i + size < len(text) and _is_word_char(text[i + size]))
            ]
            self._positions[word] = starts
        return starts

    def _bounded(self, start: int, needle: str) -> bool:
        text = self._text
        if start < 0 or not text.startswith(needle, start):
            return False
        end = start + len(needle)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        return not _is_word_char(before) and not _is_word_char(after)


def _occurrences(text: str, needle: str) -> Iterator[int]:
    start = text.find(needle)
    while start != -1 and needle:
        yield start
        start = text.find(needle, start + 1)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _top_words(word_lists: Iterable[Sequence[str]], k: int) -> list[str]:
    """``top_keywords`` on texts already split into content words (each text is split once)."""
    counts: Counter[str] = Counter()
    for words in word_lists:
        counts.update(words)
    # a Counter iterates in first-seen order and nsmallest is stable: ties go to the earliest
    return heapq.nsmallest(k, counts, key=lambda w: -counts[w])


def _share(found: int, total: int) -> float:
    return round(found / total, 4) if total else 1.0


class CompressionQualityEvaluator:
    """Scores an overview and abstract against the messages they replace.

    Shares with nothing to measure (no identifiers, no user turns) are 1.0; the matching
    ``*_count`` field tells them apart.
    """

    def __init__(
        self,
        *,
        expected_sections: Sequence[str] = ("Topics", "Facts", "Decisions", "Open loops"),
        min_score: float = 0.5,
        token_counter: TokenCounter | Callable[[str], object] | None = None,
    ) -> None:
        self.expected_sections = tuple(expected_sections)
        self.min_score = min_score
        self._counter = as_token_counter(token_counter)

    def evaluate(self, messages: Sequence[Mapping[str, Any]], overview: str, abstract: str) -> dict[str, Any]:
        """Measure a compression.

        Returns:
            A JSON-serialisable dict: token sizes and ``compression_ratio``, ``abstract_chars`` and
            ``abstract_within_limit``, ``section_coverage``, ``keyword_recall``,
            ``identifier_retention``, ``user_turn_coverage``, ``fallback_suspected``,
            ``empty_output``, ``score`` (0-1), ``acceptable`` (score >= ``min_score``) and
            ``warnings``.
        """
        overview = overview if isinstance(overview, str) else ""
        abstract = abstract if isinstance(abstract, str) else ""
        texts = [(message_role(m), message_text(m)) for m in messages or ()]
        input_tokens = sum(self._counter.count(f"{r}: {t}") for r, t in texts if t)
        overview_tokens = self._counter.count(overview)
        user_texts = [t for r, t in texts if r == "user" and t.strip()]
        # a text's content words are its sentences' in order (see cached_sentences), and a commit
        # has split its messages already: their words are cached
        user_words = [joined_words(cached_sentences(t)) for t in user_texts]
        hay = _Haystack(overview)

        headings = {h.casefold() for h in _HEADING_RE.findall(overview)}
        found_sections = [s for s in self.expected_sections if s.casefold() in headings]
        keywords = _top_words(user_words, _TOP_K)
        gil_pause()  # a commit's work (see ogmem_memory.gil)
        identifiers = sorted({i for _, t in texts for i in find_identifiers(t) if len(i) > 1})
        kept_ids = {i for i in identifiers if i in hay}
        gil_pause()
        covered = sum(
            1
            for text, words in zip(user_texts, user_words, strict=True)
            if any(term in hay for term in _salient_terms(text, words))
        )

        metrics: dict[str, Any] = {
            "input_tokens": input_tokens,
            "overview_tokens": overview_tokens,
            "abstract_tokens": self._counter.count(abstract),
            "compression_ratio": round(overview_tokens / input_tokens, 4) if input_tokens else 0.0,
            "abstract_chars": len(abstract),
            "abstract_within_limit": len(abstract) <= ABSTRACT_MAX_CHARS and "\n" not in abstract,
            "section_coverage": _share(len(found_sections), len(self.expected_sections)),
            "missing_sections": [s for s in self.expected_sections if s not in found_sections],
            "keyword_count": len(keywords),
            "keyword_recall": _share(sum(k in hay for k in keywords), len(keywords)),
            "identifier_count": len(identifiers),
            "identifier_retention": _share(len(kept_ids), len(identifiers)),
            "missing_identifiers": [i for i in identifiers if i not in kept_ids][:20],
            "user_turns": len(user_texts),
            "user_turn_coverage": _share(covered, len(user_texts)),
            "fallback_suspected": bool(_TEMPLATE_RE.search(overview)),
            "empty_output": not overview.strip(),
        }
        metrics["score"] = self._score(metrics)
        metrics["acceptable"] = metrics["score"] >= self.min_score
        metrics["warnings"] = self._warnings(metrics)
        return metrics

    def _score(self, m: Mapping[str, Any]) -> float:
        if m["empty_output"]:
            return 0.0
        parts = {
            "identifier_retention": m["identifier_retention"],
            "keyword_recall": m["keyword_recall"],
            "section_coverage": m["section_coverage"],
            "user_turn_coverage": m["user_turn_coverage"],
            "abstract_ok": 1.0 if m["abstract_within_limit"] and m["abstract_chars"] else 0.0,
            "size_ok": 1.0 if m["compression_ratio"] <= 1.0 else 0.0,
        }
        return round(sum(_WEIGHTS[k] * float(v) for k, v in parts.items()), 4)

    def _warnings(self, m: Mapping[str, Any]) -> list[str]:
        warnings = []
        if m["empty_output"]:
            warnings.append("empty overview")
        if m["missing_sections"]:
            warnings.append("missing sections: " + ", ".join(m["missing_sections"]))
        if not m["abstract_within_limit"]:
            warnings.append(f"abstract longer than {ABSTRACT_MAX_CHARS} characters or not one line")
        if m["identifier_count"] and m["identifier_retention"] < 0.5:
            warnings.append(f"over-compressed: identifier retention {m['identifier_retention']}")
        if m["keyword_count"] and m["keyword_recall"] < 0.3:
            warnings.append(f"low keyword recall {m['keyword_recall']}")
        if m["input_tokens"] >= 200 and m["compression_ratio"] > 1.0:
            warnings.append(f"overview longer than its input (ratio {m['compression_ratio']})")
        if m["fallback_suspected"]:
            warnings.append("overview looks like the no-LLM fallback template")
        return warnings


def _salient_terms(text: str, words: Sequence[str]) -> Iterator[str]:
    """The three longest content words (``words``), names and identifiers of one user turn.

    Lazily, cheapest first: a turn is covered as soon as one of them is found.
    """
    # longest first, ties alphabetical: the sorts are stable, and key=len avoids a Python lambda
    yield from sorted(sorted(set(words)), key=len, reverse=True)[:3]
    yield from find_names(text)
    yield from find_identifiers(text)
