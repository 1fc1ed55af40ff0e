"""The data-size study's figures, drawn from summary.json only (no JAX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studylib import style
from studylib.results import read_json

plt = style.plt


def loss_vs_width(summary: dict, stem) -> list[Path]:
    """Left: test loss against width per N (seed mean, seeds as dots), the infinite-width closed form at the
    same time as a dashed, nearly horizontal line of the same colour (each width's rate, so its time η·t,
    differs a little). Right: the ratio net / infinite width minus 1
    against width / N² on log axes, the tolerance as a horizontal line and width = N² as a vertical one."""
    ns = summary["n_trains"]
    ws = np.asarray(summary["widths"], np.float64)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(ns)))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    for i, n in enumerate(ns):
        c = colors[i]
        a.plot(ws, summary["loss_net"][i], "o-", ms=4, color=c, label=f"N = {n}")
        seeds = np.asarray(summary["loss_net_per_seed"][i], np.float64)
        for s in range(seeds.shape[1]):
            a.scatter(ws, seeds[:, s], s=8, color=c, alpha=0.4, lw=0)
        a.plot(ws, summary["loss_inf"][i], ls="--", lw=1, color=c)  # nearly flat: each width's own time η·t
        excess = np.asarray(summary["ratio"][i], np.float64) - 1.0
        b.plot(ws / n**2, np.where(excess > 0, excess, np.nan), "o-", ms=4, color=c, label=f"N = {n}")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("width n")
    a.set_ylabel("test loss ½ mean (f − y)²")
    a.set_title("centred network (dots: seeds); dashed: infinite width at the same η·t", fontsize=9)
    a.legend(fontsize=8)
    b.axhline(summary["tolerance"], color="0.4", ls=":", lw=1, label=f"tolerance {summary['tolerance']:g}")
    b.axvline(1.0, color="0.4", ls="--", lw=1, label="width = N² (Atanasov et al. 2023)")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("width / N²")
    b.set_ylabel("net / infinite-width test loss − 1")
    b.set_title("excess over infinite width against width / N²", fontsize=9)
    b.legend(fontsize=8, loc="lower left")
    cfg = summary["config"]
    fig.suptitle(f"how wide for how much data: fc depth {cfg['model']['depth']}, {cfg['data']['name']}, "
                 f"{cfg['steps']} GD steps at {cfg['lr_fraction']:g} x own critical rate, "
                 f"{len(summary['seeds'])} seeds, centred", fontsize=10)
    fig.tight_layout()
    return style.save(fig, stem)


def figures(out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    summary = read_json(out_dir / "summary.json")
    return loss_vs_width(summary, out_dir / "datasize_loss_vs_width")
