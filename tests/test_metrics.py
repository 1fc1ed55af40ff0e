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


def test_fit_loglog_many_is_polyfit_row_by_row_bit_for_bit():
    # The bootstrap (2000 refits) solves all rows in one stacked LAPACK call; each row must give exactly
    # what np.polyfit gives alone (the summary's confidence intervals stay the same numbers), including
    # rows whose dropped points (NaN, <= 0) differ and rows left with fewer than two points (NaN).
    rng = np.random.default_rng(3)
    x = np.array([8.0, 16.0, 64.0, 128.0, 512.0, 1024.0])
    ys = np.exp(rng.normal(size=(300, x.size)) * 2.0)
    ys[rng.random(ys.shape) < 0.1] = np.nan
    ys[rng.random(ys.shape) < 0.05] = -1.0
    ys[0, 1:] = np.nan  # one point left: NaN
    def polyfit(y):  # what fit_loglog was: np.polyfit of degree 1 on the usable points, NaN with < 2 of them
        ok = np.isfinite(y) & (y > 0)
        return np.polyfit(np.log(x[ok]), np.log(y[ok]), 1) if ok.sum() >= 2 else (np.nan, np.nan)

    want = np.array([polyfit(y) for y in ys]).T
    got = np.array(M.fit_loglog_many(x, ys))
    assert np.isnan(got[:, 0]).all()
    np.testing.assert_array_equal(got, want)
    # the bootstrap interval is the percentile of those refits
    per_seed = np.exp(rng.normal(size=(x.size, 3)))
    fit = M.bootstrap_slope(x, per_seed, n_boot=400, seed=5)
    slopes = np.array([polyfit(m)[0] for m in M._resampled_means(per_seed, 400, 5)])
    assert fit["ci95"] == [float(v) for v in np.percentile(slopes, [2.5, 97.5])]


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


def test_default_fit_widths_rule():
    assert M.default_fit_widths([8, 16, 32, 64, 128, 256, 512, 1024]) == (64, 128, 256, 512, 1024)
    # Fewer than three widths >= 64: the three largest instead.
    assert M.default_fit_widths([16, 8, 32, 64, 128]) == (32, 64, 128)
    assert M.default_fit_widths([8, 16]) == (8, 16)
    np.testing.assert_array_equal(M.fit_mask([8, 64, 128, 256], None), [False, True, True, True])
    np.testing.assert_array_equal(M.fit_mask([8, 64, 128, 256], (8, 256)), [True, False, False, True])


def test_local_slopes_by_hand():
    """Seed means 4, 2, 2 at widths 1, 4, 16: local slopes log(1/2)/log 4 = -1/2 and 0."""
    widths = np.array([1, 4, 16])
    per_seed = np.array([[3.0, 5.0], [2.0, 2.0], [1.0, 3.0]])
    loc = M.local_slopes(widths, per_seed, n_boot=200)
    assert [e["widths"] for e in loc] == [[1, 4], [4, 16]]
    assert loc[0]["slope"] == pytest.approx(-0.5, abs=1e-12)
    assert loc[1]["slope"] == pytest.approx(0.0, abs=1e-12)
    # Bootstrap draws of the first pair: means in {3, 4, 5} over {2}: slopes log(m/2)/log 4 ... all
    # between log(1/2.5)/log 4 and log(1/1.5)/log 4 -> the interval lies inside that range and holds -1/2.
    lo, hi = loc[0]["ci95"]
    assert np.log(2 / 5) / np.log(4) - 1e-12 <= lo <= -0.5 <= hi <= np.log(2 / 3) / np.log(4) + 1e-12
    # Identical seeds at both widths of the second pair: no spread, the interval is the point.
    hi_spread = M.local_slopes(widths, np.array([[4.0, 4.0], [2.0, 2.0], [2.0, 2.0]]), n_boot=50)
    assert hi_spread[1]["ci95"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_local_slopes_missing_mean():
    loc = M.local_slopes(np.array([8, 16, 32]), np.array([[1.0, 1.0], [np.nan, np.nan], [0.25, 0.25]]), n_boot=20)
    assert loc[0]["slope"] is None and loc[1]["slope"] is None and loc[0]["ci95"] == [None, None]


def test_fit_rate_uses_only_the_fit_widths():
    """A power law n^-1 above width 64 and junk below it: the default range recovers -1 exactly,
    the whole sweep does not; local slopes show where the regime changes."""
    widths = np.array([8, 16, 32, 64, 128, 256, 512])
    means = np.where(widths >= 64, 100.0 / widths, 1.0)
    per_seed = np.stack([means, means], axis=1)
    fit = M.fit_rate(widths, per_seed, n_boot=100)
    assert fit["fit_widths"] == [64, 128, 256, 512]
    assert fit["slope"] == pytest.approx(-1.0, abs=1e-12)
    assert fit["ci95"] == pytest.approx([-1.0, -1.0], abs=1e-12)
    whole = M.fit_rate(widths, per_seed, fit_widths=tuple(widths), n_boot=100)
    assert whole["fit_widths"] == widths.tolist() and whole["slope"] > -0.7
    loc = [e["slope"] for e in fit["local_slopes"]]
    np.testing.assert_allclose(loc[:2], 0.0, atol=1e-12)
    assert loc[2] == pytest.approx(np.log(100 / 64) / np.log(2), abs=1e-12)
    np.testing.assert_allclose(loc[3:], -1.0, atol=1e-12)
    # Old keys keep their meaning: bootstrap_slope on the same widths gives the same numbers.
    ref = M.bootstrap_slope(widths[3:], per_seed[3:], n_boot=100)
    assert fit["slope"] == ref["slope"] and fit["ci95"] == ref["ci95"]


def test_sup_and_early_checkpoint():
    curve = np.array([[0.0, 2.0, 1.0], [0.0, np.nan, 5.0]])
    np.testing.assert_array_equal(M.sup_over_time(curve)[:1], [2.0])
    assert np.isnan(M.sup_over_time(curve)[1])
    steps = np.array([0, 1, 2, 3, 4, 7, 12, 19, 32, 52])
    assert M.first_checkpoint_at(steps, 32) == 8
    assert M.first_checkpoint_at(steps, 20) == 8
    assert M.first_checkpoint_at(steps, 100) == 9
