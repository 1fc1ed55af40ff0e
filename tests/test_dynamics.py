"""study.dynamics: config validation, the seed preset's initialisation, the learning rates and cell
costs, a tiny run with figures, and resuming after an interruption (through the runner)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from studylib import cli, dynamics, kernels, models, runner, sgd
from studylib.config import ConfigError
from studylib.data import DataConfig


def _cfg(preset="tiny", **flags):
    return cli.assemble(dynamics.Config, presets=dynamics.PRESETS, preset=preset, config_file=None, flags=flags)


@pytest.mark.parametrize("flags,field", [
    ({"batch_sizes": (3,)}, "batch_sizes"),
    ({"record_every": 3}, "record_every"),
    ({"loss": "l1"}, "loss"),
    ({"epochs": 0}, "epochs"),
    ({"method": "fast"}, "method"),
    ({"model.arch": "cnn"}, "model.arch"),
    ({"model.arch": "res_fc", "method": "lowrank"}, "method"),  # the FC trainer cannot train res_fc
    ({"data.name": "digits", "data.n_train": 20, "method": "direct"}, "method"),  # nor 10 outputs
])
def test_bad_config_names_the_field(flags, field):
    with pytest.raises(ConfigError, match=field):
        _cfg(**flags)


def test_seed_preset_is_the_seeds_setup():
    cfg = _cfg("seed")
    assert (cfg.widths, cfg.batch_sizes, cfg.epochs, cfg.record_every, cfg.lr, cfg.loss) == \
        ((10, 100, 1000), (1, 5, 10), 20000, 5, 0.001, "mse")
    assert (cfg.model.parameterization, cfg.model.W_std, cfg.model.b_std, cfg.model.depth) == \
        ("standard", 1.0, 0.0, 5)
    assert (cfg.data.n_train, cfg.data.train_range) == (10, 5.0)
    assert isinstance(cfg.model, models.ModelConfig) and isinstance(cfg.data, DataConfig)


def test_seed_preset_init_variance_is_one_over_fan_in():
    """LeCun-normal: W ~ N(0, 1/fan_in). For the 4 hidden 1000 x 1000 layers the sample variance of
    4e6 draws has relative std sqrt(2/4e6) = 7e-4, so a 1% tolerance is 14 sigma wide, while the
    alternatives (He: 2/fan_in; NTK param's raw N(0, 1)) are off by 100% or more. Biases are exactly zero."""
    cfg = _cfg("seed")
    net = models.build(cfg.model, 1000)
    _, params = jax.jit(net.init_fn, static_argnums=1)(jax.random.PRNGKey(0), (1, 1))  # one compile, not per op
    dense = sgd.dense_params(params)
    hidden = np.concatenate([np.asarray(w, np.float64).ravel() for w, _ in dense[1:-1]])
    assert hidden.size == 4 * 1000 * 1000
    np.testing.assert_allclose(hidden.var() * 1000, 1.0, rtol=0.01)
    assert abs(hidden.mean()) < 5 * np.sqrt(1e-3 / hidden.size)
    # input layer (fan_in 1: N(0, 1), 1000 draws, rel. std of the variance 0.045 -> 20% is 4.4 sigma)
    np.testing.assert_allclose(np.var(np.asarray(dense[0][0], np.float64)), 1.0, rtol=0.2)
    assert all(float(np.abs(np.asarray(b)).max()) == 0.0 for _, b in dense)


def test_ntk_preset_uses_analytic_lr():
    """The ntk preset's cells train at half the analytic NTK's SGD critical rate of their batch
    size; the rate is kernels.minibatch_critical_rate with the study's loss factor, checked here
    against the closed forms of a 2 x 2 kernel (eigenvalues (6 +- sqrt 8)/2, diagonal 2, 4).
    Both sides are the same float64 arithmetic up to a few roundings: rel=1e-12."""
    cfg = _cfg("ntk", widths=(16,), batch_sizes=(1, 10), epochs=10, record_every=5)
    from studylib import data as D

    ds = D.load(cfg.data)
    theta = dynamics.analytic_ntk(cfg, 16, ds.x_train)
    lr, crit = dynamics.learning_rate(cfg, theta, 10)
    crit1 = dynamics.learning_rate(cfg, theta, 1)[1]
    assert cfg.lr is None and cfg.model.parameterization == "ntk"
    assert lr == pytest.approx(0.5 * crit, rel=1e-12) and 0 < crit1 < crit
    cells = dynamics.cells(cfg, ds)
    assert [(c.name, c.spec["width"], c.spec["batch_size"]) for c in cells] == [("w16_b1", 16, 1), ("w16_b10", 16, 10)]
    assert cells[1].spec["lr"] == pytest.approx(lr, rel=1e-12)
    assert cells[0].spec["lr"] == pytest.approx(0.5 * crit1, rel=1e-12)
    # the seed's loss mean((f - y)^2) has c = 2: batch N gives N / lambda_max, batch 1 gives 1 / max K_ii
    assert set(dynamics.LOSSES) == set(kernels.LOSS_FACTOR)
    c = kernels.LOSS_FACTOR["mse"]
    k = np.array([[2.0, 1.0], [1.0, 4.0]])
    lam_max = (6.0 + np.sqrt(8.0)) / 2.0
    assert kernels.minibatch_critical_rate(k, 2, loss_factor=c) == pytest.approx(2 / lam_max, rel=1e-12)
    assert kernels.minibatch_critical_rate(k, 1, loss_factor=c) == pytest.approx(1 / 4.0, rel=1e-12)
    assert kernels.critical_rate(lam_max, 2, loss_factor=c) == pytest.approx(2 / lam_max, rel=1e-12)


def test_cells_and_their_cost():
    """Cells are (width, batch size), widths outermost, named w<width>_b<batch>; with a fixed lr
    no kernel is computed. The cost is modelled seconds: set-up once per run, per width and per
    cell, plus training proportional to seeds and epochs (so a cell twice as long costs twice
    the training), and the width-1000 cells dominate the seed preset as they do its wall time."""
    cfg = _cfg("seed", seeds=1)
    cells = dynamics.cells(cfg)
    assert [c.name for c in cells] == [f"w{w}_b{b}" for w in (10, 100, 1000) for b in (1, 5, 10)]
    assert all(c.spec["lr"] == 0.001 for c in cells)
    costs = {c.name: c.cost for c in cells}
    setup = {c.name: c.cost - dynamics.training_seconds(cfg, c.spec["width"], c.spec["batch_size"]) for c in cells}
    cell, width, run = (dynamics.CELL_SETUP_SECONDS["direct"], dynamics.WIDTH_SETUP_SECONDS,
                        dynamics.RUN_SETUP_SECONDS)
    assert setup["w10_b1"] == pytest.approx(cell + width + run) and setup["w10_b5"] == pytest.approx(cell)
    assert setup["w100_b1"] == pytest.approx(cell + width)
    assert setup["w1000_b5"] == pytest.approx(dynamics.CELL_SETUP_SECONDS["lowrank"])
    assert sum(costs[f"w1000_b{b}"] for b in (1, 5, 10)) > 0.9 * sum(costs.values())
    assert 200 < costs["w1000_b1"] < 350 and 300 < sum(costs.values()) < 800  # measured: 253 s, 524 s
    double = dataclasses.replace(cfg, epochs=40000, seeds=2)
    for c in cells:
        w, b = c.spec["width"], c.spec["batch_size"]
        assert dynamics.training_seconds(double, w, b) == pytest.approx(4 * dynamics.training_seconds(cfg, w, b))
    want = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("widths", "batch_sizes")}
    want["model"] = {k: v for k, v in want["model"].items() if k not in ("gamma0", "base_width")}  # mu-P's, at defaults
    assert runner.key_config(dynamics, cfg) == want


