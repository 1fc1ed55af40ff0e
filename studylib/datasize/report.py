"""The data-size study's console table and REPORT.md section (from summary.json only)."""

from __future__ import annotations

import math
from pathlib import Path

from studylib.tables import figure_links, fmt, setup_block, table


def ratio_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Rows N, columns width: seed-mean net / infinite-width test loss at the same time; then the infinite-width
    test loss and accuracy (same time / t = ∞), the smallest matching width and N² (Atanasov et al. 2023)."""
    ws = summary["widths"]
    head = ["N"] + [f"n={w}" for w in ws] + ["loss ∞-width (t / ∞)", "acc ∞-width (t / ∞)", "acc net (widest)",
                                             f"matching width (≤ +{fmt(summary['tolerance'])})", "N² (expected)",
                                             "excess ∝ n^s: s [95% CI]"]
    rows = []
    for i, e in enumerate(summary["per_n"]):
        w_match = e["smallest_matching_width"]
        rows.append([str(e["n_train"])] + [fmt(r, 3) for r in summary["ratio"][i]]
                    + [f"{summary['loss_inf'][i][-1]:.4f} / {e['loss_inf_t_inf']:.4f}",
                       f"{summary['accuracy_inf'][i][-1]:.3f} / {e['accuracy_inf_t_inf']:.3f}",
                       f"{summary['accuracy_net'][i][-1]:.3f}",
                       f"> {ws[-1]}" if w_match is None else str(w_match), str(e["expected_width_n_squared"]),
                       slope_text(e["excess_vs_width"])])
    return head, rows


def slope_text(fit: dict) -> str:
    lo, hi = fit["ci95"]
    return "n/a" if fit["slope"] is None else f"{fit['slope']:+.2f} [{fmt(lo, 3)}, {fmt(hi, 3)}]"


def plateau_line(summary: dict) -> str:
    """How far the runs trained: the largest relative test-loss change over the last 10% of the steps and the
    fraction of Θ's slowest mode trained."""
    net = max(abs(v) for row in summary["plateau_change_net"] for v in row)
    inf = max(abs(v) for row in summary["plateau_change_inf"] for v in row)
    slow = [v for row in summary["slowest_mode_trained"] for v in row]
    return (f"plateau: test loss changed by at most {100 * net:.2g}% (network, seed mean) and {100 * inf:.2g}% "
            f"(infinite width) over the last 10% of the steps; slowest mode of Θ trained {min(slow):.2g}–"
            f"{max(slow):.2g}; learning rates {fmt(min(min(r) for r in summary['learning_rate']))}–"
            f"{fmt(max(max(r) for r in summary['learning_rate']))}")


def _head(summary: dict) -> str:
    cfg = summary["config"]
    return (f"data size: centred fc depth {cfg['model']['depth']} {cfg['model']['activation']}, {cfg['data']['name']} "
            f"N {', '.join(map(str, summary['n_trains']))} (test {cfg['data']['n_test']}), widths "
            f"{summary['widths'][0]}…{summary['widths'][-1]}, {len(summary['seeds'])} seeds, {cfg['steps']} GD steps "
            f"at {fmt(cfg['lr_fraction'])} x each cell's 2Nk/λ_max(K₀), {cfg['dtype']}; table: net / infinite-width "
            f"test loss at the same time η·t")


def _console(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), "-" * len(line(header))] + [line(r) for r in rows])


def expectation(summary: dict) -> str:
    """The published expectation beside the widths this sweep reached."""
    w = summary["widths"][-1]
    return (f"expected (Atanasov et al. 2023): a width-n net follows infinite width up to N ≈ √n "
            f"(√{w} = {math.sqrt(w):.0f} at the widest), i.e. width ≈ N²")


def format_table(summary: dict) -> str:
    """Console: the ratio table, the plateau line and the expectation."""
    head, rows = ratio_rows(summary)
    return "\n".join([_head(summary), _console(head, rows), plateau_line(summary), expectation(summary)])


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    head, rows = ratio_rows(summary)
    parts = ["## How wide for how much data (`study.datasize`)\n",
             _head(summary) + " (docs/datasize.md).\n", setup_block(summary), "", table(head, rows), "",
             plateau_line(summary) + ". " + expectation(summary) + ".", "", figure_links(figs, report_dir)]
    return "\n".join(parts)
