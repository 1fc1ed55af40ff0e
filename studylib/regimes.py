"""Where the theory holds and where it fails: mode-resolved dynamics and a map of the lazy regime.

A *cell* is one setting (width, learning rate as a fraction of the critical rate,
depth, input scale, parameterization, model option) trained with several seeds by
full-batch GD on L = 1/2 mean((f - y)^2) (NT's convention). For each cell:

* the network is trained (jitted, vmapped over seeds) and recorded at log-spaced
  checkpoints: outputs on the training inputs and the test grid, and its empirical
  NTK on the training inputs K_t;
* its linearization f(theta_0) + J_0 (theta - theta_0) is evaluated in function space
  (SCIENCE.md section 6: exact discrete GD with K_0; the test
  ``tests/test_modes.py`` checks it against ``nt.linearize`` trained step by step);
* the infinite-width closed form (discrete GD with the analytic NTK, the network's
  own f(theta_0)) is evaluated at the same steps;
* residuals are projected on the eigenvectors of the analytic NTK Theta and of the
  empirical NTK at init K_0 (:mod:`studylib.modes`), compared with the per-mode
  prediction (1 - lr lambda_i / N)^t, and the step at which each mode departs is found;
* kernel motion ||K_t - K_0||_2 (operator norm) is set against the spectrum of K_0:
  the *laziness ratio* sup_t ||K_t - K_0||_2 / lambda_min(K_0).

The map sweeps width against each other axis in turn around a base cell
(``sweep='one_at_a_time'``; the ``full`` preset takes the whole product).
Model options that researchers use to get closer to the limit are measured at
the base cell: centred (f - f(theta_0)), the doubled network ((f(theta_a) -
f(theta_b))/sqrt 2 with theta_a = theta_b at init, so f(theta_0) = 0 and the NTK at init
is that of the plain net), a smaller output scale (alpha f, with the rate scaled
by 1/alpha^2 so that lr stays the same fraction of the critical rate), and float64.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from studylib import modes as MO
from studylib.config import (
    DTYPES,
    PARAMETERIZATIONS,
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

#: Model options (each measured against 'plain' at the base setting).
OPTIONS = ("plain", "centred", "doubled", "out_scale", "float64")
SWEEPS = ("one_at_a_time", "product")
#: Map axes: config field holding the values -> cell key.
AXES = {"lr_fractions": "lr_fraction", "depths": "depth", "x_ranges": "x_range",
        "parameterizations": "parameterization"}


def _check_float_list(field: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, list | tuple) or len(values) == 0:
        raise ConfigError(f"{field}: expected a non-empty list of numbers > 0, got {values!r}")
    out = tuple(check_float(f"{field}[{i}]", v) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ConfigError(f"{field}: values must be distinct, got {list(out)}")
    return out


def _check_choice_list(field: str, values: Any, choices) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, list | tuple) or len(values) == 0:
        raise ConfigError(f"{field}: expected a non-empty list from {', '.join(choices)}, got {values!r}")
    out = tuple(check_choice(f"{field}[{i}]", v, choices) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ConfigError(f"{field}: values must be distinct, got {list(out)}")
    return out


@dataclasses.dataclass(frozen=True)
class RegimesConfig:
    """Everything that determines a regimes run.

    The base cell is ``lr_fraction`` x ``model`` x ``data`` (``data.train_range`` is
    the input scale; the test grid spans twice it). ``lr_fractions``, ``depths``,
    ``x_ranges``, ``parameterizations`` are the map's axes; each must contain the
    base value. ``options``: model options measured at the base cell ('plain' is the
    base itself). ``gap_threshold``: the relative gap below which a width counts as
    "wide enough". ``departure_tol``/``departure_floor``: see
    :func:`studylib.modes.departure_step`.
    """

    widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    seeds: int = 3
    steps: int = 300
    n_checkpoints: int = 24
    first_seed: int = 0
    lr_fraction: float = 0.5
    dtype: str = "float32"
    ntk_implementation: int = 2
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    sweep: str = "one_at_a_time"
    lr_fractions: tuple[float, ...] = (0.1, 0.5, 0.9)
    depths: tuple[int, ...] = (1, 2, 3, 4, 5)
    x_ranges: tuple[float, ...] = (1.0, 2.5, 5.0)
    parameterizations: tuple[str, ...] = ("ntk", "standard")
    options: tuple[str, ...] = OPTIONS
    output_scale: float = 0.25
    gap_threshold: float = 0.1
    departure_tol: float = 0.1
    departure_floor: float = 0.05

    def __post_init__(self):
        set_frozen(self, "widths", check_int_list("widths", self.widths))
        set_frozen(self, "seeds", check_int("seeds", self.seeds))
        set_frozen(self, "steps", check_int("steps", self.steps))
        set_frozen(self, "n_checkpoints", check_int("n_checkpoints", self.n_checkpoints, minimum=2))
        set_frozen(self, "first_seed", check_int("first_seed", self.first_seed, minimum=0))
        set_frozen(self, "lr_fraction", check_float("lr_fraction", self.lr_fraction))
        check_choice("dtype", self.dtype, DTYPES)
        if self.ntk_implementation not in (1, 2):
            raise ConfigError(f"ntk_implementation: unknown value {self.ntk_implementation!r}; accepted: 1, 2 "
                              "(3 fails with the pinned jax)")
        check_model_data(self)
        check_choice("sweep", self.sweep, SWEEPS)
        set_frozen(self, "lr_fractions", _check_float_list("lr_fractions", self.lr_fractions))
        set_frozen(self, "depths", check_int_list("depths", self.depths))
        set_frozen(self, "x_ranges", _check_float_list("x_ranges", self.x_ranges))
        set_frozen(self, "parameterizations",
                   _check_choice_list("parameterizations", self.parameterizations, PARAMETERIZATIONS))
        set_frozen(self, "options", _check_choice_list("options", self.options, OPTIONS))
        set_frozen(self, "output_scale", check_float("output_scale", self.output_scale))
        set_frozen(self, "gap_threshold", check_float("gap_threshold", self.gap_threshold))
        set_frozen(self, "departure_tol", check_float("departure_tol", self.departure_tol))
        set_frozen(self, "departure_floor", check_float("departure_floor", self.departure_floor, allow_zero=True))
        for field, base in (("lr_fractions", self.lr_fraction), ("depths", self.model.depth),
                            ("x_ranges", self.data.train_range),
                            ("parameterizations", self.model.parameterization)):
            if base not in getattr(self, field):
                raise ConfigError(f"{field}: must contain the base cell's value {base!r} "
                                  f"(got {list(getattr(self, field))})")
        if "plain" not in self.options:
            raise ConfigError(f"options: must contain 'plain' (the reference), got {list(self.options)}")

    def base(self) -> dict[str, Any]:
        return {"lr_fraction": self.lr_fraction, "depth": self.model.depth, "x_range": self.data.train_range,
                "parameterization": self.model.parameterization, "option": "plain"}


PRESETS: dict[str, dict[str, Any]] = {
    # The coarse map: about 10 minutes on 2 shared CPU cores (see docs/regimes.md).
    "default": {},
    # Seconds: smoke tests.
    "tiny": {"widths": (8, 16), "seeds": 2, "steps": 20, "n_checkpoints": 5, "lr_fractions": (0.5,),
             "depths": (1, 5), "x_ranges": (5.0,), "parameterizations": ("ntk",),
             "options": ("plain", "centred", "doubled")},
    # The whole product of the axes, wider nets, more seeds and steps: a GPU or a long run.
    "full": {"widths": (32, 64, 128, 256, 512, 1024, 2048, 4096), "seeds": 8, "steps": 5000,
             "n_checkpoints": 40, "sweep": "product", "lr_fractions": (0.1, 0.25, 0.5, 0.75, 0.9),
             "x_ranges": (0.5, 1.0, 2.5, 5.0, 10.0)},
}


def cells(cfg: RegimesConfig) -> list[dict[str, Any]]:
    """The settings to run (without width): base, then each axis's other values (or the
    product), then the options at the base setting."""
    base = cfg.base()
    out = [dict(base)]
    if cfg.sweep == "product":
        for lr, d, xr, par in itertools.product(cfg.lr_fractions, cfg.depths, cfg.x_ranges,
                                                cfg.parameterizations):
            c = {"lr_fraction": lr, "depth": d, "x_range": xr, "parameterization": par, "option": "plain"}
            if c != base:
                out.append(c)
    else:
        for field, key in AXES.items():
            for v in getattr(cfg, field):
                if v != base[key]:
                    out.append(base | {key: v})
    for opt in cfg.options:
        if opt != "plain":
            out.append(base | {"option": opt})
    return out


def cell_label(c: dict[str, Any]) -> str:
    return (f"lr={c['lr_fraction']:g} depth={c['depth']} x_range={c['x_range']:g} "
            f"{c['parameterization']} {c['option']}")


# --------------------------------------------------------------------------- models


def variant_model(apply_fn, option: str, scale: float):
    """``model_fn(params, aux, x)`` and ``make_params(p0) -> (params, aux)`` for an option.

    plain / out_scale / float64: scale * f(params); centred: scale * (f(params) - f(aux)),
    aux = theta_0; doubled: scale * (f(pa) - f(pb)) / sqrt 2 with params = (pa, pb) = (theta_0, theta_0).
    """
    if option == "centred":
        return (lambda p, aux, x: scale * (apply_fn(p, x) - apply_fn(aux, x))), (lambda p0: (p0, p0))
    if option == "doubled":
        r = 1.0 / math.sqrt(2.0)

        def doubled(p, aux, x):
            return (scale * r) * (apply_fn(p[0], x) - apply_fn(p[1], x))

        return doubled, (lambda p0: ((p0, p0), p0))
    return (lambda p, aux, x: scale * apply_fn(p, x)), (lambda p0: (p0, p0))


class _Compiled:
    """Jitted trainer and measurement for one (model, width, option, dtype); reused across
    learning rates and input scales (those are traced arguments)."""

    def __init__(self, model_cfg: ModelConfig, width: int, option: str, scale: float, implementation: int):
        import jax

        from studylib import models, training
        from studylib.nt import nt

        self.net = models.build(model_cfg, width)
        self.model_fn, self.make_params = variant_model(self.net.apply_fn, option, scale)
        self.train = training.make_trainer(self.model_fn)
        model_fn = self.model_fn

        def one(p, aux, x_train, x_test):
            f = lambda q, x: model_fn(q, aux, x)  # noqa: E731
            ntk = nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=implementation)
            return {"f_train": f(p, x_train), "f_test": f(p, x_test), "k_train": ntk(x_train, None, p)}

        def init_kernels(p, aux, x_train, x_test):
            f = lambda q, x: model_fn(q, aux, x)  # noqa: E731
            ntk = nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=implementation)
            return ntk(x_test, x_train, p)

        self.measure = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))
        self.k_test = jax.jit(jax.vmap(init_kernels, in_axes=(0, 0, None, None)))


def _data(x_range: float, base: DataConfig):
    from studylib import data as D

    return D.load(dataclasses.replace(base, train_range=float(x_range), test_range=2.0 * float(x_range)))


def run_cell(cfg: RegimesConfig, cell: dict[str, Any], width: int, cache: dict, *, progress=None) -> dict[str, Any]:
    """Train and measure all seeds of one cell at one width; per-seed arrays (S, ...)."""
    import jax
    import jax.numpy as jnp

    from studylib import closed_form, kernels, training

    option = cell["option"]
    dtype_name = "float64" if option == "float64" else cfg.dtype
    dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
    scale = cfg.output_scale if option == "out_scale" else 1.0
    model_cfg = dataclasses.replace(cfg.model, depth=cell["depth"], parameterization=cell["parameterization"])
    key = (model_cfg, width, option, scale, dtype_name)
    if key not in cache:
        cache[key] = _Compiled(model_cfg, width, option, scale, cfg.ntk_implementation)
    comp = cache[key]

    data = _data(cell["x_range"], cfg.data)
    x_train = jnp.asarray(data.x_train, dtype)
    y_train = jnp.asarray(data.y_train, dtype)
    x_test = jnp.asarray(data.x_test, dtype)
    n = x_train.shape[0]
    y64 = np.asarray(data.y_train, np.float64)[:, 0]
    steps = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))

    p0 = training.init_params(comp.net.init_fn, seeds, x_train.shape)
    p0 = jax.tree_util.tree_map(lambda a: a.astype(dtype), p0)
    params0, aux = comp.make_params(p0)

    theta = scale**2 * np.asarray(kernels.analytic(comp.net.kernel_fn, data.x_train, None), np.float64)
    theta_test = scale**2 * np.asarray(kernels.analytic(comp.net.kernel_fn, data.x_test, data.x_train), np.float64)
    lam_theta, v_theta = MO.eig_modes(theta)
    lr_critical_inf = 2.0 * n / lam_theta[0]
    lr = cell["lr_fraction"] * lr_critical_inf

    k0_test = np.asarray(comp.k_test(params0, aux, x_train, x_test), np.float64)  # (S, M, N)
    copy = lambda t: jax.tree_util.tree_map(jnp.copy, t)  # noqa: E731
    params = copy(params0)
    lr_arr = jnp.asarray(lr, dtype)
    records = []
    prev = 0
    for t in steps:
        if t > prev:
            params = comp.train(params, aux, x_train, y_train, lr_arr, int(t - prev))
        records.append(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                              comp.measure(params, aux, x_train, x_test)))
        if progress is not None:
            progress(int(t - prev))
        prev = t
    rec = {k: np.stack([r[k] for r in records], axis=1) for k in records[0]}  # (S, T, ...)
    f_net_train, f_net_test = rec["f_train"][..., 0], rec["f_test"][..., 0]  # (S, T, N|M)
    k_t = rec["k_train"]  # (S, T, N, N)
    k_finite = np.isfinite(k_t).all(axis=(-2, -1))  # (S, T); a diverged net has non-finite kernels
    k_t = np.where(k_finite[..., None, None], k_t, 0.0)
    k_t = 0.5 * (k_t + np.swapaxes(k_t, -1, -2))  # float32 kernels are symmetric only to rounding
    k0 = k_t[:, 0]
    lam_k0, v_k0 = MO.eig_modes(k0)  # (S, N), (S, N, N)
    lr_critical_emp = 2.0 * n / lam_k0[:, 0]

    # Linearization (exact discrete GD with K_0) and closed form (analytic Theta), per seed.
    f_lin_train, f_lin_test, f_inf_train, f_inf_test = [], [], [], []
    for s in range(len(seeds)):
        f0_tr, f0_te = f_net_train[s, 0, :, None], f_net_test[s, 0, :, None]
        tr, te = closed_form.discrete(k0[s], k0_test[s], y64[:, None], f0_tr, f0_te, learning_rate=lr, steps=steps)
        f_lin_train.append(tr[..., 0])
        f_lin_test.append(te[..., 0])
        tr, te = closed_form.discrete(theta, theta_test, y64[:, None], f0_tr, f0_te, learning_rate=lr, steps=steps)
        f_inf_train.append(tr[..., 0])
        f_inf_test.append(te[..., 0])
    f_lin_train, f_lin_test = np.stack(f_lin_train), np.stack(f_lin_test)
    f_inf_train, f_inf_test = np.stack(f_inf_train), np.stack(f_inf_test)

    diverged_net = ~np.isfinite(f_net_train).all(axis=(1, 2)) | ~k_finite.all(axis=1)
    diverged_lin = lr > lr_critical_emp  # (1 - lr lambda_max/N) < -1: the linear model's fastest mode grows

    # Modes: in the analytic basis (prediction: Theta) and in each seed's K_0 basis.
    r_net, r_lin = f_net_train - y64, f_lin_train - y64
    c = {
        "net_inf": MO.project(r_net, v_theta), "lin_inf": MO.project(r_lin, v_theta),
        "net_emp": MO.project(r_net, v_k0[:, None]), "lin_emp": MO.project(r_lin, v_k0[:, None]),
    }
    pred_inf = MO.predicted_coefficients(c["net_inf"][:, 0], lam_theta, lr, n, steps)  # (S, T, N)
    pred_emp = MO.predicted_coefficients(c["net_emp"][:, 0], lam_k0, lr, n, steps)
    dep = {name: MO.departure_step(c[name], pred_inf if name.endswith("inf") else pred_emp, steps,
                                   tol=cfg.departure_tol, floor=cfg.departure_floor) for name in c}
    dk = np.where(k_finite, MO.kernel_motion(k_t, k0[:, None]), np.nan)  # (S, T)
    lam_t = np.where(k_finite[..., None], np.linalg.eigvalsh(k_t), np.nan)

    mask = data.regions["interp"]
    y_scale = float(np.sqrt(np.mean(y64**2)))
    with np.errstate(all="ignore"):
        gap_interp = np.sqrt(np.mean((f_net_test[..., mask] - f_lin_test[..., mask]) ** 2, axis=-1))  # (S, T)
        gap_train = np.sqrt(np.mean((f_net_train - f_lin_train) ** 2, axis=-1))
        rmse_test = np.sqrt(np.mean((f_net_test - f_lin_test) ** 2, axis=-1))
        gap_inf = np.sqrt(np.mean((f_net_test[..., mask] - f_inf_test[..., mask]) ** 2, axis=-1))
        loss_net = 0.5 * np.mean(r_net**2, axis=-1)
        loss_lin = 0.5 * np.mean(r_lin**2, axis=-1)
        laziness = dk / MO.clipped_spectrum(k0)[:, -1:]  # (S, T); see modes.RCOND
        # Modes with lr lambda T / N < 1 have not moved by the last step under either dynamics: the
        # horizon ratio measures the kernel's motion against the slowest mode the run actually fits.
        lam_horizon = np.maximum(MO.clipped_spectrum(k0)[:, -1], n / (lr * steps[-1]))
        laziness_horizon = np.nanmax(dk, axis=1) / lam_horizon
    bad = diverged_net | diverged_lin
    curves = {
        "gap": gap_interp / y_scale, "gap_train": gap_train / y_scale, "rmse_net_vs_lin": rmse_test,
        "gap_net_vs_closed_inf": gap_inf / y_scale, "loss_net": loss_net, "loss_lin": loss_lin,
        "kernel_change_op": dk, "laziness_ratio": laziness,
        "rel_ntk_change": np.where(k_finite, np.linalg.norm(k_t - k0[:, None], axis=(-2, -1)), np.nan)
        / np.linalg.norm(k0, axis=(-2, -1))[:, None],
        "lambda_min_t": lam_t[..., 0], "lambda_max_t": lam_t[..., -1],
    }
    for name in ("gap", "gap_train", "rmse_net_vs_lin", "gap_net_vs_closed_inf", "loss_lin"):
        curves[name][bad] = np.nan
    with np.errstate(all="ignore"):
        finals = {
            "gap": curves["gap"][:, -1], "gap_train": curves["gap_train"][:, -1],
            "rmse_net_vs_lin": curves["rmse_net_vs_lin"][:, -1],
            "gap_net_vs_closed_inf": curves["gap_net_vs_closed_inf"][:, -1],
            "loss_net": curves["loss_net"][:, -1], "loss_lin": curves["loss_lin"][:, -1],
            "laziness_ratio": np.nanmax(laziness, axis=1),
            "laziness_ratio_horizon": laziness_horizon,
            "kernel_change_op": np.nanmax(dk, axis=1),
            "rel_ntk_change": np.nanmax(curves["rel_ntk_change"], axis=1),
            "k0_lambda_min": lam_k0[:, -1], "k0_lambda_max": lam_k0[:, 0],
            "lr_over_critical_emp": lr / lr_critical_emp,
        }
    return {
        "cell": cell, "width": width, "dtype": dtype_name, "output_scale": scale, "steps": steps,
        "learning_rate": lr, "lr_critical_inf": lr_critical_inf, "y_scale": y_scale,
        "diverged_net": diverged_net, "diverged_lin": diverged_lin,
        "theta_lambda": lam_theta, "k0_lambda": lam_k0,
        "finals": finals, "curves": curves,
        "mode_coeffs": c, "mode_pred_inf": pred_inf, "mode_pred_emp": pred_emp,
        "departure": dep,
        "mode_laziness": np.nanmax(dk, axis=1)[:, None] / MO.clipped_spectrum(k0),  # (S, N) sup_t ||dK||/lam_i
        "x_test": data.x_test[:, 0],
        "pred_test": {"net": f_net_test, "lin": f_lin_test, "closed_inf": f_inf_test},
    }


# --------------------------------------------------------------------------- summary


def _stats(vals: np.ndarray) -> dict:
    with np.errstate(all="ignore"):
        v = np.asarray(vals, np.float64)
        return {"mean": np.nanmean(v, axis=0), "median": np.nanmedian(v, axis=0), "std": np.nanstd(v, axis=0),
                "per_seed": v}


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


def summarise(cfg: RegimesConfig, results: list[dict], *, wall_seconds: float) -> tuple[dict, dict]:
    """``summary.json`` dict and ``curves.npz`` arrays (see docs/regimes.md for the schema)."""
    import warnings

    from studylib import results as R

    warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
    widths = np.asarray(cfg.widths)
    base = cfg.base()
    cell_list = []
    arrays: dict[str, np.ndarray] = {"widths": widths, "steps": results[0]["steps"]}
    for i, r in enumerate(results):
        entry = {
            "index": i, **r["cell"], "width": r["width"], "dtype": r["dtype"], "output_scale": r["output_scale"],
            "learning_rate": r["learning_rate"], "lr_critical_inf": r["lr_critical_inf"], "y_scale": r["y_scale"],
            "diverged_net": r["diverged_net"], "diverged_lin": r["diverged_lin"],
            "metrics": {k: _stats(v) for k, v in r["finals"].items()},
        }
        cell_list.append(entry)
        p = f"cell{i}/"
        for k, v in r["curves"].items():
            arrays[p + "curve/" + k] = v
        for k, v in r["mode_coeffs"].items():
            arrays[p + "coeff/" + k] = v
        arrays[p + "pred/inf"] = r["mode_pred_inf"]
        arrays[p + "pred/emp"] = r["mode_pred_emp"]
        for k, v in r["departure"].items():
            arrays[p + "departure/" + k] = v
        arrays[p + "theta_lambda"] = r["theta_lambda"]
        arrays[p + "k0_lambda"] = r["k0_lambda"]
        arrays[p + "mode_laziness"] = r["mode_laziness"]
        if r["cell"] == base:
            arrays[p + "x_test"] = r["x_test"]
            for k, v in r["pred_test"].items():
                arrays[p + "pred_test/" + k] = v

    def med(r, name):
        with np.errstate(all="ignore"):
            return float(np.nanmedian(r["finals"][name])) if np.isfinite(r["finals"][name]).any() else None

    # (a) heat maps: width x each axis, other settings at base.
    heat = {}
    for field, key in AXES.items():
        values = list(getattr(cfg, field))
        grid = np.full((len(values), len(widths)), np.nan)
        lazy = np.full_like(grid, np.nan)
        idx = np.full(grid.shape, -1)
        for i, r in enumerate(results):
            c = r["cell"]
            if c["option"] == "plain" and all(c[k] == base[k] for k in base if k not in (key, "option")):
                a, b = values.index(c[key]), list(widths).index(r["width"])
                grid[a, b] = np.nan if med(r, "gap") is None else med(r, "gap")
                lazy[a, b] = np.nan if med(r, "laziness_ratio") is None else med(r, "laziness_ratio")
                idx[a, b] = i
        heat[key] = {"values": values, "gap_median": grid, "laziness_median": lazy, "cell_index": idx}
    # (b) gap vs laziness over all cells and seeds (plain and options).
    lz = np.concatenate([r["finals"]["laziness_ratio"] for r in results])
    gp = np.concatenate([r["finals"]["gap"] for r in results])
    corr = correlation(lz, gp)
    corr_horizon = correlation(np.concatenate([r["finals"]["laziness_ratio_horizon"] for r in results]), gp)
    corr_kernel_frob = correlation(np.concatenate([r["finals"]["rel_ntk_change"] for r in results]), gp)
    # (c) wide enough per depth.
    depth_map = heat["depth"]
    wide = {str(d): wide_enough(widths, depth_map["gap_median"][j], cfg.gap_threshold)
            for j, d in enumerate(depth_map["values"])}
    # options against plain, per width.
    opts = {}
    for opt in cfg.options:
        row = {"gap_median": [], "loss_net_median": [], "laziness_median": [], "cell_index": []}
        for w in widths:
            hits = [i for i, r in enumerate(results)
                    if r["width"] == w and r["cell"] == base | {"option": opt}]
            i = hits[0] if hits else -1
            row["cell_index"].append(i)
            for name, key in (("gap", "gap_median"), ("loss_net", "loss_net_median"),
                              ("laziness_ratio", "laziness_median")):
                row[key].append(None if i < 0 else med(results[i], name))
        opts[opt] = row
    # modes at the base cell: per width, seed medians.
    mode_summary = []
    for r in results:
        if r["cell"] != base:
            continue
        with np.errstate(all="ignore"):
            final_ratio = (r["mode_coeffs"]["net_emp"][:, -1] / r["mode_pred_emp"][:, -1])
            mode_summary.append({
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
                "laziness_ratio_median": med(r, "laziness_ratio"),
            })
    summary = {
        "study": "regimes",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "widths": widths,
        "seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.seeds)),
        "checkpoint_steps": results[0]["steps"],
        "base_cell": base,
        "conventions": {
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
            "data": "x = linspace(-x_range, x_range, N), y = x^3/20, test grid on [-2 x_range, 2 x_range]",
            "metrics": "per cell: last checkpoint (sup over checkpoints for laziness_ratio, kernel_change_op, "
                       "rel_ntk_change); mean/median/std over seeds that did not diverge",
        },
        "cells": cell_list,
        "heatmaps": heat,
        "gap_vs_laziness": corr,
        "gap_vs_laziness_horizon": corr_horizon,
        "gap_vs_rel_ntk_change_frobenius": corr_kernel_frob,
        "wide_enough": {"threshold": cfg.gap_threshold, "width_by_depth": wide},
        "options": opts,
        "modes_base": mode_summary,
        "curves_file": "curves.npz",
    }
    return summary, arrays


def cell_key(cfg: RegimesConfig, cell: dict[str, Any], width: int) -> str:
    """Hash of everything that determines one cell's numbers (:func:`run_cell`): the cell's own
    setting and width, the settings it runs with (model and data with the cell's depth,
    parameterization and input scale, dtype, output scale, seeds, steps, checkpoints, NTK
    implementation, departure thresholds), whether JAX's 64-bit mode is on (it changes the
    random initial parameters even of float32 networks) and the library versions. The sweep
    (the other cells and widths) and ``gap_threshold`` are left out."""
    import hashlib
    import json

    import jax

    from studylib import results as R

    option = cell["option"]
    spec = {
        "study": "regimes",
        "cell": cell,
        "width": width,
        "model": dataclasses.asdict(dataclasses.replace(cfg.model, depth=cell["depth"],
                                                        parameterization=cell["parameterization"])),
        "data": dataclasses.asdict(dataclasses.replace(cfg.data, train_range=float(cell["x_range"]),
                                                       test_range=2.0 * float(cell["x_range"]))),
        "dtype": "float64" if option == "float64" else cfg.dtype,
        "output_scale": cfg.output_scale if option == "out_scale" else 1.0,
        "x64": bool(jax.config.jax_enable_x64),
        "versions": R.versions(),
    }
    spec |= {f: getattr(cfg, f) for f in ("seeds", "first_seed", "steps", "n_checkpoints", "ntk_implementation",
                                          "departure_tol", "departure_floor")}
    blob = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_path(cells_dir: Path, cfg: RegimesConfig, cell: dict[str, Any], width: int) -> Path:
    """``cells_dir/width<w>-<option>-depth<d>-lr<f>-x<r>-<parameterization>-<hash>.npz``."""
    return cells_dir / (f"width{width}-{cell['option']}-depth{cell['depth']}-lr{cell['lr_fraction']:g}-"
                        f"x{cell['x_range']:g}-{cell['parameterization']}-{cell_key(cfg, cell, width)}.npz")


def run(cfg: RegimesConfig, out: str | Path | None = None, *, progress: bool = True, force: bool = False) -> dict:
    """Run all cells; write ``config.json``, ``summary.json`` and ``curves.npz`` into ``out``.

    Each cell's results (one setting at one width) are stored in ``out/cells/`` as soon as it
    finishes, keyed by :func:`cell_key`; a re-run reuses them (an interrupted run resumes, and
    a sweep that shares cells with an earlier one computes only the new ones), unless ``force``.
    """
    from tqdm.auto import tqdm

    from studylib import results as R
    from studylib.compare import enable_dtype

    enable_dtype(cfg.dtype)
    if "float64" in cfg.options:
        enable_dtype("float64")
    if progress:
        from studylib import devices

        tqdm.write(f"devices: {devices.describe()}")
    if out is not None:
        out = Path(out)
        R.write_json(out / "config.json", dataclasses.asdict(cfg))
    todo = [(c, w) for c in cells(cfg) for w in cfg.widths]
    # Cost per step ~ depth * width^2 (+ overhead); weight the bar so that its ETA means something.
    cost = [cfg.steps * (c["depth"] * w * w + 64 * w + 20000) * (2 if c["option"] in ("doubled", "float64") else 1)
            for c, w in todo]
    start = time.perf_counter()
    results = []
    cache: dict = {}
    with tqdm(total=sum(cost), disable=not progress, unit="", unit_scale=True,
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]") as bar:
        for (c, w), k in zip(todo, cost, strict=True):
            bar.set_description(f"w={w} {c['option']} d={c['depth']} lr={c['lr_fraction']:g} x={c['x_range']:g} "
                                f"{c['parameterization'][:3]}")
            path = None if out is None else cell_path(out / "cells", cfg, c, w)

            def compute(c=c, w=w, k=k):
                res = run_cell(cfg, c, w, cache, progress=lambda dt: bar.update(k * dt / cfg.steps))
                return {key: v for key, v in res.items() if key != "cell"}  # the cell is known from the sweep

            def reused(p, c=c, w=w, k=k):
                bar.update(k)
                tqdm.write(f"width {w}, {cell_label(c)}: reusing {p}")

            res = R.cached(path, compute, force=force, on_reuse=reused) | {"cell": c}
            results.append(res)
            if res["diverged_net"].any() or res["diverged_lin"].any():
                tqdm.write(f"note: width {w}, {cell_label(c)}: diverged seeds: net "
                           f"{np.flatnonzero(res['diverged_net']).tolist()}, linearization "
                           f"{np.flatnonzero(res['diverged_lin']).tolist()} (lr above 2N/lambda_max(K_0)); "
                           "their gap is NaN")
    summary, arrays = summarise(cfg, results, wall_seconds=time.perf_counter() - start)
    if out is not None:
        R.write_npz(out / "curves.npz", arrays)
        R.write_json(out / "summary.json", summary)
    return summary


def format_report(summary: dict) -> str:
    """Console report: base-cell modes, heat-map rows, correlation, wide-enough widths, options."""
    lines = []
    widths = summary["widths"]
    fmt = lambda v: "   nan" if v is None else f"{v:6.3g}"  # noqa: E731
    lines.append(f"relative gap |f_net - f_lin| / RMS(y) at step {summary['checkpoint_steps'][-1]} "
                 f"(seed median); base cell {summary['base_cell']}")
    lines.append("axis value".ljust(24) + "".join(f"{'n=' + str(w):>9}" for w in widths))
    for key, h in summary["heatmaps"].items():
        for v, row in zip(h["values"], h["gap_median"], strict=True):
            lines.append(f"{key}={v}".ljust(24) + "".join(f"{fmt(g):>9}" for g in row))
    for opt, row in summary["options"].items():
        lines.append(f"option={opt}".ljust(24) + "".join(f"{fmt(g):>9}" for g in row["gap_median"]))
    c = summary["gap_vs_laziness"]
    if c["slope"] is not None:
        lines.append(f"\ngap vs laziness ratio over {c['n']} runs: gap ~ ratio^{c['slope']:.2f}, "
                     f"Pearson(log) {c['pearson_log']:.2f}, Spearman {c['spearman']:.2f}")
        f = summary["gap_vs_rel_ntk_change_frobenius"]
        h = summary["gap_vs_laziness_horizon"]
        if h["slope"] is not None:
            lines.append(f"gap vs horizon laziness ratio: gap ~ ratio^{h['slope']:.2f}, "
                         f"Pearson(log) {h['pearson_log']:.2f}, Spearman {h['spearman']:.2f}")
        lines.append(f"gap vs relative Frobenius NTK change: Pearson(log) {f['pearson_log']:.2f}, "
                     f"Spearman {f['spearman']:.2f}")
    we = summary["wide_enough"]
    lines.append(f"\nwide enough (gap < {we['threshold']}): " + ", ".join(
        f"depth {d}: {'> ' + str(widths[-1]) if w is None else f'{w:.0f}'}" for d, w in we["width_by_depth"].items()))
    lines.append("\nmodes at the base cell (mode 0 fastest): departure step of the network from the K_0 prediction "
                 "(seed median; nan = not within the run)")
    for m in summary["modes_base"]:
        dep = " ".join("  nan" if d is None else f"{d:5.0f}" for d in m["departure_net_emp_median"])
        lines.append(f"n={m['width']:>5}: {dep}   laziness {fmt(m['laziness_ratio_median'])}")
    return "\n".join(lines)
