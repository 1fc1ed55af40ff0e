"""The positive controls' config, presets and cells (no JAX here: ``--help`` imports this).

Two controls, each a set of cells (``controls``):

* ``lazy`` -- Chizat, Oyallon & Bach 2019's lazy scaling at the base setting: the model
  g = alpha (f(theta) - f(theta_0)) trained by the network's GD at rate lr / alpha^2, which leaves
  the linearization's function-space dynamics unchanged; one cell per (activation, width), every
  alpha and seed of it vmapped together;
* ``closing`` -- a width sweep of the network-linearization gap, trained as ``study.compare`` trains
  (full-batch GD, the linearization exact in function space), at a setting where the sweep closes
  the gap (``closing_*`` fields replace the base setting's input range, depth and b_std).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from studylib import centring, models
from studylib.config import DTYPES, ConfigError, check_float, integer, integers, number, one_of, validate
from studylib.data import DataConfig
from studylib.flags import float_list, option, str_list
from studylib.models import ACTIVATIONS, ModelConfig
from studylib.runner import Cell

NAME = "controls"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"
CONTROLS = ("lazy", "closing")
#: Config fields that choose which cells run, not what a cell computes (left out of cell keys).
SWEEP_FIELDS = ("controls", "lazy_widths", "activations", "closing_widths", "fit_alpha_min")


def _positive_floats(field: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, list | tuple) or len(values) < 2:
        raise ConfigError(f"{field}: expected a list of at least 2 distinct numbers > 0, got {values!r}")
    out = tuple(sorted(check_float(f"{field}[{i}]", v) for i, v in enumerate(values)))
    if len(set(out)) != len(out):
        raise ConfigError(f"{field}: values must be distinct, got {list(values)}")
    return out


def _choices(accepted: tuple[str, ...]):
    def check(field: str, values: Any) -> tuple[str, ...]:
        values = (values,) if isinstance(values, str) else tuple(values)
        bad = [v for v in values if v not in accepted]
        if bad or not values or len(set(values)) != len(values):
            raise ConfigError(f"{field}: unknown or repeated value(s) {bad or list(values)}; accepted: "
                              f"{', '.join(accepted)} (each once)")
        return values
    return check


@dataclasses.dataclass(frozen=True)
class ControlsConfig:
    """Everything that determines a run of the positive controls.

    The base setting is ``model`` and ``data`` (default: the seed's cubic data, depth-5 fc net,
    NTK parameterization); the lazy control replaces the activation by each of ``activations``.
    ``lr_fraction`` is a fraction of the critical rate 2N/lambda_max of the analytic NTK of each
    cell's architecture; the lazy model g_alpha trains at that rate / alpha^2.
    """

    controls: tuple[str, ...] = option(CONTROLS, "which controls run: lazy, closing", parse=str_list,
                                       check=_choices(CONTROLS))
    alphas: tuple[float, ...] = option((1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
                                       "lazy-scaling factors alpha of g = alpha (f - f_0)", parse=float_list,
                                       check=_positive_floats)
    fit_alpha_min: float = option(4.0, "alphas >= this enter the fitted exponent in alpha (the 3 largest when "
                                  "fewer)", check=number())
    lazy_widths: tuple[int, ...] = option((128, 512), "widths of the lazy control", check=integers())
    activations: tuple[str, ...] = option(("erf", "relu"), "activations of the lazy control", parse=str_list,
                                          check=_choices(ACTIVATIONS))
    closing_widths: tuple[int, ...] = option((32, 64, 128, 256, 512, 1024), "widths of the closing control",
                                             check=integers())
    closing_x_range: float = option(1.0, "closing control: training inputs on [-x, x] (base: data.train_range)",
                                    check=number())
    closing_test_range: float = option(2.0, "closing control: test grid on [-r, r] (2 x its input range, as in "
                                       "study.regimes; base: data.test_range)", check=number())
    closing_depth: int = option(5, "closing control: hidden layers", check=integer())
    closing_b_std: float = option(0.1, "closing control: bias scale", check=number(allow_zero=True))
    seeds: int = option(3, "initialisations per cell", check=integer())
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    steps: int = option(1000, "full-batch GD steps", check=integer())
    lr_fraction: float = option(0.5, "learning rate as a fraction of 2N/lambda_max of the analytic NTK",
                                check=number())
    n_checkpoints: int = option(12, "log-spaced checkpoints, step 0 and the last included", flags=("--checkpoints",),
                                check=integer(2))
    dtype: str = option("float64", "float32 or float64 (float64 by default: at alpha = 64 a GD step moves the "
                        "parameters by ~1e-8 of their size, below float32's resolution)", check=one_of(DTYPES))
    centre: str = option("auto", centring.CENTRE_HELP, check=one_of(centring.CENTRE_MODES))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        validate(self)
        models.require_fc(self.model, "the controls count ReLU gates layer by layer of the fc net")
        if self.closing_x_range >= self.closing_test_range:
            raise ConfigError(f"closing_x_range: must be below closing_test_range={self.closing_test_range}, got "
                              f"{self.closing_x_range}")

    @property
    def centred(self) -> bool:
        """Whether the closing control trains f(theta) - f(theta_0) (``centre`` resolved for the data's
        targets, :func:`studylib.centring.resolve`); the lazy control's model alpha (f - f(theta_0)) is
        centred by construction whatever this says."""
        return centring.resolve(self.centre, self.data.targets, rich=self.model.rich)


Config = ControlsConfig
DEFAULT_PRESET = "default"
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Seconds: for tests and a first look.
    "tiny": {"alphas": (1.0, 4.0, 16.0), "lazy_widths": (16,), "closing_widths": (8, 32), "seeds": 2,
             "steps": 20, "n_checkpoints": 4, "fit_alpha_min": 1.0, "model": {"depth": 2}, "closing_depth": 2},
}

#: Modelled seconds of a cell's set-up (compilation, kernels at init).
SETUP_SECONDS = 6.0


def lazy_cost(cfg: ControlsConfig, width: int) -> float:
    """Compilation and kernels, plus GD steps x members at ~4e-9 s x width^2 x depth/5 + 1e-4 s
    (compare's per-step model)."""
    members = len(cfg.alphas) * cfg.seeds
    return SETUP_SECONDS + cfg.steps * members * (4e-9 * width * width * cfg.model.depth / 5 + 1e-4)


def closing_cost(cfg: ControlsConfig, width: int) -> float:
    return SETUP_SECONDS + cfg.steps * cfg.seeds * (4e-9 * width * width * cfg.closing_depth / 5 + 1e-4)


def cells(cfg: ControlsConfig, dataset=None) -> list[Cell]:
    """Lazy cells (activation x width, all alphas and seeds inside), then closing cells (one per width)."""
    out = []
    if "lazy" in cfg.controls:
        out += [Cell(name=f"lazy-{a}-width{w}", spec={"control": "lazy", "activation": a, "width": w,
                                                      "alphas": list(cfg.alphas)},
                     cost=lazy_cost(cfg, w), label=f"lazy {a} n={w}")
                for a in cfg.activations for w in cfg.lazy_widths]
    if "closing" in cfg.controls:
        spec = {"control": "closing", **{k: getattr(cfg, k) for k in CLOSING_FIELDS}}
        if cfg.centred:  # only then: uncentred closing cells keep the keys they had before centring existed
            spec["centred"] = True
        out += [Cell(name=f"closing-width{w}", spec=spec | {"width": w}, cost=closing_cost(cfg, w),
                     label=f"closing n={w}") for w in cfg.closing_widths]
    return out


#: The closing setting (in each closing cell's spec, so that lazy cells do not depend on it).
CLOSING_FIELDS = ("closing_x_range", "closing_test_range", "closing_depth", "closing_b_std")


def key_config(cfg: ControlsConfig) -> dict[str, Any]:
    """What every cell's numbers depend on besides its spec: the common training settings, the model
    and the data. The alphas (lazy cells) and the closing setting (closing cells) are in the cells'
    specs, so changing one control's axes leaves the other control's stored cells valid."""
    d = dataclasses.asdict(cfg)
    d["model"] = models.key_dict(d["model"])  # gamma0 / base_width only where they change the net
    for f in (*SWEEP_FIELDS, "alphas", *CLOSING_FIELDS, "centre"):  # centring: in the closing cells' specs
        d.pop(f, None)
    return d
