"""PostgresStore across OS processes and through server faults.

Real processes (multiprocessing, spawn) race on the same rows; one is killed with
SIGKILL inside its transaction; backends are killed with pg_terminate_backend. The
server restart under load runs on a throwaway server the tests start themselves
(tests/pg_throwaway.py), never on the developer's OGMEM_TEST_POSTGRES_DSN.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.context import SpawnContext
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
import pytest
from psycopg import sql

from ogmem_memory.errors import ConcurrencyError, StoreError
from ogmem_memory.models import RequestContext
from ogmem_memory.stores.postgres import POSTGRES_MIGRATIONS, PostgresStore
from ogmem_memory.testing.conformance import archive, msg
from tests.conftest import postgres_dsn_or_skip

if TYPE_CHECKING:
    # Imported for annotations only: a runtime import before pytest registers the plugin
    # below would stop pytest from rewriting its asserts (a warning, hence an error).
    from tests.pg_throwaway import ThrowawayPostgres

pytestmark = pytest.mark.postgres
pytest_plugins = ["tests.pg_throwaway"]  # throwaway_pg, throwaway_schema

ALICE = RequestContext(account_id="acme", user_id="alice")
CHILD_TIMEOUT = 60
# pg_terminate_backend(pid, timeout) returns once the backend has exited (PostgreSQL 14+): a
# "later call" then really comes after the kill, not while a backend is still going away
# (its connection looks idle and healthy to the pool until the server closes it).
TERMINATE_COUNT = (
    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = %s"
)


@pytest.fixture
def dsn() -> str:
    return postgres_dsn_or_skip()


@pytest.fixture
def spawn() -> SpawnContext:
    return multiprocessing.get_context("spawn")


def _table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def _wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _backends(dsn: str, application_name: str, *, waiting_on_lock: bool = False) -> list[tuple[int, str]]:
    query = "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s"
    if waiting_on_lock:
        query += " AND wait_event_type = 'Lock'"
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [(r[0], r[1]) for r in conn.execute(query, (application_name,)).fetchall()]


def _collect(results: multiprocessing.Queue[Any], n: int) -> list[Any]:
    return [results.get(timeout=CHILD_TIMEOUT) for _ in range(n)]


def _join(processes: list[Any]) -> None:
    for p in processes:
        p.join(CHILD_TIMEOUT)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


# -- children (module level: spawn imports them by name) ---------------------------


def _migrate_and_append_child(
    dsn: str, schema: str, n: int, barrier: Any, results: multiprocessing.Queue[Any]
) -> None:
    store = PostgresStore(dsn, schema=schema)
    try:
        barrier.wait(CHILD_TIMEOUT)
        store.setup()
        store.bind_session("shared", ALICE)
        for i in range(50):
            store.append_messages("shared", [msg(f"{n}:{i}")])
        results.put(("ok", n))
    except BaseException as exc:
        results.put(("error", repr(exc)))
    finally:
        store.close()


def _race_child(
    dsn: str,
    schema: str,
    name: str,
    rounds: list[list[str]],
    barrier: Any,
    results: multiprocessing.Queue[Any],
) -> None:
    store = PostgresStore(dsn, schema=schema, application_name=name)
    store.setup()
    try:
        for k, ids in enumerate(rounds):
            first = 10 * k + 1
            barrier.wait(CHILD_TIMEOUT)
            try:
                store.commit_archive("race", archive("race", first, first + 9, f"{name}-c{k}"), ids)
                results.put(("commit", k, name))
            except ConcurrencyError:
                results.put(("commit-lost", k, name))
        barrier.wait(CHILD_TIMEOUT)  # every commit round is over: both see the same archives
        live = sorted(store.list_archives("race"), key=lambda a: a.first_seq)
        for j in range(len(live) // 2):
            a, b = live[2 * j], live[2 * j + 1]
            merged = archive("race", a.first_seq, b.last_seq, f"{name}-m{j}", metadata={"by": name})
            barrier.wait(CHILD_TIMEOUT)
            try:
                store.merge_archives("race", merged, [a.archive_id, b.archive_id])
                results.put(("merge", j, name))
            except ConcurrencyError:
                results.put(("merge-lost", j, name))
    except BaseException as exc:
        results.put(("error", repr(exc), name))
    finally:
        store.close()


def _commit_child(
    dsn: str, schema: str, name: str, ids: list[str], results: multiprocessing.Queue[Any] | None
) -> None:
    store = PostgresStore(dsn, schema=schema, application_name=name)
    try:
        store.commit_archive("s", archive("s", 1, len(ids), name), ids)
        if results is not None:
            results.put(("won", name))
    except BaseException as exc:
        if results is not None:
            results.put(("error", repr(exc)))
    finally:
        store.close()


def _append_child(dsn: str, schema: str, name: str) -> None:
    store = PostgresStore(dsn, schema=schema, application_name=name)
    store.append_messages("s", [msg(f"from {name} #{i}") for i in range(3)])


MANAGER_PROCESSES = 4
MANAGER_MESSAGES = 250
SHARED_SESSIONS = 8
FILLER = "we talked about the Lisbon trip budget the invoice and who books the hotel for Friday"


def _manager_child(
    dsn: str, schema: str, p: int, barrier: Any, inboxes: list[Any], results: multiprocessing.Queue[Any]
) -> None:
    """Write 250 messages round-robin into the shared sessions; every 50, send a probe to the next process."""
    from ogmem_memory import MemoryConfig, SessionManager

    config = MemoryConfig(
        commit_token_threshold=300, commit_turn_threshold=6, keep_recent_messages=4, keep_recent_tokens=100
    )
    manager = SessionManager(PostgresStore(dsn, schema=schema), config=config)
    written: list[tuple[str, str]] = []
    problems: list[str] = []
    checked = 0
    peers_done = False

    def check(item: tuple[Any, ...]) -> None:
        # A's add_message returned before A sent this: B's next get_context must show it.
        nonlocal checked, peers_done
        if item[0] == "done":
            peers_done = True
            return
        _, sender, token, shared = item
        probe_ctx = manager.get_context(f"probe-{sender}")
        if token not in [m.content for m in probe_ctx.messages]:
            problems.append(f"p{p}: {token} missing from get_context(probe-{sender})")
        shared_ctx = manager.get_context(shared)
        if token not in [m.content for m in shared_ctx.messages]:
            # only a durable archive may take it out of the live window
            status = {m.content: m.status for m in manager.get_history(shared)}.get(token)
            if status != "archived":
                problems.append(f"p{p}: {token} invisible in {shared} (status {status})")
        checked += 1

    try:
        barrier.wait(CHILD_TIMEOUT)
        for i in range(MANAGER_MESSAGES):
            sid = f"shared-{(i + p) % SHARED_SESSIONS}"
            role = "user" if i % 2 == 0 else "assistant"
            written.append((sid, manager.add_message(sid, role, f"p{p} m{i} {FILLER}").message.id))
            if i % 50 == 49:
                token = f"probe p{p} i{i}"
                manager.add_message(f"probe-{p}", "user", token)
                written.append((sid, manager.add_message(sid, "user", token).message.id))
                inboxes[(p + 1) % MANAGER_PROCESSES].put(("probe", p, token, sid))
            while not inboxes[p].empty():
                check(inboxes[p].get())
        inboxes[(p + 1) % MANAGER_PROCESSES].put(("done",))
        while not peers_done:
            check(inboxes[p].get(timeout=CHILD_TIMEOUT))
        manager.wait_for_tasks()
        manager.close()
        results.put(("ok", p, written, problems, checked))
    except BaseException as exc:
        results.put(("error", p, repr(exc), problems, checked))


# -- races between processes -------------------------------------------------------


def test_four_processes_migrate_bind_and_append_concurrently(
    dsn: str, postgres_schema: str, spawn: SpawnContext
) -> None:
    """Migrations run once under the advisory lock; seqs are serialised across processes."""
    barrier = spawn.Barrier(4)
    results: multiprocessing.Queue[Any] = spawn.Queue()
    procs = [
        spawn.Process(target=_migrate_and_append_child, args=(dsn, postgres_schema, n, barrier, results))
        for n in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = _collect(results, 4)
    _join(procs)
    assert sorted(outcomes) == [("ok", n) for n in range(4)]
    with psycopg.connect(dsn) as conn:
        versions = conn.execute(
            sql.SQL("SELECT version FROM {} ORDER BY version").format(
                _table(postgres_schema, "ogmem_migrations")
            )
        ).fetchall()
    assert [v[0] for v in versions] == list(range(1, len(POSTGRES_MIGRATIONS) + 1))
    with PostgresStore(dsn, schema=postgres_schema) as store:
        listed = store.list_messages("shared")
    assert [m.seq for m in listed] == list(range(1, 201))
    for n in range(4):
        mine = [int(m.content.split(":")[1]) for m in listed if m.content.startswith(f"{n}:")]
        assert mine == list(range(50))


def test_two_processes_racing_commits_and_merges_one_wins_each_time(
    dsn: str, postgres_schema: str, spawn: SpawnContext
) -> None:
    rounds = 10
    with PostgresStore(dsn, schema=postgres_schema) as store:
        store.bind_session("race", ALICE)
        stored = store.append_messages("race", [msg(f"m{i}") for i in range(10 * rounds)])
    groups = [[m.id for m in stored[10 * k : 10 * k + 10]] for k in range(rounds)]
    barrier = spawn.Barrier(2)
    results: multiprocessing.Queue[Any] = spawn.Queue()
    procs = [
        spawn.Process(target=_race_child, args=(dsn, postgres_schema, name, groups, barrier, results))
        for name in ("p1", "p2")
    ]
    for p in procs:
        p.start()
    outcomes = _collect(results, 2 * rounds + 2 * (rounds // 2))
    _join(procs)
    assert not [o for o in outcomes if o[0] == "error"], outcomes
    commit_winner = {o[1]: o[2] for o in outcomes if o[0] == "commit"}
    merge_winner = {o[1]: o[2] for o in outcomes if o[0] == "merge"}
    # exactly one winner and one ConcurrencyError per round
    assert sorted(o[1] for o in outcomes if o[0] == "commit") == list(range(rounds))
    assert sorted(o[1] for o in outcomes if o[0] == "commit-lost") == list(range(rounds))
    assert sorted(o[1] for o in outcomes if o[0] == "merge") == list(range(rounds // 2))
    assert sorted(o[1] for o in outcomes if o[0] == "merge-lost") == list(range(rounds // 2))

    with PostgresStore(dsn, schema=postgres_schema) as store:
        messages = store.list_messages("race")
        everything = store.list_archives("race", include_merged=True)
        live = store.list_archives("race")
        record = store.get_session_record("race")
    # nothing duplicated or lost: every message once, archived by its round's winner
    assert [m.seq for m in messages] == list(range(1, 10 * rounds + 1))
    assert len({m.id for m in messages}) == 10 * rounds
    for k in range(rounds):
        assert {m.archive_id for m in messages[10 * k : 10 * k + 10]} == {f"{commit_winner[k]}-c{k}"}
    commits = [a for a in everything if "-c" in a.archive_id]
    assert sorted(a.archive_id for a in commits) == sorted(f"{commit_winner[k]}-c{k}" for k in range(rounds))
    assert record is not None and record.commit_count == rounds
    # one merged archive per merge round; its sources point at it
    assert sorted(a.archive_id for a in live) == sorted(f"{merge_winner[j]}-m{j}" for j in range(rounds // 2))
    for a in commits:
        j = (a.first_seq - 1) // 20
        assert a.merged_into == f"{merge_winner[j]}-m{j}"


# -- SIGKILL inside a transaction ----------------------------------------------------


def test_process_killed_inside_archive_commit_leaves_nothing_half_written(
    dsn: str, postgres_schema: str, spawn: SpawnContext
) -> None:
    with PostgresStore(dsn, schema=postgres_schema) as store:
        store.bind_session("s", ALICE)
        ids = [m.id for m in store.append_messages("s", [msg(f"m{i}") for i in range(5)])]
        head_before = store.head("s")
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn) as locker:
        # An uncommitted archive with the victim's id blocks the victim's archive insert,
        # the last write of its commit: it has already counted the commit and flipped all
        # five messages, and waits for this transaction to see whether its id is taken.
        locker.execute(
            sql.SQL(
                "INSERT INTO {} (session_id, archive_id, created_at, overview, abstract, first_seq, "
                "last_seq, message_count, token_count, metadata) "
                "VALUES ('s', %s, now(), '', '', 1, 5, 5, 0, '{{}}')"
            ).format(_table(postgres_schema, "ogmem_archives")),
            (victim,),
        )
        proc = spawn.Process(target=_commit_child, args=(dsn, postgres_schema, victim, ids, None))
        proc.start()
        _wait_until(lambda: bool(_backends(dsn, victim, waiting_on_lock=True)), what="victim blocked")
        [(pid, query)] = _backends(dsn, victim, waiting_on_lock=True)
        assert "ogmem_archives" in query
        with psycopg.connect(dsn, autocommit=True) as watcher:  # on the locker's transaction id
            [(locktype,)] = watcher.execute(
                "SELECT locktype FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
            ).fetchall()
        assert locktype == "transactionid"
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(CHILD_TIMEOUT)
        assert proc.exitcode == -signal.SIGKILL
        locker.rollback()
    _wait_until(lambda: not _backends(dsn, victim), what="the dead client's backend to finish")

    # The commit is one statement: the server runs all of it or none of it, whether or not
    # the client lives to read the answer (here it went on once the lock was released).
    with PostgresStore(dsn, schema=postgres_schema) as store:
        messages = store.list_messages("s")
        archives = store.list_archives("s", include_merged=True)
        record = store.get_session_record("s")
        head = store.head("s")
    assert record is not None and head is not None and head_before is not None
    landed = record.commit_count == 1
    if landed:
        assert {(m.status, m.archive_id) for m in messages} == {("archived", victim)}
        assert [a.archive_id for a in archives] == [victim]
        assert head.archive_version == head_before.archive_version + 1
    else:
        assert record.commit_count == 0
        assert [m.status for m in messages] == ["active"] * 5
        assert archives == []
        assert head == head_before

    results: multiprocessing.Queue[Any] = spawn.Queue()
    survivor = spawn.Process(target=_commit_child, args=(dsn, postgres_schema, "survivor", ids, results))
    survivor.start()
    outcome = results.get(timeout=CHILD_TIMEOUT)
    _join([survivor])
    winner = victim if landed else "survivor"
    if landed:
        assert outcome[0] == "error" and "ConcurrencyError" in outcome[1]
    else:
        assert outcome == ("won", "survivor")
    with PostgresStore(dsn, schema=postgres_schema) as store:
        assert {(m.status, m.archive_id) for m in store.list_messages("s")} == {("archived", winner)}
        assert [a.archive_id for a in store.list_archives("s", include_merged=True)] == [winner]


def test_process_killed_inside_append_writes_all_or_nothing(
    dsn: str, postgres_schema: str, spawn: SpawnContext
) -> None:
    with PostgresStore(dsn, schema=postgres_schema) as store:
        store.bind_session("s", ALICE)
        acknowledged = store.append_messages("s", [msg("acknowledged")])
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn) as locker:
        locker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE session_id = 's' FOR UPDATE").format(
                _table(postgres_schema, "ogmem_sessions")
            )
        )
        proc = spawn.Process(target=_append_child, args=(dsn, postgres_schema, victim))
        proc.start()
        _wait_until(lambda: bool(_backends(dsn, victim, waiting_on_lock=True)), what="victim blocked")
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(CHILD_TIMEOUT)
        locker.rollback()
    _wait_until(lambda: not _backends(dsn, victim), what="the dead client's backend to roll back")
    with PostgresStore(dsn, schema=postgres_schema) as store:
        listed = store.list_messages("s")
        # The victim's append is one statement: the server runs all of it or none of it,
        # whether or not the client lives to read the answer. Never a part, never a gap.
        assert listed[0].id == acknowledged[0].id
        assert [m.content for m in listed[1:]] in ([], [f"from {victim} #{i}" for i in range(3)])
        assert [m.seq for m in listed] == list(range(1, len(listed) + 1))
        assert store.append_messages("s", [msg("next")])[0].seq == len(listed) + 1


# -- server faults -----------------------------------------------------------------


def test_terminated_backend_fails_the_call_in_flight_then_the_pool_recovers(
    dsn: str, postgres_schema: str
) -> None:
    app = f"ogmem-term-{uuid.uuid4().hex[:8]}"
    with PostgresStore(dsn, schema=postgres_schema, application_name=app, min_size=3, timeout=5) as store:
        store.bind_session("s", ALICE)
        store.append_messages("s", [msg("before")])
        _wait_until(lambda: len(_backends(dsn, app)) >= 3, what="the pool to fill")
        outcome: dict[str, Any] = {}

        def in_flight() -> None:
            started = time.monotonic()
            try:
                store.append_messages("s", [msg("in flight")])
                outcome["result"] = "returned"
            except BaseException as exc:
                outcome["result"] = exc
            outcome["seconds"] = time.monotonic() - started

        with psycopg.connect(dsn) as blocker:
            blocker.execute(
                sql.SQL("SELECT 1 FROM {} WHERE session_id = 's' FOR UPDATE").format(
                    _table(postgres_schema, "ogmem_sessions")
                )
            )
            thread = threading.Thread(target=in_flight)
            thread.start()
            _wait_until(lambda: bool(_backends(dsn, app, waiting_on_lock=True)), what="the call to block")
            with psycopg.connect(dsn, autocommit=True) as admin:
                killed = admin.execute(TERMINATE_COUNT, (app,)).fetchone()
            assert killed is not None and killed[0] >= 3  # the busy one and the idle ones
            thread.join(10)
            assert not thread.is_alive(), "the call in flight hangs"
            blocker.rollback()
        assert isinstance(outcome["result"], StoreError)
        assert isinstance(outcome["result"].__cause__, psycopg.OperationalError)
        assert outcome["seconds"] < 5

        # every later call succeeds, including several at once (all pooled connections were dead)
        for i in range(5):
            store.append_messages("s", [msg(f"after {i}")])
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                store.append_messages("s", [msg(f"parallel {n}")])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        contents = [m.content for m in store.list_messages("s")]
        assert "in flight" not in contents
        assert contents[:6] == ["before"] + [f"after {i}" for i in range(5)]
        assert [m.seq for m in store.list_messages("s")] == list(range(1, 11))


async def test_async_pool_recovers_from_terminated_backends(dsn: str, postgres_schema: str) -> None:
    app = f"ogmem-aterm-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(dsn, schema=postgres_schema, application_name=app, min_size=2, timeout=5)
    try:
        await store.abind_session("s", ALICE)
        await store.aappend_messages("s", [msg("before")])
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
            )
        _wait_until(lambda: not _backends(dsn, app), what="backends to exit")
        for i in range(3):
            await store.aappend_messages("s", [msg(f"after {i}")])
        assert [m.content for m in await store.alist_messages("s")] == [
            "before",
            "after 0",
            "after 1",
            "after 2",
        ]
    finally:
        await store.aclose()


def _prepared_lock(dsn: str, schema: str, session_id: str) -> str:
    """Lock a session's row in a prepared transaction and return its global id.

    Unlike a lock held by an open session, a prepared transaction's lock outlives the
    session that took it and survives a server restart: only ROLLBACK PREPARED frees it.
    """
    gid = f"ogmem-pin-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE session_id = %s FOR UPDATE").format(
                _table(schema, "ogmem_sessions")
            ),
            (session_id,),
        )
        conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
    return gid


def _release_prepared(dsn: str, gid: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone():
            conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))


@pytest.mark.slow
def test_server_restart_under_load_loses_no_acknowledged_message(
    throwaway_pg: ThrowawayPostgres, throwaway_schema: str
) -> None:
    """A restart under load fails only the calls it catches, with StoreError; no acknowledged message is lost.

    Runs on the session's throwaway server (tests/pg_throwaway.py), never on the
    developer's OGMEM_TEST_POSTGRES_DSN. The version before ran ``pg_ctlcluster restart``
    on that server and pinned one call in flight behind a row lock held by an ordinary
    session. A fast shutdown signals every backend, so when the locker's backend happened
    to exit first the lock was released and the pinned call could commit and return before
    its own backend was told to die: "the call returned instead of raising", in one of two
    full runs. Here the lock belongs to a prepared transaction, which no backend's death and
    no restart releases, so the pinned call can only end through the restart: it raises
    StoreError and stores nothing, every time. The retry then stores it exactly once.
    """
    dsn, schema = throwaway_pg.dsn, throwaway_schema
    timeout = 3.0
    store = PostgresStore(dsn, schema=schema, timeout=timeout, max_size=6)
    # statement_timeout (30 s) far beyond the test: only the restart can end the pinned call.
    pinned_app = f"ogmem-pinned-{uuid.uuid4().hex[:8]}"
    pinned_store = PostgresStore(dsn, schema=schema, timeout=30, application_name=pinned_app)
    pinned_message = msg("in flight at the restart")
    pinned: dict[str, Any] = {}

    def in_flight() -> None:
        try:
            pinned_store.append_messages("pinned", [pinned_message])
            pinned["result"] = "returned"
        except BaseException as exc:
            pinned["result"] = exc

    acked: dict[str, list[str]] = {f"w{n}": [] for n in range(4)}
    unacked: dict[str, list[str]] = {sid: [] for sid in acked}
    failures: list[BaseException] = []
    slowest = [0.0]
    after_restart = threading.Event()
    ok_after_restart: dict[str, int] = dict.fromkeys(acked, 0)
    stop = threading.Event()
    lock = threading.Lock()

    def writer(sid: str) -> None:
        i = 0
        while not stop.is_set():
            m = msg(f"{sid} #{i}")
            started = time.monotonic()
            try:
                store.append_messages(sid, [m])
            except BaseException as exc:
                with lock:
                    failures.append(exc)
                    unacked[sid].append(m.id)
                time.sleep(0.05)
            else:
                with lock:
                    acked[sid].append(m.id)
                    if after_restart.is_set():
                        ok_after_restart[sid] += 1
            finally:
                with lock:
                    slowest[0] = max(slowest[0], time.monotonic() - started)
            i += 1

    gid: str | None = None
    threads: list[threading.Thread] = []
    try:
        for sid in acked:
            store.bind_session(sid, ALICE)
        pinned_store.bind_session("pinned", ALICE)
        gid = _prepared_lock(dsn, schema, "pinned")
        pin = threading.Thread(target=in_flight)
        pin.start()
        _wait_until(lambda: bool(_backends(dsn, pinned_app, waiting_on_lock=True)), what="the pinned call")
        [(_, query)] = _backends(dsn, pinned_app, waiting_on_lock=True)
        assert "INSERT INTO" in query  # the append itself is in flight, not a setup statement
        threads = [threading.Thread(target=writer, args=(sid,)) for sid in acked]
        for t in threads:
            t.start()
        # Under load: every writer has had calls acknowledged, and keeps writing through the restart.
        _wait_until(lambda: min(len(ids) for ids in acked.values()) >= 5, what="the writers to get going")

        throwaway_pg.restart(mode="fast")  # what a service restart does: terminate sessions, checkpoint

        pin.join(15)
        assert not pin.is_alive(), "the call in flight hangs after the restart"
        after_restart.set()
        _wait_until(lambda: min(ok_after_restart.values()) >= 5, timeout=30, what="writes to succeed again")
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)

        # The pinned call was waiting for the lock when its backend was terminated.
        result = pinned["result"]
        assert isinstance(result, StoreError), pinned
        assert isinstance(result.__cause__, psycopg.errors.AdminShutdown), repr(result.__cause__)
        with PostgresStore(dsn, schema=schema) as check:
            assert check.list_messages("pinned") == []
        # The lock survived the restart; once released, the caller's retry lands exactly once.
        _release_prepared(dsn, gid)
        pinned_store.append_messages("pinned", [pinned_message])
        with PostgresStore(dsn, schema=schema) as check:
            assert [(m.id, m.seq) for m in check.list_messages("pinned")] == [(pinned_message.id, 1)]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        throwaway_pg.start()  # a no-op unless the restart failed half-way
        if gid is not None:
            _release_prepared(dsn, gid)  # else the schema could not be dropped
        store.close()
        pinned_store.close()

    # The writers' calls caught by the restart (if any) failed the same way, never otherwise.
    assert all(isinstance(exc, StoreError) for exc in failures), {type(e) for e in failures}
    # Every call is bounded by the pool wait plus the statement time, whatever the server does.
    assert slowest[0] < 2 * timeout + 2, slowest[0]
    with PostgresStore(dsn, schema=schema) as check:
        for sid, ids in acked.items():
            stored = check.list_messages(sid)
            stored_ids = {m.id for m in stored}
            assert set(ids) <= stored_ids  # every acknowledged message is there
            # A failed call may have committed before its answer was lost; nothing else appears.
            assert stored_ids <= set(ids) | set(unacked[sid])
            assert [m.seq for m in stored] == list(range(1, len(stored) + 1))


# -- SessionManager in several processes ---------------------------------------------


@pytest.mark.slow
def test_managers_in_four_processes_share_eight_sessions(
    dsn: str, postgres_schema: str, spawn: SpawnContext
) -> None:
    """4 processes x 250 messages, low thresholds, background commits racing on the same sessions."""
    barrier = spawn.Barrier(MANAGER_PROCESSES)
    inboxes = [spawn.Queue() for _ in range(MANAGER_PROCESSES)]
    results: multiprocessing.Queue[Any] = spawn.Queue()
    procs = [
        spawn.Process(target=_manager_child, args=(dsn, postgres_schema, p, barrier, inboxes, results))
        for p in range(MANAGER_PROCESSES)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    _join(procs)
    assert [o for o in outcomes if o[0] != "ok"] == []
    assert [problem for o in outcomes for problem in o[3]] == []
    assert (
        sorted(o[4] for o in outcomes) == [MANAGER_MESSAGES // 50] * MANAGER_PROCESSES
    )  # every probe checked

    written: dict[str, list[str]] = {}
    for o in outcomes:
        for sid, message_id in o[2]:
            written.setdefault(sid, []).append(message_id)
    with PostgresStore(dsn, schema=postgres_schema) as store:
        from ogmem_memory import SessionManager

        reader = SessionManager(store)
        total = 0
        for sid, ids in written.items():
            history = reader.get_history(sid)
            # every message exactly once, in seq order
            assert sorted(m.id for m in history) == sorted(ids)
            assert [m.seq for m in history] == sorted(m.seq for m in history)
            total += len(history)
            for p in range(MANAGER_PROCESSES):  # each process's order is kept
                mine = [int(m.content.split()[1][1:]) for m in history if m.content.startswith(f"p{p} m")]
                assert mine == sorted(mine)
            # live archives cover disjoint seq ranges; every archived message belongs to one
            live = sorted(store.list_archives(sid), key=lambda a: a.first_seq)
            for earlier, later in itertools.pairwise(live):
                assert earlier.last_seq < later.first_seq, (sid, earlier, later)
            assert live, f"no commit happened in {sid}"
            everything = {a.archive_id: a for a in store.list_archives(sid, include_merged=True)}
            for m in history:
                if m.status == "archived":
                    a = everything[m.archive_id or ""]
                    assert a.first_seq <= m.seq <= a.last_seq
                    assert any(x.first_seq <= m.seq <= x.last_seq for x in live)
        assert total == MANAGER_PROCESSES * (MANAGER_MESSAGES + MANAGER_MESSAGES // 50)
        reader.close()
