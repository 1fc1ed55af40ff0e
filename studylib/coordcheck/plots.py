"""The coordinate check's figure, drawn from summary.json only (no JAX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studylib import style
from studylib.coordcheck.report import richness
from studylib.results import read_json

plt = style.plt

ROWS = (("update", "change since θ₀ (RMS per coordinate)"), ("size_init", "size at θ₀ (RMS per coordinate)"))


def sizes_vs_width(summary: dict, stem) -> list[Path]:
    """Log-log, one column per parameterization, rows: each layer's update after the last step and its size at
    init against width (seed mean, seeds as dots), with the reference slopes n^0 and n^-1/2."""
    pars = list(summary["parameterizations"])
    widths = np.asarray(summary["widths"], np.float64)
    labels = summary["layers"]
    cfg = summary["config"]
    fig, axes = plt.subplots(len(ROWS), len(pars), figsize=(5.0 * len(pars), 3.6 * len(ROWS)), squeeze=False,
                             sharex=True)
    colors = plt.get_cmap("plasma")(np.linspace(0.0, 0.8, len(labels)))
    for j, par in enumerate(pars):
        e = summary["parameterizations"][par]
        for i, (q, ylabel) in enumerate(ROWS):
            ax = axes[i, j]
            mean = np.asarray(e["mean"][q], np.float64)  # (W, L + 1)
            seeds = np.asarray(e["per_seed"][q], np.float64)  # (W, S, L + 1)
            for k, label in enumerate(labels):
                fit = e["slopes"][q][k]
                slope = "n/a" if fit["slope"] is None else f"{fit['slope']:+.2f}"
                ax.plot(widths, mean[:, k], "o-", ms=3, color=colors[k],
                        label=f"{'output f' if label == 'f' else 'layer ' + label[1:]}: slope {slope}")
                for s in range(seeds.shape[1]):
                    ax.scatter(widths, seeds[:, s, k], s=6, color=colors[k], alpha=0.35, lw=0)
            anchor = float(np.nanmedian(mean[0]))
            xs = np.geomspace(widths.min(), widths.max(), 20)
            ax.plot(xs, anchor * np.ones_like(xs), color="0.4", ls="--", lw=1, label=r"$\propto n^{0}$")
            ax.plot(xs, anchor * (xs / xs[0]) ** -0.5, color="0.4", ls=":", lw=1, label=r"$\propto n^{-1/2}$")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            positive = mean[np.isfinite(mean) & (mean > 0)]
            if positive.size:  # room below the curves for the legend
                ax.set_ylim(bottom=min(positive.min(), anchor * (xs[-1] / xs[0]) ** -0.5) / 8)
            ax.set_title(f"{par}: {q.replace('_', ' ')}", fontsize=9)
            ax.set_ylabel(ylabel)
            if i == len(ROWS) - 1:
                ax.set_xlabel("width n")
            ax.legend(fontsize=7, loc="lower left")
    base_width, gamma0 = richness(cfg)
    fig.suptitle(f"coordinate check: fc depth {cfg['model']['depth']}, {cfg['steps']} GD steps, base width "
                 f"{base_width}, γ₀ = {gamma0:g}, {len(summary['seeds'])} seeds", fontsize=10)
    fig.tight_layout()
    return style.save(fig, stem)


def figures(out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    summary = read_json(out_dir / "summary.json")
    return sizes_vs_width(summary, out_dir / "coordcheck_sizes_vs_width")
