"""The hand-written FC trainer against stax, jax.grad, nt.empirical_ntk_fn and nt.linearize.

All comparisons run in float64 on small nets; a tolerance of 1e-10 relative is far above
float64 rounding through ~10^2 steps (eps ~ 2e-16) and far below any real discrepancy
(a wrong scale, index or sign changes results at the 1e-3 level or more).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import models, sgd
from studylib.nt import nt

RTOL = 1e-10


def _setup(param="standard", width=7, depth=3, W_std=1.0, b_std=0.0, activation="relu", seed=0):
    net = models.fully_connected(width, depth=depth, W_std=W_std, b_std=b_std, parameterization=param,
                                 activation=activation)
    _, params = net.init_fn(jax.random.PRNGKey(seed), (1, 1))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    if b_std == 0.0 and param == "standard":
        # Zero biases would hide bias bugs in the forward pass: shift them (still trainable).
        params = [(p[0], p[1] + 0.1 * jnp.linspace(-1, 1, p[1].size).reshape(p[1].shape)) if len(p) == 2 else p
                  for p in params]
    m = sgd.mlp(models.ModelConfig(depth=depth, W_std=W_std, b_std=b_std, parameterization=param,
                                   activation=activation), width)
    x = jnp.linspace(-5, 5, 10, dtype=jnp.float64)[:, None]
    y = x**3 / 20
    return net, params, m, x, y


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, (np.abs(a - b).max(), scale)


@pytest.mark.parametrize("param,W_std,b_std,act", [pytest.param("standard", 1.0, 0.0, "relu", marks=pytest.mark.slow),
                                                  ("ntk", 1.4, 0.3, "erf")])  # standard ~15 s: CI -m slow
def test_forward_grad_ntk_match_stax(param, W_std, b_std, act):
    net, params, m, x, y = _setup(param, W_std=W_std, b_std=b_std, activation=act)
    dense = sgd.dense_params(params)
    # Each side jitted (as the study runs them): one compilation each, not one per eager operation.
    _close(jax.jit(lambda d: sgd.forward(m, d, x)[0])(dense), jax.jit(net.apply_fn)(params, x))
    # gradient of sum_i g_i f(x_i) against jax.grad through stax
    g = (y - 0.3)
    ref = jax.jit(jax.grad(lambda p: jnp.sum(g * net.apply_fn(p, x))))(params)
    ours = sgd.stax_params(jax.jit(lambda d: sgd.grads(m, d, x, g))(dense))
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref), strict=True):
        _close(a, b)
    # empirical NTK: train Gram and a cross block, against NT's implementation 2
    ntk_fn = jax.jit(nt.empirical_ntk_fn(net.apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=2))
    ours_ntk = jax.jit(lambda d, a, b=None: sgd.ntk(m, d, a, b))
    _close(ours_ntk(dense, x), ntk_fn(x, None, params))
    xt = jnp.linspace(-10, 10, 7, dtype=jnp.float64)[:, None]
    _close(ours_ntk(dense, xt, x), ntk_fn(xt, x, params))


def _run(plan, params, x, y, lr, perms):
    dense0 = sgd.dense_params(params)
    init_fn, seg, _ = sgd.compiled_runner(plan, vmapped=False)
    init = init_fn(dense0, x, x)
    copy = jax.tree_util.tree_map(jnp.copy, dense0)
    c0 = jnp.zeros(x.shape[0], x.dtype)
    dense, c, recs = seg(copy, c0, dense0, perms, x, y, lr, init)
    return dense, c, recs, init


def _reference_sgd(net, params, x, y, lr, batches, loss="mse"):
    """Seed-style SGD through stax and jax.grad, plus nt.linearize trained the same way."""
    cf = sgd.LOSS_FACTOR[loss] / 2
    lin = jax.jit(nt.linearize(net.apply_fn, params))  # jitted: one compilation, not one per eager operation
    gn = jax.jit(jax.grad(lambda p, xb, yb: cf * jnp.mean((net.apply_fn(p, xb) - yb) ** 2)))
    gl = jax.jit(jax.grad(lambda p, xb, yb: cf * jnp.mean((lin(p, xb) - yb) ** 2)))
    pn, pl = params, params
    for idx in batches:
        pn = jax.tree_util.tree_map(lambda a, b: a - lr * b, pn, gn(pn, x[idx], y[idx]))
        pl = jax.tree_util.tree_map(lambda a, b: a - lr * b, pl, gl(pl, x[idx], y[idx]))
    return pn, pl, lin


# slow set: [standard-1-direct] and [ntk-5-lowrank] check the same trainer against the same references (each
# method and each parameterization once) on the same problem
@pytest.mark.parametrize("param,batch,method", [
    ("standard", 1, "direct"), pytest.param("standard", 1, "lowrank", marks=pytest.mark.slow),
    pytest.param("ntk", 5, "direct", marks=pytest.mark.slow), ("ntk", 5, "lowrank")])
def test_sgd_matches_stax_and_linearize(method, param, batch):
    """Network trained by our trainer == stax + jax.grad SGD; linearized model in function
    space == nt.linearize trained with jax.grad, on identical batches (3 epochs)."""
    net, params, m, x, y = _setup(param, W_std=1.3 if param == "ntk" else 1.0, b_std=0.2 if param == "ntk" else 0.0)
    lr = 0.01
    epochs, rec = 3, 3
    plan = sgd.Plan(m, n_train=10, batch_size=batch, record_every=rec, loss="mse", method=method)
    perms = sgd.epoch_permutations(jax.random.PRNGKey(3), epochs, 10)
    dense, _, recs, _ = _run(plan, params, x, y, lr, perms.reshape(1, rec, 10))
    batches = np.asarray(perms).reshape(-1, batch)
    pn, pl, lin = _reference_sgd(net, params, x, y, lr, batches)
    for a, b in zip(jax.tree_util.tree_leaves(sgd.stax_params(dense)), jax.tree_util.tree_leaves(pn), strict=True):
        _close(a, b)
    # linearized model: outputs, parameter change norm and per-layer weight change norm
    _close(recs["f_lin_train"][-1], lin(pl, x)[:, 0])
    diff = jax.tree_util.tree_map(lambda a, b: a - b, pl, params)
    _close(recs["dsq_lin"][-1], sum(jnp.sum(d**2) for d in jax.tree_util.tree_leaves(diff)))
    wd = [jnp.sum(d[0] ** 2) for d in diff if len(d) == 2]
    _close(recs["wdsq_lin"][-1], jnp.stack(wd))
    # network metrics against direct evaluation
    _close(recs["f_net_train"][-1], jax.jit(net.apply_fn)(pn, x)[:, 0])
    dn = jax.tree_util.tree_map(lambda a, b: a - b, pn, params)
    _close(recs["dsq_net"][-1], sum(jnp.sum(d**2) for d in jax.tree_util.tree_leaves(dn)))
    assert float(recs["dsq_net"][-1]) > 1e-8  # the run did move the parameters


def test_minibatch_of_size_n_equals_full_batch_gd():
    """Batch size N: every step uses all points, so SGD equals GD (jax.grad of the mean loss)
    step for step: compared after each of 4 records of 2 steps."""
    _, params, m, x, y = _setup("standard")
    lr = 0.002
    plan = sgd.Plan(m, n_train=10, batch_size=10, record_every=2, loss="mse", method="direct")
    perms = sgd.epoch_permutations(jax.random.PRNGKey(1), 8, 10).reshape(4, 2, 10)
    _, _, recs, _ = _run(plan, params, x, y, lr, perms)
    dense0 = sgd.dense_params(params)
    # jitted with the step count traced: one compilation for the 4 references (eager: one scan per count)
    gd_ref = jax.jit(lambda d, n: sgd.forward(m, sgd.gd_reference(m, d, x, y, lr, n, loss="mse"), x)[0][:, 0])
    for r in range(4):
        _close(recs["f_net_train"][r], gd_ref(dense0, 2 * (r + 1)))
    # and the loss recorded is the seed's mean((f - y)^2), no 1/2
    f = recs["f_net_train"][-1]
    np.testing.assert_allclose(recs["loss_net"][-1], np.mean((np.asarray(f) - np.asarray(y[:, 0])) ** 2),
                               rtol=1e-12)


def test_epoch_permutations_cover_each_point_once():
    # jitted (as the runners call it): one compilation instead of one per eager operation
    perms = np.asarray(jax.jit(sgd.epoch_permutations, static_argnums=(1, 2))(jax.random.PRNGKey(0), 500, 10))
    assert perms.shape == (500, 10)
    assert (np.sort(perms, axis=1) == np.arange(10)).all()
    # and they are fresh: not all epochs in the same order (P(all equal) = (1/10!)^499)
    assert len({tuple(p) for p in perms}) > 400


def test_chunk_steps():
    assert sgd.chunk_steps(50, 1) == 50
    assert sgd.chunk_steps(10, 5) == 10
    assert sgd.chunk_steps(5, 10) == 5
    assert sgd.chunk_steps(100, 1) == 50
    assert sgd.chunk_steps(7, 64) == 1


def test_generic_trainer_kernels_on_a_residual_net():
    """The generic trainer's K_0 (train Gram and test x train block) and per-layer weight pieces
    K_0^(W_l) on res_fc (nested residual parameters) equal the kernels of full Jacobians
    (jax.jacrev), in float64 to RTOL; the weight pieces cover every weight array, nested ones included."""
    from studylib.models import ModelConfig

    cfg = ModelConfig(arch="res_fc", options={"blocks": 1}, b_std=0.2)
    plan = sgd.GenericPlan(cfg, 5, n_train=10, batch_size=5, record_every=1)
    net = plan.network()
    _, params = net.init_fn(jax.random.PRNGKey(0), (10, 1))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    x = jnp.linspace(-5, 5, 10, dtype=jnp.float64)[:, None]
    xt = jnp.linspace(-10, 10, 10, dtype=jnp.float64)[:, None] + 0.3  # a test grid apart from x
    paths = sgd.generic_weight_paths(plan)
    assert paths == models.weight_paths(params)
    assert len(paths) > len(models.dense_layer_indices(params))  # the residual block's Dense layers too
    init_fn, _, _ = sgd.compiled_runner(plan, vmapped=False)
    init = init_fn(params, x, xt)
    # Jacobians at x and at xt in one compiled call (leading axis 0: x, 1: xt)
    jac = jax.jit(jax.vmap(jax.jacrev(lambda p, xx: net.apply_fn(p, xx)[:, 0]), in_axes=(None, 0)))(
        params, jnp.stack([x, xt]))
    flat = [jnp.concatenate([a[k].reshape(10, -1) for a in jax.tree_util.tree_leaves(jac)], 1) for k in (0, 1)]
    _close(init["k0"], flat[0] @ flat[0].T)
    _close(init["k0_test"], flat[1] @ flat[0].T)
    _close(init["f0_test"], jax.jit(net.apply_fn)(params, xt)[:, 0])
    for l, jw in enumerate(models.weights_at(jac, paths)):  # kernel of one weight array alone
        jw = jw[0].reshape(10, -1)
        _close(init["k0_w"][l], jw @ jw.T)


def _generic_k3_case(arch):
    """A net with k = 3 outputs on flat (N, 3) inputs (fc) or images (N, 4, 4, 1) (cnn), float64."""
    n, k = 6, 3
    key = jax.random.PRNGKey(7)
    shape = (3,) if arch == "fc" else (4, 4, 1)
    x = jax.random.normal(key, (n, *shape), jnp.float64)
    xt = jax.random.normal(jax.random.fold_in(key, 1), (4, *shape), jnp.float64)
    y = jnp.sin(jnp.arange(n * k, dtype=jnp.float64)).reshape(n, k)
    cfg = models.ModelConfig(arch=arch, depth=2, W_std=1.3, b_std=0.2)
    return cfg, x, xt, y, n, k


@pytest.mark.parametrize("arch", ["fc", pytest.param("cnn", marks=pytest.mark.slow)])  # cnn ~11 s: CI -m slow
def test_generic_trainer_k_outputs_matches_stax_and_linearize(arch):
    """The generic trainer with k = 3 outputs (flat and image inputs) against stax + jax.grad SGD of
    (c/2) mean over the B x k outputs and nt.linearize trained the same way, step by step on identical
    batches (2 records of 2 epochs, batch 2), float64: parameters, outputs, losses, the full (N k, N k)
    K_0 (against jax.jacrev), K_0(test, train), the parameter and per-weight-array changes, and the
    linearized model's test outputs (final_fn)."""
    cfg, x, xt, y, n, k = _generic_k3_case(arch)
    batch, rec, lr = 2, 2, 0.05
    plan = sgd.GenericPlan(cfg, 4, n_train=n, batch_size=batch, record_every=rec, loss="half_mse",
                           input_shape=tuple(x.shape[1:]), out_dim=k)
    net = plan.network()
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    paths = sgd.generic_weight_paths(plan)
    perms = sgd.epoch_permutations(jax.random.PRNGKey(3), 2 * rec, n).reshape(2, rec, n)
    init_fn, seg, final_fn = sgd.compiled_runner(plan, vmapped=False)
    init = init_fn(params, x, xt)
    p, c, recs = seg(jax.tree_util.tree_map(jnp.copy, params), jnp.zeros(n * k, jnp.float64), params, perms, x, y,
                     jnp.asarray(lr), init)
    f_net_test, f_lin_test = final_fn(p, c, xt, init)
    # kernels at init against full Jacobians (flat rows n k + i)
    jac = jax.jit(jax.jacrev(lambda q, xx: net.apply_fn(q, xx).reshape(-1)))  # jitted: one compilation per shape
    jx, jt = jac(params, x), jac(params, xt)
    flat_x = jnp.concatenate([a.reshape(n * k, -1) for a in jax.tree_util.tree_leaves(jx)], 1)
    flat_t = jnp.concatenate([a.reshape(4 * k, -1) for a in jax.tree_util.tree_leaves(jt)], 1)
    _close(init["k0"], flat_x @ flat_x.T)
    assert np.abs(np.asarray(init["k0"]).reshape(n, k, n, k)[:, 0, :, 1]).max() > 0  # outputs are coupled
    _close(init["k0_test"], flat_t @ flat_x.T)
    # SGD and the linearization step by step
    batches = np.asarray(perms).reshape(-1, batch)
    pn, pl, lin = _reference_sgd(net, params, x, y, lr, batches, loss="half_mse")
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(pn), strict=True):
        _close(a, b)
    apply_fn = jax.jit(net.apply_fn)
    _close(recs["f_net_train"][-1], apply_fn(pn, x).reshape(-1))
    _close(recs["f_lin_train"][-1], lin(pl, x).reshape(-1))
    _close(f_net_test, apply_fn(pn, xt).reshape(-1))
    _close(f_lin_test, lin(pl, xt).reshape(-1))
    _close(recs["loss_net"][-1], 0.5 * jnp.mean((apply_fn(pn, x) - y) ** 2))
    _close(recs["loss_lin"][-1], 0.5 * jnp.mean((lin(pl, x) - y) ** 2))
    for got, ref_p in (("net", pn), ("lin", pl)):
        diff = jax.tree_util.tree_map(jnp.subtract, ref_p, params)
        _close(recs[f"dsq_{got}"][-1], sum(jnp.sum(d**2) for d in jax.tree_util.tree_leaves(diff)))
        _close(recs[f"wdsq_{got}"][-1], jnp.stack([jnp.sum(w**2) for w in models.weights_at(diff, paths)]))
    assert len(paths) == 3 and float(recs["dsq_net"][-1]) > 1e-6  # 2 hidden + readout; the run moved


