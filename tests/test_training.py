"""The GD trainer against NumPy gradient descent; checkpoints; seed vmapping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_prefix_normal_is_jax_random_normal_bit_for_bit(monkeypatch):
    """training.prefix_normal draws a shape as the prefix of a longer stream (fewer compiled programs); it
    must give jax.random.normal's numbers exactly: every shape a dense layer draws (weights (in, out), biases
    (out,), (1,)), beyond the shortest stream too, float32 and float64, one key and a vmapped batch of keys.
    Typed keys, other dtypes and shapes beyond PREFIX_MAX_ENTRIES go to jax.random.normal itself."""
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1, 2)])
    for dtype in (jnp.float32, jnp.float64):
        for shape in [(), (3, 5), (300, 1), (300, 300)]:  # (300, 300): longer than the shortest stream
            want = jax.random.normal(keys[1], shape, dtype)
            got = training.prefix_normal(keys[1], shape, dtype)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=f"{shape} {dtype}")
        batch = jax.vmap(lambda k, d=dtype: training.prefix_normal(k, (1, 300), d))(keys)  # as init_params draws
        np.testing.assert_array_equal(batch, jax.vmap(lambda k, d=dtype: jax.random.normal(k, (1, 300), d))(keys))
    def no_stream(*_):
        raise AssertionError("drew a stream")

    monkeypatch.setattr(training, "_normal_stream", no_stream)  # beyond PREFIX_MAX_ENTRIES: jax.random.normal
    monkeypatch.setattr(training, "PREFIX_MAX_ENTRIES", 1000)
    np.testing.assert_array_equal(training.prefix_normal(keys[0], (40, 40)), jax.random.normal(keys[0], (40, 40)))
    with pytest.raises(AssertionError, match="drew a stream"):
        training.prefix_normal(keys[0], (10, 10))
    typed = jax.random.key(3)
    np.testing.assert_array_equal(training.prefix_normal(typed, (4, 4)), jax.random.normal(typed, (4, 4)))
    np.testing.assert_array_equal(training.prefix_normal(keys[0], (5,), jnp.float16),
                                  jax.random.normal(keys[0], (5,), jnp.float16))


def test_init_params_draws_what_the_networks_init_fn_draws():
    """init_params (NT's dense layers drawing by prefix_normal) gives the parameters of vmapped init_fn
    itself, bit for bit, at widths whose weights are shorter and longer than the shortest stream; NT's
    module is left as it was, also after an error inside."""
    from neural_tangents._src.stax import linear

    for dtype in ("float32", "float64"):
        for width in (8, 300):
            net = models.build(models.ModelConfig(depth=2), width)
            keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 5)])
            with training.x64_mode(dtype == "float64"):
                want = jax.vmap(lambda k, f=net.init_fn: f(k, (4, 1))[1])(keys)
            got = training.init_params(net.init_fn, [0, 5], (4, 1), dtype=dtype)
            for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
                assert g.dtype == jnp.dtype(dtype)
                np.testing.assert_array_equal(g, w, err_msg=f"{dtype} width {width}")
    assert linear.random is jax.random
    try:
        with training.prefix_normals(), training.prefix_normals():
            assert isinstance(linear.random, training._PrefixRandom)
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert linear.random is jax.random
