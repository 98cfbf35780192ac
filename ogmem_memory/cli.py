"""The ``ogmem`` command: run the demo, list, show, export and count stored sessions.

Every failure a user can cause (bad arguments, a missing database or session, a missing
extra) prints one ``error:`` line and exits non-zero; set ``OGMEM_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ogmem_memory.display import SessionView, preview, session_view
from ogmem_memory.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidInputError,
    OgmemError,
    SessionNotFoundError,
)
from ogmem_memory.manager import SessionManager
from ogmem_memory.models import SessionRecord, iso

EXIT_USAGE = 2  # argparse's code for bad arguments; also "no such database/session"
EXIT_FAILURE = 1
PAGE = 500


class CliError(Exception):
    """A failure to report as one line, with the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block before the error; one line is easier to read
    # and to grep, and --help still shows the usage.
    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------- database


def default_db() -> str:
    """``$OGMEM_DB`` or ``ogmem.db``: the same default as ``SessionManager()``."""
    return os.environ.get("OGMEM_DB") or "ogmem.db"


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL or bare path; ``None`` for other stores and ``:memory:``."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path
    elif "://" in url:
        return None
    else:
        path = url
    return None if path in ("", ":memory:") else path


def _check_exists(url: str) -> None:
    # Opening SQLite creates the file; a read command must not leave an empty database behind.
    path = sqlite_path(url)
    if path is not None and not Path(path).is_file():
        raise CliError(f"database {path!r} not found (run 'ogmem demo' to create one, or pass --db)")


@contextmanager
def _open(url: str, *, must_exist: bool = True) -> Iterator[SessionManager]:
    if must_exist:
        _check_exists(url)
    with SessionManager(url) as manager:
        yield manager


def _db_size(url: str) -> int | None:
    path = sqlite_path(url)
    if path is None:
        return None
    files = (Path(path), Path(path + "-wal"), Path(path + "-shm"))
    return sum(f.stat().st_size for f in files if f.is_file())


def _all_sessions(manager: SessionManager) -> list[SessionRecord]:
    records: list[SessionRecord] = []
    while True:
        page = manager.list_sessions(limit=PAGE, offset=len(records))
        records += page
        if len(page) < PAGE:
            return records


def _view(manager: SessionManager, session_id: str, url: str, recent: int) -> SessionView:
    try:
        return session_view(manager, session_id, recent=recent)
    except SessionNotFoundError:
        raise CliError(f"session {session_id!r} not found in {url}") from None


# ---------------------------------------------------------------------------- commands


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ogmem_memory.demo import format_report, require_framework, run_demo

    require_framework(args.framework)
    with _progress(args.turns, enabled=not args.no_progress) as tick:
        report = run_demo(
            db=args.db, turns=args.turns, framework=args.framework, session_id=args.session, progress=tick
        )
    print(format_report(report), file=out)
    return 0


def cmd_sessions(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args.db) as manager:
        records = manager.list_sessions(limit=args.limit) if args.limit else _all_sessions(manager)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2, ensure_ascii=False), file=out)
        return 0
    if not records:
        print(f"no sessions in {args.db}", file=out)
        return 0
    rows = [
        (r.session_id, r.user_id, str(r.message_count), str(r.commit_count), iso(r.updated_at)[:19])
        for r in records
    ]
    _print_table(("session", "user", "messages", "commits", "updated (UTC)"), rows, out)
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args.db) as manager:
        view = _view(manager, args.session, args.db, args.messages)
    if args.json:
        print(json.dumps(view.to_dict(), indent=2, ensure_ascii=False), file=out)
        return 0
    rec = view.record
    live = view.live_archives
    print(f"session   {view.session_id}  (user {rec.user_id}, account {rec.account_id})", file=out)
    print(
        f"messages  {view.messages}: {view.active_messages} active ({view.active_tokens} tokens), "
        f"{view.archived_messages} archived ({view.archived_tokens} tokens)",
        file=out,
    )
    print(f"commits   {rec.commit_count}; updated {iso(rec.updated_at)}", file=out)
    print(f"archives  {len(live)} live, {len(view.archives) - len(live)} merged", file=out)
    for a in live:
        print(
            f"  {a.archive_id}  seq {a.first_seq}-{a.last_seq}  {a.message_count} msgs  {a.abstract}",
            file=out,
        )
    state = {k: v for k, v in view.state.items() if v not in (None, "", [], ())}
    print("task state" + ("" if state else "  (none)"), file=out)
    for key, value in state.items():
        text = "; ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        print(f"  {key}: {preview(text, 200)}", file=out)
    print("summary" + ("" if view.summary else "  (no commit yet)"), file=out)
    for line in view.summary.splitlines():
        print(f"  {line}", file=out)
    print(f"recent messages (last {len(view.recent)})", file=out)
    for m in view.recent:
        flag = "" if m.status == "active" else " [archived]"
        print(f"  #{m.seq:<5} {m.role:<9} {preview(m.content, 100)}{flag}", file=out)
    return 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args.db) as manager:
        view = _view(manager, args.session, args.db, 0)
        history = manager.get_history(args.session)
    text = export_json(view, history) if args.format == "json" else export_markdown(view, history)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(history)} messages to {args.output}", file=sys.stderr)
    else:
        out.write(text)
    return 0


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    totals = dict.fromkeys(("active", "archived", "live", "merged", "tokens"), 0)
    with _open(args.db) as manager:
        records = _all_sessions(manager)
        for r in records:
            for m in manager.store.list_messages(r.session_id):
                totals["active" if m.status == "active" else "archived"] += 1
                totals["tokens"] += m.tokens
            for a in manager.store.list_archives(r.session_id, include_merged=True):
                totals["merged" if a.merged_into else "live"] += 1
    size = _db_size(args.db)
    stats: dict[str, Any] = {
        "database": args.db,
        "sessions": len(records),
        "messages": totals["active"] + totals["archived"],
        "active_messages": totals["active"],
        "archived_messages": totals["archived"],
        "tokens": totals["tokens"],
        "archives": totals["live"],
        "merged_archives": totals["merged"],
        "db_bytes": size,
    }
    if args.json:
        print(json.dumps(stats, indent=2), file=out)
        return 0
    print(f"database  {args.db}" + (f" ({_human_bytes(size)})" if size is not None else ""), file=out)
    print(f"sessions  {stats['sessions']}", file=out)
    print(
        f"messages  {stats['messages']} ({stats['active_messages']} active, "
        f"{stats['archived_messages']} archived; {stats['tokens']} tokens)",
        file=out,
    )
    print(f"archives  {stats['archives']} live, {stats['merged_archives']} merged", file=out)
    return 0


