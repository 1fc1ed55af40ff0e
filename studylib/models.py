"""Networks defined once with ``neural_tangents.stax``.

One stax definition gives the finite network (``init_fn``, ``apply_fn``) and
its analytic infinite-width kernels (``kernel_fn``). Architectures live in a
registry by name so that studies can select them with a string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from studylib.config import ModelConfig


class Network(NamedTuple):
    """``init_fn(key, input_shape) -> (output_shape, params)``; ``apply_fn(params, x) -> f``
    of shape (batch, out_dim); ``kernel_fn(x1, x2, get)`` -> analytic kernels of
    shape (batch1, batch2) for scalar outputs."""

    init_fn: Callable[..., Any]
    apply_fn: Callable[..., Any]
    kernel_fn: Callable[..., Any]


def _activation(name: str):
    from studylib._nt import stax

    return {"relu": stax.Relu, "erf": stax.Erf}[name]()


def fully_connected(
    width: int,
    *,
    depth: int = 5,
    activation: str = "relu",
    W_std: float = 2.0**0.5,
    b_std: float = 0.1,
    parameterization: str = "ntk",
    out_dim: int = 1,
) -> Network:
    """``depth`` hidden Dense(width) + activation layers and a linear Dense(out_dim) readout.

    ``b_std=0`` means zero biases (see :class:`studylib.config.ModelConfig`).
    """
    from studylib._nt import stax

    layers = []
    for _ in range(depth):
        layers += [
            stax.Dense(width, W_std=W_std, b_std=b_std, parameterization=parameterization),
            _activation(activation),
        ]
    layers.append(stax.Dense(out_dim, W_std=W_std, b_std=b_std, parameterization=parameterization))
    return Network(*stax.serial(*layers))


def _fc_from_config(width: int, cfg: ModelConfig) -> Network:
    return fully_connected(
        width,
        depth=cfg.depth,
        activation=cfg.activation,
        W_std=cfg.W_std,
        b_std=cfg.b_std,
        parameterization=cfg.parameterization,
    )


#: name -> builder(width, ModelConfig) -> Network
ARCHITECTURES: dict[str, Callable[[int, ModelConfig], Network]] = {
    "fc": _fc_from_config,
}


def build(cfg: ModelConfig, width: int) -> Network:
    """The network of family ``cfg`` at hidden width ``width``."""
    return ARCHITECTURES[cfg.arch](width, cfg)


def dense_layer_indices(params: Any) -> list[int]:
    """Indices of the layers of a ``stax.serial`` params list that hold (W, b)."""
    return [i for i, p in enumerate(params) if isinstance(p, tuple | list) and len(p) == 2]
