"""What one batch of messages says: its topics, facts, decisions and open loops, and its abstract.

A sentence is a fact when it carries identifiers, names, a personal detail or rare words;
facts are ranked by that salience, echoes left out. Tokens that frame every line (a date or
a speaker's name on each one) count for nothing.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import operator
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from ogmem_memory.compress.base import (
    ABSTRACT_MAX_CHARS,
    Sections,
    bullet_key,
    fallback_abstract,
    message_role,
    message_text,
    one_line,
)
from ogmem_memory.compress.extractive_text import (
    CALENDAR_WORDS,
    DATE_ASCII_RE,
    DATE_RE,
    NAME_PUNCT,
    NOT_NAMES,
    STOPWORDS,
    ascii_twin,
    cached_content_words,
    cached_identifiers,
    cached_sentences,
    folded_frame,
    joined_words,
    may_be_personal,
    may_decide,
    may_loop,
    proper_names,
    trim_sentence,
)
from ogmem_memory.compress.extractive_text import frame_tokens as frame_tokens
from ogmem_memory.gil import gil_breaks


def _keyword_re(alternatives: str, then: str = "", flags: int = re.IGNORECASE) -> re.Pattern[str]:
    """``\\b(?:alternatives)then\\b``, behind a lookahead on the letters the alternatives start with.

    The lookahead gives the same matches, but the scan skips every position no alternative can
    start at (these patterns run on every sentence of a commit).
    """
    first, depth = {alternatives[0]}, 0
    for at, char in enumerate(alternatives):
        depth += (char == "(") - (char == ")")
        if char == "|" and depth == 0:
            first.add(alternatives[at + 1])
    return re.compile(rf"(?=[{''.join(sorted(first))}])\b(?:{alternatives}){then}\b", flags)


# Firm commitments. A bare "let's" is often a suggestion to talk ("Let's revisit the slides"), so
# it counts only when no conversational verb follows it.
_DECISION_RE: Final = _keyword_re(
    "decided|decide to|we'll go with|we will go with|agreed|agree to|will use|chose|choose to|going with|"
    "go with|settled on|opted|the plan is|let's|let us"
)
_TALK_RE: Final = _keyword_re(
    "let's|let us",
    r"\s+(?:revisit|discuss|talk|chat|go over|go through|look|think|see|review|recap|consider|continue|"
    r"move on|focus|start|begin|catch up|get back|come back|return)",
)
# Work still to do. "Remind me what we said" asks for a recap, "remind me to" is a to-do.
_LOOP_RE: Final = _keyword_re(
    "todo|to-do|need to|needs to|have to|remind me to|follow up|follow-up|don't forget|do not forget|"
    "pending|tbd"
)
# What people are asked about later: tastes, allergies, where they live and work, who is whom.
_PERSONAL_RE: Final = _keyword_re(
    "love|loves|loved|like to|likes|prefer|prefers|preferred|favou?rite|enjoy|enjoys|enjoyed|hate|"
    "hates|allergic|vegan|vegetarian|live in|lives in|moved to|work at|works at|work as|works as|born|"
    "married|my (?:wife|husband|partner|son|daughter|sister|brother|mother|mom|father|dad|friend|name)"
)
_FIRST_PERSON_RE: Final = _keyword_re("I|I'm|I've|I'd|I'll|my|we|we're|we've|our", flags=0)
# the same patterns for ASCII text (most text): same matches, faster
_DECISION_ASCII_RE: Final = ascii_twin(_DECISION_RE)
_TALK_ASCII_RE: Final = ascii_twin(_TALK_RE)
_LOOP_ASCII_RE: Final = ascii_twin(_LOOP_RE)
_PERSONAL_ASCII_RE: Final = ascii_twin(_PERSONAL_RE)
_FIRST_PERSON_ASCII_RE: Final = ascii_twin(_FIRST_PERSON_RE)


# Words of small talk and of the conversation itself: neither a fact nor a topic.
_CHAT_WORD_TEXT: Final = """
    able absolutely advice again ago agree amazing anyway appreciate appreciated ask asked awesome
    back bad best better bit bye call can cheers chat cool congrats congratulations course cute day
    days definitely doing done enough especially ever everyone everything exactly excited feel
    feeling feels felt fine fun funny give glad gonna happy hear heard help helps hope hopefully
    idea keep kind kinda last later least let little long look looking looks lots love lovely luck
    mean means meet mind moment much nice night note noted once pretty question quick ready remember
    remind said saying sense share shared shall soon sorry sound sounds start stuff super take talk
    talking tell thinking thought time times today told tomorrow totally try trying revisit wait
    wanna wanted week weeks welcome whether whole wish wonder wonderful work worry wow year years
    yep yesterday
