"""Mode-resolved training dynamics: eigenmodes of a training Gram, projections of the
residual, the constant-kernel prediction per mode, departures from it, kernel motion.

Conventions (NT's, see :mod:`studylib.closed_form`): L = 1/2 mean((f - y)^2) over the N
training outputs, full-batch GD at rate ``lr``. With a constant kernel K = sum_i
lambda_i v_i v_i^T the training residual r_t = f_t(X) - Y evolves as

    r_t = (I - lr K / N)^t r_0,   so   <v_i, r_t> = (1 - lr lambda_i / N)^t <v_i, r_0>,

exactly, mode by mode. A finite network's kernel moves during training; the
modes whose rate lr lambda_i / N is small (the slow ones) are the ones in which a
given kernel change ||K_t - K_0||_2 is large compared to lambda_i. The *laziness ratios* set
that change against the spectrum of K_0: against its smallest eigenvalue
(:func:`laziness_ratio`), against each mode's (:func:`mode_laziness`), and against the slowest
mode a run of T steps can fit (:func:`horizon_laziness_ratio`); each has an ``*_of_motion`` form
taking ||K_t - K_0||_2 already computed.

Mode order: eigenvalues in *descending* order, mode 0 is the fastest. The sign of
each eigenvector is fixed so that its entry of largest magnitude is positive
(the first such entry on ties), so projections are comparable across seeds,
checkpoints and runs. Everything here is float64 NumPy and batched over leading axes.
"""

from __future__ import annotations

import numpy as np

from studylib import closed_form


