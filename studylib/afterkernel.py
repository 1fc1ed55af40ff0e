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
                      ridge: float = RIDGE) -> np.ndarray:
    """Test outputs (M, k) of kernel regression with f₀ = 0: K(test, X) (K(X, X) + r tr(K)/R · I)⁺ Y, the
    t = ∞ limit of GD/flow on the kernel (NT's ``gradient_descent_mse(..., diag_reg=r)`` at ``t=None``).
    ``ridge`` r = 0: the pseudo-inverse (eigenvalues ≤ 1e-12 λ_max count as zero: the flow never moves them,
    :func:`studylib.closed_form.gain`). Kernels per output ((N, N), (M, N)) or flat ((N k, N k), (M k, N k))."""
    k = _regularised(k_train_train, ridge)
    y = np.asarray(y_train, np.float64)
    c = closed_form.coefficients(k, y, np.zeros_like(y), learning_rate=1.0, steps=[np.inf])[0]
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
