"""The comparison study's console table and its REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

from studylib import metrics as M
from studylib.compare.config import TABLE_METRICS
from studylib.tables import (
    ci,
    figure_links,
    fmt,
    local_slopes_table,
    metrics_table,
    n_seeds,
    setup_block,
    slopes_table,
    table,
)

#: The after kernel's rows (:func:`studylib.afterkernel.compare_rows`; summary.json's conventions, "after_kernel"):
#: alignment of K_0, Θ and K_T with the targets, the kernel's velocity at the end, and the kernel regression with K_0
#: and K_T against the trained network (RMSE to it, their ratio, from which fraction of training K_t explains it)
#: and against the test targets.
AFTER_ROWS = ("kernel_alignment_theta", "kernel_alignment_k0", "after_alignment", "kernel_alignment", "kernel_velocity",
              "after_vs_net_rmse_k0", "after_vs_net_rmse", "after_rmse_ratio", "after_explains_from", "after_test_loss",
              "after_test_accuracy", "after_agreement_with_net", "after_accuracy_from")
#: Rows shown even when no seed has a value: NaN there means "never" (not "not measured").
NAN_MEANS_NEVER = ("after_explains_from", "after_accuracy_from")
#: Rows of the console table: TABLE_METRICS with the time summaries of the network-linearization
#: gap (sup over checkpoints, early time) after its final-step row, then :data:`AFTER_ROWS`.
TABLE_ROWS = tuple(m for name in TABLE_METRICS for m in (
    (name, f"{name}_sup", f"{name}_early") if name == "rmse_net_vs_lin" else (name,))) + AFTER_ROWS


def format_table(summary: dict, metrics_: tuple[str, ...] = TABLE_ROWS) -> str:
    """Console table: final-time mean ± std per width, then the slope fitted over the fit widths
    (named in the header) and the published rate; below it the local slopes between neighbouring
    widths, with their 95% bootstrap intervals."""
    widths = summary["widths"]
    fit_w = summary.get("fit_widths")
    fit_label = f"slope n={fit_w[0]}..{fit_w[-1]} [95% CI]" if fit_w else "slope [95% CI]"
    name_w = max(len(m) for m in metrics_) + 2
    head = ("metric".ljust(name_w) + "".join(f"{'n=' + str(w):>19}" for w in widths)
            + f"   {fit_label:<27} published")
    lines = [head, "-" * len(head)]
    for m in metrics_:
        entry = summary["metrics"].get(m)
        if entry is None or (all(mu is None for mu in entry["mean"]) and m not in NAN_MEANS_NEVER):
            continue  # not measured (e.g. quad not trained)
        cells = ""
        for mu, sd in zip(entry["mean"], entry["std"], strict=True):
            cells += f"{'nan':>19}" if mu is None else f"{mu:>10.3g} ± {sd:<6.2g}"
        fit = summary["slopes"].get(m)
        slope = ""
        if fit and fit["slope"] is not None:
            lo, hi = fit["ci95"]
            slope = f"   {fit['slope']:+.2f} {ci(lo, hi, n_seeds(summary), signed=True)}"
            if fit.get("reference"):
                slope += f"   {M.rate_label(fit['reference']['slope'])}"
        lines.append(m.ljust(name_w) + cells + slope)
    return "\n".join([*lines, "", _local_slopes_lines(summary, metrics_, name_w)])


def _local_slopes_lines(summary: dict, metrics_: tuple[str, ...], name_w: int) -> str:
    """Console block: the local slope between each pair of neighbouring widths [95% CI]."""
    rows = [(m, summary["slopes"][m]["local_slopes"]) for m in metrics_
            if summary["slopes"].get(m, {}).get("local_slopes")
            and any(e["slope"] is not None for e in summary["slopes"][m]["local_slopes"])]
    if not rows:
        return ""
    pairs = [f"{a}->{b}" for a, b in (e["widths"] for e in rows[0][1])]
    head = "local slope".ljust(name_w) + "".join(f"{p:>23}" for p in pairs)
    lines = [head, "-" * len(head)]
    for m, loc in rows:
        cells = ""
        for e in loc:
            if e["slope"] is None:
                cells += f"{'n/a':>23}"
            else:
                lo, hi = e["ci95"]
                cells += f"{e['slope']:+.2f} {ci(lo, hi, n_seeds(summary), signed=True, sep=',')}".rjust(23)
        lines.append(m.ljust(name_w) + cells)
    return "\n".join(lines)


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    cfg = summary["config"]
    gaps = list(TABLE_ROWS)
    slope_names = [m for m in summary.get("slopes", {}) if summary["slopes"][m].get("reference")]
    pw = summary["per_width"]
    lr_rows = [[str(p["width"]), fmt(p["learning_rate"]), str(p.get("train_steps", cfg["steps"])),
                fmt(p.get("train_time", p["learning_rate"] * cfg["steps"])), fmt(p["lr_critical_inf"]),
                ", ".join(fmt(r, 2) for r in p["lr_over_critical_emp"]),
                ", ".join(str(s) for s in p["diverged_net_step"] if s >= 0) or "none",
                ", ".join(str(s) for s in p["diverged_lin_step"] if s >= 0) or "none"] for p in pw]
    conv = summary.get("conventions", {})
    centred = "centred f(θ) − f(θ₀)" if summary.get("centred") else "uncentred"
    rule = summary.get("lr_rule", "analytic")
    training = (f"full-batch GD to the absolute time lr·t = {fmt(pw[0]['train_time'])} at every width, each at its own "
                f"rate (lr rule `emp`: {fmt(cfg['lr_fraction'])} × its seeds' smallest 2Nk/λmax(K₀))"
                if rule == "emp" else f"full-batch GD for {cfg['steps']} steps")
    parts = [
        "## Finite network vs linearization vs infinite width (`study.compare`: "
        f"{cfg['data']['name']}, {cfg['model']['arch']} depth {cfg['model']['depth']}, "
        f"{cfg['model']['activation']}, {centred})\n",
        f"Depth-{cfg['model']['depth']} `{cfg['model']['arch']}` network ({cfg['model']['activation']}, "
        f"{cfg['model']['parameterization']} parameterization, W_std = {fmt(cfg['model']['W_std'])}, "
        f"b_std = {fmt(cfg['model']['b_std'])}), data `{cfg['data']['name']}` with {cfg['data']['n_train']} "
        f"training points; {training}, {cfg['seeds']} seeds per width; {centred} models. "
        + " ".join(f"{k.capitalize()}: {v}." for k, v in conv.items()),
        "",
        setup_block(summary),
        "\n### Final-time values (mean ± std over seeds)\n",
        metrics_table(summary, gaps),
        "\n### Fitted exponents against width, beside the published rates\n",
        slopes_table(summary, slope_names),
        "\n### Local slopes between neighbouring widths [95% bootstrap interval]\n",
        "A rate is a statement about large n: where the local slopes drift, the fitted exponent depends on "
        "the fit range (its widths are in the table above).\n",
        local_slopes_table(summary, slope_names),
        "\n### Learning rate against the critical rates\n",
        table(["width", "learning rate", "steps", "time lr·t", "2Nk/λmax(Θ)", "lr / (2Nk/λmax(K₀)) per seed",
               "network diverged at", "linearization diverged at"], lr_rows),
        "",
        figure_links(figs, report_dir),
    ]
    return "\n".join(parts)
