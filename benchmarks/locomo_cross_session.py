"""LoCoMo across sessions: what one session of a user leaves for the next, on the public API.

Each LoCoMo session of a conversation is fed as its own ogmem session of one user
(``RequestContext(account_id="locomo", user_id=<conversation id>)``), the first speaker as
"user" and the second as "assistant", every message stamped with its session's date. When a
session ends it is committed and the commit waited for (``commit(wait=True)``: archive, then
long-term memory extraction, as an application closing a session would). The questions are then
asked in a NEW, empty session of that user: nothing of the earlier sessions is in its window or
archives, so what reaches the context is what the library carries across sessions: by default
the user's long-term memories (``Context.memories``); with ``MemoryConfig(recall_scope="user")``
(:class:`UserScopeMemory`) also the turns recalled from the user's other sessions and a digest of
their latest summaries.

The memories here plug into the shared scorer (``shared/bench/locomo_retention.py``) like
``locomo_plugin.OgmemMemory``: ``add(turn)`` and ``context(budget_tokens, query=None)``. The scorer
builds one memory per conversation, in the order of the data, without arguments, so
:class:`ConversationFactory` hands each one the id of its conversation (and checks it on the
first turn). Beside ogmem it provides the baselines and diagnostics the report prints:

- :class:`LastSessionTruncation`: the most recent turns *of the last session* that fit the budget
  (the scorer's own ``truncation`` keeps the most recent turns of the whole conversation).
- :class:`UserScopeMemory`: the same with ``recall_scope="user"``.
- :class:`AllMemories`: every memory extracted for the user, unbudgeted: its answer_hit is the
  share of answers present in the user's memories at all (the ceiling of memories-only recall).

``benchmarks/retention.py --cross-session`` prints the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from benchmarks.locomo_plugin import Turn, experiment_config, shared_embedder
from ogmem_memory import RequestContext, SessionManager, SQLiteStore

ACCOUNT: Final = "locomo"
NEW_SESSION: Final = "new-session"
SESSION_DATE_FORMAT: Final = "%I:%M %p on %d %B, %Y"  # LoCoMo's "1:56 pm on 8 May, 2023"


class SessionTurn(Turn, Protocol):
    """The scorer's turn with the LoCoMo session it belongs to and that session's date."""

    @property
    def session(self) -> int: ...

    @property
    def date(self) -> str: ...


def session_time(date: str) -> datetime | None:
    """A LoCoMo session date as a UTC timestamp (None when it does not parse)."""
    try:
        return datetime.strptime(date.strip(), SESSION_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


class CrossSessionMemory:
    """One LoCoMo conversation as sessions of one ogmem user; questions in a new session.

    Args:
        conversation_id: The user id (LoCoMo's ``sample_id``).
        first_turn: The conversation's first rendered turn, checked against the first ``add`` so a
            factory that hands out ids in the wrong order fails loudly instead of scoring nonsense.
    """

    name = "ogmem-cross-session"
    recall_scope: str | None = None  # None: the configuration's own (the default: "session")

    def __init__(self, conversation_id: str, first_turn: str | None = None) -> None:
        embedder = shared_embedder()
        store = SQLiteStore(":memory:")
        config = experiment_config()
        if self.recall_scope is not None:
            config = replace(config, recall_scope=self.recall_scope)
        if embedder is None:
            self.manager = SessionManager(store, config=config)
        else:
            self.manager = SessionManager(store, config=config, embedder=embedder)
        self.ctx = RequestContext(account_id=ACCOUNT, user_id=conversation_id)
        self._expected_first = first_turn
        self._roles: dict[str, str] = {}
        self._session: str | None = None
        self._open = False  # a session has messages that were not committed yet

    def session_id(self, turn: SessionTurn) -> str:
        """The ogmem session of a LoCoMo turn: one per LoCoMo session."""
        return f"{self.ctx.user_id}/session-{turn.session}"

    def add(self, turn: SessionTurn) -> None:
        """Store one turn in its session; a new session first commits (and extracts) the previous."""
        line = turn.render()
        if self._expected_first is not None:
            if line != self._expected_first:
                raise RuntimeError(f"conversation {self.ctx.user_id} was fed another conversation's turns")
            self._expected_first = None
        sid = self.session_id(turn)
        if self._session is not None and sid != self._session:
            self.end_session()
        self._session = sid
        role = self._roles.setdefault(turn.speaker, "user" if not self._roles else "assistant")
        when = session_time(turn.date)
        self.manager.add_message(sid, role, line, self.ctx, created_at=when)
        self._open = True

    def end_session(self) -> None:
        """What an app does when a session ends: commit it and wait (archive + memory extraction)."""
        if self._session is not None and self._open:
            self.manager.commit(self._session, self.ctx, wait=True)
            self._open = False
        self.manager.wait_for_tasks()

    def context(self, budget_tokens: int | None, query: str | None = None) -> str:
        """The context of a new, empty session of the user (``query`` as the question)."""
        self.end_session()
        budget = budget_tokens if budget_tokens is not None else 10**9
        return self.manager.get_context(NEW_SESSION, budget, self.ctx, query=query).to_text()

    def memory_texts(self) -> list[str]:
        """Every active memory of the user (for the diagnostics)."""
        self.end_session()
        return [m.content for m in self.manager.list_memories(self.ctx, limit=100_000)]

    def close(self) -> None:
        """Release the manager's workers and the store."""
        self.manager.close()


class UserScopeMemory(CrossSessionMemory):
    """The same, with ``MemoryConfig(recall_scope="user")``: recall reads every session of the user."""

    name = "ogmem-cross-session-user-scope"
    recall_scope = "user"


class AllMemories(CrossSessionMemory):
    """Diagnostic: every memory of the user, unbudgeted (are the answers in the memories at all?)."""

    name = "all-memories"

    def context(self, budget_tokens: int | None, query: str | None = None) -> str:
        return "\n".join(self.memory_texts())


class LastSessionTruncation:
    """Baseline: the most recent turns of the last session that fit the budget (scorer's rule)."""

    name = "truncation-last-session"

    def __init__(self, conversation_id: str = "", first_turn: str | None = None) -> None:
        del conversation_id, first_turn
        self._turns: list[SessionTurn] = []

    def add(self, turn: SessionTurn) -> None:
        if self._turns and turn.session != self._turns[-1].session:
            self._turns = []
        self._turns.append(turn)

    def context(self, budget_tokens: int | None, query: str | None = None) -> str:
        lines = [t.render() for t in self._turns]
        if budget_tokens is None:
            return "\n".join(lines)
        kept: list[str] = []
        used = 0
        for line in reversed(lines):
            cost = (len(line + "\n") + 3) // 4  # the scorer's approx_tokens
            if used + cost > budget_tokens:
                break
            kept.append(line)
            used += cost
        return "\n".join(reversed(kept))


class ConversationFactory:
    """``MEMORIES[name]`` for the scorer: the n-th call builds the memory of the n-th conversation.

    The scorer's ``evaluate`` creates one memory per conversation, in data order, once per
    budget; the ids cycle so one factory serves every budget. Each memory checks its first turn.
    """

    def __init__(
        self,
        data: Sequence[dict[str, Any]],
        first_turns: Sequence[str],
        memory: Callable[[str, str | None], Any],
    ) -> None:
        ids = [str(sample["sample_id"]) for sample in data]
        self._next: Iterator[tuple[str, str]] = itertools.cycle(list(zip(ids, first_turns, strict=True)))
        self._memory = memory
        self.built: list[Any] = []

    def __call__(self) -> Any:
        conversation_id, first = next(self._next)
        memory = self._memory(conversation_id, first)
        self.built.append(memory)
        return memory

    def close(self) -> None:
        """Close every memory built (the scorer never does)."""
        for memory in self.built:
            close = getattr(memory, "close", None)
            if close is not None:
                close()
        self.built.clear()


def first_turns(scorer: Any, data: Sequence[dict[str, Any]]) -> list[str]:
    """The first rendered turn of each conversation, as the scorer will feed it."""
    return [scorer.load_conversation(sample)[0].render() for sample in data]
