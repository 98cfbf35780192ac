"""HTML views for Jupyter: sessions, contexts and archives as compact tables with token bars.

Pure functions returning strings: every value is escaped, styles are inline (notebook
front ends strip ``<style>`` blocks inconsistently), and there is no JavaScript.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ogmem_memory.errors import SessionNotFoundError
from ogmem_memory.models import ArchiveEntry, Context, RequestContext, SessionMessage, SessionRecord, iso
from ogmem_memory.tokens import estimate_tokens

if TYPE_CHECKING:
    from ogmem_memory.manager import SessionManager

PREVIEW_CHARS: Final = 160

# One colour per part of a context, the same in every view.
COLORS: Final[Mapping[str, str]] = {
    "summary": "#7b61ff",
    "abstracts": "#b39ddb",
    "recalled": "#ff9800",
    "messages": "#2196f3",
    "archived": "#9e9e9e",
}

_BOX: Final = "font-family:system-ui,sans-serif;font-size:13px;line-height:1.4;max-width:960px"
_TABLE: Final = "border-collapse:collapse;margin:4px 0 8px 0;font-size:12px"
_CELL: Final = "border-bottom:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top"
_PRE: Final = (
    "white-space:pre-wrap;background:#f6f6f8;color:#222;padding:6px 8px;margin:4px 0;"
    "border-radius:4px;font-size:12px;max-height:320px;overflow:auto"
)


def esc(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes included, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def token_bar(parts: Sequence[tuple[str, int, str]], total: int, *, width_px: int = 480) -> str:
    """A horizontal stacked bar: one segment per ``(label, tokens, colour)``, scaled to ``total``.

    Args:
        parts: Segments in order; empty ones are skipped.
        total: Tokens that fill the whole bar (a budget, or the sum when larger).
        width_px: Width of the full bar.
    """
    scale = max(total, sum(n for _, n, _ in parts), 1)
    segments = "".join(
        f'<div title="{esc(label)}: {n} tokens" style="width:{100 * n / scale:.2f}%;'
        f'background:{esc(colour)};height:100%"></div>'
        for label, n, colour in parts
        if n > 0
    )
    return (
        f'<div style="display:flex;width:{width_px}px;height:12px;background:#eee;'
        f'border-radius:3px;overflow:hidden;margin:4px 0">{segments}</div>'
    )


def _legend(parts: Sequence[tuple[str, int, str]]) -> str:
    return " ".join(
        f'<span style="white-space:nowrap"><span style="display:inline-block;width:9px;height:9px;'
        f'background:{esc(colour)};margin-right:3px"></span>{esc(label)} {n}</span>'
        for label, n, colour in parts
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f'<th style="{_CELL}">{esc(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{esc(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    return f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _heading(text: str, note: str = "") -> str:
    extra = f' <span style="color:#777;font-weight:normal">{esc(note)}</span>' if note else ""
    return f'<div style="font-weight:600;margin-top:8px">{esc(text)}{extra}</div>'


def _pre(text: str) -> str:
    return f'<pre style="{_PRE}">{esc(text)}</pre>'


def _message_rows(messages: Iterable[SessionMessage]) -> list[tuple[object, ...]]:
    return [(m.seq, m.role, m.tokens, m.status, preview(m.content)) for m in messages]


def _state_rows(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in state.items():
        if value in (None, "", [], (), {}):
            continue
        text = "; ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        rows.append((key, preview(text, 240)))
    return rows


def context_parts(ctx: Context) -> list[tuple[str, int, str]]:
    """Tokens of each part of a context as ``(label, tokens, colour)`` for a token bar.

    Messages carry their stored counts; the summary and abstracts are estimated, so the
    parts may differ slightly from ``ctx.token_count`` with a custom token counter.
    """
    return [
        ("summary", estimate_tokens(ctx.summary), COLORS["summary"]),
        ("abstracts", sum(estimate_tokens(a) for a in ctx.abstracts), COLORS["abstracts"]),
        ("recalled", sum(m.tokens for m in ctx.recalled), COLORS["recalled"]),
        ("messages", sum(m.tokens for m in ctx.messages), COLORS["messages"]),
    ]


def context_html(ctx: Context) -> str:
    """A ``Context`` as HTML: the token bar against the budget, summary, recalled and recent turns."""
    parts = context_parts(ctx)
    out = [
        f'<div style="{_BOX}">',
        f"<div><b>Context</b> of session <code>{esc(ctx.session_id)}</code>: "
        f"{ctx.token_count} / {ctx.budget} tokens"
        + (f", query <code>{esc(preview(ctx.query, 80))}</code>" if ctx.query else "")
        + "</div>",
        token_bar(parts, ctx.budget),
        f'<div style="font-size:11px;color:#555">{_legend(parts)}'
        + (f" &middot; {ctx.dropped_messages} older active messages left out" if ctx.dropped_messages else "")
        + "</div>",
    ]
    if ctx.summary:
        note = "truncated to fit" if ctx.summary_truncated else ""
        out += [_heading("Summary", note), _pre(ctx.summary)]
    if ctx.abstracts:
        out += [_heading("Older archives"), "<ul style='margin:2px 0'>"]
        out += [f"<li>{esc(a)}</li>" for a in ctx.abstracts]
        out.append("</ul>")
    if ctx.recalled:
        out += [
            _heading("Recalled archived turns", f"{len(ctx.recalled)}"),
            _table(("seq", "role", "tokens", "status", "content"), _message_rows(ctx.recalled)),
        ]
    out += [
        _heading("Recent messages", f"{len(ctx.messages)} of {ctx.active_message_count} active"),
        _table(("seq", "role", "tokens", "status", "content"), _message_rows(ctx.messages)),
    ]
    state = _state_rows(ctx.state)
    if state:
        out += [_heading("State"), _table(("key", "value"), state)]
    out.append("</div>")
    return "".join(out)


def archive_html(entry: ArchiveEntry, *, max_messages: int = 20) -> str:
    """An ``ArchiveEntry`` as HTML: its range, abstract, overview and (when loaded) its raw turns.

    Args:
        entry: The archive; ``read_archive`` loads its messages, ``list_archives`` does not.
        max_messages: Raw turns shown at most (a merged archive can hold hundreds).
    """
    merged = f", merged into <code>{esc(entry.merged_into)}</code>" if entry.merged_into else ""
    out = [
        f'<div style="{_BOX}">',
        f"<div><b>Archive</b> <code>{esc(entry.archive_id)}</code> of session "
        f"<code>{esc(entry.session_id)}</code>{merged}</div>",
        _table(
            ("messages", "seq range", "tokens", "created"),
            [
                (
                    entry.message_count,
                    f"{entry.first_seq}\u2013{entry.last_seq}",
                    entry.token_count,
                    iso(entry.created_at),
                )
            ],
        ),
        _heading("Abstract"),
        f"<div>{esc(entry.abstract)}</div>",
        _heading("Overview"),
        _pre(entry.overview),
    ]
    if entry.messages:
        shown = entry.messages[:max_messages]
        more = len(entry.messages) - len(shown)
        out += [
            _heading(
                "Archived turns", f"{len(entry.messages)}" + (f", first {len(shown)} shown" if more else "")
            ),
            _table(("seq", "role", "tokens", "status", "content"), _message_rows(shown)),
        ]
    out.append("</div>")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class SessionView:
    """A snapshot of one stored session, for ``ogmem show`` and Jupyter.

    Attributes:
        recent: The newest messages (active or archived), oldest first.
        archives: Every archive, newest first, merged ones included.
        summary: The running summary (overview of the newest live archive).
        state: Task state, open loops, decisions and constraints.
    """

    session_id: str
    record: SessionRecord
    recent: tuple[SessionMessage, ...]
    archives: tuple[ArchiveEntry, ...]
    active_messages: int
    archived_messages: int
    active_tokens: int
    archived_tokens: int
    summary: str
    state: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"SessionView({self.session_id!r}, messages={self.messages}, "
            f"archived={self.archived_messages}, archives={len(self.archives)})"
        )

    @property
    def messages(self) -> int:
        """Messages stored, archived included."""
        return self.active_messages + self.archived_messages

    @property
    def live_archives(self) -> tuple[ArchiveEntry, ...]:
        """Archives not merged into another one, newest first."""
        return tuple(a for a in self.archives if not a.merged_into)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the record, counters, summary, state, archives and recent messages."""
        return {
            "session": self.record.to_dict(),
            "active_messages": self.active_messages,
            "archived_messages": self.archived_messages,
            "active_tokens": self.active_tokens,
            "archived_tokens": self.archived_tokens,
            "summary": self.summary,
            "state": dict(self.state),
            "archives": [a.to_dict() for a in self.archives],
            "recent": [m.to_dict() for m in self.recent],
        }

    def _repr_html_(self) -> str:
        return session_html(self)


