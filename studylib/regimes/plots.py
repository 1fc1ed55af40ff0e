"""Figures of the regimes study, drawn from stored results only (summary.json + curves.npz; no JAX).

``figures(out_dir, fig_dir=None)`` writes PNG + PDF of:

* ``regimes_modes``: per eigenmode of the analytic NTK, the measured decay c_t/c_0 of the
  network and of its linearization against the prediction (1 - lr lambda_i/N)^t;
* ``regimes_departure``: the step at which each mode leaves its prediction, against lambda_i;
* ``regimes_kernel_motion``: ||K_t - K_0||_2 against the spectrum, the laziness ratio over width;
* ``regimes_heatmaps``: the final network-vs-linearization gap over width x each map axis;
* ``regimes_gap_vs_laziness``: the gap against the laziness ratio over all runs, with a fit;
* ``regimes_wide_enough``: the gap against width per depth and the width where it falls below the threshold;
* ``regimes_options``: centred / doubled / smaller output scale / float64 against the plain setup;
* ``regimes_gap_prediction``: the measured gap over every run against the first-order prediction from
  theta_0, against the stalled-slow-modes gap and against their combination (first order for erf, stalled
  for ReLU nets), by activation; the measured/predicted ratio against the prediction (where perturbation
  theory breaks down) and against the ReLU gate flips; the Spearman correlation of every diagnostic (all /
  erf / ReLU runs) with what it needs (theta_0 only, <= 5% of the run, the whole run);
* ``regimes_crossover``: measured and predicted gap against width per depth and activation, the measured
  crossover width and the one the prediction's narrow-width fit extrapolates to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studylib import style
from studylib.results import read_json, read_npz

plt = style.plt

AXIS_LABELS = {
    "lr_fraction": r"learning rate / critical rate $2N/\lambda_{\max}(\Theta)$",
    "depth": "depth (hidden layers)",
    "x_range": r"input scale: $x \in [-r, r]$, r =",
    "parameterization": "parameterization",
    "activation": "activation",
}
ACT_COLORS = {"relu": "C3", "erf": "C0"}
DIAG_LABELS = {"gap_predicted": "predicted gap (1st order, θ₀)", "gap_predicted_train": "predicted gap, train inputs",
               "gap_stalled": "stalled slow modes (θ₀)", "gap_predicted_or_stalled": "1st order (erf) / stalled (ReLU)",
               "laziness_ratio": "‖ΔK‖₂/λ_min(K₀)", "laziness_ratio_horizon": "horizon laziness ratio",
               "rel_ntk_change": "‖ΔK‖_F/‖K₀‖_F", "kernel_change_op": "‖ΔK‖₂",
               "gate_flips": "gate flips (final)", "gate_flips_early": "gate flips (≤5% of run)",
               "gap_early": "measured gap (≤5% of run)"}
#: What each diagnostic needs (summary's ``gap_prediction.needs``), as written beside its bar.
NEEDS_LABELS = {"t0": "θ₀", "early": "≤5%", "trained": "trained"}
GAP_LABEL = r"gap = RMSE$_{|x|\leq r}(f_{\rm net} - f_{\rm lin})$ / RMS$(y)$ at the last step"
LAZY_LABEL = r"laziness ratio $\sup_t \|K_t - K_0\|_2 / \lambda_{\min}(K_0)$"
HORIZON_LABEL = (r"horizon laziness ratio $\sup_t \|K_t - K_0\|_2 / \max(\lambda_{\min}(K_0), N/\eta T)$"
                 "\n(kernel motion against the slowest mode the run can fit by its last step T)")



def _has_positive(ax, axis: str) -> bool:
    """Whether anything drawn on ``ax`` has a finite positive coordinate on ``axis`` ('x' or 'y')."""
    i = 0 if axis == "x" else 1
    vals = [np.asarray(line.get_xydata(), np.float64)[:, i] for line in ax.get_lines()]
    vals += [np.asarray(c.get_offsets(), np.float64).reshape(-1, 2)[:, i] for c in ax.collections
             if hasattr(c, "get_offsets")]
    return any(np.any(np.isfinite(v) & (v > 0)) for v in vals)


def _log(ax, *axes: str) -> None:
    """Log scale on each of ``axes`` that has positive data; otherwise say in the panel that nothing
    finite is drawn (e.g. every linearization diverged, so every gap is NaN)."""
    empty = False
    for axis in axes:
        if _has_positive(ax, axis):
            (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        else:
            empty = True
    if empty:
        ax.text(0.5, 0.5, "no finite positive values (diverged runs are NaN)", transform=ax.transAxes,
                ha="center", fontsize=8)

def _width_axis(ax, widths) -> None:
    """Log x axis with one labelled tick per width (no crowded minor labels)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([float(w) for w in widths]))
    ax.set_xticklabels([str(int(w)) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _base_cells(summary: dict) -> list[tuple[int, int]]:
    """(cell index, width) of the base cell at each width, in width order."""
    base = summary["base_cell"]
    out = [(c["index"], c["width"]) for c in summary["cells"]
           if all(c[k] == v for k, v in base.items())]
    return sorted(out, key=lambda t: t[1])


def _gamma2(summary: dict, i: int) -> float:
    """gamma^2 of cell ``i`` (:mod:`studylib.mup`'s gamma-model, whose kernels are the NTK net's / gamma^2; 1 for
    other cells and for summaries written before it): kernel eigenvalues x gamma^2 and rates / gamma^2 are in
    the NTK net's units, the same at every width."""
    return float(summary["cells"][i].get("gamma", 1.0)) ** 2


def _rich_note(summary: dict) -> str:
    """A second label line '(x gamma^2 ...: the NTK net's units)' when some base cell has gamma != 1, else ''."""
    return "\n(× γ² for μP's γ-model: the NTK net's units)" if any(
        _gamma2(summary, i) != 1.0 for i, _ in _base_cells(summary)) else ""


def _nanmedian(a, axis=0):
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(a, axis=axis)


def fig_modes(summary, arrays, fig_dir) -> list[Path]:
    steps = np.asarray(summary["checkpoint_steps"], np.float64)
    base = _base_cells(summary)
    idx0 = base[0][0]
    lam = arrays[f"cell{idx0}/theta_lambda"]
    n_modes = lam.size
    lr = {w: summary["cells"][i]["learning_rate"] for i, w in base}
    ncol = 5
    nrow = int(np.ceil(n_modes / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol + 1.6, 2.3 * nrow + 0.6), sharex=True, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    t = np.maximum(steps, 0.5)
    for m in range(n_modes):
        ax = axes[m]
        for i, w in base:
            c_net = arrays[f"cell{i}/coeff/net_inf"]
            c_lin = arrays[f"cell{i}/coeff/lin_inf"]
            with np.errstate(all="ignore"):
                r_net = _nanmedian(c_net[:, :, m] / c_net[:, :1, m])
                r_lin = _nanmedian(c_lin[:, :, m] / c_lin[:, :1, m])
            col = style.width_color(w)
            ax.plot(t, r_net, color=col, lw=1.4, label=f"network n={w}" if m == 0 else None)
            ax.plot(t, r_lin, color=col, lw=1.0, ls=":", label=f"linearization n={w}" if m == 0 else None)
        w0 = base[0][1]
        a = lr[w0] * lam[m] / n_modes
        with np.errstate(all="ignore"):  # the stored prediction over its start: (1 - lr lambda_m / N)^t
            p_inf = arrays[f"cell{base[0][0]}/pred/inf"][:, :, m]
            pred = _nanmedian(p_inf / p_inf[:, :1])
        ax.plot(t, pred, color="k", ls="--", lw=1.2, label=r"closed form $(1-\eta\lambda_i/N)^t$" if m == 0 else None)
        ax.set_xscale("log")
        ax.set_ylim(-0.6, 1.6)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_title(rf"mode {m}: $\lambda_{{{m}}}={lam[m]:.3g}$, $N/\eta\lambda={1 / a:.3g}$ steps", fontsize=8)
        if m % ncol == 0:
            ax.set_ylabel(r"$c_{t,i} / c_{0,i}$ (seed median)")
        if m >= n_modes - ncol:
            ax.set_xlabel("GD step t (0 drawn at 0.5)")
    for ax in axes[n_modes:]:
        ax.set_visible(False)
    c = summary["base_cell"]
    fig.suptitle("Residual f(X) - Y projected on eigenvector i of the analytic NTK Θ (mode 0 fastest): measured decay "
                 f"vs the constant-kernel prediction\n(depth {c['depth']}, {c['parameterization']} param., "
                 f"lr = {c['lr_fraction']:g} x critical, x in [-{c['x_range']:g}, {c['x_range']:g}]; "
                 "linearization = f(θ0) + J0(θ - θ0); it differs from the prediction only through K0 ≠ Θ)",
                 fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.93), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return _save(fig, summary, Path(fig_dir) / "regimes_modes")


def fig_departure(summary, arrays, fig_dir) -> list[Path]:
    steps = np.asarray(summary["checkpoint_steps"], np.float64)
    t_max = steps[-1]
    base = _base_cells(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in (
        (axes[0], "net_emp", "network vs prediction with its own K0\n(kernel motion during training only)"),
        (axes[1], "net_inf", "network vs prediction with the analytic Θ\n(kernel motion + K0 ≠ Θ at init)"),
    ):
        for j, (i, w) in enumerate(base):
            lam = _gamma2(summary, i) * (arrays[f"cell{i}/k0_lambda"] if key.endswith("emp") else
                                         np.broadcast_to(arrays[f"cell{i}/theta_lambda"],
                                                         arrays[f"cell{i}/departure/{key}"].shape))
            dep = arrays[f"cell{i}/departure/{key}"]
            col = style.width_color(w)
            ok = np.isfinite(dep)
            jitter = 1.0 + 0.04 * (j - len(base) / 2)
            ax.scatter(lam[ok], dep[ok] * jitter, color=col, s=18, label=f"n={w}")
            ax.scatter(lam[~ok], np.full((~ok).sum(), t_max * 1.6 * jitter), color=col, s=22, marker="^")
        i0 = base[0][0]
        lr = summary["cells"][i0]["learning_rate"] / _gamma2(summary, i0)
        lam_all = _gamma2(summary, i0) * arrays[f"cell{i0}/theta_lambda"]
        n = lam_all.size
        lg = np.geomspace(lam_all.min() / 3, lam_all.max() * 3, 50)
        ax.plot(lg, n / (lr * lg), color="k", ls="--", lw=1, label=r"mode time scale $N/(\eta\lambda)$")
        ax.axhline(t_max, color="0.5", lw=0.8)
        ax.scatter([], [], color="0.4", marker="^", s=22, label="did not depart by the last step")
        _log(ax, "x", "y")
        ax.set_ylim(0.5, t_max * 4)
        ax.set_xlabel(r"eigenvalue $\lambda_i$ of the kernel the prediction uses" + _rich_note(summary))
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel(r"departure step: first t with $|c_{t,i} - c^{\rm pred}_{t,i}| > $"
                       + f"{summary['config']['departure_tol']:g}" + r"$\,|c_{0,i}|$")
    style.legend_outside(axes[1], fontsize=8)
    fig.suptitle("When does each mode leave the constant-kernel prediction? (base cell, all seeds)", fontsize=10)
    fig.tight_layout()
    return _save(fig, summary, Path(fig_dir) / "regimes_departure")


def _motion_panel(ax, base, arrays, steps, summary) -> None:
    """||K_t - K_0||_2 over steps per width, against the extreme eigenvalues of Theta (the gamma-model's x gamma^2)."""
    for i, w in base:
        dk = _gamma2(summary, i) * _nanmedian(arrays[f"cell{i}/curve/kernel_change_op"])
        ax.plot(steps[1:], dk[1:], color=style.width_color(w), label=f"n={w}")
    lam_theta = _gamma2(summary, base[0][0]) * arrays[f"cell{base[0][0]}/theta_lambda"]
    for k, ls in ((0, "-."), (-1, "--")):
        name = r"$\lambda_{\max}(\Theta)$" if k == 0 else r"$\lambda_{\min}(\Theta)$"
        ax.axhline(lam_theta[k], color="k", ls=ls, lw=1, label=f"{name} = {lam_theta[k]:.3g}")
    _log(ax, "x", "y")
    ax.set_xlabel("GD step t")
    ax.set_ylabel(r"$\|K_t - K_0\|_2$ (operator norm, seed median)" + ("\n× γ²" if _rich_note(summary) else ""))
    ax.set_title("kernel motion against the spectrum", fontsize=9)
    ax.legend(fontsize=7)


def _normalisations_panel(ax, base, summary) -> None:
    """The laziness ratio and the relative Frobenius change against width (per seed and median)."""
    widths = np.array([w for _, w in base], np.float64)
    lazy = [summary["cells"][i]["metrics"]["laziness_ratio"]["per_seed"] for i, _ in base]
    frob = [summary["cells"][i]["metrics"]["rel_ntk_change"]["per_seed"] for i, _ in base]
    for w, lz, fr in zip(widths, lazy, frob, strict=True):
        lz = np.asarray(lz, np.float64)
        fr = np.asarray(fr, np.float64)
        ax.scatter(np.full(lz.shape, w), lz, color=style.width_color(w), s=14)
        ax.scatter(np.full(fr.shape, w), fr, color=style.width_color(w), s=14, marker="x")
    ax.plot(widths, _nanmedian(np.array(lazy, np.float64), axis=1), "k-", lw=1.2,
            label=r"$\sup_t\|K_t-K_0\|_2/\lambda_{\min}(K_0)$ (laziness ratio)")
    ax.plot(widths, _nanmedian(np.array(frob, np.float64), axis=1), "k:", lw=1.2,
            label=r"$\sup_t\|K_t-K_0\|_F/\|K_0\|_F$ (relative, Frobenius)")
    anchor = _nanmedian(np.array(lazy, np.float64), axis=1)[0]
    if np.isfinite(anchor):
        style.reference_slopes(ax, widths, anchor)
    ax.axhline(1.0, color="0.5", lw=0.8)
    _width_axis(ax, widths)
    _log(ax, "y")
    ax.set_xlabel("hidden width n")
    ax.set_ylabel("kernel change (per seed; line: median)")
    ax.set_title("same kernel motion, two normalisations", fontsize=9)
    ax.legend(fontsize=7)


def _mode_laziness_panel(ax, base, arrays) -> None:
    """sup_t ||K_t - K_0||_2 / lambda_i(K_0) per mode and width."""
    for i, w in base:
        ml = _nanmedian(arrays[f"cell{i}/mode_laziness"])
        ax.plot(np.arange(ml.size), ml, "o-", ms=3, color=style.width_color(w), label=f"n={w}")
    ax.axhline(1.0, color="0.5", lw=0.8)
    _log(ax, "y")
    ax.set_xlabel(r"mode i of $K_0$ (descending $\lambda_i$; 0 = fastest)")
    ax.set_ylabel(r"$\sup_t \|K_t - K_0\|_2 / \lambda_i(K_0)$ (seed median)")
    ax.set_title("kernel motion against each mode: above 1 the mode's rate is not constant", fontsize=9)
    style.legend_outside(ax, fontsize=7)


def fig_kernel_motion(summary, arrays, fig_dir) -> list[Path]:
    steps = np.asarray(summary["checkpoint_steps"], np.float64)
    base = _base_cells(summary)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    _motion_panel(axes[0], base, arrays, steps, summary)
    _normalisations_panel(axes[1], base, summary)
    _mode_laziness_panel(axes[2], base, arrays)
    c = summary["base_cell"]
    fig.suptitle(f"Kernel motion of the network (base cell: depth {c['depth']}, {c['parameterization']}, "
                 f"lr = {c['lr_fraction']:g} x critical); K = empirical NTK on the N training inputs", fontsize=10)
    fig.tight_layout()
    return _save(fig, summary, Path(fig_dir) / "regimes_kernel_motion")


def fig_heatmaps(summary, fig_dir) -> list[Path]:
    widths = summary["widths"]
    heat = summary["heatmaps"]
    keys = [k for k in heat if len(heat[k]["values"]) > 1] or list(heat)[:1]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys) + 1.2, 3.8), squeeze=False, layout="constrained")
    axes = axes[0]
    vals_all = np.concatenate([np.asarray(heat[k]["gap_median"], np.float64).ravel() for k in keys])
    vals_all = vals_all[np.isfinite(vals_all) & (vals_all > 0)]
    lo, hi = (np.log10(vals_all.min()), np.log10(vals_all.max())) if vals_all.size else (-2, 0)
    im = None
    for ax, key in zip(axes, keys, strict=True):
        g = np.asarray(heat[key]["gap_median"], np.float64)
        with np.errstate(all="ignore"):
            lg = np.log10(g)
        ax.set_facecolor("0.85")
        im = ax.imshow(np.ma.masked_invalid(lg), origin="lower", aspect="auto", cmap="magma_r", vmin=lo, vmax=hi)
        for a in range(g.shape[0]):
            for b in range(g.shape[1]):
                txt = "div." if not np.isfinite(g[a, b]) else f"{g[a, b]:.2g}"
                dark = np.isfinite(lg[a, b]) and (lg[a, b] - lo) > 0.6 * (hi - lo)
                ax.text(b, a, txt, ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set_xticks(range(len(widths)), [str(w) for w in widths])
        ax.set_yticks(range(len(heat[key]["values"])), [str(v) for v in heat[key]["values"]])
        ax.set_xlabel("hidden width n")
        ax.set_ylabel(AXIS_LABELS.get(key, key), fontsize=8)
        ax.grid(False)
    cb = fig.colorbar(im, ax=list(axes), fraction=0.025, pad=0.02)
    cb.set_label(r"log$_{10}$ gap (seed median)")
    c = summary["base_cell"]
    fig.suptitle(f"Network vs linearization: {GAP_LABEL}\nother settings at the base cell (depth {c['depth']}, "
                 f"{c['parameterization']}, lr {c['lr_fraction']:g} x critical, r = {c['x_range']:g}); "
                 "grey 'div.': every seed diverged", fontsize=9)
    return _save(fig, summary, Path(fig_dir) / "regimes_heatmaps")


def _all_runs(summary):
    rows = []
    base = summary["base_cell"]
    for c in summary["cells"]:
        diff = [k for k in base if c[k] != base[k]]
        group = "base" if not diff else (f"option: {c['option']}" if c["option"] != "plain" else f"axis: {diff[0]}")
        key = "laziness_ratio_horizon" if "laziness_ratio_horizon" in c["metrics"] else "laziness_ratio"
        lz = np.asarray(c["metrics"][key]["per_seed"], np.float64)
        gp = np.asarray(c["metrics"]["gap"]["per_seed"], np.float64)
        for a, b in zip(lz, gp, strict=True):
            rows.append((c["width"], group, a, b))
    return rows


def fig_gap_vs_laziness(summary, fig_dir) -> list[Path]:
    rows = _all_runs(summary)
    groups = sorted({r[1] for r in rows}, key=lambda g: (g != "base", g))
    markers = dict(zip(groups, "osD^v<>pPX*h8", strict=False))
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for g in groups:
        sel = [r for r in rows if r[1] == g]
        ax.scatter([r[2] for r in sel], [r[3] for r in sel], c=[style.width_color(r[0]) for r in sel],
                   marker=markers[g], s=22, edgecolors="k", linewidths=0.3, label=g)
    fit = summary.get("gap_vs_laziness_horizon", summary["gap_vs_laziness"])
    plain = summary["gap_vs_laziness"]
    if fit["slope"] is not None:
        xs = np.array([r[2] for r in rows], np.float64)
        xs = xs[np.isfinite(xs) & (xs > 0)]
        xg = np.geomspace(xs.min(), xs.max(), 50)
        ax.plot(xg, 10 ** fit["intercept"] * xg ** fit["slope"], "k--", lw=1.2,
                label=f"fit: gap = {10 ** fit['intercept']:.2g} ratio^{fit['slope']:.2f}")
        ax.text(0.02, 0.97, f"{fit['n']} runs; Pearson r(log, log) = {fit['pearson_log']:.2f}, "
                f"Spearman = {fit['spearman']:.2f}\n"
                f"(gap vs ratio to $\\lambda_{{\\min}}(K_0)$ alone: Spearman = {plain['spearman']:.2f}; "
                f"vs relative Frobenius change: {summary['gap_vs_rel_ntk_change_frobenius']['spearman']:.2f})",
                transform=ax.transAxes, va="top", fontsize=8)
    ax.axvline(1.0, color="0.5", lw=0.8)
    ok = [r for r in rows if np.isfinite(r[2]) and np.isfinite(r[3]) and r[2] > 0 and r[3] > 0]
    if ok:
        _log(ax, "x", "y")
    else:  # e.g. every linearization diverged: their gaps are NaN
        ax.text(0.5, 0.5, "no run with a finite gap and laziness ratio", transform=ax.transAxes, ha="center")
    ax.set_xlabel(HORIZON_LABEL if "gap_vs_laziness_horizon" in summary else LAZY_LABEL, fontsize=8)
    ax.set_ylabel(GAP_LABEL, fontsize=8)
    ax.set_title("Every run of the map (colour = width, viridis: dark narrow … yellow wide)", fontsize=9)
    style.legend_outside(ax, fontsize=7)
    return _save(fig, summary, Path(fig_dir) / "regimes_gap_vs_laziness")


def fig_wide_enough(summary, fig_dir) -> list[Path]:
    widths = np.asarray(summary["widths"], np.float64)
    h = summary["heatmaps"]["depth"]
    thr = summary["wide_enough"]["threshold"]
    cmap = plt.get_cmap("plasma")
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    depths = h["values"]
    for j, d in enumerate(depths):
        col = cmap(0.1 + 0.75 * j / max(len(depths) - 1, 1))
        g = np.asarray(h["gap_median"][j], np.float64)
        ax.plot(widths, g, "o-", color=col, label=f"depth {d}")
        we = summary["wide_enough"]["width_by_depth"][str(d)]
        if we is not None:
            ax.plot([we], [thr], marker="*", ms=13, color=col, mec="k", mew=0.5)
    ax.axhline(thr, color="k", ls="--", lw=1, label=f"threshold {thr:g}")
    _width_axis(ax, widths)
    widest = summary["wide_enough"].get("widest_by_depth", {})
    txt = "\n".join(f"depth {d}: " + (f"n ≈ {w:.0f}" if w is not None else
                                      f"> {int(widest.get(str(d)) or widths[-1])}")
                    for d, w in summary["wide_enough"]["width_by_depth"].items())
    ax.text(1.02, 0.02, "wide enough (gap < threshold\nat this and every wider width):\n" + txt,
            transform=ax.transAxes, fontsize=8, va="bottom")
    _log(ax, "y")
    ax.set_xlabel("hidden width n")
    ax.set_ylabel(GAP_LABEL, fontsize=8)
    c = summary["base_cell"]
    ax.set_title(f"How wide is wide enough? (seed median; {c['parameterization']}, lr {c['lr_fraction']:g} x "
                 f"critical, r = {c['x_range']:g}, {summary['checkpoint_steps'][-1]} steps)", fontsize=9)
    style.legend_outside(ax, fontsize=8)
    return _save(fig, summary, Path(fig_dir) / "regimes_wide_enough")


def fig_options(summary, fig_dir) -> list[Path]:
    widths = np.asarray(summary["widths"], np.float64)
    opts = summary["options"]
    styles = {"plain": ("k", "o-"), "centred": ("C0", "s-"), "doubled": ("C1", "D-"),
              "out_scale": ("C2", "^-"), "float64": ("C3", "v--")}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    alpha = summary["config"]["output_scale"]
    names = {"plain": "plain", "centred": r"centred $f - f(\theta_0)$",
             "doubled": r"doubled $(f(\theta_a) - f(\theta_b))/\sqrt{2}$",
             "out_scale": rf"output scale $\alpha f$, $\alpha$={alpha:g}", "float64": "float64"}
    for opt, row in opts.items():
        col, fmt = styles.get(opt, ("C4", "x-"))
        for ax, key in zip(axes, ("gap_median", "laziness_median", "loss_net_median"), strict=True):
            y = np.array([np.nan if v is None else v for v in row[key]], np.float64)
            ax.plot(widths, y, fmt, color=col, label=names.get(opt, opt), ms=4)
    axes[0].set_ylabel(GAP_LABEL, fontsize=7)
    axes[1].set_ylabel(LAZY_LABEL, fontsize=8)
    axes[2].set_ylabel(r"network training loss $\frac{1}{2}$mean$(f-y)^2$ at the last step", fontsize=8)
    for ax in axes:
        _width_axis(ax, widths)
        _log(ax, "y")
        ax.set_xlabel("hidden width n")
    style.legend_outside(axes[2], fontsize=8)
    fig.suptitle("Options used to get closer to the limit, at the base cell (seed medians)", fontsize=10)
    fig.tight_layout()
    return _save(fig, summary, Path(fig_dir) / "regimes_options")


def _runs(summary, metrics):
    """Per run (cell x seed): width, activation, option and the named metrics' per-seed values."""
    rows = []
    for c in summary["cells"]:
        vals = [np.asarray(c["metrics"][m]["per_seed"], np.float64) for m in metrics]
        for s_i in range(len(vals[0])):
            rows.append((c["width"], c.get("activation", "relu"), c["option"], *[v[s_i] for v in vals]))
    return rows


def _pos(a):
    a = np.asarray(a, np.float64)
    return np.isfinite(a) & (a > 0)


def _scatter_by_activation(ax, x, gap, act, width, ok) -> None:
    """Measured gap against ``x`` per activation (marker size ~ log width) with the diagonal."""
    for a in ("erf", "relu"):
        sel = ok & (act == a)
        ax.scatter(x[sel], gap[sel], s=10 + 4 * np.log2(width[sel] / width.min() + 1), c=ACT_COLORS[a], alpha=0.6,
                   edgecolors="k", linewidths=0.2, label=f"{a} ({sel.sum()} runs)")
    if ok.any():
        lim = np.array([min(x[ok].min(), gap[ok].min()), max(x[ok].max(), gap[ok].max())])
        ax.plot(lim, lim, "k--", lw=1, label="measured = diagnostic")
    ax.set_ylabel(GAP_LABEL, fontsize=7)
    _log(ax, "x", "y")
    ax.legend(fontsize=7, loc="upper left")


def _spearman_text(gp: dict, name: str) -> str:
    d = gp["diagnostics"].get(name)
    if d is None:
        return ""
    return "(Spearman " + ", ".join(f"{sub} {'—' if d[sub]['spearman'] is None else format(d[sub]['spearman'], '.2f')}"
                                    for sub in ("all", "smooth", "relu")).replace("smooth", "erf") + ")"


def fig_gap_prediction(summary, fig_dir) -> list[Path]:
    names = ("gap", "gap_predicted", "gate_flips", "gap_stalled", "gap_predicted_or_stalled")
    have = [n for n in names if n in summary["cells"][0]["metrics"]]  # summaries before gap_stalled lack the last two
    rows = [r for r in _runs(summary, have) if r[2] != "doubled"]
    width = np.array([r[0] for r in rows], np.float64)
    act = np.array([r[1] for r in rows])
    cols = {n: np.array([r[3 + k] for r in rows], np.float64) for k, n in enumerate(have)}
    nan = np.full(len(rows), np.nan)
    gap, pred, flips = cols["gap"], cols["gap_predicted"], cols["gate_flips"]
    stalled, combined = cols.get("gap_stalled", nan), cols.get("gap_predicted_or_stalled", nan)
    gp = summary["gap_prediction"]
    ok = _pos(gap) & _pos(pred)
    if not ok.any():  # no run with both a finite gap and a prediction (e.g. k > 1 outputs: no prediction)
        return []
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.6))
    axes = axes.ravel()
    _scatter_by_activation(axes[0], pred, gap, act, width, ok)
    axes[0].set_xlabel("first-order prediction from θ₀ (perturbation around the linearization)", fontsize=8)
    axes[0].set_title("Measured gap vs first-order prediction, every run but the doubled option's\n"
                      f"{_spearman_text(gp, 'gap_predicted')}", fontsize=9)
    _scatter_by_activation(axes[1], stalled, gap, act, width, _pos(gap) & _pos(stalled))
    axes[1].set_xlabel("linearization's motion in the slow modes of K₀ by the last step (from θ₀):\n"
                       "the gap of a network that stalls there", fontsize=8)
    axes[1].set_title(f"Measured gap vs stalled slow modes\n{_spearman_text(gp, 'gap_stalled')}", fontsize=9)
    _scatter_by_activation(axes[2], combined, gap, act, width, _pos(gap) & _pos(combined))
    if "gap_stalled" not in have:
        for ax in axes[1:3]:
            for t in list(ax.texts):
                t.remove()
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "not in this summary.json\n(written before gap_stalled existed;\n"
                    "studylib.regimes.summary.refresh_gap_prediction\nadds it from the stored curves)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8)
    axes[2].set_xlabel("first order (erf nets) / stalled slow modes (ReLU nets), from θ₀", fontsize=8)
    t0 = gp.get("best_t0") or {}
    axes[2].set_title(f"Measured gap vs the combined diagnostic\n{_spearman_text(gp, 'gap_predicted_or_stalled')}",
                      fontsize=9)
    for a in ("erf", "relu"):
        sel = ok & (act == a)
        axes[3].scatter(pred[sel], gap[sel] / pred[sel], s=14, c=ACT_COLORS[a], alpha=0.6, edgecolors="k",
                        linewidths=0.2, label=a)
    axes[3].axhline(1.0, color="k", lw=0.8)
    axes[3].axvline(1.0, color="0.5", ls=":", lw=1)
    axes[3].set_xlabel("first-order prediction", fontsize=8)
    axes[3].set_ylabel("measured / first-order prediction", fontsize=8)
    axes[3].set_title("Where perturbation theory breaks down:\npredicted gap O(1) (right), ReLU gates (above 1)",
                      fontsize=9)
    axes[3].legend(fontsize=7, loc="upper right")
    sel = ok & (act == "relu") & np.isfinite(flips)
    sc = axes[4].scatter(np.maximum(flips[sel], 1e-4), gap[sel] / pred[sel], c=np.log2(width[sel]), cmap="viridis",
                         s=16, edgecolors="k", linewidths=0.2)
    if sel.any():
        cb = fig.colorbar(sc, ax=axes[4], fraction=0.05)
        cb.set_label("log2 width", fontsize=8)
    axes[4].axhline(1.0, color="k", lw=0.8)
    axes[4].set_xlabel("fraction of ReLU gates (unit, training input) flipped by the last step\n(1e-4 = none)",
                       fontsize=8)
    axes[4].set_ylabel("measured / first-order prediction", fontsize=8)
    axes[4].set_title("ReLU runs: the unpredicted part against the gate flips", fontsize=9)
    for ax in axes[3:5]:
        _log(ax, "x", "y")
    diag = list(gp["diagnostics"])
    needs = gp.get("needs", {})
    ypos = np.arange(len(diag))
    for k, (sub, col) in enumerate((("all", "k"), ("smooth", ACT_COLORS["erf"]), ("relu", ACT_COLORS["relu"]))):
        vals = [gp["diagnostics"][n][sub]["spearman"] for n in diag]
        axes[5].barh(ypos + (k - 1) * 0.27, [np.nan if v is None else v for v in vals], height=0.27, color=col,
                     label={"smooth": "erf"}.get(sub, sub))
    ticks = [DIAG_LABELS.get(n, n) + (f" [{NEEDS_LABELS[needs[n]]}]" if n in needs else "") for n in diag]
    axes[5].set_yticks(ypos, ticks, fontsize=7)
    axes[5].axvline(0.0, color="k", lw=0.6)
    axes[5].axvline(0.8, color="0.5", ls="--", lw=0.8)
    axes[5].set_xlim(-1, 1)
    axes[5].invert_yaxis()
    axes[5].set_xlabel("Spearman with the measured gap  ([needs]: θ₀ only, ≤5% of the run, the whole run)",
                       fontsize=8)
    rnd = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    best = gp["best"]
    title = f"Every diagnostic (runs: all / erf / ReLU)\nbest over all: {DIAG_LABELS.get(best, best)}, " \
            f"Spearman {rnd(gp['spearman'])}"
    if t0.get("name") and t0["name"] != best:
        title += f"; best from θ₀: {DIAG_LABELS.get(t0['name'], t0['name'])}, {rnd(t0['spearman'])}"
    elif t0.get("name"):
        title += " (from θ₀ alone)"
    axes[5].set_title(title, fontsize=9)
    axes[5].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, summary, Path(fig_dir) / "regimes_gap_prediction")


