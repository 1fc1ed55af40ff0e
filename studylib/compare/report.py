"""The comparison study's console table and its REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

from studylib import metrics as M
from studylib.compare.config import TABLE_METRICS
from studylib.tables import figure_links, fmt, metrics_table, setup_block, slopes_table, table


def format_table(summary: dict, metrics_: tuple[str, ...] = TABLE_METRICS) -> str:
    """Console table: final-time mean ± std per width, then the fitted slope and reference."""
    widths = summary["widths"]
    name_w = max(len(m) for m in metrics_) + 2
    head = ("metric".ljust(name_w) + "".join(f"{'n=' + str(w):>19}" for w in widths)
            + "   slope [95% CI]        published")
    lines = [head, "-" * len(head)]
    for m in metrics_:
        entry = summary["metrics"].get(m)
        if entry is None:
            continue
        cells = ""
        for mu, sd in zip(entry["mean"], entry["std"], strict=True):
            cells += f"{'nan':>19}" if mu is None else f"{mu:>10.3g} ± {sd:<6.2g}"
        fit = summary["slopes"].get(m)
        slope = ""
        if fit and fit["slope"] is not None:
            lo, hi = fit["ci95"]
            slope = f"   {fit['slope']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            if fit.get("reference"):
                slope += f"   {M.rate_label(fit['reference']['slope'])}"
        lines.append(m.ljust(name_w) + cells + slope)
    return "\n".join(lines)


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
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
