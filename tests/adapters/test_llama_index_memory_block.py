"""Issue 12 item 7: OgmemMemoryBlock in LlamaIndex's ``Memory``, modelled on LlamaIndex's own
memory-block tests (llama-index-core/tests/memory/): real ``Memory``, ``SimpleChatEngine`` and
``StaticMemoryBlock`` objects, a recording ``MockLLM``, real SQLite/PostgreSQL stores."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.memory import Memory, StaticMemoryBlock
from llama_index.core.memory.memory import InsertMethod
from llama_index.memory.ogmem import MessageTypeError, OgmemChatMemoryBuffer, OgmemMemoryBlock

from ogmem_memory import MemoryConfig, RequestContext, SessionManager
from ogmem_memory.errors import ConfigError, InvalidInputError
from ogmem_memory.extract import RuleBasedExtractor
from ogmem_memory.stores import InMemoryStore
from tests.adapters.llama_index_fakes import RecordingMockLLM, ws_tokenizer
from tests.conftest import postgres_dsn_or_skip

ADA = RequestContext(user_id="ada")
SESSION_ONE = [
    "My cat is called Whiskers.",
    "I live in Lisbon.",
    "Could you suggest a name for a goldfish?",
    "And one for a parrot?",
    "Thanks, that is all for now.",
]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def block_options(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """How a block reaches its store: a manager, a URL (the shared manager), or PostgreSQL."""
    if request.param == "memory":
        manager = SessionManager(InMemoryStore())
        yield {"manager": manager}
        manager.close()
    elif request.param == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'blocks.db'}"}
        SessionManager.close_shared()
    else:
        from ogmem_memory.stores.postgres import PostgresStore

        schema = request.getfixturevalue("postgres_schema")
        manager = SessionManager(PostgresStore(postgres_dsn_or_skip(), schema=schema))
        yield {"manager": manager}
        manager.close()


def engine_for(
    session_id: str, block: OgmemMemoryBlock, *, token_limit: int = 60
) -> tuple[SimpleChatEngine, RecordingMockLLM, Memory]:
    memory = Memory.from_defaults(session_id=session_id, token_limit=token_limit, memory_blocks=[block])
    llm = RecordingMockLLM()
    return SimpleChatEngine.from_defaults(llm=llm, memory=memory), llm, memory


# One event loop for every async turn: LlamaIndex's Memory keeps an aiosqlite engine bound to
# the loop it first ran in, whose worker threads call back into that loop later.
_LOOP = asyncio.new_event_loop()


def say(engine: SimpleChatEngine, text: str, mode: str) -> str:
    if mode == "chat":
        return str(engine.chat(text))
    return str(_LOOP.run_until_complete(engine.achat(text)))


@pytest.mark.parametrize("mode", ["chat", "achat"])
def test_a_fact_of_session_one_reaches_session_two_and_never_another_user(
    block_options: dict[str, Any], mode: str
) -> None:
    ada_one, llm_one, memory_one = engine_for("ada-1", OgmemMemoryBlock(user_id="ada", **block_options))
    for text in SESSION_ONE:
        say(ada_one, text, mode)
    assert "ogmem_memories" not in llm_one.prompts[0]  # nothing was known yet
    # Memory flushed the early turns out of its queue into the block, which extracted them
    assert "My cat is called Whiskers." not in [m.content for m in memory_one.get()]

    ada_two, llm_two, memory_two = engine_for("ada-2", OgmemMemoryBlock(user_id="ada", **block_options))
    assert memory_two.get_all() == []  # a new session: the fact can only come through the block
    say(ada_two, "What is my cat called?", mode)
    prompt = llm_two.prompts[-1]
    assert "<ogmem_memories>" in prompt and "Whiskers" in prompt
    assert prompt.index("Whiskers") < prompt.index("What is my cat called?")  # in the system message

    bob, llm_bob, _ = engine_for("bob-1", OgmemMemoryBlock(user_id="bob", **block_options))
    say(bob, "What is my cat called?", mode)
    assert "Whiskers" not in llm_bob.prompts[-1] and "Lisbon" not in llm_bob.prompts[-1]
    assert "ogmem_memories" not in llm_bob.prompts[-1]  # nothing known: Memory leaves the block out


async def test_rendered_exactly_as_the_stock_static_block_renders_the_same_text() -> None:
    manager = SessionManager(InMemoryStore())
    block = OgmemMemoryBlock(user_id="ada", manager=manager, name="facts")
    await block.aput([ChatMessage(role="user", content="My cat is called Whiskers. I live in Lisbon.")])
    question = ChatMessage(role="user", content="What is my cat called?")
    text = await block.aget([question])
    assert text.startswith("- ") and "Whiskers" in text
    assert all(line.startswith("- ") for line in text.split("\n"))

    ours = Memory.from_defaults(session_id="ours", token_limit=1000, memory_blocks=[block])
    stock = Memory.from_defaults(
        session_id="stock",
        token_limit=1000,
        memory_blocks=[StaticMemoryBlock(name="facts", static_content=text)],
    )
    for memory in (ours, stock):
        await memory.aput(question.model_copy())
    got, expected = await ours.aget(), await stock.aget()
    assert [(m.role, m.content) for m in got] == [(m.role, m.content) for m in expected]
    assert got[0].role == MessageRole.SYSTEM and "<facts>" in (got[0].content or "")

    # side by side in one Memory: each block in its own tag of the one system message
    both = Memory.from_defaults(
        session_id="both",
        token_limit=1000,
        memory_blocks=[StaticMemoryBlock(name="rules", static_content="Answer briefly."), block],
    )
    await both.aput(question.model_copy())
    system = (await both.aget())[0]
    content = system.content or ""
    assert system.role == MessageRole.SYSTEM
    assert "<rules>" in content and "<facts>" in content and "Whiskers" in content

    into_user = Memory.from_defaults(
        session_id="user", token_limit=1000, memory_blocks=[block], insert_method=InsertMethod.USER
    )
    await into_user.aput(question.model_copy())
    (message,) = await into_user.aget()
    assert message.role == MessageRole.USER and "Whiskers" in (message.content or "")
    manager.close()


async def test_aget_shows_what_is_relevant_else_the_profile_and_nothing_when_nothing_is_known() -> None:
    manager = SessionManager(InMemoryStore())
    block = OgmemMemoryBlock(user_id="ada", manager=manager, limit=8)
    assert await block.aget() == ""
    assert await block.aget([ChatMessage(role="user", content="Where do I live?")]) == ""
    await block.aput(
        [
            ChatMessage(role="user", content="My name is Ada."),
            ChatMessage(role="user", content="I live in Lisbon."),
            ChatMessage(role="user", content="My cat is called Whiskers."),
            ChatMessage(role="assistant", content="Noted."),
        ]
    )
    relevant = await block.aget([ChatMessage(role="user", content="Where do I live?")])
    assert relevant.split("\n")[0].endswith("Lisbon.")
    profile = await block.aget()  # no messages: the profile
    assert "Ada" in profile and "Lisbon" in profile
    # only the newest user message is the query; assistant and tool turns are not
    after_reply = await block.aget(
        [
            ChatMessage(role="user", content="What is my cat called?"),
            ChatMessage(role="assistant", content="Where do you live?"),
        ]
    )
    assert after_reply.split("\n")[0].endswith("Whiskers.")
    assert await block.aget([ChatMessage(role="user", content="zzz qqq")]) == profile  # no match: profile
    one = OgmemMemoryBlock(user_id="ada", manager=manager, limit=1)
    assert len((await one.aget()).split("\n")) == 1
    assert await OgmemMemoryBlock(user_id="ada", manager=manager, limit=0).aget() == ""
    manager.close()


async def test_duplicates_merge_updates_replace_and_deletion_is_in_no_later_get() -> None:
    manager = SessionManager(InMemoryStore())
    block = OgmemMemoryBlock(user_id="ada", manager=manager)
    for _ in range(3):
        await block.aput([ChatMessage(role="user", content="I like Python.")])
    assert len([m for m in manager.list_memories(ADA) if "Python" in m.content]) == 1
    await block.aput([ChatMessage(role="user", content="I live in Lisbon.")])
    await block.aput([ChatMessage(role="user", content="I moved to Porto.")])
    where = await block.aget([ChatMessage(role="user", content="Where do I live?")])
    assert "Porto" in where and "Lisbon" not in where
    (python,) = [m for m in manager.list_memories(ADA) if "Python" in m.content]
    assert manager.delete_memory(ADA, python.memory_id)
    assert "Python" not in await block.aget([ChatMessage(role="user", content="Do I like Python?")])
    manager.close()


async def test_messages_flushed_by_memory_are_extracted_unless_short_term_is_refused() -> None:
    manager = SessionManager(InMemoryStore())
    refusing = OgmemMemoryBlock(user_id="ada", manager=manager, accept_short_term_memory=False)
    flushed = [ChatMessage(role="user", content="My cat is called Whiskers.")]
    await refusing.aput(flushed, from_short_term_memory=True, session_id="s1")
    assert manager.list_memories(ADA) == []
    accepting = OgmemMemoryBlock(user_id="ada", manager=manager)
    await accepting.aput(flushed, from_short_term_memory=True, session_id="s1")
    assert [m.content for m in manager.list_memories(ADA)] == ["User's cat is called Whiskers."]
    assert "Whiskers" in await refusing.aget()  # it still reads what was written elsewhere
    manager.close()


async def test_each_agent_and_account_of_a_user_has_its_own_memories() -> None:
    manager = SessionManager(InMemoryStore())
    await OgmemMemoryBlock(user_id="ada", agent_id="travel", manager=manager).aput(
        [ChatMessage(role="user", content="I live in Lisbon.")]
    )
    assert "Lisbon" in await OgmemMemoryBlock(user_id="ada", agent_id="travel", manager=manager).aget()
    assert await OgmemMemoryBlock(user_id="ada", manager=manager).aget() == ""
    assert (
        await OgmemMemoryBlock(user_id="ada", account_id="other", agent_id="travel", manager=manager).aget()
        == ""
    )
    manager.close()


class FlakyExtractor(RuleBasedExtractor):
    failing = True

    def extract(self, messages: Any, *, session_summary: str = "") -> Any:
        if self.failing:
            raise RuntimeError("extractor down")
        return super().extract(messages, session_summary=session_summary)


async def test_a_failed_extraction_breaks_no_turn_and_is_retried_with_the_next_flush(tmp_path: Path) -> None:
    extractor = FlakyExtractor()
    manager = SessionManager(f"sqlite:///{tmp_path / 'flaky.db'}", extractor=extractor)
    block = OgmemMemoryBlock(user_id="ada", manager=manager)
    await block.aput([ChatMessage(role="user", content="My cat is called Whiskers.")])
    assert block.pending_messages == 1 and manager.list_memories(ADA) == []
    extractor.failing = False
    await block.aput([ChatMessage(role="user", content="I live in Lisbon.")])
    contents = " ".join(m.content for m in manager.list_memories(ADA))
    assert "Whiskers" in contents and "Lisbon" in contents
    assert block.pending_messages == 0
    manager.close()


async def test_atruncate_drops_the_least_relevant_memories_first() -> None:
    manager = SessionManager(InMemoryStore(), token_counter=ws_tokenizer)
    block = OgmemMemoryBlock(user_id="ada", manager=manager)
    content = "- one two three four\n- five six seven eight\n- nine ten eleven twelve"
    assert await block.atruncate(content, 0) == content
    assert await block.atruncate(content, 5) == "- one two three four\n- five six seven eight"
    # the last line costs its 5 words and its newline
    assert await block.atruncate(content, 6) == "- one two three four\n- five six seven eight"
    assert await block.atruncate(content, 7) == "- one two three four"
    assert await block.atruncate(content, 1000) is None
    manager.close()


async def test_memory_over_its_limit_drops_the_block_unless_its_priority_is_zero() -> None:
    manager = SessionManager(InMemoryStore())
    await OgmemMemoryBlock(user_id="ada", manager=manager).aput(
        [ChatMessage(role="user", content="My cat is called Whiskers. I live in Lisbon.")]
    )
    question = ChatMessage(
        role="user", content="Tell me about my cat, the one I talked about before, please."
    )
    for priority, kept in ((1, False), (0, True)):
        block = OgmemMemoryBlock(user_id="ada", manager=manager, priority=priority)
        memory = Memory(token_limit=14, session_id=f"p{priority}", memory_blocks=[block])
        await memory.aput(question.model_copy())
        text = " ".join(m.content or "" for m in await memory.aget())
        assert ("Whiskers" in text) is kept
    manager.close()


@pytest.mark.parametrize("user_id", ["", "   ", None, 7, "default", "a\x00b", "x" * 10_000])
def test_bad_user_id_is_a_clear_error(user_id: object) -> None:
    with pytest.raises(InvalidInputError, match="user_id"):
        OgmemMemoryBlock(user_id=user_id, url="memory://")  # type: ignore[arg-type]


def test_bad_options_are_clear_errors() -> None:
    manager = SessionManager(InMemoryStore())
    with pytest.raises(InvalidInputError, match="limit"):
        OgmemMemoryBlock(user_id="ada", manager=manager, limit=-1)
    with pytest.raises(InvalidInputError, match="agent_id"):
        OgmemMemoryBlock(user_id="ada", manager=manager, agent_id="")
    with pytest.raises(ConfigError):
        OgmemMemoryBlock("memory://", user_id="ada", manager=manager)
    with pytest.raises(ConfigError):
        OgmemMemoryBlock(user_id="ada", manager=manager, config=MemoryConfig())
    with pytest.raises(ConfigError):
        OgmemMemoryBlock(user_id="ada", manager="memory://")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique names"):  # Memory's own check still applies
        Memory.from_defaults(
            memory_blocks=[
                OgmemMemoryBlock(user_id="ada", manager=manager),
                OgmemMemoryBlock(user_id="bob", manager=manager),
            ]
        )
    manager.close()


@pytest.mark.parametrize("bad", ["My cat is called Whiskers.", [{"role": "user", "content": "hi"}], None])
async def test_aput_rejects_what_is_not_chat_messages_and_stores_nothing(bad: object) -> None:
    manager = SessionManager(InMemoryStore())
    block = OgmemMemoryBlock(user_id="ada", manager=manager)
    with pytest.raises(MessageTypeError):
        await block.aput(bad)  # type: ignore[arg-type]
    assert manager.list_memories(ADA) == [] and block.pending_messages == 0
    manager.close()


def test_url_convention_persists_across_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'long.db'}"
    asyncio.run(
        OgmemMemoryBlock(url, user_id="ada").aput([ChatMessage(role="user", content="I live in Lisbon.")])
    )
    SessionManager.close_shared()  # as a new process would start
    assert "Lisbon" in asyncio.run(OgmemMemoryBlock(url, user_id="ada").aget())
    SessionManager.close_shared()
    monkeypatch.setenv("OGMEM_DB", str(tmp_path / "env.db"))
    asyncio.run(OgmemMemoryBlock(user_id="ada").aput([ChatMessage(role="user", content="I live in Porto.")]))
    SessionManager.close_shared()
    with SessionManager(f"sqlite:///{tmp_path / 'env.db'}") as reopened:
        assert [m.content for m in reopened.list_memories(ADA)] == ["User lives in Porto."]


async def test_the_block_shows_what_the_users_buffer_sessions_taught() -> None:
    manager = SessionManager(InMemoryStore())
    buffer = OgmemChatMemoryBuffer.from_defaults(manager=manager, session_id="chat-1", user_id="ada")
    await buffer.aput_messages(
        [
            ChatMessage(role="user", content="My cat is called Whiskers."),
            ChatMessage(role="assistant", content="What a classic name."),
        ]
    )
    manager.commit("chat-1", ADA, wait=True)  # extraction follows the commit
    manager.wait_for_tasks()
    block = OgmemMemoryBlock(user_id="ada", manager=manager)
    assert "Whiskers" in await block.aget([ChatMessage(role="user", content="my cat?")])
    manager.close()
