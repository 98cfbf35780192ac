"""LangChain adapter speed against its peers, measured in one run (fake models, no network).

1. Per-turn overhead of ``RunnableWithMessageHistory`` (unkeyed form) with
   ``OgmemChatMessageHistory`` on a SQLite file vs ``SQLChatMessageHistory`` on a SQLite file, at
   10, 100 and 1,000 prior turns, at EQUAL durability: ours runs SQLite's WAL journal with
   synchronous=NORMAL (our default) and the peer's engine is set to the same through a
   SQLAlchemy ``connect`` event (its own default is the rollback journal with synchronous=FULL).
   Overhead = median turn time minus the median of the same model call without any history.
2. ``OgmemMemoryMiddleware`` (a SQLite file, WAL + NORMAL) vs ``SummarizationMiddleware(trigger=
   ("tokens", N))`` with ``InMemorySaver`` (process memory: nothing durable, so this part compares
   context size and overhead, not durable writes) on the same 200-turn scripted agent
   conversation (tool call every other turn): tokens the model sees per call
   (``count_tokens_approximately``, the same counter for both) and overhead per turn against a
   bare agent.

Run: ``python benchmarks/bench_langchain.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, SummarizationMiddleware
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.tools import tool
from langchain_ogmem import OgmemChatMessageHistory, OgmemMemoryMiddleware
from langchain_ogmem.convert import message_text
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field
from sqlalchemy import create_engine, event

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import WAL_NORMAL, Durability, apply_modes, read_modes

from ogmem_memory.tokens import estimate_tokens

_TOPICS = ("the Lisbon office", "invoice INV-2291", "the staging cluster", "Ada's visa", "release 4.2.1")


def user_text(i: int) -> str:
    topic = _TOPICS[i % len(_TOPICS)]
    return f"turn {i}: can you tell me what changed about {topic} since last week, and who owns it now?"


def answer_text(i: int) -> str:
    topic = _TOPICS[i % len(_TOPICS)]
    return (
        f"answer {i}: {topic} moved to the new schedule on day {i % 28 + 1}; Ben owns it now and the "
        "follow-up review is booked for Friday at 10:30."
    )


def fake_model() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=(AIMessage(answer_text(i)) for i in itertools.count()))


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


# -- 1. RunnableWithMessageHistory ------------------------------------------------------------------


def _time_turns(chain: Any, session_id: str, start: int, turns: int) -> list[float]:
    config = {"configurable": {"session_id": session_id}}
    samples = []
    for i in range(start, start + turns):
        t0 = time.perf_counter()
        chain.invoke(user_text(i), config)
        samples.append(time.perf_counter() - t0)
    return samples


def bench_history(
    sizes: Sequence[int], turns: int, workdir: Path, modes: dict[str, Durability]
) -> dict[int, tuple[float, float]]:
    """``{prior_turns: (ours_overhead_ms, sql_overhead_ms)}``; fills ``modes`` with what each side ran."""
    from langchain_community.chat_message_histories import SQLChatMessageHistory  # sunset: warns on import

    bare: Runnable[Any, Any] = RunnableLambda(lambda text: [HumanMessage(text)]) | fake_model()
    _time_turns(bare, "warmup", 0, 5)
    base = median_ms(_time_turns(bare, "bare", 0, turns * 2))

    store = SQLiteStore(workdir / "ogmem.db")  # WAL + synchronous=NORMAL, the default
    manager = SessionManager(store)
    engine = create_engine(f"sqlite:///{workdir}/sqlchat.db")
    event.listen(engine, "connect", lambda dbapi_conn, _record: apply_modes(dbapi_conn, WAL_NORMAL))
    ours = RunnableWithMessageHistory(fake_model(), lambda sid: OgmemChatMessageHistory(sid, manager=manager))
    theirs = RunnableWithMessageHistory(
        fake_model(), lambda sid: SQLChatMessageHistory(sid, connection=engine)
    )
    results: dict[int, tuple[float, float]] = {}
    for size in sizes:
        sid = f"s{size}"
        prior = [[HumanMessage(user_text(i)), AIMessage(answer_text(i))] for i in range(size)]
        history = OgmemChatMessageHistory(sid, manager=manager)
        for turn in prior:  # turn by turn, so threshold commits archive as in real use
            history.add_messages(turn)
        manager.wait_for_tasks()
        SQLChatMessageHistory(sid, connection=engine).add_messages([m for turn in prior for m in turn])
        _time_turns(ours, sid, size, 3)  # warm caches the same way for both
        _time_turns(theirs, sid, size, 3)
        ours_ms = median_ms(_time_turns(ours, sid, size + 3, turns)) - base
        theirs_ms = median_ms(_time_turns(theirs, sid, size + 3, turns)) - base
        manager.wait_for_tasks()
        results[size] = (ours_ms, theirs_ms)
    with engine.connect() as conn:
        modes["peer"] = read_modes(lambda sql: conn.exec_driver_sql(sql).scalar())
    with closing(sqlite3.connect(store.path)) as conn:  # WAL is recorded in the file itself
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    modes["ours"] = Durability(str(journal).upper(), store.synchronous)
    manager.close()
    engine.dispose()
    return results


# -- 2. create_agent middleware ----------------------------------------------------------------------


@tool
def lookup(key: str) -> str:
    """Look up the stored value of ``key``."""
    return f"value of {key} is {sum(map(ord, key)) % 997}; last updated by Ben on day {len(key)}"


class ScriptedAgentModel(BaseChatModel):
    """Tool call on even turns, text otherwise; records the tokens of every call's input."""

    seen_tokens: list[int] = Field(default_factory=list)
    seen_ogmem_tokens: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-agent"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedAgentModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen_tokens.append(count_tokens_approximately(messages))
        self.seen_ogmem_tokens.append(sum(estimate_tokens(message_text(m)) for m in messages))
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(f"The tool said: {last.text}. Anything else?")
        else:
            turn = int(str(last.text).split()[1].rstrip(":"))
            if turn % 2 == 0:
                call = {
                    "name": "lookup",
                    "args": {"key": f"k{turn}"},
                    "id": f"call_{turn}",
                    "type": "tool_call",
                }
                reply = AIMessage("", tool_calls=[call])
            else:
                reply = AIMessage(answer_text(turn))
        return ChatResult(generations=[ChatGeneration(message=reply)])


