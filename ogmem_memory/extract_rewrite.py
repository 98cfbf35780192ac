"""Rewriting for the rule-based extractor: a first-person clause as a sentence about "User".

Also the reverse direction for confirmations: an assistant's question or proposal about "you"
as the user would state it, so that a "yes" can be matched like a statement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from ogmem_memory.compress.base import one_line
from ogmem_memory.extract_text import ABSOLUTE_TIME_RE, RELATIVE_TIME_RE, word_set

_MONTH_NAMES: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MAX_RULE_CONTENT_CHARS: Final = 300


def _rules(*rules: tuple[str, str], flags: int = re.IGNORECASE) -> tuple[tuple[re.Pattern[str], str], ...]:
    """A table of (pattern, replacement) pairs, the patterns compiled with ``flags``."""
    return tuple((re.compile(pattern, flags), repl) for pattern, repl in rules)


def _substitute_all(text: str, rules: Sequence[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return text


# Present-tense verbs the third-person rewrite conjugates ("I live" -> "User lives").
_PRESENT_VERBS: Final = word_set(
    """live reside work like love adore enjoy prefer hate dislike detest loathe despise study teach own
    use speak play need want drink eat run cook read watch write code travel know have do go"""
)
_ADVERB_WORDS: Final = word_set(
    """really absolutely totally also just still now currently actually definitely genuinely honestly
    truly kinda already recently finally mostly usually generally even personally originally"""
)
_REMAINDER_PRONOUNS: Final = _rules(
    (r"\band\s+i\b", "and the user"),
    (r"\bi'm\b|\bi\s+am\b", "they are"),
    (r"\bi\s+was\b", "they were"),
    (r"\bi've\b", "they have"),
    (r"\bi'll\b", "they will"),
    (r"\bi'd\b", "they would"),
    (r"\bi\b", "they"),
    (r"\bmyself\b", "themselves"),
    (r"\bmine\b", "theirs"),
    (r"\bmy\b", "their"),
    (r"\bme\b", "them"),
)


def _conjugate(verb: str) -> str:
    low = verb.casefold()
    irregular = {"have": "has", "do": "does", "go": "goes"}
    if low in irregular:
        return irregular[low]
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 2 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def third_person(text: str) -> str:
    """Rewrite a first-person clause about the user into a sentence about "User"."""
    text = text.strip()
    subject = re.match(
        r"^(?:(?P<am>i'm|i\s+am|im)|(?P<have>i've|i\s+have)|(?P<will>i'll|i\s+will)|(?P<was>i\s+was)"
        r"|(?P<i>i)|(?P<my>my))\b\s*",
        text,
        re.IGNORECASE,
    )
    if subject is None:
        head, rest = "", text
    else:
        rest = text[subject.end() :]
        if subject.group("my"):
            head = "User's "
        elif subject.group("am"):
            head = "User is "
        elif subject.group("have"):
            head = "User has "
        elif subject.group("will"):
            head = "User will "
        elif subject.group("was"):
            head = "User was "
        else:
            head = "User "
            words = rest.split(" ")
            for j, word in enumerate(words):
                low = word.casefold()
                if low in ("don't", "dont"):
                    words[j] = "doesn't"
                elif low == "do" and j + 1 < len(words) and words[j + 1].casefold() == "not":
                    words[j] = "does"
                elif low in ("am", "'m"):
                    words[j] = "is"
                elif low in _PRESENT_VERBS:
                    words[j] = _conjugate(word)
                elif low in _ADVERB_WORDS:
                    continue
                break
            rest = " ".join(words)
    return head + _substitute_all(rest, _REMAINDER_PRONOUNS)


def _format_day(when: datetime) -> str:
    return f"{when.day} {_MONTH_NAMES[when.month - 1]} {when.year}"


def finish_statement(content: str, *, prefix: str, when: datetime | None) -> str:
    """A candidate's content: one bounded sentence, keeping a time said before the clause.

    A relative time ("last week") is anchored to ``when``, the day the message was written.
    """
    text = one_line(content).rstrip(" ,;:.!")
    time_before = ABSOLUTE_TIME_RE.search(prefix) or RELATIVE_TIME_RE.search(prefix)
    if time_before is not None and time_before.group(0).casefold() not in text.casefold():
        text = f"{text} {time_before.group(0)[0].lower()}{time_before.group(0)[1:]}"
    if len(text) > _MAX_RULE_CONTENT_CHARS:
        text = text[:_MAX_RULE_CONTENT_CHARS].rsplit(" ", 1)[0].rstrip(" ,;:")
    if when is not None and RELATIVE_TIME_RE.search(text):
        # "last week" means nothing a month later: anchor it to the day it was said.
        text += f" (said on {_format_day(when)})"
    return (text[:1].upper() + text[1:] + ".") if text else ""


_ASSISTANT_SELF: Final = _rules(
    (r"\bI'm\b|\bI am\b", "Assistant is"),
    (r"\bI've\b", "Assistant has"),
    (r"\bI'll\b", "Assistant will"),
    (r"\bI'd\b", "Assistant would"),
    (r"\bI\b", "Assistant"),
    (r"\b[Mm]y\b", "Assistant's"),
    (r"\b[Mm]e\b", "Assistant"),
    flags=0,
)
_SECOND_PERSON: Final = _rules(
    (r"\byou're\b|\byou\s+are\b", "I'm"),
    (r"\byou've\b", "I've"),
    (r"\byourself\b", "myself"),
    (r"\byours\b", "mine"),
    (r"\byour\b", "my"),
    (r"\byou\b", "I"),
)
_PROPOSALS: Final = _rules(
    (r"^(?:how|what)\s+about\s+(?:we\s+)?(.+)$", r"let's \1"),
    (r"^(?:shall|should)\s+we\s+(.+)$", r"let's \1"),
    (r"^I\s+(?:suggest|recommend|propose)\s+(?:that\s+)?we\s+(.+)$", r"let's \1"),
)
_QUESTIONS: Final = _rules(
    (r"^(?:is|was)\s+your\s+(\w+(?:'s\s+name)?)\s+(.+)$", r"my \1 is \2"),
    (r"^do\s+you\s+(.+)$", r"I \1"),
    (r"^are\s+you\s+(.+)$", r"I am \1"),
    (r"^have\s+you\s+(.+)$", r"I have \1"),
)
_CONFIRM_LEAD_RE: Final = re.compile(
    r"^(?:so|just\s+to\s+confirm|to\s+confirm|if\s+i\s+understand\s+correctly|got\s+it|ok|okay|great|"
    r"alright|and)\s*,?\s+",
    re.IGNORECASE,
)
_CONFIRM_TAIL_RE: Final = re.compile(
    r"\s*,?\s*(?:right|correct|is\s+that\s+right|is\s+that\s+correct|yes|no)?\s*[?.!]*$", re.IGNORECASE
)


def _first_substitution(text: str, rules: Sequence[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in rules:
        if pattern.match(text):
            return pattern.sub(repl, text, count=1)
    return text


def as_user_statement(sentence: str) -> str:
    """An assistant's sentence about "you" (or a proposal) as the user would state it."""
    text = _CONFIRM_TAIL_RE.sub("", _CONFIRM_LEAD_RE.sub("", sentence.strip()))
    text = _first_substitution(text, _PROPOSALS)
    # The assistant's own "I" must not become the user's: mark it before "you" becomes "I".
    text = _substitute_all(text, _ASSISTANT_SELF)
    text = _first_substitution(text, _QUESTIONS)
    return _substitute_all(text, _SECOND_PERSON)
