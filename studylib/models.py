"""Networks defined once with ``neural_tangents.stax``.

One stax definition gives the finite network (``init_fn``, ``apply_fn``) and
its analytic infinite-width kernels (``kernel_fn``). Architectures live in a
registry by name so that studies can select them with a string.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from studylib.config import ConfigError, integer, number, one_of, validate
from studylib.flags import key_value, option

PARAMETERIZATIONS = ("ntk", "standard")
ACTIVATIONS = ("relu", "erf")
#: Architectures the hand-written FC trainer (:mod:`studylib.sgd`) handles; erf_fc is fc with Erf.
FAST_ARCHS = ("fc", "erf_fc")

# NT warns at every FanInSum that it cannot verify the branches are independent; in res_fc
# one branch ends in a zero-mean Dense layer, which makes them uncorrelated as it requires.
warnings.filterwarnings("ignore", message="`FanIn` layers assume independent inputs", category=UserWarning)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A network family; the hidden width is swept by the studies and so is not part of it.

    ``arch`` names an entry of :data:`studylib.models.ARCHITECTURES` or a user builder
    ``"package.module:function"`` (see :func:`studylib.models.build`); ``options`` holds
    extra ``key=value`` settings for it (``--arch-option``).
    ``parameterization``: 'ntk' (weights N(0,1), scaled by W_std/sqrt(fan_in) in
    the forward pass; the analytic kernel is width independent) or 'standard'
    (weights N(0, W_std^2/fan_in); the NTK grows with width). ``b_std`` = 0 gives
    zero biases (trainable under 'standard', frozen at zero under 'ntk', where
    the bias enters as b_std * b).
    """

    arch: str = option("fc", "architecture: fc, erf_fc, res_fc or package.module:function", flags=("--arch",))
    depth: int = option(5, "number of hidden layers", check=integer())
    activation: str = option("relu", "relu or erf", check=one_of(ACTIVATIONS))
    W_std: float = option(math.sqrt(2.0), "weight scale sigma_w", flags=("--W-std",), check=number())
    b_std: float = option(0.1, "bias scale sigma_b (0: no biases)", flags=("--b-std",),
                         check=number(allow_zero=True))
    parameterization: str = option("ntk", "ntk or standard", check=one_of(PARAMETERIZATIONS))
    options: dict = option(default_factory=dict, help="extra setting for the architecture builder (repeatable), "
                           "e.g. blocks=3", flags=("--arch-option",), parse=key_value)

    def __post_init__(self):
        check_arch(self.arch)
        validate(self, "model.")
        if not isinstance(self.options, dict) or not all(isinstance(k, str) for k in self.options):
            raise ConfigError(f"model.options: expected a table of key = value, got {self.options!r}")

    def __hash__(self):
        return hash((self.arch, self.depth, self.activation, self.W_std, self.b_std, self.parameterization,
                     tuple(sorted((k, repr(v)) for k, v in self.options.items()))))



class Network(NamedTuple):
    """``init_fn(key, input_shape) -> (output_shape, params)``; ``apply_fn(params, x) -> f``
    of shape (batch, out_dim); ``kernel_fn(x1, x2, get)`` -> analytic kernels of
    shape (batch1, batch2) for scalar outputs."""

    init_fn: Callable[..., Any]
    apply_fn: Callable[..., Any]
    kernel_fn: Callable[..., Any]


def _activation(name: str):
    from studylib.nt import stax

    return {"relu": stax.Relu, "erf": stax.Erf}[name]()


def fully_connected(
    width: int,
    *,
    depth: int = ModelConfig.depth,
    activation: str = ModelConfig.activation,
    W_std: float = ModelConfig.W_std,
    b_std: float = ModelConfig.b_std,
    parameterization: str = ModelConfig.parameterization,
    out_dim: int = 1,
) -> Network:
    """``depth`` hidden Dense(width) + activation layers and a linear Dense(out_dim) readout.

    ``b_std=0`` means zero biases (see :class:`studylib.config.ModelConfig`).
    """
    from studylib.nt import stax

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
    activation: str = ModelConfig.activation,
    W_std: float = ModelConfig.W_std,
    b_std: float = ModelConfig.b_std,
    parameterization: str = ModelConfig.parameterization,
    out_dim: int = 1,
) -> Network:
    """Dense(width) embedding, ``blocks`` residual blocks x + Dense(act(Dense(act(x)))) built from
    ``stax.FanOut(2)`` / ``stax.FanInSum()``, then act and a Dense(out_dim) readout.

    Each residual sum adds the variances of its branches, so the kernel grows ~2x per block;
    the learning rate chosen from the analytic kernel absorbs that.
    """
    from studylib.nt import stax

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
            raise ConfigError(f"model.arch: {cfg.arch!r} returned {type(out).__name__}; expected {_USER_HELP}")
    return Network(*out)


def dense_layer_indices(params: Any) -> list[int]:
    """Indices of the top-level layers of a ``stax.serial`` params list that hold (W, b)
    (nested blocks, e.g. residual ones, are not counted)."""
    return [i for i, p in enumerate(params) if isinstance(p, tuple | list) and len(p) == 2
            and all(hasattr(a, "ndim") for a in p) and p[0].ndim >= 2]


def count_params(net: Network, input_shape: tuple[int, ...]) -> int:
    """Number of trainable parameters of ``net`` for inputs of ``input_shape`` (no arrays are made)."""
    import jax
    import numpy as np

    shapes = jax.eval_shape(lambda k: net.init_fn(k, input_shape)[1], jax.random.PRNGKey(0))
    return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
