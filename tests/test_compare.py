"""The comparison study end to end on tiny configs."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from studylib import compare
from studylib.config import ConfigError
from studylib.data import DataConfig
from studylib.models import ModelConfig

# lr_fraction 0.25: below the empirical critical rate of both seeds, so nothing diverges here.
TINY = dict(widths=(16,), seeds=2, steps=12, n_checkpoints=4, lr_fraction=0.25)


@pytest.mark.slow  # ~25 s; CI runs it with -m slow (the same equality at library level: test_closed_form k = 10)
def test_function_space_linearization_equals_training_nt_linearize():
    """lin_mode='function' (SCIENCE.md section 6) against training nt.linearize step by step."""
    runs = {mode: compare.run(compare.CompareConfig(**TINY, lin_mode=mode, dtype="float64"), progress=False)
            for mode in ("params", "function")}
    for name in ("loss_lin", "rel_param_change_lin", "rmse_net_vs_lin", "rmse_lin_vs_closed_emp",
                 "rel_weight_change_lin_l1", "rel_weight_change_lin_l6"):
        a = np.array(runs["params"]["metrics"][name]["per_seed"], float)
        b = np.array(runs["function"]["metrics"][name]["per_seed"], float)
        # float64: the two are the same linear recursion in different coordinates; 12 steps of
        # O(1)-O(100) quantities leave rounding differences far below 1e-8 relative.
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12, err_msg=name)
    # In params mode the trained nt.linearize also equals the exact discrete closed form.
    gap = np.array(runs["params"]["metrics"]["rmse_lin_vs_closed_emp_discrete"]["per_seed"], float)
    assert np.all(gap < 1e-9)
    # The network itself is not linear: its gap to the linearization is far above rounding.
    assert np.all(np.array(runs["function"]["metrics"]["rmse_net_vs_lin"]["per_seed"], float) > 1e-4)


def test_cli_tiny_run_writes_summary_and_figures(tiny_compare):
    out = tiny_compare
    summary = json.loads((out / "summary.json").read_text())
    for key in ("config", "versions", "wall_seconds", "widths", "metrics", "slopes", "per_width", "conventions"):
        assert key in summary, key
    assert summary["widths"] == [8, 16]
    assert set(summary["versions"]) >= {"python", "jax", "jaxlib", "neural-tangents", "numpy"}
    required = ("rel_param_change", "rel_ntk_change", "ntk_init_error", "rmse_net_vs_lin",
                "rmse_net_vs_closed_inf", "rmse_lin_vs_closed_emp", "loss_net", "loss_lin")
    for name in required:
        entry_ = summary["metrics"][name]
        assert len(entry_["mean"]) == 2 and len(entry_["per_seed"][0]) == 2
        per_seed = np.array(entry_["per_seed"], float)
        np.testing.assert_allclose(entry_["mean"], np.nanmean(per_seed, axis=1), rtol=1e-12)
    for name in ("rel_param_change", "rmse_net_vs_lin"):
        assert summary["slopes"][name]["reference"]["slope"] in (-0.5, -1.0)
        assert len(summary["slopes"][name]["ci95"]) == 2
    curves = np.load(out / "curves.npz")
    t = len(summary["checkpoint_steps"])
    assert curves["curve/rmse_net_vs_lin"].shape == (2, 2, t)
    assert curves["steps"][0] == 0 and curves["steps"][-1] == 10
    # The network at step 0 is its own linearization and the closed forms start at f_0: zero up to
    # float32 rounding of the outputs (a few eps32 of their scale).
    scale = np.abs(curves["pred_test/net"][:, :, 0]).max()
    np.testing.assert_allclose(curves["curve/rmse_net_vs_lin"][:, :, 0], 0, atol=1e-5 * scale)
    np.testing.assert_allclose(curves["curve/rmse_net_vs_closed_inf"][:, :, 0], 0, atol=1e-5 * scale)
    # The first-order prediction is zero at step 0 (delta f_0 = 0) and beside the measured gap after it.
    np.testing.assert_array_equal(curves["curve/gap_predicted"][:, :, 0], 0)
    assert np.all(curves["curve/gap_predicted"][:, :, 1:] > 0)
    ratio = np.array(summary["metrics"]["gap_ratio"]["per_seed"], float)
    np.testing.assert_allclose(ratio, np.array(summary["metrics"]["rmse_net_vs_lin"]["per_seed"], float)
                               / np.array(summary["metrics"]["gap_predicted"]["per_seed"], float), rtol=1e-12)
    for stem in ("compare_gaps_vs_width", "compare_gaps_over_time", "compare_predictions",
                 "compare_layer_change_vs_width", "compare_gap_prediction"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
        assert (out / f"{stem}.pdf").exists()

    table = compare.format_table(summary)
    assert "rmse_net_vs_lin" in table and "n=16" in table


def test_divergence_is_reported_and_kept(tmp_path):
    # 20x the analytic critical rate. Narrow nets' empirical kernels vary a lot, so which seeds
    # exceed their own critical rate 2N/lambda_max(K_0) is read from the run; theory says exactly
    # those linearized models diverge: by a factor |1 - lr lambda_max / N| >= 1.4 per step when
    # lr >= 1.2x critical, i.e. beyond 1e29 after 200 steps.
    # depth 2 (the default is 5): the same run with less to compile.
    cfg = compare.CompareConfig(widths=(8,), seeds=3, steps=200, n_checkpoints=5, lr_fraction=20.0,
                                model=ModelConfig(depth=2))
    summary = compare.run(cfg, tmp_path, progress=False)
    n_diverged = 0
    for i, pw in enumerate(summary["per_width"]):
        for s in range(3):
            ratio = pw["lr_over_critical_emp"][s]
            if ratio > 1.2:
                assert pw["diverged_lin_step"][s] > 0
                assert np.isnan(summary["metrics"]["loss_lin"]["per_seed"][i][s])
                n_diverged += 1
            elif ratio < 1.0:
                assert pw["diverged_lin_step"][s] == -1
                assert np.isfinite(summary["metrics"]["loss_lin"]["per_seed"][i][s])
    assert n_diverged >= 1
    stored = json.loads((tmp_path / "summary.json").read_text())  # valid JSON: NaN stored as null
    assert stored["per_width"][0]["diverged_lin_step"] == [int(v) for v in summary["per_width"][0]["diverged_lin_step"]]
    assert any(v is None for row in stored["metrics"]["loss_lin"]["per_seed"] for v in row)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"widths": (16, 0)}, "widths[1]"),
    ({"widths": (16, 2.5)}, "widths[1]"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1.0}, "lr"),
    ({"steps": 0}, "steps"),
    ({"lin_mode": "exact"}, "lin_mode"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        compare.CompareConfig(**kwargs)


def test_bad_model_and_data():
    with pytest.raises(ConfigError, match=r"model.parameterization.*accepted: ntk, standard, mup"):
        ModelConfig(parameterization="sp")
    with pytest.raises(ConfigError, match=r"model.activation"):
        ModelConfig(activation="tanhh")
    with pytest.raises(ConfigError, match=r"data.test_range"):
        DataConfig(train_range=5.0, test_range=4.0)


@pytest.mark.parametrize(("args", "needle"), [
    (["--widths", "0,16"], "widths[0]"),
    (["--parameterization", "foo"], "model.parameterization: unknown value 'foo'; accepted: ntk, standard"),
    (["--lr", "-0.1"], "lr: must be > 0"),
])
def test_cli_rejects_bad_arguments_before_computing(args, needle):
    proc = subprocess.run([sys.executable, "-m", "study.compare", *args, "--out", "/nonexistent/x"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_file_and_flag_precedence(tmp_path):
    from studylib import cli

    path = tmp_path / "c.toml"
    path.write_text('steps = 7\nwidths = [8, 16]\n[model]\ndepth = 2\n')
    cfg = cli.assemble(compare.CompareConfig, presets=compare.PRESETS, preset="tiny", config_file=str(path),
                       flags={"steps": 9, "model.parameterization": "standard", "seeds": None})
    assert cfg.steps == 9 and cfg.widths == (8, 16) and cfg.model.depth == 2
    assert cfg.model.parameterization == "standard" and cfg.seeds == compare.PRESETS["tiny"]["seeds"]
    path.write_text("stepz = 3\n")
    with pytest.raises(ConfigError, match="stepz: unknown key"):
        cli.assemble(compare.CompareConfig, presets=compare.PRESETS, preset=None, config_file=str(path), flags={})


@pytest.mark.slow
def test_interrupted_run_resumes_and_results_are_deterministic(tmp_path):
    """Kill a run after its first width is stored, resume it, and compare with an uninterrupted
    run: the stored curves must be bit-identical (same machine, same config and seeds)."""
    import os
    import signal
    import time

    args = [sys.executable, "-m", "study.compare", "--preset", "tiny", "--widths", "8,16", "--steps", "10",
            "--checkpoints", "4", "--no-figures", "--no-progress"]
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*args, "--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((cut / "cells").glob("width8-*.npz")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((cut / "cells").glob("width8-*.npz")), "the first width was not stored in time"
    assert not (cut / "summary.json").exists()
    # SIGKILL may land while a cell is being written: that leaves only a hidden temporary file beside it (the
    # write is atomic, results.atomic_write), never a half-written cell under its own name
    from studylib import results as R

    assert all(p.name.startswith(".") for p in cut.rglob("*.tmp"))
    for path in (cut / "cells").glob("*.npz"):
        R.load_cell(path)  # every visible cell reads back whole
    resumed = subprocess.run([*args, "--out", str(cut)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "width 8: reusing" in resumed.stdout + resumed.stderr
    full = subprocess.run([*args, "--out", str(tmp_path / "full")], capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    a = np.load(cut / "curves.npz")
    b = np.load(tmp_path / "full" / "curves.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow  # ~20 s; CI runs it with -m slow (chunking also covered by the device tests)
def test_seed_chunks_give_the_same_results(monkeypatch):
    """Seeds vmapped one at a time (as when memory is short) equal seeds vmapped together."""
    from studylib import devices

    cfg = compare.CompareConfig(**TINY)
    together = compare.run(cfg, progress=False)
    monkeypatch.setattr(devices, "seeds_per_chunk", lambda *a, **k: 1)
    apart = compare.run(cfg, progress=False)
    for name in ("rmse_net_vs_lin", "rel_ntk_change", "loss_net", "rel_weight_change_l3"):
        # float32: vmapping 1 or 2 seeds may order the same sums differently.
        np.testing.assert_allclose(np.array(apart["metrics"][name]["per_seed"], float),
                                   np.array(together["metrics"][name]["per_seed"], float), rtol=1e-4, err_msg=name)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_devices_and_processes_give_the_same_results(tmp_path):
    """Seeds sharded over 2 (forced) CPU devices, and the widths shared by 2 jax.distributed
    processes over 127.0.0.1, against 1 process on 1 device."""
    import os

    args = [sys.executable, "-m", "study.compare", "--widths", "8,16", "--seeds", "2", "--steps", "6",
            "--checkpoints", "3", "--no-figures"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    two = subprocess.run([*args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr
    assert "devices: 2 cpu device(s)" in two.stdout + two.stderr
    port = _free_port()
    procs = [subprocess.Popen([*args, "--out", str(tmp_path / "procs"), "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (1, 0)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert "process 1 of 2" in logs[0] and "process 0 writes the summary" in logs[0]
    one = subprocess.run([*args, "--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    b = np.load(tmp_path / "one" / "curves.npz")
    # Processes compute whole cells with the same program as one process: bit-identical.
    procs_curves = np.load(tmp_path / "procs" / "curves.npz")
    assert sorted(procs_curves.files) == sorted(b.files)
    for key in b.files:
        np.testing.assert_array_equal(procs_curves[key], b[key], err_msg=key)
    a = np.load(tmp_path / "two" / "curves.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        # float32: partitioned and unpartitioned programs may fuse and sum differently, so each array
        # agrees to 1e-4 of its own magnitude (~1000 eps32, a few steps of rounding). An eigenvalue is
        # only known to ~N eps lambda_max of its matrix: lambda_min of these numerically singular
        # kernels is rounding noise (-3e-6 on one CPU, -2e-6 on another), so its scale is lambda_max's.
        ref = b["curve/ntk_lambda_max"] if key == "curve/ntk_lambda_min" else b[key]
        scale = np.nanmax(np.abs(ref)) if np.issubdtype(ref.dtype, np.number) and ref.size else 0.0
        if key == "curve/ntk_lambda_min":
            tol = 10 * len(b["x_train"]) * np.finfo(np.float32).eps * scale
        elif key.startswith("curve/trained_fraction"):
            # 1 - (1 - a)^t of the slowest mode, a = lr lambda_min / (N k): lambda_min is known to ~10 N eps32
            # lambda_max (above), and d(fraction)/d(lambda) <= lr t / (N k) <= 2 t / lambda_max below the
            # critical rate, so the fraction is known to ~20 N eps32 t.
            tol = 20 * len(b["x_train"]) * np.finfo(np.float32).eps * float(np.max(b["steps"]))
        elif "emp_limit" in key or key.startswith(("pred_test/after", "curve/after_")):
            # (after_*: the kernel regression with K_t, studylib.afterkernel, inverts K_t the same way.)
            # The t = inf closed form with K_0 inverts every mode above the float32 rounding level
            # (closed_form.null_rcond: R eps32 lambda_max), so rounding in K_0 comes back amplified by up
            # to lambda_max / lambda ~ 1 / (R eps32): a relative error up to ~1/R (R = 10 rows here).
            tol = 0.1 * scale
        else:
            tol = 1e-4 * scale
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=tol, err_msg=key)


# ------------------------------------------------------------------ real data: k outputs, held-out metrics, any net

DIGITS_TINY = dict(widths=(8,), seeds=2, steps=8, n_checkpoints=3, kernel_points=12)


def _digits(n_train=20, n_test=10, **kw):
    return DataConfig(name="digits", n_train=n_train, n_test=n_test, **kw)


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Digits with k = 10 outputs, float64, in both linearization modes; the 'function' run stored. Depth 2
    (digits' default is 5): the same code with 3 weight layers instead of 6 compiles in about half the time."""
    out = tmp_path_factory.mktemp("digits")
    cfg = {mode: compare.CompareConfig(**DIGITS_TINY, data=_digits(), lin_mode=mode, dtype="float64",
                                       model=ModelConfig(depth=2))
           for mode in ("params", "function")}
    runs = {"params": compare.run(cfg["params"], progress=False),
            "function": compare.run(cfg["function"], out, progress=False)}
    return cfg, runs, out


