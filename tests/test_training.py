"""The GD trainer against NumPy gradient descent; checkpoints; seed vmapping."""

import jax
import jax.numpy as jnp
import numpy as np

from studylib import models, training


def test_checkpoint_steps():
    s = training.checkpoint_steps(1000, 16)
    assert s[0] == 0 and s[1] == 1 and s[-1] == 1000
    assert np.all(np.diff(s) > 0)
    assert len(s) <= 16
    np.testing.assert_array_equal(training.checkpoint_steps(1, 5), [0, 1])


def test_gd_on_linear_model_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    y = rng.standard_normal((6, 1))
    w0 = rng.standard_normal((3, 1))
    model = lambda p, aux, x: x @ p  # noqa: E731
    lr, steps = 0.3, 25
    got = training.gd_steps(model, jnp.asarray(w0), None, jnp.asarray(x), jnp.asarray(y), lr, steps)
    w = w0.copy()
    for _ in range(steps):
        # gradient of 1/2 mean((xw - y)^2) over N = 6 outputs
        w -= lr * x.T @ (x @ w - y) / 6
    np.testing.assert_allclose(got, w, rtol=1e-12)


def test_vmapped_trainer_equals_per_seed_training():
    net = models.fully_connected(6, depth=2)
    x = jnp.linspace(-1, 1, 5)[:, None]
    y = jnp.sin(3 * x)
    params = training.init_params(net.init_fn, [0, 1], x.shape, dtype="float64")
    model = training.network_model(net.apply_fn)
    run = training.make_trainer(model)
    copy = jax.tree_util.tree_map(jnp.copy, params)
    batched = run(copy, params, x, y, 0.05, 7)
    one_seed = jax.jit(training.gd_steps, static_argnums=0)  # one compilation for both seeds, not eager ops
    for s in range(2):
        p_s = jax.tree_util.tree_map(lambda a, s=s: a[s], params)
        single = one_seed(model, p_s, None, x, y, 0.05, 7)
        for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(batched), strict=True):
            np.testing.assert_allclose(a, b[s], rtol=1e-12, atol=1e-14)


def test_float32_init_is_independent_of_x64_flag():
    net = models.fully_connected(4, depth=1)
    a = training.init_params(net.init_fn, [3], (2, 1), dtype="float32")
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(a))
    with training.x64_mode(False):
        b = training.init_params(net.init_fn, [3], (2, 1))
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
