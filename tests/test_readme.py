"""The README's ```python blocks run as a reader would paste them: in order, in one folder, twice.

Each block runs in a fresh interpreter, but all of them share one working directory, so
they share ``chat.db`` and the session ids they name, and the whole sequence runs a second
time in the same folder: a block that asserts absolute counts, or that forgets to start its
session fresh, fails here. Afterwards the test PostgreSQL database holds no schema the README
created.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import postgres_dsn_or_skip

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_code_blocks() -> None:
    assert len(BLOCKS) >= 3


def test_readme_blocks_run_in_order_twice_in_one_folder(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("OGMEM_DB", None)
    if any("postgresql://" in code or "OGMEM_POSTGRES_DSN" in code for code in BLOCKS):
        env["OGMEM_POSTGRES_DSN"] = postgres_dsn_or_skip()
    for round_ in (1, 2):
        for index, code in enumerate(BLOCKS):
            result = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
            )
            assert result.returncode == 0, (
                f"README block {index} failed in round {round_}:\n{code}\n---\n{result.stderr[-3000:]}"
            )
    if "OGMEM_POSTGRES_DSN" in env:
        import psycopg

        with psycopg.connect(env["OGMEM_POSTGRES_DSN"], autocommit=True) as conn:
            left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ogmem_readme%'").fetchall()
        assert left == [], f"README blocks left schemas behind: {left}"
