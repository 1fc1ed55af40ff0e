"""The data-size study's config, presets and cells (no JAX here: ``--help`` imports this).

One cell per (training-set size N, width); inside it every seed (one compiled trainer, seeds vmapped).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from studylib import models
from studylib.centring import CENTRE_HELP, CENTRE_MODES
from studylib.config import DTYPES, ConfigError, integer, integers, number, one_of, optional, set_frozen, validate
from studylib.data import DATASETS, DataConfig
from studylib.flags import int_list, option
from studylib.models import ModelConfig
from studylib.runner import Cell

NAME = "datasize"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"
#: Config fields that choose which cells run, not what a cell computes (left out of cell keys).
SWEEP_FIELDS = ("widths", "n_trains", "tolerance")
#: Smallest training-set size the default halvings of the pool go down to.
MIN_DEFAULT_N = 64


def default_sizes(pool: int, *, count: int = 4) -> tuple[int, ...]:
    """The pool size and its halvings, ``count`` sizes at most, none below min(MIN_DEFAULT_N, pool)."""
    sizes, n = [], pool
    while len(sizes) < count and n >= min(MIN_DEFAULT_N, pool) and n >= 2:
        sizes.append(n)
        n //= 2
    return tuple(sorted(sizes))


@dataclasses.dataclass(frozen=True)
class DigitsPool(DataConfig):
    """:class:`studylib.data.DataConfig` whose defaults are this study's: digits, a pool of 512 training images
    (the held-out 512 test images as everywhere)."""

    name: str = option("digits", "dataset: digits, or file (with class labels)", flags=("--data",),
                       check=one_of(DATASETS))
    n_train: int | None = option(512, "the pool of training images; every N of n_trains is a nested subset of it",
                                 parse=int, check=optional(integer(2)))


@dataclasses.dataclass(frozen=True)
class DatasizeConfig:
    """Everything that determines a data-size sweep (Atanasov et al. 2023: how wide for how much data).

    The dataset ``data`` is loaded once with ``data.n_train`` training examples (the pool; its held-out test
    set, e.g. digits' 512 images, is the same for every N); each N of ``n_trains`` trains on a nested,
    class-balanced subset of the pool (:func:`studylib.data.subsets` with ``data.seed``; inputs standardised
    with the pool's statistics). Per (N, width) and seed: the FC net of ``model`` (arch fc), centred
    (f(θ) − f(θ₀), :mod:`studylib.centring`), trained ``steps`` full-batch GD steps on NT's loss
    ½ mean((f − y)²) over the N k outputs at ``lr_fraction`` × the smallest over seeds of 2 N k / λ_max(K₀)
    (each seed's empirical NTK at init, λ_max by ``power_iterations`` steps of power iteration); the
    infinite-width prediction is NT's closed form with the analytic NTK from zero outputs at the same rate and
    steps (exact discrete GD) and at t = ∞.
    """

    n_trains: tuple[int, ...] | None = option(None, "comma-separated training-set sizes N (nested subsets of the "
                                              "pool data.n_train); none: the pool and its halvings (4 sizes, "
                                              f"down to {MIN_DEFAULT_N})", parse=int_list, check=optional(integers(2)))
    widths: tuple[int, ...] = option((64, 128, 256, 512, 1024), "comma-separated hidden widths", check=integers(2))
    seeds: int = option(3, "initialisations per (N, width)", check=integer())
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    steps: int = option(200, "full-batch GD steps", check=integer())
    records: int = option(21, "checkpoints recorded (evenly spaced steps from 0 to steps, and 0.9 x steps)",
                          check=integer(2))
    lr_fraction: float = option(0.5, "learning rate as a fraction of min over seeds of 2Nk/lambda_max(K_0)",
                                check=number())
    power_iterations: int = option(30, "power-iteration steps for lambda_max of each seed's empirical NTK",
                                   check=integer())
    tolerance: float = option(0.1, "network within this relative test-loss excess of infinite width counts as "
                              "matching", check=number())
    centre: str = option("on", CENTRE_HELP, check=one_of(CENTRE_MODES))
    dtype: str = option("float32", "float32 or float64 (the network; the closed forms are float64)",
                        check=one_of(DTYPES))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DigitsPool)

    def __post_init__(self):
        validate(self)
        models.require_fc(self.model, "the data-size study trains the fc net by the hand-written trainer")
        if self.centre == "off":
            raise ConfigError("centre: this study compares centred networks with the f_0 = 0 closed form; "
                              "accepted: on, auto (class targets)")
        if self.data.targets != "onehot":
            raise ConfigError(f"data.targets: the study reports test accuracy of class targets; got "
                              f"{self.data.targets!r} ({self.data.name}); accepted: onehot (--data digits, or a file "
                              "with class labels)")
        pool = int(self.data.n_train)
        sizes = default_sizes(pool) if self.n_trains is None else tuple(sorted(set(self.n_trains)))
        if sizes[-1] > pool:
            raise ConfigError(f"n_trains: {sizes[-1]} exceeds the pool data.n_train = {pool}; accepted: sizes "
                              f"<= data.n_train (raise --n-train)")
        set_frozen(self, "n_trains", sizes)
        set_frozen(self, "widths", tuple(sorted(set(self.widths))))


Config = DatasizeConfig


def needs_x64(cfg: DatasizeConfig) -> bool:
    """Always: the analytic NTK and the closed forms are float64 (the network trains in ``cfg.dtype``, cast
    explicitly)."""
    return True

DEFAULT_PRESET = "default"
PRESETS: dict[str, dict[str, Any]] = {
    # digits, N 64...512, widths 64...1024, 3 seeds, 200 steps: ~6 min on the shared 2-core CPU (docs/datasize.md).
    "default": {"data": {"name": "digits", "n_train": 512}},
    # N up to 1024 and width 2048: ~4-5x the default's time.
    "large": {"n_trains": (64, 128, 256, 512, 1024), "widths": (64, 128, 256, 512, 1024, 2048),
              "data": {"name": "digits", "n_train": 1024}},
    # Seconds: for tests and a first look.
    "tiny": {"n_trains": (20, 40), "widths": (8, 16), "seeds": 2, "steps": 20, "records": 5, "power_iterations": 10,
             "model": {"depth": 2}, "data": {"name": "digits", "n_train": 40, "n_test": 50}},
}


def cost(cfg: DatasizeConfig, n: int, width: int) -> float:
    """Modelled seconds: compilation plus steps x seeds x (3 passes over depth n^2 weights on N inputs at ~10
    GFLOP/s here, measured 0.47 s a step for 3 seeds at N = 512, width 1024)."""
    passes = (cfg.steps + 3 * cfg.power_iterations) * cfg.seeds
    return 2.0 + passes * (6e-11 * n * cfg.model.depth * width * width + 1e-3)


def cells(cfg: DatasizeConfig, dataset=None) -> list[Cell]:
    return [Cell(name=f"n{n}_w{w}", spec={"n_train": n, "width": w}, cost=cost(cfg, n, w), label=f"N={n} n={w}")
            for n in cfg.n_trains for w in cfg.widths]
