"""The compressor protocol, the one compression runner and the message helpers every compressor shares.

The section helpers (parse, fuse, render and bound an overview) live in
:mod:`~ogmem_memory.compress.sections` and are re-exported here.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from ogmem_memory.compress.sections import _NEAR_CANDIDATES as _NEAR_CANDIDATES
from ogmem_memory.compress.sections import SECTION_WEIGHTS as SECTION_WEIGHTS
from ogmem_memory.compress.sections import SECTIONS as SECTIONS
from ogmem_memory.compress.sections import Sections as Sections
from ogmem_memory.compress.sections import _KeyIndex as _KeyIndex
from ogmem_memory.compress.sections import bound_sections as bound_sections
from ogmem_memory.compress.sections import bullet_key as bullet_key
from ogmem_memory.compress.sections import compact_overview as compact_overview
from ogmem_memory.compress.sections import is_near_duplicate as is_near_duplicate
from ogmem_memory.compress.sections import merge_sections as merge_sections
from ogmem_memory.compress.sections import parse_sections as parse_sections
from ogmem_memory.compress.sections import render_sections as render_sections
from ogmem_memory.errors import CompressionError, ConfigError

ABSTRACT_MAX_CHARS: Final = 100
EMPTY_ABSTRACT: Final = "Empty session"
Batch = Sequence[Mapping[str, Any]]  # the messages a compressor is given


class Compressor(Protocol):
    """Turns a batch of messages (plus the previous archive) into ``(overview, abstract)``."""

    def compress(
        self, messages: Batch, prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]: ...


@runtime_checkable
class StrictCompressor(Protocol):
    """A compressor with a fallback of its own and a path without it (``LLMCompressor``).

    :func:`run_compression` runs ``compress_strict`` and, on failure, this ``fallback``: the
    fallback the user configured on the compressor stays the one used.
    """

    fallback: Compressor

    def compress_strict(
        self, messages: Batch, prev_overview: str = "", prev_abstract: str = ""
    ) -> tuple[str, str]: ...


def unchanged_archive(prev_overview: str, prev_abstract: str) -> tuple[str, str]:
    """What a compressor returns for no new messages: the previous archive, or the empty one."""
    if prev_overview.strip():
        return prev_overview, one_line(prev_abstract)[:ABSTRACT_MAX_CHARS] or EMPTY_ABSTRACT
    return "", EMPTY_ABSTRACT


class BatchCompressor:
    """Base of the built-in compressors: ``compress`` answers a batch without messages with
    :meth:`nothing_new` and any other with :meth:`compress_batch`, which subclasses define."""

    def compress(self, messages: Batch, prev_overview: str = "", prev_abstract: str = "") -> tuple[str, str]:
        """Compress ``messages`` with the previous archive into ``(overview, abstract)``.

        With no new messages: what :meth:`nothing_new` says (by default the previous archive
        unchanged, ``("", "Empty session")`` when there is none).
        """
        if not messages:
            return self.nothing_new(prev_overview, prev_abstract)
        return self.compress_batch(messages, prev_overview, prev_abstract)

    def nothing_new(self, prev_overview: str, prev_abstract: str) -> tuple[str, str]:
        """The answer to a batch without messages: the previous archive, unchanged."""
        return unchanged_archive(prev_overview, prev_abstract)

    def compress_batch(self, messages: Batch, prev_overview: str, prev_abstract: str) -> tuple[str, str]:
        """Compress a batch of at least one message with the previous archive."""
        raise NotImplementedError


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


# The former name of run_compression, kept for existing callers: the same function.
compress_with_fallback: Final = run_compression


def message_role(message: object) -> str:
    """Return the role of a message dict, ``""`` when missing or not a string."""
    role = message.get("role") if type(message) is dict or isinstance(message, Mapping) else None
    return role if isinstance(role, str) else ""


def message_text(message: object) -> str:
    """Return the text of a message dict (or bare string); content blocks are joined, else ``""``."""
    content = message.get("content") if type(message) is dict or isinstance(message, Mapping) else message
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
