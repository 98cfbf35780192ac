"""SQLite's ids without an id index behave as the in-memory store's (the oracle), op for op.

Random programs of adds without an id, adds with the caller's ids (some shaped like ids we
draw), re-sends of messages read back (a retry: a no-op), batches mixing both, clears and
deletes run on a manager over each store; after every op both histories hold the same roles,
texts and seqs, every id is distinct within the session, and the caller's ids are kept as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ogmem_memory import MemoryConfig, SessionManager
from ogmem_memory.stores import InMemoryStore, SQLiteStore

OFF = MemoryConfig(auto_commit=False)
GIVEN_IDS = ("client-1", "client-2", "msg_000000000001", "msg_00000000002a", "msg_ffffffffffff")

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add")),
        st.tuples(st.just("add_id"), st.sampled_from(GIVEN_IDS)),
        st.tuples(st.just("resend"), st.integers(0, 50)),
        st.tuples(st.just("batch"), st.integers(0, 50), st.sampled_from(GIVEN_IDS)),
        st.tuples(st.just("clear")),
        st.tuples(st.just("delete")),
    ),
    max_size=25,
)


def _run(m: SessionManager, op: tuple[Any, ...], n: int) -> None:
    history = m.get_history("s")
    kind = op[0]
    if kind == "add":
        m.add_message("s", "user", f"new {n}")
    elif kind == "add_id":
        m.add_message("s", "assistant", f"given {op[1]}", id=op[1])
    elif kind == "resend" and history:
        old = history[op[1] % len(history)]
        m.add_message("s", old.role, old.content, id=old.id)
    elif kind == "batch":
        batch: list[dict[str, Any]] = [{"role": "user", "content": f"batch {n}"}]
        if history:
            old = history[op[1] % len(history)]
            batch.append({"role": old.role, "content": old.content, "id": old.id})
        if op[2] not in {x["id"] for x in batch if "id" in x}:
            batch.append({"role": "assistant", "content": f"given {op[2]}", "id": op[2]})
        m.add_messages("s", batch)
    elif kind == "clear" and history:
        m.clear_session("s")
    elif kind == "delete" and history:
        m.delete_session("s")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=ops)
def test_sqlite_ids_agree_with_the_in_memory_store(
    tmp_path_factory: Any, program: list[tuple[Any, ...]]
) -> None:
    path = Path(tmp_path_factory.mktemp("oracle")) / "ids.db"
    with (
        SessionManager(InMemoryStore(), config=OFF) as oracle,
        SessionManager(SQLiteStore(path), config=OFF) as m,
    ):
        for n, op in enumerate(program):
            _run(oracle, op, n)
            _run(m, op, n)
            want, got = oracle.get_history("s"), m.get_history("s")
            assert [(x.role, x.content, x.seq) for x in got] == [(x.role, x.content, x.seq) for x in want], op
            assert len({x.id for x in got}) == len(got)
            assert [x.id for x in got if x.content.startswith("given ")] == [
                x.id for x in want if x.content.startswith("given ")
            ]
