"""The regimes study's summary.json and curves.npz, built from its cells' results (schema: docs/regimes.md)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from studylib import runner
from studylib.modes import stalled_gap
from studylib.regimes.config import AXES, RegimesConfig, setting_of
from studylib.runner import Cell, Context


def _stats(vals: np.ndarray) -> dict:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN metrics (gate flips of erf nets)
        v = np.asarray(vals, np.float64)
        return {"mean": np.nanmean(v, axis=0), "median": np.nanmedian(v, axis=0), "std": np.nanstd(v, axis=0),
                "per_seed": v}


def _median(r: dict, name: str) -> float | None:
    """Seed median of a final value; None when no seed has a finite one."""
    with np.errstate(all="ignore"):
        return float(np.nanmedian(r["finals"][name])) if np.isfinite(r["finals"][name]).any() else None


def _medians(hits: list[tuple[int, dict]], name: str) -> np.ndarray:
    """Seed medians of a final value over (width, result) pairs, NaN where no seed has one."""
    return np.array([np.nan if (m := _median(r, name)) is None else m for _, r in hits])


def wide_enough(widths: np.ndarray, gap: np.ndarray, threshold: float) -> float | None:
    """Smallest width at which the (seed-median) gap falls below ``threshold`` and stays below
    at every wider width, interpolated log-log between the bracketing widths; None when the
    widest width is still above."""
    widths = np.asarray(widths, np.float64)
    gap = np.asarray(gap, np.float64)
    below = np.isfinite(gap) & (gap < threshold)
    if not below[-1]:
        return None
    k = len(gap) - 1
    while k > 0 and below[k - 1]:
        k -= 1
    if k == 0:
        return float(widths[0])
    g0, g1 = gap[k - 1], gap[k]
    if not (np.isfinite(g0) and g0 > 0 and g1 > 0):
        return float(widths[k])
    frac = (np.log(g0) - np.log(threshold)) / (np.log(g0) - np.log(g1))
    return float(np.exp(np.log(widths[k - 1]) + frac * (np.log(widths[k]) - np.log(widths[k - 1]))))


def correlation(x: np.ndarray, y: np.ndarray) -> dict:
    """Log-log least-squares fit y = a x^b and Pearson (of logs) / Spearman correlations."""
    from scipy import stats

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 3:
        return {"n": int(ok.sum()), "slope": None, "intercept": None, "pearson_log": None, "spearman": None}
    lx, ly = np.log10(x[ok]), np.log10(y[ok])
    slope, intercept = np.polyfit(lx, ly, 1)
    return {"n": int(ok.sum()), "slope": float(slope), "intercept": float(intercept),
            "pearson_log": float(np.corrcoef(lx, ly)[0, 1]), "spearman": float(stats.spearmanr(lx, ly)[0])}


def cell_entries(results: list[dict], base: dict) -> tuple[list[dict], dict[str, np.ndarray]]:
    """``summary['cells']`` and the per-cell arrays of curves.npz (prefix ``cell{i}/``)."""
    entries, arrays = [], {}
    for i, r in enumerate(results):
        entries.append({
            "index": i, **r["cell"], "width": r["width"], "dtype": r["dtype"], "output_scale": r["output_scale"],
            "learning_rate": r["learning_rate"], "lr_critical_inf": r["lr_critical_inf"], "y_scale": r["y_scale"],
            # studylib.mup's gamma-model: gamma (1 otherwise; cells stored before it existed have none) and
            # whether the cell is centred (per parameterization: --centre auto centres the gamma-model)
            "gamma": r.get("gamma", 1.0), "centred": bool(r.get("centred", False)),
            "diverged_net": r["diverged_net"], "diverged_lin": r["diverged_lin"],
            "metrics": {k: _stats(v) for k, v in r["finals"].items()},
        })
        p = f"cell{i}/"
        arrays |= {p + "curve/" + k: v for k, v in r["curves"].items()}
        arrays |= {p + "coeff/" + k: v for k, v in r["mode_coeffs"].items()}
        arrays[p + "pred/inf"] = r["mode_pred_inf"]
        arrays[p + "pred/emp"] = r["mode_pred_emp"]
        arrays |= {p + "departure/" + k: v for k, v in r["departure"].items()}
        for k in ("theta_lambda", "k0_lambda", "mode_laziness"):
            arrays[p + k] = r[k]
        if r["cell"] == base:
            arrays[p + "x_test"] = r["x_test"]
            arrays |= {p + "pred_test/" + k: v for k, v in r["pred_test"].items()}
    return entries, arrays


def heatmaps(cfg: RegimesConfig, results: list[dict], base: dict) -> dict[str, dict]:
    """Width x each map axis (other settings at the base cell): seed-median gap and laziness ratio."""
    widths = list(cfg.widths)
    heat = {}
    for field, key in AXES.items():
        values = list(getattr(cfg, field))
        grid = np.full((len(values), len(widths)), np.nan)
        lazy = np.full_like(grid, np.nan)
        idx = np.full(grid.shape, -1)
        for i, r in enumerate(results):
            c = r["cell"]
            if c["option"] == "plain" and all(c[k] == base[k] for k in base if k not in (key, "option")):
                a, b = values.index(c[key]), widths.index(r["width"])
                grid[a, b] = np.nan if _median(r, "gap") is None else _median(r, "gap")
                lazy[a, b] = np.nan if _median(r, "laziness_ratio") is None else _median(r, "laziness_ratio")
                idx[a, b] = i
        heat[key] = {"values": values, "gap_median": grid, "laziness_median": lazy, "cell_index": idx}
    return heat


def correlations(results: list[dict]) -> dict[str, dict]:
    """Gap against the candidate laziness measures over all cells and seeds (plain and options)."""
    gap = np.concatenate([r["finals"]["gap"] for r in results])
    of = lambda name: np.concatenate([r["finals"][name] for r in results])  # noqa: E731
    return {"gap_vs_laziness": correlation(of("laziness_ratio"), gap),
            "gap_vs_laziness_horizon": correlation(of("laziness_ratio_horizon"), gap),
            "gap_vs_rel_ntk_change_frobenius": correlation(of("rel_ntk_change"), gap)}


#: Candidate predictors of the gap, each a per-seed value of every cell: the first-order prediction
#: from theta_0 (perturbative), the linearization's motion in the slow modes of K_0 (the gap of a network
#: that stalls there), the kernel's motion against the spectrum (perturbative in spirit but measured after
#: training), the gate flips (non-perturbative; ReLU cells only) and the measured gap early in the run.
DIAGNOSTICS = ("gap_predicted", "gap_predicted_train", "gap_stalled", "gap_predicted_or_stalled", "laziness_ratio",
               "laziness_ratio_horizon", "rel_ntk_change", "kernel_change_op", "gate_flips", "gate_flips_early",
               "gap_early")
#: What computing each diagnostic needs: ``t0`` = theta_0 alone (no training), ``early`` = the first
#: ``gates.EARLY_FRACTION`` (5%) of the run, ``trained`` = the whole run.
NEEDS = {"gap_predicted": "t0", "gap_predicted_train": "t0", "gap_stalled": "t0", "gap_predicted_or_stalled": "t0",
         "laziness_ratio": "trained", "laziness_ratio_horizon": "trained", "rel_ntk_change": "trained",
         "kernel_change_op": "trained", "gate_flips": "trained", "gate_flips_early": "early", "gap_early": "early"}
#: Subsets of the runs over which every diagnostic is correlated with the gap.
SUBSETS = ("all", "smooth", "relu")
#: Activations whose units have gates that flip in training (every Taylor model around theta_0 keeps them).
GATED_ACTIVATIONS = ("relu",)
def derived_finals(r: dict) -> dict[str, np.ndarray]:
    """Per-seed diagnostics computed from a cell's stored curves (S,) each: ``gap_stalled``
    (:func:`stalled_gap`), ``gap_predicted_or_stalled`` (``gap_stalled`` for nets with gates,
    :data:`GATED_ACTIVATIONS`, whose flips no Taylor model sees; the first-order ``gap_predicted``
    otherwise) and ``gap_early`` (the measured gap at :func:`studylib.gates.early_checkpoint`, <= 5% of
    the run). ``r``: a cell's result with ``cell`` (its setting), ``steps``, ``curves``, ``mode_coeffs``,
    ``k0_lambda``, ``learning_rate``, ``y_scale`` and ``finals``."""
    from studylib import gates

    steps = np.asarray(r["steps"])
    stalled = stalled_gap(r["mode_coeffs"]["lin_emp"][:, 0], r["k0_lambda"], learning_rate=r["learning_rate"],
                          steps=int(steps[-1]), y_scale=r["y_scale"])
    gated = r["cell"]["activation"] in GATED_ACTIVATIONS
    return {"gap_stalled": stalled,
            "gap_predicted_or_stalled": stalled if gated else np.asarray(r["finals"]["gap_predicted"], np.float64),
            "gap_early": np.asarray(r["curves"]["gap"], np.float64)[:, gates.early_checkpoint(steps)]}


def _fit(x: np.ndarray, y: np.ndarray) -> dict:
    c = correlation(x, y)
    return c | {"r2_log": None if c["pearson_log"] is None else c["pearson_log"] ** 2}


def _best(diags: dict, names, n_max: int) -> dict[str, Any]:
    """The diagnostic of ``names`` with the highest Spearman over all runs among those defined on all
    ``n_max`` runs: ``{name, spearman, r2_log, n}`` (name None when there is none)."""
    ranked = [k for k in names if diags[k]["all"]["n"] == n_max and diags[k]["all"]["spearman"] is not None]
    if not ranked:
        return {"name": None, "spearman": None, "r2_log": None, "n": 0}
    best = max(ranked, key=lambda k: diags[k]["all"]["spearman"])
    return {"name": best} | {k: diags[best]["all"][k] for k in ("spearman", "r2_log", "n")}


def gap_prediction(results: list[dict]) -> dict[str, Any]:
    """Spearman and log-log R^2 of every diagnostic (:data:`DIAGNOSTICS`, per-seed values in each
    result's ``finals``) against the measured gap over all runs (cells x seeds), over the smooth (erf)
    and the ReLU runs; ``best``: the diagnostic with the highest Spearman over all runs among those
    defined on every run (the gate flips exist for ReLU nets only), whose ``spearman``, ``r2_log`` and
    ``n`` are the top-level values; ``best_t0`` / ``best_early``: the same among the diagnostics that
    need theta_0 only / at most the first 5% of the run (:data:`NEEDS`). The doubled option is left
    out: at theta_a = theta_b its first-order terms cancel identically (T = D = 0), so its gap is second
    order."""
    results = [r for r in results if r["cell"].get("option") != "doubled"]
    gap = np.concatenate([r["finals"]["gap"] for r in results])
    act = np.concatenate([np.full(len(r["finals"]["gap"]), r["cell"]["activation"]) for r in results])
    masks = {"all": np.ones(gap.shape, bool), "smooth": act != "relu", "relu": act == "relu"}
    diags = {}
    for name in DIAGNOSTICS:
        x = np.concatenate([r["finals"][name] for r in results])
        diags[name] = {sub: _fit(x[m], gap[m]) for sub, m in masks.items()}
    n_max = max(d["all"]["n"] for d in diags.values())
    top = _best(diags, DIAGNOSTICS, n_max)
    t0 = _best(diags, [k for k in DIAGNOSTICS if NEEDS[k] == "t0"], n_max)
    early = _best(diags, [k for k in DIAGNOSTICS if NEEDS[k] in ("t0", "early")], n_max)
    return {"best": top["name"], "spearman": top["spearman"], "r2_log": top["r2_log"], "n": top["n"],
            "best_t0": t0, "best_early": early, "needs": dict(NEEDS),
            "diagnostics": diags, "subsets": {"all": "every run (cells x seeds, options but doubled included)",
                                              "smooth": "runs of erf nets", "relu": "runs of ReLU nets"}}


def results_from_stored(summary: dict, arrays: dict[str, np.ndarray]) -> list[dict]:
    """Per-cell results rebuilt from a stored summary.json and curves.npz (enough for
    :func:`derived_finals` and :func:`gap_prediction`): ``cell`` (the setting), ``width``, ``steps``,
    ``learning_rate``, ``y_scale``, ``finals`` (the metrics' per-seed values, null -> NaN), ``curves``,
    ``mode_coeffs`` and ``k0_lambda``."""
    keys = list(summary["base_cell"])
    out = []
    for c in summary["cells"]:
        p = f"cell{c['index']}/"
        out.append({
            "cell": {k: c[k] for k in keys}, "width": c["width"], "steps": np.asarray(summary["checkpoint_steps"]),
            "learning_rate": c["learning_rate"], "y_scale": c["y_scale"],
            "finals": {k: np.array([np.nan if v is None else v for v in m["per_seed"]], np.float64)
                       for k, m in c["metrics"].items()},
            "curves": {k[len(p + "curve/"):]: v for k, v in arrays.items() if k.startswith(p + "curve/")},
            "mode_coeffs": {k[len(p + "coeff/"):]: v for k, v in arrays.items() if k.startswith(p + "coeff/")},
            "k0_lambda": arrays[p + "k0_lambda"],
        })
    return out


def refresh_gap_prediction(summary: dict, arrays: dict[str, np.ndarray]) -> dict:
    """A stored summary with the diagnostics of :func:`derived_finals` (re)computed from its curves into
    every cell's ``metrics`` and the ``gap_prediction`` block recomputed: brings a summary written
    before a diagnostic existed up to date without re-running its cells. Returns a new dict."""
    results, cells = [], []
    for c, r in zip(summary["cells"], results_from_stored(summary, arrays), strict=True):
        new = derived_finals(r)
        results.append(r | {"finals": r["finals"] | new})
        cells.append(c | {"metrics": c["metrics"] | {k: _stats(v) for k, v in new.items()}})
    return summary | {"cells": cells, "gap_prediction": gap_prediction(results)}


def _crossing(widths: np.ndarray, gap: np.ndarray, threshold: float, rate: float) -> dict[str, Any]:
    """The measured crossover: :func:`wide_enough` and the log-log slope of the gap over the widths from
    there on (None with fewer than two); ``falling`` = that slope is at most ``rate`` / 2 (at least half
    the published rate's fall)."""
    w = wide_enough(widths, gap, threshold)
    slope = None
    if w is not None:
        sel = (widths >= w) & np.isfinite(gap) & (gap > 0)
        if sel.sum() >= 2:
            slope = float(np.polyfit(np.log(widths[sel]), np.log(gap[sel]), 1)[0])
    return {"width": w, "slope_after": slope, "falling": None if slope is None else bool(slope <= rate / 2)}


def extrapolated_width(widths: np.ndarray, gap: np.ndarray, threshold: float, n_fit: int) -> dict[str, Any]:
    """Fit log gap = a + b log width over the ``n_fit`` narrowest widths with a finite positive gap and
    solve for the width where the fit reaches ``threshold`` (None when b >= 0, i.e. not falling)."""
    ok = np.isfinite(gap) & (gap > 0)
    w, g = widths[ok][:n_fit], gap[ok][:n_fit]
    if w.size < 2:
        return {"width": None, "slope": None, "fit_widths": w, "below_at_narrowest": None}
    b, a = np.polyfit(np.log(w), np.log(g), 1)
    width = float(np.exp((np.log(threshold) - a) / b)) if b < 0 else None
    below = bool(g[0] < threshold)
    if below:  # already below at the narrowest width: the prediction calls every width wide enough
        width = float(w[0])  # ... over the fitted widths only, when the fit rises (``rising``)
    return {"width": width, "slope": float(b), "fit_widths": w, "below_at_narrowest": below, "rising": bool(b >= 0)}


#: Lee et al. 2019 Thm 2.1: sup_t ||f_t - f_t^lin|| = O(n^-1/2).
PUBLISHED_GAP_RATE = -0.5


def widest_measured(widths: np.ndarray, depth_rows: dict) -> dict[str, float | None]:
    """Per depth of the depth axis, the widest width with a measured gap (``--max-width`` caps some)."""
    out = {}
    for j, d in enumerate(depth_rows["values"]):
        g = np.array([np.nan if v is None else v for v in depth_rows["gap_median"][j]], np.float64)
        out[str(d)] = float(widths[np.isfinite(g)][-1]) if np.isfinite(g).any() else None
    return out


def crossover(cfg: RegimesConfig, results: list[dict], base: dict) -> list[dict[str, Any]]:
    """Per (activation, depth) at the base setting otherwise: seed-median measured and predicted gaps over
    width, the measured crossover (:func:`_crossing`: below ``gap_threshold`` from that width on, and
    falling) or the widest width reached, and the width the prediction's own fit over the narrowest
    ``crossover_fit_widths`` widths gives (:func:`extrapolated_width`); for ReLU nets also the stalled-mode
    gap (:func:`studylib.modes.stalled_gap`) and the width its fit gives ('predicted_stalled')."""
    rows = []
    for act in cfg.activations:
        for depth in cfg.depths:
            setting = base | {"activation": act, "depth": depth}
            hits = sorted((r["width"], r) for r in results if r["cell"] == setting)
            if not hits:
                continue
            widths = np.array([w for w, _ in hits], np.float64)
            gap, pred = _medians(hits, "gap"), _medians(hits, "gap_predicted")
            measured = _crossing(widths, gap, cfg.gap_threshold, PUBLISHED_GAP_RATE)
            predicted = extrapolated_width(widths, pred, cfg.gap_threshold, cfg.crossover_fit_widths)
            row = {"activation": act, "depth": depth, "widths": widths, "gap_median": gap,
                   "gap_predicted_median": pred, "measured": measured, "predicted": predicted,
                   "widest": float(widths[-1])}
            if act in GATED_ACTIVATIONS:  # the stalled-mode gap from theta_0 tracks the ReLU gap (gap_prediction)
                stalled = _medians(hits, "gap_stalled")
                row |= {"gap_stalled_median": stalled,
                        "predicted_stalled": extrapolated_width(widths, stalled, cfg.gap_threshold,
                                                                cfg.crossover_fit_widths)}
            rows.append(row)
    return rows


def timing(results: list[dict]) -> dict[str, float]:
    """Wall seconds of training (with its measurements) and of the prediction, summed over the cells
    computed in this run (reused cells carry the times of the run that made them)."""
    train = float(sum(r["seconds_train"] for r in results))
    predict = float(sum(r["seconds_predict"] for r in results))
    return {"train_seconds": train, "predict_seconds": predict, "predict_over_train": predict / max(train, 1e-12)}


def option_rows(cfg: RegimesConfig, results: list[dict], base: dict) -> dict[str, dict]:
    """Each option at the base setting against width: seed-median gap, loss and laziness ratio."""
    opts = {}
    for opt in cfg.options:
        row: dict[str, list] = {"gap_median": [], "loss_net_median": [], "laziness_median": [], "cell_index": []}
        for w in cfg.widths:
            hits = [i for i, r in enumerate(results) if r["width"] == w and r["cell"] == base | {"option": opt}]
            i = hits[0] if hits else -1
            row["cell_index"].append(i)
            for name, key in (("gap", "gap_median"), ("loss_net", "loss_net_median"),
                              ("laziness_ratio", "laziness_median")):
                row[key].append(None if i < 0 else _median(results[i], name))
        opts[opt] = row
    return opts


def modes_base(results: list[dict], base: dict) -> list[dict]:
    """Per width at the base cell: mode time scales, departure steps and per-mode laziness (seed medians)."""
    out = []
    for r in results:
        if r["cell"] != base:
            continue
        with np.errstate(all="ignore"):
            final_ratio = (r["mode_coeffs"]["net_emp"][:, -1] / r["mode_pred_emp"][:, -1])
            out.append({
                "width": r["width"],
                "theta_lambda": r["theta_lambda"],
                "mode_timescale_steps": len(r["theta_lambda"]) / (r["learning_rate"] * r["theta_lambda"]),
                "departure_net_emp_median": np.nanmedian(r["departure"]["net_emp"], axis=0),
                "departure_net_emp_fraction_departed": np.mean(np.isfinite(r["departure"]["net_emp"]), axis=0),
                "departure_net_inf_median": np.nanmedian(r["departure"]["net_inf"], axis=0),
                "departure_lin_inf_median": np.nanmedian(r["departure"]["lin_inf"], axis=0),
                "departure_lin_emp_any": bool(np.isfinite(r["departure"]["lin_emp"]).any()),
                "final_net_over_pred_emp_median": np.nanmedian(final_ratio, axis=0),
                "mode_laziness_median": np.nanmedian(r["mode_laziness"], axis=0),
                "laziness_ratio_median": _median(r, "laziness_ratio"),
            })
    return out


def conventions(cfg: RegimesConfig) -> dict[str, str]:
    out = _conventions(cfg)
    rich = [p for p in cfg.parameterizations if cfg.rich(p)]
    if rich:  # only then: the summaries of other runs keep their text
        out["time"] += ("; the cells of studylib.mup's gamma-model (parameterization mup, or ntk at gamma0 != 1; "
                        "cells' key gamma) in the NTK net's units: learning_rate / gamma^2 * t")
        out["learning_rate"] += ("; for the gamma-model Theta is its own kernel (the NTK net's / gamma^2), so its rate "
                                 "is the NTK net's x gamma^2 (eta Theta, and every step count, are the NTK net's)")
        centred = {p: cfg.centred_for(p) for p in cfg.parameterizations}
        if len(set(centred.values())) > 1:
            out["centring"] += ("; per parameterization (cells' key centred): centred "
                                + ", ".join(p for p, v in centred.items() if v) + ", uncentred "
                                + ", ".join(p for p, v in centred.items() if not v))
    return out


def _conventions(cfg: RegimesConfig) -> dict[str, str]:
    return {
        "centring": ("centred (summary key centred): every cell of one network trains and measures alpha "
                     "(f(theta) - f(theta_0)) (studylib.centring), so its outputs at step 0 are 0 and the "
                     "linearization and the infinite-width closed form start from f_0 = 0; option 'centred' is "
                     "the plain model" if cfg.centred else
                     "uncentred (summary key centred): the models start from the network's own f(theta_0), "
                     "except options centred and doubled"),
        "loss": "L = 1/2 mean((f - y)^2) over the N training outputs (NT's); full-batch GD",
        "time": "t counts GD steps; absolute time = learning_rate * t",
        "learning_rate": "lr_fraction * 2N/lambda_max(Theta), Theta the analytic NTK of the cell's model "
                         "(times output_scale^2 for option out_scale)",
        "linearization": "f(theta_0) + J_0(theta - theta_0) trained by GD, evaluated exactly in function space "
                         "(discrete GD with the empirical K_0; equals nt.linearize trained step by step)",
        "closed_inf": "discrete GD with the analytic NTK from the network's own f(theta_0)",
        "gap": "RMSE(f_net - f_lin) over the test grid's interpolation range |x| <= x_range at the last step, "
               "divided by RMS(y_train); NaN when net or linearization diverged",
        "laziness_ratio": "sup over checkpoints of ||K_t - K_0||_2 / lambda_min(K_0), K the network's empirical "
                          "NTK on the training inputs, ||.||_2 the operator norm; lambda_min clipped at "
                          "1e-7 lambda_max (numerically singular K_0)",
        "laziness_ratio_horizon": "sup_t ||K_t - K_0||_2 / max(lambda_min(K_0), N / (lr T)), T the last step: "
                                  "against the slowest mode the run can fit",
        "modes": "eigenvectors of Theta ('inf') or of each seed's K_0 ('emp'), eigenvalues descending (mode 0 "
                 "fastest); coefficient c_i = <v_i, f(X) - Y>; prediction (1 - lr lambda_i / N)^t c_{0,i}",
        "departure": f"first checkpoint with |c_t - c_pred| > {cfg.departure_tol} * max(|c_0,i|, "
                     f"{cfg.departure_floor} * ||r_0||); null/NaN: did not depart within the run",
        "data": ("x = linspace(-x_range, x_range, N), y = x^3/20, test grid on [-2 x_range, 2 x_range]"
                 if cfg.data.name == "cubic" else
                 f"data {cfg.data.name!r} as configured (studylib.data.load_for; x_ranges keeps its base value unless "
                 "the data are a 1-D grid); with k outputs every quantity is over the flat N k outputs (row n k + i), "
                 "the network's NTK is the full (N k, N k) kernel, Theta (x) I_k the analytic one, the critical rate "
                 "2 N k / lambda_max and the first-order prediction (scalar outputs only) NaN"),
        "metrics": "per cell: last checkpoint (sup over checkpoints for laziness_ratio, kernel_change_op, "
                   "rel_ntk_change); mean/median/std over seeds that did not diverge",
    }


def summarise(cfg: RegimesConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``summary.json`` dict and ``curves.npz`` arrays (see docs/regimes.md for the schema)."""
    from studylib import results as R

    results = [r | {"cell": setting_of(c.spec)} for c, r in zip(cells, results, strict=True)]
    results = [r | {"finals": r["finals"] | derived_finals(r)} for r in results]
    widths = np.asarray(cfg.widths)
    base = cfg.base()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
        entries, cell_arrays = cell_entries(results, base)
        heat = heatmaps(cfg, results, base)
        opts = option_rows(cfg, results, base)
        mode_summary = modes_base(results, base)
    wide = {str(d): wide_enough(widths, heat["depth"]["gap_median"][j], cfg.gap_threshold)
            for j, d in enumerate(heat["depth"]["values"])}
    summary = {
        "study": "regimes",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "widths": widths,
        "seeds": runner.seed_list(cfg),
        "checkpoint_steps": results[0]["steps"],
        "base_cell": base,
        "centred": cfg.centred,
        "conventions": conventions(cfg),
        "cells": entries,
        "heatmaps": heat,
        **correlations(results),
        "wide_enough": {"threshold": cfg.gap_threshold, "width_by_depth": wide,
                        "widest_by_depth": widest_measured(widths, heat["depth"])},
        "options": opts,
        "modes_base": mode_summary,
        "gap_prediction": gap_prediction(results),
        "crossover": {"threshold": cfg.gap_threshold, "published_rate": PUBLISHED_GAP_RATE,
                      "rows": crossover(cfg, results, base)},
        "timing": timing(results),
        "curves_file": "curves.npz",
    }
    arrays = {"widths": widths, "steps": results[0]["steps"], **cell_arrays}
    return summary, arrays
