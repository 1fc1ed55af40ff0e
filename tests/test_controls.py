"""The positive controls wing: the pieces against independent computations, then a tiny run end to end."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import closed_form, kernels, training
from studylib.config import ConfigError
from studylib.controls import cell as C
from studylib.controls.config import ControlsConfig
from studylib.models import ModelConfig, build


@pytest.mark.parametrize("activation,parameterization", [("relu", "ntk"), ("erf", "ntk"), ("relu", "standard")])
def test_gate_flips_of_stax_params(activation, parameterization):
    """The wing's gate counter reads stax parameters through studylib.sgd's MLP: that net's output
    is the stax network's, and negating the first layer's weights and bias flips every gate of
    layer 1 (z -> -z; no z is exactly 0) while moving nothing flips nothing."""
    from studylib import sgd

    cfg = ModelConfig(depth=3, activation=activation, parameterization=parameterization, b_std=0.3)
    net = build(cfg, 7)
    _, p = net.init_fn(jax.random.PRNGKey(1), (5, 1))
    x = jnp.linspace(-2.0, 2.0, 5)[:, None]
    out, _ = jax.jit(lambda q: sgd.forward(sgd.mlp(cfg, 7), sgd.dense_params(q), x))(p)  # jitted: one compile
    np.testing.assert_allclose(out, jax.jit(net.apply_fn)(p, x), rtol=1e-6, atol=1e-6)
    flips = jax.jit(C.gate_flip_fn(cfg, 7, 1))
    np.testing.assert_array_equal(flips(p, p, x), [0.0, 0.0, 0.0])
    q = [(-p[0][0], -p[0][1]), *p[1:]]
    assert float(flips(p, q, x)[0]) == 1.0


def test_lazy_linearization_is_alpha_independent():
    """GD at lr/alpha^2 on the linearized alpha (f - f_0), trained step by step from theta_0 with
    nt.linearize, follows the alpha-free closed form with f_0 = 0 (float64): the premise of the control."""
    net = build(ModelConfig(depth=2, activation="erf"), 8)
    _, p0 = net.init_fn(jax.random.PRNGKey(0), (6, 1))
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p0)
    x = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float64)[:, None]
    y = jnp.sin(2 * x)
    k = np.asarray(jax.jit(lambda p: kernels.empirical_ntk_fn(net.apply_fn)(x, None, p))(p0), np.float64)  # one compile
    lr = 0.5 * float(kernels.critical_learning_rate(k))
    ref, _ = closed_form.discrete(k, k, np.asarray(y), np.zeros((6, 1)), np.zeros((6, 1)), learning_rate=lr,
                                  steps=np.array([7]))
    from studylib.nt import nt

    lin = nt.linearize(net.apply_fn, p0)

    @jax.jit  # alpha is an argument: one compilation for the three alphas
    def trained(alpha):
        g = lambda p, aux, xx: alpha * (lin(p, xx) - lin(aux, xx))  # noqa: E731
        p = training.gd_steps(g, p0, p0, x, y, lr / alpha**2, 7)
        return g(p, p0, x)

    for alpha in (1.0, 5.0, 40.0):
        np.testing.assert_allclose(np.asarray(trained(alpha)), ref[0], rtol=0, atol=1e-10 * np.abs(ref).max())


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="controls"):
        ControlsConfig(controls=("lazy", "nope"))
    with pytest.raises(ConfigError, match="alphas"):
        ControlsConfig(alphas=(1.0, -2.0))
    with pytest.raises(ConfigError, match="activations"):
        ControlsConfig(activations=("tanh",))
    with pytest.raises(ConfigError, match="closing_x_range"):
        ControlsConfig(closing_x_range=20.0)


@pytest.fixture(scope="module")
def tiny_controls(tmp_path_factory):
    from study import controls as entry

    out = tmp_path_factory.mktemp("controls")
    # --no-figures: test_tiny_run_report_and_figures_without_jax draws (and checks) them from the stored results
    entry.main(["--preset", "tiny", "--out", str(out), "--no-progress", "--no-figures"])
    return out


def test_tiny_run_summary_and_verdicts(tiny_controls):
    s = json.loads((tiny_controls / "summary.json").read_text())
    assert s["study"] == "controls" and len(s["lazy"]) == 2 and s["closing"] is not None
    for e in s["lazy"]:
        per_seed = np.array(e["metrics"]["gap"]["per_seed"], np.float64)  # (A, S)
        assert per_seed.shape == (3, 2) and np.isfinite(per_seed).all()
        for key in ("gap", "gap_sup"):
            fit = e["slopes"][key]
            lo, hi = fit["ci95"]
            assert fit["theory_in_ci95"] == (lo <= -1.0 <= hi)
            # The slope is the log-log fit of the stored seed means over the alphas it names.
            a = np.array(e["alphas"])
            mask = np.isin(a, fit["fit_widths"])
            mean = np.array(e["metrics"][key]["mean"])[mask]
            assert fit["slope"] == pytest.approx(np.polyfit(np.log(a[mask]), np.log(mean), 1)[0], rel=1e-9)
        if e["activation"] == "erf":  # a smooth model becomes lazy: the gap on the training inputs falls
            train = np.array(e["metrics"]["gap_train"]["per_seed"], np.float64)
            assert np.mean(train[-1]) < 0.5 * np.mean(train[0])
        flips = np.array(e["metrics"]["gate_flips_train"]["mean"])
        assert flips.shape == (3, 2) and ((flips >= 0) & (flips <= 1)).all()
    c = s["closing"]
    assert s["centred"] is False and c["setting"]["centred"] is False  # --centre auto on the 1-D toy: uncentred
    assert c["widths"] == [8, 32] and "rmse_net_vs_lin_early" in c["slopes"]
    assert (np.array(c["lr_over_critical_emp"]) < 1).all()  # the rate is below every seed's own limit


def test_tiny_run_report_and_figures_without_jax(tiny_controls, tmp_path):
    code = ("import sys; from studylib import report; report.write_report([sys.argv[1]], sys.argv[2]); "
            "print('IMPORTED', [m for m in ('jax', 'neural_tangents', 'studylib.controls.cell') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_controls), str(tmp_path / "REPORT.md")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout
    text = (tmp_path / "REPORT.md").read_text()
    assert "Lazy scaling" in text and "theory's rate in CI" in text and "closes the gap" in text
    from studylib.figures import copy_name

    for name in ("controls_lazy_gap_vs_alpha.png", "controls_lazy_gate_flips.png", "controls_closing_gap_vs_width.png"):
        assert (tmp_path / copy_name(tiny_controls, "controls", name)).is_file()


@pytest.mark.parametrize("centre", ["on", "auto"])
def test_closing_cell_centred_and_auto(centre):
    """The closing cell (float64, width 8, 2 seeds, 10 steps) against independent computations. Centred
    (--centre on): the network's test outputs at step 0 are exactly 0 and its linearization equals the
    exact discrete-GD closed form from f_0 = 0 with K_0 = J J^T of jax.jacobian; --centre auto on the 1-D
    toy is uncentred: step 0 is the network's own f(theta_0), and the linearization starts from it."""
    from studylib import data as D

    cfg = ControlsConfig(centre=centre, steps=10, n_checkpoints=3, closing_depth=2, seeds=2)
    assert cfg.centred is (centre == "on")
    res = C.run_closing(cfg, 8, [0, 1], lambda _k: None)
    assert res["centred"] is cfg.centred
    data = D.load(C.closing_data(cfg))
    net = build(C.closing_model(cfg), 8)
    p0 = training.init_params(net.init_fn, [0, 1], data.x_train.shape, dtype="float64")
    x, xt, y = jnp.asarray(data.x_train), jnp.asarray(data.x_test), np.asarray(data.y_train, np.float64)
    unravel = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], p0))[1]  # every seed's layout
    # J of the flat parameters, jitted: one compilation per input shape, not one per eager operation
    jacobian = jax.jit(lambda v, xx: jax.jacobian(lambda w: net.apply_fn(unravel(w), xx)[:, 0])(v))
    for s in range(2):
        p = jax.tree_util.tree_map(lambda a, i=s: a[i], p0)
        flat = jax.flatten_util.ravel_pytree(p)[0]
        j_tr, j_te = (np.asarray(jacobian(flat, xx), np.float64) for xx in (x, xt))
        f0_tr, f0_te = (np.asarray(net.apply_fn(p, xx), np.float64) for xx in (x, xt))
        if cfg.centred:
            f0_tr, f0_te = np.zeros_like(f0_tr), np.zeros_like(f0_te)
            assert np.all(res["pred_test"][s, 0] == 0.0)  # g(theta_0) - computed as f(theta_0) - f(theta_0)
        else:
            np.testing.assert_allclose(res["pred_test"][s, 0], f0_te[:, 0], rtol=0, atol=1e-12)
        _, lin_te = closed_form.discrete(j_tr @ j_tr.T, j_te @ j_tr.T, y, f0_tr, f0_te,
                                         learning_rate=res["learning_rate"], steps=res["steps"])
        scale = np.max(np.abs(lin_te))  # float64: agreement to ~1e-9 of the curve's scale
        np.testing.assert_allclose(res["pred_lin_test"][s], lin_te[..., 0], rtol=0, atol=1e-9 * scale)
