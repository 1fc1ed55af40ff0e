"""The two infinite-width limits side by side: compare runs of one problem in NTK parameterization and in μP
(``python -m study.limits NTK_FOLDER MUP_FOLDER``), read from their stored ``summary.json`` only (no JAX).

The same measurements in both limits (issue 25; docs/mup.md): parameter change, kernel change, the net–lin gap,
the network's own motion with width ‖f_n − f_n'‖ (n' the next width: convergence to whichever limit it has), the
training loss and the test loss (and accuracy, with class targets) vs width, with each run's fitted slope and 95%
interval beside the lazy theory's published rate. NTK falls at those rates; μP stays O(1) where it learns
features (its kernel and the net–lin gap) while still converging to its own limit (Yang & Hu 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: (metric, what it measures, published rate under NTK parameterization (exponent of n) or None).
ROWS: tuple[tuple[str, str, float | None], ...] = (
    ("rel_param_change", "‖θ_T − θ_0‖ / ‖θ_0‖", -1.0),
    ("rel_ntk_change", "‖K_T − K_0‖_F / ‖K_0‖_F", -0.5),
    ("rmse_net_vs_lin_sup", "sup_t ‖f_t − f_t^lin‖ (test)", -0.5),
    ("rmse_net_vs_lin", "‖f_T − f_T^lin‖ (test)", -0.5),
    ("rmse_net_vs_next_width", "‖f_n − f_n'‖ (test, next width)", None),
    ("rmse_net_vs_closed_inf", "‖f_T − f_T^closed(Θ)‖ (test)", -0.5),
    ("loss_net", "training loss of the net", None),
    ("test_loss_net", "test loss of the net", None),
    ("test_accuracy_net", "test accuracy of the net", None),
)


def _check_same_problem(summaries: Mapping[str, dict]) -> None:
    """ValueError (one line) unless every summary is compare's on the same data, widths and rule."""
    first_label, first = next(iter(summaries.items()))
    for label, s in summaries.items():
        if s.get("study") != "compare":
            raise ValueError(f"{label}: a summary of study {s.get('study')!r}; accepted: compare runs")
        for what in ("data",):
            if s["config"][what] != first["config"][what]:
                raise ValueError(f"{label}: config.{what} differs from {first_label}'s; accepted: runs of one problem")
        if list(s["widths"]) != list(first["widths"]):
            raise ValueError(f"{label}: widths {list(s['widths'])} differ from {first_label}'s "
                             f"{list(first['widths'])}; accepted: the same sweep")


def label_of(summary: dict) -> str:
    """'ntk', 'mup' or 'ntk gamma0=…' with ', centred' where the run is."""
    m = summary["config"]["model"]
    g = m.get("gamma0", 1.0)
    name = m["parameterization"] + (f" gamma0={g:g}" if g != 1.0 else "")
    if m["parameterization"] == "mup":
        name += f" (n0={m.get('base_width', 64)})"
    return name + (", centred" if summary.get("centred") else "")


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3g}"


def _slope(s: dict, name: str) -> str:
    fit = s.get("slopes", {}).get(name)
    if not fit or fit.get("slope") is None:
        return "n/a"
    lo, hi = fit["ci95"]
    ci = "" if lo is None or hi is None else f" [{lo:+.2f}, {hi:+.2f}]"
    return f"{fit['slope']:+.2f}{ci}"


def table(summaries: Mapping[str, dict]) -> str:
    """Markdown: per metric, each run's value at the narrowest and widest width (seed mean) and its fitted
    slope vs width with the 95% bootstrap interval (fit widths: each run's ``fit_widths``), beside the NTK rate."""
    _check_same_problem(summaries)
    labels = list(summaries)
    widths = list(next(iter(summaries.values()))["widths"])
    head = ["metric"] + [f"{lab}: n={widths[0]} -> {widths[-1]}, slope [95% CI]" for lab in labels] + ["NTK rate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, what, rate in ROWS:
        if not all(name in s["metrics"] for s in summaries.values()):
            continue
        cells = [f"`{name}` ({what})"]
        for s in summaries.values():
            mean = [np.nan if v is None else v for v in s["metrics"][name]["mean"]]
            last = next((v for v in reversed(mean) if np.isfinite(v)), np.nan)
            cells.append(f"{_fmt(mean[0])} -> {_fmt(last)}, {_slope(s, name)}")
        cells.append("n/a" if rate is None else f"n^{rate:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(summaries: Mapping[str, dict], stem: str | Path) -> list[Path]:
    """One panel per metric of :data:`ROWS` that every run has: seed mean ± std vs width (log-log; accuracy on a
    linear axis), one colour per run, the NTK rate as a dashed reference through the NTK run's first fit width
    and a flat dotted line (O(1)) through the μP run's. Written as ``stem``.png and .pdf."""
    from studylib import style

    plt = style.plt
    _check_same_problem(summaries)
    names = [(n, w, r) for n, w, r in ROWS if all(n in s["metrics"] for s in summaries.values())
             and n != "rmse_net_vs_lin"]
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False)
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
    for ax, (name, what, rate) in zip(axes.flat, names, strict=False):
        for (label, s), c in zip(summaries.items(), colours, strict=False):
            w = np.asarray(s["widths"], np.float64)
            mean = np.array([np.nan if v is None else v for v in s["metrics"][name]["mean"]], np.float64)
            std = np.array([np.nan if v is None else v for v in s["metrics"][name]["std"]], np.float64)
            ok = np.isfinite(mean)
            ax.errorbar(w[ok], mean[ok], yerr=std[ok], color=c, marker="o", ms=3, capsize=2, label=label)
            fit = [x for x in s.get("fit_widths", []) if x in set(w[ok])]
            if fit and name != "test_accuracy_net":
                x = np.array([x for x in w if x >= fit[0] and np.isfinite(mean[list(w).index(x)])])
                y0 = mean[list(w).index(fit[0])]
                is_mup = s["config"]["model"]["parameterization"] == "mup"
                if rate is not None and not is_mup:
                    ax.plot(x, y0 * (x / x[0]) ** rate, color=c, ls="--", lw=0.8, alpha=0.7,
                            label=rf"NTK rate $n^{{{rate:g}}}$")
                elif is_mup and name in ("rel_ntk_change", "rmse_net_vs_lin_sup"):
                    ax.plot(x, np.full_like(x, y0), color=c, ls=":", lw=0.8, alpha=0.7, label=r"O(1): $n^0$")
        ax.set_xscale("log", base=2)
        if name.startswith(("rel_", "rmse_")):  # the rates: log-log
            ax.set_yscale("log")
        ax.set_xlabel("hidden width n")
        ax.set_title(f"{name}\n{what}", fontsize=8)
        ax.set_ylabel("accuracy (fraction)" if name == "test_accuracy_net" else
                      "loss (½ mean sq.)" if "loss" in name else "value (seed mean ± std)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    data = next(iter(summaries.values()))["config"]["data"]["name"]
    fig.suptitle(f"NTK parameterization vs muP on {data}: the same measurements vs width "
                 "(final time; slopes in docs/mup.md)", fontsize=10)
    fig.tight_layout()
    return style.save(fig, stem)


def load(folders) -> dict[str, dict]:
    """{label: summary} for the given compare results folders (labels from :func:`label_of`, made unique)."""
    from studylib.results import read_json

    out: dict[str, dict] = {}
    for folder in folders:
        path = Path(folder) / "summary.json"
        if not path.is_file():
            raise ValueError(f"{folder}: no summary.json there; accepted: a compare results folder")
        s = read_json(path)
        label = label_of(s)
        while label in out:
            label += "'"
        out[label] = s
    return out
