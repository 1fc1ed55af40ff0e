"""μP and the richness knob (studylib.mup), each checked against an independent computation:

* the table's native abc form (Yang & Hu 2021, written here from the exponents, not imported) trained by
  plain GD against the stax form that the module derives by the symmetry (a, b, c) -> (a + b, 0, c - 2b);
* γ = 1 against NT's own NTK-parameterized net, and γ₀ -> 0 against the linearized NTK net's discrete-GD
  trajectory in function space (a NumPy loop on the Jacobian kernel), with the O(γ) rate of approach;
* microsoft/mup's coordinate check: fitted log-log slopes of the per-layer update sizes over widths.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import metrics, models, mup
from studylib.config import ConfigError

W_STD, B_STD = math.sqrt(2.0), 0.1

#: Tensor Programs IV's exponents (a, b, c), written out here independently of studylib.mup.EXPONENTS:
#: [input W, hidden W, readout W, hidden bias, readout bias].
TP4 = {"ntk": [(0, 0, 0), (0.5, 0, 0), (0.5, 0, 0), (0, 0, 0), (0, 0, 0)],
       "mup": [(-0.5, 0.5, 0), (0, 0.5, 0), (0.5, 0.5, 0), (-0.5, 0.5, 0), (0, 0.5, 0)]}


def _data(n: int = 8, d: int = 4, k: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((n, d))), jnp.asarray(rng.standard_normal((n, k)))


def _native(table, r: float, d: int, n0: int, depth: int):
    """The abc net of TP4 §3: W = σ r^-a w / √fan_in₀, w₀ = r^-b z (z ~ N(0, 1)), lr η r^-c; r = n/n₀."""
    def roles(layer):
        w = 0 if layer == 0 else 2 if layer == depth else 1
        return w, 4 if layer == depth else 3

    def init(z):  # z: NT's draws of the Dense layers [(W, b), ...]; w₀ = r^-b z
        out = []
        for i in range(depth + 1):
            rw, rb = roles(i)
            out.append((r ** -table[rw][1] * z[i][0], r ** -table[rb][1] * z[i][1]))
        return out

    def apply(w, x):
        h = x
        for i in range(depth + 1):
            rw, rb = roles(i)
            fan_in0 = d if i == 0 else n0
            h = (W_STD / math.sqrt(fan_in0)) * r ** -table[rw][0] * (h @ w[i][0]) + B_STD * r ** -table[rb][0] * w[i][1]
            if i < depth:
                h = jax.nn.relu(h)
        return h

    def lrs():
        return [(r ** -table[roles(i)[0]][2], r ** -table[roles(i)[1]][2]) for i in range(depth + 1)]

    return init, apply, lrs


@pytest.mark.parametrize("parameterization", ["ntk", "mup"])
def test_stax_form_trains_as_the_native_abc_table(parameterization):
    """3 GD steps of the native abc net and of the module's stax form, from the same draws, at width
    4 n₀ (so the exponents matter: factors 2 and 4): the same outputs on train and test inputs. Both are
    float64 and differ only in the order of operations, so 1e-10 relative to the outputs' scale."""
    n0, n, depth, lr, steps = 16, 64, 2, 0.3, 3
    x, y = _data()
    x_test = _data(5, seed=1)[0]
    net = mup.fully_connected(n, depth=depth, parameterization=parameterization, base_width=n0)
    _, z = net.init_fn(jax.random.PRNGKey(3), x.shape)
    init, apply, lrs = _native(TP4[parameterization], n / n0, x.shape[1], n0, depth)

    w = init([p for p in z if p != ()])
    np.testing.assert_allclose(apply(w, x), net.apply_fn(z, x), rtol=1e-12, atol=1e-14)
    grad = jax.grad(lambda w: 0.5 * jnp.mean((apply(w, x) - y) ** 2))
    for _ in range(steps):
        g = grad(w)
        w = [(a - lr * s[0] * ga, b - lr * s[1] * gb) for (a, b), (ga, gb), s in zip(w, g, lrs(), strict=True)]

    scales = mup.lr_scales(z, width=n, parameterization=parameterization, base_width=n0)
    p = z
    for _ in range(steps):
        p = mup.gd_step(net.apply_fn, p, z, x, y, lr, scales, centred=False)
    for xs in (x, x_test):
        f_native, f_stax = np.asarray(apply(w, xs)), np.asarray(net.apply_fn(p, xs))
        assert np.abs(f_native - f_stax).max() < 1e-10 * np.abs(f_native).max()
    assert np.abs(np.asarray(apply(w, x)) - np.asarray(net.apply_fn(z, x))).max() > 1e-3  # it did train