def test_tiny_run_figures_and_resume(tmp_path):
    """A tiny run through the entry point writes results and figures; an interrupted run resumed
    skips the finished cell and ends with the same numbers as the uninterrupted one."""
    from study import dynamics as entry
    from studylib import results as R

    full = tmp_path / "full"
    entry.main(["--preset", "tiny", "--widths", "8", "--out", str(full), "--no-progress"])
    summary = R.read_json(full / "summary.json")
    assert summary["study"] == "dynamics" and summary["widths"] == [8]
    for key in ("config", "versions", "wall_seconds", "metrics", "per_cell"):
        assert key in summary
    assert np.all(np.isfinite(summary["metrics"]["rel_param_change"]["w8_b5"]["per_seed"]))
    for stem in ("dynamics_b5", "dynamics_b10", "dynamics_function", "dynamics_summary_vs_width"):
        for ext in (".png", ".pdf"):
            assert (full / "figures" / f"{stem}{ext}").stat().st_size > 1000
    # the face's figures stays the function once its submodule .plots is imported (a report draws
    # several dynamics folders in one process)
    assert callable(dynamics.figures)  # (test_other_architectures_... draws again in this process)
    cells = sorted((full / "cells").glob("*.npz"))
    assert [p.name.split("-")[0] for p in cells] == ["w8_b10", "w8_b5"]

    cfg = _cfg(widths=(8,))
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        dynamics.run(cfg, part, progress=False, stop_after=1)
    first = sorted((part / "cells").glob("*.npz"))
    assert len(first) == 1
    mtime = first[0].stat().st_mtime_ns
    dynamics.run(cfg, part, progress=False)
    assert first[0].stat().st_mtime_ns == mtime  # the finished cell was loaded, not recomputed
    assert sorted(p.name for p in (part / "cells").glob("*.npz")) == [p.name for p in cells]
    a, b = R.read_npz(full / "curves.npz"), R.read_npz(part / "curves.npz")
    assert set(a) == set(b)
    for k in a:
        # Same computation, same machine and process, cells stored and loaded exactly: bit-identical.
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    # --force recomputes (stop after the first cell to save time)
    with pytest.raises(KeyboardInterrupt):
        dynamics.run(dataclasses.replace(cfg), part, progress=False, force=True, stop_after=1)
    assert first[0].stat().st_mtime_ns != mtime


