"""The positive controls (``python -m study.controls``): settings where the theory guarantees that
a network follows its linearization, measured with the same code as the studies -- Chizat, Oyallon
& Bach 2019's lazy scaling (an alpha axis at two widths, erf and ReLU) and a width sweep that
closes the gap.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from
:mod:`.config` (imported here: no JAX), the cell computation (:mod:`.cell`), the summary
(:mod:`.summary`), the console table and REPORT.md section (:mod:`.report`) and the figures
(:mod:`.plots`), each loaded when first used so that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
from studylib.controls.config import (
    ARRAYS_FILE,
    CONTROLS,
    DEFAULT_PRESET,
    NAME,
    PRESETS,
    SWEEP_FIELDS,
    Config,
    ControlsConfig,
    cells,
    key_config,
)

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "summarise": "summary", "format_table": "report",
         "section": "report", "figures": "plots"}
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)

__all__ = ["ARRAYS_FILE", "CONTROLS", "DEFAULT_PRESET", "NAME", "PRESETS", "SWEEP_FIELDS", "Config", "ControlsConfig",
           "cells", "key_config", "run", *_LAZY]
