"""The comparison study's summary.json and curves.npz, built from its cells' results."""

from __future__ import annotations

import dataclasses

import numpy as np

from studylib import metrics as M
from studylib import runner
from studylib.compare.config import REFERENCE_RATES, CompareConfig
from studylib.runner import Cell, Context

#: Final-time gaps in the summary's ``metrics`` (besides every curve's name).
SCALARS_PER_SEED = ("ntk_init_error", "lr_critical_emp", "k0_lambda_min", "k0_lambda_max")
#: Gaps also summarised over time: ``<gap>[_region]_sup`` (max over checkpoints, the quantity Lee et
#: al. 2019 Thm 2.1 bounds) and ``<gap>[_region]_early`` (at the first checkpoint at or after EARLY_STEP).
TIME_SUMMARISED = ("rmse_net_vs_lin", "rmse_net_vs_quad")
#: The fixed early time of the ``_early`` metrics, in GD steps (time = lr * steps).
EARLY_STEP = 32
#: Published rates of the time-summarised gaps (exponent of width n, source).
TIME_REFERENCE_RATES: dict[str, tuple[float, str]] = {
    "rmse_net_vs_lin_sup": (-0.5, "Lee et al. 2019 Thm 2.1: sup_t ||f_t - f_t^lin|| = O(n^-1/2)"),
    "rmse_net_vs_lin_early": (-0.5, "Lee et al. 2019 Thm 2.1 (a bound at every t); perturbation theory gives "
                                    "O(t^2/n) at fixed early t, docs/controls.md"),
}


def _time_summaries(results: list[dict]) -> dict[str, np.ndarray]:
    """``<name>_sup`` and ``<name>_early`` (W, S) for every curve of a TIME_SUMMARISED gap."""
    out: dict[str, np.ndarray] = {}
    early = M.first_checkpoint_at(results[0]["steps"], EARLY_STEP)
    for name in results[0]["curves"]:
        if name.startswith(TIME_SUMMARISED):
            curves = np.stack([r["curves"][name] for r in results])  # (W, S, T)
            out[f"{name}_sup"] = M.sup_over_time(curves)
            out[f"{name}_early"] = curves[:, :, early]
    return out


def _final_per_seed(results: list[dict]) -> dict[str, np.ndarray]:
    """Metric name -> (W, S) array of final-checkpoint values (per-layer curves split by layer)."""
    out: dict[str, np.ndarray] = {}
    for name in results[0]["curves"]:
        vals = np.stack([r["curves"][name][:, -1] for r in results])  # (W, S[, L])
        if vals.ndim == 3:
            for layer in range(vals.shape[2]):
                out[f"{name}_l{layer + 1}"] = vals[:, :, layer]
        else:
            out[name] = vals
    for name in SCALARS_PER_SEED:
        out[name] = np.stack([np.asarray(r[name], np.float64) for r in results])
    for name in [n for n in out if n.startswith("gap_predicted")]:  # measured / predicted, per region
        with np.errstate(invalid="ignore", divide="ignore"):
            measured = out[name.replace("gap_predicted", "rmse_net_vs_lin")]
            out[name.replace("gap_predicted", "gap_ratio")] = measured / out[name]
    return out | _time_summaries(results)


