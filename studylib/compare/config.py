"""The comparison study's config, presets and cells (no JAX here: ``--help`` imports this)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from studylib import centring
from studylib.config import DTYPES, ConfigError, integer, integers, number, one_of, optional, set_frozen, validate
from studylib.data import DEFAULT_SIZES, DataConfig, check_pair
from studylib.flags import int_list, option
from studylib.models import ModelConfig
from studylib.runner import Cell

NAME = "compare"
#: The arrays file next to summary.json.
ARRAYS_FILE = "curves.npz"
#: Config fields that choose which cells run, not what a cell computes (left out of cell keys).
SWEEP_FIELDS = ("widths", "fit_widths")

#: Pairs of predictors whose RMSE is recorded: name -> (a, b).
GAPS = {
    "net_vs_lin": ("net", "lin"),
    "net_vs_closed_inf": ("net", "closed_inf"),
    "lin_vs_closed_emp": ("lin", "closed_emp"),
    "net_vs_closed_inf_discrete": ("net", "closed_inf_discrete"),
    "lin_vs_closed_emp_discrete": ("lin", "closed_emp_discrete"),
    "closed_inf_flow_vs_discrete": ("closed_inf", "closed_inf_discrete"),
    # The second-order Taylor model (studylib.quad), trained at widths <= quad_max_width.
    "net_vs_quad": ("net", "quad"),
    "quad_vs_lin": ("quad", "lin"),
    # How far each run is from where its training leads: the t -> infinity closed forms (the same at
    # every checkpoint): with the analytic kernel for the network and the analytic closed form, with the
    # network's K_0 for the linearization (which converges to it exactly).
    "net_vs_closed_inf_limit": ("net", "closed_inf_limit"),
    "closed_inf_vs_limit": ("closed_inf", "closed_inf_limit"),
    "lin_vs_closed_emp_limit": ("lin", "closed_emp_limit"),
}
LIN_MODES = ("function", "params")
#: Regions: '' = the whole test set, 'train' = the training inputs; 'interp'/'extrap' only where the
#: data have them (1-D grids: inside / beyond the training range).
REGIONS = ("", "train", "interp", "extrap")
#: The predictors measured on held-out data: network, linearization, closed forms (NT's flow) with
#: the analytic and the empirical kernel, and both closed forms at t = infinity (``_limit``).
PREDICTORS = ("net", "lin", "closed_inf", "closed_emp", "closed_inf_limit", "closed_emp_limit")
#: Modes of ``CompareConfig.after_kernel``.
AFTER_KERNEL_MODES = ("auto", "on", "off")
#: Learning-rate rules (``CompareConfig.lr_rule``).
LR_RULES = ("analytic", "emp")
#: Pairs whose predicted classes are compared on the test set (``test_agreement_<a>_vs_<b>``).
AGREEMENTS = (("net", "lin"), ("net", "closed_inf"))

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
    "rmse_quad_vs_lin": (-1.0, "Dyer & Gur-Ari 2019; Huang & Yau 2019: the correction beyond the linearization "
                         "is O(1/n) (smooth activations); docs/controls.md"),
    "gap_predicted": (-1.0, "the first order of rmse_quad_vs_lin (docs/crossover.md): O(1/n) for smooth "
                      "activations, Dyer & Gur-Ari 2019"),
}

#: Metrics printed in the console table, in order.
TABLE_METRICS = (
    "rel_param_change", "rel_ntk_change", "ntk_x0_change", "ntk_init_error",
    "rmse_net_vs_lin", "gap_predicted", "gap_ratio", "rmse_net_vs_closed_inf", "rmse_lin_vs_closed_emp",
    "rmse_net_vs_quad", "rmse_quad_vs_lin",
    "loss_net", "loss_lin", "loss_quad",
    "test_loss_net", "test_loss_closed_inf", "test_accuracy_net", "test_accuracy_lin", "test_accuracy_closed_inf",
    "test_accuracy_closed_inf_limit", "test_agreement_net_vs_lin", "test_agreement_net_vs_closed_inf",
    "trained_fraction_net", "trained_fraction_closed_inf", "rmse_net_vs_closed_inf_limit", "rmse_closed_inf_vs_limit",
    "rmse_lin_vs_closed_emp_limit",
)

#: Per-data defaults of the fields left None (``widths``, ``steps``, ``lr_fraction``, ``lr_rule``,
#: ``quad_max_width``; ``n_train`` replaces the dataset's default size), keyed by (dataset, architecture,
#: sweep); '*' matches any. The 1-D toy keeps the seed study's sweep (analytic rule: every width at
#: 0.5 x 2N/lambda_max(Theta)).
#: Digits (N = 256 inputs with k = 10 outputs: full empirical kernels of 2560 x 2560) trains centred
#: nets (``centre='auto'``) with the 'emp' rule: each width at half the smallest critical rate
#: 2Nk/lambda_max(K_0) of its seeds, to the absolute time T = steps x 0.5 x 2Nk/lambda_max(Theta) (the
#: narrowest nets, whose lambda_max(K_0) is up to ~3x the analytic one at width 32, take ~3x the steps).
#: Sized for ``sweep='default'`` to run in ~10 min on this 2-core CPU (measured: 11.4 min with the machine shared
#: by other jobs, load ~7, 7.4 min of CPU time; docs/real-data.md),
#: ``sweep='large'`` for one GPU (``--plan``): N = 1024 training images, widths to 4096.
SWEEP_DEFAULTS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("*", "*", "default"): {"widths": (8, 16, 32, 64, 128, 256, 512, 1024), "steps": 1000, "lr_fraction": 0.5,
                            "lr_rule": "analytic", "quad_max_width": 256},
    ("*", "*", "large"): {"widths": (64, 128, 256, 512, 1024, 2048, 4096, 8192), "steps": 10000, "lr_fraction": 0.5,
                          "lr_rule": "analytic", "quad_max_width": 1024},
    ("digits", "*", "default"): {"widths": (32, 64, 128, 256, 512, 1024), "steps": 500, "lr_fraction": 0.5,
                                 "lr_rule": "emp", "quad_max_width": 0},
    ("digits", "*", "large"): {"widths": (64, 128, 256, 512, 1024, 2048, 4096), "steps": 2000, "lr_fraction": 0.5,
                               "lr_rule": "emp", "quad_max_width": 0, "n_train": 1024},
    # The conv net (``cnn``: depth x [Conv(C, 3x3, SAME), ReLU], flatten, Dense(10)) at depth 3, centred, each
    # width at 0.5 x its own critical rate to T = 150 x 0.5 x 2Nk/lambda_max(Theta) (~1060 here). Measured per
    # width (docs/real-data.md, "Conv net"): the fixed costs (three 2560 x 2560 kernels at init and their eigh,
    # the traced kernel at 16 checkpoints) outweigh the GD steps up to C = 64; C = 128 would add ~4x C = 64's
    # GD time. 'depth' replaces ModelConfig's default depth (5) only: depth 3 costs 3/5 of depth 5 per step
    # and per kernel, and its analytic CNTK classifies as well (0.965 vs 0.961, SCIENCE.md section 9).
    ("digits", "cnn", "default"): {"widths": (8, 16, 32, 64), "steps": 150, "lr_fraction": 0.5, "lr_rule": "emp",
                                   "quad_max_width": 0, "depth": 3},
    ("digits", "cnn", "large"): {"widths": (16, 32, 64, 128, 256, 512), "steps": 1000, "lr_fraction": 0.5,
                                 "lr_rule": "emp", "quad_max_width": 0, "depth": 3},
    # --preset tiny: the preset sets widths and steps; the sweep keeps each dataset's rate rule and quad width
    # (the toy's analytic 0.5, digits' emp 0.5); the conv net on digits takes 64 training images (640 x 640
    # kernels instead of 2560 x 2560: seconds, not minutes).
    ("*", "*", "tiny"): {"widths": (8, 16, 32), "steps": 30, "lr_fraction": 0.5, "lr_rule": "analytic",
                         "quad_max_width": 8},
    ("digits", "*", "tiny"): {"widths": (8, 16, 32), "steps": 30, "lr_fraction": 0.5, "lr_rule": "emp",
                              "quad_max_width": 8},
    ("digits", "cnn", "tiny"): {"widths": (8, 16, 32), "steps": 30, "lr_fraction": 0.5, "lr_rule": "emp",
                                "quad_max_width": 0, "depth": 3, "n_train": 64},
}
SWEEPS = ("default", "large", "tiny")
#: ModelConfig's depth when not given; a sweep default's 'depth' replaces it (and only it).
MODEL_DEFAULT_DEPTH = {f.name: f.default for f in dataclasses.fields(ModelConfig)}["depth"]

#: NT's empirical-kernel implementation per architecture when ``ntk_implementation`` is None. Measured
#: on digits shapes (N = 256, 64 inputs or 8x8x1 images, k = 10, float32, this 2-core CPU, jax 0.10.2):
#: fc depth 5, full kernel 256 x 64 block: width 64 impl 1 0.29 s vs impl 2 0.31 s; width 256 4.6 s vs
#: 1.8 s (NTK-vector products avoid the 2560 x P Jacobian contraction); cnn depth 5 (flatten): width 16
#: 1.1 s vs 11.2 s, width 32 3.9 s vs 32 s (implementation 2 re-runs the convolutions for every
#: output row). So 2 for dense nets, 1 for conv nets and user builders (1 works for any stax net).
#: cnn depth 3 (im2col apply_fn, studylib.conv), the full 2560 x 2560 kernel of one seed: width 32 impl 1 5.8 s
#: vs impl 3 (structured derivatives, through studylib.nt) 3.5 s of CPU; width 16 2.1 s vs 1.0 s; width 64 17.8 s
#: vs 14.3 s (docs/real-data.md; docs/versions.md "Implementation 3 against 1 and 2"). So 3 for the conv net.
IMPLEMENTATION_BY_ARCH = {"fc": 2, "erf_fc": 2, "res_fc": 2, "cnn": 3}
#: Implementations ``ntk_implementation`` accepts (:data:`studylib.kernels.NTK_IMPLEMENTATIONS`, which this
#: module cannot import: it imports JAX).
NTK_IMPLEMENTATIONS = (1, 2, 3)
#: Implementation for architectures not in IMPLEMENTATION_BY_ARCH (user builders).
OTHER_IMPLEMENTATION = 1


def sweep_defaults(data_name: str, arch: str, sweep: str) -> dict[str, Any]:
    """The :data:`SWEEP_DEFAULTS` entry for this dataset, architecture and sweep (the most specific entry
    wins: dataset and arch, then dataset, then any)."""
    for key in ((data_name, arch, sweep), (data_name, "*", sweep), ("*", "*", sweep)):
        if key in SWEEP_DEFAULTS:
            return SWEEP_DEFAULTS[key]
    raise KeyError(sweep)


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Everything that determines a comparison run.

    ``lin_mode``: how the linearized model is trained. 'params' trains
    ``nt.linearize(apply_fn, theta_0)`` with the same GD trainer as the network;
    'function' runs the identical GD in function space (theta_t - theta_0 = J_0^T c_t,
    SCIENCE.md section 6), which the tests show equals 'params' to float rounding and
    costs nothing per step (the per-layer change then takes one vjp per checkpoint).

    ``lr``: absolute learning rate; when None it is ``lr_fraction`` times the
    critical rate 2Nk/lambda_max of the analytic NTK on the training inputs (N inputs with k
    outputs each; per width: under standard parameterization the analytic kernel grows with width).
    ``lr_rule='emp'`` keeps that rate only to fix the absolute time T = lr x steps, and trains each width
    at ``lr_fraction`` times the smallest empirical critical rate 2Nk/lambda_max(K_0) of its seeds, for
    ceil(T / that) steps (the rate then lowered to T / steps, so every width ends at time T exactly;
    checkpoints at the same fractions of T: :func:`studylib.compare.cell.learning_schedule`).

    ``centre``: train and measure f(theta) - f(theta_0) (:mod:`studylib.centring`); 'auto' centres
    class targets; :attr:`centred` is the resolved choice.

    ``widths``, ``steps``, ``lr_fraction``, ``lr_rule`` and ``quad_max_width`` left None take the defaults
    of the dataset, architecture and ``sweep`` (:data:`SWEEP_DEFAULTS`), resolved here (the large sweep
    also sets digits' ``data.n_train`` where it is the dataset's default, and the conv net on digits takes
    depth 3 where ``model.depth`` is ModelConfig's default 5: :data:`MODEL_DEFAULT_DEPTH`; an explicit
    ``--depth 5`` reads the same and also becomes 3); ``ntk_implementation`` None takes the
    fastest measured for the architecture (:data:`IMPLEMENTATION_BY_ARCH`). ``kernel_points``:
    the network's kernel during training (``rel_ntk_change``, ``ntk_x0_change``,
    ``ntk_lambda_*``) is measured on the first that many training inputs, traced over outputs;
    the full (N k, N k) kernel at init on all of them.
    """

    widths: tuple[int, ...] | None = option(
        None, "comma-separated hidden widths; none: the dataset's (cubic etc. 8..1024, digits 32..1024, digits "
        "with cnn 8..64; --preset large: 64..8192, 64..4096, 16..512)", parse=int_list, check=optional(integers()))
    seeds: int = option(3, "number of initialisations per width", check=integer())
    steps: int | None = option(None, "full-batch GD steps (with --lr-rule emp: at the analytic rate, setting the "
                               "time lr x steps every width trains to); none: the dataset's (1000; digits 500, cnn "
                               "150; --preset large: 10000, digits 2000, cnn 1000)", parse=int,
                               check=optional(integer()))
    sweep: str = option("default", "which per-data defaults fill --widths/--steps: default (this CPU), large "
                        "(a GPU; --preset large sets it) or tiny (--preset tiny sets it; digits cnn: 64 training "
                        "images)", check=one_of(SWEEPS))
    lr: float | None = option(None, "absolute learning rate; none: --lr-fraction of the critical rate", parse=float,
                              check=optional(number()))
    lr_fraction: float | None = option(None, "learning rate as a fraction of 2Nk/lambda_max of the analytic NTK "
                                       "(--lr-rule emp: also of each width's empirical one); none: the dataset's "
                                       "(0.5)", parse=float, check=optional(number()))
    lr_rule: str | None = option(None, "analytic (one rate for all widths) or emp (each width at --lr-fraction of its "
                                 "seeds' smallest 2Nk/lambda_max(K_0), trained to the same time lr x steps); none: "
                                 "the dataset's (analytic; digits emp)", parse=str,
                                 check=optional(one_of(LR_RULES)))
    centre: str = option("auto", centring.CENTRE_HELP, check=one_of(centring.CENTRE_MODES))
    after_kernel: str = option("auto", "kernel regression with the network's kernel K_t at the after-kernel "
                               "checkpoints (the after_* rows): auto (on for the fc nets' hand-written trainer; off "
                               "for the others, where NT's kernel on all N and the test set costs ~20x the rest), "
                               "on or off (the rows are NaN)", check=one_of(AFTER_KERNEL_MODES))
    n_checkpoints: int = option(16, "number of log-spaced checkpoints, step 0 and the last included",
                                flags=("--checkpoints",), check=integer(2))
    kernel_points: int = option(64, "training inputs (the first ones) on which the network's kernel is measured "
                                "at every checkpoint", check=integer(2))
    ntk_implementation: int | None = option(None, "NT's empirical NTK implementation: 1, 2 or 3; none: 2 for dense "
                                            "nets, 3 for conv nets, 1 for user builders (measured)", parse=int)
    lin_mode: str = option("function", "function (exact function-space GD) or params (train nt.linearize)",
                           check=one_of(LIN_MODES))
    dtype: str = option("float32", "float32 or float64", check=one_of(DTYPES))
    first_seed: int = option(0, "first PRNG seed", check=integer(0))
    quad_max_width: int | None = option(
        None, "train the quadratic model nt.taylor_expand(apply_fn, theta_0, 2) at widths <= this (0: never); none: "
        "the dataset's (1-D 256, large 1024; digits 0): it costs 6-30x the network per step", parse=int,
        check=optional(integer(0)))
    fit_widths: tuple[int, ...] | None = option(
        None, "widths the rates are fitted on; none: the asymptotic part of the sweep, widths >= 64 "
        "(the 3 largest when fewer; studylib.metrics.default_fit_widths)", parse=int_list, check=optional(integers()))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def __post_init__(self):
        validate(self)
        defaults = sweep_defaults(self.data.name, self.model.arch, self.sweep)
        for name in ("widths", "steps", "lr_fraction", "lr_rule", "quad_max_width"):
            if getattr(self, name) is None:
                set_frozen(self, name, defaults[name])
        if "n_train" in defaults and self.data.n_train == DEFAULT_SIZES[self.data.name][0]:
            set_frozen(self, "data", dataclasses.replace(self.data, n_train=defaults["n_train"]))
        if "depth" in defaults and self.model.depth == MODEL_DEFAULT_DEPTH:
            set_frozen(self, "model", dataclasses.replace(self.model, depth=defaults["depth"]))
        if self.ntk_implementation is None:
            set_frozen(self, "ntk_implementation", IMPLEMENTATION_BY_ARCH.get(self.model.arch, OTHER_IMPLEMENTATION))
        if self.ntk_implementation not in NTK_IMPLEMENTATIONS:
            raise ConfigError(f"ntk_implementation: unknown value {self.ntk_implementation!r}; accepted: 1, 2, 3")
        if self.fit_widths is not None and (len(self.fit_widths) < 2 or set(self.fit_widths) - set(self.widths)):
            raise ConfigError(f"fit_widths: {list(self.fit_widths)} must be >= 2 of the swept widths "
                              f"{list(self.widths)}")
        check_pair(self.data, self.model, widths=self.widths)  # a user builder: checked at the first width

    def after_kernel_on(self, fast: bool) -> bool:
        """Whether the after_* regression rows are computed (``after_kernel`` resolved; ``fast``: the run
        trains by the hand-written FC trainer)."""
        return self.after_kernel == "on" or (self.after_kernel == "auto" and fast)

    @property
    def centred(self) -> bool:
        """Whether this run trains and measures f(theta) - f(theta_0) (``centre`` resolved for the data's
        targets: :func:`studylib.centring.resolve`)."""
        return centring.resolve(self.centre, self.data.targets, rich=self.model.rich)

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # A few seconds: for smoke tests and a first look.
    "tiny": {"widths": (8, 16, 32), "seeds": 2, "steps": 30, "n_checkpoints": 5, "sweep": "tiny"},
    # Meant for a GPU: the dataset's large sweep (SWEEP_DEFAULTS; 1-D: widths 64...8192, 10 000 steps).
    "large": {"sweep": "large", "seeds": 8, "n_checkpoints": 24},
}


