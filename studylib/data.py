"""The seed's toy regression problem and the input regions metrics are reported on."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from studylib.config import DataConfig

#: Names accepted by ``DataConfig.name``.
DATASETS = ("cubic",)


class Dataset(NamedTuple):
    """Arrays are float64 NumPy; shapes: x_train (N, d), y_train (N, k), x_test (M, d).

    ``regions`` maps a region name to a boolean mask over the test grid.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    regions: dict[str, np.ndarray]


def cubic(cfg: DataConfig) -> Dataset:
    """x = linspace(-r, r, N), y = x^3/20 (the seed's data), test grid on [-R, R]."""
    x_train = np.linspace(-cfg.train_range, cfg.train_range, cfg.n_train)[:, None]
    y_train = x_train**3 / 20.0
    x_test = np.linspace(-cfg.test_range, cfg.test_range, cfg.n_test)[:, None]
    inside = np.abs(x_test[:, 0]) <= cfg.train_range + 1e-12
    return Dataset(x_train, y_train, x_test, {"interp": inside, "extrap": ~inside})


def load(cfg: DataConfig) -> Dataset:
    return {"cubic": cubic}[cfg.name](cfg)
