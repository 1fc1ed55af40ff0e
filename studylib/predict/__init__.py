"""The prediction study (``python -m study.predict``): how wide must my network be before it trains
like its linearization? Predicted from narrow nets at initialisation, without training any network.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from
:mod:`.config` (imported here: no JAX), the cell computation (:mod:`.cell`), the summary
(:mod:`.summary`), the console table and REPORT.md section (:mod:`.report`) and the figure
(:mod:`.plots`), each loaded when first used so that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
from studylib.predict.config import (
    ARRAYS_FILE,
    DEFAULT_PRESET,
    NAME,
    PRESETS,
    SWEEP_FIELDS,
    Config,
    PredictConfig,
    cells,
)

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "plan": "cell", "summarise": "summary",
         "format_table": "report", "section": "report", "figures": "plots"}
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)

__all__ = ["ARRAYS_FILE", "DEFAULT_PRESET", "NAME", "PRESETS", "SWEEP_FIELDS", "Config", "PredictConfig", "cells",
           "run", *_LAZY]
