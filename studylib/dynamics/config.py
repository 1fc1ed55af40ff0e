"""The dynamics study's config, presets, cells and their modelled cost (no JAX at import: ``--help``
imports this; :func:`cells` imports it only to take the learning rate from the analytic NTK)."""

from __future__ import annotations

import dataclasses
from typing import Any

from studylib.config import (
    DTYPES,
    ConfigError,
    integer,
    integers,
    number,
    one_of,
    optional,
    set_frozen,
    validate,
)
from studylib.data import DataConfig, check_pair, input_shape, n_outputs
from studylib.flags import int_list, option
from studylib.models import FAST_ARCHS, ModelConfig
from studylib.runner import Cell

NAME = "dynamics"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"
#: Config fields that choose which cells run, not what a cell computes (left out of cell keys).
SWEEP_FIELDS = ("widths", "batch_sizes")
DEVICES_NOTE = " (one cell at a time; seeds vmapped where they fit the cache)"

#: Loss conventions: the keys of :data:`studylib.kernels.LOSS_FACTOR` (tests check they agree).
LOSSES = ("mse", "half_mse")
#: 'direct' / 'lowrank': the hand-written FC trainer (fc and erf_fc only); 'generic': jax.grad
#: through the stax apply_fn (any architecture); 'auto': the FC trainer where it applies.
METHODS = ("auto", "direct", "lowrank", "generic")
#: Width from which method 'auto' uses the low-rank deferred update (see studylib.sgd).
LOWRANK_FROM_WIDTH = 256
#: Seeds are vmapped when all their parameters together stay below this (bytes), so that the
#: working set of a step stays in the 32 MB L3 cache; otherwise they run one after another.
VMAP_BYTES = 8 * 2**20

#: The seed's model: standard parameterization, LeCun-normal weights N(0, 1/fan_in), zero biases.
SEED_MODEL = {"arch": "fc", "depth": 5, "activation": "relu", "W_std": 1.0, "b_std": 0.0,
              "parameterization": "standard"}
#: The seed's reported batch-1 relative parameter change at epoch 20000 (SCIENCE.md section 1).
SEED_REPORTED_BATCH1 = {10: 0.53, 100: 0.20, 1000: 0.15}


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """Everything that determines a dynamics run.

    ``lr``: absolute learning rate; when None it is ``lr_fraction`` times the critical rate
    of SGD with the analytic NTK on the training inputs, per width and batch size
    (:func:`studylib.kernels.minibatch_critical_rate`; N / lambda_max at batch N with the seed's loss).
    ``batch_sizes`` must divide ``data.n_train``; batch size N is full-batch GD.
    ``method``: 'direct' or 'lowrank' formulation of the hand-written FC trainer (``fc`` and
    ``erf_fc`` only), or 'generic' (jax.grad through the stax ``apply_fn``; any architecture) --
    the same numbers up to float rounding; 'auto' picks lowrank from width 256 on for FC nets
    and generic for every other architecture.
    """

    widths: tuple[int, ...] | None = option(None, "comma-separated hidden widths; none: the dataset's (the seed's "
                                            "10,100,1000; digits 16,64,256)", parse=int_list,
                                            check=optional(integers()))
    batch_sizes: tuple[int, ...] | None = option(None, "comma-separated batch sizes, each dividing N; none: the "
                                                 "dataset's (1,5,10; digits 16,64)", parse=int_list,
                                                 check=optional(integers()))
    epochs: int | None = option(None, "epochs; none: the dataset's (20000; digits 400)", parse=int,
                                check=optional(integer()))
    record_every: int | None = option(None, "epochs between records; none: the dataset's (5; digits 40)", parse=int,
                                      check=optional(integer()))
    lr: float | None = option(0.001, "learning rate; none: --lr-fraction of the analytic NTK's SGD critical rate",
                              parse=float, check=optional(number()))
    lr_fraction: float = option(0.5, "when no --lr: fraction of the analytic NTK's SGD critical rate for the "
                                "cell's batch size", check=number())
    seeds: int = option(3, "number of seeds (the seed used 1)", check=integer())
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    loss: str = option("mse", "mse = mean((f-y)^2), the seed's | half_mse = NT's 1/2 mean", check=one_of(LOSSES))
    dtype: str = option("float32", "float32 or float64", check=one_of(DTYPES))
    method: str = option("auto", "auto | direct | lowrank | generic: trainer (same numbers); direct and lowrank "
                         "are the fast FC trainer (fc, erf_fc), generic trains any --arch", check=one_of(METHODS))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        validate(self)
        for name, value in DATA_DEFAULTS.get(self.data.name, DATA_DEFAULTS["*"]).items():
            if getattr(self, name) is None:
                set_frozen(self, name, value)
        check_pair(self.data, self.model, widths=self.widths)  # e.g. cnn with 1-D data: one line, not a traceback
        if self.method in ("direct", "lowrank") and self.model.arch not in FAST_ARCHS:
            raise ConfigError(f"method: {self.method!r} is the hand-written FC trainer's (arch "
                              f"{' or '.join(FAST_ARCHS)}); arch {self.model.arch!r} needs method auto or generic")
        rows = self.data.n_train * n_outputs(self.data)
        if n_outputs(self.data) > 1 and rows > MAX_FLAT_OUTPUTS:
            raise ConfigError(f"data.n_train: with k = {n_outputs(self.data)} outputs the trainer keeps the full "
                              f"(N k, N k) empirical NTK (NT's kernel of it needs memory ~ (N k)^2 x width); N k = "
                              f"{rows} exceeds {MAX_FLAT_OUTPUTS}: use --n-train <= "
                              f"{MAX_FLAT_OUTPUTS // n_outputs(self.data)} (as --preset digits does)")
        if self.method in ("direct", "lowrank") and not fast_trainer_fits(self):
            raise ConfigError(f"method: {self.method!r} is the hand-written FC trainer's (flat inputs, one output); "
                              f"data {self.data.name!r} gives inputs {input_shape(self.data, self.model)} and "
                              f"{n_outputs(self.data)} output(s) per example: use method auto or generic")
        if self.epochs % self.record_every:
            raise ConfigError(f"record_every: must divide epochs={self.epochs}, got {self.record_every}")
        for b in self.batch_sizes:
            if self.data.n_train % b:
                raise ConfigError(f"batch_sizes: each must divide data.n_train={self.data.n_train} "
                                  f"(every epoch is split into equal batches), got {b}")


