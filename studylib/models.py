"""Networks defined once with ``neural_tangents.stax``.

One stax definition gives the finite network (``init_fn``, ``apply_fn``) and
its analytic infinite-width kernels (``kernel_fn``). Architectures live in a
registry by name so that studies can select them with a string; each declares the input layout
it takes (:func:`input_layout`: 'flat' (N, features) for dense nets, 'image' (N, H, W, C) for
conv nets). The weight-carrying layers of any stax net, nested blocks included, are found by
:func:`weight_paths` (per-layer measurements, Lee et al. 2019 Fig. 1).
"""

from __future__ import annotations

import dataclasses
import inspect
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
#: Readouts of the conv net (``--arch-option readout=...``): Flatten, or global average pooling.
CNN_READOUTS = ("flatten", "gap")
#: Input layout of the registered architectures (user builders take the data as stored: 'asis').
LAYOUTS = {"fc": "flat", "erf_fc": "flat", "res_fc": "flat", "cnn": "image"}

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

    arch: str = option("fc", "architecture: fc, erf_fc, res_fc, cnn or package.module:function", flags=("--arch",))
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
        if self.arch == "cnn" and self.options.get("readout", CNN_READOUTS[0]) not in CNN_READOUTS:
            raise ConfigError(f"model.options.readout: unknown value {self.options['readout']!r}; accepted: "
                              f"{', '.join(CNN_READOUTS)}")

    def __hash__(self):
        return hash((self.arch, self.depth, self.activation, self.W_std, self.b_std, self.parameterization,
                     tuple(sorted((k, repr(v)) for k, v in self.options.items()))))



class Network(NamedTuple):
    """``init_fn(key, input_shape) -> (output_shape, params)``; ``apply_fn(params, x) -> f``
    of shape (batch, out_dim); ``kernel_fn(x1, x2, get)`` -> analytic kernels of shape
    (batch1, batch2): in the infinite-width limit the out_dim outputs are independent with the
    same kernel (NT's convention; the full kernel is kernel ⊗ I_out_dim)."""

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


def convolutional(
    width: int,
    *,
    depth: int = ModelConfig.depth,
    activation: str = ModelConfig.activation,
    W_std: float = ModelConfig.W_std,
    b_std: float = ModelConfig.b_std,
    parameterization: str = ModelConfig.parameterization,
    readout: str = CNN_READOUTS[0],
    out_dim: int = 1,
) -> Network:
    """``depth`` x [Conv(width, 3x3, SAME) + activation] on NHWC images, then ``readout`` ('flatten':
    stax.Flatten; 'gap': global average pooling over H, W) and a Dense(out_dim) readout
    (Lee et al. 2020 compare both: CNN-VEC, their 'flatten' case, and CNN-GAP; Arora et al. 2019's
    CNTK-GAP is the latter). Biases as in :func:`fully_connected` (``b_std=0``: zero biases).

    'flatten' is the default: NT's analytic kernel then needs only each pixel's variance
    (O(N^2 H W) memory per layer), while 'gap' needs every pixel pair's covariance
    (O(N^2 (H W)^2): 64x more on 8x8 digits, ~2 GB in float64 for N = 256).
    """
    from studylib.nt import stax

    if readout not in CNN_READOUTS:
        raise ConfigError(f"model.options.readout: unknown value {readout!r}; accepted: {', '.join(CNN_READOUTS)}")
    layers = []
    for _ in range(depth):
        layers += [_same_dtype(stax.Conv(width, (3, 3), padding="SAME", W_std=W_std, b_std=b_std,
                                         parameterization=parameterization)), _activation(activation)]
    layers.append(stax.Flatten() if readout == "flatten" else stax.GlobalAvgPool())
    layers.append(stax.Dense(out_dim, W_std=W_std, b_std=b_std, parameterization=parameterization))
    return Network(*stax.serial(*layers))


def _same_dtype(layer):
    """A stax layer whose output keeps its input's dtype. NT 0.6.5's Conv scales by a NumPy float64
    (W_std / sqrt(fan_in)), so with 64-bit mode on a float32 input comes out float64 and the next
    Conv fails (float64 inputs, float32 kernel); the cast changes no value of a float64 run and
    leaves the layer's kernel_fn (and its NT attributes) as they are."""
    init_fn, apply_fn, kernel_fn = layer

    def apply(params, inputs, **kwargs):
        return apply_fn(params, inputs, **kwargs).astype(inputs.dtype)

    return init_fn, apply, kernel_fn


