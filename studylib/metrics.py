"""Metric and fitting functions on NumPy arrays (float64), independent of JAX.

Relative changes use the Euclidean/Frobenius norm of the whole array. All
functions accept leading batch axes where stated.
"""

from __future__ import annotations

import warnings

import numpy as np


def nanmean_std(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std ignoring NaN (diverged runs); all-NaN slices give NaN without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis), np.nanstd(values, axis=axis)


def rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, axis=(-2, -1)) -> np.ndarray:
    """sqrt(mean((a - b)^2)) over the last two axes (points, outputs); ``mask`` selects points."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if mask is not None:
        d = d[..., np.asarray(mask, bool), :]
    if d.shape[-2] == 0:  # an empty region (e.g. no extrapolation range): undefined, not zero
        return np.full(d.shape[:-2], np.nan)
    return np.sqrt(np.mean(d**2, axis=axis))


def rel_change(new: np.ndarray, old: np.ndarray, axis=None) -> np.ndarray:
    """||new - old|| / ||old|| (Frobenius over ``axis``; all axes when None)."""
    new = np.asarray(new, np.float64)
    old = np.asarray(old, np.float64)
    return np.sqrt(np.sum((new - old) ** 2, axis=axis)) / np.sqrt(np.sum(old**2, axis=axis))


def rel_change_norms(diff_sq: np.ndarray, ref_sq: np.ndarray) -> np.ndarray:
    """sqrt(diff_sq / ref_sq): the relative change from precomputed squared norms."""
    return np.sqrt(np.asarray(diff_sq, np.float64) / np.asarray(ref_sq, np.float64))


def gram_extremes(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lambda_min, lambda_max) of symmetric Grams (..., N, N); NaN for Grams with non-finite entries."""
    k = np.asarray(k, np.float64)
    finite = np.isfinite(k).all(axis=(-2, -1))
    lam = np.linalg.eigvalsh(np.where(finite[..., None, None], k, 0.0))
    return np.where(finite, lam[..., 0], np.nan), np.where(finite, lam[..., -1], np.nan)


