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
import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from studylib.config import ConfigError, integer, number, one_of, validate
from studylib.flags import key_value, option
from studylib.mup import BASE_WIDTH

PARAMETERIZATIONS = ("ntk", "standard", "mup")
#: Parameterizations built by :mod:`studylib.mup` (the fc nets only); 'ntk' too when ``gamma0`` != 1.
MUP_ARCHS = ("fc", "erf_fc")
#: ModelConfig fields added after cells were stored, left out of cell keys and config records while they do
#: not change the network (:func:`key_dict`), so that runs without them keep their keys.
RICHNESS_DEFAULTS = {"gamma0": 1.0, "base_width": BASE_WIDTH}
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
    parameterization: str = option("ntk", "ntk, standard or mup (Yang & Hu 2021's maximal-update "
                                   "parameterization, fc nets only: docs/mup.md)", check=one_of(PARAMETERIZATIONS))
    gamma0: float = option(1.0, "richness gamma_0 (fc nets, ntk or mup; Bordelon & Pehlevan 2022): the centred net's "
                           "output / gamma and learning rate x gamma^2, gamma = gamma_0 sqrt(width/base_width) under "
                           "mup, gamma_0 under ntk; -> 0: lazy", check=number())
    base_width: int = option(BASE_WIDTH, "base width n_0 where mup equals ntk", check=integer())
    options: dict = option(default_factory=dict, help="extra setting for the architecture builder (repeatable), "
                           "e.g. blocks=3", flags=("--arch-option",), parse=key_value)

    def __post_init__(self):
        check_arch(self.arch)
        validate(self, "model.")
        if not isinstance(self.options, dict) or not all(isinstance(k, str) for k in self.options):
            raise ConfigError(f"model.options: expected a table of key = value, got {self.options!r}")
        if self.rich and self.arch not in MUP_ARCHS:
            field = "parameterization" if self.parameterization == "mup" else "gamma0"
            raise ConfigError(f"model.{field}: {field} {getattr(self, field)!r} is built for the fully connected nets "
                              f"(studylib.mup); got arch {self.arch!r}; accepted: arch {' or '.join(MUP_ARCHS)}, "
                              f"or parameterization ntk/standard with gamma0 = 1")
        if self.parameterization == "standard" and self.gamma0 != 1.0:
            raise ConfigError(f"model.gamma0: {self.gamma0!r} is defined for ntk and mup; accepted with "
                              "parameterization standard: 1")
        if self.arch == "cnn" and self.options.get("readout", CNN_READOUTS[0]) not in CNN_READOUTS:
            raise ConfigError(f"model.options.readout: unknown value {self.options['readout']!r}; accepted: "
                              f"{', '.join(CNN_READOUTS)}")

    @property
    def rich(self) -> bool:
        """Whether the net is :mod:`studylib.mup`'s γ-model (NT's 'ntk' net with its output ÷ γ, trained centred at
        the learning rate × γ²): 'mup', or 'ntk' with ``gamma0`` != 1."""
        return self.parameterization == "mup" or (self.parameterization == "ntk" and self.gamma0 != 1.0)

    def gamma(self, width: int) -> float:
        """γ at ``width`` (:func:`studylib.mup.gamma`; 1 for a net that is not :attr:`rich`)."""
        if not self.rich:
            return 1.0
        from studylib import mup

        return mup.gamma(width, parameterization=self.parameterization, gamma0=self.gamma0,
                         base_width=self.base_width)

    def __hash__(self):
        return hash((self.arch, self.depth, self.activation, self.W_std, self.b_std, self.parameterization,
                     self.gamma0, self.base_width, tuple(sorted((k, repr(v)) for k, v in self.options.items()))))



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


