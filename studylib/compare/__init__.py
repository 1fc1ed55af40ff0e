"""The comparison study (``python -m study.compare``): finite network vs its linearization vs the
infinite-width closed form, across widths.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from
:mod:`.config` (imported here: no JAX), the cell computation (:mod:`.cell`), the summary
(:mod:`.summary`), the console table and REPORT.md section (:mod:`.report`) and the figures
(:mod:`.plots`), each loaded when first used so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib

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
         "figures": "plots"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(cfg: CompareConfig, out=None, **kwargs) -> dict:
    """:func:`studylib.runner.run` of this study (``progress``, ``force``, ``clean``, ``stop_after``)."""
    import sys

    from studylib import runner

    return runner.run(sys.modules[__name__], cfg, out, **kwargs)


__all__ = ["ARRAYS_FILE", "DEFAULT_PRESET", "GAPS", "NAME", "PRESETS", "REFERENCE_RATES", "REGIONS", "SWEEP_FIELDS",
           "TABLE_METRICS", "CompareConfig", "Config", "cells", "run", *_LAZY]
