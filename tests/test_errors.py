"""Every failure a user can cause ends in one line naming the field and what is accepted, before any long
computation (issue 23, item 3); user networks are described by what they are (item 4).

Each case runs the entry point in process (``study.<name>.main``) or builds the config, and compares the
exact line against the message it must print. The plugin module is written into a temporary folder.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest

from studylib import data as D
from studylib import devices, models, tables
from studylib.config import ConfigError
from studylib.data import DataConfig
from studylib.models import ModelConfig

PLUGIN = '''
import jax.numpy as jnp

from studylib.nt import stax


def raises(width, cfg, out_dim=1):
    raise ValueError("width must be even")


def needs16(width, cfg, out_dim=1):
    if width < 16:
        raise ValueError(f"width {width} < 16")
    return stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(out_dim))


def no_closed_form(width, cfg, out_dim=1):
    return stax.serial(stax.Dense(width), stax.Elementwise(fn=jnp.tanh), stax.Dense(out_dim))


def sin(width, cfg, out_dim=1):
    return stax.serial(stax.Dense(width), stax.Sin(), stax.Dense(width), stax.Sin(), stax.Dense(out_dim))


def fixed_width(width, cfg, out_dim=1):
    return stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(out_dim))


def from_config(width, cfg, out_dim=1):
    act = {"relu": stax.Relu, "erf": stax.Erf}[cfg.activation]
    layers = []
    for _ in range(cfg.depth):
        layers += [stax.Dense(width), act()]
    return stax.serial(*layers, stax.Dense(out_dim))
'''

USER_HELP = ("accepted: an importable 'package.module:function' taking (width: int, cfg: ModelConfig[, out_dim: "
             "int]) and returning (init_fn, apply_fn, kernel_fn)")
TINY = ["--preset", "tiny", "--seeds", "1", "--steps", "3", "--checkpoints", "2", "--no-progress", "--no-figures"]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The module ``errs_arch`` (written once per test into tmp_path) and a small regression .npz."""
    (tmp_path / "errs_arch.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3))
    np.savez(tmp_path / "ok.npz", x=x, y=np.sin(x[:, :1]), x_test=rng.standard_normal((6, 3)))
    return tmp_path


def error_line(capsys, main, argv) -> str:
    """The one line a failing entry point prints (and its exit status 2)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err, err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


# ----------------------------------------------------------------------------------------------- builders


def test_builder_that_raises_is_one_line(plugin, capsys):
    from study import compare

    line = error_line(capsys, compare.main, [*TINY, "--arch", "errs_arch:raises", "--out", str(plugin / "o")])
    assert line == ("error: model.arch: builder 'errs_arch:raises' raised ValueError: width must be even (called as "
                    f"raises(8, cfg, out_dim=1)); {USER_HELP}")


def test_not_a_builder_is_one_line(plugin, capsys):
    from study import compare

    line = error_line(capsys, compare.main, [*TINY, "--arch", "os.path:join", "--out", str(plugin / "o")])
    assert line == ("error: model.arch: builder 'os.path:join' raised TypeError: expected str, bytes or os.PathLike "
                    f"object, not int (called as join(8, cfg)); {USER_HELP}")


def test_builder_checked_at_the_first_width_of_the_sweep(plugin):
    """Before: checked at a hard-coded width 8, so --widths 16,32 failed on a width never asked for."""
    from studylib.compare import CompareConfig
    from studylib.predict import PredictConfig

    model = ModelConfig(arch="errs_arch:needs16")
    CompareConfig(widths=(16, 32), model=model)  # no error: 8 is not swept
    PredictConfig(widths=(16, 32), model=model)
    with pytest.raises(ConfigError, match=r"raised ValueError: width 8 < 16 \(called as needs16\(8, cfg"):
        CompareConfig(widths=(8, 16), model=model)


def test_layer_without_closed_form_is_named(plugin, capsys):
    """Before: NotImplementedError: None from deep inside NT, after the networks were set up."""
    from study import compare

    line = error_line(capsys, compare.main, [*TINY, "--arch", "errs_arch:no_closed_form", "--out", str(plugin / "o")])
    assert line == ("error: model.arch: 'errs_arch:no_closed_form': layer Elementwise has no closed-form kernel; the "
                    "studies need NT's analytic kernel_fn (the learning rate 2Nk/lambda_max and the closed forms use "
                    "it); accepted: layers with a closed form, e.g. stax.Elementwise(fn, nngp_fn=...) or "
                    "stax.ElementwiseNumerical(fn, deg)")


def test_builder_that_ignores_width_is_flagged(plugin, capsys):
    # Dense(64) whatever the width (NT's Dense has no bias by default): 3 x 64 + 64 x 1 weights at both widths
    D.check_pair(DataConfig(dim=3, name="sphere"), ModelConfig(arch="errs_arch:fixed_width", options={"t": 1}),
                 widths=(8, 32))
    n = 3 * 64 + 64 * 1
    assert capsys.readouterr().err.strip() == (
        f"warning: model.arch: 'errs_arch:fixed_width' has {n} parameters at width 8 and at width 32: it ignores "
        "width, so every width trains the same network (build layers with the width argument)")
    D.check_pair(DataConfig(dim=3, name="sphere"), ModelConfig(arch="errs_arch:sin", options={"t": 1}), widths=(8, 32))
    assert capsys.readouterr().err == ""  # a builder that uses the width: no warning


# ----------------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize("study", ["compare", "predict", "ensemble"])
def test_width_beyond_memory_is_refused_before_allocating(study, tmp_path, capsys):
    """Before: an out-of-memory traceback after 11-25 s. Now one line with the plan, in seconds."""
    import importlib

    main = importlib.import_module(f"study.{study}").main
    t0 = time.perf_counter()
    line = error_line(capsys, main, ["--preset", "tiny", "--widths", "8,10000000", "--out", str(tmp_path / "o"),
                                     "--no-progress", "--no-figures"])
    assert time.perf_counter() - t0 < 60  # nothing trained (the width-8 cell is not run first)
    assert re.fullmatch(r"error: widths: width 10000000 needs ~[\d,.]+ GiB for one (seed|member) \(width 10000000: "
                        r".*\), more than the [\d.]+ GiB of the device; accepted: widths whose plan fits \(--plan "
                        r"prints every width's\)", line), line
    # one seed's parameters alone (4 bytes each, float32) already exceed the machine
    params = int(re.search(r"width 10000000: ([\d,]+) parameters", line).group(1).replace(",", ""))
    assert params * 4 > devices.device_memory_bytes()
    if study == "predict":  # predict's plan: parameters per width, as the ensemble's and compare's already do
        from study import predict

        predict.main(["--preset", "tiny", "--widths", "8,10000000", "--plan"])
        out = capsys.readouterr().out
        assert "warning: width 10000000 needs more than the" in out and f"{params:,} parameters" in out


def test_max_memory_caps_the_plan(tmp_path, capsys):
    from study import compare

    try:
        line = error_line(capsys, compare.main, ["--preset", "tiny", "--widths", "8,2048", "--max-memory", "0.01",
                                                 "--out", str(tmp_path / "o"), "--no-progress", "--no-figures"])
    finally:
        devices.set_max_memory(None)
    assert line.startswith("error: widths: width 2048 needs ~") and "more than the 0.0 GiB of --max-memory" in line
    with pytest.raises(ConfigError, match="--max-memory: expected GiB > 0"):
        devices.set_max_memory(-1)


# ----------------------------------------------------------------------------------------------- data files


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_bad_data_files_blame_data_path(tmp_path):
    x, y = np.random.default_rng(0).standard_normal((12, 3)), np.ones((12, 1))
    cases = {
        "y0.npz": ({"x": x, "y": np.zeros((12, 0))},
                   "data.path: y in {p} has shape (12, 0): no numbers per example; accepted: y of shape (N,) or "
                   "(N, k) with k >= 1"),
        "rows0.npz": ({"x": np.zeros((0, 3)), "y": np.zeros((0, 1))},
                      "data.path: x in {p} has 0 rows (shape (0, 3)); accepted: one row per example, at least 2"),
        "test0.npz": ({"x": x, "y": y, "x_test": np.zeros((0, 3))},
                      "data.path: x_test in {p} has 0 rows (shape (0, 3)); accepted: one row per example, at least 1"),
        "huge.npz": ({"x": x * 1e25, "y": y},
                     "data.path: x in {p} has values up to " + f"{np.abs(x).max() * 1e25:.3g}" + " in magnitude; "
                     "accepted: |x| <= 1e+06 (rescale, e.g. standardise, the data: float32 kernels and losses of such "
                     "values overflow)"),
        "feat0.npz": ({"x": np.zeros((12, 0)), "y": y},
                      "data.path: x in {p} has shape (12, 0): no numbers per example; accepted: x of shape (N, ...) "
                      "with at least one number per row"),
    }
    for name, (arrays, message) in cases.items():
        p = _npz(tmp_path / name, **arrays)
        with pytest.raises(ConfigError) as e:
            DataConfig(name="file", path=p)
        assert str(e.value) == message.format(p=p), name
    # the largest accepted magnitude still loads
    DataConfig(name="file", path=_npz(tmp_path / "edge.npz", x=x / np.abs(x).max() * D.MAX_ABS_VALUE, y=y))


def test_zero_features_not_blamed_on_the_model(tmp_path, capsys):
    """Before: 'error: model.arch: 'fc' fails on inputs of shape (9, 0): float division by zero'."""
    from study import compare

    p = _npz(tmp_path / "feat0.npz", x=np.zeros((12, 0)), y=np.ones(12))
    line = error_line(capsys, compare.main, [*TINY, "--data", "file", "--data-path", p, "--out", str(tmp_path / "o")])
    assert line.startswith(f"error: data.path: x in {p} has shape (12, 0)")


# ----------------------------------------------------------------------------------------------- divergence


def test_ensemble_divergence_helpers():
    """The fast sibling of the run below: a NaN kernel gives NaN eigenvalues (not LinAlgError) and the
    first diverged checkpoint is found per member as compare finds it (non-finite, or 1e6 x (max|y| + 1) away)."""
    from studylib.ensemble.cell import DIVERGENCE_SCALE, eigvalsh_finite, first_diverged

    grams = np.stack([np.diag([1.0, 3.0]), np.full((2, 2), np.nan)])
    lam = eigvalsh_finite(grams)
    assert np.allclose(lam[0], [1.0, 3.0]) and np.isnan(lam[1]).all()
    y = np.array([[0.5], [-1.0]])
    steps = np.array([0, 2, 7])
    out = np.zeros((3, 3, 2))  # (T, members, N k)
    out[2, 0, 1] = np.inf  # member 0: non-finite at step 7
    out[1:, 1, 0] = 3.0 * DIVERGENCE_SCALE  # member 1: ~3e6 from y, beyond 1e6 x (max|y| + 1) = 2e6, from step 2
    out[:, 2, 0] = 1.5 * DIVERGENCE_SCALE  # member 2: below 2e6 away: not diverged
    assert first_diverged(out, y, steps).tolist() == [7, 2, -1]


@pytest.mark.slow
def test_ensemble_divergence_is_reported_not_raised(tmp_path, capsys):
    """Before: numpy LinAlgError (eigvalsh of a NaN kernel). Now the run finishes, says where each width
    diverged and keeps its results; the GD rate above 2Nk/lambda_max is named once."""
    from study import ensemble
    from studylib.results import read_json

    out = tmp_path / "o"
    ensemble.main(["--preset", "tiny", "--widths", "4,8", "--members", "2", "--steps", "3", "--checkpoints", "2",
                   "--mc-repeats", "2", "--no-readout", "--lr", "1e9", "--out", str(out), "--no-progress",
                   "--no-figures"])
    err = capsys.readouterr()
    text = err.out + err.err
    assert re.search(r"warning: ntk: lr 1e\+09 is above the critical rate 2Nk/lambda_max = [\d.e+-]+ of the analytic "
                     r"kernel: gradient descent diverges", text), text
    from studylib import training

    first = int(training.checkpoint_steps(3, 2)[1])  # lr ~1e10 x critical: gone by the first checkpoint after 0
    for w in (4, 8):
        assert (f"warning: width {w}, ntk: 2 of 2 members diverged (non-finite or exploding outputs), the first by "
                f"step {first} (members [0, 1]); kept as NaN, left out of the statistics") in text
    summary = read_json(out / "summary.json")
    assert summary["widths"] == [4, 8]  # both widths finished and were kept


# ----------------------------------------------------------------------------------------------- descriptions


def test_user_builder_described_by_what_it_is(plugin):
    """Before: predict described a Sin net from config fields it ignores ('depth 2 relu') and applied the
    ReLU caveat. Counted independently: Dense(3->8) + Dense(8->8) + Dense(8->1) weights (NT's Dense: no bias
    by default)."""
    from studylib.predict.summary import is_relu

    d = models.describe(ModelConfig(arch="errs_arch:sin"), 8, (10, 3))
    params = 3 * 8 + 8 * 8 + 8 * 1
    assert d["layers"] == ["Dense", "Sin", "Dense", "Sin", "Dense"] and d["params"] == params
    assert d["text"] == f"user builder errs_arch:sin (stax: Dense x3, Sin x2; {params} parameters at width 8)"
    assert "depth" not in d["text"] and "relu" not in d["text"]
    from studylib.predict import PredictConfig

    assert is_relu(PredictConfig(model=ModelConfig(arch="errs_arch:sin", activation="relu")), d) is False
    relu_net = models.describe(ModelConfig(arch="errs_arch:fixed_width"), 8, (10, 3))
    assert relu_net["layers"] == ["Dense", "Relu", "Dense"]
    assert is_relu(PredictConfig(model=ModelConfig(arch="errs_arch:fixed_width", activation="erf")), relu_net)


def test_predict_reports_the_user_network(plugin, capsys):
    from study import predict
    from studylib.results import read_json

    out = plugin / "p"
    predict.main(["--preset", "tiny", "--arch", "errs_arch:sin", "--widths", "4,8", "--seeds", "1", "--steps", "3",
                  "--checkpoints", "2", "--predict-rows", "3", "--out", str(out), "--no-progress", "--no-figures"])
    table = capsys.readouterr().out
    s = read_json(out / "summary.json")
    params = 1 * 4 + 4 * 4 + 4 * 1  # 1-D cubic inputs, width 4, no biases
    want = f"user builder errs_arch:sin (stax: Dense x3, Sin x2; {params} parameters at width 4)"
    assert s["network"]["text"] == want
    assert "of user builder errs_arch:sin" in table and "depth 2 relu" not in table and "ReLU" not in table
    assert not s["validity"]["relu"]
    assert "n/a (1 seed)" in table  # one seed: no interval


def test_regimes_refuses_axes_a_builder_ignores(plugin):
    from studylib.regimes import RegimesConfig

    sin = ModelConfig(arch="errs_arch:sin")
    with pytest.raises(ConfigError) as e:
        RegimesConfig(model=sin)
    assert str(e.value) == ("depths: 'errs_arch:sin' builds the same network at model.depth 5 and 1 (it ignores "
                            "model.depth), so this axis would repeat one network under different labels; accepted "
                            "for this builder: depths = 5 only (--depths 5)")
    with pytest.raises(ConfigError, match=r"^activations: 'errs_arch:sin' builds the same network at model.activation "
                                          r"'relu' and 'erf'"):
        RegimesConfig(model=sin, depths=(5,))
    RegimesConfig(model=sin, depths=(5,), activations=("relu",))  # the base values only: accepted
    RegimesConfig(model=ModelConfig(arch="errs_arch:from_config"))  # reads depth and activation: both axes kept


# ----------------------------------------------------------------------------------------------- intervals


def test_one_seed_prints_no_interval():
    """A bootstrap over one seed always draws it: a zero-width interval that says nothing."""
    assert tables.ci(0.1, 0.1, 1) == "n/a (1 seed)" == tables.ONE_SEED
    assert tables.ci(-0.5, 0.25, 3, signed=True) == "[-0.50, +0.25]"
    assert tables.ci(0.1, None, 2, digits=3) == "[0.1, ∞]"
    summary = {"seeds": [0], "slopes": {"m": {"slope": -0.5, "ci95": [-0.5, -0.5], "fit_widths": [8, 16],
                                              "local_slopes": [{"widths": [8, 16], "slope": -0.5,
                                                                "ci95": [-0.5, -0.5]}]}}}
    assert "n/a (1 seed)" in tables.slopes_table(summary, ["m"]) and "[-0.5" not in tables.slopes_table(summary, ["m"])
    assert "n/a (1 seed)" in tables.local_slopes_table(summary, ["m"])
    summary["seeds"] = [0, 1]
    assert "[-0.5, -0.5]" in tables.slopes_table(summary, ["m"])
    assert math.isclose(float(tables.fmt(-0.5, 2)), -0.5)
