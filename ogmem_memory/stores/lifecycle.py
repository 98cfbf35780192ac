"""``with store:``: the context-manager half of every store's lifecycle, written once."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Lifecycle:
    """``__enter__`` runs ``setup`` and returns the store; ``__exit__`` runs ``close``.

    The store classes define ``setup`` and ``close`` (abstract for session stores).
    """

    def setup(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.setup()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
