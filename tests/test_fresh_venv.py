"""From ``pip install`` to a working memory: a fresh virtual environment, the checkout, the README.

Installs the project into a new venv (no system site-packages) with the ``langchain`` extra,
runs the README's first command (``ogmem demo``) and its LangChain snippet, then adds the
``llama-index`` extra and runs the LlamaIndex snippet. pip reaches the package index and
reuses its cache, so this takes a minute or two.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The README's per-framework snippets; used until the README has its own (then those run).
LANGCHAIN_SNIPPET = """\
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from langchain_ogmem import OgmemChatMessageHistory

prompt = ChatPromptTemplate.from_messages(
    [("system", "You are a helpful assistant."), MessagesPlaceholder("history"), ("human", "{question}")]
)
model = FakeListChatModel(responses=["Nice to meet you, Ada!", "You are on flight TP1357."])  # any chat model
chain = RunnableWithMessageHistory(
    prompt | model,
    lambda session_id: OgmemChatMessageHistory(session_id, url="sqlite:///chat.db"),
    input_messages_key="question",
    history_messages_key="history",
)
config = {"configurable": {"session_id": "ada"}}
chain.invoke({"question": "Hi, I'm Ada. My flight is TP1357."}, config)
print(chain.invoke({"question": "Which flight am I on?"}, config).content)
"""

LLAMA_INDEX_SNIPPET = """\
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms.mock import MockLLM

from llama_index.memory.ogmem import OgmemChatMemoryBuffer

memory = OgmemChatMemoryBuffer.from_defaults(session_id="ada", url="sqlite:///chat.db", token_limit=3000)
engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=20), memory=memory)  # any LLM
engine.chat("Hi, I'm Ada. My flight is TP1357.")
print(engine.chat("Which flight am I on?"))
print(len(memory.get_all()), "messages stored")
"""


def readme_snippet(marker: str, fallback: str) -> str:
    """The README's first ``python`` block that imports ``marker``, else ``fallback``."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        if re.search(rf"^\s*(from|import) {re.escape(marker)}\b", block, flags=re.MULTILINE):
            return str(block)
    return fallback


def sh(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OGMEM_DB", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fresh_venv_runs_the_readme(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python, ogmem = str(bindir / "python"), str(bindir / "ogmem")
    pip = [python, "-m", "pip", "install", "--quiet"]

    sh([*pip, f"{ROOT}[langchain]"], cwd=tmp_path)
    # The core pulls in no framework, and the checkout is not what gets imported.
    out = sh(
        [python, "-c", "import sys, ogmem_memory; print(ogmem_memory.__file__); print(sorted(sys.modules))"],
        tmp_path,
    )
    location, modules = out.stdout.splitlines()
    assert str(venv) in location
    assert "langchain_core" not in modules and "llama_index" not in modules

    # The README's first command, as a new user runs it (tqdm is not installed: plain progress).
    demo = sh([ogmem, "demo", "--turns", "40", "--db", str(tmp_path / "demo.db")], cwd=tmp_path)
    assert "40 turns through langchain" in demo.stdout
    assert "Final summary:" in demo.stdout
    assert "conversation: 40/40 turns" in demo.stderr
    shown = sh([ogmem, "show", "demo-1", "--db", str(tmp_path / "demo.db")], cwd=tmp_path)
    assert "session   demo-1" in shown.stdout

    langchain_dir = tmp_path / "lc"
    langchain_dir.mkdir()
    code = readme_snippet("langchain_ogmem", LANGCHAIN_SNIPPET)
    out = sh([python, "-c", code], cwd=langchain_dir)
    if code == LANGCHAIN_SNIPPET:
        assert "TP1357" in out.stdout
    assert (langchain_dir / "chat.db").is_file()

    sh([*pip, f"{ROOT}[llama-index]"], cwd=tmp_path)
    llama_dir = tmp_path / "li"
    llama_dir.mkdir()
    code = readme_snippet("llama_index.memory.ogmem", LLAMA_INDEX_SNIPPET)
    out = sh([python, "-c", code], cwd=llama_dir)
    if code == LLAMA_INDEX_SNIPPET:
        assert "4 messages stored" in out.stdout
    llama_demo = sh(
        [ogmem, "demo", "--framework", "llama-index", "--turns", "20", "--db", "d.db"], cwd=llama_dir
    )
    assert "20 turns through llama-index" in llama_demo.stdout
