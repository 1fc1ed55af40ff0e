"""The ensemble study: GP closed forms against NT, the Monte-Carlo floor, readout-only training,
member chunks, the runner (resume, reuse, --force) and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import closed_form, models, runner, training
from studylib import ensemble as E
from studylib.config import ConfigError
from studylib.data import DataConfig
from studylib.ensemble import cell as C
from studylib.models import ModelConfig
from studylib.results import read_npz

#: float64 unit roundoff.
EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def small():
    """A depth-2 ReLU net's analytic kernels on 5 train / 9 test points (float64)."""
    net = models.build(ModelConfig(depth=2), 8)
    x_train = jnp.linspace(-2.0, 2.0, 5)[:, None]
    y_train = x_train**3 / 20.0
    x_test = jnp.linspace(-4.0, 4.0, 9)[:, None]
    k = {g: (np.asarray(net.kernel_fn(x_train, None, g)), np.asarray(net.kernel_fn(x_test, x_train, g)))
         for g in ("ntk", "nngp")}
    k_tt = np.asarray(net.kernel_fn(x_test, None, "nngp"))
    lr = 0.5 * 2 * 5 / np.linalg.eigvalsh(k["ntk"][0])[-1]
    return {"net": net, "x_train": x_train, "y_train": y_train, "x_test": x_test, "k": k, "k_tt": k_tt, "lr": lr}


def _numpy_eq_14_16(theta_dd, theta_td, k_dd, k_td, k_tt, y, time):
    """Lee et al. 2019 eqs. 14-16 written out literally (matrix exponential, explicit inverse)."""
    from scipy.linalg import expm

    n = theta_dd.shape[0]
    a = theta_td @ np.linalg.inv(theta_dd) @ (np.eye(n) - expm(-theta_dd * time / n))
    mean = a @ y[:, 0]
    cov = k_tt + a @ k_dd @ a.T - a @ k_td.T - k_td @ a.T
    return mean, cov


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_nt_ensemble_matches_closed_form(small, get):
    """NT's gradient_descent_mse_ensemble == eqs. 14-16 by NumPy == gp_moments(flow), at time lr * steps.

    float64 throughout; the explicit inverse of kernels with condition numbers ~1e4 (NTK) and ~1e7
    (NNGP) here loses up to cond x eps ~ 1e-9 relative, so 1e-7 of each quantity's scale is safe."""
    s = small
    steps = np.array([0, 1, 7, 60, 500])
    th_dd, th_td = s["k"][get]
    k_dd, k_td = s["k"]["nngp"]
    y = np.asarray(s["y_train"])
    nt_mean, nt_cov = closed_form.nt_gp(s["net"].kernel_fn, s["x_train"], s["y_train"], s["x_test"], get=get,
                                        learning_rate=s["lr"], steps=steps)
    our_mean, our_cov = closed_form.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=s["lr"],
                                               steps=steps)
    scale_m = np.abs(nt_cov).max() ** 0.5  # the GP's std: the natural unit of its mean
    scale_c = np.abs(s["k_tt"]).max()
    for i, t in enumerate(steps):
        ref_mean, ref_cov = _numpy_eq_14_16(th_dd, th_td, k_dd, k_td, s["k_tt"], y, s["lr"] * t)
        np.testing.assert_allclose(nt_mean[i], ref_mean, atol=1e-7 * scale_m)
        np.testing.assert_allclose(nt_cov[i], ref_cov, atol=1e-7 * scale_c)
        np.testing.assert_allclose(our_mean[i], ref_mean, atol=1e-7 * scale_m)
        np.testing.assert_allclose(our_cov[i], ref_cov, atol=1e-7 * scale_c)
    # t = 0 is the NNGP prior (A_0 = 0: only rounding of a few products remains, ~N eps of the scale);
    # the mean moves and the covariance shrinks with time.
    np.testing.assert_allclose(nt_mean[0], 0.0, atol=100 * EPS * scale_m)
    np.testing.assert_allclose(nt_cov[0], s["k_tt"], rtol=0, atol=100 * EPS * scale_c)
    assert np.trace(nt_cov[-1]) < 0.5 * np.trace(nt_cov[0])


