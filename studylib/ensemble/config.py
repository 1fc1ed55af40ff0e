"""The ensemble study's config, presets and cells (no JAX here: ``--help`` imports this)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from studylib import centring
from studylib.config import (
    DTYPES,
    ConfigError,
    integer,
    integers,
    number,
    one_of,
    optional,
    validate,
)
from studylib.data import DataConfig, check_pair
from studylib.flags import option
from studylib.models import ModelConfig
from studylib.runner import Cell

NAME = "ensemble"
#: The arrays file next to summary.json.
ARRAYS_FILE = "ensemble.npz"
#: Config fields left out of cell keys: the list of widths chooses which cells run, and the
#: Monte-Carlo floor (``mc_repeats``) is computed after the cells, in the summary.
SWEEP_FIELDS = ("widths", "mc_repeats", "centre")  # centre: never changes a number (every run is uncentred)

#: Why the ensemble study does not centre (docs/ensemble.md, "Centring"): its comparison is the spread of the
#: ensemble against the GP's, and centring removes that spread.
CENTRE_REFUSAL = ("the ensemble study compares the spread of networks with NT's gradient_descent_mse_ensemble "
                  "covariance, which at infinite width is all prior f(theta_0) (the kernel is deterministic); "
                  "centring each member removes it, leaving a GP of zero covariance, so std_err, calibration and "
                  "the Monte-Carlo floor would have nothing to compare with (docs/ensemble.md); use study.compare "
                  "for centred networks")

#: Training modes: name -> the GP kernel ``get`` it is compared with.
MODES = {"ntk": "ntk", "readout": "nngp"}
#: Statistics computed for networks and for the Monte-Carlo floor.
STATS = ("mean_err", "std_err", "calibration", "mean_rmse")
#: Statistics printed in the console table.
TABLE_STATS = ("mean_err", "std_err", "calibration")
#: Fraction of a Gaussian within ±2σ.
COVERAGE_2SIGMA = math.erf(2.0 / math.sqrt(2.0))
#: Published reference for the rate of the finite-width corrections.
REFERENCE = ("Lee et al. 2019 Thm 2.1 / App. I: network and kernel at init deviate from the limit by "
             "O(n^-1/2); the ensemble-mean error is often O(n^-1) (the O(n^-1/2) part averages out)")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Everything that determines an ensemble run.

    ``lr``: absolute learning rate of full training; when None it is
    ``lr_fraction`` x 2N/lambda_max of the analytic NTK. Readout-only training
    uses ``readout_lr_fraction`` x 2N/lambda_max of the analytic NNGP (its own
    kernel). ``chunk``: members per vmapped batch (None: as many as fit half of the
    device memory, see :func:`studylib.ensemble.cell.member_chunk`); only memory and
    speed depend on it. ``mc_repeats``: repeats of the Monte-Carlo floor.
    """

    widths: tuple[int, ...] = option((5, 10, 20, 50, 100, 200, 500), "comma-separated hidden widths", check=integers())
    members: int = option(32, "networks per width (independent initialisations)", check=integer(2))
    steps: int = option(1000, "full-batch GD steps", check=integer())
    lr: float | None = option(None, "absolute learning rate of full training; none: --lr-fraction of the "
                              "critical rate", parse=float, check=optional(number()))
    lr_fraction: float = option(0.25, "full training: fraction of 2N/lambda_max of the analytic NTK", check=number())
    readout_lr_fraction: float = option(0.25, "readout-only training: fraction of 2N/lambda_max of the "
                                        "analytic NNGP", check=number())
    n_checkpoints: int = option(10, "number of log-spaced checkpoints, t=0 and the last step included",
                                flags=("--checkpoints",), check=integer(2))
    mc_repeats: int = option(200, "repeats of the Monte-Carlo floor", check=integer(2))
    readout: bool = option(True, "readout-only ensembles (last layer trained, vs the NNGP-GP); --no-readout skips "
                                  "them", negate="--no-readout")
    chunk: int | None = option(None, "members per vmapped batch (only memory and speed depend on it); none: as "
                               "many as fit in half of the device memory", parse=int, check=optional(integer()))
    dtype: str = option("float32", "float32 or float64 for the networks (the GP is always float64)",
                        check=one_of(DTYPES))
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    centre: str = option("auto", "train f(theta) - f(theta_0) (Lee et al. 2020): in this study auto and off run "
                         "uncentred for every data set (the GP spread it compares with is the prior's, which "
                         "centring removes: docs/ensemble.md); on is refused", check=one_of(centring.CENTRE_MODES))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        validate(self)
        check_pair(self.data, self.model, widths=self.widths)  # e.g. cnn with 1-D data: one line, not a traceback
        if self.centre == "on":
            raise ConfigError(f"centre: 'on' is not available here: {CENTRE_REFUSAL}; accepted: auto, off")
        if not isinstance(self.readout, bool):
            raise ConfigError(f"readout: expected true or false, got {self.readout!r}")
        if self.model.parameterization != "ntk":
            raise ConfigError(
                f"model.parameterization: the ensemble study needs 'ntk' (a width-independent GP limit, "
                f"and readout-only training follows the NNGP only there), got {self.model.parameterization!r}")

    @property
    def centred(self) -> bool:
        """Always False: the ensemble study runs uncentred (``centre`` 'on' is refused, :data:`CENTRE_REFUSAL`)."""
        return False

    @property
    def modes(self) -> tuple[str, ...]:
        return ("ntk", "readout") if self.readout else ("ntk",)


