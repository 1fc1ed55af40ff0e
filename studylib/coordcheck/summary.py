"""The coordinate check's summary.json and curves.npz, built from its cells' results."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from studylib import metrics as M
from studylib import runner
from studylib.coordcheck.config import CoordcheckConfig
from studylib.runner import Cell, Context

#: Expected log-log slope over width of each quantity after the first steps (hidden layers, output).
#: NTK parameterization: activations O(1), hidden updates O(n^-1/2), the output's update O(1) (Jacot et al.
#: 2018; Lee et al. 2019); μP: every activation and update O(1) (Yang & Hu 2021), but the output at init
#: O(n^-1/2) (its readout is n^-1/2 smaller than NTK's: TP4's μP has f_0 -> 0).
REFERENCE = {
    "ntk": {"update": (-0.5, 0.0), "size": (0.0, 0.0), "size_init": (0.0, 0.0)},
    "mup": {"update": (0.0, 0.0), "size": (0.0, None), "size_init": (0.0, -0.5)},
}
SOURCES = {"ntk": "NTK parameterization: hidden features move O(n^-1/2), the function O(1) (Lee et al. 2019)",
           "mup": "muP: every layer's features move O(1) (Yang & Hu 2021); f_0 = O(n^-1/2) at init"}


def layer_labels(depth: int) -> list[str]:
    """'x1' ... 'xL' (hidden activations phi(h^l)), then 'f' (the output)."""
    return [f"x{i + 1}" for i in range(depth)] + ["f"]


def reference(par: str, quantity: str, layer: int, depth: int) -> float | None:
    hidden, out = REFERENCE[par][quantity]
    return out if layer == depth else hidden


def fits(widths: np.ndarray, per_seed: np.ndarray, par: str, quantity: str, depth: int) -> list[dict[str, Any]]:
    """Per layer: :func:`studylib.metrics.fit_rate` of the seed mean over all widths (per_seed (W, S, L + 1)),
    with the expected slope and whether it lies in the 95% bootstrap interval."""
    out = []
    for j in range(depth + 1):
        fit = M.fit_rate(widths, per_seed[:, :, j], fit_widths=widths.astype(int))
        ref = reference(par, quantity, j, depth)
        lo, hi = fit["ci95"]
        fit["reference"] = ref
        fit["reference_in_ci95"] = None if ref is None or lo is None else bool(lo <= ref <= hi)
        out.append(fit)
    return out


def summarise(cfg: CoordcheckConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    from studylib import results as R

    results = sorted(results, key=lambda r: r["width"])
    widths = np.array([r["width"] for r in results], np.float64)
    depth = cfg.model.depth
    size = np.stack([r["size"] for r in results], axis=1)  # (P, W, S, T + 1, L + 1)
    update = np.stack([r["update"] for r in results], axis=1)
    entries = {}
    for i, par in enumerate(cfg.parameterizations):
        last = {"size": size[i, :, :, -1], "update": update[i, :, :, -1], "size_init": size[i, :, :, 0]}
        entries[par] = {
            "mean": {q: M.nanmean_std(v, axis=1)[0] for q, v in last.items()},  # (W, L + 1)
            "per_seed": last,
            "slopes": {q: fits(widths, v, par, q, depth) for q, v in last.items()},
            "gamma": [float(r["gamma"][i]) for r in results],
            "lr_scale": [float(r["lr_scale"][i]) for r in results],
            "source": SOURCES[par],
        }
    summary = {
        "study": "coordcheck",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "seeds": runner.seed_list(cfg),
        "widths": widths.astype(int),
        "layers": layer_labels(depth),
        "learning_rate": float(results[0]["learning_rate"]),
        "parameterizations": entries,
        "conventions": {
            "size": "RMS over the N x n coordinates of each hidden activation phi(h^l) (and of the uncentred output f) "
                    "after the last step; size_init: at theta_0",
            "update": "RMS of phi(h^l)(theta_t) - phi(h^l)(theta_0) on the training inputs after the last step; for "
                      "the output f(theta_t) - f(theta_0), the centred model",
            "training": "full-batch GD on 1/2 mean((f - y)^2) of the centred model, learning rate lr_fraction x "
                        "2Nk/lambda_max of the analytic NTK x studylib.mup.lr_scales (gamma^2)",
            "slopes": "log-log least-squares fit of the seed mean against width over all widths; ci95: bootstrap "
                      "over seeds (studylib.metrics.fit_rate); reference: the expected exponent",
        },
        "curves_file": "curves.npz",
    }
    arrays = {"widths": widths, "size": size, "update": update}
    return summary, arrays