def _run_agent(
    middleware: list[AgentMiddleware[Any, Any, Any]], *, checkpointer: Any, turns: int
) -> tuple[ScriptedAgentModel, list[float]]:
    model = ScriptedAgentModel()
    agent = create_agent(model, [lookup], middleware=middleware, checkpointer=checkpointer)
    config: RunnableConfig = {"configurable": {"thread_id": "bench"}}
    samples = []
    for i in range(turns):
        t0 = time.perf_counter()
        agent.invoke({"messages": [HumanMessage(user_text(i))]}, config)
        samples.append(time.perf_counter() - t0)
    return model, samples


def bench_middleware(turns: int, budget: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Per configuration: mean/max tokens per model call, and mean per-turn time in ms."""
    summary = "Summary: the user asked about offices, invoices, clusters, visas and releases; Ben owns them."
    runs: dict[str, Callable[[], tuple[ScriptedAgentModel, list[float]]]] = {
        "bare (no memory, no checkpointer)": lambda: _run_agent([], checkpointer=None, turns=turns),
        "no memory middleware + InMemorySaver": lambda: _run_agent(
            [], checkpointer=InMemorySaver(), turns=turns
        ),
        f"SummarizationMiddleware(tokens={budget}) + InMemorySaver": lambda: _run_agent(
            [SummarizationMiddleware(FakeListChatModel(responses=[summary]), trigger=("tokens", budget))],
            checkpointer=InMemorySaver(),
            turns=turns,
        ),
        f"OgmemMemoryMiddleware(token_budget={budget}), no checkpointer": lambda: _run_agent(
            [OgmemMemoryMiddleware(manager=ogmem, token_budget=budget)], checkpointer=None, turns=turns
        ),
    }
    ogmem = SessionManager(f"sqlite:///{workdir}/agent.db", config=MemoryConfig(context_token_budget=budget))
    results: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        model, samples = run()
        results[name] = {
            "mean_tokens": statistics.fmean(model.seen_tokens),
            "max_tokens": max(model.seen_tokens),
            "max_ogmem_tokens": max(model.seen_ogmem_tokens),
            "turn_ms": statistics.fmean(samples) * 1000,
        }
    ogmem.close()
    return results


# -- report --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    # RunnableWithMessageHistory, BaseChatMessageHistory and langchain-community are deprecated.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    sizes = (10, 100) if args.quick else (10, 100, 1000)
    turns = 5 if args.quick else 30
    agent_turns = 30 if args.quick else 200
    budget = 2000
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        modes: dict[str, Durability] = {}
        history = bench_history(sizes, turns, workdir, modes)
        print("RunnableWithMessageHistory, overhead per turn (ms, median; unkeyed form, SQLite files):")
        print(f"  ogmem OgmemChatMessageHistory: {modes['ours'].label}")
        print(f"  SQLChatMessageHistory:         {modes['peer'].label} (connect event; equal durability)")
        print(f"{'prior turns':>12} {'ogmem':>10} {'SQLChatMessageHistory':>22} {'ratio':>8}")
        for size, (ours, theirs) in history.items():
            print(f"{size:>12} {ours:>10.2f} {theirs:>22.2f} {theirs / max(ours, 1e-6):>7.1f}x")
        smallest, largest = history[sizes[0]][0], history[sizes[-1]][0]
        growth = largest / max(smallest, 1e-6)
        print(f"ogmem at {sizes[-1]} vs {sizes[0]} prior turns: {growth:.2f}x")
        if len(sizes) > 2:
            full = largest / max(history[sizes[-2]][0], 1e-6)
            print(
                f"ogmem at {sizes[-1]} vs {sizes[-2]} prior turns: {full:.2f}x (flat = ~1; below the context "
                "budget the history LangChain passes to the model still grows)"
            )
        print()
        agent = bench_middleware(agent_turns, budget, workdir)
        print(f"create_agent, {agent_turns} scripted turns (tool call every other turn):")
        print(
            "  ogmem stores every message in a SQLite file (WAL + synchronous=NORMAL); InMemorySaver "
            "keeps the checkpoints in process memory (nothing durable)"
        )
        print("tokens per model call: count_tokens_approximately (mean, max) and ogmem's estimator (max)")
        print(f"{'configuration':<60} {'mean tok':>9} {'max tok':>8} {'max est':>8} {'ms/turn':>8}")
        for name, row in agent.items():
            print(
                f"{name:<60} {row['mean_tokens']:>9.0f} {row['max_tokens']:>8.0f} "
                f"{row['max_ogmem_tokens']:>8.0f} {row['turn_ms']:>8.2f}"
            )
        bare = agent["bare (no memory, no checkpointer)"]["turn_ms"]
        ours_row = agent[f"OgmemMemoryMiddleware(token_budget={budget}), no checkpointer"]
        theirs_row = agent[f"SummarizationMiddleware(tokens={budget}) + InMemorySaver"]
        print(
            f"overhead per turn vs bare agent: ogmem {ours_row['turn_ms'] - bare:.2f} ms, "
            f"SummarizationMiddleware {theirs_row['turn_ms'] - bare:.2f} ms (its summary LLM is a fake "
            "that answers instantly; a real one adds seconds at every summarisation)"
        )
        print(
            f"max tokens per call: ogmem {ours_row['max_ogmem_tokens']:.0f} by its own counter (budget "
            f"{budget}), {ours_row['max_tokens']:.0f} by count_tokens_approximately; "
            f"SummarizationMiddleware {theirs_row['max_tokens']:.0f}"
        )


if __name__ == "__main__":
    main()
