"""One cell of the dynamics study: all seeds of one (width, batch size) trained by mini-batch SGD,
network and linearization on the same batches (JAX is imported inside the functions, so that
importing this module stays cheap).

For every seed, the network and its linearization ``nt.linearize(apply_fn, theta_0)`` are trained
with the same mini-batches (a fresh random permutation of the N training points every epoch,
split into N/B batches) by :mod:`studylib.sgd` -- its hand-written trainer for the FC nets (``fc``,
``erf_fc``), its generic jax.grad trainer for every other architecture -- and every
``record_every`` epochs we record:

* the seed's three: relative parameter change ||theta_t - theta_0|| / ||theta_0||, relative
  NTK change at (x0, x0) |K_t(x0,x0) - K_0(x0,x0)| / |K_0(x0,x0)|, and the training loss;
* the relative change of the whole N x N training Gram (Frobenius), the relative change of
  each layer's weight matrix, and the same for the linearized model (whose NTK is K_0);
* the RMSE between network and linearization on the training inputs;

and after training, on data with held-out targets, :func:`test_metrics`. With k outputs per
example (e.g. digits' one-hot targets) every function is flat (N k,), row n k + i, and the
kernel the full (N k, N k) one (:class:`studylib.sgd.GenericPlan`).

Loss convention: ``loss='mse'`` is the seed's L = mean((f - y)^2) (no 1/2); ``'half_mse'`` is
NT's 1/2 mean (:data:`studylib.kernels.LOSS_FACTOR`). With a constant kernel, full-batch GD is
stable for lr < :func:`studylib.kernels.critical_rate` (N / lambda_max with the seed's loss);
``lr_over_critical_emp`` = lr over that rate of each seed's empirical NTK at init is recorded
(SCIENCE.md section 4), and ``lr_over_critical_inf`` the same for the analytic NTK and the
cell's batch size (:func:`studylib.kernels.minibatch_critical_rate`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from studylib.dynamics.config import VMAP_BYTES, DynamicsConfig, analytic_lr, resolve_method, training_seconds
from studylib.runner import Cell, Context


def segments(n_records: int, target: int = 20) -> int:
    """Records per jitted call: the largest divisor of n_records that gives >= ``target`` calls
    (for a moving progress bar); all calls then share one compile."""
    best = 1
    for d in range(1, n_records + 1):
        if n_records % d == 0 and n_records // d >= min(target, n_records):
            best = d
    return best


@dataclasses.dataclass(frozen=True)
class Trainer:
    """How one cell trains: the :mod:`studylib.sgd` plan, the stax network's ``init_fn``, the
    parameters trained as a function of stax's parameter list (``to_params``), their size in bytes
    (one seed) and the weight matrices whose change is recorded per layer (``weights``)."""

    plan: Any
    init_fn: Callable
    to_params: Callable
    param_bytes: int
    weights: Callable


def make_trainer(cfg: DynamicsConfig, width: int, batch: int, x_shape: tuple[int, ...], out_dim: int = 1
                 ) -> Trainer:
    """The hand-written FC trainer (methods direct, lowrank: flat inputs (N, d), one output) or the
    generic one (any net, inputs (N, ...), ``out_dim`` = k outputs), for one cell."""
    import jax

    from studylib import models, sgd

    method = resolve_method(cfg, width)
    item = np.dtype(cfg.dtype).itemsize
    n = x_shape[0]
    net = models.build(cfg.model, width, out_dim=out_dim)
    if method == "generic":
        # Any stax net: the whole parameter pytree is trained (jax.grad through apply_fn).
        plan = sgd.GenericPlan(cfg.model, width, n_train=n, batch_size=batch, record_every=cfg.record_every,
                               loss=cfg.loss, input_shape=tuple(x_shape[1:]), out_dim=out_dim)
        shapes = jax.eval_shape(lambda k: net.init_fn(k, x_shape)[1], jax.random.PRNGKey(0))
        p_bytes = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes)) * item
        paths = sgd.generic_weight_paths(plan)  # every weight array, nested blocks included
        return Trainer(plan, net.init_fn, lambda p: p, p_bytes, lambda p: models.weights_at(p, paths))
    if out_dim != 1 or len(x_shape) != 2:
        raise ValueError(f"method {method!r}: the hand-written FC trainer takes inputs (N, d) and one output; "
                         f"got inputs {x_shape} and {out_dim} outputs (use method generic)")
    plan = sgd.Plan(sgd.fast_mlp(cfg.model, width, in_dim=x_shape[1]), n_train=n, batch_size=batch,
                    record_every=cfg.record_every, loss=cfg.loss, method=method)
    sizes = plan.net.sizes
    p_bytes = sum(a * b + b for a, b in itertools.pairwise(sizes)) * item
    return Trainer(plan, net.init_fn, sgd.dense_params, p_bytes, lambda d: [w for w, _ in d])


def seed_groups(cfg: DynamicsConfig, trainer: Trainer) -> tuple[list[list[int]], bool]:
    """The seeds in groups trained together, and whether a group is vmapped: all seeds at once
    when their parameters fit VMAP_BYTES (and there are several), else one after another."""
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    vmapped = len(seeds) > 1 and trainer.param_bytes * len(seeds) <= VMAP_BYTES
    return ([seeds] if vmapped else [[s] for s in seeds]), vmapped


def train_group(cfg: DynamicsConfig, trainer: Trainer, fns, group: list[int], data, lr: float, *, vmapped: bool,
                on_segment: Callable[[], Any]) -> tuple[dict[str, np.ndarray], float]:
    """Train the seeds of ``group`` for all epochs; returns their raw records and quantities at
    init (leading axis = seed) and the seconds spent compiling the segment function.
    ``data``: (x, y, x_test) as JAX arrays; ``on_segment()`` is called after each jitted segment."""
    import jax
    import jax.numpy as jnp

    from studylib import sgd

    x, y, x_test = data
    n, dtype = x.shape[0], x.dtype
    init_fn, seg_fn, final_fn = fns
    n_records = cfg.epochs // cfg.record_every
    per_call = segments(n_records)
    tmap = jax.tree_util.tree_map
    # Without vmap the runner takes one seed: strip the seed axis going in, restore it coming out.
    pick = (lambda t: t) if vmapped else (lambda t: tmap(lambda v: v[0], t))
    put = (lambda t: t) if vmapped else (lambda t: tmap(lambda v: v[None], t))

    dense0 = jax.vmap(lambda k: trainer.to_params(trainer.init_fn(k, x.shape)[1]))(
        jnp.stack([jax.random.PRNGKey(s) for s in group]))
    dense0 = tmap(lambda v: v.astype(dtype), dense0)
    # Batch order: its own key per seed, independent of the init key.
    perms = jnp.stack([sgd.epoch_permutations(jax.random.fold_in(jax.random.PRNGKey(s), 1), cfg.epochs, n)
                       for s in group])  # (S, E, N)
    perms = perms.reshape(len(group), n_records // per_call, per_call, cfg.record_every, n)
    d0 = pick(dense0)
    init = init_fn(d0, x, x_test)
    dense = tmap(jnp.copy, d0)
    c = pick(jnp.zeros((len(group), n * y.shape[1]), dtype))  # flat (N k,) function-space coefficients
    lr_arr = jnp.asarray(lr, dtype)
    t0 = time.perf_counter()
    seg = seg_fn.lower(dense, c, d0, pick(perms[:, 0]), x, y, lr_arr, init).compile()
    compile_s = time.perf_counter() - t0
    recs = []
    for i in range(perms.shape[1]):
        dense, c, r = seg(dense, c, d0, pick(perms[:, i]), x, y, lr_arr, init)
        recs.append(tmap(np.asarray, put(r)))
        on_segment()
    f_net_test, f_lin_test = put(final_fn(dense, c, x_test, init))
    rec = {k: np.concatenate([r[k] for r in recs], axis=1) for k in recs[0]}
    init_np = tmap(lambda v: np.asarray(v, np.float64), put(init))
    p0_sq = sum(np.sum(np.asarray(a, np.float64) ** 2, axis=tuple(range(1, a.ndim)))
                for a in jax.tree_util.tree_leaves(dense0))
    w0_sq = np.stack([np.sum(np.asarray(w, np.float64) ** 2, axis=tuple(range(1, w.ndim)))
                      for w in trainer.weights(dense0)], -1)
    return {**{f"rec_{k}": v for k, v in rec.items()}, **init_np,
            "f_net_test": np.asarray(f_net_test), "f_lin_test": np.asarray(f_lin_test),
            "p0_sq": p0_sq, "w0_sq": w0_sq}, compile_s


def train_cell(cfg: DynamicsConfig, width: int, batch: int, lr: float, dataset, *,
               progress: Callable[[float], Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train all seeds of one cell: (raw arrays joined over seed groups, facts about the run).
    ``progress(fraction)`` is called after each jitted segment with the fraction of segments done."""
    import jax.numpy as jnp

    from studylib import sgd

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    data = tuple(jnp.asarray(a, dtype) for a in (dataset.x_train, dataset.y_train, dataset.x_test))
    trainer = make_trainer(cfg, width, batch, data[0].shape, out_dim=int(data[1].shape[1]))
    groups, vmapped = seed_groups(cfg, trainer)
    fns = sgd.compiled_runner(trainer.plan, vmapped=vmapped)
    total = len(groups) * (cfg.epochs // cfg.record_every // segments(cfg.epochs // cfg.record_every))
    done = [0]

    def on_segment() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0] / total)

    parts, compile_s = [], 0.0
    for group in groups:
        part, seconds = train_group(cfg, trainer, fns, group, data, lr, vmapped=vmapped, on_segment=on_segment)
        parts.append(part)
        compile_s += seconds
    arrays = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
    return arrays, {"method": trainer.plan.method, "vmapped_seeds": vmapped, "compile_seconds": compile_s}