def fig_crossover(summary, fig_dir) -> list[Path]:
    cross = summary["crossover"]
    rows = cross["rows"]
    acts = sorted({r["activation"] for r in rows}, key=lambda a: a != "relu")
    thr = cross["threshold"]
    cmap = plt.get_cmap("plasma")
    fig, axes = plt.subplots(1, len(acts), figsize=(6.6 * len(acts) + 1.5, 5.6), squeeze=False)
    all_w = sorted({w for r in rows for w in r["widths"]})
    lo_w, hi_w = all_w[0] / 2, all_w[-1] * 8  # predicted widths outside are drawn at the edge (text gives them)
    for ax, act in zip(axes[0], acts, strict=True):
        sub = [r for r in rows if r["activation"] == act]
        lines = []
        for j, r in enumerate(sub):
            col = cmap(0.1 + 0.75 * j / max(len(sub) - 1, 1))
            w = np.asarray(r["widths"], np.float64)
            g = np.array([np.nan if v is None else v for v in r["gap_median"]], np.float64)
            p = np.array([np.nan if v is None else v for v in r["gap_predicted_median"]], np.float64)
            ax.plot(w, g, "o-", color=col, label=f"depth {r['depth']}: measured")
            ax.plot(w, p, "s--", color=col, mfc="none", label=f"depth {r['depth']}: predicted (1st order)")
            if r.get("gap_stalled_median") is not None:
                st = np.array([np.nan if v is None else v for v in r["gap_stalled_median"]], np.float64)
                ax.plot(w, st, "^:", color=col, mfc="none", label=f"depth {r['depth']}: stalled-mode gap (θ₀)")
            m, pr = r["measured"], r["predicted"]
            if m["width"] is not None:
                ax.plot([m["width"]], [thr], marker="*", ms=13, color=col, mec="k", mew=0.5)
            if pr["width"] is not None:
                ax.plot([min(max(pr["width"], lo_w), hi_w)], [thr], marker="P", ms=10, color=col, mec="k", mew=0.5)
            if pr["width"] is None:
                pred_txt = "never (predicted gap not falling)"
            elif pr.get("below_at_narrowest"):
                pred_txt = f"≤ {pr['width']:.0f} (below from the narrowest width" + (
                    ", but rising)" if pr.get("rising") else ")")
            else:
                pred_txt = f"{pr['width']:.3g}"
            if pr["slope"] is not None:
                pred_txt += f" (fit slope {pr['slope']:.2f})"
            ps = r.get("predicted_stalled")
            if ps:
                pred_txt += "; stalled-mode gap: " + ("never (not falling)" if ps["width"] is None else
                                                     f"≤ {ps['width']:.0f}, rising" if ps.get("rising") else
                                                     f"{ps['width']:.3g}")
            lines.append(f"depth {r['depth']}: measured "
                         + (f"{m['width']:.0f}" if m["width"] is not None else f"> {r['widest']:.0f}")
                         + ", predicted " + pred_txt)
        ax.axhline(thr, color="k", ls=":", lw=1)
        _width_axis(ax, all_w)
        ax.set_xlim(lo_w, hi_w)
        _log(ax, "y")
        ax.set_xlabel("hidden width n")
        ax.set_ylabel(GAP_LABEL, fontsize=7)
        ax.set_title(f"{act}: gap and its predictions from θ₀ (seed medians)", fontsize=9)
        ax.text(0.0, -0.16, "\n".join(lines), transform=ax.transAxes, fontsize=7, va="top")
        style.legend_outside(ax, fontsize=7)
    fig.suptitle(f"Crossover width: ★ measured (gap < {thr:g} from there on), ✚ predicted (fit of the prediction "
                 "over the narrowest widths, extrapolated)", fontsize=10)
    fig.tight_layout()
    return _save(fig, summary, Path(fig_dir) / "regimes_crossover")


