"""Closed-form MSE training dynamics with a constant kernel, for k outputs per input.

Loss convention (NT's): L = 1/2 mean((f - y)^2) over the N k training outputs (y_train of
shape (N, k)). A kernel comes in one of two layouts (:func:`layout`):

* *per output*, (N, N): the same kernel for every output column and none between them, the
  full kernel being K (x) I_k -- the analytic NTK (Jacot et al. 2018), whose k-independence
  this uses instead of building an (N k, N k) matrix;
* *flat*, (N k, N k): the finite network's full empirical kernel, whose output blocks are not
  independent (row n k + i = output i of input n; :func:`studylib.kernels.flat_kernel`).

With a constant kernel K, on f flattened to (N k,):

* gradient flow (``flow``): f_t(X) = Y + exp(-lr t K / (N k)) (f_0(X) - Y), time = lr * steps
  (Jacot et al. 2018; Lee et al. 2019 eqs. 8-9); NT's ``nt.predict.gradient_descent_mse``
  (which normalises by ``y_train.size`` = N k).
* discrete gradient descent (``discrete``): f_t(X) = Y + (I - lr K / (N k))^t (f_0(X) - Y),
  exactly what GD on the linearized model does step by step.

Per eigenmode (K v_i = lambda_i v_i) the flow factor is exp(-a t) and the
discrete one (1 - a)^t with a = lr lambda_i / (N k); they agree to O(a^2 t) for
slow modes, and both vanish for fast ones, so the flow describes GD well
except for the fastest modes at early steps. Both are written through coefficients
c_t (N, k) (:func:`coefficients`): f_t(x) = f_0(x) + K(x, X) c_t, and for the linearized model
theta_t - theta_0 = J_0(X)^T c_t, so test outputs need no test-train kernel: J_0(x) J_0(X)^T c_t
is one vjp and one jvp (SCIENCE.md section 6).
"""

from __future__ import annotations

import numpy as np


def layout(k_train_train, y_train) -> str:
    """'per_output' for a kernel (N, N) against y (N, k), 'flat' for (N k, N k) (the two agree for k = 1,
    which counts as 'per_output'); ValueError naming the shapes otherwise."""
    r = np.shape(k_train_train)[0]
    n, k = _as_2d(y_train).shape
    if r == n:
        return "per_output"
    if r == n * k:
        return "flat"
    raise ValueError(f"kernel of shape {np.shape(k_train_train)} fits neither y_train {np.shape(y_train)} per output "
                     f"({n}, {n}) nor flat ({n * k}, {n * k})")


def _as_2d(y) -> np.ndarray:
    y = np.asarray(y, np.float64)
    return y[:, None] if y.ndim == 1 else y


