"""Ensembles of finite networks against the infinite-width Gaussian process (Lee et al. 2019, Fig. 2).

For each hidden width, ``members`` networks from independent initialisations
(NTK parameterization) are trained by full-batch GD on L = 1/2 mean((f - y)^2)
(NT's convention; time = lr * steps), vmapped over the members, in two ways:

* ``ntk``: every layer trained, compared with
  ``nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train,
  learning_rate=lr)(t, x_test, get='ntk', compute_cov=True)``;
* ``readout``: only the last Dense layer trained (the gradients of the hidden
  layers are masked by construction: only the readout parameters are passed to
  the trainer), compared with the same with ``get='nngp'``.

In both cases the GP at step t is (Lee et al. 2019 eqs. 14-16; K = NNGP, Θ = the
trained kernel: the NTK, or the NNGP for readout-only training, N = n_train)::

    A_t      = Θ(x, X) Θ^-1 (I - D_t)
    mean_t   = A_t Y
    cov_t    = K(x, x) + A_t K(X, X) A_t^T - A_t K(X, x) - K(x, X) A_t^T

with D_t = exp(-lr Θ t / N) for gradient flow (NT's function; continuous time,
t counts steps) and D_t = (I - lr Θ / N)^t for the exact discrete GD that the
networks actually run (:func:`gp_moments` with ``discrete=True``). At t = 0 both
give the NNGP prior (mean 0, cov K(x, x)).

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
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from studylib import metrics as Mx
from studylib.closed_form import gp_moments, gp_std, nt_gp
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

#: Training modes: name -> the GP kernel ``get`` it is compared with.
MODES = {"ntk": "ntk", "readout": "nngp"}
#: Statistics computed for networks and for the Monte-Carlo floor.
STATS = ("mean_err", "std_err", "calibration", "mean_rmse")
#: Fraction of a Gaussian within ±2σ.
COVERAGE_2SIGMA = math.erf(2.0 / math.sqrt(2.0))
#: Published reference for the rate of the finite-width corrections.
REFERENCE = ("Lee et al. 2019 Thm 2.1 / App. I: network and kernel at init deviate from the limit by "
             "O(n^-1/2); the ensemble-mean error is often O(n^-1) (the O(n^-1/2) part averages out)")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Everything that determines an ensemble run.

    ``lr``: absolute learning rate of full training; when None it is
    ``lr_fraction`` x 2N/lambda_max of the analytic NTK. Readout-only training
    uses ``readout_lr_fraction`` x 2N/lambda_max of the analytic NNGP (its own
    kernel). ``chunk``: members per vmapped batch (None = as many as fit the device memory, see member_chunk);
    only memory and speed depend on it. ``mc_repeats``: repeats of the
    Monte-Carlo floor.
    """

    widths: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 500)
    members: int = 32
    steps: int = 1000
    lr: float | None = None
    lr_fraction: float = 0.25
    readout_lr_fraction: float = 0.25
    n_checkpoints: int = 10
    mc_repeats: int = 200
    readout: bool = True
    chunk: int | None = None
    dtype: str = "float32"
    first_seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        set_frozen(self, "widths", check_int_list("widths", self.widths))
        set_frozen(self, "members", check_int("members", self.members, minimum=2))
        set_frozen(self, "steps", check_int("steps", self.steps))
        if self.lr is not None:
            set_frozen(self, "lr", check_float("lr", self.lr))
        set_frozen(self, "lr_fraction", check_float("lr_fraction", self.lr_fraction))
        set_frozen(self, "readout_lr_fraction", check_float("readout_lr_fraction", self.readout_lr_fraction))
        set_frozen(self, "n_checkpoints", check_int("n_checkpoints", self.n_checkpoints, minimum=2))
        set_frozen(self, "mc_repeats", check_int("mc_repeats", self.mc_repeats, minimum=2))
        if not isinstance(self.readout, bool):
            raise ConfigError(f"readout: expected true or false, got {self.readout!r}")
        if self.chunk is not None:
            set_frozen(self, "chunk", check_int("chunk", self.chunk))
        check_choice("dtype", self.dtype, DTYPES)
        set_frozen(self, "first_seed", check_int("first_seed", self.first_seed, minimum=0))
        check_model_data(self)
        if self.model.parameterization != "ntk":
            raise ConfigError(
                f"model.parameterization: the ensemble study needs 'ntk' (a width-independent GP limit, "
                f"and readout-only training follows the NNGP only there), got {self.model.parameterization!r}")

    @property
    def modes(self) -> tuple[str, ...]:
        return ("ntk", "readout") if self.readout else ("ntk",)


