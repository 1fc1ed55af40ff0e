"""The controls' summary.json and curves.npz, built from their cells' results."""

from __future__ import annotations

import dataclasses

import numpy as np

from studylib import metrics as M
from studylib import runner
from studylib.controls.config import ControlsConfig
from studylib.runner import Cell, Context

#: The theorem's exponent of the lazy control's gap in alpha (Chizat, Oyallon & Bach 2019, Thm 2.3/2.4:
#: smooth models, bounded time horizon) and the published rate of the closing control in width.
LAZY_REFERENCE = (-1.0, "Chizat, Oyallon & Bach 2019: ||g_alpha - g_lin|| = O(1/alpha) on bounded horizons for "
                        "models with a Lipschitz differential (erf yes, ReLU no)")
FLIPS_REFERENCE = (-1.0, "not published: a gate flips when its pre-activation crosses 0; with a finite density of "
                         "pre-activations at 0 the flipped fraction is proportional to the displacement ~ 1/alpha")
CLOSING_REFERENCE = (-0.5, "Lee et al. 2019 Thm 2.1: sup_t ||f_t - f_t^lin|| = O(n^-1/2)")
#: What the closing control expects under muP (--parameterization mup): a gap that does not close at the NTK
#: rate. The gamma-model's linearization is the NTK net's in function space (kernel / gamma^2 at rate x gamma^2),
#: while the network tends to the muP limit, which learns features (Yang & Hu 2021): the gap tends to a constant.
#: To first order it is gamma times the NTK net's (Chizat's 1/alpha; tests/test_regimes_mup.py), gamma =
#: gamma_0 sqrt(n/n_0): O(sqrt n) x O(n^-1/2) = O(1). Verdict: the whole 95% interval above -1/2.
MUP_CLOSING_EXPECTED = ("muP (Yang & Hu 2021): the network learns features at every width and tends to the muP "
                        "limit, not to its linearization (the NTK limit): the gap does not close at n^-1/2 (tends to "
                        "a constant); as expected when the whole 95% interval of the slope lies above -1/2")
#: Gaps fitted (final step, sup over checkpoints) and the early step of the closing control.
LAZY_GAPS = ("gap", "gap_train", "gap_interp")
CLOSING_GAPS = ("rmse_net_vs_lin", "rmse_net_vs_lin_train", "rmse_net_vs_lin_interp")
EARLY_STEP = 32


def inside(ci, value: float) -> bool | None:
    """Whether ``value`` lies in the interval ``ci`` (None when the interval is missing)."""
    lo, hi = ci
    return None if lo is None or hi is None else bool(lo <= value <= hi)


def with_verdict(fit: dict, reference: tuple[float, str]) -> dict:
    """``fit`` plus ``reference`` and ``theory_in_ci95`` (the verdict line's yes/no)."""
    return fit | {"reference": {"slope": reference[0], "source": reference[1]},
                  "theory_in_ci95": inside(fit["ci95"], reference[0])}


