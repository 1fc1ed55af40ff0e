"""One cell of the comparison study: all seeds of one width trained and measured (JAX is imported
inside the functions, so that importing this module stays cheap).

For each seed, with one stax definition (``init_fn``, ``apply_fn``, ``kernel_fn``): the network is
trained by full-batch GD on L = 1/2 mean((f - y)^2) (NT's convention) for ``steps`` steps at rate
``lr`` (time = lr * steps); its linearization is trained the same way (in function space by
default); the closed forms with the analytic NTK and with the empirical NTK at init are evaluated
at the same steps, as NT's gradient flow and as exact discrete GD (:mod:`studylib.closed_form`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from studylib import metrics as M
from studylib import runner
from studylib.compare.config import GAPS, REGIONS, CompareConfig, training_seconds
from studylib.runner import Cell, Context


def _measure_fns(apply_fn, ntk_fn, dense_idx):
    """Jitted, seed-vmapped measurements of one checkpoint: (network, linearized by params,
    linearized by function-space coefficients)."""
    import jax
    import jax.numpy as jnp

    from studylib.nt import nt

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


def closed_forms(theta_train, theta_test, k0_train, k0_test, y64, f0_train, f0_test, *, lr: float, steps
                 ) -> dict[str, np.ndarray]:
    """Closed forms at exactly the checkpoint steps, per seed (f_0 and K_0 differ by seed):
    'closed_<inf|emp>[_discrete]_<train|test>' of shape (S, T, N|M, 1)."""
    from studylib import closed_form

    closed: dict[str, list] = {}
    for s in range(len(f0_train)):
        for name, fn in closed_form.CLOSED_FORMS.items():
            suffix = "" if name == "flow" else "_" + name
            for kind, k_tt, k_te in (("inf", theta_train, theta_test), ("emp", k0_train[s], k0_test[s])):
                tr, te = fn(k_tt, k_te, y64, f0_train[s], f0_test[s], learning_rate=lr, steps=steps)
                closed.setdefault(f"closed_{kind}{suffix}_train", []).append(tr)
                closed.setdefault(f"closed_{kind}{suffix}_test", []).append(te)
    return {k: np.stack(v) for k, v in closed.items()}


def measured_curves(rec: dict, preds: dict, k0_train, n0_sq, w0_sq, y64, regions: dict) -> dict[str, np.ndarray]:
    """Every curve (S, T[, L]) from the raw records of one width: losses, parameter and weight
    changes, kernel change and extremes, and the RMSE of every gap on every region."""
    data_regions = regions
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
                mask = None if not region else data_regions[region]
                curves[name] = M.rmse(preds[a][1], preds[b][1], mask)

    return curves


def run_width(cfg: CompareConfig, width: int, data, *, progress: Callable[[int], Any] | None = None,
              seeds: list[int] | None = None, log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Train and measure all seeds at one width (``progress(k)`` is called after every k steps).

    Returns per-seed curves of shape (S, T, ...)
    over the checkpoints and per-seed scalars (names: README, "Files it writes")."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from studylib import closed_form, devices, kernels, models, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    x_train = jnp.asarray(data.x_train, dtype)
    y_train = jnp.asarray(data.y_train, dtype)
    x_test = jnp.asarray(data.x_test, dtype)
    steps = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    if seeds is None:
        seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))

    net = models.build(cfg.model, width)
    p0 = devices.shard_seeds(training.init_params(net.init_fn, seeds, x_train.shape, dtype=cfg.dtype), len(seeds))
    dense_idx = models.dense_layer_indices(jax.tree_util.tree_map(lambda a: a[0], p0))

    theta_train = np.asarray(kernels.analytic(net.kernel_fn, x_train, None), np.float64)
    theta_test = np.asarray(kernels.analytic(net.kernel_fn, x_test, x_train), np.float64)
    lr_critical_inf = float(kernels.critical_learning_rate(theta_train))
    lr = cfg.lr if cfg.lr is not None else cfg.lr_fraction * lr_critical_inf

    ntk_fn = kernels.empirical_ntk_fn(net.apply_fn, implementation=cfg.ntk_implementation)
    k0_train = jax.jit(jax.vmap(lambda p: ntk_fn(x_train, None, p)))(p0)
    # One seed at a time: ntk_cross holds N parameter copies per seed.
    k0_test = jax.jit(lambda ps: lax.map(lambda p: kernels.ntk_cross(net.apply_fn, x_test, x_train, p), ps))(p0)
    k0_train, k0_test = np.asarray(k0_train, np.float64), np.asarray(k0_test, np.float64)
    lr_critical_emp = kernels.critical_learning_rate(k0_train)
    above = [seeds[i] for i in np.flatnonzero(lr > lr_critical_emp)]
    if above and log is not None:  # before training: the linearized model of these seeds will diverge
        log(f"warning: width {width}: lr {lr:.3g} exceeds the empirical critical rate 2N/lambda_max(K_0) of "
            f"seed(s) {above}: their linearized model diverges (GD with a constant kernel above 2N/lambda_max)")

    f0_train = np.asarray(jax.vmap(net.apply_fn, in_axes=(0, None))(p0, x_train), np.float64)
    f0_test = np.asarray(jax.vmap(net.apply_fn, in_axes=(0, None))(p0, x_test), np.float64)
    y64 = np.asarray(data.y_train, np.float64)

    closed = closed_forms(theta_train, theta_test, k0_train, k0_test, y64, f0_train, f0_test, lr=lr, steps=steps)

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
    curves = measured_curves(rec, preds, k0_train, n0_sq, w0_sq, y64, data.regions)
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


def memory_plan(cfg: CompareConfig, width: int, input_shape: tuple[int, ...]) -> dict:
    """Parameters per network and the estimated bytes per seed of one width (params: theta_0,
    theta_t, gradient and update temporaries, x2 for the linearized model in 'params' mode),
    plus the one-off N x params of the cross kernel; and the seed chunk that fits the device.
    ``input_shape``: the training inputs' shape (N, ...), from the dataset itself."""
    from studylib import devices, models

    n_params = models.count_params(models.build(cfg.model, width), input_shape)
    item = 8 if cfg.dtype == "float64" else 4
    per_seed = n_params * item * (4 if cfg.lin_mode == "function" else 7)
    fixed = cfg.data.n_train * n_params * item
    return {"width": width, "params": n_params, "bytes_per_seed": per_seed, "fixed_bytes": fixed,
            "seeds_per_chunk": devices.seeds_per_chunk(per_seed, cfg.seeds, fixed_bytes=fixed)}




