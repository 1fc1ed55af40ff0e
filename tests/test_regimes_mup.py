"""μP and the richness knob γ₀ in the regimes map (``--parameterizations ...,mup``, ``--gamma0``): studylib.mup's
γ-model (NT's 'ntk' net with its output ÷ γ, γ = γ₀ √(n/n₀) under mup) through regimes' cells: its rate from its
own analytic kernel (× γ²), centred under ``--centre auto``, the closed forms and modes with its kernels, the
hand-written trainer when uncentred. Tiny float64 runs (1-D toy, erf, depth 1)."""

import dataclasses

import numpy as np
import pytest

from studylib import regimes, runner
from studylib.config import ConfigError
from studylib.models import ModelConfig
from studylib.results import read_npz

#: One setting (erf, depth 1, lr 0.5 x critical) at a few widths, float64: equalities to rounding of O(1) arrays.
TINY = dict(widths=(8, 16), seeds=2, steps=10, n_checkpoints=3, lr_fractions=(0.5,), depths=(1,), x_ranges=(5.0,),
            activations=("erf",), options=("plain",), dtype="float64", predict_rows=5)
ERF1 = dict(depth=1, activation="erf")


def _cells(out, summary) -> dict[tuple[str, str, int], dict]:
    """(parameterization, option, width) -> {'entry': summary cell, 'arrays': its curves.npz arrays}."""
    a = read_npz(out / "curves.npz")
    found = {}
    for c in summary["cells"]:
        p = f"cell{c['index']}/"
        found[(c["parameterization"], c["option"], c["width"])] = {
            "entry": c, "arrays": {k[len(p):]: v for k, v in a.items() if k.startswith(p)}}
    return found


def _close(a, b, *, rel, name):
    """Arrays equal to ``rel`` of their scale (NaN where both are)."""
    scale = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 1.0
    np.testing.assert_allclose(b, a, rtol=0, atol=rel * max(scale, 1e-300), err_msg=name)


def test_mup_axis_config_keys_and_refusals():
    """The axis takes mup; its cells are centred under --centre auto (the others keep their rule) and carry γ₀ and
    n₀ in their spec, so that the other cells keep their keys (a plain ntk run reuses them); combinations mup
    cannot hold are one ConfigError line naming the axis and the values accepted."""
    cfg = regimes.RegimesConfig(**TINY, parameterizations=("ntk", "mup"), model=ModelConfig(**ERF1, base_width=8))
    spec = {(c.spec["parameterization"], c.spec["width"]): c.spec for c in regimes.cells(cfg)}
    assert spec[("mup", 16)]["centred"] is True and spec[("mup", 16)]["base_width"] == 8
    assert spec[("mup", 16)]["gamma0"] == 1.0
    assert not {"centred", "gamma0", "base_width"} & set(spec[("ntk", 16)])  # regression targets: uncentred
    assert not cfg.centred and cfg.centred_for("mup") and not cfg.centred_for("ntk")
    assert not regimes.RegimesConfig(**TINY, parameterizations=("mup",), centre="off",
                                     model=ModelConfig(**ERF1, parameterization="mup")).centred
    key = regimes.key_config(cfg)
    assert "gamma0" not in key["model"] and "base_width" not in key["model"]
    plain = regimes.RegimesConfig(**TINY, parameterizations=("ntk",), model=ModelConfig(**ERF1))
    ntk_cell = next(c for c in regimes.cells(cfg) if c.spec["parameterization"] == "ntk")
    assert runner.cell_key(regimes, cfg, ntk_cell) == runner.cell_key(regimes, plain, regimes.cells(plain)[0])
    other = dataclasses.replace(cfg, model=ModelConfig(**ERF1, base_width=16))
    keys = [{c.name: runner.cell_key(regimes, x, c) for c in regimes.cells(x)} for x in (cfg, other)]
    assert [n for n in keys[0] if keys[0][n] != keys[1][n]] == [n for n in keys[0] if "-mup-" in n]
    # ntk at gamma0 != 1 is the gamma-model too (γ = γ₀): centred, γ₀ in its spec
    knob = regimes.RegimesConfig(**TINY, parameterizations=("ntk",), model=ModelConfig(**ERF1, gamma0=0.5))
    assert regimes.cells(knob)[0].spec["gamma0"] == 0.5 and knob.centred
    with pytest.raises(ConfigError, match=r"^parameterizations: 'mup' is built for the fully connected nets "
                                          r"\(studylib\.mup\); got arch 'res_fc'; accepted for it: ntk"):
        regimes.RegimesConfig(**TINY, parameterizations=("ntk", "mup"), model=ModelConfig(arch="res_fc", depth=1))
    with pytest.raises(ConfigError, match=r"^parameterizations: 'standard' has no richness knob .* got gamma0 0\.5; "
                                          r"accepted with gamma0 != 1: ntk, mup$"):
        regimes.RegimesConfig(**TINY, parameterizations=("ntk", "standard"), model=ModelConfig(**ERF1, gamma0=0.5))
    with pytest.raises(ConfigError, match=r"^parameterizations: must contain the base cell's value 'mup'"):
        regimes.RegimesConfig(**TINY, model=ModelConfig(**ERF1, parameterization="mup"))


