"""The compressor protocol, the one compression runner and the section helpers every compressor shares.

An overview is Markdown made of ``## Heading`` blocks of ``- bullet`` lines. Fusing two overviews
and bounding one are pure functions here, so the extractive compressor, the LLM compressor and the
archive merger treat sections the same way.
"""

from __future__ import annotations

import bisect
import contextvars
import functools
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from ogmem_memory.errors import CompressionError, ConfigError
from ogmem_memory.tokens import TokenCounter, truncate_to_tokens

SECTIONS: Final[tuple[str, ...]] = ("Topics", "Facts", "Decisions", "Open loops")
ABSTRACT_MAX_CHARS: Final = 100
EMPTY_ABSTRACT: Final = "Empty session"

# Bigger weight = the section keeps a bigger share of the budget when bullets must go.
SECTION_WEIGHTS: Final[Mapping[str, float]] = {
    "facts": 6.0,
    "decisions": 3.0,
    "open loops": 2.0,
    "topics": 1.0,
}

Sections = dict[str, list[str]]


class Compressor(Protocol):
    """Turns a batch of messages (plus the previous archive) into ``(overview, abstract)``."""

    def compress(
        self,
        messages: Sequence[Mapping[str, Any]],
        prev_overview: str = "",
        prev_abstract: str = "",
    ) -> tuple[str, str]: ...


@runtime_checkable
class StrictCompressor(Protocol):
    """A compressor with a fallback of its own and a path without it (``LLMCompressor``).

    :func:`run_compression` runs ``compress_strict`` and, on failure, this ``fallback``: the
    fallback the user configured on the compressor stays the one used.
    """

    fallback: Compressor

    def compress_strict(
        self,
        messages: Sequence[Mapping[str, Any]],
        prev_overview: str = "",
        prev_abstract: str = "",
    ) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class CompressionOutcome:
    """What a compression produced and how; the manager stores it in the archive metadata."""

    overview: str
    abstract: str
    compressor: str
    fallback_used: bool = False
    error: str | None = None


logger = logging.getLogger("ogmem.compress")

MIN_OUTPUT_CHAR_LIMIT: Final = 64 * 1024
OUTPUT_EXPANSION_LIMIT: Final = 4
_ERROR_MAX_CHARS: Final = 500
# PostgreSQL TEXT cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8 by any driver.
_UNSTORABLE_RE: Final = re.compile("[\x00\ud800-\udfff]")


def output_char_limit(messages: Sequence[Mapping[str, Any]], prev_overview: str = "") -> int:
    """The most characters an overview or abstract may have for this input before it is absurd.

    ``max(64 KiB, 4 x the input characters)``: a summary several times longer than what it
    summarises is a runaway model, not a summary.
    """
    chars = sum(len(message_text(m)) for m in messages) + len(prev_overview)
    return max(MIN_OUTPUT_CHAR_LIMIT, OUTPUT_EXPANSION_LIMIT * chars)


def validate_output(result: object, *, max_chars: int) -> tuple[str, str]:
    """Check a compressor's return value and return it as ``(overview, abstract)``.

    Pure: no I/O. Emptiness is not checked here (it depends on the input, see
    :func:`run_compression`).

    Raises:
        CompressionError: Not a tuple of two ``str``; a NUL character or a lone surrogate (no
            store can keep them); more than ``max_chars`` characters in either part.
    """
    if not isinstance(result, tuple) or len(result) != 2:
        shape = f"a {len(result)}-tuple" if isinstance(result, tuple) else type(result).__name__
        raise CompressionError(f"returned {shape}, expected (overview, abstract)")
    texts = []
    for label, value in zip(("overview", "abstract"), result, strict=True):
        if not isinstance(value, str):
            raise CompressionError(f"returned a {type(value).__name__} {label}, expected str")
        bad = _UNSTORABLE_RE.search(value)
        if bad is not None:
            char = bad.group()
            what = "a NUL character" if char == "\x00" else f"a lone surrogate U+{ord(char):04X}"
            raise CompressionError(f"returned an {label} with {what} at index {bad.start()}")
        if len(value) > max_chars:
            raise CompressionError(f"returned an {label} of {len(value)} characters (limit {max_chars})")
        texts.append(str(value))  # a str subclass could carry behaviour into the store
    return texts[0], texts[1]


