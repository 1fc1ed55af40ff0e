"""The comparison study: finite network vs its linearization vs the infinite-width closed form.

For each hidden width and seed, with one stax definition (``init_fn``,
``apply_fn``, ``kernel_fn``):

* the network is trained by full-batch GD on L = 1/2 mean((f - y)^2) (NT's
  convention), for ``steps`` steps at rate ``lr``; time = lr * steps;
* its linearization ``nt.linearize(apply_fn, theta_0)`` is trained the same way;
* closed forms of the same dynamics are evaluated at the same steps: with the
  analytic NTK and the network's own f(theta_0) ("closed_inf"), and with the
  empirical NTK at init ("closed_emp"); both as NT's gradient flow
  (``nt.predict.gradient_descent_mse``, the default names) and as exact
  discrete GD (``*_discrete``), see :mod:`studylib.closed_form`.

At every checkpoint it records losses, relative parameter / per-layer weight
change, the relative change of the empirical NTK on the training Gram and at
(x0, x0), its extreme eigenvalues, and RMSE gaps between the three predictors on
the training inputs, the interpolation range and the extrapolation range.
Across widths it fits log-log slopes with bootstrap intervals over seeds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from studylib import metrics as M
from studylib.config import (
    DTYPES,
    ConfigError,
    DataConfig,
    ModelConfig,
    check_choice,
    check_float,
    check_int,
    check_int_list,
    check_model_data,
    set_frozen,
)

#: Pairs of predictors whose RMSE is recorded: name -> (a, b).
GAPS = {
    "net_vs_lin": ("net", "lin"),
    "net_vs_closed_inf": ("net", "closed_inf"),
    "lin_vs_closed_emp": ("lin", "closed_emp"),
    "net_vs_closed_inf_discrete": ("net", "closed_inf_discrete"),
    "lin_vs_closed_emp_discrete": ("lin", "closed_emp_discrete"),
    "closed_inf_flow_vs_discrete": ("closed_inf", "closed_inf_discrete"),
}
LIN_MODES = ("function", "params")
#: Regions: '' = the whole test grid, 'train' = the training inputs.
REGIONS = ("", "train", "interp", "extrap")

#: Published rates (exponent of width n) to set beside fitted slopes; SCIENCE.md section 3.
REFERENCE_RATES: dict[str, tuple[float, str]] = {
    "rel_param_change": (-1.0, "Lee et al. 2019 Thm 2.1: ||theta_t - theta_0|| = O(1), ||theta_0|| ~ n (NTK param.)"),
    "rel_ntk_change": (-0.5, "Lee et al. 2019 Thm 2.1 bound O(n^-1/2); Fig. 1 observes closer to n^-1"),
    "ntk_x0_change": (-0.5, "as rel_ntk_change, one entry of the Gram"),
    "ntk_init_error": (-0.5, "Lee et al. 2019 App. I: empirical vs analytic NTK at init, O(n^-1/2)"),
    "rmse_net_vs_lin": (-0.5, "Lee et al. 2019 Thm 2.1: sup_t ||f_t - f_t^lin|| = O(n^-1/2)"),
    "rmse_net_vs_closed_inf": (-0.5, "kernel fluctuation at init O(n^-1/2) plus Thm 2.1"),
    "rel_weight_change_l1": (-0.5, "Lee et al. 2019 Fig. 1: input layer ~ n^-1/2"),
    "rel_weight_change_l3": (-1.0, "Lee et al. 2019 Fig. 1: intermediate layers ~ n^-1"),
}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Everything that determines a comparison run.

    ``lin_mode``: how the linearized model is trained. 'params' trains
    ``nt.linearize(apply_fn, theta_0)`` with the same GD trainer as the network;
    'function' runs the identical GD in function space (theta_t - theta_0 = J_0^T c_t,
    SCIENCE.md section 6), which the tests show equals 'params' to float rounding and
    costs nothing per step (the per-layer change then takes one vjp per checkpoint).

    ``lr``: absolute learning rate; when None it is ``lr_fraction`` times the
    critical rate 2N/lambda_max of the analytic NTK on the training inputs (per
    width: under standard parameterization the analytic kernel grows with width).
    """

    widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    seeds: int = 3
    steps: int = 1000
    lr: float | None = None
    lr_fraction: float = 0.5
    n_checkpoints: int = 16
    ntk_implementation: int = 2
    lin_mode: str = "function"
    dtype: str = "float32"
    first_seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        set_frozen(self, "widths", check_int_list("widths", self.widths))
        set_frozen(self, "seeds", check_int("seeds", self.seeds))
        set_frozen(self, "steps", check_int("steps", self.steps))
        if self.lr is not None:
            set_frozen(self, "lr", check_float("lr", self.lr))
        set_frozen(self, "lr_fraction", check_float("lr_fraction", self.lr_fraction))
        set_frozen(self, "n_checkpoints", check_int("n_checkpoints", self.n_checkpoints, minimum=2))
        if self.ntk_implementation not in (1, 2):
            raise ConfigError(f"ntk_implementation: unknown value {self.ntk_implementation!r}; accepted: 1, 2 "
                              "(3 fails with the pinned jax)")
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("lin_mode", self.lin_mode, LIN_MODES)
        set_frozen(self, "first_seed", check_int("first_seed", self.first_seed, minimum=0))
        check_model_data(self)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # A few seconds: for smoke tests and a first look.
    "tiny": {"widths": (8, 16, 32), "seeds": 2, "steps": 30, "n_checkpoints": 5},
    # Meant for a GPU or a long CPU run.
    "large": {"widths": (64, 128, 256, 512, 1024, 2048, 4096, 8192), "seeds": 8, "steps": 10000,
              "n_checkpoints": 24},
}