@pytest.mark.parametrize("param,act", [("ntk", "relu"), ("standard", "erf")])
def test_full_batch_checkpoints_equal_generic_gd(param, act):
    """The hand-written full-batch GD at checkpoints against training.make_trainer (jax.grad of the stax
    net on 1/2 mean((f - y)^2)), two seeds vmapped, float64; the recorded NTK against NT's."""
    from studylib import kernels, training

    cfg = models.ModelConfig(depth=2, activation=act, parameterization=param, W_std=1.3, b_std=0.2)
    net = models.build(cfg, 6)
    x = jnp.linspace(-2, 2, 8, dtype=jnp.float64)[:, None]
    y = x**3 / 8
    x_test = jnp.linspace(-3, 3, 5, dtype=jnp.float64)[:, None]
    p0 = training.init_params(net.init_fn, [0, 1], x.shape, dtype="float64")
    ntk = jax.jit(kernels.empirical_ntk_fn(net.apply_fn))  # jitted: one compilation for the 11 calls below
    lam = np.linalg.eigvalsh(np.asarray(ntk(x, None, jax.tree_util.tree_map(lambda a: a[0], p0))))[-1]
    lr = 0.5 * 2 * x.shape[0] / lam
    ck = np.array([0, 1, 3, 10, 25])
    rec = sgd.full_batch_checkpoints(cfg, 6, p0, x, y, lr, ck, x_test=x_test)
    train = training.make_trainer(training.network_model(net.apply_fn))
    p = jax.tree_util.tree_map(jnp.copy, p0)
    apply_fn = jax.jit(net.apply_fn)
    prev = 0
    for t_i, t in enumerate(ck):
        if t > prev:
            p = train(p, p0, x, y, lr, int(t - prev))
        prev = t
        for s in range(2):
            ps = jax.tree_util.tree_map(lambda a, s=s: a[s], p)
            _close(rec["f_train"][s, t_i], apply_fn(ps, x)[:, 0])
            _close(rec["f_test"][s, t_i], apply_fn(ps, x_test)[:, 0])
            _close(rec["k_train"][s, t_i], ntk(x, None, ps))
    assert np.abs(rec["f_train"][:, -1] - rec["f_train"][:, 0]).max() > 1e-2  # it trained