def test_gamma_one_is_the_ntk_net_and_scales_follow_the_table():
    """'mup' at γ₀ = √(n₀/n) (γ = 1) is NT's NTK-parameterized FC net: same params tree, same draws, the same
    outputs to rounding, learning-rate factor 1; and μP's factor is n/n₀ on every leaf."""
    n0, n = 16, 64
    x, _ = _data()
    net = mup.fully_connected(n, depth=3, parameterization="mup", gamma0=math.sqrt(n0 / n), base_width=n0)
    ref = models.fully_connected(n, depth=3, parameterization="ntk")
    _, p = net.init_fn(jax.random.PRNGKey(0), x.shape)
    _, q = ref.init_fn(jax.random.PRNGKey(0), x.shape)
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(q)
    np.testing.assert_allclose(net.apply_fn(p, x), ref.apply_fn(q, x), rtol=1e-13, atol=1e-15)
    assert mup.gamma(n, gamma0=math.sqrt(n0 / n), base_width=n0) == pytest.approx(1.0, rel=1e-15)
    np.testing.assert_allclose(jax.tree_util.tree_leaves(mup.lr_scales(p, width=n, gamma0=math.sqrt(n0 / n),
                                                                       base_width=n0)), 1.0, rtol=1e-15)
    assert set(jax.tree_util.tree_leaves(mup.lr_scales(p, width=n, base_width=n0))) == {n / n0}
    # the analytic kernel of the γ-model is the NTK net's / γ² (NT's kernel of the scaled readout)
    g = mup.gamma(n, gamma0=0.3, base_width=n0)
    scaled = mup.fully_connected(n, depth=3, gamma0=0.3, base_width=n0)
    np.testing.assert_allclose(scaled.kernel_fn(x, None, "ntk"), ref.kernel_fn(x, None, "ntk") / g**2, rtol=1e-12)


def _lazy_error(gamma0: float, x, y, *, width: int, depth: int, lr: float, steps: int) -> float:
    """max |g_T - f_lin,T| / max |y| of the centred γ-model after ``steps`` GD steps against the linearized
    NTK net with f₀ = 0, f_{t+1} = f_t - (η/N) K₀ (f_t - y), K₀ = J J^T from jax.jacrev (NumPy loop)."""
    net = mup.fully_connected(width, depth=depth, gamma0=gamma0, base_width=width)
    ref = models.fully_connected(width, depth=depth, parameterization="ntk")
    _, p0 = net.init_fn(jax.random.PRNGKey(5), x.shape)
    scales = mup.lr_scales(p0, width=width, gamma0=gamma0, base_width=width)
    step = jax.jit(lambda p: mup.gd_step(net.apply_fn, p, p0, x, y, lr, scales))
    p = p0
    for _ in range(steps):
        p = step(p)
    g = np.asarray(net.apply_fn(p, x) - net.apply_fn(p0, x))

    jac = jax.jacrev(lambda q: ref.apply_fn(q, x)[:, 0])(ref.init_fn(jax.random.PRNGKey(5), x.shape)[1])
    j = np.concatenate([np.asarray(a).reshape(x.shape[0], -1) for a in jax.tree_util.tree_leaves(jac)], axis=1)
    k0, f, yn = j @ j.T, np.zeros((x.shape[0], 1)), np.asarray(y)
    for _ in range(steps):
        f = f - lr / x.shape[0] * k0 @ (f - yn)
    assert np.abs(f).max() > 0.1 * np.abs(yn).max()  # the linearized run moved: a real comparison
    return float(np.abs(g - f).max() / np.abs(yn).max())


def test_lazy_end_reproduces_the_linearized_ntk_run():
    """γ₀ -> 0 (at n = n₀, γ = γ₀): the centred model's training outputs after 10 steps at 0.5 x critical follow
    the linearized NTK net's discrete GD (Chizat et al.'s α = 1/γ). The deviation is O(γ): below 1% of |y|
    at γ₀ = 1e-3, and ~10x larger at 1e-2 (ratio within [4, 25]: first order plus rounding)."""
    x, y = _data()
    depth, width = 2, 64
    lr = mup.base_learning_rate(np.asarray(x), depth=depth, lr_fraction=0.5)
    e2, e3 = (_lazy_error(g, x, y, width=width, depth=depth, lr=lr, steps=10) for g in (1e-2, 1e-3))
    assert e3 < 1e-2
    assert 4.0 < e2 / e3 < 25.0


