"""Figures of the comparison study, drawn from stored results only (summary.json + curves.npz; no JAX)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from studylib import style
from studylib.metrics import rate_label
from studylib.results import read_json, read_npz

plt = style.plt

#: (metric, axis label) panels of the gaps-vs-width figure; {where} = where the RMSE is taken.
WIDTH_PANELS = (
    ("rel_param_change", r"$\|\theta_T-\theta_0\|_2/\|\theta_0\|_2$"),
    ("rel_ntk_change", r"$\|K_T-K_0\|_F/\|K_0\|_F$ (train Gram)"),
    ("ntk_init_error", r"$\|K_0-\Theta\|_F/\|\Theta\|_F$ (init vs analytic)"),
    ("rmse_net_vs_lin", r"RMSE$(f_T, f^{lin}_T)$ {where}"),
    ("rmse_net_vs_closed_inf", r"RMSE$(f_T, f^{\infty}_T)$ {where}"),
    ("rmse_lin_vs_closed_emp", r"RMSE($f^{lin}_T$, NT flow with $K_0$)"),
    ("rmse_net_vs_lin_sup", r"$\sup_t$ RMSE$(f_t, f^{lin}_t)$ {where}"),
    ("rmse_net_vs_lin_early", r"RMSE$(f_t, f^{lin}_t)$ {where}, early step"),
    ("rmse_quad_vs_lin", r"RMSE$(f^{quad}_T, f^{lin}_T)$ {where}"),
)
TIME_PANELS = (
    ("rmse_net_vs_lin", r"RMSE$(f_t, f^{lin}_t)$ {where}"),
    ("rmse_net_vs_closed_inf", r"RMSE$(f_t, f^{\infty}_t)$ {where}"),
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


def _where(summary: dict) -> str:
    """Where the no-suffix RMSE is taken: the 1-D test grid, or the held-out test inputs."""
    data = summary["config"]["data"]
    if data.get("name") in ("cubic", "sin"):
        r = data["test_range"]
        return rf"on $[-{r:g},{r:g}]$"
    return "on test inputs"


def _centred(summary: dict) -> str:
    """Title suffix saying what the models are: centred f(theta) - f(theta_0) (studylib.centring) or not."""
    return "; centred: f(θ) − f(θ₀)" if summary.get("centred") else ""


def _time_axis(summary: dict, curves: dict) -> tuple[np.ndarray, str]:
    """The x values (W, T) of curves over training and their label: GD steps where every width shares one
    rate (lr_rule analytic), the absolute time lr·t where each width has its own (lr_rule emp)."""
    steps = np.asarray(curves["steps"], np.float64)
    if summary.get("lr_rule") == "emp" and "times" in curves:
        return np.asarray(curves["times"], np.float64), "time lr·t (each width at its own rate, equal times)"
    lr = [pw["learning_rate"] for pw in summary["per_width"]]
    label = f"GD step t (time = lr·t; lr = {lr[0]:.3g})" if len(set(lr)) == 1 else "GD step t"
    return np.broadcast_to(steps, (len(summary["per_width"]), len(steps))), label


def _horizon(summary: dict) -> str:
    """'step 1000' or, under lr_rule emp, 'time 1.5e+03' (every width's final lr·t)."""
    if summary.get("lr_rule") == "emp":
        return f"time lr·t = {summary['per_width'][0]['train_time']:.4g}"
    return f"step {summary['config']['steps']}"


def _width_axis(ax, widths) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths)
    ax.set_xticklabels([str(int(w)) for w in widths], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("hidden width n")


def _mean_and_range(ax, widths, seeds, **kw):
    """Seed mean with bars spanning min..max over seeds (NaN = diverged seeds, ignored)."""
    with warnings.catch_warnings():  # all-NaN widths (diverged, or the quadratic model not trained) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(seeds, axis=1)
        lo, hi = np.nanmin(seeds, axis=1), np.nanmax(seeds, axis=1)
    ax.errorbar(widths, mean, yerr=[mean - lo, hi - mean], **({"marker": "o", "ms": 3, "lw": 1.2, "capsize": 2} | kw))
    return mean


def gaps_vs_width(summary: dict, stem) -> list[Path]:
    widths = np.asarray(summary["widths"], np.float64)
    fig, axes = plt.subplots(3, 3, figsize=(12, 10))
    fit_widths = summary.get("fit_widths") or []
    for ax, (name, label) in zip(axes.flat, WIDTH_PANELS, strict=True):
        entry = summary["metrics"].get(name)
        if entry is None:
            ax.set_visible(False)
            continue
        seeds = _per_seed(entry)
        if not np.isfinite(seeds).any():  # e.g. the quadratic model where --quad-max-width excludes every width
            ax.text(0.5, 0.5, f"{name}:\nnot measured in this run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for j in range(seeds.shape[1]):
            ax.scatter(widths, seeds[:, j], s=10, color=[style.width_color(w) for w in widths], alpha=0.8, lw=0,
                       zorder=3, label="single seed" if j == 0 else None)
        mean = _mean_and_range(ax, widths, seeds, color="k", label="seed mean (bars: min..max)")
        ok = np.isfinite(mean) & (mean > 0)
        if ok.any():
            style.reference_slopes(ax, widths[ok], mean[ok][0])
        fit = summary["slopes"].get(name, {})
        title = "fitted slope: n/a"
        fitted = fit.get("fit_widths") or fit_widths
        if fitted:
            ax.axvspan(min(fitted) / 1.2, max(fitted) * 1.2, color="0.94", lw=0, zorder=0,
                       label="fit range (widths fitted)")
        if fit.get("slope") is not None:
            lo, hi = fit["ci95"]
            where = f"n={min(fitted)}..{max(fitted)}: " if fitted else ""
            title = f"fitted {where}slope {fit['slope']:+.2f}  [95% CI {lo:+.2f}, {hi:+.2f}]"
        if fit.get("reference"):
            title += f"\npublished: {rate_label(fit['reference']['slope'])}"
        ax.set_title(title, fontsize=8)
        _width_axis(ax, widths)
        ax.set_yscale("log")
        ax.set_ylabel(label.replace("{where}", _where(summary)))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.01))
    cfg = summary["config"]
    fig.suptitle(f"Final-time gaps vs width ({_horizon(summary)}, {cfg['model']['parameterization']} param., "
                 f"depth {cfg['model']['depth']}, {len(summary['seeds'])} seeds{_centred(summary)})")
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


