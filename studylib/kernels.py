"""Empirical and analytic neural tangent kernels, for networks with k outputs.

Convention: K(x, x'; theta) = grad_theta f(x) . grad_theta f(x')^T, summed over
every parameter. With k outputs per input the full empirical kernel couples the outputs:
NT's ``empirical_ntk_fn(..., trace_axes=())`` gives it as (N1, N2, k, k); here it is used
*flat*, (N1 k, N2 k) with row n k + i for output i of input n (the row-major flattening of
f(X) of shape (N, k)), so that GD on L = 1/2 mean((f - y)^2) over the N k outputs is the
linear map I - lr K / (N k) on f flattened. The *traced* kernel (1/k) sum_i K_ii (N1, N2) is
what NT's default ``trace_axes=(-1,)`` gives (the mean of the diagonal output blocks, on the
scale of the per-output analytic kernel; for k = 1 it is the full kernel). The analytic
kernels from the stax ``kernel_fn`` (Jacot et al. 2018; Lee et al. 2019 for the NNGP) are
(N1, N2): in the infinite-width limit the outputs are independent with one kernel, the full
one being Theta (x) I_k, so the studies never build the (N k, N k) matrix from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: 1 = Jacobian contraction, 2 = NTK-vector products, 3 = structured derivatives (NT's own fails with
#: every jax >= 0.4.28, SCIENCE.md section 2; :mod:`studylib.nt` repairs it, tests/test_nt_compat.py).
NTK_IMPLEMENTATIONS = (1, 2, 3)
#: Implementation 2 was the fastest here for fully connected nets (study.bench measures it).
DEFAULT_IMPLEMENTATION = 2


def empirical_ntk_fn(apply_fn: Callable, *, implementation: int = DEFAULT_IMPLEMENTATION,
                     trace_outputs: bool = True) -> Callable:
    """``ntk(x1, x2, params)``; ``x2=None`` means x2 = x1.

    ``trace_outputs=True``: the traced kernel (1/k) sum_i K_ii, (N1, N2) (for scalar outputs the full
    kernel); ``False``: NT's full kernel (N1, N2, k, k) (:func:`flat_kernel` makes it (N1 k, N2 k)).
    """
    from studylib.nt import nt

    if implementation not in NTK_IMPLEMENTATIONS:
        raise ValueError(f"implementation: unknown value {implementation!r}; accepted: 1, 2, 3")
    return nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,) if trace_outputs else (), vmap_axes=0,
                               implementation=implementation)


def flat_kernel(k4):
    """NT's full kernel (N1, N2, k1, k2) as the flat (N1 k1, N2 k2) matrix, row n k1 + i (NumPy or JAX)."""
    n1, n2, k1, k2 = k4.shape
    return k4.transpose(0, 2, 1, 3).reshape(n1 * k1, n2 * k2)


