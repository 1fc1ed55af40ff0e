"""The dynamics study's summary.json and curves.npz, built from its cells' results."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from studylib import runner
from studylib.dynamics.config import SEED_REPORTED_BATCH1, DynamicsConfig
from studylib.runner import Cell, Context

#: Curves whose final value per seed goes into the summary's metrics.
FINAL_METRICS = ("rel_param_change", "rel_param_change_lin", "ntk_x0_change", "rel_ntk_change", "loss_net",
                 "loss_lin", "rmse_net_vs_lin_train")
#: Per-cell values copied from a cell's result into ``per_cell``.
PER_CELL_KEYS = ("lr", "method", "lr_critical_inf", "lr_over_critical_inf", "lr_over_critical_emp", "k0_lambda_min",
                 "k0_lambda_max", "diverged_net_epoch")
#: Trained functions copied into curves.npz under '<cell>/<name>'.
FUNCTIONS = ("f0_test", "f_net_test", "f_lin_test", "f_net_train", "f_lin_train")


def final_values(res: dict) -> dict[str, np.ndarray]:
    """Metric name -> per-seed value at the last epoch (per-layer changes split by layer)."""
    cur = res["curves"]
    finals = {m: cur[m][:, -1] for m in FINAL_METRICS}
    for layer in range(cur["rel_weight_change"].shape[2]):
        finals[f"rel_weight_change_l{layer + 1}"] = cur["rel_weight_change"][:, -1, layer]
        finals[f"rel_weight_change_lin_l{layer + 1}"] = cur["rel_weight_change_lin"][:, -1, layer]
    finals["lr_over_critical_emp"] = res["lr_over_critical_emp"]
    finals |= dict(res.get("test", {}))  # held-out metrics (data with test targets)
    return finals


def seed_stats(v: np.ndarray) -> dict:
    """{mean, std, per_seed} over the seeds that stayed finite (NaN when none did)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"mean": np.nanmean(v), "std": np.nanstd(v), "per_seed": v}


def conventions(cfg: DynamicsConfig) -> dict[str, str]:
    return {
        "loss": ("L = mean((f - y)^2) over the batch (the seed's, no 1/2)" if cfg.loss == "mse"
                 else "L = 1/2 mean((f - y)^2) over the batch (NT's)"),
        "epoch": "a fresh random permutation of the N training points, split into N/B batches",
        "lr_critical": "_emp: full-batch GD limit 2N / (c lambda_max(K_0)) of each seed's empirical NTK at "
                       "init (c = 2 for mse, 1 for half_mse); _inf: SGD limit for the cell's batch size with "
                       "the analytic NTK (kernels.minibatch_critical_rate)",
        "metrics": "keyed by cell 'w<width>_b<batch>'; value at the last epoch; mean/std over seeds; test_*: on "
                   "the held-out test set after training (loss as above over the M k outputs; accuracy: argmax "
                   "of the k outputs; agreement: same predicted class for network and linearization)",
        "outputs": "with k outputs per example, functions are flat (N k,), row n k + i, the loss is a mean over "
                   "all B k outputs of a batch and the NTK is the full (N k, N k) kernel; ntk_x0_change is "
                   "its entry (first training point, output 0)",
        "linearized": "nt.linearize(apply_fn, theta_0) trained on the same batches (function-space form)",
        "parameterization": cfg.model.parameterization,
    }


def summarise(cfg: DynamicsConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    """Build the ``summary.json`` dict and the ``curves.npz`` arrays from the cells' results."""
    from studylib import results as R

    metrics: dict[str, dict] = {}
    per_cell = []
    curves: dict[str, np.ndarray] = {"widths": np.array(cfg.widths), "batch_sizes": np.array(cfg.batch_sizes)}
    for cell, res in zip(cells, results, strict=True):
        tag = cell.name
        for m, v in final_values(res).items():
            metrics.setdefault(m, {})[tag] = seed_stats(v)
        per_cell.append({"width": cell.spec["width"], "batch_size": cell.spec["batch_size"], "tag": tag}
                        | {k: res[k] for k in PER_CELL_KEYS}
                        | {"wall_seconds": res.get("cell_seconds"), "compile_seconds": res.get("compile_seconds"),
                           "vmapped_seeds": res.get("vmapped_seeds")})
        curves["epochs"] = res["epochs"]
        for name, c in res["curves"].items():
            curves[f"{tag}/curve/{name}"] = c
        for name in FUNCTIONS:
            curves[f"{tag}/{name}"] = res[name]
    ds = ctx.dataset
    curves["y_train"] = ds.y_train.reshape(-1)  # flat (N k,), as the stored functions (row n k + i)
    if ds.y_test is not None:
        curves["y_test"] = ds.y_test.reshape(-1)
    if ds.x_train.shape[1:] == (1,):  # 1-D inputs: the function figure draws over x
        curves["x_train"], curves["x_test"] = ds.x_train[:, 0], ds.x_test[:, 0]
    summary = {
        "study": "dynamics",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "widths": list(cfg.widths),
        "batch_sizes": list(cfg.batch_sizes),
        "seeds": runner.seed_list(cfg),
        "conventions": conventions(cfg),
        "seed_reported_batch1_rel_param_change": SEED_REPORTED_BATCH1,
        "data": {"name": cfg.data.name, "n_train": int(ds.x_train.shape[0]), "n_test": int(ds.x_test.shape[0]),
                 "input_shape": list(ds.x_train.shape[1:]), "outputs": int(ds.y_train.shape[1]),
                 "n_classes": int(ds.n_classes), "first_x": ds.x_train[0].ravel()[:3].tolist()},
        "per_cell": per_cell,
        "metrics": metrics,
        "curves_file": "curves.npz",
    }
    return summary, curves