"""
_CHAT_WORDS: Final = frozenset(_CHAT_WORD_TEXT.split())
# What is neither a fact's informative word nor a topic: small talk and calendar words.
_PLAIN_WORDS: Final = _CHAT_WORDS | CALENDAR_WORDS
_MAX_DECISIONS: Final = 12
_MAX_LOOPS: Final = 12
_NEW_TOPICS: Final = 6
# What opens a line of a transcript: a stamp, a speaker's name and a colon ("[1:56 pm] Ada: ").
_LABEL_RE: Final = re.compile(r"(?:\[[^\]\n]{1,80}\]\s*)?[A-Z][\w'.-]{0,30}:\s+")


class _Sentence(NamedTuple):  # a tuple: built for every sentence of a batch, cheaply
    number: int  # its place in the batch
    role: str
    text: str
    message: int

    @property
    def bullet(self) -> str:
        return f"{self.role or 'unknown'}: {trim_sentence(self.text)}"


class _Features(NamedTuple):
    """What makes a sentence worth keeping: hard tokens, names, informative words, cues."""

    identifiers: tuple[str, ...]
    names: tuple[str, ...]
    words: tuple[str, ...]
    personal: bool
    first_person: bool

    @property
    def info(self) -> int:
        return len(self.identifiers) + len(self.names) + len(self.words)


def _sentences(pairs: Sequence[tuple[str, str]]) -> list[_Sentence]:
    out: list[_Sentence] = []
    for position, (role, message) in enumerate(pairs):
        for text in cached_sentences(message):
            out.append(_Sentence(len(out), role, text, position))
    return out


def features_of(text: str, frame: frozenset[str]) -> _Features:
    """The identifiers, names and informative words of ``text``, less the ``frame`` tokens."""
    unframed = _text_features(text)
    if not frame:
        return unframed
    return _framed(unframed, frame, folded_frame(frame))


def _framed(unframed: _Features, frame: frozenset[str], folded: frozenset[str]) -> _Features:
    """``unframed`` less the ``frame`` tokens (``folded`` is its :func:`folded_frame`)."""
    identifiers, names, words = unframed.identifiers, unframed.names, unframed.words
    # The words already leave out every name of the text, so what the frame adds to the words'
    # skip list is its own tokens, case-folded. Only what meets the frame is filtered.
    plain_ids = frame.isdisjoint(identifiers)
    plain_names = frame.isdisjoint(names)
    plain_words = folded.isdisjoint(words)
    if plain_ids and plain_names and plain_words:
        return unframed
    return _Features(
        identifiers if plain_ids else tuple(i for i in identifiers if i not in frame),
        names if plain_names else tuple(n for n in names if n not in frame),
        words if plain_words else tuple(w for w in words if w not in folded),
        unframed.personal,
        unframed.first_person,
    )


@functools.lru_cache(maxsize=8192)
def _text_features(text: str) -> _Features:
    # what depends on the text alone, once per sentence: a commit scores the overview's facts
    # again, and the frame only ever removes tokens (dropping them keeps the first-seen order)
    # a tuple of fewer than two items is distinct already (most sentences): no dict to build
    identifiers = cached_identifiers(text)
    if len(identifiers) > 1:
        identifiers = tuple(dict.fromkeys(identifiers))
    names = proper_names(text)
    if len(names) > 1:
        names = tuple(dict.fromkeys(names))
    kept = itertools.filterfalse(_PLAIN_WORDS.__contains__, cached_content_words(text))
    if names:
        kept = itertools.filterfalse({n.casefold() for n in names}.__contains__, kept)
    words = tuple(dict.fromkeys(kept))
    ascii = text.isascii()
    return _Features(
        identifiers,
        names,
        words,
        may_be_personal(text.casefold())
        and bool((_PERSONAL_ASCII_RE if ascii else _PERSONAL_RE).search(text)),
        bool((_FIRST_PERSON_ASCII_RE if ascii else _FIRST_PERSON_RE).search(text)),
    )


def _is_question(text: str) -> bool:
    return text.rstrip("\"'\u201d\u2019)").endswith("?")


def _is_fact(features: _Features, rarity: float) -> bool:
    """A statement that tells something: hard tokens or names among other words, a personal
    detail, or a run of words rare in the conversation. Small talk is no fact, and neither is a
    question (the caller leaves those out: only statements are scored)."""
    if features.identifiers or features.names:
        return features.info >= 3 or (features.personal and features.info >= 2)
    return (features.personal and len(features.words) >= 1) or (len(features.words) >= 4 and rarity >= 4.0)


def rarity_of(features: _Features, idf: Mapping[str, float]) -> float:
    """The summed rarity of a sentence's eight rarest words, on a scale where one identifier is 3."""
    return sum(sorted(map(idf.get, features.words, itertools.repeat(0.0)), reverse=True)[:8]) / 4


