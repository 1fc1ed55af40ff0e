"""The regimes study: config validation, the sweep layout, summary helpers, and a tiny end-to-end run."""

import re
import subprocess
import sys

import numpy as np
import pytest

from studylib import regimes
from studylib.config import ConfigError, ModelConfig
from studylib.results import read_json, read_npz


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"widths": (8, 8)}, "widths"),
        ({"lr_fractions": (0.1, -1.0)}, "lr_fractions[1]"),
        ({"depths": (1, 2)}, "depths"),  # base depth 5 missing
        ({"x_ranges": (1.0,)}, "x_ranges"),  # base 5.0 missing
        ({"parameterizations": ("ntk", "mup")}, "parameterizations[1]"),
        ({"options": ("centred",)}, "options"),  # plain missing
        ({"options": ("plain", "bogus")}, "options[1]"),
        ({"sweep": "grid"}, "sweep"),
        ({"gap_threshold": 0.0}, "gap_threshold"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match="^" + re.escape(field) + ":"):
        regimes.RegimesConfig(**kwargs)


def test_cells_one_at_a_time_and_product():
    cfg = regimes.RegimesConfig(lr_fractions=(0.1, 0.5), depths=(1, 5), x_ranges=(5.0,),
                                parameterizations=("ntk", "standard"), options=("plain", "centred"))
    cells = regimes.cells(cfg)
    base = cfg.base()
    assert cells[0] == base
    # base + one other value per axis (lr 0.1, depth 1, standard) + centred option
    assert len(cells) == 5
    assert sum(c != base for c in cells) == 4
    assert all(sum(c[k] != base[k] for k in base) == 1 for c in cells[1:])
    prod = regimes.cells(regimes.RegimesConfig(**{**vars_of(cfg), "sweep": "product"}))
    assert len(prod) == 2 * 2 * 1 * 2 + 1
    assert len({tuple(sorted(c.items())) for c in prod}) == len(prod)


def vars_of(cfg):
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_wide_enough_interpolates_and_requires_staying_below():
    w = np.array([16, 64, 256])
    # gap 1 at 16, 0.01 at 64: crossing at 0.1 is halfway in log -> 32
    assert regimes.wide_enough(w, np.array([1.0, 0.01, 0.001]), 0.1) == pytest.approx(32.0, rel=1e-9)
    assert regimes.wide_enough(w, np.array([0.05, 0.2, 0.05]), 0.1) == pytest.approx(128.0, rel=1e-9)
    assert regimes.wide_enough(w, np.array([0.05, 0.2, 0.5]), 0.1) is None
    assert regimes.wide_enough(w, np.array([0.01, 0.02, 0.03]), 0.1) == 16.0


def test_correlation_recovers_a_power_law():
    x = np.geomspace(0.1, 100, 30)
    c = regimes.correlation(x, 0.3 * x**0.7)
    assert c["slope"] == pytest.approx(0.7, abs=1e-12)
    assert c["pearson_log"] == pytest.approx(1.0, abs=1e-12)
    assert regimes.correlation(x[:2], x[:2])["slope"] is None


def test_doubled_model_is_zero_at_init_and_has_the_plain_kernel():
    import jax
    import jax.numpy as jnp

    from studylib import kernels, models, training
    from studylib.nt import nt

    net = models.build(ModelConfig(depth=2), 32)
    x = jnp.linspace(-3.0, 3.0, 5)[:, None]
    p0 = jax.tree_util.tree_map(lambda a: a[0], training.init_params(net.init_fn, [0], x.shape))
    model_fn, make = regimes.variant_model(net.apply_fn, "doubled", 1.0)
    params, aux = make(p0)
    assert np.all(np.asarray(model_fn(params, aux, x)) == 0.0)
    k_plain = kernels.empirical_ntk_fn(net.apply_fn)(x, None, p0)
    k_doubled = nt.empirical_ntk_fn(lambda p, xx: model_fn(p, aux, xx), trace_axes=(-1,))(x, None, params)
    np.testing.assert_allclose(k_doubled, k_plain, rtol=1e-10)  # (K + K)/2 = K exactly up to rounding
    model_c, make_c = regimes.variant_model(net.apply_fn, "centred", 0.5)
    pc, ac = make_c(p0)
    assert np.all(np.asarray(model_c(pc, ac, x)) == 0.0)


