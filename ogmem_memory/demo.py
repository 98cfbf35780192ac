"""``ogmem demo``: a scripted long conversation through a framework adapter, offline.

A fake model answers from a script, so the run needs no network and is the same every
time; what it shows is real: the adapter, the store, threshold commits, archives, the
running summary and the tokens each prompt carried.
"""

from __future__ import annotations

import importlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from ogmem_memory.config import MemoryConfig
from ogmem_memory.manager import SessionManager
from ogmem_memory.tokens import TokenCounter

FRAMEWORKS: Final[tuple[str, ...]] = ("langchain", "llama-index")
DEFAULT_TURNS: Final = 300
SYSTEM_PROMPT: Final = "You are Ada's travel assistant. Be brief and keep track of her plans."

# Low thresholds so a few hundred short turns commit a dozen times; the budget is what the
# model may read per turn, summary included.
DEMO_CONFIG: Final = MemoryConfig(
    commit_token_threshold=1500,
    commit_turn_threshold=20,
    keep_recent_messages=8,
    keep_recent_tokens=300,
    context_token_budget=1000,
)

# Stated in the first turns; the report checks which of them the final summary still holds.
FACT_TURNS: Final[tuple[tuple[str, str, str], ...]] = (
    (
        "Hi! I'm Ada Lovelace, an engineer at Analytical Engines Ltd in London.",
        "Nice to meet you, Ada. How can I help?",
        "Ada Lovelace",
    ),
    (
        "I fly to Lisbon on flight TP1357, leaving London on 14 May 2025 at 09:40.",
        "Noted: TP1357 to Lisbon on 14 May 2025 at 09:40.",
        "TP1357",
    ),
    (
        "The trip budget is €3,200, approved by Charles Babbage.",
        "Got it: €3,200 in total, approved by Charles Babbage.",
        "3,200",
    ),
    (
        "I'm staying at Hotel Aurora, booking reference AUR-88412.",
        "Hotel Aurora, reference AUR-88412. I'll keep it handy.",
        "AUR-88412",
    ),
    (
        "My talk is on 16 May 2025 at 14:00 in room B12.",
        "Your talk: 16 May 2025, 14:00, room B12.",
        "16 May 2025",
    ),
    (
        "Grace Hopper joins me on 15 May 2025. She is allergic to peanuts.",
        "Noted: Grace Hopper arrives on 15 May 2025, and no peanuts for her.",
        "Grace Hopper",
    ),
)

_TOPICS: Final = (
    ("slides", "the opening slides of the talk", "shorten them and lead with the demo"),
    ("packing", "what to pack for a week of warm weather", "light layers and a good pair of shoes"),
    ("museums", "which museum to visit on the free afternoon", "the tile museum is closest to the hotel"),
    ("dinner", "a place for the team dinner", "a seafood place near the river with a set menu"),
    ("transport", "getting from the airport to the hotel", "the metro is quick, a taxi is easier with bags"),
    ("rehearsal", "when to rehearse the talk", "the evening before, with a timer"),
    ("weather", "whether it will rain", "mostly sunny, so an umbrella is optional"),
    ("questions", "likely questions after the talk", "prepare answers about memory limits and costs"),
    ("souvenirs", "gifts for the office", "pastries travel badly, tiles travel well"),
    ("networking", "who to meet at the conference", "the organisers and the speakers of the same track"),
)
_ASKS: Final = (
    "Can we go over {about} again?",
    "I keep thinking about {about}. Any advice?",
    "Quick one about {about}: what would you do?",
    "Remind me what we said about {about}.",
    "Let's revisit {about} once more.",
)


