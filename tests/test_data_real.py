"""Real data: scikit-learn's bundled digits and diabetes, and a user's .npz of any shape, with every
bad file rejected in one line naming the field (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from studylib import data as D
from studylib.config import ConfigError
from studylib.data import DataConfig


def test_bundled_constants_match_scikit_learn():
    """DataConfig checks sizes without importing scikit-learn; its constants are the real ones."""
    from sklearn.datasets import load_diabetes, load_digits

    digits, diabetes = load_digits(), load_diabetes()
    assert D.BUNDLED["digits"] == (len(digits.target), (*digits.images.shape[1:], 1), len(set(digits.target)))
    assert D.BUNDLED["diabetes"] == (len(diabetes.target), diabetes.data.shape[1:], 0)


def test_default_sizes_resolve_to_ints():
    for name, (n_train, n_test) in D.DEFAULT_SIZES.items():
        if name == "file":
            continue
        cfg = DataConfig(name=name)
        assert (cfg.n_train, cfg.n_test) == (n_train, n_test) and isinstance(cfg.n_train, int)
    assert DataConfig(name="digits").targets == "onehot" and DataConfig().targets == "raw"
    assert DataConfig(name="digits", n_train=30, n_test=40).n_train == 30


def test_subsets_are_balanced_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [10, 3, 8, 9])  # class 1 is short of examples
    train, test = D.subsets(7, len(labels), [14, 12], labels)
    assert not set(train) & set(test) and len(train) == 14 and len(test) == 12
    # 14 over 4 classes: 4, 3 (all class 1 has), and the remaining 7 spread 4 / 3 over the others...
    assert np.bincount(labels[train], minlength=4).tolist() == [4, 3, 4, 3]
    # ...and the test set takes what is left, class 1 being empty now: 12 over 3 classes
    assert np.bincount(labels[test], minlength=4).tolist() == [4, 0, 4, 4]
    again = D.subsets(7, len(labels), [14, 12], labels)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, test), strict=True))
    assert not np.array_equal(D.subsets(8, len(labels), [14, 12], labels)[0], train)
    plain = D.subsets(0, 20, [5, 6])
    assert [len(p) for p in plain] == [5, 6] and not set(plain[0]) & set(plain[1])
    assert D.balanced_counts([10, 3, 8, 9], 14) == [4, 3, 4, 3]


def test_digits_subsets_are_balanced_disjoint_standardised_and_seeded():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    cfg = DataConfig(name="digits", n_train=95, n_test=40, seed=3)
    ds = D.load(cfg)
    assert ds.x_train.shape == (95, 8, 8, 1) and ds.x_test.shape == (40, 8, 8, 1) and ds.n_classes == 10
    # centred one-hot: 0.9 on the label, -0.1 elsewhere; rows sum to zero
    np.testing.assert_allclose(ds.y_train.sum(axis=1), 0.0, atol=1e-12)
    assert set(np.round(ds.y_train, 12).ravel()) == {0.9, -0.1}
    # class balance: 95 = 9 x 10 + 5 -> the first 5 classes get 10, the rest 9; test 40 -> 4 each
    assert np.bincount(D.labels(ds.y_train), minlength=10).tolist() == [10] * 5 + [9] * 5
    assert np.bincount(D.labels(ds.y_test), minlength=10).tolist() == [4] * 10
    # the images are the bundled ones at the documented subsets, standardised per pixel with training
    # statistics (recomputed here in NumPy), constant pixels -> 0
    train, test = D.subsets(3, len(bunch.target), [95, 40], bunch.target)
    raw_train, raw_test = bunch.images[train].reshape(95, 64), bunch.images[test].reshape(40, 64)
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    varying = std > 0
    assert not varying.all()  # the digits' border pixels are constant on small subsets
    expect_train = np.zeros_like(raw_train)
    expect_test = np.zeros_like(raw_test)
    expect_train[:, varying] = (raw_train[:, varying] - mean[varying]) / std[varying]
    expect_test[:, varying] = (raw_test[:, varying] - mean[varying]) / std[varying]
    eps = 64 * np.finfo(float).eps * np.abs(expect_test).max()
    np.testing.assert_allclose(ds.x_train.reshape(95, 64), expect_train, rtol=0, atol=eps)
    np.testing.assert_allclose(ds.x_test.reshape(40, 64), expect_test, rtol=0, atol=eps)
    np.testing.assert_array_equal(D.labels(ds.y_train), bunch.target[train])
    np.testing.assert_array_equal(D.labels(ds.y_test), bunch.target[test])
    # deterministic in the seed, different with another
    np.testing.assert_array_equal(D.load(cfg).x_train, ds.x_train)
    assert not np.array_equal(D.load(DataConfig(name="digits", n_train=95, n_test=40, seed=4)).x_train, ds.x_train)


def test_digits_raw_targets_and_diabetes():
    raw = D.load(DataConfig(name="digits", n_train=40, n_test=20, targets="raw"))
    onehot = D.load(DataConfig(name="digits", n_train=40, n_test=20))
    label = D.labels(onehot.y_train)
    assert raw.n_classes == 0 and raw.y_train.shape == (40, 1)
    np.testing.assert_allclose(raw.y_train[:, 0], label - label.mean(), atol=1e-12)
    np.testing.assert_allclose(raw.y_test[:, 0], D.labels(onehot.y_test) - label.mean(), atol=1e-12)
    d = D.load(DataConfig(name="diabetes"))
    assert d.x_train.shape == (256, 10) and d.y_train.shape == (256, 1) and d.y_test.shape == (186, 1)
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(d.x_train.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose([d.y_train.mean(), d.y_train.std()], [0.0, 1.0], atol=1e-12)
    assert d.regions["interp"].all() and not d.regions["extrap"].any()


def test_toy_sets_give_test_targets():
    d = D.load(DataConfig())
    np.testing.assert_allclose(d.y_test, d.x_test**3 / 20)
    s = D.load(DataConfig(name="sphere", dim=4))
    x = s.x_test
    np.testing.assert_allclose(s.y_test[:, 0], x[:, 0] + 2 * x[:, 0] * x[:, 1] + np.sin(3 * x[:, 3]))


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"name": "digits", "n_train": 1500, "n_test": 512}, r"data\.n_train: 1500 \+ data\.n_test 512 exceed the 1797"),
    ({"name": "digits", "n_train": 5}, r"data\.n_train: digits with onehot targets needs at least one example per"),
    ({"name": "diabetes", "targets": "onehot"}, r"data\.targets: 'onehot' needs class labels; 'diabetes'"),
    ({"name": "cubic", "targets": "onehot"}, r"data\.targets: 'onehot' needs class labels; 'cubic'"),
    ({"name": "digits", "targets": "labels"}, r"data\.targets: unknown value 'labels'; accepted: onehot, raw"),
    ({"name": "digits", "layout": "nhwc"}, r"data\.layout: unknown value 'nhwc'; accepted: auto, flat, image"),
    ({"test_fraction": 1.0}, r"data\.test_fraction: must lie strictly between 0 and 1"),
])
def test_bad_dataset_settings(kwargs, needle):
    with pytest.raises(ConfigError, match="^" + needle) as e:
        DataConfig(**kwargs)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------- a user's file


def _images(n=40, classes=4, side=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, side, side, 1)), np.arange(n) % classes


def test_image_file_with_labels_holds_out_a_stratified_test_set(tmp_path):
    x, y = _images()
    path = tmp_path / "img.npz"
    np.savez(path, x=x, y=y)
    cfg = DataConfig(name="file", path=str(path), targets="onehot", test_fraction=0.2)
    assert (cfg.n_train, cfg.n_test) == (32, 8)  # 2 of the 10 of each class held out
    ds = D.load(cfg)
    assert ds.x_train.shape == (32, 5, 5, 1) and ds.x_test.shape == (8, 5, 5, 1) and ds.n_classes == 4
    assert np.bincount(D.labels(ds.y_test)).tolist() == [2] * 4
    # every row is one of the file's, with its own label; train and test disjoint and together all
    rows = {r.tobytes(): lab for r, lab in zip(x, y, strict=True)}
    seen = [r.tobytes() for r in np.concatenate([ds.x_train, ds.x_test])]
    assert len(set(seen)) == 40 and set(seen) == set(rows)
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert [rows[r.tobytes()] for r in xs] == D.labels(ys).tolist()
    np.testing.assert_allclose(ds.y_train, np.eye(4)[D.labels(ds.y_train)] - 0.25)
    # labels need not be 0..k-1: classes are the sorted values found in y
    np.savez(path, x=x, y=10 * y + 3)
    ds2 = D.load(DataConfig(name="file", path=str(path), targets="onehot", test_fraction=0.2))
    np.testing.assert_array_equal(ds2.y_train, ds.y_train)
    # subsets of what is there: balanced over classes
    small = D.load(DataConfig(name="file", path=str(path), targets="onehot", n_train=12, n_test=4))
    assert np.bincount(D.labels(small.y_train)).tolist() == [3] * 4 and len(small.x_test) == 4


def test_file_with_its_own_test_set_and_vector_targets(tmp_path):
    rng = np.random.default_rng(1)
    x, xt = rng.standard_normal((12, 3, 2)), rng.standard_normal((7, 3, 2))
    y, yt = rng.standard_normal((12, 4)), rng.standard_normal((7, 4))
    path = tmp_path / "v.npz"
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt)
    cfg = DataConfig(name="file", path=str(path))
    assert (cfg.n_train, cfg.n_test, cfg.targets, D.n_outputs(cfg)) == (12, 7, "raw", 4)
    ds = D.load(cfg)
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.y_train, y)
    np.testing.assert_array_equal(ds.x_test, xt)
    np.testing.assert_array_equal(ds.y_test, yt)
    assert D.load(DataConfig(name="file", path=str(path), layout="flat")).x_train.shape == (12, 3, 2)  # as stored
    assert D.arrange(ds, "flat").x_train.shape == (12, 6)
    np.savez(path, x=x, y=y, x_test=xt)  # no test targets: y_test None
    assert D.load(DataConfig(name="file", path=str(path))).y_test is None


def test_one_dimensional_file_keeps_its_test_grid(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n-1,1\n0,0\n1,1\n2,4\n")
    cfg = DataConfig(name="file", path=str(path))
    ds = D.load(cfg)
    assert (cfg.n_train, cfg.n_test) == (4, 201) and ds.y_test is None
    np.testing.assert_allclose(ds.x_test[:, 0], np.linspace(-10, 10, 201))
    np.testing.assert_allclose(ds.y_train[:, 0], [1, 0, 1, 4])
    assert np.all(np.abs(ds.x_test[ds.regions["interp"], 0]) <= 2)


def _bad_files(tmp_path):
    """(name, arrays or CSV text, DataConfig keyword arguments, expected message start)."""
    x, y = _images(n=12, classes=3)
    nan = x.copy()
    nan[4, 1, 1, 0] = np.nan
    lonely = y.copy()
    lonely[:] = np.r_[[0] * 6, [1] * 5, [2]]
    return [
        ("missing_x", {"y": y}, {}, r"data\.path: .* has no array 'x'"),
        ("typo", {"x": x, "y": y, "xtest": x}, {}, r"data\.path: .* holds an unexpected array 'xtest'; accepted: x, y"),
        ("strings", {"x": np.array(["a", "b", "c"]), "y": np.arange(3)}, {}, r"data\.path: x in .* has dtype <U1"),
        ("nan", {"x": nan, "y": y}, {}, r"data\.path: x in .* contains NaN or inf \(row 4\)"),
        ("rows", {"x": x, "y": y[:-1]}, {}, r"data\.path: x has 12 rows but y has 11"),
        ("rank3", {"x": x, "y": np.ones((12, 2, 2))}, {}, r"data\.path: y must have shape \(N,\) or \(N, k\), got "
                                                           r"\(12, 2, 2\)"),
        ("fractional", {"x": x, "y": y + 0.5}, {"targets": "onehot"},
         r"data\.targets: 'onehot' needs integer class labels; y\[0\] = 0\.5"),
        ("vector_labels", {"x": x, "y": np.ones((12, 3))}, {"targets": "onehot"},
         r"data\.targets: 'onehot' needs integer class labels y of shape \(N,\)"),
        ("lonely", {"x": x, "y": lonely}, {"targets": "onehot"}, r"data\.path: class 2 has 1 example in y"),
        ("one_class", {"x": x, "y": np.zeros(12)}, {"targets": "onehot"}, r"data\.path: y in .* holds a single class"),
        ("test_shape", {"x": x, "y": y, "x_test": np.ones((4, 5, 4, 1))}, {},
         r"data\.path: x_test examples have shape \(5, 4, 1\) but x examples \(5, 5, 1\)"),
        ("test_rows", {"x": x, "y": y, "x_test": x[:4], "y_test": y[:3]}, {}, r"data\.path: x_test has 4 rows but "
                                                                             r"y_test has 3"),
        ("test_k", {"x": x, "y": np.ones((12, 3)), "x_test": x[:4], "y_test": np.ones((4, 2))}, {},
         r"data\.path: y_test has 2 output\(s\) per example but y has 3"),
        ("test_class", {"x": x, "y": y, "x_test": x[:4], "y_test": np.array([0, 1, 2, 7])}, {"targets": "onehot"},
         r"data\.path: y_test has class 7, absent from y"),
        ("y_test_alone", {"x": x, "y": y, "y_test": y}, {}, r"data\.path: .* has y_test but no x_test"),
        ("too_many", {"x": x, "y": y}, {"n_train": 50}, r"data\.n_train: 50 exceeds the 9 training examples"),
        ("too_many_test", {"x": x, "y": y}, {"n_test": 5}, r"data\.n_test: 5 exceeds the 3 test examples"),
        ("tiny_split", {"x": x[:2], "y": y[:2]}, {"test_fraction": 0.1},
         r"data\.test_fraction: 0\.1 of 2 examples leaves 2 to train and 0 to test"),
        ("fraction", {"x": x, "y": y}, {"test_fraction": 0.0},
         r"data\.test_fraction: must lie strictly between 0 and 1"),
        ("scalar", {"x": np.float64(1.0), "y": y}, {}, r"data\.path: x in .* is a scalar"),
        ("one_row", {"x": x[:1], "y": y[:1]}, {}, r"data\.path: need at least 2 examples, got 1"),
        ("empty.csv", "", {}, r"data\.path: .* is empty"),
    ]


def test_bad_files_each_get_one_line_naming_the_field(tmp_path):
    cases = _bad_files(tmp_path)
    assert len(cases) >= 8
    for name, content, kwargs, needle in cases:
        if isinstance(content, str):
            path = tmp_path / name
            path.write_text(content)
        else:
            path = tmp_path / f"{name}.npz"
            np.savez(path, **content)
        with pytest.raises(ConfigError, match="^" + needle) as e:
            DataConfig(name="file", path=str(path), **kwargs)
        assert "\n" not in str(e.value), name


def test_a_broken_npz_is_one_line(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match=r"^data\.path: cannot read .* as \.npz"):
        DataConfig(name="file", path=str(path))
