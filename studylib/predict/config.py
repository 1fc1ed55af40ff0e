"""The prediction study's config, presets and cells (no JAX here: ``--help`` imports this).

``python -m study.predict`` predicts, for the user's architecture and data, how wide the network must
be before it trains like its linearization -- from narrow nets at initialisation only: per width and
seed the first-order gap prediction of :mod:`studylib.perturb` (no network is trained), then a log-log
fit of the predicted gap over width extrapolated to ``gap_threshold``. One cell per width.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from studylib import centring
from studylib.config import DTYPES, ConfigError, integer, integers, number, one_of, optional, set_frozen, validate
from studylib.data import DataConfig, check_pair
from studylib.flags import int_list, option
from studylib.models import FAST_ARCHS, ModelConfig
from studylib.runner import Cell

NAME = "predict"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"
#: Config fields that choose which cells run, not what a cell computes (left out of cell keys).
SWEEP_FIELDS = ("widths", "gap_threshold")

#: The wing's own per-data defaults of the fields left None (``steps``, ``lr_fraction``): the values
#: ``study.compare``'s default sweep trains with (1000 steps; 0.5 of the analytic critical rate, digits
#: 0.05 -- there half the critical rate puts narrow nets above their own empirical one), so that a
#: prediction made here answers for the run compare would make. Written here, not imported: a wing does
#: not import another.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "*": {"steps": 1000, "lr_fraction": 0.5},
    "digits": {"steps": 1000, "lr_fraction": 0.05},
}

#: Largest size of the expansion tensors T and D, all seeds together (bytes): 2 S (P k)(N k)^2 numbers.
MAX_EXPANSION_BYTES = 2 * 2**30
#: Largest modelled seconds of the recursion (all widths): it reads T and D once per GD step, so it is
#: bound by memory bandwidth, ~4 GB/s here (SCIENCE.md section 5).
MAX_RECURSION_SECONDS = 600.0
MEMORY_BANDWIDTH = 4e9
#: Largest N k for the generic autodiff route (~6 (N k)^2 forward passes per seed and width).
MAX_GENERIC_ROWS = 64


def data_defaults(data_name: str) -> dict[str, Any]:
    """``steps`` and ``lr_fraction`` of :data:`DATA_DEFAULTS` for this dataset."""
    return DATA_DEFAULTS.get(data_name, DATA_DEFAULTS["*"])


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Everything that determines a prediction run.

    The learning rate is ``lr_fraction`` x the critical rate 2 N k / lambda_max of the analytic NTK
    on the training inputs (as ``study.compare``), ``steps`` full-batch GD steps on NT's loss
    1/2 mean((f - y)^2) over the N k training outputs; nothing is trained: the linearized run is exact
    in function space and the network's deviation from it is the first-order prediction of
    :mod:`studylib.perturb`. The predicted gap is RMS(delta f) over the first ``predict_rows`` test
    inputs spread evenly over the interpolation range (1-D grids: |x| <= data.train_range; other data:
    all test inputs), over all their outputs, relative to RMS(y_train) -- regimes' normalisation.
    """

    widths: tuple[int, ...] = option((32, 64, 128, 256, 512), "comma-separated hidden widths (narrow: only "
                                     "their initialisation is used)", parse=int_list, check=integers(2))
    seeds: int = option(3, "initialisations per width", check=integer())
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    steps: int | None = option(None, "full-batch GD steps of the run being predicted; none: the dataset's (1000, "
                               "as study.compare)", parse=int, check=optional(integer()))
    lr_fraction: float | None = option(None, "learning rate as a fraction of 2Nk/lambda_max of the analytic NTK; "
                                       "none: the dataset's (0.5; digits 0.05, as study.compare)", parse=float,
                                       check=optional(number()))
    n_checkpoints: int = option(12, "log-spaced checkpoints, step 0 and the last included", flags=("--checkpoints",),
                                check=integer(2))
    predict_rows: int = option(41, "test inputs (evenly spread over the interpolation range) on which the gap is "
                               "predicted", check=integer())
    gap_threshold: float = option(0.1, "relative gap counted as 'wide enough' (as study.regimes)", check=number())
    dtype: str = option("float64", "float32 or float64", check=one_of(DTYPES))
    centre: str = option("auto", centring.CENTRE_HELP, check=one_of(centring.CENTRE_MODES))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        validate(self)
        defaults = data_defaults(self.data.name)
        for name in ("steps", "lr_fraction"):
            if getattr(self, name) is None:
                set_frozen(self, name, defaults[name])
        set_frozen(self, "widths", tuple(sorted(set(self.widths))))
        if len(self.widths) < 2:
            raise ConfigError(f"widths: need at least 2 distinct widths to fit a rate, got {list(self.widths)}")
        check_pair(self.data, self.model, widths=self.widths)  # a user builder: checked at the narrowest width
        check_size(self)

    @property
    def centred(self) -> bool:
        """Whether the predicted run trains f(theta) - f(theta_0) (``centre`` resolved for the data's targets:
        :func:`studylib.centring.resolve`)."""
        return centring.resolve(self.centre, self.data.targets)


def fast_route(cfg: PredictConfig) -> bool:
    """Whether the FC expansion (:func:`studylib.perturb.expansion_mlp`, O(N k) passes) applies: an fc /
    erf_fc net on flat inputs; anything else takes the generic autodiff route (O((N k)^2) passes)."""
    from studylib import data as D

    return cfg.model.arch in FAST_ARCHS and len(D.input_shape(cfg.data, cfg.model)) == 2


