"""The regimes study: config and flags, the sweep layout and cell keys, summary helpers, and a tiny
end-to-end run through the runner (figures, an interrupted run resumed bit for bit, reuse, --force)."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from studylib import cli, modes, regimes, runner
from studylib.config import ConfigError
from studylib.models import ModelConfig
from studylib.regimes import summary as RS
from studylib.results import read_json, read_npz

#: One width, the base cell at depth 1 and one other depth for ReLU and erf, and the doubled option: 5 cells.
TINY = dict(widths=(8,), seeds=2, steps=8, n_checkpoints=5, lr_fractions=(0.5,), depths=(1, 2), x_ranges=(5.0,),
            parameterizations=("ntk",), activations=("relu", "erf"), options=("plain", "doubled"),
            model=ModelConfig(depth=1))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run (in process), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("regimes")
    cfg = regimes.RegimesConfig(**TINY)
    regimes.run(cfg, out, progress=False)
    return cfg, out


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"widths": (8, 8)}, "widths"),
        ({"lr_fractions": (0.1, -1.0)}, "lr_fractions[1]"),
        ({"depths": (1, 2)}, "depths"),  # base depth 5 missing
        ({"x_ranges": (1.0,)}, "x_ranges"),  # base 5.0 missing
        ({"parameterizations": ("ntk", "sp")}, "parameterizations[1]"),
        ({"options": ("centred",)}, "options"),  # plain missing
        ({"options": ("plain", "bogus")}, "options[1]"),
        ({"sweep": "grid"}, "sweep"),
        ({"gap_threshold": 0.0}, "gap_threshold"),
        ({"dtype": "float16"}, "dtype"),
        ({"activations": ("relu", "tanh")}, "activations[1]"),
        ({"activations": ("erf",)}, "activations"),  # base relu missing
        ({"max_widths": {"five": 64}}, "max_widths"),
        ({"max_widths": {5: 0}}, "max_widths"),
        ({"predict_rows": -1}, "predict_rows"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match="^" + re.escape(field) + ":"):
        regimes.RegimesConfig(**kwargs)


def test_every_documented_flag_is_accepted():
    """The spellings of the old entry point and docs/regimes.md, with their meaning (no JAX)."""
    p = cli.parser(regimes, "doc")
    args = p.parse_args(["--lr-fractions", "0.2,0.5", "--depths", "2,5", "--x-ranges", "2,5", "--parameterizations",
                         "ntk", "--options", "plain,centred", "--sweep", "product", "--output-scale", "0.5",
                         "--gap-threshold", "0.2", "--x-range", "5", "--widths", "16,32", "--seeds", "2",
                         "--first-seed", "3", "--steps", "50", "--checkpoints", "6", "--lr-fraction", "0.5",
                         "--dtype", "float64", "--ntk-implementation", "1", "--depth", "5",
                         "--parameterization", "ntk", "--figures-only", "--force", "--no-progress"])
    cfg = cli.config_from_args(regimes, args)
    assert cfg == regimes.RegimesConfig(
        widths=(16, 32), seeds=2, first_seed=3, steps=50, n_checkpoints=6, lr_fraction=0.5, dtype="float64",
        ntk_implementation=1, sweep="product", lr_fractions=(0.2, 0.5), depths=(2, 5), x_ranges=(2.0, 5.0),
        parameterizations=("ntk",), options=("plain", "centred"), output_scale=0.5, gap_threshold=0.2)
    assert args.figures_only and args.force and args.no_progress
    assert cli.config_from_args(regimes, p.parse_args([])) == regimes.RegimesConfig()


def test_settings_one_at_a_time_and_product():
    cfg = regimes.RegimesConfig(lr_fractions=(0.1, 0.5), depths=(1, 5), x_ranges=(5.0,),
                                parameterizations=("ntk", "standard"), activations=("relu",),
                                options=("plain", "centred"))
    settings = regimes.settings(cfg)
    base = cfg.base()
    assert settings[0] == base
    # base + one other value per axis (lr 0.1, depth 1, standard) + centred option
    assert len(settings) == 5
    assert all(sum(c[k] != base[k] for k in base) == 1 for c in settings[1:])
    prod = regimes.settings(dataclasses.replace(cfg, sweep="product"))
    assert len(prod) == 2 * 2 * 1 * 2 + 1
    assert len({tuple(sorted(c.items())) for c in prod}) == len(prod)


def test_activation_axis_is_crossed_with_the_others():
    """One-at-a-time: each other axis is swept for every activation; options only at the base (ReLU)."""
    cfg = regimes.RegimesConfig(lr_fractions=(0.1, 0.5), depths=(1, 5), x_ranges=(5.0,), parameterizations=("ntk",),
                                activations=("relu", "erf"), options=("plain", "centred"))
    settings = regimes.settings(cfg)
    base = cfg.base()
    assert base["activation"] == "relu"
    erf = [c for c in settings if c["activation"] == "erf"]
    assert erf == [base | {"activation": "erf"}, base | {"activation": "erf", "lr_fraction": 0.1},
                   base | {"activation": "erf", "depth": 1}]
    assert [c for c in settings if c["option"] != "plain"] == [base | {"option": "centred"}]
    assert len(settings) == 3 + 3 + 1
    prod = regimes.settings(dataclasses.replace(cfg, sweep="product"))
    assert len(prod) == 2 * 2 * 2 + 1
    # max_widths skips the wider cells of a depth
    capped = dataclasses.replace(cfg, widths=(16, 32), max_widths={1: 16})
    names = [c.name for c in regimes.cells(capped)]
    assert "width32-plain-depth1-lr0.5-x5-ntk-relu" not in names and "width16-plain-depth1-lr0.5-x5-ntk-relu" in names
    assert "width32-plain-depth5-lr0.5-x5-ntk-erf" in names


def test_crossover_preset_caps_widths_per_depth():
    """The crossover preset: ReLU and erf at depths 2, 3, 5, the base setting only, widths to 16384 at
    depth 2, 16384 at depth 3 and 4096 at depth 5 (no JAX)."""
    cfg = cli.assemble(regimes.RegimesConfig, presets=regimes.PRESETS, preset="crossover", config_file=None,
                       flags={})
    cells = regimes.cells(cfg)
    widest = {}
    for c in cells:
        key = (c.spec["activation"], c.spec["depth"])
        widest[key] = max(widest.get(key, 0), c.spec["width"])
        assert c.spec["option"] == "plain" and c.spec["lr_fraction"] == 0.5 and c.spec["x_range"] == 5.0
    assert widest == {(a, d): w for a in ("relu", "erf") for d, w in ((2, 16384), (3, 16384), (5, 4096))}
    assert cfg.seeds == 2 and cfg.crossover_fit_widths == 4


def test_cells_names_order_and_specs():
    """Setting-major, width-minor (the order of summary.json's cells); the spec carries what the cell
    runs with; cells after the first of their compile key cost less (no compilation)."""
    cfg = regimes.RegimesConfig(widths=(16, 32), lr_fractions=(0.1, 0.5), depths=(5,), x_ranges=(5.0,),
                                parameterizations=("ntk",), activations=("relu",),
                                options=("plain", "out_scale", "float64"))
    cells = regimes.cells(cfg)
    assert [c.name for c in cells] == [
        "width16-plain-depth5-lr0.5-x5-ntk-relu", "width32-plain-depth5-lr0.5-x5-ntk-relu",
        "width16-plain-depth5-lr0.1-x5-ntk-relu", "width32-plain-depth5-lr0.1-x5-ntk-relu",
        "width16-out_scale-depth5-lr0.5-x5-ntk-relu", "width32-out_scale-depth5-lr0.5-x5-ntk-relu",
        "width16-float64-depth5-lr0.5-x5-ntk-relu", "width32-float64-depth5-lr0.5-x5-ntk-relu"]
    spec = {c.name: c.spec for c in cells}
    assert spec["width16-out_scale-depth5-lr0.5-x5-ntk-relu"]["output_scale"] == 0.25
    assert spec["width16-float64-depth5-lr0.5-x5-ntk-relu"]["dtype"] == "float64"
    assert spec["width16-plain-depth5-lr0.1-x5-ntk-relu"] == {**cfg.base(), "lr_fraction": 0.1, "width": 16,
                                                              "dtype": "float32", "output_scale": 1.0}
    cost = {c.name: c.cost for c in cells}
    assert cost["width16-plain-depth5-lr0.1-x5-ntk-relu"] < cost["width16-out_scale-depth5-lr0.5-x5-ntk-relu"]
    assert all(c.cost > 0 for c in cells)
    assert regimes.needs_x64(cfg) and not regimes.needs_x64(dataclasses.replace(cfg, options=("plain",)))


def test_cell_key_leaves_out_the_rest_of_the_sweep():
    """A sweep sharing cells with an earlier one reuses them: the key covers what changes a cell's
    numbers (its setting and width, steps, ...), not the other settings, widths or gap_threshold, and
    not the base values a setting replaces (depth, input range)."""
    cfg = regimes.RegimesConfig(**TINY)
    cell = regimes.cells(cfg)[0]
    key = runner.cell_key(regimes, cfg, cell)
    same = dataclasses.replace(cfg, widths=(8, 16), options=("plain",), gap_threshold=0.2, depths=(1, 2, 3))
    assert runner.cell_key(regimes, same, regimes.cells(same)[0]) == key
    # The same setting reached from another base cell (depth 2 as the base, depth 1 on the axis).
    other_base = dataclasses.replace(cfg, model=ModelConfig(depth=2))
    hit = [c for c in regimes.cells(other_base) if c.name == cell.name]
    assert runner.cell_key(regimes, other_base, hit[0]) == key
    assert runner.cell_key(regimes, dataclasses.replace(cfg, steps=9), cell) != key
    # output_scale changes only the out_scale cells.
    assert runner.cell_key(regimes, dataclasses.replace(cfg, output_scale=0.5), cell) == key
    doubled = regimes.cells(cfg)[-1]
    assert doubled.spec["option"] == "doubled" and runner.cell_key(regimes, cfg, doubled) != key


def test_wide_enough_interpolates_and_requires_staying_below():
    w = np.array([16, 64, 256])
    # gap 1 at 16, 0.01 at 64: crossing at 0.1 is halfway in log -> 32 (log/exp rounding only)
    assert regimes.wide_enough(w, np.array([1.0, 0.01, 0.001]), 0.1) == pytest.approx(32.0, rel=1e-9)
    assert regimes.wide_enough(w, np.array([0.05, 0.2, 0.05]), 0.1) == pytest.approx(128.0, rel=1e-9)
    assert regimes.wide_enough(w, np.array([0.05, 0.2, 0.5]), 0.1) is None
    assert regimes.wide_enough(w, np.array([0.01, 0.02, 0.03]), 0.1) == 16.0


def test_correlation_recovers_a_power_law():
    x = np.geomspace(0.1, 100, 30)
    c = regimes.correlation(x, 0.3 * x**0.7)
    # An exact power law: the fit is exact up to float64 rounding of the logs (slope ~1).
    assert c["slope"] == pytest.approx(0.7, abs=1e-12)
    assert c["pearson_log"] == pytest.approx(1.0, abs=1e-12)
    assert regimes.correlation(x[:2], x[:2])["slope"] is None


def _fake_results(rng):
    """Synthetic per-cell results: the gap is a power of gap_predicted times noise for erf runs; the
    other diagnostics are noise; gate flips only for ReLU runs."""
    out = []
    for i in range(12):
        act = "erf" if i % 2 else "relu"
        pred = np.exp(rng.normal(size=3))
        finals = {name: np.exp(rng.normal(size=3)) for name in RS.DIAGNOSTICS}
        finals["gap_predicted"] = pred
        finals["gap"] = 0.5 * pred**0.8 * np.exp(0.01 * rng.normal(size=3))
        if act == "erf":
            finals["gate_flips"] = finals["gate_flips_early"] = np.full(3, np.nan)
        else:  # the flips would rank the ReLU gaps perfectly, but exist for ReLU runs only
            finals["gate_flips"] = finals["gate_flips_early"] = finals["gap"] ** 2
        out.append({"finals": finals, "cell": {"activation": act}})
    return out


def test_gap_prediction_names_the_best_diagnostic_defined_everywhere():
    res = RS.gap_prediction(_fake_results(np.random.default_rng(0)))
    assert res["best"] == "gap_predicted" and res["n"] == 36
    assert res["spearman"] > 0.99 and res["r2_log"] > 0.99
    d = res["diagnostics"]
    assert d["gate_flips"]["relu"]["spearman"] == pytest.approx(1.0)
    assert d["gate_flips"]["all"]["n"] == 18 and d["gate_flips"]["smooth"]["n"] == 0
    assert abs(d["laziness_ratio"]["all"]["spearman"]) < 0.5


def test_best_and_best_t0_are_chosen_by_what_they_need():
    """A whole-run diagnostic ranks the gaps perfectly, an early one nearly, a theta_0 one less well:
    ``best`` / ``best_early`` / ``best_t0`` name each, with their own Spearman."""
    rng = np.random.default_rng(1)
    res = _fake_results(rng)
    for r in res:
        g = r["finals"]["gap"]
        r["finals"]["laziness_ratio_horizon"] = g**3
        r["finals"]["gap_early"] = g * np.exp(0.02 * rng.normal(size=3))
        r["finals"]["gap_stalled"] = g * np.exp(0.3 * rng.normal(size=3))
        r["finals"]["gap_predicted"] = np.exp(rng.normal(size=3))  # no longer the gap's source
    got = RS.gap_prediction(res)
    d = got["diagnostics"]
    assert got["best"] == "laziness_ratio_horizon" and got["spearman"] == pytest.approx(1.0)
    assert got["best_early"]["name"] == "gap_early" and got["best_t0"]["name"] == "gap_stalled"
    assert got["best_t0"]["spearman"] == d["gap_stalled"]["all"]["spearman"] < got["best_early"]["spearman"] < 1
    assert got["best_t0"]["n"] == 36 and set(got["needs"]) == set(RS.DIAGNOSTICS)
    assert {RS.NEEDS[k] for k in RS.DIAGNOSTICS} == {"t0", "early", "trained"}


def _gd_coefficients(k0, f0, y, lr, steps):
    """Independent reference: discrete GD of the linearized model on 1/2 mean((f - y)^2), f_{t+1} = f_t -
    (lr/N) K_0 (f_t - y), iterated step by step in function space; residual coefficients in K_0's
    eigenbasis (eigenvalues descending) at steps 0 and ``steps``."""
    n = len(y)
    lam, v = np.linalg.eigh(k0)
    lam, v = lam[::-1], v[:, ::-1]
    f = f0.copy()
    for _ in range(steps):
        f = f - lr / n * k0 @ (f - y)
    return lam, v.T @ (f0 - y), v.T @ (f - y)


def test_stalled_gap_equals_step_by_step_linearization():
    rng = np.random.default_rng(2)
    n, steps, lr = 6, 200, 0.02
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam_true = np.array([300.0, 150.0, 3.0, 1.0, 0.3, 0.05])  # a = lr lam / n: 1.0, 0.5 (fast), <= 0.01 (slow)
    k0 = q @ np.diag(lam_true) @ q.T
    f0, y = rng.normal(size=n), rng.normal(size=n)
    lam, c0, c_t = _gd_coefficients(k0, f0, y, lr, steps)
    y_scale = float(np.sqrt(np.mean(y**2)))
    # slow: a * 0.05 * 200 < 1, i.e. a < 0.1: modes 2..5
    want = np.sqrt(np.sum((c_t[2:] - c0[2:]) ** 2) / n) / y_scale
    got = modes.stalled_gap(c0[None], lam[None], learning_rate=lr, steps=steps, y_scale=y_scale)
    # 200 float64 GD steps against the closed form (1 - a)^T: rounding ~ steps * eps of the coefficients
    np.testing.assert_allclose(got, [want], rtol=1e-10)
    # fast_fraction 1: slow means a * T < 1, i.e. lam < 1.5: modes 3..5 only
    got = modes.stalled_gap(c0[None], lam[None], learning_rate=lr, steps=steps, y_scale=y_scale, fast_fraction=1.0)
    np.testing.assert_allclose(got, [np.sqrt(np.sum((c_t[3:] - c0[3:]) ** 2) / n) / y_scale], rtol=1e-10)
    # a = lr lam_0 / n > 2: the linearization diverges -> NaN
    assert np.isnan(modes.stalled_gap(c0[None], lam[None], learning_rate=0.05, steps=steps, y_scale=y_scale)[0])


def test_derived_finals_from_hand_made_curves():
    rng = np.random.default_rng(3)
    steps = np.array([0, 1, 2, 5, 10, 15, 20, 300])  # <= 5% of 300 = 15: index 5
    lam = np.array([[200.0, 1.0, 0.5], [180.0, 2.0, 0.1]])
    c_lin = rng.normal(size=(2, len(steps), 3))
    gap = np.exp(rng.normal(size=(2, len(steps))))
    r = {"steps": steps, "learning_rate": 0.01, "y_scale": 2.0, "k0_lambda": lam,
         "mode_coeffs": {"lin_emp": c_lin}, "curves": {"gap": gap},
         "finals": {"gap_predicted": np.array([0.1, 0.2])}}
    a = 0.01 * lam / 3  # mode 0 fast (a * 15 = 10), modes 1, 2 slow
    want = np.sqrt(np.sum((c_lin[:, 0, 1:] * (1 - (1 - a[:, 1:]) ** 300)) ** 2, axis=-1) / 3) / 2.0
    relu = RS.derived_finals(r | {"cell": {"activation": "relu"}})
    erf = RS.derived_finals(r | {"cell": {"activation": "erf"}})
    np.testing.assert_allclose(relu["gap_stalled"], want, rtol=1e-12)
    np.testing.assert_array_equal(relu["gap_predicted_or_stalled"], relu["gap_stalled"])
    np.testing.assert_array_equal(erf["gap_predicted_or_stalled"], [0.1, 0.2])
    np.testing.assert_array_equal(relu["gap_early"], gap[:, 5])


def test_extrapolated_width_and_crossing_on_power_laws():
    w = np.array([64.0, 128.0, 256.0, 512.0])
    # gap = 10 n^-1/2 reaches 0.1 at n = 10^4 (exact power law: rounding only)
    got = RS.extrapolated_width(w, 10 * w**-0.5, 0.1, 3)
    assert got["width"] == pytest.approx(1e4, rel=1e-9) and got["slope"] == pytest.approx(-0.5, abs=1e-12)
    assert RS.extrapolated_width(w, 0.2 * w**0.1, 0.1, 3)["width"] is None  # growing: never
    low = RS.extrapolated_width(w, 0.05 * w**-0.5, 0.1, 3)  # below the threshold from the narrowest width
    assert low["width"] == 64.0 and low["below_at_narrowest"]
    cross = RS._crossing(w, 20 * w**-1.0, 0.1, -0.5)
    assert cross["width"] == pytest.approx(200.0, rel=1e-9) and cross["falling"]
    flat = RS._crossing(w, np.array([0.2, 0.09, 0.09, 0.09]), 0.1, -0.5)
    assert flat["width"] is not None and flat["falling"] is False


def test_doubled_model_is_zero_at_init_and_has_the_plain_kernel():
    import jax
    import jax.numpy as jnp

    from studylib import kernels, models, training
    from studylib.nt import nt

    net = models.build(ModelConfig(depth=1), 16)
    x = jnp.linspace(-3.0, 3.0, 5)[:, None]
    p0 = jax.tree_util.tree_map(lambda a: a[0], training.init_params(net.init_fn, [0], x.shape))
    model_fn, make = regimes.variant_model(net.apply_fn, "doubled", 1.0)
    params, aux = make(p0)
    assert np.all(np.asarray(model_fn(params, aux, x)) == 0.0)
    # jitted: one compilation each, not one per eager operation
    k_plain = jax.jit(lambda p: kernels.empirical_ntk_fn(net.apply_fn)(x, None, p))(p0)
    k_doubled = jax.jit(lambda p: nt.empirical_ntk_fn(lambda q, xx: model_fn(q, aux, xx), trace_axes=(-1,))(
        x, None, p))(params)
    # (K + K)/2 = K: float64 rounding of (1/sqrt 2)^2 and of the sums, ~1e-16 relative.
    np.testing.assert_allclose(k_doubled, k_plain, rtol=1e-10)
    model_c, make_c = regimes.variant_model(net.apply_fn, "centred", 0.5)
    pc, ac = make_c(p0)
    assert np.all(np.asarray(model_c(pc, ac, x)) == 0.0)


def test_tiny_run_writes_results_and_figures(tiny_run):
    _cfg, out = tiny_run
    paths = regimes.figures(out)
    assert all(p.is_file() for p in paths)
    s = read_json(out / "summary.json")
    assert s["study"] == "regimes" and s["config"]["steps"] == 8
    assert s["centred"] is False  # --centre auto on the 1-D toy: uncentred
    assert len(s["cells"]) == 5  # base, depth 2 for relu and erf, doubled at one width
    for key in ("versions", "wall_seconds", "conventions", "heatmaps", "gap_vs_laziness", "wide_enough",
                "options", "modes_base", "gap_prediction", "crossover", "timing"):
        assert key in s
    gp = s["gap_prediction"]
    assert gp["best"] in gp["diagnostics"] and set(gp["diagnostics"]["gap_predicted"]) == {"all", "smooth", "relu"}
    assert set(gp["diagnostics"]) == set(RS.DIAGNOSTICS) and gp["best_t0"]["name"] in gp["diagnostics"]
    assert RS.NEEDS[gp["best_t0"]["name"]] == "t0" and RS.NEEDS[gp["best_early"]["name"]] in ("t0", "early")
    by = {(c["activation"], c["depth"], c["option"]): c for c in s["cells"]}
    # gate flips: fractions for ReLU nets of one network, NaN (null) for erf and the doubled net
    relu_flips = by[("relu", 1, "plain")]["metrics"]["gate_flips"]["per_seed"]
    assert all(0.0 <= f <= 1.0 for f in relu_flips)
    assert all(f is None for f in by[("erf", 1, "plain")]["metrics"]["gate_flips"]["per_seed"])
    assert all(f is None for f in by[("relu", 1, "doubled")]["metrics"]["gate_flips"]["per_seed"])
    # the doubled net at theta_a = theta_b: its T and D cancel (+v H v/2 - v H v/2), so the first-order
    # prediction is 0 up to float32 rounding of those terms (~1e-7 of them; the plain net's is ~1e-3 here)
    finite = lambda vals: [v for v in vals if v is not None]  # noqa: E731  (None: a diverged linearization)
    dbl = finite(by[("relu", 1, "doubled")]["metrics"]["gap_predicted"]["per_seed"])
    assert dbl and all(abs(g) < 1e-5 for g in dbl)
    erf = finite(by[("erf", 1, "plain")]["metrics"]["gap_predicted"]["per_seed"])
    assert erf and all(g > 1e-4 for g in erf)
    assert {(r["activation"], r["depth"]) for r in s["crossover"]["rows"]} == {("relu", 1), ("relu", 2), ("erf", 1),
                                                                                ("erf", 2)}
    a = read_npz(out / "curves.npz")
    c0 = a["cell0/coeff/net_emp"]
    assert c0.shape == (2, len(s["checkpoint_steps"]), 10)
    # The linearization is exact in its own K_0 basis: it never departs from the prediction. Both
    # are float64 functions of the same K_0 (closed form vs per-mode decay): rounding ~1e-13 of
    # the coefficients' scale.
    for i in range(len(s["cells"])):
        assert np.all(np.isnan(a[f"cell{i}/departure/lin_emp"]))
        np.testing.assert_allclose(a[f"cell{i}/coeff/lin_emp"], a[f"cell{i}/pred/emp"],
                                   atol=1e-9 * np.abs(a[f"cell{i}/pred/emp"]).max())
    # Doubled network: f(theta_0) = 0 exactly, so the initial loss is 1/2 mean(Y^2) (float64 sums of
    # the same numbers: rounding only).
    dbl = next(c["index"] for c in s["cells"] if c["option"] == "doubled")
    y = np.linspace(-5, 5, 10) ** 3 / 20
    np.testing.assert_allclose(a[f"cell{dbl}/curve/loss_net"][:, 0], 0.5 * np.mean(y**2), rtol=1e-12)
    names = {p.name for p in out.iterdir()}
    for fig in ("regimes_modes", "regimes_departure", "regimes_kernel_motion", "regimes_heatmaps",
                "regimes_gap_vs_laziness", "regimes_wide_enough", "regimes_options", "regimes_gap_prediction",
                "regimes_crossover"):
        assert f"{fig}.png" in names and f"{fig}.pdf" in names
    table = regimes.format_table(s)
    assert "depth=2" in table and "option=doubled" in table and "wide enough" in table
    section = regimes.section(s, paths, out)
    assert "## Where the theory holds" in section and "regimes_heatmaps.png" in section
    assert "Predicting the gap" in section and "Crossover width" in section and "gap prediction" in table


def _assert_same_results(a_dir, b_dir):
    a, b = read_json(a_dir / "summary.json"), read_json(b_dir / "summary.json")
    for key in a:
        if key not in ("wall_seconds", "timing"):  # wall times
            assert a[key] == b[key], key
    a, b = read_npz(a_dir / "curves.npz"), read_npz(b_dir / "curves.npz")
    assert a.keys() == b.keys()
    for k, v in a.items():
        np.testing.assert_array_equal(v, b[k], err_msg=k)


def test_stored_summary_refresh_reproduces_the_gap_prediction(tiny_run):
    """``refresh_gap_prediction`` rebuilds the derived diagnostics from summary.json + curves.npz alone and
    gets what the run wrote; ``gap_stalled`` equals the stored linearization's own trajectory (its residual
    coefficients in the K_0 basis) moved over the slow modes, an independent route to the closed form."""
    _cfg, out = tiny_run
    s, a = read_json(out / "summary.json"), read_npz(out / "curves.npz")
    fresh = RS.refresh_gap_prediction(s, a)
    assert fresh["gap_prediction"]["best"] == s["gap_prediction"]["best"]
    for name, d in s["gap_prediction"]["diagnostics"].items():
        for sub in RS.SUBSETS:
            assert fresh["gap_prediction"]["diagnostics"][name][sub]["n"] == d[sub]["n"]
            want = d[sub]["spearman"]
            got = fresh["gap_prediction"]["diagnostics"][name][sub]["spearman"]
            assert (got is None and want is None) or got == pytest.approx(want, abs=1e-12)
    steps = np.asarray(s["checkpoint_steps"])
    for c in s["cells"]:
        i = c["index"]
        lin = a[f"cell{i}/coeff/lin_emp"]  # (S, T, N), float64 function-space GD of the linearization
        rate = c["learning_rate"] * a[f"cell{i}/k0_lambda"] / lin.shape[-1]
        slow = rate * modes.FAST_FRACTION * steps[-1] < 1
        want = np.sqrt(np.mean(np.where(slow, lin[:, -1] - lin[:, 0], 0.0) ** 2, axis=-1)) / c["y_scale"]
        want[np.asarray(c["diverged_lin"])] = np.nan  # lr > 2N/lambda_max(K_0): NaN, as the gap
        got = np.array([np.nan if v is None else v for v in c["metrics"]["gap_stalled"]["per_seed"]])
        # the stored trajectory and the closed form (1 - a)^T c_0 agree to ~1e-9 of the coefficients' scale
        # (the test above on coeff/lin_emp vs pred/emp)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.nanmax(np.abs(lin[:, 0])) / c["y_scale"])
        np.testing.assert_array_equal(np.isnan(got), c["diverged_lin"])


def _assert_same_cells(a_dir, b_dir, names):
    """The stored cells ``names`` (files cells/<name>-<key>.npz) of two folders hold the same arrays, bit for bit,
    but for their wall times."""
    for name in names:
        a, b = read_npz(a_dir / "cells" / name), read_npz(b_dir / "cells" / name)
        assert a.keys() == b.keys(), name
        for k, v in a.items():
            if k == "__meta__":  # the scalars, as JSON: all but the wall times
                meta_a, meta_b = (json.loads(str(m)) for m in (v, b[k]))
                assert {m: x for m, x in meta_a.items() if "seconds" not in m} == \
                    {m: x for m, x in meta_b.items() if "seconds" not in m}, name
            else:
                np.testing.assert_array_equal(v, b[k], err_msg=f"{name} {k}")


def _stop_and_resume(cfg, cut) -> None:
    """Stop a run of ``cfg`` after its first cell, then resume it: one cell stored, no summary, then the
    stored cell reused."""
    with pytest.raises(KeyboardInterrupt):
        regimes.run(cfg, cut, progress=False, stop_after=1)
    assert len(list((cut / "cells").glob("*.npz"))) == 1 and not (cut / "summary.json").exists()
    said = []
    regimes.run(cfg, cut, progress=False, log=said.append)
    assert sum("reusing" in line for line in said) == 1


def _rerun_from_cells(cfg, cut, again, monkeypatch, n_cells: int) -> None:
    """Run ``cfg`` into ``again`` holding a copy of ``cut``'s cells with run_cell patched to fail: every one
    of its ``n_cells`` cells is reused."""

    def boom(*_a, **_kw):
        raise AssertionError("run_cell called although its cell is stored")

    shutil.copytree(cut / "cells", again / "cells")
    monkeypatch.setattr(regimes, "run_cell", boom)
    said = []
    regimes.run(cfg, again, progress=False, log=said.append)
    assert "w=8 plain d=1 lr=0.5 x=5 ntk relu: reusing" in "\n".join(said)
    assert sum("reusing" in line for line in said) == n_cells
    monkeypatch.undo()


def test_interrupted_run_resumes_bit_identical_and_reuses_cells_two_cells(tiny_run, tmp_path, monkeypatch):
    """Two cells of the tiny run (base ReLU net: the hand-written trainer; doubled net: the generic one): a run
    stopped after its first cell resumes from the stored cell, and its cells are the uninterrupted tiny run's
    (the same keys: the key leaves out the rest of the sweep) bit for bit; a rerun reuses every cell (run_cell
    patched to fail) to the same results; --force recomputes, to the same numbers."""
    cfg, full = tiny_run
    sub = dataclasses.replace(cfg, depths=(1,), activations=("relu",))  # base + the doubled option
    cut, again = tmp_path / "cut", tmp_path / "again"
    _stop_and_resume(sub, cut)
    names = sorted(p.name for p in (cut / "cells").glob("*.npz"))
    assert len(names) == 2 and set(names) <= {p.name for p in (full / "cells").glob("*.npz")}
    _assert_same_cells(full, cut, names)
    _rerun_from_cells(sub, cut, again, monkeypatch, 2)
    _assert_same_results(cut, again)
    # force recomputes (here the first cell, then stops), to the same numbers.
    said = []
    before = {p.name: p.stat().st_mtime_ns for p in (again / "cells").glob("*.npz")}
    with pytest.raises(KeyboardInterrupt):
        regimes.run(sub, again, progress=False, force=True, stop_after=1, log=said.append)
    assert not any("reusing" in line for line in said)
    redone = [n for n in names if (again / "cells" / n).stat().st_mtime_ns != before[n]]
    assert len(redone) == 1
    _assert_same_cells(full, again, names)


# slow set: test_interrupted_run_resumes_bit_identical_and_reuses_cells_two_cells checks the same resume, reuse
# and --force on two of these cells
@pytest.mark.slow
def test_interrupted_run_resumes_bit_identical_and_reuses_cells(tiny_run, tmp_path, monkeypatch):
    """A run stopped after its first cell resumes from the stored cell with results identical to the
    uninterrupted run; a rerun reuses every cell (run_cell patched to fail) and --force recomputes."""
    cfg, full = tiny_run
    cut, again = tmp_path / "cut", tmp_path / "again"
    _stop_and_resume(cfg, cut)
    _assert_same_results(full, cut)
    _rerun_from_cells(cfg, cut, again, monkeypatch, 5)
    _assert_same_results(full, again)
    # force recomputes (here the base cell alone), to the same numbers.
    said = []
    base_only = dataclasses.replace(cfg, depths=(1,), options=("plain",))
    regimes.run(base_only, again, progress=False, force=True, log=said.append)
    assert not any("reusing" in line for line in said)
    forced, first = read_npz(again / "curves.npz"), read_npz(full / "curves.npz")
    for k, v in forced.items():
        if k.startswith("cell0/"):
            np.testing.assert_array_equal(v, first[k], err_msg=k)


def test_divergence_note_names_the_seeds():
    cell = regimes.cells(regimes.RegimesConfig(**TINY))[0]
    res = {"diverged_net": np.array([False, True]), "diverged_lin": np.array([False, False])}
    (note,) = regimes.notes(None, cell, res)
    assert note.startswith("note: width 8, lr=0.5 depth=1 x_range=5 ntk relu plain: diverged seeds: net [1]")
    assert regimes.notes(None, cell, {"diverged_net": np.zeros(2, bool), "diverged_lin": np.zeros(2, bool)}) == []


def test_help_does_not_import_jax():
    code = ("import sys; from study import regimes\n"
            "try:\n    regimes.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('jax', 'matplotlib', 'numpy') if m in sys.modules]\n"
            "assert not bad, f'imported by --help: {bad}'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_bad_flag_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "study.regimes", "--depths", "1,2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "depths: must contain the base cell's value 5" in res.stderr


def test_nd_data_refuse_x_ranges_in_one_line():
    """On data that are not a 1-D grid the input-scale axis is dropped by default and refused otherwise,
    and the (N k)^2 kernels recorded per checkpoint are bounded: one line each, naming the field."""
    from studylib.data import DataConfig

    digits = DataConfig(name="digits", n_train=12, n_test=20)
    assert regimes.RegimesConfig(data=digits).x_ranges == (digits.train_range,)
    with pytest.raises(ConfigError, match=r"^x_ranges: an axis of 1-D grids") as e:
        regimes.RegimesConfig(data=digits, x_ranges=(2.5, 5.0))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^data\.n_train: .* use --n-train <= 64"):
        regimes.RegimesConfig(data=DataConfig(name="digits"))


# slow set: tests/test_compare.py::test_digits_k10_linearization_and_learning_rates checks the same k-output
# path on digits (full flat (N k, N k) kernels, closed forms, NT's 2Nk/lambda_max rate) on compare's runs,
# and this file's tiny map the regimes cells; this one adds the k-output map (~11 s)
@pytest.mark.slow
def test_tiny_map_on_digits_with_k_outputs(tmp_path):
    """The map runs on digits (10 one-hot outputs, 64 pixel inputs): the generic trainer, the full flat
    (N k, N k) kernels and closed forms; the first-order prediction (scalar outputs only) is NaN with one
    note for the run, the measured gaps are finite, the analytic kernel is Theta (x) I_k (each eigenvalue k
    times) and the critical rate is NT's 2 N k / lambda_max."""
    from studylib.data import DataConfig

    # one cell (depth 1, relu, plain): each cell is its own compilation, and the k-output path is the same
    cfg = regimes.RegimesConfig(**(TINY | dict(options=("plain",), activations=("relu",), lr_fractions=(0.05,),
                                                lr_fraction=0.05, depths=(1,))),
                                data=DataConfig(name="digits", n_train=12, n_test=20))
    notes: list[str] = []
    summary = regimes.run(cfg, tmp_path, progress=False, log=notes.append)
    assert sum("first-order gap prediction" in n for n in notes) == 1
    cells = summary["cells"]
    assert len(cells) == 1  # depth 1, relu, plain
    for c in cells:
        m = c["metrics"]
        assert m["gap_predicted"]["mean"] is None or np.isnan(m["gap_predicted"]["mean"])  # no prediction, k > 1
        gap = np.asarray(m["gap"]["per_seed"], np.float64)
        assert gap.shape == (2,) and np.isfinite(gap).all() and (gap > 0).all()
        assert np.isfinite(np.asarray(m["loss_lin"]["per_seed"], np.float64)).all()
    arrays = read_npz(tmp_path / "curves.npz")
    lam = arrays["cell0/k0_lambda"]
    assert lam.shape == (2, 120)  # the flat (N k, N k) = (120, 120) kernel's spectrum per seed
    theta = arrays["cell0/theta_lambda"]
    # Theta (x) I_10: every analytic eigenvalue comes 10 times
    np.testing.assert_allclose(np.sort(theta).reshape(12, 10), np.sort(theta).reshape(12, 10)[:, :1]
                               * np.ones((1, 10)), rtol=1e-6)
    for c in cells:
        lam_max = np.max(arrays[f"cell{c['index']}/theta_lambda"])
        assert c["lr_critical_inf"] == pytest.approx(2 * 120 / lam_max, rel=1e-9)
        assert c["learning_rate"] == pytest.approx(0.05 * c["lr_critical_inf"], rel=1e-12)