def lazy_summary(cfg: ControlsConfig, results: list[dict]) -> list[dict]:
    """Per (activation, width): the gap vs alpha (final and sup over checkpoints) with fitted
    exponents over alpha >= fit_alpha_min, local slopes and verdicts; gate flips per layer."""
    out = []
    for r in results:
        alphas = r["alphas"]
        fit_alphas = M.default_fit_widths(alphas, min_width=cfg.fit_alpha_min)
        entry = {"activation": r["activation"], "width": r["width"], "alphas": alphas,
                 "learning_rate": r["learning_rate"], "diverged_step": r["diverged_step"], "metrics": {},
                 "slopes": {}}
        if cfg.model.rich:  # studylib.mup's gamma-model (only then: other summaries are unchanged)
            entry["gamma"] = r["gamma"]
        c = r["curves"]
        for name in LAZY_GAPS:
            for kind, vals in (("final", c[name][..., -1]), ("sup", M.sup_over_time(c[name]))):
                key = name if kind == "final" else f"{name}_sup"
                mean, std = M.nanmean_std(vals, axis=1)
                entry["metrics"][key] = {"mean": mean, "std": std, "per_seed": vals}
                entry["slopes"][key] = with_verdict(M.fit_rate(alphas, vals, fit_alphas), LAZY_REFERENCE)
        for name in ("loss", "loss_lin", "rel_param_change"):
            vals = c[name][..., -1]
            mean, std = M.nanmean_std(vals, axis=1)
            entry["metrics"][name] = {"mean": mean, "std": std, "per_seed": vals}
        for where in ("train", "test"):
            flips = c[f"gate_flips_{where}"][:, :, -1]  # (A, S, L)
            entry["metrics"][f"gate_flips_{where}"] = {"mean": M.nanmean_std(flips, axis=1)[0],
                                                       "per_seed": flips}
        all_layers = c["gate_flips_train"][:, :, -1].mean(axis=-1)  # (A, S): mean over hidden layers
        mean, std = M.nanmean_std(all_layers, axis=1)
        entry["metrics"]["gate_flips_train_all"] = {"mean": mean, "std": std, "per_seed": all_layers}
        entry["slopes"]["gate_flips_train_all"] = with_verdict(M.fit_rate(alphas, all_layers, fit_alphas),
                                                               FLIPS_REFERENCE)
        out.append(entry)
    return out


def closing_summary(cfg: ControlsConfig, results: list[dict]) -> dict:
    """The closing control's gap vs width (final, sup, early) with fitted rates and verdicts. Under μP each fit
    also carries ``mup``: what μP expects (:data:`MUP_CLOSING_EXPECTED`: the NTK rate's verdict 'no', the gap
    falling slower than n^-1/2 or not at all) and ``as_expected`` (the interval's lower end above -1/2), so that
    μP behaving as μP does not read as a failure of the apparatus."""
    mup = cfg.model.parameterization == "mup"
    widths = np.array([r["width"] for r in results])
    steps = results[0]["steps"]
    early = M.first_checkpoint_at(steps, EARLY_STEP)
    metrics, slopes = {}, {}
    for name in (*CLOSING_GAPS, "loss_net", "loss_lin"):
        curves = np.stack([r["curves"][name] for r in results])  # (W, S, T)
        kinds = [("", curves[..., -1])]
        if name in CLOSING_GAPS:
            kinds += [("_sup", M.sup_over_time(curves)), ("_early", curves[..., early])]
        for suffix, vals in kinds:
            mean, std = M.nanmean_std(vals, axis=1)
            metrics[name + suffix] = {"mean": mean, "std": std, "per_seed": vals}
            if name in CLOSING_GAPS:
                fit = with_verdict(M.fit_rate(widths, vals), CLOSING_REFERENCE)
                if mup:
                    lo = fit["ci95"][0]
                    fit["mup"] = {"expected": MUP_CLOSING_EXPECTED,
                                  "as_expected": None if lo is None else bool(lo > CLOSING_REFERENCE[0])}
                slopes[name + suffix] = fit
    flips = np.stack([r["curves"]["gate_flips_train"][:, -1] for r in results])  # (W, S, L)
    metrics["gate_flips_train"] = {"mean": M.nanmean_std(flips, axis=1)[0], "per_seed": flips}
    setting = {"x_range": cfg.closing_x_range, "test_range": cfg.closing_test_range, "depth": cfg.closing_depth,
               "b_std": cfg.closing_b_std, "activation": cfg.model.activation, "centred": cfg.centred}
    if cfg.model.rich:  # only then: the summaries of other runs are unchanged
        setting |= {"parameterization": cfg.model.parameterization, "gamma0": cfg.model.gamma0,
                    "base_width": cfg.model.base_width, "gamma": [r["gamma"] for r in results]}
    return {"widths": widths, "setting": setting,
            "early_step": int(steps[early]), "learning_rate": [r["learning_rate"] for r in results],
            "lr_over_critical_emp": [r["learning_rate"] / np.asarray(r["lr_critical_emp"]) for r in results],
            "diverged_step": [r["diverged_step"] for r in results], "metrics": metrics, "slopes": slopes,
            "fit_widths": [int(w) for w in widths[M.fit_mask(widths, None)]]}


