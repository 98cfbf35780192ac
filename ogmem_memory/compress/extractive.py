"""Deterministic compressors that need no LLM: the extractive default and the seed's template."""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ogmem_memory.compress.base import (
    ABSTRACT_MAX_CHARS,
    EMPTY_ABSTRACT,
    SECTIONS,
    Sections,
    bound_sections,
    bullet_key,
    fallback_abstract,
    merge_sections,
    message_role,
    message_text,
    one_line,
    parse_sections,
)
from ogmem_memory.errors import ConfigError
from ogmem_memory.tokens import TokenCounter, as_token_counter

_STOPWORD_TEXT: Final = """
    a about above after again against all also am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't doing
    don't down during each few for from further get got had hadn't has hasn't have haven't having he
    he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in
    into is isn't it it's its itself just know let let's like make me more most much must my myself
    need no nor not now of off ok okay on once one only or other ought our ours ourselves out over own
    please really same say see shall she she'd she'll she's should shouldn't so some still such sure
    tell than thank thanks that that's the their theirs them themselves then there there's these they
    they'd they'll they're they've think this those though through to too under until up us use used
    using very want was wasn't we we'd we'll we're we've well were weren't what what's when when's
    where where's which while who who's whom why why's will with won't would wouldn't yeah yes yet you
    you'd you'll you're you've your yours yourself yourselves go going good great hi hello hey right
    something anything thing things way lot maybe actually probably
"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())

_MONTHS: Final = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_FILE_EXT: Final = (
    r"(?:py|pyi|js|jsx|ts|tsx|json|ya?ml|toml|md|rst|txt|csv|sql|sh|go|rs|java|kt|rb|php|c|cc|cpp|h|hpp"
    r"|cs|swift|html|css|ini|cfg|conf|log|xml|pdf|docx?|xlsx?|pptx?|png|jpe?g|gif|svg|ipynb|lock|env|db)"
)
# Leftmost match wins and, at one position, the first alternative: specific forms come first so a
# date or a time is one identifier, not three numbers.
_IDENTIFIER_RE: Final = re.compile(
    rf"""
    (?:https?|ftp)://[^\s<>"'`]*[^\s<>"'`.,;:!?)\]]
    | [\w.+-]+@[\w-]+(?:\.[\w-]+)+
    | \b\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]\d{{2}}:\d{{2}}(?::\d{{2}})?)?
    | \b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\b\.?(?:,?\s+\d{{4}}\b)?
    | \b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?
    | \b\d{{1,2}}/\d{{1,2}}/\d{{2,4}}\b
    | \b\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?:\s?[ap]\.?m\b\.?)?
    | \b\d{{1,2}}\s?[ap]m\b
    | (?<![\w/])(?:~|\.{{1,2}})?/[\w.@-]+(?:/[\w.@-]+)*/?
    | \b[\w-]+(?:/[\w.-]+)*\.{_FILE_EXT}\b
    | \bv?\d+(?:\.\d+){{2,3}}(?:[-+][\w.]+)?\b
    | \bv\d+(?:\.\d+)?\b
    | \#?\b[A-Z][A-Z0-9]*-\d[\w-]*
    | \b[A-Z]{{1,5}}\d{{2,}}\b
    | \b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\(\)
    | (?<![\w.])[$€£¥\#]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:%|k\b|bn\b)?
    | \b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b
    | \b[a-z]+(?:[A-Z][a-z0-9]+)+\b
    | \b[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+\b
    """,
    re.VERBOSE,
)
# Every branch of _IDENTIFIER_RE needs one of these: a digit or one of @/_$€£¥#, a lower-to-upper
# case change, a dot inside a word, or "()". A cheap gate in front of the costly pattern.
_MAYBE_IDENTIFIER_RE: Final = re.compile(r"[\d@/_$€£¥#]|[a-z][A-Z]|\w\.\w|\w\(\)")
_WORD_RE: Final = re.compile(r"[^\W\d_][\w'\u2019-]*")
_BOUNDARY_RE: Final = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9À-ÖØ-Þ])")
_ABBREVIATIONS: Final = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no"})
_NAME_PUNCT: Final = "\"'\u201c\u201d\u2018\u2019()[]{}*_,.;:!?"
_NOT_NAMES: Final = frozenset({"I", "I'm", "I'll", "I've", "I'd", "OK", "Ok"})
_DECISION_RE: Final = re.compile(
    r"\b(?:decided|decide to|we'll|we will|let's|let us|agreed|agree to|will use|chose|choose to|"
    r"going with|go with|settled on|opted|the plan is)\b",
    re.IGNORECASE,
)
_LOOP_RE: Final = re.compile(
    r"\b(?:todo|to-do|need to|needs to|remind|follow up|follow-up|next|don't forget|pending|tbd)\b",
    re.IGNORECASE,
)
_MAX_FACT_CHARS: Final = 240
_MAX_DECISIONS: Final = 12
_MAX_LOOPS: Final = 12
_MAX_TOPICS: Final = 12
_NEW_TOPICS: Final = 6


def find_identifiers(text: str) -> list[str]:
    """Hard tokens of ``text`` in order: numbers, dates, times, versions, paths, URLs, codes."""
    return list(_identifiers(text))


@functools.lru_cache(maxsize=8192)
def _identifiers(text: str) -> tuple[str, ...]:
    # the pattern is costly and a commit looks at each sentence several times (extract, score,
    # quality): remember recent answers, and skip text none of its branches can match
    if not _MAYBE_IDENTIFIER_RE.search(text):
        return ()
    return tuple(m.group(0) for m in _IDENTIFIER_RE.finditer(text))


def find_names(sentence: str) -> list[str]:
    """Capitalised words that do not start the sentence (a cheap proper-noun detector)."""
    names = []
    for word in sentence.split()[1:]:
        core = word.strip(_NAME_PUNCT)
        if core[:1].isupper() and core not in _NOT_NAMES and not core.isdigit():
            names.append(core)
    return names


def content_words(text: str) -> list[str]:
    """Lower-cased words of three letters or more that are not stop-words."""
    words = (w.casefold().strip("'\u2019-") for w in _WORD_RE.findall(text))
    return [w for w in words if len(w) >= 3 and w not in STOPWORDS]


def top_keywords(texts: Iterable[str], k: int) -> list[str]:
    """The ``k`` most frequent content words; ties go to the word seen first."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for text in texts:
        for word in content_words(text):
            counts[word] += 1
            first.setdefault(word, len(first))
    return sorted(counts, key=lambda w: (-counts[w], first[w]))[:k]


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at line breaks and at ``.!?`` followed by a capital or digit."""
    sentences = []
    for line in text.splitlines():
        line = line.strip()
        start = 0
        for match in _BOUNDARY_RE.finditer(line):
            head = line[start : match.start()].split()
            last = head[-1].rstrip(".!?").casefold() if head else ""
            if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                continue  # "Dr. Smith", "J. Doe": not a sentence end
            sentences.append(line[start : match.start()].strip())
            start = match.end()
        if line[start:].strip():
            sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def trim_sentence(sentence: str, max_chars: int = _MAX_FACT_CHARS) -> str:
    """Shorten a long sentence to a window of whole words around its first salient part.

    Identifiers (dates, amounts, names) are never cut: a window edge inside one moves outward.
    """
    if len(sentence) <= max_chars:
        return sentence
    words = list(re.finditer(r"\S+", sentence))
    spans = [(m.start(), m.end()) for m in _IDENTIFIER_RE.finditer(sentence)]
    names = set(find_names(sentence))
    spans += [(w.start(), w.end()) for w in words[1:] if w.group(0).strip("\"'(),.;:!?") in names]
    anchor_pos = min((s for s, _ in spans), default=0)
    anchor = next(i for i, w in enumerate(words) if w.end() > anchor_pos)
    lo = hi = anchor
    grew = True
    while grew:
        grew = False
        if hi + 1 < len(words) and words[hi + 1].end() - words[lo].start() <= max_chars:
            hi, grew = hi + 1, True
        if lo > 0 and words[hi].end() - words[lo - 1].start() <= max_chars:
            lo, grew = lo - 1, True
    start, end = words[lo].start(), words[hi].end()
    for span_start, span_end in spans:
        if span_start < start < span_end:
            start = span_start
        if span_start < end < span_end:
            end = span_end
    return ("… " if start > 0 else "") + sentence[start:end] + (" …" if end < len(sentence) else "")


@dataclass(frozen=True, slots=True)
class _Sentence:
    index: int
    role: str
    text: str
    message: int

    @property
    def bullet(self) -> str:
        return f"{self.role or 'unknown'}: {trim_sentence(self.text)}"


def _sentences(messages: Sequence[Mapping[str, Any]]) -> list[_Sentence]:
    out: list[_Sentence] = []
    for position, message in enumerate(messages):
        role = message_role(message)
        for text in split_sentences(message_text(message)):
            out.append(_Sentence(len(out), role, text, position))
    return out


def _salience(sentences: Sequence[_Sentence]) -> dict[int, float]:
    """Score sentences that carry an identifier or a name; the rest are not fact candidates."""
    words = [set(content_words(s.text)) for s in sentences]
    df: Counter[str] = Counter(w for ws in words for w in ws)
    total = len(sentences) + 1
    scores: dict[int, float] = {}
    for sentence, ws in zip(sentences, words, strict=True):
        ids, names = find_identifiers(sentence.text), find_names(sentence.text)
        if not ids and not names:
            continue
        rarity = sum(math.log(total / df[w]) for w in ws) / len(ws) if ws else 0.0
        scores[sentence.index] = 3 * len(ids) + 2 * len(names) + rarity + (0.5 * (sentence.role == "user"))
    return scores


def _last_assistant(messages: Sequence[Mapping[str, Any]]) -> int:
    return max((i for i, m in enumerate(messages) if message_role(m) == "assistant"), default=-1)


def extract_sections(messages: Sequence[Mapping[str, Any]], *, max_facts: int) -> Sections:
    """Topics, facts, decisions and open loops of one batch, each sentence in at most one section."""
    sentences = _sentences(messages)
    answered_until = _last_assistant(messages)
    decisions: list[_Sentence] = []
    loops: list[_Sentence] = []
    rest: list[_Sentence] = []
    for s in sentences:
        if s.role in {"user", "assistant"} and _DECISION_RE.search(s.text):
            decisions.append(s)
        elif (s.role in {"user", "assistant"} and _LOOP_RE.search(s.text)) or (
            s.role == "user" and s.text.endswith("?") and s.message > answered_until
        ):
            loops.append(s)
        else:
            rest.append(s)
    scores = _salience(rest)
    seen: set[str] = set()
    candidates = []
    for s in rest:
        key = bullet_key(s.text)
        if s.index in scores and key not in seen:
            seen.add(key)
            candidates.append(s)
    best = sorted(candidates, key=lambda s: (-scores[s.index], s.index))[:max_facts]
    user_texts = [message_text(m) for m in messages if message_role(m) == "user"]
    topics = top_keywords(user_texts or (s.text for s in sentences), _NEW_TOPICS)
    return {
        "Topics": topics,
        "Facts": [s.bullet for s in sorted(best, key=lambda s: s.index)],
        "Decisions": [s.bullet for s in decisions[-_MAX_DECISIONS:]],
        "Open loops": [s.bullet for s in loops[-_MAX_LOOPS:]],
    }


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


class ExtractiveCompressor:
    """Deterministic, LLM-free compressor: verbatim salient sentences in four Markdown sections.

    The overview is the running summary of the whole conversation: each call fuses the previous
    overview with the new batch and bounds the result, dropping the oldest bullets first.
    """

    def __init__(
        self,
        *,
        max_overview_tokens: int = 600,
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

    def compress(
        self,
        messages: Sequence[Mapping[str, Any]],
        prev_overview: str = "",
        prev_abstract: str = "",
    ) -> tuple[str, str]:
        """Compress ``messages`` and fuse them with the previous archive.

        Returns:
            ``(overview, abstract)``; ``("", "Empty session")`` when there is nothing at all, and
            the previous archive unchanged when there are no new messages.
        """
        if not messages:
            if prev_overview.strip():
                return prev_overview, one_line(prev_abstract)[:ABSTRACT_MAX_CHARS] or EMPTY_ABSTRACT
            return "", EMPTY_ABSTRACT
        new = extract_sections(messages, max_facts=self.max_facts)
        merged = merge_sections([previous_sections(prev_overview), new])
        merged["Topics"] = merged.get("Topics", [])[-_MAX_TOPICS:]
        overview, _ = bound_sections(merged, self.max_overview_tokens, self._counter)
        # The abstract names this span only: the overview already carries the earlier ones, and
        # chaining "previous | new" made every abstract start with the first archive's text.
        return overview, fallback_abstract(messages, "")


class TemplateCompressor:
    """The seed's no-LLM fallback, reproduced exactly: a message count and the opening request."""

    def compress(
        self,
        messages: Sequence[Mapping[str, Any]],
        prev_overview: str = "",
        prev_abstract: str = "",
    ) -> tuple[str, str]:
        """Return the seed's template overview and abstract (``("", "Empty session")`` when empty)."""
        if not messages:
            return "", EMPTY_ABSTRACT
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
