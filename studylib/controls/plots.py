"""Figures of the positive controls, drawn from stored results only (summary.json; no JAX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studylib import style
from studylib.results import read_json

plt = style.plt


def _arr(values) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] if isinstance(row, list) else
                     (np.nan if row is None else row) for row in values], np.float64)


def _fit_title(fit: dict, var: str) -> str:
    if fit.get("slope") is None:
        return "fit: n/a"
    lo, hi = fit["ci95"]
    verdict = {True: "yes", False: "no", None: "n/a"}[fit.get("theory_in_ci95")]
    expected = " (μP: expected no)" if "mup" in fit else ""  # studylib.controls.summary.MUP_CLOSING_EXPECTED
    return (f"{fit['slope']:+.2f} [{lo:+.2f}, {hi:+.2f}] vs {var}^{fit['reference']['slope']:g}: "
            f"in CI {verdict}{expected}")


def _loglog_fit_line(ax, x, fit, **kw) -> None:
    """The fitted power law over the values it was fitted on."""
    if fit.get("slope") is None:
        return
    xs = np.asarray(fit["fit_widths"], np.float64)
    ax.plot(xs, np.exp(fit["intercept"]) * xs ** fit["slope"], lw=0.8, ls="-", alpha=0.6, label="fit (values fitted)",
            **kw)


def lazy_gap_vs_alpha(summary: dict, stem) -> list[Path]:
    """Gap (final, sup over time) vs alpha, one panel per activation, a line per width, alpha^-1 drawn."""
    entries = summary["lazy"]
    acts = list(dict.fromkeys(e["activation"] for e in entries))
    fig, axes = plt.subplots(2, len(acts), figsize=(5.2 * len(acts), 7.2), squeeze=False)
    for j, act in enumerate(acts):
        for i, key in enumerate(("gap", "gap_sup")):
            ax = axes[i, j]
            titles = []
            for e in (e for e in entries if e["activation"] == act):
                alphas = np.asarray(e["alphas"], np.float64)
                seeds = _arr(e["metrics"][key]["per_seed"])
                color = style.width_color(e["width"])
                for s in range(seeds.shape[1]):
                    ax.scatter(alphas, seeds[:, s], s=9, color=color, alpha=0.6, lw=0)
                mean = np.nanmean(seeds, axis=1)
                ax.plot(alphas, mean, marker="o", ms=3, color=color, label=f"n = {e['width']} (seed mean)")
                _loglog_fit_line(ax, alphas, e["slopes"][key], color=color)
                titles.append(f"n={e['width']}: " + _fit_title(e["slopes"][key], "α"))
                ok = np.isfinite(mean) & (mean > 0)
            if ok.any():
                xs = np.geomspace(alphas.min(), alphas.max(), 20)
                ax.plot(xs, mean[ok][0] * (xs / alphas[ok][0]) ** -1.0, color="0.4", ls="--", lw=1,
                        label=r"$\propto \alpha^{-1}$ (theorem, smooth models)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(r"lazy scale $\alpha$ (rate $\eta/\alpha^2$)")
            ax.set_ylabel(r"RMSE$(g_\alpha, g^{lin})$" + (" at the last step" if key == "gap" else ", sup over t"))
            ax.set_title(f"{act}\n" + "\n".join(titles), fontsize=7.5)
            ax.legend(fontsize=7)
    fig.suptitle("Lazy-scaling control: the network-linearization gap against α (Chizat, Oyallon & Bach 2019)")
    fig.tight_layout()
    return style.save(fig, stem)


def lazy_gate_flips(summary: dict, stem) -> list[Path]:
    """Fraction of flipped gates per layer at the last step against alpha (training inputs)."""
    entries = summary["lazy"]
    fig, axes = plt.subplots(1, len(entries), figsize=(3.6 * len(entries), 3.4), squeeze=False, sharey=True)
    for ax, e in zip(axes[0], entries, strict=True):
        alphas = np.asarray(e["alphas"], np.float64)
        flips = np.asarray(e["metrics"]["gate_flips_train"]["mean"], np.float64)  # (A, L)
        cmap = plt.get_cmap("plasma")
        for layer in range(flips.shape[1]):
            y = np.where(flips[:, layer] > 0, flips[:, layer], np.nan)
            ax.plot(alphas, y, marker="o", ms=3, color=cmap(0.85 * layer / max(flips.shape[1] - 1, 1)),
                    label=f"layer {layer + 1}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(r"$\alpha$")
        ax.set_title(f"{e['activation']}, n = {e['width']}", fontsize=8)
    axes[0, 0].set_ylabel("fraction of gates flipped\n(pre-activation sign vs θ₀; zeros not drawn)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Gates that flip during training, per hidden layer")
    fig.tight_layout()
    return style.save(fig, stem)


def closing_gap_vs_width(summary: dict, stem) -> list[Path]:
    c = summary["closing"]
    widths = np.asarray(c["widths"], np.float64)
    keys = ("rmse_net_vs_lin", "rmse_net_vs_lin_sup", "rmse_net_vs_lin_early", "rmse_net_vs_lin_train")
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, key in zip(axes, keys, strict=True):
        seeds = _arr(c["metrics"][key]["per_seed"])
        for s in range(seeds.shape[1]):
            ax.scatter(widths, seeds[:, s], s=10, color=[style.width_color(w) for w in widths], lw=0, zorder=3)
        mean = np.nanmean(seeds, axis=1)
        ax.plot(widths, mean, "k-o", ms=3, label="seed mean")
        _loglog_fit_line(ax, widths, c["slopes"][key], color="C3")
        ok = np.isfinite(mean) & (mean > 0)
        if ok.any():
            style.reference_slopes(ax, widths[ok], mean[ok][0])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(widths)
        ax.set_xticklabels([str(int(w)) for w in widths], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("hidden width n")
        what = {"rmse_net_vs_lin": "test grid, last step", "rmse_net_vs_lin_sup": "test grid, sup over t",
                "rmse_net_vs_lin_early": f"test grid, step {c['early_step']}",
                "rmse_net_vs_lin_train": "training inputs, last step"}[key]
        ax.set_ylabel(f"RMSE(network, linearization), {what}")
        ax.set_title(_fit_title(c["slopes"][key], "n"), fontsize=8)
        ax.legend(fontsize=7)
    s = c["setting"]
    r = s.get("test_range", float("nan"))
    fig.suptitle(f"Closing control: x in [-{s['x_range']:g}, {s['x_range']:g}] (test grid [-{r:g}, {r:g}]), "
                 f"depth {s['depth']}, "
                 f"b_std {s['b_std']:g}, {s['activation']}{'; centred: f(θ) − f(θ₀)' if s.get('centred') else ''}"
                 + ("; μP: the gap is not expected to close at n^-1/2" if s.get("parameterization") == "mup" else ""))
    fig.tight_layout()
    return style.save(fig, stem)


def figures(out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    summary = read_json(out_dir / "summary.json")
    paths = []
    if summary.get("lazy"):
        paths += lazy_gap_vs_alpha(summary, out_dir / "controls_lazy_gap_vs_alpha")
        paths += lazy_gate_flips(summary, out_dir / "controls_lazy_gate_flips")
    if summary.get("closing"):
        paths += closing_gap_vs_width(summary, out_dir / "controls_closing_gap_vs_width")
    return paths
