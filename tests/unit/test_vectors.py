"""Vector helpers: float32 blobs, normalisation, exact cosine top-k, reciprocal rank fusion."""

from __future__ import annotations

import math
import random
import struct
import sys

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ogmem_memory import vectors
from ogmem_memory.errors import InvalidInputError, OgmemError, StoreError
from ogmem_memory.vectors import (
    MAX_EXACT_CANDIDATES,
    as_finite_vector,
    cosine_top_k,
    dims_of,
    l2_normalize,
    pack,
    rrf,
    rrf_scores,
    unpack,
)

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


def random_vectors(count: int, dims: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0.0, 1.0) for _ in range(dims)] for _ in range(count)]


def brute_force(query: list[float], blobs: list[bytes], k: int) -> list[tuple[int, float]]:
    """The definition, written independently: exact cosine in float64, ties by position."""
    scored = []
    q_norm = math.sqrt(math.fsum(x * x for x in query))
    for index, blob in enumerate(blobs):
        vector = list(struct.unpack(f"<{len(blob) // 4}f", blob))
        norm = math.sqrt(math.fsum(x * x for x in vector))
        dot = math.fsum(a * b for a, b in zip(query, vector, strict=True))
        scored.append((dot / (q_norm * norm) if q_norm and norm else 0.0, index))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [(index, score) for score, index in scored[:k]]


# -- pack / unpack -----------------------------------------------------------------------------


def test_pack_is_little_endian_float32() -> None:
    assert pack([1.0, -2.0]) == struct.pack("<2f", 1.0, -2.0)
    assert len(pack([0.5] * 256)) == 1024
    assert dims_of(pack([0.5] * 256)) == 256


@given(st.lists(float32s, min_size=1, max_size=64))
def test_pack_unpack_round_trip_is_exact_for_float32_values(values: list[float]) -> None:
    assert unpack(pack(values)) == values


@given(st.lists(st.floats(-1e30, 1e30), min_size=1, max_size=32))
def test_pack_rounds_float64_to_float32(values: list[float]) -> None:
    assert unpack(pack(values)) == list(
        struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))
    )


