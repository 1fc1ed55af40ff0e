"""GD on the linearized model against the closed forms with its own empirical kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import closed_form, kernels, models, training

X = np.linspace(-5.0, 5.0, 10)[:, None]
Y = X**3 / 20.0
X_TEST = np.linspace(-8.0, 8.0, 17)[:, None]


@pytest.fixture(scope="module")
def setup():
    # b_std = 1 spreads the ReLU kinks over the data; with the default 0.1 the kinks of a narrow
    # net sit near x = 0 and K(X, X) is numerically singular on the outer points.
    net = models.fully_connected(12, depth=3, b_std=1.0)
    _, params = net.init_fn(jax.random.PRNGKey(3), X.shape)
    ntk = kernels.empirical_ntk_fn(net.apply_fn)
    k_tt = np.asarray(ntk(X, None, params))
    k_te = np.asarray(ntk(X_TEST, X, params))
    f0_tr = np.asarray(net.apply_fn(params, X))
    f0_te = np.asarray(net.apply_fn(params, X_TEST))
    return net, params, k_tt, k_te, f0_tr, f0_te


def _train_linearized(net, params, lr, steps):
    model = training.linearized_model(net.apply_fn)
    out = []
    p = params
    prev = 0
    for t in steps:
        p = training.gd_steps(model, p, params, jnp.asarray(X), jnp.asarray(Y), lr, int(t - prev))
        prev = t
        out.append((np.asarray(model(p, params, X)), np.asarray(model(p, params, X_TEST))))
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def test_linearized_gd_equals_discrete_closed_form(setup):
    net, params, k_tt, k_te, f0_tr, f0_te = setup
    lr = 0.9 * float(kernels.critical_learning_rate(k_tt))  # near the edge: a stringent case
    steps = np.array([0, 1, 3, 10, 40])
    tr, te = _train_linearized(net, params, lr, steps)
    ctr, cte = closed_form.discrete(k_tt, k_te, Y, f0_tr, f0_te, learning_rate=lr, steps=steps)
    # float64; both sides are exact for the same linear map, differing only by rounding
    # accumulated over 40 steps of O(10) quantities.
    np.testing.assert_allclose(tr, ctr, atol=1e-9)
    np.testing.assert_allclose(te, cte, atol=1e-9)


def test_linearized_gd_approaches_nt_flow(setup):
    net, params, k_tt, k_te, f0_tr, f0_te = setup
    lr = 0.02 * float(kernels.critical_learning_rate(k_tt))  # a = lr lambda / N <= 0.04 per step
    steps = np.array([0, 5, 50, 400])
    tr, te = _train_linearized(net, params, lr, steps)
    ftr, fte = closed_form.flow(k_tt, k_te, Y, f0_tr, f0_te, learning_rate=lr, steps=steps)
    # Per mode |(1-a)^t - exp(-a t)| <= a/(2e) + O(a^2) <= 0.0075 for a <= 0.04, times the mode's
    # initial residual; bound by 1% of ||f_0 - y||.
    scale = np.linalg.norm(f0_tr - Y)
    assert np.max(np.abs(tr - ftr)) < 0.01 * scale
    assert np.max(np.abs(te - fte)) < 0.01 * scale * np.linalg.norm(k_te @ np.linalg.pinv(k_tt), 2)
    # ... and the gap is a discretisation error: it shrinks ~linearly with lr at fixed lr*t.
    tr2, _ = _train_linearized(net, params, lr / 4, steps * 4)
    gap1 = np.max(np.abs(tr - ftr))
    gap2 = np.max(np.abs(tr2 - ftr))
    assert gap2 < gap1 / 2.5


def test_discrete_closed_form_reaches_interpolant(setup):
    _, _, k_tt, k_te, f0_tr, f0_te = setup
    lam = np.linalg.eigvalsh(k_tt)
    assert lam[-1] / lam[0] < 1e5, "fixture kernel must be well conditioned for this test"
    lr = 0.5 * float(kernels.critical_learning_rate(k_tt))
    # exp(-lr lambda_min t / N) at t = 1e8 is far below rounding for this condition number.
    tr, te = closed_form.discrete(k_tt, k_te, Y, f0_tr, f0_te, learning_rate=lr, steps=np.array([10**8]))
    np.testing.assert_allclose(tr[0], Y, atol=1e-8)
    want = f0_te + k_te @ np.linalg.solve(k_tt, Y - f0_tr)
    np.testing.assert_allclose(te[0], want, atol=1e-3 * np.abs(want).max())


def test_gain_and_decay_equal_the_step_recursion():
    """closed_form.gain/decay (the one GD gain of every study) against running the recursion
    c_{t+1} = c_t + (lr/N)(r_0 - K c_t) mode by mode in NumPy, for a fast, a slow, an oscillating
    (a > 1) and a null mode. Float64; 60 steps keep rounding ~1e-13 of the values."""
    lam = np.array([0.0, 0.05, 3.0, 5.5])
    lr, n, steps = 1.0, 4, np.arange(61)
    g = closed_form.gain(lam, lr, n, steps)
    d = closed_form.decay(lam, lr, n, steps)
    c, r = np.zeros(4), np.ones(4)  # per-mode coefficient c_t and residual r_t = r_0 - lam c_t
    want_g, want_d = [], []
    for _ in steps:
        want_g.append(c.copy())
        want_d.append(r.copy())
        c = c + (lr / n) * r
        r = 1.0 - lam * c
    np.testing.assert_allclose(g, np.array(want_g), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d[:, 1:], np.array(want_d)[:, 1:], rtol=1e-10, atol=1e-12)
    # Gradient flow: exp(-a t), its gain (1 - exp(-a t)) / lambda.
    flow = closed_form.gain(lam[1:], lr, n, steps, discrete=False)
    np.testing.assert_allclose(flow, -np.expm1(-lr * lam[1:] * steps[:, None] / n) / lam[1:], rtol=1e-12)
