"""Full-batch gradient descent, jitted and vmapped over seeds.

Loss convention (NT's): L(theta) = 1/2 mean((f(X; theta) - Y)^2) over the N x k
training outputs; one step is theta <- theta - lr grad L. Time = lr * steps.

A model here is ``model_fn(params, aux, x)``: ``aux`` carries per-seed data
that is not trained (for the linearized model, theta_0). The same trainer trains
the network (:func:`network_model`) and its linearization (:func:`linearized_model`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
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
    with prefix_normals():
        if dtype is None:
            return draw()
        with x64_mode(dtype == "float64"):
            return draw()


#: The shortest stream :func:`prefix_normal` draws (elements); longer ones are powers of two.
PREFIX_MIN_LENGTH = 1 << 16
#: Shapes of more entries are drawn by ``jax.random.normal`` itself: a stream up to twice their size would cost
#: memory (a 4096 x 4096 layer: 64 MB a seed in float32), and their compile is small beside their run.
PREFIX_MAX_ENTRIES = 1 << 22


@functools.cache
def _normal_stream(length: int, dtype) -> Callable:
    """``key -> jax.random.normal(key, (length,), dtype)``, jitted (one compile per length, dtype and batch)."""
    normal = jax.random.normal
    return jax.jit(lambda key: normal(key, (length,), dtype))


def prefix_normal(key, shape=(), dtype=None, **kwargs):
    """``jax.random.normal(key, shape, dtype)``, bit for bit, drawn as the first prod(shape) entries of a
    longer stream ``normal(key, (L,), dtype)`` with L a power of two (at least :data:`PREFIX_MIN_LENGTH`).

    Why: eagerly, every new shape is a new XLA program of its own (threefry and the normal transform:
    ~0.3 s of CPU to compile), and a study draws theta_0 of every width (the default compare run compiled
    25 of them, ~7 s of CPU); streams of a few lengths serve every shape (3 programs for that run).
    Why it is the same: with partitionable threefry (``jax_threefry_partitionable``, JAX's default since
    0.5) the bits of an entry depend only on the key and the entry's flat index, and the normal transform is
    elementwise, so a shape's draw is a prefix of any longer one's (tests/test_training.py checks every
    shape a study draws). Anything else (other key types or PRNG implementations, non-partitionable
    threefry, other dtypes than float32/float64, extra keyword arguments, shapes of more than
    :data:`PREFIX_MAX_ENTRIES` entries) is passed to ``jax.random.normal``."""
    import math

    resolved = _prefix_dtype(key, dtype)
    n = math.prod(int(d) for d in shape) if isinstance(shape, tuple | list) else None
    if kwargs or resolved is None or n is None or n > PREFIX_MAX_ENTRIES:
        return jax.random.normal(key, shape, dtype, **kwargs)
    shape = tuple(int(d) for d in shape)
    length = max(PREFIX_MIN_LENGTH, 1 << max(n - 1, 0).bit_length())
    return _normal_stream(length, resolved)(key)[:n].reshape(shape)


def _prefix_dtype(key, dtype):
    """The dtype ``jax.random.normal`` would draw in, where :func:`prefix_normal` applies; else None."""
    if not (jax.config.jax_threefry_partitionable and jax.config.jax_default_prng_impl == "threefry2x32"):
        return None
    key_dtype = getattr(key, "dtype", None)
    if key_dtype is None or jax.dtypes.issubdtype(key_dtype, jax.dtypes.prng_key) or key_dtype != jnp.uint32 \
            or tuple(key.shape) != (2,):
        return None  # a raw threefry key only (typed keys go to jax.random.normal)
    try:
        resolved = jax.dtypes.canonicalize_dtype(float if dtype is None else dtype)
    except TypeError:
        return None
    return resolved if resolved in (jnp.dtype("float32"), jnp.dtype("float64")) else None


class _PrefixRandom:
    """``jax.random`` with :func:`prefix_normal` for ``normal``."""

    normal = staticmethod(prefix_normal)

    def __getattr__(self, name: str):
        return getattr(jax.random, name)


_PREFIX = {"users": 0, "lock": threading.Lock()}


@contextlib.contextmanager
def prefix_normals():
    """While inside, NT's dense layers (``neural_tangents._src.stax.linear``, which looks up
    ``random.normal`` at each call) draw their weights by :func:`prefix_normal`: the same numbers, from
    fewer compiled programs. Re-entrant and shared by threads (the widths started ahead); without that NT
    module it does nothing."""
    try:
        from neural_tangents._src.stax import linear
    except ImportError:
        linear = None
    current = getattr(linear, "random", None)
    if current is not jax.random and not isinstance(current, _PrefixRandom):  # not NT 0.6's layout: leave it
        yield
        return
    with _PREFIX["lock"]:
        if _PREFIX["users"] == 0:
            linear.random = _PrefixRandom()
        _PREFIX["users"] += 1
    try:
        yield
    finally:
        with _PREFIX["lock"]:
            _PREFIX["users"] -= 1
            if _PREFIX["users"] == 0:
                linear.random = jax.random


def x64_mode(on: bool):
    """A context manager with JAX's 64-bit mode on or off: ``jax.enable_x64(on)`` on JAX >= 0.6
    (``jax.experimental.enable_x64``/``disable_x64`` are gone there), those two before."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(on)
    from jax.experimental import disable_x64, enable_x64

    return enable_x64() if on else disable_x64()