def test_nt_time_counts_steps(small):
    """NT's t counts steps: (t = s, learning_rate = lr) equals (t = lr * s, learning_rate = 1)."""
    s = small
    a = closed_form.nt_gp(s["net"].kernel_fn, s["x_train"], s["y_train"], s["x_test"], get="ntk",
                          learning_rate=s["lr"], steps=np.array([3.0, 40.0]))
    b = closed_form.nt_gp(s["net"].kernel_fn, s["x_train"], s["y_train"], s["x_test"], get="ntk",
                          learning_rate=1.0, steps=s["lr"] * np.array([3.0, 40.0]))
    # The same float64 computation but for the order of one product lr * t: rounding only.
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-10 * np.abs(y).max())


def test_discrete_gp_matches_stepwise_recursion(small):
    """gp_moments(discrete) == the infinite ensemble of linearized models stepped by GD: the joint outputs
    (train, test) are affine in f_0 ~ N(0, K), f_{s+1} = f_s - lr/N Θ(., X) (f_s(X) - Y); iterate the
    affine map exactly and push the Gaussian through it (independent of the eigendecomposition route)."""
    s = small
    th_dd, th_td = s["k"]["ntk"]
    k_dd, k_td = s["k"]["nngp"]
    n, m = th_dd.shape[0], th_td.shape[0]
    y = np.asarray(s["y_train"])[:, 0]
    theta_rows = np.concatenate([th_dd, th_td])  # Θ(joint, X)
    k_joint = np.block([[k_dd, k_td.T], [k_td, s["k_tt"]]])
    lr = 1.5 * s["lr"]  # near the critical rate: flow and GD differ visibly
    b = np.eye(n + m)  # f_s = c + B f_0
    c = np.zeros(n + m)
    steps = [0, 1, 2, 5, 30]
    mean_d, cov_d = closed_form.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps,
                                           discrete=True)
    # float64, 30 steps of a contraction: the two routes agree to ~1e-12 of each quantity's scale.
    for step in range(steps[-1] + 1):
        if step in steps:
            i = steps.index(step)
            np.testing.assert_allclose(mean_d[i], c[n:], atol=1e-9 * (1 + np.abs(c).max()))
            np.testing.assert_allclose(cov_d[i], (b @ k_joint @ b.T)[n:, n:], atol=1e-9 * np.abs(k_joint).max())
        c, b = c - lr / n * theta_rows @ (c[:n] - y), b - lr / n * theta_rows @ b[:n]
    mean_f, _ = closed_form.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps)
    assert np.abs(mean_f[1] - mean_d[1]).max() > 1e-3 * np.abs(mean_d[1]).max()  # the check above can fail


def test_discrete_gp_tends_to_flow_as_lr_shrinks(small):
    """At fixed lr * t, (I - lr Θ/N)^t -> exp(-lr t Θ/N) with an O(lr) error: halving lr halves the gap."""
    s = small
    th_dd, th_td = s["k"]["ntk"]
    k_dd, k_td = s["k"]["nngp"]
    y = np.asarray(s["y_train"])
    gaps = []
    for lr in (s["lr"] / 4, s["lr"] / 8, s["lr"] / 16):
        steps = [round(20 * s["lr"] / lr)]
        f = closed_form.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps)
        d = closed_form.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps,
                                   discrete=True)
        gaps.append(max(np.abs(f[0] - d[0]).max(), np.abs(f[1] - d[1]).max()))
    assert gaps[0] > 1e-6
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.15)  # first order in lr; higher orders shift it a little


