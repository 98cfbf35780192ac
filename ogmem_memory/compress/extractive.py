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
    render_sections,
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
# Firm commitments. A bare "let's" is often a suggestion to talk ("Let's revisit the slides"), so
# it counts only when no conversational verb follows it.
_DECISION_RE: Final = re.compile(
    r"\b(?:decided|decide to|we'll go with|we will go with|agreed|agree to|will use|chose|choose to|"
    r"going with|go with|settled on|opted|the plan is|let's|let us)\b",
    re.IGNORECASE,
)
_TALK_RE: Final = re.compile(
    r"\b(?:let's|let us)\s+(?:revisit|discuss|talk|chat|go over|go through|look|think|see|review|recap|"
    r"consider|continue|move on|focus|start|begin|catch up|get back|come back|return)\b",
    re.IGNORECASE,
)
# Work still to do. "Remind me what we said" asks for a recap, "remind me to" is a to-do.
_LOOP_RE: Final = re.compile(
    r"\b(?:todo|to-do|need to|needs to|have to|remind me to|follow up|follow-up|don't forget|"
    r"do not forget|pending|tbd)\b",
    re.IGNORECASE,
)
# What people are asked about later: tastes, allergies, where they live and work, who is whom.
_PERSONAL_RE: Final = re.compile(
    r"\b(?:love|loves|loved|like to|likes|prefer|prefers|preferred|favou?rite|enjoy|enjoys|enjoyed|hate|"
    r"hates|allergic|vegan|vegetarian|live in|lives in|moved to|work at|works at|work as|works as|born|"
    r"married|my (?:wife|husband|partner|son|daughter|sister|brother|mother|mom|father|dad|friend|name))\b",
    re.IGNORECASE,
)
_FIRST_PERSON_RE: Final = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|my|we|we're|we've|our)\b")
# Words of small talk and of the conversation itself: neither a fact nor a topic.
_CHAT_WORDS: Final = frozenset(
    [
        "able",
        "absolutely",
        "advice",
        "again",
        "ago",
        "agree",
        "amazing",
        "anyway",
        "appreciate",
        "appreciated",
        "ask",
        "asked",
        "awesome",
        "back",
        "bad",
        "best",
        "better",
        "bit",
        "bye",
        "call",
        "can",
        "cheers",
        "chat",
        "cool",
        "congrats",
        "congratulations",
        "course",
        "cute",
        "day",
        "days",
        "definitely",
        "doing",
        "done",
        "enough",
        "especially",
        "ever",
        "everyone",
        "everything",
        "exactly",
        "excited",
        "feel",
        "feeling",
        "feels",
        "felt",
        "fine",
        "fun",
        "funny",
        "give",
        "glad",
        "gonna",
        "happy",
        "hear",
        "heard",
        "help",
        "helps",
        "hope",
        "hopefully",
        "idea",
        "keep",
        "kind",
        "kinda",
        "last",
        "later",
        "least",
        "let",
        "little",
        "long",
        "look",
        "looking",
        "looks",
        "lots",
        "love",
        "lovely",
        "luck",
        "mean",
        "means",
        "meet",
        "mind",
        "moment",
        "much",
        "nice",
        "night",
        "note",
        "noted",
        "once",
        "pretty",
        "question",
        "quick",
        "ready",
        "remember",
        "remind",
        "said",
        "saying",
        "sense",
        "share",
        "shared",
        "shall",
        "soon",
        "sorry",
        "sound",
        "sounds",
        "start",
        "stuff",
        "super",
        "take",
        "talk",
        "talking",
        "tell",
        "thinking",
        "thought",
        "time",
        "times",
        "today",
        "told",
        "tomorrow",
        "totally",
        "try",
        "trying",
        "revisit",
        "wait",
        "wanna",
        "wanted",
        "week",
        "weeks",
        "welcome",
        "whether",
        "whole",
        "wish",
        "wonder",
        "wonderful",
        "work",
        "worry",
        "wow",
        "year",
        "years",
        "yep",
        "yesterday",
    ]
)
_MAX_FACT_CHARS: Final = 240
_MAX_DECISIONS: Final = 12
_MAX_LOOPS: Final = 12
_MAX_TOPICS: Final = 12
_NEW_TOPICS: Final = 6
_ANCHORED_FACTS: Final = 3
# A token found in more than this share of a batch's messages frames the conversation (a date
# or a speaker name prefixed to every line) instead of telling anything about one of them.
_FRAME_SHARE: Final = 0.3
_FRAME_MIN_MESSAGES: Final = 6
# Largest shares of the overview the decisions and the open loops may take; facts get the rest.
_DECISION_SHARE: Final = 0.2
_LOOP_SHARE: Final = 0.15


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