def _width_bands(ax, steps, widths, curve) -> None:
    """A line per width (seed mean of ``curve`` (W, S, T) over ``steps``, (T,) or per width (W, T)) with a
    band min..max over seeds."""
    steps = np.broadcast_to(np.asarray(steps, np.float64), (len(widths), curve.shape[-1]))
    for i, w in enumerate(widths):
        with np.errstate(all="ignore"):
            mean = np.nanmean(curve[i], axis=0)
            lo, hi = np.nanmin(curve[i], axis=0), np.nanmax(curve[i], axis=0)
        col = style.width_color(w)
        ax.plot(steps[i], mean, color=col, lw=1.3, label=f"n={w}")
        ax.fill_between(steps[i], lo, hi, color=col, alpha=0.15, lw=0)


def gaps_over_time(summary: dict, curves: dict, stem) -> list[Path]:
    widths = np.asarray(curves["widths"])
    steps, xlabel = _time_axis(summary, curves)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (name, label) in zip(axes.flat, TIME_PANELS, strict=True):
        c = curves.get(f"curve/{name}")
        if c is None:
            ax.set_visible(False)
            continue
        _width_bands(ax, steps, widths, c)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label.replace("{where}", _where(summary)))
    style.legend_outside(axes[0, 2], title="width (mean, band = min..max over seeds)", fontsize=7)
    fig.suptitle(f"Gaps and losses over training{_centred(summary)}")
    fig.tight_layout()
    return style.save(fig, stem)