def fit_loglog(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit log y = slope log x + intercept; returns (slope, intercept).

    Non-finite or non-positive y are dropped; NaN when fewer than two points remain (``np.polyfit`` of
    degree 1 on the rest: :func:`fit_loglog_many` of one row).
    """
    slope, intercept = fit_loglog_many(x, np.asarray(y, np.float64)[None])
    return float(slope[0]), float(intercept[0])


def _stacked_lstsq(a: np.ndarray, b: np.ndarray, rcond: float) -> np.ndarray:
    """Least-squares solutions (R, n, 1) of a stack a (R, m, n), b (R, m, 1), float64: NumPy's own
    ``lstsq`` gufunc (what ``np.linalg.lstsq`` calls for one matrix: LAPACK ``gelsd``, once per item,
    so each solution is the one ``np.linalg.lstsq(a[i], b[i], rcond)`` gives). Where a NumPy lacks that
    gufunc, the same solutions matrix by matrix."""
    try:
        from numpy.linalg import _umath_linalg
        gufunc = _umath_linalg.lstsq
    except (ImportError, AttributeError):  # another NumPy layout: one call per matrix
        return np.stack([np.linalg.lstsq(ai, bi, rcond)[0] for ai, bi in zip(a, b, strict=True)])
    with np.errstate(all="ignore"):
        return gufunc(a, b, rcond, signature="ddd->ddid")[0]


def fit_loglog_many(x: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_loglog` of every row of ``ys`` (R, W) against ``x`` (W,): (slopes (R,), intercepts (R,)),
    the same numbers bit for bit. Rows with the same usable points (finite, positive) share one
    ``np.polyfit`` design matrix, built as polyfit builds it, and are solved in one call of LAPACK's
    least squares stacked over the rows (``np.linalg.lstsq`` loops over a stack, one ``gelsd`` per row,
    as polyfit calls it once), instead of one Python polyfit per row (a bootstrap: 2000 rows)."""
    x = np.asarray(x, np.float64)
    ys = np.asarray(ys, np.float64)
    out = np.full((2, ys.shape[0]), np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(ys) & (ys > 0) & (np.isfinite(x) & (x > 0))[None]
    patterns, which = np.unique(ok, axis=0, return_inverse=True)
    for p, used in enumerate(patterns):
        if used.sum() < 2:
            continue
        rows = np.flatnonzero(which.reshape(-1) == p)
        xs = np.log(x[used]) + 0.0
        lhs = np.vander(xs, 2)
        scale = np.sqrt((lhs * lhs).sum(axis=0))
        lhs /= scale
        rhs = np.log(ys[np.ix_(rows, np.flatnonzero(used))])[..., None]  # (r, n, 1)
        c = _stacked_lstsq(np.broadcast_to(lhs, (len(rows), *lhs.shape)), rhs, len(xs) * np.finfo(np.float64).eps)
        out[:, rows] = (c[..., 0] / scale).T
    return out[0], out[1]


def bootstrap_slope(
    widths: np.ndarray, per_seed: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Log-log slope of the seed mean against width, with a 95% bootstrap interval.

    ``per_seed`` has shape (W, S). Each bootstrap draw resamples the S seeds with
    replacement independently at every width, averages them and refits. With
    few seeds the interval is coarse; it reflects seed-to-seed spread only, not
    the choice of widths. NaN entries (diverged runs) are ignored.
    """
    widths = np.asarray(widths, np.float64)
    per_seed = np.asarray(per_seed, np.float64)
    mean = nanmean_std(per_seed, axis=1)[0]
    slope, intercept = fit_loglog(widths, mean)
    if not np.isfinite(slope):
        return {"slope": None, "intercept": None, "ci95": [None, None]}
    slopes = fit_loglog_many(widths, _resampled_means(per_seed, n_boot, seed))[0]
    return {"slope": slope, "intercept": intercept, "ci95": _ci95(slopes)}


def rate_label(slope: float) -> str:
    """'n^-1/2', 'n^-1', ... for a published exponent of the width n."""
    return {-0.5: "n^-1/2", -1.0: "n^-1", 0.5: "n^1/2", 1.0: "n"}.get(slope, f"n^{slope:g}")


#: The default fit range (:func:`default_fit_widths`): widths at or above this ...
ASYMPTOTIC_MIN_WIDTH = 64
#: ... and never fewer than this many widths (the largest ones).
MIN_FIT_POINTS = 3


def default_fit_widths(widths, *, min_width: int = ASYMPTOTIC_MIN_WIDTH, min_points: int = MIN_FIT_POINTS
                       ) -> tuple[int, ...]:
    """The asymptotic part of a width sweep, where a rate is fitted by default.

    Rule: the widths ``>= min_width`` (64: below it the depth-5 nets of this study are far from
    any power law, SCIENCE.md section 4); when fewer than ``min_points`` of them exist, the
    ``min_points`` largest widths instead (all widths when the sweep has fewer). Returned sorted.
    """
    w = sorted(int(v) for v in widths)
    big = [v for v in w if v >= min_width]
    return tuple(big if len(big) >= min_points else w[-min_points:])


def fit_mask(widths, fit_widths) -> np.ndarray:
    """(W,) booleans: which of ``widths`` are in ``fit_widths`` (None: :func:`default_fit_widths`)."""
    widths = np.asarray(widths)
    chosen = default_fit_widths(widths) if fit_widths is None else tuple(int(v) for v in fit_widths)
    return np.isin(widths.astype(np.int64), np.asarray(chosen, np.int64))


def _resampled_means(per_seed: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(B, W) seed means of ``per_seed`` (W, S) with the seeds resampled with replacement
    independently at every width (the draws :func:`bootstrap_slope` uses)."""
    rng = np.random.default_rng(seed)
    n_w, n_s = per_seed.shape
    idx = rng.integers(0, n_s, size=(n_boot, n_w, n_s))
    return nanmean_std(np.take_along_axis(per_seed[None], idx, axis=2), axis=2)[0]


def _ci95(samples: np.ndarray) -> list:
    samples = samples[np.isfinite(samples)]
    if not samples.size:
        return [None, None]
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def local_slopes(widths, per_seed, *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Local log-log slopes between neighbouring widths, with 95% bootstrap intervals over seeds.

    ``widths`` (W,) increasing, ``per_seed`` (W, S). Entry i is
    ``{"widths": [w_i, w_{i+1}], "slope": log(m_{i+1}/m_i) / log(w_{i+1}/w_i), "ci95": [lo, hi]}``
    with m the seed mean (NaN seeds ignored); slope None where a mean is missing or not positive.
    A local slope that drifts with width says the fitted exponent depends on the fit range.
    """
    widths = np.asarray(widths, np.float64)
    per_seed = np.asarray(per_seed, np.float64)
    mean = nanmean_std(per_seed, axis=1)[0]
    boot = _resampled_means(per_seed, n_boot, seed)  # (B, W)
    dlogw = np.diff(np.log(widths))
    with np.errstate(all="ignore"):
        point = np.diff(np.log(mean)) / dlogw
        draws = np.diff(np.log(boot), axis=1) / dlogw  # (B, W-1)
    out = []
    for i in range(len(widths) - 1):
        ok = np.isfinite(point[i])
        out.append({"widths": [int(widths[i]), int(widths[i + 1])], "slope": float(point[i]) if ok else None,
                    "ci95": _ci95(draws[:, i]) if ok else [None, None]})
    return out


def fit_rate(widths, per_seed, fit_widths=None, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """A fitted rate with its fit range: :func:`bootstrap_slope` over the widths in ``fit_widths``
    (None: :func:`default_fit_widths`), plus ``fit_widths`` (the widths actually used) and
    ``local_slopes`` (all neighbouring pairs of the whole sweep, :func:`local_slopes`)."""
    widths = np.asarray(widths)
    per_seed = np.asarray(per_seed, np.float64)
    mask = fit_mask(widths, fit_widths)
    fit = bootstrap_slope(widths[mask], per_seed[mask], n_boot=n_boot, seed=seed) if mask.sum() >= 2 else \
        {"slope": None, "intercept": None, "ci95": [None, None]}
    fit["fit_widths"] = [int(w) for w in widths[mask]]
    fit["local_slopes"] = local_slopes(widths, per_seed, n_boot=n_boot, seed=seed)
    return fit


def sup_over_time(curve: np.ndarray, axis: int = -1) -> np.ndarray:
    """max over the checkpoint axis; NaN (a diverged run) propagates: the sup of a run that
    diverged is not finite, and such seeds are left out of means like any diverged value."""
    return np.max(np.asarray(curve, np.float64), axis=axis)


def first_checkpoint_at(steps, step: int) -> int:
    """Index of the first checkpoint at or after ``step`` (the last one when none is)."""
    steps = np.asarray(steps)
    later = np.flatnonzero(steps >= step)
    return int(later[0]) if later.size else len(steps) - 1


def extrapolate_crossing(widths, per_seed, threshold: float, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Where a falling power law reaches ``threshold``: fit log m = a + b log n to the seed mean m of
    ``per_seed`` (W, S) over all ``widths`` (W,) (NaN seeds ignored, non-positive means dropped, as
    :func:`fit_loglog`) and solve m(n*) = threshold, n* = exp((log threshold - a) / b).

    Returns ``width`` (n*; the narrowest width when its mean is already below ``threshold``; None when
    b >= 0, i.e. the fit does not fall, or with fewer than two usable widths), ``ci95`` (2.5 and 97.5
    percentiles of n* over :func:`bootstrap_slope`'s draws -- seeds resampled with replacement at every
    width; a draw whose fit does not fall counts as n* = inf, shown as None), ``slope`` and
    ``intercept`` (b, a), ``fit_widths``, ``below_at_narrowest`` (every draw applies the same rule) and
    ``beyond_widest`` (n* over the widest width: an extrapolation, not an interpolation) and ``rising``
    (b >= 0: below the threshold at the narrowest width but growing with width, so "wide enough" holds
    only over the fitted widths, not from there on). The interval
    reflects seed-to-seed spread only, not the assumption that the power law holds beyond the fitted
    widths."""
    widths = np.asarray(widths, np.float64)
    per_seed = np.asarray(per_seed, np.float64)
    mean = nanmean_std(per_seed, axis=1)[0]
    slope, intercept = fit_loglog(widths, mean)
    ok = np.isfinite(mean) & (mean > 0)
    out = {"threshold": float(threshold), "slope": None, "intercept": None, "width": None, "ci95": [None, None],
           "fit_widths": [int(w) for w in widths[ok]], "below_at_narrowest": None, "beyond_widest": None}
    if not np.isfinite(slope):
        return out
    below = bool(mean[ok][0] < threshold)

    def solve(m: np.ndarray, fit: tuple[float, float]) -> float:
        good = np.isfinite(m) & (m > 0)
        if good.any() and m[good][0] < threshold:  # below from the narrowest width on
            return float(widths[good][0])
        b, a = fit
        return float(np.exp((np.log(threshold) - a) / b)) if np.isfinite(b) and b < 0 else float("inf")

    width = solve(mean, fit_loglog(widths, mean))
    boot = _resampled_means(per_seed, n_boot, seed)
    slopes, intercepts = fit_loglog_many(widths, boot)
    draws = np.array([solve(m, (b, a)) for m, b, a in zip(boot, slopes, intercepts, strict=True)])
    lo, hi = (np.percentile(draws, [2.5, 97.5], method="nearest") if draws.size else (np.inf, np.inf))
    finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
    out |= {"slope": slope, "intercept": intercept, "width": finite(width), "ci95": [finite(lo), finite(hi)],
            "below_at_narrowest": below, "beyond_widest": bool(np.isfinite(width) and width > widths[ok][-1]),
            "rising": bool(slope >= 0)}
    return out


#: A model counts as diverged once its training outputs are non-finite or this far from the targets (in
#: units of max |y| + 1): GD with a rate above 2Nk/lambda_max grows geometrically. The one rule of every
#: study (compare, controls, ensemble, the quadratic model).
DIVERGENCE_SCALE = 1e6


def diverged(f_train: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(M,) flags for outputs ``f_train`` (M, N, k) against targets ``y`` (N, k): non-finite, or some output
    beyond :data:`DIVERGENCE_SCALE` x (max |y| + 1) from its target."""
    with np.errstate(invalid="ignore"):
        far = np.abs(f_train - y).max(axis=(1, 2)) > DIVERGENCE_SCALE * (np.abs(y).max() + 1.0)
    return ~np.isfinite(f_train).all(axis=(1, 2)) | far

