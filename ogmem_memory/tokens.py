"""Token counting: a one-method protocol and a dependency-free default estimator."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a piece of text."""

    def count(self, text: str) -> int: ...


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _is_cjk(code: int) -> bool:
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


def estimate_tokens(text: str) -> int:
    """Estimate tokens without a tokenizer: CJK-aware, deterministic, 0 for "".

    Latin text is about four characters a token; a CJK character is about 1.5
    tokens and a character outside the BMP (emoji) about two, which is what BPE
    tokenizers of current chat models produce on average.
    """
    if not text:
        return 0
    if text.isascii():  # fast path: the common case costs one C-level scan
        return math.ceil(len(text) * 0.25)
    # Only the non-ASCII characters need a look: find them with one C-level scan.
    special = _NON_ASCII.findall(text)
    weight = (len(text) - len(special)) * 0.25
    for ch in special:
        code = ord(ch)
        if code > 0xFFFF:
            weight += 2.0
        elif _is_cjk(code):
            weight += 1.5
        else:
            weight += 0.25
    return math.ceil(weight)


def legacy_estimate_tokens(text: str) -> int:
    """The seed's estimate, ``max(1, len(text) // 4)``, kept as a compatibility switch."""
    return max(1, len(text) // 4)


class EstimatingTokenCounter:
    """The default counter: :func:`estimate_tokens`."""

    def count(self, text: str) -> int:
        return estimate_tokens(text)


class LegacyTokenCounter:
    """The seed's ``len // 4`` counter (an empty message counts 1)."""

    def count(self, text: str) -> int:
        return legacy_estimate_tokens(text)


class CallableTokenCounter:
    """Adapts ``fn(text) -> int`` or ``fn(text) -> list`` (a tokenizer) to :class:`TokenCounter`."""

    def __init__(self, fn: Callable[[str], object]) -> None:
        self._fn = fn

    def count(self, text: str) -> int:
        result = self._fn(text)
        if isinstance(result, int):
            return result
        return len(result)  # type: ignore[arg-type]


def as_token_counter(counter: TokenCounter | Callable[[str], object] | None) -> TokenCounter:
    """Return ``counter`` as a :class:`TokenCounter` (``None`` means the estimator)."""
    if counter is None:
        return EstimatingTokenCounter()
    if isinstance(counter, TokenCounter):
        return counter
    if callable(counter):
        return CallableTokenCounter(counter)
    raise TypeError(f"token_counter must have count(text) or be callable, got {type(counter).__name__}")


def truncate_to_tokens(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """Return the longest prefix of ``text`` (cut at a word when possible) within ``max_tokens``."""
    if max_tokens <= 0:
        return ""
    if counter.count(text) <= max_tokens:
        return text
    cut = word_prefix(text, max_tokens, counter, suffix=" …")
    return (cut.rstrip() + " …") if cut else ""


def word_prefix(text: str, budget: int, counter: TokenCounter, *, suffix: str = "", at_least: int = 0) -> str:
    """The longest prefix of ``text`` that with ``suffix`` fits ``budget`` tokens, cut at a word.

    The prefix is at least ``at_least`` characters even when that many do not fit; it is cut
    back to its last space when that space lies in its second half.
    """
    lo, hi = at_least, len(text)
    while lo < hi:  # binary search: O(log n) counts, whatever the text length
        mid = (lo + hi + 1) // 2
        if counter.count(text[:mid] + suffix) <= budget:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    space = cut.rfind(" ")
    if space > lo // 2:
        cut = cut[:space]
    return cut