def test_mc_floor_shrinks_with_members(small):
    """Exact GP draws: mean/std errors fall like 1/sqrt(M) and calibration sits at 0.9545."""
    s = small
    mean, cov = closed_form.gp_moments(*s["k"]["ntk"], *s["k"]["nngp"], s["k_tt"], np.asarray(s["y_train"]),
                                       learning_rate=s["lr"], steps=[0, 50])
    small_m = E.mc_floor(mean, cov, 8, 300, seed=1)
    big_m = E.mc_floor(mean, cov, 128, 300, seed=2)
    for k in ("mean_err", "std_err"):
        ratio = small_m[k].mean(0) / big_m[k].mean(0)
        # sqrt(128/8) = 4; the ddof=1 std of 8 draws is biased low, and 300 repeats leave ~5% noise.
        assert np.all((ratio > 3.0) & (ratio < 5.0)), (k, ratio)
    # mean_err of M exact draws: E[RMS_x(mean error)^2] = mean_x σ^2 / M exactly -> ratio to RMS σ is 1/sqrt(M);
    # 300 repeats of a chi-square-like quantity leave a few % of noise.
    np.testing.assert_allclose(np.sqrt((big_m["mean_err"] ** 2).mean(0)), 1 / math.sqrt(128), rtol=0.1)
    # Calibration over 300 x 128 x 9 correlated draws: a standard error of a few 1e-3.
    np.testing.assert_allclose(big_m["calibration"].mean(0), E.COVERAGE_2SIGMA, atol=0.01)


def test_ensemble_stats_leaves_out_diverged_members():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((1, 50, 20))
    ref = E.ensemble_stats(f, np.zeros((1, 20)), np.ones((1, 20)))
    f_bad = np.concatenate([f, np.full((1, 3, 20), np.nan)], axis=1)
    bad = E.ensemble_stats(f_bad, np.zeros((1, 20)), np.ones((1, 20)))
    for k in E.STATS:
        # The same members in the same order: only nan-aware vs plain reductions differ (a few eps).
        np.testing.assert_allclose(bad[k], ref[k], rtol=1e-12)
    assert bad["n_finite"][0] == 50


def test_readout_training_moves_only_the_last_layer():
    """Readout-only GD: hidden layers untouched (they are aux), the readout follows exact linear regression on
    the frozen features: f_t = f_0 + K_ro(., X) c_t (K_ro = readout Gram)."""
    net = models.build(ModelConfig(depth=2), 16)
    x = jnp.linspace(-2.0, 2.0, 6)[:, None]
    y = x**3 / 20
    p0 = training.init_params(net.init_fn, [0, 1], x.shape)
    ro = E.readout_model(net.apply_fn)
    trainer = training.make_trainer(ro)
    pr = trainer(jax.tree_util.tree_map(jnp.copy, p0[-1]), p0, x, y, 0.05, 40)
    full = [*p0[:-1], pr]
    changed = [float(sum(jnp.abs(a - b).max() for a, b in zip(jax.tree_util.tree_leaves(q),
                                                               jax.tree_util.tree_leaves(q0), strict=True)))
               for q, q0 in zip(full, p0, strict=True)]
    assert all(c == 0.0 for c in changed[:-1]) and changed[-1] > 1e-3
    # Linear regression on frozen features: iterate the function-space recursion with the readout Gram.
    for m in range(2):
        pm = jax.tree_util.tree_map(lambda a, m=m: a[m], p0)
        jac = jax.jacrev(lambda q, pm=pm: ro(q, pm, x)[:, 0])(pm[-1])
        j = np.concatenate([np.asarray(a).reshape(6, -1) for a in jax.tree_util.tree_leaves(jac)], axis=1)
        f = np.asarray(ro(pm[-1], pm, x))[:, 0]
        for _ in range(40):
            f = f - 0.05 / 6 * (j @ j.T) @ (f - np.asarray(y)[:, 0])
        got = np.asarray(ro(jax.tree_util.tree_map(lambda a, m=m: a[m], pr), pm, x))[:, 0]
        # float64, 40 steps of the same linear map in two coordinate systems: rounding ~1e-14 of |f|.
        np.testing.assert_allclose(got, f, rtol=0, atol=1e-9 * np.abs(f).max())


