"""μP and the richness knob γ₀ in the comparison study (``--parameterization mup``, ``--gamma0``): the γ-model of
studylib.mup (NT's 'ntk' net with its output ÷ γ, trained centred at the learning rate × γ²) through compare's
hand-written trainer, the generic one and the closed forms."""

import dataclasses

import numpy as np
import pytest

from studylib import compare, models, runner
from studylib.config import ConfigError
from studylib.models import ModelConfig

# float64, one width, few steps: equalities below are to rounding of O(1) curves.
TINY = dict(widths=(16,), seeds=2, steps=12, n_checkpoints=4, lr_fraction=0.25, quad_max_width=0, dtype="float64",
            after_kernel="on")  # the after-kernel rows on both trainers, so they are compared too


def _run_width(cfg, width, *, fast=True):
    from studylib import data as D
    from studylib.compare import cell

    return cell.run_width(cfg, width, D.load_for(cfg.data, cfg.model), fast=fast)


def _close(a, b, *, rel, name):
    """Curves equal to ``rel`` of their scale (NaN where both are)."""
    scale = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 1.0
    np.testing.assert_allclose(b, a, rtol=0, atol=rel * max(scale, 1e-300), err_msg=name)


def test_mup_config_is_checked_and_keys_of_other_runs_unchanged():
    with pytest.raises(ConfigError, match=r"model\.parameterization: parameterization 'mup' is built for the fully "
                                          r"connected nets .* got arch 'cnn'; accepted: arch fc or erf_fc"):
        ModelConfig(arch="cnn", parameterization="mup")
    with pytest.raises(ConfigError, match=r"model\.gamma0: 0\.5 is defined for ntk and mup; accepted with "
                                          r"parameterization standard: 1"):
        ModelConfig(parameterization="standard", gamma0=0.5)
    with pytest.raises(ConfigError, match=r"model\.gamma0"):
        ModelConfig(gamma0=-1.0)
    assert not ModelConfig().rich and ModelConfig(parameterization="mup").rich and ModelConfig(gamma0=0.5).rich
    # the new fields are left out of the keys and records of runs they do not change, so stored cells keep their keys
    plain = compare.CompareConfig(**TINY)
    key = runner.key_config(compare, plain)
    assert "gamma0" not in key["model"] and "base_width" not in key["model"]
    new = ("gamma0", "base_width")
    assert key["model"] == {k: v for k, v in dataclasses.asdict(plain.model).items() if k not in new}
    rich = compare.CompareConfig(**TINY, model=ModelConfig(parameterization="mup", base_width=32))
    assert runner.key_config(compare, rich)["model"]["base_width"] == 32
    assert rich.centred and not plain.centred  # 'auto' centres the gamma-model
    assert not compare.CompareConfig(**TINY, centre="off", model=ModelConfig(parameterization="mup")).centred


@pytest.fixture(scope="module")
def ntk_run():
    """The centred NTK run at width 64, shared by the two comparisons below (every run of this module but the γ₀
    pair at width 64: the same shapes, one run fewer). Not 16: there (base width 4) the slowest mode of K₀ came out
    0 to rounding, so the trained_fraction curves compared below were rounding noise (~1e-16)."""
    base = compare.CompareConfig(**TINY, centre="on")
    return _run_width(base, 64), base


def test_mup_at_its_base_width_is_the_centred_ntk_run(ntk_run):
    """γ = 1 at n = n₀: the same network, rate and time; every curve bit for bit."""
    a, base = ntk_run
    mup = dataclasses.replace(base, model=ModelConfig(parameterization="mup", base_width=64))
    b = _run_width(mup, 64)
    assert b["gamma"] == 1.0 and a["learning_rate"] == b["learning_rate"]
    for name, v in a["curves"].items():
        np.testing.assert_array_equal(b["curves"][name], v, err_msg=name)


@pytest.fixture(scope="module")
def mup_and_ntk(ntk_run):
    """Width 64 at base width 16 (γ = 2): μP and the centred NTK run from the same draws."""
    ntk, base = ntk_run
    mup = dataclasses.replace(base, model=ModelConfig(parameterization="mup", base_width=16))
    return ntk, _run_width(mup, 64), mup