def session_view(
    manager: SessionManager,
    session_id: str,
    ctx: RequestContext | None = None,
    *,
    recent: int = 10,
) -> SessionView:
    """Read a stored session into a :class:`SessionView` (display it, or print its parts).

    Args:
        manager: The manager whose store holds the session.
        session_id: The session.
        ctx: The caller; a session of another user raises ``AccessDeniedError``.
        recent: How many of the newest messages to include.

    Raises:
        SessionNotFoundError: The store has no such session.
    """
    history = manager.get_history(session_id, ctx)  # checks the id and the caller first
    record = manager.store.get_session_record(session_id)
    if record is None:
        raise SessionNotFoundError(f"session {session_id!r} not found")
    archives = manager.list_archives(session_id, ctx, include_merged=True)
    active = [m for m in history if m.status == "active"]
    archived = [m for m in history if m.status != "active"]
    live = [a for a in archives if not a.merged_into]
    state = manager.get_context(session_id, None, ctx).state
    return SessionView(
        session_id=session_id,
        record=record,
        recent=tuple(history[-recent:]) if recent > 0 else (),
        archives=tuple(archives),
        active_messages=len(active),
        archived_messages=len(archived),
        active_tokens=sum(m.tokens for m in active),
        archived_tokens=sum(m.tokens for m in archived),
        summary=live[0].overview if live else "",
        state=state,
    )