def test_wide_ensemble_at_init_matches_nngp_prior():
    """At t = 0 an ensemble of wide depth-2 nets is a draw of the NNGP prior: its statistics sit inside the
    Monte-Carlo floor of the same M (the O(depth/n) finite-width bias of the output covariance is small
    beside the sampling noise 1/sqrt(M) ~ 0.14)."""
    cfg = E.EnsembleConfig(widths=(512,), members=48, steps=1, n_checkpoints=2, mc_repeats=200, readout=False,
                           dtype="float64", model=ModelConfig(depth=2), data=DataConfig(n_test=15))
    from studylib import data as D

    ds = D.load(cfg.data)
    steps = np.array([0])
    gp = E.gp_all(cfg, ds, steps)
    out = E.train_width(cfg, 512, ds, lrs=gp["lr"], steps=steps, measure_kernels=False)
    mean, cov = gp["ntk"]["flow"]
    st = E.ensemble_stats(out["ntk"]["test"], mean, closed_form.gp_std(cov))
    floor = E.mc_floor(mean, cov, cfg.members, cfg.mc_repeats, seed=3)
    for k in ("mean_err", "std_err"):
        assert st[k][0] <= np.quantile(floor[k][:, 0], 0.995), (k, st[k][0])
    assert st["calibration"][0] >= np.quantile(floor["calibration"][:, 0], 0.005)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="members"):
        E.EnsembleConfig(members=1)
    with pytest.raises(ConfigError, match="widths"):
        E.EnsembleConfig(widths=(16, 16))
    with pytest.raises(ConfigError, match=r"model\.parameterization"):
        E.EnsembleConfig(model=ModelConfig(parameterization="standard"))
    with pytest.raises(ConfigError, match="readout"):
        E.EnsembleConfig(readout="yes")
    with pytest.raises(ConfigError, match=r"^centre: 'on' is not available here: .*accepted: auto, off$"):
        E.EnsembleConfig(centre="on")  # centring removes the prior spread the study compares (docs/ensemble.md)
    with pytest.raises(ConfigError, match="centre"):
        E.EnsembleConfig(centre="yes")


def test_centre_auto_and_off_are_the_same_uncentred_run():
    """'auto' runs uncentred even for class targets (digits), and 'auto' / 'off' share every cell's key."""
    from studylib import runner
    from studylib.data import DataConfig

    digits = E.EnsembleConfig(data=DataConfig(name="digits", n_train=20, n_test=15))
    assert not digits.centred and not E.EnsembleConfig(centre="off").centred
    cell = E.cells(digits)[0]
    off = dataclasses.replace(digits, centre="off")
    assert runner.cell_key(E, digits, cell) == runner.cell_key(E, off, cell)


def test_cells_and_keys():
    """One cell per width, costlier the wider; the key leaves out the list of widths and mc_repeats
    (the floor is computed after the cells), not what changes the networks."""
    cfg = E.EnsembleConfig(widths=(4, 16), members=8, steps=4, n_checkpoints=3)
    cells = E.cells(cfg)
    assert [c.name for c in cells] == ["width4", "width16"] and cells[0].cost < cells[1].cost
    assert E.cells(dataclasses.replace(cfg, readout=False))[1].cost < cells[1].cost
    key = lambda c, cell=cells[1]: runner.cell_key(E, c, cell)  # noqa: E731
    assert key(cfg) == key(dataclasses.replace(cfg, widths=(16, 32), mc_repeats=5))
    assert key(cfg) != runner.cell_key(E, cfg, cells[0])
    assert key(cfg) != key(dataclasses.replace(cfg, steps=5))
    assert E.needs_x64(dataclasses.replace(cfg, dtype="float32"))  # the GP is float64 whatever the networks use


