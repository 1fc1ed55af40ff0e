"""Training dynamics under mini-batch SGD: the seed's experiment, faithfully and with seeds.

For every hidden width and batch size (a *cell*) and every seed, the network and its
linearization ``nt.linearize(apply_fn, theta_0)`` are trained with the same mini-batches
(a fresh random permutation of the N training points every epoch, split into N/B
batches) by :mod:`studylib.sgd` -- its hand-written trainer for the FC nets (``fc``,
``erf_fc``), its generic jax.grad trainer for every other architecture (``res_fc``, user
builders ``module:function``) -- and every ``record_every`` epochs we record:

* the seed's three: relative parameter change ||theta_t - theta_0|| / ||theta_0||, relative
  NTK change at (x0, x0) |K_t(x0,x0) - K_0(x0,x0)| / |K_0(x0,x0)|, and the training loss;
* the relative change of the whole N x N training Gram (Frobenius), the relative change of
  each layer's weight matrix, and the same for the linearized model (whose NTK is K_0);
* the RMSE between network and linearization on the training inputs.

Loss convention: ``loss='mse'`` is the seed's L = mean((f - y)^2) (no 1/2);
``'half_mse'`` is NT's 1/2 mean. With the seed's loss, full-batch GD with a constant kernel
is stable for lr < lr_crit = N / lambda_max(K) (2N / lambda_max with the 1/2);
``lr_over_critical`` = lr / lr_crit of each seed's empirical NTK at init is recorded
(SCIENCE.md section 4), as is the same for the analytic NTK.

Each cell is written as soon as it finishes (``out/cells/<name>-<hash>.npz`` + ``.json``,
keyed by a hash of everything that determines its numbers), so a rerun skips finished cells.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

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

LOSSES = ("mse", "half_mse")
#: 'direct' / 'lowrank': the hand-written FC trainer (fc and erf_fc only); 'generic': jax.grad
#: through the stax apply_fn (any architecture); 'auto': the FC trainer where it applies.
METHODS = ("auto", "direct", "lowrank", "generic")
#: Architectures the hand-written FC trainer handles (studylib.sgd.FAST_ARCHS; no JAX import here).
FAST_ARCHS = ("fc", "erf_fc")
#: Width from which method 'auto' uses the low-rank deferred update (see studylib.sgd).
LOWRANK_FROM_WIDTH = 256
#: Seeds are vmapped when all their parameters together stay below this (bytes), so that the
#: working set of a step stays in the 32 MB L3 cache; otherwise they run one after another.
VMAP_BYTES = 8 * 2**20
#: Cell-file format version (part of the hash).
CELL_FORMAT = 1

#: The seed's model: standard parameterization, LeCun-normal weights N(0, 1/fan_in), zero biases.
SEED_MODEL = {"arch": "fc", "depth": 5, "activation": "relu", "W_std": 1.0, "b_std": 0.0,
              "parameterization": "standard"}
#: The seed's reported batch-1 relative parameter change at epoch 20000 (SCIENCE.md section 1).
SEED_REPORTED_BATCH1 = {10: 0.53, 100: 0.20, 1000: 0.15}


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """Everything that determines a dynamics run.

    ``lr``: absolute learning rate; when None it is ``lr_fraction`` times the critical rate
    of SGD with the analytic NTK on the training inputs, per width and batch size
    (:func:`minibatch_critical_lr`; N / lambda_max at batch N with the seed's loss).
    ``batch_sizes`` must divide ``data.n_train``; batch size N is full-batch GD.
    ``method``: 'direct' or 'lowrank' formulation of the hand-written FC trainer (``fc`` and
    ``erf_fc`` only), or 'generic' (jax.grad through the stax ``apply_fn``; any architecture) --
    the same numbers up to float rounding; 'auto' picks lowrank from width 256 on for FC nets
    and generic for every other architecture.
    """

    widths: tuple[int, ...] = (10, 100, 1000)
    batch_sizes: tuple[int, ...] = (1, 5, 10)
    epochs: int = 20000
    record_every: int = 5
    lr: float | None = 0.001
    lr_fraction: float = 0.5
    seeds: int = 3
    first_seed: int = 0
    loss: str = "mse"
    dtype: str = "float32"
    method: str = "auto"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        set_frozen(self, "widths", check_int_list("widths", self.widths))
        set_frozen(self, "batch_sizes", check_int_list("batch_sizes", self.batch_sizes))
        set_frozen(self, "epochs", check_int("epochs", self.epochs))
        set_frozen(self, "record_every", check_int("record_every", self.record_every))
        if self.lr is not None:
            set_frozen(self, "lr", check_float("lr", self.lr))
        set_frozen(self, "lr_fraction", check_float("lr_fraction", self.lr_fraction))
        set_frozen(self, "seeds", check_int("seeds", self.seeds))
        set_frozen(self, "first_seed", check_int("first_seed", self.first_seed, minimum=0))
        check_choice("loss", self.loss, LOSSES)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("method", self.method, METHODS)
        check_model_data(self)
        if self.method in ("direct", "lowrank") and self.model.arch not in FAST_ARCHS:
            raise ConfigError(f"method: {self.method!r} is the hand-written FC trainer's (arch "
                              f"{' or '.join(FAST_ARCHS)}); arch {self.model.arch!r} needs method auto or generic")
        if self.epochs % self.record_every:
            raise ConfigError(f"record_every: must divide epochs={self.epochs}, got {self.record_every}")
        for b in self.batch_sizes:
            if self.data.n_train % b:
                raise ConfigError(f"batch_sizes: each must divide data.n_train={self.data.n_train} "
                                  f"(every epoch is split into equal batches), got {b}")


PRESETS: dict[str, dict[str, Any]] = {
    # The seed's experiment exactly (use --seeds 1 for its single-seed protocol).
    "seed": {"model": SEED_MODEL},
    # The same with NTK parameterization and lr from the analytic kernel (width independent).
    "ntk": {"model": SEED_MODEL | {"parameterization": "ntk"}, "lr": None, "lr_fraction": 0.5},
    # A quick look (under a minute): the seed preset for 200 epochs, one seed.
    "quick": {"model": SEED_MODEL, "epochs": 200, "seeds": 1},
    # Seconds; for tests.
    "tiny": {"model": SEED_MODEL | {"depth": 2}, "widths": (8, 16), "batch_sizes": (5, 10), "epochs": 20,
             "record_every": 2, "seeds": 2},
}
DEFAULT_PRESET = "seed"


def resolve_method(cfg: DynamicsConfig, width: int) -> str:
    if cfg.method != "auto":
        return cfg.method
    if cfg.model.arch not in FAST_ARCHS:
        return "generic"
    return "lowrank" if width >= LOWRANK_FROM_WIDTH else "direct"


def loss_factor(loss: str) -> float:
    """c in L = (c/2) mean((f - y)^2)."""
    return {"mse": 2.0, "half_mse": 1.0}[loss]


def critical_lr(lam_max, n: int, loss: str):
    """Full-batch GD stability limit with a constant kernel: 2N / (c lambda_max)."""
    return 2.0 * n / (loss_factor(loss) * np.asarray(lam_max, np.float64))


def cell_key(cfg: DynamicsConfig, width: int, batch: int, lr: float) -> dict:
    """Everything that determines a cell's numbers (hashed for its file name)."""
    return {
        "format": CELL_FORMAT, "width": width, "batch_size": batch, "lr": lr, "epochs": cfg.epochs,
        "record_every": cfg.record_every, "seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.seeds)),
        "loss": cfg.loss, "dtype": cfg.dtype, "model": dataclasses.asdict(cfg.model),
        "data": dataclasses.asdict(cfg.data),
    }


def cell_stem(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"w{key['width']}_b{key['batch_size']}-{digest}"


def _segments(n_records: int, target: int = 20) -> int:
    """Records per jitted call: the largest divisor of n_records that gives >= ``target`` calls
    (for a moving progress bar); all calls then share one compile."""
    best = 1
    for d in range(1, n_records + 1):
        if n_records % d == 0 and n_records // d >= min(target, n_records):
            best = d
    return best


def minibatch_critical_lr(k, batch: int, loss: str) -> float:
    """A lower bound on the SGD stability limit with a constant kernel K and batches of size B:
    a step on batch I multiplies the residual on I by (I - lr c K_II / B), stable for
    lr < 2B / (c max_I lambda_max(K_II)), and lambda_max(K_II) <= min(lambda_max(K), B max_i K_ii).
    Exact for B = 1 (1/max K_ii with the seed's loss) and for B = N (N / lambda_max)."""
    k = np.asarray(k, np.float64)
    bound = min(np.linalg.eigvalsh(k)[-1], batch * np.max(np.diag(k)))
    return float(2.0 * batch / (loss_factor(loss) * bound))


def analytic_lr(cfg: DynamicsConfig, width: int, x_train, batch: int | None = None) -> tuple[float, float]:
    """(lr, lr_crit of the analytic NTK): lr_crit is :func:`minibatch_critical_lr` for
    ``batch`` (the full-batch N / lambda_max when None), lr = cfg.lr or lr_fraction * lr_crit."""
    import jax.numpy as jnp

    from studylib import kernels, models

    net = models.build(cfg.model, width)
    theta = np.asarray(kernels.analytic(net.kernel_fn, jnp.asarray(x_train), None), np.float64)
    crit = minibatch_critical_lr(theta, batch or x_train.shape[0], cfg.loss)
    lr = cfg.lr if cfg.lr is not None else cfg.lr_fraction * crit
    return lr, crit


def run_cell(cfg: DynamicsConfig, width: int, batch: int, dataset, *, progress=None) -> dict[str, Any]:
    """Train all seeds of one (width, batch size) cell. Returns arrays (leading axis = seed)
    and scalars; ``progress(fraction_done)`` is called after each jitted segment."""
    import jax
    import jax.numpy as jnp

    from studylib import models, sgd

    if cfg.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    x = jnp.asarray(dataset.x_train, dtype)
    y = jnp.asarray(dataset.y_train, dtype)
    x_test = jnp.asarray(dataset.x_test, dtype)
    n = x.shape[0]
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    lr, lr_crit_inf = analytic_lr(cfg, width, dataset.x_train, batch)

    net = models.build(cfg.model, width)
    method = resolve_method(cfg, width)
    if method == "generic":
        # Any stax net: the whole parameter pytree is trained (jax.grad through apply_fn).
        plan = sgd.GenericPlan(cfg.model, width, n_train=n, batch_size=batch, record_every=cfg.record_every,
                               loss=cfg.loss)
        to_params = lambda p: p  # noqa: E731
        shapes = jax.eval_shape(lambda k: net.init_fn(k, x.shape)[1], jax.random.PRNGKey(0))
        p_bytes = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes)) * np.dtype(cfg.dtype).itemsize
        dense_idx = models.dense_layer_indices(shapes)
        weights = lambda p: [p[i][0] for i in dense_idx]  # noqa: E731
    else:
        plan = sgd.Plan(sgd.fast_mlp(cfg.model, width), n_train=n, batch_size=batch,
                        record_every=cfg.record_every, loss=cfg.loss, method=method)
        to_params = sgd.dense_params
        p_bytes = sum(a * b + b for a, b in zip(plan.net.sizes[:-1], plan.net.sizes[1:], strict=True)) \
            * np.dtype(cfg.dtype).itemsize
        weights = lambda d: [w for w, _ in d]  # noqa: E731
    n_records = cfg.epochs // cfg.record_every
    per_call = _segments(n_records)

    vmapped = len(seeds) > 1 and p_bytes * len(seeds) <= VMAP_BYTES
    groups = [seeds] if vmapped else [[s] for s in seeds]
    init_fn, seg_fn, final_fn = sgd.compiled_runner(plan, vmapped=vmapped)
    # Without vmap the runner takes one seed: strip the seed axis going in, restore it coming out.
    tmap = jax.tree_util.tree_map
    pick = (lambda t: t) if vmapped else (lambda t: tmap(lambda v: v[0], t))
    put = (lambda t: t) if vmapped else (lambda t: tmap(lambda v: v[None], t))

    out: dict[str, list] = {}
    compile_s = 0.0
    total_segments = len(groups) * (n_records // per_call)
    done = 0
    for group in groups:
        dense0 = jax.vmap(lambda k: to_params(net.init_fn(k, x.shape)[1]))(
            jnp.stack([jax.random.PRNGKey(s) for s in group]))
        dense0 = tmap(lambda v: v.astype(dtype), dense0)
        # Batch order: its own key per seed, independent of the init key.
        perms = jnp.stack([sgd.epoch_permutations(jax.random.fold_in(jax.random.PRNGKey(s), 1), cfg.epochs, n)
                           for s in group])  # (S, E, N)
        perms = perms.reshape(len(group), n_records // per_call, per_call, cfg.record_every, n)
        d0 = pick(dense0)
        init = init_fn(d0, x, x_test)
        dense = tmap(jnp.copy, d0)
        c = pick(jnp.zeros((len(group), n), dtype))
        lr_arr = jnp.asarray(lr, dtype)
        t0 = time.perf_counter()
        seg = seg_fn.lower(dense, c, d0, pick(perms[:, 0]), x, y, lr_arr, init).compile()
        compile_s += time.perf_counter() - t0
        recs = []
        for i in range(perms.shape[1]):
            dense, c, r = seg(dense, c, d0, pick(perms[:, i]), x, y, lr_arr, init)
            recs.append(tmap(np.asarray, put(r)))
            done += 1
            if progress is not None:
                progress(done / total_segments)
        f_net_test, f_lin_test = put(final_fn(dense, c, x_test, init))
        rec = {k: np.concatenate([r[k] for r in recs], axis=1) for k in recs[0]}
        init_np = tmap(lambda v: np.asarray(v, np.float64), put(init))
        p0_sq = sum(np.sum(np.asarray(a, np.float64) ** 2, axis=tuple(range(1, a.ndim)))
                    for a in jax.tree_util.tree_leaves(dense0))
        w0_sq = np.stack([np.sum(np.asarray(w, np.float64) ** 2, axis=tuple(range(1, w.ndim)))
                          for w in weights(dense0)], -1)
        part = {**{f"rec_{k}": v for k, v in rec.items()}, **init_np,
                "f_net_test": np.asarray(f_net_test), "f_lin_test": np.asarray(f_lin_test),
                "p0_sq": p0_sq, "w0_sq": w0_sq}
        for k, v in part.items():
            out.setdefault(k, []).append(v)
    arrays = {k: np.concatenate(v, axis=0) for k, v in out.items()}
    return _curves(cfg, arrays, width=width, batch=batch, lr=lr, lr_crit_inf=lr_crit_inf, compile_s=compile_s,
                   method=plan.method, vmapped=vmapped)


def _curves(cfg, a: dict, *, width, batch, lr, lr_crit_inf, compile_s, method, vmapped) -> dict[str, Any]:
    """Per-seed curves over records (record 0 = init) from the raw records."""
    f64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    s = a["f0_train"].shape[0]
    k0 = f64(a["k0"])  # (S, N, N)
    cf = loss_factor(cfg.loss) / 2.0

    def with_init(init_val, rec):  # prepend the value at epoch 0
        return np.concatenate([np.broadcast_to(init_val, (s, 1, *rec.shape[2:])), rec], axis=1)

    f_net = with_init(a["f0_train"][:, None], f64(a["rec_f_net_train"]))
    f_lin = with_init(a["f0_train"][:, None], f64(a["rec_f_lin_train"]))
    k_t = with_init(k0[:, None], f64(a["rec_k_net"]))
    dsq_net = with_init(np.zeros((s, 1)), f64(a["rec_dsq_net"]))
    dsq_lin = with_init(np.zeros((s, 1)), f64(a["rec_dsq_lin"]))
    n_layers = a["w0_sq"].shape[1]
    wd_net = with_init(np.zeros((s, 1, n_layers)), f64(a["rec_wdsq_net"]))
    wd_lin = with_init(np.zeros((s, 1, n_layers)), f64(a["rec_wdsq_lin"]))
    loss0 = cf * np.mean((f64(a["f0_train"]) - _y_of(cfg)) ** 2, axis=1)
    y = _y_of(cfg)
    lam = np.linalg.eigvalsh(k0)
    crit_emp = critical_lr(lam[:, -1], k0.shape[-1], cfg.loss)
    with np.errstate(all="ignore"):
        curves = {
            "rel_param_change": np.sqrt(dsq_net / f64(a["p0_sq"])[:, None]),
            "rel_param_change_lin": np.sqrt(dsq_lin / f64(a["p0_sq"])[:, None]),
            "ntk_x0_change": np.abs(k_t[:, :, 0, 0] - k0[:, None, 0, 0]) / np.abs(k0[:, None, 0, 0]),
            "rel_ntk_change": np.sqrt(np.sum((k_t - k0[:, None]) ** 2, axis=(2, 3))
                                      / np.sum(k0**2, axis=(1, 2))[:, None]),
            "loss_net": with_init(loss0[:, None], f64(a["rec_loss_net"])),
            "loss_lin": with_init(loss0[:, None], f64(a["rec_loss_lin"])),
            "rmse_net_vs_lin_train": np.sqrt(np.mean((f_net - f_lin) ** 2, axis=2)),
            "rel_weight_change": np.sqrt(wd_net / f64(a["w0_sq"])[:, None]),
            "rel_weight_change_lin": np.sqrt(wd_lin / f64(a["w0_sq"])[:, None]),
        }
    finite = np.isfinite(curves["loss_net"])
    diverged = np.where(finite.all(axis=1), -1, np.argmin(finite, axis=1) * cfg.record_every)
    return {
        "width": width, "batch_size": batch, "lr": lr, "method": method, "vmapped_seeds": vmapped,
        "compile_seconds": compile_s,
        "epochs": np.arange(curves["loss_net"].shape[1]) * cfg.record_every,
        "curves": curves,
        "lr_critical_inf": lr_crit_inf, "lr_over_critical_inf": lr / lr_crit_inf,
        "lr_critical_emp": crit_emp, "lr_over_critical_emp": lr / crit_emp,
        "k0_lambda_min": lam[:, 0], "k0_lambda_max": lam[:, -1],
        "diverged_net_epoch": diverged,
        "f0_test": f64(a["f0_test"]), "f_net_test": f64(a["f_net_test"]), "f_lin_test": f64(a["f_lin_test"]),
        "f_net_train": f_net[:, -1], "f_lin_train": f_lin[:, -1], "y_train": y,
    }


def _y_of(cfg) -> np.ndarray:
    from studylib import data as D

    return np.asarray(D.load(cfg.data).y_train, np.float64)[:, 0]


def _flatten(cell: dict) -> tuple[dict, dict]:
    """Split a cell result into npz arrays and JSON scalars."""
    arrays, meta = {}, {}
    for k, v in cell.items():
        if k == "curves":
            arrays.update({f"curve/{n}": c for n, c in v.items()})
        elif isinstance(v, np.ndarray):
            arrays[k] = v
        else:
            meta[k] = v
    return arrays, meta


def _unflatten(arrays: dict, meta: dict) -> dict:
    cell = dict(meta)
    cell["curves"] = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("curve/")}
    cell.update({k: v for k, v in arrays.items() if not k.startswith("curve/")})
    return cell


def load_cell(cells_dir: Path, stem: str) -> dict | None:
    from studylib import results as R

    npz, js = cells_dir / f"{stem}.npz", cells_dir / f"{stem}.json"
    if not (npz.is_file() and js.is_file()):
        return None
    meta = R.read_json(js)
    return _unflatten(R.read_npz(npz), meta["cell"])


def cell_cost(cfg: DynamicsConfig, width: int, batch: int) -> float:
    """Rough relative cost of a cell, for the progress bar's ETA: steps x (per-step work)."""
    steps = cfg.epochs * cfg.data.n_train // batch
    per_step = width * width * (1.0 + 0.6 * batch) + 2000.0 * batch + 20000.0
    return cfg.seeds * steps * per_step


def run(cfg: DynamicsConfig, out: str | Path, *, force: bool = False, progress: bool = True,
        stop_after: int | None = None) -> dict:
    """Run (or resume) every cell, write ``summary.json`` and ``curves.npz`` into ``out``.

    ``stop_after``: stop after computing this many new cells (to test resuming).
    """
    from tqdm.auto import tqdm

    from studylib import data as D
    from studylib import results as R

    out = Path(out)
    cells_dir = out / "cells"
    R.write_json(out / "config.json", dataclasses.asdict(cfg))
    dataset = D.load(cfg.data)
    if progress:
        from studylib import devices

        tqdm.write(f"devices: {devices.describe()} (one cell at a time; seeds vmapped where they fit the cache)")
    start = time.perf_counter()
    cells: dict[tuple[int, int], dict] = {}
    todo = [(w, b) for w in cfg.widths for b in cfg.batch_sizes]
    costs = {wb: cell_cost(cfg, *wb) for wb in todo}
    computed = 0
    with tqdm(total=sum(costs.values()), disable=not progress, unit="", unit_scale=True,
              bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]") as bar:
        for w, b in todo:
            lr, _ = analytic_lr(cfg, w, dataset.x_train, b)
            key = cell_key(cfg, w, b, lr)
            stem = cell_stem(key)
            cached = None if force else load_cell(cells_dir, stem)
            if cached is not None:
                cells[(w, b)] = cached
                bar.update(costs[(w, b)])
                tqdm.write(f"width {w}, batch {b}: done before ({cells_dir / stem}.npz), skipped")
                continue
            if stop_after is not None and computed >= stop_after:
                raise KeyboardInterrupt("stop_after reached")
            bar.set_description(f"width {w} batch {b}")
            base = bar.n
            t0 = time.perf_counter()
            cell = run_cell(cfg, w, b, dataset,
                            progress=lambda frac, base=base, c=costs[(w, b)]: bar.update(base + frac * c - bar.n))
            cell["wall_seconds"] = time.perf_counter() - t0
            arrays, meta = _flatten(cell)
            R.write_npz(cells_dir / f"{stem}.npz", arrays)
            R.write_json(cells_dir / f"{stem}.json", {"key": key, "cell": meta})
            cells[(w, b)] = cell
            computed += 1
            if np.any(cell["diverged_net_epoch"] >= 0):
                tqdm.write(f"warning: width {w}, batch {b}: network diverged for seed(s) "
                           f"{np.flatnonzero(cell['diverged_net_epoch'] >= 0).tolist()}")
    summary, curves = summarise(cfg, cells, wall_seconds=time.perf_counter() - start)
    R.write_npz(out / "curves.npz", curves)
    R.write_json(out / "summary.json", summary)
    return summary


#: Curves whose final value per seed goes into the summary's metrics.
FINAL_METRICS = ("rel_param_change", "rel_param_change_lin", "ntk_x0_change", "rel_ntk_change", "loss_net",
                 "loss_lin", "rmse_net_vs_lin_train")


def summarise(cfg: DynamicsConfig, cells: dict, *, wall_seconds: float) -> tuple[dict, dict]:
    from studylib import results as R

    metrics: dict[str, dict] = {}
    per_cell = []
    curves: dict[str, np.ndarray] = {"widths": np.array(cfg.widths), "batch_sizes": np.array(cfg.batch_sizes)}
    for (w, b), cell in cells.items():
        tag = f"w{w}_b{b}"
        finals = {m: cell["curves"][m][:, -1] for m in FINAL_METRICS}
        for layer in range(cell["curves"]["rel_weight_change"].shape[2]):
            finals[f"rel_weight_change_l{layer + 1}"] = cell["curves"]["rel_weight_change"][:, -1, layer]
            finals[f"rel_weight_change_lin_l{layer + 1}"] = cell["curves"]["rel_weight_change_lin"][:, -1, layer]
        finals["lr_over_critical_emp"] = cell["lr_over_critical_emp"]
        for m, v in finals.items():
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                metrics.setdefault(m, {})[tag] = {"mean": np.nanmean(v), "std": np.nanstd(v), "per_seed": v}
        per_cell.append({
            "width": w, "batch_size": b, "tag": tag, "lr": cell["lr"], "method": cell["method"],
            "lr_critical_inf": cell["lr_critical_inf"], "lr_over_critical_inf": cell["lr_over_critical_inf"],
            "lr_over_critical_emp": cell["lr_over_critical_emp"], "k0_lambda_min": cell["k0_lambda_min"],
            "k0_lambda_max": cell["k0_lambda_max"], "diverged_net_epoch": cell["diverged_net_epoch"],
            "wall_seconds": cell.get("wall_seconds"), "compile_seconds": cell.get("compile_seconds"),
            "vmapped_seeds": cell.get("vmapped_seeds"),
        })
        curves["epochs"] = cell["epochs"]
        for name, c in cell["curves"].items():
            curves[f"{tag}/curve/{name}"] = c
        for name in ("f0_test", "f_net_test", "f_lin_test", "f_net_train", "f_lin_train"):
            curves[f"{tag}/{name}"] = cell[name]
    from studylib import data as D

    ds = D.load(cfg.data)
    curves["x_train"], curves["y_train"], curves["x_test"] = ds.x_train[:, 0], ds.y_train[:, 0], ds.x_test[:, 0]
    summary = {
        "study": "dynamics",
        "config": dataclasses.asdict(cfg),
        "versions": R.versions(),
        "wall_seconds": wall_seconds,
        "widths": list(cfg.widths),
        "batch_sizes": list(cfg.batch_sizes),
        "seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.seeds)),
        "conventions": {
            "loss": ("L = mean((f - y)^2) over the batch (the seed's, no 1/2)" if cfg.loss == "mse"
                     else "L = 1/2 mean((f - y)^2) over the batch (NT's)"),
            "epoch": "a fresh random permutation of the N training points, split into N/B batches",
            "lr_critical": "_emp: full-batch GD limit 2N / (c lambda_max(K_0)) of each seed's empirical NTK at "
                           "init (c = 2 for mse, 1 for half_mse); _inf: SGD limit for the cell's batch size with "
                           "the analytic NTK (minibatch_critical_lr)",
            "metrics": "keyed by cell 'w<width>_b<batch>'; value at the last epoch; mean/std over seeds",
            "linearized": "nt.linearize(apply_fn, theta_0) trained on the same batches (function-space form)",
            "parameterization": cfg.model.parameterization,
        },
        "seed_reported_batch1_rel_param_change": SEED_REPORTED_BATCH1,
        "per_cell": per_cell,
        "metrics": metrics,
        "curves_file": "curves.npz",
    }
    return summary, curves


def format_table(summary: dict) -> str:
    """Console table: per cell, final mean ± std of the main metrics, and lr / lr_crit."""
    cols = ("rel_param_change", "rel_param_change_lin", "ntk_x0_change", "rel_ntk_change", "loss_net",
            "loss_lin", "rmse_net_vs_lin_train")
    head = f"{'cell':<12}{'lr/lr_crit':>11}" + "".join(f"{c:>24}" for c in cols)
    lines = [head, "-" * len(head)]
    for pc in summary["per_cell"]:
        tag = pc["tag"]
        ratio = np.nanmedian(np.asarray(pc["lr_over_critical_emp"], np.float64))
        row = f"{tag:<12}{ratio:>11.3g}"
        for c in cols:
            e = summary["metrics"][c][tag]
            mu, sd = e["mean"], e["std"]
            row += f"{'nan':>24}" if mu is None else f"{mu:>14.3g} ± {sd:<7.2g}"
        lines.append(row)
    seed = summary.get("seed_reported_batch1_rel_param_change") or {}
    got = {pc["width"]: summary["metrics"]["rel_param_change"][pc["tag"]]["mean"]
           for pc in summary["per_cell"] if pc["batch_size"] == 1}
    common = [w for w in got if str(w) in seed or w in seed]
    if common and summary["config"]["epochs"] == 20000:
        lines.append("")
        lines.append("batch 1, epoch 20000, relative parameter change: ours (mean over seeds) vs the seed's")
        for w in common:
            ref = seed.get(w, seed.get(str(w)))
            lines.append(f"  width {w:>5}: {got[w]:.3g} vs {ref}")
    return "\n".join(lines)

