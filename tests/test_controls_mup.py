"""μP and the richness knob γ₀ in the positive controls (``--parameterization mup``, ``--gamma0``): the lazy control
(Chizat's α on top of studylib.mup's γ-model) and the closing control (centred under ``--centre auto``) with the
γ-model's own kernels and rates; under μP the closing control's gap is not expected to close, and its verdict says
so. The controls have one trainer (jax.grad of the stax net), so there is no fast-vs-generic pair here. Tiny float64
cells (1-D toy, depth 2), computed by the cell functions directly."""

import dataclasses

import numpy as np
import pytest

from studylib import controls, runner
from studylib.config import ConfigError
from studylib.controls import cell as C
from studylib.controls import summary as CS
from studylib.models import ModelConfig

TINY = dict(alphas=(1.0, 4.0, 16.0), fit_alpha_min=1.0, seeds=2, steps=12, n_checkpoints=3, dtype="float64",
            closing_depth=2, model=ModelConfig(depth=2))


def _cfg(**model) -> controls.ControlsConfig:
    return controls.ControlsConfig(**(TINY | {"model": ModelConfig(depth=2, **model)}))


def _lazy(cfg, width: int, activation: str = "erf") -> dict:
    from studylib import data as D

    return C.run_lazy(cfg, activation, width, D.load_for(cfg.data, cfg.model), runner.seed_list(cfg), lambda k: None)


def _closing(cfg, width: int) -> dict:
    return C.run_closing(cfg, width, runner.seed_list(cfg), lambda k: None)


def _close(a, b, *, rel, name):
    """Arrays equal to ``rel`` of their scale (NaN where both are)."""
    scale = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 1.0
    np.testing.assert_allclose(b, a, rtol=0, atol=rel * max(scale, 1e-300), err_msg=name)


def test_mup_config_keys_and_refusals():
    """--parameterization mup centres the closing control under --centre auto; γ₀ and n₀ enter the cell keys only
    where they change the net; what the controls cannot hold is one ConfigError line."""
    plain, mup = _cfg(), _cfg(parameterization="mup", base_width=8)
    assert mup.centred and not plain.centred
    assert not dataclasses.replace(mup, centre="off").centred
    assert not {"gamma0", "base_width"} & set(controls.key_config(plain)["model"])
    assert controls.key_config(mup)["model"]["base_width"] == 8
    assert controls.key_config(_cfg(base_width=8)) == controls.key_config(plain)  # ntk: n₀ changes nothing
    with pytest.raises(ConfigError, match=r"^model\.arch: the controls count ReLU gates .* 'erf_fc'; accepted: fc$"):
        _cfg(arch="erf_fc", parameterization="mup")
    with pytest.raises(ConfigError, match=r"^model\.gamma0: 0\.5 is defined for ntk and mup"):
        _cfg(parameterization="standard", gamma0=0.5)


@pytest.fixture(scope="module")
def cells():
    """Width 8: the centred ntk run, and mup at base width 8 (γ = 1) and 2 (γ = 2)."""
    ntk = dataclasses.replace(_cfg(), centre="on")
    mup1, mup2 = _cfg(parameterization="mup", base_width=8), _cfg(parameterization="mup", base_width=2)
    return {"ntk": (_lazy(ntk, 8), _closing(ntk, 8)), "mup1": (_lazy(mup1, 8), _closing(mup1, 8)),
            "mup2": (None, _closing(mup2, 8))}


def test_mup_at_its_base_width_is_the_centred_ntk_run_bit_for_bit(cells):
    for ntk, mup in zip(cells["ntk"], cells["mup1"], strict=True):
        assert mup["gamma"] == 1.0 and mup["learning_rate"] == ntk["learning_rate"]
        for name in ("pred_test", "pred_lin_test", "diverged_step"):
            np.testing.assert_array_equal(mup[name], ntk[name], err_msg=name)
        assert mup["curves"].keys() == ntk["curves"].keys()
        for name, v in ntk["curves"].items():
            np.testing.assert_array_equal(mup["curves"][name], v, err_msg=f"{ntk['control']} {name}")