#: Largest N k with k > 1 outputs: the full (N k, N k) empirical NTK at every record by NT's
#: implementation 2 needs ~45 GB at N k = 2560, width 256, 3 seeds (measured: out of memory), so
#: digits is run with N = 64 (--preset digits).
MAX_FLAT_OUTPUTS = 640
#: Per-dataset values of the fields left None (widths, batch_sizes, epochs, record_every): the seed's
#: sweep for the 1-D toys and any other data, a small one for digits (N = 256 images, k = 10 outputs:
#: the generic trainer and a full (2560, 2560) empirical NTK at every record), so that
#: ``python -m study.dynamics --data digits`` runs in minutes on a 2-core CPU (docs/dynamics.md).
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "*": {"widths": (10, 100, 1000), "batch_sizes": (1, 5, 10), "epochs": 20000, "record_every": 5},
    "digits": {"widths": (16, 64, 256), "batch_sizes": (16, 64), "epochs": 400, "record_every": 40},
}

PRESETS: dict[str, dict[str, Any]] = {
    # The seed's experiment exactly (use --seeds 1 for its single-seed protocol).
    "seed": {"model": SEED_MODEL},
    # The same with NTK parameterization and lr from the analytic kernel (width independent).
    "ntk": {"model": SEED_MODEL | {"parameterization": "ntk"}, "lr": None, "lr_fraction": 0.5},
    # A quick look (under a minute): the seed preset for 200 epochs, one seed.
    "quick": {"model": SEED_MODEL, "epochs": 200, "seeds": 1},
    # Digits with NT's conventions: NTK parameterization (the default model: depth 5, ReLU, W_std = sqrt 2,
    # b_std = 0.1), 1/2 mean loss, lr = 0.05 of the analytic NTK's SGD critical rate (0.5 puts narrow nets
    # above their own 2Nk/lambda_max(K_0), as in study.compare); the digits sweep of DATA_DEFAULTS.
    "digits": {"data": {"name": "digits", "n_train": 64, "n_test": 256}, "model": {"parameterization": "ntk"},
               "lr": None, "lr_fraction": 0.05, "loss": "half_mse"},
    # Seconds; for tests.
    "tiny": {"model": SEED_MODEL | {"depth": 2}, "widths": (8, 16), "batch_sizes": (5, 10), "epochs": 20,
             "record_every": 2, "seeds": 2},
}
DEFAULT_PRESET = "seed"
#: The config class under the name every study's face uses.
Config = DynamicsConfig


