"""Command-line plumbing shared by the ``study.*`` entry points.

A config is assembled from, in increasing priority: the dataclass defaults, a
named preset, a TOML file (``--config``; tables ``[model]`` and ``[data]`` for
the nested configs) and command-line flags. Unknown keys are errors naming the
key and the accepted ones. Nothing here imports JAX, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studylib.config import ConfigError


def int_list(text: str) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64); errors are argparse errors."""
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config: {path} is not valid TOML: {e}") from None


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build(cls: type, values: dict[str, Any], *, prefix: str = "") -> Any:
    """Instantiate the (nested) frozen dataclass ``cls`` from a plain dict.

    Fields that are dataclasses themselves take a sub-dict. Unknown keys raise
    :class:`ConfigError` listing the accepted ones. Lists become tuples.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; accepted: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in values.items():
        f = fields[name]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a table of keys, got {value!r}")
            kwargs[name] = build(sub, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def assemble(cls: type, *, presets: dict[str, dict], preset: str | None, config_file: str | None,
             flags: dict[str, Any]) -> Any:
    """defaults < preset < TOML file < flags (flags whose value is None are not given)."""
    if preset is not None and preset not in presets:
        raise ConfigError(f"--preset: unknown value {preset!r}; accepted: {', '.join(presets)}")
    values: dict[str, Any] = {}
    if preset is not None:
        values = merge(values, presets[preset])
    if config_file is not None:
        values = merge(values, read_toml(config_file))
    nested: dict[str, Any] = {}
    for key, v in flags.items():
        if v is None:
            continue
        if key.endswith(".options"):
            v = dict(v)
        if "." in key:
            head, tail = key.split(".", 1)
            nested.setdefault(head, {})[tail] = v
        else:
            nested[key] = v
    values = merge(values, nested)
    return build(cls, values)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for :class:`studylib.config.ModelConfig` (dest 'model.<field>')."""
    g = parser.add_argument_group("model")
    g.add_argument("--arch", dest="model.arch", help="architecture name (default: fc)")
    g.add_argument("--depth", dest="model.depth", type=int, help="number of hidden layers (default: 5)")
    g.add_argument("--activation", dest="model.activation", help="relu (default) or erf")
    g.add_argument("--W-std", dest="model.W_std", type=float, help="weight scale (default: sqrt 2)")
    g.add_argument("--b-std", dest="model.b_std", type=float, help="bias scale (default: 0.1)")
    g.add_argument("--parameterization", dest="model.parameterization", help="ntk (default) or standard")
    g.add_argument("--arch-option", dest="model.options", action="append", type=key_value, metavar="KEY=VALUE",
                   help="extra setting for the architecture builder (repeatable), e.g. blocks=3")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for :class:`studylib.config.DataConfig` (dest 'data.<field>')."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", dest="data.name", help="cubic (default, the seed's), sin, sphere or file")
    g.add_argument("--data-path", dest="data.path", help="with --data file: a .npz (x, y) or .csv (x..., y)")
    g.add_argument("--n-train", dest="data.n_train", type=int, help="number of training points (default: 10)")
    g.add_argument("--dim", dest="data.dim", type=int, help="input dimension for --data sphere (default: 3)")


def key_value(text: str) -> tuple[str, Any]:
    """'blocks=3' -> ('blocks', 3); values parse as TOML scalars where they can, else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def main_guard(fn: Callable[[], Any]) -> None:
    """Run ``fn``; a :class:`ConfigError` becomes a one-line message and exit status 2."""
    try:
        fn()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
