"""Text primitives of the extractive compressor: sentences, identifiers, names, content words.

Identifiers are the hard tokens people ask about later (numbers, dates, times, versions,
paths, URLs, codes); they are found by one costly pattern behind a cheap gate, and cached.
The tokens that frame a batch's lines (a stamp or a speaker's name on each one) are found
from them too.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from ogmem_memory.gil import gil_breaks

# On ASCII text a pattern compiled with re.ASCII finds what its Unicode form finds (\d, \w, \b
# and case-insensitive letters agree on ASCII characters) at about two thirds of the cost, once
# its \s also takes the four separators \x1c-\x1f that Unicode counts as whitespace.
_ASCII_SPACE: Final = r"\s\x1c-\x1f"


def ascii_twin(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """``pattern`` compiled for ASCII text: on any ASCII string, the same matches, faster."""
    out: list[str] = []
    source = pattern.pattern
    in_class = False
    i = 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            escape = source[i : i + 2]
            if escape == r"\S":
                raise ValueError("\\S has no ASCII twin here")  # no pattern of ours uses it
            out.append((_ASCII_SPACE if in_class else f"[{_ASCII_SPACE}]") if escape == r"\s" else escape)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(source[i : i + 2] if source[i + 1 : i + 2] in ("^", "]") else char)
            i += len(out[-1])
            if out[-1] == "[^" and source[i : i + 1] == "]":
                out.append("]")
                i += 1
            continue
        if char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return re.compile("".join(out), (pattern.flags & ~re.UNICODE) | re.ASCII)


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
# date or a time is one identifier, not three numbers. Each branch is paired with what a text must
# contain for it to match anywhere ("" when it may match in plain prose) and, for those, the
# characters its match may start with.
_IDENTIFIER_BRANCHES: Final[tuple[tuple[str, str, str], ...]] = (
    (r"""(?:https?|ftp)://[^\s<>"'`]*[^\s<>"'`.,;:!?)\]]""", "url", "hf"),
    (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "at", ""),
    (r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?", "", r"\d"),
    (rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\b\.?(?:,?\s+\d{{4}}\b)?", "", r"\d"),
    (rf"\b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?", "", "A-Z"),
    (r"\b\d{1,2}/\d{1,2}/\d{2,4}\b", "", r"\d"),
    (r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\b\.?)?", "", r"\d"),
    (r"\b\d{1,2}\s?[ap]m\b", "", r"\d"),
    (r"(?<![\w/])(?:~|\.{1,2})?/[\w.@-]+(?:/[\w.@-]+)*/?", "slash", "~./"),
    (rf"\b[\w-]+(?:/[\w.-]+)*\.{_FILE_EXT}\b", "ext", ""),
    (r"\bv?\d+(?:\.\d+){2,3}(?:[-+][\w.]+)?\b", "", r"v\d"),
    (r"\bv\d+(?:\.\d+)?\b", "", "v"),
    (r"\#?\b[A-Z][A-Z0-9]*-\d[\w-]*", "", "#A-Z"),
    (r"\b[A-Z]{1,5}\d{2,}\b", "", "A-Z"),
    (r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\(\)", "call", ""),
    (r"(?<![\w.])[$€£¥\#]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:%|k\b|bn\b)?", "", r"$€£¥#\d"),
    (r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", "underscore", ""),
    (r"\b[a-z]+(?:[A-Z][a-z0-9]+)+\b", "camel", ""),
    (r"\b[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+\b", "", "A-Z"),
)
_IDENTIFIER_RE: Final = re.compile("|".join(b for b, _, _ in _IDENTIFIER_BRANCHES), re.VERBOSE)
# Texts without "@", "()", "_", a file extension or a lower-to-upper case change (most prose) can
# only match branches that start with a digit, a capital or one of a few symbols: a lookahead on
# that first character lets the scan skip every other position. Dropping branches that cannot
# match anywhere in the text changes nothing, so the matches are exactly _IDENTIFIER_RE's.
_FILE_EXT_RE: Final = re.compile(rf"\.{_FILE_EXT}\b")
_CAMEL_RE: Final = re.compile(r"[a-z][A-Z]")


def _prose_pattern(url: bool, slash: bool) -> re.Pattern[str]:
    kept = [
        (branch, starts)
        for branch, feature, starts in _IDENTIFIER_BRANCHES
        if feature == "" or (feature == "url" and url) or (feature == "slash" and slash)
    ]
    first = "".join(dict.fromkeys(starts for _, starts in kept))
    return re.compile(f"(?=[{first}])(?:" + "|".join(b for b, _ in kept) + ")", re.VERBOSE)


# by ASCII text, "://" in it, "/" in it; and the full pattern by ASCII text
_PROSE_RES: Final = {
    (ascii, url, slash): ascii_twin(pattern) if ascii else pattern
    for url in (False, True)
    for slash in (False, True)
    for pattern in (_prose_pattern(url, slash),)
    for ascii in (False, True)
}
_FULL_RES: Final = {False: _IDENTIFIER_RE, True: ascii_twin(_IDENTIFIER_RE)}
_FILE_EXT_ASCII_RE: Final = ascii_twin(_FILE_EXT_RE)


def _identifier_pattern(text: str) -> re.Pattern[str]:
    """The fastest pattern that finds exactly what :data:`_IDENTIFIER_RE` finds in ``text``."""
    ascii = text.isascii()
    if (
        "@" in text
        or "()" in text
        or "_" in text
        or (_FILE_EXT_ASCII_RE if ascii else _FILE_EXT_RE).search(text)
        or _CAMEL_RE.search(text)
    ):
        return _FULL_RES[ascii]
    return _PROSE_RES[ascii, "://" in text, "/" in text]


# Every branch of _IDENTIFIER_RE needs one of these: a digit or one of @/_$€£¥#, a lower-to-upper
# case change, a dot after a word character or a hyphen ("a-.py" is a file name), or "()". A
# cheap gate in front of the costly pattern.
_MAYBE_IDENTIFIER_RE: Final = re.compile(r"[\d@/_$€£¥#]|[a-z][A-Z]|[\w-]\.\w|\w\(\)")
_MAYBE_IDENTIFIER_CHAR_RE: Final = re.compile(r"[\d@/_$€£¥#]")  # a one-character set: a fast scan
_MAYBE_IDENTIFIER_ASCII_RE: Final = ascii_twin(_MAYBE_IDENTIFIER_RE)
_MAYBE_IDENTIFIER_CHAR_ASCII_RE: Final = ascii_twin(_MAYBE_IDENTIFIER_CHAR_RE)
_WORD_RE: Final = re.compile(r"[^\W\d_][\w'\u2019-]*")
# _WORD_RE's words of ASCII text, their closing apostrophes and hyphens stripped.
_ASCII_WORD_RE: Final = re.compile(r"[^\W\d_](?:[\w'-]*\w)?", re.ASCII)  # on ASCII text only
# The lookahead on the first character lets the scan skip the positions a boundary cannot start at.
_BOUNDARY_RE: Final = re.compile(
    r"(?=[\"'\u201d\u2019)\]\s])(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9À-ÖØ-Þ])"
)
_ABBREVIATIONS: Final = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no"})
# What surrounds a name in a sentence, and capitalised words that are never names.
NAME_PUNCT: Final = "\"'\u201c\u201d\u2018\u2019()[]{}*_,.;:!?"
NOT_NAMES: Final = frozenset({"I", "I'm", "I'll", "I've", "I'd", "OK", "Ok"})


_MAX_FACT_CHARS: Final = 240


def find_identifiers(text: str) -> list[str]:
    """Hard tokens of ``text`` in order: numbers, dates, times, versions, paths, URLs, codes."""
    return list(cached_identifiers(text))


@functools.lru_cache(maxsize=8192)
def cached_identifiers(text: str) -> tuple[str, ...]:
    """:func:`find_identifiers` as a tuple, cached."""
    # the pattern is costly and a commit looks at each sentence several times (extract, score,
    # quality): remember recent answers, and skip text none of its branches can match
    ascii = text.isascii()
    if not (
        (_MAYBE_IDENTIFIER_CHAR_ASCII_RE if ascii else _MAYBE_IDENTIFIER_CHAR_RE).search(text)
        or _CAMEL_RE.search(text)
        or (
            ("." in text or "()" in text)
            and (_MAYBE_IDENTIFIER_ASCII_RE if ascii else _MAYBE_IDENTIFIER_RE).search(text)
        )
    ):
        return ()  # what _MAYBE_IDENTIFIER_RE says, its single-character branch scanned first
    # no branch has a capturing group: findall gives each whole match
    return tuple(_identifier_pattern(text).findall(text))


def find_names(sentence: str) -> list[str]:
    """Capitalised words that do not start the sentence (a cheap proper-noun detector)."""
    parts = sentence.split(None, 1)
    if len(parts) < 2 or parts[1].islower():
        return []  # no capital after the first word (most sentences): no name
    # a word with no capital anywhere in it (most words) is skipped in C, never stripped
    return list(filter(None, map(_name_of, itertools.filterfalse(str.islower, parts[1].split()))))


@functools.lru_cache(maxsize=16384)  # the capitalised words of a chat recur: names, openers
def _name_of(word: str) -> str:
    """The name :func:`find_names` takes from ``word`` (not a sentence's first), ``""`` for none."""
    core = word.strip(NAME_PUNCT)
    return core if core[:1].isupper() and core not in NOT_NAMES and not core.isdigit() else ""


@functools.lru_cache(maxsize=16384)
def _proper_name_of(word: str) -> str:
    """:func:`_name_of` when :func:`_is_proper` keeps it, else ``""``."""
    core = _name_of(word)
    return core if core and _is_proper(core) else ""


def content_words(text: str) -> list[str]:
    """Lower-cased words of three letters or more that are not stop-words."""
    return list(cached_content_words(text))


@functools.lru_cache(maxsize=8192)
def cached_content_words(text: str) -> tuple[str, ...]:
    """:func:`content_words` as a tuple, cached."""
    if text.isascii():  # most text: lower-casing it once is casefolding each word, and the
        # pattern leaves out the apostrophes and hyphens that end a word (nothing starts with one)
        return tuple(itertools.filterfalse(_ASCII_SKIPPED.__contains__, _ASCII_WORD_RE.findall(text.lower())))
    return tuple(
        [
            word
            for raw in _WORD_RE.findall(text)
            if len(word := raw.casefold().strip("'\u2019-")) >= 3 and word not in STOPWORDS
        ]
    )


# What cached_content_words leaves out of lower-cased ASCII text: the stop-words and every word
# _ASCII_WORD_RE can find that is shorter than three letters (a letter, then a letter, digit or _).
_ASCII_SKIPPED: Final = STOPWORDS | frozenset(
    [
        *string.ascii_lowercase,
        *(a + b for a in string.ascii_lowercase for b in string.ascii_lowercase + string.digits + "_"),
    ]
)


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
    return list(cached_sentences(text))


@functools.lru_cache(maxsize=2048)  # whole messages: a commit's batch and overview fit
def cached_sentences(text: str) -> tuple[str, ...]:
    """:func:`split_sentences` as a tuple, cached.

    Only whitespace and the closing quotes or brackets right after a sentence's final ``.!?``
    fall between sentences, so the words of a text are the words of its sentences in order,
    and its whitespace-separated tokens those of its sentences, stripped of ``NAME_PUNCT`` alike.
    """
    # a commit splits each message several times (facts, frame, topics, abstract)
    sentences = []
    for line in text.splitlines():
        line = line.strip()
        if "." not in line and "!" not in line and "?" not in line:
            if line:  # no boundary: every one follows a ".", "!" or "?"
                sentences.append(line)
            continue
        start = 0
        for match in _BOUNDARY_RE.finditer(line):
            head = line[start : match.start()].rsplit(None, 1)  # its last word only
            last = head[-1].rstrip(".!?").casefold() if head else ""
            if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                continue  # "Dr. Smith", "J. Doe": not a sentence end
            sentences.append(line[start : match.start()].strip())
            start = match.end()
        if line[start:].strip():
            sentences.append(line[start:].strip())
    return tuple(filter(None, sentences))


def trim_sentence(sentence: str, max_chars: int = _MAX_FACT_CHARS) -> str:
    """Shorten a long sentence to a window of whole words around its first salient part.

    Identifiers (dates, amounts, names) are never cut: a window edge inside one moves outward.
    """
    if len(sentence) <= max_chars:
        return sentence
    words = list(re.finditer(r"\S+", sentence))
    spans = [(m.start(), m.end()) for m in _identifier_pattern(sentence).finditer(sentence)]
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


# Capitalised, but no names: months and days.
_CALENDAR_TEXT: Final = """
    january february march april may june july august september october november december jan feb
    mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday
    sunday
"""
CALENDAR_WORDS: Final = frozenset(_CALENDAR_TEXT.split())
# Every alternative starts with a digit or a month's capital: the lookahead lets a scan skip
# every other position (the same matches).
DATE_RE: Final = re.compile(
    rf"(?=[\dADFJMNOS])(?:\d{{4}}-\d{{2}}-\d{{2}}|{_MONTHS}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}})"
)
DATE_ASCII_RE: Final = ascii_twin(DATE_RE)


@functools.lru_cache(maxsize=8192)
def proper_names(text: str) -> tuple[str, ...]:
    """:func:`find_names` without calendar words, stop-words and dates (cached)."""
    # a commit looks at each sentence several times (facts, frame, topics, abstract); what
    # find_names keeps of each word, then filtered, word by word (both remembered per word)
    parts = text.split(None, 1)
    if len(parts) < 2 or parts[1].islower():
        return ()
    return tuple(filter(None, map(_proper_name_of, itertools.filterfalse(str.islower, parts[1].split()))))


@functools.lru_cache(maxsize=8192)  # names recur in every batch
def _is_proper(name: str) -> bool:
    folded = name.casefold()
    if folded in CALENDAR_WORDS or folded in STOPWORDS:
        return False
    return not (DATE_ASCII_RE if name.isascii() else DATE_RE).fullmatch(name)


@functools.lru_cache(maxsize=8192)
def _opening_name(sentence: str) -> tuple[str, ...]:
    """The sentence's first word when :func:`proper_names` would keep it anywhere but first."""
    words = sentence.split(maxsplit=1)
    core = words[0].strip(NAME_PUNCT) if words else ""
    if core[:1].isupper() and core not in NOT_NAMES and not core.isdigit() and _is_proper(core):
        return (core,)
    return ()


def joined_names(sentences: Sequence[str]) -> list[str]:
    """:func:`proper_names` of the sentences joined by spaces (or of the text they were split from).

    Built from each sentence's cached names, so a message is never scanned a second time.
    """
    names: list[str] = []
    for position, sentence in enumerate(sentences):
        if position:
            names.extend(_opening_name(sentence))
        names.extend(proper_names(sentence))
    return names


def joined_words(sentences: Sequence[str]) -> list[str]:
    """:func:`content_words` of the sentences joined by spaces (or of the text they were split from)."""
    return [w for sentence in sentences for w in cached_content_words(sentence)]


# What the decision, open-loop and personal patterns of extractive_facts need somewhere in a
# text, case-folded: most sentences have none of it, and these scans cost a third of a pattern's
# (the pattern still decides).
def may_decide(low: str) -> bool:
    return (
        "decide" in low
        or "go with" in low
        or "going with" in low
        or "agree" in low
        or "will use" in low
        or "chose" in low
        or "choose" in low
        or "settled on" in low
        or "opted" in low
        or "the plan is" in low
        or "let's" in low
        or "let us" in low
    )


def may_loop(low: str) -> bool:
    return (
        "todo" in low
        or "to-do" in low
        or "need to" in low
        or "needs to" in low
        or "have to" in low
        or "remind me to" in low
        or "follow up" in low
        or "follow-up" in low
        or "forget" in low
        or "pending" in low
        or "tbd" in low
    )


def may_be_personal(low: str) -> bool:
    return (
        "love" in low
        or "like" in low
        or "prefer" in low
        or "favo" in low
        or "enjoy" in low
        or "hate" in low
        or "allergic" in low
        or "vegan" in low
        or "vegetarian" in low
        or "live" in low
        or "moved to" in low
        or "work" in low
        or "born" in low
        or "married" in low
        or "my " in low
    )


# A token found in more than this share of a batch's messages frames the conversation (a date
# or a speaker name prefixed to every line) instead of telling anything about one of them.
_FRAME_SHARE: Final = 0.3
_FRAME_MIN_MESSAGES: Final = 6
# A bracketed stamp opening a line (a date, a time, a channel).
_STAMP_RE: Final = re.compile(r"\[([^\]\n]{1,80})\]")


def frame_tokens(texts: Sequence[str]) -> frozenset[str]:
    """Identifiers and names found in more than 30% of ``texts`` (at least six of them), and
    those of the bracketed stamps that open more than 30% of them.

    They frame the lines (a date or a speaker's name prefixed to each one) instead of telling
    anything about one line, so they neither make a sentence a fact nor a span's topic.
    """
    if len(texts) < _FRAME_MIN_MESSAGES:
        return frozenset()
    return _frame_of(tuple(texts))


def _candidates_of(texts: Sequence[str]) -> list[tuple[frozenset[str], tuple[str, ...] | None]]:
    """:func:`_frame_candidates` of each text, the GIL handed over as the work goes (most are
    cached: an overview's bullets come back every fusion)."""
    return [_frame_candidates(text) for text in gil_breaks(texts)]


_CANDIDATES: Final = operator.itemgetter(0)


@functools.lru_cache(maxsize=16)  # a commit's facts and its abstract frame the same batch
def _frame_of(texts: tuple[str, ...]) -> frozenset[str]:
    infos = _candidates_of(texts)
    df = Counter(itertools.chain.from_iterable(map(_CANDIDATES, infos)))
    stamps = [stamp for _, stamp in infos if stamp is not None]
    limit = _FRAME_SHARE * len(texts)
    frame = {token for token, count in df.items() if count > limit}
    if len(stamps) > limit:
        # lines stamped alike ("[1:56 pm on 8 May, 2023] Ada: ..."): each stamp's date differs
        # from the next session's, yet none of them tells anything about its line
        frame.update(t for stamp in stamps for t in stamp)
    return frozenset(frame)


@functools.lru_cache(maxsize=2048)  # whole messages: a commit's batch and overview fit
def _frame_candidates(text: str) -> tuple[frozenset[str], tuple[str, ...] | None]:
    """The identifiers and names of ``text``, and those of the stamp opening it (None without one)."""
    # sentence by sentence: the same pieces the facts look at, so the caches answer
    pieces = cached_sentences(text)
    if len(pieces) == 1:  # a one-sentence message: no set to grow
        candidates = frozenset((*cached_identifiers(pieces[0]), *proper_names(pieces[0])))
    else:
        found: set[str] = set()
        for piece in pieces:
            found.update(cached_identifiers(piece))
            found.update(proper_names(piece))
        candidates = frozenset(found)
    match = _STAMP_RE.match(text) if text.startswith("[") else None
    return candidates, None if match is None else _stamp_tokens(match.group(1))


@functools.lru_cache(maxsize=256)  # lines of one session often share their stamp
def _stamp_tokens(stamp: str) -> tuple[str, ...]:
    return (*cached_identifiers(stamp), *proper_names(stamp))


@functools.lru_cache(maxsize=64)
def folded_frame(frame: frozenset[str]) -> frozenset[str]:
    """The ``frame`` tokens case-folded, as the content words are (cached)."""
    # one frame serves every sentence of a batch
    return frozenset(t.casefold() for t in frame)
