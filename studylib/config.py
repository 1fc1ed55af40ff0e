"""Configuration shared by every study: validation helpers, the model and the data.

Configs are frozen dataclasses that validate themselves in ``__post_init__``;
a bad value raises :class:`ConfigError` naming the field, the value given and
what is accepted -- before anything is compiled or trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

PARAMETERIZATIONS = ("ntk", "standard")
ACTIVATIONS = ("relu", "erf")
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A configuration value is not accepted. The message names field, value and rule."""


def check_int(field: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConfigError(f"{field}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{field}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(field: str, value: Any, *, positive: bool = True, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{field}: expected a finite number, got {value!r}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        rule = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{field}: must be {rule}, got {value!r}")
    return float(value)


def check_choice(field: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{field}: unknown value {value!r}; accepted: {', '.join(choices)}")
    return value


def check_int_list(field: str, values: Any, *, minimum: int = 1) -> tuple[int, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise ConfigError(f"{field}: expected a non-empty list of integers >= {minimum}, got {values!r}")
    out = tuple(check_int(f"{field}[{i}]", v, minimum=minimum) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ConfigError(f"{field}: values must be distinct, got {list(out)}")
    return out


def set_frozen(obj: Any, name: str, value: Any) -> None:
    """Normalise a field of a frozen dataclass inside ``__post_init__``."""
    object.__setattr__(obj, name, value)


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

    arch: str = "fc"
    depth: int = 5
    activation: str = "relu"
    W_std: float = math.sqrt(2.0)
    b_std: float = 0.1
    parameterization: str = "ntk"
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        from studylib.models import check_arch

        check_arch(self.arch)
        set_frozen(self, "depth", check_int("model.depth", self.depth, minimum=1))
        check_choice("model.activation", self.activation, ACTIVATIONS)
        set_frozen(self, "W_std", check_float("model.W_std", self.W_std))
        set_frozen(self, "b_std", check_float("model.b_std", self.b_std, allow_zero=True))
        check_choice("model.parameterization", self.parameterization, PARAMETERIZATIONS)
        if not isinstance(self.options, dict) or not all(isinstance(k, str) for k in self.options):
            raise ConfigError(f"model.options: expected a table of key = value, got {self.options!r}")

    def __hash__(self):
        return hash((self.arch, self.depth, self.activation, self.W_std, self.b_std, self.parameterization,
                     tuple(sorted((k, repr(v)) for k, v in self.options.items()))))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data and test inputs (see :mod:`studylib.data` for each dataset).

    ``name``: 'cubic' (the seed's: x = linspace(-train_range, train_range, n_train),
    y = x^3/20), 'sin' (y = sin(x) on the same grid), 'sphere' (``n_train`` points on the
    unit sphere in ``dim`` dimensions, as in Jacot et al. 2018), or 'file' (``path`` to an
    .npz with arrays x, y or a .csv with columns x..., y). For 1-D data the test inputs are
    a grid of ``n_test`` points on [-test_range, test_range]; metrics are reported on the
    training inputs, on the interpolation range |x| <= train_range and beyond it.
    """

    name: str = "cubic"
    n_train: int = 10
    train_range: float = 5.0
    test_range: float = 10.0
    n_test: int = 201
    dim: int = 3
    path: str = ""
    seed: int = 0

    def __post_init__(self):
        from studylib.data import DATASETS

        check_choice("data.name", self.name, DATASETS)
        set_frozen(self, "n_train", check_int("data.n_train", self.n_train, minimum=2))
        set_frozen(self, "train_range", check_float("data.train_range", self.train_range))
        set_frozen(self, "test_range", check_float("data.test_range", self.test_range))
        set_frozen(self, "n_test", check_int("data.n_test", self.n_test, minimum=3))
        set_frozen(self, "dim", check_int("data.dim", self.dim, minimum=2))
        set_frozen(self, "seed", check_int("data.seed", self.seed, minimum=0))
        if self.test_range <= self.train_range:
            raise ConfigError(
                f"data.test_range: must exceed data.train_range={self.train_range} so that an "
                f"extrapolation range exists, got {self.test_range}"
            )
        if self.name == "file":
            from studylib.data import check_file

            check_file(self.path)
        elif self.path:
            raise ConfigError(f"data.path: only used with data.name = 'file', got name {self.name!r}")


def check_model_data(cfg: Any) -> None:
    """A study config's nested ``model`` and ``data`` must be the config classes themselves."""
    if not isinstance(cfg.model, ModelConfig):
        raise ConfigError(f"model: expected a ModelConfig, got {type(cfg.model).__name__}")
    if not isinstance(cfg.data, DataConfig):
        raise ConfigError(f"data: expected a DataConfig, got {type(cfg.data).__name__}")


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)