def test_widest_measured_width_per_depth_respects_max_width():
    """A depth capped by --max-width reports its own widest measured width, not the sweep's."""
    from studylib.regimes import summary as RSum

    rows = {"values": [2, 5], "gap_median": [[0.3, 0.2, 0.1], [0.4, 0.3, None]]}
    assert RSum.widest_measured(np.array([64.0, 128.0, 256.0]), rows) == {"2": 256.0, "5": 128.0}


def test_centred_tiny_map_starts_at_zero_and_its_linearization_is_the_closed_form(tmp_path):
    """--centre on (1-D toy, float64, one cell): the network's outputs at step 0 are exactly 0 (f(theta_0) -
    f(theta_0)), and the stored linearization equals the exact discrete-GD closed form from f_0 = 0 with
    K_0 = J J^T of jax.jacobian (an independent kernel), to 1e-9 of its scale (float64 end to end)."""
    import jax
    import jax.numpy as jnp

    from studylib import closed_form, models, training
    from studylib.regimes import cell as RC

    cfg = regimes.RegimesConfig(**(TINY | dict(depths=(1,), activations=("relu",), options=("plain",),
                                                n_checkpoints=3, dtype="float64", centre="on")))
    s = regimes.run(cfg, tmp_path, progress=False)
    assert s["centred"] is True and len(s["cells"]) == 1
    a = read_npz(tmp_path / "curves.npz")
    net_test, lin_test = a["cell0/pred_test/net"], a["cell0/pred_test/lin"]  # (S, T, M)
    assert np.all(net_test[:, 0] == 0.0)
    data = RC.cell_data(cfg, 5.0)
    net = models.build(cfg.model, 8)
    p0 = training.init_params(net.init_fn, [0, 1], data.x_train.shape, dtype="float64")
    x, xt = jnp.asarray(data.x_train), jnp.asarray(data.x_test)
    y = np.asarray(data.y_train, np.float64)
    unravel = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda q: q[0], p0))[1]  # every seed's layout
    # J of the flat parameters, jitted: one compilation per input shape, not one per eager operation
    jacobian = jax.jit(lambda v, xx: jax.jacobian(lambda w: net.apply_fn(unravel(w), xx)[:, 0])(v))
    for seed in range(2):
        flat = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda q, i=seed: q[i], p0))[0]
        j_tr, j_te = (np.asarray(jacobian(flat, xx), np.float64) for xx in (x, xt))
        _, want = closed_form.discrete(j_tr @ j_tr.T, j_te @ j_tr.T, y, np.zeros_like(y), np.zeros((len(xt), 1)),
                                       learning_rate=s["cells"][0]["learning_rate"],
                                       steps=np.asarray(s["checkpoint_steps"]))
        np.testing.assert_allclose(lin_test[seed], want[..., 0], rtol=0, atol=1e-9 * np.abs(want).max())
