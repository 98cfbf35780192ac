"""The ``ogmem`` command: run the demo, list, show, export, count and delete stored sessions.

Every failure a user can cause (bad arguments, a missing database or session, a missing
extra) prints one ``error:`` line and exits non-zero; set ``OGMEM_DEBUG=1`` for tracebacks.

Read commands never write where they only read: before a store is opened (opening one
creates its file, directory, schema and tables), the target is checked through a
read-only SQLite connection or a plain PostgreSQL query for an ogmem schema; without one
the command says ``no ogmem data in ...`` and exits 2, leaving the file byte for byte
as it was (no ``-wal``/``-shm`` either). ``demo`` writes only into an existing directory,
to a new file or an ogmem database.

Exit codes: 0 done; 1 a failure (an unreadable file, a server that cannot be reached,
a missing extra, a declined ``delete``); 2 nothing to act on (bad arguments, no ogmem
data, no such session).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO
from urllib.parse import quote, urlsplit

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
from ogmem_memory.stores import SessionStore, open_store

EXIT_USAGE = 2  # argparse's code for bad arguments; also "no ogmem data" and "no such session"
EXIT_FAILURE = 1
PAGE = 500
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://", "postgresql+psycopg://")
SQLITE_MAGIC: Final = b"SQLite format 3\x00"


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


def display_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages and output)."""
    try:
        password = urlsplit(url).password
    except ValueError:  # a malformed port; the store reports that, not the redaction
        return url
    if password is None:
        return url
    scheme, _, rest = url.partition("://")
    userinfo, _, hostpart = rest.partition("@")
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hostpart}"


@dataclass(frozen=True, slots=True)
class Target:
    """The store a command names: ``--db`` and, for PostgreSQL, ``--schema``."""

    url: str
    schema: str | None = None

    @property
    def postgres(self) -> bool:
        """True for a ``postgresql://`` URL."""
        return self.url.startswith(POSTGRES_SCHEMES)

    @property
    def path(self) -> str | None:
        """The SQLite file, or ``None`` (PostgreSQL, ``memory://``, ``:memory:``)."""
        return None if self.postgres else sqlite_path(self.url)

    @property
    def dsn(self) -> str:
        """The URL as psycopg takes it."""
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)

    @property
    def schema_name(self) -> str:
        """The PostgreSQL schema: ``--schema`` or ``public`` (PostgresStore's default)."""
        return self.schema or "public"

    def __str__(self) -> str:
        if self.postgres:
            return f"{display_url(self.url)} (schema {self.schema_name})"
        return self.url


def _target(args: argparse.Namespace) -> Target:
    schema: str | None = getattr(args, "schema", None)
    target = Target(args.db, schema)
    if schema is not None and not target.postgres:
        raise CliError(f"--schema applies to postgresql:// URLs only, not {display_url(args.db)!r}")
    if schema is not None and not schema.strip():
        raise CliError("--schema must not be empty")
    return target


def sqlite_ogmem_version(path: str) -> int | None:
    """The ogmem schema version recorded in a SQLite file, read without changing anything.

    Args:
        path: An existing file.

    Returns:
        The version, or ``None`` when the file holds no ogmem schema (an empty file,
        another application's database).

    Raises:
        CliError: The file is not an SQLite database or cannot be read (exit code 1).
    """
    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_FAILURE) from exc
    if not header:
        return None  # SQLite treats an empty file as an empty database
    if not header.startswith(SQLITE_MAGIC):
        raise CliError(f"{path} is not an SQLite database", EXIT_FAILURE)
    # A read-only connection to a WAL database creates -wal and -shm files and leaves them
    # behind. With no -wal file, every committed page is in the main file and no connection
    # is open (the last one to close removes it), so reading the file as immutable is exact
    # and creates nothing. Bytes 18-19 are the write/read format versions: 2 means WAL.
    wal = len(header) >= 20 and 2 in (header[18], header[19])
    immutable = wal and not os.path.exists(path + "-wal")
    # quote(): a ? or # in the path would otherwise start the URI's query or fragment.
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ogmem_schema'"
            ).fetchone()
            row = conn.execute("SELECT max(version) FROM ogmem_schema").fetchone() if found else None
    except sqlite3.Error as exc:
        raise CliError(f"cannot read {path}: {exc}", EXIT_FAILURE) from exc
    return int(row[0]) if row and row[0] else None


def _psycopg() -> Any:
    # Imported on use: the core never imports psycopg at import time.
    try:
        return importlib.import_module("psycopg")
    except ImportError as exc:
        raise ImportError('PostgreSQL needs: pip install "ogmem-memory[postgres]"') from exc


@contextmanager
def _pg_connect(target: Target) -> Iterator[Any]:
    """A plain autocommit connection for catalog queries, with a one-line error when it fails."""
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(target.dsn, autocommit=True, connect_timeout=10, application_name="ogmem-cli")
    except psycopg.Error as exc:
        raise CliError(f"cannot connect to {display_url(target.url)}: {exc}", EXIT_FAILURE) from exc
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise CliError(f"cannot read {target}: {exc}", EXIT_FAILURE) from exc


