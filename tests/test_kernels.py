"""Empirical NTK against a direct Jacobian product; analytic NTK against an independent
NumPy arc-cosine recursion; the empirical kernel approaching the analytic one with width."""

import jax
import numpy as np
import pytest

from studylib import kernels, models, training

X = np.linspace(-2.0, 2.0, 5)[:, None]


# slow set: the [ntk-1] / [ntk-3] cases check the same implementation's kernel against the Jacobian product on
# the same problem; [standard-2] keeps the standard parameterization in the default suite
@pytest.mark.parametrize("parameterization,implementation", [
    ("ntk", 1), ("ntk", 2), ("ntk", 3), pytest.param("standard", 1, marks=pytest.mark.slow), ("standard", 2),
    pytest.param("standard", 3, marks=pytest.mark.slow)])
def test_empirical_ntk_equals_jacobian_product(implementation, parameterization):
    net = models.fully_connected(7, depth=3, parameterization=parameterization)
    _, params = net.init_fn(jax.random.PRNGKey(1), X.shape)
    # each side jitted: one compilation, not one per eager operation
    got = jax.jit(kernels.empirical_ntk_fn(net.apply_fn, implementation=implementation))(X, X[:3] * 0.5, params)
    want = jax.jit(kernels.jacobian_ntk, static_argnums=0)(net.apply_fn, X, X[:3] * 0.5, params)
    # float64: both are sums of the same ~100 products; agreement to rounding.
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _relu_ntk_numpy(x, depth, w_std, b_std):
    """Arc-cosine recursion for a ReLU net in NTK parameterization (Jacot et al. 2018; Arora et al. 2019)."""
    x = np.asarray(x, np.float64)
    sigma = w_std**2 * (x @ x.T) / x.shape[1] + b_std**2
    theta = sigma.copy()
    for _ in range(depth):
        d = np.sqrt(np.diag(sigma))
        cos = np.clip(sigma / np.outer(d, d), -1.0, 1.0)
        ang = np.arccos(cos)
        k1 = np.outer(d, d) * (np.sin(ang) + (np.pi - ang) * cos) / (2 * np.pi)
        k0 = (np.pi - ang) / (2 * np.pi)
        sigma_next = w_std**2 * k1 + b_std**2
        theta = sigma_next + w_std**2 * k0 * theta
        sigma = sigma_next
    return theta, sigma


def test_analytic_ntk_matches_numpy_recursion():
    net = models.fully_connected(16, depth=5, W_std=2**0.5, b_std=0.1)
    x = np.linspace(-5, 5, 10)[:, None]
    theta, nngp = _relu_ntk_numpy(x, 5, 2**0.5, 0.1)
    # The diagonal goes through arccos(cos ~ 1), whose sqrt singularity turns float64 rounding of
    # the cosine (1e-16) into angles ~1e-8: that bounds the agreement there; elsewhere it is ~1e-13.
    got = np.asarray(kernels.analytic(net.kernel_fn, x, None, "ntk"))
    np.testing.assert_allclose(got, theta, rtol=1e-7)
    off = ~np.eye(10, dtype=bool)
    np.testing.assert_allclose(got[off], theta[off], rtol=1e-11)
    np.testing.assert_allclose(kernels.analytic(net.kernel_fn, x, None, "nngp"), nngp, rtol=1e-7)


def test_critical_learning_rate_matches_nt():
    k = np.array([[3.0, 1.0], [1.0, 2.0]])
    # lambda_max of [[3,1],[1,2]] is (5 + sqrt 5)/2; N = 2, so 2N/lambda_max = 8/(5 + sqrt 5).
    # (nt.predict.max_learning_rate computes the same but calls scipy's removed `eigvals=` keyword.)
    assert float(kernels.critical_learning_rate(k)) == pytest.approx(8.0 / (5.0 + 5.0**0.5), rel=1e-12)
    # Batched over leading axes.
    both = np.asarray(kernels.critical_learning_rate(np.stack([k, 2 * k])))
    np.testing.assert_allclose(both, [8.0 / (5.0 + 5.0**0.5), 4.0 / (5.0 + 5.0**0.5)], rtol=1e-12)