def test_full_batch_trainer_is_a_drop_in_for_the_generic_one():
    """Same call and stax parameter layout as training.make_trainer; two outputs (k = 2) and two seeds,
    float64: the same parameters after 12 steps."""
    from studylib import training

    cfg = models.ModelConfig(depth=3, W_std=1.2, b_std=0.3)
    net = models.fully_connected(5, depth=3, W_std=1.2, b_std=0.3, out_dim=2)
    x = jnp.linspace(-2, 2, 6, dtype=jnp.float64)[:, None]
    y = jnp.concatenate([x**3 / 8, jnp.sin(x)], axis=1)
    p0 = training.init_params(net.init_fn, [0, 1], x.shape, dtype="float64")
    ref = training.make_trainer(training.network_model(net.apply_fn))(jax.tree_util.tree_map(jnp.copy, p0), p0, x,
                                                                      y, 0.05, 12)
    got = sgd.full_batch_trainer(cfg, 5)(jax.tree_util.tree_map(jnp.copy, p0), p0, x, y, 0.05, 12)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref), strict=True):
        _close(a, b)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(got),
                                                               jax.tree_util.tree_leaves(p0), strict=True)) > 1e-3


def test_full_batch_checkpoints_rejects_other_archs():
    cfg = models.ModelConfig(arch="res_fc", depth=3)
    with pytest.raises(ValueError, match="res_fc"):
        sgd.full_batch_checkpoints(cfg, 4, None, jnp.zeros((2, 1)), jnp.zeros((2, 1)), 0.1, [0, 1])