def postgres_ogmem_version(target: Target) -> int | None:
    """The ogmem schema version in ``target``'s PostgreSQL schema, or ``None`` when it has none.

    Only catalog and ``SELECT`` queries: a schema or table that is missing stays missing.
    """
    sql = _psycopg().sql
    with _pg_connect(target) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'ogmem_migrations' AND c.relkind IN ('r', 'p')",
            (target.schema_name,),
        ).fetchone()
        if found is None:
            return None
        query = sql.SQL("SELECT max(version) FROM {}").format(
            sql.Identifier(target.schema_name, "ogmem_migrations")
        )
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] else None


def postgres_ogmem_bytes(target: Target) -> int:
    """Bytes on disk of the ``ogmem_*`` tables of the schema, indexes and TOAST included."""
    with _pg_connect(target) as conn:
        row = conn.execute(
            # relkind r/p: tables only; pg_total_relation_size already counts their indexes.
            "SELECT coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname LIKE 'ogmem\\_%%'",
            (target.schema_name,),
        ).fetchone()
    return int(row[0])


def require_ogmem_data(target: Target) -> None:
    """Refuse, changing nothing, when ``target`` holds no ogmem schema.

    Raises:
        CliError: ``no ogmem data in ...`` (exit code 2), or the target cannot be read (1).
    """
    if target.postgres:
        if postgres_ogmem_version(target) is None:
            raise CliError(f"no ogmem data in {target}")
        return
    path = target.path
    if path is None:
        return  # memory:// and :memory: start empty; there is nothing to protect
    if not Path(path).is_file():
        reason = "not a file" if Path(path).exists() else "file not found"
        raise CliError(f"no ogmem data in {path} ({reason}; run 'ogmem demo' to create one, or pass --db)")
    if sqlite_ogmem_version(path) is None:
        raise CliError(f"no ogmem data in {path}")


def check_demo_target(target: Target) -> None:
    """Refuse a demo database that would need a new directory or belongs to another application.

    Raises:
        CliError: Exit code 2, before anything is created.
    """
    if target.schema is not None:
        raise CliError("'ogmem demo' does not take --schema; it writes to the URL's default schema, public")
    path = target.path
    if path is None:
        return
    directory = Path(path).parent
    if not directory.is_dir():
        raise CliError(f"directory {str(directory)!r} does not exist; create it first or pass another --db")
    if Path(path).exists():
        if not Path(path).is_file():
            raise CliError(f"{path} is not a file")
        if sqlite_ogmem_version(path) is None and Path(path).stat().st_size > 0:
            raise CliError(
                f"no ogmem data in {path}: 'ogmem demo' writes only to a new file or an ogmem database"
            )


def open_target(target: Target) -> SessionStore:
    """The store for ``target`` (not set up: no I/O)."""
    if target.postgres:
        try:
            from ogmem_memory.stores.postgres import PostgresStore
        except ImportError as exc:
            raise ImportError('PostgreSQL needs: pip install "ogmem-memory[postgres]"') from exc
        return PostgresStore(target.dsn, schema=target.schema_name)
    return open_store(target.url)


@contextmanager
def _open(target: Target) -> Iterator[SessionManager]:
    """A manager on an existing ogmem store; refuses (creating nothing) when there is none."""
    require_ogmem_data(target)
    with SessionManager(open_target(target)) as manager:
        yield manager


def _db_size(target: Target) -> int | None:
    if target.postgres:
        return postgres_ogmem_bytes(target)
    path = target.path
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
    with _open(args.target) as manager:
        records = manager.list_sessions(limit=args.limit) if args.limit else _all_sessions(manager)
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
    _print_table(("session", "user", "messages", "commits", "updated (UTC)"), rows, out)
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args.target) as manager:
        view = _view(manager, args.session, args.target, args.messages)
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
    with _open(args.target) as manager:
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
    with _open(args.target) as manager:
        records = _all_sessions(manager)
        for r in records:
            for m in manager.store.list_messages(r.session_id):
                totals["active" if m.status == "active" else "archived"] += 1
                totals["tokens"] += m.tokens
            for a in manager.store.list_archives(r.session_id, include_merged=True):
                totals["merged" if a.merged_into else "live"] += 1
    size = _db_size(args.target)
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
        where = f"{display_url(target.url)} (schema {target.schema_name}; {_human_bytes(size or 0)} in ogmem tables)"
    else:
        where = target.url + (f" ({_human_bytes(size)})" if size is not None else "")
    print(f"database  {where}", file=out)
    print(f"sessions  {stats['sessions']}", file=out)
    print(
        f"messages  {stats['messages']} ({stats['active_messages']} active, "
        f"{stats['archived_messages']} archived; {stats['tokens']} tokens)",
        file=out,
    )
    print(f"archives  {stats['archives']} live, {stats['merged_archives']} merged", file=out)
    return 0


