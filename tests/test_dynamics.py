"""study.dynamics: config validation, the seed preset's initialisation, a tiny run with figures,
and resuming after an interruption."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from studylib import cli, dynamics, models, sgd
from studylib.config import ConfigError


def _cfg(preset="tiny", **flags):
    return cli.assemble(dynamics.DynamicsConfig, presets=dynamics.PRESETS, preset=preset, config_file=None,
                        flags=flags)


@pytest.mark.parametrize("flags,field", [
    ({"batch_sizes": (3,)}, "batch_sizes"),
    ({"record_every": 3}, "record_every"),
    ({"loss": "l1"}, "loss"),
    ({"epochs": 0}, "epochs"),
    ({"method": "fast"}, "method"),
    ({"model.arch": "cnn"}, "model.arch"),
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


def test_seed_preset_init_variance_is_one_over_fan_in():
    """LeCun-normal: W ~ N(0, 1/fan_in). For the 4 hidden 1000 x 1000 layers the sample variance of
    4e6 draws has relative std sqrt(2/4e6) = 7e-4, so a 1% tolerance is 14 sigma wide, while the
    alternatives (He: 2/fan_in; NTK param's raw N(0, 1)) are off by 100% or more. Biases are exactly zero."""
    cfg = _cfg("seed")
    net = models.build(cfg.model, 1000)
    _, params = net.init_fn(jax.random.PRNGKey(0), (1, 1))
    dense = sgd.dense_params(params)
    hidden = np.concatenate([np.asarray(w, np.float64).ravel() for w, _ in dense[1:-1]])
    assert hidden.size == 4 * 1000 * 1000
    np.testing.assert_allclose(hidden.var() * 1000, 1.0, rtol=0.01)
    assert abs(hidden.mean()) < 5 * np.sqrt(1e-3 / hidden.size)
    # input layer (fan_in 1: N(0, 1), 1000 draws, rel. std of the variance 0.045 -> 20% is 4.4 sigma)
    np.testing.assert_allclose(np.var(np.asarray(dense[0][0], np.float64)), 1.0, rtol=0.2)
    assert all(float(np.abs(np.asarray(b)).max()) == 0.0 for _, b in dense)


def test_ntk_preset_uses_analytic_lr():
    cfg = _cfg("ntk", widths=(16,), epochs=10, record_every=5)
    from studylib import data as D

    x = D.load(cfg.data).x_train
    lr, crit = dynamics.analytic_lr(cfg, 16, x, 10)
    assert cfg.lr is None and cfg.model.parameterization == "ntk"
    assert lr == pytest.approx(0.5 * crit) and crit > 0
    # batch N: the full-batch limit N / lambda_max; batch 1: 1 / max K_ii, smaller
    k = np.array([[2.0, 1.0], [1.0, 4.0]])
    assert dynamics.minibatch_critical_lr(k, 2, "mse") == pytest.approx(2 / np.linalg.eigvalsh(k)[-1])
    assert dynamics.minibatch_critical_lr(k, 1, "mse") == pytest.approx(1 / 4.0)
    assert dynamics.analytic_lr(cfg, 16, x, 1)[1] < crit


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
    cells = sorted((full / "cells").glob("*.npz"))
    assert len(cells) == 2

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
        # Same computation, same machine: XLA CPU is deterministic here, so equal to float32 rounding.
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7, err_msg=k)
    # --force recomputes (stop after the first cell to save time)
    with pytest.raises(KeyboardInterrupt):
        dynamics.run(dataclasses.replace(cfg), part, progress=False, force=True, stop_after=1)
    assert first[0].stat().st_mtime_ns != mtime
