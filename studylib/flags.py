"""How a config field declares its command-line flag (:func:`option`) and the parsers of flag text.

Imported by every config module (models, data, each wing's config) and by :mod:`studylib.cli`;
imports nothing of the study, so configs stay light and free of import circles.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from collections.abc import Callable
from typing import Any


def int_list(text: str) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64); errors are argparse errors."""
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> tuple[float, ...]:
    """'0.1,0.5' -> (0.1, 0.5)."""
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def str_list(text: str) -> tuple[str, ...]:
    """'ntk,standard' -> ('ntk', 'standard')."""
    return tuple(v for v in text.replace(" ", "").split(",") if v)


def key_value(text: str) -> tuple[str, Any]:
    """'blocks=3' -> ('blocks', 3); values parse as TOML scalars where they can, else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def option(default: Any = dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] | None = None,
           parse: Callable[[str], Any] | None = None, negate: str | None = None, metavar: str | None = None,
           default_factory: Any = dataclasses.MISSING, check: Callable[[str, Any], Any] | None = None) -> Any:
    """A config field with its command-line flag: ``help`` (the default is appended), ``flags``
    (spellings; default ``--field-name``), ``parse`` (default: from the default value's type),
    ``negate`` (a boolean field set False by this flag, e.g. ``--no-readout``), and ``check``, its
    rule (:mod:`studylib.config`: ``integer()``, ``number()``, ``one_of(...)``, ...), which
    :func:`studylib.config.validate` applies."""
    meta = {"help": help, "flags": flags, "parse": parse, "negate": negate, "metavar": metavar, "check": check}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