def enable_dtype(dtype: str) -> None:
    """Turn on 64-bit JAX when ``dtype`` asks for it (never turns it off: arrays are cast
    explicitly, so float32 runs are float32 either way)."""
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)


def _measure_fns(apply_fn, ntk_fn, dense_idx):
    """Jitted, seed-vmapped measurements of one checkpoint: (network, linearized by params,
    linearized by function-space coefficients)."""
    import jax
    import jax.numpy as jnp

    from studylib._nt import nt

    def changes(delta, p0):
        """Squared norms of the whole change and of each Dense layer's weight change."""
        return (sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(delta)),
                jnp.stack([jnp.sum(delta[i][0] ** 2) for i in dense_idx]))

    def net(p0, pn, x_train, x_test):
        dsq, wdsq = changes(jax.tree_util.tree_map(jnp.subtract, pn, p0), p0)
        return {"f_net_train": apply_fn(pn, x_train), "f_net_test": apply_fn(pn, x_test),
                "k_net_train": ntk_fn(x_train, None, pn), "dsq_net": dsq, "wdsq_net": wdsq}

    def lin_params(p0, pl, x_train, x_test):
        lin = nt.linearize(apply_fn, p0)
        dsq, wdsq = changes(jax.tree_util.tree_map(jnp.subtract, pl, p0), p0)
        return {"f_lin_train": lin(pl, x_train), "f_lin_test": lin(pl, x_test), "dsq_lin": dsq, "wdsq_lin": wdsq}

    def lin_function(p0, c, x_train):
        _, vjp = jax.vjp(lambda p: apply_fn(p, x_train), p0)
        dsq, wdsq = changes(vjp(c.astype(x_train.dtype))[0], p0)
        return {"dsq_lin": dsq, "wdsq_lin": wdsq}

    vm = lambda f, n: jax.jit(jax.vmap(f, in_axes=(0, 0) + (None,) * n))  # noqa: E731
    return vm(net, 2), vm(lin_params, 2), vm(lin_function, 1)


#: A model counts as diverged once its training outputs are non-finite or this far from the
#: targets (in units of max |y| + 1): GD with a rate above 2N/lambda_max grows geometrically.
DIVERGENCE_SCALE = 1e6