def summarise(cfg: ControlsConfig, cells: list[Cell], results: list[dict], ctx: Context, *,
              wall_seconds: float) -> tuple[dict, dict]:
    from studylib import results as R

    lazy = [r for r in results if r["control"] == "lazy"]
    closing = [r for r in results if r["control"] == "closing"]
    summary = {
        "study": "controls",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "seeds": runner.seed_list(cfg),
        "checkpoint_steps": results[0]["steps"],
        "centred": cfg.centred,  # the closing control's models; the lazy control's are centred by construction
        "conventions": {
            "loss": "L = 1/2 mean((f - y)^2) over the N x k training outputs (NT's); time = lr * steps",
            "learning_rate": "lr_fraction x the smallest critical rate 2N/lambda_max of the analytic NTK and of every "
                             "seed's empirical NTK at init (no linearization diverges); the lazy model at lr/alpha^2",
            "lazy": "g_alpha = alpha (f(theta) - f(theta_0)) trained by GD at lr / alpha^2 from theta_0; its "
                    "linearization is the exact discrete-GD solution with K_0 from f = 0 (the same for every alpha); "
                    "gap = RMSE(g_alpha - g_lin) on the test grid (_train: training inputs; _interp: |x| <= range)",
            "closing": "network and linearization (exact, function space) as study.compare trains them, at the "
                       "closing setting",
            "centring": ("centred (summary key centred): the closing control trains and measures g = f(theta) - "
                         "f(theta_0) (studylib.centring) against J_0 (theta - theta_0) from 0; " if cfg.centred else
                         "uncentred (summary key centred): the closing control's network and linearization start "
                         "from f(theta_0); ") + "the lazy control's g_alpha is centred by construction",
            "slopes": "log-log fit of the seed mean against alpha (lazy; alphas >= fit_alpha_min, at least the 3 "
                      "largest) or width (closing; widths >= 64, at least the 3 largest); ci95: bootstrap over "
                      "seeds; theory_in_ci95: the reference exponent inside ci95",
            "gate_flips": "per hidden layer, fraction of (input, unit) pre-activation signs that differ from "
                          "theta_0's at the last step",
        },
        "lazy": lazy_summary(cfg, lazy) if lazy else [],
        "closing": closing_summary(cfg, closing) if closing else None,
        "curves_file": "curves.npz",
    }
    if cfg.model.rich:  # only then: the summaries of other runs keep their text
        summary["conventions"]["mup"] = (
            "studylib.mup's gamma-model (parameterization mup, or ntk at gamma0 != 1): NT's 'ntk' net with its output "
            "/ gamma, gamma = gamma0 sqrt(width / base_width) under mup (gamma0 under ntk; entries' key gamma); its "
            "kernels are the NTK net's / gamma^2, so the rate rule gives the NTK net's rate x gamma^2 and time in the "
            "NTK net's units is lr / gamma^2 * steps; the closing control's model is centred under --centre auto"
            + ("; under mup the closing control's gap is not expected to close at n^-1/2: the verdict 'no' is the "
               "expected behaviour (slopes' key mup: as_expected = the 95% interval above -1/2)"
               if cfg.model.parameterization == "mup" else ""))
    arrays = {"steps": results[0]["steps"]}
    for r in lazy:
        tag = f"lazy/{r['activation']}/width{r['width']}"
        arrays |= {f"{tag}/{k}": v for k, v in r["curves"].items()}
        arrays |= {f"{tag}/pred_test": r["pred_test"], f"{tag}/pred_lin_test": r["pred_lin_test"],
                   f"{tag}/alphas": r["alphas"]}
    for r in closing:
        tag = f"closing/width{r['width']}"
        arrays |= {f"{tag}/{k}": v for k, v in r["curves"].items()}
        arrays |= {f"{tag}/pred_test": r["pred_test"], f"{tag}/pred_lin_test": r["pred_lin_test"]}
    if ctx.dataset is not None:
        arrays |= {"x_test": ctx.dataset.x_test}
    return summary, arrays
