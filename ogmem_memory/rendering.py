"""How a context reads as text: the preamble before the recent messages, and the turns.

Shared by ``policy`` (which counts what it renders), ``models.Context`` and the adapters,
so every place renders a context the same way. Depends on nothing but message fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

MEMORIES_HEADER: Final = "What is known about the user:\n"
SUMMARY_HEADER: Final = "Summary of the earlier conversation:\n"
ABSTRACTS_HEADER: Final = "Earlier parts of the conversation:\n"
RECALLED_HEADER: Final = "Recalled from earlier in the conversation:\n"
# recall_scope="user": recalled turns may come from the user's other sessions, each group labelled
RECALLED_SESSIONS_HEADER: Final = "Recalled from earlier conversations with the user:\n"
DIGEST_HEADER: Final = "The user's earlier sessions, newest first:\n"
THIS_SESSION_LABEL: Final = "[this session]"


class Turn(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


def session_label(session_id: str) -> str:
    """How a turn or summary of another session is labelled."""
    return f"[session {session_id}]"


def is_local(turn: Turn, session_id: str) -> bool:
    """True when ``turn`` belongs to the session ``session_id`` (or names no session)."""
    other = getattr(turn, "session_id", "")
    return not other or other == session_id


def render_turns(turns: Sequence[Turn]) -> str:
    """``role: content`` lines."""
    return "\n".join(f"{t.role}: {t.content}" for t in turns)


def render_recalled(recalled: Sequence[Turn], session_id: str = "") -> str:
    """The recalled section. Turns of other sessions (``recall_scope="user"``) come under a label
    naming their session, and the current session's under ``THIS_SESSION_LABEL``; with none from
    elsewhere it is the plain turns under ``RECALLED_HEADER``."""
    if all(is_local(t, session_id) for t in recalled):
        return RECALLED_HEADER + render_turns(recalled)
    lines: list[str] = []
    group: str | None = None
    for t in recalled:
        sid = "" if is_local(t, session_id) else str(getattr(t, "session_id", ""))
        if sid != group:
            lines.append(session_label(sid) if sid else THIS_SESSION_LABEL)
            group = sid
        lines.append(f"{t.role}: {t.content}")
    return RECALLED_SESSIONS_HEADER + "\n".join(lines)


def render_preamble(
    summary: str,
    abstracts: Sequence[str],
    recalled: Sequence[Turn],
    memories: Sequence[str] = (),
    *,
    digest: Sequence[str] = (),
    session_id: str = "",
) -> str:
    """The text a model reads before the recent messages (one system message in the adapters).

    ``session_id`` is the current session: recalled turns of other sessions are labelled.
    """
    parts: list[str] = []
    if memories:
        parts.append(MEMORIES_HEADER + "\n".join(f"- {m}" for m in memories))
    if summary:
        parts.append(SUMMARY_HEADER + summary)
    if digest:
        parts.append(DIGEST_HEADER + "\n\n".join(digest))
    if abstracts:
        parts.append(ABSTRACTS_HEADER + "\n".join(f"- {a}" for a in abstracts))
    if recalled:
        parts.append(render_recalled(recalled, session_id))
    return "\n\n".join(parts)
