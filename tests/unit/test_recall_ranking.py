"""Lexical recall ranking (issue 11): passages, the live window's matches, term weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from ogmem_memory import MemoryConfig, SessionManager, SessionMessage
from ogmem_memory.models import new_message_id
from ogmem_memory.recall import PASSAGE_WEIGHTS, merge_window_hits, rank_by_term_hits, term_weight
from ogmem_memory.tokens import EstimatingTokenCounter
from tests.conftest import make_store

COUNTER = EstimatingTokenCounter()


def msg(content: str, seq: int, status: str = "archived", role: str = "user") -> SessionMessage:
    return SessionMessage(
        id=new_message_id(), role=role, content=content, seq=seq, tokens=COUNTER.count(content), status=status
    )


def test_term_weight_counts_rarity_not_length() -> None:
    assert term_weight("ox", 3) > term_weight("ox", 30) > term_weight("ox", 200) > 0
    assert term_weight("ox", 7) == term_weight("hippopotamus", 7)


def test_a_reply_scores_with_the_words_of_the_turn_it_answers() -> None:
    # ids 1..4 in one session; "dog" is in 1 and 3, "name" in 1 and 4; 2 answers 1
    hits = {"dog": [1, 3], "name": [1, 4]}
    positions = {k: ("s", k) for k in (1, 2, 3, 4)}
    assert rank_by_term_hits(hits, 10) == [1, 3, 4]  # without positions: matched ids only
    ranked = rank_by_term_hits(hits, 10, positions)
    assert ranked[0] == 1
    # 3 and 4 match one term each; 2 matches none, so it is not a candidate: 4 gets "dog" from 3
    # (the turn before it) on top of its own "name", and outranks 3
    assert ranked.index(4) < ranked.index(3)
    assert set(ranked) == {1, 3, 4}
    # the turn after counts less than the turn before
    before, after = PASSAGE_WEIGHTS
    assert 0 < after < before < 1
    # another session's neighbour never counts
    apart = {1: ("a", 1), 3: ("b", 2), 4: ("a", 3)}
    assert rank_by_term_hits({"dog": [3], "name": [4]}, 10, apart) == [3, 4]


def test_window_matches_go_before_the_archived_hits_they_outscore() -> None:
    archived = [msg("we talked about the weather in March", 3), msg("the weather again", 5)]
    window = [msg(f"small talk {i}", 100 + i, "active") for i in range(20)]
    window[4] = msg("my passport number ends in 7731, the Lisbon trip is on", 104, "active")
    merged = merge_window_hits("passport for the Lisbon trip, and the weather", archived, window, 8)
    assert merged[0].seq == 104  # three rare terms beat one
    assert [m.seq for m in merged[1:]] == [3, 5]  # the archive's own order is kept
    archived = [archived[0], msg("rain again in the evening", 5)]  # no query word: a weak hit
    weak = merge_window_hits("weather in March", archived, [msg("weather, weather", 200, "active")], 8)
    assert [m.seq for m in weak] == [3, 200, 5]  # it outscores only the second hit
    assert merge_window_hits("", archived, window, 8) == archived
    assert merge_window_hits("passport", archived, window, 0) == archived
    assert merge_window_hits("passport", [], [], 8) == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_fact_in_the_live_window_the_budget_cannot_show_is_recalled(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The live window holds up to a commit threshold of turns: more than a small budget shows."""
    m = SessionManager(make_store(kind, tmp_path, request), config=MemoryConfig())
    m.add_message("s", "user", "old news: the garage door opener runs on a 12 volt battery")
    m.add_message("s", "assistant", "noted, 12 volt for the opener")
    assert m.commit("s", wait=True).archived
    m.add_message("s", "user", "my new locker at the climbing gym is number 2291")
    m.add_message("s", "assistant", "locker 2291 at the climbing gym, noted")
    for i in range(40):
        m.add_message("s", "user", f"let us plan the week, item {i}: groceries, laundry and emails")
        m.add_message("s", "assistant", f"item {i} is on the list with the groceries and the laundry")
    ctx = m.get_context("s", 300, query="What is the number of my locker at the climbing gym?")
    assert "2291" in ctx.to_text()
    assert not {r.id for r in ctx.recalled} & {x.id for x in ctx.messages}
    assert ctx.token_count <= 300
    ctx = m.get_context("s", 300, query="Which battery does the garage door opener use?")
    assert "12 volt" in ctx.to_text()
    m.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_store_ranks_the_reply_to_a_matching_question_above_a_lookalike(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two turns share the same query words; the one answering a question that has the other
    query words ranks first. Fails when each message counts only its own words (the tie then
    goes to the earlier lookalike)."""
    store = make_store(kind, tmp_path, request)
    m = SessionManager(store, config=MemoryConfig())
    turns = [
        ("user", "the neighbours bought a new puppy, a loud one"),
        ("assistant", "loud dogs are the worst at night"),
        ("user", "so what name did you choose?"),
        ("assistant", "Biscuit! our new puppy loves it"),
    ]
    for role, text in turns:
        m.add_message("s", role, text)
    assert m.commit("s", wait=True).archived
    hits = store.search_messages("What name did the new puppy get?", session_id="s", status="archived")
    texts = [h.content for h in hits]
    assert texts.index("Biscuit! our new puppy loves it") < texts.index(
        "the neighbours bought a new puppy, a loud one"
    )
    m.close()