def test_pack_accepts_numpy_arrays_and_tuples() -> None:
    array = numpy.array([0.25, 0.5, 0.75], dtype=numpy.float32)
    assert pack(array) == pack([0.25, 0.5, 0.75]) == pack((0.25, 0.5, 0.75))
    assert unpack(memoryview(pack(array))) == [0.25, 0.5, 0.75]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [math.nan],
        [1.0, math.inf],
        [-math.inf],
        [1e39],
        ["1.0"],
        [True, 0.0],
        "abc",
        b"abcd",
        None,
        [[1.0]],
    ],
)
def test_pack_rejects_what_is_not_a_finite_float32_vector(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        pack(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("blob", [b"", b"abc", b"abcde"])
def test_unpack_rejects_a_corrupt_blob(blob: bytes) -> None:
    with pytest.raises(StoreError, match="multiple of 4"):
        unpack(blob)


def test_as_finite_vector_accepts_huge_finite_values_whose_sum_overflows() -> None:
    assert as_finite_vector([1e308, 1e308]) == [1e308, 1e308]
    with pytest.raises(InvalidInputError, match="non-finite"):
        as_finite_vector([1e308, math.inf, -math.inf])


def test_as_finite_vector_names_what_it_checked() -> None:
    assert as_finite_vector(numpy.array([1, 2])) == [1.0, 2.0]
    with pytest.raises(InvalidInputError, match="query vector holds a non-finite"):
        as_finite_vector([0.0, math.nan], "query vector")


# -- normalisation -----------------------------------------------------------------------------


@given(st.lists(st.floats(-1e300, 1e300), min_size=1, max_size=32).filter(lambda v: any(v)))
def test_l2_normalize_gives_unit_length_without_overflow(values: list[float]) -> None:
    unit = l2_normalize(values)
    assert math.sqrt(math.fsum(x * x for x in unit)) == pytest.approx(1.0, rel=1e-9)
    # direction is kept: no component changes sign (tiny ones may underflow to zero)
    assert all((a > 0) == (b > 0) for a, b in zip(values, unit, strict=True) if b)


def test_l2_normalize_keeps_the_zero_vector_zero() -> None:
    assert l2_normalize([0.0, 0.0, 0.0]) == [0.0, 0.0, 0.0]
    with pytest.raises(InvalidInputError):
        l2_normalize([])


# -- exact cosine top-k ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["numpy", "python"])
@pytest.mark.parametrize(("count", "k"), [(1, 1), (50, 5), (200, 200), (300, 1000), (5000, 10)])
def test_top_k_equals_brute_force(path: str, count: int, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "python":
        monkeypatch.setitem(sys.modules, "numpy", None)  # numpy not installed
    # 5,000 candidates span two numpy chunks of 4,096 rows
    dims = 24
    blobs = [pack(v) for v in random_vectors(count, dims, seed=count)]
    query = random_vectors(1, dims, seed=count + 1)[0]
    got = cosine_top_k(query, [(f"id{i}", b) for i, b in enumerate(blobs)], k)
    expected = brute_force(query, blobs, k)
    assert [key for key, _ in got] == [f"id{i}" for i, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], rel=1e-9, abs=1e-12)


def test_numpy_and_python_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = [(i, pack(v)) for i, v in enumerate(random_vectors(500, 16, seed=7))]
    query = random_vectors(1, 16, seed=8)[0]
    with_numpy = cosine_top_k(query, blobs, 20)
    monkeypatch.setitem(sys.modules, "numpy", None)
    assert vectors._load_numpy() is None
    assert [key for key, _ in cosine_top_k(query, blobs, 20)] == [key for key, _ in with_numpy]


@pytest.mark.parametrize("path", ["numpy", "python"])
def test_ties_keep_the_candidates_order(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "python":
        monkeypatch.setitem(sys.modules, "numpy", None)
    same = pack([1.0, 0.0])
    candidates = [("c", same), ("far", pack([0.0, 1.0])), ("a", same), ("b", pack([2.0, 0.0]))]
    # "b" is parallel to the query too (cosine ignores length): three-way tie, kept in input order
    assert [key for key, _ in cosine_top_k([3.0, 0.0], candidates, 3)] == ["c", "a", "b"]
    assert [key for key, _ in cosine_top_k([3.0, 0.0], candidates, 2)] == ["c", "a"]


@pytest.mark.parametrize("path", ["numpy", "python"])
def test_other_dimensions_and_corrupt_rows_are_skipped(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "python":
        monkeypatch.setitem(sys.modules, "numpy", None)
    nan_blob = struct.pack("<2f", math.nan, 1.0)
    candidates = [
        ("old-model", pack([1.0, 0.0, 0.0])),
        ("corrupt", nan_blob),
        ("zero", pack([0.0, 0.0])),
        ("good", pack([1.0, 1.0])),
    ]
    got = cosine_top_k([1.0, 0.0], candidates, 10)
    assert [key for key, _ in got] == ["good", "zero"]
    assert got[0][1] == pytest.approx(math.sqrt(0.5))
    assert got[1][1] == 0.0
    assert cosine_top_k([1.0, 0.0, 0.0, 0.0], candidates, 10) == []


def test_zero_query_scores_zero_and_k_zero_returns_nothing() -> None:
    candidates = [("a", pack([1.0, 0.0])), ("b", pack([0.0, 1.0]))]
    assert cosine_top_k([0.0, 0.0], candidates, 2) == [("a", 0.0), ("b", 0.0)]
    assert cosine_top_k([1.0, 0.0], candidates, 0) == []
    assert cosine_top_k([1.0, 0.0], iter([]), 5) == []


def test_top_k_takes_any_iterable_and_memoryviews() -> None:
    gen = ((i, memoryview(pack(v))) for i, v in enumerate(random_vectors(30, 8, seed=3)))
    assert len(cosine_top_k(random_vectors(1, 8, seed=4)[0], gen, 7)) == 7


@pytest.mark.parametrize("k", [-1, 1.5, True, "3", None])
def test_top_k_rejects_a_bad_k(k: object) -> None:
    with pytest.raises(InvalidInputError, match="k must be"):
        cosine_top_k([1.0], [("a", pack([1.0]))], k)  # type: ignore[arg-type]


@pytest.mark.parametrize("query", [[], [math.nan], "ab"])
def test_top_k_rejects_a_bad_query(query: object) -> None:
    with pytest.raises(InvalidInputError):
        cosine_top_k(query, [("a", pack([1.0]))], 1)  # type: ignore[arg-type]


def test_the_stated_bound_is_a_number_stores_can_use() -> None:
    assert MAX_EXACT_CANDIDATES == 50_000


# -- reciprocal rank fusion --------------------------------------------------------------------


def test_rrf_scores_follow_the_formula() -> None:
    fused = dict(rrf_scores([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert rrf([["a", "b", "c"], ["c", "a"]]) == ["a", "c", "b"]


def test_rrf_agreement_beats_one_first_place() -> None:
    lexical = ["lex-only", "both"]
    semantic = ["vec-only", "both"]
    assert rrf([lexical, semantic])[0] == "both"


@pytest.mark.parametrize("k", [2, 5, 60])
def test_rrf_equal_scores_are_exactly_equal_and_break_by_first_appearance(k: int) -> None:
    # a, b and c each take ranks 1, 2 and 3 once, in different lists. Summed naively in list
    # order, a's float at k=2 and k=5 comes out one ulp from b's and c's, so rounding would
    # decide; exact sums make them equal and the tie-break (first appearance) decides.
    rankings = [["a", "c", "b"], ["b", "a", "c"], ["c", "b", "a"]]
    fused = dict(rrf_scores(rankings, k))
    assert fused["a"] == fused["b"] == fused["c"]
    assert rrf(rankings, k) == ["a", "c", "b"]


def test_rrf_equal_scores_break_by_best_rank_before_appearance() -> None:
    # k=0: x = 1/1, q = 1/2 + 1/2, r = 1/1. q appears before r, but r reached rank 1.
    rankings = [["x", "q"], ["r", "q"]]
    assert dict(rrf_scores(rankings, k=0)) == {"x": 1.0, "q": 1.0, "r": 1.0}
    assert rrf(rankings, k=0) == ["x", "r", "q"]


def test_rrf_counts_a_repeated_key_once_per_ranking() -> None:
    assert dict(rrf_scores([["a", "a", "b"]], k=0)) == {"a": 1.0, "b": 1 / 3}


def test_rrf_weights_scale_and_zero_drops_a_ranking() -> None:
    lexical, semantic = ["l1", "l2"], ["s1", "s2"]
    assert rrf([lexical, semantic]) == ["l1", "s1", "l2", "s2"]
    assert rrf([lexical, semantic], weights=[1.0, 2.0]) == ["s1", "s2", "l1", "l2"]
    assert rrf([lexical, semantic], weights=[1.0, 0.0]) == ["l1", "l2"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": -1}, "k must be"),
        ({"k": 2.5}, "k must be"),
        ({"weights": [1.0]}, "1 weights for 2 rankings"),
        ({"weights": [1.0, -1.0]}, "non-negative"),
        ({"weights": [1.0, math.nan]}, "non-negative finite"),
        ({"weights": [1.0, "2"]}, "non-negative finite"),
    ],
)
def test_rrf_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        rrf([["a"], ["b"]], **kwargs)  # type: ignore[arg-type]


rankings_strategy = st.lists(st.lists(st.integers(0, 30), max_size=20), max_size=4)


@given(rankings_strategy)
def test_rrf_returns_each_key_once(rankings: list[list[int]]) -> None:
    fused = rrf(rankings)
    assert len(fused) == len(set(fused))
    assert set(fused) == {key for ranking in rankings for key in ranking}


@given(rankings_strategy, st.integers(0, 100))
def test_rrf_is_deterministic_and_scores_do_not_increase(rankings: list[list[int]], k: int) -> None:
    scored = rrf_scores(rankings, k)
    assert scored == rrf_scores([list(r) for r in rankings], k)
    scores = [score for _, score in scored]
    assert scores == sorted(scores, reverse=True)


@given(rankings_strategy)
def test_rrf_of_one_ranking_is_that_ranking_deduplicated(rankings: list[list[int]]) -> None:
    for ranking in rankings:
        assert rrf([ranking]) == list(dict.fromkeys(ranking))


@given(rankings_strategy)
def test_rrf_a_key_first_everywhere_it_appears_and_in_every_list_wins(rankings: list[list[int]]) -> None:
    rankings = [[-1, *ranking] for ranking in rankings]
    if rankings:
        assert rrf(rankings)[0] == -1


def test_every_error_here_is_an_ogmem_error() -> None:
    assert issubclass(InvalidInputError, OgmemError)
    assert issubclass(StoreError, OgmemError)
