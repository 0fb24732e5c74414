"""Figures written as PNG files: each on its own Agg canvas (matplotlib's global backend and
pyplot's state are never touched, so plotting is safe in worker processes and inside notebooks)
and saved atomically, so a killed writer leaves no half-written picture."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.core import files

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def figure(width: float, height: float) -> Figure:
    """A new figure of ``width`` × ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` as a PNG through a temporary file renamed into place;
    ``tight``: lay the axes out first so that labels are not cut off."""
    if tight:
        fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
