"""Architecture registry, user architectures, datasets and their validation."""

import json
import re

import jax
import numpy as np
import pytest

from studylib import data as D
from studylib import kernels, models
from studylib.config import ConfigError
from studylib.data import DataConfig
from studylib.models import ModelConfig

X = np.linspace(-2.0, 2.0, 6)[:, None]


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_registered_architectures_give_consistent_triples(arch):
    net = models.build(ModelConfig(arch=arch, depth=3), 512)
    theta = np.asarray(net.kernel_fn(X, None, "ntk"))
    assert theta.shape == (6, 6)
    np.testing.assert_allclose(theta, theta.T, rtol=1e-12)
    assert np.linalg.eigvalsh(theta)[0] > 0
    # The finite network's kernel at width 512 is close to its own analytic kernel (averaged
    # over 3 seeds the relative Frobenius error is ~ n^-1/2 ~ 0.05-0.2 for these depths);
    # an inconsistent definition (e.g. wrong parameterization) is off by O(1).
    ntk = kernels.empirical_ntk_fn(net.apply_fn)
    errs = []
    for seed in range(3):
        _, params = net.init_fn(jax.random.PRNGKey(seed), X.shape)
        assert net.apply_fn(params, X).shape == (6, 1)
        k = np.asarray(ntk(X, None, params))
        errs.append(np.linalg.norm(k - theta) / np.linalg.norm(theta))
    assert np.mean(errs) < 0.35, errs


def _readme_example() -> str:
    """The user-architecture example exactly as README.md shows it."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(# my_arch.py.*?)```", readme, re.S)
    assert block, "README lost its user-architecture example"
    return block.group(1)


def test_user_architecture_from_module(tmp_path, monkeypatch):
    (tmp_path / "my_arch.py").write_text(_readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = ModelConfig(arch="my_arch:build", options={"blocks": 3})
    net = models.build(cfg, 32)
    _, params = net.init_fn(jax.random.PRNGKey(0), X.shape)
    assert net.apply_fn(params, X).shape == (6, 1)
    assert len(models.dense_layer_indices(params)) == 4  # blocks=3 hidden Dense + readout
    with pytest.raises(ConfigError, match="cannot import module 'no_such_mod'"):
        ModelConfig(arch="no_such_mod:build")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        ModelConfig(arch="my_arch:nope")
    with pytest.raises(ConfigError, match="accepted: fc, erf_fc, res_fc"):
        ModelConfig(arch="transformer")


def test_readme_command_with_user_architecture(tmp_path, monkeypatch):
    from study import compare as entry

    (tmp_path / "my_arch.py").write_text(_readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    entry.main(["--arch", "my_arch:build", "--arch-option", "blocks=3", "--preset", "tiny", "--widths", "8",
                "--steps", "3", "--checkpoints", "3", "--no-figures", "--no-progress", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"] == {**summary["config"]["model"], "arch": "my_arch:build",
                                          "options": {"blocks": 3}}
    assert len([k for k in summary["metrics"] if re.fullmatch(r"rel_weight_change_l\d", k)]) == 4


def test_datasets_shapes_and_regions(tmp_path):
    d = D.load(DataConfig())
    np.testing.assert_allclose(d.y_train, d.x_train**3 / 20)
    assert d.x_train.shape == (10, 1) and d.x_test.shape == (201, 1)
    assert d.regions["interp"].sum() + d.regions["extrap"].sum() == 201
    assert np.all(np.abs(d.x_test[d.regions["extrap"], 0]) > 5)
    s = D.load(DataConfig(name="sphere", dim=4, n_train=7))
    np.testing.assert_allclose(np.linalg.norm(s.x_train, axis=1), 1.0)
    assert s.x_train.shape == (7, 4) and not s.regions["extrap"].any()
    np.testing.assert_allclose(D.load(DataConfig(name="sin")).y_train, np.sin(d.x_train))


def test_data_files(tmp_path):
    good = tmp_path / "d.csv"
    good.write_text("x,y\n-1,1\n0,0\n1,1\n2,4\n")
    d = D.load(DataConfig(name="file", path=str(good)))
    np.testing.assert_allclose(d.y_train[:, 0], [1, 0, 1, 4])
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.ones((5, 2)), y=np.arange(5.0))
    assert D.load(DataConfig(name="file", path=str(npz))).x_train.shape == (5, 2)

    cases = {
        "missing.csv": (None, "file not found"),
        "nan.csv": ("x,y\n1,2\n2,nan\n3,4\n", "NaN"),
        "text.csv": ("x,y\n1,2\n2,abc\n", "NaN/inf or non-numeric"),
        "onecol.csv": ("1\n2\n3\n", "at least two columns"),
        "data.txt": ("1,2\n", "unsupported file type"),
    }
    for name, (content, needle) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(ConfigError, match=needle):
            DataConfig(name="file", path=str(path))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.ones((5, 1)), y=np.ones(4))
    with pytest.raises(ConfigError, match="x has 5 rows but y has 4"):
        DataConfig(name="file", path=str(bad))
    with pytest.raises(ConfigError, match=r"data\.path: required"):
        DataConfig(name="file")
    with pytest.raises(ConfigError, match=r"data\.name: unknown value 'mnist'"):
        DataConfig(name="mnist")
