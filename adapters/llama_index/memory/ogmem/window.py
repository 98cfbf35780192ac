"""The window ``ChatMemoryBuffer.get()`` keeps, reproduced with fewer exact counts.

The stock class counts the joined text of each candidate suffix of the history, longest first;
``stock_start`` finds the same start while counting exactly only near the budget's boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

# Joining texts with a space saved at most one token per boundary with tiktoken (20,000
# adversarial joins measured); a tokenizer that adds one special token per call saves one
# more. A candidate window whose per-message sum exceeds the room by more than this margin
# is skipped uncounted; every other candidate is counted exactly, as the stock class does.
_JOIN_SAVING: Final = 2
_JOIN_SLACK: Final = 4


def stock_candidates(unsafe: Sequence[bool]) -> list[int]:
    """Window starts in the order ``ChatMemoryBuffer.get()`` tries them.

    The whole window first (whatever its first role), then each later start that is not
    an assistant or tool message, then the newest message alone.
    """
    n = len(unsafe)
    if n == 0:
        return []
    return [0, *(i for i in range(1, n - 1) if not unsafe[i]), *([n - 1] if n > 1 else [])]


def stock_start(
    unsafe: Sequence[bool],
    counts: Sequence[int],
    *,
    lead: int | None,
    room: int,
    joined: Callable[[int], int],
) -> int | None:
    """Start of the suffix ``ChatMemoryBuffer.get()`` keeps; ``None``: not even the newest fits.

    The stock class counts the joined text of each candidate suffix, longest first, and
    keeps the first within ``room``. Here a candidate whose per-message counts exceed
    ``room`` by more than joining can save is skipped uncounted, so ``joined`` (the exact
    count of the preamble and messages from a start) runs only near the boundary.

    Args:
        unsafe: Per message, whether it is an assistant or tool message.
        counts: Per message, its own token count.
        lead: Token count of the leading preamble, ``None`` when there is none.
        room: Tokens available.
        joined: Exact count of the joined text returned from a start.
    """
    n = len(counts)
    suffix = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix[i] = suffix[i + 1] + counts[i]
    head, extra = (0, 0) if lead is None else (lead, 1)
    for start in stock_candidates(unsafe):
        boundaries = n - start + extra - 1
        if head + suffix[start] - _JOIN_SAVING * boundaries - _JOIN_SLACK > room:
            continue
        if joined(start) <= room:
            return start
    return None
