"""Architecture registry, user architectures, datasets and their validation."""

import json
import re
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest

from studylib import data as D
from studylib import kernels, models
from studylib.config import ConfigError
from studylib.data import DataConfig
from studylib.models import ModelConfig

X = np.linspace(-2.0, 2.0, 6)[:, None]


X_IMG = np.random.default_rng(0).standard_normal((6, 4, 4, 1))
#: The conv net's small tests share its inputs' shape, depth 2 and this width: its stax init_fn runs op by op and
#: compiles every op for its shapes (~5 s of CPU), once per process when the shapes are the same.
X_CNN = np.random.default_rng(4).standard_normal((3, 5, 5, 1))
CNN_WIDTH = 16


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a == "cnn" else a  # cnn ~12 s: -m slow
                                  for a in sorted(models.ARCHITECTURES)])
def test_registered_architectures_give_consistent_triples(arch):
    x = X_IMG if models.input_layout(ModelConfig(arch=arch)) == "image" else X
    depth, width = (2, 128) if arch == "cnn" else (3, 512)  # a conv layer of width n has 9 n^2 weights
    net = models.build(ModelConfig(arch=arch, depth=depth), width, input_shape=x.shape)
    theta = np.asarray(net.kernel_fn(x, None, "ntk"))
    assert theta.shape == (6, 6)
    np.testing.assert_allclose(theta, theta.T, rtol=1e-12)
    assert np.linalg.eigvalsh(theta)[0] > 0
    # The finite network's kernel at width 512 (cnn: 128, averaging over pixels too) is close to its
    # own analytic kernel (averaged over 3 seeds the relative Frobenius error is ~ n^-1/2 ~ 0.05-0.2);
    # an inconsistent definition (e.g. wrong parameterization) is off by O(1).
    ntk = kernels.empirical_ntk_fn(net.apply_fn)
    errs = []
    for seed in range(3):
        _, params = net.init_fn(jax.random.PRNGKey(seed), x.shape)
        assert net.apply_fn(params, x).shape == (6, 1)
        k = np.asarray(ntk(x, None, params))
        errs.append(np.linalg.norm(k - theta) / np.linalg.norm(theta))
    assert np.mean(errs) < 0.35, errs


def _readme_example(name: str = "my_arch") -> str:
    """A user-architecture example (``my_arch`` or ``my_conv``) exactly as README.md shows it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(# " + name + r"\.py.*?)```", readme, re.S)
    assert block, f"README lost its user-architecture example {name}.py"
    return block.group(1)


def _image_file(path, n=24, classes=3, side=5, seed=0):
    """A small .npz of images (n, side, side, 1) and integer labels: each class a noisy stripe pattern."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.standard_normal((n, side, side, 1)) * 0.3
    for c in range(classes):
        x[y == c, :, c::classes, 0] += 1.0
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def test_readme_conv_example_on_images(tmp_path, monkeypatch):
    """The README's conv builder on a user's .npz of images and labels: data as NHWC, 3 outputs."""
    (tmp_path / "my_conv.py").write_text(_readme_example("my_conv"))
    monkeypatch.syspath_prepend(str(tmp_path))
    data = DataConfig(name="file", path=str(_image_file(tmp_path / "images.npz")), targets="onehot")
    model = ModelConfig(arch="my_conv:build", depth=2)
    ds = D.load_for(data, model)
    assert ds.x_train.shape == (data.n_train, 5, 5, 1) and ds.n_classes == D.n_outputs(data) == 3
    assert data.n_train + data.n_test == 24 and ds.y_test.shape == (data.n_test, 3)
    net = models.build(model, 16, out_dim=ds.n_classes, input_shape=ds.x_train.shape)
    _, params = net.init_fn(jax.random.PRNGKey(0), ds.x_train.shape)
    assert net.apply_fn(params, ds.x_test).shape == (data.n_test, 3)
    assert len(models.weight_paths(params)) == 3  # 2 conv kernels + the readout
    theta = np.asarray(net.kernel_fn(ds.x_train, None, "ntk"))
    assert theta.shape == (data.n_train,) * 2 and np.linalg.eigvalsh(theta)[0] > 0


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