def test_empirical_ntk_approaches_analytic_with_width():
    x = np.linspace(-5, 5, 10)[:, None]
    errors = {}
    for width in (16, 512):
        net = models.fully_connected(width, depth=3)
        theta = np.asarray(kernels.analytic(net.kernel_fn, x, None))
        params = training.init_params(net.init_fn, range(4), x.shape)
        ntk = kernels.empirical_ntk_fn(net.apply_fn)
        # jitted: one compilation per width instead of one per eager operation
        k0 = np.asarray(jax.jit(jax.vmap(lambda p, ntk=ntk: ntk(x, None, p)))(params))
        errors[width] = np.mean(np.linalg.norm(k0 - theta, axis=(1, 2)) / np.linalg.norm(theta))
    # Fluctuations shrink ~ n^-1/2: a 32x wider net should be ~5.7x closer; ask for 2.5x, which
    # four seeds at width 16 cannot reach by chance (their mean error is O(1)).
    assert errors[512] < errors[16] / 2.5, errors


def test_critical_rates_with_the_seeds_loss_and_minibatches():
    """One formula for every study: the seed's loss mean((f-y)^2) (c = 2) halves the limit; with
    batches of B the bound 2B / (c max_I lambda_max(K_II)) is exact for B = 1 (each step on one
    point multiplies its residual by 1 - lr c K_ii) and for B = N."""
    k = np.array([[3.0, 1.0], [1.0, 2.0]])
    full = 8.0 / (5.0 + 5.0**0.5)
    assert kernels.critical_learning_rate(k, loss_factor=kernels.LOSS_FACTOR["mse"]) == pytest.approx(full / 2)
    assert kernels.minibatch_critical_rate(k, 2) == pytest.approx(full)
    assert kernels.minibatch_critical_rate(k, 1) == pytest.approx(2.0 / 3.0)  # 2 / max K_ii
    # Iterating the B = 1 map on the worst point just above / below that rate grows / shrinks.
    for factor, grows in ((1.01, True), (0.99, False)):
        lr = factor * kernels.minibatch_critical_rate(k, 1)
        assert (abs(1 - lr * k[0, 0]) ** 200 > 1) == grows


# ------------------------------------------------------------------------------------ several outputs


def _net_k(k=3, width=6):
    net = models.fully_connected(width, depth=2, out_dim=k)
    x = np.random.default_rng(0).standard_normal((5, 2))
    _, params = net.init_fn(jax.random.PRNGKey(4), x.shape)
    return net, x, params


@pytest.mark.parametrize("implementation", [pytest.param(i, marks=pytest.mark.slow) if i == 1 else i  # 1: -m slow
                                            for i in kernels.NTK_IMPLEMENTATIONS])
def test_full_kernel_with_k_outputs_equals_jacobian_product(implementation):
    """NT's trace_axes=() kernel, flattened to (N k, N k) with row n k + i, against J J^T of f
    flattened row-major; the traced kernel is the sum of its diagonal output blocks."""
    net, x, params = _net_k()
    x2 = x[:3] * 0.7
    # each kernel jitted: one compilation, not one per eager operation
    full = jax.jit(kernels.empirical_ntk_fn(net.apply_fn, implementation=implementation, trace_outputs=False))(
        x, x2, params)
    assert full.shape == (5, 3, 3, 3)
    flat = np.asarray(kernels.flat_kernel(np.asarray(full)))
    want = np.asarray(jax.jit(kernels.jacobian_ntk, static_argnums=0)(net.apply_fn, x, x2, params))
    # float64: both sum the same ~100 products per entry
    np.testing.assert_allclose(flat, want, rtol=1e-10, atol=1e-12)
    traced = jax.jit(kernels.empirical_ntk_fn(net.apply_fn, implementation=implementation))(x, x2, params)
    np.testing.assert_allclose(kernels.traced_kernel(flat, 3), traced, rtol=1e-10, atol=1e-12)
    # the output blocks are coupled: a finite net's off-diagonal blocks are not zero
    off = flat.reshape(5, 3, 3, 3)[:, 0, :, 1]
    assert np.abs(off).max() > 1e-3 * np.abs(flat).max()


