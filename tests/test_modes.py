"""The mode machinery is exact where it must be (studylib.modes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import closed_form, kernels, modes, training
from studylib.models import fully_connected


def _spd(rng, n, cond=1e3):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.geomspace(cond, 1.0, n)
    return (q * lam) @ q.T


def test_eigenvectors_orthonormal_and_descending():
    rng = np.random.default_rng(0)
    k = np.stack([_spd(rng, 7) for _ in range(3)])
    lam, v = modes.eig_modes(k)
    assert lam.shape == (3, 7) and v.shape == (3, 7, 7)
    assert np.all(np.diff(lam, axis=-1) < 0)
    # Orthonormality of eigh output: float64 rounding, ~1e-15 per entry.
    np.testing.assert_allclose(np.swapaxes(v, -1, -2) @ v, np.broadcast_to(np.eye(7), (3, 7, 7)), atol=1e-12)
    # K v_i = lambda_i v_i, relative to ||K|| ~ 1e3.
    np.testing.assert_allclose(k @ v, v * lam[:, None, :], atol=1e-9)


def test_projection_parseval_and_reconstruction():
    rng = np.random.default_rng(1)
    k = _spd(rng, 10)
    _, v = modes.eig_modes(k)
    r = rng.normal(size=(4, 5, 10))
    c = modes.project(r, v)
    np.testing.assert_allclose(np.sum(c**2, -1), np.sum(r**2, -1), rtol=1e-12)  # Parseval
    np.testing.assert_allclose(modes.reconstruct(c, v), r, atol=1e-12)


def test_mode_order_and_signs_are_stable():
    """Same modes (order and sign) under a symmetric perturbation far below the eigen-gaps,
    after an arbitrary flip of eigenvector signs, and in a batch vs one by one."""
    rng = np.random.default_rng(2)
    k = _spd(rng, 8, cond=100.0)
    lam, v = modes.eig_modes(k)
    e = rng.normal(size=(8, 8)) * 1e-9
    lam2, v2 = modes.eig_modes(k + e + e.T)
    np.testing.assert_allclose(v2, v, atol=1e-7)  # perturbation 1e-9 / smallest gap ~0.5
    np.testing.assert_allclose(lam2, lam, atol=1e-7)
    # Sign convention: largest-magnitude entry of each eigenvector positive.
    assert np.all(v[np.argmax(np.abs(v), axis=0), np.arange(8)] > 0)
    lam_b, v_b = modes.eig_modes(np.stack([k, 2 * k]))
    np.testing.assert_allclose(v_b[0], v, atol=1e-12)
    np.testing.assert_allclose(v_b[1], v, atol=1e-12)
    np.testing.assert_allclose(lam_b[1], 2 * lam, rtol=1e-12)


def test_linear_model_decays_exactly_per_mode():
    """GD on a linear model f = Phi w (kernel Phi Phi^T) with loss 1/2 mean: each mode of the
    residual decays as (1 - lr lambda_i / N)^t to float64 rounding."""
    rng = np.random.default_rng(3)
    n, p = 6, 20
    phi = rng.normal(size=(n, p))
    y = rng.normal(size=n)
    k = phi @ phi.T
    lam, v = modes.eig_modes(k)
    lr = 1.0 * n / lam[0]  # half the critical rate
    w = rng.normal(size=p) * 0.1
    steps = np.arange(0, 41)
    res = []
    for _ in range(steps[-1] + 1):
        res.append(phi @ w - y)
        w = w - lr * phi.T @ (phi @ w - y) / n
    c = modes.project(np.array(res), v)
    pred = modes.predicted_coefficients(c[0], lam, lr, n, steps)
    scale = np.abs(c[0]).max()
    np.testing.assert_allclose(c, pred, atol=1e-12 * scale)  # 40 steps of float64 rounding
    np.testing.assert_allclose(modes.linear_residuals(k, res[0], lr, steps), np.array(res), atol=1e-12 * scale)
    # And nothing departs.
    assert np.all(np.isnan(modes.departure_step(c, pred, steps)))


def test_nt_linearize_trained_decays_as_predicted():
    """A ReLU net linearized by nt.linearize and trained by GD (float64): its residual's
    projection on the eigenvectors of its own NTK at init decays as (1 - lr lambda_i/N)^t,
    and the network itself does not (it is not linear)."""
    net = fully_connected(64, depth=2)
    x = jnp.linspace(-2.0, 2.0, 6)[:, None]
    y = x**3 / 20
    p0 = training.init_params(net.init_fn, [0], x.shape)
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p0)
    ntk = jax.jit(kernels.empirical_ntk_fn(net.apply_fn))  # jitted: one compilation, not one per eager operation
    k0 = np.asarray(ntk(x, None, jax.tree_util.tree_map(lambda a: a[0], p0)))
    lam, v = modes.eig_modes(k0)
    n = x.shape[0]
    lr = 1.0 * n / lam[0]
    steps = training.checkpoint_steps(200, 8)
    copy = lambda t: jax.tree_util.tree_map(jnp.copy, t)  # noqa: E731
    train_lin = training.make_trainer(training.linearized_model(net.apply_fn))
    train_net = training.make_trainer(training.network_model(net.apply_fn))
    from studylib.nt import nt

    pl, pn, prev = copy(p0), copy(p0), 0
    r_lin, r_net = [], []
    p00 = jax.tree_util.tree_map(lambda a: a[0], p0)
    f_lin, f_net = jax.jit(nt.linearize(net.apply_fn, p00)), jax.jit(net.apply_fn)  # one compilation each
    for t in steps:
        if t > prev:
            pl = train_lin(pl, p0, x, y, lr, int(t - prev))
            pn = train_net(pn, p0, x, y, lr, int(t - prev))
        pl0 = jax.tree_util.tree_map(lambda a: a[0], pl)
        pn0 = jax.tree_util.tree_map(lambda a: a[0], pn)
        r_lin.append(np.asarray(f_lin(pl0, x) - y)[:, 0])
        r_net.append(np.asarray(f_net(pn0, x) - y)[:, 0])
        prev = t
    c_lin = modes.project(np.array(r_lin), v)
    pred = modes.predicted_coefficients(c_lin[0], lam, lr, n, steps)
    scale = np.linalg.norm(c_lin[0])
    # float64: jvp/vjp rounding accumulated over 200 steps stays ~1e-13 relative.
    np.testing.assert_allclose(c_lin, pred, atol=1e-10 * scale)
    # The function-space shortcut used by the study (closed_form.discrete with K_0) agrees too.
    tr, _ = closed_form.discrete(k0, k0, np.asarray(y), np.asarray(y) + np.array(r_lin[0])[:, None],
                                 np.zeros((6, 1)), learning_rate=lr, steps=steps)
    np.testing.assert_allclose(tr[..., 0] - np.asarray(y)[:, 0], np.array(r_lin), atol=1e-10 * scale)
    # A width-64 depth-2 ReLU net after 200 steps is measurably off (could fail if the check were vacuous).
    c_net = modes.project(np.array(r_net), v)
    assert np.max(np.abs(c_net - pred)) > 1e-4 * scale


def test_operator_norm_kernel_change_is_largest_singular_value():
    rng = np.random.default_rng(4)
    k0 = _spd(rng, 5, cond=50.0)
    e = rng.normal(size=(3, 5, 5))
    kt = k0 + e + np.swapaxes(e, -1, -2)
    dk = modes.kernel_motion(kt, k0)
    direct = np.array([np.linalg.svd(m - k0, compute_uv=False)[0] for m in kt])
    np.testing.assert_allclose(dk, direct, rtol=1e-12)
    np.testing.assert_allclose(dk, np.linalg.norm(kt - k0, ord=2, axis=(-2, -1)), rtol=1e-12)
    # The ratio to lambda_min uses K_0's smallest eigenvalue.
    ratio = modes.laziness_ratio(kt[None], k0[None])
    np.testing.assert_allclose(ratio[0], direct / np.linalg.eigvalsh(k0)[0], rtol=1e-12)
    per_mode = modes.mode_laziness(kt[None], k0[None])[0]
    np.testing.assert_allclose(per_mode, direct.max() / np.linalg.eigvalsh(k0)[::-1], rtol=1e-12)


def test_laziness_ratios_from_motion_match_an_independent_computation():
    """The ``*_of_motion`` forms (used with NaN motions where a kernel is not finite) against the
    ratios computed here from SVDs: sup_t ||dK||_2 over lambda_min, each lambda_i and the horizon
    max(lambda_min, N/(lr T)). Everything float64 of O(0.1)-O(1e3) numbers: rtol 1e-12 is rounding."""
    rng = np.random.default_rng(5)
    n = 5
    k0 = np.stack([_spd(rng, n, cond=50.0), 0.1 * _spd(rng, n, cond=1e4)])  # (S=2, N, N); lambda_min 1 and 0.1
    e = rng.normal(size=(2, 3, n, n)) * 0.1
    kt = k0[:, None] + e + np.swapaxes(e, -1, -2)  # (S, T=3, N, N)
    motion = np.array([[np.linalg.svd(kt[s, t] - k0[s], compute_uv=False)[0] for t in range(3)] for s in range(2)])
    lam = np.linalg.eigvalsh(k0)[:, ::-1]  # descending, all far above RCOND * lambda_max
    np.testing.assert_allclose(modes.laziness_ratio(kt, k0), motion / lam[:, -1:], rtol=1e-12)
    np.testing.assert_allclose(modes.mode_laziness(kt, k0), motion.max(1)[:, None] / lam, rtol=1e-12)
    lr, steps = 0.3, 40
    horizon = np.maximum(lam[:, -1], n / (lr * steps))
    # N/(lr T) = 0.42: beyond the second K_0's slowest mode, not the first's (both branches of the max).
    assert horizon[0] == lam[0, -1] and horizon[1] > lam[1, -1]
    np.testing.assert_allclose(modes.horizon_laziness_ratio(kt, k0, learning_rate=lr, steps=steps),
                               motion.max(1) / horizon, rtol=1e-12)
    # A non-finite kernel's motion is NaN: the sup skips it, the per-checkpoint ratio keeps it.
    masked = motion.copy()
    masked[0, 2] = np.nan
    assert np.isnan(modes.laziness_of_motion(masked, k0)[0, 2])
    np.testing.assert_allclose(modes.mode_laziness_of_motion(masked, k0)[0], motion[0, :2].max() / lam[0],
                               rtol=1e-12)
    # A numerically singular K_0 (rank 1): lambda_min is clipped at RCOND * lambda_max, not ~0 or < 0.
    v = rng.normal(size=n)
    singular = np.outer(v, v)
    lam_max = v @ v
    np.testing.assert_allclose(modes.clipped_spectrum(singular)[-1], modes.RCOND * lam_max, rtol=1e-12)


def test_decay_factor_oscillating_modes_stay_real():
    lam = np.array([3.0, 1.0])
    d = modes.decay_factor(lam, lr=1.0, n=2, steps=np.arange(4))  # 1 - a = -0.5, 0.5
    np.testing.assert_allclose(d[:, 0], (-0.5) ** np.arange(4))
    np.testing.assert_allclose(d[:, 1], 0.5 ** np.arange(4))


def test_departure_step_finds_first_deviation():
    steps = np.array([0, 1, 2, 4, 8])
    pred = np.ones((5, 3))
    c = pred.copy()
    c[3:, 0] += 0.5  # mode 0 off by 50% of its amplitude from step 4
    c[:, 1] += 0.05  # mode 1 always within 10%
    c[4, 2] = np.nan  # non-finite counts as departed
    dep = modes.departure_step(c, pred, steps, tol=0.1)
    assert dep[0] == 4 and np.isnan(dep[1]) and dep[2] == 8


@pytest.mark.parametrize("bad", [np.ones((3, 4))])
def test_eig_modes_rejects_non_square(bad):
    with pytest.raises(ValueError, match="square"):
        modes.eig_modes(bad)