DEFAULT_PRESET = "default"
#: The config class under the name every study's face uses.
Config = CompareConfig


#: Modelled seconds of a width's set-up: compilation, kernels at init, closed forms.
SETUP_SECONDS = 5.0


#: Modelled extra seconds of the first width: compiling what later widths reuse (NT's flow, ...).
FIRST_CELL_SECONDS = 5.0


def cell_cost(cfg: CompareConfig, width: int, *, first: bool = False, shape: tuple[int, ...] = (10, 1),
              outputs: int = 1, n_test: int = 0) -> float:
    """Modelled seconds of one width on this 2-core CPU with jax 0.10: ~5 s of compilation, kernels
    and closed forms (+5 s for the first width), plus GD steps x seeds at ~4e-9 s x width^2 +
    1e-4 s each (fitted to the default 1-D run: width 8 took 11 s, 16-256 5-6 s, 512 7 s and 1024
    19 s; jax 0.5.3 trains the widest nets ~3x slower, so there the early ETA is ~0.7x the total),
    plus for larger data the kernels (:func:`kernel_seconds`); for image inputs the conv net's GD steps
    (:func:`training_seconds`) and, in the first width, the analytic CNTK (:func:`analytic_seconds`, ``n_test``
    test images). ``shape``: the training inputs' (N, ...)."""
    spatial = int(math.prod(shape[1:-1])) if len(shape) > 2 else 1
    analytic = analytic_seconds(cfg, shape, n_test) if first else 0.0
    return (SETUP_SECONDS + FIRST_CELL_SECONDS * first + analytic
            + training_seconds(cfg, width, shape[0], spatial=spatial) + kernel_seconds(cfg, width, shape, outputs))


