"""Values the library passes around: messages, sessions, archives, contexts, results."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from ogmem_memory.rendering import render_preamble, render_turns

ROLES: Final[tuple[str, ...]] = ("user", "assistant", "system", "tool")
Role = Literal["user", "assistant", "system", "tool"]
Status = Literal["active", "archived"]

DEFAULT_ACCOUNT: Final = "default"
DEFAULT_USER: Final = "default"
DEFAULT_AGENT: Final = "default"


def utc_now() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """ISO-8601 with offset, the one timestamp format stored and exported."""
    return ts.isoformat()


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 (a trailing ``Z`` accepted) into a tz-aware datetime; naive is UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# Message ids come from a generator of their own, seeded from the OS and reseeded in a forked
# child (so parent and child never draw the same ids), not from os.urandom: an id is no secret
# (the store checks the owner), and a system call here would hand the GIL to a background
# commit in the middle of every add_message. Not the global ``random``: that is the caller's.
_IDS: Final = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.seed)


def new_message_id() -> str:
    """``msg_`` + 12 random lowercase hex digits."""
    return f"msg_{_IDS.getrandbits(48):012x}"


def new_archive_id(prefix: str = "") -> str:
    """``YYYYMMDD_HHMMSS_<8hex>`` in UTC, optionally prefixed (``merged_``)."""
    return f"{prefix}{utc_now().strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling: a session is bound to the account/user of its first writer."""

    account_id: str = DEFAULT_ACCOUNT
    user_id: str = DEFAULT_USER
    agent_id: str = DEFAULT_AGENT
    session_id: str = ""
    trace_id: str = ""
    role: str = "user"
    visible_owner_spaces: tuple[str, ...] = ()

    def user_space_name(self) -> str:
        return f"user:{self.user_id}"

    def agent_space_name(self) -> str:
        return f"agent:{self.agent_id}"

    @property
    def owner(self) -> tuple[str, str]:
        """``(account_id, user_id)``: the part of the identity a session is bound to."""
        return (self.account_id, self.user_id)


@dataclass(frozen=True, slots=True)
class SessionMessage:
    """One stored message.

    ``content`` is the plain-text view (counted, compressed, searched); ``payload`` is
    the framework's own serialised message so tool calls, ids and blocks round-trip.
    ``session_id`` names the session the message belongs to where a reader needs it (search
    results always carry it; it is not part of equality).
    """

    id: str
    role: str
    content: str
    created_at: datetime = field(default_factory=utc_now)
    payload: Mapping[str, Any] | None = None
    seq: int = 0
    tokens: int = 0
    status: Status = "active"
    archive_id: str | None = None
    session_id: str = field(default="", compare=False)

    @property
    def estimated_tokens(self) -> int:
        """The seed's name for ``tokens``."""
        return self.tokens

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "payload": dict(self.payload) if self.payload is not None else None,
            "created_at": iso(self.created_at),
            "tokens": self.tokens,
            "status": self.status,
            "archive_id": self.archive_id,
        }
        if self.session_id:
            out["session_id"] = self.session_id
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionMessage:
        created = data.get("created_at")
        return cls(
            id=str(data.get("id") or new_message_id()),
            role=str(data["role"]),
            content=str(data.get("content", "")),
            created_at=parse_iso(created) if isinstance(created, str) else (created or utc_now()),
            payload=data.get("payload"),
            seq=int(data.get("seq") or 0),
            tokens=int(data.get("tokens") or 0),
            status=data.get("status") or "active",
            archive_id=data.get("archive_id"),
            session_id=str(data.get("session_id") or ""),
        )


@dataclass(slots=True)
class SessionMeta:
    """Per-session counters (the seed's shape: all scalar so restore coercion works)."""

    session_id: str = ""
    account_id: str = ""
    user_id: str = ""
    agent_id: str = ""
    created_at: str = field(default_factory=lambda: iso(utc_now()))
    updated_at: str = ""
    message_count: int = 0
    commit_count: int = 0
    last_commit_at: str = ""


