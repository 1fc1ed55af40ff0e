"""The coordinate check's config, presets and cells (no JAX here: ``--help`` imports this).

One cell per width; inside it every parameterization of ``parameterizations`` and every seed (they share
one compiled function, :func:`studylib.mup.coordinate_check`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from studylib import models
from studylib.config import DTYPES, ConfigError, integer, integers, number, one_of, set_frozen, validate
from studylib.data import DataConfig
from studylib.flags import option, str_list
from studylib.models import ModelConfig
from studylib.mup import PARAMETERIZATIONS
from studylib.runner import Cell

NAME = "coordcheck"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"
#: Config fields that choose which cells run, not what a cell computes (left out of cell keys).
SWEEP_FIELDS = ("widths",)


def _parameterizations(field: str, values: Any) -> tuple[str, ...]:
    values = (values,) if isinstance(values, str) else tuple(values)
    bad = [v for v in values if v not in PARAMETERIZATIONS]
    if bad or not values or len(set(values)) != len(values):
        raise ConfigError(f"{field}: unknown or repeated value(s) {bad or list(values)}; accepted: "
                          f"{', '.join(PARAMETERIZATIONS)} (each once)")
    return values


@dataclasses.dataclass(frozen=True)
class CoordcheckConfig:
    """Everything that determines a coordinate check.

    Per width and seed: the FC net of ``model`` (arch fc; its ``parameterization`` field is not used: each
    of ``parameterizations`` is built by :mod:`studylib.mup` at the model's richness ``model.gamma0`` and base
    width ``model.base_width``, flags ``--gamma0`` / ``--base-width``) is trained ``steps`` full-batch GD steps
    on NT's loss ½ mean((f − y)²) at ``lr_fraction`` × 2 N k / λ_max of the analytic NTK of the NTK-parameterized net
    (× :func:`studylib.mup.lr_scales`), the model centred (f(θ) − f(θ₀)); after every step the RMS over
    coordinates of each hidden layer's activation and of its change since θ₀, and of the output.
    """

    widths: tuple[int, ...] = option((64, 128, 256, 512, 1024, 2048, 4096), "comma-separated hidden widths",
                                     check=integers(2))
    parameterizations: tuple[str, ...] = option(PARAMETERIZATIONS, "ntk, mup (studylib.mup)", parse=str_list,
                                                check=_parameterizations)
    seeds: int = option(4, "initialisations per width", check=integer())
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    steps: int = option(5, "full-batch GD steps", check=integer())
    lr_fraction: float = option(0.5, "learning rate as a fraction of 2Nk/lambda_max of the analytic NTK",
                                check=number())
    dtype: str = option("float32", "float32 or float64", check=one_of(DTYPES))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        validate(self)
        models.require_fc(self.model, "the coordinate check builds the fc net of studylib.mup")
        if self.model.parameterization != "ntk":
            raise ConfigError(f"model.parameterization: not used here (each of parameterizations is built by "
                              f"studylib.mup); got {self.model.parameterization!r}; accepted: ntk (the default)")
        set_frozen(self, "widths", tuple(sorted(set(self.widths))))


Config = CoordcheckConfig
DEFAULT_PRESET = "default"
PRESETS: dict[str, dict[str, Any]] = {
    # 16 random points on the sphere in 8 dimensions (the brief's "random data"), depth 3: ~1-2 min here.
    "default": {"model": {"depth": 3}, "data": {"name": "sphere", "dim": 8, "n_train": 16}},
    # Seconds: for tests and a first look.
    # (its base width 16 is its narrowest width, as 64 is the default run's: the default model.base_width)
    "tiny": {"widths": (16, 32, 64), "seeds": 2, "steps": 2, "model": {"depth": 2, "base_width": 16},
             "data": {"name": "sphere", "dim": 4, "n_train": 8}},
}


def cost(cfg: CoordcheckConfig, width: int) -> float:
    """Modelled seconds: compilation plus steps x seeds x parameterizations x (3 passes over depth n^2 weights on
    N inputs at ~1 GFLOP/s here, plus 1e-3 s)."""
    passes = cfg.steps * cfg.seeds * len(cfg.parameterizations)
    return 4.0 + passes * (6e-9 * cfg.data.n_train * cfg.model.depth * width * width + 1e-3)


def key_config(cfg: CoordcheckConfig) -> dict[str, Any]:
    """What every cell's numbers depend on: the config less :data:`SWEEP_FIELDS`, with the model's ``gamma0``
    and ``base_width`` kept whatever their values (the runner's default leaves them out of an 'ntk' model at
    gamma0 1, :func:`studylib.models.key_dict`; here they shape every 'mup' setting)."""
    d = dataclasses.asdict(cfg)
    for f in SWEEP_FIELDS:
        d.pop(f, None)
    return d


def cells(cfg: CoordcheckConfig, dataset=None) -> list[Cell]:
    return [Cell(name=f"width{w}", spec={"width": w}, cost=cost(cfg, w), label=f"n={w}") for w in cfg.widths]
