"""Full-batch gradient descent, jitted and vmapped over seeds.

Loss convention (NT's): L(theta) = 1/2 mean((f(X; theta) - Y)^2) over the N x k
training outputs; one step is theta <- theta - lr grad L. Time = lr * steps.

A model here is ``model_fn(params, aux, x)``: ``aux`` carries per-seed data
that is not trained (for the linearized model, theta_0). The same trainer trains
the network (:func:`network_model`) and its linearization (:func:`linearized_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ModelFn = Callable[[Any, Any, jnp.ndarray], jnp.ndarray]


def network_model(apply_fn: Callable) -> ModelFn:
    """The finite network itself; ``aux`` is ignored."""
    return lambda params, aux, x: apply_fn(params, x)


def linearized_model(apply_fn: Callable) -> ModelFn:
    """``nt.linearize(apply_fn, theta_0)``: f(theta_0) + J(theta_0)(theta - theta_0); ``aux`` = theta_0."""
    from studylib.nt import nt

    return lambda params, params0, x: nt.linearize(apply_fn, params0)(params, x)


def half_mse(f: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """1/2 mean((f - y)^2) over all entries."""
    return 0.5 * jnp.mean((f - y) ** 2)


def gd_steps(model_fn: ModelFn, params, aux, x, y, learning_rate, n_steps):
    """``n_steps`` GD steps on :func:`half_mse`; ``n_steps`` may be traced (one compile for all)."""
    grad_fn = jax.grad(lambda p: half_mse(model_fn(p, aux, x), y))

    def body(_, p):
        g = grad_fn(p)
        return jax.tree_util.tree_map(lambda a, b: a - learning_rate * b, p, g)

    return lax.fori_loop(0, n_steps, body, params)


def make_trainer(model_fn: ModelFn) -> Callable:
    """``run(params, aux, x, y, learning_rate, n_steps) -> params`` vmapped over the leading
    (seed) axis of ``params`` and ``aux``; jitted once, the params buffer is donated."""
    batched = jax.vmap(lambda p, a, x, y, lr, n: gd_steps(model_fn, p, a, x, y, lr, n),
                       in_axes=(0, 0, None, None, None, None))
    return jax.jit(batched, donate_argnums=0)


def checkpoint_steps(steps: int, n_checkpoints: int) -> np.ndarray:
    """Log-spaced distinct integer steps in [0, steps], always with 0, 1 and ``steps``."""
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    grid = np.unique(np.round(np.geomspace(1, steps, max(n_checkpoints - 1, 2))).astype(np.int64))
    return np.concatenate([[0], grid])


def init_params(init_fn: Callable, seeds, input_shape: tuple[int, ...], dtype: str | None = None):
    """Parameters for each seed (PRNGKey(seed)), stacked on a leading axis.

    ``dtype='float32'`` draws in float32 whatever the global x64 flag says, so a float32 run
    starts from the same parameters in every process; ``'float64'`` draws in float64 (needs
    x64 on); None uses JAX's current default.
    """
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    draw = lambda: jax.vmap(lambda k: init_fn(k, input_shape)[1])(keys)  # noqa: E731
    if dtype is None:
        return draw()
    with x64_mode(dtype == "float64"):
        return draw()


def x64_mode(on: bool):
    """A context manager with JAX's 64-bit mode on or off: ``jax.enable_x64(on)`` on JAX >= 0.6
    (``jax.experimental.enable_x64``/``disable_x64`` are gone there), those two before."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(on)
    from jax.experimental import disable_x64, enable_x64

    return enable_x64() if on else disable_x64()
