"""Small timing helpers shared by the benchmark scripts (medians: the machines are noisy)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_call(fn: Callable[[int], object], n: int, *, repeats: int = 3) -> float:
    """Median over ``repeats`` runs of the mean seconds per call of ``fn(i)`` for i in range(n)."""
    runs = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(r * n + i)
        runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"
