"""``figures/REPORT.md``: the page a researcher reads first, written from stored results only.

Every number comes from a ``summary.json``; every figure is one the study stored. Sections
per study: the setup (from the stored config), final-time tables (mean ± std over seeds),
fitted slopes with 95% intervals beside the published rates, and the figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from studylib.results import read_json


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{v:.{digits}g}"


def mean_std(mean, std) -> str:
    return "n/a" if mean is None else f"{fmt(mean)} ± {fmt(std, 2)}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; '|' inside cells is escaped."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def rate(slope: float) -> str:
    from studylib.metrics import rate_label

    return rate_label(slope)


def config_lines(cfg: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out += config_lines(v, prefix=f"{prefix}{k}.")
        else:
            out.append(f"`{prefix}{k}` = `{v}`")
    return out


def setup_block(summary: dict) -> str:
    v = summary.get("versions", {})
    lines = [
        "<details><summary>Stored configuration</summary>\n",
        "; ".join(config_lines(summary.get("config", {}))),
        "\n</details>\n",
        f"Wall time {fmt(summary.get('wall_seconds'))} s; "
        + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
    ]
    return "\n".join(lines)


def metrics_table(summary: dict, names: list[str]) -> str:
    widths = summary["widths"]
    rows = []
    for name in names:
        entry = summary["metrics"].get(name)
        if entry is None:
            continue
        rows.append([f"`{name}`"] + [mean_std(m, s) for m, s in zip(entry["mean"], entry["std"], strict=True)])
    return table(["metric (final step)"] + [f"n = {w}" for w in widths], rows)


def slopes_table(summary: dict, names: list[str]) -> str:
    rows = []
    for name in names:
        fit = summary.get("slopes", {}).get(name)
        if not fit or fit.get("slope") is None:
            continue
        lo, hi = fit["ci95"]
        ref = fit.get("reference") or {}
        rows.append([f"`{name}`", f"{fit['slope']:+.2f}", f"[{fmt(lo, 2)}, {fmt(hi, 2)}]",
                     "—" if not ref else rate(ref["slope"]), ref.get("source", "")])
    return table(["metric", "fitted slope", "95% CI (bootstrap over seeds)", "published", "source"], rows)


def figure_links(paths: list[Path], report_dir: Path) -> str:
    return "\n\n".join(f"![{p.stem}]({os.path.relpath(p, report_dir)})" for p in paths if p.suffix == ".png")


def compare_section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    from studylib.compare import TABLE_METRICS

    cfg = summary["config"]
    gaps = [m for m in TABLE_METRICS]
    slope_names = [m for m in summary.get("slopes", {}) if summary["slopes"][m].get("reference")]
    pw = summary["per_width"]
    lr_rows = [[str(p["width"]), fmt(p["learning_rate"]), fmt(p["lr_critical_inf"]),
                ", ".join(fmt(r, 2) for r in p["lr_over_critical_emp"]),
                ", ".join(str(s) for s in p["diverged_net_step"] if s >= 0) or "none",
                ", ".join(str(s) for s in p["diverged_lin_step"] if s >= 0) or "none"] for p in pw]
    conv = summary.get("conventions", {})
    parts = [
        "## Finite network vs linearization vs infinite width (`study.compare`)\n",
        f"Depth-{cfg['model']['depth']} `{cfg['model']['arch']}` network ({cfg['model']['activation']}, "
        f"{cfg['model']['parameterization']} parameterization, W_std = {fmt(cfg['model']['W_std'])}, "
        f"b_std = {fmt(cfg['model']['b_std'])}), data `{cfg['data']['name']}` with {cfg['data']['n_train']} "
        f"training points; full-batch GD for {cfg['steps']} steps, {cfg['seeds']} seeds per width. "
        + " ".join(f"{k.capitalize()}: {v}." for k, v in conv.items()),
        "",
        setup_block(summary),
        "\n### Final-time values (mean ± std over seeds)\n",
        metrics_table(summary, gaps),
        "\n### Fitted exponents against width, beside the published rates\n",
        slopes_table(summary, slope_names),
        "\n### Learning rate against the critical rates\n",
        table(["width", "learning rate", "2N/λmax(Θ)", "lr / (2N/λmax(K₀)) per seed", "network diverged at",
               "linearization diverged at"], lr_rows),
        "",
        figure_links(figs, report_dir),
    ]
    return "\n".join(parts)


def ensemble_section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    cfg = summary["config"]
    steps = summary["checkpoint_steps"]
    t_idx = sorted({0, len(steps) // 2, len(steps) - 1})
    parts = [
        "## Ensembles against the infinite-width Gaussian process (`study.ensemble`)\n",
        f"{summary['members']} networks per width (depth {cfg['model']['depth']}, {cfg['model']['parameterization']} "
        f"parameterization), full-batch GD for {cfg['steps']} steps; ensemble mean and standard deviation over the "
        f"test grid against `gradient_descent_mse_ensemble` (NTK-GP when all layers train, NNGP-GP when only the "
        f"readout trains). Errors are in units of the GP's RMS σ; the floor is what {summary['members']} exact GP "
        f"draws give (mean, 95% quantile). {summary['reference']}",
        "",
        setup_block(summary),
    ]
    for mode in ("ntk", "readout"):
        if f"{mode}/mean_err" not in summary["metrics"]:
            continue
        me, se, cal = (summary["metrics"][f"{mode}/{k}"] for k in ("mean_err", "std_err", "calibration"))
        header = ["width"] + [f"mean err t={steps[i]}" for i in t_idx] + [f"std err t={steps[t_idx[-1]]}",
                                                                         f"in ±2σ t={steps[t_idx[-1]]}"]
        rows = [[str(w)] + [fmt(me["per_time"][j][i]) for i in t_idx] + [fmt(se["per_time"][j][t_idx[-1]]),
                                                                         fmt(cal["per_time"][j][t_idx[-1]], 2)]
                for j, w in enumerate(summary["widths"])]
        floor = [me["floor"]["mean"][i] for i in t_idx]
        q95 = [me["floor"]["q95"][i] for i in t_idx]
        rows.append(["GP floor"] + [f"{fmt(f)} (95%: {fmt(q)})" for f, q in zip(floor, q95, strict=True)]
                    + [fmt(se["floor"]["mean"][t_idx[-1]]), fmt(cal["floor"]["mean"][t_idx[-1]], 2)])
        parts += [f"\n### {'All layers trained vs NTK-GP' if mode == 'ntk' else 'Readout only vs NNGP-GP'} "
                  f"(lr = {fmt(summary['learning_rate'][mode])})\n", table(header, rows)]
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)


def regimes_section(summary: dict, figs: list[Path], report_dir: Path) -> str:
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


def dynamics_section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    cfg = summary["config"]
    widths, batches = summary["widths"], summary["batch_sizes"]
    parts = [
        "## Training dynamics under SGD: the seed's experiment (`study.dynamics`)\n",
        f"Depth-{cfg['model']['depth']} `{cfg['model']['arch']}` network ({cfg['model']['activation']}), "
        f"{cfg['model']['parameterization']} parameterization "
        f"(W_std = {fmt(cfg['model']['W_std'])}, b_std = {fmt(cfg['model']['b_std'])}), loss `{cfg['loss']}`, "
        f"lr = {fmt(cfg['lr'])}, {cfg['epochs']} epochs, batch sizes {', '.join(map(str, batches))}, "
        f"{cfg['seeds']} seed(s); values at the last epoch (mean ± std over seeds).",
        "",
        setup_block(summary),
    ]
    names = [("rel_param_change", "‖θ_T − θ₀‖/‖θ₀‖"), ("ntk_x0_change", "|ΔK(x₀,x₀)|/K₀(x₀,x₀)"),
             ("rel_ntk_change", "‖K_T − K₀‖_F/‖K₀‖_F"), ("loss_net", "network loss"),
             ("loss_lin", "linearized loss"), ("rmse_net_vs_lin_train", "RMSE(net, lin) on the training inputs")]
    for name, label in names:
        entry = summary["metrics"].get(name)
        if entry is None:
            continue
        rows = []
        for w in widths:
            row = [str(w)]
            for b in batches:
                e = entry.get(f"w{w}_b{b}")
                row.append("n/a" if e is None else mean_std(e["mean"], e["std"]))
            if name == "rel_param_change":
                row.append(fmt(summary.get("seed_reported_batch1_rel_param_change", {}).get(str(w))))
            rows.append(row)
        header = ["width"] + [f"batch {b}" for b in batches]
        if name == "rel_param_change":
            header.append("seed post, batch 1")
        parts += [f"\n### {label} (`{name}`)\n", table(header, rows)]
    rows = [[str(c["width"]), str(c["batch_size"]), fmt(c["lr"]),
             ", ".join(fmt(r, 2) for r in c["lr_over_critical_emp"]),
             ", ".join(str(e) for e in c["diverged_net_epoch"] if e >= 0) or "none"] for c in summary["per_cell"]]
    parts += ["\n### Learning rate against each seed's critical rate\n",
              table(["width", "batch", "lr", "lr / (N/λ_max(K₀)) per seed", "diverged at epoch"], rows),
              "", figure_links(figs, report_dir)]
    return "\n".join(parts)


#: study -> section writer(summary, figure paths, report folder) -> markdown.
SECTIONS: dict[str, Callable[[dict, list[Path], Path], str]] = {
    "compare": compare_section, "dynamics": dynamics_section, "ensemble": ensemble_section,
    "regimes": regimes_section}


def generic_section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    names = list(summary.get("metrics", {}))
    parts = [f"## `study.{summary.get('study')}`\n", setup_block(summary)]
    if names and "widths" in summary:
        try:
            parts += ["", metrics_table(summary, names)]
        except (KeyError, TypeError):
            pass
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)


def write_report(folders, report_path: str | Path = "figures/REPORT.md", figure_dir: str | Path | None = None) -> Path:
    """Write the report for the given results folders; figures are (re)drawn from the stored
    results and copied into ``figure_dir`` (default: the report's folder)."""
    from studylib import figures
    from studylib.results import atomic_write

    report_path = Path(report_path)
    report_dir = report_path.parent
    figure_dir = Path(figure_dir or report_dir)
    parts = ["# ntk-study report\n",
             "Written by `python -m study.report` from the stored results below; no number here is typed "
             "by hand. Re-run a study, then this command, to refresh it.\n"]
    for folder in folders:
        summary = read_json(Path(folder) / "summary.json")
        figs = figures.regenerate([folder], to=figure_dir)
        section = SECTIONS.get(summary.get("study"), generic_section)
        parts.append(f"<!-- from {folder}/summary.json -->")
        parts.append(section(summary, figs, report_dir))
    text = "\n\n".join(parts) + "\n"
    atomic_write(report_path, lambda f: f.write(text.encode()))
    return report_path
