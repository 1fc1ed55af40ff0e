"""One cell of the positive controls (JAX is imported inside the functions).

Lazy cell (Chizat, Oyallon & Bach 2019, arXiv 1812.07956): for every alpha and seed, the model
g_alpha(theta) = alpha (f(theta) - f(theta_0)) is trained by full-batch GD on L = 1/2 mean((g - y)^2)
(:func:`studylib.training.gd_steps`, the network's trainer) at rate lr / alpha^2. Its linearization
alpha J_0 (theta - theta_0) then moves in function space exactly as the alpha = 1 linearization
started from 0 does: g_lin,t = K_0(x, X) c_t with c_t the exact discrete-GD coefficients of K_0 and
f_0 = 0 -- the same for every alpha -- so any alpha-dependence of ||g_alpha - g_lin|| is the
nonlinearity of f seen at displacement ~ 1/alpha.

Closing cell: the network and its linearization (exact, in function space) trained as
``study.compare`` trains them, at the closing setting (``closing_*`` fields). Centred
(``cfg.centred``, :mod:`studylib.centring`; Lee et al. 2020, arXiv 2007.15801): the network trained and
measured is g(theta) = f(theta) - f(theta_0) (:func:`studylib.centring.centred_model`, aux = theta_0:
f's gradients, so the same kernel and critical rate) and its linearization J_0 (theta - theta_0) starts
from 0 (the closed form with f_0 = 0 and each seed's K_0). The lazy cells' model is centred whatever
``centre`` says.

μP and the richness knob (``--parameterization mup``, ``--gamma0``): ``models.build`` gives
:mod:`studylib.mup`'s gamma-model (NT's 'ntk' net with its output / gamma), whose analytic and empirical
kernels are the NTK net's / gamma^2, so :func:`learning_rate` gives the NTK net's rate x gamma^2 and the
linearizations are the gamma-model's own; the closing control is centred under ``--centre auto``; the gates
come from :func:`studylib.sgd.mlp` (readout / gamma, gates unchanged). Results record ``gamma``.

Both record, at every checkpoint, the fraction of activation gates (signs of the pre-activations
of each hidden layer) that differ from theta_0's (:mod:`studylib.gates`), on the training inputs
(and for the lazy cells on the test grid).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from studylib import metrics as M
from studylib import runner
from studylib.controls.config import ControlsConfig
from studylib.runner import Cell, Context


def gate_flip_fn(model_cfg, width: int, in_dim: int) -> Callable:
    """``flips(p0, p, x) -> (depth,)`` for stax parameters of the fc net: per hidden layer, the fraction
    of (input, unit) pre-activation signs that differ between theta_0 and theta (for ReLU: gates that
    switched), by :func:`studylib.gates.gate_flips` on the same net as an :class:`studylib.sgd.MLP`."""
    from studylib import gates, sgd

    mlp = sgd.mlp(model_cfg, width, in_dim=in_dim)
    return lambda p0, p, x: gates.gate_flips(mlp, sgd.dense_params(p0), sgd.dense_params(p), x)


def _kernels(net, p0, x_train, x_test):
    """Empirical NTK at init per seed: train Gram (S, N, N) and test x train (S, M, N), float64."""
    import jax
    from jax import lax

    from studylib import kernels

    ntk_fn = kernels.empirical_ntk_fn(net.apply_fn)
    k_tt = jax.jit(jax.vmap(lambda p: ntk_fn(x_train, None, p)))(p0)
    k_te = jax.jit(lambda ps: lax.map(lambda p: kernels.ntk_cross(net.apply_fn, x_test, x_train, p), ps))(p0)
    return np.asarray(k_tt, np.float64), np.asarray(k_te, np.float64)


def _train_checkpoints(trainer, measure, params, aux, lrs, x_train, y_train, x_test, steps, y64, progress):
    """Run ``trainer`` between checkpoints; returns per-checkpoint records stacked (M, T, ...) and the
    divergence step per member (-1: none). Diverged members' records are NaN from that step on."""
    records, bad, prev = [], np.full(len(lrs), -1), 0
    for t in steps:
        if t > prev:
            params = trainer(params, aux, x_train, y_train, lrs, int(t - prev))
            progress(int(t - prev))
        rec = {k: np.asarray(v, np.float64) for k, v in measure(params, aux, x_train, x_test).items()}
        bad[M.diverged(rec["f_train"], y64) & (bad < 0)] = t
        records.append(rec)
        prev = t
    rec = {k: np.stack([r[k] for r in records], axis=1) for k in records[0]}
    later = (bad[:, None] >= 0) & (np.asarray(steps)[None, :] >= bad[:, None])
    for v in rec.values():
        v[later] = np.nan
    return rec, bad


def learning_rate(cfg: ControlsConfig, theta: np.ndarray, k0_train: np.ndarray) -> float:
    """``lr_fraction`` x the smallest critical rate 2N/lambda_max of the analytic NTK and of every
    seed's empirical NTK at init: below every seed's own limit, so no linearization diverges (a
    positive control must not fail for that reason; ``study.compare`` uses the analytic one only)."""
    from studylib import kernels

    return cfg.lr_fraction * float(min(kernels.critical_learning_rate(theta),
                                       np.min(kernels.critical_learning_rate(k0_train))))


