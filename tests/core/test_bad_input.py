"""Bad input (DESIGN section 9): a clear OgmemError subclass, and nothing stored."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from ogmem_memory import (
    AccessDeniedError,
    ConfigError,
    InMemoryStore,
    InvalidInputError,
    InvalidSessionIdError,
    MemoryConfig,
    MessageTooLargeError,
    OgmemError,
    RequestContext,
    SessionManager,
    SQLiteStore,
)

ALICE = RequestContext(account_id="acme", user_id="alice")
MALLORY = RequestContext(account_id="acme", user_id="mallory")


@pytest.fixture(params=["memory", "sqlite"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> SessionManager:
    store = InMemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "bad.db")
    return SessionManager(store, config=MemoryConfig(max_message_chars=1000, max_session_id_length=64))


def nothing_stored(manager: SessionManager, session_id: str = "s") -> bool:
    return manager.store.get_session_record(session_id) is None or manager.get_history(session_id) == []


@pytest.mark.parametrize("role", ["human", "ai", "", "USER", None, 3])
def test_unknown_role_rejected(manager: SessionManager, role: object) -> None:
    with pytest.raises(InvalidInputError, match="role"):
        manager.add_message("s", role, "hello")  # type: ignore[arg-type]
    assert nothing_stored(manager)


@pytest.mark.parametrize("content", [None, 42, b"bytes", ["a", "b"], {"text": "x"}])
def test_non_str_content_rejected(manager: SessionManager, content: object) -> None:
    with pytest.raises(InvalidInputError, match="content"):
        manager.add_message("s", "user", content)  # type: ignore[arg-type]
    assert nothing_stored(manager)


@pytest.mark.parametrize(
    "session_id",
    ["", "   ", "a" * 65, "tab\there", "line\nbreak", "nul\x00byte", None, 7, "\ud800"],
)
def test_bad_session_ids_rejected(manager: SessionManager, session_id: object) -> None:
    with pytest.raises(InvalidSessionIdError):
        manager.add_message(session_id, "user", "hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionIdError):
        manager.get_context(session_id, 100)  # type: ignore[arg-type]
    assert manager.list_sessions() == []


def test_oversized_message_rejected(manager: SessionManager) -> None:
    with pytest.raises(MessageTooLargeError):
        manager.add_message("s", "user", "x" * 1001)
    manager.add_message("s", "user", "x" * 1000)  # the limit itself is fine
    assert [len(m.content) for m in manager.get_history("s")] == [1000]


def test_naive_timestamp_rejected(manager: SessionManager) -> None:
    with pytest.raises(InvalidInputError, match="timezone"):
        manager.add_message("s", "user", "hi", created_at=datetime(2024, 1, 1, 12, 0))
    with pytest.raises(InvalidInputError, match="timezone"):
        manager.add_message("s", "user", "hi", created_at="2024-01-01T12:00:00")
    with pytest.raises(InvalidInputError):
        manager.add_message("s", "user", "hi", created_at="yesterday")
    assert nothing_stored(manager)
    manager.add_message("s", "user", "hi", created_at="2024-01-01T12:00:00Z")
    assert manager.get_history("s")[0].created_at.isoformat() == "2024-01-01T12:00:00+00:00"


def test_bad_payloads_rejected(manager: SessionManager) -> None:
    with pytest.raises(InvalidInputError, match="payload"):
        manager.add_message("s", "user", "hi", payload={"when": datetime.now()})
    with pytest.raises(InvalidInputError, match="payload"):
        manager.add_message("s", "user", "hi", payload=["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        manager.add_message("s", "user", "hi", payload={"x": float("nan")})
    assert nothing_stored(manager)


def test_lone_surrogate_rejected(manager: SessionManager) -> None:
    with pytest.raises(InvalidInputError, match="UTF-8"):
        manager.add_message("s", "user", "broken \ud83d text")
    assert nothing_stored(manager)


def test_add_messages_is_all_or_nothing(manager: SessionManager) -> None:
    manager.add_message("s", "user", "first")
    with pytest.raises(InvalidInputError):
        manager.add_messages("s", [{"role": "user", "content": "ok"}, {"role": "robot", "content": "bad"}])
    with pytest.raises(InvalidInputError):
        manager.add_messages("s", [{"role": "user", "content": "ok", "extra": 1}])
    with pytest.raises(InvalidInputError):
        manager.add_messages("s", [{"role": "user"}])
    with pytest.raises(InvalidInputError):
        manager.add_messages("s", "not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        manager.add_messages("s", [("user", "tuple")])  # type: ignore[list-item]
    assert [m.content for m in manager.get_history("s")] == ["first"]


def test_other_user_denied_and_nothing_changes(manager: SessionManager) -> None:
    manager.add_message("s", "user", "alice's secret", ALICE)
    for call in (
        lambda: manager.add_message("s", "user", "intrusion", MALLORY),
        lambda: manager.add_messages("s", [{"role": "user", "content": "x"}], MALLORY),
        lambda: manager.get_context("s", 100, MALLORY),
        lambda: manager.get_history("s", MALLORY),
        lambda: manager.commit("s", MALLORY),
        lambda: manager.clear_session("s", MALLORY),
        lambda: manager.delete_session("s", MALLORY),
        lambda: manager.search("secret", MALLORY, session_id="s"),
        lambda: manager.list_archives("s", MALLORY),
    ):
        with pytest.raises(AccessDeniedError):
            call()
    assert [m.content for m in manager.get_history("s", ALICE)] == ["alice's secret"]
    assert [r.session_id for r in manager.list_sessions(MALLORY)] == []
    assert manager.search("secret", MALLORY) == []
    assert [m.content for m in manager.search("secret", ALICE)] == ["alice's secret"]


def test_other_user_denied_across_managers(tmp_path: Path) -> None:
    """The binding lives in the store: a second process (manager) enforces it too."""
    db = tmp_path / "shared.db"
    SessionManager(SQLiteStore(db)).add_message("s", "user", "mine", ALICE)
    other = SessionManager(SQLiteStore(db))
    with pytest.raises(AccessDeniedError):
        other.add_message("s", "user", "intrusion", MALLORY)
    assert [m.content for m in other.get_history("s")] == ["mine"]


def test_sql_looking_and_unicode_content_stored_verbatim(manager: SessionManager) -> None:
    texts = [
        "'; DROP TABLE ogmem_messages; --",
        'Robert"); DELETE FROM ogmem_sessions WHERE ("1"="1',
        "ünïcödé 你好世界 😀 مرحبا",
        'NEAR(a b) OR "quoted" AND *',
        "",
    ]
    sid = "weird'; DROP TABLE x; --"
    for t in texts:
        manager.add_message(sid, "user", t)
    assert [m.content for m in manager.get_history(sid)] == texts
    assert [r.session_id for r in manager.list_sessions()] == [sid]
    manager.search("DROP TABLE NEAR OR", session_id=sid)  # must not raise


def test_bad_arguments_to_reads(manager: SessionManager) -> None:
    manager.add_message("s", "user", "hi")
    for budget in (0, -5, "100", 1.5, True):
        with pytest.raises(InvalidInputError):
            manager.get_context("s", budget)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        manager.get_context("s", 100, query=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        manager.get_context("s", 100, "not a ctx")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        manager.list_sessions(limit=-1)


def test_config_errors() -> None:
    for kwargs in (
        {"commit_token_threshold": 0},
        {"keep_recent_messages": -1},
        {"context_token_budget": "4000"},
        {"summary_share": 1.5},
        {"archive_merge_threshold": 1},
        {"background_workers": 0},
        {"max_message_chars": True},
    ):
        with pytest.raises(ConfigError):
            MemoryConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        SessionManager(InMemoryStore(), config={"commit_token_threshold": 5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SessionManager("redis://nope")


def test_error_tree() -> None:
    for exc in (
        ConfigError,
        InvalidInputError,
        InvalidSessionIdError,
        MessageTooLargeError,
        AccessDeniedError,
    ):
        assert issubclass(exc, OgmemError)
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(AccessDeniedError, PermissionError)
