"""Centred networks: train and measure g(theta, x) = f(theta, x) - f(theta_0, x) instead of f.

Why (Lee et al. 2020, "Finite Versus Infinite Neural Networks", arXiv 2007.15801: centring and ensembling;
Chizat, Oyallon & Bach 2019, arXiv 1812.07956: the lazy model h(theta) = f(theta) - f(theta_0)):
a network's random output at initialisation f_0 = f(theta_0, .) is a draw of the NNGP prior; every
predictor that starts from it (the network, its linearization, the closed forms with f_0) carries
the part of f_0 that training has not removed -- on the test inputs all of it outside the span of
the training kernel. On digits its spread (1.29 per output) is four times the targets' (0.30) and caps
every predictor near 0.58 test accuracy (SCIENCE.md section 9). Centring removes it exactly: the
centred network starts at g(theta_0, .) = 0, so its kernel predictions are the closed forms with
f_0 = 0 (NT's ``gradient_descent_mse`` with zero initial outputs: the mean of the infinite-width
ensemble, Lee et al. 2019 eq. 14).

The facts this module is built on (tests/test_centring.py checks each, float64):

* grad_theta g(theta, x) = grad_theta f(theta, x): g has the network's Jacobian, empirical NTK and
  critical learning rate; its linearization is J_0 (theta - theta_0) and its quadratic model
  J_0 d + 1/2 d^T H_0 d (the uncentred ones minus f_0).
* GD on 1/2 mean((g(theta, X) - Y)^2) is GD on 1/2 mean((f(theta, X) - (Y + f_0(X)))^2): the same
  gradient at every theta, so the same trajectory theta_t. Any trainer of the uncentred network
  trains the centred one when given the per-seed targets Y + f_0(X) (:func:`shifted_targets`);
  its outputs are then reported minus f_0 (:func:`centre_records`).
* Trainers that take a model function (``studylib.training``: ``model_fn(params, aux, x)`` with
  ``aux`` = theta_0) train g itself: :func:`centred_model`.

Which runs are centred: ``centre = 'auto'`` centres class targets (centred one-hot; digits, a file
with class labels) and leaves regression targets (the seed's 1-D toy, diabetes) uncentred, so those
runs keep their numbers; 'on' / 'off' force it (:func:`resolve`). No JAX at import (configs import
this module for ``--help``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # NumPy is imported inside the functions: configs import this module for --help
    import numpy as np

#: Values of a config's ``centre`` field.
CENTRE_MODES = ("auto", "on", "off")
#: The help text of every wing's ``centre`` field (one flag, one meaning: ``--centre``).
CENTRE_HELP = ("train and measure f(theta) - f(theta_0) (Lee et al. 2020): auto (on for class targets and mup, off for "
               "regression and the 1-D toy), on or off")


def resolve(mode: str, targets: str, *, rich: bool = False) -> bool:
    """Whether a run is centred: ``mode`` 'on' / 'off', or 'auto' = on for class targets
    (``targets == 'onehot'``, :class:`studylib.data.DataConfig`'s resolved ``targets``) and for the γ-model of
    :mod:`studylib.mup` (``rich``: μP, or a richness γ₀ != 1), whose small-γ end needs f(θ₀) taken out."""
    if mode not in CENTRE_MODES:
        raise ValueError(f"centre: unknown value {mode!r}; accepted: {', '.join(CENTRE_MODES)}")
    return mode == "on" or (mode == "auto" and (targets == "onehot" or rich))


def shifted_targets(y: np.ndarray, f0_train: np.ndarray) -> np.ndarray:
    """Per-seed targets Y + f_0(X) (S, N, k) for y (N, k) and f0_train (S, N, k): GD of the uncentred
    network on these is GD of the centred one on y (same gradients, same theta_t)."""
    import numpy as np

    return np.asarray(y)[None] + np.asarray(f0_train)


def initial_outputs(f0: np.ndarray, centred: bool) -> np.ndarray:
    """The outputs a closed form or linearization starts from: f_0 itself, or zeros when centred
    (g(theta_0) = 0). Same shape as ``f0``."""
    import numpy as np

    return np.zeros_like(f0) if centred else f0


def centre_records(f: np.ndarray) -> np.ndarray:
    """Outputs recorded at checkpoints, (S, T, ...) with checkpoint 0 at step 0, minus each seed's own
    step-0 value: f(theta_t) - f(theta_0) computed by the same function, so exactly 0 at step 0."""
    import numpy as np

    f = np.asarray(f)
    return f - f[:, :1]


def centred_model(model_fn: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """A ``studylib.training`` model ``model_fn(params, aux, x)`` with ``aux`` = theta_0, centred:
    ``model_fn(params, theta_0, x) - model_fn(theta_0, theta_0, x)``. For the network that is
    f(theta, x) - f(theta_0, x), for ``nt.linearize`` J_0 (theta - theta_0); the subtracted term does
    not depend on ``params``, so gradients and kernels are the uncentred model's."""
    import jax

    def model(params, params0, x):
        return model_fn(params, params0, x) - jax.lax.stop_gradient(model_fn(params0, params0, x))

    return model


def centred_apply(apply_fn: Callable[[Any, Any], Any], params0: Any) -> Callable[[Any, Any], Any]:
    """``apply_fn`` centred at ``params0``: (params, x) -> f(params, x) - f(params0, x) (one seed's
    parameters; for ``nt.linearize``, NT's empirical kernels and any stax consumer)."""
    import jax

    def apply(params, x):
        return apply_fn(params, x) - jax.lax.stop_gradient(apply_fn(params0, x))

    return apply
