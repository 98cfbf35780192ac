"""The ``ogmem`` command: parse the arguments, dispatch to a command, report failures.

Commands: ``demo``, ``sessions``, ``show``, ``export``, ``stats`` and ``delete``
(``cli_sessions.py``), ``memories list|search|delete`` and ``forget-user``
(``cli_memories.py``); which store they act on and its read-only check live in
``cli_target.py``, export rendering in ``cli_export.py``.

Every failure a user can cause (bad arguments, a missing database or session, a missing
extra) prints one ``error:`` line and exits non-zero; set ``OGMEM_DEBUG=1`` for tracebacks.

Read commands never write where they only read: without ogmem data in the target they
say ``no ogmem data in ...`` and exit 2, leaving the file byte for byte as it was.
``demo`` writes only into an existing directory, to a new file or an ogmem database.

Exit codes: 0 done; 1 a failure (an unreadable file, a server that cannot be reached,
a missing extra, a declined ``delete``); 2 nothing to act on (bad arguments, no ogmem
data, no such session or memory).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, Protocol, TextIO, TypeAlias

from ogmem_memory.cli_common import EXIT_FAILURE, EXIT_USAGE, CliError
from ogmem_memory.cli_export import export_json, export_markdown, nest_markdown
from ogmem_memory.cli_memories import (
    cmd_forget_user,
    cmd_memories_delete,
    cmd_memories_list,
    cmd_memories_search,
)
from ogmem_memory.cli_sessions import cmd_delete, cmd_demo, cmd_export, cmd_sessions, cmd_show, cmd_stats
from ogmem_memory.cli_target import default_db, display_url, sqlite_path, target_of
from ogmem_memory.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidInputError,
    OgmemError,
    SessionNotFoundError,
)
from ogmem_memory.models import DEFAULT_ACCOUNT, DEFAULT_AGENT
from ogmem_memory.validation import check_identifier

# Kept importable from here, where they lived before the split.
__all__ = [
    "CliError",
    "build_parser",
    "display_url",
    "export_json",
    "export_markdown",
    "main",
    "nest_markdown",
    "sqlite_path",
]


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block before the error; one line is easier to read
    # and to grep, and --help still shows the usage.
    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _identifier(what: str) -> Callable[[str], str]:
    # Checked while parsing, so a bad id is a usage error before any store is opened.
    def parse(text: str) -> str:
        try:
            return check_identifier(text, what)
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


_Argument: TypeAlias = tuple[tuple[str, ...], dict[str, Any]]


def _arg(*flags: str, **options: Any) -> _Argument:
    """One ``add_argument(*flags, **options)``, kept for later."""
    return flags, options


@dataclass(frozen=True, slots=True)
class _Spec:
    """One subcommand: its name, ``--help`` line, ``NAME --help`` paragraph, function and arguments."""

    name: str
    summary: str
    description: str
    func: Callable[[argparse.Namespace, TextIO], int]
    arguments: tuple[_Argument, ...] = ()


def _add(parser: argparse.ArgumentParser, spec: _Spec) -> None:
    for flags, options in spec.arguments:
        parser.add_argument(*flags, **options)
    parser.set_defaults(func=spec.func)


_YES: Final = _arg("-y", "--yes", action="store_true", help="do not ask for confirmation")
_JSON: Final = _arg("--json", action="store_true", help="JSON output")
_SESSION: Final = _arg("session", metavar="SESSION")
_TEXT_OR_JSON: Final = _arg("--format", choices=("text", "json"), default="text", help="default %(default)s")

_SESSION_COMMANDS: Final = (
    _Spec(
        "sessions",
        "list stored sessions, newest first",
        "List the stored sessions, most recently updated first: owner, message and commit "
        "counts, last update. Read-only.",
        cmd_sessions,
        (_arg("--limit", type=_positive, default=None, help="at most this many"), _JSON),
    ),
    _Spec(
        "show",
        "a session's recent messages, archives, task state and summary",
        "Show one session: its owner and counts, live archives, task state, the running summary "
        "and its most recent messages. Read-only.",
        cmd_show,
        (
            _SESSION,
            _arg(
                "--messages", type=int, default=10, metavar="N", help="recent messages (default %(default)s)"
            ),
            _JSON,
        ),
    ),
    _Spec(
        "export",
        "a session's full transcript as JSON or Markdown",
        "Export one session whole (archived turns included): JSON with the record, summary, state, "
        "archives and every message, or a Markdown document. Read-only (except the -o file).",
        cmd_export,
        (
            _SESSION,
            _arg("--format", choices=("json", "markdown"), default="json", help="default %(default)s"),
            _arg("-o", "--output", default=None, metavar="FILE", help="write here instead of stdout"),
        ),
    ),
    _Spec(
        "stats",
        "sessions, messages, archives and database size",
        "Count sessions, messages (active and archived), tokens and archives, and give the size "
        "on disk: the SQLite file, or the ogmem tables of the PostgreSQL schema. Read-only.",
        cmd_stats,
        (_JSON,),
    ),
    _Spec(
        "delete",
        "delete one session: its messages, archives and state",
        "Delete one session for good: every message (archived ones too), its archives, state and "
        "owner binding. Asks first on a terminal; scripts pass --yes.",
        cmd_delete,
        (_SESSION, _YES),
    ),
)

_MEMORY_ACTIONS: Final = (
    _Spec(
        "list",
        "a user's memories, newest first",
        "List the memories of one user (and agent), most recently updated first: id, category, "
        "key, last update and content. Read-only.",
        cmd_memories_list,
        (
            _arg("--limit", type=_positive, default=None, help="at most this many (default all)"),
            _TEXT_OR_JSON,
        ),
    ),
    _Spec(
        "search",
        "a user's memories most relevant to a query",
        "Rank the memories of one user (and agent) by relevance to QUERY, the way the context "
        "picks them, and show the best. Read-only.",
        cmd_memories_search,
        (
            _arg("query", metavar="QUERY"),
            _arg("--limit", type=_positive, default=10, help="at most this many (default %(default)s)"),
            _TEXT_OR_JSON,
        ),
    ),
    _Spec(
        "delete",
        "delete one memory of a user",
        "Delete one memory of a user for good: it is in no later context. Asks first on a "
        "terminal; scripts pass --yes.",
        cmd_memories_delete,
        (_arg("memory_id", metavar="MEMORY_ID"), _YES),
    ),
)


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
        "no ogmem data, no such session or memory).",
    )
    parser.add_argument("--version", action="version", version=f"ogmem-memory {__version__}")
    parser.add_argument("--db", default=default_db(), metavar="URL", help=db_help)
    parser.add_argument("--schema", default=None, metavar="NAME", help=schema_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str, *parents: _Parser) -> argparse.ArgumentParser:
        # summary: the line in `ogmem --help`; description: the paragraph of `ogmem NAME --help`
        return sub.add_parser(name, parents=[common, *parents], help=summary, description=description)

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

    for spec in _SESSION_COMMANDS:
        _add(command(spec.name, spec.summary, spec.description), spec)

    _add_memory_commands(command, common)
    return parser


class Command(Protocol):
    """``command(name, summary, description, *parents)``: adds one ``ogmem`` subcommand."""

    def __call__(
        self, name: str, summary: str, description: str, *parents: _Parser
    ) -> argparse.ArgumentParser: ...


def _identity_parser(*, agent: bool) -> _Parser:
    who = _Parser(add_help=False)
    who.add_argument("--user", required=True, type=_identifier("user id"), help="the user's id")
    who.add_argument(
        "--account",
        default=DEFAULT_ACCOUNT,
        type=_identifier("account id"),
        help="the user's account (default %(default)s)",
    )
    if agent:
        who.add_argument(
            "--agent",
            default=DEFAULT_AGENT,
            type=_identifier("agent id"),
            help="the agent the memories belong to (default %(default)s)",
        )
    return who


def _add_memory_commands(command: Command, common: _Parser) -> None:
    who = _identity_parser(agent=True)
    memories = command(
        "memories",
        "list, search or delete a user's long-term memories",
        "Work with the long-term memories extracted from a user's conversations (facts, "
        "preferences, names, places, decisions): list them, search them, delete one. Each "
        "memory belongs to one account, user and agent.",
    )
    actions = memories.add_subparsers(dest="memories_command", metavar="ACTION", required=True)

    def action(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common, who], help=summary, description=description)

    for spec in _MEMORY_ACTIONS:
        _add(action(spec.name, spec.summary, spec.description), spec)

    forget = command(
        "forget-user",
        "delete everything of one user: sessions and memories",
        "Delete everything stored of one user of an account: every session (messages, archives, "
        "state, search and vector index rows) and every memory, of all agents. Prints what it "
        "deleted. Asks first on a terminal; scripts pass --yes.",
        _identity_parser(agent=False),
    )
    forget.add_argument(*_YES[0], **_YES[1])
    forget.set_defaults(func=cmd_forget_user)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run ``ogmem`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Args:
        argv: Arguments without the program name.
        out: Where results go (default ``sys.stdout``); errors always go to ``sys.stderr``.
    """
    stream = out if out is not None else sys.stdout
    try:
        args = build_parser().parse_args(argv)
        args.target = target_of(args)
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