def test_generic_trainer_gives_the_fast_trainers_curves():
    """The generic trainer (jax.grad through stax's apply_fn, NT's empirical NTK) on the fc net
    gives the hand-written trainer's curves: same init, batches, loss, records and linearization,
    2 vmapped seeds, 2 records of 10 epochs at batch 5, float64. Both compute the same sums in a
    different order, so they differ by float64 rounding (~1e-16 relative per operation, here
    ~1e-14 after 40 steps); 1e-10 relative is far above that and far below any real difference
    (a wrong scale, sign or batch moves these curves at 1e-3 or more)."""
    from studylib import data as D

    fast = _cfg(widths=(8,), batch_sizes=(5,), record_every=10, dtype="float64", method="direct")
    generic = dataclasses.replace(fast, method="generic")
    assert dynamics.resolve_method(_cfg(), 8) == "direct" and dynamics.resolve_method(generic, 8) == "generic"
    assert dynamics.resolve_method(_cfg(), 256) == "lowrank" == dynamics.resolve_method(_cfg(), 1000)
    assert dynamics.resolve_method(_cfg(**{"model.arch": "res_fc"}), 8) == "generic"
    assert sgd.FAST_ARCHS == models.FAST_ARCHS  # the hand-written trainer's archs: one definition
    runner.enable_x64(True)  # what runner.run does for a float64 config
    ds = D.load(fast.data)
    ctx = runner.Context(dataset=ds, shared=None, log=print)
    a = dynamics.run_cell(fast, dynamics.cells(fast, ds)[0], ctx)
    b = dynamics.run_cell(generic, dynamics.cells(generic, ds)[0], ctx)
    assert (a["method"], b["method"]) == ("direct", "generic") and a["vmapped_seeds"] and b["vmapped_seeds"]
    assert set(a["curves"]) == set(b["curves"])
    for k, v in a["curves"].items():
        assert v.shape == b["curves"][k].shape == (2, 3, *v.shape[2:]), k
        np.testing.assert_allclose(b["curves"][k], v, rtol=1e-10, atol=1e-12 * np.abs(v).max(), err_msg=k)
    assert float(a["curves"]["rel_param_change"][:, -1].min()) > 1e-3  # the run did train
    for k in ("f0_test", "f_net_test", "f_lin_test", "f_net_train", "f_lin_train", "k0_lambda_max",
              "lr_over_critical_emp"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12 * np.abs(a[k]).max(), err_msg=k)


USER_MODULE = """
from studylib.nt import stax


def build(width, cfg):
    # A 2-hidden-layer Erf net with a user option: hidden width = width * mult
    n = width * int(cfg.options.get("mult", 1))
    return stax.serial(stax.Dense(n, W_std=1.5, b_std=0.1), stax.Erf(),
                       stax.Dense(n, W_std=1.5, b_std=0.1), stax.Erf(), stax.Dense(1, W_std=1.5, b_std=0.1))
"""


@pytest.mark.parametrize("arch,options,n_dense,figures", [
    # every weight array: embedding, the block's two Dense, readout (~11 s: CI runs it with -m slow)
    pytest.param("res_fc", ["blocks=1"], 4, True, marks=pytest.mark.slow),
    ("dyn_user_arch:build", ["mult=1"], 3, False),  # figures read only the stored results: drawn once
])
def test_other_architectures_run_through_the_entry_point(tmp_path, monkeypatch, arch, options, n_dense, figures):
    """res_fc and a user builder 'module:function' (written to tmp_path, put on sys.path) train by
    the generic trainer through `python -m study.dynamics` and write results (and figures).
    Width 8 and 20 epochs as in test_tiny_run_figures_and_resume, so that the parameter draws
    and batch permutations reuse its compiled kernels."""
    from study import dynamics as entry
    from studylib import results as R

    (tmp_path / "dyn_user_arch.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    argv = ["--preset", "tiny", "--widths", "8", "--batch-sizes", "10", "--record-every", "10", "--arch", arch,
            "--out", str(out), "--no-progress"] + ([] if figures else ["--no-figures"])
    for o in options:
        argv += ["--arch-option", o]
    entry.main(argv)
    summary = R.read_json(out / "summary.json")
    assert summary["config"]["model"]["arch"] == arch
    assert [pc["method"] for pc in summary["per_cell"]] == ["generic"]
    for m in ("rel_param_change", "rel_param_change_lin", "rel_ntk_change", "loss_net", "loss_lin"):
        v = np.asarray(summary["metrics"][m]["w8_b10"]["per_seed"], np.float64)
        assert v.shape == (2,) and np.all(np.isfinite(v)), m
    assert np.all(np.asarray(summary["metrics"]["rel_param_change"]["w8_b10"]["per_seed"]) > 0)
    curves = R.read_npz(out / "curves.npz")
    assert curves["w8_b10/curve/rel_weight_change"].shape == (2, 3, n_dense)
    if figures:
        for stem in ("dynamics_b10", "dynamics_function", "dynamics_summary_vs_width"):
            assert (out / "figures" / f"{stem}.png").stat().st_size > 1000


