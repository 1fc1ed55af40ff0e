"""The prediction study (study.predict): config checks name the field, the tiny preset runs end to end
through the CLI without training anything, its predicted gap is what perturb's autodiff route gives
directly, the extrapolated crossover recovers a known power law, k = 10 outputs run."""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import data as D
from studylib import metrics as M
from studylib.config import ConfigError
from studylib.data import DataConfig
from studylib.models import ModelConfig
from studylib.predict import PRESETS, PredictConfig
from studylib.results import read_json

ROOT = Path(__file__).resolve().parents[1]
#: Everything that trains a network (trainers of studylib.training and studylib.sgd).
TRAINERS = {"training": ("make_trainer", "gd_steps"),
            "sgd": ("full_batch_checkpoints", "full_batch_trainer", "gd_step", "gd_reference", "train_steps",
                    "compiled_runner", "segment_fn")}


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"dtype": "float16"}, "dtype"),
    ({"widths": (64,)}, "widths"),
    ({"widths": (0, 8)}, "widths"),
    ({"seeds": 0}, "seeds"),
    ({"gap_threshold": -0.1}, "gap_threshold"),
    ({"data": DataConfig(name="digits")}, "data.n_train"),  # 2560 flat outputs: 870 GiB of expansion
    ({"data": DataConfig(name="digits", n_train=16, n_test=64), "model": ModelConfig(arch="cnn")}, "data.n_train"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}[:\[]"):
        PredictConfig(**kwargs)


def test_size_guard_suggests_an_n_train_that_fits():
    cfg = PredictConfig(data=DataConfig(name="digits", n_train=20, n_test=64), predict_rows=16, dtype="float32",
                        widths=(32, 64), seeds=2)
    with pytest.raises(ConfigError, match=r"use --n-train (\d+) or fewer") as e:
        PredictConfig(data=DataConfig(name="digits", n_train=64, n_test=64), predict_rows=16, dtype="float32",
                      widths=(32, 64), seeds=2)
    best = int(e.value.args[0].split("use --n-train ")[1].split()[0])
    assert 10 <= best < 64
    PredictConfig(data=DataConfig(name="digits", n_train=best, n_test=64), predict_rows=16, dtype="float32",
                  widths=(32, 64), seeds=2)  # accepted
    assert cfg.steps == 1000 and cfg.lr_fraction == 0.05  # digits' own defaults (as study.compare)
    assert PredictConfig().lr_fraction == 0.5


def test_presets_are_valid_configs():
    from studylib.cli import build, merge

    for preset in PRESETS.values():
        build(PredictConfig, merge({}, preset))  # no ConfigError


# ------------------------------------------------------------------------------------------ extrapolation


def test_extrapolation_recovers_a_power_law_width():
    widths = np.array([32, 64, 128, 256, 512], np.float64)
    c, b, thr = 4.0, -0.8, 0.05
    truth = (thr / c) ** (1 / b)  # 239.3
    exact = M.extrapolate_crossing(widths, np.repeat((c * widths**b)[:, None], 3, axis=1), thr)
    np.testing.assert_allclose(exact["width"], truth, rtol=1e-10)
    np.testing.assert_allclose(exact["slope"], b, rtol=1e-10)
    assert exact["ci95"][0] == pytest.approx(truth) and exact["ci95"][1] == pytest.approx(truth)
    rng = np.random.default_rng(0)
    noisy = c * widths[:, None] ** b * np.exp(0.1 * rng.standard_normal((5, 4)))
    fit = M.extrapolate_crossing(widths, noisy, thr)
    assert fit["ci95"][0] < truth < fit["ci95"][1]
    assert abs(np.log(fit["width"] / truth)) < 0.15
    far = M.extrapolate_crossing(widths, noisy, 0.005)  # beyond the widest width: flagged as extrapolated
    assert far["beyond_widest"] and far["width"] > 512
    flat = M.extrapolate_crossing(widths, np.ones((5, 3)) + 0.01 * widths[:, None] / 512, 0.5)
    assert flat["width"] is None and flat["slope"] > 0  # not falling: no width
    low = M.extrapolate_crossing(widths, noisy, 10.0)
    assert low["below_at_narrowest"] and low["width"] == 32


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_predict(tmp_path_factory):
    """One tiny `python -m study.predict` run in process, with every trainer replaced by one that fails."""
    from study import predict as entry
    from studylib import sgd, training

    def forbidden(*_a, **_k):
        raise AssertionError("study.predict must not train a network")

    mp = pytest.MonkeyPatch()
    for mod in (training, sgd):
        for name in TRAINERS[mod.__name__.rsplit(".", 1)[1]]:
            mp.setattr(mod, name, forbidden)
    out = tmp_path_factory.mktemp("predict")
    try:
        # two of the preset's three widths (8, 16): the tests below read width 16; one compiled width fewer
        entry.main(["--preset", "tiny", "--widths", "8,16", "--out", str(out), "--no-progress"])
    finally:
        mp.undo()
    return out


def test_tiny_run_writes_summary_and_figure(tiny_predict):
    s = read_json(tiny_predict / "summary.json")
    assert s["study"] == "predict" and s["widths"] == [8, 16] and s["outputs"] == 1
    assert s["route"] == "fc features"
    assert s["centred"] is False  # --centre auto on the 1-D toy: uncentred (its numbers: the next tests)
    for key in ("gap_predicted", "gap_predicted_train", "slope", "crossover", "validity", "cost", "conventions"):
        assert key in s
    g = s["gap_predicted"]
    assert np.asarray(g["per_seed"], dtype=float).shape == (2, 2)
    assert {"width", "ci95", "slope", "below_at_narrowest", "threshold"} <= set(s["crossover"])
    assert s["validity"]["relu"] and not s["validity"]["valid"]  # the tiny net is ReLU: said so
    assert all(c["gradient_seconds"] > 0 and c["training_seconds_model"] > 0 for c in s["cost"])
    assert (tiny_predict / "predict_gap_vs_width.png").stat().st_size > 10_000
    assert (tiny_predict / "curves.npz").is_file()


def test_report_and_figures_need_no_jax(tiny_predict, tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom studylib import predict\nfrom studylib.results import read_json\n"
            f"s = read_json({str(tiny_predict / 'summary.json')!r})\n"
            "print(predict.format_table(s))\nprint(predict.section(s, [], __import__('pathlib').Path('.')))\n"
            f"predict.figures({str(tiny_predict)!r})\nprint('JAX', 'jax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "JAX False" in proc.stdout and "predicted gap" in proc.stdout


def test_predicted_gap_equals_perturb_directly(tiny_predict):
    """Recompute every seed's predicted gap at width 16 by the generic autodiff expansion (an independent
    route from the cell's fc features) and perturb.predict; rows chosen here by hand (9 evenly spread test
    points of |x| <= 5)."""
    from studylib import kernels, models, perturb, training

    s = read_json(tiny_predict / "summary.json")
    cfg = PredictConfig(**{**PRESETS["tiny"], "model": ModelConfig(**PRESETS["tiny"]["model"])})
    data = D.load_for(cfg.data, cfg.model)
    net = models.build(cfg.model, 16)
    params = training.init_params(net.init_fn, [0, 1], data.x_train.shape, dtype="float64")
    inside = np.flatnonzero(np.abs(data.x_test[:, 0]) <= cfg.data.train_range)
    rows = inside[np.round(np.linspace(0, inside.size - 1, 9)).astype(int)]
    x, xe = jnp.asarray(data.x_train), jnp.asarray(data.x_test[rows])
    exp = jax.vmap(lambda p: perturb.expansion(lambda q, xx: net.apply_fn(q, xx)[:, 0], p, x, xe))(params)
    theta = np.asarray(net.kernel_fn(x, None, "ntk"))
    lr = 0.5 * 2 * 10 / np.linalg.eigvalsh(theta)[-1]
    assert lr == pytest.approx(0.5 * float(kernels.critical_learning_rate(theta)), rel=1e-12)
    delta, _ = perturb.predict(exp, data.y_train, learning_rate=lr, checkpoints=np.array([0, cfg.steps]))
    want = np.sqrt(np.mean(delta[:, -1, 10:] ** 2, axis=-1)) / np.sqrt(np.mean(data.y_train**2))
    got = np.asarray(s["gap_predicted"]["per_seed"], dtype=float)[1]
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_the_wing_calls_no_trainer():
    """By structure: no module of the wing names a trainer of studylib.training or studylib.sgd."""
    names = {n for v in TRAINERS.values() for n in v}
    for f in sorted((ROOT / "studylib" / "predict").glob("*.py")):
        used = {n.attr for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Attribute)}
        used |= {n.id for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Name)}
        assert not used & names, (f.name, used & names)


