"""The after-kernel core (studylib.afterkernel), each function against a formula written here in NumPy (or NT's
own predictor, or a direct Jacobian product), float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from studylib import afterkernel as A
from studylib import models


def _psd(m: int, seed: int, cond: float = 50.0) -> np.ndarray:
    """A random symmetric positive-definite (m, m) matrix with eigenvalues spread over [1, cond]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return (q * np.geomspace(1.0, cond, m)) @ q.T


def _alignment_numpy(k: np.ndarray, t: np.ndarray) -> float:
    m = k.shape[0]
    h = np.eye(m) - np.ones((m, m)) / m
    kc, tc = h @ k @ h, h @ t @ h
    return float(np.trace(kc @ tc) / np.sqrt(np.trace(kc @ kc) * np.trace(tc @ tc)))


def test_alignment_per_output_and_flat():
    """A(K, Y) with the centring matrix H written out, per output (N, N) against Y Yᵀ summed over outputs and
    flat (N k, N k) against vec(Y) vec(Y)ᵀ; batched over a leading axis; A(Y Yᵀ, Y) = 1. Sums of ~N² terms
    of order one: 1e-12."""
    rng = np.random.default_rng(0)
    n, k = 7, 3
    y = rng.standard_normal((n, k))
    kn = np.stack([_psd(n, s) for s in range(2)])
    kf = _psd(n * k, 5)
    np.testing.assert_allclose(A.alignment(kn, y), [_alignment_numpy(kk, y @ y.T) for kk in kn], rtol=1e-12)
    v = y.reshape(-1)
    assert A.alignment(kf, y) == pytest.approx(_alignment_numpy(kf, np.outer(v, v)), rel=1e-12)
    assert A.alignment(y @ y.T, y) == pytest.approx(1.0, rel=1e-12)
    unc = float(np.sum(kn[0] * (y @ y.T)) / np.linalg.norm(kn[0]) / np.linalg.norm(y @ y.T))
    assert A.alignment(kn[0], y, centred=False) == pytest.approx(unc, rel=1e-12)
    assert np.isnan(A.alignment(np.ones((n, n)), y))  # a constant kernel centres to zero
    with pytest.raises(ValueError, match="fits neither"):
        A.alignment(np.eye(5), y)


