"""Option handling shared by the history and the middleware: no LangChain, no I/O."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Final

from ogmem_memory.config import MemoryConfig
from ogmem_memory.errors import ConfigError, InvalidInputError, InvalidSessionIdError
from ogmem_memory.models import DEFAULT_ACCOUNT, DEFAULT_USER, RequestContext

if TYPE_CHECKING:
    from ogmem_memory.manager import SessionManager

VIEWS: Final = ("context", "full")

# The core's rules for ids (session, message, identity parts): these categories never appear
# in one, and one needs a character that is neither a format character nor whitespace.
_FORBIDDEN_IN_IDS: Final = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_INVISIBLE: Final = frozenset({"Cf", "Zs"})


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an ogmem id (whatever its length), or ``None`` when it can."""
    visible = False
    for ch in value:
        category = unicodedata.category(ch)
        if category in _FORBIDDEN_IN_IDS:
            return f"it contains a control or separator character (U+{ord(ch):04X})"
        if category not in _INVISIBLE and not ch.isspace():
            visible = True
    return None if visible else "it has no visible character"


def resolve_manager(
    manager: SessionManager | None,
    *,
    url: str | None,
    config: MemoryConfig | None,
    llm: object | None,
    embedder: object | None = None,
) -> SessionManager:
    """The manager to use: the given one, or the process-wide shared one for these options.

    ``embedder`` (a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding`` or a
    ``callable(list[str]) -> list[list[float]]``) is part of the shared manager's identity,
    like ``llm``: the same objects give the same manager, on every turn.

    Raises:
        ConfigError: ``manager`` given together with ``url``, ``config``, ``llm`` or
            ``embedder`` (they configure a manager, so they would be silently ignored), or an
            unusable ``embedder``.
    """
    if manager is not None:
        given = (("url", url), ("config", config), ("llm", llm), ("embedder", embedder))
        extra = [name for name, value in given if value is not None]
        if extra:
            raise ConfigError(f"pass either manager= or {'/'.join(extra)}=, not both")
        return manager
    from ogmem_memory.manager import SessionManager

    return SessionManager.shared(url, config=config, llm=llm, embedder=embedder)


def request_context(user_id: str | None, account_id: str | None = None) -> RequestContext | None:
    """``None`` (trusted single-user caller) or the identity of ``user_id`` in ``account_id``.

    Raises:
        ConfigError: ``user_id`` or ``account_id`` is not a non-empty string, or ``account_id``
            is given without ``user_id``.
    """
    account = check_account_id(account_id)
    if user_id is None:
        if account_id is not None:
            raise ConfigError("account_id needs a user_id")
        return None
    if not isinstance(user_id, str) or not user_id.strip():
        raise ConfigError(f"user_id must be a non-empty string or None, got {user_id!r}")
    return RequestContext(account_id=account, user_id=user_id)


def check_account_id(account_id: object) -> str:
    """The account of an option (``None`` is the default account).

    Raises:
        ConfigError: Not a non-empty string without control characters.
    """
    if account_id is None:
        return DEFAULT_ACCOUNT
    if not isinstance(account_id, str) or id_problem(account_id) is not None:
        raise ConfigError(f"account_id must be a non-empty string or None, got {account_id!r}")
    return account_id


def check_end_user_id(user_id: object) -> str:
    """Validate a user id that comes with a request (``configurable``), not from the developer.

    Unlike ``user_id=None`` of the history itself, a request never gets the trusted
    single-user identity: a missing user id and the implicit default owner are refused.

    Raises:
        InvalidInputError: ``user_id`` is missing, not a string, blank, has control characters,
            or is the implicit default user.
    """
    if user_id is None:
        raise InvalidInputError("user_id is required: pass it in config['configurable']['user_id']")
    if not isinstance(user_id, str):
        raise InvalidInputError(f"user_id must be a str, got {type(user_id).__name__}")
    problem = id_problem(user_id)
    if problem is not None:
        raise InvalidInputError(f"user_id {user_id!r} cannot identify a user: {problem}")
    if user_id == DEFAULT_USER:
        raise InvalidInputError(
            f"user_id {DEFAULT_USER!r} is the implicit single-user identity and cannot be claimed by a request"
        )
    return user_id


def user_session_id(account_id: str, user_id: str, conversation_id: object, *, max_length: int) -> str:
    """The session id of one user's conversation: ``"user:<len>:<user_id>:<conversation_id>"``.

    Outside the default account it is prefixed by ``"account:<len>:<account_id>:"``. The
    length prefixes make the mapping one-to-one: no other (account, user, conversation) gives
    the same id, whatever characters they contain.

    Raises:
        InvalidSessionIdError: ``conversation_id`` is not a usable id, or the result is longer
            than ``max_length``.
    """
    conversation = check_session_id(conversation_id)
    session_id = f"user:{len(user_id)}:{user_id}:{conversation}"
    if account_id != DEFAULT_ACCOUNT:
        session_id = f"account:{len(account_id)}:{account_id}:{session_id}"
    if len(session_id) > max_length:
        raise InvalidSessionIdError(
            f"user_id and conversation_id make a {len(session_id)}-character session id"
            f" ({session_id[:40]!r}...); the limit is {max_length}"
        )
    return session_id


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def check_session_id(session_id: object) -> str:
    """Reject what can never be a session id before any I/O; the manager checks the length.

    Raises:
        InvalidSessionIdError: Not a string, empty, or containing control characters.
    """
    if not isinstance(session_id, str):
        raise InvalidSessionIdError(f"session id must be a string, got {type(session_id).__name__}")
    if not session_id.strip():
        raise InvalidSessionIdError("session id must not be empty")
    if _has_control(session_id):
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