@pytest.mark.slow  # ~19 s; CI runs it with -m slow (k outputs: test_sgd)
def test_digits_k_outputs_and_images_run_with_held_out_metrics(tmp_path):
    """--data digits (10 centred one-hot outputs) trains through the generic trainer (full (N k, N k)
    kernel, flat outputs) with held-out loss, RMSE, accuracy and agreement; the stored values agree with
    NumPy recomputations from the stored functions; the figures leave out the 1-D function plot and
    draw the held-out one. A conv net on digits images (raw labels: k = 1, inputs (N, 8, 8, 1)) trains
    too; cnn with the 1-D toy data is one line at config time."""
    from study import dynamics as entry
    from studylib import data as D
    from studylib import results as R

    with pytest.raises(ConfigError, match=r"^model\.arch: 'cnn' takes images") as e:
        dynamics.DynamicsConfig(model=models.ModelConfig(arch="cnn"))
    assert "\n" not in str(e.value)
    base = ["--preset", "tiny", "--widths", "8", "--batch-sizes", "10", "--epochs", "4", "--record-every", "2",
            "--data", "digits", "--n-train", "20", "--n-test", "30", "--no-progress"]
    out = tmp_path / "out"
    entry.main([*base, "--out", str(out)])
    summary = R.read_json(out / "summary.json")
    assert [pc["method"] for pc in summary["per_cell"]] == ["generic"]
    assert summary["data"]["outputs"] == 10 and summary["data"]["input_shape"] == [64]
    curves = R.read_npz(out / "curves.npz")
    m = {k: np.asarray(v["w8_b10"]["per_seed"], np.float64) for k, v in summary["metrics"].items()}
    f_net, f_lin = curves["w8_b10/f_net_test"], curves["w8_b10/f_lin_test"]
    y_test = curves["y_test"].reshape(30, 10)
    assert f_net.shape == f_lin.shape == (2, 300) and curves["y_train"].shape == (200,)
    label = np.argmax(y_test, 1)
    np.testing.assert_allclose(m["test_accuracy_net"], np.mean(np.argmax(f_net.reshape(2, 30, 10), 2) == label, 1))
    np.testing.assert_allclose(m["test_loss_lin"], np.mean((f_lin - y_test.ravel()) ** 2, 1), rtol=1e-12)
    assert np.all((m["test_agreement_net_vs_lin"] >= 0) & (m["test_agreement_net_vs_lin"] <= 1))
    # the recorded training loss is the seed's mean over the N k outputs of the stored functions
    np.testing.assert_allclose(m["loss_net"], np.mean((curves["w8_b10/f_net_train"] - curves["y_train"]) ** 2, 1),
                               rtol=1e-5)
    assert np.all(m["rel_param_change"] > 0) and np.isfinite(m["rel_ntk_change"]).all()
    assert curves["w8_b10/curve/rel_weight_change"].shape == (2, 3, 3)  # tiny: depth 2 + readout
    figs = out / "figures"
    assert (figs / "dynamics_test.png").stat().st_size > 1000 and not (figs / "dynamics_function.png").exists()
    # a conv net on the digits images
    cnn = dynamics.DynamicsConfig(data=DataConfig(name="digits", n_train=20, n_test=10, targets="raw"),
                                  model=models.ModelConfig(arch="cnn", depth=1), widths=(2,), batch_sizes=(10,),
                                  epochs=2, record_every=2, seeds=1)
    assert dynamics.resolve_method(cnn, 2) == "generic"
    ds = D.load_for(cnn.data, cnn.model)
    assert ds.x_train.shape == (20, 8, 8, 1)
    res = dynamics.run_cell(cnn, dynamics.cells(cnn, ds)[0], runner.Context(dataset=ds, shared=None, log=print))
    assert res["f_net_test"].shape == (1, 10) and np.isfinite(res["test"]["test_loss_net"]).all()
    assert res["curves"]["rel_weight_change"].shape == (1, 2, 2)  # one conv kernel and the readout
