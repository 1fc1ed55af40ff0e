"""NT's own import form through the study, and the NT 0.6.5 entry points :mod:`studylib.nt` repairs
(issue 23, items 1 and 5; docs/versions.md), each against an independent computation.

CI runs this file on the newest JAX and on 0.5.3: every patch either applies and is correct there,
or does not apply (its cause is absent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from studylib import models
from studylib.nt import SHIMS, nt, stax

ROOT = Path(__file__).resolve().parents[1]
JAX_MINOR = tuple(int(v) for v in jax.__version__.split(".")[:2])

NT_FORM_PLUGIN = '''
from neural_tangents import stax  # NT's own form: no studylib import in this module


def build(width, cfg, out_dim=1):
    return stax.serial(stax.Dense(width, W_std=1.5, b_std=0.1), stax.Erf(), stax.Dense(out_dim, W_std=1.5))
'''


def _env(*paths: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(ROOT)]), **extra}


def _run_compare(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    (tmp_path / "ntform_plugin.py").write_text(NT_FORM_PLUGIN)
    return subprocess.run([sys.executable, "-m", "study.compare", "--preset", "tiny", "--arch", "ntform_plugin:build",
                           "--widths", "8,16", "--steps", "5", "--out", str(tmp_path / "out"), "--no-progress", *flags],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(tmp_path))


def test_a_plugin_in_nt_form_is_built_by_compare(tmp_path):
    """``--arch mod:build`` whose module says ``from neural_tangents import stax`` (it used to stop with
    "cannot import name 'Jaxpr' from 'jax.core'" on JAX >= 0.6: the plugin was imported before the shims).
    ``--plan`` imports it and builds the net at each width: Dense(w) with bias on 1-D inputs, Dense(1)
    without (NT's default b_std=None) has w + w + w parameters."""
    proc = _run_compare(tmp_path, "--plan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "24 parameters" in proc.stdout and "48 parameters" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_a_plugin_in_nt_form_runs_through_compare(tmp_path):
    """The same plugin through a whole (tiny) compare run: training, kernels, closed forms."""
    proc = _run_compare(tmp_path, "--seeds", "1", "--checkpoints", "2", "--no-figures")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["widths"]) == [8, 16]
    loss = np.asarray(summary["metrics"]["loss_net"]["mean"], float)
    assert loss.shape[0] == 2 and np.isfinite(loss).all()


def test_import_studylib_is_enough_for_import_neural_tangents(tmp_path):
    """A user's own script: ``import studylib`` first, then NT as NT documents it. The NNGP of
    Dense(1, W_std, b_std) is W_std^2 x.x'/d + b_std^2 (Lee et al. 2018 eq. 4), computed in NumPy;
    TensorFlow stays out of the process (the ``experimental`` stand-in), and ``import studylib`` alone
    imports neither JAX nor NT (the hook waits for NT's import; --help stays JAX-free)."""
    code = (
        "import sys, json\n"
        "import studylib\n"
        "lazy = not any(m in sys.modules for m in ('jax', 'neural_tangents', 'numpy'))\n"
        "import numpy as np\n"
        "import neural_tangents as nt\n"
        "from neural_tangents import stax\n"
        "x = np.random.default_rng(0).normal(size=(5, 3))\n"
        "assert stax is nt.stax\n"
        "_, _, kernel_fn = nt.stax.serial(stax.Dense(1, W_std=1.5, b_std=0.3))\n"
        "k = np.asarray(kernel_fn(x, None, 'nngp'))\n"
        "want = 1.5 ** 2 * x @ x.T / 3 + 0.3 ** 2\n"
        "print(json.dumps({'err': float(np.abs(k - want).max()), 'scale': float(np.abs(want).max()),\n"
        "                  'tf': 'tensorflow' in sys.modules, 'lazy': lazy}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["err"] <= 1e-6 * got["scale"]  # float32 in that process: rounding ~1e-7 of the kernel's scale
    assert not got["tf"] and got["lazy"]


# --- implementations 3 (structured derivatives) and 0 (auto) --------------------------------------------------


def _small_nets():
    conv = stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.Conv(3, (2, 2), strides=(2, 2), W_std=1.4, b_std=0.1), stax.Erf(), stax.Flatten(),
                       stax.Dense(2, W_std=1.4, b_std=0.1))
    fc = models.fully_connected(6, depth=1, out_dim=2)

    def sliced_init(key, shape):  # slices of hidden units: JAX >= 0.10 transposes `slice` only by accumulation
        k1, k2 = jax.random.split(key)
        return (shape[0], 2), (jax.random.normal(k1, (shape[1], 6)), jax.random.normal(k2, (3, 2)))

    def sliced_apply(params, x, **kwargs):
        w1, w2 = params
        h = jnp.tanh(x @ w1)
        return (h[:, 1:4] + jax.lax.dynamic_slice_in_dim(h, 3, 3, axis=1)) @ w2

    return {"fc": (fc[:2], (4, 5)), "conv": (conv[:2], (3, 6, 6, 1)), "sliced": ((sliced_init, sliced_apply), (4, 5))}


@pytest.mark.parametrize("name", ["fc", "conv", "sliced"])
def test_structured_derivatives_equal_the_jacobian_contraction(name):
    """Implementation 3 (NT's structured derivatives: Dense and Conv Jacobians kept in factored form)
    against implementation 1 (the plain Jacobian contraction), full and output-traced kernels."""
    (init_fn, apply_fn), shape = _small_nets()[name]
    x = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float64)
    x2 = x[:2] + 0.5
    _, params = init_fn(jax.random.PRNGKey(0), shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    # Full kernel on both nets; the output-traced kernel between two batches on the dense one.
    for trace_axes, second in (((), None),) + ((((-1,), x2),) if name == "fc" else ()):
        want, got = (np.asarray(jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=trace_axes, implementation=impl))(
            x, second, params)) for impl in (1, 3))
        # float64 sums of the same products in another order: rounding ~1e-15 of the kernel's scale.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max(), err_msg=str(trace_axes))


