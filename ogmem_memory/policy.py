"""Pure decisions: when to commit, what to commit, what a context holds, what to merge.

No store, clock or LLM here: the manager fetches, calls these, and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ogmem_memory.config import MemoryConfig
from ogmem_memory.models import ArchiveEntry, SessionMessage
from ogmem_memory.rendering import (
    ABSTRACTS_HEADER,
    DIGEST_HEADER,
    MEMORIES_HEADER,
    RECALLED_HEADER,
    SUMMARY_HEADER,
    is_local,
    render_preamble,
)
from ogmem_memory.tokens import TokenCounter, truncate_to_tokens

SAFE_START_ROLES = frozenset({"user", "system"})


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """The oldest active messages to archive; the rest stays live."""

    messages: tuple[SessionMessage, ...]

    @property
    def first_seq(self) -> int:
        return self.messages[0].seq

    @property
    def last_seq(self) -> int:
        return self.messages[-1].seq

    @property
    def token_count(self) -> int:
        return sum(m.tokens for m in self.messages)


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """What ``assemble_context`` chose, and the exact token count of it."""

    summary: str
    abstracts: tuple[str, ...]
    recalled: tuple[SessionMessage, ...]
    messages: tuple[SessionMessage, ...]
    token_count: int
    dropped_messages: int
    summary_truncated: bool
    memories: tuple[str, ...] = ()
    digest: tuple[str, ...] = ()


# A digest entry cut to fit is kept only when at least this many tokens of it remain.
MIN_DIGEST_TOKENS = 24


def thresholds_crossed(tokens: int, turns: int, cfg: MemoryConfig) -> bool:
    """True when the active messages' tokens or user turns reach a commit threshold."""
    if tokens >= cfg.commit_token_threshold:
        return True
    return cfg.commit_turn_threshold > 0 and turns >= cfg.commit_turn_threshold


def safe_cut(messages: Sequence[SessionMessage], cut: int) -> int:
    """Move ``cut`` so ``messages[cut:]`` starts at a user/system message.

    Prefers keeping more (moving the cut earlier); if no safe start exists at or
    before ``cut``, archives more instead; 0 when no safe cut exists.
    Starting the live window at a user message also keeps every assistant tool
    call together with its tool results, which follow it.
    """
    if cut >= len(messages):
        return len(messages)
    for i in range(cut, 0, -1):
        if messages[i].role in SAFE_START_ROLES:
            return i
    for i in range(cut + 1, len(messages)):
        if messages[i].role in SAFE_START_ROLES:
            return i
    return 0


def plan_commit(
    messages: Sequence[SessionMessage], cfg: MemoryConfig, *, keep_recent: bool = True
) -> CommitPlan | None:
    """Pick the oldest messages to archive, keeping a recent tail at a safe boundary.

    The tail keeps at least ``keep_recent_messages`` messages and at least
    ``keep_recent_tokens`` tokens. ``keep_recent=False`` archives everything.
    """
    if not messages:
        return None
    if not keep_recent:
        return CommitPlan(tuple(messages))
    # The tail stays under half of each threshold, so a commit always frees enough
    # room that the next one is half a threshold away (no commit after every message).
    max_tail_tokens = cfg.commit_token_threshold // 2
    max_tail_turns = cfg.commit_turn_threshold // 2 if cfg.commit_turn_threshold else len(messages)
    kept = kept_tokens = kept_turns = 0
    cut = len(messages)
    while cut > 0 and (kept < cfg.keep_recent_messages or kept_tokens < cfg.keep_recent_tokens):
        candidate = messages[cut - 1]
        turns = kept_turns + (candidate.role == "user")
        if kept and (kept_tokens + candidate.tokens > max_tail_tokens or turns > max_tail_turns):
            break
        cut -= 1
        kept += 1
        kept_tokens += candidate.tokens
        kept_turns = turns
    cut = safe_cut(messages, cut)
    return CommitPlan(tuple(messages[:cut])) if cut > 0 else None


def plan_threshold_commit(
    messages: Sequence[SessionMessage], cfg: MemoryConfig, *, tokens: int, turns: int
) -> CommitPlan | None:
    """The commit a write should trigger, or None when below thresholds or nothing can go.

    ``tokens`` and ``turns`` are the active messages' sums, which callers keep cached: the
    check after every write then costs O(1) until a threshold is crossed.
    """
    if not thresholds_crossed(tokens, turns, cfg):
        return None
    return plan_commit(messages, cfg)


