"""Networks defined once with ``neural_tangents.stax``.

One stax definition gives the finite network (``init_fn``, ``apply_fn``) and
its analytic infinite-width kernels (``kernel_fn``). Architectures live in a
registry by name so that studies can select them with a string.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from studylib.config import ModelConfig

# NT warns at every FanInSum that it cannot verify the branches are independent; in res_fc
# one branch ends in a zero-mean Dense layer, which makes them uncorrelated as it requires.
warnings.filterwarnings("ignore", message="`FanIn` layers assume independent inputs", category=UserWarning)


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


def residual_fully_connected(
    width: int,
    *,
    blocks: int = 2,
    activation: str = "relu",
    W_std: float = 2.0**0.5,
    b_std: float = 0.1,
    parameterization: str = "ntk",
    out_dim: int = 1,
) -> Network:
    """Dense(width) embedding, ``blocks`` residual blocks x + Dense(act(Dense(act(x)))) built from
    ``stax.FanOut(2)`` / ``stax.FanInSum()``, then act and a Dense(out_dim) readout.

    Each residual sum adds the variances of its branches, so the kernel grows ~2x per block;
    the learning rate chosen from the analytic kernel absorbs that.
    """
    from studylib._nt import stax

    def dense(n):
        return stax.Dense(n, W_std=W_std, b_std=b_std, parameterization=parameterization)

    branch = stax.serial(_activation(activation), dense(width), _activation(activation), dense(width))
    block = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch), stax.FanInSum())
    return Network(*stax.serial(dense(width), *[block] * blocks, _activation(activation), dense(out_dim)))


def _fc_from_config(width: int, cfg: ModelConfig) -> Network:
    return fully_connected(
        width,
        depth=cfg.depth,
        activation=cfg.activation,
        W_std=cfg.W_std,
        b_std=cfg.b_std,
        parameterization=cfg.parameterization,
    )


def _erf_fc_from_config(width: int, cfg: ModelConfig) -> Network:
    return fully_connected(width, depth=cfg.depth, activation="erf", W_std=cfg.W_std, b_std=cfg.b_std,
                           parameterization=cfg.parameterization)


def _res_fc_from_config(width: int, cfg: ModelConfig) -> Network:
    blocks = int(cfg.options.get("blocks", max(1, (cfg.depth - 1) // 2)))
    return residual_fully_connected(width, blocks=blocks, activation=cfg.activation, W_std=cfg.W_std,
                                    b_std=cfg.b_std, parameterization=cfg.parameterization)


#: name -> builder(width, ModelConfig) -> Network. A builder may read ``cfg.options``.
ARCHITECTURES: dict[str, Callable[[int, ModelConfig], Network]] = {
    "fc": _fc_from_config,  # depth x (Dense + activation), Dense readout; ReLU by default
    "erf_fc": _erf_fc_from_config,  # the same with Erf (activation option ignored)
    "res_fc": _res_fc_from_config,  # residual blocks; option blocks (default (depth - 1) // 2)
}

_USER_HELP = ("an importable 'package.module:function' taking (width: int, cfg: ModelConfig) and returning "
              "(init_fn, apply_fn, kernel_fn)")


def _load_user_builder(spec: str) -> Callable:
    import importlib

    from studylib.config import ConfigError

    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"model.arch: cannot import module {module_name!r} of {spec!r} ({e}); expected "
                          f"{_USER_HELP}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ConfigError(f"model.arch: {module_name!r} has no function {func_name!r}; expected {_USER_HELP}")
    return fn


def check_arch(arch: str) -> None:
    """Raise ConfigError unless ``arch`` is a registered name or an importable user builder."""
    from studylib.config import ConfigError

    if not isinstance(arch, str):
        raise ConfigError(f"model.arch: expected a name, got {arch!r}")
    if ":" in arch:
        _load_user_builder(arch)
    elif arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch: unknown value {arch!r}; accepted: {', '.join(ARCHITECTURES)}, "
                          f"or {_USER_HELP}")


def build(cfg: ModelConfig, width: int) -> Network:
    """The network of family ``cfg`` at hidden width ``width``."""
    builder = _load_user_builder(cfg.arch) if ":" in cfg.arch else ARCHITECTURES[cfg.arch]
    out = builder(width, cfg)
    if not (isinstance(out, tuple) and len(out) == 3 and all(callable(f) for f in out)):
        from studylib.config import ConfigError

        raise ConfigError(f"model.arch: {cfg.arch!r} returned {type(out).__name__}; expected {_USER_HELP}")
    return Network(*out)


def dense_layer_indices(params: Any) -> list[int]:
    """Indices of the top-level layers of a ``stax.serial`` params list that hold (W, b)
    (nested blocks, e.g. residual ones, are not counted)."""
    return [i for i, p in enumerate(params) if isinstance(p, tuple | list) and len(p) == 2
            and all(hasattr(a, "ndim") for a in p) and p[0].ndim >= 2]
