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


def _best_line(label: str, b: dict | None) -> str:
    if not b or b.get("name") is None:
        return f"  {label}: none"
    return f"  {label}: {b['name']} (Spearman {b['spearman']:.2f}, log-log R^2 {b['r2_log']:.2f}, {b['n']} runs)"


def _prediction_lines(summary: dict) -> list[str]:
    gp = summary.get("gap_prediction")
    if not gp or gp["best"] is None:
        return []
    needs = gp.get("needs", {})
    lines = [f"\ngap prediction: best diagnostic over all {gp['n']} runs: {gp['best']} (Spearman "
             f"{gp['spearman']:.2f}, log-log R^2 {gp['r2_log']:.2f})"]
    if "best_t0" in gp:
        lines += [_best_line("best from theta_0 alone (no training)", gp["best_t0"]),
                  _best_line("best from <= 5% of the run", gp["best_early"])]
    lines.append("Spearman per diagnostic (all / erf / relu) [needs: t0 = theta_0, early = <= 5% of the run, "
                 "trained = the whole run]:")
    for name, d in gp["diagnostics"].items():
        lines.append(f"  {name:<25}" + "  ".join(f"{_num(d[sub]['spearman'])} (n={d[sub]['n']})"
                                                for sub in ("all", "smooth", "relu"))
                     + (f"  [{needs[name]}]" if name in needs else ""))
    return lines


def _predicted_width(p: dict) -> str:
    if p["width"] is None:
        return "never (not falling)"
    if p.get("below_at_narrowest"):
        return f"<= {p['width']:.0f}" + (" (below at the fitted widths, but rising)" if p.get("rising") else "")
    return f"{p['width']:.3g}"


def _widest(we: dict, depth: str, widths) -> str:
    """The widest width measured at this depth (``--max-width`` caps some depths; older summaries: the sweep's)."""
    w = we.get("widest_by_depth", {}).get(str(depth))
    return f"{w:.0f}" if w is not None else str(widths[-1])


def _crossover_lines(summary: dict) -> list[str]:
    cross = summary.get("crossover")
    if not cross or not cross["rows"]:
        return []
    lines = [f"\ncrossover (gap < {cross['threshold']:g} from that width on; predicted: fit of the prediction over the "
             "narrowest widths, extrapolated):"]
    for r in cross["rows"]:
        m, p = r["measured"], r["predicted"]
        meas = f"> {r['widest']:.0f}" if m["width"] is None else f"{m['width']:.0f}" + (
            "" if m["falling"] is None else (" (falling)" if m["falling"] else " (not falling)"))
        pred = _predicted_width(p)
        slope = "" if p["slope"] is None else f" (predicted gap ~ n^{p['slope']:.2f})"
        stalled = ""
        if r.get("predicted_stalled"):
            ps = r["predicted_stalled"]
            stalled = f"; stalled-mode gap (theta_0): {_predicted_width(ps)}" + (
                "" if ps["slope"] is None else f" (~ n^{ps['slope']:.2f})")
        lines.append(f"  {r['activation']:<5} depth {r['depth']}: measured {meas}, predicted {pred}{slope}{stalled}")
    t = summary.get("timing")
    if t:
        lines.append(f"prediction cost: {t['predict_seconds']:.1f} s against {t['train_seconds']:.1f} s of training "
                     f"and measuring ({t['predict_over_train']:.2f}x), cells computed in this run")
    return lines


def centring_line(summary: dict) -> str:
    """Whether the run's models are centred f(θ) − f(θ₀) (:mod:`studylib.centring`; older summaries: uncentred)."""
    cells = [c for c in summary.get("cells", []) if "centred" in c]  # per cell since mup (older: the run's flag)
    pars = {p: any(c["centred"] for c in cells if c["parameterization"] == p)
            for p in dict.fromkeys(c["parameterization"] for c in cells)}
    if len(set(pars.values())) > 1:
        on, off = ([p for p, v in pars.items() if v == want] for want in (True, False))
        return (f"Centred for {', '.join(on)} (μP's γ-model: --centre auto centres it), uncentred for "
                f"{', '.join(off)}: the centred models are trained and measured as f(θ) − f(θ₀) and start from 0; "
                "the others start from the network's own f(θ₀) (options centred and doubled apart).")
    if summary.get("centred"):
        return ("Centred: every model is trained and measured as f(θ) − f(θ₀), so it starts from 0 "
                "(the linearization and the closed form with f₀ = 0).")
    return "Uncentred: the models start from the network's own f(θ₀) (options centred and doubled apart)."