#: The conv net's GD steps under the 'emp' rule per step of the analytic rule (``steps``): measured 1.9-4.0x on
#: digits (depth 3, widths 8-64: 599, 457, 444, 281 steps for 150; the narrow nets' lambda_max(K_0) is larger).
EMP_STEP_FACTOR = 2.5
#: Flop rate of the conv net's GD steps (im2col matmuls, float32) and seconds of per-step overhead per seed,
#: fitted on digits (N = 256, depth 3, 3 seeds, this CPU shared): 0.11 s a step per seed at width 64, 0.019 at 16.
CONV_FLOPS, CONV_STEP_OVERHEAD = 1e11, 0.013


def training_seconds(cfg: CompareConfig, width: int, n: int = 10, *, spatial: int = 1) -> float:
    """The GD part of :func:`cell_cost` (its width^2 term grows with the N training inputs beyond 10).
    ``spatial`` > 1 (the H W pixels of image inputs): the conv net's 3x3 convolutions, ~6 N H W 9 depth
    width^2 flops a step (forward and backward matmuls of the im2col form, :mod:`studylib.conv`)."""
    if spatial > 1:
        steps = cfg.steps * (EMP_STEP_FACTOR if cfg.lr_rule == "emp" else 1.0)
        flops = 6.0 * n * spatial * 9 * cfg.model.depth * width * width
        return steps * cfg.seeds * (flops / CONV_FLOPS + CONV_STEP_OVERHEAD)
    quad = 1.5e-7 * width * width if width <= cfg.quad_max_width else 0.0  # measured: 6-30x the network's step
    return cfg.steps * cfg.seeds * ((4e-9 * width * width + quad) * max(1.0, n / 10) + 1e-4)


