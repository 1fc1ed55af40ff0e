"""study.datasize: the tiny config end to end, the infinite-width closed form against NT and against GD step by
step, the power-iteration lambda_max against the full empirical NTK, and the config's errors."""

from __future__ import annotations

import numpy as np
import pytest

from studylib.config import ConfigError


def _cfg(**kw):
    from studylib import cli, datasize

    argv = ["--preset", "tiny"] + [a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    return cli.config_from_args(datasize, cli.parser(datasize, "").parse_args(argv))


@pytest.mark.parametrize("widths", [
    "16",  # one width: 2 cells (N = 20, 40), each its own compilation, as every cell of the sweep
    # slow set: the "16" case checks the same run, summary, arrays, table and figure on one width
    pytest.param("8,16", marks=pytest.mark.slow),  # the preset's 2 widths: the excess slope over widths too
])
def test_tiny_run_end_to_end(tmp_path, widths):
    """Runs, writes summary, arrays, table and figure; the centred net starts at exactly 0, so at step 0 its test
    loss equals the closed form's and ½ mean y_test² (computed here from the data)."""
    from studylib import data as D
    from studylib import datasize

    cfg = _cfg(widths=widths)
    summary = datasize.run(cfg, tmp_path, progress=False)
    assert summary["step0_max_abs"] == 0.0  # f(theta_0) - f(theta_0) by the same function: exact
    arrays = np.load(tmp_path / "curves.npz")
    ds = D.load_for(cfg.data, cfg.model)
    half_mean_y2 = 0.5 * np.mean(ds.y_test ** 2)
    # float32 network outputs are exactly 0 at step 0; the closed form's float64 ones too: equal to rounding
    np.testing.assert_allclose(arrays["loss_net"][..., 0], half_mean_y2, rtol=1e-12)
    np.testing.assert_allclose(arrays["loss_inf"][..., 0], half_mean_y2, rtol=1e-12)
    assert arrays["loss_net"].shape[:3] == (len(cfg.n_trains), len(cfg.widths), cfg.seeds)
    ratio = np.asarray(summary["ratio"])
    assert ratio.shape == (len(cfg.n_trains), len(cfg.widths)) == (2, len(widths.split(",")))
    assert np.isfinite(ratio).all() and (ratio > 0).all()
    # training lowers the test loss below its step-0 value (all-zero outputs): the infinite-width form always,
    # the seed mean of the widest net on the most data (narrow tiny nets on 20 images may not)
    assert (arrays["loss_inf"][..., -2] < half_mean_y2).all()
    assert arrays["loss_net"][-1, -1, :, -1].mean() < half_mean_y2
    text = datasize.format_table(summary)
    assert "N²" in text and "plateau" in text
    figs = datasize.figures(tmp_path)
    assert any(p.suffix == ".png" and p.is_file() for p in figs)


def _shared(n: int = 30, m: int = 20, k: int = 3, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """A prepare()-like entry from NT's analytic NTK of a depth-2 ReLU net on random inputs, float64."""
    import jax
    import jax.numpy as jnp

    from studylib import kernels, models
    from studylib.models import ModelConfig

    rng = np.random.default_rng(seed)
    x, xt = rng.normal(size=(n, 6)), rng.normal(size=(m, 6))
    y, yt = rng.normal(size=(n, k)), rng.normal(size=(m, k))
    kfn = models.build(ModelConfig(depth=2), 8, out_dim=k).kernel_fn
    # jitted: one compilation (~0.4 s) instead of one per eager operation of NT's kernel (~3 s)
    both = jax.jit(lambda a, b: (kernels.analytic(kfn, a, None), kernels.analytic(kfn, b, a)))
    theta, theta_test = (np.asarray(t, np.float64) for t in both(jnp.asarray(x), jnp.asarray(xt)))
    return {"theta": theta, "theta_test": theta_test, "eig": np.linalg.eigh(theta)}, y, yt


def test_closed_form_equals_nt_gradient_descent_mse_from_zero():
    """Flow at finite times and t = inf against NT's predict.gradient_descent_mse with zero initial outputs."""
    import jax.numpy as jnp

    from studylib.datasize.cell import closed_form_curves
    from studylib.nt import nt

    sh, y, yt = _shared()
    lr, steps = 0.5 * nt.predict.max_learning_rate(jnp.asarray(sh["theta"]), y_train_size=y.size), [0, 3, 50]
    out = closed_form_curves(sh, y, yt, lr=lr, steps=np.array(steps), discrete=False)
    fn = nt.predict.gradient_descent_mse(jnp.asarray(sh["theta"]), jnp.asarray(y), learning_rate=lr)
    zeros_tr, zeros_te = jnp.zeros_like(jnp.asarray(y)), jnp.zeros_like(jnp.asarray(yt))
    ref = [np.asarray(fn(t, zeros_tr, zeros_te, jnp.asarray(sh["theta_test"]))[1]) for t in steps]
    ref.append(np.asarray(fn(None, zeros_tr, zeros_te, jnp.asarray(sh["theta_test"]))[1]))
    scale = np.abs(np.stack(ref)).max()
    # float64 eigendecompositions of a condition-~1e2 Gram on both sides: agreement to ~1e-12 of the outputs' size
    np.testing.assert_allclose(out["f_test"], np.stack(ref), rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(out["loss"], 0.5 * np.mean((np.stack(ref) - yt) ** 2, axis=(1, 2)), rtol=1e-9)


def test_discrete_closed_form_equals_gd_step_by_step():
    """Exact discrete GD in closed form against iterating f <- f - (lr/(N k)) K (f - y) from 0 in NumPy."""
    from studylib.datasize.cell import closed_form_curves

    sh, y, yt = _shared()
    n, k = y.shape
    lr = 0.9 * 2 * n * k / sh["eig"][0][-1]  # near the critical rate: oscillating top mode, still stable
    out = closed_form_curves(sh, y, yt, lr=lr, steps=np.array([0, 1, 7, 40]), discrete=True)
    f, ft, ref = np.zeros_like(y), np.zeros_like(yt), {0: np.zeros_like(yt)}
    for t in range(1, 41):
        r = f - y
        f, ft = f - lr / (n * k) * sh["theta"] @ r, ft - lr / (n * k) * sh["theta_test"] @ r
        ref[t] = ft
    expected = np.stack([ref[t] for t in (0, 1, 7, 40)])
    np.testing.assert_allclose(out["f_test"][:-1], expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_power_iteration_lambda_max_equals_full_empirical_ntk():
    """lambda_max of each seed's (N k, N k) empirical NTK: power iteration against eigvalsh of sgd.full_ntk."""
    import jax
    import jax.numpy as jnp

    from studylib import models, sgd, training
    from studylib.datasize.cell import lambda_max_power
    from studylib.models import ModelConfig

    m = ModelConfig(depth=3)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(12, 5)))
    net = models.build(m, 16, out_dim=3)
    p0 = training.init_params(net.init_fn, [0, 1], x.shape, dtype="float64")
    mlp = sgd.fast_mlp(m, 16, in_dim=5, out_dim=3)
    dense0 = sgd.dense_params(p0)
    got = lambda_max_power(mlp, dense0, x, 200)
    full = jax.jit(lambda d: sgd.full_ntk(mlp, d, x)[0])  # one compile, not one per eager operation
    want = [np.linalg.eigvalsh(np.asarray(full(tuple((w[s], b[s]) for w, b in dense0))))[-1] for s in range(2)]
    # a Rayleigh quotient after 200 iterations: error ~ (lambda_2/lambda_1)^400, far below 1e-8 here
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_smallest_matching_width_plateau_and_excess_slope():
    from studylib.datasize.summary import excess_slope, plateau_change, smallest_matching_width

    widths = [64, 128, 256, 512]
    exact = 1.0 + 3.0 * np.array(widths, float)[:, None] ** -0.5 * np.array([[0.9, 1.0, 1.1]])  # (W, S)
    # every seed an exact power law: the fitted slope is -1/2 to float rounding
    assert abs(excess_slope(widths, exact)["slope"] + 0.5) < 1e-9
    assert excess_slope(widths, np.full((4, 3), 0.95))["slope"] is None

    assert smallest_matching_width([64, 128, 256], np.array([1.5, 1.05, 1.2]), 0.1) is None
    assert smallest_matching_width([64, 128, 256], np.array([1.05, 1.2, 1.08]), 0.1) == 256
    assert smallest_matching_width([64, 128], np.array([1.0, 0.9]), 0.1) == 64
    np.testing.assert_allclose(plateau_change(np.array([4.0, 2.0, 1.1, 1.0]), np.array([0, 5, 9, 10])), -0.1)


@pytest.mark.parametrize(("flags", "field"), [({"n_trains": "20,80"}, "n_trains"), ({"arch": "cnn"}, "model.arch"),
                                               ({"centre": "off"}, "centre"), ({"data": "cubic"}, "data.targets")])
def test_config_errors_name_the_field(flags, field):
    with pytest.raises(ConfigError, match=rf"^{field}: .*accepted"):
        _cfg(**flags)


def test_default_sizes_are_the_pool_and_its_halvings():
    from studylib.datasize.config import default_sizes

    assert default_sizes(512) == (64, 128, 256, 512)
    assert default_sizes(10) == (10,)
