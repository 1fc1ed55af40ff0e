"""ReLU gate flips: a non-perturbative diagnostic of how far a network leaves its linearization.

A ReLU unit's gate at input x is open when its pre-activation z(x) > 0 (stax.Relu and
:mod:`studylib.sgd` both pass z > 0 and block z < 0). Between theta_0 and theta_t the fraction of
(unit, training input) pairs whose gate changed, per hidden layer, is

    flips_l(t) = mean_{units u of layer l, i <= N} [ (z_l,u(x_i; theta_t) > 0) != (z_l,u(x_i; theta_0) > 0) ].

The linearized model and every Taylor expansion around theta_0 keep the gates of theta_0 (the
Hessian of a ReLU net is that of its gated linear pieces), so flips measure what perturbation
theory cannot see (Aitken & Gur-Ari 2020, arXiv 2006.06687, treat ReLU apart for this reason).
Evaluated after the first few steps (:func:`early_checkpoint`: <= 5% of the run) the fraction is an
early predictor of the final gap. For the FC nets of :mod:`studylib.sgd` (``sgd.MLP`` with
``sgd.dense_params`` of a stax ``fully_connected`` net).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

#: The part of the run read by the early predictor.
EARLY_FRACTION = 0.05


def preactivations(net, dense, x) -> list[jnp.ndarray]:
    """Hidden pre-activations z_l(x), one (N, width_l) array per hidden layer (input layer first)."""
    from studylib import sgd

    return sgd.forward(net, dense, x)[1][1]


def gate_flips(net, dense0, dense_t, x) -> jnp.ndarray:
    """(L,) fraction of (unit, input) gates of each hidden layer that differ between ``dense0`` and
    ``dense_t`` on inputs ``x`` (N, d). Jittable and vmappable over seeds."""
    z0 = preactivations(net, dense0, x)
    zt = preactivations(net, dense_t, x)
    return jnp.stack([jnp.mean(((a > 0) != (b > 0)).astype(x.dtype)) for a, b in zip(z0, zt, strict=True)])


def early_checkpoint(steps, fraction: float = EARLY_FRACTION) -> int:
    """Index of the last checkpoint t with 0 < t <= fraction x the last step (the first checkpoint
    after 0 when none is that early). ``steps``: increasing checkpoint steps starting at 0."""
    steps = np.asarray(steps)
    ok = np.flatnonzero((steps > 0) & (steps <= fraction * steps[-1]))
    return int(ok[-1]) if ok.size else 1