PRESETS: dict[str, dict[str, Any]] = {
    # Two decades of width, 32 members: about 3-4 min on 2 CPU cores.
    "default": {},
    # Seconds: smoke tests.
    "tiny": {"widths": (4, 16, 64), "members": 8, "steps": 20, "n_checkpoints": 4, "mc_repeats": 20,
             "data": {"n_test": 41}},
    # Lee et al. 2019 Fig. 2 scale (100 members, width up to 2048 -- 8192 in the paper): a GPU.
    "large": {"widths": (8, 16, 32, 64, 128, 256, 512, 1024, 2048), "members": 128, "steps": 3000,
              "n_checkpoints": 12, "mc_repeats": 500, "chunk": 32},
}


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


def mc_floor(mean: np.ndarray, cov: np.ndarray, members: int, repeats: int, *, seed: int = 0
             ) -> dict[str, np.ndarray]:
    """The statistics of :func:`ensemble_stats` for ``repeats`` ensembles of ``members`` exact GP draws.

    ``mean`` (T, X), ``cov`` (T, X, X). Returns each statistic with shape (repeats, T).
    """
    rng = np.random.default_rng(seed)
    mean = np.asarray(mean, np.float64)
    from studylib.closed_form import gp_sqrt

    root = gp_sqrt(cov)  # (T, X, X)
    std = gp_std(cov)
    out: dict[str, list] = {k: [] for k in STATS}
    for r in range(repeats):
        z = rng.standard_normal((mean.shape[0], members, mean.shape[1]))
        draws = mean[:, None, :] + np.einsum("txk,tmk->tmx", root, z)
        s = ensemble_stats(draws, mean, std)
        for k in STATS:
            out[k].append(s[k])
        del r
    return {k: np.stack(v) for k, v in out.items()}


def floor_summary(per_repeat: np.ndarray) -> dict[str, np.ndarray]:
    """mean, std and 5/95% quantiles over repeats (axis 0)."""
    return {"mean": per_repeat.mean(0), "std": per_repeat.std(0, ddof=1),
            "q05": np.quantile(per_repeat, 0.05, axis=0), "q95": np.quantile(per_repeat, 0.95, axis=0)}


# --------------------------------------------------------------------------- networks


def readout_model(apply_fn):
    """``model_fn(readout_params, all_params, x)``: the network with its last (Dense) layer's params
    replaced by the trained ones; the hidden layers are ``aux``, so their gradients are never taken."""
    return lambda pr, p_all, x: apply_fn([*list(p_all)[:-1], pr], x)


