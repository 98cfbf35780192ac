"""Jupyter display (HTML of contexts, archives, sessions) and the token plot."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ogmem_memory import ArchiveEntry, Context, MemoryConfig, SessionManager, SessionNotFoundError
from ogmem_memory.display import (
    SessionView,
    archive_html,
    context_html,
    esc,
    preview,
    session_html,
    session_view,
    token_bar,
)

LOW = MemoryConfig(
    commit_token_threshold=300, commit_turn_threshold=6, keep_recent_messages=4, keep_recent_tokens=100
)
EVIL = "<script>alert('x')</script>"


@pytest.fixture
def manager() -> Iterator[SessionManager]:
    with SessionManager("memory://", config=LOW) as m:
        for i in range(20):
            m.add_message("s1", "user", f"Turn {i}: the code is AUR-88412 {EVIL}")
            m.add_message("s1", "assistant", f'Reply {i} with "quotes" & ampersands {EVIL}')
        m.wait_for_tasks()
        m.commit("s1", wait=True)
        m.add_message("s1", "user", f"What was the code? {EVIL}")
        yield m


def assert_safe(html: str) -> None:
    assert "<script" not in html.lower()
    assert "javascript:" not in html.lower()
    assert not re.search(r"\son\w+\s*=", html)  # no event-handler attributes


def test_context_html(manager: SessionManager) -> None:
    ctx = manager.get_context("s1", 600)
    html = ctx._repr_html_()
    assert html == context_html(ctx)
    assert_safe(html)
    assert "&lt;script&gt;" in html
    assert f"{ctx.token_count} / 600 tokens" in html
    assert "Summary" in html and "Recent messages" in html
    assert esc(preview(ctx.messages[-1].content)) in html


def test_context_html_escapes_every_field() -> None:
    ctx = Context(
        session_id=EVIL,
        summary=EVIL,
        abstracts=(EVIL,),
        recalled=(),
        messages=(),
        state={"active_task": EVIL, "open_loops": [EVIL]},
        token_count=5,
        budget=10,
        query=EVIL,
    )
    html = context_html(ctx)
    assert_safe(html)
    assert html.count("&lt;script&gt;") >= 5


def test_archive_html(manager: SessionManager) -> None:
    archive = manager.list_archives("s1")[0]
    full = manager.read_archive("s1", archive.archive_id)
    assert isinstance(full, ArchiveEntry) and full.messages
    html = full._repr_html_()
    assert html == archive_html(full)
    assert_safe(html)
    assert esc(archive.archive_id) in html and "Overview" in html and "Archived turns" in html
    assert f"{full.first_seq}\u2013{full.last_seq}" in html


def test_archive_html_escapes() -> None:
    entry = ArchiveEntry(
        archive_id=EVIL,
        session_id=EVIL,
        overview=EVIL,
        abstract=EVIL,
        first_seq=1,
        last_seq=2,
        message_count=2,
    )
    html = archive_html(entry)
    assert_safe(html)
    assert html.count("&lt;script&gt;") == 4


def test_session_view(manager: SessionManager) -> None:
    view = session_view(manager, "s1", recent=5)
    assert isinstance(view, SessionView)
    assert view.messages == 41
    assert view.archived_messages == 40 and view.active_messages == 1
    assert len(view.recent) == 5 and view.recent[-1].content.startswith("What was the code?")
    assert view.summary == manager.list_archives("s1")[0].overview
    assert view.live_archives and view.record.commit_count >= 1
    assert view.to_dict()["session"]["session_id"] == "s1"
    html = view._repr_html_()
    assert html == session_html(view)
    assert_safe(html)
    assert "Archives" in html and "Recent messages" in html and "&lt;script&gt;" in html


def test_session_view_of_a_missing_session(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFoundError):
        session_view(manager, "missing")


def test_token_bar_scales_to_the_budget() -> None:
    html = token_bar([("a", 25, "#f00"), ("b", 25, "#0f0"), ("empty", 0, "#00f")], 100)
    widths = [float(w) for w in re.findall(r"width:([\d.]+)%", html)]
    assert widths == [25.0, 25.0]
    over = token_bar([("a", 300, "#f00")], 100)  # over budget: the bar is full, not wider
    assert re.findall(r"width:([\d.]+)%", over) == ["100.00"]


def test_preview() -> None:
    assert preview("a\n  b") == "a b"
    assert preview("x" * 500, 10) == "x" * 9 + "\u2026"


def test_plot_context_tokens() -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ogmem_memory.plot import plot_context_tokens

    ax = plot_context_tokens({"ogmem": [10, 20, 30], "full": [10, 40, 90]}, budget=50)
    try:
        assert [line.get_label() for line in ax.get_lines()] == ["ogmem", "full", "budget (50)"]
        assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]
        fig, other = plt.subplots()
        assert plot_context_tokens({"x": [1]}, ax=other) is other
        plt.close(fig)
    finally:
        plt.close("all")
    with pytest.raises(ValueError):
        plot_context_tokens({})


def test_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    from ogmem_memory.plot import plot_context_tokens

    with pytest.raises(ImportError, match=r'pip install "ogmem-memory\[notebook\]"'):
        plot_context_tokens({"x": [1]})


def test_cli_display_plot_demo_import_no_optional_dependency() -> None:
    code = (
        "import sys, ogmem_memory, ogmem_memory.cli, ogmem_memory.display, ogmem_memory.plot, ogmem_memory.demo; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'langchain_core', 'langchain', 'llama_index', "
        "'psycopg', 'matplotlib', 'tqdm', 'langchain_ogmem'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