# ---------------------------------------------------------------------------- export formats


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
        lines += ["## Summary", "", view.summary, ""]
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
        lines += [f"**{m.role}** (#{m.seq}, {iso(m.created_at)}{flag})", "", m.content, ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# ---------------------------------------------------------------------------- output helpers


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


@contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A callback taking the number of turns done: tqdm when installed, else a stderr counter."""
    if not enabled:
        yield None
        return
    try:
        # Imported by name: tqdm ships no type stubs and is optional.
        tqdm: Any = importlib.import_module("tqdm").tqdm
    except ImportError:
        # tqdm comes with the notebook extra only; a plain install still shows progress.
        step = max(1, total // 20)
        tty = sys.stderr.isatty()

        def tick(done: int) -> None:
            if tty and (done % step == 0 or done == total):
                print(f"\rconversation: {done}/{total} turns", end="", file=sys.stderr, flush=True)
            elif not tty and (done % max(1, total // 4) == 0 or done == total):
                print(f"conversation: {done}/{total} turns", file=sys.stderr, flush=True)

        yield tick
        if tty:
            print(file=sys.stderr)
        return
    bar = tqdm(total=total, unit="turn", desc="conversation", file=sys.stderr, leave=False)
    try:
        yield lambda done: bar.update(done - bar.n)
    finally:
        bar.close()


# ---------------------------------------------------------------------------- parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``ogmem`` argument parser."""
    from ogmem_memory import __version__
    from ogmem_memory.demo import DEFAULT_TURNS, FRAMEWORKS

    db_help = (
        "store: a SQLite path, sqlite:///path.db, postgresql://... or memory:// "
        f"(default: $OGMEM_DB or ./ogmem.db; now {default_db()})"
    )
    # --db works before or after the command; SUPPRESS keeps the subcommand's parser from
    # overwriting a value given before it with its own default.
    common = _Parser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="URL", help=db_help)
    parser = _Parser(
        prog="ogmem",
        description="ogmem-memory: chat memory for LangChain and LlamaIndex. Start with 'ogmem demo'.",
    )
    parser.add_argument("--version", action="version", version=f"ogmem-memory {__version__}")
    parser.add_argument("--db", default=default_db(), metavar="URL", help=db_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run a scripted long conversation with a fake model and show what memory did",
        description="Run a scripted conversation (fake model, no network) through a framework "
        "adapter, then print the turns, commits, archives, tokens per turn and the final summary.",
    )
    demo.add_argument("--turns", type=_positive, default=DEFAULT_TURNS, help="turns (default %(default)s)")
    demo.add_argument(
        "--framework", choices=FRAMEWORKS, default="langchain", help="adapter (default %(default)s)"
    )
    demo.add_argument("--session", default=None, help="session id (default: the next free demo-<n>)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    sessions = sub.add_parser("sessions", parents=[common], help="list stored sessions, newest first")
    sessions.add_argument("--limit", type=_positive, default=None, help="at most this many")
    sessions.add_argument("--json", action="store_true", help="JSON output")
    sessions.set_defaults(func=cmd_sessions)

    show = sub.add_parser(
        "show", parents=[common], help="a session's recent messages, archives, task state and summary"
    )
    show.add_argument("session", metavar="SESSION")
    show.add_argument(
        "--messages", type=int, default=10, metavar="N", help="recent messages (default %(default)s)"
    )
    show.add_argument("--json", action="store_true", help="JSON output")
    show.set_defaults(func=cmd_show)

    export = sub.add_parser(
        "export", parents=[common], help="a session's full transcript as JSON or Markdown"
    )
    export.add_argument("session", metavar="SESSION")
    export.add_argument("--format", choices=("json", "markdown"), default="json", help="default %(default)s")
    export.add_argument("-o", "--output", default=None, metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=cmd_export)

    stats = sub.add_parser("stats", parents=[common], help="sessions, messages, archives and database size")
    stats.add_argument("--json", action="store_true", help="JSON output")
    stats.set_defaults(func=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run ``ogmem`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Args:
        argv: Arguments without the program name.
        out: Where results go (default ``sys.stdout``); errors always go to ``sys.stderr``.
    """
    stream = out if out is not None else sys.stdout
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args, stream)
        return code
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except SessionNotFoundError as exc:
        return _fail(str(exc.args[0] if exc.args else exc), EXIT_USAGE)
    except (AccessDeniedError, InvalidInputError, ConfigError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except BrokenPipeError:
        # `ogmem export s | head`: the reader left; say nothing more to a closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (OgmemError, ImportError, OSError) as exc:
        return _fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # the promise is one line, never a traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE)


def _fail(message: str, code: int) -> int:
    if os.environ.get("OGMEM_DEBUG"):
        import traceback

        traceback.print_exc()
    # Driver messages can span lines (psycopg adds hints); the promise is one line.
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
