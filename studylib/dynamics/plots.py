"""Figures of the dynamics study, drawn from stored results only (summary.json + curves.npz; no JAX).

* ``dynamics_b<B>``: for batch size B, against epoch (log x): relative parameter change,
  relative NTK change (at (x0, x0) and on the training Gram), training loss and the RMSE
  between network and linearization; one colour per width, seed mean with a min-max band,
  solid = network, dashed = linearized model.
* ``dynamics_function``: the trained function on the test grid for every (batch size, width), seed 0.
* ``dynamics_summary_vs_width``: final relative changes against width for each batch size (log-log),
  with the seed's reported batch-1 numbers and reference slopes.
* ``dynamics_test`` (data with held-out targets and inputs of more than one dimension, e.g. digits):
  test loss and accuracy (or RMSE) of network and linearization against width, and the network's
  against the linearization's test outputs (scatter) for the narrowest and the widest net.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studylib import style
from studylib.results import read_json, read_npz

plt = style.plt

BATCH_MARKERS = ("o", "s", "^", "D", "v", "P")


def _band(ax, x, per_seed, color, ls="-", label=None, lw=1.4):
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(per_seed, axis=0)
        lo, hi = np.nanmin(per_seed, axis=0), np.nanmax(per_seed, axis=0)
    ax.plot(x, mean, color=color, ls=ls, lw=lw, label=label)
    if per_seed.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def _load(out_dir) -> tuple[dict, dict]:
    out_dir = Path(out_dir)
    summary = read_json(out_dir / "summary.json")
    return summary, read_npz(out_dir / summary.get("curves_file", "curves.npz"))


def _cell(summary, w, b):
    for pc in summary["per_cell"]:
        if pc["width"] == w and pc["batch_size"] == b:
            return pc
    raise KeyError((w, b))


def _width_ticks(ax, ws) -> None:
    """Ticks at the widths themselves (log axes spanning less than a decade label minor ticks on top of
    each other)."""
    ax.set_xticks(list(ws), [str(int(w)) for w in ws])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())


def _n_train(summary) -> int:
    return int(summary.get("data", {}).get("n_train", 10))


def _gram(summary) -> str:
    """'P x P' of the recorded Gram (P = N k with k outputs)."""
    p = _n_train(summary) * int(summary.get("data", {}).get("outputs", 1))
    return f"{p}x{p}"


def _ratio(pc) -> float:
    return float(np.nanmedian(np.asarray(pc["lr_over_critical_emp"], np.float64)))


def dynamics_figure(summary: dict, c: dict, batch: int, stem) -> list[Path]:
    """Curves against epoch at one batch size (see the module docstring)."""
    epochs = c["epochs"]
    sel = epochs > 0
    x = epochs[sel]
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.2), sharex=True)
    (a_p, a_k), (a_l, a_r) = axes
    for w in summary["widths"]:
        tag = f"w{w}_b{batch}"
        col = style.width_color(w)
        pc = _cell(summary, w, batch)
        lab = f"n={w}  (η/η_crit={_ratio(pc):.2g})"
        lin_end = c[f"{tag}/curve/rel_param_change_lin"][:, -1]
        n_div = int(np.sum(~np.isfinite(lin_end) | (lin_end > 1e3)))
        if n_div:
            lab += f"\n  linearized diverged ({n_div}/{lin_end.size} seeds)"
        cur = lambda name, tag=tag: c[f"{tag}/curve/{name}"][:, sel]  # noqa: E731
        _band(a_p, x, cur("rel_param_change"), col, label=lab)
        _band(a_p, x, cur("rel_param_change_lin"), col, ls="--")
        _band(a_k, x, cur("ntk_x0_change"), col, label=lab)
        _band(a_k, x, cur("rel_ntk_change"), col, ls=":")
        _band(a_l, x, cur("loss_net"), col, label=lab)
        _band(a_l, x, cur("loss_lin"), col, ls="--")
        _band(a_r, x, cur("rmse_net_vs_lin_train"), col, label=lab)
    a_p.set_ylabel(r"$\|\theta_t-\theta_0\|_2/\|\theta_0\|_2$")
    a_p.set_title("relative parameter change\n(solid: network, dashed: linearized)")
    a_k.set_ylabel(r"solid: $|K_t(x_0,x_0)-K_0(x_0,x_0)|/|K_0(x_0,x_0)|$" "\n"
                   r"dotted: $\|K_t-K_0\|_F/\|K_0\|_F$ (train Gram)")
    a_k.set_title(f"relative NTK change of the network\n(solid: at $x_0$ = first training point; dotted: "
                  f"{_gram(summary)} train Gram)")
    a_l.set_ylabel(summary["conventions"]["loss"].split(" over")[0].replace("L = ", "training loss "))
    a_l.set_title("training loss\n(solid: network, dashed: linearized)")
    a_r.set_ylabel(rf"RMSE$(f_{{net}}, f_{{lin}})$ on the {_n_train(summary)} training points")
    a_r.set_title("network vs its linearization")
    # The linearized model diverges where lr exceeds its critical rate: keep the axes on the
    # network's range (diverged curves leave the panel upwards; the legend says which).
    for ax, name in ((a_p, "rel_param_change"), (a_l, "loss_net")):
        vals = np.concatenate([c[f"w{w}_b{batch}/curve/{name}"][:, sel].ravel() for w in summary["widths"]])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size:
            ax.set_ylim(vals.min() / 3, vals.max() * 30)
    ok = [c[f"w{w}_b{batch}/curve/rmse_net_vs_lin_train"][:, sel] for w in summary["widths"]]
    vals = np.concatenate([v.ravel() for v in ok]) if ok else np.array([])
    vals = vals[np.isfinite(vals) & (vals > 0) & (vals < 1e3)]
    if vals.size:
        a_r.set_ylim(vals.min() / 3, vals.max() * 30)
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    style.legend_outside(a_k, title="width (median η/η_crit of K_0)")
    seeds = len(summary["seeds"])
    band = f"mean and min-max band over {seeds} seeds" if seeds > 1 else f"one seed ({summary['seeds'][0]})"
    lr = summary["config"]["lr"] or _cell(summary, summary["widths"][0], batch)["lr"]
    fig.suptitle(f"batch size {batch}: SGD, lr={lr:.3g}, {summary['config']['model']['parameterization']} "
                 f"parameterization, {band}")
    fig.tight_layout()
    return style.save(fig, stem)


def function_figure(summary: dict, c: dict, stem) -> list[Path]:
    """The trained functions of seed 0 against the training points, one panel per cell."""
    ws, bs = summary["widths"], summary["batch_sizes"]
    fig, axes = plt.subplots(len(bs), len(ws), figsize=(3.4 * len(ws), 2.7 * len(bs)), squeeze=False,
                             sharex=True, sharey=True)
    xt, xtr, ytr = c["x_test"], c["x_train"], c["y_train"]
    lo, hi = ytr.min(), ytr.max()
    pad = 0.6 * (hi - lo)
    for i, b in enumerate(bs):
        for j, w in enumerate(ws):
            ax = axes[i, j]
            tag = f"w{w}_b{b}"
            ax.plot(xt, xt**3 / 20, color="0.6", ls=":", lw=1, label="target x³/20")
            ax.plot(xt, c[f"{tag}/f0_test"][0], color="0.5", lw=0.8, label="init")
            ax.plot(xt, c[f"{tag}/f_net_test"][0], color=style.width_color(w), lw=1.6, label="network")
            ax.plot(xt, c[f"{tag}/f_lin_test"][0], color="k", ls="--", lw=1, label="linearized")
            ax.scatter(xtr, ytr, color="crimson", s=12, zorder=5, label="training points")
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_title(f"width {w}, batch {b}")
            if i == len(bs) - 1:
                ax.set_xlabel("x")
            if j == 0:
                ax.set_ylabel("f(x) after training")
    style.legend_outside(axes[0, -1])
    fig.suptitle(f"trained function at epoch {summary['config']['epochs']} (seed {summary['seeds'][0]})")
    fig.tight_layout()
    return style.save(fig, stem)


def summary_figure(summary: dict, c: dict, stem) -> list[Path]:
    """Final relative changes against width per batch size, and the per-layer weight change."""
    ws = np.asarray(summary["widths"], np.float64)
    bs = summary["batch_sizes"]
    m = summary["metrics"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2))
    panels = (("rel_param_change", r"$\|\theta_T-\theta_0\|/\|\theta_0\|$", "relative parameter change"),
              ("ntk_x0_change", r"$|K_T(x_0,x_0)-K_0|/|K_0|$", "relative NTK change at (x0, x0)"),
              ("rel_ntk_change", r"$\|K_T-K_0\|_F/\|K_0\|_F$", "relative NTK change, train Gram"))
    for ax, (name, ylab, title) in zip(axes.flat, panels, strict=False):
        shown: list[float] = []
        for k, b in enumerate(bs):
            mu = np.array([np.nan if m[name][f"w{int(w)}_b{b}"]["mean"] is None else m[name][f"w{int(w)}_b{b}"]["mean"]
                           for w in ws], np.float64)
            per = [np.asarray(m[name][f"w{int(w)}_b{b}"]["per_seed"], np.float64) for w in ws]
            lo = mu - np.array([np.nanmin(p) for p in per])
            hi = np.array([np.nanmax(p) for p in per]) - mu
            ax.errorbar(ws, mu, yerr=[lo, hi], marker=BATCH_MARKERS[k % 6], capsize=3, lw=1.2,
                        label=f"batch {b}")
            shown += list(mu - lo) + list(mu + hi)
        if name == "rel_param_change":
            seed = summary.get("seed_reported_batch1_rel_param_change") or {}
            if seed and summary["config"]["epochs"] == 20000:
                sx = np.array([float(w) for w in seed])
                ax.scatter(sx, [seed[w] for w in seed], marker="x", color="k", s=50, zorder=6,
                           label="seed's post, batch 1")
                shown += [float(v) for v in seed.values()]
        finite = [v for v in ax.get_lines()[0].get_ydata() if np.isfinite(v) and v > 0] if ax.get_lines() else []
        if finite and len(ws) > 1:
            style.reference_slopes(ax, ws, finite[0])
        shown_arr = np.asarray([v for v in shown if np.isfinite(v) and v > 0])
        if shown_arr.size:  # the data decide the range, not the reference lines
            ax.set_ylim(shown_arr.min() / 2, shown_arr.max() * 2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("hidden width n")
        _width_ticks(ax, ws)
        ax.set_ylabel(ylab)
        ax.set_title(title)
        style.legend_outside(ax)
    ax = axes[1, 1]
    b = bs[0]
    n_layers = np.asarray(c[f"w{int(ws[0])}_b{b}/curve/rel_weight_change"]).shape[2]
    for layer in range(n_layers):
        key = f"rel_weight_change_l{layer + 1}"
        mu = np.array([m[key][f"w{int(w)}_b{b}"]["mean"] or np.nan for w in ws], np.float64)
        ax.plot(ws, mu, marker="o", lw=1.2, color=plt.get_cmap("plasma")(layer / max(n_layers - 1, 1) * 0.85),
                label=f"layer {layer + 1}" + (" (input)" if layer == 0 else " (readout)" if layer == n_layers - 1
                                              else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hidden width n")
    _width_ticks(ax, ws)
    ax.set_ylabel(r"$\|W_l(T)-W_l(0)\|_F/\|W_l(0)\|_F$")
    ax.set_title(f"per-layer weight change, batch {b}")
    style.legend_outside(ax)
    ns = len(summary["seeds"])
    what = f"mean over {ns} seeds, bars: min-max" if ns > 1 else f"one seed ({summary['seeds'][0]})"
    fig.suptitle(f"after {summary['config']['epochs']} epochs; {what}; grey: reference slopes")
    fig.tight_layout()
    return style.save(fig, stem)


def _per_width(m: dict, name: str, ws, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds of metric ``name`` per width at batch ``b`` (NaN where absent)."""
    mu, lo, hi = [], [], []
    for w in ws:
        e = m.get(name, {}).get(f"w{int(w)}_b{b}")
        per = np.asarray([] if e is None else e["per_seed"], np.float64)
        ok = per[np.isfinite(per)]
        mu.append(np.nan if e is None or e["mean"] is None else e["mean"])
        lo.append(ok.min() if ok.size else np.nan)
        hi.append(ok.max() if ok.size else np.nan)
    return np.array(mu, np.float64), np.array(lo, np.float64), np.array(hi, np.float64)


