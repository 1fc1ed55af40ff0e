"""Regenerate every study's figures from stored results alone (no training, no JAX).

Each results folder holds a ``summary.json`` whose ``study`` key picks the figure
function below; the functions read only what the study stored.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from studylib.results import read_json

#: study name -> "module:function" taking (results folder) and returning the paths it wrote.
FIGURE_FUNCTIONS = {
    "compare": "studylib.plots:compare_figures",
    "dynamics": "studylib.plots_dynamics:dynamics_figures",
    "ensemble": "studylib.plots_ensemble:ensemble_figures",
    "regimes": "studylib.plots_regimes:regimes_figures",
}
#: Where each study writes by default; ``python -m study.figures`` with no folder uses these.
DEFAULT_FOLDERS = ("results/compare", "results/dynamics_seed", "results/dynamics", "results/ensemble",
                   "results/regimes")


def study_of(folder: str | Path) -> str:
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no summary.json (is it a results folder of a study?)")
    study = read_json(path).get("study")
    if study not in FIGURE_FUNCTIONS:
        raise ValueError(f"{path}: study {study!r} has no figures; known: {', '.join(FIGURE_FUNCTIONS)}")
    return study


def figures_for(folder: str | Path) -> list[Path]:
    """Draw the figures of one results folder into that folder."""
    module, func = FIGURE_FUNCTIONS[study_of(folder)].split(":")
    return list(getattr(importlib.import_module(module), func)(Path(folder)))


def regenerate(folders, to: str | Path | None = None) -> list[Path]:
    """Redraw the figures of each folder; with ``to``, also copy them there (flat, names kept)."""
    written = []
    for folder in folders:
        paths = figures_for(folder)
        if to is not None:
            to = Path(to)
            to.mkdir(parents=True, exist_ok=True)
            paths = [Path(shutil.copy2(p, to / p.name)) for p in paths]
        written += paths
    return written