def run_cell(cfg: CompareConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    """One width: its seeds in chunks that fit the device memory (:func:`memory_plan`), joined."""
    w = cell.spec["width"]
    plan = memory_plan(cfg, w, ctx.dataset.x_train.shape)
    seed_ids = runner.seed_list(cfg)
    chunk = plan["seeds_per_chunk"]
    if chunk < cfg.seeds:
        ctx.log(f"width {w}: {plan['params']:,} parameters, ~{plan['bytes_per_seed'] / 2**20:.0f} MiB per seed: "
                f"vmapping {chunk} seeds at a time")
    done = [0]  # seed-steps trained so far
    # The first report comes after compilation: the modelled set-up counts as done then.
    setup = 1.0 - training_seconds(cfg, w) / cell.cost

    def chunk_progress(n_seeds: int) -> Callable[[int], None]:
        def update(k: int) -> None:
            done[0] += k * n_seeds
            progress(setup + (1.0 - setup) * done[0] / (cfg.steps * cfg.seeds))
        return update

    chunks = [seed_ids[i:i + chunk] for i in range(0, cfg.seeds, chunk)]
    return concat_seed_chunks([run_width(cfg, w, ctx.dataset, seeds=ids, log=ctx.log, progress=chunk_progress(len(ids)))
                               for ids in chunks])


def notes(cfg: CompareConfig, cell: Cell, res: dict) -> list[str]:
    """Divergence notes of one width (the diverged values are kept as NaN)."""
    out = []
    for model in ("net", "lin"):
        for s, step in enumerate(np.atleast_1d(res[f"diverged_{model}_step"])):
            if step >= 0:
                out.append(f"warning: width {cell.spec['width']}, seed {cfg.first_seed + s}: {model} diverged "
                           f"(non-finite or exploding outputs) by step {step}; kept as NaN")
    return out


def prepare(cfg: CompareConfig, dataset, log) -> None:
    """Nothing is shared between widths."""
    return None


def plan(cfg: CompareConfig) -> str:
    """Devices, parameters and memory per seed of each width (``--plan``)."""
    from studylib import data as D
    from studylib import devices

    shape = D.load(cfg.data).x_train.shape
    lines = [devices.plan_header()]
    for w in cfg.widths:
        p = memory_plan(cfg, w, shape)
        lines.append(f"width {w:>6}: {p['params']:>12,} parameters, {p['bytes_per_seed'] / 2**20:>8.1f} MiB "
                     f"per seed (+{p['fixed_bytes'] / 2**20:.0f} MiB once), {p['seeds_per_chunk']} of {cfg.seeds} "
                     "seeds at a time")
    return "\n".join(lines)
