"""The one place figures are written."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DPI = 120
# The widest a figure is drawn (inches): at DPI, the 900 pixels the report shows a figure at, so that the report
# shows it at its own size and its smallest text (SMALLEST_TEXT points, 12 pixels) stays legible; a figure with more
# panels wraps them into rows rather than growing wider.
PAGE_WIDTH = 7.5
SMALLEST_TEXT = 7


def save(fig: Figure, path: str | Path | None) -> Figure:
    """Write `fig` to `path` (its folder created if missing) at DPI dots per inch; None writes nothing.
    Returns the figure, so that a plotting function can end with `return save(fig, path)`."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return fig
