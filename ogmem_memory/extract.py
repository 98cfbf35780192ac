"""Long-term memory: facts about the user extracted from committed messages, and the write planning.

Everything here is pure (no store, no clock unless given, no framework import). The write path is::

    candidates = extractor.extract(messages, session_summary=summary)   # RuleBasedExtractor / LLMExtractor
    plans = plan_writes(candidates, existing)                            # create | merge | update | skip
    records, result = apply_plans(plans, existing, ctx, session_id=sid, now=now)
    # the store upserts ``records`` in one transaction; ``result`` is the seed's commit_session shape

Keys name what a memory is about, so a restated or changed fact finds its memory again:

- ``user.<attribute>`` (``user.name``, ``user.location``, ``user.employer``, ``user.occupation``,
  ``user.age``, ``user.birthday``, ``user.hometown``, ``user.diet``, ``user.language:<x>``, ...) and
  ``tool:<name>`` and ``pref:favourite-<x>`` are **single-valued**: a different content updates the
  memory and pushes the old content to its history.
- ``pref:<subject>``, ``entity:<relation>``, ``event:<slug>``, ``decision:<slug>`` are
  **multi-valued**: a different content is a new memory, except a near duplicate (merged) and a
  reversed stance on the same subject ("likes" -> "hates", updated).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal, Protocol, cast, get_args
from urllib.parse import quote

from ogmem_memory.compress.base import message_role, message_text, one_line
from ogmem_memory.compress.llm import call_llm
from ogmem_memory.errors import AccessDeniedError, ConfigError, InvalidInputError, OgmemError
from ogmem_memory.models import RequestContext, iso, parse_iso, utc_now
from ogmem_memory.recall import search_terms
from ogmem_memory.tokens import TokenCounter, as_token_counter
from ogmem_memory.usage import UsageTracker

logger = logging.getLogger("ogmem.extract")

Category = Literal["profile", "preferences", "entities", "events", "decisions", "tools"]
PlanAction = Literal["create", "merge", "update", "skip"]
CATEGORIES: Final[tuple[str, ...]] = get_args(Category)

MEMORY_URI_PREFIX: Final = "ogmem://memories/"
MAX_CONTENT_CHARS: Final = 1000
MAX_KEY_CHARS: Final = 120
# Bounds on what one memory accumulates over years of merges and updates.
MAX_HISTORY: Final = 10
MAX_SOURCES: Final = 50
# Token Jaccard at or above this is the same statement worded slightly differently.
NEAR_DUPLICATE_JACCARD: Final = 0.8
BELOW_THRESHOLD: Final = "below the confidence threshold"

_SINGLE_VALUED_PREFIXES: Final = ("user.", "tool:", "pref:favourite-", "pref:favorite-")


# ---------------------------------------------------------------------------------------------
# Values


def _check_text(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    text = one_line(value)
    if not text:
        raise InvalidInputError(f"{what} must not be empty")
    if len(text) > max_chars:
        raise InvalidInputError(f"{what} has {len(text)} characters, more than {max_chars}")
    return text


def _check_confidence(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"confidence must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"confidence must be in [0, 1], got {value}")
    return float(value)


def _check_category(value: object) -> None:
    if value not in CATEGORIES:
        raise InvalidInputError(f"category must be one of {', '.join(CATEGORIES)}, got {value!r}")


def _check_ids(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{what} must be a sequence of strings")
    ids = tuple(value)
    if not all(isinstance(i, str) and i for i in ids):
        raise InvalidInputError(f"{what} must hold non-empty strings")
    return ids


def _check_time(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInputError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value


def normalize_key(key: str) -> str:
    """The canonical form of a memory key: lower case, no spaces, only ``\\w . : -``.

    Raises:
        InvalidInputError: The key is not a string or has nothing left after normalisation.
    """
    if not isinstance(key, str):
        raise InvalidInputError(f"key must be a string, got {type(key).__name__}")
    text = re.sub(r"[^\w.:-]+", "-", key.strip().casefold())
    text = re.sub(r"-{2,}", "-", text).strip("-._:")[:MAX_KEY_CHARS].rstrip("-._:")
    if not text:
        raise InvalidInputError(f"key {key!r} is empty after normalisation")
    return text


def is_single_valued(key: str) -> bool:
    """True when a key holds one value at a time (a changed fact replaces the old one)."""
    return key.startswith(_SINGLE_VALUED_PREFIXES)


def new_memory_id() -> str:
    """``mem_`` + 12 lowercase hex digits."""
    return f"mem_{uuid.uuid4().hex[:12]}"


def memory_uri(account_id: str, user_id: str, memory_id: str) -> str:
    """``ogmem://memories/<account>/<user>/<memory_id>``, each part percent-encoded."""
    parts = (quote(p, safe="") for p in (account_id, user_id, memory_id))
    return MEMORY_URI_PREFIX + "/".join(parts)