def fast_trainer_fits(cfg: DynamicsConfig) -> bool:
    """Whether the hand-written FC trainer (:class:`studylib.sgd.Plan`: flat inputs (N, d), one
    output) can train ``cfg``: an FC architecture, inputs (N, d) and k = 1 output per example.
    Several outputs (e.g. one-hot digits) and image inputs go to the generic trainer."""
    return (cfg.model.arch in FAST_ARCHS and len(input_shape(cfg.data, cfg.model)) == 2
            and n_outputs(cfg.data) == 1)


def resolve_method(cfg: DynamicsConfig, width: int) -> str:
    """The trainer a cell of ``width`` uses: ``cfg.method``, or for 'auto' generic for
    architectures or data the FC trainer does not handle (:func:`fast_trainer_fits`), else
    lowrank from LOWRANK_FROM_WIDTH on."""
    if cfg.method != "auto":
        return cfg.method
    if not fast_trainer_fits(cfg):
        return "generic"
    return "lowrank" if width >= LOWRANK_FROM_WIDTH else "direct"


# ------------------------------------------------------------------------------ cost model

#: Modelled seconds of set-up on this 2-core CPU (quiet; a loaded machine stretches every part
#: alike), split by what it is paid for (measured with the stages of a cell timed apart):
#: once per run (JAX's start, the first analytic kernel and batch permutations, compiling the
#: eager operations), once per width (the parameter draws, eager, at new shapes) and once per
#: cell by trainer (compiling its init, segment and final functions; the low-rank segment and
#: the generic trainer's jax.grad compile longer).
RUN_SETUP_SECONDS = 3.0
WIDTH_SETUP_SECONDS = 1.0
CELL_SETUP_SECONDS = {"direct": 1.5, "lowrank": 2.5, "generic": 3.0}


def step_seconds(method: str, width: int, batch: int, hidden_layers: int) -> float:
    """Modelled seconds of one SGD step of one seed (network and linearization) on this CPU.

    Fitted to ``study.bench`` (docs/performance.md) for the seed's net (4 hidden width x width
    layers): the direct step is dominated by per-operation overhead below width ~100 (2 us at
    width 10, 35 / 64 / 87 us at width 100 and batch 1 / 5 / 10); the low-rank step by weight
    traffic and flops (1.15 / 2.5 / 3.8 ms at width 1000). The width^2 terms scale with the
    number of hidden layers; the generic trainer is ~2x the FC trainer (docs/dynamics.md)."""
    layers = hidden_layers / 4.0
    if method == "lowrank":
        return layers * width * width * (9e-10 + 3e-10 * batch) + 5e-6 * batch
    t = 2e-6 * batch**0.6 + layers * width * width * (2.5e-9 + 0.6e-9 * batch)
    return 2.0 * t if method == "generic" else t


def record_seconds(method: str, width: int, n_train: int, hidden_layers: int) -> float:
    """Modelled seconds of one record's metrics of one seed (NTK Gram on the training inputs,
    outputs, parameter and weight changes): ~0.1 ms at width 10 to ~6 ms at width 1000 with
    N = 10 (docs/performance.md); the generic trainer's NTK (NT's implementation 2) ~10x."""
    t = 1e-4 + (n_train / 10.0) * (hidden_layers / 4.0) * 6e-9 * width * width
    return 10.0 * t if method == "generic" else t