def cmd_delete(args: argparse.Namespace, out: TextIO) -> int:
    target: Target = args.target
    with _open(target) as manager:
        # list_archives checks the id first, so a malformed one is a clear error, not "not found"
        archives = manager.list_archives(args.session, include_merged=True)
        record = manager.store.get_session_record(args.session)
        if record is None:
            raise CliError(f"session {args.session!r} not found in {target}")
        what = f"session {args.session!r} ({record.message_count} messages, {len(archives)} archives)"
        if not args.yes and not _confirm(f"delete {what} from {target}?"):
            print(f"kept {what}", file=sys.stderr)
            return EXIT_FAILURE
        if not manager.delete_session(args.session):
            raise CliError(f"session {args.session!r} not found in {target}")  # deleted meanwhile
    print(f"deleted {what} from {target}", file=out)
    return 0


def _confirm(question: str) -> bool:
    stdin = sys.stdin
    # A script has no one to answer; guessing "yes" would delete data nobody confirmed.
    if stdin is None or not stdin.isatty():
        raise CliError("refusing to delete without --yes: stdin is not a terminal")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")


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
    schema_help = "PostgreSQL schema holding the ogmem tables (default public)"
    # --db and --schema work before or after the command; SUPPRESS keeps the subcommand's
    # parser from overwriting a value given before it with its own default.
    common = _Parser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="URL", help=db_help)
    common.add_argument("--schema", default=argparse.SUPPRESS, metavar="NAME", help=schema_help)
    parser = _Parser(
        prog="ogmem",
        description="ogmem-memory: chat memory for LangChain and LlamaIndex. Start with 'ogmem demo'.",
        epilog="Read commands never create or change a database: without ogmem data they say "
        "'no ogmem data in ...'. Exit status: 0 done; 1 a failure (unreadable database, "
        "server down, missing extra, declined delete); 2 nothing to act on (bad arguments, "
        "no ogmem data, no such session).",
    )
    parser.add_argument("--version", action="version", version=f"ogmem-memory {__version__}")
    parser.add_argument("--db", default=default_db(), metavar="URL", help=db_help)
    parser.add_argument("--schema", default=None, metavar="NAME", help=schema_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        # summary: the line in `ogmem --help`; description: the paragraph of `ogmem NAME --help`
        return sub.add_parser(name, parents=[common], help=summary, description=description)

    demo = command(
        "demo",
        "run a scripted long conversation with a fake model and show what memory did",
        "Run a scripted conversation (fake model, no network) through a framework adapter, then "
        "print the turns, commits, archives, tokens per turn and the final summary. Writes to a "
        "new file or an existing ogmem database, in a directory that exists.",
    )
    demo.add_argument("--turns", type=_positive, default=DEFAULT_TURNS, help="turns (default %(default)s)")
    demo.add_argument(
        "--framework", choices=FRAMEWORKS, default="langchain", help="adapter (default %(default)s)"
    )
    demo.add_argument("--session", default=None, help="session id (default: the next free demo-<n>)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    sessions = command(
        "sessions",
        "list stored sessions, newest first",
        "List the stored sessions, most recently updated first: owner, message and commit "
        "counts, last update. Read-only.",
    )
    sessions.add_argument("--limit", type=_positive, default=None, help="at most this many")
    sessions.add_argument("--json", action="store_true", help="JSON output")
    sessions.set_defaults(func=cmd_sessions)

    show = command(
        "show",
        "a session's recent messages, archives, task state and summary",
        "Show one session: its owner and counts, live archives, task state, the running summary "
        "and its most recent messages. Read-only.",
    )
    show.add_argument("session", metavar="SESSION")
    show.add_argument(
        "--messages", type=int, default=10, metavar="N", help="recent messages (default %(default)s)"
    )
    show.add_argument("--json", action="store_true", help="JSON output")
    show.set_defaults(func=cmd_show)

    export = command(
        "export",
        "a session's full transcript as JSON or Markdown",
        "Export one session whole (archived turns included): JSON with the record, summary, state, "
        "archives and every message, or a Markdown document. Read-only (except the -o file).",
    )
    export.add_argument("session", metavar="SESSION")
    export.add_argument("--format", choices=("json", "markdown"), default="json", help="default %(default)s")
    export.add_argument("-o", "--output", default=None, metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=cmd_export)

    stats = command(
        "stats",
        "sessions, messages, archives and database size",
        "Count sessions, messages (active and archived), tokens and archives, and give the size "
        "on disk: the SQLite file, or the ogmem tables of the PostgreSQL schema. Read-only.",
    )
    stats.add_argument("--json", action="store_true", help="JSON output")
    stats.set_defaults(func=cmd_stats)

    delete = command(
        "delete",
        "delete one session: its messages, archives and state",
        "Delete one session for good: every message (archived ones too), its archives, state and "
        "owner binding. Asks first on a terminal; scripts pass --yes.",
    )
    delete.add_argument("session", metavar="SESSION")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=cmd_delete)
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
        args.target = _target(args)
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
