"""The comparison study's config, presets and cells (no JAX here: ``--help`` imports this)."""

from __future__ import annotations

import dataclasses
from typing import Any

from studylib.config import DTYPES, ConfigError, integer, integers, number, one_of, optional, validate
from studylib.data import DataConfig
from studylib.flags import option
from studylib.models import ModelConfig
from studylib.runner import Cell

NAME = "compare"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"
#: Config fields that choose which cells run, not what a cell computes (left out of cell keys).
SWEEP_FIELDS = ("widths",)

#: Pairs of predictors whose RMSE is recorded: name -> (a, b).
GAPS = {
    "net_vs_lin": ("net", "lin"),
    "net_vs_closed_inf": ("net", "closed_inf"),
    "lin_vs_closed_emp": ("lin", "closed_emp"),
    "net_vs_closed_inf_discrete": ("net", "closed_inf_discrete"),
    "lin_vs_closed_emp_discrete": ("lin", "closed_emp_discrete"),
    "closed_inf_flow_vs_discrete": ("closed_inf", "closed_inf_discrete"),
}
LIN_MODES = ("function", "params")
#: Regions: '' = the whole test grid, 'train' = the training inputs.
REGIONS = ("", "train", "interp", "extrap")

#: Published rates (exponent of width n) to set beside fitted slopes; SCIENCE.md section 3.
REFERENCE_RATES: dict[str, tuple[float, str]] = {
    "rel_param_change": (-1.0, "Lee et al. 2019 Thm 2.1: ||theta_t - theta_0|| = O(1), ||theta_0|| ~ n (NTK param.)"),
    "rel_ntk_change": (-0.5, "Lee et al. 2019 Thm 2.1 bound O(n^-1/2); Fig. 1 observes closer to n^-1"),
    "ntk_x0_change": (-0.5, "as rel_ntk_change, one entry of the Gram"),
    "ntk_init_error": (-0.5, "Lee et al. 2019 App. I: empirical vs analytic NTK at init, O(n^-1/2)"),
    "rmse_net_vs_lin": (-0.5, "Lee et al. 2019 Thm 2.1: sup_t ||f_t - f_t^lin|| = O(n^-1/2)"),
    "rmse_net_vs_closed_inf": (-0.5, "kernel fluctuation at init O(n^-1/2) plus Thm 2.1"),
    "rel_weight_change_l1": (-0.5, "Lee et al. 2019 Fig. 1: input layer ~ n^-1/2"),
    "rel_weight_change_l3": (-1.0, "Lee et al. 2019 Fig. 1: intermediate layers ~ n^-1"),
}

#: Metrics printed in the console table, in order.
TABLE_METRICS = (
    "rel_param_change", "rel_ntk_change", "ntk_x0_change", "ntk_init_error",
    "rmse_net_vs_lin", "rmse_net_vs_closed_inf", "rmse_lin_vs_closed_emp",
    "loss_net", "loss_lin",
)


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Everything that determines a comparison run.

    ``lin_mode``: how the linearized model is trained. 'params' trains
    ``nt.linearize(apply_fn, theta_0)`` with the same GD trainer as the network;
    'function' runs the identical GD in function space (theta_t - theta_0 = J_0^T c_t,
    SCIENCE.md section 6), which the tests show equals 'params' to float rounding and
    costs nothing per step (the per-layer change then takes one vjp per checkpoint).

    ``lr``: absolute learning rate; when None it is ``lr_fraction`` times the
    critical rate 2N/lambda_max of the analytic NTK on the training inputs (per
    width: under standard parameterization the analytic kernel grows with width).
    """

    widths: tuple[int, ...] = option((8, 16, 32, 64, 128, 256, 512, 1024), "comma-separated hidden widths",
                                     check=integers())
    seeds: int = option(3, "number of initialisations per width", check=integer())
    steps: int = option(1000, "full-batch GD steps", check=integer())
    lr: float | None = option(None, "absolute learning rate; none: --lr-fraction of the critical rate", parse=float,
                              check=optional(number()))
    lr_fraction: float = option(0.5, "learning rate as a fraction of 2N/lambda_max of the analytic NTK",
                                 check=number())
    n_checkpoints: int = option(16, "number of log-spaced checkpoints, step 0 and the last included",
                                flags=("--checkpoints",), check=integer(2))
    ntk_implementation: int = option(2, "NT's empirical NTK implementation: 1 or 2")
    lin_mode: str = option("function", "function (exact function-space GD) or params (train nt.linearize)",
                           check=one_of(LIN_MODES))
    dtype: str = option("float32", "float32 or float64", check=one_of(DTYPES))
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        validate(self)
        if self.ntk_implementation not in (1, 2):
            raise ConfigError(f"ntk_implementation: unknown value {self.ntk_implementation!r}; accepted: 1, 2 "
                              "(3 fails with every jax since 0.4.28)")

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # A few seconds: for smoke tests and a first look.
    "tiny": {"widths": (8, 16, 32), "seeds": 2, "steps": 30, "n_checkpoints": 5},
    # Meant for a GPU or a long CPU run.
    "large": {"widths": (64, 128, 256, 512, 1024, 2048, 4096, 8192), "seeds": 8, "steps": 10000,
              "n_checkpoints": 24},
}


DEFAULT_PRESET = "default"
#: The config class under the name every study's face uses.
Config = CompareConfig


#: Modelled seconds of a width's set-up: compilation, kernels at init, closed forms.
SETUP_SECONDS = 5.0


#: Modelled extra seconds of the first width: compiling what later widths reuse (NT's flow, ...).
FIRST_CELL_SECONDS = 5.0


def cell_cost(cfg: CompareConfig, width: int, *, first: bool = False) -> float:
    """Modelled seconds of one width on this 2-core CPU with jax 0.10: ~5 s of compilation, kernels
    and closed forms (+5 s for the first width), plus GD steps x seeds at ~4e-9 s x width^2 +
    1e-4 s each (fitted to the default run: width 8 took 11 s, 16-256 5-6 s, 512 7 s and 1024
    19 s; jax 0.5.3 trains the widest nets ~3x slower, so there the early ETA is ~0.7x the total)."""
    return SETUP_SECONDS + FIRST_CELL_SECONDS * first + training_seconds(cfg, width)


def training_seconds(cfg: CompareConfig, width: int) -> float:
    """The GD part of :func:`cell_cost`."""
    return cfg.steps * cfg.seeds * (4e-9 * width * width + 1e-4)


def cells(cfg: CompareConfig, dataset=None) -> list[Cell]:
    """One cell per width: all seeds of one width train together (vmapped)."""
    return [Cell(name=f"width{w}", spec={"width": w}, cost=cell_cost(cfg, w, first=i == 0), label=f"width {w}")
            for i, w in enumerate(cfg.widths)]
