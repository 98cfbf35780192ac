"""``OgmemMemoryMiddleware``: ogmem as the memory of a LangChain 1.x ``create_agent`` agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NotRequired, cast

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
    PrivateStateAttr,
)
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.runtime import Runtime

from langchain_ogmem._shared import check_session_id, check_token_budget, request_context, resolve_manager
from langchain_ogmem.convert import (
    SummaryRole,
    check_summary_role,
    context_to_messages,
    is_summary_message,
    keep_tool_pairs_whole,
    message_text,
    to_records,
)
from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import InvalidSessionIdError
from ogmem_memory.models import Context

if TYPE_CHECKING:
    from ogmem_memory.manager import SessionManager

ModelCallResult = ModelResponse[Any] | AIMessage


class OgmemMemoryState(AgentState[Any]):
    """Agent state plus the ids of the state messages already stored in the session."""

    ogmem_stored_ids: NotRequired[Annotated[list[str], PrivateStateAttr]]


class OgmemMemoryMiddleware(AgentMiddleware[OgmemMemoryState, Any, Any]):
    """Keeps a ``create_agent`` conversation in an ogmem session and bounds what the model reads.

    The session is the ``thread_id`` of the run config, so
    ``OgmemChatMessageHistory(thread_id, ...)`` reads the same conversation. Before every model
    call the messages of the state not stored yet (the new input, tool calls with their
    results) are written to the session; at the end of the run the final answer is. The model
    is then handed the assembled context (what is known about the user from all their
    threads, the running summary and recalled turns, then recent messages, within
    ``token_budget``, tool-call pairs whole) instead of the whole state.

    It never removes anything from the agent state, needs no LLM and works with or without a
    checkpointer: without one, each run's state holds only the new input and the session
    supplies the history. ``token_budget`` covers the conversation messages; the agent's
    system prompt and tool schemas come on top.

    Identity: the middleware serves one ``user_id`` (in ``account_id``), fixed at
    construction; every thread it runs is that user's, and the user's long-term memories
    (extracted from committed turns of any of their threads) reach every one of them. Build
    one middleware, and agent, per user; ``None`` is the trusted single-user default.

    Args:
        manager: The ``SessionManager`` (exclusive with ``url``/``config``/``llm``/``embedder``).
        url: Store URL of the shared manager; ``None`` is ``$OGMEM_DB`` or ``./ogmem.db``.
        config: ``MemoryConfig`` of the shared manager.
        llm: Any LangChain chat model used for compression (extractive fallback on failure).
        embedder: A LangChain ``Embeddings`` (or any embedder ``SessionManager`` takes):
            archived turns are then also recalled by meaning.
        token_budget: Budget of the context; ``None`` is ``config.context_token_budget``.
        user_id: Owner of the sessions; another user's thread raises ``AccessDeniedError``.
        account_id: Account of ``user_id``; ``None`` is the default account.
        summary_role: ``"system"`` (default: folded into the agent's system prompt when it has
            one) or ``"human"`` for models that accept a single leading system message only.

    Raises:
        ConfigError: An invalid option.
    """

    state_schema = OgmemMemoryState

    def __init__(
        self,
        *,
        manager: SessionManager | None = None,
        url: str | None = None,
        config: MemoryConfig | None = None,
        llm: object | None = None,
        embedder: object | None = None,
        token_budget: int | None = None,
        user_id: str | None = None,
        account_id: str | None = None,
        summary_role: SummaryRole = "system",
    ) -> None:
        super().__init__()
        self.token_budget = check_token_budget(token_budget)
        self.user_id = user_id
        self._ctx = request_context(user_id, account_id)
        self.summary_role: SummaryRole = check_summary_role(summary_role)
        # options first: a bad one must not leave a shared manager behind
        self.manager = resolve_manager(manager, url=url, config=config, llm=llm, embedder=embedder)
        self.tools = []

    def _count(self, message: BaseMessage) -> int:
        return self.manager.token_counter.count(message_text(message))

    # -- storing the turn ----------------------------------------------------------------------

    def before_model(self, state: OgmemMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Store the state messages the session does not have yet."""
        return self._store_new(state, runtime, self._write)

    async def abefore_model(self, state: OgmemMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Async :meth:`before_model`."""
        return await self._astore_new(state, runtime)

    def after_agent(self, state: OgmemMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Store the final answer (and anything else the run added after the last model call)."""
        return self._store_new(state, runtime, self._write)

    async def aafter_agent(self, state: OgmemMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Async :meth:`after_agent`."""
        return await self._astore_new(state, runtime)

    def _write(self, session_id: str, records: list[dict[str, Any]]) -> None:
        self.manager.add_messages(session_id, records, self._ctx)

    def _store_new(
        self,
        state: OgmemMemoryState,
        runtime: Runtime[Any],
        write: Callable[[str, list[dict[str, Any]]], None],
    ) -> dict[str, Any] | None:
        new, ids = _unstored(state)
        if not new:
            return None
        write(_session_id(runtime), to_records(new))
        return {"ogmem_stored_ids": ids}

    async def _astore_new(self, state: OgmemMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        new, ids = _unstored(state)
        if not new:
            return None
        await self.manager.aadd_messages(_session_id(runtime), to_records(new), self._ctx)
        return {"ogmem_stored_ids": ids}

    # -- what the model reads ------------------------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelCallResult:
        """Hand the model the assembled context instead of the whole state."""
        context = self.manager.get_context(_session_id(request.runtime), self.token_budget, self._ctx)
        return handler(self._with_context(request, context))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult:
        """Async :meth:`wrap_model_call`."""
        session_id = _session_id(request.runtime)
        context = await self.manager.aget_context(session_id, self.token_budget, self._ctx)
        return await handler(self._with_context(request, context))

    def _with_context(self, request: ModelRequest[Any], context: Context) -> ModelRequest[Any]:
        messages = context_to_messages(context, summary_role=self.summary_role)
        stored = _stored_ids(request.state)
        latest = request.messages[-1] if request.messages else None
        if latest is not None and latest.id in stored and (not messages or messages[-1].id != latest.id):
            # The current turn alone outgrew the budget and the store kept only its user
            # message; an agent that no longer sees its latest tool results calls the same
            # tools forever, so keep the newest whole steps of the turn that fit.
            messages = _fit_current_turn(request.messages, context.budget, self._count)
        # Messages an outer middleware put into this request (not in the state, so never
        # stored) still reach the model, after the stored conversation.
        messages.extend(m for m in request.messages if (m.id is None or m.id not in stored))
        messages = keep_tool_pairs_whole(messages)
        system = request.system_message
        folded = system is not None and self.summary_role == "system"
        if folded and messages and is_summary_message(messages[0]):
            # Some providers accept one leading system message only: fold the summary into it.
            assert system is not None
            return request.override(
                system_message=_join_system(system, messages[0]),
                messages=cast("list[AnyMessage]", messages[1:]),
            )
        return request.override(messages=cast("list[AnyMessage]", messages))


def _fit_current_turn(
    messages: Sequence[BaseMessage], budget: int, count: Callable[[BaseMessage], int]
) -> list[BaseMessage]:
    """The newest user message, then the newest whole steps of its turn that fit in ``budget``.

    A step is an AI message with the tool results that answer it. The newest step is kept
    even when it alone overflows: without it the agent cannot make progress.
    """
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=0)
    head, rest = list(messages[start : start + 1]), list(messages[start + 1 :])
    steps: list[list[BaseMessage]] = []
    for m in rest:
        if isinstance(m, ToolMessage) and steps:
            steps[-1].append(m)
        else:
            steps.append([m])
    remaining = budget - sum(count(m) for m in head)
    kept: list[list[BaseMessage]] = []
    for step in reversed(steps):
        cost = sum(count(m) for m in step)
        if kept and cost > remaining:
            break
        kept.append(step)
        remaining -= cost
    return head + [m for step in reversed(kept) for m in step]


def _unstored(state: OgmemMemoryState) -> tuple[list[BaseMessage], list[str]]:
    """State messages not stored yet, and the stored ids after storing them.

    The ids kept are those still in the state, so the list never outgrows the state.
    """
    stored = _stored_ids(state)
    new: list[BaseMessage] = []
    ids: list[str] = []
    for message in state["messages"]:
        if is_summary_message(message):
            continue
        if message.id is None or message.id not in stored:
            new.append(message)
        if message.id is not None:
            ids.append(message.id)
    return new, ids


def _stored_ids(state: object) -> set[str]:
    ids = state.get("ogmem_stored_ids") if isinstance(state, dict) else None
    return set(ids) if isinstance(ids, list) else set()


def _session_id(runtime: Runtime[Any] | None) -> str:
    """The run's ``thread_id``: the ogmem session of the conversation."""
    info = getattr(runtime, "execution_info", None)
    thread_id = getattr(info, "thread_id", None)
    if thread_id is None:
        from langgraph.config import get_config

        try:
            thread_id = get_config().get("configurable", {}).get("thread_id")
        except RuntimeError:
            thread_id = None
    if thread_id is None or thread_id == "":
        raise InvalidSessionIdError(
            "OgmemMemoryMiddleware needs a thread_id: "
            "agent.invoke(..., config={'configurable': {'thread_id': '<conversation id>'}})"
        )
    return check_session_id(str(thread_id))


def _join_system(system: SystemMessage, summary: BaseMessage) -> SystemMessage:
    summary_text = str(summary.text)
    if isinstance(system.content, str):
        return SystemMessage(content=f"{system.content}\n\n{summary_text}", id=system.id)
    blocks: Sequence[str | dict[str, Any]] = system.content
    return SystemMessage(content=[*blocks, {"type": "text", "text": summary_text}], id=system.id)