def traced_kernel(flat, k: int):
    """(1/k) sum_i K_ii (N1, N2) of a flat (N1 k, N2 k) kernel (NumPy), batched over leading axes:
    NT's ``trace_axes=(-1,)`` kernel (the mean of the diagonal output blocks)."""
    *lead, a, b = flat.shape
    return np.einsum("...iaja->...ij", np.asarray(flat).reshape(*lead, a // k, k, b // k, k)) / k


def block_rows(n_params: int, n_outputs: int, itemsize: int, *, budget_bytes: float, n_rows: int) -> int:
    """Inputs per block of a blocked empirical kernel: each block holds ~3 x rows x k x P numbers
    (a Jacobian block for implementation 1, the vjp rows for implementation 2, and their
    temporaries), kept within ``budget_bytes``; at least 1, at most ``n_rows``, and as even as the
    number of blocks allows (256 rows with room for 118 give 3 blocks of 86, not 118 + 118 + 20 padded)."""
    per_row = 3.0 * n_outputs * n_params * itemsize
    most = int(max(1, min(n_rows, budget_bytes // max(per_row, 1.0))))
    blocks = -(-n_rows // most)
    return -(-n_rows // blocks)  # the same number of blocks, evenly filled (little zero padding)


def blocked_ntk(ntk_fn: Callable, x1, x2, params, *, rows: int) -> np.ndarray:
    """Evaluate ``ntk_fn(x1, x2, params)`` (NT's kernel function, jitted by the caller) block by
    block: ``rows`` inputs of x1 against ``rows`` inputs of x2 at a time, the last block padded
    with zero inputs so that every call has one shape (one compilation), and the pieces joined
    as float64 NumPy. Shapes as ``ntk_fn`` gives them: (N1, N2[, k, k]). Memory: one block's
    Jacobians / vjp rows (:func:`block_rows`) instead of all N rows' at once."""
    if rows >= max(x1.shape[0], (x1 if x2 is None else x2).shape[0]):
        return np.asarray(ntk_fn(x1, x2, params), np.float64)  # x2=None: NT differentiates x1 once
    x2 = x1 if x2 is None else x2

    def pad(x, i):
        blk = x[i:i + rows]
        if blk.shape[0] < rows:
            blk = jnp.concatenate([blk, jnp.zeros((rows - blk.shape[0], *x.shape[1:]), x.dtype)])
        return blk

    out_rows = []
    for i in range(0, x1.shape[0], rows):
        b1 = pad(x1, i)
        n1 = min(rows, x1.shape[0] - i)
        cols = []
        for j in range(0, x2.shape[0], rows):
            n2 = min(rows, x2.shape[0] - j)
            cols.append(np.asarray(ntk_fn(b1, pad(x2, j), params), np.float64)[:n1, :n2])
        out_rows.append(np.concatenate(cols, axis=1))
    return np.concatenate(out_rows, axis=0)


def ntk_cross(apply_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray, params: Any) -> jnp.ndarray:
    """K(x1, x2) (N1, N2) as jvp-of-vjp: the N2 rows J(x2)^T e_j by one batched vjp, then their
    jvps through f(x1). Costs ~N2 backward + N2 forward passes whatever N1 is, so it suits a
    long test grid against a few training points (NT's implementations 1 and 2 scale with N1 x N2
    here and were 3-10x slower for 201 x 10 at width 1024-2048). Memory: N2 parameter copies."""
    _, vjp = jax.vjp(lambda p: apply_fn(p, x2)[:, 0], params)
    rows = jax.vmap(vjp)(jnp.eye(x2.shape[0], dtype=x2.dtype))[0]
    return jax.vmap(lambda t: jax.jvp(lambda p: apply_fn(p, x1)[:, 0], (params,), (t,))[1])(rows).T


def jacobian_ntk(apply_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray, params: Any) -> jnp.ndarray:
    """Reference NTK J(x1) J(x2)^T from full Jacobians (``jax.jacrev`` of f flattened to (N k,)):
    the flat full kernel (N1 k, N2 k) (for k = 1 the (N1, N2) kernel); small nets only."""
    def flat_jac(x):
        jac = jax.jacrev(lambda p: apply_fn(p, x).reshape(-1))(params)
        return jnp.concatenate([j.reshape(j.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)], axis=1)

    return flat_jac(x1) @ flat_jac(x2).T


def analytic(kernel_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray | None, get: str = "ntk") -> jnp.ndarray:
    """Infinite-width kernel ``get`` ('ntk' or 'nngp') of shape (N1, N2) (one output's; the full
    kernel over k outputs is this (x) I_k)."""
    return kernel_fn(x1, x2, get)


#: Bytes one (x1, x2) pair of inputs costs in NT's analytic kernel computation, per spatial
#: position pair, counted generously (nngp, ntk, two variances, temporaries; float64).
ANALYTIC_PAIR_BYTES = 64


def analytic_rows(x1_shape: tuple[int, ...], n2: int, *, budget_bytes: float) -> int:
    """Rows of x1 per block of :func:`analytic_blocked` so that NT's kernel of image inputs
    (N, H, W, C) fits ``budget_bytes`` even when it keeps every pixel pair's covariance
    (global average pooling: (H W)^2 numbers per input pair; flattened or dense nets need far
    less, so this bound is safe for them). Flat inputs (N, d): all rows at once."""
    if len(x1_shape) <= 2:
        return x1_shape[0]
    spatial = int(np.prod(x1_shape[1:-1]))
    per_row = ANALYTIC_PAIR_BYTES * n2 * spatial**2
    return int(max(1, min(x1_shape[0], budget_bytes // per_row)))


def analytic_blocked(kernel_fn: Callable, x1, x2, get: str = "ntk", *, rows: int) -> np.ndarray:
    """:func:`analytic` computed ``rows`` inputs of x1 at a time (x2 whole; ``x2=None``: x2 = x1),
    joined as float64 NumPy (N1, N2). One call when ``rows`` >= N1 (then identical to
    :func:`analytic`). NT's ``nt.batch`` does the same but needs the batch size to divide N."""
    if rows >= x1.shape[0]:
        return np.asarray(kernel_fn(x1, x2, get), np.float64)
    other = x1 if x2 is None else x2
    return np.concatenate([np.asarray(kernel_fn(x1[i:i + rows], other, get), np.float64)
                           for i in range(0, x1.shape[0], rows)])


#: c in L = (c/2) mean((f - y)^2): 'half_mse' is NT's convention, 'mse' the seed's (no 1/2).
LOSS_FACTOR = {"mse": 2.0, "half_mse": 1.0}


def critical_rate(lam_max, n: int, *, loss_factor: float = 1.0):
    """2 N / (c lambda_max): the stability limit of full-batch GD on L = (c/2) mean((f - y)^2)
    over N outputs with a constant kernel (discrete GD multiplies mode i by 1 - c lr lambda_i / N
    each step). The one formula every study uses; NumPy float64, batched over ``lam_max``."""
    return 2.0 * n / (loss_factor * np.asarray(lam_max, np.float64))


def critical_learning_rate(k_train_train, *, loss_factor: float = 1.0, outputs: int = 1):
    """:func:`critical_rate` of the Gram ``k_train_train`` (..., R, R): 2 R k / lambda_max, NT's
    ``max_learning_rate`` (2 N k / lambda_max over the N k outputs). A flat full kernel
    (R = N k, :func:`flat_kernel`) takes ``outputs=1``; a per-output kernel (R = N) acting as
    K (x) I_k (the analytic one) takes ``outputs=k`` (its eigenvalues are K's, each k times).
    Batched over leading axes."""
    k = np.asarray(k_train_train, np.float64)
    return critical_rate(np.linalg.eigvalsh(k)[..., -1], k.shape[-1] * outputs, loss_factor=loss_factor)


def minibatch_critical_rate(k, batch: int, *, loss_factor: float = 1.0) -> float:
    """A lower bound on the SGD stability limit with a constant kernel K and batches of size B:
    a step on batch I multiplies the residual on I by (I - lr c K_II / B), stable for
    lr < 2B / (c max_I lambda_max(K_II)), and lambda_max(K_II) <= min(lambda_max(K), B max_i K_ii).
    Exact for B = 1 (2 / (c max K_ii)) and for B = N (:func:`critical_rate`)."""
    k = np.asarray(k, np.float64)
    bound = min(np.linalg.eigvalsh(k)[-1], batch * np.max(np.diag(k)))
    return float(critical_rate(bound, batch, loss_factor=loss_factor))
