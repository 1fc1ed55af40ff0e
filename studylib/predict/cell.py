"""One cell of the prediction study: every seed of one width, at initialisation only (JAX is imported
inside the functions, so that importing this module stays cheap).

Nothing is trained. Per seed: the analytic NTK fixes the learning rate (``lr_fraction`` x
2 N k / lambda_max(Theta), :func:`studylib.kernels.critical_learning_rate`); the t = 0 expansion
(K_0, T, D of :mod:`studylib.perturb`) is computed on the training inputs and ``predict_rows`` test
inputs, by per-output features for fc / erf_fc nets on flat inputs (:func:`studylib.perturb.expansion_mlp`,
O(N k) passes) and by autodiff for any other network (:func:`studylib.perturb.expansion`, O((N k)^2));
the first-order recursion then gives delta f = f_net - f_lin at the checkpoints of the GD run
(:func:`studylib.perturb.predict`), whose RMS over the evaluated test outputs relative to RMS(y_train)
is the predicted gap (regimes' normalisation). The cost of one full-batch gradient of the loss (what
each GD step of training would cost, one evaluation, no update) is measured beside it.

Centred runs (``cfg.centred``, :mod:`studylib.centring`; Lee et al. 2020, arXiv 2007.15801) predict the
gap of g(theta) = f(theta) - f(theta_0) against its linearization J_0 (theta - theta_0). g has f's
Jacobian and Hessian, so K_0, T and D of the expansion are unchanged; what changes is where the
linearized run starts and what it fits: g_lin starts from 0 and fits Y, so its residual is
r^lin_s = K_0 c_s - Y instead of f_0(X) + K_0 c_s - Y (the uncentred one with targets Y + f_0(X): GD of g
on Y is GD of f on Y + f_0(X), the same theta_t). The recursion for delta f = g_net - g_lin
(:mod:`studylib.perturb`, delta f_0 = 0) is driven by r^lin_s and Delta K_s = sum_i c_{s,i} D[i], so the
centred prediction is the same recursion with f_0 set to 0 in the expansion (:func:`centred_expansion`);
delta f = g_net - g_lin = f_net - f_lin of the network trained on Y + f_0(X). The stalled-mode gap
likewise starts from r_0 = -Y.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from studylib import data as D
from studylib.predict.config import PredictConfig, fast_route
from studylib.runner import Cell, Context


def expansion_fn(cfg: PredictConfig, net, width: int, in_dim: int, k: int) -> tuple[Callable, str]:
    """``expand(params, x_train, x_eval) -> Expansion`` of one seed, and the route's name: 'fc features'
    (:func:`studylib.perturb.expansion_mlp`) or 'autodiff' (:func:`studylib.perturb.expansion`)."""
    from studylib import perturb, sgd

    if fast_route(cfg):
        mlp = sgd.fast_mlp(cfg.model, width, in_dim=in_dim, out_dim=k)
        return (lambda p, x, xe: perturb.expansion_mlp(mlp, sgd.dense_params(p), x, xe)), "fc features"
    return (lambda p, x, xe: perturb.expansion(net.apply_fn, p, x, xe)), "autodiff"


def centred_expansion(exp):
    """The expansion of g = f - f(theta_0) from that of f: the same K_0, T, D (g has f's derivatives) and
    g(theta_0) = 0 on every evaluated row (module docstring; any leading seed axis kept)."""
    import jax.numpy as jnp

    return exp._replace(f0=jnp.zeros_like(exp.f0))


def timed_expansion(expand: Callable, params0, x_train, x_eval) -> tuple[Any, dict[str, float]]:
    """The expansion of every seed (vmapped, one jit) and its seconds: compilation and run apart."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(expand, in_axes=(0, None, None))).lower(params0, x_train, x_eval).compile()
    t1 = time.perf_counter()
    exp = jax.block_until_ready(compiled(params0, x_train, x_eval))
    return exp, {"compile": t1 - t0, "expansion": time.perf_counter() - t1}


def gradient_seconds(apply_fn, params0, x_train, y_train, *, repeats: int = 5) -> float:
    """Seconds of one full-batch gradient of 1/2 mean((f - y)^2) for all seeds (vmapped, compiled
    first, fastest of ``repeats``: other jobs on the machine only slow it down): the cost of one GD
    step of the training this study avoids (a lower bound: the update is not counted). The gradient
    is evaluated, never applied."""
    import jax
    import jax.numpy as jnp

    grad = jax.jit(jax.vmap(jax.grad(lambda p: 0.5 * jnp.mean((apply_fn(p, x_train) - y_train) ** 2))))
    jax.block_until_ready(grad(params0))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(grad(params0))
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def predicted_gaps(delta: np.ndarray, n_rows: int, y_scale: float, diverged: np.ndarray) -> dict[str, np.ndarray]:
    """From delta f (S, T, P k) with the N k training rows first: the predicted gap RMS over the
    evaluated test rows (the training rows when there are none) and over the training rows, relative
    to ``y_scale``, (S, T) each; NaN for seeds whose linearization diverges (``diverged`` (S,))."""
    from studylib import perturb

    test = delta[..., n_rows:] if delta.shape[-1] > n_rows else delta[..., :n_rows]
    out = {"gap_predicted": perturb.rms(test) / y_scale,
           "gap_predicted_train": perturb.rms(delta[..., :n_rows]) / y_scale}
    return {k: np.where(diverged[:, None], np.nan, v) for k, v in out.items()}


def stalled_gaps(exp, y_train: np.ndarray, n_rows: int, *, lr: float, steps: int, y_scale: float) -> np.ndarray:
    """(S,) the stalled-mode gap of every seed from theta_0 (:func:`studylib.modes.stalled_gap`: the
    linearization's motion in the slow modes of K_0, which a ReLU net does not make; docs/regimes.md),
    from the expansion's K_0 and f_0 on the N k training outputs."""
    from studylib import modes

    lam, v = modes.eig_modes(np.asarray(exp.k0, np.float64)[:, :n_rows, :])
    r0 = np.asarray(exp.f0, np.float64)[:, :n_rows] - np.asarray(y_train, np.float64).reshape(-1)
    return modes.stalled_gap(modes.project(r0, v), lam, learning_rate=lr, steps=steps, y_scale=y_scale)


def run_cell(cfg: PredictConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    """Predict the gap of every seed at one width from its initialisation; per-seed arrays (S, ...)."""
    import jax
    import jax.numpy as jnp

    from studylib import kernels, models, perturb, runner, training

    width = int(cell.spec["width"])
    data = ctx.dataset
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    k = int(data.y_train.shape[1])
    n_rows = data.x_train.shape[0] * k  # flat training outputs, row n k + i
    net = models.build(cfg.model, width, out_dim=k)
    x_train = jnp.asarray(data.x_train, dtype)
    y_train = jnp.asarray(data.y_train, dtype)
    rows = D.prediction_rows(np.asarray(data.regions["interp"], bool), cfg.predict_rows)
    x_eval = jnp.asarray(data.x_test[rows], dtype)
    params0 = training.init_params(net.init_fn, runner.seed_list(cfg), x_train.shape, dtype=cfg.dtype)
    n_params = int(sum(a[0].size for a in jax.tree_util.tree_leaves(params0)))

    theta = np.asarray(kernels.analytic(net.kernel_fn, data.x_train, None), np.float64)  # as study.regimes
    lr_critical_inf = float(kernels.critical_learning_rate(theta, outputs=k))
    lr = cfg.lr_fraction * lr_critical_inf
    steps = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    progress(0.05)

    expand, route = expansion_fn(cfg, net, width, int(np.prod(x_train.shape[1:])), k)
    exp, seconds = timed_expansion(expand, params0, x_train, x_eval)
    if cfg.centred:  # g = f - f(theta_0): the linearized run starts from 0 and fits Y (module docstring)
        exp = centred_expansion(exp)
    progress(0.7)
    t0 = time.perf_counter()
    delta, f_lin = perturb.predict(exp, data.y_train, learning_rate=lr, checkpoints=steps)  # (S, T, P k)
    seconds["recursion"] = time.perf_counter() - t0
    progress(0.9)
    seconds["gradient"] = gradient_seconds(net.apply_fn, params0, x_train, y_train)

    k0_train = np.asarray(exp.k0, np.float64)[:, :n_rows, :]
    lam = np.linalg.eigvalsh(0.5 * (k0_train + np.swapaxes(k0_train, -1, -2)))
    lr_critical_emp = kernels.critical_rate(lam[:, -1], n_rows)  # (S,): 2 N k / lambda_max(K_0)
    diverged = lr > lr_critical_emp  # the linearization itself diverges: no first-order statement
    y_scale = float(np.sqrt(np.mean(np.square(data.y_train))))
    curves = predicted_gaps(delta, n_rows, y_scale, diverged)
    stalled = stalled_gaps(exp, data.y_train, n_rows, lr=lr, steps=int(steps[-1]), y_scale=y_scale)
    return {
        "width": width, "centred": cfg.centred, "steps": steps, "learning_rate": lr, "lr_critical_inf": lr_critical_inf,
        "lr_critical_emp": lr_critical_emp, "diverged_lin": diverged, "outputs": k, "n_params": n_params,
        "route": route, "y_scale": y_scale, "predict_rows": rows, "curves": curves,
        "finals": {name: c[:, -1] for name, c in curves.items()} | {"gap_stalled": stalled},
        "delta_final": delta[:, -1], "f_lin_final": f_lin[:, -1],
        "seconds_compile": seconds["compile"], "seconds_expansion": seconds["expansion"],
        "seconds_recursion": seconds["recursion"], "seconds_gradient": seconds["gradient"],
    }


#: Parameter-sized buffers per seed: theta_0, and the expansion's and the gradient's temporaries.
BUFFERS_PER_SEED = 4


def memory_plan(cfg: PredictConfig, width: int, input_shape: tuple[int, ...], outputs: int) -> dict[str, Any]:
    """Parameters P at ``width`` for inputs ``input_shape`` (N, ...) and ``outputs`` = k, the estimated
    device bytes of one seed (:data:`BUFFERS_PER_SEED` x P numbers) and of the expansion tensors of all
    seeds (:func:`studylib.predict.config.modelled_costs`), and whether one seed fits the device."""
    from studylib import devices, models
    from studylib.predict.config import modelled_costs

    n_params = models.count_params(models.build(cfg.model, width, out_dim=outputs), tuple(input_shape))
    per_seed = BUFFERS_PER_SEED * n_params * (8 if cfg.dtype == "float64" else 4)
    tensors = modelled_costs(cfg)["expansion_bytes"]
    return {"width": width, "params": n_params, "bytes_per_seed": per_seed, "expansion_bytes": tensors,
            "fits": devices.fits(per_seed + tensors / cfg.seeds)}


def plan_line(p: dict) -> str:
    """One width of :func:`memory_plan` in words (``--plan`` and the refusal of a width that does not fit)."""
    return (f"width {p['width']:>6}: {p['params']:>12,} parameters, {p['bytes_per_seed'] / 2**20:>8.1f} MiB per seed "
            f"(+{p['expansion_bytes'] / 2**20:.0f} MiB of expansion tensors, all seeds)")


def check_memory(cfg: PredictConfig, input_shape: tuple[int, ...], outputs: int) -> None:
    """One ConfigError line, before anything is allocated, for the first width whose single seed does not
    fit one device's usable memory (:func:`studylib.devices.check_fits`; ``--max-memory`` caps it)."""
    from studylib import devices

    for w in cfg.widths:
        p = memory_plan(cfg, w, input_shape, outputs)
        devices.check_fits(f"width {w}", p["bytes_per_seed"] + p["expansion_bytes"] / cfg.seeds,
                           " ".join(plan_line(p).split()))


def plan(cfg: PredictConfig) -> str:
    """Devices, parameters and memory of each width (``--plan``)."""
    from studylib import devices

    shape, k = D.input_shape(cfg.data, cfg.model), D.n_outputs(cfg.data)
    lines = [devices.plan_header()]
    for w in cfg.widths:
        p = memory_plan(cfg, w, shape, k)
        lines.append(plan_line(p))
        if not p["fits"]:
            lines.append(f"warning: width {w} needs more than the {devices.memory_bytes() / 2**30:.1f} GiB of "
                         f"{devices.memory_source()} for one seed: a run refuses it")
    return "\n".join(lines)


def prepare(cfg: PredictConfig, dataset, log) -> dict:
    """Before anything is computed: a width that cannot fit is refused (:func:`check_memory`), and the
    network is described by what it is (:func:`studylib.models.describe` at the narrowest width: a user
    builder by its name, stax layers and parameter count). Nothing else is shared between widths (each
    builds and compiles its own expansion)."""
    from studylib import models

    check_memory(cfg, dataset.x_train.shape, dataset.y_train.shape[1])
    return {"network": models.describe(cfg.model, cfg.widths[0], dataset.x_train.shape, dataset.y_train.shape[1])}


def notes(cfg: PredictConfig, cell: Cell, res: dict) -> list[str]:
    """A note per width whose linearization diverges on some seed (lr above 2Nk/lambda_max(K_0): those
    seeds are NaN) or whose predicted gap is of order one (the first-order term cannot describe it)."""
    out = []
    w = cell.spec["width"]
    if np.any(res["diverged_lin"]):
        out.append(f"note: width {w}: seeds {np.flatnonzero(res['diverged_lin']).tolist()} have lr above their "
                   "own critical rate 2Nk/lambda_max(K_0): their linearization diverges; prediction NaN")
    gap = res["finals"]["gap_predicted"]
    if np.any(np.isfinite(gap) & (gap >= 1.0)):
        out.append(f"note: width {w}: predicted gap >= 1 on seeds {np.flatnonzero(gap >= 1.0).tolist()}: "
                   "outside the first-order regime (the prediction is not valid there)")
    return out
