"""First-order prediction of the network-linearization gap from quantities at initialisation.

Conventions (NT's, SCIENCE.md sections 2 and 6): loss L(theta) = 1/2 mean_i (f(x_i) - y_i)^2 over the
N training points, full-batch GD theta_{s+1} = theta_s - eta grad L = theta_s - (eta/N) J_s^T r_s with
r_s = f_s(X) - Y; the 1/2 of the loss cancels the 2 of the square, and the mean's 1/N gives the eta/N
factor below.

k outputs per example: the N k outputs are flattened, row n k + i (as :func:`studylib.kernels.flat_kernel`),
and play the part of the N "training rows" everywhere below; NT's loss is 1/2 mean over all N k outputs
(SCIENCE.md section 2: its discrete GD is (I - eta K / (N k))^t and its critical rate 2 N k / lambda_max),
so the factor is eta / (N k) -- every formula below holds with N replaced by N k and x by a pair
(input, output), unchanged. Evaluated rows are flat the same way: P inputs give P k rows, the first N k
the training outputs. A scalar-output net (k = 1) is the case N k = N, computed exactly as before.

The linearized model trains in function space: theta^lin_s - theta_0 = J_0^T c_s with
c_{s+1} = c_s - (eta/N) r^lin_s, r^lin_s = f_0(X) + K_0 c_s - Y (:mod:`studylib.closed_form`).

Expand the network around that trajectory to first order in its curvature (the neural tangent
hierarchy of Huang & Yau 2019, arXiv 1909.08156, truncated at its third-order kernel; Dyer &
Gur-Ari 2019, arXiv 1909.11304, appendix E.4, the discrete-time form). With v_i = J_0^T e_i the
training rows of the Jacobian, H(x) the Hessian of f(x) at theta_0 and, for every evaluated
input x (training rows first, then any others):

* T(x)[i, j] = v_i^T H(x) v_j (second derivative of f(x) along two training rows);
* D(x)[i, j] = dK[v_i](x, x_j), the derivative of the empirical NTK K(x, x_j) at theta_0 along v_i;
  the kernel's change along the linearized path is Delta K_s = sum_i c_{s,i} D[i] (it is linear in
  theta^lin_s - theta_0 = J_0^T c_s), so the N derivatives are computed once, not at every step;

the deviation delta f_s = f_net,s - f_lin,s obeys, to first order in H (proof in docs/crossover.md),

    delta f_{s+1}(x) = delta f_s(x) - (eta/N) [K_0(x, X) delta f_s(X) + Delta K_s(x, X) r^lin_s]
                       + (1/2) (eta/N)^2 r^lin_s^T T(x) r^lin_s,        delta f_0 = 0.

The bracket is the recursion of gradient flow (Huang & Yau's dK/dt = K^(3) term); the last term is
the curvature of f along one GD step, d_s^T H d_s / 2 with d_s = -(eta/N) J_0^T r^lin_s, which
discrete GD adds (it vanishes as eta -> 0 at fixed eta s). The recursion is exact to first order for
the quadratic Taylor model f_0 + J_0 dtheta + dtheta^T H dtheta / 2 (tests/test_perturb.py: the error
falls as the square of H's scale).

Two ways to get (K_0, T, D): :func:`expansion` for any ``f(params, x)`` by autodiff (N^2 forward-
over-forward passes over the evaluated inputs), and :func:`expansion_mlp` for the FC nets of
:mod:`studylib.sgd` through their per-sample features h, d (K(x, x') = sum_l s_l^2 (h.h')(d.d') +
t_l^2 d.d', valid for features taken at different parameters): N jvps of the features, so O(N)
passes; T is the derivative with only x's features moving, D with both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class Expansion(NamedTuple):
    """Quantities at theta_0 on P evaluated inputs, the first N of them the training inputs.

    f0 (P,): f(x; theta_0); k0 (P, N): K_0(x, X); t2 (P, N, N): T(x)[i, j] = v_i^T H(x) v_j;
    dk (P, N, N): D(x)[i, j] = dK[v_i](x, x_j) (see the module docstring); with k outputs P and N count
    flat rows (P k, N k). A leading seed axis may be added (vmap)."""

    f0: jnp.ndarray
    k0: jnp.ndarray
    t2: jnp.ndarray
    dk: jnp.ndarray


def train_rows(f: Callable, params: Any, x_train: jnp.ndarray) -> Any:
    """v_a = J(x_train)^T e_a for every training output a (flat, row n k + i): ``params``' pytree with
    a leading axis N k (one batched vjp). ``f(params, x) -> (P,)`` or ``(P, k)``."""
    out, vjp = jax.vjp(lambda p: f(p, x_train).reshape(-1), params)
    return jax.vmap(vjp)(jnp.eye(out.shape[0], dtype=out.dtype))[0]


def expansion(f: Callable, params: Any, x_train: jnp.ndarray, x_eval: jnp.ndarray | None = None) -> Expansion:
    """The :class:`Expansion` of any differentiable ``f(params, x) -> (P,)`` (scalar output per input)
    or ``(P, k)`` (k outputs, flattened to P k rows, row p k + i) by autodiff, rows = ``x_train`` then
    ``x_eval``.

    T by (N k)^2 forward-over-forward passes; D = T + B with B(x)[i, j] = J_0(x) H(x_j) v_i, the jvp
    through f(x) of the forward-over-reverse derivative of the rows along v_i. Cost ~6 (N k)^2
    forward passes over the P inputs; memory N k parameter copies."""
    x_all = x_train if x_eval is None else jnp.concatenate([x_train, x_eval], axis=0)
    rows = train_rows(f, params, x_train)

    def jv(p, v):
        return jax.jvp(lambda q: f(q, x_all).reshape(-1), (p,), (v,))[1]

    k0 = jax.vmap(lambda v: jv(params, v))(rows).T  # (P k, N k)

    def per_direction(vi):
        t = jax.vmap(lambda vj: jax.jvp(lambda p: jv(p, vj), (params,), (vi,))[1])(rows)  # (N_j, P)
        drows = jax.jvp(lambda p: train_rows(f, p, x_train), (params,), (vi,))[1]  # H(x_j) v_i
        b = jax.vmap(lambda w: jv(params, w))(drows)  # (N_j, P)
        return t, t + b

    t2, dk = lax.map(per_direction, rows)  # (N_i, N_j, P)
    return Expansion(f(params, x_all).reshape(-1), k0, jnp.transpose(t2, (2, 0, 1)), jnp.transpose(dk, (2, 0, 1)))


def output_features(net, dense, x: jnp.ndarray) -> tuple[jnp.ndarray, list, list]:
    """Per flat output (row p k + i of P inputs with k outputs): f (P k,), the layer inputs h
    (P k, fan_in) per layer and the backpropagated d = df_i/dz (fan_out, P k) per layer, so that
    :func:`studylib.sgd.feature_kernel_parts` gives the full flat NTK K((x_p, i), (x_q, j)) =
    sum_l s_l^2 (h_p . h_q)(d^i_p . d^j_q) + t_l^2 d^i_p . d^j_q. One backward pass per output
    (k = 1: :func:`studylib.sgd.per_sample` itself)."""
    from studylib import sgd

    k = net.sizes[-1]
    if k == 1:
        f, h, d = sgd.per_sample(net, dense, x)
        return f[:, 0], h, d
    f, cache = sgd.forward(net, dense, x)
    p = x.shape[0]
    seeds = jnp.broadcast_to(jnp.eye(k, dtype=x.dtype)[:, None, :], (k, p, k))  # output i: g = e_i per input
    ds = jax.vmap(lambda g: sgd.backward_t(net, dense, cache, g))(seeds)  # per layer (k, fan_out, P)
    d_flat = [jnp.transpose(d, (1, 2, 0)).reshape(d.shape[1], p * k) for d in ds]
    return f.reshape(-1), [jnp.repeat(h, k, axis=0) for h in cache[0]], d_flat


def expansion_mlp(net, dense, x_train: jnp.ndarray, x_eval: jnp.ndarray | None = None) -> Expansion:
    """The :class:`Expansion` of an FC net of :mod:`studylib.sgd` (``net``: ``sgd.MLP``, ``dense``:
    its (W, b) tuple, e.g. ``sgd.dense_params(stax_params)``), through per-output features
    (:func:`output_features`; k = ``net.sizes[-1]`` outputs, flat rows).

    Per training row v_i: one jvp of the features (h, d) of the evaluated inputs and of the training
    inputs; T[i] = derivative of K(x, X) with x's features moving and X's fixed, D[i] with both.
    Same numbers as :func:`expansion` (tested), at O(N k) instead of O((N k)^2) passes (each with k
    backward passes)."""
    x_all = x_train if x_eval is None else jnp.concatenate([x_train, x_eval], axis=0)

    def feats(d, x):
        _, h, dd = output_features(net, d, x)
        return h, dd

    def kern(fa, fb):
        kw, kb = sgd.feature_kernel_parts(net, fa[0], fa[1], fb[0], fb[1])
        return jnp.sum(kw, 0) + jnp.sum(kb, 0)

    from studylib import sgd

    n = x_train.shape[0] * net.sizes[-1]  # flat training outputs
    f_all = sgd.forward(net, dense, x_all)[0].reshape(-1)
    # The training rows v_i = J_0^T e_i one at a time inside the map (one vjp each), not all N at once:
    # N parameter-sized tangents per seed do not fit in memory at width 16384 (crossover preset).
    _, row_vjp = jax.vjp(lambda d: sgd.forward(net, d, x_train)[0].reshape(-1), dense)
    fa = feats(dense, x_all)

    def head(f):  # the training outputs are the first n rows: h (P k, fan_in) rows, d (fan_out, P k) columns
        return [h[:n] for h in f[0]], [d[:, :n] for d in f[1]]

    fx = head(fa)

    def per_direction(e):
        v = row_vjp(e.astype(f_all.dtype))[0]
        ta = jax.jvp(lambda d: feats(d, x_all), (dense,), (v,))[1]  # one jvp: x_all includes X
        t = jax.jvp(lambda a: kern(a, fx), (fa,), (ta,))[1]  # x side moves: v_i^T H(x) v_j
        b = jax.jvp(lambda b_: kern(fa, b_), (fx,), (head(ta),))[1]  # X side moves: J_0(x) H(x_j) v_i
        return t, t + b

    t2, dk = lax.map(per_direction, jnp.eye(n, dtype=f_all.dtype))  # (N_i, P, N_j)
    return Expansion(f_all, kern(fa, fx), jnp.transpose(t2, (1, 0, 2)), jnp.transpose(dk, (1, 0, 2)))


def scaled(exp: Expansion, alpha: float, *, centred: bool = False) -> Expansion:
    """The expansion of alpha * f (or of alpha * (f - f(theta_0)) when ``centred``): rows scale by
    alpha, so K_0 by alpha^2 and T, D by alpha^3."""
    f0 = jnp.zeros_like(exp.f0) if centred else alpha * exp.f0
    return Expansion(f0, alpha**2 * exp.k0, alpha**3 * exp.t2, alpha**3 * exp.dk)


def deviation(exp: Expansion, y_train: jnp.ndarray, learning_rate, steps: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(delta f, f_lin) at every step 0..steps, each (steps + 1, P): the first-order deviation of the
    network from its linearization (the recursion of the module docstring) and the linearization.
    ``y_train`` (N,) -- flat (N k,) for k outputs, the factor then eta / (N k). One ``lax.scan``; jit/vmap
    it from outside (:func:`predict`)."""
    n = exp.k0.shape[1]
    a = learning_rate / n

    def step(carry, _):
        c, dl = carry
        r = exp.f0[:n] + exp.k0[:n] @ c - y_train
        dk_r = jnp.einsum("pij,i,j->p", exp.dk, c, r)
        curv = 0.5 * a * a * jnp.einsum("pij,i,j->p", exp.t2, r, r)
        dl_next = dl - a * (exp.k0 @ dl[:n] + dk_r) + curv
        c_next = c - a * r
        return (c_next, dl_next), (dl_next, exp.f0 + exp.k0 @ c_next)

    c0 = jnp.zeros((n,), exp.k0.dtype)
    d0 = jnp.zeros_like(exp.f0)
    _, (dls, fls) = lax.scan(step, (c0, d0), None, length=steps)
    return jnp.concatenate([d0[None], dls]), jnp.concatenate([exp.f0[None], fls])


