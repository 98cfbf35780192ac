"""Text helpers shared by the planner, the ranking and the rule-based extractor.

Word sets and a crude stemmer (how statements are compared), the date expressions a statement
may carry, and how a message's id and time are read.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from ogmem_memory.models import parse_iso


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``, as a set (for word lists written as prose)."""
    return frozenset(text.split())


TOKEN_RE: Final = re.compile(r"[^\W_]+", re.UNICODE)
# Words that carry no fact: function words, the subject ("User") and intensifiers.
SIG_STOP: Final = word_set(
    "a an the and or but of to in on at for with by from as is are was were be been being am "
    "it its this that these those so very really absolutely totally just also still now currently "
    "user users their they them theirs themselves s t do does did has have had much lot quite "
    "kind sort bit pretty actually definitely genuinely honestly truly personally"
)


def stem(word: str) -> str:
    """A crude, deterministic stem: enough that "live", "lives" and "lived" compare equal."""
    if word.isdigit():
        return word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


# Dates a statement may carry: absolute ones are kept verbatim, relative ones get the day said.
_MONTHS: Final = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAYS: Final = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
# Both start with a lookahead on the first characters their matches can have: a search skips
# the other positions, and finds the same matches.
ABSOLUTE_TIME_RE: Final = re.compile(
    rf"""(?=[oisbjfmand\d])(?:\b(?:on|in|since|by)\s+(?:the\s+)?)?(?:
        \b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\b\.?(?:,?\s+\d{{4}}\b)?
      | \b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?
      | \b\d{{4}}-\d{{2}}-\d{{2}}\b
      | \b\d{{1,2}}/\d{{1,2}}/\d{{2,4}}\b
      | (?<=in\s)(?:{_MONTHS}\s+)?(?:19|20)\d{{2}}\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
RELATIVE_TIME_RE: Final = re.compile(
    rf"""(?=[ytrelaofsn\d])\b(?:yesterday|today|tonight|recently|the\s+other\s+day|earlier\s+today
      | last\s+(?:week|weekend|month|year|night|summer|winter|spring|fall|autumn|{_DAYS})
      | this\s+(?:morning|afternoon|evening|week|weekend|month|year|summer|winter|spring|fall|autumn)
      | (?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|a\s+few|a\s+couple\s+of|\d+)\s+
        (?:days?|weeks?|months?|years?)\s+ago
      | on\s+{_DAYS})\b""",
    re.IGNORECASE | re.VERBOSE,
)


def message_id(message: Mapping[str, Any]) -> str:
    """The message's ``id``, or ``""`` when it has none."""
    value = message.get("id")
    return value if isinstance(value, str) and value else ""


def message_time(message: Mapping[str, Any]) -> datetime | None:
    """The message's ``created_at`` (a datetime or an ISO string), or ``None``."""
    value = message.get("created_at")
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return parse_iso(value)
    return None
