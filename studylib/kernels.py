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

#: 1 = Jacobian contraction, 2 = NTK-vector products. 3 (structured derivatives)
#: fails with every jax >= 0.4.28 (see SCIENCE.md section 2), so it is not offered.
NTK_IMPLEMENTATIONS = (1, 2)
#: Implementation 2 was the fastest here for fully connected nets (study.bench measures it).
DEFAULT_IMPLEMENTATION = 2


def empirical_ntk_fn(apply_fn: Callable, *, implementation: int = DEFAULT_IMPLEMENTATION) -> Callable:
    """``ntk(x1, x2, params) -> (N1, N2)``; ``x2=None`` means x2 = x1.

    The output axis (size 1) is traced out: for scalar outputs that is the full kernel.
    """
    from studylib._nt import nt

    if implementation not in NTK_IMPLEMENTATIONS:
        raise ValueError(f"implementation: unknown value {implementation!r}; accepted: 1, 2")
    return nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=implementation)


def jacobian_ntk(apply_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray, params: Any) -> jnp.ndarray:
    """Reference NTK J(x1) J(x2)^T from full Jacobians (``jax.jacrev``); small nets only."""
    def flat_jac(x):
        jac = jax.jacrev(lambda p: apply_fn(p, x)[:, 0])(params)
        return jnp.concatenate([j.reshape(x.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)], axis=1)

    return flat_jac(x1) @ flat_jac(x2).T


def analytic(kernel_fn: Callable, x1: jnp.ndarray, x2: jnp.ndarray | None, get: str = "ntk") -> jnp.ndarray:
    """Infinite-width kernel ``get`` ('ntk' or 'nngp') of shape (N1, N2)."""
    return kernel_fn(x1, x2, get)


def critical_learning_rate(k_train_train: jnp.ndarray) -> jnp.ndarray:
    """2 N / lambda_max: the largest stable rate of GD on L = 1/2 mean((f - y)^2) with a
    constant kernel (discrete GD multiplies mode i by 1 - lr lambda_i / N each step).
    Same as ``nt.predict.max_learning_rate`` for scalar outputs. Batched over leading axes."""
    n = k_train_train.shape[-1]
    return 2.0 * n / jnp.linalg.eigvalsh(k_train_train)[..., -1]