def test_digits_k10_linearization_and_learning_rates(digits_runs):
    """k = 10 outputs, centred (digits' default): nt.linearize of the centred net trained step by step
    (lin_mode='params') equals the function-space trajectory with the full (N k x N k) kernel and f_0 = 0
    (float64); the 'emp' rule: the width trains at <= lr_fraction x its seeds' smallest 2Nk/lambda_max(K_0)
    (the full kernel J J^T) to the time lr_fraction x 2Nk/lambda_max(Theta) x steps."""
    from studylib import data as D
    from studylib import kernels, models, training

    cfg, runs, _ = digits_runs
    a, b = runs["params"]["metrics"], runs["function"]["metrics"]
    for name in ("loss_lin", "rel_param_change_lin", "rmse_net_vs_lin", "test_loss_lin", "test_rmse_lin",
                 "rel_weight_change_lin_l1", "rel_weight_change_lin_l3"):
        # float64: one linear recursion in two coordinate systems; 8 steps leave rounding far below 1e-8
        np.testing.assert_allclose(np.array(a[name]["per_seed"], float), np.array(b[name]["per_seed"], float),
                                   rtol=1e-8, atol=1e-12, err_msg=name)
    for name in ("test_accuracy_lin", "test_agreement_net_vs_lin"):  # argmax of equal outputs
        np.testing.assert_array_equal(a[name]["per_seed"], b[name]["per_seed"], err_msg=name)
    c = cfg["function"]
    assert (c.lr_fraction, c.lr_rule, c.centred, c.ntk_implementation) == (0.5, "emp", True, 2)  # digits fc defaults
    assert runs["function"]["centred"] is True
    ds = D.load_for(c.data, c.model)
    n, k = ds.y_train.shape
    assert ds.x_train.shape == (n, 64) and k == 10 and ds.n_classes == 10
    net = models.build(c.model, 8, out_dim=10)
    theta = np.asarray(net.kernel_fn(ds.x_train, None, "ntk"), np.float64)
    total = 0.5 * 2 * n * k / np.linalg.eigvalsh(theta)[-1] * c.steps  # the absolute time every width reaches
    emp = []
    for s in (0, 1):
        p0 = jax_one_seed(training.init_params(net.init_fn, [s], ds.x_train.shape, dtype="float64"))
        k0 = np.asarray(kernels.jacobian_ntk(net.apply_fn, ds.x_train, ds.x_train, p0))
        assert k0.shape == (n * k, n * k)
        emp.append(2 * n * k / np.linalg.eigvalsh(k0)[-1])
    pw = runs["function"]["per_width"][0]
    np.testing.assert_allclose(pw["lr_critical_emp"], emp, rtol=1e-8)
    n_steps = int(np.ceil(total / (0.5 * min(emp))))
    assert pw["train_steps"] == n_steps and runs["function"]["checkpoint_steps"][-1] == n_steps
    assert pw["learning_rate"] == pytest.approx(total / n_steps, rel=1e-10)
    assert pw["train_time"] == pytest.approx(total, rel=1e-10) and pw["learning_rate"] <= 0.5 * min(emp)
    for name in ("rmse_net_vs_lin_interp", "rmse_net_vs_lin_extrap"):  # no 1-D regions on digits
        assert name not in runs["function"]["metrics"]


