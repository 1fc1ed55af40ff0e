"""The prediction study's summary.json and curves.npz, built from its cells' results."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from studylib import metrics as M
from studylib import runner
from studylib.predict.config import PredictConfig, sizes
from studylib.runner import Cell, Context

#: Lee et al. 2019 Thm 2.1: sup_t ||f_t - f_t^lin|| = O(n^-1/2); the first-order term itself is O(1/n)
#: in NTK parameterization for smooth activations (Dyer & Gur-Ari 2019; Huang & Yau 2019).
PUBLISHED_RATES = {"bound": -0.5, "first_order": -1.0}
#: What study.regimes measured for ReLU nets (docs/crossover.md, reduced crossover run, widths 64...2048):
#: the prediction explains 1-10% of the measured gap.
RELU_CAVEAT = ("ReLU: every Taylor model around theta_0 keeps theta_0's gates, so the prediction misses the gap "
               "that gate flips make; study.regimes measured a ReLU gap of 0.12-0.19 at width 2048 (depths 2-5) "
               "against a predicted 0.0005-0.015, i.e. 1-10% explained, and a Spearman of 0.23 over ReLU runs "
               "(erf: 0.83; docs/crossover.md). Treat the predicted width as a lower bound for ReLU nets; the "
               "stalled-mode gap (gap_stalled, also from theta_0) is the diagnostic that tracks the ReLU gap "
               "(Spearman 0.87 over the ReLU runs of the regimes map, docs/regimes.md).")
ORDER_ONE = ("predicted gap >= 1 at width(s) {widths}: a first-order term cannot describe a deviation as large as "
             "the function; those widths are outside the perturbative regime and left out of the fit")
UNKNOWN_LAYERS = ("the stax layers of {arch} were not found, so whether it has ReLU-like activations (whose gap "
                  "the first-order prediction misses, docs/crossover.md) is unknown: no ReLU caveat applied")
K_NOTE = ("{k} outputs per example: the N k = {rows} flat outputs are the training rows (loss 1/2 mean over all "
          "of them, factor lr / (N k)); study.regimes has compared prediction and measurement for k = 1 only")


def stats(per_seed: np.ndarray) -> dict[str, Any]:
    """Seed mean, median, std and a 95% bootstrap interval of the seed mean per width, from (W, S)."""
    per_seed = np.asarray(per_seed, np.float64)
    mean, std = M.nanmean_std(per_seed, axis=1)
    with np.errstate(all="ignore"):
        median = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in per_seed])
    rng = np.random.default_rng(0)
    draws = M.nanmean_std(per_seed[:, rng.integers(0, per_seed.shape[1], size=(2000, per_seed.shape[1]))],
                          axis=2)[0]  # (W, B)
    ci = [[None, None] if not np.isfinite(d).any() else [float(np.nanpercentile(d, 2.5)),
                                                          float(np.nanpercentile(d, 97.5))] for d in draws]
    return {"mean": mean, "median": median, "std": std, "ci95": ci, "per_seed": per_seed}


def is_relu(cfg: PredictConfig, network: dict | None) -> bool | None:
    """Whether the network has ReLU-like (piecewise-linear) activations, to which :data:`RELU_CAVEAT`
    applies: a registered architecture by its config (fc/res_fc/cnn with activation relu), a user builder
    by the stax layers found in it (:func:`studylib.models.describe`; its config fields may be ignored by
    it), None when they cannot be found."""
    from studylib import models

    if ":" not in cfg.model.arch:
        return cfg.model.activation == "relu" and cfg.model.arch != "erf_fc"
    layers = (network or {}).get("layers")
    return None if not layers else models.is_piecewise_linear(layers)


def validity(cfg: PredictConfig, widths: np.ndarray, gap: dict, k: int, network: dict | None = None) -> dict[str, Any]:
    """Where the prediction is not to be trusted: order-one predicted gaps, ReLU nets, k > 1 outputs."""
    big = [int(w) for w, m in zip(widths, gap["mean"], strict=True) if np.isfinite(m) and m >= 1.0]
    relu_or_unknown = is_relu(cfg, network)
    relu = bool(relu_or_unknown)
    notes = []
    if relu_or_unknown is None:
        notes.append(UNKNOWN_LAYERS.format(arch=cfg.model.arch))
    if big:
        notes.append(ORDER_ONE.format(widths=", ".join(map(str, big))))
    if relu:
        notes.append(RELU_CAVEAT)
    if k > 1:
        notes.append(K_NOTE.format(k=k, rows=sizes(cfg)["rows"]))
    return {"order_one_widths": big, "relu": relu, "outputs": k, "valid": not (big or relu), "notes": notes}


def perturbative_widths(widths: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The widths the rate is fitted on: those whose seed-mean predicted gap is below 1 (the first-order
    regime), or all widths when fewer than two are."""
    keep = np.isfinite(mean) & (mean < 1.0)
    return widths[keep] if keep.sum() >= 2 else widths


