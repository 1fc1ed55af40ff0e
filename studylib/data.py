"""Datasets: the seed's toy regression problem, and others through the same interface.

Every dataset gives float64 arrays x_train (N, d), y_train (N, 1), x_test (M, d) and
boolean masks over the test inputs: ``interp`` (inside the training range) and
``extrap`` (outside it; empty where the notion does not apply).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from studylib.config import ConfigError, integer, number, one_of, validate
from studylib.flags import option

if TYPE_CHECKING:  # NumPy is imported where used, so that --help (which builds DataConfig flags) stays fast
    import numpy as np

#: Names accepted by ``DataConfig.name``.
DATASETS = ("cubic", "sin", "sphere", "file")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data and test inputs (see :mod:`studylib.data` for each dataset).

    ``name``: 'cubic' (the seed's: x = linspace(-train_range, train_range, n_train),
    y = x^3/20), 'sin' (y = sin(x) on the same grid), 'sphere' (``n_train`` points on the
    unit sphere in ``dim`` dimensions, as in Jacot et al. 2018), or 'file' (``path`` to an
    .npz with arrays x, y or a .csv with columns x..., y). For 1-D data the test inputs are
    a grid of ``n_test`` points on [-test_range, test_range]; metrics are reported on the
    training inputs, on the interpolation range |x| <= train_range and beyond it.
    """

    name: str = option("cubic", "dataset: cubic (the seed's), sin, sphere or file", flags=("--data",),
                       check=one_of(DATASETS))
    n_train: int = option(10, "number of training points", check=integer(2))
    train_range: float = option(5.0, "training inputs x in [-x_range, x_range] (1-D data)", flags=("--x-range",),
                                check=number())
    test_range: float = option(10.0, "test grid on [-test_range, test_range] (1-D data)", check=number())
    n_test: int = option(201, "number of test inputs", check=integer(3))
    dim: int = option(3, "input dimension of --data sphere", check=integer(2))
    path: str = option("", "with --data file: a .npz (x, y) or .csv (x..., y)", flags=("--data-path",))
    seed: int = option(0, "seed of random datasets (sphere)", flags=("--data-seed",), check=integer(0))

    def __post_init__(self):
        validate(self, "data.")
        if self.test_range <= self.train_range:
            raise ConfigError(
                f"data.test_range: must exceed data.train_range={self.train_range} so that an "
                f"extrapolation range exists, got {self.test_range}"
            )
        if self.name == "file":
            check_file(self.path)
        elif self.path:
            raise ConfigError(f"data.path: only used with data.name = 'file', got name {self.name!r}")



