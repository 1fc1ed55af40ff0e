"""One cell of the coordinate check: every parameterization and seed at one width (JAX inside the functions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from studylib.coordcheck.config import CoordcheckConfig
from studylib.runner import Cell, Context


def settings(cfg: CoordcheckConfig) -> list:
    """The :class:`studylib.mup.Richness` of each parameterization of the config, at the model's ``gamma0`` and
    ``base_width``."""
    from studylib import mup

    return [mup.Richness(parameterization=p, gamma0=cfg.model.gamma0, base_width=cfg.model.base_width)
            for p in cfg.parameterizations]


def prepare(cfg: CoordcheckConfig, dataset, log) -> dict:
    """The base learning rate (width independent): ``lr_fraction`` x 2 N k / lambda_max of the analytic NTK."""
    from studylib import mup

    m = cfg.model
    lr = mup.base_learning_rate(dataset.x_train, out_dim=int(dataset.y_train.shape[1]), lr_fraction=cfg.lr_fraction,
                                depth=m.depth, activation=m.activation, W_std=m.W_std, b_std=m.b_std)
    return {"learning_rate": lr}


def run_cell(cfg: CoordcheckConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    """Per parameterization and seed, sizes and updates after every step: arrays (P, S, steps + 1, depth + 1)."""
    from studylib import mup, runner

    width = int(cell.spec["width"])
    m, data = cfg.model, ctx.dataset
    lr = float(ctx.shared["learning_rate"])
    out = mup.coordinate_check(width, data.x_train, data.y_train, learning_rate=lr, steps=cfg.steps,
                               seeds=runner.seed_list(cfg), settings=settings(cfg), depth=m.depth,
                               activation=m.activation, W_std=m.W_std, b_std=m.b_std, dtype=cfg.dtype)
    return {"width": width, "learning_rate": lr, **out}


def notes(cfg: CoordcheckConfig, cell: Cell, res: dict) -> list[str]:
    """A note for a width where some coordinate is not finite (the step diverged)."""
    import numpy as np

    bad = [p for i, p in enumerate(cfg.parameterizations) if not np.isfinite(res["update"][i]).all()]
    return [f"note: width {cell.spec['width']}: non-finite sizes under {', '.join(bad)} (diverged)"] if bad else []