@pytest.mark.slow  # ~12 s; CI runs it with -m slow (k outputs: tests/test_perturb.py)
def test_k10_digits_runs_and_says_so(tmp_path):
    """scikit-learn's digits with k = 10 outputs (10 training images: N k = 100 flat rows), two widths."""
    from studylib import predict, runner

    cfg = PredictConfig(data=DataConfig(name="digits", n_train=10, n_test=20), widths=(8, 16), seeds=2, steps=20,
                        n_checkpoints=3, predict_rows=4, model=ModelConfig(depth=2, activation="erf"))
    s = runner.run(predict, cfg, tmp_path, progress=False)
    assert s["outputs"] == 10 and s["route"] == "fc features"
    per_seed = np.asarray(s["gap_predicted"]["per_seed"], dtype=float)
    assert per_seed.shape == (2, 2) and np.isfinite(per_seed).all() and (per_seed > 0).all()
    assert any("10 outputs per example" in n for n in s["validity"]["notes"])
    arrays = np.load(tmp_path / "curves.npz")
    assert arrays["width8/delta_final"].shape == (2, (10 + 4) * 10)


def test_any_other_network_takes_the_autodiff_route(tmp_path):
    """A net without the FC features (res_fc) is expanded by autodiff (perturb.expansion) end to end."""
    from studylib import predict, runner

    # steps, checkpoints, rows and seeds as the tiny preset: perturb's compiled recursion is reused
    cfg = PredictConfig(widths=(8, 16), seeds=2, steps=30, n_checkpoints=4, predict_rows=9,
                        model=ModelConfig(arch="res_fc", depth=1, activation="erf"))
    s = runner.run(predict, cfg, tmp_path, progress=False)
    assert s["route"] == "autodiff"
    per_seed = np.asarray(s["gap_predicted"]["per_seed"], dtype=float)
    assert per_seed.shape == (2, 2) and (per_seed[np.isfinite(per_seed)] > 0).all()
    assert np.isfinite(per_seed).any()