def test_mup_closing_keeps_the_linearization_and_moves_the_network(cells):
    """At γ = 2: the rate (from the γ-model's kernels) is the NTK run's × γ², the linearization, whose function-space
    dynamics are the NTK net's, the same to rounding; the network itself trains differently."""
    ntk, mup = cells["ntk"][1], cells["mup2"][1]
    assert mup["gamma"] == pytest.approx(2.0, rel=1e-15) and mup["centred"]
    assert mup["learning_rate"] == pytest.approx(4.0 * ntk["learning_rate"], rel=1e-12)
    _close(ntk["pred_lin_test"], mup["pred_lin_test"], rel=1e-9, name="pred_lin_test")
    _close(ntk["curves"]["loss_lin"], mup["curves"]["loss_lin"], rel=1e-9, name="loss_lin")
    gap_ntk, gap_mup = ntk["curves"]["rmse_net_vs_lin"][:, -1], mup["curves"]["rmse_net_vs_lin"][:, -1]
    assert np.all(gap_mup > 1.2 * gap_ntk), (gap_ntk, gap_mup)


def test_small_gamma0_closing_is_the_linearized_run():
    """Chizat et al.'s lazy limit through the knob (ntk, γ = γ₀, centred by --centre auto; erf: smooth): the closing
    control's network-linearization gap is O(γ₀): ten times smaller γ₀, ten times smaller gap."""
    gaps = []
    for g0 in (1e-2, 1e-3):
        res = _closing(_cfg(activation="erf", gamma0=g0), 8)
        assert res["centred"] and res["gamma"] == g0
        gaps.append(res["curves"]["rmse_net_vs_lin"][:, -1])
        assert np.all(gaps[-1] < 10 * g0 * np.max(np.abs(res["pred_lin_test"])))
    assert np.all((7 < gaps[0] / gaps[1]) & (gaps[0] / gaps[1] < 13)), gaps


def _closing_results(gap_of_width) -> list[dict]:
    """Made-up closing results (2 seeds, 2 checkpoints) with the final gap gap_of_width(n) (± 5% per seed)."""
    out = []
    for n in (64, 128, 256, 512):
        g = gap_of_width(n) * np.array([[1.0, 0.95], [1.0, 1.05]]).T  # (S, T): T = 2, the last one the final gap
        curves = {k: g.copy() for k in CS.CLOSING_GAPS} | {"loss_net": 0 * g + 1e-3, "loss_lin": 0 * g + 1e-3,
                                                           "gate_flips_train": np.zeros((2, 2, 2))}
        out.append({"width": n, "steps": np.array([0, 32]), "learning_rate": 0.1, "lr_critical_emp": np.ones(2),
                    "diverged_step": np.full(2, -1), "curves": curves, "gamma": np.sqrt(n / 64)})
    return out


def test_mup_verdict_reports_a_gap_that_does_not_close_as_expected():
    """The closing verdict under μP: the NTK rate outside the interval is flagged as μP's expected behaviour, and
    'as μP expects' is yes for a constant gap and no for one that closes at n^-1/2; under ntk nothing changes."""
    from studylib.controls import report

    mup = _cfg(parameterization="mup")
    flat = CS.closing_summary(mup, _closing_results(lambda n: 0.3))
    fit = flat["slopes"]["rmse_net_vs_lin"]
    assert fit["theory_in_ci95"] is False and fit["mup"]["as_expected"] is True
    assert flat["setting"]["parameterization"] == "mup" and flat["setting"]["gamma"][-1] == pytest.approx(8 ** 0.5)
    closing = CS.closing_summary(mup, _closing_results(lambda n: 0.3 * n ** -0.5))
    assert closing["slopes"]["rmse_net_vs_lin"]["mup"]["as_expected"] is False
    table = report.format_table({"closing": flat})
    assert "no (μP: expected no)" in table and "as μP expects" in table and "not a failure of the apparatus" in table
    ntk = CS.closing_summary(_cfg(), _closing_results(lambda n: 0.3))
    assert "mup" not in ntk["slopes"]["rmse_net_vs_lin"] and "parameterization" not in ntk["setting"]
    assert "μP" not in report.format_table({"closing": ntk})
