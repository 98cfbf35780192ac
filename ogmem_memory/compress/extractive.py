"""Deterministic compressors that need no LLM: the extractive default and the seed's template.

:class:`ExtractiveCompressor` fuses the sections of each new batch
(:mod:`~ogmem_memory.compress.extractive_facts`, built on the text primitives of
:mod:`~ogmem_memory.compress.extractive_text`) with the previous overview, at a fixed size.
The helpers other modules import from here (``find_identifiers``, ``split_sentences``, ...)
are re-exported.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Final

from ogmem_memory.compress.base import (
    EMPTY_ABSTRACT,
    SECTIONS,
    Batch,
    BatchCompressor,
    Sections,
    bound_sections,
    fallback_abstract,
    merge_sections,
    message_role,
    message_text,
    parse_sections,
    render_sections,
)
from ogmem_memory.compress.base import unchanged_archive as unchanged_archive
from ogmem_memory.compress.extractive_facts import (
    batch_topics,
    extract_sections,
    fact_scores,
    frame_tokens,
    span_abstract,
)
from ogmem_memory.compress.extractive_text import (
    STOPWORDS,
    content_words,
    find_identifiers,
    find_names,
    split_sentences,
    top_keywords,
    trim_sentence,
)
from ogmem_memory.compress.sections import remember_parse
from ogmem_memory.errors import ConfigError
from ogmem_memory.gil import gil_pause
from ogmem_memory.tokens import EstimatingTokenCounter, TokenCounter, as_token_counter, estimate_tokens

_MAX_TOPICS: Final = 12
# The opening facts (who the user is, what they want) that a full overview never drops.
_ANCHORED_FACTS: Final = 3
# Largest shares of the overview the decisions and the open loops may take, of at most the
# first 1,000 tokens (a longer overview gives its growth to the facts); facts get the rest.
_DECISION_SHARE: Final = 0.2
_LOOP_SHARE: Final = 0.15
_SHARED_TOKENS: Final = 1000


def previous_sections(prev_overview: str) -> Sections:
    """Sections of a previous overview, canonical headings restored; prose becomes earlier facts."""
    if not prev_overview.strip():
        return {}
    parsed = parse_sections(prev_overview)
    if parsed is None:
        return {"Facts": [f"earlier: {trim_sentence(s)}" for s in split_sentences(prev_overview)]}
    canonical = {h.casefold(): h for h in SECTIONS}
    sections: Sections = {}
    for heading, bullets in parsed.items():
        name = canonical.get(heading.casefold(), heading) if heading else "Facts"
        sections.setdefault(name, []).extend(bullets if heading else [f"earlier: {b}" for b in bullets])
    return sections


_ROLE_PREFIX_RE: Final = re.compile(r"^(?:user|assistant|tool|system|unknown|earlier):\s*", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # a fusion scores the previous overview's bullets again
def _unprefixed(bullet: str) -> str:
    return _ROLE_PREFIX_RE.sub("", bullet)


@functools.lru_cache(maxsize=8192)  # the overview's bullets are counted again by every fusion
def _estimated_bullet(bullet: str) -> int:
    return estimate_tokens(f"- {bullet}\n")


def _bullet_sizes(bullets: Sequence[str], counter: TokenCounter) -> list[int]:
    """``counter.count(f"- {b}\\n")`` of each bullet; remembered for the default counter only,
    which is a pure function of the text (a caller's counter may not be)."""
    if type(counter) is EstimatingTokenCounter:
        return list(map(_estimated_bullet, bullets))
    return [counter.count(f"- {b}\n") for b in bullets]


_NONE_ITEMS: Final = frozenset({"none", "none.", "n/a"})


@functools.lru_cache(maxsize=8192)
def _parses_back(bullet: str) -> bool:
    """Whether ``parse_sections`` reads the line ``- {bullet}`` back as ``bullet``.

    It strips the line and its bullet mark (and any whitespace after it), splits at every line
    boundary and drops the ``None`` placeholders: a bullet without surrounding whitespace, line
    boundaries or a placeholder's text comes back unchanged.
    """
    return (
        bool(bullet)
        and bullet == bullet.strip()
        and len(bullet.splitlines()) == 1
        and bullet.casefold() not in _NONE_ITEMS
    )


def _keep_salient(bullets: Sequence[str], room: int, counter: TokenCounter) -> list[str]:
    """The fused facts that fit ``room`` tokens, the most salient per token first.

    The opening facts (who the user is, what they want) and the newest one always stay; among
    the others, what carries fewer names, dates, numbers and rare words for its size is dropped
    first, the older first on a tie. So a fixed-size overview keeps what people ask about from
    the whole conversation, not only from its latest part. The kept facts are ordered the same
    way (the opening ones first, then the densest, ties in conversation order, which the next
    fusion reads as their age): any prefix of the overview, which is what a smaller context
    budget shows, is then the best overview of that size.
    """
    if not bullets:
        return []
    sizes = _bullet_sizes(bullets, counter)
    total = sum(sizes)
    scores = fact_scores(list(map(_unprefixed, bullets)), sizes)
    anchored = list(range(min(_ANCHORED_FACTS, len(bullets) - 1)))
    protected = set(anchored) | {len(bullets) - 1}
    dropped: set[int] = set()
    if total > room:  # (score, index) pairs sort as the key (scores[i], i) orders the indexes
        for _, index in sorted((scores[i], i) for i in range(len(bullets)) if i not in protected):
            if total <= room:
                break
            dropped.add(index)
            total -= sizes[index]
    kept = sorted((-scores[i], i) for i in range(len(bullets)) if i not in dropped and i not in anchored)
    return [bullets[i] for i in (*anchored, *(i for _, i in kept))]


def _newest_within(bullets: Sequence[str], room: int, counter: TokenCounter) -> list[str]:
    kept: list[str] = []
    used = 0
    sizes = _bullet_sizes(bullets, counter)
    for bullet, cost in zip(reversed(bullets), reversed(sizes), strict=True):
        if kept and used + cost > room:
            break
        kept.append(bullet)
        used += cost
    return kept[::-1]


class ExtractiveCompressor(BatchCompressor):
    """Deterministic, LLM-free compressor: verbatim salient sentences in four Markdown sections.

    The overview is the running summary of the whole conversation at a fixed size: each call
    fuses the previous overview with the new batch, keeps the newest decisions and open loops
    within their shares (of the first 1,000 tokens), and gives the facts the rest, dropping the
    least salient per token first and listing the kept ones densest first, so a context that cuts
    the overview short still shows its best facts. The abstract says what the new span was about
    (names, topics, date).
    """

    def __init__(
        self,
        *,
        max_overview_tokens: int = 1000,
        max_facts: int = 40,
        token_counter: TokenCounter | Callable[[str], object] | None = None,
    ) -> None:
        if max_overview_tokens < 50:
            raise ConfigError(f"max_overview_tokens must be at least 50, got {max_overview_tokens}")
        if max_facts < 1:
            raise ConfigError(f"max_facts must be at least 1, got {max_facts}")
        self.max_overview_tokens = max_overview_tokens
        self.max_facts = max_facts
        self._counter = as_token_counter(token_counter)

    def compress_batch(self, messages: Batch, prev_overview: str, prev_abstract: str) -> tuple[str, str]:
        """Fuse the sections of ``messages`` with the previous overview; the abstract of this span."""
        new = extract_sections(messages, max_facts=self.max_facts)
        # the previous overview is this fusion's output: its bullets are already distinct
        merged = merge_sections([previous_sections(prev_overview), new], distinct_first=True)
        merged["Topics"] = merged.get("Topics", [])[-_MAX_TOPICS:]
        fitted = self._fit(merged)
        gil_pause()  # between the steps of a commit's work (see ogmem_memory.gil)
        overview = render_sections(fitted)
        if self._counter.count(overview) > self.max_overview_tokens:  # per-bullet counts rounded
            overview, _ = bound_sections(fitted, self.max_overview_tokens, self._counter)
        else:
            self._remember(overview, fitted)
        # The abstract names this span only: the overview already carries the earlier ones, and
        # chaining "previous | new" made every abstract start with the first archive's text.
        gil_pause()
        return overview, span_abstract(messages, new["Topics"])

    def _remember(self, overview: str, fitted: Sections) -> None:
        """Record ``fitted`` as the parse of ``overview`` (its ``render_sections``) when parsing
        would read exactly them back from it, so the next fusion does not parse it again.

        It does when the headings are the canonical four (rendered in their order, each at
        least a ``- None`` line) and every bullet parses back (:func:`_parses_back`): each
        line of the text is then a heading, a bullet, a placeholder or blank.
        """
        if len(fitted) != len(SECTIONS) or not all(h in fitted for h in SECTIONS):
            return
        if not all(map(_parses_back, itertools.chain.from_iterable(fitted[h] for h in SECTIONS))):
            return
        remember_parse(overview, {h: fitted[h] for h in SECTIONS})

    def _fit(self, sections: Sections) -> Sections:
        """Shares of the fixed size: decisions and open loops their newest, facts the rest."""
        counter = self._counter
        limit = self.max_overview_tokens
        fitted = dict(sections)
        for heading, share in (("Decisions", _DECISION_SHARE), ("Open loops", _LOOP_SHARE)):
            room = int(min(limit, _SHARED_TOKENS) * share)
            fitted[heading] = _newest_within(sections.get(heading, []), room, counter)
        others = {h: b for h, b in fitted.items() if h != "Facts"}
        used = counter.count(render_sections({**others, "Facts": []}))
        fitted["Facts"] = _keep_salient(sections.get("Facts", []), limit - used, counter)
        return fitted


class TemplateCompressor(BatchCompressor):
    """The seed's no-LLM fallback, reproduced exactly: a message count and the opening request."""

    def nothing_new(self, prev_overview: str, prev_abstract: str) -> tuple[str, str]:
        """``("", "Empty session")``, whatever the previous archive (as the seed did)."""
        return "", EMPTY_ABSTRACT

    def compress_batch(self, messages: Batch, prev_overview: str, prev_abstract: str) -> tuple[str, str]:
        """Return the seed's template overview and abstract."""
        roles = [message_role(m) for m in messages]
        first_user = next(
            (t for m in messages if message_role(m) == "user" and (t := message_text(m)).strip()), ""
        )
        parts = []
        if prev_abstract:
            parts.append(f"Previous context: Previous abstract: {prev_abstract}")
        parts.append(
            f"Session with {len(messages)} messages "
            f"({roles.count('user')} from user, {roles.count('assistant')} from assistant)."
        )
        if first_user:
            preview = first_user[:100] + ("..." if len(first_user) > 100 else "")
            parts.append(f"Started with: {preview}")
        return "\n\n".join(parts), fallback_abstract(messages, prev_abstract)


__all__ = [
    "STOPWORDS",
    "ExtractiveCompressor",
    "TemplateCompressor",
    "batch_topics",
    "content_words",
    "extract_sections",
    "find_identifiers",
    "find_names",
    "frame_tokens",
    "previous_sections",
    "span_abstract",
    "split_sentences",
    "top_keywords",
    "trim_sentence",
]
