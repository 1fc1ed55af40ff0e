"""The second-order (quadratic) Taylor model of a network, trained by the network's own GD.

``quad``: f_quad(theta) = f(theta_0) + J_0 (theta - theta_0) + 1/2 (theta - theta_0)^T H_0 (theta - theta_0),
``nt.taylor_expand(apply_fn, theta_0, degree=2)`` (evaluated with nested jvps; H_0, the Hessian of
the outputs in the parameters, is never formed). It is the next term after the linearization
(Lee et al. 2019) in the expansion around initialisation; Bai & Lee 2020 (arXiv 1910.01619) study
it as a model in its own right, and Dyer & Gur-Ari 2019 / Huang & Yau 2019 give the O(1/n) correction
to the linearized dynamics of which the quadratic term is the leading source (docs/controls.md
states what each paper claims).

Training is :func:`studylib.training.gd_steps` -- the trainer of the network and of the
linearization: full-batch GD on L = 1/2 mean((f - y)^2) over the N x k training outputs (NT's
convention), time = lr * steps -- vmapped over seeds and jitted as one loop (``lax.scan`` over the
checkpoints, a ``fori_loop`` of GD steps between them). A quadratic model can diverge where the
network does not (its loss is a quartic in theta, unbounded curvature far from theta_0): the first
checkpoint whose training outputs are non-finite or more than ``divergence_scale`` x (max|y| + 1)
from the targets is reported, training of that seed stops there, and its outputs are NaN from it on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from studylib import metrics, training

#: The divergence rule of every study (studylib.metrics).
DIVERGENCE_SCALE = metrics.DIVERGENCE_SCALE


def taylor2_model(apply_fn: Callable) -> training.ModelFn:
    """``nt.taylor_expand(apply_fn, theta_0, 2)`` as a trainer model: ``aux`` = theta_0 (the reference
    form; NT evaluates f(theta_0), the first-order and the second-order term in separate passes)."""
    from studylib.nt import nt

    return lambda params, params0, x: nt.taylor_expand(apply_fn, params0, 2)(params, x)


def quadratic_model(apply_fn: Callable) -> training.ModelFn:
    """The same quadratic model as :func:`taylor2_model` from one nested jvp: with d = theta - theta_0,
    ``jvp(p -> jvp(f, p, d), theta_0, d)`` returns (f(theta_0), J_0 d) as primals and (J_0 d, d^T H_0 d)
    as tangents, so f_quad = f(theta_0) + J_0 d + 1/2 d^T H_0 d in one pass (tests: equal to
    ``nt.taylor_expand`` and to an explicit Hessian to rounding). ``aux`` = theta_0."""

    def model(params, params0, x):
        d = jax.tree_util.tree_map(jnp.subtract, params, params0)
        f = lambda p: apply_fn(p, x)  # noqa: E731
        (f0, jd), (_, dhd) = jax.jvp(lambda p: jax.jvp(f, (p,), (d,)), (params0,), (d,))
        return f0 + jd + 0.5 * dhd

    return model


def _run_one(model_fn: training.ModelFn, p0, x_train, y_train, x_test, lr, increments, limit):
    """One seed: (f_train (T, N, k), f_test (T, M, k), diverged index (-1: never)).

    ``increments[j]`` GD steps lead from checkpoint j-1 to checkpoint j (increments[0] is usually 0);
    once the training outputs of a checkpoint are bad, no further steps are taken."""

    def body(carry, n):
        params, bad_at, j = carry
        n = jnp.where(bad_at >= 0, 0, n)
        params = training.gd_steps(model_fn, params, p0, x_train, y_train, lr, n)
        f_train = model_fn(params, p0, x_train)
        f_test = model_fn(params, p0, x_test)
        bad = ~jnp.all(jnp.isfinite(f_train)) | (jnp.max(jnp.abs(f_train - y_train)) > limit)
        bad_at = jnp.where((bad_at < 0) & bad, j, bad_at)
        return (params, bad_at, j + 1), (f_train, f_test)

    (_, bad_at, _), (f_train, f_test) = lax.scan(body, (p0, jnp.asarray(-1), jnp.asarray(0)), increments)
    return f_train, f_test, bad_at


def make_quad_trainer(apply_fn: Callable, *, form: str = "fused") -> Callable:
    """``run(p0, x_train, y_train, x_test, lr, increments, limit) -> (f_train, f_test, bad_index)``
    vmapped over the leading (seed) axis of ``p0`` and jitted once (outputs (S, T, ...), (S,)).
    ``form``: 'fused' (:func:`quadratic_model`) or 'taylor' (:func:`taylor2_model`, NT's own)."""
    model_fn = {"fused": quadratic_model, "taylor": taylor2_model}[form](apply_fn)
    one = lambda p0, xt, yt, xs, lr, inc, lim: _run_one(model_fn, p0, xt, yt, xs, lr, inc, lim)  # noqa: E731
    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None, None, None)))


