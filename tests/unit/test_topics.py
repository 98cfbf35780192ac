"""SessionTopicBuffer and SlotContent (SEED_SPEC 1.8)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime

import pytest

from ogmem_memory.topics import (
    ARCHIVE_HISTORY_SLOT,
    IDENTITY_SLOT,
    SKILLS_SUMMARY_SLOT,
    SessionTopicBuffer,
    SlotContent,
)


def test_stable_slot_names() -> None:
    assert (IDENTITY_SLOT, SKILLS_SUMMARY_SLOT, ARCHIVE_HISTORY_SLOT) == (
        "identity",
        "skills_summary",
        "archive_history",
    )


def test_slot_content_defaults_and_is_frozen() -> None:
    slot = SlotContent("text")
    assert (slot.uris, slot.tokens) == ((), 0)
    assert datetime.fromisoformat(slot.cached_at).utcoffset() is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        slot.content = "other"  # type: ignore[misc]


def test_session_id_property() -> None:
    assert SessionTopicBuffer("s1").session_id == "s1"


def test_slots_set_get_and_names() -> None:
    buf = SessionTopicBuffer("s")
    assert buf.get_cached_slot(IDENTITY_SLOT) is None
    identity = SlotContent("I am", uris=("ctx://a/identity",), tokens=2)
    buf.set_cached_slot(IDENTITY_SLOT, identity)
    buf.set_cached_slot(ARCHIVE_HISTORY_SLOT, SlotContent("history"))
    assert buf.get_cached_slot(IDENTITY_SLOT) == identity
    assert buf.get_slot_names() == [IDENTITY_SLOT, ARCHIVE_HISTORY_SLOT]
    replacement = SlotContent("new")
    buf.set_cached_slot(IDENTITY_SLOT, replacement)
    assert buf.get_cached_slot(IDENTITY_SLOT) is replacement
    assert buf.get_slot_names() == [IDENTITY_SLOT, ARCHIVE_HISTORY_SLOT]


def test_invalidate_drops_one_slot_and_is_a_noop_when_absent() -> None:
    buf = SessionTopicBuffer("s")
    buf.set_cached_slot(IDENTITY_SLOT, SlotContent("a"))
    buf.set_cached_slot(ARCHIVE_HISTORY_SLOT, SlotContent("b"))
    buf.invalidate(ARCHIVE_HISTORY_SLOT)
    buf.invalidate(ARCHIVE_HISTORY_SLOT)
    buf.invalidate("never-set")
    assert buf.get_slot_names() == [IDENTITY_SLOT]


def test_clear_all_slots() -> None:
    buf = SessionTopicBuffer("s")
    buf.set_cached_slot(IDENTITY_SLOT, SlotContent("a"))
    buf.set_cached_slot(SKILLS_SUMMARY_SLOT, SlotContent("b"))
    buf.clear_all_slots()
    assert buf.get_slot_names() == []
    assert buf.get_cached_slot(IDENTITY_SLOT) is None


def test_slot_names_list_is_a_copy() -> None:
    buf = SessionTopicBuffer("s")
    buf.set_cached_slot(IDENTITY_SLOT, SlotContent("a"))
    buf.get_slot_names().clear()
    assert buf.get_slot_names() == [IDENTITY_SLOT]


def test_pending_injection_set_get_clear_with_copy_semantics() -> None:
    buf = SessionTopicBuffer("s")
    assert buf.get_pending_injection() is None
    hits: list[object] = [{"uri": "ctx://a/m/1"}, {"uri": "ctx://a/m/2"}]
    buf.set_pending_injection(hits)
    hits.append("late")
    got = buf.get_pending_injection()
    assert got == [{"uri": "ctx://a/m/1"}, {"uri": "ctx://a/m/2"}]
    assert got is not None
    got.clear()
    assert len(buf.get_pending_injection() or []) == 2
    buf.clear_pending_injection()
    assert buf.get_pending_injection() is None
    buf.set_pending_injection([])
    assert buf.get_pending_injection() == []
    buf.set_pending_injection(None)
    assert buf.get_pending_injection() is None


def test_injection_tracking() -> None:
    buf = SessionTopicBuffer("s")
    assert not buf.was_injected("ctx://a/m/1")
    buf.mark_injected(["ctx://a/m/1", "ctx://a/m/2"])
    buf.mark_injected(iter(["ctx://a/m/3"]))
    assert all(buf.was_injected(f"ctx://a/m/{i}") for i in (1, 2, 3))
    assert not buf.was_injected("ctx://a/m/4")
    buf.clear_injected_tracking()
    assert not buf.was_injected("ctx://a/m/1")


def test_mark_injected_with_a_bare_string_marks_the_whole_uri() -> None:
    buf = SessionTopicBuffer("s")
    buf.mark_injected("ctx://a/m/1")
    assert buf.was_injected("ctx://a/m/1")
    assert not buf.was_injected("c")


def test_injection_tracking_is_independent_of_slots() -> None:
    buf = SessionTopicBuffer("s")
    buf.mark_injected(["u"])
    buf.set_cached_slot(IDENTITY_SLOT, SlotContent("a"))
    buf.clear_all_slots()
    assert buf.was_injected("u")
    buf.clear_injected_tracking()
    buf.set_cached_slot(IDENTITY_SLOT, SlotContent("a"))
    assert buf.get_slot_names() == [IDENTITY_SLOT]


def test_concurrent_marks_and_slot_writes_are_all_kept() -> None:
    buf = SessionTopicBuffer("s")

    def work(n: int) -> None:
        for i in range(500):
            buf.mark_injected([f"u{n}-{i}"])
            buf.set_cached_slot(f"slot{n}-{i % 10}", SlotContent(str(i)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(buf.was_injected(f"u{n}-{i}") for n in range(8) for i in range(500))
    assert len(buf.get_slot_names()) == 80
