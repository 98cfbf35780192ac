"""A throwaway PostgreSQL server for tests that stop, restart or crash the server.

Destructive tests must never touch the developer's own PostgreSQL (the one behind
``OGMEM_TEST_POSTGRES_DSN``). ``throwaway_pg`` starts a private server once per test
session, in a temporary directory, listening only on a unix socket in that directory,
and deletes it at the end. ``restart()``, ``stop()`` and ``start()`` run ``pg_ctl -D``
on that data directory alone, so no other server can be affected.

Binaries, in order of preference:

1. the ``pgserver`` wheel (PostgreSQL 16 with pgvector). Only its files are used: its
   ``get_server()`` is not, because as root it runs ``useradd pgserver`` and makes every
   ancestor of its install directory (``/root`` included) world-readable, it offers no
   restart, and importing it warns (an error under ``filterwarnings = error``);
2. the system's ``/usr/lib/postgresql/<newest>/bin`` (pgvector only if installed there).

PostgreSQL refuses to run as root. Under root the server runs as an existing
unprivileged account (``postgres``, else ``nobody``); the wheel's files are hard-linked
into the temporary directory because that account cannot traverse ``/root``. Nothing
outside the temporary directory is created or changed.

Register with ``pytest_plugins = ["tests.pg_throwaway"]`` in a test module (it is
registered once per session however many modules name it).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psycopg
import pytest

# The account the server runs as when the tests run as root: the first that exists.
UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")
PG_CTL_TIMEOUT = 120  # seconds pg_ctl may take to start or stop (the machine is shared)
# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100
SUPERUSER = "postgres"
DATABASE = "postgres"
PORT = 5432  # names the socket file only: nothing listens on TCP
INITDB_OPTIONS = ("--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")

StopMode = Literal["smart", "fast", "immediate"]


class ThrowawayUnavailable(RuntimeError):
    """No throwaway PostgreSQL server could be started on this machine."""


@dataclass(frozen=True, slots=True)
class PostgresBinaries:
    """Where a PostgreSQL installation lives and which of its files the server needs.

    Attributes:
        label: Human-readable origin, for messages.
        home: Directory the other paths are relative to.
        bin: The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.
        parts: Subtrees of ``home`` to hard-link elsewhere when the server runs as an
            account that cannot read ``home``; empty when ``home`` is world-readable.
    """

    label: str
    home: Path
    bin: str
    parts: tuple[str, ...] = ()


def available_binaries() -> list[PostgresBinaries]:
    """Every PostgreSQL installation found, preferred (pgvector-bearing) first."""
    found: list[PostgresBinaries] = []
    # find_spec locates the package without importing it (its import has side effects).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        site = Path(spec.origin).parent.parent
        if (site / "pgserver/pginstall/bin/postgres").exists():
            found.append(
                PostgresBinaries(
                    label="pgserver wheel",
                    home=site,
                    bin="pgserver/pginstall/bin",
                    # initdb finds libpq through RUNPATH $ORIGIN/../../../pgserver.libs
                    parts=(
                        "pgserver/pginstall/bin",
                        "pgserver/pginstall/lib",
                        "pgserver/pginstall/share",
                        "pgserver.libs",
                    ),
                )
            )
    system = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in system.glob("*") if (p / "bin/postgres").exists() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if versions:
        found.append(
            PostgresBinaries(label=f"system PostgreSQL {versions[-1].name}", home=versions[-1], bin="bin")
        )
    return found


def _account() -> pwd.struct_passwd | None:
    """The account to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ThrowawayUnavailable(f"running as root and none of the accounts {UNPRIVILEGED_ACCOUNTS} exists")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links refused: a copy works everywhere
        shutil.copy2(src, dst)