def test_stalled_gap_from_the_expansion_equals_the_linearization_in_the_slow_modes():
    """gap_stalled of the predict wing (K_0 and f_0 of the expansion) against an independent computation:
    the linearization trained by discrete GD step by step in NumPy with K_0 = J J^T from jax.jacobian,
    its motion projected on the slow eigenvectors of K_0 (a_i x 5% of the run < 1)."""
    import jax
    import jax.numpy as jnp

    from studylib import models, perturb, sgd
    from studylib.predict import cell as PC

    cfg = ModelConfig(depth=2)
    mlp = sgd.fast_mlp(cfg, 16, in_dim=1)
    net = models.build(cfg, 16)
    x = jnp.linspace(-2, 2, 6)[:, None]
    y = np.asarray(x[:, 0] ** 3 / 4)
    params = net.init_fn(jax.random.PRNGKey(3), x.shape)[1]
    exp = jax.tree_util.tree_map(lambda a: a[None], perturb.expansion_mlp(mlp, sgd.dense_params(params), x, x[:2]))
    lr, steps = 0.5 * 2 * 6 / np.linalg.eigvalsh(np.asarray(exp.k0[0, :6]))[-1], 400
    y_scale = float(np.sqrt(np.mean(y**2)))
    got = PC.stalled_gaps(exp, y, 6, lr=lr, steps=steps, y_scale=y_scale)

    flat = jax.flatten_util.ravel_pytree(params)
    jac = np.asarray(jax.jacobian(lambda v: net.apply_fn(flat[1](v), x)[:, 0])(flat[0]), np.float64)
    k0 = jac @ jac.T
    r = np.asarray(net.apply_fn(params, x)[:, 0], np.float64) - y
    r0 = r.copy()
    for _ in range(steps):
        r = r - (lr / 6) * k0 @ r
    lam, v = np.linalg.eigh(k0)
    slow = lr * lam / 6 * 0.05 * steps < 1
    moved = v[:, slow].T @ (r0 - r)  # the linearization's motion in the slow modes
    expect = np.sqrt(np.sum(moved**2) / 6) / y_scale
    # float64; 400 steps of a contraction: rounding far below 1e-8 of the value.
    np.testing.assert_allclose(got, [expect], rtol=1e-8)
    assert 0 < slow.sum() < 6  # both kinds of modes are present, so the cut is exercised


