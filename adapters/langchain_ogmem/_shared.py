"""Option handling shared by the history and the middleware: no LangChain, no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError, InvalidSessionIdError
from ogmem_memory.models import RequestContext

if TYPE_CHECKING:
    from ogmem_memory.manager import SessionManager

VIEWS: Final = ("context", "full")


def resolve_manager(
    manager: SessionManager | None,
    *,
    url: str | None,
    config: MemoryConfig | None,
    llm: object | None,
) -> SessionManager:
    """The manager to use: the given one, or the process-wide shared one for ``url``.

    Raises:
        ConfigError: ``manager`` given together with ``url``, ``config`` or ``llm`` (they
            configure a manager, so they would be silently ignored).
    """
    if manager is not None:
        given = (("url", url), ("config", config), ("llm", llm))
        extra = [name for name, value in given if value is not None]
        if extra:
            raise ConfigError(f"pass either manager= or {'/'.join(extra)}=, not both")
        return manager
    from ogmem_memory.manager import SessionManager

    return SessionManager.shared(url, config=config, llm=llm)


def request_context(user_id: str | None) -> RequestContext | None:
    """``None`` (trusted single-user caller) or the identity of ``user_id`` in the default account.

    Raises:
        ConfigError: ``user_id`` is not a non-empty string.
    """
    if user_id is None:
        return None
    if not isinstance(user_id, str) or not user_id.strip():
        raise ConfigError(f"user_id must be a non-empty string or None, got {user_id!r}")
    return RequestContext(user_id=user_id)


def check_session_id(session_id: object) -> str:
    """Reject what can never be a session id before any I/O; the manager checks the length.

    Raises:
        InvalidSessionIdError: Not a string, empty, or containing control characters.
    """
    if not isinstance(session_id, str):
        raise InvalidSessionIdError(f"session id must be a string, got {type(session_id).__name__}")
    if not session_id.strip():
        raise InvalidSessionIdError("session id must not be empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in session_id):
        raise InvalidSessionIdError(f"session id has control characters: {session_id!r}")
    return session_id


def check_token_budget(token_budget: int | None) -> int | None:
    """Validate a ``token_budget`` option (``None`` means the manager's configured budget).

    Raises:
        ConfigError: Not a positive integer.
    """
    if token_budget is None:
        return None
    if isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 1:
        raise ConfigError(f"token_budget must be a positive int or None, got {token_budget!r}")
    return token_budget
