"""The dynamics study (``python -m study.dynamics``): the seed's experiment -- mini-batch SGD of the
network and its linearization across widths and batch sizes -- faithfully and with seeds.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from
:mod:`.config` (imported here: no JAX), the cell computation (:mod:`.cell`), the summary
(:mod:`.summary`), the console table and REPORT.md section (:mod:`.report`) and the figures
(:mod:`.plots`), each loaded when first used so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib

from studylib.dynamics.config import (
    ARRAYS_FILE,
    CELL_SETUP_SECONDS,
    DEFAULT_PRESET,
    DEVICES_NOTE,
    LOSSES,
    LOWRANK_FROM_WIDTH,
    METHODS,
    NAME,
    PRESETS,
    RUN_SETUP_SECONDS,
    SEED_MODEL,
    SEED_REPORTED_BATCH1,
    SWEEP_FIELDS,
    VMAP_BYTES,
    WIDTH_SETUP_SECONDS,
    Config,
    DynamicsConfig,
    analytic_lr,
    analytic_ntk,
    cell_cost,
    cell_name,
    cells,
    learning_rate,
    resolve_method,
    training_seconds,
)

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "summarise": "summary", "format_table": "report",
         "section": "report", "figures": "plots"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(cfg: DynamicsConfig, out=None, **kwargs) -> dict:
    """:func:`studylib.runner.run` of this study (``progress``, ``force``, ``clean``, ``stop_after``)."""
    import sys

    from studylib import runner

    return runner.run(sys.modules[__name__], cfg, out, **kwargs)


__all__ = ["ARRAYS_FILE", "CELL_SETUP_SECONDS", "DEFAULT_PRESET", "DEVICES_NOTE", "LOSSES", "LOWRANK_FROM_WIDTH",
           "METHODS", "NAME", "PRESETS", "RUN_SETUP_SECONDS", "SEED_MODEL", "SEED_REPORTED_BATCH1", "SWEEP_FIELDS",
           "VMAP_BYTES", "WIDTH_SETUP_SECONDS", "Config",
           "DynamicsConfig", "analytic_lr", "analytic_ntk", "cell_cost", "cell_name", "cells", "learning_rate",
           "resolve_method", "run", "training_seconds", *_LAZY]
