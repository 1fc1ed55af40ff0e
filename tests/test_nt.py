"""Every neural-tangents entry point the study uses, on the installed JAX (CI runs this file on the
newest JAX and on 0.5.3), against independent computations where a cheap one exists.

NT 0.6.5 imports names from old JAX places; :mod:`studylib.nt` supplies the missing ones from
JAX's current locations (none on 0.5.x) and never replaces what exists. The NT entry points it
repairs (implementations 3 and 0, max_learning_rate, traced gradient_descent_mse) are tested in
tests/test_nt_compat.py.
"""

from __future__ import annotations

import importlib.metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import kernels
from studylib.nt import SHIMS, apply_shims, nt, stax

JAX_MINOR = tuple(int(v) for v in jax.__version__.split(".")[:2])


@pytest.fixture(scope="module")
def net():
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(256, W_std=1.5, b_std=0.1), stax.Erf(),
                                               stax.Dense(1, W_std=1.5, b_std=0.1))
    x = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float64)[:, None]
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    return init_fn, apply_fn, kernel_fn, params, x


def test_shims_supply_only_what_is_missing():
    import jax.core

    assert apply_shims() == []  # idempotent: everything NT needs is there now
    if JAX_MINOR < (0, 6):
        assert not [s for s in SHIMS if s.startswith("jax.")]  # nothing was missing, nothing was replaced
    else:
        assert "jax.core.Jaxpr" in SHIMS and "jax.util" in SHIMS
    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive"):
        assert hasattr(jax.core, name)


def test_empirical_ntk_implementations_equal_the_jacobian_product(net):
    """Implementations 1 (Jacobian contraction), 2 (NTK-vector products) and 3 (structured
    derivatives, through studylib.nt's patches: docs/versions.md) against jax.jacobian's product."""
    _, apply_fn, _, params, x = net
    want = np.asarray(kernels.jacobian_ntk(apply_fn, x, x, params))
    for impl in (1, 2, 3):
        ntk = nt.empirical_ntk_fn(apply_fn, trace_axes=(), implementation=impl)
        got = np.asarray(jax.jit(ntk)(x, None, params))[..., 0, 0]  # jitted: 2 and 3 are slow op by op
        # float64 contractions of the same Jacobians: rounding ~1e-14 of the kernel's scale.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max(), err_msg=f"impl {impl}")


def test_linearize_and_taylor_expand(net):
    _, apply_fn, _, params, x = net
    moved = jax.tree_util.tree_map(lambda a: a + 1e-3 * jnp.ones_like(a), params)
    lin = nt.linearize(apply_fn, params)
    quad = nt.taylor_expand(apply_fn, params, 2)
    f0, f1 = apply_fn(params, x), apply_fn(moved, x)
    delta = jax.tree_util.tree_map(jnp.subtract, moved, params)
    _, jvp = jax.jvp(lambda p: apply_fn(p, x), (params,), (delta,))
    np.testing.assert_allclose(lin(moved, x), f0 + jvp, rtol=1e-12, atol=1e-12)
    # The second-order model is closer to the network than the first-order one (smooth Erf net).
    assert np.abs(quad(moved, x) - f1).max() < 0.1 * np.abs(lin(moved, x) - f1).max()


def test_predict_and_batch(net):
    _, apply_fn, kernel_fn, params, x = net
    y = jnp.sin(3 * x)
    k = kernel_fn(x, None, "ntk")
    predict = nt.predict.gradient_descent_mse(k, y, learning_rate=1.0)
    fx0 = apply_fn(params, x)
    fx_t, _ = predict(jnp.asarray([0.0, 1e6]), fx0, fx0, k)
    np.testing.assert_allclose(fx_t[0], fx0, atol=1e-12)
    np.testing.assert_allclose(fx_t[1], y, atol=1e-6 * float(jnp.abs(y).max()))  # t -> infinity interpolates
    ens = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=1.0)
    mean = ens(t=None, x_test=x, get="ntk", compute_cov=False)
    np.testing.assert_allclose(mean, y, atol=1e-6)
    batched = nt.batch(kernel_fn, batch_size=3)(x, None, "ntk")
    np.testing.assert_allclose(batched, k, rtol=1e-12)


def test_installed_versions_are_in_the_tested_range():
    """pyproject allows jax 0.5.3 ... the newest release tested here; neural-tangents is 0.6.5."""
    assert importlib.metadata.version("neural-tangents") == "0.6.5"
    assert (0, 5) <= JAX_MINOR <= (0, 10)
