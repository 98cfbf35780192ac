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


class Turn(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


def render_turns(turns: Sequence[Turn]) -> str:
    """``role: content`` lines."""
    return "\n".join(f"{t.role}: {t.content}" for t in turns)


def render_preamble(
    summary: str, abstracts: Sequence[str], recalled: Sequence[Turn], memories: Sequence[str] = ()
) -> str:
    """The text a model reads before the recent messages (one system message in the adapters)."""
    parts: list[str] = []
    if memories:
        parts.append(MEMORIES_HEADER + "\n".join(f"- {m}" for m in memories))
    if summary:
        parts.append(SUMMARY_HEADER + summary)
    if abstracts:
        parts.append(ABSTRACTS_HEADER + "\n".join(f"- {a}" for a in abstracts))
    if recalled:
        parts.append(RECALLED_HEADER + render_turns(recalled))
    return "\n\n".join(parts)