def _describe(exc: BaseException) -> str:
    """One storable line for the archive metadata: bounded, no NUL, no lone surrogate."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the failure it describes
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return _UNSTORABLE_RE.sub("\ufffd", text)[:_ERROR_MAX_CHARS]


def _normal_timeout(timeout: float | None) -> float | None:
    if timeout is None or timeout == 0 or timeout == math.inf:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise ConfigError(f"timeout must be None, 0 or a positive number of seconds, got {timeout!r}")
    return float(timeout)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How a call of the primary ended: a result, an exception, or ``error`` (timed out, refused)."""

    result: object = None
    exc: BaseException | None = None
    error: str | None = None


# Lock rank: a leaf. Held only to update the counters below, never while calling anything.
_abandoned_lock = threading.Lock()
_abandoned_running = 0
MAX_ABANDONED_CALLS: Final = 16


def abandoned_calls() -> int:
    """Timed-out primary calls whose daemon threads are still running (hung) in this process."""
    with _abandoned_lock:
        return _abandoned_running


def _call(call: Callable[[], object], timeout: float | None, thread_name: str) -> _Attempt:
    """Run ``call``, in a daemon thread abandoned after ``timeout`` seconds when there is one.

    KeyboardInterrupt propagates; every other exception, SystemExit and GeneratorExit included,
    is returned: a compressor must never stop the worker thread that commits. While
    ``MAX_ABANDONED_CALLS`` earlier calls are still hung no new thread is started: a model that
    never answers must not cost a thread per commit.
    """
    global _abandoned_running
    if timeout is None:
        try:
            return _Attempt(result=call())
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # any failure of the primary means fallback
            return _Attempt(exc=exc)
    with _abandoned_lock:
        if _abandoned_running >= MAX_ABANDONED_CALLS:
            return _Attempt(error=f"not called: {_abandoned_running} earlier calls still hung")
    box: list[_Attempt] = []
    state = {"done": False, "abandoned": False}

    def target() -> None:
        global _abandoned_running
        try:
            box.append(_Attempt(result=call()))
        except BaseException as exc:  # handed to the waiting caller
            box.append(_Attempt(exc=exc))
        finally:
            with _abandoned_lock:
                state["done"] = True
                if state["abandoned"]:
                    _abandoned_running -= 1

    # A daemon thread: an abandoned, hung compressor must not keep the interpreter alive. The
    # caller's context (tracing, callbacks of LLM frameworks) goes with the call.
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(target,), name=thread_name, daemon=True)
    worker.start()
    worker.join(timeout)
    with _abandoned_lock:
        if not state["done"]:
            state["abandoned"] = True
            _abandoned_running += 1
            return _Attempt(error=f"timed out after {timeout:g}s")  # its late result is never read
    attempt = box[0]
    if isinstance(attempt.exc, KeyboardInterrupt):
        raise attempt.exc
    return attempt


