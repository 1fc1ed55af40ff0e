"""The ensemble study: GP closed forms against NT, the Monte-Carlo floor, readout-only training, the CLI."""

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

from studylib import ensemble as E
from studylib import models, training
from studylib.config import ConfigError, DataConfig, ModelConfig
from studylib.results import read_npz


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

    float64 throughout; the kernels' condition numbers (~1e4 NTK, ~1e7 NNGP here) allow ~1e-7 relative."""
    s = small
    steps = np.array([0, 1, 7, 60, 500])
    th_dd, th_td = s["k"][get]
    k_dd, k_td = s["k"]["nngp"]
    y = np.asarray(s["y_train"])
    nt_mean, nt_cov = E.nt_gp(s["net"].kernel_fn, s["x_train"], s["y_train"], s["x_test"], get=get,
                              learning_rate=s["lr"], steps=steps)
    our_mean, our_cov = E.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=s["lr"], steps=steps)
    scale_m = np.abs(nt_cov).max() ** 0.5
    for i, t in enumerate(steps):
        ref_mean, ref_cov = _numpy_eq_14_16(th_dd, th_td, k_dd, k_td, s["k_tt"], y, s["lr"] * t)
        np.testing.assert_allclose(nt_mean[i], ref_mean, atol=1e-7 * scale_m)
        np.testing.assert_allclose(nt_cov[i], ref_cov, atol=1e-7 * np.abs(s["k_tt"]).max())
        np.testing.assert_allclose(our_mean[i], ref_mean, atol=1e-7 * scale_m)
        np.testing.assert_allclose(our_cov[i], ref_cov, atol=1e-7 * np.abs(s["k_tt"]).max())
    # t = 0 is the NNGP prior; the mean moves and the covariance shrinks with time.
    np.testing.assert_allclose(nt_mean[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(nt_cov[0], s["k_tt"], rtol=1e-10, atol=1e-12)
    assert np.trace(nt_cov[-1]) < 0.5 * np.trace(nt_cov[0])


def test_nt_time_counts_steps(small):
    """NT's t counts steps: (t = s, learning_rate = lr) equals (t = lr * s, learning_rate = 1)."""
    s = small
    a = E.nt_gp(s["net"].kernel_fn, s["x_train"], s["y_train"], s["x_test"], get="ntk",
                learning_rate=s["lr"], steps=np.array([3.0, 40.0]))
    b = E.nt_gp(s["net"].kernel_fn, s["x_train"], s["y_train"], s["x_test"], get="ntk",
                learning_rate=1.0, steps=s["lr"] * np.array([3.0, 40.0]))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-10, atol=1e-12)


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
    mean_d, cov_d = E.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps,
                                 discrete=True)
    for step in range(steps[-1] + 1):
        if step in steps:
            i = steps.index(step)
            np.testing.assert_allclose(mean_d[i], c[n:], atol=1e-9 * (1 + np.abs(c).max()))
            np.testing.assert_allclose(cov_d[i], (b @ k_joint @ b.T)[n:, n:], atol=1e-9 * np.abs(k_joint).max())
        c, b = c - lr / n * theta_rows @ (c[:n] - y), b - lr / n * theta_rows @ b[:n]
    mean_f, _ = E.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps)
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
        f = E.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps)
        d = E.gp_moments(th_dd, th_td, k_dd, k_td, s["k_tt"], y, learning_rate=lr, steps=steps, discrete=True)
        gaps.append(max(np.abs(f[0] - d[0]).max(), np.abs(f[1] - d[1]).max()))
    assert gaps[0] > 1e-6
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.15)  # first order in lr; higher orders shift it a little


def test_mc_floor_shrinks_with_members(small):
    """Exact GP draws: mean/std errors fall like 1/sqrt(M) and calibration sits at 0.9545."""
    s = small
    mean, cov = E.gp_moments(*s["k"]["ntk"], *s["k"]["nngp"], s["k_tt"], np.asarray(s["y_train"]),
                             learning_rate=s["lr"], steps=[0, 50])
    small_m = E.mc_floor(mean, cov, 8, 300, seed=1)
    big_m = E.mc_floor(mean, cov, 128, 300, seed=2)
    for k in ("mean_err", "std_err"):
        ratio = small_m[k].mean(0) / big_m[k].mean(0)
        # sqrt(128/8) = 4; the ddof=1 std of 8 draws is biased low, and 300 repeats leave ~5% noise.
        assert np.all((ratio > 3.0) & (ratio < 5.0)), (k, ratio)
    # mean_err of M exact draws: E[RMS_x(mean error)^2] = mean_x σ^2 / M exactly -> ratio to RMS σ is 1/sqrt(M).
    np.testing.assert_allclose(np.sqrt((big_m["mean_err"] ** 2).mean(0)), 1 / math.sqrt(128), rtol=0.1)
    np.testing.assert_allclose(big_m["calibration"].mean(0), E.COVERAGE_2SIGMA, atol=0.01)


def test_ensemble_stats_leaves_out_diverged_members():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((1, 50, 20))
    ref = E.ensemble_stats(f, np.zeros((1, 20)), np.ones((1, 20)))
    f_bad = np.concatenate([f, np.full((1, 3, 20), np.nan)], axis=1)
    bad = E.ensemble_stats(f_bad, np.zeros((1, 20)), np.ones((1, 20)))
    for k in E.STATS:
        np.testing.assert_allclose(bad[k], ref[k])
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
        np.testing.assert_allclose(got, f, rtol=1e-9, atol=1e-9)  # float64: exact up to rounding


