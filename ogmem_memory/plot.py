"""Plot context tokens per turn (matplotlib, from the ``notebook`` extra)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NOTEBOOK_EXTRA = 'pip install "ogmem-memory[notebook]"'


def plot_context_tokens(
    series: Mapping[str, Sequence[int]],
    *,
    budget: int | None = None,
    ax: Axes | None = None,
    title: str = "Tokens the model reads per turn",
) -> Axes:
    """Plot one line of tokens per turn for each named series, with the budget as a dashed line.

    Example::

        plot_context_tokens({"ogmem": ours, "full history": full}, budget=1000)

    Args:
        series: Label -> tokens at turn 1, 2, ...
        budget: Draw a horizontal line at this many tokens.
        ax: Axes to draw on; default a new figure's.
        title: Title of the axes.

    Returns:
        The matplotlib ``Axes``.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: ``series`` is empty.
    """
    if not series:
        raise ValueError("series must name at least one sequence of token counts")
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plot_context_tokens needs matplotlib: {NOTEBOOK_EXTRA}") from exc
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    for label, values in series.items():
        ax.plot(range(1, len(values) + 1), list(values), label=label, linewidth=1.5)
    if budget is not None:
        ax.axhline(budget, color="grey", linestyle="--", linewidth=1, label=f"budget ({budget})")
    ax.set_xlabel("turn")
    ax.set_ylabel("tokens")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    return ax
