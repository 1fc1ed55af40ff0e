"""The ensemble study's console table and its REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

from studylib.ensemble.config import TABLE_STATS
from studylib.tables import figure_links, fmt, setup_block, table


def _f(v) -> str:
    return "nan" if v is None else f"{v:.3f}"


def format_table(summary: dict) -> str:
    """Console table per mode and statistic: value at t=0 and at the final step per width, with the MC floor."""
    steps = summary["checkpoint_steps"]
    widths = summary["widths"]
    lines = []
    for mode in ("ntk", "readout"):
        if f"{mode}/mean_err" not in summary["metrics"]:
            continue
        lines.append(f"{mode} (lr {summary['learning_rate'][mode]:.4g}), t = {steps[0]} | t = {steps[-1]} steps")
        head = "statistic".ljust(14) + "".join(f"{'n=' + str(w):>16}" for w in widths) + "      MC floor (mean±std)"
        lines += [head, "-" * len(head)]
        for k in TABLE_STATS:
            e = summary["metrics"][f"{mode}/{k}"]
            cells = "".join(f"{_f(r[0]):>7} | {_f(r[-1]):<6}" for r in e["per_time"])
            fl = e["floor"]
            floor = f"   {_f(fl['mean'][0])}±{_f(fl['std'][0])} | {_f(fl['mean'][-1])}±{_f(fl['std'][-1])}"
            lines.append(k.ljust(14) + cells + floor)
        lines.append("")
    return "\n".join(lines)


def _mode_table(summary: dict, mode: str, t_idx: list[int]) -> str:
    """Mean error at three times, std error and calibration at the last, per width, with the GP floor."""
    steps = summary["checkpoint_steps"]
    me, se, cal = (summary["metrics"][f"{mode}/{k}"] for k in ("mean_err", "std_err", "calibration"))
    last = t_idx[-1]
    header = ["width"] + [f"mean err t={steps[i]}" for i in t_idx] + [f"std err t={steps[last]}",
                                                                     f"in ±2σ t={steps[last]}"]
    rows = [[str(w)] + [fmt(me["per_time"][j][i]) for i in t_idx] + [fmt(se["per_time"][j][last]),
                                                                     fmt(cal["per_time"][j][last], 2)]
            for j, w in enumerate(summary["widths"])]
    rows.append(["GP floor"] + [f"{fmt(me['floor']['mean'][i])} (95%: {fmt(me['floor']['q95'][i])})" for i in t_idx]
                + [fmt(se["floor"]["mean"][last]), fmt(cal["floor"]["mean"][last], 2)])
    return table(header, rows)


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    """The study's section of REPORT.md."""
    cfg = summary["config"]
    steps = summary["checkpoint_steps"]
    t_idx = sorted({0, len(steps) // 2, len(steps) - 1})
    parts = [
        "## Ensembles against the infinite-width Gaussian process (`study.ensemble`)\n",
        f"{summary['members']} networks per width (depth {cfg['model']['depth']}, {cfg['model']['parameterization']} "
        f"parameterization), full-batch GD for {cfg['steps']} steps; ensemble mean and standard deviation over the "
        f"test grid against `gradient_descent_mse_ensemble` (NTK-GP when all layers train, NNGP-GP when only the "
        f"readout trains). Errors are in units of the GP's RMS σ; the floor is what {summary['members']} exact GP "
        f"draws give (mean, 95% quantile). Uncentred: each network starts from its own f(θ₀), whose spread is "
        f"the GP's prior part (centring would remove what is compared; docs/ensemble.md). {summary['reference']}",
        "",
        setup_block(summary),
    ]
    for mode in ("ntk", "readout"):
        if f"{mode}/mean_err" not in summary["metrics"]:
            continue
        parts += [f"\n### {'All layers trained vs NTK-GP' if mode == 'ntk' else 'Readout only vs NNGP-GP'} "
                  f"(lr = {fmt(summary['learning_rate'][mode])})\n", _mode_table(summary, mode, t_idx)]
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)
