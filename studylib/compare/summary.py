"""The comparison study's summary.json and curves.npz, built from its cells' results."""

from __future__ import annotations

import dataclasses

import numpy as np

from studylib import afterkernel, runner
from studylib import metrics as M
from studylib.compare.config import REFERENCE_RATES, CompareConfig
from studylib.runner import Cell, Context

#: Final-time gaps in the summary's ``metrics`` (besides every curve's name).
SCALARS_PER_SEED = ("ntk_init_error", "lr_critical_emp", "k0_lambda_min", "k0_lambda_max")
#: Per-seed scalars of the after kernel (:func:`studylib.afterkernel.compare_rows`); ``after_accuracy_from``
#: only with classes. A cell stored before these existed lacks them: NaN.
AFTER_SCALARS = ("kernel_alignment_k0", "kernel_alignment_theta", "after_vs_net_rmse_k0", "after_rmse_ratio",
                 "after_explains_from", "after_accuracy_from")
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
    out |= _after_scalars(results)
    out["rmse_net_vs_next_width"] = next_width_gap(results)
    for name in [n for n in out if n.startswith("gap_predicted")]:  # measured / predicted, per region
        with np.errstate(invalid="ignore", divide="ignore"):
            measured = out[name.replace("gap_predicted", "rmse_net_vs_lin")]
            out[name.replace("gap_predicted", "gap_ratio")] = measured / out[name]
    return out | _time_summaries(results)


def _after_scalars(results: list[dict]) -> dict[str, np.ndarray]:
    """(W, S) of each :data:`AFTER_SCALARS` that some width has (NaN for a width whose stored cell lacks it)."""
    out = {}
    for name in AFTER_SCALARS:
        if any(name in r for r in results):
            out[name] = np.stack([np.asarray(r.get(name, np.full(len(r["k0_lambda_min"]), np.nan)), np.float64)
                                  for r in results])
    return out


def _after_filled(results: list[dict]) -> list[dict]:
    """The results with the after-kernel curves and test predictions that another width has filled in as NaN
    where a width's cell was stored before they existed (a re-run reusing older cells); the rest as they are."""
    names = {n for r in results for n in r["curves"] if n.startswith(("kernel_", "after_"))}
    out = []
    for r in results:
        missing = names - r["curves"].keys()
        has_pred = any("after" in q["predictions_test"] for q in results)
        if not missing and (not has_pred or "after" in r["predictions_test"]):
            out.append(r)
            continue
        shape = r["curves"]["loss_net"].shape  # (S, T)
        r = dict(r, curves=r["curves"] | {n: np.full(shape, np.nan) for n in missing})
        if has_pred and "after" not in r["predictions_test"]:
            net = r["predictions_test"]["net"]
            r["predictions_test"] = r["predictions_test"] | {"after": np.full(net.shape, np.nan, net.dtype)}
        out.append(r)
    return out


def next_width_gap(results: list[dict]) -> np.ndarray:
    """(W, S): RMS over the test points (and outputs) of f_n(x*) - f_n'(x*) at the final checkpoint, seed by seed,
    between each width n and the next width n' of the sweep (NaN for the widest): how far the trained network
    still moves when the width grows, whichever limit it converges to (the kernel regression of the NTK, or
    mu-P's feature-learning limit: Yang & Hu 2021). Seeds of two widths are independent draws, so it includes
    the spread of f_n around its limit."""
    nets = [np.asarray(r["predictions_test"]["net"][:, -1], np.float64) for r in results]  # (S, M[, k]) each
    out = np.full((len(results), nets[0].shape[0]), np.nan)
    for i in range(len(nets) - 1):
        d = (nets[i] - nets[i + 1]).reshape(nets[i].shape[0], -1)
        out[i] = np.sqrt(np.mean(d**2, axis=-1))
    return out


def summarise(cfg: CompareConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    """Build the ``summary.json`` dict and the ``curves.npz`` arrays from per-width results."""
    from studylib import results as R

    dataset = ctx.dataset
    results = _after_filled(results)
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
            "rmse_net_vs_next_width": "RMS over test points of f_n - f_n' at the final checkpoint, n' the next width "
                                      "of the sweep, seed s against seed s (NaN at the widest)",
            "after_kernel": "the empirical NTK along training (studylib.afterkernel; Fort et al. 2020, Long 2021): "
                            "kernel_alignment = centred kernel-target alignment A(K_t, Y Y^T) = <HKH, HYY^TH>_F / "
                            "(||HKH||_F ||HYY^TH||_F) of the traced kernel on the first kernel_points training "
                            "inputs, every checkpoint; kernel_velocity = ||K_j - K_{j-1}||_F / ||K_{j-1}||_F / "
                            "(t_j - t_{j-1}) on the same inputs, per unit time lr x steps (entry j: the interval "
                            "ending at checkpoint j); kernel_alignment_k0 / _theta: K_0 / Theta on all N. At step 0 "
                            "and every checkpoint at or after "
                            f"{afterkernel.AFTER_FROM:g} x the run's time (else NaN) the traced K_t on all N and "
                            "test-train gives after_alignment and the kernel regression f_0(x*) + K_t(x*, X) "
                            "K_t^+ (Y - f_0(X)) (f_0 = 0 when centred; the t = infinity limit of the linear model "
                            "with K_t; pinv dropping eigenvalues <= N eps lambda_max): after_vs_net_rmse = its RMSE "
                            "to the final trained network's test outputs (K_0: after_vs_net_rmse_k0; "
                            "after_rmse_ratio = K_T's / K_0's), after_test_loss/_rmse/_accuracy against the test "
                            "targets, after_agreement_with_net = same predicted class as the final network; "
                            "after_explains_from = the first fraction t/T from which K_t's RMSE to the network stays "
                            f"<= {afterkernel.RMSE_TOL:g} x K_0's (90% of K_0's distance gone), "
                            "after_accuracy_from = from which its test accuracy stays within "
                            f"{afterkernel.ACCURACY_TOL:g} of the network's; per seed NaN = never, not even K_T (e.g. "
                            "a network not trained to convergence, which the t = infinity regression is), the mean "
                            "over the seeds that reach it",
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