def _idf(df: Mapping[str, int], total: int) -> dict[str, float]:
    """``math.log(total / n)`` of each word counted ``n`` times: one logarithm per distinct count."""
    logs = {n: math.log(total / n) for n in set(df.values())}
    return dict(zip(df.keys(), map(logs.__getitem__, df.values()), strict=True))


def salience(features: _Features, rarity: float) -> float:
    """How much a sentence carries that people ask about later; higher is kept first."""
    return (
        3 * len(features.identifiers)
        + 2 * len(features.names)
        + rarity
        + 1.5 * features.personal
        + 0.5 * features.first_person
    )


def fact_scores(texts: Sequence[str], sizes: Sequence[int]) -> list[float]:
    """:func:`per_token` :func:`salience` of each of ``texts`` (``sizes`` tokens each), rarity
    and frame taken over ``texts``: what ``features_of``, ``idf_weights`` and ``rarity_of``
    give, without building the features of every text (a fusion scores its overview each time)."""
    frame = frame_tokens(texts)
    if frame:
        # a row the frame does not meet is the text's unframed row, cached by the text alone
        meets = _frame_and_folded(frame)
        rows = [
            row if meets.isdisjoint(tokens) else _score_row(text, frame)
            for text in gil_breaks(texts)
            for row, tokens in (_plain_row(text),)
        ]
    else:
        rows = [_plain_row(text)[0] for text in gil_breaks(texts)]
    df = Counter(itertools.chain.from_iterable(map(_ROW_WORDS, rows)))  # a text's words are distinct
    total = len(texts) + 1
    counts = sorted(set(df.values()))
    logs = {n: math.log(total / n) for n in counts}  # what _idf gives each word counted n times
    weights, last = _SIZE_WEIGHTS, len(_SIZE_WEIGHTS) - 1
    scores = []
    if all(logs[a] >= logs[b] for a, b in itertools.pairwise(counts)):
        # the rarest words are then the least counted ones: their weights, fewest counts first,
        # are the eight largest idf in descending order (rarity_of's), without an idf per word
        df_of, log_of = df.__getitem__, logs.__getitem__
        for (hard, p, fp, words), size in gil_breaks(zip(rows, sizes, strict=True)):
            rarity = sum(map(log_of, sorted(map(df_of, words))[:8]))
            # summed in salience's order and divided as per_token does: the same floats
            scores.append((hard + rarity / 4 + 1.5 * p + 0.5 * fp) / weights[size if size < last else last])
        return scores
    idf = _idf(df, total)  # never seen: a logarithm out of order
    for (hard, p, fp, words), size in zip(rows, sizes, strict=True):
        rarity = sum(sorted(map(idf.__getitem__, words), reverse=True)[:8])
        scores.append((hard + rarity / 4 + 1.5 * p + 0.5 * fp) / weights[size if size < last else last])
    return scores


_Row = tuple[int, bool, bool, tuple[str, ...]]
_ROW_WORDS: Final = operator.itemgetter(3)


@functools.lru_cache(maxsize=8192)  # the next fusion scores the same facts again
def _plain_row(text: str) -> tuple[_Row, frozenset[str]]:
    """:func:`_score_row` of ``text`` in no frame, and every token a frame could remove from it."""
    f = _text_features(text)
    row = (3 * len(f.identifiers) + 2 * len(f.names), f.personal, f.first_person, f.words)
    return row, frozenset(itertools.chain(f.identifiers, f.names, f.words))


@functools.lru_cache(maxsize=64)
def _frame_and_folded(frame: frozenset[str]) -> frozenset[str]:
    # _score_row removes the identifiers and names in the frame and the words in its folded
    # form: a text none of whose tokens is in this union keeps its plain row
    return frame | folded_frame(frame)


