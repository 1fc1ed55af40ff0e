"""Figures of the ensemble study, drawn from stored results only (``summary.json`` + ``ensemble.npz``; no JAX).

    from studylib.ensemble import figures
    figures("results/ensemble")   # -> [PNG and PDF paths]
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.ticker as mticker
import numpy as np

from studylib import style
from studylib.results import read_json, read_npz

plt = style.plt

MODE_TITLE = {"ntk": "all layers trained vs NTK-GP (get='ntk')",
              "readout": "readout only trained vs NNGP-GP (get='nngp')"}
STAT_LABEL = {
    "mean_err": "mean error\nRMS$_x$(ensemble mean − GP mean) / RMS$_x$(GP σ)",
    "std_err": "std error\nRMS$_x$(ensemble σ − GP σ) / RMS$_x$(GP σ)",
    "calibration": "calibration\nfraction of (x, network) inside GP mean ± 2σ",
}
COVERAGE_2SIGMA = 0.9545
N_INDIVIDUAL = 4


def _time_indices(steps: np.ndarray) -> list[int]:
    """t = 0, an intermediate checkpoint and the last one."""
    idx = [0, len(steps) // 2, len(steps) - 1]
    return sorted(set(idx))


def _time_colors(n: int):
    return [plt.get_cmap("plasma")(v) for v in np.linspace(0.0, 0.75, n)]


def _t_label(summary: dict, mode: str, step: int) -> str:
    lr = summary["learning_rate"][mode]
    return f"t = {step} steps (lr·t = {lr * step:.3g})"


def bands_figure(summary: dict, arrays: dict, mode: str, fig_dir: Path) -> list[Path]:
    widths = np.asarray(summary["widths"])
    steps = np.asarray(summary["checkpoint_steps"])
    t_idx = _time_indices(steps)
    w_idx = [0, len(widths) - 1] if len(widths) > 1 else [0]
    x = arrays["x_test"]
    outputs = arrays[f"{mode}/outputs"]  # (W, T, members, X)
    unstable = arrays[f"{mode}/unstable"]  # (W, members)
    gp_mean, gp_std = arrays[f"{mode}/gp_flow_mean"], arrays[f"{mode}/gp_flow_std"]
    ens_mean, ens_std = arrays[f"{mode}/ens_mean"], arrays[f"{mode}/ens_std"]
    fig, axes = plt.subplots(len(t_idx), len(w_idx), figsize=(4.4 * len(w_idx), 2.8 * len(t_idx)),
                             sharex=True, squeeze=False)
    for r, ti in enumerate(t_idx):
        lo, hi = gp_mean[ti] - 2 * gp_std[ti], gp_mean[ti] + 2 * gp_std[ti]
        span = hi.max() - lo.min()
        ylim = (lo.min() - 0.25 * span, hi.max() + 0.25 * span)
        for c, wi in enumerate(w_idx):
            ax = axes[r, c]
            col = style.width_color(widths[wi])
            ax.fill_between(x, lo, hi, color="0.8", label="GP mean ± 2σ")
            ax.plot(x, gp_mean[ti], color="k", lw=1.2, label="GP mean")
            stable = np.flatnonzero(~unstable[wi])
            for j, m in enumerate(stable[:N_INDIVIDUAL]):
                ax.plot(x, outputs[wi, ti, m], color=col, lw=0.6, alpha=0.6,
                        label=f"{N_INDIVIDUAL} individual networks" if j == 0 else None)
            ax.plot(x, ens_mean[wi, ti], color=col, lw=2.0, label="ensemble mean")
            for sgn in (-1, 1):
                ax.plot(x, ens_mean[wi, ti] + sgn * 2 * ens_std[wi, ti], color=col, lw=1.4, ls="--",
                        label="ensemble mean ± 2σ" if sgn == 1 else None)
            ax.plot(arrays["x_train"], arrays["y_train"], "o", color="crimson", ms=3.5, zorder=5,
                    label="training points")
            ax.set_ylim(*ylim)
            n_ok = int((~unstable[wi]).sum())
            ax.set_title(f"n = {widths[wi]} ({n_ok} nets), {_t_label(summary, mode, int(steps[ti]))}", fontsize=8.5)
            if c == 0:
                ax.set_ylabel("network output f(x)")
            if r == len(t_idx) - 1:
                ax.set_xlabel("input x (training inputs in [−5, 5])")
    style.legend_outside(axes[0, -1])
    fig.suptitle(f"Ensembles of {summary['members']} networks, {MODE_TITLE[mode]} (uncentred)", fontsize=10)
    fig.tight_layout()
    return style.save(fig, fig_dir / f"ensemble_bands_{mode}")


def _floor_band(ax, x, floor: dict, ti: int, label=None):
    q05 = np.full(len(x), floor["q05"][ti])
    q95 = np.full(len(x), floor["q95"][ti])
    ax.fill_between(x, q05, q95, color="0.6", alpha=0.3, lw=0, label=label)


def _width_ticks(ax, widths) -> None:
    ax.set_xscale("log")
    ax.set_xticks(widths)
    ax.xaxis.set_major_formatter(mticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(mticker.NullLocator())


def _row_legend(axes_row) -> None:
    """One legend per row, outside the last panel, with the entries of every panel of the row."""
    handles, labels = [], []
    for ax in axes_row:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes_row[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def errors_vs_width_figure(summary: dict, mode_list: list[str], fig_dir: Path) -> list[Path]:
    widths = np.asarray(summary["widths"], np.float64)
    steps = np.asarray(summary["checkpoint_steps"])
    t_idx = _time_indices(steps)
    colors = _time_colors(len(t_idx))
    stats = list(STAT_LABEL)
    fig, axes = plt.subplots(len(mode_list), len(stats), figsize=(4.0 * len(stats), 3.2 * len(mode_list)),
                             squeeze=False)
    for r, mode in enumerate(mode_list):
        for c, k in enumerate(stats):
            ax = axes[r, c]
            e = summary["metrics"][f"{mode}/{k}"]
            vals = np.asarray(e["per_time"], np.float64)  # (W, T)
            _floor_band(ax, widths, e["floor"], t_idx[-1],
                        label=f"MC floor at t = {steps[t_idx[-1]]} (5–95%):\n{summary['members']} exact GP draws")
            for col, ti in zip(colors, t_idx, strict=True):
                ax.plot(widths, vals[:, ti], "o-", color=col, ms=4, label=_t_label(summary, mode, int(steps[ti])))
            _width_ticks(ax, widths)
            if k == "calibration":
                ax.axhline(COVERAGE_2SIGMA, color="k", lw=0.8, ls="--", label="exact GP: 0.954")
                ax.set_ylim(0, 1.02)
            else:
                ax.set_yscale("log")
                final = vals[:, t_idx[-1]]
                if np.isfinite(final[0]) and final[0] > 0:
                    style.reference_slopes(ax, widths, final[0])
            ax.set_xlabel("hidden width n")
            ax.set_ylabel(STAT_LABEL[k], fontsize=8)
            if c == 0:
                ax.set_title(MODE_TITLE[mode], fontsize=9, loc="left")
        _row_legend(axes[r])
    fig.suptitle(f"Ensemble ({summary['members']} networks per width) vs the infinite-width GP (uncentred)",
                 fontsize=10)
    fig.tight_layout()
    return style.save(fig, fig_dir / "ensemble_errors_vs_width")


def errors_vs_time_figure(summary: dict, mode_list: list[str], fig_dir: Path) -> list[Path]:
    widths = np.asarray(summary["widths"])
    steps = np.asarray(summary["checkpoint_steps"], np.float64)
    stats = list(STAT_LABEL)
    fig, axes = plt.subplots(len(mode_list), len(stats), figsize=(4.0 * len(stats), 3.2 * len(mode_list)),
                             squeeze=False)
    for r, mode in enumerate(mode_list):
        for c, k in enumerate(stats):
            ax = axes[r, c]
            e = summary["metrics"][f"{mode}/{k}"]
            vals = np.asarray(e["per_time"], np.float64)
            fl = e["floor"]
            ax.fill_between(steps, fl["q05"], fl["q95"], color="0.6", alpha=0.3, lw=0,
                            label="MC floor (5–95%)")
            ax.plot(steps, fl["mean"], color="0.4", lw=1, ls="--", label="MC floor mean")
            for wi, w in enumerate(widths):
                ax.plot(steps, vals[wi], "o-", ms=3, color=style.width_color(w), label=f"n = {w}")
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(0, steps[-1] * 1.3)
            if k == "calibration":
                ax.axhline(COVERAGE_2SIGMA, color="k", lw=0.8, ls=":", label="exact GP: 0.954")
                ax.set_ylim(0, 1.02)
            else:
                ax.set_yscale("log")
            ax.set_xlabel(f"GD step t (lr = {summary['learning_rate'][mode]:.3g}; linear below 1)")
            ax.set_ylabel(STAT_LABEL[k], fontsize=8)
            if c == 0:
                ax.set_title(MODE_TITLE[mode], fontsize=9, loc="left")
        _row_legend(axes[r])
    fig.suptitle("Ensemble vs GP over training time (uncentred)", fontsize=10)
    fig.tight_layout()
    return style.save(fig, fig_dir / "ensemble_errors_vs_time")


def figures(out_dir: str | Path, fig_dir: str | Path | None = None) -> list[Path]:
    """All figures of a stored ``study.ensemble`` run (``out_dir``/summary.json and ensemble.npz),
    written to ``fig_dir`` (default: ``out_dir``); returns the paths."""
    out_dir = Path(out_dir)
    fig_dir = Path(fig_dir or out_dir)
    summary = read_json(out_dir / "summary.json")
    arrays = read_npz(out_dir / summary.get("arrays_file", "ensemble.npz"))
    mode_list = [m for m in MODE_TITLE if f"{m}/mean_err" in summary["metrics"]]
    paths: list[Path] = []
    if "x_test" in arrays:  # bands over x only for 1-D inputs; the error figures fit any data
        for mode in mode_list:
            paths += bands_figure(summary, arrays, mode, fig_dir)
    paths += errors_vs_width_figure(summary, mode_list, fig_dir)
    paths += errors_vs_time_figure(summary, mode_list, fig_dir)
    return paths