PRESETS: dict[str, dict[str, Any]] = {
    # Two decades of width, 32 members: about 2 min on 2 CPU cores.
    "default": {},
    # Seconds: smoke tests.
    "tiny": {"widths": (4, 16, 64), "members": 8, "steps": 20, "n_checkpoints": 4, "mc_repeats": 20,
             "data": {"n_test": 41}},
    # Lee et al. 2019 Fig. 2 scale (100 members, width up to 2048 -- 8192 in the paper): a GPU.
    "large": {"widths": (8, 16, 32, 64, 128, 256, 512, 1024, 2048), "members": 128, "steps": 3000,
              "n_checkpoints": 12, "mc_repeats": 500, "chunk": 32},
}

DEFAULT_PRESET = "default"
#: The config class under the name every study's face uses.
Config = EnsembleConfig


#: Modelled wall seconds on this 2-core CPU, per mode, of a width's set-up: compiling the trainer, the
#: output and kernel functions, and the kernels at init (the NTK's backward pass makes 'ntk' dearer).
SETUP_SECONDS = {"ntk": 2.9, "readout": 0.85}
#: Modelled wall seconds of one GD step of one member, A w^2 + B w (width w), per mode. Readout-only
#: steps cost ~1/10 of full ones here (measured CPU time at width 500, 32 members, 1000 steps: 95 s
#: for 'ntk' alone, 104 s with 'readout'; only the last layer's gradient is formed).
STEP_SECONDS = {"ntk": (6.5e-9, 1.36e-7), "readout": (6.5e-10, 1.36e-8)}


def step_seconds(mode: str, width: int) -> float:
    """Modelled seconds of one GD step of one member of ``mode`` at ``width``."""
    a, b = STEP_SECONDS[mode]
    return a * width * width + b * width


def cell_cost(cfg: EnsembleConfig, width: int) -> float:
    """Modelled wall seconds of one width on a 2-core CPU, compilation included: per mode, the set-up
    plus GD steps x members x :func:`step_seconds`. Fitted to the old default run (widths 5-50 took
    3.6-4.2 s each, 100: 6.9 s, 200: 14.7 s, 500: 60.4 s; the fit gives 3.8, 3.8, 3.9, 4.6, 6.5, 13.8, 63 s)."""
    return sum(SETUP_SECONDS[m] + cfg.steps * cfg.members * step_seconds(m, width) for m in cfg.modes)


def cells(cfg: EnsembleConfig, dataset=None) -> list[Cell]:
    """One cell per width: all members of one width, every mode (vmapped over members)."""
    return [Cell(name=f"width{w}", spec={"width": w}, cost=cell_cost(cfg, w), label=f"width {w}")
            for w in cfg.widths]


def prepare_cost(cfg: EnsembleConfig) -> float:
    """Modelled seconds of the GP side done once before the cells (kernels, NT's ensemble
    prediction and the discrete-time moments at every checkpoint): 5 s at the default 10
    checkpoints here, mostly compilation."""
    return 2.0 + 0.3 * cfg.n_checkpoints