def _setup(cfg: ControlsConfig, model_cfg, width: int, data, seeds: list[int]) -> tuple:
    """What both controls start from: (dtype, net, x_train, y_train, x_test in the run's dtype, y (N, k)
    float64, checkpoint steps, theta_0 (seed axis first), empirical K_0 on train and test x train
    (float64, per seed), and the learning rate of :func:`learning_rate`)."""
    import jax.numpy as jnp

    from studylib import kernels, models, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    net = models.build(model_cfg, width)
    x_train, y_train, x_test = (jnp.asarray(a, dtype) for a in (data.x_train, data.y_train, data.x_test))
    y64 = np.asarray(data.y_train, np.float64)
    steps = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    theta = np.asarray(kernels.analytic(net.kernel_fn, x_train, None), np.float64)
    p0 = training.init_params(net.init_fn, seeds, x_train.shape, dtype=cfg.dtype)
    k_tt, k_te = _kernels(net, p0, x_train, x_test)
    return dtype, net, x_train, y_train, x_test, y64, steps, p0, k_tt, k_te, learning_rate(cfg, theta, k_tt)


def _member_trainer(model_fn):
    """GD (the network's trainer) vmapped over members with a learning rate each."""
    import jax

    from studylib import training

    run = jax.vmap(lambda p, a, x, y, lr, n: training.gd_steps(model_fn, p, a, x, y, lr, n),
                   in_axes=(0, 0, None, None, 0, None))
    return jax.jit(run)


def run_lazy(cfg: ControlsConfig, activation: str, width: int, data, seeds: list[int],
             progress: Callable[[int], Any]) -> dict[str, Any]:
    """All alphas x seeds of one (activation, width): curves (A, S, T[, L])."""
    import jax
    import jax.numpy as jnp

    from studylib import closed_form

    model_cfg = dataclasses.replace(cfg.model, activation=activation)
    dtype, net, x_train, y_train, x_test, y64, steps, p0, k_tt, k_te, lr = _setup(cfg, model_cfg, width, data, seeds)

    alphas = np.asarray(cfg.alphas, np.float64)
    n_a, n_s = len(alphas), len(seeds)
    tile = lambda t: jax.tree_util.tree_map(lambda a: jnp.tile(a, (n_a,) + (1,) * (a.ndim - 1)), t)  # noqa: E731
    p0_m = tile(p0)  # member m = a * S + s
    alpha_m = jnp.asarray(np.repeat(alphas, n_s), dtype)
    lrs = jnp.asarray(lr / np.repeat(alphas, n_s) ** 2, dtype)

    def g(params, aux, x):
        base, alpha = aux
        return alpha * (net.apply_fn(params, x) - net.apply_fn(base, x))

    flips = gate_flip_fn(model_cfg, width, x_train.shape[-1])

    def measure_one(p, aux, xt, xs):
        return {"f_train": g(p, aux, xt), "f_test": g(p, aux, xs), "flips_train": flips(aux[0], p, xt),
                "flips_test": flips(aux[0], p, xs),
                "dsq": sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree_util.tree_leaves(p),
                                                                 jax.tree_util.tree_leaves(aux[0]), strict=True))}

    measure = jax.jit(jax.vmap(measure_one, in_axes=(0, 0, None, None)))
    rec, bad = _train_checkpoints(_member_trainer(g), measure, jax.tree_util.tree_map(jnp.copy, p0_m),
                                  (p0_m, alpha_m), lrs, x_train, y_train, x_test, steps, y64,
                                  lambda k: progress(k * n_a))
    zeros_tr, zeros_te = np.zeros_like(y64), np.zeros((len(data.x_test), y64.shape[1]))
    lin = [closed_form.discrete(k_tt[s], k_te[s], y64, zeros_tr, zeros_te, learning_rate=lr, steps=steps)
           for s in range(n_s)]
    lin_train = np.stack([tr for tr, _ in lin])  # (S, T, N, k)
    lin_test = np.stack([te for _, te in lin])
    shape = lambda a: a.reshape((n_a, n_s, *a.shape[1:]))  # noqa: E731
    g_train, g_test = shape(rec["f_train"]), shape(rec["f_test"])
    n0_sq = sum(np.sum(np.asarray(leaf, np.float64) ** 2, axis=tuple(range(1, leaf.ndim)))
                for leaf in jax.tree_util.tree_leaves(p0))
    curves = {
        "gap": M.rmse(g_test, lin_test[None]),
        "gap_train": M.rmse(g_train, lin_train[None]),
        "gap_interp": M.rmse(g_test, lin_test[None], data.regions["interp"]) if "interp" in data.regions
        else M.rmse(g_test, lin_test[None]),
        "loss": 0.5 * np.mean((g_train - y64) ** 2, axis=(-2, -1)),
        "loss_lin": np.broadcast_to(0.5 * np.mean((lin_train - y64) ** 2, axis=(-2, -1))[None], (n_a, n_s, len(steps))),
        "rel_param_change": np.sqrt(shape(rec["dsq"]) / n0_sq[None, :, None]),
        "gate_flips_train": shape(rec["flips_train"]),
        "gate_flips_test": shape(rec["flips_test"]),
    }
    return {"control": "lazy", "activation": activation, "width": width, "alphas": alphas, "steps": steps,
            "learning_rate": lr, "gamma": model_cfg.gamma(width), "diverged_step": shape(bad), "curves": curves,
            "pred_test": g_test[..., 0], "pred_lin_test": lin_test[..., 0]}