def predictions(summary: dict, curves: dict, stem, seed_index: int = 0) -> list[Path]:
    """Network / linearization / infinite-width closed form over x (1-D inputs only)."""
    if not _is_1d_grid(summary, curves):
        return []
    widths = np.asarray(curves["widths"])
    x_test, x_train, y_train = curves["x_test"][:, 0], curves["x_train"][:, 0], curves["y_train"][:, 0]
    inside = curves.get("region/interp", np.ones_like(x_test, bool))
    quad = curves.get("pred_test/quad")
    trained = [i for i in range(len(widths)) if quad is not None and np.isfinite(quad[i, seed_index, -1]).all()]
    picks = sorted({0, len(widths) - 1} | set(trained[-1:]))
    fig, axes = plt.subplots(1, len(picks), figsize=(5.5 * len(picks), 4), squeeze=False)
    step = int(curves["steps"][-1])
    for ax, i in zip(axes[0], picks, strict=True):
        ax.axvspan(x_test[inside].min(), x_test[inside].max(), color="0.93", lw=0, label="interpolation range")
        styles = {"net": ("network", "C3", "-"), "lin": ("linearized", "C0", "--"),
                  "closed_inf": ("infinite-width closed form", "k", "-."),
                  "quad": ("quadratic model (2nd-order Taylor)", "C2", ":")}
        for key, (lab, col, ls) in styles.items():
            if f"pred_test/{key}" not in curves or not np.isfinite(curves[f"pred_test/{key}"][i, seed_index, -1]).all():
                continue
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
    labelled = {}  # every panel's entries once: the quadratic model is drawn only where it was trained
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(lab, h)
    axes[0, -1].legend(labelled.values(), labelled.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       borderaxespad=0.0, fontsize=7)
    fig.tight_layout()
    return style.save(fig, stem)


#: Display names of the predictors.
PREDICTOR_LABELS = {"net": "network", "lin": "linearization", "closed_inf": "closed form, analytic Θ",
                    "closed_emp": "closed form, empirical K₀", "quad": "quadratic model",
                    "closed_inf_limit": "closed form, analytic Θ, t = ∞"}


def test_over_time(summary: dict, curves: dict, stem) -> list[Path]:
    """Held-out test accuracy (with classes) and test loss over training: a panel per predictor, a
    colour per width (seed mean; band = min..max over seeds). Nothing without held-out targets."""
    rows = [(m, lab) for m, lab in (("test_accuracy", "test accuracy"),
                                    ("test_loss", r"test loss $\frac{1}{2}\,\mathrm{mean}(f_t-y)^2$"))
            if f"curve/{m}_net" in curves]
    if not rows:
        return []
    widths = np.asarray(curves["widths"])
    steps, xlabel = _time_axis(summary, curves)
    preds = [p for p in PREDICTOR_LABELS if f"curve/{rows[0][0]}_{p}" in curves and not p.endswith("_limit")]
    fig, axes = plt.subplots(len(rows), len(preds), figsize=(3.4 * len(preds) + 1.5, 3.1 * len(rows)),
                             squeeze=False, sharey="row")
    for r, (metric, label) in enumerate(rows):
        for c, p in enumerate(preds):
            ax = axes[r, c]
            vals = curves[f"curve/{metric}_{p}"]
            _width_bands(ax, steps, widths, vals)
            ax.set_xscale("symlog", linthresh=1)
            if metric == "test_loss":
                ax.set_yscale("log")
            ax.set_title(PREDICTOR_LABELS[p], fontsize=9)
            ax.set_xlabel(xlabel if r == len(rows) - 1 else "")
            if c == 0:
                ax.set_ylabel(label)
    style.legend_outside(axes[0, -1], title="width", fontsize=7)
    data = summary["config"]["data"]
    fig.suptitle(f"Held-out test set over training ({data['name']}, {data['n_test']} test inputs, "
                 f"{len(summary['seeds'])} seeds{_centred(summary)})")
    fig.tight_layout()
    return style.save(fig, stem)


def test_vs_width(summary: dict, stem) -> list[Path]:
    """Final test accuracy and loss of every predictor against width, and how often the network
    predicts the same class as its linearization / the infinite-width closed form."""
    metrics = summary["metrics"]
    panels = [m for m in ("test_accuracy", "test_loss") if f"{m}_net" in metrics]
    agree = [k for k in metrics if k.startswith("test_agreement_")]
    if not panels:
        return []
    widths = np.asarray(summary["widths"], np.float64)
    n_panels = len(panels) + bool(agree)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 3.8), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=False):
        for j, (p, lab) in enumerate(PREDICTOR_LABELS.items()):
            if f"{metric}_{p}" in metrics:
                _mean_and_range(ax, widths, _per_seed(metrics[f"{metric}_{p}"]), color=f"C{j}", label=lab)
        _width_axis(ax, widths)
        if metric == "test_loss":
            ax.set_yscale("log")
        ax.set_ylabel(metric.replace("_", " ") + " (final)")
    if agree:
        ax = axes[0, -1]
        for j, name in enumerate(agree):
            a, b = name.removeprefix("test_agreement_").split("_vs_")
            _mean_and_range(ax, widths, _per_seed(metrics[name]), color=f"C{j + 4}",
                            label=f"{PREDICTOR_LABELS[a]} = {PREDICTOR_LABELS[b]}")
        _width_axis(ax, widths)
        ax.set_ylabel("fraction of test inputs, same class (final)")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    fig.suptitle(f"Held-out test set at the end ({_horizon(summary)}) against width (seed mean, bars: min..max)"
                 f"{_centred(summary)}")
    fig.tight_layout()
    return style.save(fig, stem)