def run_compression(
    primary: Compressor,
    fallback: Compressor,
    messages: Sequence[Mapping[str, Any]],
    prev_overview: str = "",
    prev_abstract: str = "",
    *,
    timeout: float | None = None,
    session_id: str = "",
    primary_name: str | None = None,
) -> CompressionOutcome:
    """Compress with ``primary``; on any failure compress with ``fallback`` and record why.

    The primary fails when it raises anything but KeyboardInterrupt (SystemExit included), when
    it does not return within ``timeout``, when its result is not a pair of storable ``str``
    within :func:`output_char_limit` (see :func:`validate_output`), or when its overview is empty
    although there was something to compress (no messages and no previous overview legitimately
    give ``("", "Empty session")``). Each failure is logged as a WARNING on ``ogmem.compress``
    naming the session. The fallback runs inline, without a timeout: it is meant to be the
    deterministic extractive compressor.

    A primary that is a :class:`StrictCompressor` (``LLMCompressor``) runs its
    ``compress_strict`` path and falls back to its own ``fallback``, not to ``fallback``. A
    primary that is ``fallback`` itself runs inline whatever ``timeout`` says.

    Args:
        primary: The preferred compressor (an LLM, or the extractive one itself).
        fallback: The deterministic compressor used when ``primary`` fails.
        messages: Message dicts (``role``, ``content``, ...); malformed ones are tolerated.
        prev_overview: Overview of the previous archive, fused into the new one.
        prev_abstract: Abstract of the previous archive.
        timeout: Seconds the primary may take; ``None`` or ``0`` for no limit. With a limit the
            primary runs in a daemon thread that is abandoned when it overruns (see
            :func:`abandoned_calls`; past ``MAX_ABANDONED_CALLS`` hung ones the primary is not
            called and the fallback runs at once).
        session_id: Named in the log records.
        primary_name: Name recorded in the outcome; defaults to the class name of ``primary``.

    Returns:
        The outcome, with ``fallback_used`` and ``error`` set when the fallback ran.

    Raises:
        ConfigError: ``timeout`` is negative or not a number.
        CompressionError: The fallback failed too, or returned invalid output; chained from the
            fallback's error, its message names the primary's.
    """
    limit = _normal_timeout(timeout)
    if primary is fallback:
        limit = None  # abandoning it would only run the same compressor again, inline
    name = primary_name or type(primary).__name__
    if isinstance(primary, StrictCompressor):
        fallback = primary.fallback
        strict = primary.compress_strict
    else:
        strict = primary.compress
    max_chars = output_char_limit(messages, prev_overview)
    has_input = bool(messages) or bool(prev_overview.strip())

    attempt = _call(
        lambda: strict(messages, prev_overview, prev_abstract), limit, f"ogmem-compress:{session_id}"[:64]
    )
    cause = attempt.exc
    if attempt.error is not None:
        error = f"{name} {attempt.error}"
    elif cause is not None:
        error = _describe(cause)
    else:
        try:
            overview, abstract = validate_output(attempt.result, max_chars=max_chars)
        except CompressionError as exc:
            error, cause = f"{name} {exc}", exc
        else:
            if overview.strip() or not has_input:
                return CompressionOutcome(overview, abstract, name)
            error = f"{name} returned an empty overview"

    fallback_name = type(fallback).__name__
    logger.warning("compression of session %r failed, using %s instead: %s", session_id, fallback_name, error)
    if cause is not None:
        logger.debug("compressor failure in session %r", session_id, exc_info=cause)
    try:
        produced = fallback.compress(messages, prev_overview, prev_abstract)
        overview, abstract = validate_output(produced, max_chars=max_chars)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the fallback failing fails the commit, cleanly
        raise CompressionError(
            f"fallback compressor {fallback_name} failed ({_describe(exc)}) after: {error}"
        ) from exc
    return CompressionOutcome(overview, abstract, fallback_name, fallback_used=True, error=error)


def compress_with_fallback(
    primary: Compressor,
    fallback: Compressor,
    messages: Sequence[Mapping[str, Any]],
    prev_overview: str = "",
    prev_abstract: str = "",
    *,
    primary_name: str | None = None,
    timeout: float | None = None,
    session_id: str = "",
) -> CompressionOutcome:
    """The former name of :func:`run_compression`, kept for existing callers; same behaviour."""
    return run_compression(
        primary,
        fallback,
        messages,
        prev_overview,
        prev_abstract,
        timeout=timeout,
        session_id=session_id,
        primary_name=primary_name,
    )


def message_role(message: object) -> str:
    """Return the role of a message dict, ``""`` when missing or not a string."""
    role = message.get("role") if isinstance(message, Mapping) else None
    return role if isinstance(role, str) else ""


def message_text(message: object) -> str:
    """Return the text of a message dict (or bare string); content blocks are joined, else ``""``."""
    content = message.get("content") if isinstance(message, Mapping) else message
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return " ".join(parts)
    return ""


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) into single spaces."""
    return " ".join(text.split())


def fallback_abstract(messages: Sequence[Mapping[str, Any]], prev_abstract: str = "") -> str:
    """The seed's no-LLM abstract: one line of at most 100 characters."""
    texts = [(message_role(m), one_line(message_text(m))) for m in messages]
    first_user = next((t for r, t in texts if r == "user" and t), "")
    last_assistant = next((t for r, t in reversed(texts) if r == "assistant" and t), "")
    if first_user and last_assistant:
        new = f"{first_user[:50]}... → {last_assistant[:30]}"
    elif first_user:
        new = f"{first_user[:97]}..."
    else:
        new = f"Session with {len(messages)} messages"
    prev = one_line(prev_abstract)
    if prev:
        new = f"{prev[:45]} | {new[:52]}"
    return new[:ABSTRACT_MAX_CHARS].rstrip()


_HEADING_RE: Final = re.compile(r"^#{2,3}\s+(.+?)\s*#*\s*$")
_BULLET_RE: Final = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_KEY_STRIP_RE: Final = re.compile(r"[\s\W_]+")
# ASCII bytes: letters and digits kept, anything else a space (bytes.translate is a table lookup)
_ASCII_NON_ALNUM: Final = bytes(c if c < 128 and chr(c).isalnum() else 32 for c in range(256))


