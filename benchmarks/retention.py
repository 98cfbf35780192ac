"""LoCoMo retention of ogmem on its defaults: the shared scorer, run with benchmarks/locomo_plugin.py.

For each budget it prints answer_hit and evidence_hit (extractive population, categories 1-4) of
the truncation baseline and of ogmem without and with the question as the query, and, when
``ogmem_memory.embeddings`` and ``SessionManager(embedder=...)`` exist, the same with
``WordLlamaEmbedder``. It also prints the wall time ogmem took to feed all ten conversations
and to answer every context request, measured in this run.

Run from the repository root:
  python benchmarks/retention.py [--budgets 1000,2000,4000] [--no-embedder] [--cross-session]

``--cross-session`` (issue 12) scores the same questions asked in a NEW session of the user after
each LoCoMo session was fed and committed as its own ogmem session
(``benchmarks/locomo_cross_session.py``), next to the recent-turns baselines (the last turns of the
whole conversation, and of the last session only) and the share of answers present in the user's
extracted memories at all; each ogmem row on the defaults (memories only) and with
``MemoryConfig(recall_scope="user")`` (recall over every session of the user, and a digest).

The scorer and the LoCoMo data (CC BY-NC 4.0) are read from ../shared; nothing is copied here.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import locomo_cross_session, locomo_plugin  # noqa: E402
from benchmarks._locomo import load_scorer  # noqa: E402

DEFAULT_SCORER = ROOT.parent / "shared" / "bench" / "locomo_retention.py"


@dataclass(frozen=True, slots=True)
class Row:
    """One memory at one budget: the scorer's hits and ogmem's time."""

    label: str
    budget: int
    answer: float
    evidence: float
    context_tokens: float
    feed_seconds: float | None
    query_seconds: float | None


class _Clock:
    """Seconds spent in the plug-in's ``add`` and ``context`` (the scorer's own work excluded)."""

    def __init__(self) -> None:
        self.feed = 0.0
        self.query = 0.0


def timed_factory(clock: _Clock) -> Callable[[], Any]:
    """A plug-in factory whose memories add their feed and query time to ``clock``."""

    class TimedOgmem(locomo_plugin.OgmemMemory):
        def __init__(self) -> None:
            start = time.perf_counter()
            super().__init__()
            clock.feed += time.perf_counter() - start

        def add(self, turn: Any) -> None:
            start = time.perf_counter()
            super().add(turn)
            clock.feed += time.perf_counter() - start

        def context(self, budget_tokens: int | None, query: str | None = None) -> str:
            start = time.perf_counter()
            self.manager.wait_for_tasks()  # the background commits belong to the feed
            clock.feed += time.perf_counter() - start
            start = time.perf_counter()
            text = super().context(budget_tokens, query)
            clock.query += time.perf_counter() - start
            return text

    return TimedOgmem


def embedder_available() -> str | None:
    """None when the embedder column can run, else why not (printed as a note)."""
    if importlib.util.find_spec("ogmem_memory.embeddings") is None:
        return "ogmem_memory.embeddings is missing"
    from ogmem_memory import SessionManager

    if "embedder" not in inspect.signature(SessionManager).parameters:
        return "SessionManager does not take an embedder yet"
    embeddings = importlib.import_module("ogmem_memory.embeddings")
    if not hasattr(embeddings, "WordLlamaEmbedder"):
        return "ogmem_memory.embeddings has no WordLlamaEmbedder"
    try:
        embeddings.WordLlamaEmbedder()
    except Exception as exc:  # the optional extra (wordllama) may not be installed
        return f"WordLlamaEmbedder() failed: {type(exc).__name__}: {exc}"
    return None


def scored_row(label: str, budget: int, result: dict[str, Any], clock: _Clock | None) -> Row:
    """One scorer result as a row; ``clock`` None for a memory that is not ours (no timing)."""
    overall = result["by_category"]["all"]
    return Row(
        label,
        budget,
        overall["answer"],
        overall["evidence"],
        result["mean_context_tokens"],
        clock.feed if clock is not None else None,
        clock.query if clock is not None else None,
    )


def run(
    scorer: ModuleType,
    data: list[dict[str, Any]],
    name: str,
    budgets: Sequence[int],
    *,
    query_aware: bool,
    label: str,
) -> list[Row]:
    """Score one memory of the scorer's registry at every budget."""
    rows = []
    for budget in budgets:
        clock = _Clock()
        if name != "truncation":
            scorer.MEMORIES[name] = timed_factory(clock)
        report = scorer.evaluate(data, [name], [budget], query_aware, "extractive")
        rows.append(
            scored_row(
                label, budget, report["results"][f"{name}@{budget}"], clock if name != "truncation" else None
            )
        )
    return rows


