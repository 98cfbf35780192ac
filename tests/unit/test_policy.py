"""assemble_context: the budget, the safe start and the exact count (issue 9, defect 7)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ogmem_memory import MemoryConfig, SessionManager, SessionMessage
from ogmem_memory.models import Context, new_message_id
from ogmem_memory.policy import (
    MAX_RECALL_HITS,
    RECALL_HIT_TOKENS,
    SAFE_START_ROLES,
    ContextPlan,
    assemble_context,
    recall_limit_for,
    render_preamble,
)
from ogmem_memory.tokens import EstimatingTokenCounter, TokenCounter

COUNTER = EstimatingTokenCounter()
LOW = MemoryConfig(
    commit_token_threshold=200, commit_turn_threshold=5, keep_recent_messages=4, keep_recent_tokens=60
)


def rendered_tokens(ctx: Context, counter: TokenCounter) -> int:
    """What the adapters send, counted the way ``token_count`` promises: preamble + each message."""
    preamble = ctx.preamble()
    return (counter.count(preamble) if preamble else 0) + sum(counter.count(m.content) for m in ctx.messages)


# -- the three reproductions of defect 7 ------------------------------------------------


def test_lone_system_message_over_budget_is_truncated_to_fit() -> None:
    """Fails on the code as it was: the 800-token system message came back whole for a budget of 100."""
    m = SessionManager("memory://")
    m.add_message("s", "system", "Rules: be nice. " * 200)
    stored = m.get_history("s")[0]
    ctx = m.get_context("s", 100)
    assert ctx.token_count <= 100
    assert len(ctx.messages) == 1
    (shown,) = ctx.messages
    assert (shown.id, shown.seq, shown.role) == (stored.id, stored.seq, "system")
    assert shown.content.startswith("Rules: be nice. Rules: be nice.") and shown.content.endswith("…")
    assert shown.tokens == m.token_counter.count(shown.content) > 90  # truncated to what fits, not emptied
    assert shown.payload is None  # an adapter must render the truncated text, not a stored original
    assert ctx.token_count == rendered_tokens(ctx, m.token_counter)
    assert m.get_history("s")[0] == stored  # the stored message is untouched
    m.close()


def test_lone_assistant_message_over_budget_is_left_out() -> None:
    """Fails on the code as it was: the 500-token assistant message came back for a budget of 50."""
    m = SessionManager("memory://")
    m.add_message("s", "assistant", "x" * 2000)
    ctx = m.get_context("s", 50)
    assert ctx.messages == ()
    assert ctx.token_count == 0 == rendered_tokens(ctx, m.token_counter)
    assert ctx.dropped_messages == 1
    m.close()


def test_tool_result_right_after_a_commit_is_not_shown_without_its_call() -> None:
    """Fails on the code as it was: the orphan 525-token tool result led a 60-token context alone."""
    m = SessionManager("memory://")
    m.add_message("s", "user", "please run the weather tool for Lisbon")
    m.add_message("s", "assistant", "calling the weather tool")
    assert m.commit("s", wait=True).archived
    m.add_message("s", "tool", "y" * 2100)
    ctx = m.get_context("s", 60)
    assert ctx.token_count <= 60
    assert ctx.messages == ()
    assert ctx.summary, "the room the orphan would have taken goes to the summary"
    assert ctx.token_count == rendered_tokens(ctx, m.token_counter)
    m.close()


# -- system messages anywhere in the window ---------------------------------------------


def test_system_prompt_then_turns_stays_within_budget_and_whole_when_it_fits() -> None:
    m = SessionManager("memory://")
    prompt = "You are a travel assistant. Answer briefly and name the city. " * 3
    m.add_message("s", "system", prompt)
    for i in range(6):
        m.add_message("s", "user", f"question {i}: what should I see in city {i}?")
        m.add_message("s", "assistant", f"answer {i}: the old town of city {i}")
    history = m.get_history("s")
    whole = sum(x.tokens for x in history)
    ctx = m.get_context("s", whole)
    assert list(ctx.messages) == history  # everything fits: nothing changed, nothing dropped
    newest_turn = sum(x.tokens for x in history[-2:])
    for budget in range(5, whole, 7):
        ctx = m.get_context("s", budget)
        if budget < history[-2].tokens:  # the newest user message alone is over budget
            assert list(ctx.messages) == [history[-2]]
            continue
        assert ctx.token_count <= budget
        assert ctx.token_count == rendered_tokens(ctx, m.token_counter)
        assert ctx.messages[0].role in SAFE_START_ROLES
        assert ctx.messages[-1] == history[-1] or budget < newest_turn
        assert any(x.content.startswith("question 5") for x in ctx.messages)
        if ctx.messages[0].role == "system":  # the prompt is reached: whole, or cut into the room left
            assert ctx.messages[0].id == history[0].id
            assert prompt.startswith(ctx.messages[0].content.removesuffix(" …"))
    m.close()


def test_long_system_prompt_before_fitting_turns_is_truncated_into_the_room_left() -> None:
    m = SessionManager("memory://")
    m.add_message("s", "system", "Always answer in French and cite the source. " * 40)
    m.add_message("s", "user", "what is the capital of Portugal?")
    m.add_message("s", "assistant", "Lisbonne.")
    ctx = m.get_context("s", 120)
    assert [x.role for x in ctx.messages] == ["system", "user", "assistant"]
    assert ctx.messages[0].content.endswith("…")
    assert ctx.token_count <= 120
    assert ctx.token_count == rendered_tokens(ctx, m.token_counter)
    m.close()


def test_system_message_inside_the_current_turn_over_budget() -> None:
    m = SessionManager("memory://")
    m.add_message("s", "user", "run the tools")
    m.add_message("s", "system", "tool policy: " + "be careful " * 40)
    m.add_message("s", "assistant", "step one")
    m.add_message("s", "tool", "result one " * 30)
    m.add_message("s", "assistant", "step two")
    m.add_message("s", "tool", "result two")
    ctx = m.get_context("s", 30)
    # the user message plus the newest whole step that fits
    assert [x.content for x in ctx.messages] == ["run the tools", "step two", "result two"]
    assert ctx.token_count <= 30
    m.close()


def test_window_never_starts_with_an_assistant_even_when_everything_fits() -> None:
    m = SessionManager("memory://")
    m.add_message("s", "assistant", "Hello! How can I help?")
    m.add_message("s", "tool", "an orphan result")
    m.add_message("s", "user", "hi")
    ctx = m.get_context("s", 1000)
    assert [x.content for x in ctx.messages] == ["hi"]
    m.close()


def test_newest_user_message_alone_over_budget_is_returned_alone() -> None:
    """The one documented over-budget case: unchanged by the fix."""
    m = SessionManager("memory://")
    m.add_message("s", "system", "be brief")
    m.add_message("s", "user", "z" * 400)
    ctx = m.get_context("s", 50)
    assert [x.role for x in ctx.messages] == ["user"]
    assert ctx.token_count == 100 == rendered_tokens(ctx, m.token_counter)
    m.close()


def test_token_count_is_the_rendered_count_with_summary_abstracts_and_recall() -> None:
    m = SessionManager("memory://", config=LOW)
    m.add_message("s", "system", "Remember every city the user names. " * 10)
    for i in range(40):
        m.add_message("s", "user", f"user turn {i}: I visited city number {i} on day {i}")
        m.add_message("s", "assistant", f"assistant reply {i}: noted city {i}")
    m.wait_for_tasks()
    assert len(m.list_archives("s")) >= 2
    seen_recall = seen_abstracts = False
    for budget in (3, 20, 45, 80, 150, 300, 700, 2000):
        for query in (None, "city number 7 on day 7"):
            ctx = m.get_context("s", budget, query=query)
            assert ctx.token_count == rendered_tokens(ctx, m.token_counter)
            assert ctx.token_count <= budget or [x.role for x in ctx.messages] == ["user"]
            assert not ctx.messages or ctx.messages[0].role in SAFE_START_ROLES
            assert not {x.id for x in ctx.recalled} & {x.id for x in ctx.messages}
            seen_recall |= bool(ctx.recalled)
            seen_abstracts |= bool(ctx.abstracts)
    assert seen_recall and seen_abstracts  # every part of the preamble was exercised
    m.close()


# -- the property --------------------------------------------------------------------------

sizes = st.integers(min_value=0, max_value=150)


def words(tokens: int) -> str:
    return "tok " * tokens  # four characters a token: the default counter gives exactly ``tokens``


@st.composite
def blocks(draw: st.DrawFn) -> list[tuple[str, int]]:
    kind = draw(st.sampled_from(["user", "assistant", "system", "tool_step", "orphan_tool"]))
    if kind == "tool_step":  # an assistant tool call followed by its results
        return [("assistant", draw(sizes))] + [
            ("tool", n) for n in draw(st.lists(sizes, min_size=1, max_size=3))
        ]
    if kind == "orphan_tool":  # what a commit leaves when a result arrives after its call was archived
        return [("tool", draw(sizes))]
    return [(kind, draw(sizes))]


@st.composite
def windows(draw: st.DrawFn) -> list[SessionMessage]:
    roles_and_sizes = [item for block in draw(st.lists(blocks(), max_size=14)) for item in block]
    first_seq = draw(st.integers(min_value=1, max_value=50))
    return [
        SessionMessage(
            id=new_message_id(),
            role=role,
            content=words(n),
            payload={"role": role, "content": words(n)},
            seq=first_seq + i,
            tokens=n,
        )
        for i, (role, n) in enumerate(roles_and_sizes)
    ]


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)


@st.composite
def recalled_for(draw: st.DrawFn, live: list[SessionMessage]) -> list[SessionMessage]:
    archived = [
        SessionMessage(
            id=new_message_id(),
            role=role,
            content=text,
            seq=-i,  # archived messages precede the live window
            tokens=COUNTER.count(text),
            status="archived",
        )
        for i, (role, text) in enumerate(
            draw(st.lists(st.tuples(st.sampled_from(["user", "assistant"]), texts), max_size=6))
        )
    ]
    duplicates = draw(st.lists(st.sampled_from(live), max_size=3)) if live else []
    return draw(st.permutations(archived + duplicates))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[SessionMessage], str, list[str], list[SessionMessage], int]:
    live = draw(windows())
    summary = draw(st.one_of(st.just(""), texts))
    abstracts = draw(st.lists(texts, max_size=4))
    recalled = draw(st.one_of(st.just([]), recalled_for(live)))
    budget = draw(st.integers(min_value=1, max_value=500))
    return live, summary, abstracts, recalled, budget


def check_plan(
    plan: ContextPlan,
    messages: list[SessionMessage],
    recalled: list[SessionMessage],
    budget: int,
    cfg: MemoryConfig,
) -> None:
    out = plan.messages
    n = len(messages)
    index = {m.id: i for i, m in enumerate(messages)}
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    newest_user = users[-1] if users else None

    # the budget, with its one exception
    lone_user = messages[newest_user] if newest_user is not None else None
    if lone_user is not None and list(out) == [lone_user] and lone_user.tokens > budget:
        assert plan.token_count == lone_user.tokens
        assert not plan.summary and not plan.abstracts and not plan.recalled
    else:
        assert plan.token_count <= budget

    # the count is the rendered count
    preamble = render_preamble(plan.summary, plan.abstracts, plan.recalled)
    assert plan.token_count == (COUNTER.count(preamble) if preamble else 0) + sum(m.tokens for m in out)
    assert all(m.tokens == COUNTER.count(m.content) for m in out)

    # never an assistant/tool message first; the newest user message always there
    assert not out or out[0].role in SAFE_START_ROLES
    if newest_user is not None:
        assert messages[newest_user] in out

    # in order; a contiguous suffix, or (a current turn over budget) its user message + a suffix
    positions = [index[m.id] for m in out]
    assert positions == sorted(set(positions))
    rest = positions[1:]
    assert rest == list(range(n - len(rest), n))
    if positions and positions[0] != (rest[0] - 1 if rest else n - 1):
        assert positions[0] == newest_user
        assert not rest or messages[rest[0]].role == "assistant"  # whole steps only
        assert not plan.summary and not plan.abstracts and not plan.recalled
    assert plan.dropped_messages == n - len(out)

    # every message as stored, except a system message cut into the room left at the start
    for k, (m, i) in enumerate(zip(out, positions, strict=True)):
        original = messages[i]
        if m != original:
            assert k == 0 and m.role == original.role == "system" and m.seq == original.seq
            assert m.tokens < original.tokens and m.payload is None
            assert original.content.startswith(m.content.removesuffix(" …").rstrip())

    # recall: never a message the context shows (a live one it does not show may be recalled),
    # in conversation order, only what was offered
    assert not {m.id for m in plan.recalled} & {m.id for m in out}
    assert [m.seq for m in plan.recalled] == sorted(m.seq for m in plan.recalled)
    assert {m.id for m in plan.recalled} <= {m.id for m in recalled}

    # liveness: when the window fits beside the largest summary and recall claims, all of it
    # from its first user/system message on is shown unchanged
    claims = int(budget * cfg.summary_share)
    if recalled:
        claims += int(budget * cfg.recall_share)
    if sum(m.tokens for m in messages) <= budget - claims:
        first_safe = next((i for i, m in enumerate(messages) if m.role in SAFE_START_ROLES), n)
        assert list(out) == messages[first_safe:]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), keep_recent=st.integers(min_value=0, max_value=10))
def test_assemble_context_budget_property(
    case: tuple[list[SessionMessage], str, list[str], list[SessionMessage], int], keep_recent: int
) -> None:
    messages, summary, abstracts, recalled, budget = case
    cfg = MemoryConfig(keep_recent_messages=keep_recent)
    plan = assemble_context(
        summary=summary,
        abstracts=abstracts,
        recalled=recalled,
        messages=messages,
        budget=budget,
        counter=COUNTER,
        cfg=cfg,
    )
    check_plan(plan, messages, recalled, budget, cfg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.tuples(st.sampled_from(["user", "assistant", "system", "tool"]), sizes), max_size=10),
    budget=st.integers(min_value=1, max_value=300),
)
def test_get_context_budget_property_through_the_manager(items: list[tuple[str, int]], budget: int) -> None:
    m = SessionManager("memory://")
    for role, n in items:
        m.add_message("s", role, words(n) or "-")
    ctx = m.get_context("s", budget)
    history = m.get_history("s")
    users = [x for x in history if x.role == "user"]
    if not (users and [x.id for x in ctx.messages] == [users[-1].id]):
        assert ctx.token_count <= budget
    assert ctx.token_count == rendered_tokens(ctx, m.token_counter)
    assert not ctx.messages or ctx.messages[0].role in SAFE_START_ROLES
    m.close()


# -- recall for an explicit question (issue 11) -----------------------------------------


def msg(role: str, content: str, seq: int) -> SessionMessage:
    return SessionMessage(
        id=new_message_id(), role=role, content=content, seq=seq, tokens=COUNTER.count(content)
    )


def test_recall_limit_grows_with_the_budget_for_a_question_only() -> None:
    cfg = MemoryConfig()
    assert recall_limit_for(1000, cfg) == cfg.recall_limit  # 700 tokens of recall: the floor
    assert recall_limit_for(2000, cfg) == 2000 * 7 // 10 // RECALL_HIT_TOKENS > cfg.recall_limit
    assert recall_limit_for(4000, cfg) > recall_limit_for(2000, cfg)
    assert recall_limit_for(10**9, cfg) == MAX_RECALL_HITS  # one bounded fetch, whatever the budget
    assert recall_limit_for(4000, cfg, asked=False) == cfg.recall_limit  # keyed on the newest message
    assert recall_limit_for(4000, MemoryConfig(recall_limit=0)) == 0  # recall off stays off
    assert recall_limit_for(4000, MemoryConfig(recall_limit=150)) == 150  # never below the setting
    assert recall_limit_for(-5, cfg) == cfg.recall_limit


def test_an_unshown_live_message_may_be_recalled_but_a_shown_one_never() -> None:
    """A live window larger than the budget: its older, relevant message comes back as recall."""
    live = [
        msg("user", "my locker code is 4417, keep it safe", 1),
        msg("assistant", "noted, locker code 4417", 2),
        *(msg("user" if i % 2 else "assistant", words(20), i) for i in range(3, 13)),
    ]
    cfg = MemoryConfig(keep_recent_messages=2)
    plan = assemble_context(
        summary="",
        abstracts=[],
        recalled=[live[1], live[-1]],  # the newest message is shown: it must not repeat
        messages=live,
        budget=120,
        counter=COUNTER,
        cfg=cfg,
    )
    assert live[1] not in plan.messages
    assert plan.recalled == (live[1],)
    assert live[-1] in plan.messages
    assert plan.token_count <= 120
    # when the whole window fits, the recalled message moves back into it, once
    plan = assemble_context(
        summary="", abstracts=[], recalled=[live[1]], messages=live, budget=2000, counter=COUNTER, cfg=cfg
    )
    assert list(plan.messages) == live and plan.recalled == ()