class Dataset(NamedTuple):
    """Arrays are float64 NumPy; shapes: x_train (N, d), y_train (N, k), x_test (M, d).

    ``regions`` maps a region name to a boolean mask over the test inputs.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    regions: dict[str, np.ndarray]


def _grid_1d(cfg: DataConfig, fn) -> Dataset:
    import numpy as np

    x_train = np.linspace(-cfg.train_range, cfg.train_range, cfg.n_train)[:, None]
    x_test = np.linspace(-cfg.test_range, cfg.test_range, cfg.n_test)[:, None]
    inside = np.abs(x_test[:, 0]) <= cfg.train_range + 1e-12
    return Dataset(x_train, fn(x_train), x_test, {"interp": inside, "extrap": ~inside})


def cubic(cfg: DataConfig) -> Dataset:
    """x = linspace(-r, r, N), y = x^3/20 (the seed's data), test grid on [-R, R]."""
    return _grid_1d(cfg, lambda x: x**3 / 20.0)


def sin(cfg: DataConfig) -> Dataset:
    """y = sin(x) on the same grids as :func:`cubic`."""
    import numpy as np

    return _grid_1d(cfg, np.sin)


def sphere(cfg: DataConfig) -> Dataset:
    """``n_train`` and ``n_test`` points uniform on the unit sphere S^(dim-1) (Jacot et al. 2018 use
    such inputs so that the NTK depends only on angles), y = x_0 + 2 x_0 x_1 + sin(3 x_2 ...), a
    smooth target with linear and non-linear parts. All test points lie 'inside' (no extrapolation)."""
    import numpy as np

    rng = np.random.default_rng(cfg.seed)

    def points(n):
        z = rng.standard_normal((n, cfg.dim))
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    def target(x):
        return (x[:, :1] + 2.0 * x[:, :1] * x[:, 1:2] + np.sin(3.0 * x[:, -1:]))

    x_train, x_test = points(cfg.n_train), points(cfg.n_test)
    inside = np.ones(cfg.n_test, bool)
    return Dataset(x_train, target(x_train), x_test, {"interp": inside, "extrap": ~inside})


def _read_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, d), y (N, 1)) from .npz (arrays 'x', 'y') or .csv (columns x..., y; header optional)."""
    import numpy as np

    p = Path(path)
    if p.suffix == ".npz":
        try:
            with np.load(p) as z:
                if "x" not in z.files or "y" not in z.files:
                    raise ConfigError(f"data.path: {p} must hold arrays 'x' and 'y', found {z.files}")
                x, y = np.asarray(z["x"], np.float64), np.asarray(z["y"], np.float64)
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.path: cannot read {p} as .npz ({e})") from None
    elif p.suffix == ".csv":
        try:
            table = np.genfromtxt(p, delimiter=",", dtype=np.float64, skip_header=_has_header(p), ndmin=2)
        except ValueError as e:
            raise ConfigError(f"data.path: cannot parse {p} as CSV of numbers ({e})") from None
        if table.shape[1] < 2:
            raise ConfigError(f"data.path: {p} needs at least two columns (x..., y), found {table.shape[1]}")
        x, y = table[:, :-1], table[:, -1]
    else:
        raise ConfigError(f"data.path: unsupported file type {p.suffix!r}; accepted: .npz, .csv")
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2 or y.shape[1] != 1:
        raise ConfigError(f"data.path: expected x of shape (N, d) and y of shape (N,) or (N, 1), got "
                          f"{x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"data.path: x has {x.shape[0]} rows but y has {y.shape[0]}")
    if x.shape[0] < 2:
        raise ConfigError(f"data.path: need at least 2 training points, got {x.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError(f"data.path: {p} contains NaN/inf or non-numeric entries")
    return x, y


def _has_header(p: Path) -> int:
    first = p.read_text().splitlines()[:1]
    if not first:
        raise ConfigError(f"data.path: {p} is empty")
    try:
        [float(v) for v in first[0].split(",")]
        return 0
    except ValueError:
        return 1


def check_file(path: str) -> None:
    """Validate a data file up front (missing, malformed, NaN, mismatched shapes)."""
    if not path:
        raise ConfigError("data.path: required when data.name = 'file' (a .npz with x, y or a .csv x..., y)")
    if not Path(path).is_file():
        raise ConfigError(f"data.path: file not found: {path}")
    _read_file(path)


def from_file(cfg: DataConfig) -> Dataset:
    """A user's data. 1-D inputs get a test grid on [-test_range, test_range] with regions as for
    :func:`cubic` (train_range = max |x|); higher-dimensional inputs are tested on the training inputs."""
    import numpy as np

    x, y = _read_file(cfg.path)
    if x.shape[1] == 1:
        reach = float(np.abs(x).max())
        x_test = np.linspace(-max(cfg.test_range, 2 * reach), max(cfg.test_range, 2 * reach), cfg.n_test)[:, None]
        inside = np.abs(x_test[:, 0]) <= reach + 1e-12
    else:
        x_test, inside = x.copy(), np.ones(x.shape[0], bool)
    return Dataset(x, y, x_test, {"interp": inside, "extrap": ~inside})


def load(cfg: DataConfig) -> Dataset:
    return {"cubic": cubic, "sin": sin, "sphere": sphere, "file": from_file}[cfg.name](cfg)
