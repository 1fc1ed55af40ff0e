"""Validation helpers of every config (the model's and the data's configs live in :mod:`studylib.models`
and :mod:`studylib.data`, each study's in its wing).

Configs are frozen dataclasses that validate themselves in ``__post_init__``;
a bad value raises :class:`ConfigError` naming the field, the value given and
what is accepted -- before anything is compiled or trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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


def check_nested(cfg: Any, field: str, cls: type) -> None:
    """A study config's nested config ``field`` (e.g. ``model``) must be an instance of ``cls``."""
    value = getattr(cfg, field)
    if not isinstance(value, cls):
        raise ConfigError(f"{field}: expected a {cls.__name__}, got {type(value).__name__}")


#: A field's rule: (dotted field name, value) -> the normalised value, or ConfigError naming the field.
Check = Callable[[str, Any], Any]


def integer(minimum: int = 1) -> Check:
    return lambda field, value: check_int(field, value, minimum=minimum)


def number(*, positive: bool = True, allow_zero: bool = False) -> Check:
    return lambda field, value: check_float(field, value, positive=positive, allow_zero=allow_zero)


def integers(minimum: int = 1) -> Check:
    """A non-empty list of distinct integers >= ``minimum`` (as a tuple)."""
    return lambda field, value: check_int_list(field, value, minimum=minimum)


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)
    return lambda field, value: check_choice(field, value, choices)


def optional(check: Check) -> Check:
    """None, or what ``check`` accepts."""
    return lambda field, value: None if value is None else check(field, value)


def validate(cfg: Any, prefix: str = "") -> None:
    """Apply the rule each field declares (``flags.option(check=...)``), normalising the value in
    place, and require nested config fields to be instances of their class. Called first in every
    config's ``__post_init__``; rules that tie several fields together follow it there."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            if not isinstance(value, sub):
                raise ConfigError(f"{prefix}{f.name}: expected a {sub.__name__}, got {type(value).__name__}")
            continue
        check = f.metadata.get("check")
        if check is not None:
            set_frozen(cfg, f.name, check(prefix + f.name, value))
