"""Empirical and analytic neural tangent kernels, for scalar-output networks.

Convention: K(x, x'; theta) = grad_theta f(x) . grad_theta f(x')^T, summed over
every parameter; shapes (N1, N2). The analytic kernels come from the stax
``kernel_fn`` (Jacot et al. 2018; Lee et al. 2019 for the NNGP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: 1 = Jacobian contraction, 2 = NTK-vector products. 3 (structured derivatives)
#: fails with every jax >= 0.4.28 (see SCIENCE.md section 2), so it is not offered.
NTK_IMPLEMENTATIONS = (1, 2)
#: Implementation 2 was the fastest here for fully connected nets (study.bench measures it).
DEFAULT_IMPLEMENTATION = 2


def empirical_ntk_fn(apply_fn: Callable, *, implementation: int = DEFAULT_IMPLEMENTATION) -> Callable:
    """``ntk(x1, x2, params) -> (N1, N2)``; ``x2=None`` means x2 = x1.

    The output axis (size 1) is traced out: for scalar outputs that is the full kernel.
    """
    from studylib.nt import nt

    if implementation not in NTK_IMPLEMENTATIONS:
        raise ValueError(f"implementation: unknown value {implementation!r}; accepted: 1, 2")
    return nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=implementation)


def ntk_cross(apply_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray, params: Any) -> jnp.ndarray:
    """K(x1, x2) (N1, N2) as jvp-of-vjp: the N2 rows J(x2)^T e_j by one batched vjp, then their
    jvps through f(x1). Costs ~N2 backward + N2 forward passes whatever N1 is, so it suits a
    long test grid against a few training points (NT's implementations 1 and 2 scale with N1 x N2
    here and were 3-10x slower for 201 x 10 at width 1024-2048). Memory: N2 parameter copies."""
    _, vjp = jax.vjp(lambda p: apply_fn(p, x2)[:, 0], params)
    rows = jax.vmap(vjp)(jnp.eye(x2.shape[0], dtype=x2.dtype))[0]
    return jax.vmap(lambda t: jax.jvp(lambda p: apply_fn(p, x1)[:, 0], (params,), (t,))[1])(rows).T


def jacobian_ntk(apply_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray, params: Any) -> jnp.ndarray:
    """Reference NTK J(x1) J(x2)^T from full Jacobians (``jax.jacrev``); small nets only."""
    def flat_jac(x):
        jac = jax.jacrev(lambda p: apply_fn(p, x)[:, 0])(params)
        return jnp.concatenate([j.reshape(x.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)], axis=1)

    return flat_jac(x1) @ flat_jac(x2).T


def analytic(kernel_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray | None, get: str = "ntk") -> jnp.ndarray:
    """Infinite-width kernel ``get`` ('ntk' or 'nngp') of shape (N1, N2)."""
    return kernel_fn(x1, x2, get)


#: c in L = (c/2) mean((f - y)^2): 'half_mse' is NT's convention, 'mse' the seed's (no 1/2).
LOSS_FACTOR = {"mse": 2.0, "half_mse": 1.0}


def critical_rate(lam_max, n: int, *, loss_factor: float = 1.0):
    """2 N / (c lambda_max): the stability limit of full-batch GD on L = (c/2) mean((f - y)^2)
    over N outputs with a constant kernel (discrete GD multiplies mode i by 1 - c lr lambda_i / N
    each step). The one formula every study uses; NumPy float64, batched over ``lam_max``."""
    return 2.0 * n / (loss_factor * np.asarray(lam_max, np.float64))


def critical_learning_rate(k_train_train, *, loss_factor: float = 1.0):
    """:func:`critical_rate` of the Gram ``k_train_train`` (..., N, N): 2 N / lambda_max.
    Same as ``nt.predict.max_learning_rate`` for scalar outputs. Batched over leading axes."""
    k = np.asarray(k_train_train, np.float64)
    return critical_rate(np.linalg.eigvalsh(k)[..., -1], k.shape[-1], loss_factor=loss_factor)


def minibatch_critical_rate(k, batch: int, *, loss_factor: float = 1.0) -> float:
    """A lower bound on the SGD stability limit with a constant kernel K and batches of size B:
    a step on batch I multiplies the residual on I by (I - lr c K_II / B), stable for
    lr < 2B / (c max_I lambda_max(K_II)), and lambda_max(K_II) <= min(lambda_max(K), B max_i K_ii).
    Exact for B = 1 (2 / (c max K_ii)) and for B = N (:func:`critical_rate`)."""
    k = np.asarray(k, np.float64)
    bound = min(np.linalg.eigvalsh(k)[-1], batch * np.max(np.diag(k)))
    return float(critical_rate(bound, batch, loss_factor=loss_factor))
