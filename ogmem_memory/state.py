"""Durable per-session task state and commitments, and their bridge to the runtime window state.

``SessionState`` holds what a session is trying to do (``TaskState``) and what was promised,
decided or left open (``Commitment``). Two functions move information between it and the
runtime window state: :func:`sync_runtime_to_durable` before a save and
:func:`apply_session_state_bridge` after a load.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from urllib.parse import quote

from ogmem_memory.errors import InvalidInputError, InvalidSessionIdError

STATE_PAYLOAD_VERSION: Final[int] = 1

OPEN: Final[str] = "open"
FULFILLED: Final[str] = "fulfilled"
EXPIRED: Final[str] = "expired"
COMMITMENT_STATUSES: Final[frozenset[str]] = frozenset({OPEN, FULFILLED, EXPIRED})

KIND_COMMITMENT: Final[str] = "commitment"
KIND_LOOP: Final[str] = "loop"
KIND_CONSTRAINT: Final[str] = "constraint"
KIND_DECISION: Final[str] = "decision"
_LOOP_KINDS: Final[frozenset[str]] = frozenset({KIND_LOOP, KIND_COMMITMENT})


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class TaskState:
    """What a session is working on. ``None`` fields mean "unknown" (and "keep" in an update).

    Attributes:
        objective: The overall goal.
        current_stage: Where the work stands.
        next_step: What should happen next.
        blockers: Open questions or obstacles (a list is accepted and stored as a tuple).
    """

    objective: str | None = None
    current_stage: str | None = None
    next_step: str | None = None
    blockers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "blockers", tuple(self.blockers))

    def is_empty(self) -> bool:
        """Return whether no field carries information."""
        return not (self.objective or self.current_stage or self.next_step or self.blockers)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape stored in the state payload."""
        return {
            "objective": self.objective,
            "current_stage": self.current_stage,
            "next_step": self.next_step,
            "blockers": list(self.blockers),
        }


