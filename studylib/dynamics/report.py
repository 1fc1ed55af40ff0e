"""The dynamics study's console table and its REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studylib.tables import figure_links, fmt, mean_std, setup_block, table

#: Metrics printed in the console table, in order.
TABLE_METRICS = ("rel_param_change", "rel_param_change_lin", "ntk_x0_change", "rel_ntk_change", "loss_net",
                 "loss_lin", "rmse_net_vs_lin_train")
#: Held-out metrics printed in a second table when the data have test targets (those present).
TEST_METRICS = ("test_loss_net", "test_loss_lin", "test_rmse_net_vs_lin", "test_accuracy_net", "test_accuracy_lin",
                "test_agreement_net_vs_lin")
#: Metrics of the REPORT.md section: (name, label), one table each (width x batch size).
SECTION_METRICS = (("rel_param_change", "‖θ_T − θ₀‖/‖θ₀‖"), ("ntk_x0_change", "|ΔK(x₀,x₀)|/K₀(x₀,x₀)"),
                   ("rel_ntk_change", "‖K_T − K₀‖_F/‖K₀‖_F"), ("loss_net", "network loss"),
                   ("loss_lin", "linearized loss"),
                   ("rmse_net_vs_lin_train", "RMSE(net, lin) on the training inputs"))


def seed_comparison(summary: dict) -> list[str]:
    """Lines setting the batch-1 relative parameter change beside the seed's reported values
    (only for runs of the seed's length, 20000 epochs)."""
    seed = summary.get("seed_reported_batch1_rel_param_change") or {}
    got = {pc["width"]: summary["metrics"]["rel_param_change"][pc["tag"]]["mean"]
           for pc in summary["per_cell"] if pc["batch_size"] == 1}
    common = [w for w in got if str(w) in seed or w in seed]
    if not common or summary["config"]["epochs"] != 20000:
        return []
    lines = ["", "batch 1, epoch 20000, relative parameter change: ours (mean over seeds) vs the seed's"]
    for w in common:
        ref = seed.get(w, seed.get(str(w)))
        lines.append(f"  width {w:>5}: {got[w]:.3g} vs {ref}")
    return lines


def format_table(summary: dict) -> str:
    """Console table: per cell, final mean ± std of the main metrics, and lr / lr_crit."""
    head = f"{'cell':<12}{'lr/lr_crit':>11}" + "".join(f"{c:>24}" for c in TABLE_METRICS)
    lines = [head, "-" * len(head)]
    for pc in summary["per_cell"]:
        tag = pc["tag"]
        ratio = np.nanmedian(np.asarray(pc["lr_over_critical_emp"], np.float64))
        row = f"{tag:<12}{ratio:>11.3g}"
        for c in TABLE_METRICS:
            e = summary["metrics"][c][tag]
            mu, sd = e["mean"], e["std"]
            row += f"{'nan':>24}" if mu is None else f"{mu:>14.3g} ± {sd:<7.2g}"
        lines.append(row)
    return "\n".join(lines + test_table(summary) + seed_comparison(summary))


def test_table(summary: dict) -> list[str]:
    """Lines of the held-out table (after training, mean ± std over seeds), or none without test targets."""
    names = [c for c in TEST_METRICS if c in summary["metrics"]]
    if not names:
        return []
    head = f"{'held-out':<12}" + "".join(f"{c:>27}" for c in names)
    lines = ["", head, "-" * len(head)]
    for pc in summary["per_cell"]:
        row = f"{pc['tag']:<12}"
        for c in names:
            e = summary["metrics"][c][pc["tag"]]
            row += f"{'nan':>27}" if e["mean"] is None else f"{e['mean']:>17.3g} ± {e['std']:<7.2g}"
        lines.append(row)
    return lines


def metric_table(summary: dict, name: str) -> str:
    """One metric's final mean ± std, widths down and batch sizes across (plus the seed's
    reported batch-1 value beside the relative parameter change)."""
    entry = summary["metrics"][name]
    batches = summary["batch_sizes"]
    seed = name == "rel_param_change"
    rows = []
    for w in summary["widths"]:
        row = [str(w)]
        for b in batches:
            e = entry.get(f"w{w}_b{b}")
            row.append("n/a" if e is None else mean_std(e["mean"], e["std"]))
        if seed:
            row.append(fmt(summary.get("seed_reported_batch1_rel_param_change", {}).get(str(w))))
        rows.append(row)
    header = ["width"] + [f"batch {b}" for b in batches] + (["seed post, batch 1"] if seed else [])
    return table(header, rows)


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    cfg = summary["config"]
    batches = summary["batch_sizes"]
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
    for name, label in SECTION_METRICS + tuple((m, f"held-out {m[5:]}") for m in TEST_METRICS):
        if name in summary["metrics"]:
            parts += [f"\n### {label} (`{name}`)\n", metric_table(summary, name)]
    rows = [[str(c["width"]), str(c["batch_size"]), fmt(c["lr"]),
             ", ".join(fmt(r, 2) for r in c["lr_over_critical_emp"]),
             ", ".join(str(e) for e in c["diverged_net_epoch"] if e >= 0) or "none"] for c in summary["per_cell"]]
    parts += ["\n### Learning rate against each seed's critical rate\n",
              table(["width", "batch", "lr", "lr / (N/λ_max(K₀)) per seed", "diverged at epoch"], rows),
              "", figure_links(figs, report_dir)]
    return "\n".join(parts)
