"""One figure style for every study: a colour per width, reference slopes, PNG + PDF output.

Only matplotlib and NumPy are imported here: figures are drawn from stored
results, never by re-running training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

#: Ordered colormap: narrow = dark purple ... wide = yellow, the same in every figure.
WIDTH_CMAP = "viridis"
#: Widths the colour scale spans (log scale); values outside are clipped.
WIDTH_RANGE = (8, 8192)

plt.rcParams.update({
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 9,
})


def width_color(width: float):
    """The colour of ``width``: log-scaled position on :data:`WIDTH_CMAP`."""
    lo, hi = np.log(WIDTH_RANGE[0]), np.log(WIDTH_RANGE[1])
    pos = float(np.clip((np.log(width) - lo) / (hi - lo), 0.0, 1.0))
    return plt.get_cmap(WIDTH_CMAP)(0.05 + 0.85 * pos)


def reference_slopes(ax, x: Sequence[float], y_anchor: float, slopes=(-0.5, -1.0)) -> None:
    """Dashed lines c * n^slope through (x[0], y_anchor), labelled n^-1/2, n^-1."""
    x = np.asarray(x, np.float64)
    xs = np.geomspace(x.min(), x.max(), 20)
    labels = {-0.5: r"$\propto n^{-1/2}$", -1.0: r"$\propto n^{-1}$"}
    for s, ls in zip(slopes, ("--", ":"), strict=False):
        ax.plot(xs, y_anchor * (xs / xs[0]) ** s, color="0.4", ls=ls, lw=1,
                label=labels.get(s, rf"$\propto n^{{{s:g}}}$"))


def legend_outside(ax, **kw) -> None:
    """Legend to the right of the axes, outside the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


def save(fig, stem: str | Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    plt.close(fig)
    return paths