# slow set: [2] checks the same blocking on the same problem (3 blocks of x1 and 2 of x2, both last ones padded)
@pytest.mark.parametrize("rows", [pytest.param(1, marks=pytest.mark.slow), 2, pytest.param(4, marks=pytest.mark.slow)])
def test_blocked_kernel_equals_one_call(rows):
    """Blocks of ``rows`` inputs (the last one padded with zero inputs) give the unblocked kernel."""
    net, x, params = _net_k()
    fn = jax.jit(kernels.empirical_ntk_fn(net.apply_fn, trace_outputs=False))
    whole = np.asarray(fn(x, x, params))
    got = kernels.blocked_ntk(fn, x, None, params, rows=rows)
    np.testing.assert_allclose(got, whole, rtol=1e-12, atol=1e-14)
    x_test = x[:3] + 0.3
    np.testing.assert_allclose(kernels.blocked_ntk(fn, x_test, x, params, rows=rows), np.asarray(fn(x_test, x, params)),
                               rtol=1e-12, atol=1e-14)


def test_analytic_blocked_equals_one_call_and_rows_bound_images():
    net = models.fully_connected(8, depth=2)
    x = np.random.default_rng(1).standard_normal((7, 3))
    kernel_fn = jax.jit(net.kernel_fn, static_argnums=2)  # one compilation per block shape, not per eager op
    whole = np.asarray(kernels.analytic(kernel_fn, x, x))
    got = kernels.analytic_blocked(kernel_fn, x, x, rows=3)
    # A diagonal entry goes through arccos(cos ~ 1), whose sqrt singularity turns float64 rounding of the
    # cosine into ~1e-8 (see test_analytic_ntk_matches_numpy_recursion); a block sees x_i against x_i
    # at another position of the batch, so only the diagonal may differ beyond rounding.
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(got[off], whole[off], rtol=1e-12)
    np.testing.assert_allclose(np.diag(got), np.diag(whole), rtol=1e-7)
    np.testing.assert_array_equal(kernels.analytic_blocked(kernel_fn, x, x, rows=7), whole)
    # flat inputs: one call; 8x8 images: a pair costs 64^2 position pairs, so rows shrink with the budget
    assert kernels.analytic_rows((256, 64), 256, budget_bytes=1e6) == 256
    rows = kernels.analytic_rows((512, 8, 8, 1), 256, budget_bytes=2**30)
    assert rows == int(2**30 // (kernels.ANALYTIC_PAIR_BYTES * 256 * 64**2))


def test_critical_rate_counts_every_output():
    """NT: 2 N k / lambda_max over the N k outputs. A per-output kernel Theta acting as Theta (x) I_k has
    Theta's eigenvalues, so its rate is k times the scalar one; a flat kernel counts its N k rows."""
    theta = np.array([[3.0, 1.0], [1.0, 2.0]])
    lam = (5.0 + 5.0**0.5) / 2
    assert kernels.critical_learning_rate(theta, outputs=10) == pytest.approx(2 * 2 * 10 / lam, rel=1e-12)
    full = np.kron(theta, np.eye(10))  # the same kernel, flat
    assert kernels.critical_learning_rate(full) == pytest.approx(2 * 2 * 10 / lam, rel=1e-12)


def test_block_rows_fit_the_budget_and_split_evenly():
    per_row = 3 * 10 * 1000 * 4
    assert kernels.block_rows(1000, 10, 4, budget_bytes=118 * per_row, n_rows=256) == 86  # 3 blocks of 86
    assert kernels.block_rows(1000, 10, 4, budget_bytes=1e12, n_rows=256) == 256
    assert kernels.block_rows(1000, 10, 4, budget_bytes=1.0, n_rows=256) == 1