class ThrowawayPostgres:
    """A private PostgreSQL server in a temporary directory; every control acts on it alone.

    Create one with :meth:`launch`; :meth:`destroy` stops it and deletes its directory.
    The server trusts local connections of ``postgres`` (no password), runs with
    ``fsync = off`` (a restart keeps the OS page cache; only power loss would need
    fsync) and ``max_prepared_transactions = 8`` (a prepared transaction holds its locks
    across the death of its session and across restarts, which lets a test pin a
    statement in flight).

    Attributes:
        dsn: libpq URL of the server's ``postgres`` database as its superuser.
        source: Which binaries run it, e.g. ``"pgserver wheel"``.
        version: ``server_version`` as reported by the server.
        has_pgvector: Whether ``CREATE EXTENSION vector`` succeeds on this server.
        base: The temporary directory holding data, socket and log.
    """

    def __init__(self, binaries: PostgresBinaries, base: Path, account: pwd.struct_passwd | None) -> None:
        self.binaries = binaries
        self.base = base
        self.account = account
        self.data = base / "data"
        self.socket_dir = base / "sock"
        self.log = base / "server.log"
        self.source = binaries.label
        self.dsn = f"postgresql://{SUPERUSER}@/{DATABASE}?host={quote(str(self.socket_dir))}&port={PORT}"
        self.version = ""
        self.has_pgvector = False
        if binaries.parts and account is not None:
            self.bindir = base / "pg" / binaries.bin
        else:
            self.bindir = binaries.home / binaries.bin

    # -- life cycle --------------------------------------------------------------

    @classmethod
    def launch(cls, binaries: PostgresBinaries | None = None) -> ThrowawayPostgres:
        """Create, initialise and start a server with the first binaries that work.

        Args:
            binaries: Use exactly these; by default try :func:`available_binaries` in order.

        Raises:
            ThrowawayUnavailable: No PostgreSQL found, or none of them started; the
                message carries each attempt's error and server log.
        """
        candidates = [binaries] if binaries is not None else available_binaries()
        if not candidates:
            raise ThrowawayUnavailable(
                "no PostgreSQL binaries: pip install pgserver==0.1.4, or install the system postgresql package"
            )
        account = _account()
        errors: list[str] = []
        for candidate in candidates:
            base = Path(tempfile.mkdtemp(prefix="ogmem-pg-"))
            if len(str(base / "sock" / f".s.PGSQL.{PORT}")) > MAX_SOCKET_PATH:
                shutil.rmtree(base)
                base = Path(tempfile.mkdtemp(prefix="ogmem-pg-", dir="/tmp"))
            server = cls(candidate, base, account)
            try:
                server._create()
                server.start()
                server._inspect()
            except (OSError, subprocess.SubprocessError, psycopg.Error, ThrowawayUnavailable) as exc:
                errors.append(f"{candidate.label}: {exc}\n{server._log_tail()}")
                server.destroy()
                continue
            return server
        raise ThrowawayUnavailable("could not start a throwaway PostgreSQL:\n" + "\n".join(errors))

    def _create(self) -> None:
        if self.account is not None:
            if self.binaries.parts:
                for part in self.binaries.parts:
                    shutil.copytree(
                        self.binaries.home / part,
                        self.base / "pg" / part,
                        symlinks=True,
                        copy_function=_link_or_copy,
                    )
            # mkdtemp made base 0700 and ours; the server's account must own what it writes.
            os.chown(self.base, self.account.pw_uid, self.account.pw_gid)
        self.socket_dir.mkdir()
        if self.account is not None:
            os.chown(self.socket_dir, self.account.pw_uid, self.account.pw_gid)
        # --no-sync: a throwaway cluster need not survive power loss, and it saves a second.
        self._pg("initdb", ["-D", str(self.data), "-U", SUPERUSER, *INITDB_OPTIONS])
        socket_dir = str(self.socket_dir)
        if "'" in socket_dir:
            raise ThrowawayUnavailable(f"temporary directory {socket_dir!r} contains a quote")
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{socket_dir}'",
            "port": str(PORT),
            "fsync": "off",
            "full_page_writes": "off",
            "max_prepared_transactions": "8",
            "shared_buffers": "'32MB'",
        }
        # Appending keeps the file's owner; later lines win over initdb's defaults.
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# ogmem throwaway test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _inspect(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            self.version = str(row[0]) if row else ""
            try:
                # Transactional DDL: the probe leaves the database as it found it.
                with conn.transaction(force_rollback=True):
                    conn.execute("CREATE EXTENSION vector")
                self.has_pgvector = True
            except psycopg.Error:
                self.has_pgvector = False

    def start(self) -> None:
        """Start the server and wait until it accepts connections (no-op when running)."""
        if not self.is_running():
            self._pg_ctl("start", "-l", str(self.log))

    def stop(self, *, mode: StopMode = "fast") -> None:
        """Stop the server (no-op when stopped).

        Args:
            mode: ``fast`` terminates every session and checkpoints (what a service
                restart does); ``immediate`` kills the server like a crash, recovery
                replays the WAL on the next start; ``smart`` waits for sessions to end.
        """
        if self.is_running():
            self._pg_ctl("stop", "-m", mode)

    def restart(self, *, mode: StopMode = "fast") -> None:
        """Stop (see :meth:`stop` for ``mode``) and start again; returns once it accepts connections."""
        self._pg_ctl("restart", "-m", mode, "-l", str(self.log))

    def is_running(self) -> bool:
        """Whether this server's postmaster is running."""
        if not (self.data / "PG_VERSION").exists():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no data directory.
        return self._pg("pg_ctl", ["status", "-D", str(self.data)], check=False) == 0

    def destroy(self) -> None:
        """Stop the server at once and delete its directory. Idempotent."""
        try:
            if self.is_running():
                self._pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # -- helpers -----------------------------------------------------------------

    def _pg_ctl(self, action: str, *options: str) -> None:
        self._pg("pg_ctl", [action, "-D", str(self.data), "-w", "-t", str(PG_CTL_TIMEOUT), *options])

    def _pg(self, program: str, args: list[str], *, check: bool = True) -> int:
        """Run one of the server's programs as the server's account; output goes to a file.

        A pipe would be inherited by the postmaster that ``pg_ctl start`` forks and
        would never reach end-of-file, so output goes to a file even for short commands.
        """
        account = self.account
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
            done = subprocess.run(
                [str(self.bindir / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                timeout=PG_CTL_TIMEOUT + 30,
                check=False,
                user=account.pw_uid if account is not None else None,
                group=account.pw_gid if account is not None else None,
                extra_groups=[] if account is not None else None,
            )
            if check and done.returncode != 0:
                out.seek(0)
                raise ThrowawayUnavailable(
                    f"{program} {' '.join(args)} exited with {done.returncode}: {out.read()}"
                )
        return done.returncode

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def __repr__(self) -> str:
        return f"ThrowawayPostgres({self.source}, {self.version or '?'}, pgvector={self.has_pgvector}, {self.dsn})"


_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (a no-op when it does not exist)."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"not a plain schema name: {schema!r}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def launch_or_skip(binaries: PostgresBinaries | None = None) -> ThrowawayPostgres:
    """:meth:`ThrowawayPostgres.launch`, skipping the test when it fails (failing it under ``CI=true``)."""
    try:
        return ThrowawayPostgres.launch(binaries)
    except ThrowawayUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the throwaway PostgreSQL must start under CI=true: {exc}")
        pytest.skip(f"no throwaway PostgreSQL: {exc}")


@pytest.fixture(scope="session")
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    """One private PostgreSQL server for the whole session, deleted at the end.

    Skips when no PostgreSQL can be started; under ``CI=true`` that is a failure.
    A test that stops the server starts it again before it ends (``throwaway_schema``
    also restarts a server left stopped by a failed test).
    """
    server = launch_or_skip()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def throwaway_schema(throwaway_pg: ThrowawayPostgres) -> Iterator[str]:
    """A fresh schema name on the throwaway server, dropped after the test."""
    throwaway_pg.start()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    throwaway_pg.start()
    drop_schema(throwaway_pg.dsn, schema)
