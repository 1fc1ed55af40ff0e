"""The first-order gap prediction (studylib.perturb): its t = 0 tensors against an explicit Jacobian
and Hessian of a tiny net, its linearized trajectory against the closed form, and the recursion
against the quadratic Taylor model (nt.taylor_expand, degree 2) trained by GD: the error must fall
as the square of the curvature's scale (float64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from studylib import closed_form, kernels, perturb, sgd
from studylib.models import ModelConfig, fully_connected
from studylib.nt import nt

N = 5


@functools.lru_cache  # one net (one apply_fn) per activation: the jitted expansions below compile once each
def _net(activation, depth=2, width=7):
    cfg = ModelConfig(depth=depth, activation=activation)
    net = fully_connected(width, depth=depth, activation=activation, W_std=cfg.W_std, b_std=cfg.b_std)
    _, p0 = net.init_fn(jax.random.PRNGKey(3), (N, 1))
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p0)
    return cfg, net, p0


#: The expansions jitted, as the study runs them (one compilation per net and shapes, not one per eager
#: operation); the MLP (a frozen dataclass) and the apply_fn are static, so tests of one net share a program.
_expansion_mlp = jax.jit(perturb.expansion_mlp, static_argnums=0)
_expansion = jax.jit(perturb.expansion, static_argnums=0)


@functools.lru_cache
def _squeezed(apply_fn):
    """f(params, x)[:, 0] of a one-output net: (P,) outputs; one function object per net."""
    return lambda p, xx: apply_fn(p, xx)[:, 0]


def _data():
    x = jnp.linspace(-1.5, 1.5, N, dtype=jnp.float64)[:, None]
    x_eval = jnp.linspace(-3.0, 3.0, 4, dtype=jnp.float64)[:, None]
    return x, x ** 3 / 2.0, x_eval


def _explicit(apply_fn, p0, x, x_eval):
    """K_0, T, D from the full Jacobian and Hessian of the flattened parameters (NumPy)."""
    flat, unravel = ravel_pytree(p0)
    x_all = jnp.concatenate([x, x_eval])
    g = lambda th: apply_fn(unravel(th), x_all)[:, 0]  # noqa: E731
    jac = np.asarray(jax.jit(jax.jacobian(g))(flat))  # (P, n); jitted: one compilation, not one per eager op
    hess = np.asarray(jax.jit(jax.hessian(g))(flat))  # (P, n, n)
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
    generic = _expansion(_squeezed(net.apply_fn), p0, x, x_eval)
    mlp = sgd.mlp(cfg, 7)
    fast = _expansion_mlp(mlp, sgd.dense_params(p0), x, x_eval)
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
    exp = _expansion_mlp(sgd.mlp(cfg, 7), sgd.dense_params(p0), x, x_eval)
    lr = 0.5 * float(kernels.critical_learning_rate(exp.k0[:N]))
    steps = np.array([0, 1, 7, 40])
    _, f_lin = perturb.predict(jax.tree_util.tree_map(lambda a: a[None], exp), y, learning_rate=lr, checkpoints=steps)
    tr, te = closed_form.discrete(exp.k0[:N], exp.k0[N:], y, exp.f0[:N, None], exp.f0[N:, None], learning_rate=lr,
                                  steps=steps)
    want = np.concatenate([tr[..., 0], te[..., 0]], axis=1)
    np.testing.assert_allclose(f_lin[0], want, rtol=0, atol=1e-12 * np.abs(want).max())


def _gd_quadratic(apply_fn, p0, x_all, x, y, lr, steps):
    """A function of eps: f_eps = f_lin + eps (f_quad - f_lin) (Hessian eps H) trained by GD with jax.grad
    on 1/2 mean((f - y)^2), outputs on x_all after ``steps`` steps (eps = 0: f_lin). eps is an argument of
    one jitted program, so every eps reuses one compilation."""
    f_lin = nt.taylor_expand(apply_fn, p0, 1)
    f_quad = nt.taylor_expand(apply_fn, p0, 2)

    def model(p, xx, e):
        lin = f_lin(p, xx)
        return lin + e * (f_quad(p, xx) - lin)

    @jax.jit
    def train(e):
        grad = jax.grad(lambda p: 0.5 * jnp.mean((model(p, x, e) - y) ** 2))
        p = jax.lax.fori_loop(0, steps, lambda _, p: jax.tree_util.tree_map(lambda a, b: a - lr * b, p, grad(p)), p0)
        return model(p, x_all, e)[:, 0]

    return lambda eps: np.asarray(train(eps))


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_recursion_is_first_order_exact_for_the_quadratic_model(activation):
    """Halving the curvature's scale eps quarters the error of eps * delta_pred (second order), and the
    prediction is most of the deviation."""
    cfg, net, p0 = _net(activation)
    x, y, x_eval = _data()
    x_all = jnp.concatenate([x, x_eval])
    exp = _expansion_mlp(sgd.mlp(cfg, 7), sgd.dense_params(p0), x, x_eval)
    lr = 0.5 * float(kernels.critical_learning_rate(exp.k0[:N]))
    steps = 60
    dl, _ = perturb.predict(jax.tree_util.tree_map(lambda a: a[None], exp), y, learning_rate=lr,
                            checkpoints=np.array([0, steps]))
    pred = dl[0, -1]  # delta f at eps = 1, first order
    trained = _gd_quadratic(net.apply_fn, p0, x_all, x, y, lr, steps)
    f_lin = trained(0.0)
    errs, sizes = [], []
    for eps in (0.04, 0.02, 0.01):
        measured = trained(eps) - f_lin
        errs.append(np.abs(measured - eps * pred).max())
        sizes.append(np.abs(measured).max())
    assert sizes[-1] > 1e3 * 1e-15 * np.abs(np.asarray(y)).max() * steps  # far above rounding
    for e_big, e_small, size in zip(errs[:-1], errs[1:], sizes, strict=False):
        assert e_big < 0.2 * size  # the first-order term is most of the deviation
        assert 3.5 < e_big / e_small < 4.5, errs  # second order: halving eps quarters the error


# ------------------------------------------------------------------------------------------ k > 1 outputs
# The N k flat outputs (row n k + i) are the training rows; NT's loss 1/2 mean over all N k outputs, so
# the recursion's factor is eta / (N k) (SCIENCE.md section 2).

K_OUT = 3
N_K = 4  # training inputs of the k-output tests


def _net_k(activation, depth=2, width=6, in_dim=2):
    cfg = ModelConfig(depth=depth, activation=activation)
    net = fully_connected(width, depth=depth, activation=activation, W_std=cfg.W_std, b_std=cfg.b_std,
                          out_dim=K_OUT)
    _, p0 = net.init_fn(jax.random.PRNGKey(5), (N_K, in_dim))
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p0)
    return cfg, net, p0, sgd.mlp(cfg, width, in_dim=in_dim, out_dim=K_OUT)


def _data_k(in_dim=2):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1.5, 1.5, (N_K, in_dim)))
    x_eval = jnp.asarray(rng.uniform(-3.0, 3.0, (3, in_dim)))
    y = jnp.stack([jnp.sum(x, 1) ** 3 / 4, jnp.sin(x[:, 0]), x[:, 1] ** 2 - 1], axis=1)  # (N, k)
    return x, y, x_eval


def _explicit_flat(apply_fn, p0, x, x_eval, n_rows):
    """K_0, T, D over flat outputs (row p k + i) from the full Jacobian and Hessian (NumPy)."""
    flat, unravel = ravel_pytree(p0)
    x_all = jnp.concatenate([x, x_eval])
    g = lambda th: apply_fn(unravel(th), x_all).reshape(-1)  # noqa: E731
    jac = np.asarray(jax.jit(jax.jacobian(g))(flat))  # (P k, n)
    hess = np.asarray(jax.jit(jax.hessian(g))(flat))  # (P k, n, n)
    v = jac[:n_rows]
    t2 = np.einsum("in,pnm,jm->pij", v, hess, v)
    hv = np.einsum("pnm,im->pin", hess, v)
    dk = np.einsum("pin,jn->pij", hv, v) + np.einsum("jin,pn->pij", hv[:n_rows], jac)
    return np.asarray(g(flat)), jac @ v.T, t2, dk


@pytest.mark.slow  # ~20 s; CI runs it with -m slow (k outputs also: the recursion test below, k = 1: above)
def test_k_output_expansion_equals_explicit_hessian():
    """Both routes with k = 3 outputs equal the flat explicit tensors (1e-11 of their scale); the fast
    route's kernel is also NT's full empirical NTK made flat."""
    _, net, p0, mlp = _net_k("relu")
    x, _, x_eval = _data_k()
    want = _explicit_flat(net.apply_fn, p0, x, x_eval, N_K * K_OUT)
    generic = _expansion(net.apply_fn, p0, x, x_eval)
    fast = _expansion_mlp(mlp, sgd.dense_params(p0), x, x_eval)
    for exp in (generic, fast):
        assert exp.k0.shape == ((N_K + 3) * K_OUT, N_K * K_OUT)
        for got, w in zip(exp, want, strict=True):
            scale = np.abs(w).max()
            assert scale > 0
            np.testing.assert_allclose(np.asarray(got), w, rtol=0, atol=1e-11 * scale)
    nt_k = kernels.flat_kernel(nt.empirical_ntk_fn(net.apply_fn, trace_axes=(), implementation=1)(x, None, p0))
    np.testing.assert_allclose(np.asarray(fast.k0[:N_K * K_OUT]), np.asarray(nt_k), rtol=0,
                               atol=1e-11 * np.abs(nt_k).max())
    assert np.abs(want[2]).max() > 1e-3 * np.abs(want[1]).max()  # curvature not trivially zero


def test_k_output_recursion_is_first_order_exact_for_the_quadratic_model():
    """k = 3 outputs, loss 1/2 mean over the N k outputs (jax.grad): halving the curvature's scale
    quarters the error of eps * delta_pred, so the recursion with factor eta / (N k) is exact to first
    order; with eta / N instead (the wrong convention) the error stays first order."""
    _, net, p0, mlp = _net_k("erf")
    x, y, x_eval = _data_k()
    x_all = jnp.concatenate([x, x_eval])
    exp = _expansion_mlp(mlp, sgd.dense_params(p0), x, x_eval)
    n_flat = N_K * K_OUT
    lr = 0.5 * float(kernels.critical_learning_rate(exp.k0[:n_flat]))  # 2 N k / lambda_max of the flat kernel
    steps = 40
    batch = jax.tree_util.tree_map(lambda a: a[None], exp)
    dl, _ = perturb.predict(batch, y, learning_rate=lr, checkpoints=np.array([0, steps]))
    pred = dl[0, -1]
    wrong, _ = perturb.predict(batch, y, learning_rate=lr * K_OUT, checkpoints=np.array([0, steps]))  # eta / N
    f_lin1 = nt.taylor_expand(net.apply_fn, p0, 1)
    f_quad = nt.taylor_expand(net.apply_fn, p0, 2)

    @jax.jit  # one compilation for every e (an argument, not a constant of the program)
    def train(e):
        model = lambda p, xx: f_lin1(p, xx) + e * (f_quad(p, xx) - f_lin1(p, xx))  # noqa: E731
        grad = jax.grad(lambda p: 0.5 * jnp.mean((model(p, x) - y) ** 2))  # mean over N k outputs
        p = jax.lax.fori_loop(0, steps, lambda _, p: jax.tree_util.tree_map(lambda a, b: a - lr * b, p, grad(p)), p0)
        return model(p, x_all).reshape(-1)

    trained = lambda e: np.asarray(train(e))  # noqa: E731
    base = trained(0.0)
    errs, sizes, errs_wrong = [], [], []
    for eps in (0.04, 0.02, 0.01):
        measured = trained(eps) - base
        errs.append(np.abs(measured - eps * pred).max())
        errs_wrong.append(np.abs(measured - eps * wrong[0, -1]).max())
        sizes.append(np.abs(measured).max())
    assert sizes[-1] > 1e3 * 1e-15 * np.abs(np.asarray(y)).max() * steps
    for e_big, e_small, size in zip(errs[:-1], errs[1:], sizes, strict=False):
        assert e_big < 0.2 * size
        assert 3.5 < e_big / e_small < 4.5, errs
    assert 1.7 < errs_wrong[0] / errs_wrong[1] < 2.3, errs_wrong  # the eta / N recursion is off at first order


def test_k1_flat_route_is_the_scalar_route():
    """A (P, 1)-output f and its (P,) squeeze give the same expansion (the k = 1 case is unchanged)."""
    _, net, p0 = _net("relu")
    x, _, x_eval = _data()
    # both jitted (the second is test_expansion_equals_explicit_hessian[relu]'s program); they differ by a reshape
    a = _expansion(net.apply_fn, p0, x, x_eval)
    b = _expansion(_squeezed(net.apply_fn), p0, x, x_eval)
    for u, v in zip(a, b, strict=True):  # float64: two compiled programs may order sums differently, so the
        u, v = np.asarray(u), np.asarray(v)  # same numbers to ~1e3 eps of their scale, not bit for bit
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-13 * max(np.abs(u).max(), 1e-300))