def parse_sections(text: str) -> Sections | None:
    """Parse ``## Heading`` blocks into ``{heading: [bullet, ...]}``; ``None`` when not sectioned.

    Lines before the first heading are kept under the ``""`` key; ``- None`` placeholders are dropped.
    """
    lines = text.splitlines()
    if not any(_HEADING_RE.match(line.strip()) for line in lines):
        return None
    sections: Sections = {}
    current = ""
    for raw in lines:
        line = raw.strip()
        heading = _HEADING_RE.match(line)
        if heading:
            current = heading.group(1).strip()
            sections.setdefault(current, [])
            continue
        item = _BULLET_RE.sub("", line, count=1).strip()
        if item and item.casefold() not in {"none", "none.", "n/a"}:
            sections.setdefault(current, []).append(item)
    return sections


@functools.lru_cache(maxsize=8192)
def bullet_key(text: str) -> str:
    """Comparison key for duplicate detection: case, spacing and punctuation ignored.

    Cached: a running overview's bullets are keyed again by every commit that fuses it. ASCII
    text takes a translate-and-split path that gives what the pattern gives (runs of anything
    but letters and digits become one space, none at the ends).
    """
    if text.isascii():
        return " ".join(text.lower().encode("ascii").translate(_ASCII_NON_ALNUM).decode("ascii").split())
    return _KEY_STRIP_RE.sub(" ", text.casefold()).strip()


def is_near_duplicate(key: str, keys: Sequence[str]) -> bool:
    """True when ``key`` equals an existing key or one contains the other almost entirely."""
    for other in keys:
        if key == other:
            return True
        short, long_ = (key, other) if len(key) <= len(other) else (other, key)
        if short and len(short) >= 0.8 * len(long_) and short in long_:
            return True
    return False


_NEAR_CANDIDATES: Final = 48


