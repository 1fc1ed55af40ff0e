"""Datasets: the seed's toy regression problem, bundled real data sets and a user's file, through one interface.

Every dataset gives float64 NumPy arrays (:class:`Dataset`): ``x_train (N, ...)``, ``y_train (N, k)``,
``x_test (M, ...)``, boolean masks over the test inputs (``regions``: ``interp`` inside the training
range, ``extrap`` outside it, empty where the notion does not apply), the held-out targets
``y_test (M, k)`` (None where there are none) and ``n_classes`` (> 0 for classification).

Conventions (issue 13; Lee et al. 2019 §3 and Lee et al. 2020 §2 train with MSE on zero-mean one-hot
targets):

* **Classification** targets are one-hot and centred: ``y = e_label - 1/k`` (0.9 / -0.1 for k = 10),
  so every row sums to zero and the predicted class is ``argmax(y)`` (:func:`labels`).
  ``targets='raw'`` regresses on the label itself as one scalar, centred by the mean training label.
* **Inputs** of the bundled sets are standardised per feature with the training statistics
  (``(x - mean_train) / std_train``, a pixel being a feature; features constant on the training set
  become 0 in train and test). A file's inputs are used as given.
* **Subsets** are deterministic in ``DataConfig.seed`` and class-balanced: each class gets
  ``n // k`` examples and the first ``n % k`` classes one more (capped by what a class has, the rest
  spread over the others); test examples never overlap training ones.
* **Layout**: images are stored NHWC, ``(N, H, W, C)``; :func:`arrange` flattens them for dense
  networks or keeps them for conv nets (``DataConfig.layout``, default: the architecture's, see
  :func:`studylib.models.input_layout`); :func:`load_for` is load + arrange.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from studylib.config import ConfigError, integer, number, one_of, optional, set_frozen, validate
from studylib.flags import option

if TYPE_CHECKING:  # NumPy is imported where used, so that --help (which builds DataConfig flags) stays fast
    import numpy as np

#: Names accepted by ``DataConfig.name``.
DATASETS = ("cubic", "sin", "sphere", "digits", "diabetes", "file")
#: ``DataConfig.layout``: 'auto' = the architecture's (:func:`studylib.models.input_layout`).
LAYOUTS = ("auto", "flat", "image")
#: ``DataConfig.targets``.
TARGETS = ("onehot", "raw")
#: Default (n_train, n_test) per dataset; None = everything the file holds.
DEFAULT_SIZES: dict[str, tuple[int | None, int | None]] = {
    "cubic": (10, 201), "sin": (10, 201), "sphere": (10, 201), "digits": (256, 512), "diabetes": (256, 186),
    "file": (None, None),
}
#: Size, shape of one input and number of classes (0: regression) of the bundled sets (scikit-learn's
#: ``load_digits``: 1797 8x8 grey images of 10 digits; ``load_diabetes``: 442 patients, 10 features);
#: a test checks them against scikit-learn, so a config is checked without importing it.
BUNDLED = {"digits": (1797, (8, 8, 1), 10), "diabetes": (442, (10,), 0)}
#: Arrays a data .npz may hold.
NPZ_ARRAYS = ("x", "y", "x_test", "y_test")
#: Test-grid size of 1-D files without x_test (the seed's).
GRID_POINTS = 201
#: Largest magnitude of a value in a data file: squared (kernels, losses) and summed over examples,
#: features and layers in float32 (largest 3.4e38), larger values overflow or lose every digit; measured
#: (study.compare, tiny preset, inputs scaled to 1e8: the width-8 nets diverged at step 0; 1e10: eigh failed).
MAX_ABS_VALUE = 1e6


def _fraction(field: str, value: Any) -> float:
    v = number(positive=False)(field, value)
    if not 0.0 < v < 1.0:
        raise ConfigError(f"{field}: must lie strictly between 0 and 1, got {value!r}")
    return v


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data and test inputs (see :mod:`studylib.data` for each dataset).

    ``name``: 'cubic' (the seed's: x = linspace(-train_range, train_range, n_train),
    y = x^3/20), 'sin' (y = sin(x) on the same grid), 'sphere' (``n_train`` points on the
    unit sphere in ``dim`` dimensions, as in Jacot et al. 2018), 'digits' (scikit-learn's bundled
    8x8 digits, 10 classes, stored as (N, 8, 8, 1) images), 'diabetes' (scikit-learn's bundled
    regression set, 10 features) or 'file' (``path`` to an .npz with x (N, ...), y (N,) or (N, k),
    optional x_test, y_test; or a .csv with columns x..., y). For 1-D data the test inputs are
    a grid of ``n_test`` points on [-test_range, test_range]; metrics are reported on the
    training inputs, on the interpolation range |x| <= train_range and beyond it.

    ``n_train`` / ``n_test`` / ``targets`` given as None take the dataset's default
    (:data:`DEFAULT_SIZES`; a file: all it holds; targets 'onehot' for digits, else 'raw'); after
    construction they are always an int and a str.
    """

    name: str = option("cubic", "dataset: cubic (the seed's), sin, sphere, digits, diabetes or file",
                       flags=("--data",), check=one_of(DATASETS))
    n_train: int | None = option(None, "number of training points; by default the dataset's: cubic/sin/sphere "
                                 "10, digits 256, diabetes 256, file all it holds (shown: the default dataset's)",
                                 parse=int, check=optional(integer(2)))
    train_range: float = option(5.0, "training inputs x in [-x_range, x_range] (1-D data)", flags=("--x-range",),
                                check=number())
    test_range: float = option(10.0, "test grid on [-test_range, test_range] (1-D data)", check=number())
    n_test: int | None = option(None, "number of test inputs; by default the dataset's: 1-D grids 201, digits "
                                "512, diabetes 186, file all held out (shown: the default dataset's)",
                                parse=int, check=optional(integer(1)))
    dim: int = option(3, "input dimension of --data sphere", check=integer(2))
    path: str = option("", "with --data file: a .npz (x, y[, x_test, y_test]) or .csv (x..., y)",
                       flags=("--data-path",))
    seed: int = option(0, "seed of random datasets (sphere) and of subsets and splits", flags=("--data-seed",),
                       check=integer(0))
    layout: str = option("auto", "input layout: auto (the architecture's), flat (N, features) or image "
                         "(N, H, W, C)", check=one_of(LAYOUTS))
    targets: str | None = option(None, "onehot (centred one-hot of class labels) or raw (the values as given, "
                                 "labels as a scalar); by default onehot for digits, raw otherwise (shown: the "
                                 "default dataset's)",
                                 parse=str, check=optional(one_of(TARGETS)))
    test_fraction: float = option(0.25, "with --data file without x_test and inputs of more than one "
                                  "dimension: fraction held out for testing", check=_fraction)

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
        if self.targets is None:
            set_frozen(self, "targets", "onehot" if self.name == "digits" else "raw")
        if self.targets == "onehot" and self.name not in ("digits", "file"):
            raise ConfigError(f"data.targets: 'onehot' needs class labels; {self.name!r} is a regression set "
                              f"(accepted for it: raw)")
        n_train_max, n_test_max = available(self)
        defaults = DEFAULT_SIZES[self.name]
        if self.n_train is None:
            set_frozen(self, "n_train", defaults[0] if defaults[0] is not None else n_train_max)
        if self.n_test is None:
            fallback = n_test_max if n_test_max is not None else GRID_POINTS  # a 1-D file's test grid
            set_frozen(self, "n_test", defaults[1] if defaults[1] is not None else fallback)
        _check_sizes(self, n_train_max, n_test_max)
        if self.layout == "image" and len(example_shape(self)) < 2:
            raise ConfigError(f"data.layout: 'image' needs image inputs (N, H, W[, C]); data {self.name!r} has "
                              f"inputs of shape (N, {', '.join(map(str, example_shape(self)))})")


