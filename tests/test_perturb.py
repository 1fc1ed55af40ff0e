"""The first-order gap prediction (studylib.perturb): its t = 0 tensors against an explicit Jacobian
and Hessian of a tiny net, its linearized trajectory against the closed form, and the recursion
against the quadratic Taylor model (nt.taylor_expand, degree 2) trained by GD: the error must fall
as the square of the curvature's scale (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from studylib import closed_form, kernels, perturb, sgd
from studylib.models import ModelConfig, fully_connected
from studylib.nt import nt

N = 5


def _net(activation, depth=2, width=7):
    cfg = ModelConfig(depth=depth, activation=activation)
    net = fully_connected(width, depth=depth, activation=activation, W_std=cfg.W_std, b_std=cfg.b_std)
    _, p0 = net.init_fn(jax.random.PRNGKey(3), (N, 1))
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p0)
    return cfg, net, p0


def _data():
    x = jnp.linspace(-1.5, 1.5, N, dtype=jnp.float64)[:, None]
    x_eval = jnp.linspace(-3.0, 3.0, 4, dtype=jnp.float64)[:, None]
    return x, x ** 3 / 2.0, x_eval


def _explicit(apply_fn, p0, x, x_eval):
    """K_0, T, D from the full Jacobian and Hessian of the flattened parameters (NumPy)."""
    flat, unravel = ravel_pytree(p0)
    x_all = jnp.concatenate([x, x_eval])
    g = lambda th: apply_fn(unravel(th), x_all)[:, 0]  # noqa: E731
    jac = np.asarray(jax.jacobian(g)(flat))  # (P, n)
    hess = np.asarray(jax.hessian(g)(flat))  # (P, n, n)
    v = jac[:N]
    t2 = np.einsum("in,pnm,jm->pij", v, hess, v)
    hv = np.einsum("pnm,im->pin", hess, v)  # H(x_p) v_i
    dk = np.einsum("pin,jn->pij", hv, v) + np.einsum("jin,pn->pij", hv[:N], jac)
    return np.asarray(g(flat)), jac @ v.T, t2, dk


@pytest.mark.parametrize("activation", [pytest.param("erf", marks=pytest.mark.slow), "relu"])  # erf ~12 s: CI -m slow
def test_expansion_equals_explicit_hessian(activation):
    cfg, net, p0 = _net(activation)
    x, _, x_eval = _data()
    f0, k0, t2, dk = _explicit(net.apply_fn, p0, x, x_eval)
    generic = perturb.expansion(lambda p, xx: net.apply_fn(p, xx)[:, 0], p0, x, x_eval)
    mlp = sgd.mlp(cfg, 7)
    fast = perturb.expansion_mlp(mlp, sgd.dense_params(p0), x, x_eval)
    for exp in (generic, fast):
        for got, want in zip(exp, (f0, k0, t2, dk), strict=True):
            want = np.asarray(want)
            scale = np.abs(want).max()
            assert scale > 0
            np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-11 * scale)
    assert np.abs(t2).max() > 1e-3 * np.abs(k0).max()  # the curvature is not trivially zero here


def test_linearized_trajectory_is_the_discrete_closed_form():
    cfg, _net_fns, p0 = _net("erf")
    x, y, x_eval = _data()
    exp = perturb.expansion_mlp(sgd.mlp(cfg, 7), sgd.dense_params(p0), x, x_eval)
    lr = 0.5 * float(kernels.critical_learning_rate(exp.k0[:N]))
    steps = np.array([0, 1, 7, 40])
    _, f_lin = perturb.predict(jax.tree_util.tree_map(lambda a: a[None], exp), y, learning_rate=lr, checkpoints=steps)
    tr, te = closed_form.discrete(exp.k0[:N], exp.k0[N:], y, exp.f0[:N, None], exp.f0[N:, None], learning_rate=lr,
                                  steps=steps)
    want = np.concatenate([tr[..., 0], te[..., 0]], axis=1)
    np.testing.assert_allclose(f_lin[0], want, rtol=0, atol=1e-12 * np.abs(want).max())


def _gd_quadratic(apply_fn, p0, x_all, x, y, eps, lr, steps):
    """f_eps = f_lin + eps (f_quad - f_lin) (Hessian eps H) and f_lin, each trained by GD with jax.grad
    on 1/2 mean((f - y)^2); outputs on x_all after ``steps`` steps."""
    f_lin = nt.taylor_expand(apply_fn, p0, 1)
    f_quad = nt.taylor_expand(apply_fn, p0, 2)

    def model(p, xx, e):
        lin = f_lin(p, xx)
        return lin + e * (f_quad(p, xx) - lin)

    def train(e):
        grad = jax.grad(lambda p: 0.5 * jnp.mean((model(p, x, e) - y) ** 2))
        p = jax.lax.fori_loop(0, steps, lambda _, p: jax.tree_util.tree_map(lambda a, b: a - lr * b, p, grad(p)), p0)
        return model(p, x_all, e)[:, 0]

    return np.asarray(train(eps)), np.asarray(train(0.0))


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_recursion_is_first_order_exact_for_the_quadratic_model(activation):
    """Halving the curvature's scale eps quarters the error of eps * delta_pred (second order), and the
    prediction is most of the deviation."""
    cfg, net, p0 = _net(activation)
    x, y, x_eval = _data()
    x_all = jnp.concatenate([x, x_eval])
    exp = perturb.expansion_mlp(sgd.mlp(cfg, 7), sgd.dense_params(p0), x, x_eval)
    lr = 0.5 * float(kernels.critical_learning_rate(exp.k0[:N]))
    steps = 60
    dl, _ = perturb.predict(jax.tree_util.tree_map(lambda a: a[None], exp), y, learning_rate=lr,
                            checkpoints=np.array([0, steps]))
    pred = dl[0, -1]  # delta f at eps = 1, first order
    errs, sizes = [], []
    for eps in (0.04, 0.02, 0.01):
        f_eps, f_lin = _gd_quadratic(net.apply_fn, p0, x_all, x, y, eps, lr, steps)
        measured = f_eps - f_lin
        errs.append(np.abs(measured - eps * pred).max())
        sizes.append(np.abs(measured).max())
    assert sizes[-1] > 1e3 * 1e-15 * np.abs(np.asarray(y)).max() * steps  # far above rounding
    for e_big, e_small, size in zip(errs[:-1], errs[1:], sizes, strict=False):
        assert e_big < 0.2 * size  # the first-order term is most of the deviation
        assert 3.5 < e_big / e_small < 4.5, errs  # second order: halving eps quarters the error
