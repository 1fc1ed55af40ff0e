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

import jax.numpy as jnp
import numpy as np


def flow(
    k_train_train, k_test_train, y_train, fx_train_0, fx_test_0, *, learning_rate: float, steps
) -> tuple[np.ndarray, np.ndarray]:
    """NT's gradient-flow prediction at ``steps`` (array, shape (T,)).

    Shapes: k_train_train (N, N), k_test_train (M, N), y_train/fx_train_0 (N, 1),
    fx_test_0 (M, 1). Returns (T, N, 1) and (T, M, 1).
    """
    from studylib._nt import nt

    predict_fn = nt.predict.gradient_descent_mse(k_train_train, y_train, learning_rate=learning_rate)
    fx_train_t, fx_test_t = predict_fn(
        jnp.asarray(steps, dtype=jnp.asarray(k_train_train).dtype), fx_train_0, fx_test_0, k_test_train
    )
    return np.asarray(fx_train_t), np.asarray(fx_test_t)


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
    steps = np.asarray(steps, np.float64)
    a = learning_rate * lam / n
    with np.errstate(over="ignore", invalid="ignore"):  # |1 - a| > 1: GD diverges, and so does this
        decay = np.sign(1.0 - a)[None, :] ** steps[:, None] * np.abs(1.0 - a)[None, :] ** steps[:, None]  # (T, N)
    tiny = np.abs(lam) <= 1e-12 * max(np.abs(lam).max(), 1e-300)
    safe_lam = np.where(tiny, 1.0, lam)
    gain = np.where(tiny[None, :], learning_rate * steps[:, None] / n, (1.0 - decay) / safe_lam[None, :])
    target_modes = v.T @ (np.asarray(y_train, np.float64) - np.asarray(fx_train_0, np.float64))  # (N, k)
    return np.einsum("in,tn,nk->tik", v, gain, target_modes)


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