@functools.lru_cache(maxsize=8192)  # the next fusion scores the same facts, mostly in the same frame
def _score_row(text: str, frame: frozenset[str]) -> _Row:
    """What :func:`fact_scores` needs of one text: its hard-token score, cues and unframed words."""
    f = _text_features(text)
    ids, names, words = f.identifiers, f.names, f.words
    if frame and not frame.isdisjoint(ids):
        ids = tuple(i for i in ids if i not in frame)
    if frame and not frame.isdisjoint(names):
        names = tuple(n for n in names if n not in frame)
    if frame and not folded_frame(frame).isdisjoint(words):
        words = tuple(w for w in words if w not in folded_frame(frame))
    return 3 * len(ids) + 2 * len(names), f.personal, f.first_person, words


def per_token(score: float, tokens: int) -> float:
    """``score`` per token of a bullet, on a scale that favours the short: ``score / tokens ** 0.7``.

    A fixed-size overview holds more of what people ask about when it keeps dense facts, yet a
    long fact is often worth its size: the exponent below 1 (tuned on LoCoMo) weighs both. Below
    16 tokens size makes no difference, so among short facts of equal salience the older goes first.
    """
    return score / _SIZE_WEIGHTS[min(tokens, len(_SIZE_WEIGHTS) - 1)]


_SIZE_WEIGHTS: Final[tuple[float, ...]] = tuple(float(max(n, 16)) ** 0.7 for n in range(512))


def idf_weights(word_sets: Sequence[Iterable[str]]) -> dict[str, float]:
    """Inverse document frequency of each word over ``word_sets`` (one set per sentence)."""
    df: Counter[str] = Counter(w for ws in word_sets for w in set(ws))
    return _idf(df, len(word_sets) + 1)


