"""Regenerate every study's figures from stored results alone (no training, no JAX).

Each results folder holds a ``summary.json`` whose ``study`` key names the wing
(:data:`STUDIES`); the wing's ``figures(folder)`` reads only what the study stored.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from studylib.results import read_json

#: The studies (wings of ``studylib``) whose results folders can be drawn and reported.
STUDIES = ("compare", "dynamics", "ensemble", "regimes", "controls", "predict", "coordcheck", "datasize")
#: Where each study writes by default; ``python -m study.figures`` with no folder uses these.
DEFAULT_FOLDERS = ("results/compare", "results/dynamics_seed", "results/dynamics", "results/ensemble",
                   "results/regimes", "results/controls", "results/predict", "results/coordcheck",
                   "results/datasize")


def study_of(folder: str | Path) -> str:
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no summary.json (is it a results folder of a study?)")
    study = read_json(path).get("study")
    if study not in STUDIES:
        raise ValueError(f"{path}: study {study!r} has no figures; known: {', '.join(STUDIES)}")
    return study


def face(study: str):
    """The wing ``studylib.<study>`` (its light face: importing it loads no JAX)."""
    return importlib.import_module(f"studylib.{study}")


def figures_for(folder: str | Path) -> list[Path]:
    """Draw the figures of one results folder into that folder."""
    return list(face(study_of(folder)).figures(Path(folder)))


def copy_name(folder: str | Path, study: str, name: str) -> str:
    """The name of a figure copied out of ``folder``: unchanged for the study's default folder
    (``results/compare``), else the study prefix becomes the folder's name, so that two folders of
    one study never overwrite each other (``results/dynamics_seed`` -> ``dynamics_seed_b1.png``,
    ``results/mine`` -> ``compare_mine_gaps_vs_width.png``)."""
    base = Path(folder).resolve().name
    if base == study or not name.startswith(study):
        return name
    prefix = base if base.startswith(study) else f"{study}_{base}"
    return prefix + name[len(study):]


def regenerate(folders, to: str | Path | None = None) -> list[Path]:
    """Redraw the figures of each folder; with ``to``, also copy them there (named by
    :func:`copy_name`)."""
    written = []
    for folder in folders:
        study = study_of(folder)
        paths = figures_for(folder)
        if to is not None:
            to = Path(to)
            to.mkdir(parents=True, exist_ok=True)
            paths = [Path(shutil.copy2(p, to / copy_name(folder, study, p.name))) for p in paths]
        written += paths
    return written
