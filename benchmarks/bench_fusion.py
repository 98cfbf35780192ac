"""What one ``ExtractiveCompressor.compress_batch`` call costs: its fixed part and per message.

Captures the real calls (messages, previous overview, previous abstract) by feeding LoCoMo
conversations (``shared/data/locomo10.json``, read with the scorer's ``load_conversation``) to a
``SessionManager`` with the default config, as ``compress_identity.py`` does, then replays them:

* ``full``: every call in conversation order, the caches left as the previous call left them
  (what a running manager sees);
* ``fixed``: each call with only the first two messages of its batch, after the previous call
  replayed untimed with its whole batch (so the caches hold what a running manager's would);
  this isolates the part of a call that does not grow with its batch;
* ``cold``: every call with all the compressor's caches cleared first.

Times are wall (``perf_counter``, ``time.sleep(0)`` of ``gil_breaks`` included) and thread CPU.
``--base`` compares with another checkout in the same process, run by run alternated (a copy of
its package renamed ``ogmem_base``), so that a shared machine's load weighs on both alike:

    PYTHONPATH=. python benchmarks/bench_fusion.py --conversations 10 --repeats 4 --base ../main
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _locomo import conversations as locomo_conversations
from _locomo import feed, load_scorer

from ogmem_memory import MemoryConfig, SessionManager, SQLiteStore
from ogmem_memory.compress import ExtractiveCompressor

ROOT = Path(__file__).resolve().parent.parent
_MODULES = (
    "compress.extractive",
    "compress.extractive_facts",
    "compress.extractive_text",
    "compress.sections",
)
Call = tuple[list[dict[str, Any]], str, str]


def capture(conversations: int) -> tuple[list[list[Call]], dict[str, int]]:
    """The compressor calls of a default ``SessionManager`` fed each conversation, in order,
    and the settings of its compressor."""
    scorer = load_scorer()
    samples = locomo_conversations(conversations)
    out: list[list[Call]] = []
    settings: dict[str, int] = {}
    for sample in samples:
        calls: list[Call] = []
        manager = SessionManager(SQLiteStore(":memory:"), config=MemoryConfig())
        compressor = manager.compressor
        assert isinstance(compressor, ExtractiveCompressor)
        settings = {"max_overview_tokens": compressor.max_overview_tokens, "max_facts": compressor.max_facts}
        compress = compressor.compress

        def recording(
            messages: Any,
            prev_overview: str = "",
            prev_abstract: str = "",
            calls: list[Call] = calls,
            compress: Callable[..., Any] = compress,
        ) -> Any:
            calls.append((copy.deepcopy(list(messages)), prev_overview, prev_abstract))
            return compress(messages, prev_overview, prev_abstract)

        manager.compressor.compress = recording  # type: ignore[method-assign]
        try:
            feed(manager, scorer.load_conversation(sample))
        finally:
            manager.close()
        out.append([c for c in calls if c[0]])
    return out, settings


def load_base(checkout: Path) -> str:
    """The package of another checkout, importable as ``ogmem_base``: its name."""
    folder = Path(tempfile.mkdtemp(prefix="bench_fusion_"))
    target = folder / "ogmem_base"
    shutil.copytree(checkout / "ogmem_memory", target, ignore=shutil.ignore_patterns("__pycache__"))
    for source in target.rglob("*.py"):
        source.write_text(source.read_text().replace("ogmem_memory", "ogmem_base"))
    sys.path.insert(0, str(folder))
    return "ogmem_base"


def clear_caches(package: str = "ogmem_memory") -> None:
    """Empty every ``functools`` cache of the compressor's modules."""
    for name in _MODULES:
        module = importlib.import_module(f"{package}.{name}")
        for value in vars(module).values():
            clear = getattr(value, "cache_clear", None)
            if callable(clear):
                clear()


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def replay(
    mode: str,
    conversations: Sequence[Sequence[Call]],
    settings: dict[str, int],
    package: str = "ogmem_memory",
) -> tuple[float, float, int, int]:
    """Total (wall, cpu) seconds of the timed calls of ``mode``, their count and messages."""
    # the manager's settings, its default token counter
    factory = importlib.import_module(f"{package}.compress.extractive").ExtractiveCompressor
    compressor = factory(max_overview_tokens=settings["max_overview_tokens"], max_facts=settings["max_facts"])
    clear_caches(package)
    wall = cpu = 0.0
    calls = messages = 0
    for conversation in conversations:
        for number, (batch, prev_overview, prev_abstract) in enumerate(conversation):
            if mode == "fixed":
                if number:  # the previous commit, as a running manager made it
                    compressor.compress_batch(*conversation[number - 1])
                batch = batch[:2]
            elif mode == "cold":
                clear_caches(package)

            def call(
                batch: list[dict[str, Any]] = batch, prev: str = prev_overview, pa: str = prev_abstract
            ) -> None:
                compressor.compress_batch(batch, prev, pa)

            w, c = _timed(call)
            wall += w
            cpu += c
            calls += 1
            messages += len(batch)
    return wall, cpu, calls, messages


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", default="full,fixed,cold")
    parser.add_argument("--base", type=Path, help="another checkout to compare with, alternated")
    args = parser.parse_args()
    conversations, settings = capture(args.conversations)
    modes = args.modes.split(",")
    trees = {"this": "ogmem_memory"}
    if args.base is not None:
        trees["base"] = load_base(args.base.resolve())
    results: dict[str, dict[str, list[tuple[float, float, int, int]]]] = {
        tree: {m: [] for m in modes} for tree in trees
    }
    for number in range(args.repeats):
        order = list(trees.items())
        for tree, package in order if number % 2 == 0 else order[::-1]:
            for mode in modes:
                results[tree][mode].append(replay(mode, conversations, settings, package))
    for tree, by_mode in results.items():
        if len(trees) > 1:
            print(f"== {tree} ({'this checkout' if tree == 'this' else args.base})")
        report(by_mode)
    return 0


def report(results: dict[str, list[tuple[float, float, int, int]]]) -> None:
    """Per call times of each mode; with full and fixed, per message and the fixed part."""
    per_call: dict[str, float] = {}
    for mode, runs in results.items():
        calls, messages = runs[0][2], runs[0][3]
        wall = [r[0] / calls * 1e6 for r in runs]
        cpu = [r[1] / calls * 1e6 for r in runs]
        per_call[mode] = min(cpu)
        print(
            f"{mode:5}: {calls} calls, {messages / calls:5.1f} msgs/call, per call (min / median of "
            f"{len(runs)}) wall {min(wall):6.0f} / {statistics.median(wall):6.0f} us, "
            f"cpu {min(cpu):6.0f} / {statistics.median(cpu):6.0f} us"
        )
    if "full" in results and "fixed" in results:
        full, fixed = results["full"][0], results["fixed"][0]
        extra = (full[3] - fixed[3]) / full[2]  # messages a full call has more than a fixed one
        per_message = (per_call["full"] - per_call["fixed"]) / extra
        print(
            f"cpu per message (full - fixed): {per_message:.1f} us; "
            f"fixed part (a call less its messages): {per_call['fixed'] - 2 * per_message:.0f} us"
        )


if __name__ == "__main__":
    raise SystemExit(main())
