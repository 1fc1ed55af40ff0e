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

    jac_tree = jax.jit(lambda p, z: jax.jacobian(lambda q: net.apply_fn(q, z).reshape(-1))(p))  # one compile/shape

    def jac(z):
        j = jac_tree(params, z)
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


def _mlp_and_jacobian(k: int, depth: int = 2, width: int = 12, activation: str = "erf"):
    """A small FC net (stax and its hand-written twin, :mod:`studylib.sgd`) and a direct Jacobian (B, k, P)."""
    from studylib import sgd

    cfg = models.ModelConfig(depth=depth, activation=activation)
    net = models.build(cfg, width, out_dim=k)
    mlp = sgd.fast_mlp(cfg, width, in_dim=3, out_dim=k)

    jac_tree = jax.jit(lambda params, z: jax.jacobian(lambda q: net.apply_fn(q, z))(params))

    def jac(params, z):
        j = jac_tree(params, z)
        return np.concatenate([np.asarray(a).reshape(z.shape[0], k, -1) for a in jax.tree_util.tree_leaves(j)],
                              axis=2)

    return cfg, net, mlp, jac


def test_traced_ntk_blocks_against_a_jacobian_product():
    """sgd.traced_ntk_blocks (the hand-written trainer's after kernel) against (1/k) Σ_a J_a(x) J_a(x')ᵀ from
    jax.jacobian of the stax net, float64, k = 3 outputs, 7 train / 5 test inputs. Sums of ~P products: 1e-12
    of the kernel's scale."""
    from studylib import sgd

    k = 3
    _, net, mlp, jac = _mlp_and_jacobian(k)
    rng = np.random.default_rng(0)
    x, xt = jnp.asarray(rng.standard_normal((7, 3))), jnp.asarray(rng.standard_normal((5, 3)))
    _, params = net.init_fn(jax.random.PRNGKey(3), x.shape)
    j_train, j_test = jac(params, x), jac(params, xt)
    want_dd = np.einsum("nap,map->nm", j_train, j_train) / k
    want_td = np.einsum("nap,map->nm", j_test, j_train) / k
    k_dd, k_td = jax.jit(lambda d: sgd.traced_ntk_blocks(mlp, d, x, xt))(sgd.dense_params(params))  # as compare runs it
    scale = np.abs(want_dd).max()
    np.testing.assert_allclose(k_dd, want_dd, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(k_td, want_td, rtol=0, atol=1e-12 * scale)


def test_flagged_checkpoints_keep_the_records_and_add_the_kernel_where_flagged():
    """sgd.flagged_checkpoints: the records of sgd.full_batch_checkpoints bit for bit (the same GD), and at the
    flagged checkpoints the traced kernel of the parameters GD reached there (sgd.gd_reference, a plain jax.grad
    loop, then sgd.traced_ntk_blocks, itself checked against a Jacobian product above), zeros elsewhere; 2 seeds,
    k = 2, float64 (1e-10 of the kernel's scale: the two GD loops round differently over 9 steps)."""
    from studylib import sgd, training

    k = 2
    cfg, net, mlp, _ = _mlp_and_jacobian(k, activation="relu")
    rng = np.random.default_rng(1)
    x, xt = jnp.asarray(rng.standard_normal((6, 3))), jnp.asarray(rng.standard_normal((4, 3)))
    blocks = jax.jit(lambda d: sgd.traced_ntk_blocks(mlp, d, x, xt))
    y = jnp.asarray(rng.standard_normal((6, k)))
    p0 = training.init_params(net.init_fn, [0, 1], x.shape, dtype="float64")
    steps, flags, lr = np.array([0, 1, 4, 9]), np.array([True, False, False, True]), 0.3
    ref = sgd.full_batch_checkpoints(cfg, 12, p0, x, y, lr, steps, x_test=xt)
    rec, (k_dd, k_td) = sgd.flagged_checkpoints(cfg, 12, p0, x, y, lr, steps, flags, x_test=xt)
    assert rec.keys() == ref.keys()
    for key in ref:
        np.testing.assert_array_equal(rec[key], ref[key], err_msg=key)
    assert k_dd.shape == (2, 4, 6, 6) and k_td.shape == (2, 4, 4, 6)
    assert not k_dd[:, ~flags].any() and not k_td[:, ~flags].any()
    # GD jitted with the step count traced: one compilation for every seed and checkpoint
    reference = jax.jit(lambda d, n: blocks(sgd.gd_reference(mlp, d, x, y, lr, n, loss="half_mse")))
    for s in range(2):
        for j in np.flatnonzero(flags):
            one = jax.tree_util.tree_map(lambda a, s=s: a[s], p0)
            want_dd, want_td = (np.asarray(a) for a in reference(sgd.dense_params(one), int(steps[j])))
            scale = np.abs(want_dd).max()
            np.testing.assert_allclose(k_dd[s, j], want_dd, rtol=0, atol=1e-10 * scale)
            np.testing.assert_allclose(k_td[s, j], want_td, rtol=0, atol=1e-10 * scale)


def test_after_checkpoints_and_first_within():
    """Step 0 and every checkpoint at or after AFTER_FROM of the time; first_within: the first fraction from which
    a condition holds to the end, NaN where it fails at the end."""
    t = np.array([0.0, 0.01, 0.05, A.AFTER_FROM, 0.3, 1.0]) * 0.7  # AFTER_FROM x 0.7 >= AFTER_FROM x 0.7 rounded
    np.testing.assert_array_equal(A.after_checkpoints(t), [True, False, False, True, True, True])
    np.testing.assert_array_equal(A.after_checkpoints(np.array([0, 1, 2, 100])), [True, False, False, True])
    ok = np.array([[False, True, False, True], [True, True, True, True], [True, True, True, False]])
    frac = np.array([0.0, 0.2, 0.5, 1.0])
    np.testing.assert_array_equal(A.first_within(ok, frac), [1.0, 0.0, np.nan])


def _rows_numpy(k_sub, times, y, flags, k_train, k_test, start_train, start_test, f_net, y_test, k0, theta, rcond):
    """compare_rows written out: loops, np.linalg.pinv with the same cut-off, H written out."""
    s, t = k_sub.shape[:2]
    p = k_sub.shape[-1]
    out = {n: np.full((s, t), np.nan) for n in ("kernel_alignment", "kernel_velocity", "after_alignment",
                                               "after_vs_net_rmse", "after_test_loss", "after_test_rmse",
                                               "after_test_accuracy", "after_agreement_with_net")}
    idx = np.flatnonzero(flags)
    for i in range(s):
        for j in range(t):
            out["kernel_alignment"][i, j] = _alignment_numpy(k_sub[i, j], y[:p] @ y[:p].T)
            if j:
                out["kernel_velocity"][i, j] = (np.linalg.norm(k_sub[i, j] - k_sub[i, j - 1])
                                                / np.linalg.norm(k_sub[i, j - 1]) / (times[j] - times[j - 1]))
        for jj, j in enumerate(idx):
            out["after_alignment"][i, j] = _alignment_numpy(k_train[i, jj], y @ y.T)
            pred = start_test[i] + k_test[i, jj] @ np.linalg.pinv(k_train[i, jj], rcond=rcond, hermitian=True) @ (
                y - start_train[i])
            out["after_vs_net_rmse"][i, j] = np.sqrt(np.mean((pred - f_net[i]) ** 2))
            out["after_test_loss"][i, j] = 0.5 * np.mean((pred - y_test) ** 2)
            out["after_test_rmse"][i, j] = np.sqrt(np.mean((pred - y_test) ** 2))
            out["after_test_accuracy"][i, j] = np.mean(pred.argmax(1) == y_test.argmax(1))
            out["after_agreement_with_net"][i, j] = np.mean(pred.argmax(1) == f_net[i].argmax(1))
    out["kernel_alignment_k0"] = np.array([_alignment_numpy(kk, y @ y.T) for kk in k0])
    out["kernel_alignment_theta"] = np.full(s, _alignment_numpy(theta, y @ y.T))
    return out


def test_compare_rows_against_numpy():
    """compare_rows (the after kernel's curves and scalars in study.compare) against loops over np.linalg.pinv
    (same cut-off), the alignment with H written out and the velocity by hand: 2 seeds, 6 checkpoints (4
    flagged), N = 8 (first P = 5 tracked), M = 6, k = 3 classes, uncentred starts. Rounding of pinv against
    eigh on condition ≤ 50: 1e-10. The 'from' scalars against the rule applied by hand."""
    rng = np.random.default_rng(5)
    s, t, n, m, k, p = 2, 6, 8, 6, 3, 5
    times = np.array([0.0, 0.1, 0.3, 1.0, 2.0, 4.0])
    flags = A.after_checkpoints(times)
    assert flags.tolist() == [True, False, False, True, True, True]
    big = np.stack([np.stack([_psd(n + m, 10 * i + j) for j in range(t)]) for i in range(s)])  # (S, T, N+M, N+M)
    k_sub = big[:, :, :p, :p]
    k_train, k_test = big[:, flags, :n, :n], big[:, flags, n:, :n]
    y = rng.standard_normal((n, k))
    y_test = np.eye(k)[rng.integers(0, k, m)] - 1 / k
    start_train, start_test = 0.1 * rng.standard_normal((s, n, k)), 0.1 * rng.standard_normal((s, m, k))
    f_net = rng.standard_normal((s, m, k))
    k0, theta = big[:, 0, :n, :n], _psd(n, 99)
    curves, scalars, pred = A.compare_rows(k_sub, times, y, flags, k_train, k_test, start_train, start_test, f_net,
                                           y_test, k, k0, theta, rcond=1e-7)
    want = _rows_numpy(k_sub, times, y, flags, k_train, k_test, start_train, start_test, f_net, y_test, k0, theta,
                       1e-7)
    for name, c in curves.items():
        np.testing.assert_allclose(c, want[name], rtol=1e-10, atol=1e-12, err_msg=name)  # NaN where not flagged
    for name in ("kernel_alignment_k0", "kernel_alignment_theta"):
        np.testing.assert_allclose(scalars[name], want[name], rtol=1e-10, err_msg=name)
    assert np.isnan(pred[:, ~flags]).all() and np.isfinite(pred[:, flags]).all() and pred.shape == (s, t, m, k)
    r = want["after_vs_net_rmse"][:, flags]
    np.testing.assert_allclose(scalars["after_vs_net_rmse_k0"], r[:, 0], rtol=1e-12)
    np.testing.assert_allclose(scalars["after_rmse_ratio"], r[:, -1] / r[:, 0], rtol=1e-10)
    frac = times[flags] / times[-1]
    for name, ok in (("after_explains_from", r <= A.RMSE_TOL * r[:, :1]),
                     ("after_accuracy_from", np.abs(want["after_test_accuracy"][:, flags]
                                                    - np.mean(f_net.argmax(-1) == y_test.argmax(-1), -1)[:, None])
                      <= A.ACCURACY_TOL)):
        expect = [next((frac[j] for j in range(len(frac)) if ok[i, j:].all()), np.nan) for i in range(s)]
        np.testing.assert_array_equal(scalars[name], expect, err_msg=name)
    # targets f_net = a kernel's own regression: K_T then explains the network exactly, from the last checkpoint
    exact = A.compare_rows(k_sub, times, y, flags, k_train, k_test, start_train, start_test, pred[:, -1], y_test,
                           k, k0, theta, rcond=1e-7)[1]
    np.testing.assert_array_equal(exact["after_explains_from"], [1.0, 1.0])
    assert np.all(exact["after_rmse_ratio"] < 1e-10)
