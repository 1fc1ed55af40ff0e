"""GD on the linearized model against the closed forms with its own empirical kernel."""

import functools

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
    ntk = jax.jit(kernels.empirical_ntk_fn(net.apply_fn))  # jitted: one compilation, not one per eager op
    k_tt = np.asarray(ntk(X, None, params))
    k_te = np.asarray(ntk(X_TEST, X, params))
    apply_fn = jax.jit(net.apply_fn)
    f0_tr = np.asarray(apply_fn(params, X))
    f0_te = np.asarray(apply_fn(params, X_TEST))
    return net, params, k_tt, k_te, f0_tr, f0_te


def _gd_and_outputs(model):
    """Jitted ``run(p, p0, x, y, lr, n) -> p`` (lr and the step count traced: one compilation for every
    segment and rate) and ``outputs(p, p0, x)`` of a linearized model."""
    run = jax.jit(lambda p, p0, x, y, lr, n: training.gd_steps(model, p, p0, x, y, lr, n))
    return run, jax.jit(model)


@functools.lru_cache  # one model, hence one compilation, per net: shared by the tests of the fixture
def _linearized_runner(apply_fn):
    return _gd_and_outputs(training.linearized_model(apply_fn))


def _train_linearized(net, params, lr, steps):
    run, model = _linearized_runner(net.apply_fn)
    out = []
    p = params
    prev = 0
    for t in steps:
        p = run(p, params, jnp.asarray(X), jnp.asarray(Y), lr, int(t - prev))
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


# ------------------------------------------------------------------------------------ several outputs

K_OUT = 10


@pytest.fixture(scope="module")
def setup_k():
    """A width-12 net with k = 10 outputs on 6 inputs: its full (60 x 60) kernel at init, float64."""
    net = models.fully_connected(12, depth=2, b_std=1.0, out_dim=K_OUT)
    rng = np.random.default_rng(5)
    x, x_test = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    y = np.eye(K_OUT)[rng.integers(0, K_OUT, 6)] - 1.0 / K_OUT
    _, params = net.init_fn(jax.random.PRNGKey(7), x.shape)
    full = jax.jit(kernels.empirical_ntk_fn(net.apply_fn, trace_outputs=False))  # one compilation
    k_tt = kernels.flat_kernel(np.asarray(full(x, None, params)))
    k_te = kernels.flat_kernel(np.asarray(full(x_test, x, params)))
    return net, params, x, x_test, y, k_tt, k_te


def test_linearize_k10_step_by_step_equals_function_space_gd(setup_k):
    """nt.linearize trained by GD step by step with k = 10 outputs equals the exact discrete closed form
    with the full (N k x N k) kernel, on training and test inputs; the per-output (traced / k) kernel,
    which ignores the coupling of the outputs, does not."""
    net, params, x, x_test, y, k_tt, k_te = setup_k
    f0, f0_te = np.asarray(net.apply_fn(params, x)), np.asarray(net.apply_fn(params, x_test))
    lr = 0.9 * float(kernels.critical_learning_rate(k_tt))  # 2 N k / lambda_max: near the edge
    steps = np.array([0, 1, 4, 15, 60])
    run, model = _gd_and_outputs(training.linearized_model(net.apply_fn))
    p, prev, tr, te = params, 0, [], []
    for t in steps:
        p = run(p, params, jnp.asarray(x), jnp.asarray(y), lr, int(t - prev))
        prev = t
        tr.append(np.asarray(model(p, params, x)))
        te.append(np.asarray(model(p, params, x_test)))
    ctr, cte = closed_form.discrete(k_tt, k_te, y, f0, f0_te, learning_rate=lr, steps=steps)
    assert ctr.shape == (5, 6, K_OUT) and cte.shape == (5, 4, K_OUT)
    # float64: the same linear recursion; 60 steps of O(1) outputs leave rounding ~1e-13
    np.testing.assert_allclose(np.stack(tr), ctr, atol=1e-9)
    np.testing.assert_allclose(np.stack(te), cte, atol=1e-9)
    # theta_t - theta_0 = J_0^T c_t: f_lin(x_test) from one vjp and one jvp equals K(x_test, X) c_t
    c = closed_form.coefficients(k_tt, y, f0, learning_rate=lr, steps=steps)
    @jax.jit  # one compilation instead of one per eager operation
    def df_fn(c_t):
        _, vjp = jax.vjp(lambda q: net.apply_fn(q, x), params)
        delta = vjp(c_t)[0]
        return jax.jvp(lambda q: net.apply_fn(q, x_test), (params,), (delta,))[1]

    df = df_fn(jnp.asarray(c[-1]))
    np.testing.assert_allclose(f0_te + np.asarray(df), cte[-1], atol=1e-9)
    # Ignoring the output coupling (block-diagonal kernel with the mean diagonal block) is visibly wrong
    per_output = kernels.traced_kernel(k_tt, K_OUT)
    wrong, _ = closed_form.discrete(per_output, k_te, y, f0, f0_te, learning_rate=lr, steps=steps)
    assert np.abs(wrong[-1] - ctr[-1]).max() > 1e-3


