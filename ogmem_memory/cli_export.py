"""How ``ogmem export`` renders a session: JSON, or Markdown whose outline stays intact."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from ogmem_memory.display import SessionView
from ogmem_memory.models import iso


def export_json(view: SessionView, history: Sequence[Any]) -> str:
    """The whole session as JSON: record, summary, state, archives (without turns), every message."""
    data = {
        "session": view.record.to_dict(),
        "summary": view.summary,
        "state": dict(view.state),
        "archives": [{k: v for k, v in a.to_dict().items() if k != "messages"} for a in view.archives],
        "messages": [m.to_dict() for m in history],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def export_markdown(view: SessionView, history: Sequence[Any]) -> str:
    """The whole session as Markdown: header, summary, archive table, then the full transcript."""
    rec = view.record
    lines = [
        f"# Session `{view.session_id}`",
        "",
        f"- owner: user `{rec.user_id}`, account `{rec.account_id}`",
        f"- messages: {view.messages} ({view.active_messages} active, {view.archived_messages} archived)",
        f"- commits: {rec.commit_count}; created {iso(rec.created_at)}; updated {iso(rec.updated_at)}",
        "",
    ]
    if view.summary:
        # The overview is Markdown with its own "## Facts"-style sections: nested, they stay
        # inside "Summary" in the document outline instead of becoming its siblings.
        lines += ["## Summary", "", nest_markdown(view.summary, 2), ""]
    if view.archives:
        lines += [
            "## Archives",
            "",
            "| archive | seq | messages | abstract | merged into |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {a.archive_id} | {a.first_seq}-{a.last_seq} | {a.message_count} | "
            f"{_cell(a.abstract)} | {a.merged_into} |"
            for a in view.archives
        ]
        lines.append("")
    lines += ["## Transcript", ""]
    for m in history:
        flag = "" if m.status == "active" else ", archived"
        lines += [f"**{m.role}** (#{m.seq}, {iso(m.created_at)}{flag})", "", nest_markdown(m.content, 2), ""]
    return "\n".join(lines)


_ATX_HEADING: Final = re.compile(r"^ {0,3}(#{1,6})([ \t].*)?$")
_SETEXT_UNDERLINE: Final = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
# Lines that open a block of their own (list item, quote, table row, HTML), so they are not
# paragraph text a setext underline could turn into a heading.
_BLOCK_START: Final = re.compile(r"^ {0,3}([-+*]([ \t]|$)|\d{1,9}[.)]([ \t]|$)|>|<|\|)")


def nest_markdown(text: str, level: int) -> str:
    """``text`` made to sit under a heading of ``level`` without breaking the outline.

    Its headings (``#`` and underlined ones) are demoted together, so that the shallowest
    becomes ``level + 1`` and their relative depth is kept (at most 6, Markdown's deepest);
    text without headings is returned as is. Lines inside code fences are never touched,
    and a fence left open is closed, so it cannot swallow what follows.

    Args:
        text: Markdown, e.g. an archive overview with ``## Facts`` sections, or a message.
        level: The level of the heading it goes under (1-5).
    """
    items: list[str | tuple[int, str]] = []  # a line kept verbatim, or (level, heading text)
    paragraph: list[str] = []  # plain-text lines an underline below may turn into a heading
    in_block = False  # inside a list item or quote: an underline there is a rule, not a heading
    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            items.append(line)
            close = _FENCE.match(line)
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
                fence = None if not close.group(2).strip() else fence
            continue
        opened = _FENCE.match(line)
        heading = _ATX_HEADING.match(line)
        underline = _SETEXT_UNDERLINE.match(line)
        if underline and paragraph:
            depth = 1 if underline.group(1)[0] == "=" else 2
            items.append((depth, " " + " ".join(p.strip() for p in paragraph)))
            paragraph.clear()
            continue
        block = _BLOCK_START.match(line)
        if opened or heading or not line.strip() or underline or block:
            items += paragraph
            paragraph.clear()
            in_block = bool(block) or (in_block and bool(line.strip()) and not heading)
            if heading:
                items.append((len(heading.group(1)), (heading.group(2) or "").rstrip()))
                continue
            if opened:
                fence = opened.group(1)
            items.append(line)
        elif paragraph or not (in_block or line.startswith("    ")):  # 4 spaces after a blank: code
            paragraph.append(line)
        else:
            items.append(line)
    items += paragraph
    depths = [item[0] for item in items if isinstance(item, tuple)]
    shift = max(0, level + 1 - min(depths)) if depths else 0
    lines = [item if isinstance(item, str) else "#" * min(6, item[0] + shift) + item[1] for item in items]
    if fence is not None:
        lines.append(fence)
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
