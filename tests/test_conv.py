"""studylib.conv: the im2col apply_fn of the cnn net against stax's own apply_fn (NT's function), float64.

Every comparison is relative to the size of what is compared: the two paths do the same multiply-adds in a
different order, so in float64 they agree to a few ulps of the largest term (1e-12 leaves ~1e3 ulps of room
for sums over a few hundred terms)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studylib import conv, models

RTOL = 1e-12  # float64 rounding of re-ordered sums (see the module docstring)


def _x(shape=(3, 5, 7, 2), seed=0):
    """Odd, non-square images (N, H, W, C), with a zero block: ReLU then meets z = 0 exactly when b_std = 0."""
    x = np.random.default_rng(seed).standard_normal(shape)
    x[0, :3, :3, :] = 0.0
    return jnp.asarray(x)


def _close(a, b, rtol=RTOL):
    """max |a - b| <= rtol x max |b| (both exactly zero passes: NTK-parameterized biases with b_std = 0)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    assert np.max(np.abs(a - b), initial=0.0) <= rtol * np.max(np.abs(b), initial=0.0), np.max(np.abs(a - b))


def _pair(width=4, **kw):
    """(fast, reference) networks with the same init_fn."""
    return models.convolutional(width, **kw), models.convolutional(width, reference=True, **kw)


#: Every pair of values of (readout, parameterization, b_std, depth) occurs in some case (6 cases instead of
#: the 16 of the full product: each case compiles two programs).
CASES = [dict(readout=r, parameterization=p, b_std=b, depth=d) for r, p, b, d in (
    ("flatten", "ntk", 0.0, 1), ("flatten", "standard", 0.3, 3), ("gap", "ntk", 0.3, 1),
    ("gap", "standard", 0.0, 3), ("flatten", "ntk", 0.3, 3), ("gap", "standard", 0.3, 1))]


def test_cases_cover_every_pair():
    values = [sorted({c[k] for c in CASES}, key=str) for k in CASES[0]]
    assert [len(v) for v in values] == [2, 2, 2, 2]
    for (i, vi), (j, vj) in itertools.combinations(enumerate(values), 2):
        seen = {(tuple(c.values())[i], tuple(c.values())[j]) for c in CASES}
        assert seen == set(itertools.product(vi, vj)), (i, j)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_fast_apply_and_its_gradient_equal_stax(case):
    fast, ref = _pair(out_dim=3, **case)
    x = _x()
    _, params = ref.init_fn(jax.random.PRNGKey(1), x.shape)
    y = jnp.asarray(np.random.default_rng(2).standard_normal((x.shape[0], 3)))

    def value_and_grad(apply):  # one program per path: f(x) and the gradient of 1/2 mean((f - y)^2)
        return jax.jit(lambda p: (apply(p, x), jax.grad(lambda q: 0.5 * jnp.mean((apply(q, x) - y) ** 2))(p)))(params)

    (f_fast, g_fast), (f_ref, g_ref) = value_and_grad(fast.apply_fn), value_and_grad(ref.apply_fn)
    _close(f_fast, f_ref)
    assert jax.tree_util.tree_structure(g_fast) == jax.tree_util.tree_structure(g_ref)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref), strict=True):
        _close(a, b)


FORM_CFG = dict(depth=2, activation="erf", parameterization="standard", readout="flatten", b_std=0.2)


@pytest.fixture(scope="module")
def form_reference():
    """Stax's outputs for the form tests, computed (and compiled) once for all forms."""
    ref = models.convolutional(3, reference=True, out_dim=2, **FORM_CFG)
    x = _x((2, 4, 5, 3), seed=3)
    _, params = ref.init_fn(jax.random.PRNGKey(4), x.shape)
    return params, x, jax.jit(ref.apply_fn)(params, x)


@pytest.mark.parametrize("form", conv.FORMS)
def test_every_form_computes_the_stax_net(form, form_reference):
    """The forms kept for measurement (docs/performance.md) are the same function too (erf, 'standard')."""
    params, x, want = form_reference
    apply = conv.apply_fn(conv.ConvNet(**FORM_CFG), form=form)
    _close(jax.jit(apply)(params, x), want)