def test_coordinate_check_slopes():
    """microsoft/mup's coordinate check, widths 64, 256, 1024 (n₀ = 64), depth 2, 3 GD steps at 0.5 x the
    critical rate, 4 seeds averaged: log-log slope over width of each layer's update size after the last step.
    Tolerance 0.12 either way: single-seed slopes spread by ~0.05 here (so the 4-seed mean by ~0.03), and the
    finite-width correction at these narrow widths adds up to ~0.07 (measured here, float64: μP +0.020,
    +0.068, output +0.029; NTK -0.478, -0.429, output +0.030; the default run over 64...4096, depth 3, gives
    μP +0.007...+0.014 and NTK -0.482...-0.486, docs/mup.md). μP: every hidden layer's and the output's update
    is width independent, |slope| < 0.12; NTK: hidden updates shrink as n^-1/2, |slope + 0.5| < 0.12, the
    output's update is O(1), |slope| < 0.12. Activations at init are O(1) in both (|slope| < 0.12).

    Only the end widths 64 and 1024 are run: for three log-equispaced widths the least-squares slope is exactly the
    slope between the two ends (the middle point's x deviation is 0), so the fitted slopes, and the tolerance
    measured on 64, 256, 1024, are unchanged; one compiled width fewer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4))
    y = rng.standard_normal((8, 1))
    depth, widths = 2, [64, 1024]
    lr = mup.base_learning_rate(x, depth=depth)
    settings = [mup.Richness(parameterization=p, base_width=64) for p in ("ntk", "mup")]
    res = [mup.coordinate_check(w, x, y, learning_rate=lr, steps=3, seeds=range(4), settings=settings,
                                depth=depth) for w in widths]
    slopes = {}
    for i, par in enumerate(("ntk", "mup")):
        upd = np.stack([r["update"][i, :, -1].mean(0) for r in res])  # (W, L + 1), seed mean
        size0 = np.stack([r["size"][i, :, 0].mean(0) for r in res])
        slopes[par] = [metrics.fit_loglog(widths, upd[:, j])[0] for j in range(depth + 1)]
        assert all(abs(metrics.fit_loglog(widths, size0[:, j])[0]) < 0.12 for j in range(depth))
    assert all(abs(s) < 0.12 for s in slopes["mup"]), slopes
    assert all(abs(s + 0.5) < 0.12 for s in slopes["ntk"][:depth]), slopes
    assert abs(slopes["ntk"][depth]) < 0.12, slopes

    # coordinate_check's traced-γ form is the built μP net (readout W_std, b_std ÷ γ baked in, γ = 4 at n = 1024)
    # trained by gd_step with lr_scales from seed 0's θ₀: the same sizes and updates (float64, other order: 1e-10)
    net = mup.fully_connected(1024, depth=depth, base_width=64)
    layers = mup.fully_connected_layers(1024, depth=depth, base_width=64)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    _, p0 = net.init_fn(jax.random.PRNGKey(0), x.shape)
    scales = mup.lr_scales(p0, width=1024, base_width=64)
    step = jax.jit(lambda p: mup.gd_step(net.apply_fn, p, p0, xj, yj, lr, scales))
    p = step(step(step(p0)))
    want = mup.coordinate_sizes(layers, p, p0, xj)
    for key in ("size", "update"):
        np.testing.assert_allclose(res[1][key][1, 0, -1], np.asarray(want[key]), rtol=1e-10)
    assert res[1]["gamma"].tolist() == [1.0, 4.0] and res[1]["lr_scale"].tolist() == [1.0, 16.0]


def test_bad_input_is_one_config_error_line():
    with pytest.raises(ConfigError, match=r"mup\.parameterization: unknown value 'sp'; accepted: ntk, mup"):
        mup.gamma(64, parameterization="sp")
    with pytest.raises(ConfigError, match=r"mup\.gamma0: must be a finite number > 0"):
        mup.layer_scales(64, gamma0=0.0)
    with pytest.raises(ConfigError, match=r"mup\.gamma0"):
        mup.Richness(gamma0=-1.0)
    with pytest.raises(ConfigError, match="no Dense layer"):
        mup.lr_scales([(), ()], width=64)


def test_coordcheck_wing_summary_report_and_figure(tmp_path):
    """The coordcheck wing's face on made-up cell results (no training): sizes built as c n^s with known s per
    layer are fitted back to s (exact power laws: 1e-9), the table names each layer's verdict, the figure is
    written, and a bad config is one ConfigError line."""
    from studylib import coordcheck
    from studylib.results import jsonable

    cfg = coordcheck.Config(widths=(64, 128, 256), seeds=2, steps=2, model=models.ModelConfig(depth=2))
    w = np.array(cfg.widths, np.float64)
    law = {"ntk": [-0.5, -0.5, 0.0], "mup": [0.0, 0.0, 0.0]}
    results = []
    for n in w:
        upd = np.stack([[[[1e-3] * 3, [0.1 * n ** s for s in law[p]]] for _ in range(2)] for p in ("ntk", "mup")])
        results.append({"width": int(n), "learning_rate": 0.3, "size": np.ones_like(upd), "update": upd,
                        "gamma": np.array([1.0, math.sqrt(n / 64)]), "lr_scale": np.array([1.0, n / 64])})
    summary, arrays = coordcheck.summarise(cfg, coordcheck.cells(cfg), results, None, wall_seconds=1.0)
    for p in ("ntk", "mup"):
        got = [f["slope"] for f in summary["parameterizations"][p]["slopes"]["update"]]
        np.testing.assert_allclose(got, law[p], atol=1e-9)
    assert arrays["update"].shape == (2, 3, 2, 2, 3)
    table = coordcheck.format_table(jsonable(summary))
    assert "ntk" in table and "-0.500" in table
    from studylib.results import write_json

    write_json(tmp_path / "summary.json", summary)
    paths = coordcheck.figures(tmp_path)
    assert all(p.is_file() for p in paths) and paths[0].name == "coordcheck_sizes_vs_width.png"
    with pytest.raises(ConfigError, match=r"model\.arch: .*accepted: fc"):
        coordcheck.Config(model=models.ModelConfig(arch="cnn"))
    with pytest.raises(ConfigError, match=r"parameterizations: unknown"):
        coordcheck.Config(parameterizations=("ntk", "sp"))
