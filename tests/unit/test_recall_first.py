"""Recall for an explicit question (issue 11): recalled turns claim first, and a reply that asks
brings the turn that answers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ogmem_memory import MemoryConfig, SessionManager, SessionMessage
from ogmem_memory.models import new_message_id
from ogmem_memory.policy import (
    ANSWER_TO_REPLY_WEIGHT,
    NEIGHBOUR_WEIGHTS,
    ContextPlan,
    assemble_context,
    rank_with_neighbours,
)
from ogmem_memory.tokens import EstimatingTokenCounter
from tests.conftest import make_store

COUNTER = EstimatingTokenCounter()
SUMMARY = "## Facts\n- " + "the user plans a trip to Lisbon in May and books the flights early. " * 12


def msg(content: str, seq: int, role: str = "user", status: str = "archived") -> SessionMessage:
    return SessionMessage(
        id=new_message_id(),
        role=role,
        content=content,
        seq=seq,
        tokens=COUNTER.count(content),
        status=status,
        session_id="s",
    )


def test_a_reply_that_asks_brings_the_turn_that_answers_it() -> None:
    hit = msg("I finally finished my first screenplay", 10, "assistant")
    asks = msg("Wow! What is it about?", 11)
    answer = msg("A mix of drama and romance", 12, "assistant")
    before = msg("Long time no see", 9)
    around = {("s", m.seq): m for m in (before, asks, answer)}
    ranked = rank_with_neighbours([hit], around)
    assert [m.seq for m in ranked] == [10, 11, 9, 12]  # the answer after the reply's weight
    assert 0 < ANSWER_TO_REPLY_WEIGHT < NEIGHBOUR_WEIGHTS[-1] < NEIGHBOUR_WEIGHTS[1]
    # a reply that asks nothing: the turn after it is not the hit's business
    says = msg("Wow, congratulations.", 11)
    ranked = rank_with_neighbours([hit], {("s", m.seq): m for m in (before, says, answer)})
    assert [m.seq for m in ranked] == [10, 11, 9]
    # another session's turn at seq + 2 never joins
    other = {("s", 11): asks, ("t", 12): answer}
    assert [m.seq for m in rank_with_neighbours([hit], other)] == [10, 11]


WINDOW = [
    msg(f"small talk number {i} about nothing much at all", 100 + i, role, "active")
    for i, role in enumerate(["user", "assistant", "user", "assistant"])
]


def _plan(recalled: list[SessionMessage], *, recall_first: bool, budget: int = 260) -> ContextPlan:
    cfg = MemoryConfig(summary_share=0.5, recall_share=0.9, keep_recent_messages=2)
    return assemble_context(
        summary=SUMMARY,
        abstracts=[],
        recalled=recalled,
        messages=WINDOW,
        budget=budget,
        counter=COUNTER,
        cfg=cfg,
        recall_first=recall_first,
        session_id="s",
    )


def test_recalled_turns_claim_before_the_summary_for_a_question() -> None:
    recalled = [
        msg(f"fact {i}: the locker code at the gym was {1000 + i} last spring", i) for i in range(1, 9)
    ]
    first = _plan(recalled, recall_first=True)
    after = _plan(recalled, recall_first=False)
    assert len(first.recalled) > len(after.recalled)
    assert first.summary == "" or len(first.summary) < len(after.summary)
    for plan in (first, after):
        assert plan.token_count <= 260
        assert plan.messages[-1].seq == 103  # the current turn is always there
    # a question that recalls nothing still gets the overview
    empty = _plan([], recall_first=True)
    assert empty.summary and empty.summary_truncated == (empty.summary != SUMMARY)
    assert len(empty.summary) >= len(after.summary)


def test_a_recalled_turn_the_recent_messages_reach_moves_into_the_window() -> None:
    recalled = [WINDOW[1], msg("the locker code at the gym was 2291", 5)]
    plan = _plan(recalled, recall_first=True, budget=400)
    assert [m.seq for m in plan.recalled] == [5]
    assert 101 in [m.seq for m in plan.messages]
    assert plan.token_count <= 400


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_answer_two_turns_after_the_hit_is_in_a_small_context(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The answer shares no word with the question; it replies to a question about the hit.
    Fails when a hit brings only the turns right before and after it."""
    m = SessionManager(make_store(kind, tmp_path, request), config=MemoryConfig())
    m.add_message("s", "user", "Long time no see! What have you been up to?")
    m.add_message("s", "assistant", "I finally finished my first screenplay last Friday")
    m.add_message("s", "user", "Wow, that sounds awesome! What is it about?")
    m.add_message("s", "assistant", "It is a mix of drama and romance, set in Lisbon")
    for i in range(30):
        m.add_message("s", "user", f"shall we plan the week, item {i}: groceries, laundry and emails")
        m.add_message("s", "assistant", f"item {i} is on the list with the groceries and the laundry")
    assert m.commit("s", wait=True).archived
    m.add_message("s", "user", "thanks, that is all for today")
    ctx = m.get_context("s", 200, query="What genre is the first screenplay?")
    assert "drama and romance" in ctx.to_text()
    assert ctx.token_count <= 200
    m.close()
