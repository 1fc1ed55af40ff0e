"""The ensemble study's statistics, Monte-Carlo floor, summary.json and ensemble.npz (NumPy only).

Statistics per width, mode and checkpoint, on the test grid (σ = GP std):

* ``mean_err`` = RMS_x(ensemble mean - GP mean) / RMS_x(σ);
* ``std_err``  = RMS_x(ensemble std - σ) / RMS_x(σ)  (ensemble std with ddof=1);
* ``calibration`` = fraction of (test point, member) pairs with |f - GP mean| <= 2σ
  (0.9545 for exact GP draws);
* ``mean_rmse`` = RMS_x(ensemble mean - GP mean), in units of y.

The Monte-Carlo floor is the same statistics computed for ``members`` exact
draws from the GP itself (same mean and covariance at each time), repeated
``mc_repeats`` times: an ensemble of M perfect infinite-width networks would
scatter inside it, so finite-width effects are the part above the floor.

With k outputs per example (one-hot classes) the "test points" are the (test input, output) pairs:
outputs and GP means are flattened point-major to X k entries (index x k + j) and the GP std, the
same for every output, is repeated k times (:func:`point_std`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from studylib import metrics as Mx
from studylib import runner
from studylib.closed_form import gp_sqrt, gp_std
from studylib.ensemble.config import COVERAGE_2SIGMA, REFERENCE, STATS, EnsembleConfig
from studylib.runner import Cell, Context

#: Per-member arrays of a cell's mode, stacked over widths in the summary.
NET_KEYS = ("test", "train", "lambda_init", "lambda_final", "kernel_change", "unstable")


# --------------------------------------------------------------------------- statistics


def ensemble_stats(f: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of ensembles ``f`` (..., members, X) against a GP with per-point ``mean``/``std`` (..., X).

    Non-finite members (diverged networks) are left out. See the module docstring
    for the definitions; every output has the leading shape ``...``.
    """
    f = np.asarray(f, np.float64)
    ok = np.isfinite(f).all(axis=-1)  # (..., members)
    fm = np.where(ok[..., None], f, np.nan)
    with np.errstate(all="ignore"):
        e_mean = np.nanmean(fm, axis=-2)
        e_std = np.nanstd(fm, axis=-2, ddof=1)
        rms_sigma = np.sqrt(np.mean(std**2, axis=-1))
        mean_rmse = np.sqrt(np.mean((e_mean - mean) ** 2, axis=-1))
        inside = np.abs(fm - mean[..., None, :]) <= 2.0 * std[..., None, :]
        calib = np.sum(inside & ok[..., None], axis=(-2, -1)) / (np.sum(ok, axis=-1) * f.shape[-1])
        return {
            "mean_err": mean_rmse / rms_sigma,
            "std_err": np.sqrt(np.mean((e_std - std) ** 2, axis=-1)) / rms_sigma,
            "calibration": calib,
            "mean_rmse": mean_rmse,
            "ens_mean": e_mean,
            "ens_std": e_std,
            "n_finite": np.sum(ok, axis=-1),
        }