def timed_cross_factory(clock: _Clock, base: type[Any]) -> Callable[[str, str | None], Any]:
    """A cross-session memory class whose feed (commits waited for) and queries add to ``clock``."""

    class Timed(base):  # type: ignore[misc]
        def __init__(self, conversation_id: str, first_turn: str | None = None) -> None:
            start = time.perf_counter()
            super().__init__(conversation_id, first_turn)
            clock.feed += time.perf_counter() - start

        def add(self, turn: Any) -> None:
            start = time.perf_counter()
            super().add(turn)
            clock.feed += time.perf_counter() - start

        def end_session(self) -> None:
            start = time.perf_counter()
            super().end_session()
            clock.feed += time.perf_counter() - start

        def context(self, budget_tokens: int | None, query: str | None = None) -> str:
            self.end_session()
            start = time.perf_counter()
            text: str = super().context(budget_tokens, query)
            clock.query += time.perf_counter() - start
            return text

    return Timed


def run_cross(
    scorer: ModuleType,
    data: list[dict[str, Any]],
    budgets: Sequence[int],
    *,
    query_aware: bool,
    label: str,
    memory: type[Any] = locomo_cross_session.CrossSessionMemory,
    timed: bool = True,
) -> list[Row]:
    """Score a cross-session memory (one per conversation, its id handed over) at every budget."""
    rows = []
    firsts = locomo_cross_session.first_turns(scorer, data)
    for budget in budgets:
        clock = _Clock()
        factory = locomo_cross_session.ConversationFactory(
            data, firsts, timed_cross_factory(clock, memory) if timed else memory
        )
        scorer.MEMORIES[label] = factory
        try:
            report = scorer.evaluate(data, [label], [budget], query_aware, "extractive")
        finally:
            factory.close()
            del scorer.MEMORIES[label]
        rows.append(
            scored_row(label, budget, report["results"][f"{label}@{budget}"], clock if timed else None)
        )
    return rows


def cross_session(
    scorer: ModuleType, data: list[dict[str, Any]], budgets: Sequence[int], embedder: bool
) -> None:
    """Print the cross-session table (issue 12)."""
    xs = locomo_cross_session
    rows = run(scorer, data, "truncation", budgets, query_aware=False, label="truncation (all turns)")
    rows += run_cross(
        scorer,
        data,
        budgets,
        query_aware=False,
        label="truncation (last session)",
        memory=xs.LastSessionTruncation,
        timed=False,
    )
    variants: list[tuple[str, type[Any]]] = [
        ("ogmem", xs.CrossSessionMemory),
        ('ogmem recall_scope="user"', xs.UserScopeMemory),
    ]
    for name, memory in variants:
        for asked in (False, True):
            label = f"{name}, new session, {'with the query' if asked else 'no query'}"
            rows += run_cross(scorer, data, budgets, query_aware=asked, label=label, memory=memory)
    if embedder:
        os.environ[locomo_plugin.EXPERIMENT_EMBEDDER_ENV] = "wordllama"
        for name, memory in variants:
            for asked in (False, True):
                label = f"{name} + WordLlama, new session, {'with the query' if asked else 'no query'}"
                rows += run_cross(scorer, data, budgets, query_aware=asked, label=label, memory=memory)
        os.environ.pop(locomo_plugin.EXPERIMENT_EMBEDDER_ENV)
    ceiling = run_cross(
        scorer, data, budgets[:1], query_aware=False, label="all memories", memory=xs.AllMemories, timed=False
    )[0]
    print_table(rows, budgets)
    print()
    print(
        f"answers present in the user's memories at all (every memory, no budget): "
        f"{ceiling.answer:.3f} answer_hit, {ceiling.evidence:.3f} evidence_hit, "
        f"{ceiling.context_tokens:.0f} tokens of memories per user on average"
    )
    print(
        "truncation (all turns): the scorer's recent-turns baseline, the last turns of the whole "
        "conversation; truncation (last session): the last turns of the last session only (what a "
        "session that continues where the last one ended would show). feed s: every session added "
        "and committed (archive + memory extraction, waited for); query s: every get_context of "
        "the new session."
    )