def test_patches_are_the_hwio_rows():
    """im2col by shifts against a direct NumPy sum over the filter taps, both layouts, an even filter (2 x 3:
    SAME pads low 0 / high 1 on H)."""
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 3))
    W = np.random.default_rng(6).standard_normal((2, 3, 3, 4))
    fh, fw = W.shape[:2]
    (lo_h, _), (lo_w, _) = conv.same_pads(fh), conv.same_pads(fw)
    xp = np.pad(x, ((0, 0), (lo_h, fh - 1 - lo_h), (lo_w, fw - 1 - lo_w), (0, 0)))
    direct = sum(np.einsum("nhwc,co->nhwo", xp[:, i:i + 4, j:j + 5, :], W[i, j]) for i in range(fh) for j in range(fw))
    p = np.asarray(conv.patches(jnp.asarray(x), (fh, fw)))
    _close(jnp.asarray(p.reshape(-1, 18) @ W.reshape(18, 4)).reshape(direct.shape), jnp.asarray(direct))
    p_cf = np.asarray(conv.patches(jnp.asarray(x.transpose(3, 0, 1, 2)), (fh, fw), layout="CNHW"))
    np.testing.assert_array_equal(p_cf, p.transpose(3, 0, 1, 2))  # the same numbers, channels first
    _close(conv.conv_same(jnp.asarray(x), jnp.asarray(W), form="lax_nhwc"), jnp.asarray(direct))


def test_empirical_ntk_of_the_fast_apply_equals_stax():
    """NT's empirical_ntk_fn (implementation 1, full kernel over the k outputs) on both apply_fns."""
    from studylib.nt import nt

    fast, ref = _pair(width=3, depth=2, readout="gap", out_dim=2)
    x = _x((3, 4, 4, 1), seed=7)
    _, params = ref.init_fn(jax.random.PRNGKey(8), x.shape)

    def kernel(apply):
        return jax.jit(nt.empirical_ntk_fn(apply, trace_axes=(), vmap_axes=0, implementation=1))(x, None, params)

    k_fast, k_ref = kernel(fast.apply_fn), kernel(ref.apply_fn)
    assert k_ref.shape == (3, 3, 2, 2)
    _close(k_fast, k_ref)


def test_vmapped_over_seeds_and_float32_stays_float32():
    """As compare's trainer runs it: seeds stacked on a leading axis under vmap; float32 params and images
    with 64-bit mode on (the tests') give float32, as stax's apply_fn with models._same_dtype does (float32
    rounding: 1e-5 of the outputs' scale)."""
    fast, ref = _pair(width=4, depth=2, out_dim=2)
    x = _x((3, 4, 5, 1), seed=9).astype(jnp.float32)
    draws = [ref.init_fn(jax.random.PRNGKey(s), x.shape)[1] for s in range(3)]
    params = jax.tree_util.tree_map(lambda *a: jnp.stack(a).astype(jnp.float32), *draws)
    out_fast = jax.jit(jax.vmap(fast.apply_fn, in_axes=(0, None)))(params, x)
    out_ref = jax.jit(jax.vmap(ref.apply_fn, in_axes=(0, None)))(params, x)
    assert out_fast.dtype == out_ref.dtype == jnp.float32 and out_fast.shape == (3, 3, 2)
    _close(out_fast, out_ref, rtol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match=r"readout: unknown value 'max'; accepted: flatten, gap"):
        conv.ConvNet(depth=1, readout="max")
    with pytest.raises(ValueError, match=r"form: unknown value 'fft'; accepted: im2col_cf"):
        conv.apply_fn(conv.ConvNet(depth=1), form="fft")
    with pytest.raises(ValueError, match=r"params: expected the 4 layers of a depth-1 cnn, got 6"):
        conv.apply_fn(conv.ConvNet(depth=1))([((), ())] * 6, jnp.zeros((1, 3, 3, 1)))
