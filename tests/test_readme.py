"""Every ```python block of the README runs (each in a fresh interpreter, in a temp dir)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postgres_dsn_or_skip

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_code_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    env = dict(os.environ)
    if "postgresql://" in code or "OGMEM_POSTGRES_DSN" in code:
        env["OGMEM_POSTGRES_DSN"] = postgres_dsn_or_skip()
    env.pop("OGMEM_DB", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"README block {index} failed:\n{code}\n---\n{result.stderr[-3000:]}"