class Dataset(NamedTuple):
    """Arrays are float64 NumPy; shapes: x_train (N, ...), y_train (N, k), x_test (M, ...),
    y_test (M, k) or None (no held-out targets, e.g. a 1-D file's test grid).

    ``regions`` maps a region name to a boolean mask over the test inputs. ``n_classes`` > 0:
    classification with centred one-hot targets (``e_label - 1/k``), labels = ``argmax(y)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    regions: dict[str, np.ndarray]
    y_test: np.ndarray | None = None
    n_classes: int = 0


# --------------------------------------------------------------------------------------------------- helpers


def one_hot(labels, n_classes: int) -> np.ndarray:
    """Centred one-hot targets (N, k): ``e_label - 1/k`` (Lee et al. 2019/2020's zero-mean one-hot)."""
    import numpy as np

    return np.eye(n_classes)[np.asarray(labels, int)] - 1.0 / n_classes


def labels(y) -> np.ndarray:
    """Class labels (N,) of targets or outputs (N, k): argmax over the last axis."""
    import numpy as np

    return np.argmax(np.asarray(y), axis=-1)


def standardise(x_train, x_test) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature standardisation with training statistics: every entry of one example (a pixel of
    an image) is a feature; ``(x - mean_train) / std_train``, features constant on the training set
    set to 0 in both. Shapes are kept."""
    import numpy as np

    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    varies = std > 0
    scale = np.where(varies, std, 1.0)
    return (np.where(varies, (x_train - mean) / scale, 0.0),
            np.where(varies, (x_test - mean) / scale, 0.0))


def balanced_counts(class_sizes, n: int) -> list[int]:
    """How many of ``n`` examples each class gives: ``n // k`` each, the first ``n % k`` classes one
    more, a class short of examples giving all it has and the rest spread over the others."""
    sizes = [int(s) for s in class_sizes]
    if n > sum(sizes):
        raise ValueError(f"{n} examples requested from classes of sizes {sizes}")
    counts = [0] * len(sizes)
    open_, left = list(range(len(sizes))), n
    while left:
        short = [c for c in open_ if sizes[c] * len(open_) <= left]  # cannot give an equal share: give all
        if not short:
            share, extra = divmod(left, len(open_))
            for i, c in enumerate(open_):
                counts[c] = share + (i < extra)
            break
        for c in short:
            counts[c] = sizes[c]
            left -= sizes[c]
        open_ = [c for c in open_ if c not in short]
    return counts


def subsets(seed: int, n_total: int, sizes: list[int], labels_=None) -> list[np.ndarray]:
    """Disjoint sorted index arrays into ``range(n_total)`` of the given sizes, in order; class-balanced
    (:func:`balanced_counts`, from what earlier subsets left) when ``labels_`` (N,) of class indices
    0..k-1 is given, else uniform. Deterministic in ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if labels_ is None:
        perm = rng.permutation(n_total)
        bounds = np.cumsum([0, *sizes])
        return [np.sort(perm[a:b]) for a, b in itertools.pairwise(bounds)]
    labels_ = np.asarray(labels_)
    k = int(labels_.max()) + 1
    pools = [rng.permutation(np.flatnonzero(labels_ == c)) for c in range(k)]
    used = [0] * k
    out = []
    for n in sizes:
        counts = balanced_counts([len(p) - u for p, u in zip(pools, used, strict=True)], n)
        out.append(np.sort(np.concatenate([p[u:u + m] for p, u, m in zip(pools, used, counts, strict=True)])))
        used = [u + m for u, m in zip(used, counts, strict=True)]
    return out


def _regions_all_inside(m: int) -> dict[str, np.ndarray]:
    import numpy as np

    inside = np.ones(m, bool)
    return {"interp": inside, "extrap": ~inside}


# --------------------------------------------------------------------------------------------------- toy sets


def _grid_1d(cfg: DataConfig, fn) -> Dataset:
    import numpy as np

    x_train = np.linspace(-cfg.train_range, cfg.train_range, cfg.n_train)[:, None]
    x_test = np.linspace(-cfg.test_range, cfg.test_range, cfg.n_test)[:, None]
    inside = np.abs(x_test[:, 0]) <= cfg.train_range + 1e-12
    return Dataset(x_train, fn(x_train), x_test, {"interp": inside, "extrap": ~inside}, fn(x_test))


def cubic(cfg: DataConfig) -> Dataset:
    """x = linspace(-r, r, N), y = x^3/20 (the seed's data), test grid on [-R, R] with y_test = x^3/20."""
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
    return Dataset(x_train, target(x_train), x_test, _regions_all_inside(cfg.n_test), target(x_test))


# --------------------------------------------------------------------------------------------------- bundled sets


def digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled ``load_digits`` (1797 8x8 grey images, values 0-16, 10 classes; no
    download): class-balanced disjoint subsets of ``n_train`` and ``n_test`` images drawn with
    ``seed``, stored NHWC (N, 8, 8, 1), standardised per pixel with training statistics
    (:func:`standardise`); targets centred one-hot (``targets='onehot'``, n_classes 10) or the digit
    0-9 as one scalar centred by the mean training label (``'raw'``)."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, label = np.asarray(bunch.images, np.float64)[..., None], np.asarray(bunch.target, int)
    train, test = subsets(cfg.seed, len(label), [cfg.n_train, cfg.n_test], label)
    x_train, x_test = standardise(images[train], images[test])
    if cfg.targets == "onehot":
        return Dataset(x_train, one_hot(label[train], 10), x_test, _regions_all_inside(len(test)),
                       one_hot(label[test], 10), 10)
    y = label.astype(np.float64)[:, None]
    centre = y[train].mean()
    return Dataset(x_train, y[train] - centre, x_test, _regions_all_inside(len(test)), y[test] - centre)


def diabetes(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled ``load_diabetes`` (442 patients, 10 features, disease progression after
    a year): disjoint random subsets of ``n_train`` and ``n_test`` drawn with ``seed``, inputs
    standardised per feature and the target standardised ((y - mean) / std), both with training
    statistics; y (N, 1)."""
    import numpy as np
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    x, y = np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.float64)[:, None]
    train, test = subsets(cfg.seed, len(y), [cfg.n_train, cfg.n_test])
    x_train, x_test = standardise(x[train], x[test])
    mean, std = y[train].mean(), y[train].std()
    return Dataset(x_train, (y[train] - mean) / std, x_test, _regions_all_inside(len(test)), (y[test] - mean) / std)


# --------------------------------------------------------------------------------------------------- files


@functools.lru_cache(maxsize=8)
def _read_arrays_cached(path: str, _mtime_ns: int, _size: int) -> dict[str, np.ndarray]:
    import numpy as np

    p = Path(path)
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ConfigError(f"data.path: cannot read {p} as .npz ({e})") from None
        unknown = sorted(set(arrays) - set(NPZ_ARRAYS))
        if unknown:
            raise ConfigError(f"data.path: {p} holds an unexpected array {unknown[0]!r}; accepted: "
                              f"{', '.join(NPZ_ARRAYS)}")
        for name in ("x", "y"):
            if name not in arrays:
                raise ConfigError(f"data.path: {p} has no array {name!r} (found {sorted(arrays)}); expected x (N, ...)"
                                  " and y (N,) or (N, k), optional x_test and y_test")
        return arrays
    if p.suffix == ".csv":
        if not p.read_text().strip():
            raise ConfigError(f"data.path: {p} is empty")
        try:
            table = np.genfromtxt(p, delimiter=",", dtype=np.float64, skip_header=_has_header(p), ndmin=2)
        except ValueError as e:
            raise ConfigError(f"data.path: cannot parse {p} as CSV of numbers ({e})") from None
        if table.shape[1] < 2:
            raise ConfigError(f"data.path: {p} needs at least two columns (x..., y), found {table.shape[1]}")
        if not np.isfinite(table).all():
            raise ConfigError(f"data.path: {p} contains NaN/inf or non-numeric entries")
        return {"x": table[:, :-1], "y": table[:, -1]}
    raise ConfigError(f"data.path: unsupported file type {p.suffix!r}; accepted: .npz, .csv")


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    st = p.stat()
    return _read_arrays_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def _has_header(p: Path) -> int:
    first = p.read_text().splitlines()[:1]
    try:
        [float(v) for v in first[0].split(",")]
        return 0
    except ValueError:
        return 1


class _FileData(NamedTuple):
    """A checked file: x (N, ...), y (N, k) float or labels (N,) int, optional x_test / y_test,
    the class values (onehot) and the number of examples left for training and testing."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: np.ndarray | None
    n_train: int
    n_test: int
    grid: bool


def _numeric(name: str, a, path: str) -> np.ndarray:
    import numpy as np

    if a.dtype.kind not in "biuf":
        raise ConfigError(f"data.path: {name} in {path} has dtype {a.dtype}; expected numbers (int or float)")
    a = np.asarray(a, np.float64)
    if a.ndim == 0:
        raise ConfigError(f"data.path: {name} in {path} is a scalar; expected one row per example")
    if len(a) == 0:
        raise ConfigError(f"data.path: {name} in {path} has 0 rows (shape {a.shape}); accepted: one row per example, "
                          f"at least {1 if name.endswith('_test') else 2}")
    if math.prod(a.shape[1:]) == 0:
        wanted = "(N,) or (N, k) with k >= 1" if name.startswith("y") else "(N, ...) with at least one number per row"
        raise ConfigError(f"data.path: {name} in {path} has shape {a.shape}: no numbers per example; accepted: "
                          f"{name} of shape {wanted}")
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    if bad.any():
        raise ConfigError(f"data.path: {name} in {path} contains NaN or inf (row {int(np.flatnonzero(bad)[0])})")
    big = float(np.abs(a).max())
    if big > MAX_ABS_VALUE:
        raise ConfigError(f"data.path: {name} in {path} has values up to {big:.3g} in magnitude; accepted: |{name}| <= "
                          f"{MAX_ABS_VALUE:.0e} (rescale, e.g. standardise, the data: float32 kernels and losses of "
                          "such values overflow)")
    return a


def _targets_of(name: str, y: np.ndarray, n: int, path: str, onehot: bool) -> np.ndarray:
    import numpy as np

    if len(y) != n:
        xname = "x" if name == "y" else "x_test"
        raise ConfigError(f"data.path: {xname} has {n} rows but {name} has {len(y)} ({path})")
    if onehot:
        if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise ConfigError(f"data.targets: 'onehot' needs integer class labels {name} of shape (N,), got "
                              f"{y.shape} in {path} (for targets of shape (N, k) use --targets raw)")
        y = y.reshape(-1)
        if not np.all(y == np.round(y)):
            i = int(np.flatnonzero(y != np.round(y))[0])
            raise ConfigError(f"data.targets: 'onehot' needs integer class labels; {name}[{i}] = {float(y[i])!r} "
                              f"in {path}")
        return y.astype(np.int64)
    if y.ndim > 2:
        raise ConfigError(f"data.path: {name} must have shape (N,) or (N, k), got {y.shape} in {path}")
    return y.reshape(len(y), -1)


def _check_file_data(path: str, *, onehot: bool, test_fraction: float) -> _FileData:
    """Every shape, dtype, NaN, class-count and size rule of a data file; one ConfigError line each."""
    import numpy as np

    a = _read_arrays(path)
    x = _numeric("x", a["x"], path)
    x = x[:, None] if x.ndim == 1 else x
    y = _targets_of("y", _numeric("y", a["y"], path), len(x), path, onehot)
    if len(x) < 2:
        raise ConfigError(f"data.path: need at least 2 examples, got {len(x)} in {path}")
    x_test = y_test = None
    if "y_test" in a and "x_test" not in a:
        raise ConfigError(f"data.path: {path} has y_test but no x_test")
    if "x_test" in a:
        x_test = _numeric("x_test", a["x_test"], path)
        x_test = x_test[:, None] if x_test.ndim == 1 else x_test
        if x_test.shape[1:] != x.shape[1:]:
            raise ConfigError(f"data.path: x_test examples have shape {x_test.shape[1:]} but x examples "
                              f"{x.shape[1:]} in {path}")
        if "y_test" in a:
            y_test = _targets_of("y_test", _numeric("y_test", a["y_test"], path), len(x_test), path, onehot)
            if not onehot and y_test.shape[1] != y.shape[1]:
                raise ConfigError(f"data.path: y_test has {y_test.shape[1]} output(s) per example but y has "
                                  f"{y.shape[1]} in {path}")
    classes = None
    if onehot:
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ConfigError(f"data.path: y in {path} holds a single class ({classes[0]}); onehot needs >= 2")
        if counts.min() < 2:
            c = classes[int(np.argmin(counts))]
            raise ConfigError(f"data.path: class {c} has {counts.min()} example in y of {path}; each class needs "
                              "at least 2")
        if y_test is not None and not np.isin(y_test, classes).all():
            c = y_test[~np.isin(y_test, classes)][0]
            raise ConfigError(f"data.path: y_test has class {c}, absent from y in {path}")
    grid = x_test is None and x.ndim == 2 and x.shape[1] == 1
    if x_test is not None or grid:
        n_train, n_test = len(x), (len(x_test) if x_test is not None else GRID_POINTS)
    else:
        n_test = _held_out(y if onehot else None, len(x), test_fraction)
        n_train = len(x) - n_test
        if n_train < 1 or n_test < 1:
            raise ConfigError(f"data.test_fraction: {test_fraction} of {len(x)} examples leaves {n_train} to "
                              f"train and {n_test} to test in {path}; each needs at least 1")
    return _FileData(x, y, x_test, y_test, classes, n_train, n_test, grid)


def _held_out(label_values, n: int, fraction: float) -> int:
    """Size of the held-out split: round(fraction * n), or with classes the sum over classes of
    round(fraction * class size) clipped to [1, size - 1] (each class on both sides)."""
    import numpy as np

    if label_values is None:
        return round(fraction * n)
    _, counts = np.unique(label_values, return_counts=True)
    return int(sum(min(max(round(fraction * c), 1), c - 1) for c in counts))


def check_file(path: str) -> None:
    """Validate a data file up front that it exists and parses (the rules that depend on the config,
    e.g. ``targets``, are applied by :class:`DataConfig`)."""
    if not path:
        raise ConfigError("data.path: required when data.name = 'file' (a .npz with x, y or a .csv x..., y)")
    if not Path(path).is_file():
        raise ConfigError(f"data.path: file not found: {path}")
    _read_arrays(path)


def data_fingerprint(cfg: DataConfig) -> str | None:
    """16 hex digits of SHA-256 over the bytes of the data file of ``--data file`` (its content, not
    its name or date: a file overwritten with other arrays gets another fingerprint, the same bytes
    copied elsewhere the same one); None for the generated and bundled datasets (their config and
    the library versions determine them)."""
    if cfg.name != "file":
        return None
    import hashlib

    digest = hashlib.sha256()
    with open(cfg.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def from_file(cfg: DataConfig) -> Dataset:
    """A user's data. With x_test in the file: that test set (y_test where given). Without it, 1-D
    inputs get a test grid of ``n_test`` points on [-R, R], R = max(test_range, 2 max|x|), with regions
    as for :func:`cubic` (train_range = max |x|) and no y_test; inputs of more dimensions hold out
    ``test_fraction`` of the examples (class-stratified with onehot targets) as the test set.
    ``n_train`` / ``n_test`` smaller than what is there take class-balanced subsets (``seed``).
    Targets 'onehot': integer labels -> centred one-hot over the classes found in y (sorted)."""
    import numpy as np

    f = _check_file_data(cfg.path, onehot=cfg.targets == "onehot", test_fraction=cfg.test_fraction)
    onehot = f.classes is not None
    idx = np.searchsorted(f.classes, f.y) if onehot else None
    if f.grid:
        reach = float(np.abs(f.x).max())
        half = max(cfg.test_range, 2 * reach)
        x_test = np.linspace(-half, half, cfg.n_test)[:, None]
        inside = np.abs(x_test[:, 0]) <= reach + 1e-12
        (train,) = subsets(cfg.seed, len(f.x), [cfg.n_train], idx)
        return Dataset(f.x[train], f.y[train].astype(np.float64), x_test, {"interp": inside, "extrap": ~inside})
    if f.x_test is not None:
        (train,) = subsets(cfg.seed, len(f.x), [cfg.n_train], idx)
        idx_test = np.searchsorted(f.classes, f.y_test) if onehot and f.y_test is not None else None
        (test,) = subsets(cfg.seed + 1, len(f.x_test), [cfg.n_test], idx_test)
        x_train, y_train, x_test = f.x[train], f.y[train], f.x_test[test]
        y_test = None if f.y_test is None else f.y_test[test]
    else:
        held = _held_out(idx, len(f.x), cfg.test_fraction)
        test_all, rest = subsets(cfg.seed, len(f.x), [held, len(f.x) - held], idx)
        (train_in_rest,) = subsets(cfg.seed + 1, len(rest), [cfg.n_train], None if idx is None else idx[rest])
        (test_in_all,) = subsets(cfg.seed + 2, len(test_all), [cfg.n_test], None if idx is None else idx[test_all])
        train, test = rest[train_in_rest], test_all[test_in_all]
        x_train, y_train, x_test, y_test = f.x[train], f.y[train], f.x[test], f.y[test]
    regions = _regions_all_inside(len(x_test))
    if onehot:
        k = len(f.classes)
        y_test = None if y_test is None else one_hot(np.searchsorted(f.classes, y_test), k)
        return Dataset(x_train, one_hot(np.searchsorted(f.classes, y_train), k), x_test, regions, y_test, k)
    return Dataset(x_train, y_train.astype(np.float64), x_test, regions,
                   None if y_test is None else y_test.astype(np.float64))


# --------------------------------------------------------------------------------------------------- sizes, shapes


def available(cfg: DataConfig) -> tuple[int | None, int | None]:
    """(training, test) examples the dataset can give (None: unbounded, e.g. generated grids)."""
    if cfg.name in BUNDLED:
        return BUNDLED[cfg.name][0], BUNDLED[cfg.name][0]
    if cfg.name == "file":
        f = _check_file_data(cfg.path, onehot=cfg.targets == "onehot", test_fraction=cfg.test_fraction)
        return f.n_train, (None if f.grid else f.n_test)
    return None, None


def _check_sizes(cfg: DataConfig, n_train_max: int | None, n_test_max: int | None) -> None:
    if cfg.n_train < 2:
        raise ConfigError(f"data.n_train: need at least 2 training examples, got {cfg.n_train}")
    if cfg.name in BUNDLED:
        total, _, k = BUNDLED[cfg.name]
        if cfg.n_train + cfg.n_test > total:
            raise ConfigError(f"data.n_train: {cfg.n_train} + data.n_test {cfg.n_test} exceed the {total} examples "
                              f"of {cfg.name}")
        if cfg.targets == "onehot" and cfg.n_train < k:
            raise ConfigError(f"data.n_train: {cfg.name} with onehot targets needs at least one example per class "
                              f"({k}), got {cfg.n_train}")
        return
    if n_train_max is not None and cfg.n_train > n_train_max:
        raise ConfigError(f"data.n_train: {cfg.n_train} exceeds the {n_train_max} training examples of "
                          f"{cfg.path or cfg.name}")
    if n_test_max is not None and cfg.n_test > n_test_max:
        raise ConfigError(f"data.n_test: {cfg.n_test} exceeds the {n_test_max} test examples of "
                          f"{cfg.path or cfg.name}")
    if cfg.name in ("cubic", "sin") and cfg.n_test < 3:
        raise ConfigError(f"data.n_test: the 1-D test grid needs at least 3 points, got {cfg.n_test}")


def example_shape(cfg: DataConfig) -> tuple[int, ...]:
    """Shape of one stored input (before :func:`arrange`), without loading the data: (1,) for 1-D sets,
    (dim,) for sphere, (8, 8, 1) for digits, (10,) for diabetes, a file's x.shape[1:]."""
    if cfg.name in ("cubic", "sin"):
        return (1,)
    if cfg.name == "sphere":
        return (cfg.dim,)
    if cfg.name in BUNDLED:
        return BUNDLED[cfg.name][1]
    x = _read_arrays(cfg.path)["x"]
    return (1,) if x.ndim == 1 else tuple(int(s) for s in x.shape[1:])


def n_outputs(cfg: DataConfig) -> int:
    """k, the number of targets per example (the network's out_dim), without loading arrays."""
    if cfg.targets == "onehot":
        if cfg.name in BUNDLED:
            return BUNDLED[cfg.name][2]
        return len(_check_file_data(cfg.path, onehot=True, test_fraction=cfg.test_fraction).classes)
    if cfg.name == "file":
        y = _read_arrays(cfg.path)["y"]
        return 1 if y.ndim == 1 else int(y.shape[1])
    return 1


def _layout_of(data_cfg: DataConfig, model_cfg: Any = None) -> str:
    if data_cfg.layout != "auto":
        return data_cfg.layout
    if model_cfg is None:
        return "asis"
    from studylib import models

    return models.input_layout(model_cfg)


def check_pair(data_cfg: DataConfig, model_cfg: Any, *, widths: tuple[int, ...] | None = (8,)) -> None:
    """ConfigError (naming both fields) when the architecture cannot take the data's inputs: an image
    architecture (``models.input_layout`` = 'image', e.g. cnn) with non-image data or ``layout='flat'``,
    or a flat one with ``layout='image'``; and for a user builder ('module:function'), every check of
    :func:`studylib.models.check_builder` at the first of ``widths`` (the sweep's: a builder may reject
    narrower ones) on a batch of 2 (it builds, its outputs fit the data's targets, NT's analytic kernel
    exists; shapes only, ``jax.eval_shape``; importing the builder has already imported JAX), and a
    warning when it ignores the width. ``widths=None``: the layout checks only. Call it in a study
    config's ``__post_init__`` with the config's widths."""
    from studylib import models

    wants = models.input_layout(model_cfg)
    shape = example_shape(data_cfg)
    if wants == "image" and data_cfg.layout == "flat":
        raise ConfigError(f"data.layout: 'flat' but model.arch {model_cfg.arch!r} takes images (N, H, W, C); "
                          "use layout auto or image")
    if wants == "image" and len(shape) < 2:
        raise ConfigError(f"model.arch: {model_cfg.arch!r} takes images (N, H, W, C) but data.name "
                          f"{data_cfg.name!r} gives inputs of shape (N, {', '.join(map(str, shape))}); use an "
                          "image dataset (digits, or a file with x of shape (N, H, W[, C])) or a dense architecture")
    if wants == "flat" and data_cfg.layout == "image":
        raise ConfigError(f"data.layout: 'image' but model.arch {model_cfg.arch!r} takes flat inputs (N, features); "
                          "use layout auto or flat")
    if ":" in model_cfg.arch and widths:
        example = arranged_shape(shape, _layout_of(data_cfg, model_cfg))
        models.check_builder(model_cfg, (2, *example), n_outputs(data_cfg), tuple(widths))


def arranged_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Shape of one example after :func:`arrange`: 'flat' -> (prod,), 'image' -> (H, W, C) (a channel
    axis added to (H, W)), 'asis' -> unchanged."""
    if layout == "flat":
        return (math.prod(shape),)
    if layout == "image":
        if len(shape) == 2:
            return (*shape, 1)
        if len(shape) != 3:
            raise ConfigError(f"data.layout: 'image' needs inputs (N, H, W) or (N, H, W, C), got (N, "
                              f"{', '.join(map(str, shape))})")
        return shape
    if layout != "asis":
        raise ConfigError(f"data.layout: unknown value {layout!r}; accepted: flat, image, asis")
    return shape


def arrange(ds: Dataset, layout: str) -> Dataset:
    """The dataset with its inputs in ``layout``: 'flat' (N, features), 'image' (N, H, W, C) or 'asis'."""
    shape = arranged_shape(tuple(ds.x_train.shape[1:]), layout)
    return ds._replace(x_train=ds.x_train.reshape(len(ds.x_train), *shape),
                       x_test=ds.x_test.reshape(len(ds.x_test), *shape))


def input_shape(data_cfg: DataConfig, model_cfg: Any = None) -> tuple[int, ...]:
    """(n_train, *one example as the network sees it), without loading the data (memory plans)."""
    return (data_cfg.n_train, *arranged_shape(example_shape(data_cfg), _layout_of(data_cfg, model_cfg)))


def load(cfg: DataConfig) -> Dataset:
    """The dataset as stored (images NHWC)."""
    return {"cubic": cubic, "sin": sin, "sphere": sphere, "digits": digits, "diabetes": diabetes,
            "file": from_file}[cfg.name](cfg)


def load_for(data_cfg: DataConfig, model_cfg: Any = None) -> Dataset:
    """:func:`load`, then :func:`arrange` into ``data_cfg.layout`` ('auto': the layout of ``model_cfg``'s
    architecture, :func:`studylib.models.input_layout`; without a model the stored one)."""
    if model_cfg is not None:
        check_pair(data_cfg, model_cfg, widths=None)  # the builder: checked by the study's config at its widths
    return arrange(load(data_cfg), _layout_of(data_cfg, model_cfg))


def prediction_rows(interp: np.ndarray, n_rows: int) -> np.ndarray:
    """Indices of ``n_rows`` test inputs evenly spread over the interpolation range (boolean mask
    ``interp``), where the first-order gap prediction is evaluated (all of them when there are fewer; used by
    study.regimes and study.predict)."""
    import numpy as np

    idx = np.flatnonzero(interp)
    if n_rows <= 0:
        return idx[:0]
    if n_rows >= idx.size:
        return idx
    return idx[np.unique(np.round(np.linspace(0, idx.size - 1, n_rows)).astype(np.int64))]
