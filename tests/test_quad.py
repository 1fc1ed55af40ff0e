"""The quadratic model (studylib.quad) against an independent second-order expansion: the Jacobian
and Hessian of the flattened parameters (jax.jacobian / jax.hessian) and GD written out in NumPy
(float64); divergence is reported at the checkpoint where it happens and kept as NaN after."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from studylib import quad
from studylib.models import ModelConfig, build

N, M = 4, 3


@functools.lru_cache  # one net (one apply_fn) per activation, so the jitted programs below are shared
def _net(activation):
    return build(ModelConfig(depth=2, activation=activation), 6)


def _setup(activation, seeds=(0, 1)):
    net = _net(activation)
    keys = [jax.random.PRNGKey(s) for s in seeds]
    ps = [jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), net.init_fn(k, (N, 1))[1]) for k in keys]
    p0 = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ps)
    x = jnp.linspace(-1.0, 1.0, N, dtype=jnp.float64)[:, None]
    y = x**3
    x_test = jnp.array([[-2.0], [0.3], [1.7]], jnp.float64)
    return net, ps, p0, x, y, x_test


@functools.lru_cache  # one jitted program per net: every seed, order and test of the net reuses its compilation
def _value_jacobian_hessian(apply_fn):
    """``(p, x_all) -> (f, J, H)`` of the flattened parameters, jitted (one compilation, not one per eager op)."""

    @jax.jit
    def derivatives(p, x_all):
        flat, unravel = ravel_pytree(p)
        g = lambda th: apply_fn(unravel(th), x_all)[:, 0]  # noqa: E731
        return g(flat), jax.jacobian(g)(flat), jax.hessian(g)(flat)

    return derivatives


def _numpy_quad_gd(apply_fn, p, x, y, x_test, lr, steps, order=2):
    """GD on 1/2 mean((q - y)^2) for q(d) = f0 + J d + 1/2 d^T H d, from J and H formed explicitly
    (``order=1``: H = 0, the linearization)."""
    x_all = jnp.concatenate([x, x_test])
    f0, jac, hess = (np.asarray(a, np.float64) for a in _value_jacobian_hessian(apply_fn)(p, x_all))
    hess = hess * (order == 2)  # jac (N + M, P), hess (N + M, P, P)
    q = lambda d: f0 + jac @ d + 0.5 * np.einsum("npq,p,q->n", hess, d, d)  # noqa: E731
    yv = np.asarray(y, np.float64)[:, 0]
    d = np.zeros(jac.shape[1])
    out, t = [], 0
    for target in steps:
        while t < target:
            r = q(d)[:N] - yv
            d = d - lr * (r @ (jac[:N] + hess[:N] @ d)) / N
            t += 1
        out.append(q(d))
    return np.array(out)  # (T, N + M)


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_quad_equals_explicit_second_order_expansion(activation):
    net, ps, p0, x, y, x_test = _setup(activation)
    steps = np.array([0, 1, 3, 8, 20])
    res = quad.train_quad(net.apply_fn, p0, x, y, x_test, learning_rate=0.05, steps=steps)
    assert res["f_train"].shape == (2, 5, N, 1) and res["f_test"].shape == (2, 5, M, 1)
    np.testing.assert_array_equal(res["diverged_step"], [-1, -1])
    for s, p in enumerate(ps):
        ref = _numpy_quad_gd(net.apply_fn, p, x, y, x_test, 0.05, steps)
        got = np.concatenate([res["f_train"][s, :, :, 0], res["f_test"][s, :, :, 0]], axis=1)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-11 * scale)
        # It starts at the network's outputs and, trained, leaves the linearization by far more than rounding.
        assert np.abs(got[0] - np.asarray(net.apply_fn(p, jnp.concatenate([x, x_test]))[:, 0])).max() < 1e-12 * scale
        lin = _numpy_quad_gd(net.apply_fn, p, x, y, x_test, 0.05, steps, order=1)
        assert np.abs(got[-1] - lin[-1]).max() > 1e-6 * scale
    assert np.abs(np.diff(res["f_train"], axis=1)).max() > 1e-3


def test_quad_divergence_detected_and_kept_as_nan():
    net, ps, p0, x, y, x_test = _setup("erf")
    steps = np.array([0, 1, 2, 5, 10, 40, 100])
    res = quad.train_quad(net.apply_fn, p0, x, y, x_test, learning_rate=50.0, steps=steps)
    bad = res["diverged_step"]
    assert (bad > 0).all()
    for s in range(2):
        j = int(np.flatnonzero(steps == bad[s])[0])
        assert np.isnan(res["f_train"][s, j:]).all() and np.isnan(res["f_test"][s, j:]).all()
        assert np.isfinite(res["f_train"][s, :j]).all()
    # Before the divergence the values are the explicit expansion's.
    ref = _numpy_quad_gd(net.apply_fn, ps[0], x, y, x_test, 50.0, steps[:1 + 1])
    np.testing.assert_allclose(res["f_train"][0, :2, :, 0], ref[:, :N], rtol=1e-9)


def test_quad_rejects_decreasing_steps():
    net, _ps, p0, x, y, x_test = _setup("erf", seeds=(0,))
    with pytest.raises(ValueError, match="steps"):
        quad.train_quad(net.apply_fn, p0, x, y, x_test, learning_rate=0.1, steps=[0, 5, 3])


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_fused_form_equals_nt_taylor_expand(activation):
    """The one-pass nested jvp and NT's taylor_expand(degree=2) are the same function of theta."""
    net, ps, _p0, _x, _y, x_test = _setup(activation, seeds=(0,))
    leaves, tree = jax.tree_util.tree_flatten(ps[0])
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    moved = jax.tree_util.tree_unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape, a.dtype)
                                                for a, k in zip(leaves, keys, strict=True)])
    fused = quad.quadratic_model(net.apply_fn)(moved, ps[0], x_test)
    ref = quad.taylor2_model(net.apply_fn)(moved, ps[0], x_test)
    np.testing.assert_allclose(fused, ref, rtol=0, atol=1e-12 * float(jnp.abs(ref).max()))
    lin = net.apply_fn(ps[0], x_test) + jax.jvp(lambda p: net.apply_fn(p, x_test), (ps[0],),
                                                (jax.tree_util.tree_map(jnp.subtract, moved, ps[0]),))[1]
    assert float(jnp.abs(fused - lin).max()) > 1e-4  # the second-order term is there