def nt_layout(flat, k1: int, k2: int):
    """A flat kernel (Na k1, Nb k2) in NT's full layout (Na, Nb, k1, k2) (NumPy or JAX)."""
    a, b = flat.shape
    return flat.reshape(a // k1, k1, b // k2, k2).transpose(0, 2, 1, 3)


def flow(
    k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, *, learning_rate: float, steps
) -> tuple[np.ndarray, np.ndarray]:
    """NT's gradient-flow prediction (``nt.predict.gradient_descent_mse``) at ``steps`` (shape (T,)).

    Shapes: y_train/fx_train_0 (N, k), fx_test_0 (M, k); kernels per output, k_train_train
    (N, N) and k_test_train (M, N) (NT's default ``trace_axes=(-1,)``), or flat, (N k, N k) and
    (M k, N k) (passed to NT in its full layout with ``trace_axes=()``). Returns (T, N, k) and
    (T, M, k). Computed in JAX's current precision (float64 needs x64 on).
    """
    import jax.numpy as jnp

    from studylib.nt import nt

    y = jnp.asarray(y_train)
    k = y.shape[-1]
    if layout(k_train_train, y_train) == "flat" and k > 1:
        k_tt = jnp.asarray(nt_layout(np.asarray(k_train_train), k, k))
        k_te = jnp.asarray(nt_layout(np.asarray(k_test_train), k, k))
        trace_axes: tuple[int, ...] = ()
    else:
        k_tt, k_te, trace_axes = jnp.asarray(k_train_train), jnp.asarray(k_test_train), (-1,)
    predict_fn = nt.predict.gradient_descent_mse(k_tt, y, learning_rate=learning_rate, trace_axes=trace_axes)
    fx_train_t, fx_test_t = predict_fn(jnp.asarray(steps, dtype=k_tt.dtype), jnp.asarray(fx_train_0),
                                       jnp.asarray(fx_test_0), k_te)
    return np.asarray(fx_train_t), np.asarray(fx_test_t)


def decay(lam, learning_rate: float, n: int, steps, *, discrete: bool = True) -> np.ndarray:
    """Per-mode decay of the residual after t steps, shape (..., T, R) for ``lam`` (..., R):
    exact GD (1 - a)^t (computed as sign^t |1 - a|^t so that oscillating modes, a > 1, stay real)
    or gradient flow exp(-a t), with a = lr lambda / n; ``n`` = the number of training outputs
    N k (L = 1/2 mean((f - y)^2) over them, NT's convention)."""
    lam = np.asarray(lam, np.float64)
    t = np.asarray(steps, np.float64).reshape(-1)[:, None]  # (T, 1)
    a = learning_rate * lam[..., None, :] / n  # (..., 1, N)
    if not discrete:
        return np.exp(-a * t)
    with np.errstate(over="ignore", invalid="ignore"):  # |1 - a| > 1: GD diverges, and so does this
        return np.sign(1.0 - a) ** t * np.abs(1.0 - a) ** t


#: Modes with |lambda| <= NULL_RCOND lambda_max count as numerically null (a float64 kernel).
NULL_RCOND = 1e-12


def gain(lam, learning_rate: float, n: int, steps, *, discrete: bool = True, rcond: float = NULL_RCOND) -> np.ndarray:
    """(1 - decay) / lambda per mode, shape (T, R): the coefficient map of GD on the linearized model,
    c_t = V diag(gain_t) V^T (Y - f_0(X)); its lambda -> 0 limit lr t / n for numerically null modes
    (|lambda| <= rcond lambda_max); ``n`` = N k as in :func:`decay`. The one discrete-GD / flow gain
    of every study. A step t = inf gives the t -> infinity limit of the flow (and of GD below the
    critical rate): 1 / lambda, and 0 on null modes (the pseudo-inverse: GD never moves them, and
    K(x, X) c does not see them) -- NT's ``gradient_descent_mse`` at ``t=None``.

    ``rcond``: a kernel computed in float32 knows its eigenvalues only to ~R eps32 lambda_max, and 1 / lambda
    of one below that is rounding noise amplified (the t = inf limit of a numerically singular empirical
    kernel would differ between two CPUs by O(1)); pass :func:`null_rcond` of its dtype. Finite t is
    unaffected in practice (the gain of a tiny mode is ~ lr t / n either way)."""
    lam = np.asarray(lam, np.float64)
    t = np.asarray(steps, np.float64).reshape(-1)
    tiny = np.abs(lam) <= rcond * max(np.abs(lam).max(), 1e-300)
    safe = np.where(tiny, 1.0, lam)
    finite = np.where(np.isinf(t), 0.0, t)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.where(tiny[None, :], learning_rate * finite[:, None] / n,
                       (1.0 - decay(lam, learning_rate, n, finite, discrete=discrete)) / safe[None, :])
    return np.where(np.isinf(t)[:, None], np.where(tiny, 0.0, 1.0 / safe)[None, :], out)


def null_rcond(n_rows: int, dtype) -> float:
    """The relative size below which an eigenvalue of an (n_rows, n_rows) kernel computed in ``dtype`` is
    rounding noise (~ n_rows eps lambda_max), never below :data:`NULL_RCOND`."""
    return max(NULL_RCOND, n_rows * float(np.finfo(np.dtype(dtype)).eps))


def coefficients(k_train_train, y_train, fx_train_0, *, learning_rate: float, steps, discrete: bool = True,
                 eig: tuple[np.ndarray, np.ndarray] | None = None, rcond: float = NULL_RCOND) -> np.ndarray:
    """Coefficients c_t (T, N, k) with f_t(x) = f_0(x) + K(x, X) c_t (:func:`kernel_apply`) and, for
    the linearized model, theta_t - theta_0 = J_0(X)^T c_t.

    GD adds -(lr / (N k)) (f_t(X) - Y) to c each step (SCIENCE.md section 6); summed in closed form
    c_t = V diag(gain_t) V^T (Y - f_0(X)) with :func:`gain` (``discrete=True``: exact GD,
    (1 - (1 - a)^t) / lambda; ``False``: gradient flow, (1 - exp(-a t)) / lambda), a = lr lambda / (N k).
    The kernel is per output (N, N), applied to each column of the residual, or flat (N k, N k)
    (:func:`layout`). ``eig``: its (eigenvalues, eigenvectors) when already known. Float64 NumPy;
    ``y_train``, ``fx_train_0``: (N, k) (or (N,)).
    """
    k = np.asarray(k_train_train, np.float64)
    r0 = _as_2d(y_train) - _as_2d(fx_train_0)  # (N, k)
    lam, v = np.linalg.eigh(k) if eig is None else eig
    g = gain(lam, learning_rate, r0.size, steps, discrete=discrete, rcond=rcond)  # (T, R)
    if layout(k, r0) == "per_output":
        return np.einsum("in,tn,nk->tik", v, g, v.T @ r0)
    c = np.einsum("in,tn,n->ti", v, g, v.T @ r0.reshape(-1))
    return c.reshape(len(g), *r0.shape)


def discrete_coefficients(k_train_train, y_train, fx_train_0, *, learning_rate: float, steps) -> np.ndarray:
    """:func:`coefficients` of exact discrete GD, (T, N, k); then ||theta_t - theta_0||^2 = c_t . K c_t."""
    return coefficients(k_train_train, y_train, fx_train_0, learning_rate=learning_rate, steps=steps)


def kernel_apply(k_x_train, c) -> np.ndarray:
    """K(x, X) c for coefficients c (..., N, k): a per-output kernel (M, N) acts on each column,
    a flat one (M k, N k) on c flattened; returns (..., M, k). Float64 NumPy."""
    kx = np.asarray(k_x_train, np.float64)
    c = np.asarray(c, np.float64)
    n, k = c.shape[-2:]
    if kx.shape[1] == n:
        return np.einsum("mn,...nk->...mk", kx, c)
    if kx.shape[1] != n * k:
        raise ValueError(f"kernel of shape {kx.shape} does not act on coefficients of shape {c.shape}")
    out = np.einsum("mn,...n->...m", kx, c.reshape(*c.shape[:-2], n * k))
    return out.reshape(*c.shape[:-2], kx.shape[0] // k, k)


def _predict(k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, *, learning_rate, steps, discrete):
    c = coefficients(k_train_train, y_train, fx_train_0, learning_rate=learning_rate, steps=steps, discrete=discrete)
    return (_as_2d(fx_train_0)[None] + kernel_apply(k_train_train, c),
            _as_2d(fx_test_0)[None] + kernel_apply(k_test_train, c))


def discrete(
    k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, *, learning_rate: float, steps
) -> tuple[np.ndarray, np.ndarray]:
    """Exact discrete-GD prediction (same shapes as :func:`flow`), computed in float64 NumPy
    as f_t(x) = f_0(x) + K(x, X) c_t with c_t from :func:`coefficients`."""
    return _predict(k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, learning_rate=learning_rate,
                    steps=steps, discrete=True)


def flow_eigen(
    k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, *, learning_rate: float, steps
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient flow as :func:`flow` (NT's prediction, the tests show they agree), computed in float64
    NumPy from the kernel's eigendecomposition (:func:`coefficients` with ``discrete=False``)."""
    return _predict(k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, learning_rate=learning_rate,
                    steps=steps, discrete=False)


CLOSED_FORMS = {"flow": flow, "discrete": discrete}


# --------------------------------------------------------------------------- the Gaussian process


def gp_moments(theta_dd, theta_td, k_dd, k_td, k_tt, y_train, *, learning_rate: float, steps,
               discrete: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean (T, M) and covariance (T, M, M) of the GP at ``steps`` (Lee et al. 2019 eqs. 14-16), float64 NumPy.

    ``theta_*`` is the trained kernel (NTK, or NNGP for readout-only training),
    ``k_*`` the NNGP (covariance of f at init); d = train inputs, t = test inputs;
    ``y_train`` (N,) or (N, 1). ``discrete=False``: gradient flow, D = exp(-lr Θ t / N)
    (what ``nt.predict.gradient_descent_mse_ensemble`` computes, t counting steps);
    ``discrete=True``: exact GD, D = (I - lr Θ / N)^t.
    """
    theta_dd = np.asarray(theta_dd, np.float64)
    n = theta_dd.shape[0]
    lam, v = np.linalg.eigh(theta_dd)
    lam = np.maximum(lam, 0.0)
    t = np.asarray(steps, np.float64).reshape(-1)
    g = gain(lam, learning_rate, n, t, discrete=discrete)  # (T, N)
    a_t = np.einsum("mn,tn,kn->tmk", np.asarray(theta_td, np.float64) @ v, g, v)  # (T, M, N)
    y = np.asarray(y_train, np.float64).reshape(n)
    mean = a_t @ y
    k_td = np.asarray(k_td, np.float64)
    cross = a_t @ k_td.T  # A K(X, x): (T, M, M)
    cov = (np.asarray(k_tt, np.float64)[None] + a_t @ np.asarray(k_dd, np.float64) @ np.swapaxes(a_t, 1, 2)
           - cross - np.swapaxes(cross, 1, 2))
    return mean, 0.5 * (cov + np.swapaxes(cov, 1, 2))


def nt_gp(kernel_fn, x_train, y_train, x_test, *, get: str, learning_rate: float, steps):
    """NT's ensemble prediction: mean (T, M) and covariance (T, M, M), float64 NumPy."""
    import jax.numpy as jnp

    from studylib.nt import nt

    predict = nt.predict.gradient_descent_mse_ensemble(kernel_fn, jnp.asarray(x_train), jnp.asarray(y_train),
                                                       learning_rate=learning_rate)
    out = predict(t=jnp.asarray(steps, jnp.asarray(x_train).dtype), x_test=jnp.asarray(x_test), get=get,
                  compute_cov=True)
    return np.asarray(out.mean, np.float64)[..., 0], np.asarray(out.covariance, np.float64)


def gp_sqrt(cov: np.ndarray) -> np.ndarray:
    """L with L L^T = cov for PSD (..., M, M) (eigendecomposition; negative round-off eigenvalues clipped)."""
    lam, v = np.linalg.eigh(np.asarray(cov, np.float64))
    return v * np.sqrt(np.maximum(lam, 0.0))[..., None, :]


def gp_std(cov: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0))