def test_mup_keeps_the_linearization_and_closed_forms_and_moves_the_net(mup_and_ntk):
    """The γ-model's kernel is the NTK net's ÷ γ² and its rate × γ² (both read off the kernels by the rate rule),
    so η Θ, the time axis, the linearization and every closed form are the NTK run's (to rounding); the network
    itself trains differently: its parameters move γ times as far at the first step (and so its features and
    kernel move O(1) under μP instead of O(n^-1/2): docs/mup.md)."""
    ntk, mup, _ = mup_and_ntk
    assert mup["gamma"] == pytest.approx(2.0, rel=1e-15)
    assert mup["learning_rate"] == pytest.approx(4.0 * ntk["learning_rate"], rel=1e-12)
    np.testing.assert_allclose(mup["times"], ntk["times"], rtol=1e-12)
    np.testing.assert_allclose(mup["theta_train"] * 4.0, ntk["theta_train"], rtol=1e-12)
    for model in ("lin", "closed_inf", "closed_emp", "closed_emp_discrete"):
        for part in ("predictions_test", "predictions_train"):
            if model in ntk[part]:
                _close(ntk[part][model], mup[part][model], rel=1e-9, name=f"{part} {model}")
    # the first step from the same draws and the same residual -Y: dθ = η γ² (1/γ) Jᵀ Y, γ times the NTK net's
    assert list(mup["steps"][:2]) == [0, 1]
    np.testing.assert_allclose(mup["curves"]["rel_param_change"][:, 1], 2.0 * ntk["curves"]["rel_param_change"][:, 1],
                               rtol=1e-9)
    assert np.all(mup["curves"]["rel_param_change"][:, -1] > 1.5 * ntk["curves"]["rel_param_change"][:, -1])


# slow set: tests/test_compare.py::test_hand_written_trainer_equals_the_generic_one checks the same compare run_width,
# fast against generic trainer, and tests/test_regimes_mup.py::test_mup_hand_written_trainer_equals_the_generic_one the
# same μP hand-written net (sgd.fast_mlp, readout ÷ γ) against jax.grad of studylib.mup's stax net, on smaller problems.
@pytest.mark.slow
def test_mup_hand_written_trainer_equals_stax_mup_net(mup_and_ntk):
    """The fast trainer's μP net (sgd.mlp: readout scales ÷ γ) against the generic trainer on studylib.mup's stax
    net (jax.grad of NT's apply_fn, NT's kernels): the same curves, float64 (differences: summation order)."""
    _, fast, cfg = mup_and_ntk
    generic = _run_width(cfg, 64, fast=False)
    for name, a in generic["curves"].items():
        _close(a, fast["curves"][name], rel=1e-9, name=name)
    np.testing.assert_allclose(fast["k_net_train"], generic["k_net_train"], rtol=1e-9)


# slow set: test_mup_keeps_the_linearization_and_closed_forms_and_moves_the_net checks compare's γ-model path
# (the same run_width, fast trainer and rate × γ², at γ = 2), and
# tests/test_mup.py::test_lazy_end_reproduces_the_linearized_ntk_run the same O(γ₀) approach of the γ-model
# (studylib.mup) to its linearization, on a smaller problem.
@pytest.mark.slow
def test_small_gamma0_trains_the_network_as_its_linearization():
    """Chizat et al.'s lazy limit through the knob: under ntk with γ₀ → 0 the centred net's gap to its
    linearization is O(γ₀) (SCIENCE.md §7): ten times smaller γ₀, ten times smaller gap. Erf, a smooth net (with
    ReLU a gate that flips or not makes single seeds jump; measured per seed here: 9.7 and 10.6)."""
    gaps = []
    for g0 in (1e-2, 1e-3):
        cfg = compare.CompareConfig(**TINY, model=ModelConfig(gamma0=g0, activation="erf"))
        res = _run_width(cfg, 16)
        gaps.append(res["curves"]["rmse_net_vs_lin"][:, -1])
        assert np.all(gaps[-1] < 10 * g0 * np.max(np.abs(res["predictions_train"]["lin"])))
    assert np.all((7 < gaps[0] / gaps[1]) & (gaps[0] / gaps[1] < 13)), gaps


def test_mup_elsewhere_is_refused_with_one_line():
    with pytest.raises(ConfigError, match=r"model\.parameterization"):
        compare.CompareConfig(**TINY, model=ModelConfig(arch="res_fc", parameterization="mup"))
    assert models.RICHNESS_DEFAULTS == {"gamma0": 1.0, "base_width": 64}
