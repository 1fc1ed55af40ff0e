"""How wide for how much data (``python -m study.datasize``): centred FC networks trained to (near) their
plateau on growing training sets, against the infinite-width closed form -- at which width does the network's
test loss come within a tolerance of the kernel's, beside Atanasov et al. 2023 (finite nets fall behind the
infinite-width learning curve once N exceeds about sqrt(width)).

The face every study shares (see :mod:`studylib.runner`): the config and its cells from :mod:`.config`
(imported here: no JAX), the cell computation (:mod:`.cell`), the summary (:mod:`.summary`), the console
table and REPORT.md section (:mod:`.report`) and the figures (:mod:`.plots`), each loaded when first used so
that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
from studylib.datasize.config import (
    ARRAYS_FILE,
    DEFAULT_PRESET,
    NAME,
    PRESETS,
    SWEEP_FIELDS,
    Config,
    DatasizeConfig,
    cells,
    needs_x64,
)

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "summarise": "summary", "format_table": "report",
         "section": "report", "figures": "plots"}
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)

__all__ = ["ARRAYS_FILE", "DEFAULT_PRESET", "NAME", "PRESETS", "SWEEP_FIELDS", "Config", "DatasizeConfig", "cells",
           "needs_x64", "run", *_LAZY]