def _param_count(d_in: int, width: int, depth: int) -> int:
    """Weights and biases of the fc family: Dense(d_in, w), depth - 1 x Dense(w, w), Dense(w, 1)."""
    return (d_in + 1) * width + (depth - 1) * (width + 1) * width + (width + 1)


def test_member_chunk_uses_the_datasets_input_dimension(tmp_path, monkeypatch):
    """The member batch is sized from the dataset's own input shape: a --data file with d = 5 has more
    first-layer weights than d = 1, so with memory for exactly M members at d = 1 fewer fit at d = 5
    (the old guess, 'd = 1 unless sphere', sized both alike)."""
    from studylib import data as D
    from studylib import devices

    x = np.random.default_rng(0).standard_normal((12, 5))
    np.savez(tmp_path / "five.npz", x=x, y=x[:, :1] ** 2, x_test=x[:3], y_test=x[:3, :1] ** 2)
    cfg = E.EnsembleConfig(widths=(64,), members=8, model=ModelConfig(depth=2),
                           data=DataConfig(name="file", path=str(tmp_path / "five.npz")))
    shape = D.load(cfg.data).x_train.shape
    assert shape == (12, 5)
    p5, p1 = E.member_plan(cfg, 64, shape), E.member_plan(cfg, 64, (12, 1))
    assert p5["params"] == _param_count(5, 64, 2) and p1["params"] == _param_count(1, 64, 2)
    assert p5["bytes_per_member"] == 5 * 4 * p5["params"]  # float32, ~5 buffers per member
    budget = p1["bytes_per_member"] * cfg.members / devices.MEMORY_FRACTION / len(jax.local_devices())
    monkeypatch.setattr(devices, "memory_bytes", lambda: budget)
    assert E.member_chunk(cfg, 64, (12, 1)) == cfg.members
    assert E.member_chunk(cfg, 64, shape) == cfg.members * p1["params"] // p5["params"] < cfg.members
    assert E.member_chunk(dataclasses.replace(cfg, chunk=3), 64, shape) == 3  # --chunk wins
    assert f"{p5['params']:,} parameters" in E.plan(cfg)


def test_member_chunks_do_not_change_results():
    """Members trained in vmapped chunks (the GPU preset's memory knob) give the same networks as all at once."""
    from studylib import data as D

    base = dict(widths=(8,), members=4, steps=5, n_checkpoints=3, readout=False, dtype="float64",
                model=ModelConfig(depth=2), data=DataConfig(n_test=9))
    ds = D.load(DataConfig(n_test=9))
    steps = training.checkpoint_steps(5, 3)
    lrs = {"ntk": 0.01, "readout": 0.05}
    whole = E.train_width(E.EnsembleConfig(**base), 8, ds, lrs=lrs, steps=steps, measure_kernels=False)
    parts = E.train_width(E.EnsembleConfig(**base, chunk=2), 8, ds, lrs=lrs, steps=steps, measure_kernels=False)
    # float64: the same per-member operations in batches of 2 or 4; XLA may order a few sums differently.
    scale = np.abs(whole["ntk"]["test"]).max()
    np.testing.assert_allclose(parts["ntk"]["test"], whole["ntk"]["test"], rtol=0, atol=1e-12 * scale)
    assert np.abs(whole["ntk"]["test"][-1] - whole["ntk"]["test"][0]).max() > 1e-3 * scale  # training happened