@pytest.mark.parametrize("param,act", [("ntk", "relu"), pytest.param("standard", "erf", marks=pytest.mark.slow)])
def test_full_ntk_with_k_outputs_matches_nt(param, act):
    """sgd.full_ntk (per-output features, one batched backward pass) against NT's full empirical kernel
    (trace_axes=(), implementation 2) made flat, k = 3 outputs, float64; and f(x) from the same pass."""
    from studylib import kernels

    cfg = models.ModelConfig(depth=2, activation=act, parameterization=param, W_std=1.3, b_std=0.2)
    net = models.build(cfg, 6, out_dim=3)
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 4), jnp.float64)
    _, params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    m = sgd.mlp(cfg, 6, in_dim=4, out_dim=3)
    got, f = jax.jit(lambda d: sgd.full_ntk(m, d, x))(sgd.dense_params(params))  # jitted, as the study runs it
    full = jax.jit(nt.empirical_ntk_fn(net.apply_fn, trace_axes=(), vmap_axes=0, implementation=2))
    want = kernels.flat_kernel(np.asarray(full(x, None, params)))
    assert got.shape == (15, 15)
    _close(got, want)
    _close(f, jax.jit(net.apply_fn)(params, x))
    # the output blocks are coupled: the off-diagonal (a != b) entries are not zero
    assert np.abs(np.asarray(want).reshape(5, 3, 5, 3)[:, 0, :, 1]).max() > 1e-3 * np.abs(want).max()