@dataclass(slots=True)
class SessionWindowState:
    """Rolling working state of a session (not chat history)."""

    compressed_text: str = ""
    turn_count_at_last_compress: int = 0
    token_count_at_last_compress: int = 0
    skills_text: str = ""
    active_task: str = ""
    confirmed_constraints: list[str] = field(default_factory=list)
    recent_decisions: list[str] = field(default_factory=list)
    open_loops: list[str] = field(default_factory=list)
    uncertainties: list[str] = field(default_factory=list)
    session_state_sync_turn_count: int = 0
    last_accessed_at: str = ""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as the store knows it."""

    session_id: str
    account_id: str
    user_id: str
    agent_id: str
    created_at: datetime
    updated_at: datetime
    message_count: int = 0
    last_seq: int = 0
    archive_version: int = 0
    commit_count: int = 0
    last_commit_at: datetime | None = None
    epoch: str = ""

    @property
    def owner(self) -> tuple[str, str]:
        return (self.account_id, self.user_id)

    @property
    def head(self) -> SessionHead:
        return SessionHead(self.last_seq, self.archive_version, self.epoch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "message_count": self.message_count,
            "last_seq": self.last_seq,
            "commit_count": self.commit_count,
            "last_commit_at": iso(self.last_commit_at) if self.last_commit_at else "",
        }


@dataclass(frozen=True, slots=True)
class SessionHead:
    """The cheap fingerprint a process compares with its cache.

    ``epoch`` is drawn anew each time the session id is created, so a session deleted and
    re-created (by anyone, in any process) never matches a cache of the old one;
    ``archive_version`` changes at every commit, merge, clear and replace; ``last_seq`` at
    every append.
    """

    last_seq: int
    archive_version: int
    epoch: str = ""


def new_epoch() -> str:
    """A fresh session epoch: 16 random hex digits."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class WindowRead:
    """What one consistent read of a session's live window returned (``SessionStore.read_window``).

    ``full`` means ``messages`` is the whole active set and ``archives`` the newest live
    archives; otherwise ``messages`` holds only the active messages after the cached head
    and ``archives`` is empty (unchanged).
    """

    record: SessionRecord
    full: bool
    messages: tuple[SessionMessage, ...] = ()
    archives: tuple[ArchiveEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What ``SessionStore.append`` did, in one transaction.

    ``messages`` are the stored messages in input order: for an id the session already
    held, the stored message (a repeated write is a no-op). ``added`` counts the new ones.
    """

    record: SessionRecord
    messages: tuple[SessionMessage, ...]
    added: int
    created: bool = False


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """A committed span of a session: its summary and the seq range of its (kept) messages."""

    archive_id: str
    session_id: str
    overview: str
    abstract: str
    first_seq: int
    last_seq: int
    message_count: int
    token_count: int = 0
    created_at: datetime = field(default_factory=utc_now)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    merged_into: str = ""
    messages: tuple[SessionMessage, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "archive_id": self.archive_id,
            "session_id": self.session_id,
            "overview": self.overview,
            "abstract": self.abstract,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "message_count": self.message_count,
            "token_count": self.token_count,
            "created_at": iso(self.created_at),
            "metadata": dict(self.metadata),
            "merged_into": self.merged_into,
            "messages": [m.to_dict() for m in self.messages],
        }


@dataclass(frozen=True, slots=True)
class ArchiveWriteResult:
    """Outcome of an archive write (the seed reads these fields by attribute)."""

    archive_id: str
    session_id: str
    uri: str
    success: bool
    error: str | None = None
    created_at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class Context:
    """What ``get_context`` returns: everything a model should read, within ``budget``.

    Attributes:
        summary: The running summary (latest archive overview), possibly truncated to fit.
        abstracts: One-line abstracts of older archives that fit.
        recalled: Earlier messages relevant to the query, in conversation order: archived ones,
            and live ones a small budget leaves out of ``messages`` (with
            ``recall_scope="user"``: grouped by session, the user's other sessions first; each
            message's ``session_id`` names its session, and the text labels the groups).
        messages: The recent messages, in order (active ones, preceded by the archived turns
            just before them when the budget has room).
        memories: The user's long-term memories relevant to the query (else the profile).
        digest: With ``recall_scope="user"``, in a session with no archives of its own: the
            summaries of the user's latest other sessions, newest first, each labelled with its
            session.
        state: Task state, open loops, decisions and constraints.
        token_count: Tokens of all of the above (``<= budget``).
        budget: The token budget it was assembled for.
    """

    session_id: str
    summary: str
    abstracts: tuple[str, ...]
    recalled: tuple[SessionMessage, ...]
    messages: tuple[SessionMessage, ...]
    state: Mapping[str, Any]
    token_count: int
    budget: int
    query: str | None = None
    pending_tokens: int = 0
    active_message_count: int = 0
    archives: tuple[ArchiveEntry, ...] = ()
    dropped_messages: int = 0
    summary_truncated: bool = False
    memories: tuple[str, ...] = ()
    digest: tuple[str, ...] = ()

    def to_text(self) -> str:
        """Plain text of everything in the context, as a model would read it."""
        recent = render_turns(self.messages)
        return "\n\n".join(part for part in (self.preamble(), recent) if part)

    def preamble(self) -> str:
        """Memories, summary, abstracts and recalled turns as one text (the adapters' leading
        system message)."""
        return render_preamble(
            self.summary,
            self.abstracts,
            self.recalled,
            self.memories,
            digest=self.digest,
            session_id=self.session_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed's ``get_context`` dict plus the assembled parts."""
        return {
            "ok": True,
            "session_id": self.session_id,
            "pending_tokens": self.pending_tokens,
            "estimatedTokens": self.token_count,
            "active_message_count": self.active_message_count,
            "archive_count": len(self.archives),
            "latest_archive_overview": self.archives[0].overview if self.archives else "",
            "archives": [{"archive_id": a.archive_id, "abstract": a.abstract} for a in self.archives],
            "summary": self.summary,
            "abstracts": list(self.abstracts),
            "recalled": [m.to_dict() for m in self.recalled],
            "messages": [m.to_dict() for m in self.messages],
            "state": dict(self.state),
            "token_count": self.token_count,
            "budget": self.budget,
            "dropped_messages": self.dropped_messages,
            "memories": list(self.memories),
            "digest": list(self.digest),
        }


@dataclass(frozen=True, slots=True)
class CommitResult:
    """Outcome of ``commit``/``commit_snapshot``; ``to_dict()`` gives the seed's shapes."""

    ok: bool
    archived: bool
    archive_id: str | None = None
    task_id: str | None = None
    status: str | None = None
    error: str | None = None
    reason: str | None = None
    archive_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.reason is not None:
            return {"ok": self.ok, "archived": self.archived, "reason": self.reason}
        out: dict[str, Any] = {
            "ok": self.ok,
            "archived": self.archived,
            "archive_id": self.archive_id,
            "task_id": self.task_id,
            "status": self.status,
        }
        if self.status != "processing":
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``add_message`` stored; ``to_dict()`` gives the seed's shape."""

    message: SessionMessage
    pending_tokens: int

    @property
    def ok(self) -> bool:
        return True

    @property
    def message_id(self) -> str:
        return self.message.id

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "message_id": self.message.id, "pending_tokens": self.pending_tokens}
