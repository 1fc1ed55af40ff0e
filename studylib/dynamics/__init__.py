"""The dynamics study (``python -m study.dynamics``): the seed's experiment -- mini-batch SGD of the
network and its linearization across widths and batch sizes -- faithfully and with seeds.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from
:mod:`.config` (imported here: no JAX), the cell computation (:mod:`.cell`), the summary
(:mod:`.summary`), the console table and REPORT.md section (:mod:`.report`) and the figures
(:mod:`.plots`), each loaded when first used so that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
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
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)


__all__ = ["ARRAYS_FILE", "CELL_SETUP_SECONDS", "DEFAULT_PRESET", "DEVICES_NOTE", "LOSSES", "LOWRANK_FROM_WIDTH",
           "METHODS", "NAME", "PRESETS", "RUN_SETUP_SECONDS", "SEED_MODEL", "SEED_REPORTED_BATCH1", "SWEEP_FIELDS",
           "VMAP_BYTES", "WIDTH_SETUP_SECONDS", "Config",
           "DynamicsConfig", "analytic_lr", "analytic_ntk", "cell_cost", "cell_name", "cells", "learning_rate",
           "resolve_method", "run", "training_seconds", *_LAZY]
