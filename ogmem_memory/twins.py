"""The ``a*`` twins of sync methods (manager and stores), made from the sync method itself.

A twin has the sync method's signature (for mypy, through ``ParamSpec``, and for
``inspect.signature``), so a public signature is written once. Both kinds dispatch by name at
call time, so a backend that overrides the sync method (or ``_a<name>_impl``) is honoured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

AsyncMethod = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]


def _named(twin: Callable[..., Any], sync: Callable[..., Any], how: str) -> None:
    # Not functools.wraps: it would copy ``__isabstractmethod__`` and make every twin of an
    # abstract method abstract too.
    twin.__name__ = f"a{sync.__name__}"
    twin.__qualname__ = sync.__qualname__.removesuffix(sync.__name__) + twin.__name__
    twin.__doc__ = f"Async twin of ``{sync.__name__}``: {how}."
    twin.__module__ = sync.__module__
    twin.__wrapped__ = sync  # type: ignore[attr-defined]  # inspect.signature shows the sync one


def in_thread(sync: Callable[Concatenate[S, P], R]) -> AsyncMethod[S, P, R]:
    """The twin that runs the instance's ``sync`` method (by name) in a worker thread."""
    name = sync.__name__

    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return cast(R, await asyncio.to_thread(getattr(self, name), *args, **kwargs))

    _named(twin, sync, "runs it in a worker thread (``asyncio.to_thread``)")
    return twin


class _AsyncImpl:
    """A store seen through one name: ``_<name>_impl`` resolves to ``_a<name>_impl``."""

    __slots__ = ("_async_impl", "_impl", "_store")

    def __init__(self, store: object, name: str) -> None:
        self._store = store
        self._impl = f"_{name}_impl"
        self._async_impl = getattr(store, f"_a{name}_impl")

    def __getattr__(self, attr: str) -> Any:
        return self._async_impl if attr == self._impl else getattr(self._store, attr)


def via_async_impl(sync: Callable[Concatenate[S, P], R]) -> AsyncMethod[S, P, R]:
    """The twin of a public method that checks its arguments and returns ``self._<name>_impl(...)``.

    The twin runs that same method, with ``_<name>_impl`` resolved to ``_a<name>_impl`` and the
    coroutine it returns awaited: the checks and the bundling of the arguments are the sync
    method's own, and a backend with a native driver overrides only ``_a<name>_impl``. So the
    method may read ``self`` and call its ``_<name>_impl``, nothing else (no writes, no
    ``isinstance(self, ...)``): the public methods of ``SessionStore`` that delegate are so.
    """
    name = sync.__name__

    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        pending = sync(cast(S, _AsyncImpl(self, name)), *args, **kwargs)
        return await cast(Awaitable[R], pending)

    _named(twin, sync, f"its checks, then ``_a{name}_impl``")
    return twin