def point_std(cov: np.ndarray, n_entries: int) -> np.ndarray:
    """The GP std of each of ``n_entries`` = X k flattened outputs (point-major) from the covariance
    (..., X, X) that every output shares: (..., X k)."""
    n_x = cov.shape[-1]
    return np.repeat(gp_std(cov), n_entries // n_x, axis=-1)


def mc_floor(mean: np.ndarray, cov: np.ndarray, members: int, repeats: int, *, seed: int = 0
             ) -> dict[str, np.ndarray]:
    """The statistics of :func:`ensemble_stats` for ``repeats`` ensembles of ``members`` exact GP draws.

    ``mean`` (T, X k) (k outputs flattened point-major; k = 1: (T, X)), ``cov`` (T, X, X), the same
    for every output, which are independent. Returns each statistic with shape (repeats, T).
    """
    rng = np.random.default_rng(seed)
    mean = np.asarray(mean, np.float64)
    n_t, n_x = cov.shape[0], cov.shape[-1]
    n_out = mean.shape[1] // n_x
    root = gp_sqrt(cov)  # (T, X, X)
    std = point_std(cov, mean.shape[1])
    out: dict[str, list] = {k: [] for k in STATS}
    for _ in range(repeats):
        z = rng.standard_normal((n_t, members, n_x, n_out))  # k = 1: the scalar floor's stream
        zt = z.transpose(0, 2, 1, 3).reshape(n_t, n_x, members * n_out)  # one BLAS product per checkpoint
        lz = (root @ zt).reshape(n_t, n_x, members, n_out).transpose(0, 2, 1, 3)
        draws = mean[:, None, :] + lz.reshape(n_t, members, n_x * n_out)
        s = ensemble_stats(draws, mean, std)
        for k in STATS:
            out[k].append(s[k])
    return {k: np.stack(v) for k, v in out.items()}


def floor_summary(per_repeat: np.ndarray) -> dict[str, np.ndarray]:
    """mean, std and 5/95% quantiles over repeats (axis 0)."""
    return {"mean": per_repeat.mean(0), "std": per_repeat.std(0, ddof=1),
            "q05": np.quantile(per_repeat, 0.05, axis=0), "q95": np.quantile(per_repeat, 0.95, axis=0)}


def unstable_members(train_out: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """Members (axis 1 of ``train_out`` (T, members, N k), flattened as ``y_train`` (N, k)) whose outputs
    became non-finite or whose final training loss exceeds their loss at init (GD below its critical
    rate never ends above it)."""
    loss = 0.5 * np.mean((train_out - np.asarray(y_train).reshape(1, 1, -1)) ** 2, axis=-1)  # (T, members)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(loss).all(axis=0) | ~(loss[-1] <= loss[0])


def excess_slope(widths, values, floor_mean) -> dict:
    """Log-log slope of sqrt(max(err^2 - floor^2, 0)) (the part of the error beyond sampling noise)
    vs width, over the widths where the error exceeds 1.5x the floor; None with fewer than 3 such widths."""
    values = np.asarray(values, np.float64)
    above = np.isfinite(values) & (values > 1.5 * floor_mean)
    if above.sum() < 3:
        return {"slope": None, "widths_used": np.asarray(widths)[above]}
    excess = np.sqrt(values[above] ** 2 - floor_mean**2)
    slope, intercept = Mx.fit_loglog(np.asarray(widths)[above], excess)
    return {"slope": slope, "intercept": intercept, "widths_used": np.asarray(widths)[above]}


# --------------------------------------------------------------------------- summary steps


def stack_widths(cfg: EnsembleConfig, results: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per mode, each of :data:`NET_KEYS` stacked over the widths (leading axis W)."""
    return {m: {k: np.stack([np.asarray(r[m][k]) for r in results]) for k in NET_KEYS} for m in cfg.modes}


def mode_arrays(mode: str, nets: dict[str, np.ndarray], lr: float, y_train: np.ndarray) -> dict[str, np.ndarray]:
    """The stored per-member arrays of one mode (``ensemble.npz``) and the per-member ratio
    lr * lambda_max(own per-output kernel at init) / (2 N k)."""
    n, k = y_train.shape
    out = {f"{mode}/outputs": nets["test"].astype(np.float32),  # (W, T, members, X k)
           f"{mode}/train_loss": 0.5 * np.mean((nets["train"] - y_train.reshape(-1)) ** 2, axis=-1),
           f"{mode}/unstable": nets["unstable"],
           f"{mode}/lr_over_critical_emp": lr * nets["lambda_init"][..., -1] / (2.0 * n * k)}  # (W, members)
    for k in ("lambda_init", "lambda_final", "kernel_change"):
        out[f"{mode}/{k}"] = nets[k]
    return out


def per_width_rows(mode: str, nets: dict[str, np.ndarray], lr_ratio: np.ndarray, rows: list[dict]) -> None:
    """Add one mode's per-width entries (unstable count, lr ratio, kernel medians) to ``rows``."""
    unstable = nets["unstable"]
    for i, row in enumerate(rows):
        row[f"unstable_{mode}"] = int(unstable[i].sum())
        row[f"lr_over_critical_emp_{mode}"] = {"median": np.median(lr_ratio[i]), "max": lr_ratio[i].max(),
                                               "frac_above_1": np.mean(lr_ratio[i] > 1.0)}
        if mode == "ntk":
            ok = ~unstable[i]
            with np.errstate(all="ignore"):
                row["kernel_change_ntk"] = np.median(nets["kernel_change"][i][ok])
                row["lambda_min_init_ntk"] = np.median(nets["lambda_init"][i][ok, 0])
                row["lambda_min_final_ntk"] = np.median(nets["lambda_final"][i][ok, 0])


def stat_entries(mode: str, ref: str, stats: dict[str, np.ndarray], floors: dict[str, np.ndarray] | None,
                 widths: np.ndarray) -> dict[str, dict]:
    """The ``metrics`` entries of one mode against one GP (``ref`` 'flow' or 'discrete'); the flow
    entries carry the Monte-Carlo floor, the floor tests and the excess slopes."""
    suffix = "" if ref == "flow" else "_discrete"
    out = {}
    for k in STATS:
        entry: dict[str, Any] = {"per_time": stats[k], "final": stats[k][:, -1]}
        if floors is not None:
            fl = floor_summary(floors[k])
            entry["floor"] = fl
            if k != "calibration":
                entry["above_floor_q95"] = stats[k] > fl["q95"][None]
                entry["excess_slope"] = [excess_slope(widths, stats[k][:, i], fl["mean"][i])
                                         for i in range(stats[k].shape[1])]
            else:
                entry["below_floor_q05"] = stats[k] < fl["q05"][None]
        out[f"{mode}/{k}{suffix}"] = entry
    return out


def flow_vs_discrete(gp_mode: dict) -> dict[str, np.ndarray]:
    """RMS gap of the discrete-GD GP's mean and std to the flow GP's, per checkpoint, in units of
    the flow GP's RMS σ."""
    (mf, cf), (md, cd) = gp_mode["flow"], gp_mode["discrete"]
    rms = np.sqrt(np.mean(gp_std(cf) ** 2, axis=-1))  # the same over X k flattened entries
    return {"mean_err": np.sqrt(np.mean((mf - md) ** 2, axis=-1)) / rms,
            "std_err": np.sqrt(np.mean((gp_std(cf) - gp_std(cd)) ** 2, axis=-1)) / rms}


def conventions(cfg: EnsembleConfig) -> dict[str, str]:
    return {
        "loss": "L = 1/2 mean((f - y)^2) over the N k training outputs (NT's)",
        "outputs": "k outputs per example: outputs, GP means and statistics over the X k (test input, output) "
                   "pairs, flattened point-major (x k + j); the GP has the same covariance for every output "
                   "(analytic kernel (x) I_k) and none between them; the learning rate's critical value is "
                   "2 N k / lambda_max",
        "time": "t counts GD steps; absolute time = learning_rate * t (NT's gradient_descent_mse_ensemble)",
        "parameterization": cfg.model.parameterization,
        "modes": "ntk: all layers trained vs get='ntk'; readout: last layer only vs get='nngp'",
        "centring": "uncentred (summary key centred: false): each member starts from its own f(theta_0), whose "
                    "spread is the GP's prior part; --centre on is refused (docs/ensemble.md, 'Centring')",
        "gp": "metrics without suffix: NT gradient flow (gradient_descent_mse_ensemble, compute_cov=True); "
              "*_discrete: exact discrete-GD GP (I - lr Theta/N)^t, NumPy",
        "mean_err": "RMS_x(ensemble mean - GP mean) / RMS_x(GP std) over the test grid",
        "std_err": "RMS_x(ensemble std (ddof=1) - GP std) / RMS_x(GP std)",
        "calibration": f"fraction of (x, member) with |f - GP mean| <= 2 GP std; exact GP: {COVERAGE_2SIGMA:.4f}",
        "mean_rmse": "RMS_x(ensemble mean - GP mean), units of y",
        "per_time": "shape (widths, checkpoints); final = last checkpoint",
        "floor": f"same statistic for {cfg.members} exact draws from the flow GP, {cfg.mc_repeats} repeats: "
                 "mean, std, q05, q95 per checkpoint",
        "kernel": "per_width kernel_change_ntk: median over stable members of ||K_T - K_0||_F / ||K_0||_F of "
                  "the empirical NTK on the training inputs; lambda_min_*_ntk: median smallest eigenvalue "
                  "of K_0 / K_T (analytic: kernel_eigenvalues)",
        "excess_slope": "per checkpoint: log-log slope vs width of sqrt(err^2 - floor_mean^2) over the widths "
                        "whose error exceeds 1.5x the floor mean (slope null with fewer than 3)",
        "unstable": "members whose outputs became non-finite or whose final train loss exceeds their initial "
                    "one are left out of the statistics (unstable_* in per_width); lr_over_critical_emp: "
                    "lr * lambda_max(own kernel at init) / 2N per member (> 1: unstable for a constant kernel)",
    }


def summarise(cfg: EnsembleConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    """Build the ``summary.json`` dict and the ``ensemble.npz`` arrays from the per-width results and
    the GP of :func:`studylib.ensemble.cell.prepare` (``ctx.shared``); the Monte-Carlo floor is
    computed here (its time is added to ``wall_seconds``)."""
    from studylib import results as R

    t0 = time.perf_counter()
    gp, data = ctx.shared, ctx.dataset
    steps = gp["steps"]
    widths = np.asarray([r["width"] for r in results])
    nets = stack_widths(cfg, results)
    floors = {m: mc_floor(*gp[m]["flow"], cfg.members, cfg.mc_repeats, seed=cfg.first_seed) for m in cfg.modes}
    metrics: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {"widths": widths, "steps": steps, "y_train": data.y_train.reshape(-1)}
    if data.x_train.shape[1:] == (1,):  # 1-D inputs: the band figures draw over x
        arrays |= {"x_test": data.x_test[:, 0], "x_train": data.x_train[:, 0]}
    per_width = [{"width": int(w)} for w in widths]
    for mode in cfg.modes:
        arrays |= mode_arrays(mode, nets[mode], gp["lr"][mode], data.y_train)
        per_width_rows(mode, nets[mode], arrays[f"{mode}/lr_over_critical_emp"], per_width)
        f = np.where(nets[mode]["unstable"][:, None, :, None], np.nan, nets[mode]["test"])  # unstable left out
        for ref in ("flow", "discrete"):
            mean, cov = gp[mode][ref]
            std = point_std(cov, mean.shape[-1])
            arrays[f"{mode}/gp_{ref}_mean"], arrays[f"{mode}/gp_{ref}_std"] = mean, std
            s = ensemble_stats(f, mean[None], std[None])  # (W, T)
            metrics |= stat_entries(mode, ref, s, floors[mode] if ref == "flow" else None, widths)
            if ref == "flow":
                arrays[f"{mode}/ens_mean"], arrays[f"{mode}/ens_std"] = s["ens_mean"], s["ens_std"]
                arrays |= {f"{mode}/floor/{k}": floors[mode][k] for k in STATS}
    summary = {
        "study": "ensemble",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds + (time.perf_counter() - t0),
        "widths": widths,
        "members": cfg.members,
        "centred": cfg.centred,  # always false here (docs/ensemble.md, "Centring")
        "seeds": runner.seed_list(cfg),
        "checkpoint_steps": steps,
        "learning_rate": gp["lr"],
        "lr_critical": gp["lr_critical"],
        "kernel_eigenvalues": gp["lambda"],
        "gp_mean_train_loss": {m: gp["train_loss"][m] for m in cfg.modes},
        "gp_flow_vs_discrete": {m: flow_vs_discrete(gp[m]) for m in cfg.modes},
        "conventions": conventions(cfg),
        "reference": REFERENCE,
        "per_width": per_width,
        "metrics": metrics,
        "arrays_file": "ensemble.npz",
    }
    return summary, arrays