def test_wide_ensemble_at_init_matches_nngp_prior():
    """At t = 0 an ensemble of wide depth-2 nets is a draw of the NNGP prior: its statistics sit inside the
    Monte-Carlo floor of the same M (the O(depth/n) finite-width bias of the output covariance is small
    beside the sampling noise 1/sqrt(M) ~ 0.14)."""
    cfg = E.EnsembleConfig(widths=(512,), members=48, steps=1, n_checkpoints=2, mc_repeats=200, readout=False,
                           dtype="float64", model=ModelConfig(depth=2), data=DataConfig(n_test=15))
    from studylib import data as D

    ds = D.load(cfg.data)
    steps = np.array([0])
    gp = E._gp_all(cfg, ds, steps)
    out = E.train_width(cfg, 512, ds, lrs=gp["lr"], steps=steps, measure_kernels=False)
    mean, cov = gp["ntk"]["flow"]
    st = E.ensemble_stats(out["ntk"]["test"], mean, E.gp_std(cov))
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


def test_cli_tiny_run_writes_summary_and_figures(tmp_path, capsys):
    from study import ensemble as entry

    out = tmp_path / "ens"
    entry.main(["--preset", "tiny", "--widths", "4,16", "--steps", "4", "--checkpoints", "3", "--out", str(out),
                "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("study", "config", "versions", "wall_seconds", "widths", "metrics", "conventions",
                "checkpoint_steps", "learning_rate", "per_width"):
        assert key in summary, key
    assert summary["study"] == "ensemble" and summary["widths"] == [4, 16]
    n_t = len(summary["checkpoint_steps"])
    for mode in ("ntk", "readout"):
        for k in E.STATS:
            e = summary["metrics"][f"{mode}/{k}"]
            assert np.asarray(e["per_time"]).shape == (2, n_t)
            assert len(e["floor"]["mean"]) == n_t
    # t = 0: both modes see the same initial networks.
    assert summary["metrics"]["ntk/mean_err"]["per_time"][0][0] == summary["metrics"]["readout/mean_err"][
        "per_time"][0][0]
    for stem in ("ensemble_bands_ntk", "ensemble_bands_readout", "ensemble_errors_vs_width",
                 "ensemble_errors_vs_time"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
        assert (out / f"{stem}.pdf").is_file()
    # main() draws the figures with plots_ensemble.ensemble_figures(out), which reads only the stored files.
    printed = capsys.readouterr().out
    assert "mean_err" in printed and "ensemble_errors_vs_width.png" in printed


def test_rerun_reuses_stored_widths_and_force_recomputes(tmp_path, capsys, monkeypatch):
    """Each width is stored in out/cells/ as it finishes; a second run reuses every one (training is
    patched to fail if called) with identical results; --force recomputes. Tiny preset, cut down further."""
    from study import ensemble as entry

    args = ["--preset", "tiny", "--widths", "4,16", "--steps", "4", "--checkpoints", "3", "--depth", "2",
            "--no-readout", "--mc-repeats", "2", "--out", str(tmp_path), "--no-progress", "--no-figures"]
    entry.main(args)
    assert len(list((tmp_path / "cells").glob("width*.npz"))) == 2
    first = json.loads((tmp_path / "summary.json").read_text())
    first_arrays = read_npz(tmp_path / "ensemble.npz")
    capsys.readouterr()
    train_width = E.train_width

    def boom(*_a, **_kw):
        raise AssertionError("train_width called although its width is stored")

    monkeypatch.setattr(E, "train_width", boom)
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

    # The key leaves out the list of widths (and mc_repeats), not what changes the networks.
    cfg = E.EnsembleConfig(widths=(4, 16), members=8, steps=4, n_checkpoints=3)
    assert E.cell_key(cfg, 16) == E.cell_key(dataclasses.replace(cfg, widths=(16, 32), mc_repeats=5), 16)
    assert E.cell_key(cfg, 16) != E.cell_key(cfg, 4)
    assert E.cell_key(cfg, 16) != E.cell_key(dataclasses.replace(cfg, steps=5), 16)
    # --force recomputes (here for one width).
    calls = []

    def counted(cfg, width, *a, **kw):
        calls.append(width)
        return train_width(cfg, width, *a, **kw)

    monkeypatch.setattr(E, "train_width", counted)
    entry.main([*args[:3], "16", *args[4:], "--force"])
    assert calls == [16] and "reusing" not in capsys.readouterr().out
    np.testing.assert_array_equal(read_npz(tmp_path / "ensemble.npz")["ntk/outputs"][0],
                                  first_arrays["ntk/outputs"][1])


def test_cli_bad_flag_and_help_without_jax():
    code = ("import sys; from study import ensemble as e\n"
            "try:\n    e.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'jax' not in sys.modules, 'help imported jax'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--members" in r.stdout
    r = subprocess.run([sys.executable, "-m", "study.ensemble", "--members", "1", "--no-progress", "--out",
                        "/nonexistent/never"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "members" in r.stderr


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
    np.testing.assert_allclose(parts["ntk"]["test"], whole["ntk"]["test"], rtol=1e-12, atol=1e-12)
    assert np.abs(whole["ntk"]["test"][-1] - whole["ntk"]["test"][0]).max() > 1e-3  # training happened
