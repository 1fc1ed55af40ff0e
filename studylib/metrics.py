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

    Non-finite or non-positive y are dropped; NaN when fewer than two points remain.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(y) & (y > 0) & np.isfinite(x) & (x > 0)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(intercept)


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
    rng = np.random.default_rng(seed)
    n_w, n_s = per_seed.shape
    idx = rng.integers(0, n_s, size=(n_boot, n_w, n_s))
    samples = np.take_along_axis(per_seed[None], idx, axis=2)  # (B, W, S)
    means = nanmean_std(samples, axis=2)[0]
    slopes = np.array([fit_loglog(widths, m)[0] for m in means])
    slopes = slopes[np.isfinite(slopes)]
    lo, hi = (np.percentile(slopes, [2.5, 97.5]) if slopes.size else (np.nan, np.nan))
    return {"slope": slope, "intercept": intercept, "ci95": [float(lo), float(hi)]}


def rate_label(slope: float) -> str:
    """'n^-1/2', 'n^-1', ... for a published exponent of the width n."""
    return {-0.5: "n^-1/2", -1.0: "n^-1", 0.5: "n^1/2", 1.0: "n"}.get(slope, f"n^{slope:g}")
