"""Issue 9 / DESIGN 4.1 and 4.3: SIGKILL at random moments while commits and merges run.

Each round starts two writer processes on one session (``killed_writer.py``; thresholds so low
that every couple of turns commits and every second archive merges, from both processes at
once) and kills both with SIGKILL at random moments after they acknowledged their first
messages. The next round's writers first retry the message each killed writer had in
flight. Afterwards: every acknowledged message is stored, none twice, none torn; no half
archive (each archive counts exactly the archived messages of its seq range, each archived
message reaches exactly one live archive through its merge chain); the commit counter
agrees with the commit archives; and the session still takes writes and commits.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ogmem_memory import SessionManager
from tests.stress.killed_writer import content_for
from tests.stress.support import CHURN, ROOT, Backend, archive_problems

ROUNDS = 10
WRITERS = 2
SESSION = "killed"
FIRST_ACK_TIMEOUT = 30.0


class Writer:
    """One killed_writer process and the ids it acknowledged (complete lines only)."""

    def __init__(self, backend: Backend, tag: str, retries: list[str], log: Path) -> None:
        self.tag = tag
        self.log = log
        self.acked: list[str] = []
        self.first_ack = threading.Event()
        self._stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.stress.killed_writer", backend.spec(), SESSION, tag, *retries],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a line cut by the kill was never acknowledged
                self.acked.append(line.strip())
                self.first_ack.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def finish(self) -> None:
        """Reap the process; fail unless SIGKILL ended it (a crash of its own is a failure)."""
        self.kill()
        self.proc.wait(30)
        self._reader.join(30)
        self._stderr.close()
        assert not self._reader.is_alive()
        assert self.proc.returncode == -signal.SIGKILL, self.log.read_text()[-3000:]

    def in_flight(self) -> str:
        """The id it was writing when killed: the one after its last acknowledged own id."""
        own = [a for a in self.acked if a.startswith(f"{self.tag}-")]
        return f"{self.tag}-{int(own[-1].rsplit('-', 1)[1]) + 1}" if own else f"{self.tag}-0"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_sigkill_during_commits_and_merges_loses_and_doubles_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    rng = random.Random(9)
    acked: list[str] = []
    retried: list[str] = []
    pending: list[list[str]] = [[] for _ in range(WRITERS)]
    for r in range(ROUNDS):
        writers = [
            Writer(backend, f"r{r}w{w}", pending[w], tmp_path / f"r{r}w{w}.log") for w in range(WRITERS)
        ]
        try:
            for writer in writers:
                assert writer.first_ack.wait(FIRST_ACK_TIMEOUT), writer.log.read_text()[-3000:]
            for writer in writers:  # independent random moments, commits and merges in flight
                time.sleep(rng.uniform(0.02, 0.5))
                writer.kill()
        finally:
            for writer in writers:
                writer.kill()
        for writer in writers:
            writer.finish()
        for w, writer in enumerate(writers):
            acked += writer.acked
            pending[w] = [writer.in_flight()]
            retried += pending[w]

    store = backend.open()
    try:
        history = store.list_messages(SESSION)
        stored = {m.id: m for m in history}
        lost = [a for a in acked if a not in stored]
        assert not lost, f"{len(lost)} acknowledged messages lost: {lost[:10]}"
        assert len(stored) == len(history), "a message was stored twice"
        torn = [m.id for m in history if m.content != content_for(m.id)]
        assert not torn, torn
        assert set(stored) <= set(acked) | set(retried)  # nothing appears that nobody wrote
        problems = archive_problems(store, SESSION)
        assert not problems, "\n".join(problems[:20])
        everything = store.list_archives(SESSION, include_merged=True)
        commits = [a for a in everything if not a.archive_id.startswith("merged_")]
        record = store.get_session_record(SESSION)
        assert record is not None and record.commit_count == len(commits)
        assert len(commits) >= ROUNDS, "the writers were meant to commit all the time"
        assert any(a.merged_into for a in everything), "the writers were meant to merge"

        with SessionManager(backend.open(), config=CHURN) as manager:
            manager.add_message(SESSION, "user", "after the kills: still writable?", id="after-1")
            manager.add_message(SESSION, "assistant", "after the kills: yes", id="after-2")
            manager.wait_for_tasks(30)
            result = manager.commit(SESSION, wait=True)
            assert result.status == "completed" and result.archived, result
            manager.wait_for_tasks(30)
            after = manager.get_history(SESSION)
        assert [m.id for m in after][-2:] == ["after-1", "after-2"]
        assert all(m.status == "archived" for m in after)
        assert archive_problems(store, SESSION) == []
    finally:
        store.close()