def cost(results: list[dict], steps: int) -> list[dict[str, Any]]:
    """Per width: seconds of compilation, of the expansion and of the recursion (all seeds), the measured
    seconds of one full-batch gradient (all seeds) and the training they stand for (``steps`` x that)."""
    out = []
    for r in results:
        train = steps * float(r["seconds_gradient"])
        spent = float(r["seconds_expansion"]) + float(r["seconds_recursion"])
        out.append({"width": int(r["width"]), "n_params": int(r["n_params"]),
                    "compile_seconds": float(r["seconds_compile"]), "expansion_seconds": float(r["seconds_expansion"]),
                    "recursion_seconds": float(r["seconds_recursion"]),
                    "gradient_seconds": float(r["seconds_gradient"]), "training_seconds_model": train,
                    "prediction_over_training": spent / max(train, 1e-12)})
    return out


def summarise(cfg: PredictConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    from studylib import results as R

    results = sorted(results, key=lambda r: r["width"])
    network = (ctx.shared or {}).get("network")  # what the network is (studylib.models.describe)
    widths = np.array([r["width"] for r in results], np.float64)
    per_seed = {name: np.stack([r["finals"][name] for r in results]) for name in ("gap_predicted",
                                                                                 "gap_predicted_train", "gap_stalled")}
    gap = stats(per_seed["gap_predicted"])
    k = int(results[0]["outputs"])
    fit_on = np.isin(widths, perturbative_widths(widths, gap["mean"]))
    summary = {
        "study": "predict",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "seeds": runner.seed_list(cfg),
        "widths": widths.astype(int),
        "checkpoint_steps": results[0]["steps"],
        "outputs": k,
        "centred": cfg.centred,
        "route": results[0]["route"],
        "learning_rate": [float(r["learning_rate"]) for r in results],
        "lr_critical_inf": [float(r["lr_critical_inf"]) for r in results],
        "lr_over_critical_emp": [np.asarray(r["learning_rate"] / np.asarray(r["lr_critical_emp"])) for r in results],
        "diverged_lin": [np.asarray(r["diverged_lin"]) for r in results],
        "gap_predicted": gap,
        "gap_predicted_train": stats(per_seed["gap_predicted_train"]),
        "slope": M.fit_rate(widths, per_seed["gap_predicted"], fit_widths=widths[fit_on].astype(int)),
        "crossover": M.extrapolate_crossing(widths[fit_on], per_seed["gap_predicted"][fit_on], cfg.gap_threshold),
        "gap_stalled": stats(per_seed["gap_stalled"]),
        "stalled": {"slope": M.fit_rate(widths, per_seed["gap_stalled"], fit_widths=widths.astype(int)),
                    "crossover": M.extrapolate_crossing(widths, per_seed["gap_stalled"], cfg.gap_threshold)},
        "published_rates": PUBLISHED_RATES,
        "network": network,
        "validity": validity(cfg, widths, gap, k, network),
        "cost": cost(results, cfg.steps),
        "conventions": {
            "loss": "L = 1/2 mean((f - y)^2) over the N k training outputs (NT's); GD theta -= lr grad L; "
                    "time = lr * steps",
            "learning_rate": "lr_fraction x 2 N k / lambda_max of the analytic NTK on the training inputs",
            "gap_predicted": "RMS over the evaluated test outputs of delta f = f_net - f_lin at the last step, first "
                             "order in the network's curvature (studylib.perturb), / RMS(y_train); NaN for seeds "
                             "whose lr exceeds 2Nk/lambda_max(K_0) (their linearization diverges)",
            "gap_stalled": "the linearization's motion in the slow modes of K_0 (not fitted within the first 5% of "
                           "the run) by the last step, RMS over the training outputs / RMS(y_train), from theta_0 "
                           "(studylib.modes.stalled_gap): the gap of a net that stalls in those modes, as ReLU nets "
                           "do (docs/regimes.md: Spearman 0.87 with the measured gap over the ReLU runs of the "
                           "regimes map, first-order prediction 0.17); stalled.slope/crossover: its fit over all "
                           "widths",
            "slope": "log-log fit of the seed mean against width over the widths whose mean predicted gap is below 1 "
                     "(all when fewer than two are); ci95: bootstrap over seeds",
            "crossover": "width where the fitted power law reaches gap_threshold (studylib.metrics."
                         "extrapolate_crossing); ci95: the same bootstrap over seeds, a non-falling draw counting "
                         "as unbounded (null)",
            "centring": ("centred: the predicted run trains g = f(theta) - f(theta_0) (studylib.centring); its "
                         "linearization starts from 0 and fits Y, so the expansion's f_0 is set to 0 and delta f = "
                         "g_net - g_lin (docs/predict.md)" if cfg.centred else
                         "uncentred: the linearization starts from the network's own f_0 = f(theta_0)"),
            "cost": "seconds on this machine; training_seconds_model = steps x one measured full-batch gradient "
                    "(all seeds): the GD run the prediction replaces, at that width",
        },
        "curves_file": "curves.npz",
    }
    arrays = {"steps": results[0]["steps"], "widths": widths}
    for r in results:
        tag = f"width{r['width']}"
        arrays |= {f"{tag}/{name}": v for name, v in r["curves"].items()}
        arrays |= {f"{tag}/delta_final": r["delta_final"], f"{tag}/f_lin_final": r["f_lin_final"],
                   f"{tag}/predict_rows": r["predict_rows"]}
    return summary, arrays
