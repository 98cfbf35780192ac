"""The LoCoMo pieces the benchmark scripts share: where the data is, its scorer, feeding a manager.

The conversations and the reference scorer live in ``shared/`` beside the checkout (CC BY-NC 4.0:
read from there, never copied into the repository); a worktree one folder further down finds the
same folder.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the scripts choose which tree's package they import, and when
    from ogmem_memory import SessionManager

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The ``shared`` folder holding ``data/locomo10.json``, beside this checkout or further up."""
    for parent in ROOT.parents:
        if (parent / "shared" / "data" / "locomo10.json").is_file():
            return parent / "shared"
    raise SystemExit("no shared/data/locomo10.json beside this checkout or above it")


def load_script(name: str, path: Path) -> ModuleType:
    """Import the script at ``path`` as module ``name`` (its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_scorer(path: Path | None = None) -> ModuleType:
    """The reference scorer ``locomo_retention.py`` (``shared/bench``'s unless ``path``)."""
    return load_script("locomo_retention", path or shared_dir() / "bench" / "locomo_retention.py")


def conversations(limit: int = 0) -> list[dict[str, Any]]:
    """The LoCoMo samples, the first ``limit`` of them when ``limit`` is set."""
    samples: list[dict[str, Any]] = json.loads((shared_dir() / "data" / "locomo10.json").read_text())
    return samples[:limit] if limit else samples


def feed(manager: SessionManager, turns: Iterable[Any], session_id: str = "locomo") -> None:
    """Add each turn (the first speaker as "user", the other as "assistant"), waiting for the
    background commits after each one, so every commit is cut where its threshold was crossed."""
    roles: dict[str, str] = {}
    for turn in turns:
        role = roles.setdefault(turn.speaker, "user" if not roles else "assistant")
        manager.add_message(session_id, role, turn.render())
        manager.wait_for_tasks()