def test_full_batch_checkpoints_with_per_seed_targets():
    """Targets (S, N, k), one per seed (a centred run's Y + f_0(X)): each seed equals a run with its own
    targets alone, float64."""
    from studylib import training

    cfg = models.ModelConfig(depth=2, W_std=1.3, b_std=0.2)
    net = models.build(cfg, 6, out_dim=2)
    x = jnp.linspace(-2, 2, 8, dtype=jnp.float64)[:, None]
    y = jnp.stack([jnp.concatenate([x**3 / 8, jnp.sin(x)], 1), jnp.concatenate([-x / 2, jnp.cos(x)], 1)])
    p0 = training.init_params(net.init_fn, [0, 1], x.shape, dtype="float64")
    ck = np.array([0, 2, 9])
    rec = sgd.full_batch_checkpoints(cfg, 6, p0, x, y, 0.05, ck, measure=lambda n, d, d0, xx, xt: {
        "f": sgd.forward(n, d, xx)[0]})
    for s in range(2):
        ps = jax.tree_util.tree_map(lambda a, s=s: a[s:s + 1], p0)
        alone = sgd.full_batch_checkpoints(cfg, 6, ps, x, y[s], 0.05, ck, measure=lambda n, d, d0, xx, xt: {
            "f": sgd.forward(n, d, xx)[0]})
        _close(rec["f"][s], alone["f"][0])
    assert np.abs(rec["f"][0, -1] - rec["f"][1, -1]).max() > 1e-2  # different targets, different runs
