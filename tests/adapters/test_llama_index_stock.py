"""LlamaIndex's own memory tests, ported to run OgmemChatMemoryBuffer and OgmemChatStore beside
the stock ChatMemoryBuffer and SimpleChatStore, with no tokenizer given (LlamaIndex's default).

Ported from llama-index-core tests/memory/test_chat_memory_buffer.py and
tests/storage/chat_store/test_simple_chat_store.py. Four upstream cases pass the initial token
count positionally, where llama-index-core 0.14 takes ``input``; they fail against the stock class
too, so the port passes ``initial_token_count=`` and expects what the stock class returns then.

On the code before issue 10 (``len/4`` estimate, per-message sums, most-recently-updated keys),
``test_max_tokens``, ``test_get_when_space_for_second_message_and_answer_...``, the limit
sweeps and ``test_add_messages_keys_in_insertion_order`` fail.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llama_index.core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.utils import get_tokenizer
from llama_index.memory.ogmem import OgmemChatMemoryBuffer, OgmemChatStore

from ogmem_memory import MemoryConfig, SessionManager
from tests.adapters.llama_index_fakes import ws_tokenizer
from tests.conftest import make_store

tokenizer = get_tokenizer()

USER_CHAT_MESSAGE = ChatMessage(role=MessageRole.USER, content="first message")
USER_CHAT_MESSAGE_TOKENS = len(tokenizer(str(USER_CHAT_MESSAGE.content)))
SECOND_USER_CHAT_MESSAGE = ChatMessage(role=MessageRole.USER, content="second message")
ASSISTANT_CHAT_MESSAGE = ChatMessage(role=MessageRole.ASSISTANT, content="first answer")
ASSISTANT_CHAT_MESSAGE_TOKENS = len(tokenizer(str(ASSISTANT_CHAT_MESSAGE.content)))
SECOND_ASSISTANT_CHAT_MESSAGE = ChatMessage(role=MessageRole.USER, content="second answer")
SECOND_ASSISTANT_CHAT_MESSAGE_TOKENS = len(tokenizer(str(SECOND_ASSISTANT_CHAT_MESSAGE.content)))
FOUR = [USER_CHAT_MESSAGE, ASSISTANT_CHAT_MESSAGE, SECOND_USER_CHAT_MESSAGE, SECOND_ASSISTANT_CHAT_MESSAGE]

Memory = ChatMemoryBuffer | OgmemChatMemoryBuffer
Factory = Callable[..., Memory]


@pytest.fixture(params=["stock", "ogmem"])
def from_defaults(request: pytest.FixtureRequest) -> Factory:
    """``from_defaults`` of the stock class or ours: every ported case runs against both."""
    cls = ChatMemoryBuffer if request.param == "stock" else OgmemChatMemoryBuffer
    return cls.from_defaults


def _both(**kwargs: Any) -> tuple[OgmemChatMemoryBuffer, ChatMemoryBuffer]:
    return OgmemChatMemoryBuffer.from_defaults(**kwargs), ChatMemoryBuffer.from_defaults(**kwargs)


# -- test_chat_memory_buffer.py ---------------------------------------------------------------


def test_put_get(from_defaults: Factory) -> None:
    memory = from_defaults(chat_history=[USER_CHAT_MESSAGE])
    history = memory.get()
    assert len(history) == 1
    assert history[0].content == USER_CHAT_MESSAGE.content


def test_get_when_initial_tokens_less_than_limit_returns_history(from_defaults: Factory) -> None:
    memory = from_defaults(token_limit=1000, chat_history=[USER_CHAT_MESSAGE])
    assert memory.get(initial_token_count=5) == [USER_CHAT_MESSAGE]


def test_get_when_initial_tokens_exceed_limit_raises_value_error(from_defaults: Factory) -> None:
    memory = from_defaults(token_limit=49)
    with pytest.raises(ValueError) as error:
        memory.get(initial_token_count=50)
    assert str(error.value) == "Initial token count exceeds token limit"


def test_get_when_initial_tokens_same_as_limit_returns_newest_alone(from_defaults: Factory) -> None:
    memory = from_defaults(token_limit=5, chat_history=[USER_CHAT_MESSAGE])
    # Nothing fits; the stock class then returns the newest message so the LLM can complain.
    assert memory.get(initial_token_count=5) == [USER_CHAT_MESSAGE]


def test_get_when_space_for_one_message_returns_the_newest(from_defaults: Factory) -> None:
    token_limit = 5
    initial = token_limit - USER_CHAT_MESSAGE_TOKENS
    memory = from_defaults(token_limit=token_limit, chat_history=[USER_CHAT_MESSAGE, ASSISTANT_CHAT_MESSAGE])
    assert memory.get(initial_token_count=initial) == [ASSISTANT_CHAT_MESSAGE]


def test_get_when_space_for_second_message_and_answer_removes_only_first_message_and_answer(
    from_defaults: Factory,
) -> None:
    token_limit = 5
    initial = token_limit - USER_CHAT_MESSAGE_TOKENS - ASSISTANT_CHAT_MESSAGE_TOKENS
    memory = from_defaults(token_limit=token_limit, chat_history=FOUR)
    assert memory.get(initial_token_count=initial) == [
        SECOND_USER_CHAT_MESSAGE,
        SECOND_ASSISTANT_CHAT_MESSAGE,
    ]


def test_get_when_space_for_all_but_first_message_removes_first_message_and_answer(
    from_defaults: Factory,
) -> None:
    token_limit = 10
    history_tokens = (
        ASSISTANT_CHAT_MESSAGE_TOKENS + USER_CHAT_MESSAGE_TOKENS + SECOND_ASSISTANT_CHAT_MESSAGE_TOKENS
    )
    memory = from_defaults(token_limit=token_limit, chat_history=FOUR)
    # The window may not start with the assistant answer, so the first question goes with it.
    got = memory.get(initial_token_count=token_limit - history_tokens)
    assert got == [SECOND_USER_CHAT_MESSAGE, SECOND_ASSISTANT_CHAT_MESSAGE]


def test_set(from_defaults: Factory) -> None:
    memory = from_defaults(chat_history=[USER_CHAT_MESSAGE])
    memory.put(USER_CHAT_MESSAGE)
    assert len(memory.get()) == 2
    memory.set([USER_CHAT_MESSAGE])
    assert len(memory.get()) == 1


def test_max_tokens(from_defaults: Factory) -> None:
    memory = from_defaults(chat_history=[USER_CHAT_MESSAGE], token_limit=5)
    memory.put(USER_CHAT_MESSAGE)
    assert len(memory.get()) == 2
    memory.put(USER_CHAT_MESSAGE)
    memory.put(USER_CHAT_MESSAGE)
    assert len(memory.get()) == 2
    assert len(memory.get_all()) == 4
    memory.put(ChatMessage(role=MessageRole.USER, content="test message2"))
    assert memory.get()[-1].content == "test message2"
    assert len(memory.get()) == 2


def test_string_save_load(from_defaults: Factory) -> None:
    memory = from_defaults(chat_history=[USER_CHAT_MESSAGE], token_limit=5)
    new_memory = type(memory).from_string(memory.to_string())
    assert len(new_memory.get()) == 1
    assert new_memory.token_limit == 5


def test_dict_save_load(from_defaults: Factory) -> None:
    memory = from_defaults(chat_history=[USER_CHAT_MESSAGE], token_limit=5)
    new_memory = type(memory).from_dict(memory.to_dict())
    assert len(new_memory.get()) == 1
    assert new_memory.token_limit == 5


def test_pickle(from_defaults: Factory) -> None:
    memory = from_defaults()
    assert isinstance(pickle.loads(pickle.dumps(memory)), type(memory))


# -- every limit, side by side ---------------------------------------------------------------

CONVERSATIONS = {
    "four": FOUR,
    "max_tokens": [USER_CHAT_MESSAGE] * 4 + [ChatMessage(role="user", content="test message2")],
    "mixed": [
        ChatMessage(role="system", content="You are terse.\nAnswer in one line."),
        ChatMessage(role="user", content="What's 12345 + 67890? Reply like: 80235."),
        ChatMessage(
            role="assistant",
            blocks=[
                TextBlock(text="Let me add."),
                ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 12345, "b": 67890}),
            ],
        ),
        ChatMessage(role="tool", content="80235", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="assistant", content="80235."),
        ChatMessage(role="user", content="  leading spaces, émoji 🎉 and 中文 "),
        ChatMessage(role="assistant", content=""),
        ChatMessage(role="user", content="(parenthesised)...and-so-on!!"),
        ChatMessage(role="assistant", content="Supercalifragilistic http://x.io/a?b=c 'quoted'"),
        ChatMessage(role="user", content="1 2 3 4 5 6 7 8 9 10"),
    ],
    # Found by search: a space before each text makes tiktoken merge differently, so the
    # joined text counts fewer tokens than the sum of the messages at many limits.
    "joins": [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=text)
        for i, text in enumerate(
            [
                "! Xyzzy",
                "unbelievable unbelievable",
                "Xyzzy naïve",
                "4567 Supercalifragilistic Xyzzy Zürich",
                "Xyzzy naïve hello unbelievable",
                "unbelievable 4567",
                "unbelievable ? ?",
                "unbelievable hello hello 4567",
            ]
        )
    ],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_every_limit_keeps_what_stock_keeps(name: str) -> None:
    """For each limit up to past the whole conversation, and a few initial counts, ``get()``
    returns exactly the stock class's messages (no summary yet, default tokenizer)."""
    messages = CONVERSATIONS[name]
    total = len(tokenizer(" ".join(str(m.content) for m in messages)))
    for token_limit in range(1, total + 3):
        ours, stock = _both(chat_history=messages, token_limit=token_limit)
        for initial in sorted({0, 1, token_limit // 2, token_limit}):
            assert ours.get(initial_token_count=initial) == stock.get(initial_token_count=initial), (
                token_limit,
                initial,
            )


def test_every_limit_with_an_explicit_tokenizer() -> None:
    """Stock's tokenizer passed explicitly: joined-text counting, not per-message sums."""
    joins = CONVERSATIONS["joins"]
    per_message = sum(len(tokenizer(str(m.content))) for m in joins)
    assert per_message != len(tokenizer(" ".join(str(m.content) for m in joins)))  # the case exists
    for messages in (CONVERSATIONS["mixed"], joins):
        for token_limit in range(1, 80):
            ours, stock = _both(chat_history=messages, token_limit=token_limit, tokenizer_fn=tokenizer)
            assert ours.get() == stock.get(), token_limit


TRICKY = [
    "Xyzzy",
    "unbelievable",
    "naïve",
    "4567",
    "Supercalifragilistic",
    "?",
    "!",
    "中文",
    "🎉",
    "",
    "  ",
    "\n",
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.lists(st.sampled_from(TRICKY), max_size=5).map(" ".join), min_size=1, max_size=9),
    roles=st.lists(st.sampled_from(["user", "assistant", "tool", "system"]), min_size=9, max_size=9),
    token_limit=st.integers(1, 60),
    initial=st.integers(0, 10),
)
def test_random_conversations_keep_what_stock_keeps(
    texts: list[str], roles: list[str], token_limit: int, initial: int
) -> None:
    messages = [ChatMessage(role=role, content=text) for role, text in zip(roles, texts, strict=False)]
    ours, stock = _both(chat_history=messages, token_limit=token_limit)
    if initial > token_limit:
        with pytest.raises(ValueError):
            ours.get(initial_token_count=initial)
    else:
        assert ours.get(initial_token_count=initial) == stock.get(initial_token_count=initial)


@pytest.fixture
def restore_tokenizer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(llama_index.core, "global_tokenizer", llama_index.core.global_tokenizer)
    yield


@pytest.mark.usefixtures("restore_tokenizer")
def test_settings_tokenizer_set_later_is_honoured() -> None:
    history = [
        ChatMessage(role="user", content="Supercalifragilisticexpialidocious antidisestablishmentarianism"),
        ChatMessage(role="user", content="ok"),
    ]
    ours, stock = _both(chat_history=history, token_limit=4)
    assert ours.get() == stock.get() == history[-1:]  # tiktoken: 18 tokens
    Settings.tokenizer = ws_tokenizer  # 3 words: now everything fits
    # The stock class takes the tokenizer when it is built; ours looks it up at each get().
    stock_after = ChatMemoryBuffer.from_defaults(chat_history=history, token_limit=4)
    assert ours.get() == stock_after.get() == history
    assert stock.get() == history[-1:]
    assert len(ours.tokenizer_fn("a b c")) == 3


def test_import_resolves_no_tokenizer(tmp_path: Path) -> None:
    """The tokenizer is looked up at use: set after import and construction, it is the one used."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from llama_index.core import Settings\n"
        "from llama_index.core.llms import ChatMessage\n"
        "from llama_index.memory.ogmem import OgmemChatMemoryBuffer\n"
        "m = OgmemChatMemoryBuffer.from_defaults(token_limit=3)\n"
        "loaded = 'tiktoken' in sys.modules\n"
        "Settings.tokenizer = str.split\n"
        "m.put(ChatMessage(role='user', content='one two')); m.put(ChatMessage(role='user', content='x'))\n"
        "print(loaded, 'tiktoken' in sys.modules, len(m.get()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.split() == ["False", "False", "2"]


# -- test_simple_chat_store.py -------------------------------------------------------------------


@pytest.fixture(params=["simple", "memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def chat_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimpleChatStore | OgmemChatStore]:
    if request.param == "simple":
        yield SimpleChatStore()
        return
    manager = SessionManager(
        make_store(request.param, tmp_path, request),
        config=MemoryConfig(commit_token_threshold=10**9, commit_turn_threshold=0),
    )
    yield OgmemChatStore(manager=manager)
    manager.close()


def test_add_messages_keys_in_insertion_order(chat_store: SimpleChatStore | OgmemChatStore) -> None:
    chat_store.add_message("user1", ChatMessage(role="user", content="hello"))
    chat_store.add_message("user1", ChatMessage(role="user", content="world"))
    chat_store.add_message("user2", ChatMessage(role="user", content="hello"))
    chat_store.add_message("user2", ChatMessage(role="user", content="world"))
    pair = [ChatMessage(role="user", content="hello"), ChatMessage(role="user", content="world")]
    assert chat_store.get_messages("user1") == pair
    assert chat_store.get_messages("user2") == pair
    assert chat_store.get_keys() == ["user1", "user2"]
    chat_store.add_message("user1", ChatMessage(role="user", content="hello"), idx=0)
    assert chat_store.get_messages("user1") == [pair[0], *pair]
    assert chat_store.get_keys() == ["user1", "user2"]  # a later write does not reorder


def test_deleted_keys_leave_and_come_back_last(chat_store: SimpleChatStore | OgmemChatStore) -> None:
    for key in ("a", "b", "c"):
        chat_store.add_message(key, ChatMessage(role="user", content=key))
    chat_store.delete_messages("a")
    assert chat_store.get_keys() == ["b", "c"]
    chat_store.add_message("a", ChatMessage(role="user", content="again"))
    assert chat_store.get_keys() == ["b", "c", "a"]
    assert chat_store.get_messages("a") == [ChatMessage(role="user", content="again")]


def test_delete_chat_messages(chat_store: SimpleChatStore | OgmemChatStore) -> None:
    for key in ("user1", "user2"):
        chat_store.add_message(key, ChatMessage(role="user", content="hello"))
        chat_store.add_message(key, ChatMessage(role="user", content="world"))
    chat_store.delete_messages("user1")
    assert chat_store.get_messages("user1") == []
    assert chat_store.get_messages("user2") == [
        ChatMessage(role="user", content="hello"),
        ChatMessage(role="user", content="world"),
    ]


def test_delete_chat_message(chat_store: SimpleChatStore | OgmemChatStore) -> None:
    chat_store.add_message("user1", ChatMessage(role="user", content="hello"))
    chat_store.add_message("user1", ChatMessage(role="user", content="world"))
    chat_store.delete_last_message("user1")
    assert chat_store.get_messages("user1") == [ChatMessage(role="user", content="hello")]


def test_delete_chat_message_idx(chat_store: SimpleChatStore | OgmemChatStore) -> None:
    chat_store.add_message("user1", ChatMessage(role="user", content="hello"))
    chat_store.add_message("user1", ChatMessage(role="user", content="world"))
    chat_store.delete_message("user1", 0)
    assert chat_store.get_messages("user1") == [ChatMessage(role="user", content="world")]
