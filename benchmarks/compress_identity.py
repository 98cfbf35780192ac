"""Same compressor output, before and after a speed change: hashes of every LoCoMo commit.

Feeds each LoCoMo conversation (``../shared/data/locomo10.json``, read with the scorer's own
``load_conversation``) to a ``SessionManager`` with the default config, so batches are cut and
fused across commits exactly as the manager does, and hashes every (overview, abstract) the
compressor returns, every archive left in the store (merged ones included) and every quality
report. Prints one digest per conversation and one for the run, plus the CPU the compressor,
the quality evaluator and the merger took per message (thread CPU time, so a shared machine's
other load does not count; compare only runs made side by side).

    PYTHONPATH=. python benchmarks/compress_identity.py                 # print the digests
    PYTHONPATH=. python benchmarks/compress_identity.py --expect HEX    # fail unless the run matches
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _locomo import conversations, feed, load_scorer

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore

# The default config, then one that commits every 20 turns into a smaller overview: many more
# fusions per conversation, overviews cut to size, and merges of the oldest archives.
CONFIGS: tuple[MemoryConfig, ...] = (
    MemoryConfig(),
    MemoryConfig(commit_turn_threshold=20, keep_recent_tokens=100, context_token_budget=1500),
)


class Timed:
    """Wraps one method of an object: adds its thread CPU time and hashes what it returns."""

    def __init__(self, digest: Any, name: str, key: Callable[[Any], Any] = lambda r: r) -> None:
        self.digest = digest
        self.name = name
        self.key = key
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            result = method(*args, **kwargs)
            self.seconds += time.thread_time() - start
            self.calls += 1
            self.digest.update(
                f"{self.name}:{json.dumps(self.key(result), sort_keys=True, default=repr)}\n".encode()
            )
            return result

        return timed


def run_conversation(turns: Sequence[Any], config: MemoryConfig, timers: Mapping[str, Timed]) -> None:
    manager = SessionManager(SQLiteStore(":memory:"), config=config)
    try:
        manager.compressor.compress = timers["compress"].wrap(manager.compressor.compress)  # type: ignore[method-assign]
        evaluator = manager.quality_evaluator
        evaluator.evaluate = timers["quality"].wrap(evaluator.evaluate)  # type: ignore[method-assign]
        manager.merger.merge = timers["merge"].wrap(manager.merger.merge)  # type: ignore[method-assign]
        feed(manager, turns)
        for archive in manager.store.list_archives("locomo"):
            timers["compress"].digest.update(f"archive:{archive.overview}\x00{archive.abstract}\n".encode())
    finally:
        manager.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--expect", help="the run digest to match (exit 1 when it differs)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations")
    args = parser.parse_args()
    scorer = load_scorer()
    samples = conversations(args.limit)
    run = hashlib.sha256()
    totals = {"compress": 0.0, "quality": 0.0, "merge": 0.0}
    messages = 0
    for number, config in enumerate(CONFIGS):
        for index, sample in enumerate(samples):
            turns = scorer.load_conversation(sample)
            digest = hashlib.sha256()
            timers = {name: Timed(digest, name) for name in totals}
            # a merged archive's metadata holds the time it was made: only its text is compared
            timers["merge"].key = lambda merged: (merged.overview, merged.abstract, merged.first_seq)
            run_conversation(turns, config, timers)
            messages += len(turns)
            for name, timer in timers.items():
                totals[name] += timer.seconds
            commits, merges = timers["compress"].calls, timers["merge"].calls
            print(
                f"config {number} conversation {index}: {len(turns)} turns, {commits} commits, "
                f"{merges} merges, {digest.hexdigest()[:16]}"
            )
            run.update(digest.digest())
    cpu = ", ".join(f"{name} {seconds / messages * 1e6:.1f}" for name, seconds in totals.items())
    print(f"CPU per message (us): {cpu}")
    print(f"run digest: {run.hexdigest()}")
    if args.expect and run.hexdigest() != args.expect:
        print("MISMATCH", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