def jax_one_seed(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: x[0], tree)


def test_held_out_metrics_from_stored_predictions(digits_runs):
    """test_loss / test_accuracy / test_agreement curves against NumPy on the stored predictions;
    the figures for high-dimensional inputs."""
    from studylib import data as D

    cfg, runs, out = digits_runs
    curves = np.load(out / "curves.npz")
    y_test = D.load_for(cfg["function"].data, cfg["function"].model).y_test
    net, lin, inf = (curves[f"pred_test/{p}"].astype(np.float64) for p in ("net", "lin", "closed_inf"))
    assert net.shape == (1, 2, len(runs["function"]["checkpoint_steps"]), len(y_test), 10)
    labels = y_test.argmax(-1)
    # stored predictions are float32: losses agree to float32 rounding of O(1) outputs
    np.testing.assert_allclose(curves["curve/test_loss_net"], 0.5 * np.mean((net - y_test) ** 2, axis=(-2, -1)),
                               rtol=1e-5)
    np.testing.assert_allclose(curves["curve/test_accuracy_closed_inf"], np.mean(inf.argmax(-1) == labels, -1))
    np.testing.assert_allclose(curves["curve/test_agreement_net_vs_lin"], np.mean(net.argmax(-1) == lin.argmax(-1), -1))
    # at step 0 the network is its linearization and the closed forms start from its outputs
    assert np.all(curves["curve/test_agreement_net_vs_lin"][..., 0] == 1.0)
    assert np.all(curves["curve/test_agreement_net_vs_closed_inf"][..., 0] == 1.0)
    names = {p.name for p in compare.figures(out)}
    assert {"compare_test_over_time.png", "compare_test_vs_width.png", "compare_test_scatter.png"} <= names
    assert "compare_predictions.png" not in names  # no 1-D curve for 64-dimensional inputs


