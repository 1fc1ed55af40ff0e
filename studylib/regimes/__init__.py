"""The regimes study (``python -m study.regimes``): mode-resolved dynamics and a map of the lazy
regime -- where the NTK theory holds and where it fails.

A *cell* is one setting (learning rate as a fraction of the critical rate, depth, input scale,
parameterization, model option) at one width, all seeds trained together by full-batch GD; the
map sweeps width against each other axis in turn around a base cell (``sweep='one_at_a_time'``;
the ``full`` preset takes the whole product), and measures model options (centred, doubled,
smaller output scale, float64) at the base cell.

The face every study shares (see :mod:`studylib.runner`): the config, settings and cells from
:mod:`.config` (imported here: no JAX), the cell computation (:mod:`.cell`), the summary
(:mod:`.summary`), the console table and REPORT.md section (:mod:`.report`) and the figures
(:mod:`.plots`), each loaded when first used so that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
from studylib.regimes.config import (
    ARRAYS_FILE,
    AXES,
    DEFAULT_PRESET,
    NAME,
    OPTIONS,
    PRESETS,
    SWEEPS,
    Config,
    RegimesConfig,
    cell_spec,
    cells,
    key_config,
    needs_x64,
    setting_label,
    settings,
)

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "variant_model": "cell",
         "summarise": "summary", "wide_enough": "summary", "correlation": "summary",
         "format_table": "report", "section": "report", "figures": "plots"}
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)


__all__ = ["ARRAYS_FILE", "AXES", "DEFAULT_PRESET", "NAME", "OPTIONS", "PRESETS", "SWEEPS", "Config",
           "RegimesConfig", "cell_spec", "cells", "key_config", "needs_x64", "run", "setting_label", "settings",
           *_LAZY]
