"""StoreConformance: the behaviour every SessionStore must have, run against each backend."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from ogmem_memory.errors import AccessDeniedError, ConcurrencyError, InvalidInputError, SessionNotFoundError
from ogmem_memory.models import ArchiveEntry, RequestContext, SessionMessage, new_message_id
from ogmem_memory.stores.base import SessionStore

ALICE = RequestContext(account_id="acme", user_id="alice")
BOB = RequestContext(account_id="acme", user_id="bob")


def msg(content: str, role: str = "user", **kw: object) -> SessionMessage:
    return SessionMessage(id=new_message_id(), role=role, content=content, tokens=len(content) // 4 + 1, **kw)  # type: ignore[arg-type]


def archive(
    session_id: str, first: int, last: int, archive_id: str | None = None, **kw: object
) -> ArchiveEntry:
    return ArchiveEntry(
        archive_id=archive_id or f"arc_{first}_{last}",
        session_id=session_id,
        overview=f"overview {first}-{last}",
        abstract=f"abstract {first}-{last}",
        first_seq=first,
        last_seq=last,
        message_count=last - first + 1,
        **kw,  # type: ignore[arg-type]
    )


class StoreConformance:
    """Subclass and provide a ``store`` fixture (set up, empty); every backend must pass unchanged."""

    # -- sessions ----------------------------------------------------------------

    def test_bind_creates_and_verifies_owner(self, store: SessionStore) -> None:
        record = store.bind_session("s1", ALICE)
        assert record.owner == ("acme", "alice")
        assert store.bind_session("s1", ALICE).created_at == record.created_at
        with pytest.raises(AccessDeniedError):
            store.bind_session("s1", BOB)
        assert store.get_session_record("s1") is not None
        assert store.get_session_record("missing") is None

    def test_list_sessions_filters_by_owner_and_pages(self, store: SessionStore) -> None:
        for i in range(5):
            store.bind_session(f"a{i}", ALICE)
        store.bind_session("b0", BOB)
        alice = store.list_sessions(ALICE.owner, limit=100)
        assert sorted(r.session_id for r in alice) == [f"a{i}" for i in range(5)]
        assert [r.session_id for r in store.list_sessions(BOB.owner)] == ["b0"]
        assert len(store.list_sessions(limit=100)) == 6
        page1 = store.list_sessions(ALICE.owner, limit=2)
        page2 = store.list_sessions(ALICE.owner, limit=2, offset=2)
        assert len(page1) == 2 and len(page2) == 2
        assert {r.session_id for r in page1}.isdisjoint({r.session_id for r in page2})

    def test_delete_session_removes_everything(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg("one"), msg("two")])
        store.commit_archive("s", archive("s", 1, 1), [stored[0].id])
        store.save_state("s", {"k": 1})
        assert store.delete_session("s") is True
        assert store.delete_session("s") is False
        assert store.get_session_record("s") is None
        assert store.list_messages("s") == []
        assert store.list_archives("s") == []
        assert store.load_state("s") is None
        # the id can be bound again, by anyone
        assert store.bind_session("s", BOB).owner == BOB.owner

    def test_clear_session_keeps_owner(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg("one"), msg("two")])
        store.commit_archive("s", archive("s", 1, 1), [stored[0].id])
        store.save_state("s", {"k": 1})
        before = store.head("s")
        store.clear_session("s")
        assert store.list_messages("s") == []
        assert store.list_archives("s") == []
        assert store.load_state("s") is None
        after = store.head("s")
        assert before is not None and after is not None and after.archive_version > before.archive_version
        with pytest.raises(AccessDeniedError):
            store.bind_session("s", BOB)
        again = store.append_messages("s", [msg("three")])
        assert again[0].seq > stored[-1].seq  # seqs are never reused

    # -- messages ----------------------------------------------------------------

    def test_append_assigns_increasing_seq_and_roundtrips(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        payload = {
            "type": "ai",
            "data": {"content": "x", "tool_calls": [{"id": "c1", "name": "f", "args": {}}]},
        }
        sent = [
            msg("héllo 你好 🎉"),
            msg("'; DROP TABLE ogmem_messages; --", role="assistant", payload=payload),
        ]
        stored = store.append_messages("s", sent)
        assert [m.seq for m in stored] == [1, 2]
        listed = store.list_messages("s")
        assert [(m.id, m.role, m.content, m.payload, m.tokens, m.status) for m in listed] == [
            (m.id, m.role, m.content, m.payload, m.tokens, "active") for m in sent
        ]
        assert listed[0].created_at == sent[0].created_at
        assert listed[0].created_at.tzinfo is not None
        more = store.append_messages("s", [msg("three")])
        assert more[0].seq == 3
        head = store.head("s")
        assert head is not None and head.last_seq == 3
        record = store.get_session_record("s")
        assert record is not None and record.message_count == 3

    def test_append_to_unbound_session_fails(self, store: SessionStore) -> None:
        with pytest.raises(SessionNotFoundError):
            store.append_messages("nobody", [msg("x")])

    def test_append_repeated_id_is_a_no_op_returning_the_stored_message(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        first = msg("one")
        store.append_messages("s", [first])
        again = store.append("s", [msg("two"), replace(first, content="dup")])
        assert again.added == 1
        assert [(m.content, m.seq) for m in again.messages] == [("two", 2), ("one", 1)]
        assert [m.content for m in store.list_messages("s")] == ["one", "two"]
        record = store.get_session_record("s")
        assert record is not None and record.last_seq == 2 and record.message_count == 2
        assert store.append("s", [first]).added == 0

    def test_append_creates_for_its_writer_and_checks_the_owner(self, store: SessionStore) -> None:
        created = store.append("s", [msg("alice 1")], create_as=ALICE, owner=ALICE.owner)
        assert created.created and created.record.owner == ALICE.owner and created.record.last_seq == 1
        assert created.record.epoch
        with pytest.raises(AccessDeniedError):
            store.append("s", [msg("bob")], create_as=BOB, owner=BOB.owner)
        later = store.append("s", [msg("alice 2")], create_as=ALICE, owner=ALICE.owner)
        assert not later.created and later.record.last_seq == 2
        assert [m.content for m in store.list_messages("s")] == ["alice 1", "alice 2"]
        with pytest.raises(SessionNotFoundError):
            store.append("other", [msg("x")], owner=ALICE.owner)
        assert store.get_session_record("other") is None

    def test_a_recreated_session_has_a_new_epoch(self, store: SessionStore) -> None:
        first = store.append("s", [msg("a")], create_as=ALICE).record
        assert store.delete_session("s")
        second = store.append("s", [msg("b")], create_as=BOB).record
        assert second.epoch != first.epoch and second.owner == BOB.owner
        head = store.head("s")
        assert head is not None and head.epoch == second.epoch

    def test_owner_checks_change_nothing(self, store: SessionStore) -> None:
        stored = store.append("s", [msg("secret words")], create_as=ALICE).messages
        store.commit_archive("s", archive("s", 1, 1), [stored[0].id])
        for call in (
            lambda: store.list_messages("s", owner=BOB.owner),
            lambda: store.list_archives("s", owner=BOB.owner),
            lambda: store.read_archive("s", "arc_1_1", owner=BOB.owner),
            lambda: store.read_window("s", owner=BOB.owner),
            lambda: store.clear_session("s", owner=BOB.owner),
            lambda: store.delete_session("s", owner=BOB.owner),
            lambda: store.replace_messages("s", [msg("bob")], owner=BOB.owner),
            lambda: store.search_messages("secret", session_id="s", owner=BOB.owner),
        ):
            with pytest.raises(AccessDeniedError):
                call()
        assert [m.content for m in store.list_messages("s", owner=ALICE.owner)] == ["secret words"]
        assert len(store.list_archives("s", owner=ALICE.owner)) == 1
        assert store.delete_session("s", owner=ALICE.owner)

    def test_read_window_full_then_delta(self, store: SessionStore) -> None:
        stored = store.append("s", [msg(str(i)) for i in range(4)], create_as=ALICE).messages
        store.commit_archive("s", archive("s", 1, 2), [m.id for m in stored[:2]])
        full = store.read_window("s", owner=ALICE.owner, archive_limit=5)
        assert full is not None and full.full
        assert [m.content for m in full.messages] == ["2", "3"]
        assert [a.archive_id for a in full.archives] == ["arc_1_2"]
        same = store.read_window("s", since=full.record.head)
        assert same is not None and not same.full and same.messages == ()
        store.append_messages("s", [msg("4"), msg("5")])
        delta = store.read_window("s", since=full.record.head)
        assert delta is not None and not delta.full
        assert [m.content for m in delta.messages] == ["4", "5"] and delta.record.last_seq == 6
        store.commit_archive("s", archive("s", 3, 3), [stored[2].id])
        moved = store.read_window("s", since=delta.record.head)
        assert moved is not None and moved.full
        assert [m.content for m in moved.messages] == ["3", "4", "5"]
        store.delete_session("s")
        store.append("s", [msg("new")], create_as=ALICE)
        recreated = store.read_window("s", since=moved.record.head)
        assert recreated is not None and recreated.full and [m.content for m in recreated.messages] == ["new"]
        assert store.read_window("missing") is None

    def test_replace_messages_is_one_transaction(self, store: SessionStore) -> None:
        stored = store.append("s", [msg("old 1"), msg("old 2")], create_as=ALICE).messages
        store.commit_archive("s", archive("s", 1, 1), [stored[0].id])
        before = store.head("s")
        result = store.replace_messages("s", [msg("new 1"), msg("new 2")], owner=ALICE.owner)
        assert [m.content for m in store.list_messages("s")] == ["new 1", "new 2"]
        assert [m.seq for m in result.messages] == [3, 4]  # seqs never reused
        assert store.list_archives("s") == []
        assert before is not None and result.record.archive_version != before.archive_version
        empty = store.replace_messages("s", [])
        assert empty.added == 0 and store.list_messages("s") == []
        fresh = store.replace_messages("t", [msg("t1")], create_as=BOB)
        assert fresh.created and fresh.record.owner == BOB.owner

    def test_commit_with_a_stale_epoch_changes_nothing(self, store: SessionStore) -> None:
        old = store.append("s", [msg("a")], create_as=ALICE)
        store.delete_session("s")
        new = store.append("s", [msg("b")], create_as=ALICE)
        with pytest.raises(ConcurrencyError):
            store.commit_archive("s", archive("s", 1, 1), [new.messages[0].id], epoch=old.record.epoch)
        assert [m.status for m in store.list_messages("s")] == ["active"]
        store.commit_archive("s", archive("s", 1, 1), [new.messages[0].id], epoch=new.record.epoch)
        assert [m.status for m in store.list_messages("s")] == ["archived"]

    def test_archive_ids_are_scoped_per_session(self, store: SessionStore) -> None:
        a = store.append("a", [msg("x")], create_as=ALICE).messages
        b = store.append("b", [msg("y")], create_as=BOB).messages
        store.commit_archive("a", archive("a", 1, 1, archive_id="same"), [a[0].id])
        store.commit_archive("b", archive("b", 1, 1, archive_id="same"), [b[0].id])
        assert store.read_archive("b", "same") is not None

    def test_list_messages_filters(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg(str(i)) for i in range(6)])
        store.commit_archive("s", archive("s", 1, 2), [m.id for m in stored[:2]])
        assert [m.content for m in store.list_messages("s", status="active")] == ["2", "3", "4", "5"]
        assert [m.content for m in store.list_messages("s", status="archived")] == ["0", "1"]
        assert [m.content for m in store.list_messages("s", after_seq=4)] == ["4", "5"]
        assert [m.content for m in store.list_messages("s", limit=2)] == ["0", "1"]
        assert store.list_messages("missing") == []
        assert store.head("missing") is None

    # -- archives ----------------------------------------------------------------

    def test_commit_archive_flips_exactly_those_messages(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg(str(i)) for i in range(4)])
        head0 = store.head("s")
        store.commit_archive("s", archive("s", 1, 2, "a1", token_count=7), [m.id for m in stored[:2]])
        listed = store.list_messages("s")
        assert [(m.status, m.archive_id) for m in listed] == [
            ("archived", "a1"),
            ("archived", "a1"),
            ("active", None),
            ("active", None),
        ]
        head1 = store.head("s")
        assert head0 is not None and head1 is not None and head1.archive_version > head0.archive_version
        record = store.get_session_record("s")
        assert record is not None and record.commit_count == 1 and record.last_commit_at is not None
        full = store.read_archive("s", "a1")
        assert full is not None and [m.content for m in full.messages] == ["0", "1"]
        assert full.token_count == 7 and full.first_seq == 1 and full.last_seq == 2

    def test_stale_archive_changes_nothing(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg(str(i)) for i in range(3)])
        store.commit_archive("s", archive("s", 1, 1, "a1"), [stored[0].id])
        with pytest.raises(ConcurrencyError):
            store.commit_archive("s", archive("s", 1, 2, "a2"), [stored[0].id, stored[1].id])
        assert [m.status for m in store.list_messages("s")] == ["archived", "active", "active"]
        assert [a.archive_id for a in store.list_archives("s")] == ["a1"]
        record = store.get_session_record("s")
        assert record is not None and record.commit_count == 1

    def test_racing_commits_one_wins(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg(str(i)) for i in range(10)])
        ids = [m.id for m in stored]
        results: list[str] = []
        barrier = threading.Barrier(4)

        def attempt(n: int) -> None:
            barrier.wait()
            try:
                store.commit_archive("s", archive("s", 1, 10, f"race{n}"), ids)
                results.append("won")
            except ConcurrencyError:
                results.append("lost")

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["lost", "lost", "lost", "won"]
        assert len(store.list_archives("s")) == 1
        assert {m.archive_id for m in store.list_messages("s")} == {store.list_archives("s")[0].archive_id}

    def test_list_archives_newest_first_without_merged(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg(str(i)) for i in range(6)])
        for k in range(3):
            store.commit_archive(
                "s", archive("s", 2 * k + 1, 2 * k + 2, f"a{k}"), [m.id for m in stored[2 * k : 2 * k + 2]]
            )
        assert [a.archive_id for a in store.list_archives("s")] == ["a2", "a1", "a0"]
        assert [a.archive_id for a in store.list_archives("s", limit=1)] == ["a2"]
        assert all(a.messages == () for a in store.list_archives("s"))
        merged = archive("s", 1, 4, "m01", metadata={"kind": "merged", "merged_from": ["a0", "a1"]})
        store.merge_archives("s", merged, ["a0", "a1"])
        assert [a.archive_id for a in store.list_archives("s")] == ["a2", "m01"]
        everything = {a.archive_id: a.merged_into for a in store.list_archives("s", include_merged=True)}
        assert everything == {"a2": "", "m01": "", "a0": "m01", "a1": "m01"}
        full = store.read_archive("s", "m01")
        assert full is not None and [m.content for m in full.messages] == ["0", "1", "2", "3"]
        assert full.metadata["merged_from"] == ["a0", "a1"]
        # raw turns are never deleted by archiving or merging
        assert [m.content for m in store.list_messages("s")] == [str(i) for i in range(6)]

    def test_merge_of_already_merged_source_changes_nothing(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg(str(i)) for i in range(3)])
        for k in range(3):
            store.commit_archive("s", archive("s", k + 1, k + 1, f"a{k}"), [stored[k].id])
        store.merge_archives("s", archive("s", 1, 2, "m1"), ["a0", "a1"])
        with pytest.raises(ConcurrencyError):
            store.merge_archives("s", archive("s", 2, 3, "m2"), ["a1", "a2"])
        assert store.read_archive("s", "m2") is None
        assert [a.archive_id for a in store.list_archives("s")] == ["a2", "m1"]

    def test_mark_unmark_delete_archive(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages("s", [msg("x"), msg("y")])
        store.commit_archive("s", archive("s", 1, 1, "a0"), [stored[0].id])
        assert store.mark_archive_merged("s", "a0", "m") is True
        assert store.mark_archive_merged("s", "a0", "m") is True  # idempotent
        assert store.mark_archive_merged("s", "a0", "other") is False
        assert store.list_archives("s") == []
        assert store.unmark_archive_merged("s", "a0", "other") is False
        assert store.unmark_archive_merged("s", "a0", "m") is True
        assert [a.archive_id for a in store.list_archives("s")] == ["a0"]
        assert store.mark_archive_merged("s", "missing", "m") is False
        assert store.delete_archive("s", "a0") is True
        assert store.delete_archive("s", "a0") is False
        assert [m.content for m in store.list_messages("s")] == ["x", "y"]

    def test_read_missing_archive(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        assert store.read_archive("s", "nope") is None
        assert store.read_archive("missing", "nope") is None

    # -- state -------------------------------------------------------------------

    def test_state_roundtrip(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        assert store.load_state("s") is None
        payload = {"version": 1, "task_state": {"objective": "Ünïcode ✓"}, "list": [1, 2], "none": None}
        store.save_state("s", payload)
        assert store.load_state("s") == payload
        store.save_state("s", {"version": 2})
        assert store.load_state("s") == {"version": 2}
        with pytest.raises(SessionNotFoundError):
            store.save_state("missing", {"x": 1})

    # -- search ------------------------------------------------------------------

    def test_search_ranks_archived_matches(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)
        stored = store.append_messages(
            "s",
            [
                msg("My sister Maria lives in Lisbon"),
                msg("The weather is nice today"),
                msg("Maria adopted a cat named Pixel in Lisbon"),
                msg("Lisbon again but still active"),
            ],
        )
        store.commit_archive("s", archive("s", 1, 3), [m.id for m in stored[:3]])
        found = store.search_messages("Where does Maria live? Lisbon?", session_id="s")
        assert {m.content for m in found} == {
            "My sister Maria lives in Lisbon",
            "Maria adopted a cat named Pixel in Lisbon",
        }
        assert all(m.status == "archived" for m in found)
        both = store.search_messages("Lisbon", session_id="s", status=None)
        assert len(both) == 3
        assert store.search_messages("Lisbon", session_id="s", limit=1, status=None)[0].content in {
            m.content for m in both
        }
        assert store.search_messages("the and of", session_id="s") == []  # only stop-words
        assert store.search_messages('"; DROP TABLE x; -- OR NEAR(', session_id="s") == []

    def test_search_enforces_owner(self, store: SessionStore) -> None:
        store.bind_session("a", ALICE)
        store.bind_session("b", BOB)
        store.append_messages("a", [msg("alice secret pineapple")])
        store.append_messages("b", [msg("bob secret pineapple")])
        with pytest.raises(AccessDeniedError):
            store.search_messages("pineapple", session_id="a", owner=BOB.owner, status=None)
        mine = store.search_messages("pineapple", owner=BOB.owner, status=None)
        assert [m.content for m in mine] == ["bob secret pineapple"]
        with pytest.raises(InvalidInputError):
            store.search_messages("pineapple")

    def test_owner_search_names_each_result_session(self, store: SessionStore) -> None:
        for sid in ("a1", "a2"):
            store.bind_session(sid, ALICE)
            stored = store.append_messages(sid, [msg(f"pineapple in {sid}"), msg("filler")])
            store.commit_archive(sid, archive(sid, 1, 2), [m.id for m in stored])
        store.bind_session("b1", BOB)
        store.append_messages("b1", [msg("pineapple of bob")])
        found = store.search_messages("pineapple", owner=ALICE.owner, status=None)
        assert sorted((m.session_id, m.content) for m in found) == [
            ("a1", "pineapple in a1"),
            ("a2", "pineapple in a2"),
        ]
        in_one = store.search_messages("pineapple", session_id="a2", owner=ALICE.owner)
        assert [(m.session_id, m.content) for m in in_one] == [("a2", "pineapple in a2")]

    def test_list_recent_archives_newest_session_first_one_each(self, store: SessionStore) -> None:
        for sid in ("old", "mid", "new"):
            store.bind_session(sid, ALICE)
            stored = store.append_messages(sid, [msg(f"{sid} one"), msg(f"{sid} two")])
            store.commit_archive(sid, archive(sid, 1, 1, archive_id=f"{sid}-a"), [stored[0].id])
            store.commit_archive(sid, archive(sid, 2, 2, archive_id=f"{sid}-b"), [stored[1].id])
        store.bind_session("bob", BOB)
        stored = store.append_messages("bob", [msg("bob one")])
        store.commit_archive("bob", archive("bob", 1, 1), [stored[0].id])
        recent = store.list_recent_archives(ALICE.owner, session_limit=2, exclude_session="new")
        assert [(a.session_id, a.archive_id) for a in recent] == [("mid", "mid-b"), ("old", "old-b")]
        everything = store.list_recent_archives(ALICE.owner, session_limit=10)
        assert [a.session_id for a in everything] == ["new", "mid", "old"]
        assert store.list_recent_archives(ALICE.owner, session_limit=0) == []
        assert store.list_recent_archives(("acme", "nobody"), session_limit=5) == []

    # -- async twins -------------------------------------------------------------

    async def test_async_twins(self, store: SessionStore) -> None:
        await store.abind_session("s", ALICE)
        stored = await store.aappend_messages("s", [msg("async one"), msg("async two")])
        assert [m.seq for m in stored] == [1, 2]
        assert [m.content for m in await store.alist_messages("s")] == ["async one", "async two"]
        head = await store.ahead("s")
        assert head is not None and head.last_seq == 2
        assert await store.alist_archives("s") == []
        assert await store.asearch_messages("async", session_id="s", status=None)

    # -- concurrency -------------------------------------------------------------

    def test_concurrent_appends_get_unique_ordered_seqs(self, store: SessionStore) -> None:
        store.bind_session("s", ALICE)

        def writer(n: int) -> None:
            for i in range(50):
                store.append_messages("s", [msg(f"{n}:{i}")])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        listed = store.list_messages("s")
        assert [m.seq for m in listed] == list(range(1, 201))
        for n in range(4):
            mine = [int(m.content.split(":")[1]) for m in listed if m.content.startswith(f"{n}:")]
            assert mine == list(range(50))