@pytest.mark.parametrize("kind", ["flat", "per_output"])
def test_closed_forms_equal_nt_predict_with_k_outputs(setup_k, kind):
    """Flow (NumPy eigenbasis) and NT's gradient_descent_mse with the same kernels: the full flat
    kernel (NT layout (N, N, k, k), trace_axes=()) and a per-output kernel (N, N) acting as K (x) I_k.
    NT's flow is also what closed_form.flow returns; the discrete form tends to it as lr -> 0."""
    net, params, x, x_test, y, k_tt, k_te = setup_k
    if kind == "per_output":
        k_tt, k_te = kernels.traced_kernel(k_tt, K_OUT), kernels.traced_kernel(k_te, K_OUT)
        assert closed_form.layout(k_tt, y) == "per_output"
    else:
        assert closed_form.layout(k_tt, y) == "flat"
    f0, f0_te = np.asarray(net.apply_fn(params, x)), np.asarray(net.apply_fn(params, x_test))
    outputs = K_OUT if kind == "per_output" else 1
    lr = 0.5 * float(kernels.critical_learning_rate(k_tt, outputs=outputs))
    steps = np.array([0.0, 1.0, 10.0, 100.0, 1e4])
    want_tr, want_te = closed_form.flow(k_tt, k_te, y, f0, f0_te, learning_rate=lr, steps=steps)
    got_tr, got_te = closed_form.flow_eigen(k_tt, k_te, y, f0, f0_te, learning_rate=lr, steps=steps)
    # float64; NT solves in its own eigenbasis: agreement to rounding of O(1) outputs times the
    # condition of the kernel's slowest modes (checked < 1e-8 here)
    scale = np.abs(want_te).max()
    np.testing.assert_allclose(got_tr, want_tr, atol=1e-9 * scale)
    np.testing.assert_allclose(got_te, want_te, atol=1e-8 * scale)
    # directly with NT, in its layout
    from studylib.nt import nt
    if kind == "flat":
        pred = nt.predict.gradient_descent_mse(jnp.asarray(closed_form.nt_layout(k_tt, K_OUT, K_OUT)), jnp.asarray(y),
                                               learning_rate=lr, trace_axes=())
        nt_tr, nt_te = pred(steps, f0, f0_te, jnp.asarray(closed_form.nt_layout(k_te, K_OUT, K_OUT)))
    else:
        pred = nt.predict.gradient_descent_mse(jnp.asarray(k_tt), jnp.asarray(y), learning_rate=lr)
        nt_tr, nt_te = pred(steps, f0, f0_te, jnp.asarray(k_te))
    np.testing.assert_allclose(got_tr, np.asarray(nt_tr), atol=1e-9 * scale)
    np.testing.assert_allclose(got_te, np.asarray(nt_te), atol=1e-8 * scale)
    # per output: each column follows the scalar closed form with the loss normalised by N k
    if kind == "per_output":
        col_tr, _ = closed_form.flow_eigen(k_tt, k_te, y[:, 2], f0[:, 2], f0_te[:, 2], learning_rate=lr / K_OUT,
                                           steps=steps)
        np.testing.assert_allclose(got_tr[..., 2], col_tr[..., 0], atol=1e-12 * scale)