def test_scatter(summary: dict, curves: dict, stem, seed_index: int = 0) -> list[Path]:
    """Network outputs against the infinite-width closed form's and against the linearization's on
    every test output (M x k points), at the last step, for the narrowest and the widest net; the
    diagonal is agreement. For data whose inputs are not a 1-D grid."""
    if "pred_test/net" not in curves:
        return []
    widths = np.asarray(curves["widths"])
    picks = sorted({0, len(widths) - 1})
    others = [p for p in ("closed_inf", "lin") if f"pred_test/{p}" in curves]
    fig, axes = plt.subplots(len(others), len(picks), figsize=(4.4 * len(picks), 4.0 * len(others)), squeeze=False)
    step = int(curves["steps"][-1])
    for r, other in enumerate(others):
        for c, i in enumerate(picks):
            ax = axes[r, c]
            s = _converged_seed(summary, i, seed_index, "lin" if other == "lin" else None)
            ax.set_xlabel(f"{PREDICTOR_LABELS[other]}, step {step}")
            ax.set_ylabel(f"network, step {step}")
            if s is None:
                ax.set_title(f"width n = {widths[i]}: every seed diverged", fontsize=9)
                continue
            f = np.asarray(curves["pred_test/net"][i, s, -1], np.float64).reshape(-1)
            g = np.asarray(curves[f"pred_test/{other}"][i, s, -1], np.float64).reshape(-1)
            ok = np.isfinite(f) & np.isfinite(g)
            ax.scatter(g[ok], f[ok], s=3, alpha=0.35, lw=0, color=style.width_color(widths[i]))
            if ok.any():
                lo, hi = min(f[ok].min(), g[ok].min()), max(f[ok].max(), g[ok].max())
                ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="agreement")
                rmse = float(np.sqrt(np.mean((f[ok] - g[ok]) ** 2)))
                ax.set_title(f"width n = {widths[i]}, seed {summary['seeds'][s]}: RMSE {rmse:.3g}", fontsize=9)
                ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Outputs on the test inputs at the last step (every output of every test input)")
    fig.tight_layout()
    return style.save(fig, stem)


def gap_prediction(summary: dict, curves: dict, stem) -> list[Path]:
    """The measured network-linearization gap beside its first-order prediction from theta_0
    (``gap_predicted``, docs/crossover.md): left, both against width at the last step (log-log, seed
    mean and min..max, with the quadratic model's gap to the linearization where it was trained: the
    prediction is its first order); right, measured / predicted over time per width. Nothing when the
    prediction was not made (k > 1 outputs, many training inputs)."""
    entry = summary["metrics"].get("gap_predicted")
    if entry is None or not np.isfinite(_per_seed(entry)).any():
        return []
    widths = np.asarray(summary["widths"], np.float64)
    where = _where(summary)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = (("rmse_net_vs_lin", "k", "o", "measured: RMSE(network, linearization)"),
              ("gap_predicted", "tab:red", "s", r"predicted from $\theta_0$ (first order)"),
              ("rmse_quad_vs_lin", "tab:blue", "^", "quadratic model vs linearization"))
    first = None
    for name, color, marker, label in series:
        if name not in summary["metrics"] or not np.isfinite(_per_seed(summary["metrics"][name])).any():
            continue
        fit = summary["slopes"].get(name, {})
        if fit.get("slope") is not None:
            label += f" (slope {fit['slope']:+.2f})"
        mean = _mean_and_range(ax, widths, _per_seed(summary["metrics"][name]), color=color, marker=marker,
                               label=label)
        first = mean[np.isfinite(mean)][0] if first is None else first
    if first is not None and first > 0:
        style.reference_slopes(ax, widths, first)
    _width_axis(ax, widths)
    ax.set_yscale("log")
    ax.set_ylabel(f"RMSE {where}, step {summary['config']['steps']}")
    ax.set_title("final-time gap: measured vs first-order prediction", fontsize=9)
    ax.legend(fontsize=7)
    steps = np.asarray(curves["steps"], np.float64)
    measured, predicted = curves["curve/rmse_net_vs_lin"], curves["curve/gap_predicted"]  # (W, S, T)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = np.nanmedian(measured / predicted, axis=1)  # (W, T)
    for i, w in enumerate(widths):
        bx.plot(steps[1:], ratio[i, 1:], color=style.width_color(w), lw=1.2, label=f"n = {int(w)}")
    bx.axhline(1.0, color="k", lw=0.8, ls="--", label="prediction exact")
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("GD step t (time = learning rate x t)")
    bx.set_ylabel("measured / predicted gap (seed median)")
    bx.set_title("where first order holds: ratio near 1", fontsize=9)
    bx.legend(fontsize=7, ncol=2)
    cfg = summary["config"]
    fig.suptitle(f"First-order prediction of the gap ({cfg['model']['activation']}, depth {cfg['model']['depth']}, "
                 f"{len(summary['seeds'])} seeds)")
    fig.tight_layout()
    return style.save(fig, stem)


