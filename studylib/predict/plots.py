"""The prediction study's figure, drawn from summary.json only (no JAX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studylib import style
from studylib.results import read_json

plt = style.plt


def _arr(values) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], np.float64)


def gap_vs_width(summary: dict, stem) -> list[Path]:
    """Predicted gap against width (log-log): seeds, seed mean with its 95% interval, the fitted power
    law extended to the threshold crossing (with the crossing's interval), the threshold line."""
    widths = np.asarray(summary["widths"], np.float64)
    g = summary["gap_predicted"]
    seeds = _arr(g["per_seed"])
    mean = np.asarray([np.nan if v is None else v for v in g["mean"]], np.float64)
    ci = _arr(g["ci95"])
    fit, x = summary["slope"], summary["crossover"]
    thr = x["threshold"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for s in range(seeds.shape[1]):
        ax.scatter(widths, seeds[:, s], s=12, color=[style.width_color(w) for w in widths], lw=0, zorder=3,
                   label="seeds" if s == 0 else None)
    ax.errorbar(widths, mean, yerr=[mean - ci[:, 0], ci[:, 1] - mean], fmt="k-o", ms=4, capsize=2,
                label="first-order prediction: seed mean, 95% CI", zorder=4)
    stalled = summary.get("gap_stalled")
    if stalled is not None and summary["validity"]["relu"]:
        sm = np.asarray([np.nan if v is None else v for v in stalled["mean"]], np.float64)
        ax.plot(widths, sm, "s--", color="C0", ms=4, lw=1.2, zorder=4,
                label="stalled-mode gap (ReLU diagnostic), seed mean")
    right = widths.max()
    if x.get("width") is not None:
        right = max(right, x["width"] * 1.3)
    if x.get("ci95", [None, None])[1] is not None:
        right = max(right, x["ci95"][1] * 1.1)
    if fit.get("slope") is not None:
        fitted = fit["fit_widths"]
        xs = np.geomspace(min(fitted), right, 50)
        ax.plot(xs, np.exp(fit["intercept"]) * xs ** fit["slope"], color="C3", lw=1.2,
                label=f"fit over {min(fitted)}…{max(fitted)}: n^{fit['slope']:+.2f}"
                + (" (extended)" if right > widths.max() else ""))
    ax.axhline(thr, color="0.3", ls="--", lw=1, label=f"threshold {thr:g}")
    if x.get("width") is not None and not x.get("below_at_narrowest"):
        lo, hi = x["ci95"]
        ax.axvline(x["width"], color="C3", ls=":", lw=1, label=f"predicted crossover n ≈ {x['width']:.0f}")
        if lo is not None:
            ax.axvspan(lo, hi if hi is not None else right, color="C3", alpha=0.08, label="crossover 95% CI")
    top = np.nanmax(seeds) if np.isfinite(seeds).any() else 0.0
    if top >= 1.0:
        ax.axhspan(1.0, 1.5 * top, color="0.5", alpha=0.12, label="gap ≥ 1: not perturbative")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = widths.tolist()
    if x.get("width") and right > widths.max() and np.min(np.abs(np.log(widths / x["width"]))) > 0.2:
        ticks = sorted([*ticks, round(x["width"])])  # the crossover, unless it would overprint a width
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(int(t)) for t in ticks], fontsize=7)
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("hidden width n")
    ax.set_ylabel("predicted gap at the last GD step:\nRMS(f_net - f_lin) / RMS(y)")
    cfg = summary["config"]
    ax.set_title(f"{cfg['model']['arch']} depth {cfg['model']['depth']} {cfg['model']['activation']}, "
                 f"{cfg['data']['name']} (k = {summary['outputs']}), {cfg['steps']} steps at "
                 f"{cfg['lr_fraction']:g}× critical; {'centred f(θ) − f(θ₀); ' if summary.get('centred') else ''}"
                 "nothing trained", fontsize=8.5)
    style.legend_outside(ax, fontsize=7.5)
    return style.save(fig, stem)


def figures(out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    summary = read_json(out_dir / "summary.json")
    return gap_vs_width(summary, out_dir / "predict_gap_vs_width")
