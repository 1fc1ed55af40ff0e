"""The comparison study (``python -m study.compare``): finite network vs its linearization vs the
infinite-width closed form, across widths.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from
:mod:`.config` (imported here: no JAX), the cell computation (:mod:`.cell`), the summary
(:mod:`.summary`), the console table and REPORT.md section (:mod:`.report`) and the figures
(:mod:`.plots`), each loaded when first used so that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
from studylib.compare.config import (
    ARRAYS_FILE,
    DEFAULT_PRESET,
    GAPS,
    NAME,
    PRESETS,
    REFERENCE_RATES,
    REGIONS,
    SWEEP_FIELDS,
    TABLE_METRICS,
    CompareConfig,
    Config,
    cells,
)

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "plan": "cell", "memory_plan": "cell",
         "run_width": "cell", "summarise": "summary", "format_table": "report", "section": "report",
         "figures": "plots", "prestart_figures": "plots",
         "discard_prestarted": "plots"}
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)


__all__ = ["ARRAYS_FILE", "DEFAULT_PRESET", "GAPS", "NAME", "PRESETS", "REFERENCE_RATES", "REGIONS", "SWEEP_FIELDS",
           "TABLE_METRICS", "CompareConfig", "Config", "cells", "run", *_LAZY]