def curves(cfg: DynamicsConfig, a: dict, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-seed curves (S, records + 1[, layers]) from the raw records; record 0 = init. ``y``: the
    training targets flat (N k,); with k outputs the kernel is the full (N k, N k) one."""
    from studylib import kernels

    f64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    s = a["f0_train"].shape[0]
    k0 = f64(a["k0"])  # (S, N, N)
    cf = kernels.LOSS_FACTOR[cfg.loss] / 2.0

    def with_init(init_val, rec):  # prepend the value at epoch 0
        return np.concatenate([np.broadcast_to(init_val, (s, 1, *rec.shape[2:])), rec], axis=1)

    f_net = with_init(a["f0_train"][:, None], f64(a["rec_f_net_train"]))
    f_lin = with_init(a["f0_train"][:, None], f64(a["rec_f_lin_train"]))
    k_x0 = with_init(k0[:, None, 0, 0], f64(a["rec_k_x0"]))  # K_t at (x0, x0), output 0
    k_dsq = with_init(np.zeros((s, 1)), f64(a["rec_k_dsq"]))  # ||K_t - K_0||_F^2
    dsq_net = with_init(np.zeros((s, 1)), f64(a["rec_dsq_net"]))
    dsq_lin = with_init(np.zeros((s, 1)), f64(a["rec_dsq_lin"]))
    n_layers = a["w0_sq"].shape[1]
    wd_net = with_init(np.zeros((s, 1, n_layers)), f64(a["rec_wdsq_net"]))
    wd_lin = with_init(np.zeros((s, 1, n_layers)), f64(a["rec_wdsq_lin"]))
    loss0 = cf * np.mean((f64(a["f0_train"]) - y) ** 2, axis=1)
    with np.errstate(all="ignore"):
        return {
            "rel_param_change": np.sqrt(dsq_net / f64(a["p0_sq"])[:, None]),
            "rel_param_change_lin": np.sqrt(dsq_lin / f64(a["p0_sq"])[:, None]),
            "ntk_x0_change": np.abs(k_x0 - k0[:, None, 0, 0]) / np.abs(k0[:, None, 0, 0]),
            "rel_ntk_change": np.sqrt(k_dsq / np.sum(k0**2, axis=(1, 2))[:, None]),
            "loss_net": with_init(loss0[:, None], f64(a["rec_loss_net"])),
            "loss_lin": with_init(loss0[:, None], f64(a["rec_loss_lin"])),
            "rmse_net_vs_lin_train": np.sqrt(np.mean((f_net - f_lin) ** 2, axis=2)),
            "rel_weight_change": np.sqrt(wd_net / f64(a["w0_sq"])[:, None]),
            "rel_weight_change_lin": np.sqrt(wd_lin / f64(a["w0_sq"])[:, None]),
        }


def test_metrics(cfg: DynamicsConfig, f0: np.ndarray, f_net: np.ndarray, f_lin: np.ndarray, y_test: np.ndarray,
                 n_classes: int) -> dict[str, np.ndarray]:
    """Held-out metrics per seed (S,) after training: loss (the study's convention, mean over the M k
    outputs), RMSE against the targets for the network, its linearization and the network at init,
    the RMSE between network and linearization, and for classes (``n_classes`` > 0: argmax of the k
    outputs) the accuracies and the fraction of test points where network and linearization predict
    the same class. ``f_*``: (S, M k) flat, row m k + i; ``y_test``: (M, k)."""
    from studylib import kernels

    cf = kernels.LOSS_FACTOR[cfg.loss] / 2.0
    m, k = y_test.shape
    yf = y_test.reshape(-1)
    out: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for name, f in (("net", f_net), ("lin", f_lin), ("init", f0)):
            out[f"test_loss_{name}"] = cf * np.mean((f - yf) ** 2, axis=-1)
            out[f"test_rmse_{name}"] = np.sqrt(np.mean((f - yf) ** 2, axis=-1))
        out["test_rmse_net_vs_lin"] = np.sqrt(np.mean((f_net - f_lin) ** 2, axis=-1))
        if n_classes > 0:
            label = np.argmax(y_test, axis=1)
            cls = {n: np.argmax(f.reshape(f.shape[0], m, k), axis=2) for n, f in (("net", f_net), ("lin", f_lin))}
            out["test_accuracy_net"] = np.mean(cls["net"] == label, axis=1)
            out["test_accuracy_lin"] = np.mean(cls["lin"] == label, axis=1)
            out["test_agreement_net_vs_lin"] = np.mean(cls["net"] == cls["lin"], axis=1)
    return out


def cell_result(cfg: DynamicsConfig, a: dict, y: np.ndarray, *, width: int, batch: int, lr: float,
                lr_crit_inf: float, y_test: np.ndarray | None = None, n_classes: int = 0) -> dict[str, Any]:
    """The stored result of one cell: its curves, critical rates, divergence, trained functions and, when
    the data have held-out targets ``y_test`` (M, k), :func:`test_metrics` under 'test'. ``y``: the
    training targets flat (N k,); functions are stored flat (row n k + i)."""
    from studylib import kernels

    f64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    cur = curves(cfg, a, y)
    k0 = f64(a["k0"])
    lam = np.linalg.eigvalsh(k0)
    crit_emp = kernels.critical_rate(lam[:, -1], k0.shape[-1], loss_factor=kernels.LOSS_FACTOR[cfg.loss])
    finite = np.isfinite(cur["loss_net"])
    diverged = np.where(finite.all(axis=1), -1, np.argmin(finite, axis=1) * cfg.record_every)
    return {
        "width": width, "batch_size": batch, "lr": lr,
        "epochs": np.arange(cur["loss_net"].shape[1]) * cfg.record_every,
        "curves": cur,
        "lr_critical_inf": lr_crit_inf, "lr_over_critical_inf": lr / lr_crit_inf,
        "lr_critical_emp": crit_emp, "lr_over_critical_emp": lr / crit_emp,
        "k0_lambda_min": lam[:, 0], "k0_lambda_max": lam[:, -1],
        "diverged_net_epoch": diverged,
        "f0_test": f64(a["f0_test"]), "f_net_test": f64(a["f_net_test"]), "f_lin_test": f64(a["f_lin_test"]),
        # the last record (epochs >= record_every, so there is one)
        "f_net_train": f64(a["rec_f_net_train"])[:, -1], "f_lin_train": f64(a["rec_f_lin_train"])[:, -1],
        "y_train": y,
        "test": ({} if y_test is None else
                 test_metrics(cfg, f64(a["f0_test"]), f64(a["f_net_test"]), f64(a["f_lin_test"]), y_test, n_classes)),
    }


def run_cell(cfg: DynamicsConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any] | None = None
             ) -> dict[str, Any]:
    """Train and measure all seeds of one (width, batch size) cell. Returns arrays (leading axis =
    seed) and scalars. The set-up (kernels, compilation) counts as done at the first segment."""
    width, batch, lr = cell.spec["width"], cell.spec["batch_size"], cell.spec["lr"]
    # the modelled set-up share of the cell's cost (what its cost holds beyond training)
    setup = min(max(1.0 - training_seconds(cfg, width, batch) / cell.cost, 0.0), 1.0) if cell.cost > 0 else 0.0
    report = None if progress is None else (lambda frac: progress(setup + (1.0 - setup) * frac))
    _, lr_crit_inf = analytic_lr(cfg, width, ctx.dataset.x_train, batch)
    arrays, facts = train_cell(cfg, width, batch, lr, ctx.dataset, progress=report)
    ds = ctx.dataset
    y = np.asarray(ds.y_train, np.float64).reshape(-1)  # flat (N k,), as the trainer's outputs
    y_test = None if ds.y_test is None else np.asarray(ds.y_test, np.float64)
    return facts | cell_result(cfg, arrays, y, width=width, batch=batch, lr=lr, lr_crit_inf=lr_crit_inf,
                               y_test=y_test, n_classes=ds.n_classes)


def notes(cfg: DynamicsConfig, cell: Cell, res: dict) -> list[str]:
    """A warning for a cell whose network diverged (its curves keep the non-finite values)."""
    bad = np.flatnonzero(np.asarray(res["diverged_net_epoch"]) >= 0).tolist()
    if not bad:
        return []
    return [f"warning: width {cell.spec['width']}, batch {cell.spec['batch_size']}: network diverged for seed(s) "
            f"{bad}"]


def prepare(cfg: DynamicsConfig, dataset, log) -> None:
    """Nothing is shared between cells (the compiled trainers are cached by :mod:`studylib.sgd`)."""
    return None