def _converged_seed(summary: dict, width_index: int, first: int, model: str | None) -> int | None:
    """The first seed (from ``first`` on, then the others) whose network and, if named, ``model`` did not
    diverge at this width; None when every seed did."""
    pw = summary["per_width"][width_index]
    n = len(summary["seeds"])
    for s in [first, *(j for j in range(n) if j != first)]:
        if pw["diverged_net_step"][s] < 0 and (model is None or pw[f"diverged_{model}_step"][s] < 0):
            return s
    return None


def _is_1d_grid(summary: dict, curves: dict) -> bool:
    return "x_test" in curves and curves["x_test"].ndim == 2 and curves["x_test"].shape[1] == 1


#: Every figure, in the order :func:`figures` lists them: name (the file stem is ``compare_<name>``), the
#: function, whether it takes the curves, and whether it is drawn for 1-D inputs (True), for other inputs
#: (False) or for both (None). A function returns no paths where its figure does not apply.
FIGURES = (("gaps_vs_width", gaps_vs_width, False, None),
           ("layer_change_vs_width", layer_change_vs_width, False, None),
           ("gaps_over_time", gaps_over_time, True, None),
           ("predictions", predictions, True, None),
           ("gap_prediction", gap_prediction, True, None),
           ("test_over_time", test_over_time, True, False),
           ("test_vs_width", test_vs_width, False, False),
           ("test_scatter", test_scatter, True, False))
#: The figures a helper process draws while this one draws the rest (:func:`figures`): about half of the
#: drawing time. Measured for the default run, CPU s: gaps_vs_width 3.6, gaps_over_time 2.7,
#: gap_prediction 1.2, predictions 0.7, layer_change_vs_width 0.6; the helper's start-up (Python, NumPy,
#: matplotlib: ~1.3 s of CPU) is paid while the run computes when it is started first
#: (:func:`prestart_figures`), so it takes predictions too (4.6 s against this process's 4.2 s).
HELPER_FIGURES = ("gaps_over_time", "gap_prediction", "predictions", "test_over_time", "test_scatter")
#: The helper started before the run (:func:`prestart_figures`), waiting for its figures; taken by :func:`figures`.
_PRESTARTED: list = []
#: Environment variable: 'off' (or 0, false, no) draws every figure in this process.
HELPER_ENV = "NTK_STUDY_FIGURE_HELPER"


def figure_names(summary: dict, curves: dict) -> list[str]:
    """The names of :data:`FIGURES` drawn for this run (1-D inputs: the predictions over x; other inputs:
    the held-out test figures and the output scatter as well)."""
    one_d = _is_1d_grid(summary, curves)
    return [name for name, _, _, where in FIGURES if where is None or where == one_d]


def draw(names, summary: dict, curves: dict, fig_dir) -> dict[str, list[Path]]:
    """Draw the figures ``names`` (of :data:`FIGURES`) into ``fig_dir``: {name: the paths written}."""
    table = {name: (fn, with_curves) for name, fn, with_curves, _ in FIGURES}
    out = {}
    for name in names:
        fn, with_curves = table[name]
        stem = Path(fig_dir) / f"compare_{name}"
        out[name] = list(fn(summary, curves, stem) if with_curves else fn(summary, stem))
    return out