def test_kernel_velocity():
    """‖K_{j+1} − K_j‖_F / ‖K_j‖_F / Δt by a loop; unequal Δt; times must increase."""
    ks = np.stack([_psd(6, s) for s in range(4)])
    t = np.array([0.0, 0.5, 2.0, 2.25])
    want = [np.linalg.norm(ks[j + 1] - ks[j]) / np.linalg.norm(ks[j]) / (t[j + 1] - t[j]) for j in range(3)]
    np.testing.assert_allclose(A.kernel_velocity(ks, t), want, rtol=1e-12)
    np.testing.assert_allclose(A.kernel_velocity(np.stack([ks, 2 * ks]), t), [want, want], rtol=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        A.kernel_velocity(ks, t[::-1])


@pytest.mark.parametrize("flat", [False, True])
def test_kernel_regression_and_ridge(flat):
    """t = ∞ with f₀ = 0: K(test, X) K(X, X)⁻¹ Y by np.linalg.solve (condition 50: 1e-10), per output and flat;
    with a relative ridge r: solve(K + r mean(diag K) I)."""
    rng = np.random.default_rng(1)
    n, m, k = 6, 4, 2
    y = rng.standard_normal((n, k))
    r = n * k if flat else n
    big = _psd(r + m * (k if flat else 1), 3)
    k_dd, k_td = big[:r, :r], big[r:, :r]
    rhs = y.reshape(-1) if flat else y
    want = np.linalg.solve(k_dd, rhs)
    want = (k_td @ want).reshape(m, k)
    np.testing.assert_allclose(A.kernel_regression(k_dd, k_td, y), want, rtol=1e-10, atol=1e-12)
    reg = k_dd + 0.1 * np.mean(np.diag(k_dd)) * np.eye(r)
    want = (k_td @ np.linalg.solve(reg, rhs)).reshape(m, k)
    np.testing.assert_allclose(A.kernel_regression(k_dd, k_td, y, ridge=0.1), want, rtol=1e-10, atol=1e-12)


def test_kernel_regression_pseudo_inverse_on_a_singular_kernel():
    """A rank-deficient Gram (two equal inputs): the pseudo-inverse K⁺ (np.linalg.pinv) answer, not an error."""
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((5, 3))
    feats[4] = feats[0]
    k_all = feats @ feats.T
    y = rng.standard_normal((4, 1))
    k_dd, k_td = k_all[:4, :4], k_all[4:, :4]
    np.testing.assert_allclose(A.kernel_regression(k_dd, k_td, y), k_td @ np.linalg.pinv(k_dd, rcond=1e-12) @ y,
                               rtol=1e-9, atol=1e-12)


def test_kernel_predict_against_nt_and_expm():
    """Finite time from f₀ = 0: NT's gradient_descent_mse (the flow, time η·t, loss ½ mean over N k outputs) and
    K(test, X) K⁻¹ (I − expm(−η t K / (N k))) Y by scipy; exact GD against a NumPy loop of f ← f − η/(N k) K (f − Y)
    on train and test outputs together. 1e-9: an eigendecomposition against NT's own / expm."""
    from studylib.nt import nt

    rng = np.random.default_rng(4)
    n, m, k = 6, 3, 2
    big = _psd(n + m, 7, cond=20.0)
    k_dd, k_td = big[:n, :n], big[n:, :n]
    y = rng.standard_normal((n, k))
    lr, steps = 0.8, np.array([0, 3, 40])
    got = A.kernel_predict(k_dd, k_td, y, learning_rate=lr, steps=steps)
    pred = nt.predict.gradient_descent_mse(jnp.asarray(k_dd), jnp.asarray(y), learning_rate=lr)
    _, nt_test = pred(jnp.asarray(steps, jnp.float64), jnp.zeros((n, k)), jnp.zeros((m, k)), jnp.asarray(k_td))
    np.testing.assert_allclose(got, np.asarray(nt_test), rtol=1e-9, atol=1e-12)
    for i, t in enumerate(steps):
        want = k_td @ np.linalg.solve(k_dd, (np.eye(n) - scipy.linalg.expm(-lr * t * k_dd / (n * k))) @ y)
        np.testing.assert_allclose(got[i], want, rtol=1e-9, atol=1e-12)

    f_train, f_test, out = np.zeros((n, k)), np.zeros((m, k)), []
    for t in range(41):
        if t in steps:
            out.append(f_test.copy())
        resid = f_train - y
        f_train, f_test = f_train - lr / (n * k) * k_dd @ resid, f_test - lr / (n * k) * k_td @ resid
    disc = A.kernel_predict(k_dd, k_td, y, learning_rate=lr, steps=steps, discrete=True)
    np.testing.assert_allclose(disc, np.stack(out), rtol=1e-9, atol=1e-12)
    inf = A.kernel_predict(k_dd, k_td, y, learning_rate=lr, steps=[np.inf])[0]
    np.testing.assert_allclose(inf, A.kernel_regression(k_dd, k_td, y), rtol=1e-12)


@pytest.mark.parametrize("implementation", [1, 2])
def test_empirical_kernels_against_a_jacobian_product(implementation):
    """NT's empirical NTK of a small FC net with k = 2 outputs, in row blocks (a budget that fits 3 rows of
    7 train / 5 test), against J Jᵀ from jax.jacobian in float64: the flat kernels, and the traced ones as the
    mean of the diagonal output blocks. Sums of ~P products: 1e-10 relative."""
    net = models.fully_connected(16, depth=2, out_dim=2)
    rng = np.random.default_rng(0)
    x, xt = jnp.asarray(rng.standard_normal((7, 3))), jnp.asarray(rng.standard_normal((5, 3)))
    _, params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    budget = 3 * 3 * 2 * n_params * 8  # kernels.block_rows: 3 x rows x k x P x 8 bytes -> 3 rows per block

    def jac(z):
        j = jax.jacobian(lambda p: net.apply_fn(p, z).reshape(-1))(params)
        return np.concatenate([np.asarray(a).reshape(a.shape[0], -1) for a in jax.tree_util.tree_leaves(j)], axis=1)

    j_train, j_test = jac(x), jac(xt)
    want_dd, want_td = j_train @ j_train.T, j_test @ j_train.T  # flat, row n k + i
    k_dd, k_td = A.empirical_kernels(net.apply_fn, params, x, xt, trace_outputs=False,
                                     implementation=implementation, budget_bytes=budget)
    scale = np.abs(want_dd).max()
    np.testing.assert_allclose(k_dd, want_dd, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(k_td, want_td, rtol=0, atol=1e-10 * scale)
    t_dd, t_td = A.empirical_kernels(net.apply_fn, params, x, xt, implementation=implementation, budget_bytes=budget)
    traced = lambda f, a, b: f.reshape(a, 2, b, 2).trace(axis1=1, axis2=3) / 2  # noqa: E731
    np.testing.assert_allclose(t_dd, traced(want_dd, 7, 7), rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(t_td, traced(want_td, 5, 7), rtol=0, atol=1e-10 * scale)
    assert A.empirical_kernels(net.apply_fn, params, x, budget_bytes=budget)[1] is None