@dataclass(frozen=True, slots=True)
class Commitment:
    """Something promised, decided, constrained or left open in a session.

    Attributes:
        content: The commitment in words.
        status: ``open``, ``fulfilled`` or ``expired``.
        kind: ``commitment``, ``loop``, ``constraint`` or ``decision`` (free text is kept).
        created_at: ISO-8601 UTC with offset; defaults to now.
        resolved_at: When it stopped being open, or ``None``.

    Raises:
        InvalidInputError: ``status`` is not one of the three statuses.
    """

    content: str
    status: str = OPEN
    kind: str = KIND_COMMITMENT
    created_at: str = field(default_factory=_utc_now)
    resolved_at: str | None = None

    def __post_init__(self) -> None:
        if self.status not in COMMITMENT_STATUSES:
            raise InvalidInputError(f"unknown commitment status {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape stored in the state payload."""
        return dataclasses.asdict(self)


class WindowStateLike(Protocol):
    """The runtime window-state fields the bridge and the sync read and write."""

    active_task: str
    confirmed_constraints: list[str]
    recent_decisions: list[str]
    open_loops: list[str]
    uncertainties: list[str]
    session_state_sync_turn_count: int


class SessionState:
    """Task state and commitments of every session; safe to share between threads."""

    def __init__(self) -> None:
        # Re-entrant so the module functions can hold it across several public calls.
        self._lock = threading.RLock()
        self._tasks: dict[str, TaskState] = {}
        self._commitments: dict[str, list[Commitment]] = {}

    def get_task_state(self, session_id: str) -> TaskState:
        """Return the session's task state; an empty one when nothing is known."""
        with self._lock:
            return self._tasks.get(session_id, TaskState())

    def update_task_state(self, session_id: str, partial: TaskState) -> TaskState:
        """Merge a partial update into the session's task state.

        Args:
            session_id: Session to update.
            partial: Scalars that are not ``None`` overwrite; ``blockers`` replace the
                current ones only when non-empty.

        Returns:
            The task state after the update.
        """
        with self._lock:
            current = self.get_task_state(session_id)
            updated = TaskState(
                objective=_pick(partial.objective, current.objective),
                current_stage=_pick(partial.current_stage, current.current_stage),
                next_step=_pick(partial.next_step, current.next_step),
                blockers=partial.blockers or current.blockers,
            )
            self._tasks[session_id] = updated
            return updated

    def get_commitments(self, session_id: str, status: str | None = OPEN) -> list[Commitment]:
        """Return the session's commitments with ``status`` (``None``: all), oldest first."""
        with self._lock:
            items = self._commitments.get(session_id, [])
            return [c for c in items if status is None or c.status == status]

    def add_commitment(self, session_id: str, commitment: Commitment) -> None:
        """Append a commitment to the session."""
        with self._lock:
            self._commitments.setdefault(session_id, []).append(commitment)

    def resolve_commitment(self, session_id: str, content: str) -> int:
        """Mark every open commitment whose text contains ``content`` as fulfilled.

        Args:
            session_id: Session whose commitments to resolve.
            content: Text to look for (case-sensitive substring); blank resolves nothing.

        Returns:
            How many commitments were resolved.
        """
        needle = content.strip()
        if not needle:
            return 0
        resolved_at = _utc_now()
        count = 0
        with self._lock:
            items = self._commitments.get(session_id, [])
            for i, item in enumerate(items):
                if item.status == OPEN and needle in item.content:
                    items[i] = dataclasses.replace(item, status=FULFILLED, resolved_at=resolved_at)
                    count += 1
        return count

    def get_open_loops(self, session_id: str) -> list[Commitment]:
        """Return the session's open commitments of every kind, oldest first."""
        return self.get_commitments(session_id, status=OPEN)

    def clear_session(self, session_id: str) -> None:
        """Forget the session's task state and commitments."""
        with self._lock:
            self._tasks.pop(session_id, None)
            self._commitments.pop(session_id, None)

    def has_state(self, session_id: str) -> bool:
        """Return whether the session has any task information or any commitment."""
        with self._lock:
            return not self.get_task_state(session_id).is_empty() or bool(self._commitments.get(session_id))

    @staticmethod
    def state_uri(account_id: str, session_id: str) -> str:
        """Return where the session's state is persisted: ``ctx://{account}/sessions/{sid}/state``.

        Both ids are percent-encoded as single path segments, so an id such as ``../x``
        cannot address another path.

        Raises:
            InvalidSessionIdError: ``session_id`` is empty.
            InvalidInputError: ``account_id`` is empty.
        """
        if not session_id:
            raise InvalidSessionIdError("session id must not be empty")
        if not account_id:
            raise InvalidInputError("account id must not be empty")
        return f"ctx://{_segment(account_id)}/sessions/{_segment(session_id)}/state"

    def to_dict(
        self,
        session_id: str,
        *,
        session_meta: object | None = None,
        window_state: object | None = None,
        extraction_summary: str | None = None,
    ) -> dict[str, Any]:
        """Build the JSON-serialisable payload persisted for a session.

        Args:
            session_id: Session to serialise.
            session_meta: Session metadata (a dataclass, a mapping or a plain object), or ``None``.
            window_state: Runtime window state (same forms), or ``None``.
            extraction_summary: Summary of already-extracted content, or ``None``.

        Returns:
            ``version``, ``session_id``, ``task_state``, ``commitments``, ``session_meta``,
            ``window_state``, ``extraction_summary`` and ``updated_at``.
        """
        with self._lock:
            task = self.get_task_state(session_id)
            commitments = self.get_commitments(session_id, status=None)
        return {
            "version": STATE_PAYLOAD_VERSION,
            "session_id": session_id,
            "task_state": task.to_dict(),
            "commitments": [c.to_dict() for c in commitments],
            "session_meta": _plain(session_meta),
            "window_state": _plain(window_state),
            "extraction_summary": extraction_summary,
            "updated_at": _utc_now(),
        }

    def load_payload(self, session_id: str, payload: Mapping[str, Any] | None) -> bool:
        """Replace the session's task state and commitments from a :meth:`to_dict` payload.

        Each part is replaced only when it is present and well formed; malformed commitments
        are skipped. A payload written for another session is refused.

        Returns:
            Whether anything was loaded.
        """
        if not isinstance(payload, Mapping):
            return False
        owner = payload.get("session_id")
        if owner is not None and owner != session_id:
            return False
        task = _parse_task(payload.get("task_state"))
        commitments = _parse_commitments(payload.get("commitments"))
        with self._lock:
            if task is not None:
                self._tasks[session_id] = task
            if commitments is not None:
                self._commitments[session_id] = commitments
        return task is not None or commitments is not None


def sync_runtime_to_durable(
    session_state: SessionState, session_id: str, window_state: WindowStateLike
) -> None:
    """Promote runtime window state into durable state before a save (seed M10).

    The objective is filled from ``active_task`` and the blockers from ``uncertainties`` only
    when the durable ones are empty. Open loops, confirmed constraints and recent decisions are
    appended as commitments (``open``/``loop``, ``fulfilled``/``constraint``,
    ``fulfilled``/``decision``), stripped, blanks skipped and de-duplicated by
    ``(content, status, kind)``. Nothing is ever resolved or removed.
    """
    with session_state._lock:  # one atomic check-then-add against concurrent saves
        current = session_state.get_task_state(session_id)
        objective = _text(window_state.active_task)
        blockers = tuple(_strings(window_state.uncertainties))
        update = TaskState(
            objective=objective if objective and not current.objective else None,
            blockers=blockers if not current.blockers else (),
        )
        if not update.is_empty():
            session_state.update_task_state(session_id, update)

        seen = {(c.content, c.status, c.kind) for c in session_state.get_commitments(session_id, None)}
        batches = (
            (window_state.open_loops, OPEN, KIND_LOOP),
            (window_state.confirmed_constraints, FULFILLED, KIND_CONSTRAINT),
            (window_state.recent_decisions, FULFILLED, KIND_DECISION),
        )
        for entries, status, kind in batches:
            for content in _strings(entries):
                if (content, status, kind) not in seen:
                    seen.add((content, status, kind))
                    session_state.add_commitment(
                        session_id, Commitment(content=content, status=status, kind=kind)
                    )


def apply_session_state_bridge(
    window_state: WindowStateLike,
    session_state: SessionState,
    session_id: str,
    *,
    turn_count: int,
    force: bool = False,
    sync_interval: int = 5,
    max_items: int = 8,
) -> bool:
    """Project durable task state and commitments back into the runtime window state.

    Fills ``active_task`` (when empty) from the objective or current stage; merges open
    loop/commitment items into ``open_loops``, constraints into ``confirmed_constraints``,
    decisions into ``recent_decisions`` and blockers into ``uncertainties``. Runtime entries
    keep their place and win when a list is full; durable entries fill the free places, most
    recent first; every list is stripped, de-duplicated and capped. Open loops that the durable
    state knows as fulfilled or expired are dropped. Running it twice changes nothing.

    Args:
        window_state: Runtime state to update in place.
        session_state: Durable state to read.
        session_id: Session to bridge.
        turn_count: The session's current user-turn count; stored as the sync marker.
        force: Bridge even when fewer than ``sync_interval`` turns passed since the last one.
        sync_interval: Turns between two unforced bridges.
        max_items: Largest length of each list.

    Returns:
        Whether any runtime field other than the sync marker changed.

    Raises:
        InvalidInputError: ``max_items`` is below 1.
    """
    if max_items < 1:
        raise InvalidInputError(f"max_items must be at least 1, got {max_items}")
    last = _int(window_state.session_state_sync_turn_count)
    # A turn count below the marker means the session restarted: bridge rather than wait.
    if not force and 0 <= turn_count - last < sync_interval:
        return False
    with session_state._lock:
        task = session_state.get_task_state(session_id)
        commitments = session_state.get_commitments(session_id, status=None)
    window_state.session_state_sync_turn_count = turn_count

    def contents(kinds: Iterable[str], statuses: Iterable[str]) -> list[str]:
        return [c.content for c in commitments if c.kind in kinds and c.status in statuses]

    open_loops = contents(_LOOP_KINDS, (OPEN,))
    closed = set(map(_key, contents(_LOOP_KINDS, (FULFILLED, EXPIRED)))) - set(map(_key, open_loops))
    runtime_loops = [s for s in _strings(window_state.open_loops) if _key(s) not in closed]
    updates = {
        "open_loops": _merge(runtime_loops, open_loops, max_items),
        "confirmed_constraints": _merge(
            window_state.confirmed_constraints,
            contents((KIND_CONSTRAINT,), (OPEN, FULFILLED)),
            max_items,
        ),
        "recent_decisions": _merge(
            window_state.recent_decisions,
            contents((KIND_DECISION,), (OPEN, FULFILLED)),
            max_items,
        ),
        "uncertainties": _merge(window_state.uncertainties, list(task.blockers), max_items),
    }
    changed = False
    for name, merged in updates.items():
        if getattr(window_state, name) != merged:
            setattr(window_state, name, merged)
            changed = True
    if not _text(window_state.active_task):
        active = _text(task.objective) or _text(task.current_stage)
        if active:
            window_state.active_task = active
            changed = True
    return changed


def _pick(new: str | None, old: str | None) -> str | None:
    return old if new is None else new


def _segment(value: str) -> str:
    encoded = quote(value, safe="")
    # quote() leaves dots alone, and "." or ".." would still be a path step.
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(value) if isinstance(value, str | float) else 0
    except (ValueError, OverflowError):
        return 0


def _strings(values: object) -> list[str]:
    """Stripped non-blank strings of a list; anything else (restored junk) yields nothing."""
    if not isinstance(values, list | tuple):
        return []
    return [s for s in (_text(v) for v in values) if s]


def _key(text: str) -> str:
    return " ".join(text.split())


def _merge(runtime: list[str], durable: list[str], cap: int) -> list[str]:
    kept = _dedup(_strings(runtime))[-cap:]
    seen = {_key(s) for s in kept}
    extra = [s for s in _dedup(_strings(durable)) if _key(s) not in seen]
    room = cap - len(kept)
    return kept + (extra[-room:] if room > 0 else [])


def _dedup(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if _key(item) not in seen:
            seen.add(_key(item))
            out.append(item)
    return out


def _plain(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        raw: Mapping[Any, Any] = dataclasses.asdict(value)
    elif isinstance(value, Mapping):
        raw = value
    elif hasattr(value, "__dict__"):
        raw = {k: v for k, v in vars(value).items() if not k.startswith("_")}
    else:
        raise InvalidInputError(f"cannot serialise {type(value).__name__} into a state payload")
    return {str(k): _jsonable(v) for k, v in raw.items()}


def _jsonable(value: object) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def _parse_task(raw: object) -> TaskState | None:
    if not isinstance(raw, Mapping):
        return None

    def scalar(name: str) -> str | None:
        value = raw.get(name)
        return value if isinstance(value, str) else None

    return TaskState(
        objective=scalar("objective"),
        current_stage=scalar("current_stage"),
        next_step=scalar("next_step"),
        blockers=tuple(_strings(raw.get("blockers"))),
    )


def _parse_commitments(raw: object) -> list[Commitment] | None:
    if not isinstance(raw, list | tuple):
        return None
    out: list[Commitment] = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        content, status = _text(item.get("content")), item.get("status", OPEN)
        if not content or status not in COMMITMENT_STATUSES:
            continue
        resolved_at = item.get("resolved_at")
        out.append(
            Commitment(
                content=content,
                status=status,
                kind=_text(item.get("kind")) or KIND_COMMITMENT,
                created_at=_text(item.get("created_at")) or _utc_now(),
                resolved_at=resolved_at if isinstance(resolved_at, str) else None,
            )
        )
    return out


__all__ = [
    "COMMITMENT_STATUSES",
    "EXPIRED",
    "FULFILLED",
    "KIND_COMMITMENT",
    "KIND_CONSTRAINT",
    "KIND_DECISION",
    "KIND_LOOP",
    "OPEN",
    "STATE_PAYLOAD_VERSION",
    "Commitment",
    "SessionState",
    "TaskState",
    "WindowStateLike",
    "apply_session_state_bridge",
    "sync_runtime_to_durable",
]