def eig_modes(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (..., N) in descending order and eigenvectors (..., N, N) as columns
    (``v[..., :, i]`` is mode i), orthonormal, with the sign convention of the module doc."""
    k = np.asarray(k, np.float64)
    if k.shape[-1] != k.shape[-2]:
        raise ValueError(f"k: expected square matrices (..., N, N), got shape {k.shape}")
    lam, v = np.linalg.eigh(0.5 * (k + np.swapaxes(k, -1, -2)))
    lam, v = lam[..., ::-1], v[..., ::-1]
    # Sign: entry of largest magnitude positive. Round magnitudes so near-ties resolve the same way.
    mag = np.round(np.abs(v), 12)
    idx = np.argmax(mag, axis=-2)[..., None, :]  # (..., 1, N)
    sign = np.sign(np.take_along_axis(v, idx, axis=-2))
    sign = np.where(sign == 0, 1.0, sign)
    return np.ascontiguousarray(lam), np.ascontiguousarray(v * sign)


def project(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mode coefficients c_i = <v_i, r>. ``r`` (..., N), ``v`` (..., N, N) broadcast together."""
    r = np.asarray(r, np.float64)
    return (np.swapaxes(np.asarray(v, np.float64), -1, -2) @ r[..., None])[..., 0]


def reconstruct(c: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The residual sum_i c_i v_i from its mode coefficients (inverse of :func:`project`)."""
    return (np.asarray(v, np.float64) @ np.asarray(c, np.float64)[..., None])[..., 0]


def decay_factor(lam: np.ndarray, lr: float, n: int, steps: np.ndarray) -> np.ndarray:
    """(1 - lr lambda_i / N)^t for every step t and mode i: shape (..., T, N) for ``lam`` (..., N)
    (:func:`studylib.closed_form.decay`, the one formula)."""
    return closed_form.decay(lam, lr, n, steps)


def predicted_coefficients(c0: np.ndarray, lam: np.ndarray, lr: float, n: int, steps) -> np.ndarray:
    """Constant-kernel prediction c_{t,i} = (1 - lr lambda_i / N)^t c_{0,i}: (..., T, N)."""
    return decay_factor(lam, lr, n, steps) * np.asarray(c0, np.float64)[..., None, :]


def linear_residuals(k: np.ndarray, r0: np.ndarray, lr: float, steps) -> np.ndarray:
    """Residuals (..., T, N) of discrete GD with the constant kernel ``k`` (..., N, N) from ``r0`` (..., N)."""
    lam, v = eig_modes(k)
    c = predicted_coefficients(project(r0, v), lam, lr, np.shape(k)[-1], steps)
    return reconstruct(c, v[..., None, :, :])


def departure_step(c: np.ndarray, c_pred: np.ndarray, steps, *, tol: float = 0.1, floor: float = 0.05) -> np.ndarray:
    """First checkpoint step at which a mode leaves its prediction; NaN if it never does.

    ``c``, ``c_pred``: (..., T, N) measured and predicted coefficients (t = 0 first). Mode i
    has departed at t when |c_{t,i} - c_pred_{t,i}| > tol * s_i, with the scale
    s_i = max(|c_{0,i}|, floor * ||r_0||): relative to the mode's own initial amplitude,
    but not below a fraction of the whole initial residual, so that modes the initial
    residual barely excites are not flagged by a tiny absolute change. Shape (..., N).
    """
    c = np.asarray(c, np.float64)
    c_pred = np.asarray(c_pred, np.float64)
    steps = np.asarray(steps, np.float64)
    c0 = c[..., 0, :]
    scale = np.maximum(np.abs(c0), floor * np.linalg.norm(c0, axis=-1, keepdims=True))  # (..., N)
    with np.errstate(invalid="ignore"):
        off = ~(np.abs(c - c_pred) <= tol * scale[..., None, :])  # non-finite counts as departed
    first = np.argmax(off, axis=-2)  # (..., N)
    return np.where(off.any(axis=-2), steps[first], np.nan)


def op_norm(a: np.ndarray) -> np.ndarray:
    """Operator 2-norm (largest singular value) of symmetric matrices (..., N, N): max |eigenvalue|."""
    a = np.asarray(a, np.float64)
    return np.max(np.abs(np.linalg.eigvalsh(0.5 * (a + np.swapaxes(a, -1, -2)))), axis=-1)


def kernel_motion(k_t: np.ndarray, k_0: np.ndarray) -> np.ndarray:
    """||K_t - K_0||_2 (operator norm); ``k_0`` broadcasts against ``k_t``."""
    return op_norm(np.asarray(k_t, np.float64) - np.asarray(k_0, np.float64))


#: Eigenvalues of K_0 below RCOND * lambda_max are numerically zero (float32 kernels of narrow
#: deep ReLU nets reach them); they are clipped there, so a ratio of ~1/RCOND means "singular".
RCOND = 1e-7


def clipped_spectrum(k_0: np.ndarray) -> np.ndarray:
    """Eigenvalues of K_0 in descending order, clipped below at RCOND * lambda_max."""
    lam = eig_modes(k_0)[0]
    return np.maximum(lam, RCOND * lam[..., :1])


def laziness_of_motion(motion: np.ndarray, k_0: np.ndarray) -> np.ndarray:
    """||K_t - K_0||_2 / lambda_min(K_0) from the kernel motion ``motion`` (..., T) (e.g. NaN where
    K_t is not finite) and ``k_0`` (..., N, N); lambda_min clipped at RCOND * lambda_max."""
    return np.asarray(motion, np.float64) / clipped_spectrum(k_0)[..., -1:]


def mode_laziness_of_motion(motion: np.ndarray, k_0: np.ndarray) -> np.ndarray:
    """sup_t ||K_t - K_0||_2 / lambda_i(K_0) per mode (descending lambda, clipped as in
    :func:`laziness_of_motion`; NaN motions are skipped): (..., N)."""
    return np.nanmax(np.asarray(motion, np.float64), axis=-1)[..., None] / clipped_spectrum(k_0)


def horizon_laziness_of_motion(motion: np.ndarray, k_0: np.ndarray, *, learning_rate: float, steps) -> np.ndarray:
    """sup_t ||K_t - K_0||_2 / max(lambda_min(K_0), N / (lr T)), T = ``steps`` (the last step): the
    kernel's motion against the slowest mode the run can fit. Modes with lr lambda T / N < 1 have
    not moved by step T under either dynamics, so their smallness is no measure of laziness. (...)."""
    n = np.shape(k_0)[-1]
    lam_horizon = np.maximum(clipped_spectrum(k_0)[..., -1], n / (learning_rate * steps))
    return np.nanmax(np.asarray(motion, np.float64), axis=-1) / lam_horizon


def laziness_ratio(k_t: np.ndarray, k_0: np.ndarray) -> np.ndarray:
    """||K_t - K_0||_2 / lambda_min(K_0): below ~1 the kernel's motion is small even in its
    slowest direction. ``k_t`` (..., T, N, N), ``k_0`` (..., N, N); returns (..., T).
    lambda_min is clipped at RCOND * lambda_max (see :data:`RCOND`)."""
    return laziness_of_motion(kernel_motion(k_t, np.asarray(k_0)[..., None, :, :]), k_0)


def mode_laziness(k_t: np.ndarray, k_0: np.ndarray) -> np.ndarray:
    """sup_t ||K_t - K_0||_2 / lambda_i(K_0) per mode (descending lambda, clipped as in
    :func:`laziness_ratio`): (..., N)."""
    return mode_laziness_of_motion(kernel_motion(k_t, np.asarray(k_0)[..., None, :, :]), k_0)


def horizon_laziness_ratio(k_t: np.ndarray, k_0: np.ndarray, *, learning_rate: float, steps) -> np.ndarray:
    """:func:`horizon_laziness_of_motion` of ``k_t`` (..., T, N, N) against ``k_0`` (..., N, N)."""
    return horizon_laziness_of_motion(kernel_motion(k_t, np.asarray(k_0)[..., None, :, :]), k_0,
                                      learning_rate=learning_rate, steps=steps)


#: The part of the run whose modes count as fast in :func:`stalled_gap` (= ``gates.EARLY_FRACTION``).
FAST_FRACTION = 0.05


def stalled_gap(c0: np.ndarray, k0_lambda: np.ndarray, *, learning_rate: float, steps: int, y_scale: float,
                fast_fraction: float = FAST_FRACTION) -> np.ndarray:
    """The gap of a network that follows its linearization in the fast modes of K_0 and does not move
    in the slow ones, from theta_0 alone; (S,).

    ``c0`` (S, M): residual coefficients c_{0,i} = <v_i, f(X; theta_0) - Y> in the eigenbasis of each
    seed's empirical NTK K_0 on the M = N k training outputs, ``k0_lambda`` (S, M) its eigenvalues in the
    same order. Discrete GD on L = 1/2 mean((f - y)^2) over the M outputs (NT's convention, SCIENCE.md
    section 2) moves the linearization's coefficient i as c_{t,i} = (1 - a_i)^t c_{0,i}, a_i = eta
    lambda_i / M (docs/regimes.md, *Modes*; :func:`predicted_coefficients`). Mode i is slow when its time
    scale 1/a_i exceeds ``fast_fraction`` x ``steps`` (a_i x fast_fraction x steps < 1: not fitted
    within the first 5% of the run). The value is the RMS over the training outputs of the
    linearization's motion in the slow modes by the last step T = ``steps``, relative to RMS(y) = ``y_scale``:

        sqrt( sum_{i slow} c_{0,i}^2 (1 - (1 - a_i)^T)^2 / M ) / y_scale,

    i.e. the gap on the training inputs if the network fitted exactly the fast modes its linearization
    fits and stalled in every slow one (the stall docs/regimes.md measures mode by mode). NaN where some
    a_i > 2, i.e. eta > 2M/lambda_max(K_0): the linearization diverges (the cell's ``diverged_lin``).
    """
    c0 = np.asarray(c0, np.float64)
    a = learning_rate * np.asarray(k0_lambda, np.float64) / c0.shape[-1]
    slow = a * fast_fraction * steps < 1.0
    with np.errstate(all="ignore"):
        moved = np.where(slow, c0 * (1.0 - (1.0 - a) ** steps), 0.0)
        out = np.sqrt(np.mean(moved**2, axis=-1)) / y_scale
    return np.where(np.any(a > 2.0, axis=-1), np.nan, out)