def plan_merge(archives_newest_first: Sequence[ArchiveEntry], cfg: MemoryConfig) -> list[ArchiveEntry]:
    """The oldest archives to merge into one, oldest first; empty when under the threshold."""
    count = len(archives_newest_first)
    if count < 2 or count < cfg.archive_merge_threshold:
        return []
    oldest_first = sorted(archives_newest_first, key=lambda a: (a.last_seq, a.created_at, a.archive_id))
    take = max(2, count - cfg.archive_max_count + 1)
    return oldest_first[:take]


# About what one recalled hit and its reply cost (two turns of a chat); a budget whose recall
# share holds more hits than ``recall_limit`` fetches more, so hits further down compete with
# the neighbours of the best ones (LoCoMo with the query, recall claiming first: 80 did best of
# 45-120, answer_hit at 1,000 tokens +0.005 to +0.007 over 120).
RECALL_HIT_TOKENS = 80
# However large the budget: the hits and their neighbours stay one bounded fetch.
MAX_RECALL_HITS = 100


def recall_limit_for(budget: int, cfg: MemoryConfig, *, asked: bool = True) -> int:
    """How many hits recall fetches for a context of ``budget`` tokens.

    ``recall_limit`` at least (0 turns recall off); for a question the caller ``asked``, more
    when the recall share of the budget holds more hits of ``RECALL_HIT_TOKENS``, never more
    than ``MAX_RECALL_HITS``: a small budget keeps only the best hits and their neighbours, a
    large one reaches further. Without a question (recall keys on the newest user message)
    the overview and the recent turns keep the rest of the budget.
    """
    if cfg.recall_limit <= 0 or not asked:
        return max(0, cfg.recall_limit)
    room = int(max(0, budget) * cfg.recall_share) // RECALL_HIT_TOKENS
    return min(max(cfg.recall_limit, room), max(cfg.recall_limit, MAX_RECALL_HITS))


# A hit's reply weighs more than the turn before it: questions precede their answers.
NEIGHBOUR_WEIGHTS = {1: 0.6, -1: 0.35}
# When the reply to a hit asks something ("What's it about?"), the turn after it answers about
# the hit too, and joins at this weight (LoCoMo: 14 of 72 misses at 1,000 tokens had their
# answer two turns after a hit; answer_hit with the query 0.891 -> 0.897 at 1,000 tokens,
# 0.938 -> 0.944 at 2,000, mean of three feeds, same run; 0.45 did no better).
ANSWER_TO_REPLY_WEIGHT = 0.3


def asks(message: SessionMessage) -> bool:
    """Whether ``message`` asks something (holds a question mark)."""
    return "?" in message.content


def rank_with_neighbours(
    hits: Sequence[SessionMessage], around: Mapping[tuple[str, int], SessionMessage]
) -> list[SessionMessage]:
    """Merge search hits (best first) with their neighbours into one ranking.

    A hit at rank ``i`` scores ``1 / (i + 1)``; its neighbour at ``seq + d`` of the hit's own
    session (``around`` is keyed by ``(session_id, seq)``) scores ``NEIGHBOUR_WEIGHTS[d] / (i + 1)``;
    when the reply (``seq + 1``) ``asks`` something, the turn after it (``seq + 2``, if in
    ``around``) scores ``ANSWER_TO_REPLY_WEIGHT / (i + 1)``; a message reached several ways adds
    its scores.
    """
    scores: dict[tuple[str, int], float] = {}
    by_key: dict[tuple[str, int], SessionMessage] = {}

    def add(key: tuple[str, int], message: SessionMessage, score: float) -> None:
        scores[key] = scores.get(key, 0.0) + score
        by_key[key] = message

    for rank, hit in enumerate(hits):
        base = 1.0 / (rank + 1)
        add((hit.session_id, hit.seq), hit, base)
        for delta, weight in NEIGHBOUR_WEIGHTS.items():
            near = around.get((hit.session_id, hit.seq + delta))
            if near is not None:
                add((hit.session_id, hit.seq + delta), near, base * weight)
        reply = around.get((hit.session_id, hit.seq + 1))
        answer = around.get((hit.session_id, hit.seq + 2))
        if reply is not None and answer is not None and asks(reply):
            add((hit.session_id, hit.seq + 2), answer, base * ANSWER_TO_REPLY_WEIGHT)
    order = sorted(scores, key=lambda k: (-scores[k], k[1], k[0]))
    return [by_key[k] for k in order]


