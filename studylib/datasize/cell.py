"""One cell of the data-size study: every seed of the centred FC net at one (N, width), and the
infinite-width closed form on the same N (JAX inside the functions)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from studylib.datasize.config import DatasizeConfig
from studylib.runner import Cell, Context


def train_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset of n of the pool's training examples (labels (P,) class
    indices): the same random order per class for every n, so the subsets of a sweep are nested."""
    from studylib import data as D

    return D.subsets(seed, len(labels), [n], labels)[0]


def test_loss(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """NT's loss ½ mean over the M test inputs and k outputs of (f − y)², for f (..., M, k), y (M, k)."""
    return 0.5 * np.mean((np.asarray(f, np.float64) - y) ** 2, axis=(-2, -1))


def accuracy(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fraction of test inputs whose argmax output is the label argmax y, for f (..., M, k), y (M, k)."""
    return np.mean(np.argmax(f, axis=-1) == np.argmax(y, axis=-1), axis=-1)


def init_params(init_fn: Callable, seeds: list[int], input_shape: tuple[int, ...], dtype: str) -> Any:
    """The stax parameter pytree of ``init_fn`` stacked over seeds, every entry N(0, 1) -- the NTK
    parameterization's initialisation (W, b ~ N(0, 1), NT's ``Dense(parameterization='ntk')``) -- drawn by
    NumPy's ``default_rng((seed, leaf index))`` in the shapes ``jax.eval_shape`` gives, not by JAX's threefry:
    the same distribution as :func:`studylib.training.init_params`, other draws, and milliseconds instead of
    the seconds an eager stax draw compiles for per width here."""
    import jax

    shapes = jax.eval_shape(lambda key: init_fn(key, input_shape)[1], jax.random.PRNGKey(0))
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    stacked = [np.stack([np.random.default_rng((int(s), i)).standard_normal(leaf.shape) for s in seeds])
               .astype(dtype) for i, leaf in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(tree, [jax.numpy.asarray(a) for a in stacked])


def prepare(cfg: DatasizeConfig, dataset, log) -> dict:
    """Per N: the subset's indices, the analytic NTK Θ(X, X) (N, N) and Θ(x_test, X) (M, N), float64, and
    the eigenvalues of Θ(X, X) (width independent: shared by every width of that N); per width the seeds'
    initial parameters under 'params' (:func:`init_params`, drawn once: every N trains the same networks)."""
    import jax.numpy as jnp

    from studylib import kernels, models, runner

    k = int(dataset.y_train.shape[1])
    kernel_fn = models.build(cfg.model, 8, out_dim=k).kernel_fn
    labels = np.argmax(dataset.y_train, axis=-1)
    d = int(np.prod(dataset.x_train.shape[1:]))
    out: dict[Any, Any] = {"params": {w: init_params(models.build(cfg.model, w, out_dim=k).init_fn,
                                                      runner.seed_list(cfg), (1, d), cfg.dtype) for w in cfg.widths}}
    pool = len(labels)
    xs = jnp.asarray(np.concatenate([dataset.x_train, dataset.x_test]).reshape(pool + len(dataset.x_test), d),
                     jnp.float64)
    theta_all = np.asarray(kernels.analytic(kernel_fn, xs, xs[:pool]), np.float64)  # one call: (P + M, P)
    for n in cfg.n_trains:
        idx = train_subset(labels, n, cfg.data.seed)
        theta = theta_all[np.ix_(idx, idx)]
        out[n] = {"idx": idx, "theta": theta, "theta_test": theta_all[pool:][:, idx], "eig": np.linalg.eigh(theta)}
    return out


def checkpoints(steps: int, records: int) -> np.ndarray:
    """``records`` evenly spaced steps from 0 to ``steps`` and 0.9 x steps (the plateau check), increasing."""
    ck = np.round(np.linspace(0, steps, records)).astype(np.int64)
    return np.unique(np.concatenate([ck, [round(0.9 * steps)]]))


def measure_outputs(net, dense, dense0, x, x_test) -> dict:
    """The record at a checkpoint (:func:`studylib.sgd.full_batch_checkpoints`): f on the training and test
    inputs, (N, k) and (M, k). Module level so that its compiled trainer is reused across cells."""
    from studylib import sgd

    return {"f_train": sgd.forward(net, dense, x)[0], "f_test": sgd.forward(net, dense, x_test)[0]}


@functools.lru_cache(maxsize=32)
def _outputs_fn(net) -> Callable:
    """Jitted f(x) of every seed's dense parameters, (S, N, k)."""
    import jax

    from studylib import sgd

    return jax.jit(jax.vmap(lambda dense, x: sgd.forward(net, dense, x)[0], in_axes=(0, None)))


@functools.lru_cache(maxsize=32)
def _power_fn(net, iterations: int) -> Callable:
    """Jitted, seed-vmapped power iteration of :func:`lambda_max_power` (one compile per net)."""
    import jax
    import jax.numpy as jnp

    from studylib import sgd

    def matvec(dense, x, v):
        g = sgd.grads(net, dense, x, v)
        return jax.jvp(lambda d: sgd.forward(net, d, x)[0], (dense,), (g,))[1]

    def one(dense, x):
        v0 = jax.random.normal(jax.random.PRNGKey(0), (x.shape[0], net.sizes[-1]), x.dtype)

        def body(_, v):
            w = matvec(dense, x, v)
            return w / jnp.linalg.norm(w)

        v = jax.lax.fori_loop(0, iterations, body, v0 / jnp.linalg.norm(v0))
        return jnp.sum(v * matvec(dense, x, v))

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def lambda_max_power(net, dense0, x, iterations: int) -> np.ndarray:
    """λ_max of each seed's full empirical NTK K₀ on x, (N k, N k) (NT's ``trace_axes=()``), by power
    iteration on v -> J (Jᵀ v) (J the Jacobian of the hand-written net, :func:`studylib.sgd.grads` for Jᵀ v and
    a jvp of :func:`studylib.sgd.forward` for J u), from a fixed random start; the Rayleigh quotient of the last
    iterate, (S,). Never above the true λ_max (a lower bound that converges fast: the top mode of an NTK Gram is
    well separated). Tested against the eigenvalues of :func:`studylib.sgd.full_ntk`."""
    return np.asarray(_power_fn(net, int(iterations))(dense0, x), np.float64)


def closed_form_curves(shared_n: dict, y: np.ndarray, y_test: np.ndarray, *, lr: float, steps: np.ndarray,
                       discrete: bool = True) -> dict[str, np.ndarray]:
    """The infinite-width centred prediction: the closed form with the analytic NTK from zero outputs
    (:func:`studylib.closed_form.coefficients`, f_0 = 0; exact discrete GD, or with ``discrete=False`` NT's
    gradient flow ``gradient_descent_mse``) at ``steps`` and at t = ∞ (both limits agree there); test outputs
    'f_test' (T + 1, M, k), test loss and accuracy (T + 1,), the last entry t = ∞."""
    from studylib import closed_form

    t = np.concatenate([np.asarray(steps, np.float64), [np.inf]])
    c = closed_form.coefficients(shared_n["theta"], y, np.zeros_like(y), learning_rate=lr, steps=t,
                                 eig=shared_n["eig"], discrete=discrete)
    f_test = closed_form.kernel_apply(shared_n["theta_test"], c)  # (T + 1, M, k)
    return {"f_test": f_test, "loss": test_loss(f_test, y_test), "accuracy": accuracy(f_test, y_test)}


def run_cell(cfg: DatasizeConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    """Per seed the centred network's test loss and accuracy at every checkpoint (S, T), and the closed
    form's (T + 1,) (last: t = ∞), at the cell's rate; the rate rule's λ_max(K₀) per seed."""
    import jax.numpy as jnp

    from studylib import centring, closed_form, kernels, sgd

    n, width = int(cell.spec["n_train"]), int(cell.spec["width"])
    data, sh = ctx.dataset, ctx.shared[int(cell.spec["n_train"])]
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    y = np.asarray(data.y_train[sh["idx"]], np.float64)
    y_test = np.asarray(data.y_test, np.float64)
    k = y.shape[1]
    x = jnp.asarray(data.x_train[sh["idx"]].reshape(n, -1), dtype)
    x_test = jnp.asarray(data.x_test.reshape(len(y_test), -1), dtype)
    p0 = ctx.shared["params"][width]
    mlp = sgd.fast_mlp(cfg.model, width, in_dim=int(x.shape[1]), out_dim=k)
    dense0 = sgd.dense_params(p0)
    lam_max = lambda_max_power(mlp, dense0, x, cfg.power_iterations)
    lr_emp = kernels.critical_rate(lam_max, n * k)  # (S,)
    lr = float(cfg.lr_fraction * np.min(lr_emp))
    progress(0.1)

    f0 = np.asarray(_outputs_fn(mlp)(dense0, x), np.float64)  # (S, N, k)
    targets = jnp.asarray(centring.shifted_targets(y, f0), dtype)  # GD of f - f_0 on y = GD of f on y + f_0
    steps = checkpoints(cfg.steps, cfg.records)

    rec = sgd.full_batch_checkpoints(cfg.model, width, p0, x, targets, lr, steps, x_test=x_test,
                                     measure=measure_outputs)
    f_test = centring.centre_records(rec["f_test"])  # (S, T, M, k), exactly 0 at step 0
    f_train = centring.centre_records(rec["f_train"])
    progress(0.95)
    inf = closed_form_curves(sh, y, y_test, lr=lr, steps=steps)
    lam = sh["eig"][0]
    slowest = 1.0 - closed_form.decay(lam[:1], lr, n * k, steps)[:, 0]  # fraction of Θ's slowest mode trained
    return {
        "n_train": n,
        "width": width,
        "steps": steps,
        "learning_rate": lr,
        "lr_critical_emp": lr_emp,
        "lr_critical_inf": float(kernels.critical_rate(lam[-1], n * k)),
        "k0_lambda_max": lam_max,
        "theta_lambda_max": float(lam[-1]),
        "theta_lambda_min": float(lam[0]),
        "loss_net": test_loss(f_test, y_test),  # (S, T)
        "accuracy_net": accuracy(f_test, y_test),  # (S, T)
        "train_loss_net": test_loss(f_train, y),  # (S, T)
        "step0_max_abs": float(np.max(np.abs(f_test[:, 0]))),
        "loss_inf": inf["loss"],  # (T + 1,), last: t = inf
        "accuracy_inf": inf["accuracy"],
        "slowest_mode_trained": slowest,  # (T,)
    }


def notes(cfg: DatasizeConfig, cell: Cell, res: dict) -> list[str]:
    """A note for a cell whose network diverged (non-finite test loss)."""
    if not np.isfinite(res["loss_net"]).all():
        return [f"note: N={cell.spec['n_train']} width {cell.spec['width']}: non-finite test loss (diverged)"]
    return []