def print_table(rows: Sequence[Row], budgets: Sequence[int]) -> None:
    """Markdown table: one line per budget and memory."""
    print("| budget | memory | answer_hit | evidence_hit | context tokens | feed s | query s |")
    print("|---|---|---|---|---|---|---|")
    for budget in budgets:
        for row in (r for r in rows if r.budget == budget):
            feed = f"{row.feed_seconds:.1f}" if row.feed_seconds is not None else "—"
            query = f"{row.query_seconds:.2f}" if row.query_seconds is not None else "—"
            print(
                f"| {budget:,} | {row.label} | {row.answer:.3f} | {row.evidence:.3f} "
                f"| {row.context_tokens:.0f} | {feed} | {query} |"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", default="1000,2000,4000")
    parser.add_argument("--scorer", type=Path, default=DEFAULT_SCORER)
    parser.add_argument("--data", type=Path, default=None, help="default: the scorer's ../data/locomo10.json")
    parser.add_argument("--no-embedder", action="store_true", help="skip the WordLlamaEmbedder columns")
    parser.add_argument(
        "--cross-session",
        action="store_true",
        help="each LoCoMo session as its own ogmem session of one user; questions in a new session",
    )
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",") if b]
    scorer = load_scorer(args.scorer)
    data_path = args.data or args.scorer.resolve().parent.parent / "data" / "locomo10.json"
    data = json.loads(data_path.read_text())
    if os.environ.get(locomo_plugin.EXPERIMENT_CONFIG_ENV, "").strip():
        print(f"note: {locomo_plugin.EXPERIMENT_CONFIG_ENV} is set: these are not the defaults")
    print(f"config: {locomo_plugin.experiment_config()}")
    why_not = "skipped (--no-embedder)" if args.no_embedder else embedder_available()
    if args.cross_session:
        cross_session(scorer, data, budgets, embedder=why_not is None)
        if why_not is not None:
            print(f"note: embedder rows not measured: {why_not}")
        return 0
    rows = run(scorer, data, "truncation", budgets, query_aware=False, label="truncation")
    rows += run(scorer, data, "ogmem", budgets, query_aware=False, label="ogmem, no query")
    rows += run(scorer, data, "ogmem", budgets, query_aware=True, label="ogmem, with the query")
    if why_not is None:
        os.environ[locomo_plugin.EXPERIMENT_EMBEDDER_ENV] = "wordllama"
        rows += run(scorer, data, "ogmem", budgets, query_aware=False, label="ogmem + WordLlama, no query")
        rows += run(
            scorer, data, "ogmem", budgets, query_aware=True, label="ogmem + WordLlama, with the query"
        )
    print_table(rows, budgets)
    print()
    print(
        "answer_hit/evidence_hit: share of the qualifying QA items (extractive population) whose "
        "answer / every evidence turn is in the context; feed s: adding all ten conversations "
        "(commits included, waited for), query s: every get_context of that row."
    )
    if why_not is not None:
        print(f"note: embedder columns not measured: {why_not}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
