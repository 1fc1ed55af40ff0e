"""The regimes study's console table and its REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

from studylib.tables import figure_links, fmt, setup_block, table


def _num(v) -> str:
    return "   nan" if v is None else f"{v:6.3g}"


def _gap_rows(summary: dict) -> list[str]:
    """The gap per width for every map value and option."""
    widths = summary["widths"]
    lines = [f"relative gap |f_net - f_lin| / RMS(y) at step {summary['checkpoint_steps'][-1]} "
             f"(seed median); base cell {summary['base_cell']}",
             "axis value".ljust(24) + "".join(f"{'n=' + str(w):>9}" for w in widths)]
    for key, h in summary["heatmaps"].items():
        for v, row in zip(h["values"], h["gap_median"], strict=True):
            lines.append(f"{key}={v}".ljust(24) + "".join(f"{_num(g):>9}" for g in row))
    for opt, row in summary["options"].items():
        lines.append(f"option={opt}".ljust(24) + "".join(f"{_num(g):>9}" for g in row["gap_median"]))
    return lines


def _correlation_lines(summary: dict) -> list[str]:
    c = summary["gap_vs_laziness"]
    if c["slope"] is None:
        return []
    lines = [f"\ngap vs laziness ratio over {c['n']} runs: gap ~ ratio^{c['slope']:.2f}, "
             f"Pearson(log) {c['pearson_log']:.2f}, Spearman {c['spearman']:.2f}"]
    f = summary["gap_vs_rel_ntk_change_frobenius"]
    h = summary["gap_vs_laziness_horizon"]
    if h["slope"] is not None:
        lines.append(f"gap vs horizon laziness ratio: gap ~ ratio^{h['slope']:.2f}, "
                     f"Pearson(log) {h['pearson_log']:.2f}, Spearman {h['spearman']:.2f}")
    lines.append(f"gap vs relative Frobenius NTK change: Pearson(log) {f['pearson_log']:.2f}, "
                 f"Spearman {f['spearman']:.2f}")
    return lines


def format_table(summary: dict) -> str:
    """Console report: heat-map rows, correlation, wide-enough widths, base-cell modes."""
    widths = summary["widths"]
    lines = _gap_rows(summary) + _correlation_lines(summary)
    we = summary["wide_enough"]
    lines.append(f"\nwide enough (gap < {we['threshold']}): " + ", ".join(
        f"depth {d}: {'> ' + str(widths[-1]) if w is None else f'{w:.0f}'}" for d, w in we["width_by_depth"].items()))
    lines.append("\nmodes at the base cell (mode 0 fastest): departure step of the network from the K_0 prediction "
                 "(seed median; nan = not within the run)")
    for m in summary["modes_base"]:
        dep = " ".join("  nan" if d is None else f"{d:5.0f}" for d in m["departure_net_emp_median"])
        lines.append(f"n={m['width']:>5}: {dep}   laziness {_num(m['laziness_ratio_median'])}")
    return "\n".join(lines)


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    """The study's REPORT.md section."""
    widths = summary["widths"]
    base = summary["base_cell"]
    parts = [
        "## Where the theory holds and where it fails (`study.regimes`)\n",
        "Gap = RMSE(network − linearization) on the interpolation range at the last step, divided by RMS(y) "
        f"(median over seeds). Base cell: {', '.join(f'{k} = {v}' for k, v in base.items())}; each map varies "
        "one axis with the others at the base cell.",
        "",
        setup_block(summary),
    ]
    for axis, hm in summary["heatmaps"].items():
        rows = [[str(v)] + [fmt(g, 2) for g in row] for v, row in zip(hm["values"], hm["gap_median"], strict=True)]
        parts += [f"\n### Gap over width × {axis}\n", table([axis] + [f"n = {w}" for w in widths], rows)]
    rows = []
    for key, label in (("gap_vs_laziness", "sup‖K_t − K_0‖₂ / λ_min(K_0)"),
                       ("gap_vs_laziness_horizon", "sup‖K_t − K_0‖₂ / max(λ_min(K_0), N/(ηT))"),
                       ("gap_vs_rel_ntk_change_frobenius", "‖K_T − K_0‖_F / ‖K_0‖_F")):
        fit = summary.get(key)
        if fit:
            rows.append([label, str(fit["n"]), fmt(fit["slope"], 2), fmt(fit["pearson_log"], 2),
                         fmt(fit["spearman"], 2)])
    parts += ["\n### Gap against candidate laziness ratios (all cells)\n",
              table(["ratio", "runs", "log-log slope", "Pearson (log)", "Spearman"], rows)]
    we = summary["wide_enough"]
    parts += [f"\n### Width from which the gap stays below {we['threshold']}, per depth\n",
              table(["depth", "width"], [[d, "not reached" if w is None else fmt(w, 3)]
                                        for d, w in we["width_by_depth"].items()])]
    rows = [[name] + [fmt(g, 3) for g in opt["gap_median"]] for name, opt in summary["options"].items()]
    parts += ["\n### Options meant to bring a network closer to the limit (gap at the base cell)\n",
              table(["option"] + [f"n = {w}" for w in widths], rows)]
    mb = summary["modes_base"][-1]
    rows = [[str(i), fmt(lam), fmt(ts), fmt(dep)] for i, (lam, ts, dep) in enumerate(
        zip(mb["theta_lambda"], mb["mode_timescale_steps"], mb["departure_net_emp_median"], strict=True))]
    parts += [f"\n### Modes at width {mb['width']} (base cell): when the network leaves the constant-kernel "
              "prediction\n", table(["mode", "λ_i(Θ)", "time scale N/(ηλ_i) [steps]",
                                      "departure step (median; none = never)"], rows)]
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)
