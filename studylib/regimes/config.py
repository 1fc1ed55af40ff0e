"""The regimes study's config, presets, settings and cells (no JAX here: ``--help`` imports this).

A *setting* is one point of the map without its width: ``{lr_fraction, depth, x_range,
parameterization, option}``; a *cell* (:class:`studylib.runner.Cell`) is one setting at one
width, all seeds trained together.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from studylib import centring
from studylib.config import (
    DTYPES,
    ConfigError,
    check_choice,
    check_float,
    integer,
    integers,
    number,
    one_of,
    set_frozen,
    validate,
)
from studylib.data import DataConfig, check_pair, example_shape, n_outputs
from studylib.flags import key_value, option
from studylib.models import ACTIVATIONS, MUP_ARCHS, PARAMETERIZATIONS, ModelConfig, key_dict
from studylib.runner import Cell

NAME = "regimes"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"

#: Model options (each measured against 'plain' at the base setting).
OPTIONS = ("plain", "centred", "doubled", "out_scale", "float64")
SWEEPS = ("one_at_a_time", "product")
#: Map axes: config field holding the values -> setting key.
AXES = {"lr_fractions": "lr_fraction", "depths": "depth", "x_ranges": "x_range",
        "parameterizations": "parameterization", "activations": "activation"}
#: The keys of a setting, in the order of ``summary.json``'s ``base_cell``.
SETTING_KEYS = ("lr_fraction", "depth", "x_range", "parameterization", "activation", "option")


def _check_float_list(field: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, list | tuple) or len(values) == 0:
        raise ConfigError(f"{field}: expected a non-empty list of numbers > 0, got {values!r}")
    out = tuple(check_float(f"{field}[{i}]", v) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ConfigError(f"{field}: values must be distinct, got {list(out)}")
    return out


def _check_max_widths(values: Any) -> dict[int, int]:
    if not isinstance(values, dict):
        raise ConfigError(f"max_widths: expected a table DEPTH = WIDTH, got {values!r}")
    out = {}
    for k, v in values.items():
        try:
            depth = int(k)
        except (TypeError, ValueError):
            raise ConfigError(f"max_widths: keys are depths (integers >= 1), got {k!r}") from None
        if depth < 1 or isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"max_widths: expected DEPTH = WIDTH with integers >= 1, got {k!r} = {v!r}")
        out[depth] = v
    return out


def _check_choice_list(field: str, values: Any, choices) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, list | tuple) or len(values) == 0:
        raise ConfigError(f"{field}: expected a non-empty list from {', '.join(choices)}, got {values!r}")
    out = tuple(check_choice(f"{field}[{i}]", v, choices) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ConfigError(f"{field}: values must be distinct, got {list(out)}")
    return out


#: The input-scale axis of 1-D data by default (dropped for other data, see RegimesConfig).
DEFAULT_X_RANGES = (1.0, 2.5, 5.0)
#: Largest N k (training points x outputs): every checkpoint records the (N k, N k) empirical NTK of
#: every seed (3.3 MB each in float64 at 640; 24 checkpoints x 3 seeds: 0.24 GB).
MAX_KERNEL_ROWS = 640


def is_1d(data_cfg: DataConfig) -> bool:
    """Whether the data are a 1-D grid problem (inputs (N, 1)), where the input scale x_range applies."""
    return example_shape(data_cfg) == (1,) and data_cfg.name in ("cubic", "sin")


@dataclasses.dataclass(frozen=True)
class RegimesConfig:
    """Everything that determines a regimes run.

    The base cell is ``lr_fraction`` x ``model`` x ``data`` (``data.train_range`` is
    the input scale; the test grid spans twice it). ``lr_fractions``, ``depths``,
    ``x_ranges``, ``parameterizations``, ``activations`` are the map's axes; each must contain the
    base value (``activations``: the base cell's is ``model.activation``; in the one-at-a-time sweep the
    activation axis is crossed with every other axis, so that the map holds smooth and ReLU cells of
    every kind). ``options``: model options measured at the base cell ('plain' is the
    base itself). ``gap_threshold``: the relative gap below which a width counts as
    "wide enough". ``departure_tol``/``departure_floor``: see
    :func:`studylib.modes.departure_step`.
    """

    widths: tuple[int, ...] = option((32, 64, 128, 256, 512), "comma-separated hidden widths", check=integers())
    seeds: int = option(3, "initialisations per cell", check=integer())
    steps: int = option(300, "full-batch GD steps", check=integer())
    n_checkpoints: int = option(24, "log-spaced checkpoints, step 0 and the last included", flags=("--checkpoints",),
                                check=integer(2))
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    lr_fraction: float = option(0.5, "base cell's rate as a fraction of 2N/lambda_max of the analytic NTK",
                                check=number())
    dtype: str = option("float32", "float32 or float64", check=one_of(DTYPES))
    ntk_implementation: int = option(2, "NT's empirical NTK implementation: 1 or 2")
    centre: str = option("auto", centring.CENTRE_HELP, check=one_of(centring.CENTRE_MODES))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    sweep: str = option("one_at_a_time", "one_at_a_time (width x each axis around the base cell) or product",
                        check=one_of(SWEEPS))
    lr_fractions: tuple[float, ...] = option((0.1, 0.5, 0.9), "map axis: learning rates as fractions of the "
                                             "critical rate")
    depths: tuple[int, ...] = option((1, 2, 3, 4, 5), "map axis: depths", check=integers())
    x_ranges: tuple[float, ...] = option(DEFAULT_X_RANGES, "map axis: input scales r, x in [-r, r] (1-D data "
                                         "only; other data keep the base value)")
    parameterizations: tuple[str, ...] = option(("ntk", "standard"), "map axis: ntk, standard, mup (studylib.mup's "
                                                "gamma-model at model.gamma0 and model.base_width, trained centred "
                                                "under --centre auto; docs/regimes.md)")
    activations: tuple[str, ...] = option(("relu", "erf"), "map axis: relu, erf (crossed with every other axis)")
    predict_rows: int = option(41, "test inputs (evenly spaced over |x| <= x_range) on which the first-order gap "
                               "prediction is evaluated (0: the training inputs only)", check=integer(0))
    max_widths: dict = option(default_factory=dict, help="per-depth width limit DEPTH=WIDTH (repeatable): wider "
                              "cells of that depth are skipped, e.g. 5=4096", flags=("--max-width",),
                              parse=key_value, metavar="DEPTH=WIDTH")
    crossover_fit_widths: int = option(3, "narrowest widths whose predicted gap is fitted (log-log) and "
                                       "extrapolated to the threshold", check=integer(2))
    options: tuple[str, ...] = option(OPTIONS, "model options at the base cell: " + ", ".join(OPTIONS))
    output_scale: float = option(0.25, "alpha of option out_scale (the network's output times alpha)", check=number())
    gap_threshold: float = option(0.1, "relative gap counted as 'wide enough'", check=number())
    departure_tol: float = option(0.1, "a mode departs when |c_t - c_pred| > tol x its scale", check=number())
    departure_floor: float = option(0.05, "a mode's scale is at least floor x ||r_0||", check=number(allow_zero=True))

    def __post_init__(self):
        validate(self)
        if self.ntk_implementation not in (1, 2):
            raise ConfigError(f"ntk_implementation: unknown value {self.ntk_implementation!r}; accepted: 1, 2 "
                              "(implementation 3, which compare offers, is not wired into regimes yet)")
        set_frozen(self, "lr_fractions", _check_float_list("lr_fractions", self.lr_fractions))
        set_frozen(self, "x_ranges", _check_float_list("x_ranges", self.x_ranges))
        set_frozen(self, "parameterizations",
                   _check_choice_list("parameterizations", self.parameterizations, PARAMETERIZATIONS))
        self._check_richness()
        set_frozen(self, "options", _check_choice_list("options", self.options, OPTIONS))
        set_frozen(self, "activations", _check_choice_list("activations", self.activations, ACTIVATIONS))
        set_frozen(self, "max_widths", _check_max_widths(self.max_widths))
        for field, base in (("lr_fractions", self.lr_fraction), ("depths", self.model.depth),
                            ("x_ranges", self.data.train_range),
                            ("parameterizations", self.model.parameterization),
                            ("activations", self.model.activation)):
            if base not in getattr(self, field):
                raise ConfigError(f"{field}: must contain the base cell's value {base!r} "
                                  f"(got {list(getattr(self, field))})")
        if "plain" not in self.options:
            raise ConfigError(f"options: must contain 'plain' (the reference), got {list(self.options)}")
        check_pair(self.data, self.model, widths=self.widths)
        if ":" in self.model.arch:
            self._check_builder_axes()
        if not is_1d(self.data):
            self._fit_nd_data()

    def _check_richness(self) -> None:
        """The parameterization axis against the model's richness (:mod:`studylib.mup`): 'mup' builds the fc nets
        only, and 'standard' has no gamma0 != 1; one line naming the axis and the values accepted."""
        if "mup" in self.parameterizations and self.model.arch not in MUP_ARCHS:
            accepted = [p for p in self.parameterizations if p != "mup"] or ["ntk", "standard"]
            raise ConfigError(f"parameterizations: 'mup' is built for the fully connected nets (studylib.mup); got "
                              f"arch {self.model.arch!r}; accepted for it: {', '.join(accepted)} (or arch "
                              f"{' or '.join(MUP_ARCHS)})")
        if "standard" in self.parameterizations and self.model.gamma0 != 1.0:
            raise ConfigError(f"parameterizations: 'standard' has no richness knob (model.gamma0 = 1 only), got gamma0 "
                              f"{self.model.gamma0!r}; accepted with gamma0 != 1: ntk, mup")

    def _check_builder_axes(self) -> None:
        """A user builder may ignore ``cfg.depth`` and ``cfg.activation`` (it is called with the whole
        ModelConfig): each value of the depth and activation axes is built at the first width and compared
        with the base cell's network (:func:`studylib.models.same_network`); an axis whose value gives the
        same network is refused in one line, since the map would report one network under several labels."""
        from studylib import data as D
        from studylib import models

        shape, k = (2, *D.input_shape(self.data, self.model)[1:]), n_outputs(self.data)
        for axis, field in (("depths", "depth"), ("activations", "activation")):
            base = getattr(self.model, field)
            for value in getattr(self, axis):
                other = dataclasses.replace(self.model, **{field: value})
                if value == base or not models.same_network(self.model, other, self.widths[0], shape, k):
                    continue
                raise ConfigError(f"{axis}: {self.model.arch!r} builds the same network at model.{field} {base!r} and "
                                  f"{value!r} (it ignores model.{field}), so this axis would repeat one network under "
                                  f"different labels; accepted for this builder: {axis} = {base} only "
                                  f"(--{axis} {base})")

    def _fit_nd_data(self) -> None:
        """Data of more than one input dimension (digits, diabetes, sphere, files): the input-scale axis
        x_ranges (a 1-D grid on [-r, r]) has no meaning there, so its default is dropped (the map keeps
        the base value) and any other value is refused in one line; with k outputs the recorded
        kernels are (N k, N k) and are bounded by MAX_KERNEL_ROWS."""
        if self.x_ranges == DEFAULT_X_RANGES:
            set_frozen(self, "x_ranges", (self.data.train_range,))
        elif self.x_ranges != (self.data.train_range,):
            raise ConfigError(f"x_ranges: an axis of 1-D grids (inputs x in [-r, r]); data {self.data.name!r} has "
                              f"inputs of shape (N, {', '.join(map(str, example_shape(self.data)))}), so it takes "
                              f"only the base value {self.data.train_range:g} (got {list(self.x_ranges)})")
        rows = self.data.n_train * n_outputs(self.data)
        if rows > MAX_KERNEL_ROWS:
            raise ConfigError(f"data.n_train: the regimes map records the full (N k, N k) empirical NTK at every "
                              f"checkpoint; N k = {self.data.n_train} x {n_outputs(self.data)} = {rows} exceeds "
                              f"{MAX_KERNEL_ROWS}: use --n-train <= {MAX_KERNEL_ROWS // n_outputs(self.data)}")

    @property
    def centred(self) -> bool:
        """Whether the base cell trains and measures f(theta) - f(theta_0) (``centre`` resolved for the data's
        targets and the base model, :func:`studylib.centring.resolve`), and with it every cell of its
        parameterization (:meth:`centred_for`: the gamma-model's cells may differ); option 'centred' is then the
        same model as 'plain'."""
        return centring.resolve(self.centre, self.data.targets, rich=self.model.rich)

    def rich(self, parameterization: str) -> bool:
        """Whether the cells of ``parameterization`` train :mod:`studylib.mup`'s gamma-model (``ModelConfig.rich``
        of the model with that parameterization: 'mup', or 'ntk' at ``model.gamma0`` != 1)."""
        return parameterization == "mup" or (parameterization == "ntk" and self.model.gamma0 != 1.0)

    def centred_for(self, parameterization: str) -> bool:
        """Whether the cells of ``parameterization`` are centred: :attr:`centred` resolved with that setting's
        richness (``--centre auto`` centres the gamma-model's cells, :func:`studylib.centring.resolve`)."""
        return centring.resolve(self.centre, self.data.targets, rich=self.rich(parameterization))

    def base(self) -> dict[str, Any]:
        return {"lr_fraction": self.lr_fraction, "depth": self.model.depth, "x_range": self.data.train_range,
                "parameterization": self.model.parameterization, "activation": self.model.activation,
                "option": "plain"}


PRESETS: dict[str, dict[str, Any]] = {
    # The coarse map: about 4 minutes on 2 shared CPU cores (see docs/regimes.md).
    "default": {},
    # Seconds: smoke tests.
    "tiny": {"widths": (8, 16), "seeds": 2, "steps": 20, "n_checkpoints": 5, "lr_fractions": (0.5,),
             "depths": (1, 5), "x_ranges": (5.0,), "parameterizations": ("ntk",),
             "options": ("plain", "centred", "doubled")},
    # The whole product of the axes, wider nets, more seeds and steps: a GPU or a long run.
    "full": {"widths": (32, 64, 128, 256, 512, 1024, 2048, 4096), "seeds": 8, "steps": 5000,
             "n_checkpoints": 40, "sweep": "product", "lr_fractions": (0.1, 0.25, 0.5, 0.75, 0.9),
             "x_ranges": (0.5, 1.0, 2.5, 5.0, 10.0)},
    # The crossover width (docs/crossover.md): the base setting as wide as this CPU allows in about 42 min here,
    # ReLU and erf, depths 2 and 3 (to 16384) and 5 (to 4096), 2 seeds, the hand-written trainer; the
    # predicted crossover is fitted over the 4 narrowest widths.
    "crossover": {"widths": (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384), "seeds": 2, "steps": 300,
                  "n_checkpoints": 12, "lr_fractions": (0.5,), "depths": (2, 3, 5), "x_ranges": (5.0,),
                  "parameterizations": ("ntk",), "activations": ("relu", "erf"), "options": ("plain",),
                  "max_widths": {5: 4096}, "crossover_fit_widths": 4},
}
DEFAULT_PRESET = "default"
#: The config class under the name every study's face uses.
Config = RegimesConfig


def needs_x64(cfg: RegimesConfig) -> bool:
    """JAX's 64-bit mode is on for a float64 run and for a map with the 'float64' option (it then
    also changes the initial parameters of the float32 cells, which are drawn in float64 and cast)."""
    return cfg.dtype == "float64" or "float64" in cfg.options


def key_config(cfg: RegimesConfig) -> dict[str, Any]:
    """The part of the config a cell's numbers depend on besides its own spec (:func:`cell_spec`):
    seeds, steps, checkpoints, NTK implementation, departure thresholds, and the model and data
    less what the setting replaces (depth, parameterization, input and test range). The sweep (the
    other settings and widths), ``dtype``/``output_scale``/``centre`` (in the spec, where they apply) and
    ``gap_threshold`` are left out, so that a sweep sharing cells with an earlier one reuses them. The model's
    ``gamma0`` and ``base_width`` are in the spec of the cells they change (:func:`cell_spec`), not here, so
    that the other cells keep the keys they had before those fields existed."""
    model = key_dict(dataclasses.asdict(cfg.model) | {"parameterization": "ntk", "gamma0": 1.0})
    data = dataclasses.asdict(cfg.data)
    for k in ("depth", "parameterization", "activation"):
        model.pop(k)
    for k in ("train_range", "test_range"):
        data.pop(k)
    return {"model": model, "data": data} | {
        f: getattr(cfg, f) for f in ("seeds", "first_seed", "steps", "n_checkpoints", "ntk_implementation",
                                     "departure_tol", "departure_floor", "predict_rows")}


def settings(cfg: RegimesConfig) -> list[dict[str, Any]]:
    """The settings to run (without width): base, then each axis's other values (for every
    activation: the activation axis is crossed with the others), or the product; then the options
    at the base setting."""
    base = cfg.base()
    out = [dict(base)]
    if cfg.sweep == "product":
        for lr, d, xr, par, act in itertools.product(cfg.lr_fractions, cfg.depths, cfg.x_ranges,
                                                     cfg.parameterizations, cfg.activations):
            c = {"lr_fraction": lr, "depth": d, "x_range": xr, "parameterization": par, "activation": act,
                 "option": "plain"}
            if c != base:
                out.append(c)
    else:
        acts = [base["activation"]] + [a for a in cfg.activations if a != base["activation"]]
        for act in acts:
            base_a = base | {"activation": act}
            if base_a != base:
                out.append(base_a)
            for field, key in AXES.items():
                if key == "activation":
                    continue
                for v in getattr(cfg, field):
                    if v != base[key]:
                        out.append(base_a | {key: v})
    for opt in cfg.options:
        if opt != "plain":
            out.append(base | {"option": opt})
    return out


def setting_label(c: dict[str, Any]) -> str:
    return (f"lr={c['lr_fraction']:g} depth={c['depth']} x_range={c['x_range']:g} "
            f"{c['parameterization']} {c['activation']} {c['option']}")


def setting_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The setting of a cell spec (its keys in :data:`SETTING_KEYS` order)."""
    return {k: spec[k] for k in SETTING_KEYS}


def cell_spec(cfg: RegimesConfig, setting: dict[str, Any], width: int) -> dict[str, Any]:
    """What determines a cell's numbers besides :func:`key_config`: the setting, the width, and the
    dtype and output scale it runs with (float64 for option 'float64', alpha for 'out_scale'); ``centred``
    when the cell is (:meth:`RegimesConfig.centred_for`: per parameterization); for a cell of the gamma-model
    (:meth:`RegimesConfig.rich`) the model's ``gamma0`` and, under 'mup', ``base_width``."""
    option_ = setting["option"]
    par = setting["parameterization"]
    spec = {**setting, "width": width, "dtype": "float64" if option_ == "float64" else cfg.dtype,
            "output_scale": cfg.output_scale if option_ == "out_scale" else 1.0}
    if cfg.centred_for(par):  # only then: uncentred cells keep the keys they had before centring existed
        spec["centred"] = True
    if cfg.rich(par):  # only then: other cells keep the keys they had before mup existed
        spec["gamma0"] = cfg.model.gamma0
        if par == "mup":
            spec["base_width"] = cfg.model.base_width
    return spec


def compile_key(spec: dict[str, Any]) -> tuple:
    """Cells with the same compile key share their jitted functions (lr and x_range are traced)."""
    return (spec["width"], spec["depth"], spec["parameterization"], spec["activation"], spec["option"], spec["dtype"],
            spec["output_scale"], spec.get("centred", False))


# --------------------------------------------------------------------------- cost model

#: Modelled seconds on this 2-core CPU, fitted to the cells of the default run (their file times:
#: depth-5 cells without compilation took 0.25 s at width 32 and ~4 s at width 512; the first cell
#: of a compile key ~0.6 s x depth more; the very first cell ~2.5 s more for JAX's warm-up).
WARMUP_SECONDS = 2.5  # the first cell of a process: JAX and neural-tangents' first calls
#: compile of one (width, depth, parameterization, activation, option), per hidden layer: 0.6 s for the
#: trainer and measurements, as much again for the gap prediction's expansion (its jvps of the features)
COMPILE_SECONDS_PER_LAYER = 1.2
SETUP_SECONDS = 0.2  # per cell: data, analytic kernels, the cross kernel at init, modes and summaries
STEP_SECONDS = 1.8e-9  # per seed-step per depth x width^2 (the hidden layers' matrix products)
MEASURE_SECONDS = 2.2e-9  # per seed-checkpoint per training input per depth x width^2 (outputs and NTK)
#: The first-order prediction (studylib.perturb.expansion_mlp): per seed, per training row (direction),
#: per evaluated input, per depth x width^2 (one jvp of the per-sample features).
PREDICT_SECONDS = 2.5e-10  # width 512, depth 5, 3 seeds, 51 rows: ~0.5 s measured (load ~7), ~0.5 s modelled
#: Relative cost of an option's step and compile: the doubled network runs two networks, float64 is
#: ~2x float32, centred evaluates the network twice in the forward pass.
OPTION_FACTOR = {"doubled": 2.0, "float64": 2.0, "centred": 1.3}
OPTION_COMPILE_FACTOR = {"doubled": 1.3, "float64": 1.3}


def setup_seconds(spec: dict[str, Any], *, compiles: bool, first: bool = False) -> float:
    """Modelled seconds before a cell's training has run a step: its share of the fixed work, its
    compilation when ``compiles`` (the first cell of its :func:`compile_key`) and JAX's warm-up
    when ``first`` (the first cell computed in the process)."""
    compile_s = COMPILE_SECONDS_PER_LAYER * spec["depth"] * OPTION_COMPILE_FACTOR.get(spec["option"], 1.0)
    return SETUP_SECONDS + (compile_s if compiles else 0.0) + (WARMUP_SECONDS if first else 0.0)


def cell_cost(cfg: RegimesConfig, spec: dict[str, Any], *, compiles: bool, first: bool = False) -> float:
    """Modelled seconds of one cell on a 2-core CPU: :func:`setup_seconds`, then GD steps x seeds and
    the measurements (outputs and the empirical NTK on the N training inputs) at each checkpoint,
    both ~ depth x width^2."""
    size = spec["depth"] * spec["width"] ** 2 * OPTION_FACTOR.get(spec["option"], 1.0)
    train = cfg.steps * cfg.seeds * STEP_SECONDS * size
    measure = cfg.n_checkpoints * cfg.seeds * cfg.data.n_train * MEASURE_SECONDS * size
    n = cfg.data.n_train
    predict = cfg.seeds * n * (n + cfg.predict_rows) * PREDICT_SECONDS * size
    return setup_seconds(spec, compiles=compiles, first=first) + train + measure + predict


def cells(cfg: RegimesConfig, dataset=None) -> list[Cell]:
    """One cell per (setting, width), setting-major (the order of ``summary.json``'s ``cells``)."""
    out, compiled = [], set()
    for setting in settings(cfg):
        for w in cfg.widths:
            if w > cfg.max_widths.get(setting["depth"], w):
                continue
            spec = cell_spec(cfg, setting, w)
            key = compile_key(spec)
            cost = cell_cost(cfg, spec, compiles=key not in compiled, first=not out)
            compiled.add(key)
            name = (f"width{w}-{setting['option']}-depth{setting['depth']}-lr{setting['lr_fraction']:g}-"
                    f"x{setting['x_range']:g}-{setting['parameterization']}-{setting['activation']}")
            label = (f"w={w} {setting['option']} d={setting['depth']} lr={setting['lr_fraction']:g} "
                     f"x={setting['x_range']:g} {setting['parameterization'][:3]} {setting['activation']}")
            out.append(Cell(name=name, spec=spec, cost=cost, label=label))
    return out