def activation_layer(name: str):
    """The stax layer of activation ``name`` (one of :data:`ACTIVATIONS`), as :func:`fully_connected` uses it
    (for core modules that build the same FC net with per-layer scales, e.g. :mod:`studylib.mup`)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.activation: unknown value {name!r}; accepted: {', '.join(ACTIVATIONS)}")
    return _activation(name)


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
    reference: bool = False,
) -> Network:
    """``depth`` x [Conv(width, 3x3, SAME) + activation] on NHWC images, then ``readout`` ('flatten':
    stax.Flatten; 'gap': global average pooling over H, W) and a Dense(out_dim) readout
    (Lee et al. 2020 compare both: CNN-VEC, their 'flatten' case, and CNN-GAP; Arora et al. 2019's
    CNTK-GAP is the latter). Biases as in :func:`fully_connected` (``b_std=0``: zero biases).

    ``init_fn`` and ``kernel_fn`` are stax's; ``apply_fn`` is :func:`studylib.conv.apply_fn`, the same
    function on the same params tree computed as im2col matmuls (XLA's CPU convolutions are slow for these
    shapes, and far slower under ``vmap`` over seeds: docs/performance.md, "Conv nets"); tests/test_conv.py
    checks it, its gradients and its empirical NTK against stax's. ``reference=True`` gives the plain stax
    net (stax's ``apply_fn`` too).

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
    init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    if reference:
        return Network(init_fn, apply_fn, kernel_fn)
    from studylib import conv

    fast = conv.apply_fn(conv.ConvNet(depth=depth, activation=activation, W_std=W_std, b_std=b_std,
                                      parameterization=parameterization, readout=readout, filter_shape=(3, 3)))
    return Network(init_fn, fast, kernel_fn)


def _same_dtype(layer):
    """A stax layer whose output keeps its input's dtype. NT 0.6.5's Conv scales by a NumPy float64
    (W_std / sqrt(fan_in)), so with 64-bit mode on a float32 input comes out float64 and the next
    Conv fails (float64 inputs, float32 kernel); the cast changes no value of a float64 run and
    leaves the layer's kernel_fn (and its NT attributes) as they are."""
    init_fn, apply_fn, kernel_fn = layer

    def apply(params, inputs, **kwargs):
        return apply_fn(params, inputs, **kwargs).astype(inputs.dtype)

    return init_fn, apply, kernel_fn


def key_dict(model: dict) -> dict:
    """``dataclasses.asdict`` of a ModelConfig without the :data:`RICHNESS_DEFAULTS` fields while they change
    nothing (the net is not rich: ntk/standard with gamma0 1, whatever base_width), so that the cells and
    config records of such runs keep the keys they had before those fields existed."""
    if model.get("parameterization") == "mup" or model.get("gamma0", 1.0) != 1.0:
        return model
    return {k: v for k, v in model.items() if k not in RICHNESS_DEFAULTS}


def _rich_fc(width: int, cfg: ModelConfig, activation: str, out_dim: int) -> Network:
    from studylib import mup

    return Network(*mup.fully_connected(width, depth=cfg.depth, activation=activation, W_std=cfg.W_std,
                                        b_std=cfg.b_std, out_dim=out_dim, parameterization=cfg.parameterization,
                                        gamma0=cfg.gamma0, base_width=cfg.base_width))


def _fc_from_config(width: int, cfg: ModelConfig, *, out_dim: int = 1) -> Network:
    if cfg.rich:
        return _rich_fc(width, cfg, cfg.activation, out_dim)
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
    if cfg.rich:
        return _rich_fc(width, cfg, "erf", out_dim)
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


#: arch -> (the builder function, fingerprint) of every user builder hashed in this process (a reload makes
#: a new function object).
_HASHED_BUILDERS: dict[str, tuple[Callable, str]] = {}


def builder_fingerprint(arch: str) -> str | None:
    """16 hex digits of SHA-256 over the source files a user builder ``'package.module:function'``
    may run: every ``*.py`` file in the folder of its module (the module and the siblings it can import
    from there) and, for a module inside a package, every ``*.py`` file of its top-level package
    (subfolders included); each file's path relative to its folder and its bytes are hashed, in sorted
    order. None for a registered architecture (its code is the study's own) and for a module without a
    source file. Code outside these folders (installed libraries other than jax, jaxlib, NT and NumPy,
    whose versions the cell keys hold) is not covered. One ConfigError line if the builder does not load.

    The files are read when this is called (a run calls it once, at its start), so the hash describes the
    code a fresh process runs. A long-lived process (a notebook) keeps the module it imported: when the
    same builder function was hashed before with other contents, this raises ConfigError (reload the
    module with ``importlib.reload`` or restart) rather than key cells of the old code with the new source.
    """
    if ":" not in arch:
        return None
    import hashlib
    import sys
    from pathlib import Path

    fn = _load_user_builder(arch)
    module_name = arch.partition(":")[0]
    source = getattr(sys.modules.get(module_name), "__file__", None)
    if not source:
        return None
    folder = Path(source).resolve().parent
    files = {(folder, p) for p in folder.glob("*.py")}
    if "." in module_name:
        for top in getattr(sys.modules.get(module_name.split(".")[0]), "__path__", []):
            root = Path(top).resolve()
            files |= {(root, p) for p in root.rglob("*.py")}
    digest = hashlib.sha256()
    for root, path in sorted(files, key=lambda rp: (str(rp[0]), str(rp[1]))):
        name, content = str(path.relative_to(root)).encode(), path.read_bytes()
        digest.update(len(name).to_bytes(8, "little") + name + len(content).to_bytes(8, "little") + content)
    fingerprint = digest.hexdigest()[:16]
    seen_fn, seen_fingerprint = _HASHED_BUILDERS.setdefault(arch, (fn, fingerprint))
    if seen_fn is fn and seen_fingerprint != fingerprint:
        raise ConfigError(f"model.arch: the source of {module_name!r} changed since this process imported and "
                          f"hashed it; accepted: a fresh process, or importlib.reload({module_name}) first")
    _HASHED_BUILDERS[arch] = (fn, fingerprint)
    return fingerprint


def require_fc(cfg: ModelConfig, why: str) -> None:
    """ConfigError (one line naming model.arch) unless ``cfg`` is the registered fc net; ``why``: what
    the study does that needs it (e.g. 'the controls count ReLU gates layer by layer of the fc net')."""
    if cfg.arch != "fc":
        raise ConfigError(f"model.arch: {why}; got {cfg.arch!r}; accepted: fc")


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
    if not user:
        return _checked(builder(width, cfg, out_dim=out_dim), cfg, input_shape, out_dim)
    kwargs = {"out_dim": out_dim} if _takes_out_dim(builder) else {}
    if not kwargs and out_dim != 1:
        raise ConfigError(f"model.arch: {cfg.arch!r} takes no out_dim argument but the data have {out_dim} outputs "
                          "per example; add a parameter out_dim=1 and end the network with stax.Dense(out_dim)")
    try:
        out = builder(width, cfg, **kwargs)
    except ConfigError:
        raise
    except Exception as e:  # the user's code (or not a builder at all): one line naming it, not a traceback
        call = f"{cfg.arch.partition(':')[2]}({width}, cfg{', out_dim=' + str(out_dim) if kwargs else ''})"
        raise ConfigError(f"model.arch: builder {cfg.arch!r} raised {type(e).__name__}: {_first_line(e)} (called as "
                          f"{call}); accepted: {_USER_HELP}") from None
    return _checked(out, cfg, input_shape, out_dim)


def _first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name when it has none)."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def _checked(out: Any, cfg: ModelConfig, input_shape: tuple[int, ...] | None, out_dim: int) -> Network:
    """``out`` as a :class:`Network` once it is a triple of callables (and, with ``input_shape``, maps
    that batch to (N, out_dim): :func:`check_output`); one ConfigError line otherwise."""
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