def _recall_order(chosen: Sequence[SessionMessage], session_id: str) -> list[SessionMessage]:
    """Recalled turns as they read: each other session's together, sessions oldest first (by their
    earliest recalled turn), in conversation order, then the current session's."""
    local = sorted((m for m in chosen if is_local(m, session_id)), key=lambda m: m.seq)
    groups: dict[str, list[SessionMessage]] = {}
    for m in chosen:
        if not is_local(m, session_id):
            groups.setdefault(m.session_id, []).append(m)
    ordered = sorted(groups.items(), key=lambda g: (min(m.created_at for m in g[1]), g[0]))
    return [m for _sid, group in ordered for m in sorted(group, key=lambda m: m.seq)] + local


def _take_lines(
    texts: Sequence[str], header: str, cap: int, counter: TokenCounter, *, skip: bool
) -> tuple[list[str], int]:
    """``texts`` in order, a line each under ``header``, within ``cap`` tokens; one that does not
    fit is passed over when ``skip``, else ends the list. The tokens spent: 0 when none fit."""
    chosen: list[str] = []
    used = counter.count(header)
    for text in texts:
        cost = counter.count(text) + 1
        if used + cost > cap:
            if skip:
                continue
            break
        chosen.append(text)
        used += cost
    return chosen, (used if chosen else 0)


def _fit_digest(
    overviews: Sequence[str], cap: int, counter: TokenCounter, cut: Callable[[str, int], str], used: int
) -> tuple[list[str], int]:
    """The first ``overviews`` that fit ``cap`` tokens with ``used`` already spent (the last one cut
    when at least ``MIN_DIGEST_TOKENS`` of it fits); and the tokens spent then."""
    chosen: list[str] = []
    for overview in overviews:
        cost = counter.count(overview) + 1
        if used + cost <= cap:
            chosen.append(overview)
            used += cost
            continue
        room = cap - used - 1
        text = cut(overview, room) if room >= MIN_DIGEST_TOKENS else ""
        if text:
            chosen.append(text)
            used += counter.count(text) + 1
        break
    return chosen, used


def _current_turn_start(messages: Sequence[SessionMessage]) -> int:
    """Index of the newest user message; ``len(messages)`` when there is none.

    Without a user message there is no current turn to guarantee: every message then
    competes for the budget like any older one.
    """
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return len(messages)


def _shortened(
    message: SessionMessage, room: int, cut: Callable[[str, int], str], counter: TokenCounter
) -> SessionMessage | None:
    """``message`` with its content truncated to ``room`` tokens, or None when nothing fits.

    The copy keeps id, seq and role, has its tokens recounted, and drops the payload: the
    adapters rebuild a message from its payload, which still holds the whole text.
    """
    text = cut(message.content, room)
    if not text:
        return None
    tokens = counter.count(text)
    if tokens > room:  # a counter that is not monotone in the prefix length
        return None
    if text == message.content:
        return replace(message, tokens=tokens)
    return replace(message, content=text, tokens=tokens, payload=None)


def _fit_current_turn(turn: Sequence[SessionMessage], budget: int) -> tuple[SessionMessage, ...]:
    """A current turn over budget: its opening message plus the newest whole steps that fit.

    A step starts at an assistant message (its tool calls follow it with their results), so an
    agent mid-turn keeps its latest tool results and never sees a result without its call. The
    opening message alone is returned when nothing else fits, even over budget (like
    ``ChatMemoryBuffer``).
    """
    opening = turn[0]
    room = budget - opening.tokens
    start = len(turn)
    used = 0
    for i in range(len(turn) - 1, 0, -1):
        used += turn[i].tokens
        if used > room:
            break
        if turn[i].role == "assistant":
            start = i
    return (opening, *turn[start:])


