"""The commit path's fast paths give what the plain definitions give (issue 9)."""

from __future__ import annotations

import random
import re
import string

from ogmem_memory.compress.base import bullet_key, merge_sections


def _reference_key(text: str) -> str:
    return re.sub(r"[\s\W_]+", " ", text.casefold()).strip()


def test_bullet_key_is_the_pattern_on_ascii_and_on_any_other_text() -> None:
    rnd = random.Random(7)
    alphabet = string.printable + "_\x0b\x0c\x1c\x1f\x7f"
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60))) for _ in range(3000)]
    texts += [
        "User: moved to Porto (12 March)!",
        "__init__ and  snake_case",
        "",
        "   ",
        "ÉCOLE straße_İı",
        "a\tb\nc",
    ]
    for text in texts:
        assert bullet_key(text) == _reference_key(text), repr(text)


def test_merge_sections_drops_near_duplicates_of_either_length() -> None:
    first = {"Facts": ["User lives in Lisbon near the river", "The invoice is INV-7"]}
    second = {
        "facts": [
            "user lives in Lisbon near the river!",  # exact after the key
            "User lives in Lisbon near the river today",  # contains an earlier one, within 1.25x
            "lives in Lisbon near the river",  # inside an earlier one, within 0.8x
            "Lisbon",  # inside, but far shorter: kept
            "The budget is 1299 EUR",
        ]
    }
    assert merge_sections([first, second]) == {
        "Facts": [
            "User lives in Lisbon near the river",
            "The invoice is INV-7",
            "Lisbon",
            "The budget is 1299 EUR",
        ]
    }


def test_compact_overview_leaves_out_empty_sections_only() -> None:
    from ogmem_memory.compress.base import compact_overview

    overview = "## Topics\n- Ines\n\n## Facts\n- user: Ines arrives on the 14th\n\n## Decisions\n- None\n\n## Open loops\n- None"
    assert compact_overview(overview) == "## Topics\n- Ines\n\n## Facts\n- user: Ines arrives on the 14th"
    assert compact_overview("## Facts\n- None\n\n## Decisions\n- None") == ""
    assert compact_overview("not sectioned - None") == "not sectioned - None"
