"""Figures of the comparison study, drawn from stored results only (summary.json + curves.npz; no JAX)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from studylib import style
from studylib.metrics import rate_label
from studylib.results import read_json, read_npz

plt = style.plt

#: (metric, axis label) panels of the gaps-vs-width figure.
WIDTH_PANELS = (
    ("rel_param_change", r"$\|\theta_T-\theta_0\|_2/\|\theta_0\|_2$"),
    ("rel_ntk_change", r"$\|K_T-K_0\|_F/\|K_0\|_F$ (train Gram)"),
    ("ntk_init_error", r"$\|K_0-\Theta\|_F/\|\Theta\|_F$ (init vs analytic)"),
    ("rmse_net_vs_lin", r"RMSE$(f_T, f^{lin}_T)$ on $[-10,10]$"),
    ("rmse_net_vs_closed_inf", r"RMSE$(f_T, f^{\infty}_T)$ on $[-10,10]$"),
    ("rmse_lin_vs_closed_emp", r"RMSE($f^{lin}_T$, NT flow with $K_0$)"),
)
TIME_PANELS = (
    ("rmse_net_vs_lin", r"RMSE$(f_t, f^{lin}_t)$ on $[-10,10]$"),
    ("rmse_net_vs_closed_inf", r"RMSE$(f_t, f^{\infty}_t)$ on $[-10,10]$"),
    ("rel_ntk_change", r"$\|K_t-K_0\|_F/\|K_0\|_F$"),
    ("rel_param_change", r"$\|\theta_t-\theta_0\|_2/\|\theta_0\|_2$"),
    ("loss_net", r"network loss $\frac{1}{2}\,\mathrm{mean}(f_t-y)^2$"),
    ("loss_lin", r"linearized loss $\frac{1}{2}\,\mathrm{mean}(f^{lin}_t-y)^2$"),
)


def _load(out_dir):
    out_dir = Path(out_dir)
    summary = read_json(out_dir / "summary.json")
    curves = read_npz(out_dir / summary.get("curves_file", "curves.npz"))
    return summary, curves


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _per_seed(entry) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in entry["per_seed"]], np.float64)


def _width_axis(ax, widths) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths)
    ax.set_xticklabels([str(int(w)) for w in widths], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("hidden width n")


def _mean_and_range(ax, widths, seeds, **kw):
    """Seed mean with bars spanning min..max over seeds (NaN = diverged seeds, ignored)."""
    with np.errstate(all="ignore"):
        mean = np.nanmean(seeds, axis=1)
        lo, hi = np.nanmin(seeds, axis=1), np.nanmax(seeds, axis=1)
    ax.errorbar(widths, mean, yerr=[mean - lo, hi - mean], marker="o", ms=3, lw=1.2, capsize=2, **kw)
    return mean


def gaps_vs_width(summary: dict, stem) -> list[Path]:
    widths = np.asarray(summary["widths"], np.float64)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, (name, label) in zip(axes.flat, WIDTH_PANELS, strict=True):
        entry = summary["metrics"].get(name)
        if entry is None:
            ax.set_visible(False)
            continue
        seeds = _per_seed(entry)
        for j in range(seeds.shape[1]):
            ax.scatter(widths, seeds[:, j], s=10, color=[style.width_color(w) for w in widths], alpha=0.8, lw=0,
                       zorder=3, label="single seed" if j == 0 else None)
        mean = _mean_and_range(ax, widths, seeds, color="k", label="seed mean (bars: min..max)")
        ok = np.isfinite(mean) & (mean > 0)
        if ok.any():
            style.reference_slopes(ax, widths[ok], mean[ok][0])
        fit = summary["slopes"].get(name, {})
        title = "fitted slope: n/a"
        if fit.get("slope") is not None:
            lo, hi = fit["ci95"]
            title = f"fitted slope {fit['slope']:+.2f}  [95% CI {lo:+.2f}, {hi:+.2f}]"
        if fit.get("reference"):
            title += f"\npublished: {rate_label(fit['reference']['slope'])}"
        ax.set_title(title, fontsize=8)
        _width_axis(ax, widths)
        ax.set_yscale("log")
        ax.set_ylabel(label)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.01))
    cfg = summary["config"]
    fig.suptitle(f"Final-time gaps vs width (step {cfg['steps']}, {cfg['model']['parameterization']} param., "
                 f"depth {cfg['model']['depth']}, {len(summary['seeds'])} seeds)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return style.save(fig, stem)


def layer_change_vs_width(summary: dict, stem) -> list[Path]:
    widths = np.asarray(summary["widths"], np.float64)
    layers = sorted(int(m.group(1)) for k in summary["metrics"] if (m := re.fullmatch(r"rel_weight_change_l(\d+)", k)))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cmap = plt.get_cmap("plasma")
    first = None
    for layer in layers:
        fit = summary["slopes"].get(f"rel_weight_change_l{layer}", {})
        role = "input" if layer == 1 else ("readout" if layer == layers[-1] else "hidden")
        slope = f", slope {fit['slope']:+.2f}" if fit.get("slope") is not None else ""
        seeds = _per_seed(summary["metrics"][f"rel_weight_change_l{layer}"])
        mean = _mean_and_range(ax, widths, seeds, color=cmap(0.85 * (layer - 1) / max(len(layers) - 1, 1)),
                               label=f"layer {layer} ({role}){slope}")
        first = mean[0] if first is None else max(first, mean[0])
    style.reference_slopes(ax, widths, first)
    _width_axis(ax, widths)
    ax.set_yscale("log")
    ax.set_ylabel(r"$\|W^{(l)}_T-W^{(l)}_0\|_F/\|W^{(l)}_0\|_F$")
    ax.set_title("Per-layer relative weight change (cf. Lee et al. 2019, Fig. 1)")
    style.legend_outside(ax, fontsize=7)
    return style.save(fig, stem)


def gaps_over_time(summary: dict, curves: dict, stem) -> list[Path]:
    widths = np.asarray(curves["widths"])
    steps = np.asarray(curves["steps"], np.float64)
    lr = [pw["learning_rate"] for pw in summary["per_width"]]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (name, label) in zip(axes.flat, TIME_PANELS, strict=True):
        c = curves.get(f"curve/{name}")
        if c is None:
            ax.set_visible(False)
            continue
        for i, w in enumerate(widths):
            with np.errstate(all="ignore"):
                mean = np.nanmean(c[i], axis=0)
                lo, hi = np.nanmin(c[i], axis=0), np.nanmax(c[i], axis=0)
            col = style.width_color(w)
            ax.plot(steps, mean, color=col, lw=1.3, label=f"n={w}")
            ax.fill_between(steps, lo, hi, color=col, alpha=0.15, lw=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"GD step t (time = lr·t; lr = {lr[0]:.3g})" if len(set(lr)) == 1 else "GD step t")
        ax.set_ylabel(label)
    style.legend_outside(axes[0, 2], title="width (mean, band = min..max over seeds)", fontsize=7)
    fig.suptitle("Gaps and losses over training")
    fig.tight_layout()
    return style.save(fig, stem)


def predictions(summary: dict, curves: dict, stem, seed_index: int = 0) -> list[Path]:
    """Network / linearization / infinite-width closed form over x (1-D inputs only)."""
    if "x_test" not in curves or curves["x_test"].shape[1] != 1:
        return []
    widths = np.asarray(curves["widths"])
    x_test, x_train, y_train = curves["x_test"][:, 0], curves["x_train"][:, 0], curves["y_train"][:, 0]
    inside = curves.get("region/interp", np.ones_like(x_test, bool))
    picks = sorted({0, len(widths) - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(5.5 * len(picks), 4), squeeze=False)
    step = int(curves["steps"][-1])
    for ax, i in zip(axes[0], picks, strict=True):
        ax.axvspan(x_test[inside].min(), x_test[inside].max(), color="0.93", lw=0, label="interpolation range")
        styles = {"net": ("network", "C3", "-"), "lin": ("linearized", "C0", "--"),
                  "closed_inf": ("infinite-width closed form", "k", "-.")}
        for key, (lab, col, ls) in styles.items():
            f0 = curves[f"pred_test/{key}"][i, seed_index, 0]
            ft = curves[f"pred_test/{key}"][i, seed_index, -1]
            ax.plot(x_test, ft, color=col, ls=ls, lw=1.4, label=f"{lab}, step {step}")
            if key == "net":
                ax.plot(x_test, f0, color=col, lw=0.8, alpha=0.4, label="network at init")
        ax.scatter(x_train, y_train, color="k", s=16, zorder=5, label="training points")
        span = np.abs(y_train).max()
        ax.set_ylim(-3 * span, 3 * span)
        ax.set_xlabel("input x")
        ax.set_ylabel("output f(x)")
        ax.set_title(f"width n = {widths[i]} (seed {summary['seeds'][seed_index]})")
    style.legend_outside(axes[0, -1], fontsize=7)
    fig.tight_layout()
    return style.save(fig, stem)


def figures(out_dir, fig_dir=None) -> list[Path]:
    """All figures of a stored ``study.compare`` run; written to ``fig_dir`` (default: ``out_dir``)."""
    summary, curves = _load(out_dir)
    fig_dir = Path(fig_dir or out_dir)
    paths = []
    paths += gaps_vs_width(summary, fig_dir / "compare_gaps_vs_width")
    paths += layer_change_vs_width(summary, fig_dir / "compare_layer_change_vs_width")
    paths += gaps_over_time(summary, curves, fig_dir / "compare_gaps_over_time")
    paths += predictions(summary, curves, fig_dir / "compare_predictions")
    return paths