_CALENDAR: Final = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
)
_DATE_RE: Final = re.compile(rf"\d{{4}}-\d{{2}}-\d{{2}}|{_MONTHS}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}")


@dataclass(frozen=True, slots=True)
class _Sentence:
    index: int
    role: str
    text: str
    message: int

    @property
    def bullet(self) -> str:
        return f"{self.role or 'unknown'}: {trim_sentence(self.text)}"


@dataclass(frozen=True, slots=True)
class _Features:
    """What makes a sentence worth keeping: hard tokens, names, informative words, cues."""

    identifiers: tuple[str, ...]
    names: tuple[str, ...]
    words: tuple[str, ...]
    personal: bool
    first_person: bool

    @property
    def info(self) -> int:
        return len(self.identifiers) + len(self.names) + len(self.words)


def _sentences(messages: Sequence[Mapping[str, Any]]) -> list[_Sentence]:
    out: list[_Sentence] = []
    for position, message in enumerate(messages):
        role = message_role(message)
        for text in split_sentences(message_text(message)):
            out.append(_Sentence(len(out), role, text, position))
    return out


def _proper_names(text: str) -> tuple[str, ...]:
    return _names_cached(text)


@functools.lru_cache(maxsize=8192)
def _names_cached(text: str) -> tuple[str, ...]:
    # a commit looks at each sentence several times (facts, frame, topics, abstract)
    return tuple(
        n
        for n in find_names(text)
        if n.casefold() not in _CALENDAR and n.casefold() not in STOPWORDS and not _DATE_RE.fullmatch(n)
    )


def frame_tokens(texts: Sequence[str]) -> frozenset[str]:
    """Identifiers and names found in more than 30% of ``texts`` (at least six of them).

    They frame the lines (a date or a speaker's name prefixed to each one) instead of telling
    anything about one line, so they neither make a sentence a fact nor a span's topic.
    """
    if len(texts) < _FRAME_MIN_MESSAGES:
        return frozenset()
    df: Counter[str] = Counter()
    for text in texts:
        # sentence by sentence: the same pieces the facts look at, so the caches answer
        pieces = split_sentences(text)
        df.update({t for piece in pieces for t in (*_identifiers(piece), *_proper_names(piece))})
    limit = _FRAME_SHARE * len(texts)
    return frozenset(token for token, count in df.items() if count > limit)


def _features(text: str, frame: frozenset[str]) -> _Features:
    identifiers = tuple(dict.fromkeys(i for i in find_identifiers(text) if i not in frame))
    names = tuple(dict.fromkeys(n for n in _proper_names(text) if n not in frame))
    skip = {n.casefold() for n in names} | {t.casefold() for t in frame}
    words = tuple(
        dict.fromkeys(
            w for w in content_words(text) if w not in _CHAT_WORDS and w not in _CALENDAR and w not in skip
        )
    )
    return _Features(
        identifiers, names, words, bool(_PERSONAL_RE.search(text)), bool(_FIRST_PERSON_RE.search(text))
    )


def _is_fact(text: str, features: _Features, rarity: float) -> bool:
    """A statement that tells something: hard tokens or names among other words, a personal
    detail, or a run of words rare in the conversation. Questions and small talk are not facts."""
    if text.rstrip("\"'\u201d\u2019)").endswith("?"):
        return False
    if features.identifiers or features.names:
        return features.info >= 3 or (features.personal and features.info >= 2)
    return (features.personal and len(features.words) >= 1) or (len(features.words) >= 4 and rarity >= 4.0)


def _rarity(features: _Features, idf: Mapping[str, float]) -> float:
    """The summed rarity of a sentence's eight rarest words, on a scale where one identifier is 3."""
    return sum(sorted((idf.get(w, 0.0) for w in features.words), reverse=True)[:8]) / 4


def _score(features: _Features, rarity: float) -> float:
    return (
        3 * len(features.identifiers)
        + 2 * len(features.names)
        + rarity
        + 1.5 * features.personal
        + 0.5 * features.first_person
    )


def _idf(word_sets: Sequence[Iterable[str]]) -> dict[str, float]:
    df: Counter[str] = Counter(w for ws in word_sets for w in set(ws))
    total = len(word_sets) + 1
    return {w: math.log(total / n) for w, n in df.items()}