def sizes(cfg: PredictConfig) -> dict[str, int]:
    """Flat sizes without loading the data: N, k, N k (training rows) and P k (evaluated rows: the
    training inputs and at most ``predict_rows`` test inputs)."""
    from studylib import data as D

    n, k = cfg.data.n_train, D.n_outputs(cfg.data)
    evaluated = n + min(cfg.predict_rows, cfg.data.n_test)
    return {"n": n, "k": k, "rows": n * k, "evaluated": evaluated * k}


def modelled_costs(cfg: PredictConfig) -> dict[str, float]:
    """Bytes of T and D (all seeds), modelled seconds of the recursion over all widths (reads them once
    a step at :data:`MEMORY_BANDWIDTH`) and the number of forward passes of the expansion per seed."""
    s = sizes(cfg)
    item = 8 if cfg.dtype == "float64" else 4
    tensor = 2 * s["evaluated"] * s["rows"] ** 2 * item
    return {"expansion_bytes": cfg.seeds * tensor,
            "recursion_seconds": len(cfg.widths) * cfg.seeds * cfg.steps * tensor / MEMORY_BANDWIDTH,
            "passes": s["rows"] if fast_route(cfg) else 6 * s["rows"] ** 2}


def largest_n_train(cfg: PredictConfig) -> int:
    """The largest ``data.n_train`` that :func:`check_size` accepts for this config (0 if none; the costs
    grow with it, so a bisection)."""

    def fits(n: int) -> bool:
        try:
            check_size(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_train=n)), hint=False)
        except ConfigError:
            return False
        return True

    # the smallest size the data accept (digits with one-hot targets: one example per class)
    lo = next((n for n in range(2, min(cfg.data.n_train, 64)) if fits(n)), 0)
    if not lo:
        return 0
    hi = cfg.data.n_train  # fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def check_size(cfg: PredictConfig, *, hint: bool = True) -> None:
    """ConfigError naming ``data.n_train`` (and the largest accepted value) when the expansion would not
    fit in memory (:data:`MAX_EXPANSION_BYTES`), its recursion would take too long
    (:data:`MAX_RECURSION_SECONDS`) or the generic route would need too many passes
    (:data:`MAX_GENERIC_ROWS` flat training outputs): the tensors grow as (P k)(N k)^2."""
    s, c = sizes(cfg), modelled_costs(cfg)
    problem = None
    if not fast_route(cfg) and s["rows"] > MAX_GENERIC_ROWS:
        problem = (f"the generic expansion of arch {cfg.model.arch!r} takes ~6 (N k)^2 = {c['passes']:.0f} forward "
                   f"passes per seed and width (N k = {s['rows']}, accepted <= {MAX_GENERIC_ROWS})")
    elif c["expansion_bytes"] > MAX_EXPANSION_BYTES:
        problem = (f"the expansion tensors take {c['expansion_bytes'] / 2**30:.1f} GiB "
                   f"(2 x seeds x (P k)(N k)^2 numbers, N k = {s['rows']}; accepted <= "
                   f"{MAX_EXPANSION_BYTES / 2**30:.0f} GiB)")
    elif c["recursion_seconds"] > MAX_RECURSION_SECONDS:
        problem = (f"the recursion would take ~{c['recursion_seconds']:.0f} s ({cfg.steps} steps reading "
                   f"(P k)(N k)^2 numbers each, N k = {s['rows']}; accepted <= {MAX_RECURSION_SECONDS:.0f} s)")
    if problem:
        tip = ""
        if hint:
            best = largest_n_train(cfg)
            if best >= 2:
                tip = f"; use --n-train {best} or fewer" + (" (or --preset digits)" if cfg.data.name == "digits" and
                                                             fast_route(cfg) else "")
            elif not fast_route(cfg):
                tip = (f"; no accepted --n-train gives N k <= {MAX_GENERIC_ROWS} with k = {s['k']}: use an fc or "
                       "erf_fc net on flat inputs (the fast route)")
            else:
                tip = "; fewer --predict-rows, --seeds, --widths or --steps"
        raise ConfigError(f"data.n_train: {cfg.data.n_train} with {s['k']} output(s) each: {problem}{tip}")


Config = PredictConfig
DEFAULT_PRESET = "default"
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Seconds: tests and a first look.
    "tiny": {"widths": (8, 16, 32), "seeds": 2, "steps": 30, "n_checkpoints": 4, "predict_rows": 9,
             "model": {"depth": 2}},
    # scikit-learn's digits (k = 10 outputs) at a size whose expansion fits: 16 training images, 16 test
    # images evaluated (N k = 160 flat training rows).
    # (~2 min here: the recursion reads 2 x 320 x 160^2 numbers per GD step and seed).
    "digits": {"data": {"name": "digits", "n_train": 16, "n_test": 64}, "predict_rows": 16, "dtype": "float32",
               "widths": (32, 64, 128, 256), "seeds": 2},
}


#: Modelled seconds of a width's set-up (build, init, analytic kernel, compilation).
SETUP_SECONDS = 4.0


def cell_cost(cfg: PredictConfig, width: int) -> float:
    """Modelled seconds of one width: set-up, the expansion (passes x P inputs x ~6 depth width^2 flops
    at ~5e9 flop/s, all seeds) and the recursion (:func:`modelled_costs`)."""
    s, c = sizes(cfg), modelled_costs(cfg)
    flops = c["passes"] * (s["evaluated"] // s["k"]) * 6.0 * cfg.model.depth * width * width * max(s["k"], 1)
    return SETUP_SECONDS + cfg.seeds * flops / 5e9 + c["recursion_seconds"] / len(cfg.widths)


def cells(cfg: PredictConfig, dataset=None) -> list[Cell]:
    """One cell per width, every seed inside (vmapped)."""
    return [Cell(name=f"width{w}", spec={"width": w}, cost=cell_cost(cfg, w), label=f"width {w}")
            for w in cfg.widths]
