"""The one place figures are written."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DPI = 120


def save(fig: Figure, path: str | Path | None) -> Figure:
    """Write `fig` to `path` (its folder created if missing) at DPI dots per inch; None writes nothing.
    Returns the figure, so that a plotting function can end with `return save(fig, path)`."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return fig