def _readme_command(name: str) -> list[str]:
    """The arguments of README.md's ``PYTHONPATH=. python -m study.compare --arch NAME:build ...`` line."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = re.search(r"PYTHONPATH=\. python -m study\.compare (--arch " + name + r":build .*)", readme)
    assert line, f"README lost its command for {name}.py"
    return shlex.split(line.group(1))


def test_readme_command_with_user_architecture_plans_the_net(tmp_path, monkeypatch, capsys):
    """The README's command exactly as shown, with --plan (in process: nothing trained): the tiny preset's widths
    8, 16, 32 of the user builder with blocks=3, whose parameters are counted here by hand: Dense(1 -> w) and two
    Dense(w -> w) with biases, readout Dense(w -> 1) with its bias: 2w + 2(w^2 + w) + w + 1 (blocks=2: w^2 fewer)."""
    from study import compare as entry

    (tmp_path / "my_arch.py").write_text(_readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    args = _readme_command("my_arch")
    assert args == ["--arch", "my_arch:build", "--arch-option", "blocks=3", "--preset", "tiny"]
    capsys.readouterr()
    entry.main([*args, "--plan"])
    printed = capsys.readouterr().out
    for w in (8, 16, 32):
        assert re.search(rf"width +{w}: +{2 * w * w + 5 * w + 1:,} parameters", printed), (w, printed)


# slow set: test_readme_command_with_user_architecture_plans_the_net checks the same command and user builder
# (parsed, built at every width, without training); test_user_architecture_from_module runs the builder in process
@pytest.mark.slow
def test_readme_command_with_user_architecture(tmp_path, monkeypatch):
    """The README's command, cut down (one width, one seed, 3 steps, no quadratic model, 21 test points)."""
    from study import compare as entry

    (tmp_path / "my_arch.py").write_text(_readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    args = _readme_command("my_arch")
    entry.main([*args, "--widths", "8", "--seeds", "1", "--steps", "3", "--checkpoints", "3", "--quad-max-width", "0",
                "--n-test", "21", "--no-figures", "--no-progress", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"] == {**summary["config"]["model"], "arch": "my_arch:build",
                                          "options": {"blocks": 3}}
    assert len([k for k in summary["metrics"] if re.fullmatch(r"rel_weight_change_l\d", k)]) == 4


@pytest.mark.slow  # ~13 s; CI runs it with -m slow (the conv example: test_readme_conv_example_on_images)
def test_readme_command_with_user_conv_net(tmp_path, monkeypatch):
    """The README's conv command on a small .npz of images and labels, end to end (widths cut down)."""
    from study import compare as entry

    (tmp_path / "my_conv.py").write_text(_readme_example("my_conv"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _image_file(tmp_path / "images.npz")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = re.search(r"PYTHONPATH=\. python -m study\.compare (--arch my_conv:build .*)", readme).group(1)
    out = tmp_path / "out"
    # float64: the tests keep 64-bit mode on, where NT's own Conv turns float32 into float64 between layers
    # (models.convolutional guards against it; a user's raw stax.Conv does not); a CLI float32 run has it off
    entry.main([*shlex.split(line), "--widths", "8", "--steps", "3", "--checkpoints", "3", "--dtype", "float64",
                "--no-figures",
                "--no-progress", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"]["arch"] == "my_conv:build" and summary["config"]["data"]["targets"] == "onehot"
    # 2 conv kernels + the readout: one per-layer weight change each
    assert len([k for k in summary["metrics"] if re.fullmatch(r"rel_weight_change_l\d", k)]) == 3


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
    held = D.load(DataConfig(name="file", path=str(npz)))  # d > 1, no x_test: test_fraction 0.25 held out
    assert held.x_train.shape == (4, 2) and held.x_test.shape == (1, 2)
    np.testing.assert_array_equal(np.sort(np.r_[held.y_train[:, 0], held.y_test[:, 0]]), np.arange(5.0))

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


# ----------------------------------------------------------------------------------- weight layers of any stax net

NT_DEFAULTS_PLUGIN = '''
from studylib.nt import stax


def build(width, cfg):
    return stax.serial(stax.Dense(width), stax.Erf(), stax.Dense(width), stax.Erf(), stax.Dense(1))
'''


def _weights_by_numpy(params) -> list[np.ndarray]:
    """Independent walk: every array that is the first entry of a layer's (W, b) pair or a lone
    rank >= 2 array (NT's layers store (W, b); a bias b is (1, ..., 1, out))."""
    out = []

    def walk(node):
        if isinstance(node, tuple | list):
            if len(node) == 2 and hasattr(node[0], "ndim") and node[0].ndim >= 2:
                out.append(np.asarray(node[0]))
                return
            for child in node:
                walk(child)

    walk(params)
    return out


@pytest.mark.parametrize(("arch", "shape", "n_weights"), [
    ("nt_defaults", (5, 3), 3),         # stax.Dense defaults: no bias (the known compare crash)
    ("res_fc", (5, 3), 2 + 2 * 2),      # embedding, 2 blocks x 2 Dense inside FanOut/parallel, readout
    ("cnn", (3, 5, 5, 1), 2 + 1),       # depth 2 Conv kernels + readout Dense (see CNN_WIDTH)
    ("fc", (5, 1), 3 + 1),              # 1-D inputs: the first W is (1, width), like a bias, and is kept
])
def test_weight_paths_find_every_weight_layer(arch, shape, n_weights, tmp_path, monkeypatch):
    if arch == "nt_defaults":
        (tmp_path / "nt_defaults.py").write_text(NT_DEFAULTS_PLUGIN)
        monkeypatch.syspath_prepend(str(tmp_path))
        cfg = ModelConfig(arch="nt_defaults:build")
    else:
        cfg = ModelConfig(arch=arch, depth=2 if arch == "cnn" else 3, options={"blocks": 2} if arch == "res_fc" else {})
    net = models.build(cfg, CNN_WIDTH if arch == "cnn" else 4, input_shape=shape)
    _, params = net.init_fn(jax.random.PRNGKey(1), shape)
    paths = models.weight_paths(params)
    expected = _weights_by_numpy(params)
    assert len(paths) == len(expected) == n_weights
    sq = [np.sum(w.astype(np.float64) ** 2) for w in expected]
    # float64 sums of <= 3 x 10^3 squares (the conv kernels 3 x 3 x 16 x 16) in another order: rounding at most
    # ~ size * eps relative
    rtol = 1e4 * np.finfo(float).eps
    np.testing.assert_allclose(np.asarray(models.layer_sq_norms(params, paths)), sq, rtol=rtol)
    # the same paths from shapes alone (eval_shape), and per seed under a leading batch axis
    shapes = jax.eval_shape(lambda k: net.init_fn(k, shape)[1], jax.random.PRNGKey(0))
    assert models.weight_paths(shapes) == paths
    batched = jax.vmap(lambda k: net.init_fn(k, shape)[1])(jax.random.split(jax.random.PRNGKey(2), 3))
    per_seed = np.asarray(jax.jit(lambda p: models.layer_sq_norms(p, paths, batch_dims=1))(batched))
    assert per_seed.shape == (3, n_weights)
    one = jax.tree_util.tree_map(lambda a: a[1], batched)
    np.testing.assert_allclose(per_seed[1], [np.sum(np.asarray(w, np.float64) ** 2) for w in _weights_by_numpy(one)],
                               rtol=rtol)


def test_a_net_without_weights_is_one_clear_error():
    from studylib.nt import stax

    init_fn, _, _ = stax.serial(stax.Relu(), stax.Flatten())
    _, params = init_fn(jax.random.PRNGKey(0), (2, 3))
    with pytest.raises(ConfigError, match=r"^model\.arch: the network has no weight matrix"):
        models.weight_paths(params)


# ----------------------------------------------------------------------------------- several outputs, user builders

BAD_PLUGINS = '''
from studylib.nt import stax


def no_out_dim(width, cfg):
    return stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(1))


def ignores_out_dim(width, cfg, out_dim=1):
    return stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(3))


def needs_images(width, cfg, out_dim=1):
    return stax.serial(stax.Conv(width, (3, 3)), stax.Flatten(), stax.Dense(out_dim))
'''


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_registered_builders_take_out_dim(arch):
    shape = X_CNN.shape if arch == "cnn" else (3, 4)
    net = models.build(ModelConfig(arch=arch, depth=2), CNN_WIDTH, out_dim=10, input_shape=shape)
    _, params = net.init_fn(jax.random.PRNGKey(0), shape)
    assert net.apply_fn(params, np.ones(shape)).shape == (3, 10)


def test_user_builders_and_out_dim(tmp_path, monkeypatch):
    (tmp_path / "my_arch.py").write_text(_readme_example())
    (tmp_path / "bad_arch.py").write_text(BAD_PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = models.build(ModelConfig(arch="my_arch:build"), 8, out_dim=10, input_shape=(3, 4))
    _, params = net.init_fn(jax.random.PRNGKey(0), (3, 4))
    assert net.apply_fn(params, np.ones((3, 4))).shape == (3, 10)
    assert models.input_layout(ModelConfig(arch="my_arch:build")) == "asis"
    models.build(ModelConfig(arch="bad_arch:no_out_dim"), 8, input_shape=(3, 4))  # out_dim 1: fine
    cases = {
        "no_out_dim": (10, (3, 4), r"takes no out_dim argument but the data have 10 outputs"),
        "ignores_out_dim": (10, (3, 4), r"gives outputs of shape \(3, 3\) on inputs \(3, 4\); expected \(3, 10\)"),
        "needs_images": (1, (3, 4), r"fails on inputs of shape \(3, 4\)"),
    }
    for fn, (out_dim, shape, needle) in cases.items():
        with pytest.raises(ConfigError, match=r"^model\.arch: 'bad_arch:" + fn + "' " + needle) as e:
            models.build(ModelConfig(arch=f"bad_arch:{fn}"), 8, out_dim=out_dim, input_shape=shape)
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------- the conv net

@pytest.mark.slow  # ~12 s; CI runs it with -m slow (FC version: test_kernels)
def test_cnn_empirical_ntk_approaches_the_analytic_kernel_with_width():
    """Monte Carlo over seeds: the per-seed relative error of the empirical NTK of a depth-2 conv net
    falls with width as ~n^-1/2 (Lee et al. 2019 App. I), and the seed-mean kernel at the widest net
    agrees with kernel_fn within 4 standard errors of that mean plus the O(1/n) finite-width bias
    (taken as the square of the per-seed error, which is O(n^-1/2))."""
    x = np.random.default_rng(3).standard_normal((4, 5, 5, 1))
    widths, seeds = (16, 256), 8
    rel, mean_err, se = {}, {}, {}
    for n in widths:
        net = models.convolutional(n, depth=2, readout="flatten")
        theta = np.asarray(net.kernel_fn(x, None, "ntk"))
        ntk = kernels.empirical_ntk_fn(net.apply_fn, implementation=1)
        ks = np.stack([np.asarray(ntk(x, None, net.init_fn(jax.random.PRNGKey(s), x.shape)[1]))
                       for s in range(seeds)])
        norm = np.linalg.norm(theta)
        rel[n] = np.mean([np.linalg.norm(k - theta) / norm for k in ks])
        mean_err[n] = np.linalg.norm(ks.mean(0) - theta) / norm
        se[n] = np.linalg.norm(ks.std(0, ddof=1)) / np.sqrt(seeds) / norm
    lo, hi = widths
    assert rel[hi] < 2.0 * rel[lo] * np.sqrt(lo / hi), rel  # n^-1/2 law within a factor 2
    assert mean_err[hi] <= 4.0 * se[hi] + rel[hi] ** 2, (mean_err, se, rel)


@pytest.mark.parametrize("readout", models.CNN_READOUTS)
def test_cnn_readouts_build_and_run(readout):
    x = X_CNN
    cfg = ModelConfig(arch="cnn", depth=2, options={"readout": readout})
    net = models.build(cfg, CNN_WIDTH, out_dim=10, input_shape=x.shape)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    f = np.asarray(net.apply_fn(params, x))
    assert f.shape == (3, 10) and np.isfinite(f).all()
    theta = np.asarray(net.kernel_fn(x, None, "ntk"))
    assert theta.shape == (3, 3) and np.linalg.eigvalsh(theta)[0] > 0
    kinds = {ro: np.asarray(models.convolutional(8, depth=2, readout=ro).kernel_fn(x, None, "ntk"))
             for ro in models.CNN_READOUTS}
    assert not np.allclose(kinds["flatten"], kinds["gap"])  # two different kernels
    with pytest.raises(ConfigError, match=r"model\.options\.readout: unknown value 'max'; accepted: flatten, gap"):
        ModelConfig(arch="cnn", options={"readout": "max"})


def test_input_layouts_and_the_data_they_get():
    assert [models.input_layout(ModelConfig(arch=a)) for a in ("fc", "erf_fc", "res_fc", "cnn")] == \
        ["flat", "flat", "flat", "image"]
    digits = DataConfig(name="digits", n_train=20, n_test=10)
    assert D.load_for(digits, ModelConfig()).x_train.shape == (20, 64)
    assert D.load_for(digits, ModelConfig(arch="cnn")).x_train.shape == (20, 8, 8, 1)
    assert D.load_for(digits).x_train.shape == (20, 8, 8, 1)  # no model: as stored
    assert D.input_shape(digits, ModelConfig()) == (20, 64)
    assert D.input_shape(digits, ModelConfig(arch="cnn")) == (20, 8, 8, 1)
    ds = D.load(digits)
    np.testing.assert_array_equal(D.arrange(ds, "flat").x_test, ds.x_test.reshape(10, 64))
    with pytest.raises(ConfigError, match=r"^model\.arch: 'cnn' takes images .* data\.name 'cubic' gives inputs "
                                          r"of shape \(N, 1\)"):
        D.load_for(DataConfig(), ModelConfig(arch="cnn"))
    with pytest.raises(ConfigError, match=r"^data\.layout: 'flat' but model\.arch 'cnn' takes images"):
        D.check_pair(DataConfig(name="digits", layout="flat"), ModelConfig(arch="cnn"))
    with pytest.raises(ConfigError, match=r"^data\.layout: 'image' but model\.arch 'fc' takes flat inputs"):
        D.check_pair(DataConfig(name="digits", layout="image"), ModelConfig())
    with pytest.raises(ConfigError, match=r"^data\.layout: 'image' needs image inputs"):
        DataConfig(layout="image")


def test_user_builder_that_does_not_fit_the_data_is_refused_at_config_time(tmp_path, monkeypatch):
    """check_pair (called by the study configs) builds a user's network on the data's shapes only."""
    (tmp_path / "bad_arch.py").write_text(BAD_PLUGINS)
    (tmp_path / "my_conv.py").write_text(_readme_example("my_conv"))
    monkeypatch.syspath_prepend(str(tmp_path))
    digits = DataConfig(name="digits", n_train=20, n_test=10)
    D.check_pair(digits, ModelConfig(arch="my_conv:build"))  # images as stored, 10 outputs: fine
    with pytest.raises(ConfigError, match=r"^model\.arch: 'bad_arch:no_out_dim' takes no out_dim argument but the "
                                          r"data have 10 outputs"):
        D.check_pair(digits, ModelConfig(arch="bad_arch:no_out_dim"))
    with pytest.raises(ConfigError, match=r"^model\.arch: 'bad_arch:needs_images' fails on inputs of shape \(2, 1\)"):
        D.check_pair(DataConfig(), ModelConfig(arch="bad_arch:needs_images"))


@pytest.mark.slow  # ~10 s; CI runs it with -m slow
def test_cnn_in_float32_with_64_bit_mode_on():
    """The studies run float32 networks with 64-bit mode on (ensemble always; the tests too): the conv
    net must stay float32 through its layers (NT's Conv alone turns float32 into float64 there) and
    give the float64 net's values to float32 rounding."""
    x = np.random.default_rng(5).standard_normal((3, 5, 5, 1))
    net = models.build(ModelConfig(arch="cnn", depth=3), 8, out_dim=4, input_shape=x.shape)
    _, p64 = net.init_fn(jax.random.PRNGKey(0), x.shape)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), p64)
    f32 = net.apply_fn(p32, x.astype(np.float32))
    assert f32.dtype == np.float32
    f64 = np.asarray(net.apply_fn(p64, x))
    np.testing.assert_allclose(np.asarray(f32), f64, atol=1e2 * np.finfo(np.float32).eps * np.abs(f64).max())
    k = kernels.empirical_ntk_fn(net.apply_fn, implementation=2, trace_outputs=False)(x.astype(np.float32), None, p32)
    assert k.dtype == np.float32 and k.shape == (3, 3, 4, 4)


def test_prediction_rows_spread_over_the_interpolation_range():
    """data.prediction_rows: n indices of the masked test inputs, evenly spread, first and last included;
    all of them when fewer are masked; none for n <= 0."""
    from studylib import data as D

    mask = np.zeros(21, bool)
    mask[5:16] = True  # 11 inputs inside
    np.testing.assert_array_equal(D.prediction_rows(mask, 3), [5, 10, 15])
    np.testing.assert_array_equal(D.prediction_rows(mask, 50), np.arange(5, 16))
    assert D.prediction_rows(mask, 0).size == 0