def test_centred_prediction_is_the_uncentred_one_on_shifted_targets(tmp_path):
    """A centred tiny run (--centre on, 1-D toy, float64) against two independent computations: (1) its
    linearization at the last step equals the exact discrete-GD closed form from f_0 = 0 with the empirical
    kernel K_0 = J J^T of jax.jacobian; (2) its predicted delta f equals perturb's uncentred recursion on the
    targets Y + f_0(X) (GD of f - f(theta_0) on Y is GD of f on Y + f_0(X)), which differs from the
    uncentred prediction on Y."""
    from studylib import closed_form, models, perturb, predict, runner, training

    # The tiny preset's shapes (steps 30, 4 checkpoints, 9 rows, 2 seeds, depth 2; widths 8, 16 as tiny_predict):
    # perturb's compiled recursion (cached per step count and shapes) is the one tiny_predict compiled.
    cfg = PredictConfig(widths=(8, 16), seeds=2, steps=30, n_checkpoints=4, predict_rows=9, centre="on",
                        model=ModelConfig(depth=2))
    s = runner.run(predict, cfg, tmp_path, progress=False)
    assert s["centred"] is True
    arrays = np.load(tmp_path / "curves.npz")
    data = D.load_for(cfg.data, cfg.model)
    rows = arrays["width16/predict_rows"]
    x = jnp.asarray(data.x_train)
    xe = jnp.asarray(data.x_test[rows])
    net = models.build(cfg.model, 16)
    params = training.init_params(net.init_fn, [0, 1], data.x_train.shape, dtype="float64")
    lr = s["learning_rate"][1]
    y = np.asarray(data.y_train, np.float64)
    for seed in range(2):
        p = jax.tree_util.tree_map(lambda a, i=seed: a[i], params)
        flat, unravel = jax.flatten_util.ravel_pytree(p)
        jac = lambda xx, unravel=unravel, flat=flat: np.asarray(  # noqa: E731
            jax.jacobian(lambda v: net.apply_fn(unravel(v), xx)[:, 0])(flat), np.float64)
        j_tr, j_ev = jac(x), jac(xe)
        _, lin_ev = closed_form.discrete(j_tr @ j_tr.T, j_ev @ j_tr.T, y, np.zeros_like(y), np.zeros((len(rows), 1)),
                                         learning_rate=lr, steps=np.array([cfg.steps]))
        got = arrays["width16/f_lin_final"][seed]  # (N + P,): training rows, then the evaluated test rows
        scale = np.max(np.abs(lin_ev))  # float64 end to end: agreement to ~1e-9 of the curve's scale
        np.testing.assert_allclose(got[len(y):], lin_ev[-1, :, 0], rtol=0, atol=1e-9 * scale)

    exp = jax.vmap(lambda p: perturb.expansion(lambda q, xx: net.apply_fn(q, xx)[:, 0], p, x, xe))(params)
    f0 = np.asarray(exp.f0, np.float64)[:, :len(y)]  # (S, N)
    shifted = [perturb.predict(jax.tree_util.tree_map(lambda a, i=i: a[i:i + 1], exp), y[:, 0] + f0[i],
                               learning_rate=lr, checkpoints=np.array([0, cfg.steps]))[0][0, -1] for i in range(2)]
    want = np.stack(shifted)  # (S, N + P)
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(arrays["width16/delta_final"], want, rtol=0, atol=1e-8 * scale)
    plain, _ = perturb.predict(exp, y, learning_rate=lr, checkpoints=np.array([0, cfg.steps]))
    assert np.max(np.abs(plain[:, -1] - want)) > 1e-3 * scale  # centring changes the prediction