def predict(exp: Expansion, y_train, *, learning_rate: float, checkpoints) -> tuple[np.ndarray, np.ndarray]:
    """(delta f, f_lin) at ``checkpoints`` (increasing steps, the last = the run's length), float64
    NumPy (S, T, P) for an expansion with a leading seed axis S (vmapped, one jit)."""
    checkpoints = np.asarray(checkpoints, np.int64)
    steps = int(checkpoints[-1])
    fn = _deviation_at(steps)
    y = jnp.asarray(np.asarray(y_train).reshape(-1), exp.k0.dtype)
    dl, fl = fn(exp, y, jnp.asarray(learning_rate, exp.k0.dtype), jnp.asarray(checkpoints))
    return np.asarray(dl, np.float64), np.asarray(fl, np.float64)


_DEVIATION_CACHE: dict[int, Callable] = {}


def _deviation_at(steps: int) -> Callable:
    if steps not in _DEVIATION_CACHE:
        def one(exp, y, lr, ck):
            dl, fl = deviation(exp, y, lr, steps)
            return dl[ck], fl[ck]

        _DEVIATION_CACHE[steps] = jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))
    return _DEVIATION_CACHE[steps]


def rms(a: np.ndarray, axis=-1) -> np.ndarray:
    """Root mean square over ``axis``."""
    return np.sqrt(np.mean(np.square(a), axis=axis))
