"""Fast mini-batch SGD / full-batch GD for fully connected nets and their linearization.

The network is the stax ``fully_connected`` net of :mod:`studylib.models`,
with the same parameters (stax's list of ``(W, b)`` and ``()`` for the
activations; ``W`` of shape (fan_in, fan_out), ``b`` of shape (1, fan_out)),
but its forward and backward passes are written by hand so that one jitted
``lax.scan`` runs a whole cell near this machine's memory-bandwidth limit:

* layer l computes ``z = s_l * (h @ W) + t_l * b`` with ``s_l = W_std / sqrt(fan_in)``,
  ``t_l = b_std`` (NTK parameterization) or ``s_l = t_l = 1`` (standard), as stax does;
* one SGD step on the mini-batch I (size B) is ``theta <- theta - lr grad L_I`` with
  ``L_I = (c/2) mean_{i in I} (f(x_i) - y_i)^2``; ``c = 2`` for ``loss='mse'`` (the seed's
  mean((f - y)^2), no 1/2) and ``c = 1`` for ``loss='half_mse'`` (NT's convention);
* ``method='direct'`` applies each step's update to the weights; ``method='lowrank'`` keeps
  the weights of a chunk of K steps fixed and carries the updates as factors
  ``W = W_base + U V`` (U: fan_in x KB, V: KB x fan_out), folding them in once per chunk.
  Both are the same arithmetic up to float rounding (tests check it in float64); lowrank
  reads each big weight matrix twice per step instead of reading it three times and
  writing it once, which is what bounds the step at width 1000 (SCIENCE.md section 5).
  The backward pass runs in transposed layout (:func:`backward_t`: ``W @ d^T``, not
  ``d @ W^T``): for B > 1 XLA's CPU matmul is 2-3x slower with a transposed right operand
  (``study.bench`` prints the profile). The factors' new slices are written
  in place when XLA's copy insertion uses region analysis (set by :mod:`studylib.xla_flags`);
  without it XLA copies every U and V twice per step.

The linearized model ``nt.linearize(apply_fn, theta_0)`` is trained in function space
(SCIENCE.md section 6): theta_t - theta_0 = J_0^T c_t, so f_lin,t(x) = f_0(x) + K_0(x, X) c_t,
and an SGD step on batch I is ``c_I -= lr * c * (f_lin(x_I) - y_I) / B``. Its squared
parameter change is c^T K_0 c and that of layer l's weights c^T K_0^(W_l) c, with the
per-layer pieces of the empirical NTK below. tests/test_sgd.py checks this against training
``nt.linearize`` with jax.grad on the same batches.

The empirical NTK of the FC net is assembled from per-sample activations h and
backpropagated derivatives d = df/dz: K(x, x') = sum_l s_l^2 (h_{l-1} . h'_{l-1})(d_l . d'_l)
+ t_l^2 (d_l . d'_l) (tested equal to ``nt.empirical_ntk_fn``).

The hand-written trainer takes flat inputs (N, d) and one output. Every other network
(``res_fc``, ``cnn``, user builders ``module:function``; any stax net), and any net with k > 1
outputs or image inputs (N, H, W, C), is trained by the generic trainer (:class:`GenericPlan`):
the same batches, loss convention, records and function-space linearization, with ``jax.grad``
of its ``apply_fn`` on stax's parameter pytree, outputs flattened to N k values (loss
(c/2) mean over all B k outputs of a batch), the full (N k, N k) empirical NTK of
:func:`studylib.kernels.empirical_ntk_fn` and per-layer weight changes over every weight array
(:func:`studylib.models.weight_paths`). Tests check it against stax + jax.grad and
``nt.linearize`` step by step with k = 3 outputs, and that on the FC net it gives the fast
trainer's curves.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from studylib.kernels import LOSS_FACTOR
from studylib.models import FAST_ARCHS  # the architectures the hand-written trainer handles

LOSSES = ("mse", "half_mse")
METHODS = ("direct", "lowrank")
#: Largest K*B (rank of the deferred update) for method 'lowrank'.
LOWRANK_MAX_RANK = 64


@dataclasses.dataclass(frozen=True)
class MLP:
    """Static description of the FC net: layer sizes (input, hidden..., output) and scales."""

    sizes: tuple[int, ...]
    w_scale: tuple[float, ...]
    b_scale: tuple[float, ...]
    activation: str = "relu"

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1


def mlp(model_cfg, width: int, *, in_dim: int = 1, out_dim: int = 1) -> MLP:
    """The :func:`studylib.models.fully_connected` net of ``model_cfg`` (a
    :class:`studylib.models.ModelConfig`: depth, activation, W_std, b_std, parameterization) at
    hidden width ``width`` as an :class:`MLP` -- the same network, so no defaults of its own."""
    sizes = (in_dim,) + (width,) * model_cfg.depth + (out_dim,)
    if model_cfg.parameterization in ("ntk", "mup"):
        # mup (and ntk with gamma0 != 1): NT's 'ntk' net with its readout / gamma (studylib.mup)
        g = model_cfg.gamma(width)
        ws = tuple(model_cfg.W_std / math.sqrt(n) for n in sizes[:-1])
        bs = (model_cfg.b_std,) * (len(sizes) - 1)
        if g != 1.0:
            ws, bs = (*ws[:-1], ws[-1] / g), (*bs[:-1], bs[-1] / g)
    elif model_cfg.parameterization == "standard":
        ws = (1.0,) * (len(sizes) - 1)
        bs = (1.0,) * (len(sizes) - 1)
    else:
        raise ValueError(f"parameterization: unknown value {model_cfg.parameterization!r}")
    return MLP(sizes, ws, bs, model_cfg.activation)


def dense_params(stax_params: Sequence[Any]) -> tuple:
    """stax params list -> tuple of (W, b) of the Dense layers."""
    return tuple((p[0], p[1]) for p in stax_params if isinstance(p, tuple | list) and len(p) == 2)


def stax_params(dense: Sequence[tuple]) -> list:
    """Inverse of :func:`dense_params` for ``stax.serial(Dense, act, ..., Dense)``."""
    out: list = []
    for i, wb in enumerate(dense):
        out.append(tuple(wb))
        if i < len(dense) - 1:
            out.append(())
    return out


def _act(name: str, z):
    if name == "relu":
        return jnp.maximum(z, 0)
    return jax.scipy.special.erf(z)


def _dact(name: str, z):
    if name == "relu":  # 1/2 at z == 0, as jax.grad of jnp.maximum(z, 0) (stax.Relu)
        return jnp.where(z > 0, 1.0, jnp.where(z == 0, 0.5, 0.0)).astype(z.dtype)
    return (2.0 / math.sqrt(math.pi)) * jnp.exp(-z * z)


#: Matrix products with at most this many multiply-adds are written as broadcast-multiply-sum:
#: XLA's CPU backend then emits them inline in a fused loop, instead of calling its matmul
#: runtime, whose per-call overhead (thread-pool dispatch) dominates the step of narrow nets.
SMALL_PRODUCT = 4096


def mm(a, b):
    """a @ b for 2-D a, b."""
    if a.shape[0] * a.shape[1] * b.shape[1] <= SMALL_PRODUCT:
        return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)
    return lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())))


def mm_t(g, w):
    """g @ w.T computed as (w @ g.T).T so that XLA never transposes the big matrix w."""
    if g.shape[0] * g.shape[1] * w.shape[0] <= SMALL_PRODUCT:
        return jnp.sum(g[:, None, :] * w[None, :, :], axis=2)
    return lax.dot_general(w, g, (((1,), (1,)), ((), ()))).T


def _mv(k, c):
    """k @ c for a small matrix k and vector c (inline, see SMALL_PRODUCT)."""
    return jnp.sum(k * c[None, :], axis=1)


def forward(net: MLP, dense, x):
    """Output (B, out) and the cache (hs: inputs of each layer, zs: hidden pre-activations)."""
    hs, zs = [x], []
    h = x
    for l, (w, b) in enumerate(dense):
        z = net.w_scale[l] * mm(h, w) + net.b_scale[l] * b
        if l < net.n_layers - 1:
            zs.append(z)
            h = _act(net.activation, z)
            hs.append(h)
    return z, (hs, zs)


def backward(net: MLP, dense, cache, g):
    """dL/dz of every layer (list, input layer first) given g = dL/df of shape (B, out)."""
    zs = cache[1]
    ds = [None] * net.n_layers
    d = g
    for l in reversed(range(net.n_layers)):
        ds[l] = d
        if l > 0:
            d = net.w_scale[l] * mm_t(d, dense[l][0]) * _dact(net.activation, zs[l - 1])
    return ds


def backward_t(net: MLP, dense, cache, g):
    """:func:`backward` in transposed layout: dL/dz of every layer as (fan_out, B) arrays.

    The backward product is then ``W @ d^T`` (the weight matrix as the left operand, as
    stored), which XLA's CPU matmul runs 2-3x faster for B > 1 than ``d @ W^T`` (a transposed
    right operand); for B = 1 both are the same matrix-vector product."""
    zs = cache[1]
    ds = [None] * net.n_layers
    d = g.T
    for l in reversed(range(net.n_layers)):
        ds[l] = d
        if l > 0:
            d = net.w_scale[l] * mm(dense[l][0], d) * _dact(net.activation, zs[l - 1]).T
    return ds


def grads(net: MLP, dense, x, g):
    """Gradient pytree (same layout as ``dense``) of sum_i g_i f(x_i); used by tests and GD."""
    _, cache = forward(net, dense, x)
    ds = backward(net, dense, cache, g)
    hs = cache[0]
    return tuple((net.w_scale[l] * mm(hs[l].T, ds[l]), net.b_scale[l] * jnp.sum(ds[l], 0, keepdims=True))
                 for l in range(net.n_layers))


def per_sample(net: MLP, dense, x):
    """Output f (N, out), layer inputs h (N, fan_in) and backpropagated d = df/dz of each
    point (d of ones), the latter transposed: (fan_out, N) (:func:`backward_t`)."""
    f, cache = forward(net, dense, x)
    ones = jnp.ones((x.shape[0], net.sizes[-1]), x.dtype)
    return f, cache[0], backward_t(net, dense, cache, ones)


def feature_kernel_parts(net: MLP, h1, d1, h2, d2):
    """Per-layer NTK pieces from per-sample features (:func:`per_sample`'s h and d of two sets of
    points): weights s_l^2 (h1 . h2)(d1 . d2) and biases t_l^2 (d1 . d2), each (L, N1, N2).

    J_W_l(x) = s_l h_{l-1}(x) (x) d_l(x), so this is J(x1) . J(x2) even when the two feature sets
    come from different parameters (used by :mod:`studylib.perturb` for one-sided derivatives)."""
    kw, kb = [], []
    for l in range(net.n_layers):
        dd = lax.dot_general(d1[l], d2[l], (((0,), (0,)), ((), ())))  # d1 . d2 per pair of points
        kw.append(net.w_scale[l] ** 2 * mm(h1[l], h2[l].T) * dd)
        kb.append(net.b_scale[l] ** 2 * dd)
    return jnp.stack(kw), jnp.stack(kb)


def ntk_parts(net: MLP, dense, x1, x2=None, *, with_f: bool = False):
    """Per-layer pieces of the empirical NTK: (weights (L, N1, N2), biases (L, N1, N2)).

    K = sum of both over layers; layer l's weight piece is the kernel of W_l alone. With
    ``with_f`` also the output f(x1) (N1, out) of the same forward pass (one pass, not two).
    """
    f1, h1, d1 = per_sample(net, dense, x1)
    _, h2, d2 = (f1, h1, d1) if x2 is None else per_sample(net, dense, x2)
    kw, kb = feature_kernel_parts(net, h1, d1, h2, d2)
    if with_f:
        return kw, kb, f1
    return kw, kb


def ntk(net: MLP, dense, x1, x2=None):
    """Empirical NTK (N1, N2) of the scalar-output net."""
    kw, kb = ntk_parts(net, dense, x1, x2)
    return jnp.sum(kw, 0) + jnp.sum(kb, 0)


def full_ntk(net: MLP, dense, x):
    """The full empirical NTK of the net with k = ``net.sizes[-1]`` outputs, flat (N k, N k) (row n k + a =
    output a of input n, :func:`studylib.kernels.flat_kernel`'s layout), and f(x) (N, k), from per-output
    features: J_{W_l}(x, a) = s_l h_{l-1}(x) (x) d_l(x, a) with d_l(x, a) = df_a/dz_l(x), so
    K[(n, a), (m, b)] = sum_l (s_l^2 h_{l-1}(n) . h_{l-1}(m) + t_l^2) d_l(n, a) . d_l(m, b).

    One forward pass and one backward pass of all N k one-hot cotangents at once (transposed layout,
    d_l: (fan_out, N k)); the cost is the products d_l^T d_l, (N k)^2 fan_out each, against (N k)^2 P for
    a Jacobian contraction. Tested equal to NT's ``empirical_ntk_fn(..., trace_axes=())``."""
    f, (hs, zs) = forward(net, dense, x)
    n, k = f.shape
    d = jnp.tile(jnp.eye(k, dtype=x.dtype), (1, n))  # (k, N k): column n k + a is e_a
    kernel = jnp.zeros((n * k, n * k), x.dtype)
    for l in reversed(range(net.n_layers)):
        dd = lax.dot_general(d, d, (((0,), (0,)), ((), ())))  # (N k, N k)
        hh = jnp.repeat(jnp.repeat(mm(hs[l], hs[l].T), k, axis=0), k, axis=1)
        kernel = kernel + (net.w_scale[l] ** 2 * hh + net.b_scale[l] ** 2) * dd
        if l > 0:
            d = net.w_scale[l] * mm(dense[l][0], d) * jnp.repeat(_dact(net.activation, zs[l - 1]).T, k, axis=1)
    return kernel, f


def epoch_permutations(key, epochs: int, n: int):
    """(epochs, n) int32: a fresh random permutation of range(n) for every epoch."""
    keys = jax.random.split(key, epochs)
    return jax.vmap(lambda k: jax.random.permutation(k, n))(keys).astype(jnp.int32)


def chunk_steps(steps_per_record: int, batch_size: int, max_rank: int = LOWRANK_MAX_RANK) -> int:
    """Steps per low-rank chunk: the largest divisor K of ``steps_per_record`` with K*B <= max_rank."""
    best = 1
    for k in range(1, steps_per_record + 1):
        if steps_per_record % k == 0 and k * batch_size <= max(max_rank, batch_size):
            best = k
    return best


def _sq(a):
    return jnp.sum(jnp.square(a))


# ---------------------------------------------------------------------------------------------
# The cell runner
# ---------------------------------------------------------------------------------------------

class _Schedule:
    """Steps per epoch and per record of a plan (fields n_train, batch_size, record_every)."""

    n_train: int
    batch_size: int
    record_every: int

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size

    @property
    def steps_per_record(self) -> int:
        return self.record_every * self.steps_per_epoch


@dataclasses.dataclass(frozen=True)
class Plan(_Schedule):
    """Static shape of one training run (one compile)."""

    net: MLP
    n_train: int
    batch_size: int
    record_every: int  # epochs between records
    loss: str = "mse"
    method: str = "direct"

    @property
    def chunk(self) -> int:
        return chunk_steps(self.steps_per_record, self.batch_size) if self.method == "lowrank" else 1


def lin_step_fn(plan: Plan, f0, k0, y, lr):
    """c_I -= lr * c_loss * (f_0(x_I) + K_0[I] c - y_I) / B  (function-space SGD of the linearization)."""
    gfac = LOSS_FACTOR[plan.loss] / plan.batch_size

    def lin_step(c, idx):
        r = f0[idx] + _mv(k0[idx], c) - y[idx, 0]
        return c.at[idx].add(-lr * gfac * r)

    return lin_step


def _direct_chunk(plan: Plan, dense, c, batches, x, y, lr, lin_step):
    """K steps updating the weights every step. batches: (K, B)."""
    net = plan.net
    gfac = LOSS_FACTOR[plan.loss] / plan.batch_size

    def step(carry, idx):
        dense, c = carry
        xb, yb = x[idx], y[idx]
        f, cache = forward(net, dense, xb)
        ds = backward(net, dense, cache, gfac * (f - yb))
        hs = cache[0]
        new = tuple((w - mm((lr * net.w_scale[l] * hs[l]).T, ds[l]),
                     b - (lr * net.b_scale[l]) * jnp.sum(ds[l], 0, keepdims=True))
                    for l, (w, b) in enumerate(dense))
        return (new, lin_step(c, idx)), None

    (dense, c), _ = lax.scan(step, (dense, c), batches)
    return dense, c


def _lowrank_chunk(plan: Plan, dense, c, batches, x, y, lr, lin_step):
    """K steps with the weights fixed at ``dense`` and the updates carried as factors
    W = W_base + U V; folded into the weights at the end. batches: (K, B)."""
    net = plan.net
    k_steps, bsz = batches.shape
    rank = k_steps * bsz
    dt = dense[0][0].dtype
    us0 = tuple(jnp.zeros((w.shape[0], rank), dt) for w, _ in dense)
    vs0 = tuple(jnp.zeros((rank, w.shape[1]), dt) for w, _ in dense)
    bs0 = tuple(b for _, b in dense)
    gfac = LOSS_FACTOR[plan.loss] / bsz

    def step(carry, inp):
        k, idx = inp
        us, vs, bs, c = carry
        xb, yb = x[idx], y[idx]
        hs, zs = [xb], []
        h = xb
        for l, (w, _) in enumerate(dense):
            z = net.w_scale[l] * (mm(h, w) + mm(mm(h, us[l]), vs[l])) + net.b_scale[l] * bs[l]
            if l < net.n_layers - 1:
                zs.append(z)
                h = _act(net.activation, z)
                hs.append(h)
        # backward in transposed layout (d: (fan_out, B)), as backward_t: W @ d and U (V d)
        d = (gfac * (z - yb)).T
        new_u, new_v, new_b = list(us), list(vs), list(bs)
        for l in reversed(range(net.n_layers)):
            d_prev = None
            if l > 0:
                d_prev = net.w_scale[l] * (mm(dense[l][0], d) + mm(us[l], mm(vs[l], d))) \
                    * _dact(net.activation, zs[l - 1]).T
            new_u[l] = lax.dynamic_update_slice(us[l], (-lr * net.w_scale[l]) * hs[l].T, (0, k * bsz))
            new_v[l] = lax.dynamic_update_slice(vs[l], d.T, (k * bsz, 0))
            new_b[l] = bs[l] - (lr * net.b_scale[l]) * jnp.sum(d, 1)[None, :]
            d = d_prev
        return (tuple(new_u), tuple(new_v), tuple(new_b), lin_step(c, idx)), None

    (us, vs, bs, c), _ = lax.scan(step, (us0, vs0, bs0, c), (jnp.arange(k_steps), batches))
    return tuple((w + mm(u, v), b) for (w, _), u, v, b in zip(dense, us, vs, bs, strict=True)), c


def train_steps(plan: Plan, dense, c, batches, x, y, lr, f0, k0):
    """Run all steps of ``batches`` ((steps, B) indices; steps a multiple of ``plan.chunk``)
    for the network and its linearization; returns (dense, c)."""
    lin_step = lin_step_fn(plan, f0, k0, y, lr)
    k = plan.chunk
    chunked = batches.reshape(batches.shape[0] // k, k, batches.shape[1])
    chunk_fn = _lowrank_chunk if plan.method == "lowrank" else _direct_chunk

    def body(carry, b):
        return chunk_fn(plan, carry[0], carry[1], b, x, y, lr, lin_step), None

    (dense, c), _ = lax.scan(body, (dense, c), chunked)
    return dense, c


def measure_init(plan: Plan, dense0, x, x_test):
    """Quantities fixed at init: f_0 on train/test, K_0 pieces on train, K_0(test, train)."""
    net = plan.net
    kw, kb = ntk_parts(net, dense0, x)
    kw_t, kb_t = ntk_parts(net, dense0, x_test, x)
    return {
        "f0_train": forward(net, dense0, x)[0][:, 0],
        "f0_test": forward(net, dense0, x_test)[0][:, 0],
        "k0_w": kw,  # (L, N, N) weight pieces
        "k0": jnp.sum(kw, 0) + jnp.sum(kb, 0),
        "k0_test": jnp.sum(kw_t, 0) + jnp.sum(kb_t, 0),  # (M, N)
    }


def kernel_change(k, k0) -> dict:
    """What a record keeps of the empirical NTK K_t (P, P) against K_0: its entry at (0, 0)
    (``k_x0``: first training point, first output) and ||K_t - K_0||_F^2 (``k_dsq``) -- scalars, so
    that records do not carry (N k)^2 arrays."""
    return {"k_x0": k[0, 0], "k_dsq": _sq(k - k0)}


def measure(plan: Plan, dense, dense0, c, x, y, init):
    """One record: network and linearized-model metrics (scalars and small arrays)."""
    net = plan.net
    cf = LOSS_FACTOR[plan.loss] / 2.0
    kw, kb, f = ntk_parts(net, dense, x, with_f=True)  # f_net from the NTK's own forward pass
    f_net = f[:, 0]
    f_lin = init["f0_train"] + _mv(init["k0"], c)
    wd = jnp.stack([_sq(w - w0) for (w, _), (w0, _) in zip(dense, dense0, strict=True)])
    bd = sum(_sq(b - b0) for (_, b), (_, b0) in zip(dense, dense0, strict=True))
    return {
        "loss_net": cf * jnp.mean((f_net - y[:, 0]) ** 2),
        "loss_lin": cf * jnp.mean((f_lin - y[:, 0]) ** 2),
        "f_net_train": f_net,
        "f_lin_train": f_lin,
        **kernel_change(jnp.sum(kw, 0) + jnp.sum(kb, 0), init["k0"]),
        "dsq_net": jnp.sum(wd) + bd,
        "wdsq_net": wd,
        "dsq_lin": c @ init["k0"] @ c,
        "wdsq_lin": jnp.einsum("i,lij,j->l", c, init["k0_w"], c),
    }


def segment_fn(plan: Plan):
    """``seg(dense, c, dense0, perms, x, y, lr, init) -> (dense, c, records)``: for each of
    ``perms.shape[0]`` records, ``record_every`` epochs (perms: (R, record_every, N)) then one
    :func:`measure`. Not jitted (callers jit/vmap it)."""
    def seg(dense, c, dense0, perms, x, y, lr, init):
        def body(carry, p):
            batches = p.reshape(-1, plan.batch_size)
            d, cc = train_steps(plan, carry[0], carry[1], batches, x, y, lr, init["f0_train"], init["k0"])
            return (d, cc), measure(plan, d, dense0, cc, x, y, init)

        (dense, c), recs = lax.scan(body, (dense, c), perms)
        return dense, c, recs

    return seg


@functools.lru_cache(maxsize=64)
def compiled_runner(plan: Plan, *, vmapped: bool):
    """Jitted (init_fn, segment_fn, final_fn), vmapped over a leading seed axis when ``vmapped``;
    cached per (plan, vmapped), so that a rerun in the same process compiles nothing.
    ``plan`` is a :class:`Plan` (hand-written FC trainer; parameters = :func:`dense_params`) or a
    :class:`GenericPlan` (any stax net by jax.grad; parameters = stax's whole pytree; ``c``, ``f_*``
    flat of length N k / M k, kernels (N k, N k)).

    * ``init_fn(dense0, x, x_test) -> init dict``;
    * ``segment_fn(dense, c, dense0, perms, x, y, lr, init) -> (dense, c, records)``, with
      ``dense`` and ``c`` donated (the carry is updated in place between segments);
    * ``final_fn(dense, c, x_test, init) -> (f_net_test, f_lin_test)``.
    """
    if isinstance(plan, GenericPlan):
        init_fn, seg, final_fn = _generic_fns(plan, plan.network().apply_fn, generic_weight_paths(plan))
    else:
        def init_fn(dense0, x, x_test):
            return measure_init(plan, dense0, x, x_test)

        def final_fn(dense, c, x_test, init):
            return forward(plan.net, dense, x_test)[0][:, 0], init["f0_test"] + _mv(init["k0_test"], c)

        seg = segment_fn(plan)
    if vmapped:
        init_fn = jax.vmap(init_fn, in_axes=(0, None, None))
        seg = jax.vmap(seg, in_axes=(0, 0, 0, 0, None, None, None, 0))
        final_fn = jax.vmap(final_fn, in_axes=(0, 0, None, 0))
    return jax.jit(init_fn), jax.jit(seg, donate_argnums=(0, 1)), jax.jit(final_fn)


# ---------------------------------------------------------------------------------------------
# The generic trainer: any stax network, by jax.grad
# ---------------------------------------------------------------------------------------------

def fast_mlp(model_cfg, width: int, *, in_dim: int = 1, out_dim: int = 1) -> MLP | None:
    """The :class:`MLP` of a model the hand-written trainer handles, else None."""
    if model_cfg.arch == "fc":
        return mlp(model_cfg, width, in_dim=in_dim, out_dim=out_dim)
    if model_cfg.arch == "erf_fc":
        return mlp(dataclasses.replace(model_cfg, activation="erf"), width, in_dim=in_dim, out_dim=out_dim)
    return None


@dataclasses.dataclass(frozen=True)
class GenericPlan(_Schedule):
    """Static shape of one run of the generic trainer: the network
    ``models.build(model, width, out_dim=out_dim)`` (any architecture, including user builders)
    trained through its stax ``apply_fn`` on inputs of shape (n_train, *input_shape) -- flat
    (N, d) or images (N, H, W, C) -- with ``out_dim`` = k outputs per example.

    Same SGD as :class:`Plan` (same batches and records), with the gradient from ``jax.grad`` of
    ``apply_fn`` on stax's parameter pytree and the loss (c/2) mean over the B x k outputs of the
    batch (for k = 1 exactly :class:`Plan`'s). Outputs are handled flat: f (N k,), row n k + i
    (:func:`studylib.kernels.flat_kernel`'s layout), the empirical NTK is the full (N k, N k)
    kernel (output blocks of a finite net are not independent; records keep its change,
    :func:`kernel_change`), and per-layer weight changes cover
    every weight array of :func:`studylib.models.weight_paths` (nested blocks included). The
    linearized model is trained in function space as in :class:`Plan` (theta_t - theta_0 =
    J_0^T c_t, c of shape (N k,)); its per-layer kernel pieces K_0^(W_l) = J_{W_l} J_{W_l}^T are
    NT's empirical NTK of each weight array alone at init.
    """

    model: Any  # studylib.config.ModelConfig (hashable)
    width: int
    n_train: int
    batch_size: int
    record_every: int
    loss: str = "mse"
    method: str = "generic"
    input_shape: tuple[int, ...] = (1,)  # one example as the network sees it
    out_dim: int = 1

    @property
    def chunk(self) -> int:
        return 1

    def network(self):
        from studylib import models

        return models.build(self.model, self.width, out_dim=self.out_dim)


def flat_batch(idx, k: int):
    """Flat output indices (B k,) of the examples ``idx`` (B,): n k + i for i < k (row-major)."""
    return (idx[:, None] * k + jnp.arange(k, dtype=idx.dtype)[None, :]).reshape(-1)


def generic_lin_step_fn(plan: GenericPlan, f0, k0, y, lr):
    """Function-space SGD of the linearization with k outputs, all flat (f0, y: (N k,), k0: (N k, N k)):
    on batch I, c_I -= lr * c_loss * (f_0(x_I) + K_0[I] c - y_I) / (B k), the gradient of
    (c_loss/2) mean over the B k outputs (equal to :func:`lin_step_fn` for k = 1)."""
    k = plan.out_dim
    gfac = LOSS_FACTOR[plan.loss] / (plan.batch_size * k)

    def lin_step(c, idx):
        fi = flat_batch(idx, k)
        r = f0[fi] + _mv(k0[fi], c) - y[fi]
        return c.at[fi].add(-lr * gfac * r)

    return lin_step


def _generic_fns(plan: GenericPlan, apply_fn, paths: Sequence[tuple]):
    """(init_fn, seg, final_fn) of the generic trainer for one seed (see :func:`compiled_runner`).

    Shapes: x (N, *input_shape), y (N, k); c, f_* and y inside are flat (N k,). The empirical NTK
    on the training inputs, at init and at every record, is
    :func:`studylib.kernels.empirical_ntk_fn` (NT's implementation 2, NTK-vector products; the full
    kernel made flat by :func:`studylib.kernels.flat_kernel` when k > 1). At init the same estimator
    also gives K_0(x_test, X) (M k, N k) and the weight pieces K_0^(W_l) (the kernel of each weight
    array alone, ``paths`` from :func:`studylib.models.weight_paths`), so no N k x P Jacobian is
    ever formed (N = 256 digits with k = 10 would need 2560 parameter copies).
    """
    from studylib import kernels, models

    k = plan.out_dim
    ntk_raw = kernels.empirical_ntk_fn(apply_fn, trace_outputs=k == 1)
    ntk_fn = ntk_raw if k == 1 else (lambda a, b, p: kernels.flat_kernel(ntk_raw(a, b, p)))
    cf = LOSS_FACTOR[plan.loss] / 2.0
    tmap = jax.tree_util.tree_map
    f1 = lambda p, x: apply_fn(p, x).reshape(-1)  # noqa: E731  flat (N k,), row n k + i

    def loss_fn(p, xb, yb):  # (c/2) mean over the B x k outputs of the batch
        return cf * jnp.mean((apply_fn(p, xb) - yb) ** 2)

    grad_fn = jax.grad(loss_fn)

    def changes(delta):
        """Squared norms of the whole change and of each weight array's."""
        return (sum(_sq(leaf) for leaf in jax.tree_util.tree_leaves(delta)),
                jnp.stack([_sq(w) for w in models.weights_at(delta, list(paths))]))

    def layer_kernel(p0, path, x):
        """K_0^(W) = J_W J_W^T of the weight array at ``path`` alone (the other parameters fixed),
        by the same NT estimator (NTK-vector products: no N k x |W| Jacobian is formed)."""
        def apply_w(w, xx):
            return apply_fn(replace_at(p0, path, w), xx)

        raw = kernels.empirical_ntk_fn(apply_w, trace_outputs=k == 1)(x, None, models.weights_at(p0, [path])[0])
        return raw if k == 1 else kernels.flat_kernel(raw)

    def init_fn(p0, x, x_test):
        return {
            "f0_train": f1(p0, x),
            "f0_test": f1(p0, x_test),
            "k0_w": jnp.stack([layer_kernel(p0, path, x) for path in paths]),  # (L, N k, N k)
            "k0": ntk_fn(x, None, p0),  # the same estimator as the recorded K_t
            "k0_test": ntk_fn(x_test, x, p0),  # (M k, N k)
        }

    def measure_g(p, p0, c, x, yf, init):
        f_net = f1(p, x)
        f_lin = init["f0_train"] + _mv(init["k0"], c)
        dsq, wd = changes(tmap(jnp.subtract, p, p0))
        return {
            "loss_net": cf * jnp.mean((f_net - yf) ** 2),
            "loss_lin": cf * jnp.mean((f_lin - yf) ** 2),
            "f_net_train": f_net,
            "f_lin_train": f_lin,
            **kernel_change(ntk_fn(x, None, p), init["k0"]),
            "dsq_net": dsq,
            "wdsq_net": wd,
            "dsq_lin": c @ init["k0"] @ c,
            "wdsq_lin": jnp.einsum("i,lij,j->l", c, init["k0_w"], c),
        }

    def seg(p, c, p0, perms, x, y, lr, init):
        yf = y.reshape(-1)
        lin_step = generic_lin_step_fn(plan, init["f0_train"], init["k0"], yf, lr)

        def step(carry, idx):
            p, c = carry
            g = grad_fn(p, x[idx], y[idx])
            return (tmap(lambda a, b: a - lr * b, p, g), lin_step(c, idx)), None

        def body(carry, perm):
            carry, _ = lax.scan(step, carry, perm.reshape(-1, plan.batch_size))
            return carry, measure_g(carry[0], p0, carry[1], x, yf, init)

        (p, c), recs = lax.scan(body, (p, c), perms)
        return p, c, recs

    def final_fn(p, c, x_test, init):
        return f1(p, x_test), init["f0_test"] + _mv(init["k0_test"], c)

    return init_fn, seg, final_fn


def replace_at(tree, path: tuple, value):
    """``tree`` with the leaf at key path ``path`` (``jax.tree_util`` key path) replaced by ``value``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return jax.tree_util.tree_unflatten(treedef, [value if p == path else v for p, v in leaves])


def generic_weight_paths(plan: GenericPlan) -> list[tuple]:
    """:func:`studylib.models.weight_paths` of the plan's network for its real input shape
    (from parameter shapes; nothing is drawn): every weight array, nested blocks included."""
    from studylib import models

    shapes = jax.eval_shape(lambda key: plan.network().init_fn(key, (plan.n_train, *plan.input_shape))[1],
                            jax.random.PRNGKey(0))
    return models.weight_paths(shapes)


def gd_reference(net: MLP, dense, x, y, lr, steps: int, loss: str = "mse"):
    """Plain full-batch GD with jax.grad of the same loss (for tests)."""
    cf = LOSS_FACTOR[loss] / 2.0

    def lossf(d):
        return cf * jnp.mean((forward(net, d, x)[0] - y) ** 2)

    def body(_, d):
        g = jax.grad(lossf)(d)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, d, g)

    return lax.fori_loop(0, steps, body, dense)


def as_numpy(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


# ---------------------------------------------------------------------------------------------
# Full-batch GD of the FC net at checkpoints (compare, regimes)
# ---------------------------------------------------------------------------------------------

def gd_step(net: MLP, dense, x, y, lr):
    """One full-batch GD step on 1/2 mean((f - y)^2) over the N x out outputs (NT's convention):
    theta <- theta - lr grad L, by the hand-written forward and transposed backward passes."""
    f, cache = forward(net, dense, x)
    ds = backward_t(net, dense, cache, (f - y) / f.size)  # (fan_out, N) per layer
    hs = cache[0]
    return tuple((w - (lr * net.w_scale[l]) * lax.dot_general(hs[l], ds[l], (((0,), (1,)), ((), ()))),
                  b - (lr * net.b_scale[l]) * jnp.sum(ds[l], 1)[None, :])
                 for l, (w, b) in enumerate(dense))


def _fast_net(model_cfg, width: int, x_train, y_train, caller: str) -> MLP:
    net = fast_mlp(model_cfg, width, in_dim=int(x_train.shape[1]), out_dim=int(y_train.shape[1]))
    if net is None:
        raise ValueError(f"{caller}: arch {model_cfg.arch!r} has no hand-written trainer; accepted: "
                         f"{', '.join(FAST_ARCHS)}")
    return net


@functools.lru_cache(maxsize=64)
def _advance(net: MLP):
    def one(dense, x, y, lr, n_steps):
        return lax.fori_loop(0, n_steps, lambda _, d: gd_step(net, d, x, y, lr), dense)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None)), donate_argnums=0)


def full_batch_trainer(model_cfg, width: int):
    """A drop-in for ``training.make_trainer(training.network_model(apply_fn))`` on the FC nets (arch
    ``fc`` / ``erf_fc``): ``run(params, aux, x, y, learning_rate, n_steps) -> params`` with stax's
    parameters stacked over seeds (``aux`` ignored), ``n_steps`` full-batch GD steps on
    1/2 mean((f - y)^2) over the N x k outputs by the hand-written passes (:func:`gd_step`); one
    compile per net, rate and step count traced. Tested equal to the generic trainer (tests/test_sgd.py)."""

    def run(params, aux, x, y, learning_rate, n_steps):
        net = _fast_net(model_cfg, width, x, y, "full_batch_trainer")
        dense = _advance(net)(dense_params(params), x, y, jnp.asarray(learning_rate, x.dtype),
                              jnp.asarray(n_steps, jnp.int32))
        return stax_params(dense)

    return run


def default_measure(net: MLP, dense, dense0, x, x_test) -> dict:
    """What :func:`full_batch_checkpoints` records by default: f on the training and test inputs
    (N,), (M,) and the empirical NTK on the training inputs (N, N)."""
    kw, kb, f = ntk_parts(net, dense, x, with_f=True)
    return {"f_train": f[:, 0], "f_test": forward(net, dense, x_test)[0][:, 0],
            "k_train": jnp.sum(kw, 0) + jnp.sum(kb, 0)}


@functools.lru_cache(maxsize=64)
def _checkpoint_runner(net: MLP, measure, per_seed_targets: bool = False):
    def one(dense0, x, y, x_test, lr, gaps):
        def seg(dense, n):
            dense = lax.fori_loop(0, n, lambda _, d: gd_step(net, d, x, y, lr), dense)
            return dense, measure(net, dense, dense0, x, x_test)

        _, recs = lax.scan(seg, dense0, gaps)
        return recs

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0 if per_seed_targets else None, None, None, None)))


def full_batch_checkpoints(model_cfg, width: int, params0, x_train, y_train, learning_rate, checkpoints, *,
                           x_test=None, measure=default_measure) -> dict[str, np.ndarray]:
    """Full-batch GD of the FC net ``models.build(model_cfg, width)`` (arch ``fc`` or ``erf_fc``) from
    stax parameters ``params0`` stacked over seeds (S, ...), by the hand-written trainer, recording
    ``measure(net, dense, dense0, x_train, x_test) -> dict`` at every step of ``checkpoints``
    (increasing, from 0): arrays (S, T, ...). One jit per (net, measure); ``learning_rate`` and the
    checkpoint steps are traced. Loss 1/2 mean((f - y)^2) (NT's); y_train (N, k) shared by the seeds, or
    (S, N, k) per seed (a centred run's Y + f_0(X), :func:`studylib.centring.shifted_targets`).
    Tests: tests/test_sgd.py (equal to jax.grad of the stax net)."""
    net, per_seed, args = _checkpoint_args(model_cfg, width, params0, x_train, y_train, learning_rate, checkpoints,
                                           x_test=x_test, caller="full_batch_checkpoints")
    recs = _checkpoint_runner(net, measure, per_seed)(*args)
    return {k: np.asarray(v) for k, v in recs.items()}


def _checkpoint_args(model_cfg, width: int, params0, x_train, y_train, learning_rate, checkpoints, *, x_test,
                     caller: str):
    """The hand-written net of :func:`full_batch_checkpoints`, whether its targets are per seed, and the
    arguments of its checkpoint runners (:func:`_checkpoint_runner`, :func:`_flagged_runner`)."""
    per_seed = np.ndim(y_train) == 3
    net = _fast_net(model_cfg, width, x_train, y_train[0] if per_seed else y_train, caller)
    ck = np.asarray(checkpoints, np.int64)
    gaps = jnp.asarray(np.diff(ck, prepend=0), jnp.int32)
    x_test = x_train if x_test is None else x_test
    lr = jnp.asarray(learning_rate, x_train.dtype)
    y = jnp.asarray(y_train, x_train.dtype)
    return net, per_seed, (dense_params(params0), x_train, y, x_test, lr, gaps)


def traced_ntk_blocks(net: MLP, dense, x, x_test):
    """The empirical NTK traced over the k = ``net.sizes[-1]`` outputs, (1/k) Σ_a J_a J_aᵀ (NT's
    ``trace_axes=(-1,)``), as two blocks: on the training inputs (N, N) and test-train (M, N). From per-output
    features as :func:`full_ntk`: K[n, m] = (1/k) Σ_l (s_l² h_{l-1}(n)·h_{l-1}(m) + t_l²) Σ_a d_l(n, a)·d_l(m, a);
    the backward passes of x and x_test run layer by layer beside each other (all k one-hot cotangents at once,
    transposed layout (fan_out, B k), column b k + a), so only one layer's d of each is held at a time.
    Cost: k backward passes of N + M inputs and (k + 1) (N + M) N fan_in products per layer."""
    k = net.sizes[-1]
    (_, (hs1, zs1)), (_, (hs2, zs2)) = forward(net, dense, x), forward(net, dense, x_test)
    n1, n2 = x.shape[0], x_test.shape[0]
    d1 = jnp.tile(jnp.eye(k, dtype=x.dtype), (1, n1))  # (k, N k): column n k + a is e_a
    d2 = jnp.tile(jnp.eye(k, dtype=x.dtype), (1, n2))
    k_train = jnp.zeros((n1, n1), x.dtype)
    k_test = jnp.zeros((n2, n1), x.dtype)
    traced = (((0, 2), (0, 2)), ((), ()))  # sum over units and outputs a
    for l in reversed(range(net.n_layers)):
        f1, f2 = d1.reshape(d1.shape[0], n1, k), d2.reshape(d2.shape[0], n2, k)
        s2, t2 = net.w_scale[l] ** 2, net.b_scale[l] ** 2
        k_train = k_train + (s2 * mm(hs1[l], hs1[l].T) + t2) * lax.dot_general(f1, f1, traced)
        k_test = k_test + (s2 * mm(hs2[l], hs1[l].T) + t2) * lax.dot_general(f2, f1, traced)
        if l > 0:
            d1 = net.w_scale[l] * mm(dense[l][0], d1) * jnp.repeat(_dact(net.activation, zs1[l - 1]).T, k, axis=1)
            d2 = net.w_scale[l] * mm(dense[l][0], d2) * jnp.repeat(_dact(net.activation, zs2[l - 1]).T, k, axis=1)
    return k_train / k, k_test / k


@functools.lru_cache(maxsize=64)
def _flagged_runner(net: MLP, measure, extra, per_seed_targets: bool = False):
    """:func:`_checkpoint_runner` with a second record, ``extra(net, dense, x, x_test)``, computed only at the
    checkpoints whose flag is set (``lax.cond`` on a flag shared by the seeds, so the other checkpoints cost
    nothing; zeros there)."""
    def one(dense0, x, y, x_test, lr, gaps, flags):
        shapes = jax.eval_shape(lambda d: extra(net, d, x, x_test), dense0)

        def seg(dense, inp):
            n, flag = inp
            dense = lax.fori_loop(0, n, lambda _, d: gd_step(net, d, x, y, lr), dense)
            more = lax.cond(flag, lambda d: extra(net, d, x, x_test),
                            lambda d: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), dense)
            return dense, (measure(net, dense, dense0, x, x_test), more)

        _, out = lax.scan(seg, dense0, (gaps, flags))
        return out

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0 if per_seed_targets else None, None, None, None, None)))


def _flagged_call(model_cfg, width: int, params0, x_train, y_train, learning_rate, checkpoints, flags, *, x_test,
                  measure, extra):
    net, per_seed, args = _checkpoint_args(model_cfg, width, params0, x_train, y_train, learning_rate, checkpoints,
                                           x_test=x_test, caller="flagged_checkpoints")
    flags = jnp.asarray(np.asarray(flags, bool))
    if flags.shape != (len(checkpoints),):
        raise ValueError(f"flags: expected one per checkpoint ({len(checkpoints)}), got shape {flags.shape}")
    return _flagged_runner(net, measure, extra, per_seed), (*args, flags)


def flagged_checkpoints(model_cfg, width: int, params0, x_train, y_train, learning_rate, checkpoints, flags, *,
                        x_test=None, measure=default_measure, extra=traced_ntk_blocks
                        ) -> tuple[dict[str, np.ndarray], Any]:
    """:func:`full_batch_checkpoints` (the same GD, the same records (S, T, ...)) and, at the checkpoints where
    ``flags`` (T,) is set, ``extra(net, dense, x_train, x_test)`` (default :func:`traced_ntk_blocks`): its
    outputs stacked (S, T, ...), zeros at the other checkpoints."""
    run, args = _flagged_call(model_cfg, width, params0, x_train, y_train, learning_rate, checkpoints, flags,
                              x_test=x_test, measure=measure, extra=extra)
    recs, more = run(*args)
    return {k: np.asarray(v) for k, v in recs.items()}, jax.tree_util.tree_map(np.asarray, more)


def precompile_flagged(model_cfg, width: int, params0, x_train, y_train, n_checkpoints: int, *, x_test=None,
                       measure=default_measure, extra=traced_ntk_blocks) -> None:
    """Compile, without running, the program :func:`flagged_checkpoints` runs for these arguments and
    ``n_checkpoints`` checkpoints (the rate, the steps and the flags are traced: their values do not matter),
    into the same jit's cache, so that the later call finds it compiled (e.g. on a second thread while another
    width trains: :mod:`studylib.compare.cell`). The same program, so the same numbers."""
    run, args = _flagged_call(model_cfg, width, params0, x_train, y_train, 0.0, np.zeros(n_checkpoints, np.int64),
                              np.zeros(n_checkpoints, bool), x_test=x_test, measure=measure, extra=extra)
    run.lower(*args).compile()