# ------------------------------------------------------------------------------------- what a user network is


def _closure(fn: Any) -> dict[str, Any]:
    """The free variables of a Python function and their values (empty for anything else)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return {}
    out = {}
    for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    return out


def _layer_label(name: str, fn: Any) -> str:
    """A leaf layer's label: its stax name; stax.Relu and stax.LeakyRelu are NT's ABRelu, told apart by the
    inner apply function's own name (NT names it e.g. 'ABReLU(0.1, 1)'; ABReLU(0, 1) is stax.Relu)."""
    inner = getattr(_closure(fn).get("apply_fn"), "__name__", "")
    if name != "ABRelu" or "(" not in inner:
        return name
    return "Relu" if inner.replace(" ", "") == "ABReLU(0,1)" else inner


def layer_names(net: Network) -> list[str] | None:
    """The stax layers of ``net`` in the order its ``apply_fn`` runs them (combinators -- serial,
    parallel -- looked through, nested blocks flattened), e.g. ['Dense', 'Sin', 'Dense']; found by
    following the closures NT's combinators keep (``stax.repeat``'s body is listed once). None when no
    stax layer is found (a network not built from NT's layers)."""
    from studylib.nt import stax

    public = {n for n in dir(stax) if n[:1].isupper()}
    seen: set[int] = set()

    def walk(fn: Any) -> list[str]:
        if id(fn) in seen or getattr(fn, "__code__", None) is None:
            return []
        seen.add(id(fn))
        name = getattr(fn, "__name__", "")
        if name in public:
            return [_layer_label(name, fn)]
        out = []
        for value in _closure(fn).values():
            for item in value if isinstance(value, tuple | list) else (value,):
                out += walk(item)
        return out

    names = walk(net.apply_fn)
    return names or None


