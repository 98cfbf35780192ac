"""What every ``ogmem`` command shares: the one-line error, exit codes, confirmation, tables."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

EXIT_USAGE = 2  # argparse's code for bad arguments; also "no ogmem data" and "no such session"
EXIT_FAILURE = 1
PAGE = 500
FIELD_WIDTH = 10  # print_fields: "messages" and "archives" plus two spaces


class CliError(Exception):
    """A failure to report as one line, with the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def confirm(question: str) -> bool:
    """Ask ``question`` on the terminal; True for y/yes.

    Raises:
        CliError: stdin is not a terminal (a script must pass ``--yes``).
    """
    stdin = sys.stdin
    # A script has no one to answer; guessing "yes" would delete data nobody confirmed.
    if stdin is None or not stdin.isatty():
        raise CliError("refusing to delete without --yes: stdin is not a terminal")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Left-aligned columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)


def print_fields(fields: Sequence[tuple[str, str]], out: TextIO) -> None:
    """A report's ``label  value`` lines, the values in one column after the labels."""
    for label, value in fields:
        print(f"{label:<{FIELD_WIDTH}}{value}", file=out)


def human_bytes(size: int) -> str:
    """``812 B``, ``4.0 KB``, ``1.5 MB``: a size for people."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