def test_tiny_run_writes_results_and_figures(tmp_path):
    """In-process (the CLI is exercised by the tests below): one width, two depths, one option."""
    from studylib import plots_regimes

    out = tmp_path / "reg"
    cfg = regimes.RegimesConfig(widths=(8,), seeds=2, steps=8, n_checkpoints=5, lr_fractions=(0.5,),
                                depths=(1, 2), x_ranges=(5.0,), parameterizations=("ntk",),
                                options=("plain", "doubled"), model=ModelConfig(depth=1))
    regimes.run(cfg, out, progress=False)
    paths = plots_regimes.regimes_figures(out)
    assert all(p.is_file() for p in paths)
    s = read_json(out / "summary.json")
    assert s["study"] == "regimes" and s["config"]["steps"] == 8
    assert len(s["cells"]) == 3  # base, depth 2, doubled at one width
    for key in ("versions", "wall_seconds", "conventions", "heatmaps", "gap_vs_laziness", "wide_enough",
                "options", "modes_base"):
        assert key in s
    a = read_npz(out / "curves.npz")
    c0 = a["cell0/coeff/net_emp"]
    assert c0.shape == (2, len(s["checkpoint_steps"]), 10)
    # The linearization is exact in its own K_0 basis: it never departs from the prediction.
    for i in range(len(s["cells"])):
        assert np.all(np.isnan(a[f"cell{i}/departure/lin_emp"]))
        np.testing.assert_allclose(a[f"cell{i}/coeff/lin_emp"], a[f"cell{i}/pred/emp"],
                                   atol=1e-9 * np.abs(a[f"cell{i}/pred/emp"]).max())
    # Doubled network: f(theta_0) = 0, so the initial loss is 1/2 mean(Y^2) (float32 outputs: rtol 1e-6).
    dbl = next(c["index"] for c in s["cells"] if c["option"] == "doubled")
    y = np.linspace(-5, 5, 10) ** 3 / 20
    np.testing.assert_allclose(a[f"cell{dbl}/curve/loss_net"][:, 0], 0.5 * np.mean(y**2), rtol=1e-6)
    names = {p.name for p in out.iterdir()}
    for fig in ("regimes_modes", "regimes_departure", "regimes_kernel_motion", "regimes_heatmaps",
                "regimes_gap_vs_laziness", "regimes_wide_enough", "regimes_options"):
        assert f"{fig}.png" in names and f"{fig}.pdf" in names


def test_rerun_reuses_stored_cells_and_force_recomputes(tmp_path, capsys, monkeypatch):
    """Each cell is stored in out/cells/ as it finishes; a second run reuses every one (run_cell is
    patched to fail if called) with identical results; force=True recomputes. Tiny preset, cut down further."""
    import dataclasses

    from study import regimes as entry

    cfg = regimes.RegimesConfig(**{**regimes.PRESETS["tiny"], "widths": (8,), "steps": 4, "n_checkpoints": 3,
                                   "depths": (1,), "options": ("plain", "centred")}, model=ModelConfig(depth=1))
    regimes.run(cfg, tmp_path, progress=False)
    assert len(list((tmp_path / "cells").glob("width8-*.npz"))) == 2
    first = read_json(tmp_path / "summary.json")
    first_arrays = read_npz(tmp_path / "curves.npz")
    run_cell = regimes.run_cell

    def boom(*_a, **_kw):
        raise AssertionError("run_cell called although its cell is stored")

    monkeypatch.setattr(regimes, "run_cell", boom)
    capsys.readouterr()
    regimes.run(cfg, tmp_path, progress=False)
    printed = capsys.readouterr().out
    assert "width 8, lr=0.5 depth=1 x_range=5 ntk plain: reusing" in printed
    assert "width 8, lr=0.5 depth=1 x_range=5 ntk centred: reusing" in printed
    again = read_json(tmp_path / "summary.json")
    for key in ("cells", "heatmaps", "options", "modes_base", "gap_vs_laziness", "wide_enough"):
        assert again[key] == first[key], key
    again_arrays = read_npz(tmp_path / "curves.npz")
    assert again_arrays.keys() == first_arrays.keys()
    for k, v in again_arrays.items():
        np.testing.assert_array_equal(v, first_arrays[k], err_msg=k)

    # The key leaves out the rest of the sweep, not what changes the cell's numbers.
    base = cfg.base()
    key = regimes.cell_key(cfg, base, 8)
    assert key == regimes.cell_key(dataclasses.replace(cfg, widths=(8, 16), options=("plain",),
                                                       gap_threshold=0.2), base, 8)
    assert key != regimes.cell_key(dataclasses.replace(cfg, steps=5), base, 8)
    assert key != regimes.cell_key(cfg, base | {"option": "centred"}, 8)
    # force recomputes (here one cell).
    calls = []

    def counted(cfg_, cell, width, *a, **kw):
        calls.append((cell["option"], width))
        return run_cell(cfg_, cell, width, *a, **kw)

    monkeypatch.setattr(regimes, "run_cell", counted)
    regimes.run(dataclasses.replace(cfg, options=("plain",)), tmp_path, progress=False, force=True)
    assert calls == [("plain", 8)] and "reusing" not in capsys.readouterr().out
    forced = read_npz(tmp_path / "curves.npz")
    for k, v in forced.items():
        if k.startswith("cell0/"):
            np.testing.assert_array_equal(v, first_arrays[k], err_msg=k)
    assert entry.parse_args(["--force"]).force and not entry.parse_args([]).force


def test_help_does_not_import_jax():
    code = ("import sys; from study import regimes\n"
            "try:\n    regimes.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'jax' not in sys.modules, 'jax imported by --help'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_bad_flag_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "study.regimes", "--depths", "1,2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "depths: must contain the base cell's value 5" in res.stderr