def test_init_error_without_building_the_kronecker_product():
    from studylib.compare import cell

    rng = np.random.default_rng(0)
    theta = rng.standard_normal((4, 4))
    theta = theta @ theta.T
    k0 = rng.standard_normal((2, 12, 12))
    want = [np.linalg.norm(k - np.kron(theta, np.eye(3))) / np.linalg.norm(np.kron(theta, np.eye(3))) for k in k0]
    np.testing.assert_allclose(cell.init_error(k0, theta), want, rtol=1e-12)


NO_BIAS_ERF = '''
from studylib.nt import stax


def build(width, cfg, out_dim=1):
    return stax.serial(stax.Dense(width), stax.Erf(), stax.Dense(width), stax.Erf(), stax.Dense(out_dim))


def no_weights(width, cfg, out_dim=1):
    return stax.serial(stax.Flatten())
'''


def test_any_stax_net_runs_or_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """NT's defaults (no biases, Erf): every Dense weight gets its per-layer change (the old crash was
    jnp.stack([]) of the bias-less layers); a net with no weight array stops with one line."""
    (tmp_path / "nobias_erf.py").write_text(NO_BIAS_ERF)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compare.CompareConfig(**{**DIGITS_TINY, "seeds": 1, "steps": 3}, data=_digits(layout="flat"),
                                model=ModelConfig(arch="nobias_erf:build"))
    assert cfg.ntk_implementation == 1  # user builders: the implementation that works for any stax net
    summary = compare.run(cfg, progress=False)
    layers = sorted(k for k in summary["metrics"] if re.fullmatch(r"rel_weight_change_l\d+", k))
    assert layers == ["rel_weight_change_l1", "rel_weight_change_l2", "rel_weight_change_l3"]
    assert all(v > 0 for v in summary["metrics"]["rel_weight_change_l2"]["per_seed"][0])
    # The entry point in this process (as tests/test_errors.py runs it): its exit status and its stderr.
    from study import compare as entry

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        # --no-figures: no figure helper is started ahead (plots.prestart_figures) for a run that stops at once
        entry.main(["--arch", "nobias_erf:no_weights", "--preset", "tiny", "--no-figures",
                    "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    assert "per-layer weight changes are unsupported" in err
    assert not (tmp_path / "x" / "cells").exists()  # stopped before computing anything


@pytest.mark.slow
def test_cnn_on_digit_images():
    """The conv net takes the images NHWC; one weight layer per Conv plus the readout. (float64: NT's Conv
    mixes a float64 constant into float32 inputs when x64 is on, as it is in the tests; a float32 study
    run has x64 off.)"""
    cfg = compare.CompareConfig(widths=(4,), seeds=1, steps=3, n_checkpoints=2, kernel_points=8, dtype="float64",
                                data=_digits(), model=ModelConfig(arch="cnn", depth=2))
    assert cfg.ntk_implementation == 3
    summary = compare.run(cfg, progress=False)
    assert sorted(k for k in summary["metrics"] if re.fullmatch(r"rel_weight_change_l\d+", k)) == [
        "rel_weight_change_l1", "rel_weight_change_l2", "rel_weight_change_l3"]
    assert 0.0 <= summary["metrics"]["test_accuracy_net"]["mean"][0] <= 1.0


def test_defaults_follow_the_data_and_the_plan_uses_the_real_shapes():
    from studylib import cli
    from studylib.compare import cell

    base = compare.CompareConfig()
    assert base.widths == (8, 16, 32, 64, 128, 256, 512, 1024) and base.steps == 1000 and base.lr_fraction == 0.5
    dig = compare.CompareConfig(data=DataConfig(name="digits"))
    assert len(dig.widths) >= 5 and dig.widths[-1] / dig.widths[0] >= 10**1.5 and dig.seeds >= 3
    assert dig.data.n_train >= 256 and dig.model.depth == 5
    cnn = compare.CompareConfig(data=DataConfig(name="digits"), model=ModelConfig(arch="cnn"))
    assert cnn.widths == compare.config.SWEEP_DEFAULTS[("digits", "cnn", "default")]["widths"]
    assert compare.CompareConfig(data=DataConfig(name="digits"), widths=(8, 16)).widths == (8, 16)
    large = cli.assemble(compare.CompareConfig, presets=compare.PRESETS, preset="large", config_file=None,
                         flags={"data.name": "digits", "model.arch": "cnn"})
    assert large.sweep == "large"
    assert large.widths == compare.config.SWEEP_DEFAULTS[("digits", "cnn", "large")]["widths"]
    # memory: the real input shape and the output count
    p = cell.memory_plan(large, 64, (256, 8, 8, 1), 10)
    from studylib import models
    n_params = models.count_params(models.build(large.model, 64, out_dim=10), (256, 8, 8, 1))
    assert p["params"] == n_params and p["outputs"] == 10
    assert p["fixed_bytes"] == 3 * p["kernel_rows"] * 10 * n_params * 4
    assert p["host_bytes"] == 3 * large.seeds * 2560**2 * 8
    assert cell.memory_plan(large, 64, (256, 8, 8, 1), 1)["params"] < n_params  # k changes the readout
    text = compare.plan(large)
    assert "(256, 8, 8, 1)" in text and "10 output(s)" in text and "2560 x 2560" in text


def _run_width(cfg, width, *, fast):
    from studylib import data as D
    from studylib.compare import cell

    return cell.run_width(cfg, width, D.load_for(cfg.data, cfg.model), fast=fast)


def test_hand_written_trainer_equals_the_generic_one():
    """FC nets train by the hand-written passes (sgd.full_batch_checkpoints) and their kernel, weight
    changes and function-space linearization come from per-sample features; the generic path trains
    stax's apply_fn by jax.grad and measures with NT's kernels. Same numbers, float64."""
    cfg = compare.CompareConfig(**TINY, dtype="float64", quad_max_width=0, after_kernel="on",
                                model=ModelConfig(activation="erf", depth=3))
    fast, generic = (_run_width(cfg, 16, fast=f) for f in (True, False))
    assert fast["curves"].keys() == generic["curves"].keys()
    for name, a in generic["curves"].items():
        b = fast["curves"][name]
        # float64, 12 steps of O(1) quantities: the two differ by the order of summation only (~1e-15
        # relative); 1e-9 of each curve's scale leaves room for the kernels' eigendecompositions.
        scale = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 1.0
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-9 * max(scale, 1e-300), err_msg=name)
    for key in ("k_net_train", "k0_train", "k0_eigenvalues"):
        np.testing.assert_allclose(fast[key], generic[key], rtol=1e-9, err_msg=key)


def test_first_order_prediction_of_the_gap_at_early_times():
    """compare's gap_predicted (studylib.perturb from theta_0) against the measured net - lin gap of a
    smooth net early in training, in the perturbative regime: width 512, erf, depth 2, inputs on [-1, 1], 12
    steps at 0.05 x the critical rate (measured: predicted/measured 0.89-1.17 over the checkpoints, seeds and
    regions; 1.01-1.19 at depth 5; the rest is the next order). A prediction with a wrong factor (eta vs 2 eta,
    a missing curvature term: the whole gap at step 1) is off by 2x or more, outside 30%."""
    from studylib.data import DataConfig

    cfg = compare.CompareConfig(**(TINY | {"lr_fraction": 0.05}), dtype="float64", quad_max_width=0,
                                model=ModelConfig(activation="erf", depth=2),
                                data=DataConfig(train_range=1.0, test_range=2.0))
    res = _run_width(cfg, 512, fast=True)
    for region in ("", "_train", "_interp", "_extrap"):
        measured = res["curves"]["rmse_net_vs_lin" + region][:, 1:]
        predicted = res["curves"]["gap_predicted" + region][:, 1:]
        assert np.all(measured > 0)
        np.testing.assert_allclose(predicted, measured, rtol=0.3, err_msg=region)


def test_emp_rule_trains_every_width_to_the_same_time():
    """learning_schedule's 'emp' rule: each width below lr_fraction x its seeds' smallest empirical critical
    rate, every width ending at the same absolute time T = lr_fraction x 2Nk/lambda_max(Theta) x steps,
    checkpoints at the analytic rule's fractions of T to within one step; 'analytic' unchanged."""
    from studylib import training
    from studylib.compare import cell

    cfg = compare.CompareConfig(data=DataConfig(name="digits"), steps=100, n_checkpoints=6)
    lr_inf, total = 2.0, 0.5 * 2.0 * 100
    want = training.checkpoint_steps(100, 6) / 100 * total
    for crit in ([1.0, 3.0], [4.0, 2.5], [0.3], [2.0 + 1e-13]):
        lr, steps = cell.learning_schedule(cfg, lr_inf, np.array(crit))
        assert lr <= 0.5 * min(crit) * (1 + 1e-12) and lr * steps[-1] == pytest.approx(total, rel=1e-12)
        assert steps[0] == 0 and np.all(np.diff(steps) >= 0) and steps[1] >= 1
        assert np.all(np.abs(lr * steps - want) <= lr * (1 + 1e-9)), (crit, lr * steps, want)
    assert cell.learning_schedule(cfg, lr_inf, np.array([2.0]))[1][-1] == 100  # at the analytic rate: its steps
    lr, steps = cell.learning_schedule(dataclasses_replace(cfg, lr_rule="analytic"), lr_inf, np.array([0.1]))
    assert lr == 1.0 and np.array_equal(steps, training.checkpoint_steps(100, 6))


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_cnn_digits_defaults_and_tiny_sweep():
    """The conv net on digits: depth 3 where ModelConfig's default 5 was left (an explicit other depth is kept;
    FC keeps 5), widths 8..64, each width at 0.5 x its own critical rate (emp), NT implementation 3; --preset tiny
    runs the 'tiny' sweep, whose conv net on digits takes 64 training images, while the 1-D toy's and digits FC's
    tiny runs resolve as before (widths 8, 16, 32, 30 steps, quadratic model at width 8, their rate rules)."""
    from studylib import cli

    tiny = lambda **flags: cli.assemble(compare.CompareConfig, presets=compare.PRESETS, preset="tiny",  # noqa: E731
                                        config_file=None, flags=flags)
    cnn = compare.CompareConfig(data=DataConfig(name="digits"), model=ModelConfig(arch="cnn"))
    assert (cnn.model.depth, cnn.widths, cnn.lr_rule, cnn.lr_fraction, cnn.ntk_implementation, cnn.centred) == (
        3, (8, 16, 32, 64), "emp", 0.5, 3, True)
    assert cnn.data.n_train == 256 and cnn.seeds >= 3 and cnn.model.options.get("readout", "flatten") == "flatten"
    digits = DataConfig(name="digits")
    assert compare.CompareConfig(data=digits, model=ModelConfig(arch="cnn", depth=2)).model.depth == 2
    assert compare.CompareConfig(data=digits).model.depth == 5  # FC unchanged
    gap = compare.CompareConfig(data=digits, model=ModelConfig(arch="cnn", options={"readout": "gap"}))
    assert gap.model.depth == 3 and gap.model.options["readout"] == "gap"
    t = tiny(**{"data.name": "digits", "model.arch": "cnn"})
    assert (t.sweep, t.data.n_train, t.model.depth, t.quad_max_width, t.widths, t.steps, t.lr_rule) == (
        "tiny", 64, 3, 0, (8, 16, 32), 30, "emp")
    toy, fc = tiny(), tiny(**{"data.name": "digits"})
    assert (toy.widths, toy.steps, toy.quad_max_width, toy.lr_rule, toy.lr_fraction, toy.model.depth) == (
        (8, 16, 32), 30, 8, "analytic", 0.5, 5)
    assert (fc.quad_max_width, fc.lr_rule, fc.data.n_train, fc.model.depth) == (8, "emp", 256, 5)
    with pytest.raises(ConfigError, match=r"^ntk_implementation: unknown value 4; accepted: 1, 2, 3$"):
        compare.CompareConfig(ntk_implementation=4)


def test_implementation_3_full_kernel_of_the_conv_net_equals_the_jacobian_product():
    """kernels.empirical_ntk_fn with NT's implementation 3 (the conv net's default, through studylib.nt) on the
    im2col cnn, full kernel over k = 2 outputs, against J J^T from jax.jacrev (kernels.jacobian_ntk), float64."""
    import jax

    from studylib import kernels, models

    net = models.build(ModelConfig(arch="cnn", depth=1), 3, out_dim=2)  # small: implementation 3 compiles slowly
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (3, 3, 3, 1)), np.float64)
    _, params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    ntk = jax.jit(kernels.empirical_ntk_fn(net.apply_fn, implementation=3, trace_outputs=False))  # op by op: slow
    got = kernels.flat_kernel(np.asarray(ntk(x, x[:2] * 0.5, params)))
    want = np.asarray(kernels.jacobian_ntk(net.apply_fn, x, x[:2] * 0.5, params))
    # float64: the same sums of ~100 products in another order; 1e-10 of the kernel's scale is rounding.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())
