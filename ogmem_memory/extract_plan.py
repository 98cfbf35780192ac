"""Write planning (pure): how a candidate relates to the stored memories, and what that changes.

:func:`plan_writes` decides, per candidate, ``create | merge | update | skip``;
:func:`apply_plans` turns the plans into the records to upsert and the seed's
``commit_session`` result.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

from ogmem_memory.errors import AccessDeniedError, ConfigError, InvalidInputError
from ogmem_memory.extract_records import (
    MAX_HISTORY,
    MAX_SOURCES,
    MemoryCandidate,
    MemoryRecord,
    check_time,
    is_single_valued,
    new_memory_id,
)
from ogmem_memory.extract_text import SIG_STOP, TOKEN_RE, stem, word_set
from ogmem_memory.models import RequestContext, utc_now

PlanAction = Literal["create", "merge", "update", "skip"]
# Token Jaccard at or above this is the same statement worded slightly differently.
NEAR_DUPLICATE_JACCARD: Final = 0.8
BELOW_THRESHOLD: Final = "below the confidence threshold"

# A statement's stance: "likes Python" and "hates Python" are about one subject, reversed.
_POSITIVE: Final = word_set(
    "like likes liked love loves loved adore adores enjoy enjoys enjoyed prefer prefers preferred "
    "fond favourite favorite fan passionate obsessed"
)
_NEGATIVE: Final = word_set(
    "hate hates hated dislike dislikes disliked detest detests loathe loathes despise despises allergic stand"
)
_NEGATION: Final = word_set("not no never doesn don didn isn aren wasn cannot t")


@dataclass(frozen=True, slots=True)
class _Signature:
    words: frozenset[str]
    polarity: str  # "+", "-" or "" (no stance)


def _signature(content: str) -> _Signature:
    tokens = TOKEN_RE.findall(content.casefold())
    negative = any(t in _NEGATIVE for t in tokens)
    positive = any(t in _POSITIVE for t in tokens)
    negated = any(t in _NEGATION for t in tokens)
    polarity = "-" if negative or (positive and negated) else "+" if positive else ""
    words = frozenset(
        stem(t)
        for t in tokens
        if t not in SIG_STOP and t not in _POSITIVE and t not in _NEGATIVE and t not in _NEGATION
    )
    return _Signature(words, polarity)


def content_signature(category: str, content: str) -> str | None:
    """What :func:`plan_writes` treats as "the same content" (category, stance, the significant
    stemmed words) as one short string; ``None`` when the content has no significant word.

    Two memories with equal signatures are found by the planner's same-content rule, so an
    index of memories by signature finds every memory that rule can pick.
    """
    sig = _signature(content)
    if not sig.words:
        return None
    digest = hashlib.blake2b("\x1f".join(sorted(sig.words)).encode(), digest_size=12).hexdigest()
    return f"{category}:{sig.polarity or '0'}:{digest}"


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


def _created(
    plan: WritePlan, memory_id: str, ctx: RequestContext, session_id: str, now: datetime
) -> MemoryRecord:
    """The new memory a create plan writes: ``ctx``'s, learned in ``session_id`` at ``now``."""
    cand = plan.candidate
    return MemoryRecord(
        memory_id=memory_id,
        account_id=ctx.account_id,
        user_id=ctx.user_id,
        agent_id=ctx.agent_id,
        # where it was learned, what it says (as the candidate said it), and when
        source_session_id=session_id,
        source_message_ids=cand.source_message_ids[-MAX_SOURCES:],
        category=cand.category,
        key=cand.key,
        content=cand.content,
        confidence=cand.confidence,
        created_at=now,
        updated_at=now,
    )


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
    moment = utc_now() if now is None else check_time(now, "now")
    sid = ctx.session_id if session_id is None else session_id
    by_id = {r.memory_id: r for r in existing}
    current: dict[str, MemoryRecord] = {}
    created: dict[int, str] = {}
    out_plans: list[dict[str, Any]] = []
    filtered = 0
    for i, plan in enumerate(plans):
        if plan.action == "skip":
            filtered += plan.reason.startswith(BELOW_THRESHOLD)
            out_plans.append(_result_plan(plan, None, "skip", []))
            continue
        if plan.action == "create":
            memory_id = new_id()
            if memory_id in by_id or memory_id in current:
                raise InvalidInputError(f"new_id returned {memory_id!r} twice")
            record = _created(plan, memory_id, ctx, sid, moment)
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