def n_params(cfg: CompareConfig, width: int, shape: tuple[int, ...], outputs: int) -> int:
    """Parameters of the registered net for training inputs of ``shape`` (N, ...) and ``outputs`` = k outputs,
    without building it (``models.count_params`` builds it: JAX): image inputs (N, H, W, C): ``cnn``'s ``depth``
    3x3 convolutions with biases and the readout Dense over the flattened H W width features ('flatten') or
    width pooled ones ('gap'); flat inputs: ``fc``'s ``depth`` Dense layers and the readout."""
    if len(shape) > 2:
        hw, c = int(math.prod(shape[1:-1])), shape[-1]
        readin = 1 if cfg.model.options.get("readout", "flatten") == "gap" else hw
        return (9 * c * width + 9 * (cfg.model.depth - 1) * width * width + cfg.model.depth * width
                + readin * width * outputs + outputs)
    d = int(math.prod(shape[1:]))
    return d * width + (cfg.model.depth - 1) * width * width + cfg.model.depth * width + width * outputs + outputs


def kernel_seconds(cfg: CompareConfig, width: int, shape: tuple[int, ...], outputs: int) -> float:
    """Modelled seconds of the empirical kernels and their eigendecompositions per width: the full
    (N k)^2 kernel at init and the traced kernel on ``kernel_points`` inputs at every checkpoint (~4 k P
    flops per pair of inputs at ~5e10 flop/s; conv nets 2e10, measured with NT's implementation 3 on digits:
    ~14 s a seed for the full kernel at width 64) and the eigh (~3e-10 s x (N k)^3) per seed. Zero-ish for
    the 1-D toy."""
    n, k = shape[0], outputs
    # flat inputs: the model fitted for FC nets, ~depth x width^2 + width x (d + k) (kept as it was)
    p = (n_params(cfg, width, shape, outputs) if len(shape) > 2
         else cfg.model.depth * width * width + width * (int(math.prod(shape[1:])) + k))
    kp = min(cfg.kernel_points, n)
    flops = 4.0 * k * p * (n * n + cfg.n_checkpoints * kp * kp)
    return cfg.seeds * (flops / (2e10 if len(shape) > 2 else 5e10) + 3e-10 * (n * k) ** 3)


