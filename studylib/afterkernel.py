"""The kernel that training builds: the empirical NTK at a checkpoint (the "after kernel"), its motion and its
alignment with the targets, and kernel regression with it.

Conventions (:mod:`studylib.kernels`, :mod:`studylib.closed_form`): a kernel on N inputs with k outputs is
*per output* (N, N) -- NT's traced kernel (1/k) Σ_i K_ii, or the analytic one -- or *flat* (N k, N k), row
n k + i for output i of input n; targets Y are (N, k); time is η · steps; the loss is NT's ½ mean over the N k
outputs. Everything here is NumPy float64 on kernels the studies already compute, except
:func:`empirical_kernels`, which computes them (JAX, NT's ``empirical_ntk_fn``).

* :func:`alignment` -- centred kernel-target alignment A(K, Y) = ⟨K_c, T_c⟩_F / (‖K_c‖_F ‖T_c‖_F) with
  K_c = H K H, T = Y Yᵀ, H = I − 11ᵀ/m (Cortes, Mohri & Rostamizadeh 2012, "Algorithms for learning kernels
  based on centered alignment", JMLR 13; uncentred: Cristianini et al. 2001). Rises during training
  in the rich regime (Baratin et al. 2021; Atanasov, Bordelon & Pehlevan 2022).
* :func:`kernel_velocity` -- ‖K_{t+Δt} − K_t‖_F / ‖K_t‖_F / Δt between checkpoints, Δt in units of η · steps
  (Fort et al. 2020, arXiv 2010.15110, §4: the kernel moves fast early, then slows).
* :func:`kernel_regression` -- the t = ∞ predictor with f₀ = 0, K(test, X) K(X, X)⁺ Y (a pseudo-inverse that
  drops eigenvalues ≤ 1e-12 λ_max, NT's ``gradient_descent_mse`` at ``t=None``; or with a ridge relative to
  the mean diagonal, NT's ``diag_reg``), and :func:`kernel_predict` at finite times by NT's flow
  exp(−η t K/(N k)) (or exact discrete GD) -- kernel regression with the after kernel K_T against the network
  (Fort et al. 2020: K at 15-45% of training explains the trained net; the kernel after training is Long
  2021's "after kernel", a paper not checked here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from studylib import closed_form

#: Relative ridge used by default: none (the pseudo-inverse; NT's ``t=None`` limit).
RIDGE = 0.0
#: Memory a block of the empirical kernel may use by default (bytes; :func:`studylib.kernels.block_rows`).
BLOCK_BUDGET_BYTES = 512 * 2**20


def target_kernel(y: np.ndarray, rows: int) -> np.ndarray:
    """Y Yᵀ on the layout of a kernel with ``rows`` rows: (N, N) Σ_i y_i y_iᵀ over outputs when rows = N,
    (N k, N k) vec(Y) vec(Y)ᵀ (row n k + i) when rows = N k."""
    y = np.asarray(y, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if rows == y.shape[0]:
        return y @ y.T
    if rows == y.size:
        v = y.reshape(-1)
        return np.outer(v, v)
    raise ValueError(f"a kernel with {rows} rows fits neither y {y.shape} per output ({y.shape[0]}) nor flat "
                     f"({y.size})")


def centre(k: np.ndarray) -> np.ndarray:
    """H K H with H = I − 11ᵀ/m, for k (..., m, m) (batched over leading axes)."""
    k = np.asarray(k, np.float64)
    return k - k.mean(axis=-1, keepdims=True) - k.mean(axis=-2, keepdims=True) + k.mean(axis=(-2, -1), keepdims=True)


def alignment(k: np.ndarray, y: np.ndarray, *, centred: bool = True) -> np.ndarray:
    """Kernel-target alignment of k (..., R, R) (R = N per output or N k flat) with targets y (N, k):
    ⟨K_c, T_c⟩_F / (‖K_c‖_F ‖T_c‖_F) with T = :func:`target_kernel` (``centred=False``: Cristianini's,
    without H). In [−1, 1]; NaN where a centred matrix is zero. Shape: the leading axes of ``k``."""
    k = np.asarray(k, np.float64)
    t = target_kernel(y, k.shape[-1])
    if centred:
        k, t = centre(k), centre(t)
    num = np.einsum("...ij,ij->...", k, t)
    den = np.linalg.norm(k, axis=(-2, -1)) * np.linalg.norm(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def kernel_velocity(kernels: np.ndarray, times: np.ndarray) -> np.ndarray:
    """‖K_{j+1} − K_j‖_F / ‖K_j‖_F / (t_{j+1} − t_j) for kernels (..., T, R, R) at times (T,) (η · steps,
    increasing): shape (..., T − 1), entry j the interval [t_j, t_{j+1}] (Fort et al. 2020)."""
    k = np.asarray(kernels, np.float64)
    t = np.asarray(times, np.float64)
    if t.ndim != 1 or k.shape[-3] != t.size or np.any(np.diff(t) <= 0):
        raise ValueError(f"times: expected {k.shape[-3]} increasing values (one per kernel), got {t.tolist()}")
    diff = np.linalg.norm(np.diff(k, axis=-3), axis=(-2, -1))
    return diff / np.linalg.norm(k[..., :-1, :, :], axis=(-2, -1)) / np.diff(t)


def _regularised(k_train_train: np.ndarray, ridge: float) -> np.ndarray:
    k = np.asarray(k_train_train, np.float64)
    if ridge < 0:
        raise ValueError(f"ridge: must be >= 0, got {ridge}")
    return k if ridge == 0 else k + ridge * np.mean(np.diag(k)) * np.eye(k.shape[0])


def kernel_regression(k_train_train: np.ndarray, k_test_train: np.ndarray, y_train: np.ndarray, *,
                      ridge: float = RIDGE, rcond: float = closed_form.NULL_RCOND) -> np.ndarray:
    """Test outputs (M, k) of kernel regression with f₀ = 0: K(test, X) (K(X, X) + r tr(K)/R · I)⁺ Y, the
    t = ∞ limit of GD/flow on the kernel (NT's ``gradient_descent_mse(..., diag_reg=r)`` at ``t=None``).
    ``ridge`` r = 0: the pseudo-inverse (eigenvalues ≤ ``rcond`` λ_max, default 1e-12, count as zero: the flow
    never moves them, :func:`studylib.closed_form.gain`; a float32 kernel: :func:`studylib.closed_form.null_rcond`).
    Kernels per output ((N, N), (M, N)) or flat ((N k, N k), (M k, N k))."""
    k = _regularised(k_train_train, ridge)
    y = np.asarray(y_train, np.float64)
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(k_test_train))):  # a diverged or unmeasured kernel
        return np.full(np.shape(k_test_train)[:1] + y.shape[1:], np.nan)
    c = closed_form.coefficients(k, y, np.zeros_like(y), learning_rate=1.0, steps=[np.inf], rcond=rcond)[0]
    return closed_form.kernel_apply(k_test_train, c)


def kernel_predict(k_train_train: np.ndarray, k_test_train: np.ndarray, y_train: np.ndarray, *,
                   learning_rate: float, steps, discrete: bool = False, ridge: float = RIDGE) -> np.ndarray:
    """Test outputs (T, M, k) of training with the constant kernel from f₀ = 0 for ``steps`` (T,) at
    ``learning_rate`` (time η · steps): NT's flow f_t = K(test, X) K⁻¹ (I − exp(−η t K/(N k))) Y
    (``discrete=False``; NT's ``gradient_descent_mse``) or exact GD (I − η K/(N k))^t (``True``); a step
    ``np.inf`` gives :func:`kernel_regression`. Layouts as there."""
    k = _regularised(k_train_train, ridge)
    y = np.asarray(y_train, np.float64)
    c = closed_form.coefficients(k, y, np.zeros_like(y), learning_rate=learning_rate, steps=steps,
                                 discrete=discrete)
    return closed_form.kernel_apply(k_test_train, c)


def empirical_kernels(apply_fn: Callable, params: Any, x_train, x_test=None, *, trace_outputs: bool = True,
                      implementation: int = 2, budget_bytes: float = BLOCK_BUDGET_BYTES
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The empirical NTK J(θ) J(θ)ᵀ of a stax net at ``params`` (one seed): the train Gram and the
    test-train block, float64 NumPy, by NT's ``empirical_ntk_fn`` (:func:`studylib.kernels.empirical_ntk_fn`,
    ``implementation`` 1 or 2) in row blocks that keep each block's Jacobians within ``budget_bytes``
    (:func:`studylib.kernels.block_rows`, :func:`studylib.kernels.blocked_ntk`).

    ``trace_outputs=True``: per output, (N, N) and (M, N) (NT's trace over outputs, (1/k) Σ_i K_ii);
    ``False``: flat, (N k, N k) and (M k, N k) (:func:`studylib.kernels.flat_kernel`). ``x_test=None``: the
    second entry is None. For a centred model pass ``apply_fn`` uncentred: centring does not change J."""
    import jax

    from studylib import kernels

    k = int(jax.eval_shape(apply_fn, params, x_train[:1]).shape[-1])
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    itemsize = np.dtype(jax.tree_util.tree_leaves(params)[0].dtype).itemsize
    n_rows = max(x_train.shape[0], 0 if x_test is None else x_test.shape[0])
    rows = kernels.block_rows(n_params, k, itemsize, budget_bytes=budget_bytes, n_rows=n_rows)
    fn = jax.jit(kernels.empirical_ntk_fn(apply_fn, implementation=implementation, trace_outputs=trace_outputs))
    shape = (lambda a: a) if trace_outputs else kernels.flat_kernel
    k_dd = shape(kernels.blocked_ntk(fn, x_train, None, params, rows=rows))
    k_td = None if x_test is None else shape(kernels.blocked_ntk(fn, x_test, x_train, params, rows=rows))
    return k_dd, k_td


# --- The after kernel in study.compare (studylib.compare.cell.run_width: its curves and scalars) ---------------

#: compare computes the kernel on all N training inputs and the test-train block at step 0 and at every
#: checkpoint at or after this fraction of the run's time: the lower end of the 15-45% of training from which
#: Fort et al. 2020 find the kernel settled. The log-spaced checkpoints put 4-5 there (1-D default: 0.23, 0.37,
#: 0.61, 1; digits: 0.17, 0.26, 0.41, 0.64, 1). Each costs ~16 GD steps of digits' width 1024 (~25 of width
#: 256: k = 10 backward passes of N + M = 768 inputs), so all 16 checkpoints would add ~50% to digits' training.
AFTER_FROM = 0.15
#: "K_t explains the final network" on the test set: the RMSE between its kernel regression and the trained
#: network's outputs is at most this fraction of the same RMSE for K_0 (90% of K_0's distance gone) ...
RMSE_TOL = 0.1
#: ... and, with classes, its test accuracy is within this of the network's (1 point).
ACCURACY_TOL = 0.01


def after_checkpoints(times: np.ndarray) -> np.ndarray:
    """(T,) bool: the checkpoints at which compare computes the after kernel, step 0 and every checkpoint
    with time ≥ :data:`AFTER_FROM` × the last (``times`` (T,) increasing from 0: steps, or η · steps; to 1e-9
    relative, so that both give the same checkpoints)."""
    t = np.asarray(times, np.float64)
    return (np.arange(t.size) == 0) | (t >= AFTER_FROM * t[-1] * (1.0 - 1e-9))


def first_within(ok: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """(S,) the first of ``fractions`` (T,) from which ``ok`` (S, T) holds at every later entry; NaN where it
    does not hold at the last one."""
    ok = np.asarray(ok, bool)
    tail = np.flip(np.logical_and.accumulate(np.flip(ok, -1), axis=-1), -1)  # ok from here to the end
    first = np.argmax(tail, axis=-1)
    return np.where(tail[..., -1], np.asarray(fractions, np.float64)[first], np.nan)


def compare_rows(k_sub: np.ndarray, times: np.ndarray, y_train: np.ndarray, flags: np.ndarray, k_train: np.ndarray,
                 k_test: np.ndarray, start_train: np.ndarray, start_test: np.ndarray, f_net_test: np.ndarray,
                 y_test: np.ndarray | None, n_classes: int, k0_train: np.ndarray, theta_train: np.ndarray, *,
                 rcond: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """compare's after-kernel rows for one width (S seeds, T checkpoints, N training and M test inputs, k
    outputs; float64 NumPy).

    Inputs: ``k_sub`` (S, T, P, P) the traced kernel on the first P training inputs at every checkpoint,
    ``times`` (T,) η · steps, targets ``y_train`` (N, k); ``flags`` (T,) :func:`after_checkpoints`, and at
    those T' checkpoints the traced kernel on all N, ``k_train`` (S, T', N, N), and test-train, ``k_test``
    (S, T', M, N); the outputs the models start from, ``start_train`` (S, N, k) and ``start_test`` (S, M, k)
    (the network's f_0, or zeros for a centred run); the trained network's test outputs at the last
    checkpoint ``f_net_test`` (S, M, k); held-out targets ``y_test`` (M, k) or None; K_0 traced on all N
    ``k0_train`` (S, N, N), the analytic Θ (N, N).

    The kernel regression with K_t is the t = ∞ limit of the linear model with that kernel started from the
    network's f_0 (zero prior mean when centred): f_0(x*) + K_t(x*, X) K_t⁺ (Y − f_0(X))
    (:func:`kernel_regression`, eigenvalues ≤ ``rcond`` λ_max as null).

    Returns curves (S, T), NaN at the checkpoints not flagged: ``kernel_alignment`` (A(K_t, Y) on the first P
    inputs, every checkpoint), ``kernel_velocity`` (‖K_j − K_{j−1}‖_F / ‖K_{j−1}‖_F / (t_j − t_{j−1}) on the
    same P inputs, entry j the interval ending at checkpoint j, NaN at j = 0), ``after_alignment`` (A(K_t, Y)
    on all N), ``after_vs_net_rmse`` (RMSE over the M k test outputs between K_t's regression and the final
    network), with ``y_test`` ``after_test_loss`` (½ mean (f − y)²), ``after_test_rmse`` and, with classes,
    ``after_test_accuracy`` and ``after_agreement_with_net`` (fraction of test inputs where K_t's regression
    and the final network predict the same class); scalars (S,): ``kernel_alignment_k0`` (K_0 on all N),
    ``kernel_alignment_theta`` (Θ), ``after_vs_net_rmse_k0``, ``after_rmse_ratio`` (K_T's RMSE to the net
    over K_0's), ``after_explains_from`` (:func:`first_within` of RMSE ≤ :data:`RMSE_TOL` × K_0's, as a
    fraction of the run's time; NaN: never, not even K_T), with classes ``after_accuracy_from``
    (|accuracy − the network's| ≤ :data:`ACCURACY_TOL`); and the regression's test outputs (S, T, M, k), NaN at
    the checkpoints not flagged."""
    flags = np.asarray(flags, bool)
    times = np.asarray(times, np.float64)
    s, t = k_sub.shape[:2]
    y = np.asarray(y_train, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    p = k_sub.shape[-1]
    nan = np.full((s, t), np.nan)
    curves = {"kernel_alignment": alignment(k_sub, y[:p]),
              "kernel_velocity": np.concatenate([np.full((s, 1), np.nan), kernel_velocity(k_sub, times)], axis=1)}
    pred = np.stack([np.stack([start_test[i] + kernel_regression(k_train[i, j], k_test[i, j], y - start_train[i],
                                                                 rcond=rcond)
                               for j in range(k_train.shape[1])]) for i in range(s)])  # (S, T', M, k)
    full = np.full((s, t, *pred.shape[2:]), np.nan)
    full[:, flags] = pred
    net = np.asarray(f_net_test, np.float64)[:, None]  # (S, 1, M, k)

    def on_flags(v: np.ndarray) -> np.ndarray:
        out = nan.copy()
        out[:, flags] = v
        return out

    curves["after_alignment"] = on_flags(alignment(k_train, y))
    curves["after_vs_net_rmse"] = on_flags(np.sqrt(np.mean((pred - net) ** 2, axis=(2, 3))))
    fractions = times[flags] / times[-1]
    rmse_t = curves["after_vs_net_rmse"][:, flags]
    scalars = {"kernel_alignment_k0": alignment(k0_train, y),
               "kernel_alignment_theta": np.full(s, float(alignment(theta_train, y))),
               "after_vs_net_rmse_k0": rmse_t[:, 0],
               "after_rmse_ratio": rmse_t[:, -1] / rmse_t[:, 0],
               "after_explains_from": first_within(rmse_t <= RMSE_TOL * rmse_t[:, :1], fractions)}
    if y_test is not None:
        yt = np.asarray(y_test, np.float64)
        mse = np.mean((pred - yt) ** 2, axis=(2, 3))
        curves["after_test_loss"] = on_flags(0.5 * mse)
        curves["after_test_rmse"] = on_flags(np.sqrt(mse))
        if n_classes > 0:
            label, cls, cls_net = np.argmax(yt, -1), np.argmax(pred, -1), np.argmax(net, -1)
            acc = np.mean(cls == label, axis=-1)  # (S, T')
            curves["after_test_accuracy"] = on_flags(acc)
            curves["after_agreement_with_net"] = on_flags(np.mean(cls == cls_net, axis=-1))
            acc_net = np.mean(cls_net == label, axis=-1)  # (S, 1)
            scalars["after_accuracy_from"] = first_within(np.abs(acc - acc_net) <= ACCURACY_TOL, fractions)
    return curves, scalars, full
