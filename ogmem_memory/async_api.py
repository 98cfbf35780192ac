"""``threaded``: the ``a*`` twin of a sync method, run in a worker thread.

Sync is the contract; the stores' native async drivers are used by the stores themselves.
``SessionManager`` defines its twins as ``aadd_message = threaded(add_message)``, so each
signature is written once, on the sync method, and type checkers see the same parameters
on the twin (``Concatenate``/``ParamSpec``) with an awaitable of the same return type.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


def threaded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """The async twin ``a<name>`` of ``method``: ``asyncio.to_thread`` of the bound sync method.

    The twin looks the sync method up on the instance at each call, as ``self.<name>``
    did in the hand-written twins, so a subclass's override is what runs.
    """
    name = method.__name__

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        sync = cast("Callable[P, R]", getattr(self, name))
        return await asyncio.to_thread(sync, *args, **kwargs)

    twin.__name__ = f"a{name}"
    twin.__qualname__ = f"{method.__qualname__.rpartition('.')[0]}.a{name}".lstrip(".")
    twin.__doc__ = f"Async twin of ``{name}``: runs it in a worker thread (``asyncio.to_thread``)."
    return twin


__all__ = ["threaded"]