#: Seconds per (train or test input, train input, spatial covariance entry, layer) of NT's analytic CNTK,
#: float64, fitted on digits: depth 3 flatten, 256 x (256 + 512) pairs x 64 pixels, ~13 s here.
ANALYTIC_PAIR_SECONDS = 3.4e-7


def analytic_seconds(cfg: CompareConfig, shape: tuple[int, ...], n_test: int) -> float:
    """Modelled seconds of the analytic kernels Theta(X, X) and Theta(x_test, X) of image inputs, computed once
    per run: NT keeps one covariance per pixel for a Flatten readout, every pixel pair's ((H W)^2) for global
    average pooling (measured: --preset tiny, 64 training images, ~2 min more with 'gap'). 0 for flat inputs."""
    if len(shape) <= 2:
        return 0.0
    hw = int(math.prod(shape[1:-1]))
    cov = hw * hw if cfg.model.options.get("readout", "flatten") == "gap" else hw
    return ANALYTIC_PAIR_SECONDS * shape[0] * (shape[0] + n_test) * cov * cfg.model.depth


def cells(cfg: CompareConfig, dataset=None) -> list[Cell]:
    """One cell per width: all seeds of one width train together (vmapped)."""
    shape, k = ((10, 1), 1) if dataset is None else (dataset.x_train.shape, dataset.y_train.shape[1])
    m = 0 if dataset is None or dataset.x_test is None else dataset.x_test.shape[0]
    return [Cell(name=f"width{w}", spec={"width": w}, label=f"width {w}",
                 cost=cell_cost(cfg, w, first=i == 0, shape=shape, outputs=k, n_test=m))
            for i, w in enumerate(cfg.widths)]