def train_quad(apply_fn: Callable, p0: Any, x_train, y_train, x_test, *, learning_rate: float, steps,
               divergence_scale: float = DIVERGENCE_SCALE, trainer: Callable | None = None) -> dict[str, np.ndarray]:
    """Train the quadratic model of every seed from its own theta_0 and record it at ``steps``.

    ``p0``: parameters with a leading seed axis S; ``x_train`` (N, d), ``y_train`` (N, k),
    ``x_test`` (M, d) in the dtype to compute in; ``steps``: increasing checkpoint steps (0 may
    be first). Returns float64 arrays ``f_train`` (S, T, N, k) and ``f_test`` (S, T, M, k), NaN from
    the checkpoint of divergence on, and ``diverged_step`` (S,) (the checkpoint's step; -1: none).
    ``trainer``: a :func:`make_quad_trainer` result to reuse its compilation.
    """
    steps = np.asarray(steps, np.int64)
    if steps.ndim != 1 or np.any(np.diff(steps) < 0) or (steps.size and steps[0] < 0):
        raise ValueError(f"steps: expected increasing non-negative checkpoint steps, got {steps}")
    run = trainer or make_quad_trainer(apply_fn)
    f_train, f_test, bad = run(*_quad_args(p0, x_train, y_train, x_test, learning_rate, steps, divergence_scale))
    f_train, f_test, bad = (np.array(f_train, np.float64), np.array(f_test, np.float64), np.asarray(bad))
    later = np.arange(len(steps))[None, :] >= np.where(bad >= 0, bad, len(steps))[:, None]  # (S, T)
    f_train[later] = np.nan
    f_test[later] = np.nan
    return {"f_train": f_train, "f_test": f_test, "diverged_step": np.where(bad >= 0, steps[np.maximum(bad, 0)], -1)}


def _quad_args(p0, x_train, y_train, x_test, learning_rate: float, steps: np.ndarray, divergence_scale: float):
    """The arguments of a :func:`make_quad_trainer` program for :func:`train_quad`."""
    increments = jnp.asarray(np.diff(steps, prepend=0), jnp.int32)
    limit = divergence_scale * (float(np.max(np.abs(np.asarray(y_train)))) + 1.0)
    dtype = jnp.asarray(x_train).dtype
    return (p0, x_train, y_train, x_test, jnp.asarray(learning_rate, dtype), increments, jnp.asarray(limit, dtype))


def precompile_quad(trainer: Callable, p0: Any, x_train, y_train, x_test, n_checkpoints: int) -> None:
    """Compile, without running, ``trainer``'s (:func:`make_quad_trainer`) program for the arguments
    :func:`train_quad` will pass it with ``n_checkpoints`` checkpoints (rate, steps and limit are traced),
    into the trainer's jit cache: a later ``train_quad(..., trainer=trainer)`` finds it compiled."""
    args = _quad_args(p0, x_train, y_train, x_test, 0.0, np.zeros(n_checkpoints, np.int64), DIVERGENCE_SCALE)
    trainer.lower(*args).compile()