def _save(fig, summary: dict, stem: Path) -> list[Path]:
    """:func:`studylib.style.save`, the figure title saying when the run is centred (every model is
    f(theta) - f(theta_0), :mod:`studylib.centring`; older summaries: uncentred)."""
    if summary.get("centred"):
        title = fig.get_suptitle()
        fig.suptitle(f"{title}\n(centred: f(θ) − f(θ₀))" if title else "centred: f(θ) − f(θ₀)", fontsize=9)
    return style.save(fig, stem)


def figures(out_dir, fig_dir=None) -> list[Path]:
    """Every figure of a stored ``study.regimes`` run, drawn from ``out_dir``/summary.json and
    curves.npz into ``fig_dir`` (default: ``out_dir``); returns the written paths."""
    out_dir = Path(out_dir)
    fig_dir = Path(fig_dir or out_dir)
    summary = read_json(out_dir / "summary.json")
    arrays = read_npz(out_dir / summary.get("curves_file", "curves.npz"))
    paths: list[Path] = []
    paths += fig_modes(summary, arrays, fig_dir)
    paths += fig_departure(summary, arrays, fig_dir)
    paths += fig_kernel_motion(summary, arrays, fig_dir)
    paths += fig_heatmaps(summary, fig_dir)
    paths += fig_gap_vs_laziness(summary, fig_dir)
    if len(summary["heatmaps"]["depth"]["values"]) > 0:
        paths += fig_wide_enough(summary, fig_dir)
    if len(summary["options"]) > 1:
        paths += fig_options(summary, fig_dir)
    if "gap_prediction" in summary:
        paths += fig_gap_prediction(summary, fig_dir)
    if summary.get("crossover", {}).get("rows"):
        paths += fig_crossover(summary, fig_dir)
    return paths