@dataclass(frozen=True, slots=True)
class MemoryCandidate:
    """A memory an extractor proposes; :func:`plan_writes` decides what becomes of it.

    The key is normalised (:func:`normalize_key`) and the content collapsed to one line on
    construction.

    Raises:
        InvalidInputError: Unknown category, empty key or content, confidence outside [0, 1].
    """

    category: Category
    key: str
    content: str
    confidence: float
    source_message_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_category(self.category)
        object.__setattr__(self, "key", normalize_key(self.key))
        object.__setattr__(self, "content", _check_text(self.content, "content", MAX_CONTENT_CHARS))
        object.__setattr__(self, "confidence", _check_confidence(self.confidence))
        object.__setattr__(
            self, "source_message_ids", _check_ids(self.source_message_ids, "source_message_ids")
        )


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One stored long-term memory of a user, scoped to ``(account_id, user_id, agent_id)``.

    Attributes:
        history: Previous contents, oldest first (at most :data:`MAX_HISTORY`): a changed fact
            keeps what it said before.
        source_session_id: The session the current content came from.
        active: ``False`` once deleted (a store may keep the row); inactive memories are never
            merged into, ranked or rendered.
    """

    memory_id: str
    account_id: str
    user_id: str
    agent_id: str
    category: Category
    key: str
    content: str
    confidence: float
    source_session_id: str
    source_message_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    history: tuple[str, ...] = ()
    active: bool = True

    def __post_init__(self) -> None:
        for name in ("memory_id", "account_id", "user_id", "agent_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidInputError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.source_session_id, str):
            raise InvalidInputError("source_session_id must be a string")
        _check_category(self.category)
        object.__setattr__(self, "key", normalize_key(self.key))
        object.__setattr__(self, "content", _check_text(self.content, "content", MAX_CONTENT_CHARS))
        object.__setattr__(self, "confidence", _check_confidence(self.confidence))
        object.__setattr__(
            self, "source_message_ids", _check_ids(self.source_message_ids, "source_message_ids")
        )
        _check_time(self.created_at, "created_at")
        _check_time(self.updated_at, "updated_at")
        if isinstance(self.history, str) or not isinstance(self.history, Sequence):
            raise InvalidInputError("history must be a sequence of strings")
        object.__setattr__(
            self, "history", tuple(_check_text(h, "history entry", MAX_CONTENT_CHARS) for h in self.history)
        )
        if not isinstance(self.active, bool):
            raise InvalidInputError(f"active must be a bool, got {self.active!r}")

    @property
    def uri(self) -> str:
        """``ogmem://memories/<account>/<user>/<memory_id>``."""
        return memory_uri(self.account_id, self.user_id, self.memory_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (ISO-8601 times, lists), the inverse of :meth:`from_dict`."""
        return {
            "memory_id": self.memory_id,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "category": self.category,
            "key": self.key,
            "content": self.content,
            "confidence": self.confidence,
            "source_session_id": self.source_session_id,
            "source_message_ids": list(self.source_message_ids),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "history": list(self.history),
            "active": self.active,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryRecord:
        """Rebuild a record from :meth:`to_dict` output (times may be ISO strings or datetimes).

        Raises:
            InvalidInputError: A field is missing or invalid.
        """
        try:
            created, updated = data["created_at"], data["updated_at"]
            return cls(
                memory_id=data["memory_id"],
                account_id=data["account_id"],
                user_id=data["user_id"],
                agent_id=data["agent_id"],
                category=data["category"],
                key=data["key"],
                content=data["content"],
                confidence=data["confidence"],
                source_session_id=data.get("source_session_id", ""),
                source_message_ids=tuple(data.get("source_message_ids", ())),
                created_at=parse_iso(created) if isinstance(created, str) else created,
                updated_at=parse_iso(updated) if isinstance(updated, str) else updated,
                history=tuple(data.get("history", ())),
                active=data.get("active", True),
            )
        except KeyError as exc:
            raise InvalidInputError(f"memory record is missing {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, OgmemError):
                raise
            raise InvalidInputError(f"invalid memory record: {exc}") from exc


class MemoryExtractor(Protocol):
    """Turns committed messages into memory candidates."""

    def extract(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> list[MemoryCandidate]: ...


# ---------------------------------------------------------------------------------------------
# Text helpers shared by the extractor, the planner and the ranking


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TOKEN_RE: Final = re.compile(r"[^\W_]+", re.UNICODE)
_POSITIVE: Final = _words(
    "like likes liked love loves loved adore adores enjoy enjoys enjoyed prefer prefers preferred "
    "fond favourite favorite fan passionate obsessed"
)
_NEGATIVE: Final = _words(
    "hate hates hated dislike dislikes disliked detest detests loathe loathes despise despises allergic stand"
)
_NEGATION: Final = _words("not no never doesn don didn isn aren wasn cannot t")
# Words that carry no fact: function words, the subject ("User") and intensifiers.
_SIG_STOP: Final = _words(
    "a an the and or but of to in on at for with by from as is are was were be been being am "
    "it its this that these those so very really absolutely totally just also still now currently "
    "user users their they them theirs themselves s t do does did has have had much lot quite "
    "kind sort bit pretty actually definitely genuinely honestly truly personally"
)


def _stem(word: str) -> str:
    # Crude and deterministic: enough that "live", "lives" and "lived" compare equal.
    if word.isdigit():
        return word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


@dataclass(frozen=True, slots=True)
class _Signature:
    words: frozenset[str]
    polarity: str  # "+", "-" or "" (no stance)


def _signature(content: str) -> _Signature:
    tokens = _TOKEN_RE.findall(content.casefold())
    negative = any(t in _NEGATIVE for t in tokens)
    positive = any(t in _POSITIVE for t in tokens)
    negated = any(t in _NEGATION for t in tokens)
    polarity = "-" if negative or (positive and negated) else "+" if positive else ""
    words = frozenset(
        _stem(t)
        for t in tokens
        if t not in _SIG_STOP and t not in _POSITIVE and t not in _NEGATIVE and t not in _NEGATION
    )
    return _Signature(words, polarity)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


Relation = Literal["same", "richer", "poorer", "flip", "different"]


def _relation(new: _Signature, old: _Signature) -> Relation:
    """How a new statement relates to an existing one about the same key."""
    same_stance = new.polarity == old.polarity or not new.polarity or not old.polarity
    if not new.words or not old.words:
        return "same" if new.words == old.words and same_stance else "different"
    close = new.words == old.words or _jaccard(new.words, old.words) >= NEAR_DUPLICATE_JACCARD
    if close:
        return "same" if same_stance else "flip"
    if not (new.words > old.words or new.words < old.words):
        return "different"
    if not same_stance:
        return "flip"  # "hates Python" after "loves Python for data science"
    return "richer" if new.words > old.words else "poorer"


# ---------------------------------------------------------------------------------------------
# Write planning (pure)


@dataclass(frozen=True, slots=True)
class WritePlan:
    """What to do with one candidate.

    Attributes:
        action: ``create`` a memory, ``merge`` into ``target`` (same fact again: confidence,
            sources and ``updated_at`` refreshed), ``update`` ``target`` (the fact changed: new
            content, old one to history) or ``skip``.
        target: The existing memory merged into or updated; ``None`` for create, skip, and a
            merge/update of a memory created earlier in the same batch (see ``into``).
        into: Index, in the same plan list, of the ``create`` plan whose memory this plan merges
            into or updates.
        replace_content: For a merge: the candidate says the same, with more detail, and its
            content replaces the memory's (the old one goes to history).
    """

    action: PlanAction
    candidate: MemoryCandidate
    target: MemoryRecord | None = None
    reason: str = ""
    into: int | None = None
    replace_content: bool = False


@dataclass(slots=True)
class _Slot:
    """A memory as the planner sees it while going through a batch."""

    key: str
    category: str
    sig: _Signature
    order: tuple[float, int]  # (updated_at timestamp, position): larger = more recent
    record: MemoryRecord | None = None
    plan_index: int | None = None


def plan_writes(
    candidates: Sequence[MemoryCandidate],
    existing: Sequence[MemoryRecord],
    *,
    confidence_threshold: float = 0.5,
) -> list[WritePlan]:
    """Decide, for each candidate in order, whether it creates, merges into or updates a memory.

    Pure and deterministic; O(candidates + existing) plus the memories sharing a candidate's key.
    Candidates of one batch see each other: "I like Python" three times plans one ``create``
    and two ``merge`` plans pointing at it through ``into``.

    Args:
        candidates: What an extractor proposed.
        existing: The user's stored memories (inactive ones are ignored).
        confidence_threshold: Candidates below it are skipped.

    Returns:
        One plan per candidate, in the candidates' order.

    Raises:
        ConfigError: ``confidence_threshold`` is not in [0, 1].
    """
    if (
        isinstance(confidence_threshold, bool)
        or not isinstance(confidence_threshold, int | float)
        or not 0.0 <= confidence_threshold <= 1.0
    ):
        raise ConfigError(f"confidence_threshold must be in [0, 1], got {confidence_threshold!r}")
    by_key: dict[str, list[_Slot]] = {}
    by_content: dict[tuple[str, frozenset[str], str], _Slot] = {}

    def index(slot: _Slot) -> None:
        if slot.sig.words:
            by_content.setdefault((slot.category, slot.sig.words, slot.sig.polarity), slot)

    def unindex(slot: _Slot) -> None:
        content_key = (slot.category, slot.sig.words, slot.sig.polarity)
        if by_content.get(content_key) is slot:
            del by_content[content_key]

    for position, record in enumerate(existing):
        if not record.active:
            continue
        known = _Slot(
            record.key,
            record.category,
            _signature(record.content),
            (record.updated_at.timestamp(), position),
            record=record,
        )
        by_key.setdefault(record.key, []).append(known)
        index(known)

    plans: list[WritePlan] = []
    for i, cand in enumerate(candidates):
        if cand.confidence < confidence_threshold:
            plans.append(
                WritePlan(
                    "skip",
                    cand,
                    reason=f"{BELOW_THRESHOLD}: {cand.confidence:.2f} < {confidence_threshold:.2f}",
                )
            )
            continue
        sig = _signature(cand.content)
        same_key = by_key.get(cand.key, [])
        ranked = sorted(same_key, key=lambda s: s.order, reverse=True)  # most recent first
        relations = [(_relation(sig, s.sig), s) for s in ranked]
        slot = next((s for r, s in relations if r == "same"), None)
        action: PlanAction = "merge"
        replace_content = False
        if slot is not None:
            reason = f"same fact as the memory under {cand.key!r}"
        elif (slot := next((s for r, s in relations if r in ("richer", "poorer")), None)) is not None:
            replace_content = _relation(sig, slot.sig) == "richer"
            reason = "restates the memory " + ("with more detail" if replace_content else "with less detail")
        elif is_single_valued(cand.key) and ranked:
            slot, action, reason = ranked[0], "update", f"{cand.key!r} holds one value and it changed"
        elif (slot := next((s for r, s in relations if r == "flip"), None)) is not None:
            action, reason = "update", f"the stance on {cand.key!r} changed"
        elif sig.words and (slot := by_content.get((cand.category, sig.words, sig.polarity))) is not None:
            reason = f"same content as the memory under {slot.key!r}"
        else:
            new = _Slot(cand.key, cand.category, sig, (math.inf, i), plan_index=i)
            by_key.setdefault(cand.key, []).append(new)
            index(new)
            plans.append(WritePlan("create", cand, reason="new memory"))
            continue
        plans.append(
            WritePlan(
                action,
                cand,
                target=slot.record,
                reason=reason,
                into=slot.plan_index,
                replace_content=replace_content,
            )
        )
        if action == "update" or replace_content:
            unindex(slot)
            slot.sig = sig
            index(slot)
        slot.order = (math.inf, i)
    return plans


def _merge_ids(old: Sequence[str], new: Sequence[str]) -> tuple[str, ...]:
    merged = dict.fromkeys((*old, *new))
    return tuple(merged)[-MAX_SOURCES:]


def _push_history(history: tuple[str, ...], content: str) -> tuple[str, ...]:
    return (*history, content)[-MAX_HISTORY:]


def _merged(base: MemoryRecord, plan: WritePlan, now: datetime) -> MemoryRecord:
    cand = plan.candidate
    # Independent confirmations: the chance that every one of them is wrong shrinks.
    confidence = round(1.0 - (1.0 - base.confidence) * (1.0 - cand.confidence), 4)
    changes: dict[str, Any] = {
        "confidence": max(confidence, base.confidence),
        "source_message_ids": _merge_ids(base.source_message_ids, cand.source_message_ids),
        "updated_at": max(now, base.updated_at),
    }
    if plan.replace_content and cand.content != base.content:
        changes["content"] = cand.content
        changes["history"] = _push_history(base.history, base.content)
    return replace(base, **changes)


def _updated(base: MemoryRecord, plan: WritePlan, session_id: str, now: datetime) -> MemoryRecord:
    cand = plan.candidate
    if cand.content == base.content:
        return _merged(base, replace(plan, replace_content=False), now)
    return replace(
        base,
        category=cand.category,
        content=cand.content,
        confidence=cand.confidence,
        source_session_id=session_id,
        source_message_ids=cand.source_message_ids[-MAX_SOURCES:],
        updated_at=max(now, base.updated_at),
        history=_push_history(base.history, base.content),
    )


_MERGE_FIELDS: Final = ["confidence", "source_message_ids", "updated_at"]
_UPDATE_FIELDS: Final = [
    "content",
    "history",
    "confidence",
    "source_session_id",
    "source_message_ids",
    "updated_at",
]


def apply_plans(
    plans: Sequence[WritePlan],
    existing: Sequence[MemoryRecord],
    ctx: RequestContext,
    *,
    session_id: str | None = None,
    now: datetime | None = None,
    new_id: Callable[[], str] = new_memory_id,
) -> tuple[list[MemoryRecord], dict[str, Any]]:
    """Turn plans into the records to upsert and the seed's ``commit_session`` result.

    Pure apart from ``new_id`` and the default ``now``. Several plans touching one memory are
    applied in order, and the memory appears once among the records, in its final state.

    Args:
        plans: From :func:`plan_writes`, against the same ``existing``.
        existing: The memories the plans were made against.
        ctx: Whose memories these are: created memories get its account, user and agent.
        session_id: The session the candidates came from (default ``ctx.session_id``).
        now: The time stamped on created and changed memories (default: the current UTC time).
        new_id: Makes memory ids (default :func:`new_memory_id`).

    Returns:
        ``(records, result)``: every created or changed memory (upsert them all in one
        transaction), and ``{"candidates_extracted", "candidates_filtered", "writes_completed",
        "writes_skipped", "writes_failed", "plans": [{"action", "operation", "target_uri",
        "memory_id", "category", "key", "content", "reason", "merged_fields"}]}``. ``action`` is
        the seed's vocabulary (create | merge | skip: an update is reported as ``merge`` with
        ``content`` among its ``merged_fields``); ``operation`` is the precise plan action.

    Raises:
        AccessDeniedError: A target belongs to another account, user or agent.
        InvalidInputError: A target is not among ``existing`` (or inactive), ``into`` does not
            name an earlier create plan, ``now`` is naive, or ``new_id`` repeats an id.
    """
    moment = utc_now() if now is None else _check_time(now, "now")
    sid = ctx.session_id if session_id is None else session_id
    by_id = {r.memory_id: r for r in existing}
    current: dict[str, MemoryRecord] = {}
    created: dict[int, str] = {}
    out_plans: list[dict[str, Any]] = []
    filtered = 0
    for i, plan in enumerate(plans):
        cand = plan.candidate
        if plan.action == "skip":
            filtered += plan.reason.startswith(BELOW_THRESHOLD)
            out_plans.append(_result_plan(plan, None, "skip", []))
            continue
        if plan.action == "create":
            memory_id = new_id()
            if memory_id in by_id or memory_id in current:
                raise InvalidInputError(f"new_id returned {memory_id!r} twice")
            record = MemoryRecord(
                memory_id=memory_id,
                account_id=ctx.account_id,
                user_id=ctx.user_id,
                agent_id=ctx.agent_id,
                category=cand.category,
                key=cand.key,
                content=cand.content,
                confidence=cand.confidence,
                source_session_id=sid,
                source_message_ids=cand.source_message_ids[-MAX_SOURCES:],
                created_at=moment,
                updated_at=moment,
            )
            created[i] = memory_id
            current[memory_id] = record
            out_plans.append(_result_plan(plan, record, "create", []))
            continue
        if plan.action not in ("merge", "update"):
            raise InvalidInputError(f"unknown plan action {plan.action!r}")
        memory_id = _plan_target(plan, i, by_id, created, ctx)
        base = current.get(memory_id) or by_id[memory_id]
        if plan.action == "merge":
            record = _merged(base, plan, moment)
            fields = (
                [*_MERGE_FIELDS, "content", "history"] if record.content != base.content else _MERGE_FIELDS
            )
        else:
            record = _updated(base, plan, sid, moment)
            fields = _UPDATE_FIELDS if record.content != base.content else _MERGE_FIELDS
        current[memory_id] = record
        out_plans.append(_result_plan(plan, record, "merge", list(fields)))
    skipped = sum(1 for p in plans if p.action == "skip")
    result = {
        "candidates_extracted": len(plans),
        "candidates_filtered": filtered,
        "writes_completed": len(plans) - skipped,
        "writes_skipped": skipped,
        "writes_failed": 0,
        "plans": out_plans,
    }
    return list(current.values()), result


def _plan_target(
    plan: WritePlan,
    index: int,
    by_id: Mapping[str, MemoryRecord],
    created: Mapping[int, str],
    ctx: RequestContext,
) -> str:
    if plan.into is not None:
        if plan.into >= index or plan.into not in created:
            raise InvalidInputError(f"plan {index} merges into plan {plan.into}, which is no earlier create")
        return created[plan.into]
    target = plan.target
    if target is None:
        raise InvalidInputError(f"plan {index} ({plan.action}) has neither a target nor into")
    if (target.account_id, target.user_id, target.agent_id) != (ctx.account_id, ctx.user_id, ctx.agent_id):
        raise AccessDeniedError(f"memory {target.memory_id!r} belongs to another account, user or agent")
    known = by_id.get(target.memory_id)
    if known is None or not known.active:
        raise InvalidInputError(f"memory {target.memory_id!r} is not among the existing active memories")
    return target.memory_id


def _result_plan(
    plan: WritePlan, record: MemoryRecord | None, action: str, fields: list[str]
) -> dict[str, Any]:
    return {
        "action": action,
        "operation": plan.action,
        "target_uri": record.uri if record is not None else "",
        "memory_id": record.memory_id if record is not None else "",
        "category": plan.candidate.category,
        "key": plan.candidate.key,
        "content": record.content if record is not None else plan.candidate.content,
        "reason": plan.reason,
        "merged_fields": fields,
    }


# ---------------------------------------------------------------------------------------------
# Retrieval and rendering

_CATEGORY_ORDER: Final[Mapping[str, int]] = {c: i for i, c in enumerate(CATEGORIES)}
# Words a question about a key uses that its content may not ("where do I live" -> user.location).
_KEY_WORDS: Final[Mapping[str, str]] = {
    "user.name": "name called named",
    "user.location": "live lives living location city country home based address",
    "user.hometown": "from hometown origin grew born",
    "user.employer": "work works job employer company",
    "user.occupation": "job work profession occupation career",
    "user.age": "age old",
    "user.birthday": "birthday born birth",
    "user.nationality": "nationality country",
    "user.diet": "diet eat food",
    "user.studies": "study studies student school university education",
    "user.language": "language languages speak",
    "pref": "prefer preference favourite favorite",
}
_QUERY_NOISE: Final = frozenset({"user", "users"})


def _key_text(memory: MemoryRecord) -> str:
    head, _, rest = memory.key.partition(":")
    extra = _KEY_WORDS.get(head) or _KEY_WORDS.get(memory.key) or ""
    return f"{memory.key.replace('.', ' ')} {rest} {extra}"


def _recency(memory: MemoryRecord) -> tuple[float, float, str]:
    return (-memory.updated_at.timestamp(), -memory.confidence, memory.memory_id)


def rank_memories(memories: Sequence[MemoryRecord], query: str, *, limit: int = 10) -> list[MemoryRecord]:
    """Active memories sharing words with ``query``, best first; at most ``limit``.

    The words are :func:`ogmem_memory.recall.search_terms` of the query, compared stemmed with the
    memory's content and key (keys bring their synonyms: ``user.location`` matches "live").
    Ties go to the more recent, then the more confident memory.

    Raises:
        InvalidInputError: ``limit`` is negative.
    """
    _check_limit(limit)
    terms = {_stem(t) for t in search_terms(query, limit=12) if t not in _QUERY_NOISE}
    if not terms or limit == 0:
        return []
    scored: list[tuple[float, MemoryRecord]] = []
    for memory in memories:
        if not memory.active:
            continue
        words = {_stem(w) for w in _TOKEN_RE.findall(f"{memory.content} {_key_text(memory)}".casefold())}
        score = sum(1.0 + min(len(t), 10) / 10 for t in terms if t in words)
        if score > 0:
            scored.append((score, memory))
    scored.sort(key=lambda p: (-p[0], *_recency(p[1])))
    return [m for _, m in scored[:limit]]


def profile_memories(memories: Sequence[MemoryRecord], *, limit: int = 10) -> list[MemoryRecord]:
    """What to show without a query: profile, then preferences, then the other categories.

    Newest first within a category; inactive memories are left out.

    Raises:
        InvalidInputError: ``limit`` is negative.
    """
    _check_limit(limit)
    active = [m for m in memories if m.active]
    active.sort(key=lambda m: (_CATEGORY_ORDER[m.category], *_recency(m)))
    return active[:limit]


def render_memories(memories: Sequence[MemoryRecord]) -> str:
    """One ``- content`` line per active memory, in the given order; ``""`` when none."""
    return "\n".join(f"- {m.content}" for m in memories if m.active)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")


def tool_memories(
    usage: UsageTracker | Mapping[str, Mapping[str, object]], *, min_calls: int = 1
) -> list[MemoryCandidate]:
    """One ``tools`` candidate per tool with at least ``min_calls`` calls (key ``tool:<name>``).

    Args:
        usage: A session's tracker, or stats in its ``tool_stats`` shape (e.g. persisted JSON).
        min_calls: Tools called fewer times say too little to remember.
    """
    stats = usage.tool_stats if isinstance(usage, UsageTracker) else usage
    out = []
    for name in sorted(stats):
        s = stats[name]
        calls, ok, fail = (_count(s.get(k)) for k in ("call_count", "success_count", "fail_count"))
        if not name.strip() or calls < max(1, min_calls):
            continue
        text = f"Tool '{name.strip()}' succeeded in {ok} of {calls} calls ({ok / calls:.0%}, {fail} failed)"
        duration = s.get("total_duration_ms")
        if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
            text += f", {duration / calls:.0f} ms per call on average"
        out.append(MemoryCandidate("tools", f"tool:{name.strip()}", text + ".", 0.9))
    return out


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


# ---------------------------------------------------------------------------------------------
# Rule-based extraction

_MONTHS: Final = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAYS: Final = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_ABSOLUTE_TIME_RE: Final = re.compile(
    rf"""(?:\b(?:on|in|since|by)\s+(?:the\s+)?)?(?:
        \b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\b\.?(?:,?\s+\d{{4}}\b)?
      | \b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?
      | \b\d{{4}}-\d{{2}}-\d{{2}}\b
      | \b\d{{1,2}}/\d{{1,2}}/\d{{2,4}}\b
      | (?<=in\s)(?:{_MONTHS}\s+)?(?:19|20)\d{{2}}\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_RELATIVE_TIME_RE: Final = re.compile(
    rf"""\b(?:yesterday|today|tonight|recently|the\s+other\s+day|earlier\s+today
      | last\s+(?:week|weekend|month|year|night|summer|winter|spring|fall|autumn|{_DAYS})
      | this\s+(?:morning|afternoon|evening|week|weekend|month|year|summer|winter|spring|fall|autumn)
      | (?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|a\s+few|a\s+couple\s+of|\d+)\s+
        (?:days?|weeks?|months?|years?)\s+ago
      | on\s+{_DAYS})\b""",
    re.IGNORECASE | re.VERBOSE,
)
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
_FENCE_RE: Final = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_SENTENCE_RE: Final = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_RE: Final = re.compile(
    r"\s*;\s*|,?\s+(?:and|but|so|because|though|although|while|plus)\s+(?=(?:i|i'm|i've|im|my|we|let's)\b)"
    r"|,\s+(?=(?:i|i'm|i've|my|let's)\b)",
    re.IGNORECASE,
)
_QUESTION_START_RE: Final = re.compile(
    r"^(?:what|where|who|whom|whose|when|why|how|which|do|does|did|can|could|would|will|shall|should|"
    r"is|are|am|was|were|have|has|may|might)\b",
    re.IGNORECASE,
)
# A statement inside these is not asserted ("if I lived in Paris", "she said I ...").
_UNASSERTED: Final = _words(
    "if wish would imagine suppose supposing pretend unless whether hypothetically said says asked "
    "asks told tells whenever when"
)
_HEDGES_RE: Final = re.compile(
    r"\b(?:maybe|probably|perhaps|might|i\s+think|i\s+guess|not\s+sure|i\s+suppose)\b", re.IGNORECASE
)
_CONFIRM_RE: Final = re.compile(
    r"^(?:yes|yeah|yep|yup|correct|exactly|right|that's\s+right|that\s+is\s+right|true|indeed|absolutely|"
    r"sure|ok|okay|sounds\s+good|deal|agreed|perfect|great|let's\s+do\s+(?:it|that)|do\s+it|"
    r"go\s+for\s+it|definitely|of\s+course)\b",
    re.IGNORECASE,
)
_MAX_SENTENCE_CHARS: Final = 400
_MAX_RULE_CONTENT_CHARS: Final = 300

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

_NOT_NAMES: Final = _words(
    """sorry fine good great ok okay not so just happy glad here back done ready sure also still very
    really going looking trying thinking tired busy new from in at on working living based currently now
    afraid excited interested curious confused lost home online free available alright all well a an the
    totally actually always never usually kind pretty quite feeling doing learning planning hoping
    married single retired pregnant sick ill bored hungry thirsty late early fan big huge"""
)
_DEMONYMS: Final = _words(
    """american british english french german italian spanish portuguese brazilian canadian mexican
    indian chinese japanese korean dutch irish scottish welsh australian russian polish swedish
    norwegian danish finnish greek turkish swiss austrian belgian argentinian colombian chilean peruvian
    nigerian kenyan egyptian israeli iranian pakistani vietnamese thai filipino indonesian ukrainian
    czech hungarian romanian"""
)
_JOBS: Final = _words(
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
_NOT_JOBS: Final = _words(
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
_PLACE_NOT: Final = _words(
    "fear hope peace denial moment present past future bubble head dream dreams world reality hell misery "
    "poverty luxury it that this"
)
_OBJECT_PRONOUNS: Final = _words(
    "it that this them him her you those these one everything something anything nothing all"
)
_NOT_PREFERENCES: Final = _words(
    "idea suggestion answer response reply explanation question way approach plan help"
)
_HEAD_STOPS: Final = _words(
    """for because since when while with in on at from over than as but and or so if during after of
    before about by more better very lot a an the is are was were which who that this last next ago
    yesterday today tonight recently"""
)
_VAGUE_WORDS: Final = _OBJECT_PRONOUNS | _words("do so go make get")
_HEAD_SKIP: Final = _words("to the a an my our some all any being")
_TALK: Final = (
    r"(?:revisit|discuss|talk|chat|go\s+over|go\s+through|look|think|see|review|recap|consider|continue|"
    r"move\s+on|focus|start|begin|catch\s+up|get\s+back|come\s+back|return|try|check|figure|say|hope)"
)
_STRONG_EVENT_VERBS: Final = _words(
    "visited traveled travelled attended graduated married adopted won joined quit celebrated "
    "launched flew hosted organized organised published climbed retired"
)
_WEAK_EVENT_VERBS: Final = _words(
    "went got had took saw watched read made did tried gave received played lost began started finished "
    "completed learned learnt ran left met bought sold built wrote broke injured passed failed signed"
)
_EVENT_RE: Final = re.compile(
    rf"\bi(?:'ve|\s+have)?\s+{_ADV}(?P<verb>got\s+(?:married|engaged|divorced|promoted)|been\s+to|"
    rf"{'|'.join(sorted(_STRONG_EVENT_VERBS | _WEAK_EVENT_VERBS))})\b(?P<obj>.*)",
    re.IGNORECASE,
)
# Present-tense verbs the third-person rewrite conjugates ("I live" -> "User lives").
_PRESENT_VERBS: Final = _words(
    """live reside work like love adore enjoy prefer hate dislike detest loathe despise study teach own
    use speak play need want drink eat run cook read watch write code travel know have do go"""
)
_ADVERB_WORDS: Final = _words(
    """really absolutely totally also just still now currently actually definitely genuinely honestly
    truly kinda already recently finally mostly usually generally even personally originally"""
)
_REMAINDER_PRONOUNS: Final = (
    (re.compile(r"\band\s+i\b", re.IGNORECASE), "and the user"),
    (re.compile(r"\bi'm\b|\bi\s+am\b", re.IGNORECASE), "they are"),
    (re.compile(r"\bi\s+was\b", re.IGNORECASE), "they were"),
    (re.compile(r"\bi've\b", re.IGNORECASE), "they have"),
    (re.compile(r"\bi'll\b", re.IGNORECASE), "they will"),
    (re.compile(r"\bi'd\b", re.IGNORECASE), "they would"),
    (re.compile(r"\bi\b", re.IGNORECASE), "they"),
    (re.compile(r"\bmyself\b", re.IGNORECASE), "themselves"),
    (re.compile(r"\bmine\b", re.IGNORECASE), "theirs"),
    (re.compile(r"\bmy\b", re.IGNORECASE), "their"),
    (re.compile(r"\bme\b", re.IGNORECASE), "them"),
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


def _third_person(text: str) -> str:
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
    for pattern, repl in _REMAINDER_PRONOUNS:
        rest = pattern.sub(repl, rest)
    return head + rest


def _head(obj: str, *, max_words: int = 3) -> str:
    """The subject of an object phrase: "to cook Italian food on weekends" -> "cook italian food"."""
    words: list[str] = []
    for raw in _TOKEN_RE.findall(obj.casefold()):
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
        for w in _TOKEN_RE.findall(text.casefold())
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
        if not word or word.casefold() in _NOT_NAMES or word.casefold() in _SIG_STOP:
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


_NAME_RES: Final = (
    (_compile(rf"\bmy\s+name(?:'s|\s+is)\s+{_NAME}"), True, 0.9),
    (_compile(rf"\b(?:people\s+|you\s+can\s+)?call\s+me\s+{_NAME}"), False, 0.8),
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
_DECISION_RES: Final = (
    _compile(rf"\b(?:let's|let\s+us)\s+(?!{_TALK}\b)(?P<act>\S.*)"),
    _compile(
        rf"\b(?:we|i)(?:'ve|\s+have)?\s+{_ADV}(?:decided|agreed|settled|chose|opted|committed)\s+"
        r"(?:to\s+|on\s+|upon\s+|for\s+|that\s+(?:we'll\s+|we\s+will\s+|i'll\s+|i\s+will\s+)?)?(?P<act>\S.*)"
    ),
    _compile(
        r"\b(?:we'll|we\s+will|i'll|i\s+will|we're|we\s+are|i'm|i\s+am)\s+(?P<act>(?:go|going|stick|sticking)"
        r"\s+with\s+\S.*)"
    ),
    _compile(r"\bthe\s+plan\s+is\s+to\s+(?P<act>\S.*)"),
)
_DECISION_VERBS_RE: Final = re.compile(
    r"^(?:go(?:ing)?\s+with|stick(?:ing)?\s+with|use|using|pick|choose|adopt|switch\s+to|try)\s+",
    re.IGNORECASE,
)


def _match_name(clause: str) -> _Hit | None:
    for pattern, explicit, confidence in _NAME_RES:
        m = pattern.search(clause)
        if m is None:
            continue
        name = _take_name(m.group("name"), first_may_be_lower=explicit)
        if not name or name.casefold() in _DEMONYMS or name.casefold() in _JOBS:
            continue
        return _Hit("profile", "user.name", confidence, m.start(), f"User's name is {name}.")
    return None


def _match_profile(clause: str) -> _Hit | None:
    for pattern in _AGE_RES:
        if (m := pattern.search(clause)) is not None and 0 < int(m.group("age")) <= 120:
            return _Hit("profile", "user.age", 0.85, m.start())
    if (m := _BIRTHDAY_RE.search(clause)) is not None:
        return _Hit("profile", "user.birthday", 0.85, m.start())
    if (m := _BORN_RE.search(clause)) is not None:
        date_like = _ABSOLUTE_TIME_RE.match("in " + m.group("obj")) or m.group("obj")[:1].isdigit()
        return _Hit("profile", "user.birthday" if date_like else "user.hometown", 0.85, m.start())
    for pattern in _HOMETOWN_RES:
        if (m := pattern.search(clause)) is not None and _has_proper_noun(m.group("obj"), clause):
            return _Hit("profile", "user.hometown", 0.85, m.start())
    for pattern in _LOCATION_RES:
        m = pattern.search(clause)
        if m is None:
            continue
        head = _head(m.group("obj"))
        if head and head.split()[0] not in _PLACE_NOT and _has_proper_noun(m.group("obj"), clause):
            return _Hit("profile", "user.location", 0.9, m.start())
    for pattern in _EMPLOYER_RES:
        if (m := pattern.search(clause)) is not None and _has_proper_noun(m.group("obj"), clause):
            return _Hit("profile", "user.employer", 0.85, m.start())
    for pattern in _STUDIES_RES:
        if (m := pattern.search(clause)) is not None and _head(m.group("obj")):
            return _Hit("profile", "user.studies", 0.8, m.start())
    for pattern in _OCCUPATION_RES:
        if (m := pattern.search(clause)) is not None and _head(m.group("obj")):
            return _Hit("profile", "user.occupation", 0.8, m.start())
    if (m := _DIET_RE.search(clause)) is not None:
        return _Hit("profile", "user.diet", 0.85, m.start())
    if (m := _JOB_RE.search(clause)) is not None and _is_job(m.group("obj")):
        return _Hit("profile", "user.occupation", 0.8, m.start())
    if (m := _NATIONALITY_RE.search(clause)) is not None and m.group("nat").casefold() in _DEMONYMS:
        return _Hit("profile", "user.nationality", 0.8, m.start())
    if (m := _LANGUAGE_RE.search(clause)) is not None and (head := _head(m.group("obj"), max_words=1)):
        return _Hit("profile", f"user.language:{_slug(head)}", 0.8, m.start())
    if (m := _LEARNING_RE.search(clause)) is not None and (head := _head(m.group("obj"), max_words=2)):
        return _Hit("profile", f"user.learning:{_slug(head)}", 0.7, m.start())
    return None


def _match_entity(clause: str) -> _Hit | None:
    for pattern in _ENTITY_NAMED_RES:
        m = pattern.search(clause)
        if m is None or m.group("rel").casefold() in ("name", "favourite", "favorite"):
            continue
        if _take_name(m.group("name"), first_may_be_lower=True):
            return _Hit("entities", f"entity:{_slug(m.group('rel'))}", 0.85, m.start())
    if (m := _ENTITY_MENTION_RE.search(clause)) is not None and m.group("name").casefold() not in _SIG_STOP:
        return _Hit("entities", f"entity:{_slug(m.group('rel'))}", 0.7, m.start())
    if (m := _ENTITY_COUNT_RE.search(clause)) is not None:
        return _Hit("entities", f"entity:{_slug(m.group('rel'))}", 0.75, m.start())
    return None


def _match_preference(clause: str) -> _Hit | None:
    if (m := _FAVOURITE_RE.search(clause)) is not None and _head(m.group("obj")):
        return _Hit("preferences", f"pref:favourite-{_slug(m.group('what'))}", 0.85, m.start())
    for pattern in _PREFERENCE_RES:
        m = pattern.search(clause)
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
    for pattern in _DECISION_RES:
        m = pattern.search(clause)
        if m is None:
            continue
        act = m.group("act").strip().rstrip(".!")
        subject = _head(_DECISION_VERBS_RE.sub("", act))
        if not subject or all(w in _VAGUE_WORDS for w in subject.split()):
            continue  # "let's do it": agreement, not a decision one could remember
        return _Hit("decisions", f"decision:{_slug(subject)}", 0.7, m.start(), f"Decision: {act}.")
    return None


def _match_event(clause: str) -> _Hit | None:
    m = _EVENT_RE.search(clause)
    if m is None:
        return None
    verb = " ".join(m.group("verb").casefold().split())
    timed = bool(_ABSOLUTE_TIME_RE.search(clause) or _RELATIVE_TIME_RE.search(clause))
    if verb in _WEAK_EVENT_VERBS and not timed:
        return None
    obj = m.group("obj")
    when = _ABSOLUTE_TIME_RE.search(obj) or _RELATIVE_TIME_RE.search(obj)
    head = _head(obj[: when.start()] if when is not None else obj)
    if head and head.split()[0] in _OBJECT_PRONOUNS:
        return None
    return _Hit("events", f"event:{_slug(verb + ' ' + head)}", 0.7 if timed else 0.6, m.start())


_MATCHERS: Final[tuple[_Matcher, ...]] = (
    _match_name,
    _match_profile,
    _match_entity,
    _match_preference,
    _match_decision,
    _match_event,
)


_SPEAKER_RE: Final = re.compile(r"\b(?:i|im|my|me|let|we|plan)\b", re.IGNORECASE)
_BARE_POSSESSIVE_RE: Final = re.compile(r"^\s*my\s+[\w-]+(?:\s+[\w-]+)?\s*$", re.IGNORECASE)


def _is_question(sentence: str) -> bool:
    return sentence.rstrip(" \"')]").endswith("?") or bool(_QUESTION_START_RE.match(sentence))


def _clauses(sentence: str) -> list[str]:
    out: list[str] = []
    for clause in _CLAUSE_RE.split(sentence):
        if not clause or not clause.strip():
            continue
        if out and _BARE_POSSESSIVE_RE.match(out[-1]):
            out[-1] = f"{out[-1]} and {clause}"  # "my wife and I went ...": one subject, not two clauses
        else:
            out.append(clause)
    return out


def _format_day(when: datetime) -> str:
    return f"{when.day} {_MONTH_NAMES[when.month - 1]} {when.year}"


def _finish(content: str, *, prefix: str, when: datetime | None) -> str:
    text = one_line(content).rstrip(" ,;:.!")
    time_before = _ABSOLUTE_TIME_RE.search(prefix) or _RELATIVE_TIME_RE.search(prefix)
    if time_before is not None and time_before.group(0).casefold() not in text.casefold():
        text = f"{text} {time_before.group(0)[0].lower()}{time_before.group(0)[1:]}"
    if len(text) > _MAX_RULE_CONTENT_CHARS:
        text = text[:_MAX_RULE_CONTENT_CHARS].rsplit(" ", 1)[0].rstrip(" ,;:")
    if when is not None and _RELATIVE_TIME_RE.search(text):
        # "last week" means nothing a month later: anchor it to the day it was said.
        text += f" (said on {_format_day(when)})"
    return (text[:1].upper() + text[1:] + ".") if text else ""


_COMPOUND_SUBJECT_RE: Final = re.compile(r"(?:^|\s)my\s+[\w-]+(?:\s+[\w-]+)?\s+and\s+$", re.IGNORECASE)


def _statements(
    text: str, sources: tuple[str, ...], when: datetime | None, *, scale: float = 1.0
) -> list[MemoryCandidate]:
    out: list[MemoryCandidate] = []
    text = _FENCE_RE.sub(" ", text.replace("\u2019", "'").replace("\u2018", "'"))
    for sentence in _SENTENCE_RE.split(text):
        sentence = sentence.strip()
        if not sentence or len(sentence) > _MAX_SENTENCE_CHARS or _is_question(sentence):
            continue
        carry = ""  # clauses without a statement still date or qualify the next one
        for clause in _clauses(sentence):
            # Every statement pattern needs one of these words: a cheap gate before ~40 searches.
            gated = _SPEAKER_RE.search(clause) is not None
            hit = (
                next((h for matcher in _MATCHERS if (h := matcher(clause)) is not None), None)
                if gated
                else None
            )
            if hit is None:
                carry = f"{carry} {clause}"
                continue
            start = hit.start
            if hit.content is None and _COMPOUND_SUBJECT_RE.search(clause[:start]):
                start = clause.casefold().rfind("my ", 0, start)  # "my wife and I went ..."
            prefix = f"{carry} {clause[:start]}"
            carry = ""
            if set(_TOKEN_RE.findall(prefix.casefold())) & _UNASSERTED:
                continue
            confidence = hit.confidence - (0.25 if _HEDGES_RE.search(clause) else 0.0)
            body = hit.content if hit.content is not None else _third_person(clause[start:])
            content = _finish(body, prefix=prefix, when=when)
            if content:
                out.append(
                    MemoryCandidate(hit.category, hit.key, content, round(confidence * scale, 4), sources)
                )
    return out


_ASSISTANT_SELF: Final = (
    (re.compile(r"\bI'm\b|\bI am\b"), "Assistant is"),
    (re.compile(r"\bI've\b"), "Assistant has"),
    (re.compile(r"\bI'll\b"), "Assistant will"),
    (re.compile(r"\bI'd\b"), "Assistant would"),
    (re.compile(r"\bI\b"), "Assistant"),
    (re.compile(r"\b[Mm]y\b"), "Assistant's"),
    (re.compile(r"\b[Mm]e\b"), "Assistant"),
)
_SECOND_PERSON: Final = (
    (re.compile(r"\byou're\b|\byou\s+are\b", re.IGNORECASE), "I'm"),
    (re.compile(r"\byou've\b", re.IGNORECASE), "I've"),
    (re.compile(r"\byourself\b", re.IGNORECASE), "myself"),
    (re.compile(r"\byours\b", re.IGNORECASE), "mine"),
    (re.compile(r"\byour\b", re.IGNORECASE), "my"),
    (re.compile(r"\byou\b", re.IGNORECASE), "I"),
)
_PROPOSALS: Final = (
    (re.compile(r"^(?:how|what)\s+about\s+(?:we\s+)?(.+)$", re.IGNORECASE), r"let's \1"),
    (re.compile(r"^(?:shall|should)\s+we\s+(.+)$", re.IGNORECASE), r"let's \1"),
    (re.compile(r"^I\s+(?:suggest|recommend|propose)\s+(?:that\s+)?we\s+(.+)$", re.IGNORECASE), r"let's \1"),
)
_QUESTIONS: Final = (
    (re.compile(r"^(?:is|was)\s+your\s+(\w+(?:'s\s+name)?)\s+(.+)$", re.IGNORECASE), r"my \1 is \2"),
    (re.compile(r"^do\s+you\s+(.+)$", re.IGNORECASE), r"I \1"),
    (re.compile(r"^are\s+you\s+(.+)$", re.IGNORECASE), r"I am \1"),
    (re.compile(r"^have\s+you\s+(.+)$", re.IGNORECASE), r"I have \1"),
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


def _as_user_statement(sentence: str) -> str:
    """An assistant's sentence about "you" (or a proposal) as the user would state it."""
    text = _CONFIRM_TAIL_RE.sub("", _CONFIRM_LEAD_RE.sub("", sentence.strip()))
    text = _first_substitution(text, _PROPOSALS)
    # The assistant's own "I" must not become the user's: mark it before "you" becomes "I".
    for pattern, repl in _ASSISTANT_SELF:
        text = pattern.sub(repl, text)
    text = _first_substitution(text, _QUESTIONS)
    for pattern, repl in _SECOND_PERSON:
        text = pattern.sub(repl, text)
    return text


def _message_id(message: Mapping[str, Any]) -> str:
    value = message.get("id")
    return value if isinstance(value, str) and value else ""


def _message_time(message: Mapping[str, Any]) -> datetime | None:
    value = message.get("created_at")
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return parse_iso(value)
    return None


class RuleBasedExtractor:
    """Deterministic extraction without an LLM: what the user says (or confirms) about themselves.

    Reads user messages sentence by sentence (questions skipped) and matches statements about
    the user's name, age, birthday, origin, location, work, studies, diet, languages, the people
    and pets in their life, their likes and dislikes, decisions and dated events. A short "yes"
    to the assistant's question or proposal ("So you live in Lisbon?", "Let's go with X?")
    extracts that question's fact at a lower confidence. Content is a third-person sentence
    ("User moved to Porto on 12 March 2023.") keeping names, numbers and dates verbatim; a
    relative date is anchored to the message's day. Cost: linear in the text.

    ``session_summary`` is not needed: repeated facts merge in :func:`plan_writes`.
    """

    confirmation_scale: float = 0.8

    def extract(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> list[MemoryCandidate]:
        """Return the candidates found in ``messages`` (dicts with role/content/id/created_at)."""
        out: list[MemoryCandidate] = []
        previous_assistant: Mapping[str, Any] | None = None
        for message in messages:
            if not isinstance(message, Mapping):
                raise InvalidInputError(f"messages must be mappings, got {type(message).__name__}")
            role = message_role(message)
            if role == "assistant":
                previous_assistant = message
                continue
            if role != "user":
                continue
            text = message_text(message)
            mid, when = _message_id(message), _message_time(message)
            sources = (mid,) if mid else ()
            if previous_assistant is not None and _CONFIRM_RE.match(text.strip()):
                out.extend(self._confirmed(previous_assistant, sources, when))
            out.extend(_statements(text, sources, when))
            previous_assistant = None
        return out

    def _confirmed(
        self, assistant: Mapping[str, Any], sources: tuple[str, ...], when: datetime | None
    ) -> list[MemoryCandidate]:
        text = _FENCE_RE.sub(" ", message_text(assistant).replace("\u2019", "'"))
        aid = _message_id(assistant)
        ids = ((aid,) if aid else ()) + sources
        for sentence in reversed(_SENTENCE_RE.split(text)):
            sentence = sentence.strip()
            if not sentence or len(sentence) > _MAX_SENTENCE_CHARS:
                continue
            found = _statements(_as_user_statement(sentence), ids, when, scale=self.confirmation_scale)
            if found:
                return found  # the user said yes to the last thing asked or proposed
        return []


# ---------------------------------------------------------------------------------------------
# LLM extraction

_LLM_PROMPT: Final = """\
You extract long-term memories about the user from a conversation, for an assistant that will \
talk to this user again in other sessions.
{already}
Conversation (numbered messages):
<conversation>
{conversation}
</conversation>

Reply with only a JSON array (or {{"memories": [...]}}) of objects:
{{"category": "profile|preferences|entities|events|decisions", "key": "...", "content": "...", \
"confidence": 0.0-1.0, "sources": [message numbers]}}
Rules:
- Only what the user states or confirms about themselves, their life and their decisions; never \
questions, greetings, or the assistant's suggestions the user did not accept.
- key: user.<attribute> for facts with one value (user.name, user.location, user.employer, \
user.occupation, user.age, user.birthday, user.hometown, user.diet); pref:<subject> for likes and \
dislikes; entity:<relation> for people, pets and things of the user; event:<short-slug>; \
decision:<short-slug>. Use the same key for the same subject.
- content: one sentence about "User" in the third person; keep names, numbers, amounts and dates \
verbatim; turn relative dates into dates using the message dates.
- [] when there is nothing worth remembering.
"""
_ALREADY: Final = """
Already remembered from this session (do not repeat these):
<already>
{summary}
</already>
"""
_MAX_JSON_STARTS: Final = 64
_JSON_FENCE_RE: Final = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.DOTALL)
_SAFETY_TOKENS: Final = 16
_MAX_SUMMARY_CHARS: Final = 2000


def _json_values(text: str) -> Iterator[object]:
    stripped = text.strip()
    # RecursionError: a reply of a million nested brackets is malformed output, not a crash.
    for block in (stripped, *(m.group(1).strip() for m in _JSON_FENCE_RE.finditer(text))):
        with contextlib.suppress(ValueError, RecursionError):
            yield json.loads(block)
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "[{"][:_MAX_JSON_STARTS]
    for start in starts:
        try:
            yield decoder.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            continue


def parse_memories_output(text: str, source_ids: Sequence[str]) -> list[MemoryCandidate]:
    """Validate an LLM reply: a JSON list (or ``{"memories": [...]}``) of memory objects.

    Args:
        text: The model's reply (raw JSON, fenced JSON or JSON inside prose).
        source_ids: Message ids by prompt number (``sources: [1]`` is ``source_ids[0]``); a
            memory without valid sources is attributed to every message of the prompt.

    Raises:
        InvalidInputError: No JSON list of memories, or any item with a wrong category, key,
            content or confidence.
    """
    if not text.strip():
        raise InvalidInputError("LLM returned empty output")
    items: list[Any] | None = None
    for value in _json_values(text):
        if isinstance(value, dict) and isinstance(value.get("memories"), list):
            items = value["memories"]
            break
        if isinstance(value, list):
            items = value
            break
    if items is None:
        raise InvalidInputError("LLM output has no JSON list of memories")
    out = []
    all_ids = tuple(i for i in source_ids if i)
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInputError(f"memory {n} is {type(item).__name__}, not an object")
        category = item.get("category")
        if category not in CATEGORIES:
            raise InvalidInputError(f"memory {n} has category {category!r}")
        sources = item.get("sources")
        picked: tuple[str, ...] = ()
        if isinstance(sources, list):
            picked = tuple(
                dict.fromkeys(
                    source_ids[s - 1]
                    for s in sources
                    if isinstance(s, int)
                    and not isinstance(s, bool)
                    and 1 <= s <= len(source_ids)
                    and source_ids[s - 1]
                )
            )
        key: Any = item.get("key")
        content: Any = item.get("content")
        confidence: Any = item.get("confidence")
        try:
            out.append(MemoryCandidate(cast(Category, category), key, content, confidence, picked or all_ids))
        except InvalidInputError as exc:
            raise InvalidInputError(f"memory {n}: {exc}") from exc
    return out


@dataclass(frozen=True, slots=True)
class ExtractionOutcome:
    """What :meth:`LLMExtractor.extract_detailed` produced and whether a fallback ran.

    Attributes:
        candidates: All candidates, in message order of their prompts.
        used: ``"llm"`` when every prompt's reply was valid, ``"fallback"`` when the fallback
            extracted at least one prompt's messages.
        errors: Why each fallback ran, one entry per failed prompt.
    """

    candidates: tuple[MemoryCandidate, ...]
    used: Literal["llm", "fallback"]
    errors: tuple[str, ...] = field(default=())


class LLMExtractor:
    """Extract memories with an LLM; fall back to a deterministic extractor on any failure.

    The model is what :class:`ogmem_memory.LLMCompressor` takes: a plain ``callable(prompt) ->
    str``, a LangChain chat model or runnable (``invoke``) or a LlamaIndex LLM (``complete``).
    Long inputs are cut into prompts of at most ``max_input_tokens``; a prompt whose reply
    fails or is malformed has its messages extracted by ``fallback`` instead, logged as a
    WARNING on ``ogmem.extract``.
    """

    def __init__(
        self,
        llm: object,
        fallback: MemoryExtractor | None = None,
        *,
        max_input_tokens: int = 6000,
        token_counter: TokenCounter | Callable[[str], object] | None = None,
    ) -> None:
        if not (
            callable(getattr(llm, "invoke", None))
            or callable(getattr(llm, "complete", None))
            or callable(llm)
        ):
            raise ConfigError(
                f"llm must have invoke() or complete() or be callable, got {type(llm).__name__}"
            )
        self.llm = llm
        self.fallback: MemoryExtractor = fallback if fallback is not None else RuleBasedExtractor()
        self._counter = as_token_counter(token_counter)
        overhead = self._counter.count(self._prompt("x" * _MAX_SUMMARY_CHARS, ""))
        if max_input_tokens < overhead + 128:
            raise ConfigError(
                f"max_input_tokens={max_input_tokens} leaves no room; use at least {overhead + 128}"
            )
        self.max_input_tokens = max_input_tokens

    def extract(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> list[MemoryCandidate]:
        """Return the candidates of ``messages``; see :meth:`extract_detailed`."""
        return list(self.extract_detailed(messages, session_summary=session_summary).candidates)

    def extract_detailed(
        self, messages: Sequence[Mapping[str, Any]], *, session_summary: str = ""
    ) -> ExtractionOutcome:
        """Extract prompt by prompt, recording which prompts fell back and why."""
        summary = session_summary[-_MAX_SUMMARY_CHARS:]
        out: list[MemoryCandidate] = []
        errors: list[str] = []
        for chunk in self._chunks(messages, summary):
            lines = [line for _, line in chunk]
            ids = [_message_id(m) for m, _ in chunk]
            try:
                reply = call_llm(self.llm, self._prompt(summary, "\n".join(lines)))
                out.extend(parse_memories_output(reply, ids))
            except OgmemError as exc:
                errors.append(str(exc))
                logger.warning(
                    "LLM memory extraction failed (%s); using %s for %d messages",
                    exc,
                    type(self.fallback).__name__,
                    len(chunk),
                )
                out.extend(self.fallback.extract([m for m, _ in chunk], session_summary=session_summary))
        return ExtractionOutcome(tuple(out), "fallback" if errors else "llm", tuple(errors))

    def _chunks(
        self, messages: Sequence[Mapping[str, Any]], summary: str
    ) -> Iterator[list[tuple[Mapping[str, Any], str]]]:
        budget = self.max_input_tokens - self._counter.count(self._prompt(summary, "")) - _SAFETY_TOKENS
        chunk: list[tuple[Mapping[str, Any], str]] = []
        used = 0
        for message in messages:
            if not isinstance(message, Mapping):
                raise InvalidInputError(f"messages must be mappings, got {type(message).__name__}")
            role, text = message_role(message), one_line(message_text(message))
            if role not in ("user", "assistant") or not text:
                continue
            when = _message_time(message)
            stamp = f" ({when.date().isoformat()})" if when is not None else ""
            line = f"[{len(chunk) + 1}]{stamp} {role}: {text}"
            size = self._counter.count(line) + 1
            if chunk and used + size > budget:
                yield chunk
                chunk, used = [], 0
                line = f"[1]{stamp} {role}: {text}"
            if size > budget:  # one huge message: its beginning is what a prompt can hold
                line = line[: max(1, len(line) * budget // size)]
                size = budget
            chunk.append((message, line))
            used += size
        if chunk:
            yield chunk

    def _prompt(self, summary: str, conversation: str) -> str:
        already = _ALREADY.format(summary=summary) if summary.strip() else ""
        return _LLM_PROMPT.format(already=already, conversation=conversation)


__all__ = [
    "CATEGORIES",
    "Category",
    "ExtractionOutcome",
    "LLMExtractor",
    "MemoryCandidate",
    "MemoryExtractor",
    "MemoryRecord",
    "PlanAction",
    "RuleBasedExtractor",
    "WritePlan",
    "apply_plans",
    "is_single_valued",
    "memory_uri",
    "new_memory_id",
    "normalize_key",
    "parse_memories_output",
    "plan_writes",
    "profile_memories",
    "rank_memories",
    "render_memories",
    "tool_memories",
]