@pytest.fixture(scope="module")
def centred_pair(tmp_path_factory):
    """ntk and mup at width 8, both centred (--centre on), at base width 8 (γ = 1) and 4 (γ = √2): two runs in one
    folder, the second reusing the first's ntk cell (the same key: n₀ is in the keys of the mup cells only)."""
    out = tmp_path_factory.mktemp("regimes_mup")
    found = {}
    for n0 in (8, 4):
        cfg = regimes.RegimesConfig(**(TINY | dict(widths=(8,))), parameterizations=("ntk", "mup"), centre="on",
                                    model=ModelConfig(**ERF1, base_width=n0))
        found[n0] = _cells(out, regimes.run(cfg, out, progress=False))
    return found


def test_mup_at_its_base_width_is_the_centred_ntk_cell_bit_for_bit(centred_pair):
    ntk, mup = centred_pair[8][("ntk", "plain", 8)], centred_pair[8][("mup", "plain", 8)]
    assert mup["entry"]["gamma"] == 1.0 and mup["entry"]["centred"] and ntk["entry"]["centred"]
    assert mup["entry"]["learning_rate"] == ntk["entry"]["learning_rate"]
    for name, m in ntk["entry"]["metrics"].items():
        np.testing.assert_array_equal(mup["entry"]["metrics"][name]["per_seed"], m["per_seed"], err_msg=name)
    for name, v in ntk["arrays"].items():
        if name in mup["arrays"]:  # x_test and pred_test are stored for the base cell (ntk) only
            np.testing.assert_array_equal(mup["arrays"][name], v, err_msg=name)
    assert len(mup["arrays"]) >= 25


def test_mup_keeps_the_linearization_modes_and_closed_forms(centred_pair):
    """At γ = √2 (width 8, n₀ = 4): the γ-model's kernels are the NTK net's ÷ γ² and its rate × γ² (read off its
    own analytic kernel), so η Θ and the linearization, the closed form and the mode predictions are the NTK
    cell's (to rounding), while the first-order gap prediction, which is linear in γ (Chizat's 1/α), is γ times
    the NTK cell's; the network itself moves differently (its measured gap is not the NTK cell's)."""
    ntk, mup = centred_pair[4][("ntk", "plain", 8)], centred_pair[4][("mup", "plain", 8)]
    g2 = mup["entry"]["gamma"] ** 2
    assert g2 == pytest.approx(2.0, rel=1e-15)
    assert mup["entry"]["learning_rate"] == pytest.approx(g2 * ntk["entry"]["learning_rate"], rel=1e-12)
    for name in ("theta_lambda", "k0_lambda"):  # to rounding of the largest eigenvalue
        _close(ntk["arrays"][name], g2 * mup["arrays"][name], rel=1e-12, name=name)
    for name in ("curve/loss_lin", "coeff/lin_inf", "coeff/lin_emp", "pred/inf", "pred/emp"):
        _close(ntk["arrays"][name], mup["arrays"][name], rel=1e-9, name=name)
    np.testing.assert_allclose(mup["arrays"]["curve/gap_predicted"][:, 1:],
                               np.sqrt(g2) * ntk["arrays"]["curve/gap_predicted"][:, 1:], rtol=1e-9)
    gap_ntk, gap_mup = ntk["arrays"]["curve/gap"][:, -1], mup["arrays"]["curve/gap"][:, -1]
    assert np.all(np.abs(gap_mup - gap_ntk) > 0.05 * gap_ntk)


def test_mup_hand_written_trainer_equals_the_generic_one(tmp_path):
    """Uncentred (--centre off) the plain μP cell trains by the hand-written trainer (sgd.mlp: readout ÷ γ) and
    option out_scale at α = 1 by jax.grad of studylib.mup's stax net: the same cell to rounding (float64)."""
    cfg = regimes.RegimesConfig(**(TINY | dict(widths=(16,), options=("plain", "out_scale"))), output_scale=1.0,
                                centre="off", parameterizations=("mup",),
                                model=ModelConfig(**ERF1, parameterization="mup", base_width=8))
    from studylib.regimes import cell as RC

    assert RC.compiled_for(cfg, regimes.cells(cfg)[0].spec, {})[0].fast
    cells = _cells(tmp_path, regimes.run(cfg, tmp_path, progress=False))
    fast, generic = cells[("mup", "plain", 16)], cells[("mup", "out_scale", 16)]
    assert fast["entry"]["gamma"] == pytest.approx(np.sqrt(2.0), rel=1e-15) and not fast["entry"]["centred"]
    assert fast["entry"]["learning_rate"] == generic["entry"]["learning_rate"]
    for name, v in generic["arrays"].items():
        _close(v, fast["arrays"][name], rel=1e-9, name=name)


def test_small_gamma0_under_ntk_trains_the_linearized_net(tmp_path):
    """Chizat et al.'s lazy limit through the knob (γ = γ₀ under ntk, centred by --centre auto): the network's
    gap to its linearization is O(γ₀), ten times smaller γ₀, ten times smaller gap (erf: smooth)."""
    gaps = []
    for g0 in (1e-2, 1e-3):
        cfg = regimes.RegimesConfig(**(TINY | dict(widths=(8,))), parameterizations=("ntk",),
                                    model=ModelConfig(**ERF1, gamma0=g0))
        entry = regimes.run(cfg, tmp_path / f"g{g0}", progress=False)["cells"][0]
        assert entry["centred"] and entry["gamma"] == g0
        gaps.append(np.asarray(entry["metrics"]["gap"]["per_seed"], np.float64))
        assert np.all(gaps[-1] < 10 * g0)  # relative to RMS(y)
    assert np.all((7 < gaps[0] / gaps[1]) & (gaps[0] / gaps[1] < 13)), gaps