def demo_script(turns: int) -> list[tuple[str, str]]:
    """The ``(user, assistant)`` pairs of the demo conversation: facts first, then chat.

    Args:
        turns: Number of pairs (at least 1).
    """
    pairs = [(user, assistant) for user, assistant, _ in FACT_TURNS]
    i = 0
    while len(pairs) < turns:
        topic, about, advice = _TOPICS[i % len(_TOPICS)]
        ask = _ASKS[(i // len(_TOPICS)) % len(_ASKS)].format(about=about)
        pairs.append(
            (
                ask,
                f"On {topic}: {advice}. Shall we move on to the next item on your list?",
            )
        )
        i += 1
    return pairs[:turns]


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What a demo run did.

    Attributes:
        prompt_tokens: Per turn, the tokens of the messages the model was given.
        history_tokens: Per turn, the tokens of the whole conversation so far (what a
            plain, unbounded history would have sent).
        facts: The facts of the first turns, each with whether the final summary keeps it.
    """

    db: str
    session_id: str
    framework: str
    turns: int
    active_messages: int
    archived_messages: int
    commits: int
    archives: int
    merged_archives: int
    budget: int
    prompt_tokens: tuple[int, ...]
    history_tokens: tuple[int, ...]
    summary: str
    facts: tuple[tuple[str, bool], ...]
    seconds: float

    @property
    def messages(self) -> int:
        """Messages stored in the session, archived included."""
        return self.active_messages + self.archived_messages


def next_demo_session_id(manager: SessionManager, prefix: str = "demo-") -> str:
    """``demo-<n>`` with ``n`` one more than the highest demo session in the store."""
    highest, offset = 0, 0
    while True:
        page = manager.list_sessions(limit=500, offset=offset)
        for record in page:
            tail = record.session_id.removeprefix(prefix)
            if record.session_id.startswith(prefix) and tail.isdigit():
                highest = max(highest, int(tail))
        if len(page) < 500:
            return f"{prefix}{highest + 1}"
        offset += 500


_EXTRA_MODULES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "langchain": ("langchain", ("langchain_core", "langchain_ogmem")),
    "llama-index": ("llama-index", ("llama_index.core", "llama_index.memory.ogmem")),
}


def require_framework(framework: str) -> None:
    """Check that ``framework``'s extra is installed, before anything is written or shown.

    Raises:
        ValueError: An unknown framework.
        ImportError: The extra is missing; the message is the install command.
    """
    if framework not in _EXTRA_MODULES:
        raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    extra, modules = _EXTRA_MODULES[framework]
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f'the {framework} demo needs: pip install "ogmem-memory[{extra}]"') from exc


def run_demo(
    *,
    db: str | None = None,
    turns: int = DEFAULT_TURNS,
    framework: str = "langchain",
    session_id: str | None = None,
    config: MemoryConfig = DEMO_CONFIG,
    progress: Callable[[int], None] | None = None,
) -> DemoReport:
    """Run the scripted conversation through a framework adapter and report what memory did.

    Args:
        db: Store URL or SQLite path; ``None`` is ``$OGMEM_DB`` or ``./ogmem.db``.
        turns: Conversation turns (user message + answer).
        framework: ``"langchain"`` (``RunnableWithMessageHistory``) or ``"llama-index"``
            (``SimpleChatEngine``).
        session_id: Session to write; default the next free ``demo-<n>``.
        config: Memory thresholds and the context budget.
        progress: Called with the number of turns done after each turn.

    Raises:
        ValueError: ``turns < 1`` or an unknown ``framework``.
        ImportError: The framework's extra is not installed.
    """
    if turns < 1:
        raise ValueError(f"turns must be >= 1, got {turns}")
    require_framework(framework)
    url = db or os.environ.get("OGMEM_DB") or "ogmem.db"
    pairs = demo_script(turns)
    started = time.perf_counter()
    with SessionManager(url, config=config) as manager:
        sid = session_id or next_demo_session_id(manager)
        run = _run_langchain if framework == "langchain" else _run_llama_index
        prompt_tokens = run(_Script(manager, sid, pairs, progress))
        manager.wait_for_tasks()
        report = _report(manager, sid, framework, url, pairs, prompt_tokens)
    return replace(report, seconds=time.perf_counter() - started)


def _report(
    manager: SessionManager,
    sid: str,
    framework: str,
    url: str,
    pairs: Sequence[tuple[str, str]],
    prompt_tokens: Sequence[int],
) -> DemoReport:
    history = manager.get_history(sid)
    archives = manager.list_archives(sid, include_merged=True)
    live = [a for a in archives if not a.merged_into]
    record = manager.store.get_session_record(sid)
    summary = live[0].overview if live else ""
    counter = manager.token_counter
    return DemoReport(
        db=url,
        session_id=sid,
        framework=framework,
        turns=len(pairs),
        active_messages=sum(m.status == "active" for m in history),
        archived_messages=sum(m.status == "archived" for m in history),
        commits=record.commit_count if record else 0,
        archives=len(live),
        merged_archives=len(archives) - len(live),
        budget=manager.config.context_token_budget,
        prompt_tokens=tuple(prompt_tokens),
        history_tokens=tuple(_history_tokens(pairs, counter)),
        summary=summary,
        facts=tuple((fact, fact.lower() in summary.lower()) for *_, fact in FACT_TURNS[: len(pairs)]),
        seconds=0.0,
    )


def _history_tokens(pairs: Sequence[tuple[str, str]], counter: TokenCounter) -> list[int]:
    # What the model would read per turn with the whole history: system + all earlier
    # turns + the new question.
    total = counter.count(SYSTEM_PROMPT)
    out = []
    for user, assistant in pairs:
        total += counter.count(user)
        out.append(total)
        total += counter.count(assistant)
    return out


@dataclass(frozen=True, slots=True)
class _Script:
    """What a framework runner plays: the conversation, into ``sid`` of ``manager``."""

    manager: SessionManager
    sid: str
    pairs: Sequence[tuple[str, str]]
    progress: Callable[[int], None] | None

    def play(self, ask: Callable[[str], object]) -> None:
        """Ask each user turn in order, reporting progress after each."""
        for turn, (user, _) in enumerate(self.pairs, 1):
            ask(user)
            if self.progress is not None:
                self.progress(turn)


def _run_langchain(script: _Script) -> list[int]:
    manager, sid, pairs = script.manager, script.sid, script.pairs
    try:
        from langchain_core.language_models.fake_chat_models import FakeListChatModel
        from langchain_core.prompt_values import PromptValue
        from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
        from langchain_core.runnables import RunnableLambda
        from langchain_core.runnables.history import RunnableWithMessageHistory
        from langchain_ogmem import OgmemChatMessageHistory
    except ImportError as exc:
        raise ImportError('the langchain demo needs: pip install "ogmem-memory[langchain]"') from exc

    seen: list[int] = []

    def record(prompt: PromptValue) -> PromptValue:
        # The exact messages handed to the model: system prompt, ogmem's context, question.
        seen.append(sum(manager.token_counter.count(m.text) for m in prompt.to_messages()))
        return prompt

    model = FakeListChatModel(responses=[assistant for _, assistant in pairs])
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    config: Any = {"configurable": {"session_id": sid}}
    with warnings.catch_warnings():
        # RunnableWithMessageHistory is deprecated upstream but still what LCEL apps use.
        warnings.simplefilter("ignore", DeprecationWarning)
        chain = RunnableWithMessageHistory(
            prompt | RunnableLambda(record) | model,
            lambda session_id: OgmemChatMessageHistory(session_id, manager=manager),
            input_messages_key="question",
            history_messages_key="history",
        )
        script.play(lambda user: chain.invoke({"question": user}, config))
    return seen


def _run_llama_index(script: _Script) -> list[int]:
    manager, sid, pairs = script.manager, script.sid, script.pairs
    try:
        from llama_index.core.base.llms.types import (
            ChatMessage,
            ChatResponse,
            CompletionResponse,
            CompletionResponseGen,
            LLMMetadata,
        )
        from llama_index.core.chat_engine import SimpleChatEngine
        from llama_index.core.llms import CustomLLM
        from llama_index.memory.ogmem import OgmemChatMemoryBuffer
    except ImportError as exc:
        raise ImportError('the llama-index demo needs: pip install "ogmem-memory[llama-index]"') from exc

    seen: list[int] = []
    replies = iter([assistant for _, assistant in pairs])
    counter = manager.token_counter

    class ScriptedLLM(CustomLLM):
        """Answers from the script and records what each call was given."""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(context_window=8192, num_output=256, is_chat_model=True)

        def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
            seen.append(sum(counter.count(m.content or "") for m in messages))
            return ChatResponse(message=ChatMessage(role="assistant", content=next(replies)))

        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=next(replies))

        def stream_complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponseGen:
            raise NotImplementedError("the demo does not stream")

    memory = OgmemChatMemoryBuffer.from_defaults(
        session_id=sid, manager=manager, token_limit=manager.config.context_token_budget
    )
    engine = SimpleChatEngine.from_defaults(llm=ScriptedLLM(), memory=memory, system_prompt=SYSTEM_PROMPT)
    script.play(engine.chat)
    return seen


def format_report(report: DemoReport) -> str:
    """The demo's summary for a terminal: counts, tokens per turn vs the full history, summary."""
    seen = report.prompt_tokens or (0,)
    full = report.history_tokens[-1] if report.history_tokens else 0
    kept = sum(ok for _, ok in report.facts)
    lines = [
        f"ogmem demo: {report.turns} turns through {report.framework} in {report.seconds:.1f}s",
        f"  database       {report.db}  (session {report.session_id})",
        f"  messages       {report.messages} stored: {report.active_messages} active, "
        f"{report.archived_messages} archived (none deleted)",
        f"  commits        {report.commits}, archives {report.archives} live + {report.merged_archives} merged",
        f"  model saw      {min(seen)} / {sum(seen) // len(seen)} / {max(seen)} tokens per turn "
        f"(min / mean / max; memory budget {report.budget})",
        f"  full history   {full} tokens at the last turn "
        f"({full / max(seen[-1], 1):.0f}x what the model read then)",
        f"  early facts    {kept}/{len(report.facts)} kept in the summary: "
        + ", ".join(f"{fact} {'yes' if ok else 'no'}" for fact, ok in report.facts),
        "",
        "Final summary:",
        _indent(report.summary or "(no commit yet: try more --turns)"),
        "",
        f"Inspect it:  ogmem show {report.session_id} --db {report.db}",
    ]
    return "\n".join(lines)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())
