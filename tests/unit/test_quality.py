"""CompressionQualityEvaluator: known inputs give known metrics; nothing ever raises."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from ogmem_memory.compress import CompressionQualityEvaluator, ExtractiveCompressor, TemplateCompressor
from ogmem_memory.compress.extractive import find_identifiers
from ogmem_memory.compress.quality import _Haystack

MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "My invoice INV-2024-0042 for $1,249.99 is due 2024-07-01.", "id": "1"},
    {"role": "assistant", "content": "Noted, I will remind you about the invoice.", "id": "2"},
    {"role": "user", "content": "Also the config lives in /etc/billing/app.yaml on server db01.", "id": "3"},
]
GOOD = (
    "## Topics\n- invoice\n- config\n\n"
    "## Facts\n- user: My invoice INV-2024-0042 for $1,249.99 is due 2024-07-01.\n"
    "- user: Also the config lives in /etc/billing/app.yaml on server db01.\n\n"
    "## Decisions\n- None\n\n## Open loops\n- remind about the invoice"
)


def evaluate(overview: str, abstract: str = "Invoice due and billing config") -> dict[str, Any]:
    return CompressionQualityEvaluator().evaluate(MESSAGES, overview, abstract)


def test_identifiers_kept_give_full_retention() -> None:
    metrics = evaluate(GOOD)
    assert metrics["identifier_count"] == 4
    assert metrics["identifier_retention"] == 1.0
    assert metrics["missing_identifiers"] == []
    assert metrics["section_coverage"] == 1.0
    assert metrics["user_turn_coverage"] == 1.0
    assert metrics["keyword_recall"] > 0.5
    assert metrics["empty_output"] is False and metrics["fallback_suspected"] is False
    assert 0.8 <= metrics["score"] <= 1.0 and metrics["acceptable"]
    assert metrics["warnings"] == []


def test_dropped_identifiers_lower_retention_and_score() -> None:
    lossy = GOOD.replace("$1,249.99", "a large sum").replace("/etc/billing/app.yaml", "a file")
    good, bad = evaluate(GOOD), evaluate(lossy)
    assert bad["identifier_retention"] == 0.5
    assert bad["missing_identifiers"] == ["$1,249.99", "/etc/billing/app.yaml"]
    assert bad["score"] < good["score"]


def test_identifier_must_match_whole_not_inside_a_longer_number() -> None:
    overview = GOOD.replace("$1,249.99", "$1,249.995")
    assert "$1,249.99" in evaluate(overview)["missing_identifiers"]


def test_missing_sections_are_reported() -> None:
    metrics = evaluate("## Facts\n- INV-2024-0042 $1,249.99 2024-07-01 /etc/billing/app.yaml db01")
    assert metrics["section_coverage"] == 0.25
    assert metrics["missing_sections"] == ["Topics", "Decisions", "Open loops"]
    assert "missing sections: Topics, Decisions, Open loops" in metrics["warnings"]


def test_sizes_and_ratio() -> None:
    metrics = evaluate(GOOD, "x" * 120)
    assert metrics["input_tokens"] > 0 and metrics["overview_tokens"] > 0
    assert metrics["compression_ratio"] == round(metrics["overview_tokens"] / metrics["input_tokens"], 4)
    assert metrics["abstract_chars"] == 120 and metrics["abstract_within_limit"] is False
    assert any("abstract longer" in w for w in metrics["warnings"])


def test_template_fallback_is_suspected() -> None:
    overview, abstract = TemplateCompressor().compress(MESSAGES)
    metrics = evaluate(overview, abstract)
    assert metrics["fallback_suspected"] is True
    assert metrics["missing_identifiers"] == ["/etc/billing/app.yaml"]  # only the opening is quoted
    assert metrics["section_coverage"] == 0.0
    assert "overview looks like the no-LLM fallback template" in metrics["warnings"]


def test_extractive_output_scores_well_on_its_own_input() -> None:
    overview, abstract = ExtractiveCompressor().compress(MESSAGES)
    metrics = evaluate(overview, abstract)
    assert metrics["identifier_retention"] == 1.0 and metrics["section_coverage"] == 1.0


def test_empty_output_scores_zero() -> None:
    metrics = evaluate("", "")
    assert metrics["empty_output"] is True and metrics["score"] == 0.0 and not metrics["acceptable"]
    assert "empty overview" in metrics["warnings"]


@pytest.mark.parametrize(
    ("messages", "input_tokens"),
    [
        ([], 0),
        ([{}], 0),
        ([{"role": 1, "content": None}], 0),
        (["junk"], 2),  # a bare string is read as content: ": junk"
        ([{"role": "user", "content": ["abcd", {"x": 1}]}], 3),  # "user: abcd"
    ],
)
def test_empty_and_malformed_input_never_raise_and_serialise(messages: list[Any], input_tokens: int) -> None:
    metrics = CompressionQualityEvaluator().evaluate(messages, "", "")
    json.dumps(metrics)
    assert metrics["input_tokens"] == input_tokens
    assert metrics["compression_ratio"] == 0.0 and metrics["score"] == 0.0


def test_evaluation_is_deterministic() -> None:
    assert evaluate(GOOD) == evaluate(GOOD)


def test_custom_expected_sections() -> None:
    evaluator = CompressionQualityEvaluator(expected_sections=("Main Topics", "Action Items"))
    metrics = evaluator.evaluate(MESSAGES, "## Main Topics\n- billing", "a")
    assert metrics["section_coverage"] == 0.5 and metrics["missing_sections"] == ["Action Items"]


def _present_reference(term: str, text: str) -> bool:
    """The evaluator's former scan (one full pass per term), kept as the oracle of its index."""
    needle, hay = term.casefold(), text.casefold()
    start = hay.find(needle)
    while start != -1:
        end = start + len(needle)
        before = hay[start - 1] if start else " "
        after = hay[end] if end < len(hay) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        start = hay.find(needle, start + 1)
    return False


def test_indexed_overview_matches_the_full_scan_on_every_term() -> None:
    """The per-overview word index answers exactly as the former per-term scan did."""
    rng = random.Random(7)
    pieces = ("ab", "Ab", "b", "12", "1", "_", "-", ".", ",", "$", "/", "ß", "SS", "İ", "é", "x9", " ", "\n")
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        hay = _Haystack(text)
        terms = {"".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(20)}
        cuts = [sorted(rng.sample(range(len(text) + 1), 2)) for _ in range(5)]
        terms |= {text[i:j] for i, j in cuts}
        for term in terms:
            assert (term in hay) == _present_reference(term, text), (term, text)


def test_evaluate_on_a_long_verbatim_overview_finds_everything() -> None:
    """A compressor that returns its whole input: the case that was quadratic (terms x text)."""
    messages = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"Ticket T-{i:04d} for Dana costs ${i}.50 on 2024-03-{i % 28 + 1:02d}.",
        }
        for i in range(300)
    ]
    overview = "\n".join(m["content"] for m in messages)
    metrics = CompressionQualityEvaluator().evaluate(messages, overview, "tickets")
    assert metrics["identifier_retention"] == 1.0 and metrics["missing_identifiers"] == []
    assert metrics["user_turn_coverage"] == 1.0 and metrics["keyword_recall"] == 1.0
    assert metrics["identifier_count"] == len(
        {i for m in messages for i in find_identifiers(m["content"]) if len(i) > 1}
    )
