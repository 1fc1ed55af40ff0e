"""The coordinate check (``python -m study.coordcheck``): microsoft/mup's standard test of a parameterization --
the per-coordinate size of every layer's activations and of their change over the first GD steps, across
widths -- for NTK parameterization and μP (:mod:`studylib.mup`, Yang & Hu 2021) side by side.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from :mod:`.config`
(imported here: no JAX), the cell computation (:mod:`.cell`), the summary (:mod:`.summary`), the console
table and REPORT.md section (:mod:`.report`) and the figure (:mod:`.plots`), each loaded when first used so
that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
from studylib.coordcheck.config import (
    ARRAYS_FILE,
    DEFAULT_PRESET,
    NAME,
    PRESETS,
    SWEEP_FIELDS,
    Config,
    CoordcheckConfig,
    cells,
    key_config,
)

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "summarise": "summary", "format_table": "report",
         "section": "report", "figures": "plots"}
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)

__all__ = ["ARRAYS_FILE", "DEFAULT_PRESET", "NAME", "PRESETS", "SWEEP_FIELDS", "Config", "CoordcheckConfig", "cells",
           "key_config", "run", *_LAZY]
