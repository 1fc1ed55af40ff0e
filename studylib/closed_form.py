"""Closed-form MSE training dynamics with a constant kernel.

Loss convention (NT's): L = 1/2 mean((f - y)^2) over the N training outputs
(scalar outputs, k = 1). With a constant kernel K = K(X, X):

* gradient flow (``flow``): f_t(X) = Y + exp(-lr t K / N) (f_0(X) - Y), time = lr * steps
  (Jacot et al. 2018; Lee et al. 2019 eqs. 8-9). Evaluated with
  ``nt.predict.gradient_descent_mse``.
* discrete gradient descent (``discrete``): f_t(X) = Y + (I - lr K / N)^t (f_0(X) - Y),
  exactly what GD on the linearized model does step by step.

Per eigenmode (K v_i = lambda_i v_i) the flow factor is exp(-a t) and the
discrete one (1 - a)^t with a = lr lambda_i / N; they agree to O(a^2 t) for
slow modes, and both vanish for fast ones, so the flow describes GD well
except for the fastest modes at early steps. Test outputs follow through
f_t(x) = f_0(x) + K(x, X) K^-1 (Y - f_0(X) - r_t), with r_t the training residual.
"""

from __future__ import annotations

import numpy as np


def flow(
    k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, *, learning_rate: float, steps
) -> tuple[np.ndarray, np.ndarray]:
    """NT's gradient-flow prediction at ``steps`` (array, shape (T,)).

    Shapes: k_train_train (N, N), k_test_train (M, N), y_train/fx_train_0 (N, 1),
    fx_test_0 (M, 1). Returns (T, N, 1) and (T, M, 1).
    """
    import jax.numpy as jnp

    from studylib.nt import nt

    predict_fn = nt.predict.gradient_descent_mse(k_train_train, y_train, learning_rate=learning_rate)
    fx_train_t, fx_test_t = predict_fn(
        jnp.asarray(steps, dtype=jnp.asarray(k_train_train).dtype), fx_train_0, fx_test_0, k_test_train
    )
    return np.asarray(fx_train_t), np.asarray(fx_test_t)


def decay(lam, learning_rate: float, n: int, steps, *, discrete: bool = True) -> np.ndarray:
    """Per-mode decay of the residual after t steps, shape (..., T, N) for ``lam`` (..., N):
    exact GD (1 - a)^t (computed as sign^t |1 - a|^t so that oscillating modes, a > 1, stay real)
    or gradient flow exp(-a t), with a = lr lambda / N (L = 1/2 mean((f - y)^2), NT's convention)."""
    lam = np.asarray(lam, np.float64)
    t = np.asarray(steps, np.float64).reshape(-1)[:, None]  # (T, 1)
    a = learning_rate * lam[..., None, :] / n  # (..., 1, N)
    if not discrete:
        return np.exp(-a * t)
    with np.errstate(over="ignore", invalid="ignore"):  # |1 - a| > 1: GD diverges, and so does this
        return np.sign(1.0 - a) ** t * np.abs(1.0 - a) ** t


def gain(lam, learning_rate: float, n: int, steps, *, discrete: bool = True) -> np.ndarray:
    """(1 - decay) / lambda per mode, shape (T, N): the coefficient map of GD on the linearized model,
    c_t = V diag(gain_t) V^T (Y - f_0(X)); its lambda -> 0 limit lr t / N for numerically null modes
    (|lambda| <= 1e-12 lambda_max). The one discrete-GD / flow gain of every study."""
    lam = np.asarray(lam, np.float64)
    t = np.asarray(steps, np.float64).reshape(-1)
    tiny = np.abs(lam) <= 1e-12 * max(np.abs(lam).max(), 1e-300)
    safe = np.where(tiny, 1.0, lam)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(tiny[None, :], learning_rate * t[:, None] / n,
                        (1.0 - decay(lam, learning_rate, n, t, discrete=discrete)) / safe[None, :])


def discrete_coefficients(k_train_train, y_train, fx_train_0, *, learning_rate: float, steps) -> np.ndarray:
    """Coefficients c_t (T, N, k) with theta_t - theta_0 = J_0(X)^T c_t for GD on the linearized model.

    Each step adds -(lr / N) (f_t(X) - Y) to c (SCIENCE.md section 6); summed in closed form
    c_t = V diag((1 - (1 - a)^t) / lambda) V^T (Y - f_0(X)), with a = lr lambda / N and the
    lambda -> 0 limit lr t / N for numerically null modes. Then f_t(x) = f_0(x) + K(x, X) c_t
    and ||theta_t - theta_0||^2 = c_t^T K c_t. Float64 NumPy.
    """
    k = np.asarray(k_train_train, np.float64)
    n = k.shape[0]
    lam, v = np.linalg.eigh(k)
    g = gain(lam, learning_rate, n, steps)
    target_modes = v.T @ (np.asarray(y_train, np.float64) - np.asarray(fx_train_0, np.float64))  # (N, k)
    return np.einsum("in,tn,nk->tik", v, g, target_modes)


def discrete(
    k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, *, learning_rate: float, steps
) -> tuple[np.ndarray, np.ndarray]:
    """Exact discrete-GD prediction (same shapes as :func:`flow`), computed in float64 NumPy
    as f_t(x) = f_0(x) + K(x, X) c_t with c_t from :func:`discrete_coefficients`."""
    c = discrete_coefficients(k_train_train, y_train, fx_train_0, learning_rate=learning_rate, steps=steps)
    fx_train_t = np.asarray(fx_train_0, np.float64)[None] + np.einsum(
        "mn,tnk->tmk", np.asarray(k_train_train, np.float64), c)
    fx_test_t = np.asarray(fx_test_0, np.float64)[None] + np.einsum(
        "mn,tnk->tmk", np.asarray(k_test_train, np.float64), c)
    return fx_train_t, fx_test_t


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
