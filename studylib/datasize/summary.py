"""The data-size study's summary.json and curves.npz, built from its cells' results."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from studylib import metrics as M
from studylib import runner
from studylib.datasize.config import DatasizeConfig
from studylib.runner import Cell, Context

#: The published expectation (Atanasov et al. 2023, arXiv 2212.12147; SCIENCE.md section 9): a width-n network
#: follows the infinite-width learning curve up to N of about sqrt(n); matching it on N points needs n ~ N^2.
SOURCE = ("Atanasov et al. 2023 (arXiv 2212.12147): finite nets fall behind the infinite-width learning curve "
          "once N exceeds about sqrt(width); matching infinite width on N points needs width ~ N^2")


def smallest_matching_width(widths: list[int], ratio: np.ndarray, tolerance: float) -> int | None:
    """The smallest width from which on every wider one the seed-mean ratio net / infinite-width test loss
    stays <= 1 + tolerance; None when even the widest does not ("> widest")."""
    ok = np.asarray(ratio) <= 1.0 + tolerance
    for i in range(len(widths)):
        if ok[i:].all():
            return int(widths[i])
    return None


def excess_slope(widths: list[int], ratio_per_seed: np.ndarray) -> dict:
    """Log-log slope over width of the excess net / infinite-width test loss − 1 (seed mean; ratio_per_seed
    (W, S)), 95% bootstrap interval over seeds (:func:`studylib.metrics.fit_rate`); slope None when a seed
    mean is not positive (the net at or below infinite width)."""
    excess = np.asarray(ratio_per_seed, np.float64) - 1.0
    if not (excess.mean(-1) > 0).all():
        return {"slope": None, "ci95": [None, None]}
    fit = M.fit_rate(np.asarray(widths), excess, fit_widths=list(widths))
    return {"slope": fit["slope"], "ci95": fit["ci95"]}


def plateau_change(loss: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Relative change of the test loss over the last 10% of the steps, (loss(T) - loss(0.9 T)) / loss(T), per
    leading index of loss (..., T)."""
    j = int(np.flatnonzero(np.asarray(steps) == round(0.9 * steps[-1]))[0])
    return (loss[..., -1] - loss[..., j]) / loss[..., -1]


def summarise(cfg: DatasizeConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    from studylib import results as R

    ns, ws = list(cfg.n_trains), list(cfg.widths)
    by = {(int(r["n_train"]), int(r["width"])): r for r in results}
    grid = [[by[(n, w)] for w in ws] for n in ns]
    last = lambda key: np.array([[r[key][..., -1] for r in row] for row in grid])  # noqa: E731
    loss_net = last("loss_net")  # (Nn, W, S) at the last step
    acc_net = last("accuracy_net")
    loss_inf_t = np.array([[r["loss_inf"][-2] for r in row] for row in grid])  # (Nn, W) same time as the net
    loss_inf_end = np.array([[r["loss_inf"][-1] for r in row] for row in grid])  # t = infinity (width independent)
    acc_inf_t = np.array([[r["accuracy_inf"][-2] for r in row] for row in grid])
    acc_inf_end = np.array([[r["accuracy_inf"][-1] for r in row] for row in grid])
    ratio_seed = loss_net / loss_inf_t[..., None]  # (Nn, W, S)
    ratio = ratio_seed.mean(-1)
    plateau_net = np.array([[plateau_change(r["loss_net"], r["steps"]) for r in row] for row in grid])  # (Nn, W, S)
    plateau_inf = np.array([[plateau_change(r["loss_inf"][:-1], r["steps"]) for r in row] for row in grid])
    matching = [smallest_matching_width(ws, ratio[i], cfg.tolerance) for i in range(len(ns))]
    per_n = []
    for i, n in enumerate(ns):
        per_n.append({
            "n_train": n,
            "smallest_matching_width": matching[i],
            "excess_vs_width": excess_slope(ws, ratio_seed[i]),
            "expected_width_n_squared": n * n,
            "sqrt_widest": math.sqrt(ws[-1]),
            "loss_inf_t_inf": float(loss_inf_end[i, 0]),
            "accuracy_inf_t_inf": float(acc_inf_end[i, 0]),
        })
    summary = {
        "study": "datasize",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "seeds": runner.seed_list(cfg),
        "n_trains": ns,
        "widths": ws,
        "tolerance": cfg.tolerance,
        "steps": int(cfg.steps),
        "learning_rate": [[float(r["learning_rate"]) for r in row] for row in grid],
        "lr_critical_inf": [float(row[0]["lr_critical_inf"]) for row in grid],
        "k0_over_theta_lambda_max": [[float(np.max(r["k0_lambda_max"]) / r["theta_lambda_max"]) for r in row]
                                     for row in grid],
        "loss_net": loss_net.mean(-1), "loss_net_per_seed": loss_net,
        "accuracy_net": acc_net.mean(-1), "accuracy_net_per_seed": acc_net,
        "loss_inf": loss_inf_t, "accuracy_inf": acc_inf_t,
        "loss_inf_t_inf": loss_inf_end[:, 0], "accuracy_inf_t_inf": acc_inf_end[:, 0],
        "ratio": ratio, "ratio_per_seed": ratio_seed,
        "ratio_t_inf": loss_net.mean(-1) / loss_inf_end,
        "plateau_change_net": plateau_net.mean(-1), "plateau_change_inf": plateau_inf,
        "slowest_mode_trained": [[float(r["slowest_mode_trained"][-1]) for r in row] for row in grid],
        "step0_max_abs": float(max(r["step0_max_abs"] for r in results)),
        "per_n": per_n,
        "source": SOURCE,
        "conventions": {
            "loss": "test loss 1/2 mean over the M test inputs and k outputs of (f - y)^2 (NT's), of the centred "
                    "network f(theta_t) - f(theta_0) after the last step (seed mean) and of NT's closed form with "
                    "the analytic NTK from f_0 = 0 at the same rate and step (exact discrete GD)",
            "ratio": "seed mean of net / infinite-width test loss at the same time lr x steps; ratio_t_inf: against "
                     "the closed form at t = infinity",
            "learning_rate": "lr_fraction x min over seeds of 2Nk/lambda_max(K_0) (power iteration), per (N, width)",
            "matching": "smallest width from which on the ratio stays <= 1 + tolerance; None: > the widest",
            "plateau": "relative change of the test loss over the last 10% of the steps; slowest_mode_trained: "
                       "1 - (1 - lr lambda_min(Theta)/(N k))^steps",
            "data": "nested class-balanced subsets of the pool data.n_train, standardised with the pool's "
                    "statistics; the same held-out test set for every N",
        },
        "curves_file": "curves.npz",
    }
    arrays = {"n_trains": np.array(ns), "widths": np.array(ws),
              "steps": np.stack([np.stack([r["steps"] for r in row]) for row in grid]),
              "loss_net": np.stack([np.stack([r["loss_net"] for r in row]) for row in grid]),  # (Nn, W, S, T)
              "loss_inf": np.stack([np.stack([r["loss_inf"] for r in row]) for row in grid])}  # (Nn, W, T + 1)
    return summary, arrays