def layer_summary(names: list[str] | None) -> str:
    """'Dense x3, Sin x2' (counts in order of first appearance), or 'layers not found'."""
    if not names:
        return "layers not found"
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(n if c == 1 else f"{n} x{c}" for n, c in counts.items())


def describe(cfg: ModelConfig, width: int, input_shape: tuple[int, ...], out_dim: int = 1) -> dict[str, Any]:
    """What the network of ``cfg`` is, for reports: a registered architecture by its config fields
    (arch, depth, activation, parameterization), a user builder by what it builds -- its name, the stax
    layers found in it (:func:`layer_names`) and its parameter count at ``width`` for inputs
    ``input_shape`` (N, ...) -- never by the config fields it may ignore. Keys: ``arch``, ``user``,
    ``layers`` (list or None), ``params``, ``width``, ``text`` (one phrase)."""
    user = ":" in cfg.arch
    net = build(cfg, width, out_dim=out_dim)
    names = layer_names(net) if user else None
    params = count_params(net, tuple(input_shape))
    if user:
        text = (f"user builder {cfg.arch} (stax: {layer_summary(names)}; {params:,} parameters at width {width})")
    else:
        text = (f"{cfg.arch} depth {cfg.depth} {'erf' if cfg.arch == 'erf_fc' else cfg.activation} "
                f"({cfg.parameterization} parameterization)")
    return {"arch": cfg.arch, "user": user, "layers": names, "params": params, "width": width, "text": text}


#: Layers whose kernels NT computes from gate statistics of a piecewise-linear function (ReLU-like):
#: every Taylor model around theta_0 keeps theta_0's gates (docs/crossover.md).
PIECEWISE_LINEAR = ("Relu", "ABRelu", "ABReLU", "LeakyRelu", "Abs", "Sign")


def is_piecewise_linear(names: list[str] | None) -> bool:
    """Whether any layer of ``names`` (:func:`layer_names`) is a ReLU-like piecewise-linear activation."""
    return any(n.split("(")[0] in PIECEWISE_LINEAR for n in names or ())


def _missing_kernels(kernel_fn: Any) -> list[str]:
    """Labels of the stax layers inside ``kernel_fn`` built without a closed-form kernel (NT keeps their
    ``kernel_fn`` as None, e.g. ``stax.Elementwise(fn)`` without ``nngp_fn``), found through closures."""
    from studylib.nt import stax

    public = {n for n in dir(stax) if n[:1].isupper()}
    seen: set[int] = set()
    found: list[str] = []

    def walk(fn: Any, layer: str) -> None:
        if id(fn) in seen or getattr(fn, "__code__", None) is None:
            return
        seen.add(id(fn))
        name = getattr(fn, "__name__", "")
        layer = name if name in public else layer
        free = _closure(fn)
        if "kernel_fn" in free and free["kernel_fn"] is None:
            found.append(layer or "a layer")
        for value in free.values():
            for item in value if isinstance(value, tuple | list) else (value,):
                walk(item, layer)

    walk(kernel_fn, "")
    return list(dict.fromkeys(found))