def test_figure(summary: dict, c: dict, stem) -> list[Path]:
    """Held-out metrics against width per batch size, and network vs linearization test outputs."""
    ws = np.asarray(summary["widths"], np.float64)
    bs = summary["batch_sizes"]
    m = summary["metrics"]
    classes = "test_accuracy_net" in m
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.6))
    second = (("test_accuracy_net", "test_accuracy_lin"), "test accuracy (argmax of the outputs)") if classes \
        else (("test_rmse_net", "test_rmse_lin"), "test RMSE against the targets")
    for ax, (names, title) in zip(axes[0], ((("test_loss_net", "test_loss_lin"), "test loss"), second), strict=True):
        for k, b in enumerate(bs):
            for name, ls in zip(names, ("-", "--"), strict=True):
                mu, lo, hi = _per_width(m, name, ws, b)
                ax.errorbar(ws, mu, yerr=[mu - lo, hi - mu], marker=BATCH_MARKERS[k % 6], ls=ls, capsize=3, lw=1.2,
                            label=f"batch {b}, {'network' if name.endswith('net') else 'linearized'}")
        if not classes or "loss" in names[0]:
            init = _per_width(m, names[0].replace("_net", "_init"), ws, bs[0])[0]
            if np.isfinite(init).any():
                ax.plot(ws, init, color="0.5", ls=":", lw=1.0, label="network at init")
        ax.set_xscale("log")
        if "loss" in names[0] or not classes:
            ax.set_yscale("log")
            net_mu = _per_width(m, names[0], ws, bs[0])[0]
            fin = net_mu[np.isfinite(net_mu) & (net_mu > 0)]
            if fin.size:  # the network's range decides (a diverged linearization leaves upwards)
                ax.set_ylim(fin.min() / 5, fin.max() * 20)
        ax.set_xlabel("hidden width n")
        _width_ticks(ax, ws)
        ax.set_title(f"{title}\n(solid: network, dashed: linearized; bars: min-max over seeds)")
        style.legend_outside(ax)
    b = bs[0]
    for ax, w in zip(axes[1], (int(ws[0]), int(ws[-1])), strict=True):
        fn = np.asarray(c[f"w{w}_b{b}/f_net_test"], np.float64)[0]
        fl = np.asarray(c[f"w{w}_b{b}/f_lin_test"], np.float64)[0]
        ok = np.isfinite(fn) & np.isfinite(fl)
        ax.scatter(fl[ok], fn[ok], s=4, alpha=0.4, color=style.width_color(w))
        if ok.any():  # axes on the network's range: a diverged linearization's points leave the panel
            span = max(float(np.abs(fn[ok]).max()), 1e-12) * 1.3
            ax.plot([-span, span], [-span, span], color="k", lw=0.8, ls=":")
            ax.set_xlim(-span, span)
            ax.set_ylim(-span, span)
            off = int(np.sum(np.abs(fl[ok]) > span))
            if off:
                ax.text(0.02, 0.95, f"{off} linearized outputs beyond the axes", transform=ax.transAxes, fontsize=8,
                        va="top")
        ax.set_xlabel("linearized model's test output")
        ax.set_ylabel("network's test output")
        ax.set_title(f"width {w}, batch {b}, seed {summary['seeds'][0]}: every output of every test point")
    d = summary.get("data", {})
    fig.suptitle(f"held-out set of {d.get('name', '?')} ({d.get('n_test', '?')} points, {d.get('outputs', 1)} "
                 f"output(s)) after {summary['config']['epochs']} epochs")
    fig.tight_layout()
    return style.save(fig, stem)


def figures(out_dir, fig_dir=None) -> list[Path]:
    """Every figure of a stored ``study.dynamics`` run, written to ``fig_dir`` (default:
    ``out_dir/figures``); returns the written paths (PNG and PDF)."""
    summary, c = _load(out_dir)
    fig_dir = Path(fig_dir) if fig_dir is not None else Path(out_dir) / "figures"
    paths: list[Path] = []
    for b in summary["batch_sizes"]:
        paths += dynamics_figure(summary, c, b, fig_dir / f"dynamics_b{b}")
    if "x_test" in c:  # predictions over x: 1-D inputs only
        paths += function_figure(summary, c, fig_dir / "dynamics_function")
    paths += summary_figure(summary, c, fig_dir / "dynamics_summary_vs_width")
    if "x_test" not in c and "test_loss_net" in summary["metrics"]:  # N-d data with held-out targets
        paths += test_figure(summary, c, fig_dir / "dynamics_test")
    return paths