def test_cli_tiny_run_writes_summary_and_figures(tmp_path, capsys):
    from study import ensemble as entry

    out = tmp_path / "ens"
    # Depth 2 and 4 members: the smallest run that still has two widths, two modes, three checkpoints and
    # every figure (the cost is compilation, which grows with the depth; the preset's depth is 5).
    entry.main(["--preset", "tiny", "--widths", "4,16", "--steps", "4", "--checkpoints", "3", "--depth", "2",
                "--members", "4", "--out", str(out), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("study", "config", "versions", "wall_seconds", "widths", "metrics", "conventions",
                "checkpoint_steps", "learning_rate", "per_width", "gp_flow_vs_discrete", "kernel_eigenvalues"):
        assert key in summary, key
    assert summary["study"] == "ensemble" and summary["widths"] == [4, 16]
    assert summary["centred"] is False
    n_t = len(summary["checkpoint_steps"])
    for mode in ("ntk", "readout"):
        for k in E.STATS:
            e = summary["metrics"][f"{mode}/{k}"]
            assert np.asarray(e["per_time"]).shape == (2, n_t)
            assert len(e["floor"]["mean"]) == n_t
            assert np.asarray(summary["metrics"][f"{mode}/{k}_discrete"]["per_time"]).shape == (2, n_t)
    arrays = read_npz(out / "ensemble.npz")
    # t = 0: both modes see the same initial networks (their unstable members, left out of the
    # statistics, may differ).
    np.testing.assert_array_equal(arrays["ntk/outputs"][:, 0], arrays["readout/outputs"][:, 0])
    assert arrays["ntk/outputs"].shape == (2, n_t, 4, 41) and arrays["readout/floor/mean_err"].shape == (20, n_t)
    for stem in ("ensemble_bands_ntk", "ensemble_bands_readout", "ensemble_errors_vs_width",
                 "ensemble_errors_vs_time"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
        assert (out / f"{stem}.pdf").is_file()
    # main() draws the figures with studylib.ensemble.figures(out), which reads only the stored files.
    printed = capsys.readouterr().out
    assert "mean_err" in printed and "ensemble_errors_vs_width.png" in printed
    assert "## Ensembles against" in E.section(summary, [], tmp_path)


@pytest.mark.slow  # ~13 s; CI runs it with -m slow (resume: test_runner)
def test_interrupted_run_resumes_reuses_and_force_recomputes(tmp_path, capsys, monkeypatch):
    """A run stopped after its first width (the runner's stop_after, as a kill would leave it) resumes
    from the stored width; a second run reuses every width (training is patched to fail if called) with
    identical results; --force recomputes, and the recomputed networks are bit-identical to the resumed
    run's (same machine, same config and seeds). Tiny preset, cut down further."""
    from study import ensemble as entry

    cfg = E.EnsembleConfig(widths=(4, 16), members=8, steps=4, n_checkpoints=3, readout=False, mc_repeats=2,
                           model=ModelConfig(depth=2), data=DataConfig(n_test=41))
    train_width = C.train_width
    calls = []

    def counted(cfg, width, *a, **kw):
        calls.append(width)
        return train_width(cfg, width, *a, **kw)

    monkeypatch.setattr(C, "train_width", counted)
    with pytest.raises(KeyboardInterrupt):
        E.run(cfg, tmp_path, progress=False, stop_after=1)
    assert calls == [4] and len(list((tmp_path / "cells").glob("width*.npz"))) == 1
    assert not (tmp_path / "summary.json").exists()
    capsys.readouterr()
    args = ["--preset", "tiny", "--widths", "4,16", "--steps", "4", "--checkpoints", "3", "--depth", "2",
            "--no-readout", "--mc-repeats", "2", "--out", str(tmp_path), "--no-progress", "--no-figures"]
    entry.main(args)  # the same config through the CLI: resumes
    assert calls == [4, 16] and "width 4: reusing" in capsys.readouterr().out
    first = json.loads((tmp_path / "summary.json").read_text())
    first_arrays = read_npz(tmp_path / "ensemble.npz")

    def boom(*_a, **_kw):
        raise AssertionError("train_width called although its width is stored")

    monkeypatch.setattr(C, "train_width", boom)
    entry.main(args)
    printed = capsys.readouterr().out
    assert "width 4: reusing" in printed and "width 16: reusing" in printed
    again = json.loads((tmp_path / "summary.json").read_text())
    for key in ("metrics", "per_width", "learning_rate", "gp_flow_vs_discrete"):
        assert again[key] == first[key], key
    again_arrays = read_npz(tmp_path / "ensemble.npz")
    assert again_arrays.keys() == first_arrays.keys()
    for k, v in again_arrays.items():
        np.testing.assert_array_equal(v, first_arrays[k], err_msg=k)

    calls.clear()
    monkeypatch.setattr(C, "train_width", counted)
    entry.main([*args, "--force"])
    assert calls == [4, 16] and "reusing" not in capsys.readouterr().out
    forced = read_npz(tmp_path / "ensemble.npz")
    for k in ("ntk/outputs", "ntk/lambda_init", "ntk/kernel_change"):
        np.testing.assert_array_equal(forced[k], first_arrays[k], err_msg=k)


def test_cli_flags_help_and_errors_without_jax():
    """Every documented flag spelling parses into the config; --help needs no JAX and says what
    --chunk does by default; a bad value exits 2 naming the field."""
    from studylib import cli

    args = cli.parser(E, "").parse_args(
        ["--widths", "8,16", "--members", "4", "--first-seed", "3", "--steps", "7", "--lr", "0.01",
         "--lr-fraction", "0.2", "--readout-lr-fraction", "0.3", "--no-readout", "--checkpoints", "5",
         "--mc-repeats", "9", "--chunk", "2", "--dtype", "float64", "--depth", "2", "--n-test", "21"])
    cfg = cli.config_from_args(E, args)
    assert (cfg.widths, cfg.members, cfg.first_seed, cfg.steps, cfg.lr, cfg.lr_fraction, cfg.readout_lr_fraction,
            cfg.readout, cfg.n_checkpoints, cfg.mc_repeats, cfg.chunk, cfg.dtype, cfg.model.depth,
            cfg.data.n_test) == ((8, 16), 4, 3, 7, 0.01, 0.2, 0.3, False, 5, 9, 2, "float64", 2, 21)
    code = ("import sys; from study import ensemble as e\n"
            "try:\n    e.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'jax' not in sys.modules, 'help imported jax'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--members" in r.stdout and "--no-readout" in r.stdout
    assert "as many as fit" in " ".join(r.stdout.split())  # --chunk: the default is sized to the memory
    r = subprocess.run([sys.executable, "-m", "study.ensemble", "--members", "1", "--no-progress", "--out",
                        "/nonexistent/never"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "members" in r.stderr


# --------------------------------------------------------------------------- several outputs, real data


def test_gp_with_k_outputs_matches_nt_and_stepwise_gd():
    """k = 3 outputs: the per-column GP of :func:`gp_of_mode` equals NT's ensemble prediction with the
    whole y (N, 3) (normalised by y.size = N k), and its discrete mean equals GD on the mean function,
    stepped in NumPy: f <- f - lr/(N k) Θ (f(X) - Y) from f = 0 (float64)."""
    from studylib.nt import nt

    net = models.build(ModelConfig(depth=2), 8, out_dim=3)
    rng = np.random.default_rng(0)
    x_train, x_test = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    y = rng.standard_normal((6, 3))
    kf = jax.jit(net.kernel_fn, static_argnums=(2,))
    k = {g: {"dd": np.asarray(kf(x_train, None, g)), "td": np.asarray(kf(x_test, x_train, g))} for g in ("ntk", "nngp")}
    k |= {"kernel_fn": kf, "x_train": jnp.asarray(x_train), "x_test": jnp.asarray(x_test),
          "tt": np.asarray(kf(x_test, None, "nngp"))}
    lr = 0.5 * 2 * 6 * 3 / np.linalg.eigvalsh(k["ntk"]["dd"])[-1]
    steps = np.array([0, 3, 40])
    gp = C.gp_of_mode(k, y, "ntk", lr=lr, steps=steps)
    ref = nt.predict.gradient_descent_mse_ensemble(kf, jnp.asarray(x_train), jnp.asarray(y), learning_rate=lr)(
        t=jnp.asarray(steps, jnp.float64), x_test=jnp.asarray(x_test), get="ntk", compute_cov=True)
    scale = np.abs(y).max()
    tol = 1e4 * EPS * scale * np.linalg.cond(k["ntk"]["dd"])
    np.testing.assert_allclose(gp["flow"][0], np.asarray(ref.mean).reshape(3, -1), atol=tol)
    np.testing.assert_allclose(gp["flow"][1], np.asarray(ref.covariance), atol=tol * scale)
    f_train, f_test = np.zeros((6, 3)), np.zeros((5, 3))
    expect = {0: f_test.copy()}
    for t in range(1, steps[-1] + 1):
        r = f_train - y
        f_train = f_train - lr / 18 * k["ntk"]["dd"] @ r
        f_test = f_test - lr / 18 * k["ntk"]["td"] @ r
        expect[t] = f_test.copy()
    for i, t in enumerate(steps):
        np.testing.assert_allclose(gp["discrete"][0][i], expect[int(t)].reshape(-1), atol=tol)


def test_mc_floor_with_k_outputs_draws_independent_outputs():
    """The floor of k outputs sharing one covariance: calibration of exact draws ~ 0.9545 (binomial
    scale), and with k = 1 the draws are those of the scalar floor (same random stream)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 6, 6))
    cov = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(6)
    mean1 = rng.standard_normal((2, 6))
    one = E.mc_floor(mean1, cov, 16, 20, seed=5)
    draws_rng, root, std = np.random.default_rng(5), closed_form.gp_sqrt(cov), closed_form.gp_std(cov)
    for r in range(20):  # the scalar floor written out: draws = mean + L z, z (T, members, X)
        z = draws_rng.standard_normal((2, 16, 6))
        s = E.ensemble_stats(mean1[:, None, :] + np.einsum("txk,tmk->tmx", root, z), mean1, std)
        np.testing.assert_allclose(one["mean_err"][r], s["mean_err"], rtol=1e-12)
    mean4 = rng.standard_normal((2, 6 * 4))
    four = E.mc_floor(mean4, cov, 64, 50, seed=6)
    pairs = 64 * 6 * 4 * 50
    sd = math.sqrt(E.COVERAGE_2SIGMA * (1 - E.COVERAGE_2SIGMA) / pairs)
    assert abs(four["calibration"].mean() - E.COVERAGE_2SIGMA) < 5 * sd * math.sqrt(6)  # points correlate within x


@pytest.mark.slow  # ~19 s; CI runs it with -m slow (k-output GP: its own unit test)
def test_digits_ensemble_runs_with_ten_outputs(tmp_path):
    """--data digits end to end (tiny): 10 outputs per image, statistics over (image, class) pairs, the
    error figures (no 1-D band figure), and a cnn with 1-D data is one line at config time."""
    cfg = E.EnsembleConfig(widths=(8,), members=4, steps=4, n_checkpoints=3, mc_repeats=3,
                           model=ModelConfig(depth=2), data=DataConfig(name="digits", n_train=20, n_test=15))
    summary = E.run(cfg, tmp_path, progress=False)
    arrays = read_npz(tmp_path / "ensemble.npz")
    assert arrays["ntk/outputs"].shape == (1, 3, 4, 15 * 10)
    assert arrays["ntk/gp_flow_mean"].shape == (3, 150) and "x_test" not in arrays
    assert np.isfinite(arrays["ntk/outputs"]).all()
    for mode in cfg.modes:
        assert np.isfinite(summary["metrics"][f"{mode}/mean_err"]["final"]).all()
    # at t = 0 the GP mean is 0 for every output
    np.testing.assert_allclose(arrays["ntk/gp_flow_mean"][0], 0.0, atol=1e-12)
    paths = E.figures(tmp_path)
    assert paths and not any("bands" in p.name for p in paths)
    with pytest.raises(ConfigError, match=r"^model\.arch: 'cnn' takes images"):
        E.EnsembleConfig(model=ModelConfig(arch="cnn"))
