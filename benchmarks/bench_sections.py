"""CPU of the section machinery (parse, fuse, render, bound, merge) on the inputs real commits give it.

Feeds LoCoMo conversations (``shared/data/locomo10.json``) to a ``SessionManager`` with the configs
``compress_identity.py`` uses and records every call the extractive compressor and the archive
merger make: the compressor's ``parse_sections``, ``merge_sections``, ``render_sections`` and
``bound_sections``, and ``ArchiveMerger.merge`` (the section calls inside a merge count as the
merge's). Then it replays the recorded calls, kind by kind and then all in the order the commits
made them, and prints the CPU each took per round (the least of a process's rounds, the median
over processes; the section caches are cleared before every round) and checks every replayed
result against the recorded one.

    PYTHONPATH=. python benchmarks/bench_sections.py                      # this tree
    PYTHONPATH=. python benchmarks/bench_sections.py --baseline ../main   # alternate with another

With ``--baseline DIR`` the recorded calls are replayed in child processes, alternating this tree
and ``DIR`` (``DIR`` first, then this tree, and so on), and the medians and their ratio are shown.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _locomo import conversations, feed, load_scorer, load_script  # noqa: E402

KINDS = ("parse_sections", "merge_sections", "render_sections", "bound_sections", "merge")


def capture(limit: int) -> list[tuple[str, tuple[Any, ...], Any]]:
    """Run the conversations and record ``(kind, args, result)`` for every section call."""
    from ogmem_memory import SessionManager, SQLiteStore
    from ogmem_memory.compress import extractive

    scorer = load_scorer()
    # the configs compress_identity.py runs, so the two see the same commits
    configs = load_script("compress_identity", ROOT / "benchmarks" / "compress_identity.py").CONFIGS

    calls: list[tuple[str, tuple[Any, ...], Any]] = []

    samples = conversations(limit)
    # the compressor's own calls; the merger's are inside its recorded merges
    for kind in KINDS[:4]:
        if hasattr(extractive, kind):
            setattr(extractive, kind, _plain_recorder(calls, kind, getattr(extractive, kind)))
    for config in configs:
        for sample in samples:
            manager = SessionManager(SQLiteStore(":memory:"), config=config)
            original = manager.merger.merge
            budget = manager.merger.max_overview_tokens

            def merge(
                entries: Sequence[Any], _original: Callable[..., Any] = original, _budget: int = budget
            ) -> Any:
                snapshot = [
                    SimpleNamespace(
                        archive_id=e.archive_id,
                        created_at=e.created_at,
                        overview=e.overview,
                        abstract=e.abstract,
                        first_seq=e.first_seq,
                        last_seq=e.last_seq,
                        message_count=e.message_count,
                        token_count=e.token_count,
                    )
                    for e in entries
                ]
                result = _original(entries)
                calls.append(("merge", ((snapshot, _budget), {}), _merged_key(result)))
                return result

            manager.merger.merge = merge  # type: ignore[method-assign]
            try:
                feed(manager, scorer.load_conversation(sample))
            finally:
                manager.close()
    return calls


def _plain_recorder(
    calls: list[tuple[str, tuple[Any, ...], Any]], kind: str, fn: Callable[..., Any]
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        saved = (copy.deepcopy(args), copy.deepcopy(kwargs))
        result = fn(*args, **kwargs)
        calls.append((kind, saved, copy.deepcopy(result)))
        return result

    return wrapper


def _merged_key(merged: Any) -> tuple[str, str, int, int]:
    return (merged.overview, merged.abstract, merged.first_seq, merged.metadata["overview_items_dropped"])


def replay(path: str, rounds: int) -> dict[str, float]:
    """Least CPU seconds over the rounds of each kind's recorded calls, and of all of them in the
    order the commits made them ("in order": the caches then warm as they did), results checked."""
    from ogmem_memory.compress import merger, sections

    with open(path, "rb") as handle:
        calls = pickle.load(handle)
    functions: dict[str, Callable[..., Any]] = {kind: getattr(sections, kind) for kind in KINDS[:4]}

    def merge(entries: Sequence[Any], max_tokens: int) -> Any:
        return _merged_key(merger.ArchiveMerger(max_overview_tokens=max_tokens).merge(entries))

    functions["merge"] = merge
    caches = [f for f in vars(sections).values() if hasattr(f, "cache_clear")]
    times: dict[str, list[float]] = {kind: [] for kind in (*KINDS, "in order")}
    batches = {
        kind: [(args, kwargs, want) for k, (args, kwargs), want in calls if k == kind] for kind in KINDS
    }
    for _ in range(rounds):
        for kind, batch in (*batches.items(), ("in order", [(k, a, w) for k, a, w in calls])):
            for cache in caches:
                cache.cache_clear()
            if kind == "in order":
                start = time.process_time()
                results = [functions[k](*args, **kwargs) for k, (args, kwargs), _ in batch]
            else:
                fn = functions[kind]
                start = time.process_time()
                results = [fn(*args, **kwargs) for args, kwargs, _ in batch]
            times[kind].append(time.process_time() - start)
            if results != [want for *_, want in batch]:
                raise SystemExit(f"{kind}: a replayed result differs from the recorded one")
    return {kind: min(values) for kind, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations")
    parser.add_argument("--rounds", type=int, default=5, help="replays per process")
    parser.add_argument("--baseline", help="another tree to alternate with (its root folder)")
    parser.add_argument("--pairs", type=int, default=3, help="alternations with --baseline")
    parser.add_argument("--replay", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(replay(args.replay, args.rounds)))
        return 0
    calls = capture(args.limit)
    counts = {kind: sum(1 for k, _, _ in calls if k == kind) for kind in KINDS}
    print("recorded calls: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()))
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as handle:
        pickle.dump(calls, handle)
    try:
        trees = [("this", ROOT)]
        if args.baseline:
            trees.insert(0, ("baseline", Path(args.baseline).resolve()))
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
        for _ in range(args.pairs if args.baseline else 1):
            for name, tree in trees:
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "adapters")])}
                out = subprocess.run(
                    [sys.executable, __file__, "--replay", handle.name, "--rounds", str(args.rounds)],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results[name].append(json.loads(out.splitlines()[-1]))
    finally:
        os.unlink(handle.name)
    for kind in (*KINDS, "in order"):
        row = {name: statistics.median(r[kind] for r in runs) for name, runs in results.items()}
        line = ", ".join(f"{name} {seconds * 1e3:8.2f} ms" for name, seconds in row.items())
        if args.baseline and row["this"]:
            line += f", baseline/this {row['baseline'] / row['this']:.2f}x"
        print(f"{kind:16} per round: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
