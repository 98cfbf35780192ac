"""The long-term memory commands of ``ogmem``: ``memories list|search|delete`` and ``forget-user``.

A memory belongs to one ``(account, user, agent)``; ``forget-user`` deletes everything of
an ``(account, user)``: every session (messages, archives, state, index rows) and the
memories of every agent. The read commands go through the same read-only check as the
session commands: without ogmem data they change nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from ogmem_memory.cli_common import EXIT_FAILURE, PAGE, CliError, confirm, print_table
from ogmem_memory.cli_sessions import all_sessions
from ogmem_memory.cli_target import Target, open_manager
from ogmem_memory.display import preview
from ogmem_memory.extract import MemoryRecord
from ogmem_memory.manager import SessionManager
from ogmem_memory.models import DEFAULT_AGENT, RequestContext, iso


def identity(args: argparse.Namespace) -> RequestContext:
    """The identity ``--account``, ``--user`` (and ``--agent``) name."""
    return RequestContext(args.account, args.user, getattr(args, "agent", DEFAULT_AGENT))


def describe(ctx: RequestContext, *, agent: bool = True) -> str:
    """``user 'ada' (account 'acme', agent 'default')``: who a command acts for, in its output."""
    scope = f"account {ctx.account_id!r}" + (f", agent {ctx.agent_id!r}" if agent else "")
    return f"user {ctx.user_id!r} ({scope})"


def all_memories(manager: SessionManager, ctx: RequestContext) -> list[MemoryRecord]:
    """Every memory of ``ctx``'s identity, newest first, read page by page."""
    records: list[MemoryRecord] = []
    offset = 0
    while True:
        page = manager.list_memories(ctx, limit=PAGE, offset=offset)
        if not page:
            return records
        records += page
        # The offset counts stored rows and a page leaves out inactive ones, so a short page
        # is not the last: step by the page size and stop at the first empty page.
        offset += PAGE


def print_memories(records: Sequence[MemoryRecord], fmt: str, out: TextIO, *, empty: str) -> None:
    """``records`` as a table (``empty`` when there are none) or as a JSON list of records."""
    if fmt == "json":
        print(json.dumps([r.to_dict() for r in records], indent=2, ensure_ascii=False), file=out)
        return
    if not records:
        print(empty, file=out)
        return
    rows = [(r.memory_id, r.category, r.key, iso(r.updated_at)[:19], r.content) for r in records]
    print_table(("memory", "category", "key", "updated (UTC)", "content"), rows, out)


def cmd_memories_list(args: argparse.Namespace, out: TextIO) -> int:
    ctx = identity(args)
    with open_manager(args.target) as manager:
        records = manager.list_memories(ctx, limit=args.limit) if args.limit else all_memories(manager, ctx)
    print_memories(records, args.format, out, empty=f"no memories of {describe(ctx)} in {args.target}")
    return 0


def cmd_memories_search(args: argparse.Namespace, out: TextIO) -> int:
    ctx = identity(args)
    with open_manager(args.target) as manager:
        records = manager.search_memories(ctx, args.query, limit=args.limit)
    empty = f"no memories of {describe(ctx)} match {args.query!r} in {args.target}"
    print_memories(records, args.format, out, empty=empty)
    return 0


def cmd_memories_delete(args: argparse.Namespace, out: TextIO) -> int:
    ctx = identity(args)
    target: Target = args.target
    missing = f"memory {args.memory_id!r} of {describe(ctx)} not found in {target}"
    with open_manager(target) as manager:
        # Found first, so the question shows what goes and a wrong id changes nothing.
        record = next((r for r in all_memories(manager, ctx) if r.memory_id == args.memory_id), None)
        if record is None:
            raise CliError(missing)
        what = f"memory {record.memory_id} of {describe(ctx)} ({preview(record.content, 80)!r})"
        if not args.yes and not confirm(f"delete {what} from {target}?"):
            print(f"kept {what}", file=sys.stderr)
            return EXIT_FAILURE
        if not manager.delete_memory(ctx, record.memory_id):
            raise CliError(missing)  # deleted meanwhile
    print(f"deleted {what} from {target}", file=out)
    return 0


def cmd_forget_user(args: argparse.Namespace, out: TextIO) -> int:
    ctx = identity(args)
    target: Target = args.target
    who = describe(ctx, agent=False)
    with open_manager(target) as manager:
        sessions = len(all_sessions(manager, ctx))
        # The memories of every agent go too; only the sessions can be counted beforehand.
        question = (
            f"delete everything of {who} ({plural(sessions, 'session')} and every memory) from {target}?"
        )
        if not args.yes and not confirm(question):
            print(f"kept everything of {who}", file=sys.stderr)
            return EXIT_FAILURE
        deleted = manager.forget_user(ctx)
    # Nothing stored is no failure: what was asked for (nothing of the user left) holds,
    # so a script that erases a user can run twice.
    counted = f"{plural(deleted['sessions'], 'session')} and {plural(deleted['memories'], 'memory')}"
    print(f"deleted {counted} of {who} from {target}", file=out)
    return 0


def plural(count: int, noun: str) -> str:
    """``1 session``, ``2 sessions``, ``0 memories``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") else f"{count} {noun}s"
