"""Centred networks (studylib.centring): f(theta) - f(theta_0) trained and measured, float64, each fact
against an independent computation (NT's closed forms, nt.linearize trained by jax.grad, the generic
trainer on the centred function itself)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import centring, closed_form, compare, kernels, models, training
from studylib.config import ConfigError
from studylib.data import DataConfig
from studylib.nt import nt

K_OUT = 3


@pytest.fixture(scope="module")
def small():
    """A width-16 depth-2 net with k = 3 outputs on 8 inputs, its full (24 x 24) kernel at init, float64."""
    net = models.fully_connected(16, depth=2, b_std=0.5, out_dim=K_OUT)
    rng = np.random.default_rng(11)
    x, x_test = rng.standard_normal((8, 4)), rng.standard_normal((5, 4))
    y = np.eye(K_OUT)[rng.integers(0, K_OUT, 8)] - 1.0 / K_OUT
    _, params = net.init_fn(jax.random.PRNGKey(2), x.shape)
    jac_ntk = jax.jit(kernels.jacobian_ntk, static_argnums=0)  # one compilation per shape, not one per eager op
    k_tt = np.asarray(jac_ntk(net.apply_fn, x, x, params))  # J J^T from full Jacobians, flat
    k_te = np.asarray(jac_ntk(net.apply_fn, x_test, x, params))
    return net, params, x, x_test, y, k_tt, k_te


def _nt_flow(k_tt, k_te, y, lr, t):
    """NT's gradient_descent_mse with zero initial outputs, full kernels in NT's layout; t=None: t = inf."""
    pred = nt.predict.gradient_descent_mse(jnp.asarray(closed_form.nt_layout(k_tt, K_OUT, K_OUT)), jnp.asarray(y),
                                           learning_rate=lr, trace_axes=())
    zeros_tr, zeros_te = np.zeros_like(y), np.zeros((k_te.shape[0] // K_OUT, K_OUT))
    tr, te = pred(t, zeros_tr, zeros_te, jnp.asarray(closed_form.nt_layout(k_te, K_OUT, K_OUT)))
    return np.asarray(tr), np.asarray(te)


def test_centred_closed_form_equals_nt_with_zero_initial_outputs(small):
    """The closed forms a centred run evaluates (studylib.closed_form from f_0 = 0, also at t = inf: the
    gain's limit) against NT's gradient_descent_mse with zero initial outputs (t=None for the limit)."""
    _, _, _, _, y, k_tt, k_te = small
    lr = 0.5 * float(kernels.critical_learning_rate(k_tt))
    steps = np.array([0.0, 1.0, 10.0, 100.0])
    start = centring.initial_outputs(np.ones_like(y), True)
    assert np.all(start == 0)
    got_tr, got_te = closed_form.flow_eigen(k_tt, k_te, y, start, np.zeros((5, K_OUT)), learning_rate=lr, steps=steps)
    want_tr, want_te = _nt_flow(k_tt, k_te, y, lr, steps)
    # float64: the same flow in two eigenbases; O(1) outputs agree to rounding times the kernel's condition
    scale = np.abs(want_te).max()
    np.testing.assert_allclose(got_tr, want_tr, atol=1e-9 * scale)
    np.testing.assert_allclose(got_te, want_te, atol=1e-9 * scale)
    c_inf = closed_form.coefficients(k_tt, y, start, learning_rate=lr, steps=[np.inf], discrete=False)
    lim_tr, lim_te = _nt_flow(k_tt, k_te, y, lr, None)
    # the t = inf limit interpolates the targets (K_0 of a 16-wide net on 8 points is well conditioned)
    np.testing.assert_allclose(closed_form.kernel_apply(k_tt, c_inf[0]), lim_tr, atol=1e-8)
    np.testing.assert_allclose(lim_tr, y, atol=1e-8)
    np.testing.assert_allclose(closed_form.kernel_apply(k_te, c_inf[0]), lim_te, atol=1e-8 * np.abs(lim_te).max())
    # and the discrete form's limit is the same point (GD below the critical rate converges there)
    c_disc = closed_form.coefficients(k_tt, y, start, learning_rate=lr, steps=[np.inf], discrete=True)
    np.testing.assert_allclose(c_disc, c_inf, rtol=1e-12)


def test_centred_linearization_step_by_step_equals_closed_form(small):
    """nt.linearize of the centred function, trained by jax.grad GD step by step, starts at 0 and follows
    the discrete closed form with the empirical kernel and f_0 = 0 exactly; NT's flow within the
    flow-vs-GD difference; the shifted-target identity: GD on the uncentred linearization with targets
    Y + f_0(X) gives the same parameters."""
    net, params, x, x_test, y, k_tt, k_te = small
    g = centring.centred_apply(net.apply_fn, params)
    lin = jax.jit(nt.linearize(g, params))  # jitted: one compilation per input shape
    lr = 0.05 * float(kernels.critical_learning_rate(k_tt))  # a = lr lambda / (N k) <= 0.1 per step
    steps = np.array([0, 1, 5, 20, 80])
    train = training.make_trainer(lambda p, aux, xx: lin(p, xx))  # jax.grad GD, one compile (steps traced)
    batch = lambda tree: jax.tree_util.tree_map(lambda a: a[None], tree)  # noqa: E731  a seed axis of 1
    p, prev, tr, te = batch(params), 0, [], []
    for t in steps:
        p = train(p, p, jnp.asarray(x), jnp.asarray(y), lr, int(t - prev)) if t > prev else p
        prev = t
        one = jax.tree_util.tree_map(lambda a: a[0], p)
        tr.append(np.asarray(lin(one, x)))
        te.append(np.asarray(lin(one, x_test)))
    tr, te = np.stack(tr), np.stack(te)
    assert np.all(tr[0] == 0) and np.all(te[0] == 0)  # g_lin(theta_0) = g(theta_0) = 0 exactly
    zeros = np.zeros_like(y)
    ctr, cte = closed_form.discrete(k_tt, k_te, y, zeros, np.zeros((5, K_OUT)), learning_rate=lr, steps=steps)
    # float64, the same linear recursion: rounding of O(1) outputs over 80 steps
    np.testing.assert_allclose(tr, ctr, atol=1e-10)
    np.testing.assert_allclose(te, cte, atol=1e-10)
    ntr, nte = _nt_flow(k_tt, k_te, y, lr, steps.astype(float))
    # per mode |(1 - a)^t - exp(-a t)| <= a / (2e) + O(a^2) <= 0.02 for a <= 0.1, times |y| <= 1
    np.testing.assert_allclose(tr, ntr, atol=0.03)
    np.testing.assert_allclose(te, nte, atol=0.03 * np.abs(nte).max() + 0.01)
    # GD on the uncentred linearization with per-seed targets Y + f_0(X): the same parameters
    f0 = np.asarray(net.apply_fn(params, x))
    shifted = centring.shifted_targets(y, f0[None])[0]
    p2 = jax.jit(training.gd_steps, static_argnums=0)(training.linearized_model(net.apply_fn), params, params,
                                                      jnp.asarray(x), jnp.asarray(shifted), lr, int(steps[-1]))
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_centred_model_has_the_network_gradient(small):
    """centring.centred_model: value f(theta) - f(theta_0), gradient that of f (the empirical NTK is unchanged)."""
    net, params, x, _, _, _, _ = small
    model = centring.centred_model(training.network_model(net.apply_fn))
    moved = jax.tree_util.tree_map(lambda a: a + 0.01, params)
    np.testing.assert_allclose(model(moved, params, x), net.apply_fn(moved, x) - net.apply_fn(params, x), atol=1e-14)
    assert np.all(np.asarray(model(params, params, x)) == 0)
    g1 = jax.grad(lambda p: jnp.sum(model(p, params, x) ** 2))(moved)
    g2 = jax.grad(lambda p: jnp.sum((net.apply_fn(p, x) - net.apply_fn(params, x)) ** 2))(moved)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_centre_resolves_for_the_targets():
    assert centring.resolve("auto", "onehot") and not centring.resolve("auto", "raw")
    assert centring.resolve("on", "raw") and not centring.resolve("off", "onehot")
    assert compare.CompareConfig().centred is False  # the 1-D toy keeps its numbers
    assert compare.CompareConfig(data=DataConfig(name="digits")).centred is True
    assert compare.CompareConfig(data=DataConfig(name="digits"), centre="off").centred is False
    with pytest.raises(ConfigError, match=r"centre: unknown value 'yes'; accepted: auto, on, off"):
        compare.CompareConfig(centre="yes")


def test_shifted_targets_train_the_centred_network():
    """The hand-written FC trainer on per-seed targets Y + f_0(X) (how compare trains a centred FC net)
    against jax.grad GD of the centred stax function f(theta) - f(theta_0) itself (the generic trainer's
    way): the same outputs minus f_0 at every checkpoint, two seeds, k = 3, float64."""
    from studylib import sgd

    cfg = models.ModelConfig(depth=2, W_std=1.3, b_std=0.2)
    net = models.build(cfg, 8, out_dim=K_OUT)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((6, 4)))
    y = np.eye(K_OUT)[rng.integers(0, K_OUT, 6)] - 1.0 / K_OUT
    p0 = training.init_params(net.init_fn, [0, 1], x.shape, dtype="float64")
    apply_seeds = jax.jit(jax.vmap(net.apply_fn, in_axes=(0, None)))
    f0 = np.asarray(apply_seeds(p0, x))
    ck = np.array([0, 3, 12])
    rec = sgd.full_batch_checkpoints(cfg, 8, p0, x, jnp.asarray(centring.shifted_targets(y, f0)), 0.1, ck,
                                     measure=lambda n, d, d0, xx, xt: {"f": sgd.forward(n, d, xx)[0]})
    got = centring.centre_records(rec["f"])  # (S, T, N, k)
    assert np.all(got[:, 0] == 0)
    train = training.make_trainer(centring.centred_model(training.network_model(net.apply_fn)))
    p, prev = jax.tree_util.tree_map(jnp.copy, p0), 0
    for j, t in enumerate(ck):
        p = train(p, p0, x, jnp.asarray(y), 0.1, int(t - prev)) if t > prev else p
        prev = t
        want = np.asarray(apply_seeds(p, x)) - f0
        # float64, 12 steps of O(1) outputs: the two differ by rounding only
        np.testing.assert_allclose(got[:, j], want, atol=1e-12)
    assert np.abs(got[:, -1]).max() > 1e-2  # it trained


DIGITS = dict(widths=(8,), seeds=2, steps=6, n_checkpoints=3, kernel_points=10, dtype="float64", quad_max_width=0)


@pytest.fixture(scope="module")
def centred_width():
    """One centred digits width (N = 20, k = 10) by compare's own cell (the hand-written trainer), float64."""
    from studylib import data as D
    from studylib.compare import cell

    cfg = compare.CompareConfig(**DIGITS, data=DataConfig(name="digits", n_train=20, n_test=12))
    assert cfg.centred and cfg.lr_rule == "emp"
    ds = D.load_for(cfg.data, cfg.model)
    return cfg, ds, cell.run_width(cfg, 8, ds)


def test_centred_network_starts_at_zero(centred_width):
    """Every model of a centred run is exactly 0 at step 0 (g(theta_0) = 0), and the network trained."""
    _, ds, res = centred_width
    for name in ("net", "lin", "closed_inf", "closed_emp", "closed_emp_discrete"):
        for where in ("train", "test"):
            assert np.all(res[f"predictions_{where}"][name][:, 0] == 0), (name, where)
    assert np.abs(res["predictions_test"]["net"][:, -1]).max() > 1e-3
    assert np.all(res["curves"]["loss_net"][:, -1] < 0.5 * np.mean(ds.y_train**2))


def test_centred_closed_inf_in_a_run_equals_nt(centred_width):
    """compare's own closed_inf predictions of a centred run (stored float32) against NT's
    gradient_descent_mse with the analytic kernel and zero initial outputs, at the run's checkpoints."""
    cfg, ds, res = centred_width
    theta_tt = res["theta_train"]
    net = models.build(cfg.model, 8, out_dim=10)
    theta_te = np.asarray(net.kernel_fn(ds.x_test, ds.x_train, "ntk"), np.float64)
    pred = nt.predict.gradient_descent_mse(jnp.asarray(theta_tt), jnp.asarray(ds.y_train),
                                           learning_rate=res["learning_rate"])
    want_tr, want_te = pred(jnp.asarray(res["steps"], jnp.float64), np.zeros_like(ds.y_train),
                            np.zeros((len(ds.x_test), 10)), jnp.asarray(theta_te))
    got = res["predictions_test"]["closed_inf"]  # (S, T, M, k) float32: both seeds the same (f_0 = 0)
    # stored as float32: rounding of O(0.1) outputs
    for s in range(2):
        np.testing.assert_allclose(got[s], np.asarray(want_te), atol=1e-6)
        np.testing.assert_allclose(res["predictions_train"]["closed_inf"][s], np.asarray(want_tr), atol=1e-6)
    lim = nt.predict.gradient_descent_mse(jnp.asarray(theta_tt), jnp.asarray(ds.y_train),
                                          learning_rate=res["learning_rate"])(None, np.zeros_like(ds.y_train),
                                                                              np.zeros((len(ds.x_test), 10)),
                                                                              jnp.asarray(theta_te))
    np.testing.assert_allclose(res["predictions_test"]["closed_inf_limit"][0, 0], np.asarray(lim[1]), atol=1e-5)
