"""Background workers and task records for commits and merges.

``DaemonWorkers`` is a small thread pool whose threads are daemons: a compressor that
hangs can delay ``close(timeout=...)`` by at most its timeout and never blocks the
interpreter's exit (``ThreadPoolExecutor`` joins its threads at exit). ``TaskRegistry``
keeps the seed's task dicts for ``get_task``.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from copy import deepcopy
from typing import Any

from ogmem_memory.errors import TaskTimeoutError
from ogmem_memory.models import iso, utc_now

_STOP = object()


class DaemonWorkers:
    """Up to ``size`` daemon threads running submitted callables in order of submission."""

    def __init__(self, size: int, name: str = "ogmem-commit", *, idle_seconds: float = 30.0) -> None:
        self.size = size
        self.name = name
        self.idle_seconds = idle_seconds  # an idle thread ends: a dropped manager leaves none behind
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # a leaf lock (see ogmem_memory.cache)
        self._threads: list[threading.Thread] = []
        self._pending: set[Future[Any]] = set()
        self._stopped = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.add_done_callback(self._forget)
        with self._lock:
            if self._stopped:
                raise RuntimeError("workers are stopped")
            self._pending.add(future)
            # queued under the lock, so an idle thread deciding to end sees it (see _work)
            self._queue.put((future, fn, args))
            if len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                item = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._threads.remove(me)
                        return
                continue
            if item is _STOP:
                with self._lock:
                    if me in self._threads:
                        self._threads.remove(me)
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # a task's own failure; the worker keeps serving
                future.set_exception(exc)
            else:
                future.set_result(result)

    def pending(self) -> list[Future[Any]]:
        with self._lock:
            return [f for f in self._pending if not f.done()]

    def wait(self, timeout: float | None = None) -> None:
        """Block until every submitted task finished (tasks submitted meanwhile included).

        Raises:
            TaskTimeoutError: Some were still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pending = self.pending()
            if not pending:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TaskTimeoutError(f"{len(pending)} background task(s) still running")
            wait_futures(pending, timeout=left)

    def stop(self) -> None:
        """Let the threads end after the queued work (they are daemons: nothing waits for them)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(_STOP)


class TaskRegistry:
    """The seed's commit task records, finished ones pruned oldest first beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()  # a leaf lock
        self._tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def register(self, session_id: str, archive_id: str) -> dict[str, Any]:
        task = {
            "task_id": f"task_{uuid.uuid4().hex[:12]}",
            "session_id": session_id,
            "archive_id": archive_id,
            "status": "processing",
            "created_at": iso(utc_now()),
        }
        with self._lock:
            self._tasks[task["task_id"]] = task
            excess = len(self._tasks) - self.limit
            for task_id in list(self._tasks):
                if excess <= 0:
                    break
                if self._tasks[task_id]["status"] != "processing":
                    del self._tasks[task_id]
                    excess -= 1
        return task

    def update(self, task: dict[str, Any], **values: Any) -> None:
        with self._lock:
            task.update(values)

    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            task = self._tasks.get(task_id)
            return deepcopy(task) if task is not None else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)