def _helper_wanted() -> bool:
    import os

    if os.environ.get(HELPER_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return len(cores) > 1


def _start_helper(out_dir, fig_dir, names: list[str]):
    """A Python process drawing ``names`` from the stored results in ``out_dir`` (:func:`helper_main`), or
    None if it cannot be started. With no ``names`` it imports what drawing needs and then waits for
    ``[out_dir, fig_dir, name, ...]`` as one JSON line on its stdin (:func:`prestart_figures`)."""
    import os
    import subprocess
    import sys

    import studylib

    root = str(Path(studylib.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    try:
        args = [str(out_dir), str(fig_dir), *names] if names else []
        return subprocess.Popen([sys.executable, "-c", "from studylib.compare.plots import helper_main; helper_main()",
                                 *args], stdin=None if names else subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    except OSError:
        return None


def helper_main(argv: list[str] | None = None) -> None:
    """The helper process of :func:`figures`: ``OUT_DIR FIG_DIR NAME...``, or with no arguments the same as a
    JSON list on one line of stdin (nothing drawn at end of input: the run drew no figures); prints
    {name: [path, ...]} as JSON."""
    import json
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # started before the run (prestart_figures): matplotlib is imported (style) already
        line = sys.stdin.readline()
        if not line.strip():
            return
        argv = json.loads(line)
    out_dir, fig_dir, *names = argv
    summary, curves = _load(out_dir)
    print(json.dumps({k: [str(p) for p in v] for k, v in draw(names, summary, curves, fig_dir).items()}))


def prestart_figures() -> None:
    """Start :func:`figures`' helper process now (where one is wanted), so that its start-up -- Python, NumPy,
    matplotlib -- overlaps the run instead of the drawing at its end; it waits for its figures on stdin and
    ends without drawing when this process ends without asking for any."""
    if not _PRESTARTED and _helper_wanted():
        helper = _start_helper(None, None, [])
        if helper is not None:
            _PRESTARTED.append(helper)


def discard_prestarted() -> None:
    """End the helper :func:`prestart_figures` started (a run that stopped before its figures)."""
    while _PRESTARTED:
        helper = _PRESTARTED.pop()
        helper.kill()
        helper.communicate()


def _take_prestarted(out_dir, fig_dir, names: list[str]):
    """The prestarted helper (:func:`prestart_figures`), told to draw ``names``; None if there is none or it
    cannot be told (it ended)."""
    import json

    if not _PRESTARTED:
        return None
    helper = _PRESTARTED.pop()
    try:
        helper.stdin.write(json.dumps([str(out_dir), str(fig_dir), *names]) + "\n")
        helper.stdin.flush()  # communicate() closes it
    except (OSError, ValueError):
        helper.kill()
        return None
    return helper


def figures(out_dir, fig_dir=None) -> list[Path]:
    """All figures of a stored ``study.compare`` run (:func:`figure_names`); written to ``fig_dir``
    (default: ``out_dir``). Where this process may use more than one core (and :data:`HELPER_ENV` is not
    'off'), a second Python process draws :data:`HELPER_FIGURES` meanwhile: the same functions on the
    same stored results, so the same files; a figure the helper did not write (it failed or could not
    start) is drawn here after all."""
    import json

    summary, curves = _load(out_dir)
    fig_dir = Path(fig_dir or out_dir)
    names = figure_names(summary, curves)
    theirs = [n for n in names if n in HELPER_FIGURES] if _helper_wanted() else []
    helper = (_take_prestarted(out_dir, fig_dir, theirs) or _start_helper(out_dir, fig_dir, theirs)) if theirs else None
    drawn = draw([n for n in names if helper is None or n not in theirs], summary, curves, fig_dir)
    if helper is not None:
        stdout, _ = helper.communicate()
        if helper.returncode == 0:
            try:
                drawn |= {k: [Path(p) for p in v] for k, v in json.loads(stdout.strip().splitlines()[-1]).items()}
            except (ValueError, IndexError, AttributeError):
                pass
        drawn |= draw([n for n in theirs if n not in drawn], summary, curves, fig_dir)
    return [p for n in names for p in drawn[n]]