def session_html(view: SessionView) -> str:
    """A :class:`SessionView` as HTML: counters, archived vs active tokens, archives, recent turns."""
    rec = view.record
    parts = [
        ("archived", view.archived_tokens, COLORS["archived"]),
        ("active", view.active_tokens, COLORS["messages"]),
    ]
    out = [
        f'<div style="{_BOX}">',
        f"<div><b>Session</b> <code>{esc(view.session_id)}</code> "
        f"(user <code>{esc(rec.user_id)}</code>, account <code>{esc(rec.account_id)}</code>)</div>",
        _table(
            ("messages", "active", "archived", "commits", "archives (live/merged)", "updated"),
            [
                (
                    view.messages,
                    view.active_messages,
                    view.archived_messages,
                    rec.commit_count,
                    f"{len(view.live_archives)}/{len(view.archives) - len(view.live_archives)}",
                    iso(rec.updated_at),
                )
            ],
        ),
        token_bar(parts, view.active_tokens + view.archived_tokens),
        f'<div style="font-size:11px;color:#555">{_legend(parts)} tokens</div>',
    ]
    if view.summary:
        out += [_heading("Summary"), _pre(view.summary)]
    if view.archives:
        out += [
            _heading("Archives", "newest first"),
            _table(
                ("archive", "seq range", "messages", "tokens", "abstract", "merged into"),
                [
                    (
                        a.archive_id,
                        f"{a.first_seq}\u2013{a.last_seq}",
                        a.message_count,
                        a.token_count,
                        a.abstract,
                        a.merged_into,
                    )
                    for a in view.archives
                ],
            ),
        ]
    state = _state_rows(view.state)
    if state:
        out += [_heading("State"), _table(("key", "value"), state)]
    out += [
        _heading("Recent messages", f"last {len(view.recent)}"),
        _table(("seq", "role", "tokens", "status", "content"), _message_rows(view.recent)),
        "</div>",
    ]
    return "".join(out)


def _install_jupyter_hooks() -> None:
    """Give contexts and archives their Jupyter HTML form (``_repr_html_``).

    Installed from here, so that the values in ``models`` never import what renders them;
    ``import ogmem_memory`` imports this module.
    """
    setattr(Context, "_repr_html_", context_html)  # noqa: B010 - a class attribute, set once
    setattr(ArchiveEntry, "_repr_html_", archive_html)  # noqa: B010


_install_jupyter_hooks()
