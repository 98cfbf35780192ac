"""The session commands of ``ogmem``: demo, sessions, show, export, stats and delete."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ogmem_memory.cli_common import (
    EXIT_FAILURE,
    PAGE,
    CliError,
    confirm,
    human_bytes,
    print_fields,
    print_table,
)
from ogmem_memory.cli_export import export_json, export_markdown
from ogmem_memory.cli_target import (
    Target,
    check_demo_target,
    db_size,
    display_url,
    open_manager,
)
from ogmem_memory.display import SessionView, preview, session_view
from ogmem_memory.errors import SessionNotFoundError
from ogmem_memory.manager import SessionManager
from ogmem_memory.models import RequestContext, SessionRecord, iso


def all_sessions(manager: SessionManager, ctx: RequestContext | None = None) -> list[SessionRecord]:
    """Every stored session (only ``ctx``'s when given), most recently updated first."""
    records: list[SessionRecord] = []
    while True:
        page = manager.list_sessions(ctx, limit=PAGE, offset=len(records))
        records += page
        if len(page) < PAGE:
            return records


def _view(manager: SessionManager, session_id: str, target: Target, recent: int) -> SessionView:
    try:
        return session_view(manager, session_id, recent=recent)
    except SessionNotFoundError:
        raise CliError(f"session {session_id!r} not found in {target}") from None


# ---------------------------------------------------------------------------- commands


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ogmem_memory.demo import format_report, require_framework, run_demo

    require_framework(args.framework)
    check_demo_target(args.target)
    with _progress(args.turns, enabled=not args.no_progress) as tick:
        report = run_demo(
            db=args.db, turns=args.turns, framework=args.framework, session_id=args.session, progress=tick
        )
    print(format_report(report), file=out)
    return 0


def cmd_sessions(args: argparse.Namespace, out: TextIO) -> int:
    with open_manager(args.target) as manager:
        records = manager.list_sessions(limit=args.limit) if args.limit else all_sessions(manager)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2, ensure_ascii=False), file=out)
        return 0
    if not records:
        print(f"no sessions in {args.target}", file=out)
        return 0
    rows = [
        (r.session_id, r.user_id, str(r.message_count), str(r.commit_count), iso(r.updated_at)[:19])
        for r in records
    ]
    print_table(("session", "user", "messages", "commits", "updated (UTC)"), rows, out)
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    with open_manager(args.target) as manager:
        view = _view(manager, args.session, args.target, args.messages)
    if args.json:
        print(json.dumps(view.to_dict(), indent=2, ensure_ascii=False), file=out)
        return 0
    rec = view.record
    live = view.live_archives
    messages = (
        f"{view.messages}: {view.active_messages} active ({view.active_tokens} tokens), "
        f"{view.archived_messages} archived ({view.archived_tokens} tokens)"
    )
    print_fields(
        [
            ("session", f"{view.session_id}  (user {rec.user_id}, account {rec.account_id})"),
            ("messages", messages),
            ("commits", f"{rec.commit_count}; updated {iso(rec.updated_at)}"),
            ("archives", f"{len(live)} live, {len(view.archives) - len(live)} merged"),
        ],
        out,
    )
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
    with open_manager(args.target) as manager:
        view = _view(manager, args.session, args.target, 0)
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
    with open_manager(args.target) as manager:
        records = all_sessions(manager)
        for r in records:
            for m in manager.store.list_messages(r.session_id):
                totals["active" if m.status == "active" else "archived"] += 1
                totals["tokens"] += m.tokens
            for a in manager.store.list_archives(r.session_id, include_merged=True):
                totals["merged" if a.merged_into else "live"] += 1
    size = db_size(args.target)
    stats: dict[str, Any] = {
        "database": display_url(args.db),
        "sessions": len(records),
        "messages": totals["active"] + totals["archived"],
        "active_messages": totals["active"],
        "archived_messages": totals["archived"],
        "tokens": totals["tokens"],
        "archives": totals["live"],
        "merged_archives": totals["merged"],
        "db_bytes": size,
    }
    if args.target.postgres:
        stats["schema"] = args.target.schema_name
    if args.json:
        print(json.dumps(stats, indent=2), file=out)
        return 0
    target: Target = args.target
    if target.postgres:
        # The ogmem tables only: the database may hold other schemas and applications.
        where = f"{display_url(target.url)} (schema {target.schema_name}; {human_bytes(size or 0)} in ogmem tables)"
    else:
        where = target.url + (f" ({human_bytes(size)})" if size is not None else "")
    messages = (
        f"{stats['messages']} ({stats['active_messages']} active, "
        f"{stats['archived_messages']} archived; {stats['tokens']} tokens)"
    )
    print_fields(
        [
            ("database", where),
            ("sessions", str(stats["sessions"])),
            ("messages", messages),
            ("archives", f"{stats['archives']} live, {stats['merged_archives']} merged"),
        ],
        out,
    )
    return 0


def cmd_delete(args: argparse.Namespace, out: TextIO) -> int:
    target: Target = args.target
    with open_manager(target) as manager:
        # list_archives checks the id first, so a malformed one is a clear error, not "not found"
        archives = manager.list_archives(args.session, include_merged=True)
        record = manager.store.get_session_record(args.session)
        if record is None:
            raise CliError(f"session {args.session!r} not found in {target}")
        what = f"session {args.session!r} ({record.message_count} messages, {len(archives)} archives)"
        if not args.yes and not confirm(f"delete {what} from {target}?"):
            print(f"kept {what}", file=sys.stderr)
            return EXIT_FAILURE
        if not manager.delete_session(args.session):
            raise CliError(f"session {args.session!r} not found in {target}")  # deleted meanwhile
    print(f"deleted {what} from {target}", file=out)
    return 0


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