def training_seconds(cfg: DynamicsConfig, width: int, batch: int) -> float:
    """Modelled seconds of training one cell after its set-up: seeds x records x (steps per
    record x step + metrics)."""
    method = resolve_method(cfg, width)
    hidden = max(cfg.model.depth - 1, 1)
    records = cfg.epochs // cfg.record_every
    steps_per_record = cfg.record_every * (cfg.data.n_train // batch)
    k = n_outputs(cfg.data)  # the record's kernel is (N k, N k): modelled as N k points
    per_record = (steps_per_record * step_seconds(method, width, batch, hidden) * k ** 0.5
                  + record_seconds(method, width, cfg.data.n_train * k, hidden))
    return cfg.seeds * records * per_record


def cell_cost(cfg: DynamicsConfig, width: int, batch: int, *, first_of_width: bool = False,
              first_of_run: bool = False) -> float:
    """Modelled seconds of one (width, batch size) cell on this 2-core CPU, compilation included:
    its set-up (the run's and the width's where it comes first) and :func:`training_seconds`.
    The seed preset with one seed is modelled at 269 / 124 / 106 s for width 1000 at batch 1 /
    5 / 10 (measured: 253 / 140 / 86 s, docs/dynamics.md) and 2-10 s for each smaller cell
    (measured: 2-14 s); the quick preset at 28 s (measured: 35 s at load average 3, 54 s at 5.5)."""
    setup = (CELL_SETUP_SECONDS[resolve_method(cfg, width)] + (WIDTH_SETUP_SECONDS if first_of_width else 0.0)
             + (RUN_SETUP_SECONDS if first_of_run else 0.0))
    return setup + training_seconds(cfg, width, batch)


# ----------------------------------------------------------------------------------- cells

# The learning rate a cell trains with: the config's, or a fraction of the analytic NTK's SGD
# critical rate (JAX is imported inside, only when a rate is computed).


def analytic_ntk(cfg: DynamicsConfig, width: int, x_train):
    """The analytic NTK Theta (N, N) of ``cfg.model`` at ``width`` on the training inputs, float64
    (computed in JAX's default dtype: float32 unless 64-bit mode is on)."""
    import jax.numpy as jnp
    import numpy as np

    from studylib import kernels, models

    net = models.build(cfg.model, width)
    return np.asarray(kernels.analytic(net.kernel_fn, jnp.asarray(x_train), None), np.float64)


def learning_rate(cfg: DynamicsConfig, theta, batch: int | None = None) -> tuple[float, float]:
    """(lr, lr_crit of the analytic NTK ``theta`` (N, N)): lr_crit is the SGD critical rate
    :func:`studylib.kernels.minibatch_critical_rate` for ``batch`` (full batch N when None) times
    k = :func:`studylib.data.n_outputs`: the loss is a mean over the B k outputs of a batch and the
    analytic kernel of k outputs is theta (x) I_k (same eigenvalues), so a step multiplies the
    batch's residual by I - lr c (theta_II (x) I_k) / (B k) (NT's 2 N k / lambda_max at B = N).
    lr = cfg.lr or lr_fraction * lr_crit."""
    from studylib import kernels

    crit = n_outputs(cfg.data) * kernels.minibatch_critical_rate(theta, batch or theta.shape[0],
                                                                  loss_factor=kernels.LOSS_FACTOR[cfg.loss])
    return (cfg.lr if cfg.lr is not None else cfg.lr_fraction * crit), crit


def analytic_lr(cfg: DynamicsConfig, width: int, x_train, batch: int | None = None) -> tuple[float, float]:
    """:func:`learning_rate` of the analytic NTK at ``width`` on ``x_train``."""
    return learning_rate(cfg, analytic_ntk(cfg, width, x_train), batch)


def cell_name(width: int, batch: int) -> str:
    """'w<width>_b<batch>': the cell's file stem and its key in summary.json and curves.npz."""
    return f"w{width}_b{batch}"


def cells(cfg: DynamicsConfig, dataset=None) -> list[Cell]:
    """One cell per (width, batch size), widths outermost; each spec holds the learning rate it
    trains with: ``cfg.lr``, or ``lr_fraction`` times the analytic NTK's SGD critical rate of
    its batch size (computed here, with JAX, from the training inputs of ``dataset``)."""
    rates: dict[tuple[int, int], float] = {}
    if cfg.lr is None:
        from studylib import data as D

        x_train = (dataset if dataset is not None else D.load_for(cfg.data, cfg.model)).x_train
        for w in cfg.widths:
            theta = analytic_ntk(cfg, w, x_train)
            rates |= {(w, b): learning_rate(cfg, theta, b)[0] for b in cfg.batch_sizes}
    return [Cell(name=cell_name(w, b), spec={"width": w, "batch_size": b, "lr": rates.get((w, b), cfg.lr)},
                 cost=cell_cost(cfg, w, b, first_of_width=j == 0, first_of_run=i == j == 0),
                 label=f"width {w} batch {b}")
            for i, w in enumerate(cfg.widths) for j, b in enumerate(cfg.batch_sizes)]
