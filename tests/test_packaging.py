"""Packaging: the layout DESIGN section 2 fixes, and the CI script matching the README."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_import_pulls_in_no_framework() -> None:
    code = (
        "import sys, ogmem_memory, ogmem_memory.stores, ogmem_memory.testing; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'langchain_core', 'langchain', 'llama_index', "
        "'psycopg', 'psycopg_pool', 'pytest_asyncio'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_init_in_namespace_folders() -> None:
    # a stray __init__.py here breaks `import llama_index.core` in editable installs
    assert not (ROOT / "adapters" / "__init__.py").exists()
    assert not (ROOT / "adapters" / "llama_index" / "__init__.py").exists()
    assert not (ROOT / "adapters" / "llama_index" / "memory" / "__init__.py").exists()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import llama_index.core, llama_index.memory.ogmem, langchain_ogmem; print('ok')",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "ok"


def test_wheel_layout(tmp_path: Path) -> None:
    """The wheel holds our three import roots, no `adapters` package and no llama_index/__init__.py."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ogmem_memory-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"ogmem_memory", "langchain_ogmem", "llama_index"}
    assert "llama_index/__init__.py" not in names
    assert "llama_index/memory/__init__.py" not in names
    assert "llama_index/memory/ogmem/__init__.py" in names
    assert not any(n.startswith("adapters/") for n in names)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"```bash\n(?:.*\n)*?(python3? -m pytest[^\n]*)\n", readme)
    assert match, "the README has no pytest command in a bash block"
    assert match.group(1) in ci.splitlines()
    assert 'pip install --quiet -e ".[dev]"' in ci


def test_public_names() -> None:
    import ogmem_memory
    from ogmem_memory import MemoryConfig, RequestContext, SessionManager, open_store  # noqa: F401
    from ogmem_memory.stores import InMemoryStore, PostgresStore, SQLiteStore  # noqa: F401

    for name in ogmem_memory.__all__:
        assert hasattr(ogmem_memory, name), name
    assert ogmem_memory.__version__