def run_closing(cfg: ControlsConfig, width: int, seeds: list[int], progress: Callable[[int], Any]) -> dict[str, Any]:
    """Network vs linearization over one width at the closing setting: curves (S, T[, L]); centred
    (``cfg.centred``): g = f - f(theta_0) against J_0 (theta - theta_0), both exactly 0 at step 0."""
    import jax
    import jax.numpy as jnp

    from studylib import centring, closed_form, kernels, training
    from studylib import data as D

    data = D.load(closing_data(cfg))
    model_cfg = closing_model(cfg)
    dtype, net, x_train, y_train, x_test, y64, steps, p0, k_tt, k_te, lr = _setup(cfg, model_cfg, width, data, seeds)
    centred = cfg.centred
    model = training.network_model(net.apply_fn)
    model = centring.centred_model(model) if centred else model  # aux = theta_0 (the trainer's and measure's)
    f0_tr, f0_te = (centring.initial_outputs(np.asarray(jax.vmap(net.apply_fn, in_axes=(0, None))(p0, x), np.float64),
                                             centred) for x in (x_train, x_test))
    flips = gate_flip_fn(model_cfg, width, x_train.shape[-1])

    def measure_one(p, base, xt, xs):
        return {"f_train": model(p, base, xt), "f_test": model(p, base, xs), "flips_train": flips(base, p, xt)}

    measure = jax.jit(jax.vmap(measure_one, in_axes=(0, 0, None, None)))
    trainer = _member_trainer(model)
    lrs = jnp.full((len(seeds),), lr, dtype)
    rec, bad = _train_checkpoints(trainer, measure, jax.tree_util.tree_map(jnp.copy, p0), p0, lrs, x_train, y_train,
                                  x_test, steps, y64, progress)
    lin = [closed_form.discrete(k_tt[s], k_te[s], y64, f0_tr[s], f0_te[s], learning_rate=lr, steps=steps)
           for s in range(len(seeds))]
    lin_train, lin_test = np.stack([a for a, _ in lin]), np.stack([b for _, b in lin])
    curves = {
        "rmse_net_vs_lin": M.rmse(rec["f_test"], lin_test),
        "rmse_net_vs_lin_train": M.rmse(rec["f_train"], lin_train),
        "rmse_net_vs_lin_interp": M.rmse(rec["f_test"], lin_test, data.regions["interp"]),
        "loss_net": 0.5 * np.mean((rec["f_train"] - y64) ** 2, axis=(-2, -1)),
        "loss_lin": 0.5 * np.mean((lin_train - y64) ** 2, axis=(-2, -1)),
        "gate_flips_train": rec["flips_train"],
    }
    return {"control": "closing", "width": width, "centred": centred, "steps": steps, "learning_rate": lr,
            "gamma": model_cfg.gamma(width),
            "lr_critical_emp": kernels.critical_learning_rate(k_tt), "diverged_step": bad, "curves": curves,
            "pred_test": rec["f_test"][..., 0], "pred_lin_test": lin_test[..., 0]}


def closing_model(cfg: ControlsConfig):
    return dataclasses.replace(cfg.model, depth=cfg.closing_depth, b_std=cfg.closing_b_std)


def closing_data(cfg: ControlsConfig):
    return dataclasses.replace(cfg.data, train_range=cfg.closing_x_range, test_range=cfg.closing_test_range)


def run_cell(cfg: ControlsConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    seeds = runner.seed_list(cfg)
    spec = cell.spec
    n_members = cfg.seeds * (len(cfg.alphas) if spec["control"] == "lazy" else 1)
    done = [0]

    def step_progress(k: int) -> None:  # k member-steps of GD done
        done[0] += k * cfg.seeds
        progress(0.1 + 0.9 * done[0] / (cfg.steps * n_members))

    if spec["control"] == "lazy":
        return run_lazy(cfg, spec["activation"], spec["width"], ctx.dataset, seeds, step_progress)
    return run_closing(cfg, spec["width"], seeds, step_progress)


def notes(cfg: ControlsConfig, cell: Cell, res: dict) -> list[str]:
    """Divergence notes (the diverged values are kept as NaN)."""
    bad = np.asarray(res["diverged_step"])
    if not (bad >= 0).any():
        return []
    return [f"warning: {cell.label}: {int((bad >= 0).sum())} run(s) diverged (non-finite or exploding outputs); "
            "kept as NaN"]


def prepare(cfg: ControlsConfig, dataset, log) -> None:
    return None