class _KeyIndex:
    """Keys seen so far, indexed by length: a near duplicate is within 0.8x-1.25x of the length."""

    def __init__(self) -> None:
        self._exact: set[str] = set()
        # sorted by (length, key); the keys alone in the same order, for C-level scans
        self._by_length: list[tuple[int, str]] = []
        self._keys: list[str] = []

    def add_if_new(self, key: str) -> bool:
        if not key or key in self._exact:
            return False
        n = len(key)
        by_length = self._by_length
        lo = bisect.bisect_left(by_length, (math.ceil(0.8 * n), ""))
        hi = bisect.bisect_right(by_length, (math.floor(n / 0.8), "\uffff"))
        # Keys nearest in length first, at most _NEAR_CANDIDATES of them: bounds the cost of a
        # long overview while still catching a bullet re-stated with a few words changed.
        if hi - lo > _NEAR_CANDIDATES:
            middle = bisect.bisect_left(by_length, (n, ""), lo, hi) - lo
            start = lo + max(0, min(middle - _NEAR_CANDIDATES // 2, hi - lo - _NEAR_CANDIDATES))
            lo, hi = start, start + _NEAR_CANDIDATES
        # is_near_duplicate(key, window) inlined: an equal length is an exact match (the set
        # above); a shorter key is >= ceil(0.8 * n) long, a longer one has its bound checked.
        if lo < hi:
            split = bisect.bisect_left(by_length, (n, ""), lo, hi)
            if split > lo and any(map(key.__contains__, self._keys[lo:split])):
                return False
            longer = bisect.bisect_right(by_length, (n, "\uffff"), split, hi)
            for m, other in by_length[longer:hi]:
                if n >= 0.8 * m and key in other:
                    return False
        return self._insert(n, key)

    def add_unchecked(self, key: str) -> bool:
        """Index ``key`` without the near-duplicate check; False only for an exact repeat."""
        if not key or key in self._exact:
            return False
        return self._insert(len(key), key)

    def _insert(self, n: int, key: str) -> bool:
        self._exact.add(key)
        at = bisect.bisect_right(self._by_length, (n, key))
        self._by_length.insert(at, (n, key))
        self._keys.insert(at, key)
        return True


def merge_sections(parts: Sequence[Sections], *, distinct_first: bool = False) -> Sections:
    """Union of sectioned overviews: headings in first-appearance order, bullets appended, duplicates dropped.

    Headings match case-insensitively; the first spelling wins. ``distinct_first`` says the first
    part has no near duplicates (a previous overview a fusion wrote): only exact repeats are then
    looked for among its bullets, the later parts' bullets being checked against it as usual.
    """
    merged: Sections = {}
    canonical: dict[str, str] = {}
    keys: dict[str, _KeyIndex] = {}
    for position, sections in enumerate(parts):
        for heading, bullets in sections.items():
            name = canonical.setdefault(heading.casefold(), heading)
            target = merged.setdefault(name, [])
            seen = keys.setdefault(name, _KeyIndex())
            add = seen.add_unchecked if distinct_first and position == 0 else seen.add_if_new
            for bullet in bullets:
                if add(bullet_key(bullet)):
                    target.append(bullet)
    return merged


def render_sections(sections: Sections, order: Sequence[str] = SECTIONS) -> str:
    """Render sections as Markdown: ``order`` first (always present), then any other heading."""
    by_fold = {h.casefold(): h for h in sections}
    headings = [by_fold.get(h.casefold(), h) for h in order]
    headings += [h for h in sections if h.casefold() not in {o.casefold() for o in order}]
    blocks = []
    for heading in headings:
        bullets = sections.get(heading) or []
        body = "\n".join(f"- {b}" for b in bullets) if bullets else "- None"
        blocks.append(f"## {heading or 'Notes'}\n{body}")
    return "\n\n".join(blocks)


def compact_overview(text: str) -> str:
    """``text`` without its empty sections (``- None`` placeholders); unsectioned text as it is.

    Where overviews are shown side by side (a digest of several sessions) the placeholders
    would spend budget on nothing.
    """
    sections = parse_sections(text)
    if sections is None:
        return text
    kept = {h: b for h, b in sections.items() if b}
    return render_sections(kept, tuple(h for h in SECTIONS if h in kept)) if kept else ""


def _drop_order(bullets: Sequence[str], keep_first: int) -> list[int]:
    """The order in which a full section gives up its bullets (never the newest one).

    First those not said by the user, oldest first; then user bullets after the first
    ``keep_first`` of them; the anchored opening ones last.
    """
    candidates = range(len(bullets) - 1)
    user = [i for i in candidates if bullets[i].casefold().startswith("user:")]
    anchored = (user or list(candidates))[:keep_first]
    protected = set(anchored) | set(user)
    return [i for i in candidates if i not in protected] + [i for i in user if i not in anchored] + anchored


def bound_sections(
    sections: Sections,
    max_tokens: int,
    counter: TokenCounter,
    order: Sequence[str] = SECTIONS,
    *,
    keep_first: int = 3,
) -> tuple[str, int]:
    """Render ``sections`` within ``max_tokens`` by dropping the oldest bullets first.

    The section that uses most of the budget relative to its weight (facts weigh most) loses a
    bullet next: the oldest of those not said by the user, then the oldest user bullet after the
    first ``keep_first`` ones. So what the user stated outlives assistant and tool echoes, and
    the opening facts of a conversation (who the user is, what they want) stay in the running
    summary however long it grows. Each section keeps at least its newest bullet. If that is still too long,
    the text is cut at a word as a last resort.

    Returns:
        The rendered overview and the number of bullets dropped.
    """
    work = {h: list(b) for h, b in sections.items()}
    sizes = {h: [counter.count(f"- {b}\n") for b in bullets] for h, bullets in work.items()}
    position = {h: i for i, h in enumerate(work)}
    skeleton = render_sections({h: [] for h in work}, order)
    frame = counter.count(skeleton.replace("\n- None", ""))
    queue = {h: deque(_drop_order(bullets, keep_first)) for h, bullets in work.items()}
    removed: dict[str, set[int]] = {h: set() for h in work}
    totals = {h: sum(v) for h, v in sizes.items()}
    weight = {h: SECTION_WEIGHTS.get(h.casefold(), 1.0) for h in work}

    def drop_one() -> bool:
        candidates = [h for h in work if queue[h]]
        if not candidates:
            return False
        victim = max(candidates, key=lambda h: (totals[h] / weight[h], -position[h]))
        index = queue[victim].popleft()
        removed[victim].add(index)
        totals[victim] -= sizes[victim][index]
        return True

    def render() -> str:
        kept = {h: [b for i, b in enumerate(bullets) if i not in removed[h]] for h, bullets in work.items()}
        return render_sections(kept, order)

    # Summed per-bullet counts overestimate the whole by about a token a bullet (rounding), so
    # while even the sum minus that slack is over budget, drop without rendering: this keeps
    # bounding a long overview linear instead of quadratic.
    dropped = 0
    bullets_left = sum(map(len, work.values()))
    while frame + sum(totals.values()) - (bullets_left - dropped) > max_tokens and drop_one():
        dropped += 1
    text = render()
    while counter.count(text) > max_tokens and drop_one():
        dropped += 1
        text = render()
    if counter.count(text) > max_tokens:
        text = truncate_to_tokens(text, max_tokens, counter)
    return text, dropped