def assemble_context(
    *,
    summary: str,
    abstracts: Sequence[str],
    recalled: Sequence[SessionMessage],
    messages: Sequence[SessionMessage],
    budget: int,
    counter: TokenCounter,
    cfg: MemoryConfig,
    truncate: Callable[[str, int], str] | None = None,
    earlier: Sequence[SessionMessage] = (),
    memories: Sequence[str] = (),
    digest: Sequence[tuple[str, str]] = (),
    session_id: str = "",
    recall_first: bool = False,
) -> ContextPlan:
    """Choose what a context holds within ``budget`` tokens.

    Order of claim: the current turn (from the newest user message on), the
    summary (up to ``summary_share``), the user's long-term ``memories`` (up to
    ``memory_share``), the ``keep_recent_messages`` messages before
    the current turn, recalled turns (up to ``recall_share``), older recent messages
    (newest first, contiguously; then, while budget is left, the ``earlier`` archived
    messages that precede the live window, so no budget is left unused), then abstracts.

    ``token_count`` never exceeds ``budget`` but in one case: if the newest user message
    alone exceeds it, it is returned alone, like ``ChatMemoryBuffer``. Otherwise:

    - A current turn over budget keeps its user message plus the newest whole tool steps
      (each from an assistant message on) that fit, and nothing else.
    - Without a user message there is no current turn: all messages are older ones.
    - Where the contiguous walk back stops at a system message that does not fit whole (a
      long system prompt, or a lone system message over budget), a copy truncated to the
      room left takes its place: same id, seq and role, ``tokens`` recounted, no payload.
    - An assistant or tool message that does not fit is left out, and so is everything
      before it. The live part never starts with an assistant or tool message, so a tool
      result is never shown without its call; such leading messages are dropped even when
      nothing remains (a session holding only an assistant message gets no live part).

    ``digest`` (``recall_scope="user"``, a session without a summary of its own): (overview,
    abstract) lines of the user's other sessions, newest first. Overviews claim the summary's
    share (the last one cut when at least ``MIN_DIGEST_TOKENS`` of it fits); the abstracts of
    the sessions whose overview did not fit join ``abstracts``; budget still unclaimed after
    the abstracts takes the overviews of further sessions.
    ``session_id`` is the current session: recalled turns of other sessions are never taken
    for live ones (message ids are only unique within a session).
    ``recall_first`` (the caller asked a question): recalled turns claim their share right after
    the current turn; then the memories, the ``keep_recent_messages`` messages and the summary
    share what recall leaves, in that order (a question that recalls little still gets the
    overview); a recalled turn that the recent messages reach moves into the window.

    Cost: O(returned items), plus O(log n) token counts to truncate the summary or a system
    message (``truncate``, e.g. a memoised ``truncate_to_tokens``).
    """
    budget = max(0, budget)
    active_ids = {m.id for m in messages}
    if earlier and messages and earlier[-1].seq < messages[0].seq:
        messages = [*earlier, *messages]
    start = _current_turn_start(messages)
    current = list(messages[start:])
    current_tokens = sum(m.tokens for m in current)
    if current and current_tokens > budget:
        kept = _fit_current_turn(current, budget)
        tokens = sum(m.tokens for m in kept)
        dropped = len(active_ids) - sum(1 for m in kept if m.id in active_ids)
        return ContextPlan("", (), (), kept, tokens, dropped, bool(summary))

    remaining = budget - current_tokens
    cut = truncate or (lambda text, n: truncate_to_tokens(text, n, counter))

    def take_recall(live_ids: set[str], room: int) -> tuple[list[SessionMessage], int]:
        """Recalled turns best first within ``room`` and the recall share (never what the window
        claimed so far), in reading order; and the tokens they cost."""
        cap = min(room, int(budget * cfg.recall_share))
        chosen: list[SessionMessage] = []
        spent = counter.count(RECALLED_HEADER) if recalled else 0
        for m in recalled:
            if m.id in live_ids and is_local(m, session_id):
                continue
            cost = m.tokens + 2  # "role: " prefix and newline
            if spent + cost > cap:
                continue
            chosen.append(m)
            spent += cost
        return (_recall_order(chosen, session_id), spent) if chosen else ([], 0)

    chosen_recall: list[SessionMessage] = []
    if recall_first:
        chosen_recall, used = take_recall({m.id for m in current}, remaining)
        remaining -= used

    def take_summary(room: int) -> tuple[str, list[str], list[str], int]:
        """The summary (or, without one, the digest) within ``room`` and the summary share; the
        abstracts then (the digest's unshown sessions join them); and the tokens spent."""
        cap = min(room, int(budget * cfg.summary_share))
        text = cut(summary, max(0, cap - counter.count(SUMMARY_HEADER)))
        spent = counter.count(SUMMARY_HEADER + text) if text else 0
        if summary or not digest:
            return text, [], list(abstracts), spent
        header = counter.count(DIGEST_HEADER)
        shown, used = _fit_digest([o for o, _a in digest], cap, counter, cut, header)
        more = [*abstracts, *(a for _o, a in digest[len(shown) :] if a)]
        return text, shown, more, spent + (used if shown else 0)

    if summary:
        digest = ()
    if not recall_first:
        chosen_summary, chosen_digest, abstracts, used = take_summary(remaining)
        remaining -= used

    chosen_memories: list[str] = []
    if memories:
        memory_cap = min(remaining, int(budget * cfg.memory_share))
        chosen_memories, used = _take_lines(memories, MEMORIES_HEADER, memory_cap, counter, skip=True)
        remaining -= used

    # The last few exchanges before the current turn come next: recall may take a large share,
    # but never the continuity of the conversation (unless it went first, for a question).
    older: list[SessionMessage] = []
    i = start - 1
    local_recalled = {m.id for m in chosen_recall if is_local(m, session_id)}
    while i >= 0 and len(older) < cfg.keep_recent_messages:
        refund = messages[i].tokens + 2 if messages[i].id in local_recalled else 0
        if messages[i].tokens > remaining + refund:
            break
        if refund:  # recalled already: it moves into the window
            chosen_recall = [
                r for r in chosen_recall if r.id != messages[i].id or not is_local(r, session_id)
            ]
            remaining += refund
        older.append(messages[i])
        remaining -= messages[i].tokens
        i -= 1
    if local_recalled and not chosen_recall:  # every recalled turn moved: the header goes too
        remaining += counter.count(RECALLED_HEADER)

    if recall_first:  # the overview takes what recall, memories and the recent turns leave
        chosen_summary, chosen_digest, abstracts, used = take_summary(remaining)
        remaining -= used

    # recall never repeats what the window claimed so far; a live message further back may be
    # recalled (a small budget shows only the newest turns), and moves into the window below
    # if the walk back reaches it
    if not recall_first:
        chosen_recall, used = take_recall({m.id for m in messages[i + 1 :]}, remaining)
        remaining -= used

    summary_truncated = chosen_summary != summary
    recalled_at = {m.id: k for k, m in enumerate(chosen_recall) if is_local(m, session_id)}
    # then further back, contiguously (into the archived turns before the window, if given);
    # a recalled turn met on the way moves from the recall section into the window
    while i >= 0:
        m = messages[i]
        refund = m.tokens + 2 if m.id in recalled_at else 0
        if m.tokens > remaining + refund:
            break
        if refund:
            chosen_recall = [r for r in chosen_recall if r.id != m.id or not is_local(r, session_id)]
            remaining += refund
        older.append(m)
        remaining -= m.tokens
        i -= 1
    # A system message carries instructions that still apply in part; a cut assistant or tool
    # message would misquote a reply or a result, so those are left out instead.
    if i >= 0 and messages[i].role == "system" and remaining > 0:
        shortened = _shortened(messages[i], remaining, cut, counter)
        if shortened is not None:
            older.append(shortened)
            remaining -= shortened.tokens
    older.reverse()
    live = older + current
    while live and live[0].role not in SAFE_START_ROLES:
        remaining += live.pop(0).tokens

    chosen_abstracts: list[str] = []
    if abstracts:
        chosen_abstracts, used = _take_lines(abstracts, ABSTRACTS_HEADER, remaining, counter, skip=False)
        remaining -= used
    if digest and len(chosen_digest) < len(digest) and remaining >= MIN_DIGEST_TOKENS:
        # budget nothing else claims: the overviews of further sessions (their abstracts stay)
        spent = counter.count(DIGEST_HEADER) if not chosen_digest else 0
        more, spent = _fit_digest(
            [o for o, _a in digest[len(chosen_digest) :]], remaining, counter, cut, spent
        )
        if more:
            chosen_digest += more
            remaining -= spent

    live_tokens = sum(m.tokens for m in live)
    preamble_budget = budget - live_tokens
    # Exact check on the rendered text: per-part estimates can round differently.
    while True:
        preamble = render_preamble(
            chosen_summary,
            chosen_abstracts,
            chosen_recall,
            chosen_memories,
            digest=chosen_digest,
            session_id=session_id,
        )
        preamble_tokens = counter.count(preamble) if preamble else 0
        if preamble_tokens <= preamble_budget:
            break
        if chosen_abstracts:
            chosen_abstracts.pop()
        elif chosen_recall:
            chosen_recall.pop()
        elif chosen_memories:
            chosen_memories.pop()
        elif chosen_digest:
            chosen_digest.pop()
        else:
            chosen_summary = truncate_to_tokens(
                chosen_summary, counter.count(chosen_summary) - (preamble_tokens - preamble_budget), counter
            )
            summary_truncated = True
    return ContextPlan(
        summary=chosen_summary,
        abstracts=tuple(chosen_abstracts),
        recalled=tuple(chosen_recall),
        messages=tuple(live),
        token_count=preamble_tokens + live_tokens,
        dropped_messages=len(active_ids) - sum(1 for m in live if m.id in active_ids),
        summary_truncated=summary_truncated,
        memories=tuple(chosen_memories),
        digest=tuple(chosen_digest),
    )