def _fc_from_config(width: int, cfg: ModelConfig, *, out_dim: int = 1) -> Network:
    return fully_connected(
        width,
        depth=cfg.depth,
        activation=cfg.activation,
        W_std=cfg.W_std,
        b_std=cfg.b_std,
        parameterization=cfg.parameterization,
        out_dim=out_dim,
    )


def _erf_fc_from_config(width: int, cfg: ModelConfig, *, out_dim: int = 1) -> Network:
    return fully_connected(width, depth=cfg.depth, activation="erf", W_std=cfg.W_std, b_std=cfg.b_std,
                           parameterization=cfg.parameterization, out_dim=out_dim)


def _res_fc_from_config(width: int, cfg: ModelConfig, *, out_dim: int = 1) -> Network:
    blocks = int(cfg.options.get("blocks", max(1, (cfg.depth - 1) // 2)))
    return residual_fully_connected(width, blocks=blocks, activation=cfg.activation, W_std=cfg.W_std,
                                    b_std=cfg.b_std, parameterization=cfg.parameterization, out_dim=out_dim)


def _cnn_from_config(width: int, cfg: ModelConfig, *, out_dim: int = 1) -> Network:
    return convolutional(width, depth=cfg.depth, activation=cfg.activation, W_std=cfg.W_std, b_std=cfg.b_std,
                         parameterization=cfg.parameterization, readout=cfg.options.get("readout", CNN_READOUTS[0]),
                         out_dim=out_dim)


#: name -> builder(width, ModelConfig, *, out_dim) -> Network. A builder may read ``cfg.options``.
ARCHITECTURES: dict[str, Callable[..., Network]] = {
    "fc": _fc_from_config,  # depth x (Dense + activation), Dense readout; ReLU by default
    "erf_fc": _erf_fc_from_config,  # the same with Erf (activation option ignored)
    "res_fc": _res_fc_from_config,  # residual blocks; option blocks (default (depth - 1) // 2)
    "cnn": _cnn_from_config,  # depth x (Conv 3x3 SAME + activation), readout=flatten|gap, Dense; images NHWC
}

_USER_HELP = ("an importable 'package.module:function' taking (width: int, cfg: ModelConfig[, out_dim: int]) and "
              "returning (init_fn, apply_fn, kernel_fn)")


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


def input_layout(cfg: ModelConfig) -> str:
    """The input layout architecture ``cfg.arch`` takes: 'image' (N, H, W, C) for cnn, 'flat'
    (N, features) for fc, erf_fc, res_fc, 'asis' (the data as stored) for user builders."""
    return LAYOUTS.get(cfg.arch, "asis")


def _takes_out_dim(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "out_dim" or p.kind is p.VAR_KEYWORD for p in params)


def build(cfg: ModelConfig, width: int, *, out_dim: int = 1, input_shape: tuple[int, ...] | None = None) -> Network:
    """The network of family ``cfg`` at hidden width ``width`` with ``out_dim`` outputs.

    A user builder gets ``out_dim=`` when its signature has it (or ``**kwargs``); one without it
    is accepted only for ``out_dim`` = 1. With ``input_shape`` (a batch of inputs, e.g. (N, 8, 8, 1))
    the output shape is checked with ``jax.eval_shape`` (nothing is computed) to be (N, out_dim).
    Every problem is one ConfigError line naming model.arch.
    """
    user = ":" in cfg.arch
    builder = _load_user_builder(cfg.arch) if user else ARCHITECTURES[cfg.arch]
    if not user or _takes_out_dim(builder):
        out = builder(width, cfg, out_dim=out_dim)
    elif out_dim != 1:
        raise ConfigError(f"model.arch: {cfg.arch!r} takes no out_dim argument but the data have {out_dim} outputs "
                          "per example; add a parameter out_dim=1 and end the network with stax.Dense(out_dim)")
    else:
        out = builder(width, cfg)
    if not (isinstance(out, tuple) and len(out) == 3 and all(callable(f) for f in out)):
        raise ConfigError(f"model.arch: {cfg.arch!r} returned {type(out).__name__}; expected {_USER_HELP}")
    net = Network(*out)
    if input_shape is not None:
        check_output(net, tuple(input_shape), out_dim, cfg.arch)
    return net


def check_output(net: Network, input_shape: tuple[int, ...], out_dim: int, arch: str = "") -> None:
    """ConfigError unless ``net`` maps inputs of ``input_shape`` (N, ...) to outputs (N, out_dim);
    shapes only (``jax.eval_shape``), so it costs no computation."""
    import jax
    import jax.numpy as jnp

    try:
        params = jax.eval_shape(lambda k: net.init_fn(k, input_shape)[1], jax.random.PRNGKey(0))
        out = jax.eval_shape(net.apply_fn, params, jax.ShapeDtypeStruct(input_shape, jnp.result_type(float)))
    except Exception as e:  # a user's network that does not fit the data: one line, not a traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"model.arch: {arch!r} fails on inputs of shape {input_shape}: {first}") from None
    shape = getattr(out, "shape", None)
    if shape != (input_shape[0], out_dim):
        raise ConfigError(f"model.arch: {arch!r} gives outputs of shape {shape} on inputs {input_shape}; expected "
                          f"({input_shape[0]}, {out_dim}) (out_dim = the data's {out_dim} target(s) per example)")


def dense_layer_indices(params: Any) -> list[int]:
    """Indices of the top-level layers of a ``stax.serial`` params list that hold (W, b)
    (nested blocks, e.g. residual ones, are not counted)."""
    return [i for i, p in enumerate(params) if isinstance(p, tuple | list) and len(p) == 2
            and all(hasattr(a, "ndim") for a in p) and p[0].ndim >= 2]


def weight_paths(params: Any) -> list[tuple]:
    """``jax.tree_util`` key paths of every weight array of a stax network's ``params`` (one network,
    no batch axis; arrays or ``jax.eval_shape`` structs): the leaves with ndim >= 2 -- Dense W (in, out)
    and Conv kernels (H, W, in, out) -- less NT's biases (shape (1, ..., 1, out), second of a (W, b)
    pair), in the order ``tree_flatten`` visits them (input to output
    for ``stax.serial``), nested blocks (FanOut/parallel/FanInSum) included, with or without biases.

    Raises ConfigError (one line) when the network has none (per-layer measurements would be empty).
    """
    import jax

    paths = [path for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
             if getattr(leaf, "ndim", 0) >= 2 and not _is_bias(params, path, leaf)]
    if not paths:
        raise ConfigError("model.arch: the network has no weight matrix or kernel (no parameter array of rank >= 2), "
                          "so per-layer weight changes are unsupported for it")
    return paths


def _is_bias(params: Any, path: tuple, leaf: Any) -> bool:
    """NT stores a Dense/Conv layer as (W, b) with b of shape (1, ..., 1, out): a leaf is that bias when
    it is the second of a pair whose first entry has rank >= 2 and its shape is 1 but in the last axis
    (a first-layer W on 1-D inputs, (1, width), sits first in its pair and stays a weight)."""
    if not path or not hasattr(path[-1], "idx") or path[-1].idx != 1:
        return False
    parent = _leaf_at(params, path[:-1])
    first = parent[0] if isinstance(parent, tuple | list) and len(parent) == 2 else None
    return getattr(first, "ndim", 0) >= 2 and math.prod(leaf.shape[:-1]) == 1


def _leaf_at(tree: Any, path: tuple) -> Any:
    for key in path:
        if hasattr(key, "idx"):
            tree = tree[key.idx]
        elif hasattr(key, "key"):
            tree = tree[key.key]
        else:
            tree = getattr(tree, key.name)
    return tree


def layer_sq_norms(params: Any, paths: list[tuple], *, batch_dims: int = 0):
    """Sum of squares of each weight array at ``paths`` (from :func:`weight_paths`): shape (L,), or
    (*batch, L) when every leaf carries ``batch_dims`` leading batch axes (e.g. seeds under vmap).
    Works under jit (paths are static)."""
    import jax.numpy as jnp

    sq = [jnp.sum(jnp.square(w), axis=tuple(range(batch_dims, w.ndim))) for w in weights_at(params, paths)]
    return jnp.stack(sq, axis=-1)


def weights_at(params: Any, paths: list[tuple]) -> list[Any]:
    """The arrays at ``paths`` (from :func:`weight_paths`) of ``params`` (any leading batch axes kept)."""
    return [_leaf_at(params, p) for p in paths]


def weight_labels(paths: list[tuple]) -> list[str]:
    """Readable names of weight paths, e.g. '[3][0]' (``jax.tree_util.keystr``)."""
    import jax

    return [jax.tree_util.keystr(p) for p in paths]


def count_params(net: Network, input_shape: tuple[int, ...]) -> int:
    """Number of trainable parameters of ``net`` for inputs of ``input_shape`` (no arrays are made)."""
    import jax
    import numpy as np

    shapes = jax.eval_shape(lambda k: net.init_fn(k, input_shape)[1], jax.random.PRNGKey(0))
    return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