def _diverged(f_train: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(S,) flags for outputs (S, N, k) that are non-finite or beyond DIVERGENCE_SCALE."""
    with np.errstate(invalid="ignore"):
        far = np.abs(f_train - y).max(axis=(1, 2)) > DIVERGENCE_SCALE * (np.abs(y).max() + 1.0)
    return ~np.isfinite(f_train).all(axis=(1, 2)) | far


def _involved(name: str) -> set[str]:
    """Which trained models ('net', 'lin') a curve depends on."""
    out = set()
    if "lin" in name:
        out.add("lin")
    if "net" in name or not ("lin" in name or "closed" in name):
        out.add("net")
    return out


def _mask_diverged(curves, steps, diverged_net, diverged_lin) -> None:
    """NaN out each curve from the checkpoint where a model it depends on became non-finite."""
    flags = {"net": diverged_net, "lin": diverged_lin}
    for name, c in curves.items():
        for model in _involved(name):
            f = flags[model]
            bad = (f[:, None] >= 0) & (steps[None, :] >= f[:, None])
            c[bad] = np.nan


def run_width(cfg: CompareConfig, width: int, data, *, progress: Callable[[int], Any] | None = None,
              seeds: list[int] | None = None, log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Train and measure all seeds at one width (``progress(k)`` is called after every k steps).

    Returns per-seed curves of shape (S, T, ...)
    over the checkpoints and per-seed scalars; see :func:`run` for the names."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from studylib import closed_form, devices, kernels, models, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    x_train = jnp.asarray(data.x_train, dtype)
    y_train = jnp.asarray(data.y_train, dtype)
    x_test = jnp.asarray(data.x_test, dtype)
    n = x_train.shape[0]
    steps = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    if seeds is None:
        seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))

    net = models.build(cfg.model, width)
    p0 = devices.shard_seeds(training.init_params(net.init_fn, seeds, x_train.shape, dtype=cfg.dtype), len(seeds))
    dense_idx = models.dense_layer_indices(jax.tree_util.tree_map(lambda a: a[0], p0))

    theta_train = np.asarray(kernels.analytic(net.kernel_fn, x_train, None), np.float64)
    theta_test = np.asarray(kernels.analytic(net.kernel_fn, x_test, x_train), np.float64)
    lr_critical_inf = float(kernels.critical_learning_rate(jnp.asarray(theta_train)))
    lr = cfg.lr if cfg.lr is not None else cfg.lr_fraction * lr_critical_inf

    ntk_fn = kernels.empirical_ntk_fn(net.apply_fn, implementation=cfg.ntk_implementation)
    k0_train = jax.jit(jax.vmap(lambda p: ntk_fn(x_train, None, p)))(p0)
    # One seed at a time: ntk_cross holds N parameter copies per seed.
    k0_test = jax.jit(lambda ps: lax.map(lambda p: kernels.ntk_cross(net.apply_fn, x_test, x_train, p), ps))(p0)
    k0_train, k0_test = np.asarray(k0_train, np.float64), np.asarray(k0_test, np.float64)
    lr_critical_emp = 2.0 * n / np.linalg.eigvalsh(k0_train)[:, -1]
    above = [seeds[i] for i in np.flatnonzero(lr > lr_critical_emp)]
    if above and log is not None:  # before training: the linearized model of these seeds will diverge
        log(f"warning: width {width}: lr {lr:.3g} exceeds the empirical critical rate 2N/lambda_max(K_0) of "
            f"seed(s) {above}: their linearized model diverges (GD with a constant kernel above 2N/lambda_max)")

    f0_train = np.asarray(jax.vmap(net.apply_fn, in_axes=(0, None))(p0, x_train), np.float64)
    f0_test = np.asarray(jax.vmap(net.apply_fn, in_axes=(0, None))(p0, x_test), np.float64)
    y64 = np.asarray(data.y_train, np.float64)

    # Closed forms at exactly the checkpoint steps, per seed (f_0 and K_0 differ by seed).
    closed: dict[str, list] = {}
    for s in range(len(seeds)):
        for name, fn in closed_form.CLOSED_FORMS.items():
            suffix = "" if name == "flow" else "_" + name
            for kind, k_tt, k_te in (("inf", theta_train, theta_test), ("emp", k0_train[s], k0_test[s])):
                tr, te = fn(k_tt, k_te, y64, f0_train[s], f0_test[s], learning_rate=lr, steps=steps)
                closed.setdefault(f"closed_{kind}{suffix}_train", []).append(tr)
                closed.setdefault(f"closed_{kind}{suffix}_test", []).append(te)
    closed = {k: np.stack(v) for k, v in closed.items()}  # (S, T, N|M, 1)

    measure_net, measure_lin_params, measure_lin_function = _measure_fns(net.apply_fn, ntk_fn, dense_idx)
    train_net = training.make_trainer(training.network_model(net.apply_fn))
    params_mode = cfg.lin_mode == "params"
    if params_mode:
        train_lin = training.make_trainer(training.linearized_model(net.apply_fn))
    else:
        coeffs = np.stack([closed_form.discrete_coefficients(k0_train[s], y64, f0_train[s], learning_rate=lr,
                                                             steps=steps) for s in range(len(seeds))])
    copy = lambda t: jax.tree_util.tree_map(jnp.copy, t)  # noqa: E731
    pn = copy(p0)
    pl = copy(p0) if params_mode else None
    lr_arr = jnp.asarray(lr, dtype)
    to_np = lambda d: {k: np.asarray(v, np.float64) for k, v in d.items()}  # noqa: E731

    records: list[dict[str, np.ndarray]] = []
    diverged_net = np.full(len(seeds), -1)
    diverged_lin = np.full(len(seeds), -1)
    prev = 0
    for j, t in enumerate(steps):
        if t > prev:
            pn = train_net(pn, p0, x_train, y_train, lr_arr, int(t - prev))
            if params_mode:
                pl = train_lin(pl, p0, x_train, y_train, lr_arr, int(t - prev))
        rec = to_np(measure_net(p0, pn, x_train, x_test))
        if params_mode:
            rec |= to_np(measure_lin_params(p0, pl, x_train, x_test))
        else:
            rec |= to_np(measure_lin_function(p0, jnp.asarray(coeffs[:, j]), x_train))
            rec["f_lin_train"] = closed["closed_emp_discrete_train"][:, j]
            rec["f_lin_test"] = closed["closed_emp_discrete_test"][:, j]
        for name, flags in (("net", diverged_net), ("lin", diverged_lin)):
            flags[_diverged(rec[f"f_{name}_train"], y64) & (flags < 0)] = t
        records.append(rec)
        if progress is not None:
            progress(int(t - prev))
        prev = t
    rec = {k: np.stack([r[k] for r in records], axis=1) for k in records[0]}  # (S, T, ...)

    p0_np = jax.tree_util.tree_map(np.asarray, p0)
    n0_sq = sum(np.sum(np.asarray(leaf, np.float64) ** 2, axis=tuple(range(1, leaf.ndim)))
                for leaf in jax.tree_util.tree_leaves(p0_np))  # (S,)
    w0_sq = np.stack([np.sum(np.asarray(p0_np[i][0], np.float64) ** 2, axis=(1, 2)) for i in dense_idx], -1)

    preds = {
        "net": (rec["f_net_train"], rec["f_net_test"]),
        "lin": (rec["f_lin_train"], rec["f_lin_test"]),
    }
    for key in ("closed_inf", "closed_emp", "closed_inf_discrete", "closed_emp_discrete"):
        preds[key] = (closed[f"{key}_train"], closed[f"{key}_test"])

    k_t = rec["k_net_train"]
    k_0 = k0_train[:, None]
    lam_min, lam_max = M.gram_extremes(k_t)
    curves: dict[str, np.ndarray] = {
        "loss_net": 0.5 * np.mean((rec["f_net_train"] - y64) ** 2, axis=(2, 3)),
        "loss_lin": 0.5 * np.mean((rec["f_lin_train"] - y64) ** 2, axis=(2, 3)),
        "rel_param_change": M.rel_change_norms(rec["dsq_net"], n0_sq[:, None]),
        "rel_param_change_lin": M.rel_change_norms(rec["dsq_lin"], n0_sq[:, None]),
        "rel_weight_change": M.rel_change_norms(rec["wdsq_net"], w0_sq[:, None]),
        "rel_weight_change_lin": M.rel_change_norms(rec["wdsq_lin"], w0_sq[:, None]),
        "rel_ntk_change": M.rel_change(k_t, np.broadcast_to(k_0, k_t.shape), axis=(2, 3)),
        "ntk_x0_change": np.abs(k_t[..., 0, 0] - k_0[..., 0, 0]) / np.abs(k_0[..., 0, 0]),
        "ntk_lambda_min": lam_min,
        "ntk_lambda_max": lam_max,
    }
    for gap, (a, b) in GAPS.items():
        for region in REGIONS:
            name = f"rmse_{gap}" + (f"_{region}" if region else "")
            if region == "train":
                curves[name] = M.rmse(preds[a][0], preds[b][0])
            else:
                mask = None if not region else data.regions[region]
                curves[name] = M.rmse(preds[a][1], preds[b][1], mask)
    _mask_diverged(curves, steps, diverged_net, diverged_lin)

    lam0 = np.linalg.eigvalsh(theta_train)
    return {
        "width": width,
        "steps": steps,
        "learning_rate": lr,
        "lr_critical_inf": lr_critical_inf,
        "lr_critical_emp": lr_critical_emp,
        "lr_above_emp_critical": lr > lr_critical_emp,
        "theta_lambda_min": float(lam0[0]),
        "theta_lambda_max": float(lam0[-1]),
        "k0_lambda_min": np.linalg.eigvalsh(k0_train)[:, 0],
        "k0_lambda_max": np.linalg.eigvalsh(k0_train)[:, -1],
        "ntk_init_error": M.rel_change(k0_train, np.broadcast_to(theta_train, k0_train.shape), axis=(1, 2)),
        "diverged_net_step": diverged_net,
        "diverged_lin_step": diverged_lin,
        "curves": curves,
        "theta_train": theta_train,  # (N, N) analytic NTK
        "k0_train": k0_train,  # (S, N, N) empirical NTK at init
        "k_net_train": k_t,  # (S, T, N, N) empirical NTK of the network at each checkpoint
        "predictions_test": {k: v[1][..., 0] for k, v in preds.items()},  # (S, T, M)
        "predictions_train": {k: v[0][..., 0] for k, v in preds.items()},  # (S, T, N)
    }


#: Final-time gaps in the summary's ``metrics`` (besides every curve's name).
SCALARS_PER_SEED = ("ntk_init_error", "lr_critical_emp", "k0_lambda_min", "k0_lambda_max")
#: Metrics printed in the console table, in order.
TABLE_METRICS = (
    "rel_param_change", "rel_ntk_change", "ntk_x0_change", "ntk_init_error",
    "rmse_net_vs_lin", "rmse_net_vs_closed_inf", "rmse_lin_vs_closed_emp",
    "loss_net", "loss_lin",
)


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
    return out


def summarise(cfg: CompareConfig, results: list[dict], *, wall_seconds: float, dataset=None) -> tuple[dict, dict]:
    """Build the ``summary.json`` dict and the ``curves.npz`` arrays from per-width results."""
    from studylib import results as R

    widths = np.array([r["width"] for r in results])
    finals = _final_per_seed(results)
    summary_metrics = {}
    slopes = {}
    for name, vals in finals.items():
        mean, std = M.nanmean_std(vals, axis=1)
        summary_metrics[name] = {"mean": mean, "std": std, "per_seed": vals}
        if name.startswith(("rmse_", "rel_", "ntk_init_error", "ntk_x0_change")):
            fit = M.bootstrap_slope(widths, vals)
            ref = REFERENCE_RATES.get(name)
            fit["reference"] = None if ref is None else {"slope": ref[0], "source": ref[1]}
            slopes[name] = fit
    summary = {
        "study": "compare",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "widths": widths,
        "seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.seeds)),
        "checkpoint_steps": results[0]["steps"],
        "conventions": {
            "loss": "L = 1/2 mean((f - y)^2) over the N training outputs (NT's)",
            "time": "t counts GD steps; absolute time = learning_rate * t",
            "parameterization": cfg.model.parameterization,
            "linearized": f"lin_mode={cfg.lin_mode}: " + (
                "nt.linearize trained by the same GD trainer" if cfg.lin_mode == "params" else
                "the same GD run in function space, theta_t - theta_0 = J_0^T c_t (exact; see tests)"),
            "closed_form": "default names: NT gradient flow (gradient_descent_mse); *_discrete: exact discrete GD",
            "rmse_regions": "no suffix: test grid on [-test_range, test_range]; _train: training inputs; "
                            "_interp: |x| <= train_range; _extrap: |x| > train_range",
            "metrics": "final checkpoint; mean/std over seeds that did not diverge",
            "slopes": "least-squares log-log fit of the seed mean vs width; ci95 from bootstrap over seeds",
        },
        "per_width": [
            {k: r[k] for k in ("width", "learning_rate", "lr_critical_inf", "lr_critical_emp",
                               "lr_above_emp_critical", "theta_lambda_min", "theta_lambda_max",
                               "diverged_net_step", "diverged_lin_step")}
            | {"lr_over_critical_emp": r["learning_rate"] / np.asarray(r["lr_critical_emp"])}
            for r in results
        ],
        "metrics": summary_metrics,
        "slopes": slopes,
        "curves_file": "curves.npz",
    }
    curves = {"widths": widths, "steps": results[0]["steps"]}
    if dataset is not None:
        curves |= {"x_train": dataset.x_train, "y_train": dataset.y_train, "x_test": dataset.x_test}
        curves |= {f"region/{k}": v for k, v in dataset.regions.items()}
    for name in results[0]["curves"]:
        curves[f"curve/{name}"] = np.stack([r["curves"][name] for r in results])
    for where in ("test", "train"):
        for name in results[0][f"predictions_{where}"]:
            curves[f"pred_{where}/{name}"] = np.stack([r[f"predictions_{where}"][name] for r in results])
    return summary, curves


#: run_width outputs that are the same for every seed (the rest have a leading seed axis).
SHARED_KEYS = ("width", "steps", "learning_rate", "lr_critical_inf", "theta_lambda_min", "theta_lambda_max",
               "theta_train")


def concat_seed_chunks(chunks: list[dict]) -> dict:
    """Join run_width results of consecutive seed chunks along the seed axis."""
    if len(chunks) == 1:
        return chunks[0]
    out = {}
    for k, v in chunks[0].items():
        if k in SHARED_KEYS:
            out[k] = v
        elif isinstance(v, dict):
            out[k] = {k2: np.concatenate([c[k][k2] for c in chunks]) for k2 in v}
        else:
            out[k] = np.concatenate([np.atleast_1d(c[k]) for c in chunks])
    return out


def memory_plan(cfg: CompareConfig, width: int) -> dict:
    """Parameters per network and the estimated bytes per seed of one width (params: theta_0,
    theta_t, gradient and update temporaries, x2 for the linearized model in 'params' mode),
    plus the one-off N x params of the cross kernel; and the seed chunk that fits the device."""
    import jax

    from studylib import devices, models

    net = models.build(cfg.model, width)
    d_in = 1 if cfg.data.name != "sphere" else cfg.data.dim
    shapes = jax.eval_shape(lambda k: net.init_fn(k, (cfg.data.n_train, d_in))[1], jax.random.PRNGKey(0))
    n_params = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    item = 8 if cfg.dtype == "float64" else 4
    per_seed = n_params * item * (4 if cfg.lin_mode == "function" else 7)
    fixed = cfg.data.n_train * n_params * item
    return {"width": width, "params": n_params, "bytes_per_seed": per_seed, "fixed_bytes": fixed,
            "seeds_per_chunk": devices.seeds_per_chunk(per_seed, cfg.seeds, fixed_bytes=fixed)}


def cell_key(cfg: CompareConfig, width: int) -> str:
    """Hash of everything that determines one width's results: the config (less the list of
    widths), the width and the library versions."""
    import hashlib
    import json

    from studylib import results as R

    d = dataclasses.asdict(cfg)
    d.pop("widths")
    blob = json.dumps({"config": d, "width": width, "versions": R.versions()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(cfg: CompareConfig, out: str | Path | None = None, *, progress: bool = True, force: bool = False) -> dict:
    """Run the whole study; write ``summary.json``, ``curves.npz`` and ``config.json`` into
    ``out`` (when given) and return the summary (see README for the schema).

    Each width's results are stored in ``out/cells/`` as soon as they are finished, keyed by
    :func:`cell_key`; a re-run with the same config reuses them (an interrupted run resumes),
    unless ``force``.
    """
    from tqdm.auto import tqdm

    from studylib import data as D
    from studylib import devices
    from studylib import results as R

    enable_dtype(cfg.dtype)
    dataset = D.load(cfg.data)
    if progress:
        tqdm.write(f"devices: {devices.describe()}")
    if out is not None:
        out = Path(out)
        R.write_json(out / "config.json", dataclasses.asdict(cfg))
    start = time.perf_counter()
    per_width = []
    # Cost grows ~ width^2: weight the bar so its ETA means something.
    cost = {w: cfg.steps * (w * w + 64 * w + 4096) for w in cfg.widths}
    with tqdm(total=sum(cost.values()), disable=not progress, unit="", unit_scale=True,
              bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]") as bar:
        for w in cfg.widths:
            bar.set_description(f"width {w}")
            cell = None if out is None else out / "cells" / f"width{w}-{cell_key(cfg, w)}.npz"

            def compute(w=w):
                plan = memory_plan(cfg, w)
                seed_ids = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
                chunk = plan["seeds_per_chunk"]
                if chunk < cfg.seeds:
                    tqdm.write(f"width {w}: {plan['params']:,} parameters, ~{plan['bytes_per_seed'] / 2**20:.0f} MiB "
                               f"per seed: vmapping {chunk} seeds at a time")
                return concat_seed_chunks([
                    run_width(cfg, w, dataset, seeds=seed_ids[i:i + chunk], log=tqdm.write,
                              progress=partial(lambda k, scale: bar.update(k * scale),
                                               scale=cost[w] / cfg.steps * len(seed_ids[i:i + chunk]) / cfg.seeds))
                    for i in range(0, cfg.seeds, chunk)])

            res = R.cached(cell, compute, force=force,
                           on_reuse=lambda p, w=w: (bar.update(cost[w]), tqdm.write(f"width {w}: reusing {p}")))
            per_width.append(res)
            for model in ("net", "lin"):
                for s, step in enumerate(res[f"diverged_{model}_step"]):
                    if step >= 0:
                        tqdm.write(f"warning: width {w}, seed {cfg.first_seed + s}: {model} diverged "
                                   f"(non-finite or exploding outputs) by step {step}; kept as NaN")
    summary, curves = summarise(cfg, per_width, wall_seconds=time.perf_counter() - start, dataset=dataset)
    if out is not None:
        R.write_npz(out / "curves.npz", curves)
        R.write_json(out / "summary.json", summary)
    return summary


def format_table(summary: dict, metrics_: tuple[str, ...] = TABLE_METRICS) -> str:
    """Console table: final-time mean ± std per width, then the fitted slope and reference."""
    widths = summary["widths"]
    name_w = max(len(m) for m in metrics_) + 2
    head = ("metric".ljust(name_w) + "".join(f"{'n=' + str(w):>19}" for w in widths)
            + "   slope [95% CI]        published")
    lines = [head, "-" * len(head)]
    for m in metrics_:
        entry = summary["metrics"].get(m)
        if entry is None:
            continue
        cells = ""
        for mu, sd in zip(entry["mean"], entry["std"], strict=True):
            cells += f"{'nan':>19}" if mu is None else f"{mu:>10.3g} ± {sd:<6.2g}"
        fit = summary["slopes"].get(m)
        slope = ""
        if fit and fit["slope"] is not None:
            lo, hi = fit["ci95"]
            slope = f"   {fit['slope']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            if fit.get("reference"):
                slope += f"   {M.rate_label(fit['reference']['slope'])}"
        lines.append(m.ljust(name_w) + cells + slope)
    return "\n".join(lines)