def train_width(cfg: EnsembleConfig, width: int, data, *, lrs: dict[str, float], steps: np.ndarray,
                progress=None, measure_kernels: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Train ``cfg.members`` networks at ``width`` in every mode.

    Returns per mode: ``test`` (T, members, X) and ``train`` (T, members, N) outputs;
    with ``measure_kernels``, the eigenvalues (members, N) of each member's own trained
    kernel on the training inputs at init, ``lambda_init`` (empirical NTK; for readout,
    the readout Gram, which stays constant), and for 'ntk' also at the last step,
    ``lambda_final``, and the relative change ``kernel_change`` = ||K_T - K_0||_F / ||K_0||_F.
    """
    import jax
    import jax.numpy as jnp

    from studylib import devices, kernels, models, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    x_train = jnp.asarray(data.x_train, dtype)
    y_train = jnp.asarray(data.y_train, dtype)
    x_test = jnp.asarray(data.x_test, dtype)
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.members))
    chunk = cfg.chunk or member_chunk(cfg, width)

    net = models.build(cfg.model, width)
    ro_fn = readout_model(net.apply_fn)
    trainers = {"ntk": training.make_trainer(training.network_model(net.apply_fn)),
                "readout": training.make_trainer(ro_fn)}
    apply_fns = {"ntk": jax.jit(jax.vmap(lambda p, aux, x: net.apply_fn(p, x), in_axes=(0, 0, None))),
                 "readout": jax.jit(jax.vmap(ro_fn, in_axes=(0, 0, None)))}
    ntk_fn = kernels.empirical_ntk_fn(net.apply_fn)

    def readout_gram(pr, p_all):
        jac = jax.jacrev(lambda q: ro_fn(q, p_all, x_train)[:, 0])(pr)
        j = jnp.concatenate([a.reshape(x_train.shape[0], -1) for a in jax.tree_util.tree_leaves(jac)], axis=1)
        return j @ j.T

    grams = {"ntk": jax.jit(jax.vmap(lambda p, aux: ntk_fn(x_train, None, p))),
             "readout": jax.jit(jax.vmap(readout_gram))}

    out = {m: {"test": np.full((len(steps), cfg.members, x_test.shape[0]), np.nan),
               "train": np.full((len(steps), cfg.members, x_train.shape[0]), np.nan),
               "lambda_init": np.full((cfg.members, x_train.shape[0]), np.nan),
               "lambda_final": np.full((cfg.members, x_train.shape[0]), np.nan),
               "kernel_change": np.full(cfg.members, np.nan)} for m in cfg.modes}
    weights = {"ntk": 1.0 / (1.3 if cfg.readout else 1.0), "readout": 0.3 / 1.3}  # readout steps are cheap
    for lo in range(0, cfg.members, chunk):
        idx = slice(lo, min(lo + chunk, cfg.members))
        p0 = training.init_params(net.init_fn, seeds[idx], x_train.shape)
        p0 = jax.tree_util.tree_map(lambda a: a.astype(dtype), p0)
        p0 = devices.shard_seeds(p0, idx.stop - idx.start)  # members split over jax.devices()
        for mode in cfg.modes:
            lr = jnp.asarray(lrs[mode], dtype)
            if mode == "ntk":
                p, aux = jax.tree_util.tree_map(jnp.copy, p0), jnp.zeros(idx.stop - idx.start, dtype)
            else:
                p, aux = jax.tree_util.tree_map(jnp.copy, p0[-1]), p0
            if measure_kernels:
                gram0 = np.asarray(grams[mode](p, aux), np.float64)
                out[mode]["lambda_init"][idx] = np.linalg.eigvalsh(gram0)
            prev = 0
            for i, t in enumerate(steps):
                if t > prev:
                    p = trainers[mode](p, aux, x_train, y_train, lr, int(t - prev))
                out[mode]["test"][i, idx] = np.asarray(apply_fns[mode](p, aux, x_test), np.float64)[..., 0]
                out[mode]["train"][i, idx] = np.asarray(apply_fns[mode](p, aux, x_train), np.float64)[..., 0]
                if progress is not None:  # fraction of this width's work
                    progress((t - prev) / cfg.steps * (idx.stop - idx.start) / cfg.members * weights[mode])
                prev = t
            if measure_kernels and mode == "ntk":
                gram_t = np.asarray(grams[mode](p, aux), np.float64)
                out[mode]["lambda_final"][idx] = np.linalg.eigvalsh(gram_t)
                out[mode]["kernel_change"][idx] = Mx.rel_change(gram_t, gram0, axis=(1, 2))
    return out


def member_chunk(cfg: EnsembleConfig, width: int) -> int:
    """Members vmapped at once when ``chunk`` is not set: as many as fit half of the devices'
    memory (parameters x ~5 buffers per member: theta_0, theta_t, gradient, update temporaries)."""
    import jax

    from studylib import devices, models

    net = models.build(cfg.model, width)
    d_in = cfg.data.dim if cfg.data.name == "sphere" else 1
    shapes = jax.eval_shape(lambda k: net.init_fn(k, (cfg.data.n_train, d_in))[1], jax.random.PRNGKey(0))
    n_params = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    item = 8 if cfg.dtype == "float64" else 4
    return devices.seeds_per_chunk(5 * n_params * item, cfg.members)


def unstable_members(train_out: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """Members (axis 1 of ``train_out`` (T, members, N)) whose outputs became non-finite or whose
    final training loss exceeds their loss at init (GD below its critical rate never ends above it)."""
    loss = 0.5 * np.mean((train_out - np.asarray(y_train).reshape(1, 1, -1)) ** 2, axis=-1)  # (T, members)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(loss).all(axis=0) | ~(loss[-1] <= loss[0])


# --------------------------------------------------------------------------- the study


def _gp_all(cfg: EnsembleConfig, data, steps: np.ndarray) -> dict[str, Any]:
    """GP moments of every mode (NT flow and NumPy discrete), learning rates and kernel spectra."""
    import jax
    import jax.numpy as jnp

    from studylib import kernels, models

    # Width independent (NTK param.); jitted: op-by-op evaluation of the deep kernel recursion is slow.
    kernel_fn = jax.jit(models.build(cfg.model, cfg.widths[0]).kernel_fn, static_argnums=(2,))
    x_train = jnp.asarray(data.x_train, jnp.float64)
    x_test = jnp.asarray(data.x_test, jnp.float64)
    y = np.asarray(data.y_train, np.float64)
    k = {get: {"dd": np.asarray(kernel_fn(x_train, None, get), np.float64),
               "td": np.asarray(kernel_fn(x_test, x_train, get), np.float64)} for get in ("ntk", "nngp")}
    k_tt = np.asarray(kernel_fn(x_test, None, "nngp"), np.float64)
    out: dict[str, Any] = {"lr": {}, "lr_critical": {}, "lambda": {}, "train_loss": {}}
    for mode in cfg.modes:
        get = MODES[mode]
        crit = float(kernels.critical_learning_rate(jnp.asarray(k[get]["dd"])))
        if mode == "ntk":
            lr = cfg.lr if cfg.lr is not None else cfg.lr_fraction * crit
        else:
            lr = cfg.readout_lr_fraction * crit
        out["lr"][mode], out["lr_critical"][mode] = lr, crit
        out["lambda"][mode] = np.linalg.eigvalsh(k[get]["dd"])
        mean, cov = nt_gp(kernel_fn, x_train, jnp.asarray(y), x_test, get=get, learning_rate=lr, steps=steps)
        mean_d, cov_d = gp_moments(k[get]["dd"], k[get]["td"], k["nngp"]["dd"], k["nngp"]["td"], k_tt, y,
                                   learning_rate=lr, steps=steps, discrete=True)
        out[mode] = {"flow": (mean, cov), "discrete": (mean_d, cov_d)}
        mean_train, _ = gp_moments(k[get]["dd"], k[get]["dd"], k["nngp"]["dd"], k["nngp"]["dd"], k["nngp"]["dd"], y,
                                   learning_rate=lr, steps=steps)
        out["train_loss"][mode] = 0.5 * np.mean((mean_train - y[:, 0]) ** 2, axis=-1)
    return out


def cell_key(cfg: EnsembleConfig, width: int) -> str:
    """Hash of everything that determines one width's networks (:func:`train_width`): the config
    less the list of widths and ``mc_repeats`` (the floor is computed after the widths), the width
    and the library versions."""
    import hashlib
    import json

    from studylib import results as R

    d = dataclasses.asdict(cfg)
    d.pop("widths")
    d.pop("mc_repeats")
    blob = json.dumps({"study": "ensemble", "config": d, "width": width, "versions": R.versions()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(cfg: EnsembleConfig, out: str | Path | None = None, *, progress: bool = True, force: bool = False) -> dict:
    """Run the study; write ``summary.json``, ``ensemble.npz`` and ``config.json`` into ``out``
    (when given) and return the summary (schema: docs/ensemble.md).

    Each width's networks are stored in ``out/cells/`` as soon as they are trained, keyed by
    :func:`cell_key`; a re-run with the same config reuses them (an interrupted run resumes),
    unless ``force``.
    """
    import jax
    from tqdm.auto import tqdm

    from studylib import data as D
    from studylib import results as R
    from studylib import training

    # The GP side is always float64 (the NNGP Gram spans 7 decades); networks are cast to cfg.dtype.
    jax.config.update("jax_enable_x64", True)
    dataset = D.load(cfg.data)
    if progress:
        from studylib import devices

        tqdm.write(f"devices: {devices.describe()} (members are split over them)")
    if out is not None:
        out = Path(out)
        R.write_json(out / "config.json", dataclasses.asdict(cfg))
    start = time.perf_counter()
    steps = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    gp = _gp_all(cfg, dataset, steps)

    nets: dict[str, list[dict]] = {m: [] for m in cfg.modes}
    cost = {w: cfg.steps * (w * w + 64 * w + 4096) for w in cfg.widths}
    with tqdm(total=sum(cost.values()), disable=not progress, unit="", unit_scale=True,
              bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]") as bar:
        for w in cfg.widths:
            bar.set_description(f"width {w}")
            cell = None if out is None else out / "cells" / f"width{w}-{cell_key(cfg, w)}.npz"
            res = R.cached(
                cell,
                lambda w=w: train_width(cfg, w, dataset, lrs=gp["lr"], steps=steps,
                                        progress=lambda frac, w=w: bar.update(frac * cost[w])),
                force=force,
                on_reuse=lambda p, w=w: (bar.update(cost[w]), tqdm.write(f"width {w}: reusing {p}")))
            for m in cfg.modes:
                nets[m].append(res[m])
                bad = int(unstable_members(res[m]["train"], dataset.y_train).sum())
                if bad:
                    tqdm.write(f"note: width {w}, {m}: {bad} of {cfg.members} members unstable (final loss above "
                               "the initial one, or non-finite); left out of the statistics")
    floors = {m: mc_floor(*gp[m]["flow"], cfg.members, cfg.mc_repeats, seed=cfg.first_seed) for m in cfg.modes}
    stacked = {m: {k: np.stack([r[k] for r in v]) for k in v[0]} for m, v in nets.items()}
    summary, arrays = summarise(cfg, steps, gp, stacked, floors,
                                dataset, wall_seconds=time.perf_counter() - start)
    if out is not None:
        R.write_npz(out / "ensemble.npz", arrays)
        R.write_json(out / "summary.json", summary)
    return summary


def _excess_slope(widths, values, floor_mean) -> dict:
    """Log-log slope of sqrt(max(err^2 - floor^2, 0)) (the part of the error beyond sampling noise)
    vs width, over the widths where the error exceeds 1.5x the floor; None with fewer than 3 such widths."""
    values = np.asarray(values, np.float64)
    above = np.isfinite(values) & (values > 1.5 * floor_mean)
    if above.sum() < 3:
        return {"slope": None, "widths_used": np.asarray(widths)[above]}
    excess = np.sqrt(values[above] ** 2 - floor_mean**2)
    slope, intercept = Mx.fit_loglog(np.asarray(widths)[above], excess)
    return {"slope": slope, "intercept": intercept, "widths_used": np.asarray(widths)[above]}


def summarise(cfg: EnsembleConfig, steps: np.ndarray, gp: dict, nets: dict[str, np.ndarray], floors: dict,
              data, *, wall_seconds: float) -> tuple[dict, dict]:
    """``summary.json`` dict and ``ensemble.npz`` arrays. ``nets[mode]``: ``test`` (W, T, members, X),
    ``train`` (W, T, members, N), ``lambda_init`` (W, members, N) etc. (see :func:`train_width`)."""
    from studylib import results as R

    widths = np.asarray(cfg.widths)
    metrics: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {"widths": widths, "steps": steps, "x_test": data.x_test[:, 0],
                                     "x_train": data.x_train[:, 0], "y_train": data.y_train[:, 0]}
    per_width = [{"width": int(w)} for w in widths]
    gp_gap = {}
    for mode in cfg.modes:
        raw = nets[mode]["test"]
        unstable = np.stack([unstable_members(tr, data.y_train) for tr in nets[mode]["train"]])  # (W, members)
        f = np.where(unstable[:, None, :, None], np.nan, raw)  # unstable members are left out
        lr_ratio = gp["lr"][mode] * nets[mode]["lambda_init"][..., -1] / (2.0 * data.x_train.shape[0])
        arrays[f"{mode}/outputs"] = raw.astype(np.float32)  # (W, T, members, X)
        arrays[f"{mode}/train_loss"] = 0.5 * np.mean((nets[mode]["train"] - data.y_train[:, 0]) ** 2, axis=-1)
        arrays[f"{mode}/unstable"] = unstable
        arrays[f"{mode}/lr_over_critical_emp"] = lr_ratio  # (W, members)
        for k in ("lambda_init", "lambda_final", "kernel_change"):
            arrays[f"{mode}/{k}"] = nets[mode][k]
        for i, row in enumerate(per_width):
            row[f"unstable_{mode}"] = int(unstable[i].sum())
            row[f"lr_over_critical_emp_{mode}"] = {"median": np.median(lr_ratio[i]), "max": lr_ratio[i].max(),
                                                   "frac_above_1": np.mean(lr_ratio[i] > 1.0)}
            if mode == "ntk":
                ok = ~unstable[i]
                with np.errstate(all="ignore"):
                    row["kernel_change_ntk"] = np.median(nets[mode]["kernel_change"][i][ok])
                    row["lambda_min_init_ntk"] = np.median(nets[mode]["lambda_init"][i][ok, 0])
                    row["lambda_min_final_ntk"] = np.median(nets[mode]["lambda_final"][i][ok, 0])
        for ref in ("flow", "discrete"):
            mean, cov = gp[mode][ref]
            std = gp_std(cov)
            arrays[f"{mode}/gp_{ref}_mean"], arrays[f"{mode}/gp_{ref}_std"] = mean, std
            s = ensemble_stats(f, mean[None], std[None])  # (W, T)
            suffix = "" if ref == "flow" else "_discrete"
            for k in STATS:
                name = f"{mode}/{k}{suffix}"
                entry: dict[str, Any] = {"per_time": s[k], "final": s[k][:, -1]}
                if ref == "flow":
                    fl = floor_summary(floors[mode][k])
                    entry["floor"] = fl
                    arrays[f"{mode}/floor/{k}"] = floors[mode][k]
                    if k != "calibration":
                        entry["above_floor_q95"] = s[k] > fl["q95"][None]
                        entry["excess_slope"] = [_excess_slope(widths, s[k][:, i], fl["mean"][i])
                                                 for i in range(len(steps))]
                    else:
                        entry["below_floor_q05"] = s[k] < fl["q05"][None]
                metrics[name] = entry
            if ref == "flow":
                arrays[f"{mode}/ens_mean"], arrays[f"{mode}/ens_std"] = s["ens_mean"], s["ens_std"]
        (mf, cf), (md, cd) = gp[mode]["flow"], gp[mode]["discrete"]
        rms = np.sqrt(np.mean(gp_std(cf) ** 2, axis=-1))
        gp_gap[mode] = {"mean_err": np.sqrt(np.mean((mf - md) ** 2, axis=-1)) / rms,
                        "std_err": np.sqrt(np.mean((gp_std(cf) - gp_std(cd)) ** 2, axis=-1)) / rms}
    summary = {
        "study": "ensemble",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "widths": widths,
        "members": cfg.members,
        "seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.members)),
        "checkpoint_steps": steps,
        "learning_rate": gp["lr"],
        "lr_critical": gp["lr_critical"],
        "kernel_eigenvalues": gp["lambda"],
        "gp_mean_train_loss": {m: gp["train_loss"][m] for m in cfg.modes},
        "gp_flow_vs_discrete": gp_gap,
        "conventions": {
            "loss": "L = 1/2 mean((f - y)^2) over the N training outputs (NT's)",
            "time": "t counts GD steps; absolute time = learning_rate * t (NT's gradient_descent_mse_ensemble)",
            "parameterization": cfg.model.parameterization,
            "modes": "ntk: all layers trained vs get='ntk'; readout: last layer only vs get='nngp'",
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
        },
        "reference": REFERENCE,
        "per_width": per_width,
        "metrics": metrics,
        "arrays_file": "ensemble.npz",
    }
    return summary, arrays


TABLE_STATS = ("mean_err", "std_err", "calibration")


def format_table(summary: dict) -> str:
    """Console table per mode and statistic: value at t=0 and at the final step per width, with the MC floor."""
    steps = summary["checkpoint_steps"]
    widths = summary["widths"]
    lines = []
    for mode in ("ntk", "readout"):
        if f"{mode}/mean_err" not in summary["metrics"]:
            continue
        lines.append(f"{mode} (lr {summary['learning_rate'][mode]:.4g}), t = {steps[0]} | t = {steps[-1]} steps")
        head = "statistic".ljust(14) + "".join(f"{'n=' + str(w):>16}" for w in widths) + "      MC floor (mean±std)"
        lines += [head, "-" * len(head)]
        for k in TABLE_STATS:
            e = summary["metrics"][f"{mode}/{k}"]
            cells = "".join(f"{_f(r[0]):>7} | {_f(r[-1]):<6}" for r in e["per_time"])
            fl = e["floor"]
            floor = f"   {_f(fl['mean'][0])}±{_f(fl['std'][0])} | {_f(fl['mean'][-1])}±{_f(fl['std'][-1])}"
            lines.append(k.ljust(14) + cells + floor)
        lines.append("")
    return "\n".join(lines)


def _f(v) -> str:
    return "nan" if v is None else f"{v:.3f}"