def format_table(summary: dict) -> str:
    """Console report: heat-map rows, correlation, wide-enough widths, base-cell modes."""
    widths = summary["widths"]
    lines = [centring_line(summary), *_gap_rows(summary), *_correlation_lines(summary), *_prediction_lines(summary),
             *_crossover_lines(summary)]
    we = summary["wide_enough"]
    lines.append(f"\nwide enough (gap < {we['threshold']}): " + ", ".join(
        f"depth {d}: {'> ' + _widest(we, d, widths) if w is None else f'{w:.0f}'}"
        for d, w in we["width_by_depth"].items()))
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
        f"one axis with the others at the base cell. {centring_line(summary)}",
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
              table(["depth", "width"], [[d, f"not reached by {_widest(we, d, summary['widths'])}" if w is None
                                         else fmt(w, 3)]
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
    gp = summary.get("gap_prediction")
    if gp and gp["best"] is not None:
        needs = gp.get("needs", {})
        rows = [[name, {"t0": "θ₀", "early": "≤ 5% of the run", "trained": "whole run"}.get(needs.get(name), "")]
                + [f"{fmt(d[sub]['spearman'], 2)} ({d[sub]['n']})" for sub in ("all", "smooth", "relu")]
                + [fmt(d["all"]["r2_log"], 2)] for name, d in gp["diagnostics"].items()]
        t0 = gp.get("best_t0") or {}
        t0_text = "" if not t0.get("name") else (
            f" Best from θ₀ alone (no training): `{t0['name']}` (Spearman {fmt(t0['spearman'], 2)}, log-log R² "
            f"{fmt(t0['r2_log'], 2)}).")
        parts += ["\n### Predicting the gap: every diagnostic against the measured gap (Spearman, runs)\n",
                  f"Best over all runs: `{gp['best']}` (Spearman {fmt(gp['spearman'], 2)}, log-log R² "
                  f"{fmt(gp['r2_log'], 2)}, {gp['n']} runs).{t0_text} `gap_predicted` is the first-order prediction "
                  "from θ₀ alone (docs/crossover.md); `gap_stalled` the linearization's motion in the slow modes of "
                  "K₀ (the gap of a network that stalls there, from θ₀ alone); `gap_predicted_or_stalled` the first "
                  "for erf nets and the second for ReLU nets, whose gates no Taylor model sees; the gate flips exist "
                  "for ReLU nets only. Where the first-order prediction breaks down (predicted gap of order 1, or "
                  "ReLU gates flipping) is shown in `regimes_gap_prediction`.\n",
                  table(["diagnostic", "needs", "all", "erf", "ReLU", "R² (log, all)"], rows)]
    cross = summary.get("crossover")
    if cross and cross["rows"]:
        rows = []
        for r in cross["rows"]:
            m, p = r["measured"], r["predicted"]
            rows.append([r["activation"], str(r["depth"]),
                         f"> {r['widest']:.0f}" if m["width"] is None else fmt(m["width"], 3),
                         fmt(m["slope_after"], 2), _predicted_width(p),
                         fmt(p["slope"], 2),
                         _predicted_width(r["predicted_stalled"]) if r.get("predicted_stalled") else "–"])
        parts += [f"\n### Crossover width: gap below {cross['threshold']:g}, measured and predicted\n",
                  table(["activation", "depth", "measured width", "slope after", "predicted width (first order)",
                         "predicted slope (narrow fit)", "predicted width (stalled-mode gap, ReLU)"], rows)]
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)