def check_kernel(net: Network, input_shape: tuple[int, ...], arch: str = "") -> None:
    """ConfigError (one line) unless NT's analytic kernels (``kernel_fn``, NNGP and NTK) exist for ``net``
    on inputs shaped like ``input_shape`` (N, ...): traced on two inputs with ``jax.eval_shape``, nothing
    computed. A layer without a closed form (``stax.Elementwise(fn)`` without ``nngp_fn``) raises
    NotImplementedError in NT; the line names it. Every study needs the analytic kernel: it sets the
    learning rate (2 N k / lambda_max) and gives the infinite-width closed forms and GP."""
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((2, *input_shape[1:]), jnp.result_type(float))
    try:
        jax.eval_shape(lambda a: net.kernel_fn(a, None, ("nngp", "ntk")), x)
    except NotImplementedError as e:
        layers = _missing_kernels(net.kernel_fn)
        which = (f"layer {', '.join(layers)} has no closed-form kernel" if layers else
                 f"a layer has no closed-form kernel (NT raised NotImplementedError: {_first_line(e)})")
        raise ConfigError(f"model.arch: {arch!r}: {which}; the studies need NT's analytic kernel_fn (the learning "
                          "rate 2Nk/lambda_max and the closed forms use it); accepted: layers with a closed form, "
                          "e.g. stax.Elementwise(fn, nngp_fn=...) or stax.ElementwiseNumerical(fn, deg)") from None
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"model.arch: {arch!r}: NT's analytic kernel_fn fails on inputs of shape {tuple(x.shape)}: "
                          f"{type(e).__name__}: {_first_line(e)}") from None


@functools.lru_cache(maxsize=64)
def same_network(a: ModelConfig, b: ModelConfig, width: int, input_shape: tuple[int, ...], out_dim: int = 1) -> bool:
    """Whether configs ``a`` and ``b`` build the same network at ``width``: the same parameter shapes and,
    from the same PRNG key, the same outputs on a fixed random batch of ``input_shape`` (N, ...); e.g. a
    user builder that ignores ``cfg.depth`` builds the same network at every depth. Cached per process."""
    import jax
    import numpy as np

    nets = [build(c, width, out_dim=out_dim) for c in (a, b)]
    key, x = jax.random.PRNGKey(0), jax.random.normal(jax.random.PRNGKey(1), tuple(input_shape))
    params = [n.init_fn(key, tuple(input_shape))[1] for n in nets]
    shapes = [[np.shape(p) for p in jax.tree_util.tree_leaves(q)] for q in params]
    if shapes[0] != shapes[1]:
        return False
    outs = [np.asarray(n.apply_fn(p, x)) for n, p in zip(nets, params, strict=True)]
    return outs[0].shape == outs[1].shape and bool(np.array_equal(outs[0], outs[1], equal_nan=True))


@functools.lru_cache(maxsize=32)
def check_builder(cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int, widths: tuple[int, ...]) -> None:
    """Every up-front check of a user builder, before anything is computed (one ConfigError line each):
    it builds at the sweep's first width ``widths[0]`` (:func:`build`), maps a batch of ``input_shape``
    (N, ...) to (N, out_dim) (:func:`check_output`) and has NT's analytic kernel (:func:`check_kernel`).
    A builder that ignores the width (the same parameter count at the narrowest and the widest width
    swept) gets a one-line warning on stderr: every width would train the same network. Cached per
    process (configs are rebuilt often); shapes only."""
    import sys

    net = build(cfg, widths[0], out_dim=out_dim, input_shape=input_shape)
    check_kernel(net, input_shape, cfg.arch)
    wide = max(widths)
    if wide != widths[0]:
        n0 = count_params(net, input_shape)
        n1 = count_params(build(cfg, wide, out_dim=out_dim), input_shape)
        if n0 == n1:
            print(f"warning: model.arch: {cfg.arch!r} has {n0:,} parameters at width {widths[0]} and at width {wide}: "
                  "it ignores width, so every width trains the same network (build layers with the width argument)",
                  file=sys.stderr)