def _is_new(features: _Features, covered: set[str]) -> bool:
    """False for an echo: every hard token and name already kept, and few new words."""
    hard = set(features.identifiers) | set(features.names)
    if not hard or not hard <= covered:
        return True
    fresh = [w for w in features.words if w not in covered]
    return len(fresh) > max(1, len(features.words) // 3)


def _last_assistant(messages: Sequence[Mapping[str, Any]]) -> int:
    return max((i for i, m in enumerate(messages) if message_role(m) == "assistant"), default=-1)


def _is_decision(text: str) -> bool:
    return bool(_DECISION_RE.search(text)) and not (_TALK_RE.search(text) and not _firm(text))


def _firm(text: str) -> bool:
    """A decision word other than a bare "let's"/"let us" (those may only propose a talk)."""
    return any(m.group(0).casefold() not in {"let's", "let us"} for m in _DECISION_RE.finditer(text))


def batch_topics(
    messages: Sequence[Mapping[str, Any]], k: int = _NEW_TOPICS, *, frame: frozenset[str] | None = None
) -> list[str]:
    """What a batch was about: its most mentioned content words and names, the user's counted twice.

    Small talk, the conversation's own verbs ("remind", "said"), calendar words and tokens that
    frame every line are left out; a name counts half again as much as a common word.
    """
    texts = [(message_role(m), message_text(m)) for m in messages]
    if frame is None:
        frame = frame_tokens([t for _, t in texts])
    folded = {t.casefold() for t in frame}
    counts: dict[str, float] = {}
    first: dict[str, int] = {}
    spelled: dict[str, str] = {}
    for role, message in texts:
        weight = 2.0 if role == "user" else 1.0
        # a reply's own questions ("Shall we move on?") are its routine, not the subject
        text = (
            message
            if role == "user"
            else " ".join(s for s in split_sentences(message) if not s.endswith("?"))
        )
        names = {n.strip("'\u2019-").casefold(): n for n in _proper_names(text)}
        for word in content_words(text):
            if word in _CHAT_WORDS or word in _CALENDAR or word in folded:
                continue
            counts[word] = counts.get(word, 0.0) + weight * (1.5 if word in names else 1.0)
            first.setdefault(word, len(first))
            if word in names:
                spelled.setdefault(word, names[word].strip("'\u2019-"))
    best = sorted(counts, key=lambda w: (-counts[w], first[w]))[:k]
    return [spelled.get(w, w) for w in best]


def extract_sections(messages: Sequence[Mapping[str, Any]], *, max_facts: int) -> Sections:
    """Topics, facts, decisions and open loops of one batch, each sentence in at most one section.

    Facts are the statements of every speaker that carry what people ask about later (names,
    places, dates, numbers, personal details), best first up to ``max_facts``, echoes of a fact
    already kept left out, then put back in conversation order. Questions are never facts: an
    unanswered user question is an open loop, an answered one is gone with its answer kept.
    """
    sentences = _sentences(messages)
    frame = frame_tokens([message_text(m) for m in messages])
    answered_until = _last_assistant(messages)
    decisions: list[_Sentence] = []
    loops: list[_Sentence] = []
    rest: list[_Sentence] = []
    for s in sentences:
        spoken = s.role in {"user", "assistant"}
        if spoken and _is_decision(s.text):
            decisions.append(s)
        elif (spoken and _LOOP_RE.search(s.text)) or (
            s.role == "user" and s.text.endswith("?") and s.message > answered_until
        ):
            loops.append(s)
        else:
            rest.append(s)
    features = {s.index: _features(s.text, frame) for s in rest}
    idf = _idf([features[s.index].words for s in rest])
    scores: dict[int, float] = {}
    for s in rest:
        f = features[s.index]
        rarity = _rarity(f, idf)
        if _is_fact(s.text, f, rarity):
            scores[s.index] = _score(f, rarity)
    ranked = sorted(scores, key=lambda i: (-scores[i], sentences[i].role != "user", i))
    chosen: list[_Sentence] = []
    covered: set[str] = set()
    seen: set[str] = set()
    for index in ranked:
        s, f = sentences[index], features[index]
        key = bullet_key(s.text)
        if key in seen or not _is_new(f, covered):
            continue
        seen.add(key)
        covered.update(f.identifiers, f.names, f.words)
        chosen.append(s)
        if len(chosen) >= max_facts:
            break
    return {
        "Topics": batch_topics(messages, frame=frame),
        "Facts": [s.bullet for s in sorted(chosen, key=lambda s: s.index)],
        "Decisions": [s.bullet for s in decisions[-_MAX_DECISIONS:]],
        "Open loops": [s.bullet for s in loops[-_MAX_LOOPS:]],
    }


def span_abstract(messages: Sequence[Mapping[str, Any]], topics: Sequence[str] = ()) -> str:
    """One line (at most 100 characters) saying what a span was about: who, what, when.

    The most mentioned names, then the topics, then the first date said in the span, e.g.
    ``"Ada, Grace: Lisbon, slides, hotel (14 May 2025)"``. Falls back to the seed's
    first-request abstract when the span names nothing.
    """
    texts = [message_text(m) for m in messages]
    names: Counter[str] = Counter()
    openers: list[tuple[str, str]] = []
    for text in texts:
        names.update({n.strip("'\u2019-") for n in _proper_names(text)})
        for sentence in split_sentences(text):
            words = [w.strip(_NAME_PUNCT) for w in sentence.split()[:2]]
            if words and words[0][:1].isupper() and words[0].casefold() not in STOPWORDS:
                openers.append((words[0], words[1] if len(words) > 1 else ""))
    # A sentence's first word is a name when the span uses it as one elsewhere, or when another
    # capitalised word follows it ("Grace Hopper and I ...").
    for word, following in openers:
        if word in names or (following[:1].isupper() and following not in _NOT_NAMES):
            names[word] += 1
    who = [n for n, _ in sorted(names.items(), key=lambda p: -p[1])[:3] if n]
    folded = {n.casefold() for n in who}
    what = [t for t in (topics or batch_topics(messages)) if t.casefold() not in folded][:5]
    when = next((i for t in texts for i in find_identifiers(t) if _DATE_RE.search(i)), "")
    if not who and not what:
        return fallback_abstract(messages, "")
    head = ", ".join(who)
    line = f"{head}: {', '.join(what)}" if head and what else head or ", ".join(what)
    tail = f" ({when})" if when else ""
    while len(line) + len(tail) > ABSTRACT_MAX_CHARS and ", " in line:
        line = line.rsplit(", ", 1)[0]
    return one_line(line + tail)[:ABSTRACT_MAX_CHARS].rstrip()


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


def _keep_salient(bullets: Sequence[str], room: int, counter: TokenCounter) -> list[str]:
    """The fused facts that fit ``room`` tokens: the least salient go first, in conversation order.

    The opening facts (who the user is, what they want) and the newest one always stay; among
    the others, what carries fewer names, dates, numbers and rare words is dropped first, the
    older first on a tie. So a fixed-size overview keeps what people ask about from the whole
    conversation, not only from its latest part.
    """
    sizes = [counter.count(f"- {b}\n") for b in bullets]
    total = sum(sizes)
    if total <= room:
        return list(bullets)
    texts = [_ROLE_PREFIX_RE.sub("", b) for b in bullets]
    frame = frame_tokens(texts)
    features = [_features(t, frame) for t in texts]
    idf = _idf([f.words for f in features])
    scores = [_score(f, _rarity(f, idf)) for f in features]
    protected = set(range(min(_ANCHORED_FACTS, len(bullets) - 1))) | {len(bullets) - 1}
    order = sorted((i for i in range(len(bullets)) if i not in protected), key=lambda i: (scores[i], i))
    dropped: set[int] = set()
    for index in order:
        if total <= room:
            break
        dropped.add(index)
        total -= sizes[index]
    return [b for i, b in enumerate(bullets) if i not in dropped]


def _newest_within(bullets: Sequence[str], room: int, counter: TokenCounter) -> list[str]:
    kept: list[str] = []
    used = 0
    for bullet in reversed(bullets):
        cost = counter.count(f"- {bullet}\n")
        if kept and used + cost > room:
            break
        kept.append(bullet)
        used += cost
    return kept[::-1]


class ExtractiveCompressor:
    """Deterministic, LLM-free compressor: verbatim salient sentences in four Markdown sections.

    The overview is the running summary of the whole conversation at a fixed size: each call
    fuses the previous overview with the new batch, keeps the newest decisions and open loops
    within their shares, and gives the facts the rest, dropping the least salient first. The
    abstract says what the new span was about (names, topics, date).
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
        overview, _ = bound_sections(self._fit(merged), self.max_overview_tokens, self._counter)
        # The abstract names this span only: the overview already carries the earlier ones, and
        # chaining "previous | new" made every abstract start with the first archive's text.
        return overview, span_abstract(messages, new["Topics"])

    def _fit(self, sections: Sections) -> Sections:
        """Shares of the fixed size: decisions and open loops their newest, facts the rest."""
        counter = self._counter
        limit = self.max_overview_tokens
        fitted = dict(sections)
        for heading, share in (("Decisions", _DECISION_SHARE), ("Open loops", _LOOP_SHARE)):
            fitted[heading] = _newest_within(sections.get(heading, []), int(limit * share), counter)
        others = {h: b for h, b in fitted.items() if h != "Facts"}
        used = counter.count(render_sections({**others, "Facts": []}))
        fitted["Facts"] = _keep_salient(sections.get("Facts", []), limit - used, counter)
        return fitted


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
