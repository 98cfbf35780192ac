"""OpsGate: the manager's count of calls in flight, which ``close()`` waits for.

Every public ``SessionManager`` call runs inside ``with gate:``; once the gate is closed,
entering raises ``ClosedError`` and ``drain`` waits for the calls already inside. A class
with ``__enter__``/``__exit__`` rather than a generator context manager: it is entered on
every ``add_message``. Its condition is a leaf lock (see ``cache.py`` for the lock order).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from ogmem_memory.errors import ClosedError


class OpsGate:
    """Admits calls until ``close()``; ``drain()`` then waits for those still inside."""

    __slots__ = ("_cond", "_in_flight", "_lock", "closed")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # taken directly on the hot path (Condition's is Python-level)
        self._cond = threading.Condition(self._lock)
        self._in_flight = 0
        self.closed = False

    def __enter__(self) -> None:
        with self._lock:
            if self.closed:
                raise ClosedError("this SessionManager is closed")
            self._in_flight += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._in_flight -= 1
            # only close() waits, and it sets closed under this lock before waiting
            if self.closed and not self._in_flight:
                self._cond.notify_all()

    def close(self) -> bool:
        """Refuse new calls from now on; False when the gate was already closed."""
        with self._cond:
            if self.closed:
                return False
            self.closed = True
            return True

    def drain(self, deadline: float | None) -> bool:
        """Wait until no call is inside (at most until ``time.monotonic()`` reaches ``deadline``)."""
        with self._cond:
            while self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True