def summarise(cfg: CompareConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    """Build the ``summary.json`` dict and the ``curves.npz`` arrays from per-width results."""
    from studylib import results as R

    dataset = ctx.dataset
    widths = np.array([r["width"] for r in results])
    finals = _final_per_seed(results)
    summary_metrics = {}
    slopes = {}
    for name, vals in finals.items():
        mean, std = M.nanmean_std(vals, axis=1)
        summary_metrics[name] = {"mean": mean, "std": std, "per_seed": vals}
        if name.startswith(("rmse_", "rel_", "ntk_init_error", "ntk_x0_change", "gap_predicted")):
            fit = M.fit_rate(widths, vals, cfg.fit_widths)
            ref = REFERENCE_RATES.get(name) or TIME_REFERENCE_RATES.get(name)
            fit["reference"] = None if ref is None else {"slope": ref[0], "source": ref[1]}
            slopes[name] = fit
    summary = {
        "study": "compare",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "widths": widths,
        "seeds": runner.seed_list(cfg),
        "centred": cfg.centred,
        "lr_rule": cfg.lr_rule,
        "checkpoint_steps": results[0]["steps"],
        "checkpoint_times": [r["times"] for r in results],  # per width: learning_rate x each checkpoint's step
        "conventions": {
            "loss": "L = 1/2 mean((f - y)^2) over the N training outputs (NT's)",
            "time": "t counts GD steps; absolute time = learning_rate * t" + (
                "; lr_rule=emp: each width at lr_fraction x the smallest 2Nk/lambda_max(K_0) of its seeds, all "
                "widths trained to the same absolute time (per_width train_time), checkpoints at the same "
                "fractions of it (checkpoint_times; within half a step); compare widths at equal time, not steps"
                if cfg.lr_rule == "emp" else "; lr_rule=analytic: one rate for every width"),
            "centring": ("centred: every model is trained and measured as f(theta) - f(theta_0) (studylib.centring; "
                         "Lee et al. 2020): network and quadratic model via per-seed targets Y + f_0(X), outputs "
                         "reported minus f_0; linearization J_0 (theta - theta_0); closed forms with f_0 = 0"
                         if cfg.centred else "uncentred: every model starts from the network's own f_0 = f(theta_0)"),
            "trained_fraction": "1 - (1 - lr lambda_min / (N k))^t of the slowest mode (network and linearization: "
                                "lambda_min of each seed's K_0, discrete GD; closed forms: NT's flow 1 - exp(-lr t "
                                "lambda_min / (N k)), K_0's or Theta's)",
            "limit": "*_limit: the closed forms at t = infinity (NT's gradient_descent_mse at t=None): "
                     "rmse_net_vs_closed_inf_limit, rmse_closed_inf_vs_limit, rmse_lin_vs_closed_emp_limit say how "
                     "far each run is from where its training leads",
            "parameterization": cfg.model.parameterization,
            "linearized": f"lin_mode={cfg.lin_mode}: " + (
                "nt.linearize trained by the same GD trainer" if cfg.lin_mode == "params" else
                "the same GD run in function space, theta_t - theta_0 = J_0^T c_t (exact; see tests)"),
            "closed_form": "default names: NT gradient flow (gradient_descent_mse); *_discrete: exact discrete GD",
            "rmse_regions": "no suffix: test grid on [-test_range, test_range]; _train: training inputs; "
                            "_interp: |x| <= train_range; _extrap: |x| > train_range",
            "metrics": "final checkpoint; mean/std over seeds that did not diverge",
            "gap_predicted": "first-order prediction of rmse_net_vs_lin from theta_0 alone (studylib.perturb, "
                             "docs/crossover.md), same regions and units; gap_ratio = measured / predicted; NaN "
                             "with k > 1 outputs or more than 64 training inputs",
            "slopes": "least-squares log-log fit of the seed mean vs width over fit_widths (default: widths >= 64, "
                      "the 3 largest when fewer); ci95 from bootstrap over seeds; local_slopes: between "
                      "neighbouring widths of the whole sweep, each with its bootstrap ci95",
            "time_summaries": f"<gap>_sup: max over checkpoints; <gap>_early: at step "
                              f"{int(results[0]['steps'][M.first_checkpoint_at(results[0]['steps'], EARLY_STEP)])} "
                              f"(the first checkpoint at or after step {EARLY_STEP})",
        },
        "per_width": [
            {k: r[k] for k in ("width", "learning_rate", "lr_critical_inf", "lr_critical_emp",
                               "lr_above_emp_critical", "theta_lambda_min", "theta_lambda_max",
                               "diverged_net_step", "diverged_lin_step", "diverged_quad_step", "quad_trained")}
            | {"lr_over_critical_emp": r["learning_rate"] / np.asarray(r["lr_critical_emp"]),
               "train_steps": int(r["steps"][-1]), "train_time": float(r["times"][-1])}
            for r in results
        ],
        "metrics": summary_metrics,
        "slopes": slopes,
        "fit_widths": [int(w) for w in widths[M.fit_mask(widths, cfg.fit_widths)]],
        "curves_file": "curves.npz",
    }
    curves = {"widths": widths, "steps": results[0]["steps"],
              "steps_per_width": np.stack([r["steps"] for r in results]),  # (W, T): widths differ under lr_rule=emp
              "times": np.stack([r["times"] for r in results])}  # (W, T) learning_rate x steps
    if dataset is not None:
        curves |= {"x_train": dataset.x_train, "y_train": dataset.y_train, "x_test": dataset.x_test}
        curves |= {f"region/{k}": v for k, v in dataset.regions.items()}
    for name in results[0]["curves"]:
        curves[f"curve/{name}"] = np.stack([r["curves"][name] for r in results])
    for where in ("test", "train"):
        for name in results[0][f"predictions_{where}"]:
            curves[f"pred_{where}/{name}"] = np.stack([r[f"predictions_{where}"][name] for r in results])
    return summary, curves


