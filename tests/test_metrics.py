"""Metric and slope functions against hand-made inputs and synthetic power laws."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from studylib import metrics as M


def test_rmse_and_regions_by_hand():
    a = np.array([[[1.0], [2.0], [3.0], [4.0]]])
    b = np.array([[[1.0], [0.0], [3.0], [0.0]]])
    # differences 0, 2, 0, 4 -> sqrt((4 + 16) / 4) = sqrt 5
    assert M.rmse(a, b)[0] == pytest.approx(np.sqrt(5.0))
    mask = np.array([True, True, False, False])
    assert M.rmse(a, b, mask)[0] == pytest.approx(np.sqrt(2.0))


def test_rel_change_by_hand():
    old = np.array([[3.0, 0.0], [0.0, 4.0]])
    new = np.array([[3.0, 1.0], [1.0, 4.0]])
    assert M.rel_change(new, old) == pytest.approx(np.sqrt(2.0) / 5.0)
    assert M.rel_change_norms(2.0, 5.0**2) == pytest.approx(np.sqrt(2.0) / 5.0)


def test_gram_extremes_and_non_finite():
    k = np.stack([np.diag([1.0, 3.0, 2.0]), np.full((3, 3), np.nan)])
    lo, hi = M.gram_extremes(k)
    assert lo[0] == pytest.approx(1.0) and hi[0] == pytest.approx(3.0)
    assert np.isnan(lo[1]) and np.isnan(hi[1])


def test_fit_loglog_recovers_exponent_and_drops_bad_points():
    x = np.array([8.0, 16, 32, 64, 128])
    y = 3.0 * x**-0.5
    y_bad = y.copy()
    y_bad[2] = np.nan
    assert M.fit_loglog(x, y)[0] == pytest.approx(-0.5, abs=1e-12)
    assert M.fit_loglog(x, y_bad)[0] == pytest.approx(-0.5, abs=1e-12)
    assert np.isnan(M.fit_loglog(x[:1], y[:1])[0])


def test_bootstrap_slope_covers_true_exponent():
    rng = np.random.default_rng(1)
    widths = np.array([16.0, 32, 64, 128, 256, 512, 1024])
    per_seed = 2.0 * widths[:, None] ** -1.0 * np.exp(0.1 * rng.standard_normal((7, 5)))
    fit = M.bootstrap_slope(widths, per_seed, n_boot=500)
    lo, hi = fit["ci95"]
    assert lo < -1.0 < hi
    # 10% log-noise over 1.8 decades: the interval must be narrow, not vacuous.
    assert hi - lo < 0.15
    assert fit["slope"] == pytest.approx(-1.0, abs=0.05)


def test_bootstrap_slope_all_nan():
    fit = M.bootstrap_slope(np.array([1.0, 2.0]), np.full((2, 3), np.nan))
    assert fit["slope"] is None and fit["ci95"] == [None, None]


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (3, 6, 1), elements=finite), arrays(np.float64, (3, 6, 1), elements=finite))
def test_rmse_properties(a, b):
    r = M.rmse(a, b)
    assert np.all(r >= 0)
    np.testing.assert_allclose(r, M.rmse(b, a))
    np.testing.assert_allclose(M.rmse(a, a), 0.0)
    # RMSE is a (scaled) Euclidean norm: the triangle inequality holds.
    assert np.all(M.rmse(a, b) <= M.rmse(a, 0 * a) + M.rmse(0 * b, b) + 1e-9)


@settings(max_examples=50, deadline=None)
@given(st.floats(-3.0, 3.0), st.floats(1e-3, 1e3),
       st.lists(st.floats(1.0, 1e4), min_size=3, max_size=8, unique=True))
def test_fit_loglog_exact_power_laws(slope, scale, xs):
    x = np.array(sorted(xs))
    if np.log(x[-1] / x[0]) < 0.1:
        return
    got, intercept = M.fit_loglog(x, scale * x**slope)
    assert got == pytest.approx(slope, abs=1e-6)
    assert np.exp(intercept) == pytest.approx(scale, rel=1e-5)