def test_auto_implementation_picks_one_that_agrees():
    """Implementation 0 compiles 1, 2 and 3, ranks them by XLA's FLOP count and runs the cheapest
    (it failed with KeyError: 0 since cost_analysis() became a dict)."""
    (init_fn, apply_fn), shape = _small_nets()["fc"]
    x = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float64)
    _, params = init_fn(jax.random.PRNGKey(0), shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    want = np.asarray(nt.empirical_ntk_fn(apply_fn, trace_axes=(), implementation=1)(x, None, params))
    got = np.asarray(nt.empirical_ntk_fn(apply_fn, trace_axes=(), implementation=0)(x, None, params))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())


# --- predict ------------------------------------------------------------------------------------------------------


def _spd(n: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


def test_max_learning_rate_is_2nk_over_lambda_max():
    k = _spd(6)
    lam = np.linalg.eigvalsh(k)[-1]
    # NT adds eps = 1e-12 to lambda_max: relative effect 1e-12 / lam.
    np.testing.assert_allclose(nt.predict.max_learning_rate(k), 2 * 6 / lam, rtol=1e-10)
    np.testing.assert_allclose(nt.predict.max_learning_rate(k, y_train_size=18, momentum=0.5), 2 * 1.5 * 18 / lam,
                               rtol=1e-10)


def _flow_numpy(k: np.ndarray, y: np.ndarray, f0: np.ndarray, lr: float, t: float) -> np.ndarray:
    """Gradient flow on 1/2 mean((f - y)^2) over the N k outputs (SCIENCE.md section 2), time lr * t:
    f_t = y + V exp(-lr t lambda / (N k)) V^T (f_0 - y), from NumPy's eigh."""
    lam, v = np.linalg.eigh(k)
    return y + v @ (np.exp(-lr * t * lam / y.size)[:, None] * (v.T @ (f0 - y)))


def test_gradient_descent_mse_with_a_traced_kernel():
    """Under jit, vmap and grad of the kernel (NT raised UnexpectedTracerError on every JAX), against
    NumPy's eigh closed form and, for grad, its central difference."""
    rng = np.random.default_rng(1)
    k, y, f0, lr, t = _spd(5), rng.normal(size=(5, 1)), rng.normal(size=(5, 1)), 0.7, 3.0

    def predict(kernel, t=t):
        return nt.predict.gradient_descent_mse(kernel, y, learning_rate=lr)(t, f0)

    want = _flow_numpy(k, y, f0, lr, t)
    tol = 1e-10 * np.abs(want).max()  # float64 eigendecompositions of a well-conditioned 5 x 5 matrix
    np.testing.assert_allclose(jax.jit(predict)(k), want, rtol=0, atol=tol)
    np.testing.assert_allclose(jax.vmap(predict)(jnp.stack([k, 2 * k]))[1], _flow_numpy(2 * k, y, f0, lr, t),
                               rtol=0, atol=tol)
    # t = None: the Cholesky path; the flow has converged to y on the training set.
    np.testing.assert_allclose(jax.jit(lambda kk: predict(kk, None))(k), y, rtol=0, atol=1e-12)
    direction = _spd(5, seed=2)
    grad = jax.grad(lambda s: predict(jnp.asarray(k) + s * direction).sum())(0.0)
    h = 1e-5
    up, down = (_flow_numpy(k + s * h * direction, y, f0, lr, t).sum() for s in (1, -1))
    diff = (up - down) / (2 * h)
    # Central difference: truncation O(h^2) ~ 1e-10, rounding ~1e-16 / h ~ 1e-11, relative to |grad| ~ 1.
    np.testing.assert_allclose(grad, diff, rtol=1e-6, atol=1e-8)


def test_gradient_descent_mse_concrete_kernel_keeps_nt_caching():
    """A concrete kernel is still decomposed eagerly (NT's eval_context) and cached: one predict_fn
    called under two different jits and eagerly gives the same closed form (no leaked tracers)."""
    rng = np.random.default_rng(3)
    k, y, f0 = _spd(4), rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    predict = nt.predict.gradient_descent_mse(k, y, learning_rate=0.5)
    first = jax.jit(lambda t: predict(t, f0))(2.0)
    second = jax.jit(lambda t: predict(t, f0))(jnp.asarray([2.0, 4.0]))
    eager = predict(4.0, f0)
    lam, v = np.linalg.eigh(k)  # the kernel acts on the N axis; k = 2 outputs share it (trace_axes=(-1,))
    want = [y + v @ (np.exp(-0.5 * s * lam / y.size)[:, None] * (v.T @ (f0 - y))) for s in (2.0, 4.0)]
    for got, w in ((first, want[0]), (second[0], want[0]), (second[1], want[1]), (eager, want[1])):
        np.testing.assert_allclose(got, w, rtol=0, atol=1e-12)


def test_patches_are_listed_and_touch_only_nt():
    """Every patch is named in SHIMS (the devices line); JAX's and SciPy's own functions are untouched."""
    from neural_tangents._src import empirical, predict

    assert "nt.empirical._get_flops" in SHIMS and "nt.predict.eval_context" in SHIMS
    if JAX_MINOR >= (0, 10):  # JAX's internal ad.linearize has its new signature there, not on 0.5.x
        assert "nt.empirical._get_primals_out_and_pullback" in SHIMS
    elif JAX_MINOR <= (0, 5):
        assert not [s for s in SHIMS if s.startswith("jax.") or s.endswith("pullback")]
    assert ("nt.predict.sp" in SHIMS) == ("eigvals" not in __import__("inspect").signature(
        scipy.linalg.eigvalsh).parameters)
    assert predict.jax is not jax and predict.jax.numpy is jax.numpy  # a stand-in only inside NT's module
    assert jax.core.eval_context.__module__.startswith("jax")
    assert empirical.ad.add_tangents is jax.interpreters.ad.add_tangents
