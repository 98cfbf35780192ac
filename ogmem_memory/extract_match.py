"""The statement patterns of the rule-based extractor: what a clause says about the user.

Each matcher recognises one kind of statement (name, profile, entity, preference, decision,
event) in a clause and returns its category, key, confidence and where the statement starts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ogmem_memory.extract_records import Category
from ogmem_memory.extract_text import ABSOLUTE_TIME_RE, RELATIVE_TIME_RE, SIG_STOP, TOKEN_RE, word_set

_ADV: Final = (
    r"(?:(?:really|absolutely|totally|also|just|still|now|currently|actually|definitely|genuinely|"
    r"honestly|truly|kinda|kind\s+of|sort\s+of|do|already|recently|finally|mostly|usually|generally|"
    r"even|personally|originally)\s+)*"
)
_I: Final = r"\bi\s+"
_IM: Final = r"\b(?:i'm|i\s+am|im)\s+"
_IVE: Final = r"\b(?:i've|i\s+have)\s+"
_NAME: Final = r"(?P<name>[^\W\d_][\w'-]*(?:\s+[^\W\d_][\w'-]*){0,2})"
_OBJ: Final = r"(?P<obj>\S.*)"

_NOT_NAMES: Final = word_set(
    """sorry fine good great ok okay not so just happy glad here back done ready sure also still very
    really going looking trying thinking tired busy new from in at on working living based currently now
    afraid excited interested curious confused lost home online free available alright all well a an the
    totally actually always never usually kind pretty quite feeling doing learning planning hoping
    married single retired pregnant sick ill bored hungry thirsty late early fan big huge"""
)
_DEMONYMS: Final = word_set(
    """american british english french german italian spanish portuguese brazilian canadian mexican
    indian chinese japanese korean dutch irish scottish welsh australian russian polish swedish
    norwegian danish finnish greek turkish swiss austrian belgian argentinian colombian chilean peruvian
    nigerian kenyan egyptian israeli iranian pakistani vietnamese thai filipino indonesian ukrainian
    czech hungarian romanian"""
)
_JOBS: Final = word_set(
    """nurse chef student doctor teacher engineer developer programmer lawyer artist writer designer
    manager scientist accountant consultant architect pilot firefighter dentist pharmacist therapist
    researcher professor lecturer photographer musician journalist editor analyst freelancer
    entrepreneur founder ceo cto cfo intern barista waiter waitress cook baker farmer mechanic
    electrician plumber carpenter vet veterinarian surgeon paramedic officer soldier librarian
    translator tutor coach trainer dancer singer actor actress model assistant economist physicist
    chemist biologist mathematician statistician psychologist psychiatrist counselor counsellor
    director producer secretary cashier clerk driver postdoc sysadmin administrator"""
)
_JOB_SUFFIXES: Final = ("ist", "eer", "ologist", "grapher", "ician", "er", "or")
_NOT_JOBS: Final = word_set(
    """beginner fan lover member user owner believer newcomer outsider foreigner customer loner dreamer
    winner loser other brother mother father sister daughter partner number order error smoker
    drinker reader runner swimmer speaker learner survivor supporter follower subscriber viewer
    listener donor visitor traveler traveller voter neighbor neighbour mentor gamer fighter bit
    little lot couple"""
)
_RELATIONS: Final = (
    r"(?:wife|husband|partner|boyfriend|girlfriend|fianc[eé]e?|son|daughter|kid|child|baby|sister|"
    r"brother|mother|mom|mum|father|dad|grandma|grandmother|grandpa|grandfather|aunt|uncle|cousin|niece|"
    r"nephew|friend|best\s+friend|boss|manager|colleague|coworker|roommate|flatmate|neighbou?r|dog|cat|"
    r"puppy|kitten|pet|bird|parrot|fish|hamster|rabbit|horse|turtle|tortoise|snake)"
)
_PLACE_NOT: Final = word_set(
    "fear hope peace denial moment present past future bubble head dream dreams world reality hell misery "
    "poverty luxury it that this"
)
_OBJECT_PRONOUNS: Final = word_set(
    "it that this them him her you those these one everything something anything nothing all"
)
_NOT_PREFERENCES: Final = word_set(
    "idea suggestion answer response reply explanation question way approach plan help"
)
_HEAD_STOPS: Final = word_set(
    """for because since when while with in on at from over than as but and or so if during after of
    before about by more better very lot a an the is are was were which who that this last next ago
    yesterday today tonight recently"""
)
_VAGUE_WORDS: Final = _OBJECT_PRONOUNS | word_set("do so go make get")
_HEAD_SKIP: Final = word_set("to the a an my our some all any being")
_TALK: Final = (
    r"(?:revisit|discuss|talk|chat|go\s+over|go\s+through|look|think|see|review|recap|consider|continue|"
    r"move\s+on|focus|start|begin|catch\s+up|get\s+back|come\s+back|return|try|check|figure|say|hope)"
)
_STRONG_EVENT_VERBS: Final = word_set(
    "visited traveled travelled attended graduated married adopted won joined quit celebrated "
    "launched flew hosted organized organised published climbed retired"
)
_WEAK_EVENT_VERBS: Final = word_set(
    "went got had took saw watched read made did tried gave received played lost began started finished "
    "completed learned learnt ran left met bought sold built wrote broke injured passed failed signed"
)
_EVENT_RE: Final = re.compile(
    rf"\bi(?:'ve|\s+have)?\s+{_ADV}(?P<verb>got\s+(?:married|engaged|divorced|promoted)|been\s+to|"
    rf"{'|'.join(sorted(_STRONG_EVENT_VERBS | _WEAK_EVENT_VERBS))})\b(?P<obj>.*)",
    re.IGNORECASE,
)


def _head(obj: str, *, max_words: int = 3) -> str:
    """The subject of an object phrase: "to cook Italian food on weekends" -> "cook italian food"."""
    words: list[str] = []
    for raw in TOKEN_RE.findall(obj.casefold()):
        if not words and raw in _HEAD_SKIP:
            continue
        if raw in _HEAD_STOPS:
            break
        words.append(raw)
        if len(words) >= max_words:
            break
    return " ".join(words)


def _slug(text: str) -> str:
    # Plural and singular name one subject ("dogs" / "dog"); "ss"/"us"/"is" endings are not plurals.
    words = [
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")) else w
        for w in TOKEN_RE.findall(text.casefold())
    ]
    return "-".join(words[:4])


def _has_proper_noun(obj: str, clause: str) -> bool:
    # Someone typing all lower case gets the benefit of the doubt.
    if not any(ch.isupper() for ch in clause):
        return True
    return any(w[:1].isupper() for w in obj.split()[:6])


def _take_name(raw: str, *, first_may_be_lower: bool) -> str:
    names: list[str] = []
    for word in raw.split():
        word = word.strip("'-")
        if not word or word.casefold() in _NOT_NAMES or word.casefold() in SIG_STOP:
            break
        if not word[0].isupper() and not (first_may_be_lower and not names):
            break
        names.append(word[0].upper() + word[1:])
    return " ".join(names)


def _is_job(phrase: str) -> bool:
    head = _head(phrase)
    if not head:
        return False
    last = head.split()[-1]
    if last in _JOBS:
        return True
    return last not in _NOT_JOBS and last.endswith(_JOB_SUFFIXES) and len(last) > 4


@dataclass(frozen=True, slots=True)
class _Hit:
    category: Category
    key: str
    confidence: float
    start: int  # where the statement starts in the clause
    content: str | None = None  # a fixed sentence instead of the rewritten clause


_Matcher = Callable[[str], _Hit | None]


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# Where a statement about the user can start: "i" before an apostrophe or a space ("i'm", "i've",
# "i am", "i live"), "im " or "my ". Every pattern searched with _find begins with one of these,
# so trying it only at those positions (usually one or two per clause) finds exactly the match
# a search would, without scanning the clause once per pattern.
_SUBJECT_RE: Final = re.compile(r"\b(?=i['\s]|im\s|my\s)", re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def _subjects(clause: str) -> tuple[int, ...]:
    # every matcher of one clause asks: remember the last clauses
    return tuple(m.start() for m in _SUBJECT_RE.finditer(clause))


def _find(pattern: re.Pattern[str], clause: str) -> re.Match[str] | None:
    """``pattern.search(clause)`` for a pattern that starts with a subject (see _SUBJECT_RE)."""
    for start in _subjects(clause):
        if (m := pattern.match(clause, start)) is not None:
            return m
    return None


_CALL_ME_RE: Final = _compile(rf"\b(?:people\s+|you\s+can\s+)?call\s+me\s+{_NAME}")
_NAME_RES: Final = (
    (_compile(rf"\bmy\s+name(?:'s|\s+is)\s+{_NAME}"), True, 0.9),
    (_CALL_ME_RE, False, 0.8),
    (_compile(rf"{_IM}{_NAME}"), False, 0.75),
)
_AGE_RES: Final = (
    _compile(rf"{_IM}(?P<age>\d{{1,3}})\s+(?:years?|yrs?)\s+old\b"),
    _compile(rf"{_IM}(?P<age>\d{{1,3}})\s*(?:y/?o)?\s*[.!]*\s*$"),
    _compile(rf"{_I}{_ADV}turned\s+(?P<age>\d{{1,3}})\b"),
)
_BIRTHDAY_RE: Final = _compile(rf"\bmy\s+birthday\s+is\s+{_OBJ}")
_BORN_RE: Final = _compile(rf"\bi\s+was\s+born\s+(?:on|in)\s+{_OBJ}")
_HOMETOWN_RES: Final = (
    _compile(rf"{_IM}{_ADV}from\s+{_OBJ}"),
    _compile(rf"{_I}{_ADV}(?:come|hail)\s+from\s+{_OBJ}"),
    _compile(rf"{_I}{_ADV}grew\s+up\s+in\s+{_OBJ}"),
)
_LOCATION_RES: Final = (
    _compile(rf"{_I}{_ADV}(?:live|reside)\s+(?:in|at|near|on)\s+{_OBJ}"),
    _compile(rf"{_IM}{_ADV}(?:living|based|residing|located|settled)\s+(?:in|at|near|out\s+of)\s+{_OBJ}"),
    _compile(rf"\bi(?:'ve|\s+have)?\s+{_ADV}(?:moved|relocated)\s+(?:back\s+)?(?:to|into)\s+{_OBJ}"),
    _compile(rf"{_IVE}{_ADV}(?:been\s+)?(?:lived|living)\s+in\s+{_OBJ}"),
)
_EMPLOYER_RES: Final = (
    _compile(rf"{_I}{_ADV}work\s+(?:at|for)\s+{_OBJ}"),
    _compile(rf"{_IM}{_ADV}(?:working|employed)\s+(?:at|for|by)\s+{_OBJ}"),
)
_OCCUPATION_RES: Final = (
    _compile(rf"{_I}{_ADV}work\s+as\s+(?:an?\s+)?{_OBJ}"),
    _compile(rf"{_IM}{_ADV}working\s+as\s+(?:an?\s+)?{_OBJ}"),
    _compile(rf"\bmy\s+job\s+is\s+(?:being\s+)?(?:an?\s+)?{_OBJ}"),
)
_JOB_RE: Final = _compile(rf"{_IM}{_ADV}an?\s+{_OBJ}")
_DIET_RE: Final = _compile(
    rf"{_IM}{_ADV}(?:an?\s+)?(?:strict\s+)?(?:vegan|vegetarian|pescatarian|pescetarian)\b"
)
_NATIONALITY_RE: Final = _compile(rf"{_IM}{_ADV}(?P<nat>[^\W\d_]+)\s*[.!]*\s*$")
_STUDIES_RES: Final = (
    _compile(rf"{_I}{_ADV}study\s+{_OBJ}"),
    _compile(rf"{_IM}{_ADV}studying\s+{_OBJ}"),
    _compile(rf"{_IM}{_ADV}(?:an?\s+)?student\s+(?:at|of|in)\s+{_OBJ}"),
)
_LANGUAGE_RE: Final = _compile(rf"{_I}{_ADV}speak\s+(?:fluent\s+)?{_OBJ}")
_LEARNING_RE: Final = _compile(rf"{_IM}{_ADV}learning\s+(?:to\s+)?{_OBJ}")
_ENTITY_NAMED_RES: Final = (
    _compile(
        r"\bmy\s+(?P<rel>(?:[\w-]+\s+){0,2}?[\w-]+?)(?:'s\s+name\s+is|\s+is\s+(?:called|named)"
        rf"|\s+(?:was\s+)?(?:called|named))\s+{_NAME}"
    ),
    _compile(
        rf"{_I}{_ADV}(?:have|own|got)\s+(?:an?|one|two|three|\d+)\s+(?P<rel>[\w-]+(?:\s+[\w-]+)?)\s+"
        rf"(?:called|named)\s+{_NAME}"
    ),
)
_ENTITY_MENTION_RE: Final = re.compile(rf"\b(?i:my)\s+(?P<rel>(?i:{_RELATIONS}))\s+(?P<name>[A-Z][\w'-]+)")
_ENTITY_COUNT_RE: Final = _compile(
    rf"{_I}{_ADV}(?:have|own)\s+(?:an?|one|two|three|four|five|six|\d+)\s+(?P<rel>{_RELATIONS})(?:s|es|ren)?\b"
)
_PREFERENCE_RES: Final = (
    _compile(
        rf"{_I}{_ADV}(?P<verb>like|love|adore|enjoy|prefer|hate|dislike|detest|loathe|despise|"
        rf"can't\s+stand|cannot\s+stand|don't\s+(?:really\s+)?(?:like|enjoy|love)|do\s+not\s+(?:like|enjoy))\s+{_OBJ}"
    ),
    _compile(
        rf"{_IM}{_ADV}(?P<verb>fond\s+of|into|(?:not\s+)?a\s+(?:big\s+|huge\s+)?fan\s+of|"
        rf"allergic\s+to|obsessed\s+with|passionate\s+about)\s+{_OBJ}"
    ),
)
_FAVOURITE_RE: Final = _compile(
    r"\bmy\s+favou?rite\s+(?P<what>[\w-]+(?:\s+[\w-]+){0,2}?)\s+(?:is|are)\s+(?P<obj>\S.*)"
)
# A lookahead on the first letter lets a search skip the other positions (same matches).
_DECISION_RES: Final = (
    _compile(rf"(?=l)\b(?:let's|let\s+us)\s+(?!{_TALK}\b)(?P<act>\S.*)"),
    _compile(
        rf"(?=[wi])\b(?:we|i)(?:'ve|\s+have)?\s+{_ADV}(?:decided|agreed|settled|chose|opted|committed)\s+"
        r"(?:to\s+|on\s+|upon\s+|for\s+|that\s+(?:we'll\s+|we\s+will\s+|i'll\s+|i\s+will\s+)?)?(?P<act>\S.*)"
    ),
    _compile(
        r"(?=[wi])\b(?:we'll|we\s+will|i'll|i\s+will|we're|we\s+are|i'm|i\s+am)\s+(?P<act>(?:go|going|stick|sticking)"
        r"\s+with\s+\S.*)"
    ),
    _compile(r"(?=t)\bthe\s+plan\s+is\s+to\s+(?P<act>\S.*)"),
)
_DECISION_VERBS_RE: Final = re.compile(
    r"^(?:go(?:ing)?\s+with|stick(?:ing)?\s+with|use|using|pick|choose|adopt|switch\s+to|try)\s+",
    re.IGNORECASE,
)


def _folded(clause: str) -> str | None:
    """The clause in lower case when it is ASCII (see :func:`_may_contain`), else ``None``."""
    return clause.lower() if clause.isascii() else None


def _may_contain(folded: str | None, words: tuple[str, ...]) -> bool:
    """False only when an ASCII clause (``folded`` by :func:`_folded`) has none of ``words``.

    A cheap gate before a case-insensitive search that needs one of them: for ASCII text,
    ``str.lower`` folds exactly what ``re.IGNORECASE`` does (other scripts are always searched).
    """
    return folded is None or any(w in folded for w in words)


_CALL_WORDS: Final = ("call",)
# The words each of _DECISION_RES needs (in order): "let's"/"let us", a decision verb,
# "going/sticking with", "the plan is to".
_DECISION_WORDS: Final = (
    ("let",),
    ("decided", "agreed", "settled", "chose", "opted", "committed"),
    ("with",),
    ("plan",),
)


def _match_name(clause: str) -> _Hit | None:
    for pattern, explicit, confidence in _NAME_RES:
        if pattern is _CALL_ME_RE:
            m = pattern.search(clause) if _may_contain(_folded(clause), _CALL_WORDS) else None
        else:
            m = _find(pattern, clause)
        if m is None:
            continue
        name = _take_name(m.group("name"), first_may_be_lower=explicit)
        if not name or name.casefold() in _DEMONYMS or name.casefold() in _JOBS:
            continue
        return _Hit("profile", "user.name", confidence, m.start(), f"User's name is {name}.")
    return None


def _match_profile(clause: str) -> _Hit | None:
    if not _subjects(clause):
        return None  # every pattern below starts with a subject
    for pattern in _AGE_RES:
        if (m := _find(pattern, clause)) is not None and 0 < int(m.group("age")) <= 120:
            return _Hit("profile", "user.age", 0.85, m.start())
    if (m := _find(_BIRTHDAY_RE, clause)) is not None:
        return _Hit("profile", "user.birthday", 0.85, m.start())
    if (m := _find(_BORN_RE, clause)) is not None:
        date_like = ABSOLUTE_TIME_RE.match("in " + m.group("obj")) or m.group("obj")[:1].isdigit()
        return _Hit("profile", "user.birthday" if date_like else "user.hometown", 0.85, m.start())
    for pattern in _HOMETOWN_RES:
        if (m := _find(pattern, clause)) is not None and _has_proper_noun(m.group("obj"), clause):
            return _Hit("profile", "user.hometown", 0.85, m.start())
    for pattern in _LOCATION_RES:
        m = _find(pattern, clause)
        if m is None:
            continue
        head = _head(m.group("obj"))
        if head and head.split()[0] not in _PLACE_NOT and _has_proper_noun(m.group("obj"), clause):
            return _Hit("profile", "user.location", 0.9, m.start())
    for pattern in _EMPLOYER_RES:
        if (m := _find(pattern, clause)) is not None and _has_proper_noun(m.group("obj"), clause):
            return _Hit("profile", "user.employer", 0.85, m.start())
    for pattern in _STUDIES_RES:
        if (m := _find(pattern, clause)) is not None and _head(m.group("obj")):
            return _Hit("profile", "user.studies", 0.8, m.start())
    for pattern in _OCCUPATION_RES:
        if (m := _find(pattern, clause)) is not None and _head(m.group("obj")):
            return _Hit("profile", "user.occupation", 0.8, m.start())
    if (m := _find(_DIET_RE, clause)) is not None:
        return _Hit("profile", "user.diet", 0.85, m.start())
    if (m := _find(_JOB_RE, clause)) is not None and _is_job(m.group("obj")):
        return _Hit("profile", "user.occupation", 0.8, m.start())
    if (m := _find(_NATIONALITY_RE, clause)) is not None and m.group("nat").casefold() in _DEMONYMS:
        return _Hit("profile", "user.nationality", 0.8, m.start())
    if (m := _find(_LANGUAGE_RE, clause)) is not None and (head := _head(m.group("obj"), max_words=1)):
        return _Hit("profile", f"user.language:{_slug(head)}", 0.8, m.start())
    if (m := _find(_LEARNING_RE, clause)) is not None and (head := _head(m.group("obj"), max_words=2)):
        return _Hit("profile", f"user.learning:{_slug(head)}", 0.7, m.start())
    return None


def _match_entity(clause: str) -> _Hit | None:
    if not _subjects(clause):
        return None
    for pattern in _ENTITY_NAMED_RES:
        m = _find(pattern, clause)
        if m is None or m.group("rel").casefold() in ("name", "favourite", "favorite"):
            continue
        if _take_name(m.group("name"), first_may_be_lower=True):
            return _Hit("entities", f"entity:{_slug(m.group('rel'))}", 0.85, m.start())
    if (m := _find(_ENTITY_MENTION_RE, clause)) is not None and m.group("name").casefold() not in SIG_STOP:
        return _Hit("entities", f"entity:{_slug(m.group('rel'))}", 0.7, m.start())
    if (m := _find(_ENTITY_COUNT_RE, clause)) is not None:
        return _Hit("entities", f"entity:{_slug(m.group('rel'))}", 0.75, m.start())
    return None


def _match_preference(clause: str) -> _Hit | None:
    if not _subjects(clause):
        return None
    if (m := _find(_FAVOURITE_RE, clause)) is not None and _head(m.group("obj")):
        return _Hit("preferences", f"pref:favourite-{_slug(m.group('what'))}", 0.85, m.start())
    for pattern in _PREFERENCE_RES:
        m = _find(pattern, clause)
        if m is None:
            continue
        head = _head(m.group("obj"))
        if not head or head.split()[0] in _OBJECT_PRONOUNS or head.split()[-1] in _NOT_PREFERENCES:
            continue
        if m.group("obj").casefold().startswith(("your ", "you ")):
            continue
        allergy = "allerg" in m.group("verb").casefold()
        return _Hit("preferences", f"pref:{'allergy-' if allergy else ''}{_slug(head)}", 0.8, m.start())
    return None


def _match_decision(clause: str) -> _Hit | None:
    folded = _folded(clause)
    for pattern, words in zip(_DECISION_RES, _DECISION_WORDS, strict=True):
        m = pattern.search(clause) if _may_contain(folded, words) else None
        if m is None:
            continue
        act = m.group("act").strip().rstrip(".!")
        subject = _head(_DECISION_VERBS_RE.sub("", act))
        if not subject or all(w in _VAGUE_WORDS for w in subject.split()):
            continue  # "let's do it": agreement, not a decision one could remember
        return _Hit("decisions", f"decision:{_slug(subject)}", 0.7, m.start(), f"Decision: {act}.")
    return None


def _match_event(clause: str) -> _Hit | None:
    m = _find(_EVENT_RE, clause)
    if m is None:
        return None
    verb = " ".join(m.group("verb").casefold().split())
    timed = bool(ABSOLUTE_TIME_RE.search(clause) or RELATIVE_TIME_RE.search(clause))
    if verb in _WEAK_EVENT_VERBS and not timed:
        return None
    obj = m.group("obj")
    when = ABSOLUTE_TIME_RE.search(obj) or RELATIVE_TIME_RE.search(obj)
    head = _head(obj[: when.start()] if when is not None else obj)
    if head and head.split()[0] in _OBJECT_PRONOUNS:
        return None
    return _Hit("events", f"event:{_slug(verb + ' ' + head)}", 0.7 if timed else 0.6, m.start())


# In order of precedence: the first matcher that recognises a clause decides what it says.
MATCHERS: Final[tuple[_Matcher, ...]] = (
    _match_name,
    _match_profile,
    _match_entity,
    _match_preference,
    _match_decision,
    _match_event,
)

# What every matcher needs somewhere in a clause, as one pattern over a whole text: a subject
# where the _find patterns start (_SUBJECT_RE), else the start of a pattern searched anywhere
# (_CALL_ME_RE, the "we" and "let's" forms of _DECISION_RES, "the plan is to"), each with the
# whitespace the pattern requires after it. A clause is a substring of its text cut at spaces,
# commas or semicolons, so a text without a match has no clause any matcher recognises.
# The lookahead on the first letters lets the scan skip every other position (same matches).
_CUE: Final = (
    r"(?=[imclwt])(?:\b(?:i['\s]|im\s|my\s)|\bcall\s+me\s|\blet(?:'s|\s+us)\s"
    rf"|\bwe(?:'ve|\s+have)?\s+{_ADV}(?:decided|agreed|settled|chose|opted|committed)\s"
    r"|\bwe(?:'ll|\s+will|'re|\s+are)\s+(?:go|going|stick|sticking)\s+with\s|\bthe\s+plan\s+is\s+to\s)"
)
_CUE_RE: Final = _compile(_CUE)
_CUE_FOLDED_RE: Final = re.compile(_CUE)  # for ASCII text in lower case (see _may_contain)


def may_state(text: str) -> bool:
    """False only when no matcher can recognise any clause of ``text`` (one scan, no split)."""
    folded = _folded(text)
    return (_CUE_RE.search(text) if folded is None else _CUE_FOLDED_RE.search(folded)) is not None
