"""How a search orders what it returns: by vector similarity, by term overlap, or newest first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ogmem_memory.recall import overlap_score, search_terms
from ogmem_memory.stores.items_model import ItemRow
from ogmem_memory.vectors import cosine_top_k


def lexical_scores(query: str, rows: Sequence[ItemRow]) -> list[float]:
    """Term-overlap score of each row's text for ``query``, normalised to [0, 1]."""
    terms = search_terms(query)
    if not terms:
        return [0.0] * len(rows)
    best = overlap_score(terms, " ".join(terms))
    return [overlap_score(terms, row.text) / best if best else 0.0 for row in rows]


def rank_rows(
    rows: Sequence[ItemRow],
    *,
    query: str | None,
    query_vector: Sequence[float] | None,
    vectors: Mapping[tuple[str, str], Mapping[str, bytes]],
    top: int | None = None,
) -> list[tuple[ItemRow, float | None]]:
    """Rows (given newest first) ranked for a search; equal scores keep the newest first.

    ``top`` (the end of the page asked for) bounds the vector ranking to what the page can
    show; rows with vectors beyond it are omitted rather than listed unscored.
    """
    if query_vector is not None:
        # Vectors of another width (another model) cannot be scored: their rows rank as unembedded.
        width = 4 * len(query_vector)
        pairs = [
            ((row.ns, row.key), blob)
            for row in rows
            for blob in vectors.get((row.ns, row.key), {}).values()
            if len(blob) == width
        ]
        # An item holds at most `widest` of the best pairs, so this many pairs always cover
        # `top` distinct items: exact, at the cost of a partial sort instead of a full one.
        widest = max((len(v) for v in vectors.values()), default=1)
        k = len(pairs) if top is None else min(len(pairs), top * widest)
        best: dict[tuple[str, str], float] = {}
        for ident, score in cosine_top_k(query_vector, pairs, k):
            best.setdefault(ident, score)  # results come best first: the first is the max
        scored = sorted(
            ((row, best[(row.ns, row.key)]) for row in rows if (row.ns, row.key) in best),
            key=lambda pair: -pair[1],
        )
        embedded = {ident for ident, _ in pairs}
        rest: list[tuple[ItemRow, float | None]] = [
            (row, None) for row in rows if (row.ns, row.key) not in embedded
        ]
        if top is not None and len(scored) >= top:
            return list(scored)
        return [*scored, *rest]
    if query is not None:
        lexical = sorted(zip(rows, lexical_scores(query, rows), strict=True), key=lambda pair: -pair[1])
        return [(row, score) for row, score in lexical]
    return [(row, None) for row in rows]


def canonical_order(rows: Iterable[ItemRow]) -> list[ItemRow]:
    """Newest first; ties by namespace then key (the order every backend scans in)."""
    ordered = sorted(rows, key=lambda r: (r.ns, r.key))
    return sorted(ordered, key=lambda r: r.updated_at, reverse=True)