def _is_new(features: _Features, covered: set[str]) -> bool:
    """False for an echo: every hard token and name already kept, and few new words."""
    hard = set(features.identifiers) | set(features.names)
    if not hard or not hard <= covered:
        return True
    fresh = [w for w in features.words if w not in covered]
    return len(fresh) > max(1, len(features.words) // 3)


def _last_assistant(pairs: Sequence[tuple[str, str]]) -> int:
    return max((i for i, (role, _) in enumerate(pairs) if role == "assistant"), default=-1)


def _substantive(text: str, frame: frozenset[str]) -> bool:
    """A statement with something to act on: not a question, and a name, a hard token or two
    informative words ("Agreed!", "Let's do it!" and "Don't forget to smile" are small talk).

    A speaker's label ("[1:56 pm] Ada: Agreed!") is left out: the word after it opens the statement.
    """
    if _is_question(text):
        return False
    label = _LABEL_RE.match(text)
    features = features_of(text[label.end() :] if label else text, frame)
    return bool(features.identifiers or features.names) or len(features.words) >= 2


def _is_decision(text: str, low: str | None = None) -> bool:
    if not may_decide(text.casefold() if low is None else low):
        return False
    decision, talk = (_DECISION_ASCII_RE, _TALK_ASCII_RE) if text.isascii() else (_DECISION_RE, _TALK_RE)
    return bool(decision.search(text)) and not (talk.search(text) and not _firm(text, decision))


def _firm(text: str, decision: re.Pattern[str] = _DECISION_RE) -> bool:
    """A decision word other than a bare "let's"/"let us" (those may only propose a talk)."""
    return any(m.group(0).casefold() not in {"let's", "let us"} for m in decision.finditer(text))


def batch_topics(
    messages: Sequence[Mapping[str, Any]], k: int = _NEW_TOPICS, *, frame: frozenset[str] | None = None
) -> list[str]:
    """What a batch was about: its most mentioned content words and names, the user's counted twice.

    Small talk, the conversation's own verbs ("remind", "said"), calendar words and tokens that
    frame every line are left out; a name counts half again as much as a common word.
    """
    return _topics([(message_role(m), message_text(m)) for m in messages], k, frame)


def _topics(pairs: Sequence[tuple[str, str]], k: int, frame: frozenset[str] | None) -> list[str]:
    if frame is None:
        frame = frame_tokens([t for _, t in pairs])
    folded = folded_frame(frame)
    counts: dict[str, float] = {}
    spelled: dict[str, str] = {}
    for role, message in gil_breaks(pairs):
        user = role == "user"
        weight = 2.0 if user else 1.0
        mentions, names = _topic_words(message, user)
        if not folded.isdisjoint(mentions):
            for word in folded.intersection(mentions):
                del mentions[word]  # framing words are no topic (a fresh Counter per call)
        get = counts.get
        if not names:  # most messages: no name among the words, every weight plain
            for word, n in mentions.items():
                counts[word] = get(word, 0.0) + weight * n  # float(n) * weight: the same float
            continue
        for word, n in mentions.items():
            name = names.get(word)
            if name is None:
                counts[word] = get(word, 0.0) + weight * n
            else:
                counts[word] = get(word, 0.0) + weight * (n * 1.5)
                spelled.setdefault(word, name.strip("'\u2019-"))
    # nlargest is sorted(..., reverse=True)[:k]: stable, so a tie goes to the word seen first
    return [spelled.get(w, w) for w in heapq.nlargest(k, counts, key=counts.__getitem__)]


def _topic_words(message: str, user: bool) -> tuple[Counter[str], dict[str, str]]:
    """A message's topic candidates with their mentions, in first-seen order, and the names it
    says, by case-folded word (a name's mentions count 1.5)."""
    # a reply's own questions ("Shall we move on?") are its routine, not the subject
    sentences = cached_sentences(message)
    if not user:
        sentences = tuple(s for s in sentences if not s.endswith("?"))
    names = {n.strip("'\u2019-").casefold(): n for n in _said_names(sentences)}
    mentions = Counter(itertools.filterfalse(_PLAIN_WORDS.__contains__, joined_words(sentences)))
    # what brackets hold is about the message (a stamp, an attachment), not what it says
    for word in (w for s in sentences if "[" in s for w in _bracketed_words(s)):
        if mentions.get(word, 0) > 1:
            mentions[word] -= 1
        else:
            mentions.pop(word, None)
    return mentions, names


def extract_sections(messages: Sequence[Mapping[str, Any]], *, max_facts: int) -> Sections:
    """Topics, facts, decisions and open loops of one batch, each sentence in at most one section.

    Facts are the statements of every speaker that carry what people ask about later (names,
    places, dates, numbers, personal details), best first up to ``max_facts``, echoes of a fact
    already kept left out, then put back in conversation order. Questions are never facts: an
    unanswered user question is an open loop, an answered one is gone with its answer kept.
    """
    pairs = [(message_role(m), message_text(m)) for m in messages]
    sentences = _sentences(pairs)
    frame = frame_tokens([t for _, t in pairs])
    answered_until = _last_assistant(pairs)
    decisions: list[_Sentence] = []
    loops: list[_Sentence] = []
    rest: list[_Sentence] = []
    for s in sentences:
        spoken = s.role == "user" or s.role == "assistant"
        low = s.text.casefold() if spoken else ""
        if spoken and _is_decision(s.text, low) and _substantive(s.text, frame):
            decisions.append(s)
        elif (
            spoken
            and may_loop(low)
            and (_LOOP_ASCII_RE if s.text.isascii() else _LOOP_RE).search(s.text)
            and _substantive(s.text, frame)
        ) or (s.role == "user" and s.text.endswith("?") and s.message > answered_until):
            loops.append(s)
        else:
            rest.append(s)
    # questions are never facts: the rest's statements are what is scored and compared
    statements = [s for s in rest if not _is_question(s.text)]
    # features_of each, the frame's folded form looked up once
    if frame:
        folded = folded_frame(frame)
        features = {s.number: _framed(_text_features(s.text), frame, folded) for s in gil_breaks(statements)}
    else:
        features = {s.number: _text_features(s.text) for s in gil_breaks(statements)}
    # idf_weights, the words of each sentence being distinct already
    df = Counter(itertools.chain.from_iterable(f.words for f in features.values()))
    idf = _idf(df, len(statements) + 1)
    scores: dict[int, float] = {}
    for s in gil_breaks(statements):
        f = features[s.number]
        rarity = rarity_of(f, idf)
        if _is_fact(f, rarity):
            # len(s.bullet), without building it
            size = (len(s.role) if s.role else 7) + 2 + len(trim_sentence(s.text))
            scores[s.number] = per_token(salience(f, rarity), size // 4 + 2)
    ranked = sorted(scores, key=lambda i: (-scores[i], sentences[i].role != "user", i))
    chosen: list[_Sentence] = []
    covered: set[str] = set()
    seen: set[str] = set()
    for index in gil_breaks(ranked):
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
        "Topics": _topics(pairs, _NEW_TOPICS, frame),
        "Facts": [s.bullet for s in sorted(chosen, key=lambda s: s.number)],
        "Decisions": [s.bullet for s in decisions[-_MAX_DECISIONS:]],
        "Open loops": [s.bullet for s in loops[-_MAX_LOOPS:]],
    }


_BRACKETED_RE: Final = re.compile(r"\[([^\]\n]*)\]")


def _bracketed_words(sentence: str) -> list[str]:
    return [w for inside in _BRACKETED_RE.findall(sentence) for w in cached_content_words(inside)]


@functools.lru_cache(maxsize=2048)  # a message's topics and its abstract both ask
def _said_names(sentences: tuple[str, ...]) -> tuple[str, ...]:
    """The names of each sentence (never its first word, see :func:`proper_names`) less the word
    right after a speaker's label ("Ada: Wow, ..."), which opens what the label introduces."""
    names = [n for sentence in sentences for n in proper_names(sentence)]
    if not names:
        return ()
    for sentence in sentences:
        label = _LABEL_RE.match(sentence) if ":" in sentence else None
        if label is not None:
            opener = sentence[label.end() :].split(maxsplit=1)[:1]
            core = opener[0].strip(NAME_PUNCT) if opener else ""
            if core in names:
                names.remove(core)
    return tuple(names)


def _abstract_parts(text: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A message's distinct names and its sentences' capitalised openers (with the next word)."""
    sentences = cached_sentences(text)
    # the names in the order of the set the span counts them from: ties are ranked that way
    # first mention order, not set order: an abstract must not depend on the hash seed
    names = tuple(n.strip("'\u2019-") for n in _said_names(sentences))
    openers = []
    for sentence in sentences:
        words = sentence.split(None, 2)
        first = words[0].strip(NAME_PUNCT) if words else ""
        # the next word is stripped only for an opener (most sentences open with a small word)
        if first[:1].isupper() and first.casefold() not in STOPWORDS:
            openers.append((first, words[1].strip(NAME_PUNCT) if len(words) > 1 else ""))
    return names, tuple(openers)


def _date_in(text: str) -> bool:
    return bool((DATE_ASCII_RE if text.isascii() else DATE_RE).search(text))


def span_abstract(messages: Sequence[Mapping[str, Any]], topics: Sequence[str] = ()) -> str:
    """One line (at most 100 characters) saying what a span was about: who, what, when.

    The most mentioned names, then the topics, then the first date said in the span, e.g.
    ``"Ada, Grace: Lisbon, slides, hotel (14 May 2025)"``. Falls back to the seed's
    first-request abstract when the span names nothing.
    """
    texts = [message_text(m) for m in messages]
    names: Counter[str] = Counter()
    openers: list[tuple[str, str]] = []
    for text in gil_breaks(texts):
        said, opening = _abstract_parts(text)
        names.update(said)
        openers.extend(opening)
    # A sentence's first word is a name when the span uses it as one elsewhere, or when another
    # capitalised word follows it ("Grace Hopper and I ...").
    for word, following in openers:
        if word in names or (following[:1].isupper() and following not in NOT_NAMES):
            names[word] += 1
    # the speakers whose names frame the lines are who always talks: other names say more
    frame = frame_tokens(texts)
    ranked = [n for n, _ in sorted(names.items(), key=lambda p: -p[1]) if n]
    who = [n for n in ranked if n not in frame][:3] or ranked[:3]
    folded = {n.casefold() for n in who}
    what = [t for t in (topics or batch_topics(messages)) if t.casefold() not in folded][:5]
    # an identifier holding a date means a text holding one: most messages need no scan at all
    when = next((i for t in texts if _date_in(t) for i in cached_identifiers(t) if _date_in(i)), "")
    if not who and not what:
        return fallback_abstract(messages, "")
    head = ", ".join(who)
    line = f"{head}: {', '.join(what)}" if head and what else head or ", ".join(what)
    tail = f" ({when})" if when else ""
    while len(line) + len(tail) > ABSTRACT_MAX_CHARS and ", " in line:
        line = line.rsplit(", ", 1)[0]
    return one_line(line + tail)[:ABSTRACT_MAX_CHARS].rstrip()
