"""One cell of the comparison study: all seeds of one width trained and measured (JAX is imported
inside the functions, so that importing this module stays cheap).

For each seed, with one stax definition (``init_fn``, ``apply_fn``, ``kernel_fn``): the network is
trained by full-batch GD on L = 1/2 mean((f - y)^2) (NT's convention) for ``steps`` steps at rate
``lr`` (time = lr * steps); its linearization is trained the same way (in function space by
default); the closed forms with the analytic NTK and with the empirical NTK at init are evaluated
at the same steps, as NT's gradient flow and as exact discrete GD (:mod:`studylib.closed_form`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from studylib import metrics as M
from studylib import runner, timing
from studylib.compare.config import AGREEMENTS, GAPS, PREDICTORS, REGIONS, CompareConfig, training_seconds
from studylib.runner import Cell, Context


def _measure_fns(apply_fn, paths):
    """Jitted, seed-vmapped measurements: (network at a checkpoint, linearized model trained by
    params at a checkpoint, linearized model in function space at every checkpoint at once)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from studylib import models
    from studylib.nt import nt

    def changes(delta):
        """Squared norms of the whole change and of each weight array's change (models.weight_paths)."""
        return (sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(delta)),
                models.layer_sq_norms(delta, paths))

    def net(p0, pn, x_train, x_test):
        dsq, wdsq = changes(jax.tree_util.tree_map(jnp.subtract, pn, p0))
        return {"f_net_train": apply_fn(pn, x_train), "f_net_test": apply_fn(pn, x_test), "dsq_net": dsq,
                "wdsq_net": wdsq}

    def lin_params(p0, pl, x_train, x_test):
        lin = nt.linearize(apply_fn, p0)
        dsq, wdsq = changes(jax.tree_util.tree_map(jnp.subtract, pl, p0))
        return {"f_lin_train": lin(pl, x_train), "f_lin_test": lin(pl, x_test), "dsq_lin": dsq, "wdsq_lin": wdsq}

    def lin_function(p0, c, x_train, x_test):
        """Coefficients c (T, N, k) -> per t the change theta_t - theta_0 = J_0(X)^T c_t (one vjp), its
        squared norms, and J_0(x_test) (theta_t - theta_0) (one jvp): K_0(x_test, X) c_t without the
        test-train kernel."""
        _, vjp = jax.vjp(lambda p: apply_fn(p, x_train), p0)

        def one(ct):
            delta = vjp(ct.astype(x_train.dtype))[0]
            dsq, wdsq = changes(delta)
            return dsq, wdsq, jax.jvp(lambda p: apply_fn(p, x_test), (p0,), (delta,))[1]

        return lax.map(one, c)

    vm = lambda f, n: jax.jit(jax.vmap(f, in_axes=(0, 0) + (None,) * n))  # noqa: E731
    return vm(net, 2), vm(lin_params, 2), vm(lin_function, 2)


def _involved(name: str) -> set[str]:
    """Which trained models ('net', 'lin', 'quad') a curve depends on (the first-order prediction: the
    linearized trajectory it expands around)."""
    if name.startswith("gap_predicted"):
        return {"lin"}
    out = {m for m in ("lin", "quad") if m in name}
    if "net" in name or not (out or "closed" in name):
        out.add("net")
    return out


def _mask_diverged(curves, steps, diverged_net, diverged_lin, diverged_quad) -> None:
    """NaN out each curve from the checkpoint where a model it depends on became non-finite."""
    flags = {"net": diverged_net, "lin": diverged_lin, "quad": diverged_quad}
    for name, c in curves.items():
        for model in _involved(name):
            f = flags[model]
            bad = (f[:, None] >= 0) & (steps[None, :] >= f[:, None])
            c[bad] = np.nan


#: Closed forms evaluated: suffix -> discrete (True: exact GD; False: gradient flow, NT's prediction).
FORMS = {"": False, "_discrete": True}
#: Suffix of the t = infinity closed forms (the flow's limit, NT's ``gradient_descent_mse`` at t=None).
LIMIT = "_limit"


def closed_coefficients(kernels_, y64, f0_train, *, lr: float, steps,
                        emp_dtype: str = "float64") -> dict[str, np.ndarray]:
    """Coefficients c_t (S, T, N, k) of every closed form (:func:`studylib.closed_form.coefficients`):
    'closed_<inf|emp>[_discrete]', and 'closed_<inf|emp>_limit' (S, 1, N, k) at t = infinity.
    ``kernels_``: {'inf': (kernel (N, N), its eigh), 'emp': [(flat kernel (N k, N k), its eigh) per seed]};
    f_0 (the outputs the forms start from: zeros when centred) differs by seed, so every form is per seed.
    ``emp_dtype``: the precision the empirical kernels were computed in; their modes below its rounding level
    (:func:`studylib.closed_form.null_rcond`) count as null (the analytic kernel is float64)."""
    from studylib import closed_form

    out = {}
    forms = [(suffix, disc, steps) for suffix, disc in FORMS.items()] + [(LIMIT, False, np.array([np.inf]))]
    for suffix, disc, ts in forms:
        for kind in ("inf", "emp"):
            rcond = (closed_form.null_rcond(len(kernels_["emp"][0][0]), emp_dtype) if kind == "emp" and suffix == LIMIT
                     else closed_form.NULL_RCOND)
            out[f"closed_{kind}{suffix}"] = np.stack([
                closed_form.coefficients(kern, y64, f0_train[s], learning_rate=lr, steps=ts, discrete=disc,
                                         eig=eig, rcond=rcond)
                for s, (kern, eig) in enumerate(kernels_[kind] if kind == "emp" else
                                                [kernels_["inf"]] * len(f0_train))])
    return out


def init_error(k0_flat: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """||K_0 - Theta (x) I_k||_F / ||Theta (x) I_k||_F per seed for flat K_0 (S, N k, N k) and the
    analytic Theta (N, N), without building Theta (x) I_k."""
    s, r, _ = k0_flat.shape
    n = theta.shape[0]
    k = r // n
    view = k0_flat.reshape(s, n, k, n, k)
    diag = np.einsum("sikjk->skij", view)  # (S, k, N, N): the blocks Theta (x) I_k has on its diagonal
    off_sq = np.sum(view**2, axis=(1, 2, 3, 4)) - np.sum(diag**2, axis=(1, 2, 3))
    diff_sq = off_sq + np.sum((diag - theta[None, None]) ** 2, axis=(1, 2, 3))
    return np.sqrt(np.maximum(diff_sq, 0.0) / (k * np.sum(theta**2)))


def present_regions(regions: dict) -> list[str]:
    """The REGIONS this dataset has: '' and 'train' always, 'interp'/'extrap' where the mask selects
    some but not all test inputs (1-D grids)."""
    out = []
    for region in REGIONS:
        if region in ("", "train"):
            out.append(region)
        elif region in regions and 0 < np.count_nonzero(regions[region]) < len(regions[region]):
            out.append(region)
    return out


def test_curves(preds: dict, y_test: np.ndarray | None, n_classes: int) -> dict[str, np.ndarray]:
    """Held-out curves (S, T): ``test_loss_<p>`` (1/2 mean((f - y)^2) over the M k test outputs) and
    ``test_rmse_<p>`` per predictor p; with classes, ``test_accuracy_<p>`` (argmax of the outputs =
    the label) and ``test_agreement_<a>_vs_<b>`` (fraction of test inputs where a and b predict the
    same class). Nothing without held-out targets."""
    if y_test is None:
        return {}
    out = {}
    for p in PREDICTORS:
        f = preds[p][1]  # (S, T, M, k)
        out[f"test_loss_{p}"] = 0.5 * np.mean((f - y_test) ** 2, axis=(2, 3))
        out[f"test_rmse_{p}"] = M.rmse(f, np.broadcast_to(y_test, f.shape))
    if n_classes > 0:
        label = np.argmax(y_test, axis=-1)
        cls = {p: np.argmax(preds[p][1], axis=-1) for p in PREDICTORS}  # (S, T, M)
        for p in PREDICTORS:
            out[f"test_accuracy_{p}"] = np.mean(cls[p] == label, axis=-1)
        for a, b in AGREEMENTS:
            out[f"test_agreement_{a}_vs_{b}"] = np.mean(cls[a] == cls[b], axis=-1)
    return out


def measured_curves(rec: dict, preds: dict, n0_sq, w0_sq, y64, data) -> dict[str, np.ndarray]:
    """Every curve (S, T[, L]) from the raw records of one width: losses, parameter and weight
    changes, kernel change and extremes (traced kernel on the first ``kernel_points`` inputs,
    relative to its value at step 0), the RMSE of every gap on every region the data have, and
    the held-out metrics (:func:`test_curves`)."""
    k_t = rec["k_net_train"]
    k_0 = k_t[:, :1]  # checkpoint 0 is step 0
    lam_min, lam_max = M.gram_extremes(k_t)
    curves: dict[str, np.ndarray] = {
        "loss_net": 0.5 * np.mean((rec["f_net_train"] - y64) ** 2, axis=(2, 3)),
        "loss_lin": 0.5 * np.mean((rec["f_lin_train"] - y64) ** 2, axis=(2, 3)),
        "loss_quad": 0.5 * np.mean((preds["quad"][0] - y64) ** 2, axis=(2, 3)),
        "rel_param_change": M.rel_change_norms(rec["dsq_net"], n0_sq[:, None]),
        "rel_param_change_lin": M.rel_change_norms(rec["dsq_lin"], n0_sq[:, None]),
        "rel_weight_change": M.rel_change_norms(rec["wdsq_net"], w0_sq[:, None]),
        "rel_weight_change_lin": M.rel_change_norms(rec["wdsq_lin"], w0_sq[:, None]),
        "rel_ntk_change": M.rel_change(k_t, np.broadcast_to(k_0, k_t.shape), axis=(2, 3)),
        "ntk_x0_change": np.abs(k_t[..., 0, 0] - k_0[..., 0, 0]) / np.abs(k_0[..., 0, 0]),
        "ntk_lambda_min": lam_min,
        "ntk_lambda_max": lam_max,
    }
    for gap, (a, b) in GAPS.items():
        for region in present_regions(data.regions):
            name = f"rmse_{gap}" + (f"_{region}" if region else "")
            if region == "train":
                curves[name] = M.rmse(preds[a][0], preds[b][0])
            else:
                mask = None if not region else data.regions[region]
                curves[name] = M.rmse(preds[a][1], preds[b][1], mask)
    return curves | test_curves(preds, data.y_test, data.n_classes)


def train_quadratic(cfg: CompareConfig, width: int, apply_fn, p0, x_train, y_train, x_test, *, lr: float, steps,
                    targets=None, trainer: Callable | None = None) -> dict[str, np.ndarray]:
    """The quadratic model f(theta_0) + J_0 d + 1/2 d^T H_0 d (``nt.taylor_expand(apply_fn, theta_0, 2)``,
    :mod:`studylib.quad`) trained by the network's GD, at the checkpoints: 'f_train' (S, T, N, k), 'f_test'
    (S, T, M, k), 'diverged_step' (S,). All NaN (never trained, never diverged) above ``cfg.quad_max_width``:
    it costs 6-30x the network per step (docs/controls.md). ``targets`` (S, N, k): a centred run's per-seed
    Y + f_0(X) (:mod:`studylib.centring`); each seed then trains on its own and its outputs are reported
    minus its step-0 value (J_0 d + 1/2 d^T H_0 d). ``trainer``: a :func:`studylib.quad.make_quad_trainer` of
    this ``apply_fn`` to reuse (its program compiled ahead: :class:`Ahead`)."""
    if width <= cfg.quad_max_width:
        import jax

        from studylib import centring, quad

        if targets is None:
            return quad.train_quad(apply_fn, p0, x_train, y_train, x_test, learning_rate=lr, steps=steps,
                                   trainer=trainer)
        trainer = trainer or quad.make_quad_trainer(apply_fn)
        runs = [quad.train_quad(apply_fn, jax.tree_util.tree_map(lambda a, s=s: a[s:s + 1], p0), x_train, targets[s],
                                x_test, learning_rate=lr, steps=steps, trainer=trainer) for s in range(len(targets))]
        return {"f_train": centring.centre_records(np.concatenate([r["f_train"] for r in runs])),
                "f_test": centring.centre_records(np.concatenate([r["f_test"] for r in runs])),
                "diverged_step": np.concatenate([r["diverged_step"] for r in runs])}
    import jax

    s, t = jax.tree_util.tree_leaves(p0)[0].shape[0], len(steps)
    return {"f_train": np.full((s, t, *y_train.shape), np.nan),
            "f_test": np.full((s, t, x_test.shape[0], y_train.shape[1]), np.nan),
            "diverged_step": np.full(s, -1)}


#: Share of a device's memory (MEMORY_FRACTION of it) one kernel block may take.
KERNEL_BLOCK_SHARE = 0.25


def kernel_rows(n_params: int, k: int, itemsize: int, n_rows: int) -> int:
    """Inputs per block of the empirical kernel (:func:`studylib.kernels.block_rows`) on this device."""
    from studylib import devices, kernels

    budget = KERNEL_BLOCK_SHARE * devices.MEMORY_FRACTION * devices.memory_bytes()
    return kernels.block_rows(n_params, k, itemsize, budget_bytes=budget, n_rows=n_rows)


def analytic_kernels(kernel_fn, x_train, x_test) -> tuple[np.ndarray, np.ndarray]:
    """Theta(X, X) (N, N) and Theta(x_test, X) (M, N), float64, in row blocks where NT's kernel of
    image inputs needs it (:func:`studylib.kernels.analytic_rows`)."""
    from studylib import devices, kernels

    budget = KERNEL_BLOCK_SHARE * devices.MEMORY_FRACTION * devices.memory_bytes()
    n = x_train.shape[0]
    rows_tt = kernels.analytic_rows(x_train.shape, n, budget_bytes=budget)
    theta_train = kernels.analytic_blocked(kernel_fn, x_train, None if rows_tt >= n else x_train, rows=rows_tt)
    rows_te = kernels.analytic_rows(x_test.shape, n, budget_bytes=budget)
    theta_test = kernels.analytic_blocked(kernel_fn, x_test, x_train, rows=rows_te)
    return theta_train, theta_test


def fast_net(cfg: CompareConfig, width: int, x_train, k: int):
    """The hand-written :class:`studylib.sgd.MLP` of this run's network where compare trains by it: FC nets
    (``sgd.fast_mlp``) on flat inputs (N, d) with the linearization in function space; None otherwise (the
    generic ``jax.grad`` trainer of :mod:`studylib.training`, as :mod:`studylib.dynamics` does)."""
    from studylib import sgd

    if x_train.ndim != 2 or cfg.lin_mode != "function":
        return None
    return sgd.fast_mlp(cfg.model, width, in_dim=int(x_train.shape[1]), out_dim=k)


_MEASURES: dict[int, Callable] = {}


def fast_measure(points: int) -> Callable:
    """The record of :func:`fast_network_records` at a checkpoint, for ``sgd.full_batch_checkpoints``:
    f on the training and test inputs (N, k), (M, k); the squared change of all parameters and of
    each weight matrix (L,); the empirical NTK on the first ``points`` training inputs, traced over
    the k outputs (P, P): (1/k) sum over outputs a of J_a J_a^T (NT's ``trace_axes=(-1,)``, as the generic
    path records it), one backward pass per output. One function
    object per ``points``, so that the runner's compile cache (keyed on it) is hit."""
    if points not in _MEASURES:
        import jax.numpy as jnp

        from studylib import sgd

        def measure(net, dense, dense0, x, x_test):
            f_train, cache = sgd.forward(net, dense, x)
            sq = [(jnp.sum((w - w0) ** 2), jnp.sum((b - b0) ** 2))
                  for (w, b), (w0, b0) in zip(dense, dense0, strict=True)]
            ck = tuple([a[:points] for a in part] for part in cache)  # the first `points` inputs' pass
            xk = x[:points]
            eye = jnp.eye(net.sizes[-1], dtype=x.dtype)
            k_traced = 0.0
            for a in range(net.sizes[-1]):
                d = sgd.backward_t(net, dense, ck, jnp.broadcast_to(eye[a], (xk.shape[0], net.sizes[-1])))
                kw, kb = sgd.feature_kernel_parts(net, ck[0], d, ck[0], d)
                k_traced = k_traced + jnp.sum(kw, 0) + jnp.sum(kb, 0)
            k_traced = k_traced / net.sizes[-1]
            return {"f_net_train": f_train, "f_net_test": sgd.forward(net, dense, x_test)[0],
                    "dsq_net": sum(a + b for a, b in sq), "wdsq_net": jnp.stack([a for a, _ in sq]),
                    "k_net_train": k_traced}

        _MEASURES[points] = measure
    return _MEASURES[points]


def fast_network_records(cfg: CompareConfig, width: int, p0, x_train, y_train, x_test, *, lr: float, steps
                         ) -> dict[str, np.ndarray]:
    """Full-batch GD of the FC net by the hand-written trainer (:func:`studylib.sgd.flagged_checkpoints`:
    one compiled scan over all checkpoints, seeds vmapped), recorded at ``steps`` (:func:`fast_measure`):
    the same records, in the same layout (S, T, ...), as the generic loop of :func:`run_width`
    (tests/test_compare.py checks them equal); and at the after-kernel checkpoints
    (:func:`studylib.afterkernel.after_checkpoints` of ``steps``) the traced kernel on all N training inputs
    'after_k_train' (S, T, N, N) and test-train 'after_k_test' (S, T, M, N) (:func:`studylib.sgd.traced_ntk_blocks`;
    zeros at the other checkpoints)."""
    from studylib import afterkernel, sgd

    rec, (k_train, k_test) = sgd.flagged_checkpoints(
        cfg.model, width, p0, x_train, y_train, lr, steps,
        afterkernel.after_checkpoints(steps) & cfg.after_kernel_on(fast=True), x_test=x_test,
        measure=fast_measure(min(cfg.kernel_points, x_train.shape[0])), extra=sgd.traced_ntk_blocks)
    rec |= {"after_k_train": k_train, "after_k_test": k_test}
    rec = {k: np.asarray(v, np.float64) for k, v in rec.items()}
    if not cfg.after_kernel_on(fast=True):  # off: no checkpoint flagged (zeros), the rows NaN
        rec["after_k_train"], rec["after_k_test"] = (np.full_like(rec[k], np.nan) for k in ("after_k_train",
                                                                                          "after_k_test"))
    return rec


def fast_init(mlp, dense0, x_train, x_test, *, expand: bool) -> dict[str, Any]:
    """Everything compare needs at theta_0 of an FC net with one output, from per-sample features in one
    compiled pass, seeds vmapped: the per-layer pieces of the empirical NTK on the training inputs
    ('kw', 'kb': (S, L, N, N), :func:`studylib.sgd.ntk_parts`), the test-train kernel 'k_tx' (S, M, N), the
    outputs 'f0_train' (S, N, 1) and 'f0_test' (S, M, 1), and
    with ``expand`` the first-order expansion 'expansion' (:func:`studylib.perturb.expansion_mlp`, rows =
    training then test inputs)."""
    import jax

    from studylib import perturb, sgd

    def one(d):
        kw, kb, f0_train = sgd.ntk_parts(mlp, d, x_train, with_f=True)
        out = {"kw": kw, "kb": kb, "k_tx": sgd.ntk(mlp, d, x_test, x_train),
               "f0_train": f0_train, "f0_test": sgd.forward(mlp, d, x_test)[0]}
        if expand:
            out["expansion"] = perturb.expansion_mlp(mlp, d, x_train, x_test)
        return out

    return jax.jit(jax.vmap(one))(dense0)


def fast_lin_function(init: dict, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`_measure_fns`' function-space measurements of the linearized model by kernel algebra, for
    one output (k = 1): with theta_t - theta_0 = J_0^T c_t, ||theta_t - theta_0||^2 = c^T K_0 c, the change
    of weight matrix l is c^T K_0^(W_l) c (its own kernel piece) and J_0(x_test) (theta_t - theta_0) =
    K_0(x_test, X) c. ``init``: :func:`fast_init`'s kernels; c (S, T, N, 1). Returns dsq (S, T),
    wdsq (S, T, L), df_test (S, T, M, 1)."""
    kw, kb, k_tx = (np.asarray(init[key], np.float64) for key in ("kw", "kb", "k_tx"))
    cc = c[..., 0]
    wdsq = np.einsum("stn,slnm,stm->stl", cc, kw, cc)
    dsq = wdsq.sum(-1) + np.einsum("stn,slnm,stm->st", cc, kb, cc)
    return dsq, wdsq, np.einsum("smn,stn->stm", k_tx, cc)[..., None]


def first_diverged(f_train: np.ndarray, y: np.ndarray, steps) -> np.ndarray:
    """(S,) the first checkpoint step at which outputs f_train (S, T, N, k) have diverged
    (:func:`studylib.metrics.diverged`), -1 for seeds that never did."""
    bad = np.stack([M.diverged(f_train[:, j], y) for j in range(f_train.shape[1])], axis=1)  # (S, T)
    return np.where(bad.any(1), np.asarray(steps)[np.argmax(bad, axis=1)], -1)


def generic_records(cfg: CompareConfig, apply_fn, p0, x_train, y_train, x_test, y64, *, lr: float, steps,
                    lin, measure, rows: int, progress=None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The network (and, with ``lin_mode='params'``, ``nt.linearize``) trained by the generic ``jax.grad``
    trainer of :mod:`studylib.training` checkpoint by checkpoint, and measured at each (:func:`_measure_fns`,
    NT's traced empirical kernel on the first ``kernel_points`` inputs in blocks of ``rows``). ``lin``: the
    function-space linearization's ((f_train, f_test), (dsq, wdsq)) used in 'function' mode. A centred run
    (``cfg.centred``) trains f(theta) - f(theta_0) itself (:func:`studylib.centring.centred_model`, not the
    shifted targets of the hand-written trainer: the tests compare the two) and records outputs minus
    their step-0 values; at the after-kernel checkpoints (:func:`studylib.afterkernel.after_checkpoints`) also
    the traced kernel on all N and test-train, 'after_k_train' (S, T, N, N) and 'after_k_test' (S, T, M, N)
    (:func:`studylib.afterkernel.empirical_kernels`; zeros at the other checkpoints). Returns the records
    (S, T, ...) and the first divergence step of the network and of the linearization per seed."""
    import jax
    import jax.numpy as jnp

    from studylib import afterkernel, centring, devices, kernels, training

    measure_net, measure_lin_params = measure
    one = lambda tree, s: jax.tree_util.tree_map(lambda a: a[s], tree)  # noqa: E731
    n_seeds = jax.tree_util.tree_leaves(p0)[0].shape[0]
    traced_fn = jax.jit(kernels.empirical_ntk_fn(apply_fn, implementation=cfg.ntk_implementation))
    x_kernel = x_train[:min(cfg.kernel_points, x_train.shape[0])]
    model = centring.centred_model if cfg.centred else (lambda m: m)
    train_net = training.make_trainer(model(training.network_model(apply_fn)))
    params_mode = cfg.lin_mode == "params"
    if params_mode:
        train_lin = training.make_trainer(model(training.linearized_model(apply_fn)))
    copy = lambda t: jax.tree_util.tree_map(jnp.copy, t)  # noqa: E731
    after = afterkernel.after_checkpoints(steps) & cfg.after_kernel_on(fast=False)
    budget = KERNEL_BLOCK_SHARE * devices.MEMORY_FRACTION * devices.memory_bytes()
    pn = copy(p0)
    pl = copy(p0) if params_mode else None
    lr_arr = jnp.asarray(lr, x_train.dtype)
    to_np = lambda d: {k_: np.asarray(v, np.float64) for k_, v in d.items()}  # noqa: E731

    records: list[dict[str, np.ndarray]] = []
    prev = 0
    for j, t in enumerate(steps):
        if t > prev:
            pn = train_net(pn, p0, x_train, y_train, lr_arr, int(t - prev))
            if params_mode:
                pl = train_lin(pl, p0, x_train, y_train, lr_arr, int(t - prev))
        rec = to_np(measure_net(p0, pn, x_train, x_test))
        rec["k_net_train"] = np.stack([kernels.blocked_ntk(traced_fn, x_kernel, None, one(pn, s), rows=rows)
                                       for s in range(n_seeds)])
        if after[j]:  # the after kernel on all N and test-train (NT's traced kernel, row blocks)
            blocks = [afterkernel.empirical_kernels(apply_fn, one(pn, s), x_train, x_test,
                                                    implementation=cfg.ntk_implementation, budget_bytes=budget)
                      for s in range(n_seeds)]
            rec["after_k_train"], rec["after_k_test"] = (np.stack(b) for b in zip(*blocks, strict=True))
        else:  # not an after-kernel checkpoint, or after_kernel off: NaN, whose regression is NaN
            rec["after_k_train"] = np.full((n_seeds, x_train.shape[0], x_train.shape[0]), np.nan)
            rec["after_k_test"] = np.full((n_seeds, x_test.shape[0], x_train.shape[0]), np.nan)
        if params_mode:
            rec |= to_np(measure_lin_params(p0, pl, x_train, x_test))
        else:
            rec["f_lin_train"], rec["f_lin_test"] = (a[:, j] for a in lin[0])
            rec["dsq_lin"], rec["wdsq_lin"] = (a[:, j] for a in lin[1])
        records.append(rec)
        if progress is not None:
            progress(int(t - prev))
        prev = t
    rec = {k_: np.stack([r[k_] for r in records], axis=1) for k_ in records[0]}  # (S, T, ...)
    if cfg.centred:
        for name in ("f_net_train", "f_net_test") + (("f_lin_train", "f_lin_test") if params_mode else ()):
            rec[name] = centring.centre_records(rec[name])
    return rec, first_diverged(rec["f_net_train"], y64, steps), first_diverged(rec["f_lin_train"], y64, steps)


#: Largest N for the first-order prediction: its arrays are (N + M) x N x N per seed and each of its steps
#: costs as much; beyond this, and with k > 1 outputs (studylib.perturb takes one), it is NaN.
PREDICT_MAX_TRAIN = 64


def predicts(x_train_shape: tuple[int, ...], k: int) -> bool:
    """Whether :func:`predicted_deviation` runs for this data: one output and at most PREDICT_MAX_TRAIN inputs."""
    return k == 1 and x_train_shape[0] <= PREDICT_MAX_TRAIN


def predicted_deviation(expansion, apply_fn, p0, x_train, x_test, y64: np.ndarray, *, lr: float, steps
                        ) -> np.ndarray:
    """The first-order prediction of the network-linearization deviation from theta_0 alone
    (:mod:`studylib.perturb`, docs/crossover.md): delta f (S, T, N + M) at the checkpoints on the training
    inputs then the test inputs. ``expansion``: the FC nets' (:func:`fast_init`, O(N) passes), or None for
    :func:`studylib.perturb.expansion` by autodiff (O(N^2) passes); NaN where :func:`predicts` is False.
    ``y64``: targets (N, k), or per seed (S, N, k) (a centred run's Y + f_0(X): the deviation of the
    centred models is the uncentred ones' on these targets)."""
    import jax

    from studylib import perturb

    s, n, m = jax.tree_util.tree_leaves(p0)[0].shape[0], x_train.shape[0], x_test.shape[0]
    if not predicts(x_train.shape, y64.shape[-1]):
        return np.full((s, len(steps), n + m), np.nan)
    if expansion is None:
        expansion = jax.jit(jax.vmap(lambda p: perturb.expansion(lambda q, x: apply_fn(q, x)[:, 0], p, x_train,
                                                                 x_test)))(p0)
    if y64.ndim == 2:
        return perturb.predict(expansion, y64[:, 0], learning_rate=lr, checkpoints=steps)[0]
    return np.concatenate([perturb.predict(jax.tree_util.tree_map(lambda a, i=i: a[i:i + 1], expansion), y64[i, :, 0],
                                           learning_rate=lr, checkpoints=steps)[0] for i in range(s)])


def predicted_curves(delta: np.ndarray, n: int, data) -> dict[str, np.ndarray]:
    """``gap_predicted[_region]`` (S, T): the RMS of the predicted deviation ``delta`` (S, T, N + M) on each
    region the data have, the same regions and normalisation (none: RMSE in the units of y) as the measured
    ``rmse_net_vs_lin[_region]`` beside it."""
    out = {}
    for region in present_regions(data.regions):
        rows = delta[..., :n] if region == "train" else delta[..., n:]
        if region not in ("", "train"):
            rows = rows[..., data.regions[region]]
        out["gap_predicted" + (f"_{region}" if region else "")] = np.sqrt(np.mean(rows**2, axis=-1))
    return out


def learning_schedule(cfg: CompareConfig, lr_critical_inf: float, lr_critical_emp: np.ndarray,
                      lr: float | None = None, *, lr_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """The learning rate of one width and its checkpoint steps (T,), increasing from 0 (time = lr x steps).

    ``lr_rule='analytic'``: ``cfg.lr``, else lr_fraction x 2Nk/lambda_max(Theta) (``lr_critical_inf``), at
    the log-spaced checkpoints of ``cfg.steps`` steps (:func:`studylib.training.checkpoint_steps`).
    ``'emp'``: that rate times ``cfg.steps`` is the absolute time T every width trains to; the width's own
    rate eta_0 = lr_fraction x the smallest 2Nk/lambda_max(K_0) of its seeds (``lr_critical_emp`` (S,);
    or ``lr``, a rate chosen for the width from all its seeds when they run in chunks) gives
    n = ceil(T / eta_0) steps at eta = T / n <= eta_0, so every width ends at time T exactly; its
    checkpoints are the analytic rule's at the same fractions of T, rounded to its own steps (equal
    times to within half a step; the results keep each width's ``times``). ``lr_scale``: the factor on a
    given ``cfg.lr`` (γ² of :mod:`studylib.mup`'s γ-model, whose kernels, and so critical rates, carry it)."""
    from studylib import training

    ref = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    base = cfg.lr * lr_scale if cfg.lr is not None else cfg.lr_fraction * lr_critical_inf
    if cfg.lr_rule == "analytic":
        return base, ref
    total = base * cfg.steps
    eta0 = lr if lr is not None else cfg.lr_fraction * float(np.min(lr_critical_emp))
    n = max(math.ceil(total / eta0 * (1.0 - 1e-12)), 1)
    steps = np.round(ref / cfg.steps * n).astype(np.int64)
    steps[1:] = np.maximum(steps[1:], 1)
    steps = np.maximum.accumulate(steps)
    steps[-1] = n
    return total / n, steps


@functools.lru_cache(maxsize=16)
def _full_ntk_fn(mlp) -> Callable:
    """Jitted :func:`studylib.sgd.full_ntk` of one seed's dense parameters (one compile per net)."""
    import jax

    from studylib import sgd

    return jax.jit(lambda dense, x: sgd.full_ntk(mlp, dense, x))


def kernels_at_init(cfg: CompareConfig, net, mlp, p0, x_train, x_test, *, k: int, n_params: int, itemsize: int
                    ) -> dict[str, Any]:
    """The full empirical NTK at init 'k0_flat' (S, N k, N k) and the outputs 'f0_train' (S, N, k),
    'f0_test' (S, M, k), float64. FC nets (``mlp``, :func:`fast_net`) from per-sample features: with one
    output by :func:`fast_init` (kept as 'init': its per-layer pieces, K_0(x_test, X) and first-order
    expansion serve the rest of the width), with k > 1 outputs by :func:`studylib.sgd.full_ntk` seed by seed
    (measured at width 1024 on digits, N k = 2560: 1.8 s a seed here); other nets by NT's empirical kernel,
    seed by seed in blocks of inputs (memory: :func:`kernel_rows`)."""
    import jax

    from studylib import kernels, sgd

    s_count = jax.tree_util.tree_leaves(p0)[0].shape[0]
    n = x_train.shape[0]
    one = lambda tree, s: jax.tree_util.tree_map(lambda a: a[s], tree)  # noqa: E731
    if mlp is not None and k == 1:  # the kernels at init from per-sample features (fast_lin_function)
        init = fast_init(mlp, sgd.dense_params(p0), x_train, x_test, expand=predicts(x_train.shape, k))
        return {"init": init, "k0_flat": np.asarray(init["kw"].sum(1) + init["kb"].sum(1), np.float64),
                "f0_train": np.asarray(init["f0_train"], np.float64),
                "f0_test": np.asarray(init["f0_test"], np.float64)}
    if mlp is not None:
        full = _full_ntk_fn(mlp)
        dense0 = sgd.dense_params(p0)
        k0_flat = np.stack([np.asarray(full(one(dense0, s), x_train)[0], np.float64) for s in range(s_count)])
    else:  # the full kernel at init, seed by seed, in blocks of inputs (memory: kernel_rows)
        rows = kernel_rows(n_params, k, itemsize, n)
        full_fn = jax.jit(kernels.empirical_ntk_fn(net.apply_fn, implementation=cfg.ntk_implementation,
                                                   trace_outputs=False))
        k0_flat = np.stack([kernels.flat_kernel(kernels.blocked_ntk(full_fn, x_train, None, one(p0, s), rows=rows))
                            for s in range(s_count)])  # (S, N k, N k)
    f0 = jax.vmap(net.apply_fn, in_axes=(0, None))
    return {"init": None, "k0_flat": k0_flat, "f0_train": np.asarray(f0(p0, x_train), np.float64),
            "f0_test": np.asarray(f0(p0, x_test), np.float64)}


def trained_fraction_curves(lr: float, steps, n_out: int, theta_lambda_min: float, k0_lambda_min: np.ndarray
                            ) -> dict[str, np.ndarray]:
    """How far each predictor has trained its slowest kernel mode, ``trained_fraction_<p>`` (S, T):
    1 - (1 - lr lambda_min / (N k))^t for discrete GD (network and linearization, lambda_min of each
    seed's K_0: the network's kernel at init), 1 - exp(-lr t lambda_min / (N k)) for NT's flow (closed
    forms: K_0's, and Theta's for the analytic one); 1 at t = infinity. NT's convention (SCIENCE.md
    section 2): ``n_out`` = N k training outputs; negative round-off eigenvalues count as 0."""
    from studylib import closed_form

    lam0 = np.maximum(np.asarray(k0_lambda_min, np.float64), 0.0)[:, None]  # (S, 1): one mode per seed
    lam_inf = np.full((lam0.shape[0], 1), max(float(theta_lambda_min), 0.0))
    frac = lambda lam, disc: 1.0 - closed_form.decay(lam, lr, n_out, steps, discrete=disc)[..., 0]  # noqa: E731
    discrete, flow_emp = frac(lam0, True), frac(lam0, False)
    return {"trained_fraction_net": discrete, "trained_fraction_lin": discrete.copy(),
            "trained_fraction_closed_emp": flow_emp, "trained_fraction_closed_inf": frac(lam_inf, False)}


def closed_predictions(coeffs: dict, theta_train, theta_test, k0_flat, start_train, start_test, init, p0,
                       x_train, x_test, measure_lin_function, n_steps: int) -> tuple[dict, dict]:
    """Every closed form's (train (S, T, N, k), test (S, T, M, k)) outputs from its coefficients
    (:func:`closed_coefficients`), starting from ``start_*`` (f_0, or 0 when centred): with the analytic
    kernel directly, with K_0 through J_0 (theta_t - theta_0 = J_0^T c_t: :func:`fast_lin_function` or one
    vjp and one jvp per checkpoint), which also gives the linearized model's parameter changes
    ({name: (dsq (S, T), wdsq (S, T, L))}). The t = infinity forms are repeated over the ``n_steps``
    checkpoints."""
    import jax.numpy as jnp

    from studylib import closed_form

    closed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    lin_fn_out = {}
    for name, c in coeffs.items():
        if name.startswith("closed_inf"):
            out = (start_train[:, None] + closed_form.kernel_apply(theta_train, c),
                   start_test[:, None] + closed_form.kernel_apply(theta_test, c))
        else:
            if init is not None:
                dsq, wdsq, df_test = fast_lin_function(init, c)
            else:
                dsq, wdsq, df_test = measure_lin_function(p0, jnp.asarray(c), x_train, x_test)
            lin_fn_out[name] = (np.asarray(dsq, np.float64), np.asarray(wdsq, np.float64))
            out = (start_train[:, None] + np.stack([closed_form.kernel_apply(k0_flat[s], c[s])
                                                    for s in range(len(c))]),
                   start_test[:, None] + np.asarray(df_test, np.float64))
        if name.endswith(LIMIT):
            out = tuple(np.repeat(a, n_steps, axis=1) for a in out)
        closed[name] = out
    return closed, lin_fn_out


def width_schedule(cfg: CompareConfig, width: int, k0_flat: np.ndarray, lr_critical_inf: float, nk: int,
                   lr: float | None = None) -> tuple[list, np.ndarray, float, float, np.ndarray]:
    """One width's eigendecompositions of K_0 (S of (lambda, V), ascending), its empirical critical rates
    2Nk/lambda_max(K_0) (S,), gamma (1 but for :mod:`studylib.mup`'s gamma-model: mup, or gamma0 != 1), and
    its rate and checkpoint steps (:func:`learning_schedule`, rates scaled by gamma^2) from the kernels at
    init ``k0_flat`` (S, N k, N k) and the analytic critical rate: what :func:`run_width` and
    :meth:`Ahead.quad_job` both derive, by the same calls on the same arrays."""
    from studylib import kernels

    k0_eig = [np.linalg.eigh(kk) for kk in k0_flat]
    lr_critical_emp = kernels.critical_rate(np.array([lam[-1] for lam, _ in k0_eig]), nk)
    gamma = cfg.model.gamma(width)
    lr, steps = learning_schedule(cfg, lr_critical_inf, lr_critical_emp, lr, lr_scale=gamma**2)
    return k0_eig, lr_critical_emp, gamma, lr, steps


def run_width(cfg: CompareConfig, width: int, data, *, progress: Callable[[int], Any] | None = None,
              seeds: list[int] | None = None, log: Callable[[str], Any] | None = None,
              analytic: tuple[np.ndarray, np.ndarray] | None = None, fast: bool = True,
              lr: float | None = None) -> dict[str, Any]:
    """Train and measure all seeds at one width (``progress(k)`` is called after every k steps).

    Data: x (N, ...) and y (N, k) (``data.x_train``, ``data.y_train``), test inputs x_test (M, ...)
    and, where held out, y_test (M, k). The empirical kernel at init is the full (N k, N k) one
    (NT's ``trace_axes=()``, flat layout of :func:`studylib.kernels.flat_kernel`; :func:`kernels_at_init`);
    the analytic one (N, N) acts as Theta (x) I_k (``analytic``: (Theta(X, X), Theta(x_test, X))
    when already computed, e.g. for another width of a width-independent kernel). The rate and the
    checkpoints come from :func:`learning_schedule` (``lr``: the width's rate under the 'emp' rule when
    chosen over seed chunks). Centred runs (``cfg.centred``, :mod:`studylib.centring`) report every
    model's outputs minus f_0: the closed forms and the function-space linearization start from 0, the
    hand-written trainer and the quadratic model train on the per-seed targets Y + f_0(X), the generic
    trainer trains f(theta) - f(theta_0) itself. FC nets train by the hand-written trainer
    (:func:`fast_network_records`) unless ``fast`` is False (the generic one: tests compare the two).
    Returns per-seed curves of shape (S, T, ...) over the checkpoints and per-seed scalars (names:
    docs/compare.md, "Files it writes")."""
    import jax
    import jax.numpy as jnp

    from studylib import afterkernel, centring, closed_form, devices, kernels, models, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    itemsize = 8 if cfg.dtype == "float64" else 4
    x_train = jnp.asarray(data.x_train, dtype)
    y_train = jnp.asarray(data.y_train, dtype)
    x_test = jnp.asarray(data.x_test, dtype)
    n, k = data.y_train.shape
    if seeds is None:
        seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))

    with timing.phase("init", width):  # drawing theta_0 (NT's init_fn, op by op), or waiting for AHEAD's
        ahead = AHEAD.take(cfg, width, data, seeds) if fast and lr is None else None
        if ahead is not None:
            net, p0 = ahead["net"], ahead["p0"]
        else:
            net = models.build(cfg.model, width, out_dim=k)
            p0 = devices.shard_seeds(training.init_params(net.init_fn, seeds, x_train.shape, dtype=cfg.dtype),
                                     len(seeds))
        jax.block_until_ready(p0)
        paths = models.weight_paths(jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), p0))
        n_params = sum(int(np.prod(a.shape[1:])) for a in jax.tree_util.tree_leaves(p0))

    with timing.phase("analytic", width):
        theta_train, theta_test = analytic or analytic_kernels(net.kernel_fn, x_train, x_test)
        lr_critical_inf = float(kernels.critical_learning_rate(theta_train, outputs=k))

    with timing.phase("at_init", width):
        mlp = fast_net(cfg, width, x_train, k) if fast else None
        at_init = ahead["at_init"] if ahead is not None else kernels_at_init(
            cfg, net, mlp, p0, x_train, x_test, k=k, n_params=n_params, itemsize=itemsize)
        init, k0_flat = at_init["init"], at_init["k0_flat"]
    with timing.phase("eigh", width):
        k0_eig, lr_critical_emp, gamma, lr, steps = width_schedule(cfg, width, k0_flat, lr_critical_inf, n * k, lr)
        # absolute time lr x t of each checkpoint; the gamma-model's in the NTK net's units, lr / gamma^2
        # (its kernel is the NTK net's / gamma^2: the same eta Theta and closed forms at every width)
        times = lr / gamma**2 * np.asarray(steps, np.float64)
    above = [seeds[i] for i in np.flatnonzero(lr > lr_critical_emp)]
    if above and log is not None:  # before training: the linearized model of these seeds will diverge
        log(f"warning: width {width}: lr {lr:.3g} exceeds the empirical critical rate 2Nk/lambda_max(K_0) of "
            f"seed(s) {above}: their linearized model diverges (GD with a constant kernel above 2Nk/lambda_max)")

    centred = cfg.centred
    f0_train, f0_test = at_init["f0_train"], at_init["f0_test"]
    start_train, start_test = (centring.initial_outputs(f, centred) for f in (f0_train, f0_test))
    y64 = np.asarray(data.y_train, np.float64)
    # the trainers of the uncentred network train the centred one on Y + f_0(X) (studylib.centring)
    targets = jnp.asarray(centring.shifted_targets(y64, f0_train), dtype) if centred else None

    with timing.phase("closed", width):
        coeffs = closed_coefficients({"inf": (theta_train, np.linalg.eigh(theta_train)),
                                      "emp": list(zip(k0_flat, k0_eig, strict=True))}, y64, start_train, lr=lr,
                                     steps=steps, emp_dtype=cfg.dtype)
        measure_net, measure_lin_params, measure_lin_function = _measure_fns(net.apply_fn, paths)
        closed, lin_fn_out = closed_predictions(coeffs, theta_train, theta_test, k0_flat, start_train, start_test,
                                                init, p0, x_train, x_test, measure_lin_function, len(steps))

    with timing.phase("train", width):
        if mlp is not None:
            rec = fast_network_records(cfg, width, p0, x_train, y_train if targets is None else targets, x_test, lr=lr,
                                       steps=steps)
            if centred:
                rec["f_net_train"], rec["f_net_test"] = (centring.centre_records(rec[key])
                                                         for key in ("f_net_train", "f_net_test"))
            rec["dsq_lin"], rec["wdsq_lin"] = lin_fn_out["closed_emp_discrete"]
            rec["f_lin_train"], rec["f_lin_test"] = closed["closed_emp_discrete"]
            diverged_net, diverged_lin = (first_diverged(rec[f"f_{m}_train"], y64, steps) for m in ("net", "lin"))
            if progress is not None:
                progress(int(steps[-1]))
        else:
            rec, diverged_net, diverged_lin = generic_records(
                cfg, net.apply_fn, p0, x_train, y_train, x_test, y64, lr=lr, steps=steps,
                lin=(closed["closed_emp_discrete"], lin_fn_out["closed_emp_discrete"]),
                measure=(measure_net, measure_lin_params), progress=progress,
                rows=kernel_rows(n_params, k, itemsize, min(cfg.kernel_points, n)))
    with timing.phase("quad", width):  # trained on an ahead thread meanwhile (Ahead.quad_job), or here
        quad = AHEAD.take_quad(cfg, width, data, seeds, lr, steps) if ahead is not None else None
        if quad is None:
            quad = train_quadratic(cfg, width, net.apply_fn, p0, x_train, y_train, x_test, lr=lr, steps=steps,
                                   targets=targets, trainer=None if ahead is None else ahead["quad_trainer"])
    with timing.phase("curves", width):
        n0_sq = sum(np.sum(np.asarray(leaf, np.float64) ** 2, axis=tuple(range(1, leaf.ndim)))
                    for leaf in jax.tree_util.tree_leaves(p0))  # (S,)
        leaves = dict(jax.tree_util.tree_flatten_with_path(p0)[0])
        w0_sq = np.stack([np.sum(np.asarray(leaves[p], np.float64) ** 2, axis=tuple(range(1, leaves[p].ndim)))
                          for p in paths], axis=-1)  # (S, L), float64 whatever the run's dtype

        preds = {"net": (rec["f_net_train"], rec["f_net_test"]), "lin": (rec["f_lin_train"], rec["f_lin_test"])}
        preds |= closed
        preds["quad"] = (quad["f_train"], quad["f_test"])

        expansion = None if init is None else init.get("expansion")
        with timing.phase("predict", width):
            delta = predicted_deviation(expansion, net.apply_fn, p0, x_train, x_test, y64 if targets is None else
                                        np.asarray(targets, np.float64), lr=lr, steps=steps)
        lam_theta = np.linalg.eigvalsh(theta_train)
        lam_k0 = np.stack([lam for lam, _ in k0_eig])
        with timing.phase("after", width):  # the after kernel: alignment, velocity, regression with K_t
            flags = afterkernel.after_checkpoints(steps)
            after_curves, after_scalars, after_pred = afterkernel.compare_rows(
                rec["k_net_train"], times, y64, flags,
                rec["after_k_train"][:, flags], rec["after_k_test"][:, flags], start_train, start_test,
                rec["f_net_test"][:, -1], data.y_test, data.n_classes, kernels.traced_kernel(k0_flat, k), theta_train,
                rcond=closed_form.null_rcond(n, cfg.dtype))
        curves = (measured_curves(rec, preds, n0_sq, w0_sq, y64, data) | predicted_curves(delta, n, data)
                  | trained_fraction_curves(lr, steps, n * k, lam_theta[0], lam_k0[:, 0]) | after_curves)
        _mask_diverged(curves, steps, diverged_net, diverged_lin, quad["diverged_step"])

        stored = (lambda a: a[..., 0]) if k == 1 else (lambda a: a.astype(np.float32))
        once = lambda name, a: a[:, -1:] if name.endswith(LIMIT) else a  # noqa: E731  t = infinity: one checkpoint
        result = {
            "width": width,
            "steps": steps,
            "times": times,
            "learning_rate": lr,
            "gamma": gamma,
            "lr_rule": cfg.lr_rule,
            "centred": centred,
            "lr_critical_inf": lr_critical_inf,
            "lr_critical_emp": lr_critical_emp,
            "lr_above_emp_critical": lr > lr_critical_emp,
            "theta_lambda_min": float(lam_theta[0]),
            "theta_lambda_max": float(lam_theta[-1]),
            "k0_lambda_min": lam_k0[:, 0],
            "k0_lambda_max": lam_k0[:, -1],
            "ntk_init_error": init_error(k0_flat, theta_train),
            "diverged_net_step": diverged_net,
            "diverged_lin_step": diverged_lin,
            "diverged_quad_step": quad["diverged_step"],
            "quad_trained": width <= cfg.quad_max_width,
            "curves": curves,
            "weight_layers": models.weight_labels(paths),
            "theta_train": theta_train,  # (N, N) analytic NTK (per output; the full kernel is this (x) I_k)
            "theta_eigenvalues": lam_theta,  # (N,)
            "k0_eigenvalues": lam_k0,  # (S, N k) of the full empirical NTK at init
            "k0_train": kernels.traced_kernel(k0_flat, k),  # (S, N, N) the same, traced over outputs
            "k_net_train": rec["k_net_train"],  # (S, T, P, P) traced empirical NTK on the first P inputs per checkpoint
            # (S, T, M[, k]); the t = infinity closed forms (S, 1, M[, k])
            "predictions_test": {k_: stored(once(k_, v[1])) for k_, v in preds.items()},
            "predictions_train": {k_: stored(once(k_, v[0])) for k_, v in preds.items()},  # (S, T, N[, k])
        }
        # the after kernel (studylib.afterkernel.compare_rows): per-seed scalars (S,) and the test outputs of
        # the kernel regression with K_t, (S, T, M[, k]), NaN at the checkpoints where K_t is not computed
        result |= after_scalars
        result["predictions_test"]["after"] = stored(after_pred)
    return result


#: run_width outputs that are the same for every seed (the rest have a leading seed axis).
SHARED_KEYS = ("width", "steps", "times", "gamma", "lr_rule", "centred",
               "learning_rate", "lr_critical_inf", "theta_lambda_min", "theta_lambda_max",
               "quad_trained", "weight_layers", "theta_eigenvalues", "theta_train")


def concat_seed_chunks(chunks: list[dict]) -> dict:
    """Join run_width results of consecutive seed chunks along the seed axis."""
    if len(chunks) == 1:
        return chunks[0]
    out = {}
    for k, v in chunks[0].items():
        if k in SHARED_KEYS:
            out[k] = v
        elif isinstance(v, dict):
            out[k] = {k2: np.concatenate([c[k][k2] for c in chunks]) for k2 in v}
        else:
            out[k] = np.concatenate([np.atleast_1d(c[k]) for c in chunks])
    return out


def memory_plan(cfg: CompareConfig, width: int, input_shape: tuple[int, ...], outputs: int = 1) -> dict:
    """Parameters P of the network for inputs of ``input_shape`` (N, ...) with ``outputs`` = k outputs,
    and the estimated device bytes: per seed (theta_0, theta_t, gradient and update temporaries,
    x2 for the linearized model in 'params' mode); once per seed chunk, one block of the empirical
    kernel (rows x k Jacobian rows or vjp copies of P numbers, x3 for temporaries:
    :func:`kernel_rows`); and the host bytes of the full kernels at init, (N k)^2 float64 per seed
    plus its eigendecomposition. Also the seed chunk that fits the device."""
    from studylib import devices, models

    n_params = models.count_params(models.build(cfg.model, width, out_dim=outputs), input_shape)
    item = 8 if cfg.dtype == "float64" else 4
    n = input_shape[0]
    per_seed = n_params * item * ((4 if cfg.lin_mode == "function" else 7) + 4 * (width <= cfg.quad_max_width))
    rows = kernel_rows(n_params, outputs, item, n)
    fixed = 3 * rows * outputs * n_params * item
    host = 3 * cfg.seeds * (n * outputs) ** 2 * 8
    return {"width": width, "params": n_params, "outputs": outputs, "input_shape": tuple(input_shape),
            "bytes_per_seed": per_seed, "fixed_bytes": fixed, "kernel_rows": rows, "host_bytes": host,
            "seeds_per_chunk": devices.seeds_per_chunk(per_seed, cfg.seeds, fixed_bytes=fixed),
            "fits": devices.fits(per_seed + fixed)}


def plan_line(cfg: CompareConfig, p: dict) -> str:
    """One width of :func:`memory_plan` in words (``--plan`` and the refusal of a width that does not fit)."""
    return (f"width {p['width']:>6}: {p['params']:>12,} parameters, {p['bytes_per_seed'] / 2**20:>8.1f} MiB per seed "
            f"(+{p['fixed_bytes'] / 2**20:.0f} MiB for kernel blocks of {p['kernel_rows']} inputs), "
            f"{p['seeds_per_chunk']} of {cfg.seeds} seeds at a time; host {p['host_bytes'] / 2**20:.0f} MiB")


def check_memory(cfg: CompareConfig, input_shape: tuple[int, ...], outputs: int) -> None:
    """One ConfigError line, before anything is allocated, for the first width whose single seed does not
    fit one device's usable memory (:func:`studylib.devices.check_fits`; ``--max-memory`` caps it)."""
    from studylib import devices

    for w in cfg.widths:
        p = memory_plan(cfg, w, input_shape, outputs)
        devices.check_fits(f"width {w}", p["bytes_per_seed"] + p["fixed_bytes"], " ".join(plan_line(cfg, p).split()))


#: Environment variable: 'off' turns off :data:`AHEAD` (each width then compiles on the main thread).
AHEAD_ENV = "NTK_STUDY_COMPILE_AHEAD"


class Ahead:
    """A width's start, done on a second thread while the previous width trains: theta_0 drawn, the
    kernels at init computed (:func:`kernels_at_init`), and the programs of its training
    (:func:`studylib.sgd.precompile_flagged`) and of its quadratic model
    (:func:`studylib.quad.precompile_quad`) compiled into the jit caches the main thread then calls. Nothing
    else changes: the same functions on the same inputs, the same compiled programs, so the same numbers
    bit for bit (a default run's summary.json compared before/after: docs/performance.md). Most of a
    first run's time is compiling a new program per width, and that is serial work the second core can
    take. Only FC nets with one output whose seeds fit one chunk, in 'function' mode (:func:`eligible`);
    anything else, or a job that failed, is computed on the main thread as before. Up to :meth:`workers`
    jobs at once (:data:`WORKERS`, or the number :data:`AHEAD_ENV` gives), on as many daemon threads, each
    a width further ahead (:meth:`lookahead`): XLA's CPU compile is partly serial (tracing, HLO passes) and
    the main thread mostly waits for the next width while the narrow widths start, so a second start at
    once can take what the first leaves of the cores. A width's quadratic model is trained ahead too
    (:meth:`quad_job`, two more threads), the widest first among the later widths (:meth:`longest_quad`)."""

    #: Widths started at once (threads) unless :data:`AHEAD_ENV` gives a number.
    WORKERS = 2

    def __init__(self) -> None:
        import threading

        self.jobs: list[tuple[tuple, Any]] = []  # ((cfg, width, data, seeds), Future)
        self.quads: list[tuple[tuple, Any]] = []  # the same keys, Futures of quad_job
        self.lock = threading.Lock()
        self.executor = None
        self.executor_workers = 0
        self.quad_executor = None
        self.generation = 0  # cancel_queued counts up: a quad_job still waiting for the analytic kernel stops

    @classmethod
    def workers(cls) -> int:
        """Threads starting widths ahead: 0 where :data:`AHEAD_ENV` is 'off' (or 0, false, no), the number
        it gives (a positive integer), else :data:`WORKERS`."""
        import os

        value = os.environ.get(AHEAD_ENV, "").strip().lower()
        if value in ("off", "0", "false", "no"):
            return 0
        return int(value) if value.isdigit() else cls.WORKERS

    def eligible(self, cfg: CompareConfig, width: int, data) -> bool:
        """Whether a width's start may run ahead (:class:`Ahead`)."""
        if self.workers() == 0:
            return False
        x, k = data.x_train, data.y_train.shape[1]
        if x.ndim != 2 or k != 1 or cfg.lin_mode != "function" or fast_net(cfg, width, x, k) is None:
            return False
        return memory_plan(cfg, width, x.shape, k)["seeds_per_chunk"] >= cfg.seeds

    def lookahead(self, cfg: CompareConfig, widths: list[int], data) -> list[int]:
        """``widths`` (the width the main thread runs now and the next one), extended by the widths that
        follow the last of them in ``cfg.widths`` until :meth:`workers` widths come after the first, while the
        parameters held ahead fit (:meth:`room`); with two or more threads, also :meth:`longest_quad` if it
        comes later (and fits)."""
        out = list(widths)
        if not out or out[-1] not in cfg.widths:
            return out
        for w in cfg.widths[cfg.widths.index(out[-1]) + 1:]:
            if len(out) > self.workers() or not self.room(cfg, [*out, w], data):
                break
            out.append(w)
        longest = self.longest_quad(cfg)
        if (self.workers() > 1 and longest is not None and longest not in out and out[0] in cfg.widths
                and cfg.widths.index(longest) > cfg.widths.index(out[0]) and self.room(cfg, [*out, longest], data)):
            out.append(longest)
        return out

    @staticmethod
    def longest_quad(cfg: CompareConfig) -> int | None:
        """The widest width with a quadratic model (``<= cfg.quad_max_width``), or None. Its quadratic model is
        the run's longest single-threaded job (width 256 of the default run: ~12 s, while the network trains
        in ~2 s): :meth:`lookahead` starts it early, so that it trains (:meth:`quad_job`) while the other
        widths start and train, instead of alone at the end with one core idle."""
        quads = [w for w in cfg.widths if w <= cfg.quad_max_width]
        return max(quads) if quads else None

    @staticmethod
    def room(cfg: CompareConfig, widths: list[int], data) -> bool:
        """Whether the first width's planned device memory (:func:`memory_plan`, all seeds) and the
        parameters theta_0 of the others (all seeds, held by their starts until the main thread takes them)
        fit :data:`studylib.devices.MEMORY_FRACTION` of one device's memory."""
        from studylib import devices

        x, k = data.x_train, data.y_train.shape[1]
        plans = [memory_plan(cfg, w, x.shape, k) for w in widths]
        item = 8 if cfg.dtype == "float64" else 4
        need = plans[0]["bytes_per_seed"] * cfg.seeds + plans[0]["fixed_bytes"]
        need += sum(p["params"] * item * cfg.seeds for p in plans[1:])
        return need <= devices.MEMORY_FRACTION * devices.memory_bytes()

    def submit(self, cfg: CompareConfig, widths: list[int], data, ctx: Context | None = None) -> None:
        """Queue the start of each of ``widths`` and of the widths :meth:`lookahead` adds (in order; all of
        ``cfg``'s seeds) unless queued already or not eligible; jobs of other widths still queued are
        cancelled (e.g. their cells were reused). With the run's ``ctx`` and a width-independent analytic
        kernel (:func:`shared_analytic`), a width with a quadratic model (``width <= cfg.quad_max_width``) also
        queues its training (:meth:`quad_job`, on two more threads, after the width's start)."""
        from concurrent.futures import ThreadPoolExecutor

        widths = self.lookahead(cfg, widths, data)
        keys = [(cfg, w, data, tuple(runner.seed_list(cfg))) for w in widths if self.eligible(cfg, w, data)]
        if keys:
            fast_measure(min(cfg.kernel_points, data.x_train.shape[0]))  # created here, not raced by two threads
        quads = ctx is not None and ctx.shared is not None and cfg.model.arch in WIDTH_FREE_KERNELS and \
            cfg.model.parameterization in ("ntk", "mup")  # shared_analytic gives every width's Theta
        with self.lock:
            for k_, fut in self.jobs + self.quads:
                if not any(self._same(k_, key) for key in keys):
                    fut.cancel()
            self.jobs = [(k_, f) for k_, f in self.jobs if not f.cancelled()]
            self.quads = [(k_, f) for k_, f in self.quads if not f.cancelled()]
            for key in keys:
                if any(self._same(k_, key) for k_, _ in self.jobs):
                    continue
                if self.executor is None or self.executor_workers != self.workers():
                    if self.executor is not None:  # the worker count changed: later jobs go to a new pool
                        self.executor.shutdown(wait=False)
                    self.executor_workers = self.workers()
                    self.executor = ThreadPoolExecutor(max_workers=self.executor_workers,
                                                       thread_name_prefix="compare-ahead")
                start = self.executor.submit(self._start, cfg, key[1], data, list(key[3]))
                self.jobs.append((key, start))
                if quads and key[1] <= cfg.quad_max_width:
                    if self.quad_executor is None:
                        self.quad_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="compare-quad")
                    self.quads.append((key, self.quad_executor.submit(
                        self.quad_job, cfg, key[1], data, list(key[3]), start, ctx, self.generation)))

    @staticmethod
    def _start(cfg: CompareConfig, width: int, data, seeds: list[int]) -> dict[str, Any]:
        """:func:`start_width`, recorded as a background job of the width while profiling
        (:func:`studylib.timing.job`)."""
        with timing.job("ahead", width):
            return start_width(cfg, width, data, seeds)

    @staticmethod
    def _same(a: tuple, b: tuple) -> bool:
        return a[0] == b[0] and a[1] == b[1] and a[2] is b[2] and a[3] == b[3]

    def cancel_queued(self) -> None:
        """Cancel the jobs not yet begun (a run that stops: Ctrl-C, an error); a running one finishes, but a
        :meth:`quad_job` still waiting for the analytic kernel stops."""
        with self.lock:
            for _, fut in self.jobs + self.quads:
                fut.cancel()
            self.jobs, self.quads = [], []
            self.generation += 1

    def quad_job(self, cfg: CompareConfig, width: int, data, seeds: list[int], start, ctx: Context,
                 generation: int) -> dict[str, Any]:
        """The quadratic model of one width trained ahead: once the width's ``start`` (a Future of
        :func:`start_width`) is done and the main thread has put the analytic kernel in ``ctx.shared``
        (:func:`shared_analytic`), its rate and checkpoints by :func:`width_schedule` -- the calls
        :func:`run_width` makes, on the same arrays -- and :func:`train_quadratic` with the start's compiled
        trainer, exactly as run_width would call it. Returns {'lr', 'steps', 'quad'}; run_width takes the
        result (:meth:`take_quad`) only if its own rate and steps are these. The quadratic model is the
        costliest part of the narrow widths (width 256 of the default run: ~12 s, 6-30x the network per
        step); trained here it overlaps the next widths' training instead of holding up the main thread."""
        import time

        import jax.numpy as jnp

        from studylib import centring, kernels

        with timing.job("quad_ahead", width):
            begun = start.result()
            while "analytic" not in ctx.shared:  # the main thread computes it for its first width
                if self.generation != generation:
                    raise RuntimeError("run stopped")
                time.sleep(0.02)
            dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
            x_train, y_train, x_test = (jnp.asarray(a, dtype) for a in (data.x_train, data.y_train, data.x_test))
            n, k = data.y_train.shape
            theta_train = shared_analytic(cfg, width, ctx)[0]
            lr_critical_inf = float(kernels.critical_learning_rate(theta_train, outputs=k))
            at_init = begun["at_init"]
            lr, steps = width_schedule(cfg, width, at_init["k0_flat"], lr_critical_inf, n * k)[3:]
            y64 = np.asarray(data.y_train, np.float64)
            targets = (jnp.asarray(centring.shifted_targets(y64, at_init["f0_train"]), dtype) if cfg.centred
                       else None)
            quad = train_quadratic(cfg, width, begun["net"].apply_fn, begun["p0"], x_train, y_train, x_test, lr=lr,
                                   steps=steps, targets=targets, trainer=begun["quad_trainer"])
            return {"lr": lr, "steps": steps, "quad": quad}

    def take_quad(self, cfg: CompareConfig, width: int, data, seeds: list[int], lr: float, steps
                  ) -> dict[str, np.ndarray] | None:
        """The quadratic model of this width trained by :meth:`quad_job` (waiting for it if it runs) when it
        trained at rate ``lr`` for ``steps``, else None (not queued, not begun: then cancelled, failed, or
        another schedule): the main thread trains it then."""
        key = (cfg, width, data, tuple(seeds))
        with self.lock:
            match = [f for k_, f in self.quads if self._same(k_, key)]
            self.quads = [(k_, f) for k_, f in self.quads if not self._same(k_, key)]
        if not match or match[0].cancel():
            return None
        try:
            res = match[0].result()
        except Exception:
            return None
        same = res["lr"] == lr and np.array_equal(res["steps"], steps)
        return res["quad"] if same else None

    def take(self, cfg: CompareConfig, width: int, data, seeds: list[int]) -> dict | None:
        """The finished start of this width (waiting for it if it runs), or None: not queued, not begun
        (then cancelled: the main thread does it now), or failed."""
        key = (cfg, width, data, tuple(seeds))
        with self.lock:
            match = [(k_, f) for k_, f in self.jobs if self._same(k_, key)]
            self.jobs = [(k_, f) for k_, f in self.jobs if not self._same(k_, key)]
        if not match:
            return None
        fut = match[0][1]
        if fut.cancel():
            return None
        try:
            return fut.result()
        except Exception:  # the main thread computes it instead (and meets the error there)
            return None


def start_width(cfg: CompareConfig, width: int, data, seeds: list[int]) -> dict[str, Any]:
    """What :class:`Ahead` does for one width, exactly as :func:`run_width` would: 'net', 'p0' (S seeds),
    'at_init' (:func:`kernels_at_init`) and 'quad_trainer' (None above ``cfg.quad_max_width``), with the
    training and quadratic-model programs compiled for the run's checkpoint count."""
    import jax
    import jax.numpy as jnp

    from studylib import centring, devices, models, quad, sgd, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    x_train, y_train, x_test = (jnp.asarray(a, dtype) for a in (data.x_train, data.y_train, data.x_test))
    n, k = data.y_train.shape
    net = models.build(cfg.model, width, out_dim=k)
    p0 = devices.shard_seeds(training.init_params(net.init_fn, seeds, x_train.shape, dtype=cfg.dtype), len(seeds))
    jax.block_until_ready(p0)
    n_params = sum(int(np.prod(a.shape[1:])) for a in jax.tree_util.tree_leaves(p0))
    mlp = fast_net(cfg, width, x_train, k)
    at_init = kernels_at_init(cfg, net, mlp, p0, x_train, x_test, k=k, n_params=n_params,
                              itemsize=8 if cfg.dtype == "float64" else 4)
    n_ck = len(training.checkpoint_steps(cfg.steps, cfg.n_checkpoints))  # learning_schedule keeps the count
    y64 = np.asarray(data.y_train, np.float64)
    targets = (jnp.asarray(centring.shifted_targets(y64, at_init["f0_train"]), dtype) if cfg.centred else None)
    sgd.precompile_flagged(cfg.model, width, p0, x_train, y_train if targets is None else targets, n_ck,  # as
                           x_test=x_test, measure=fast_measure(min(cfg.kernel_points, n)),  # fast_network_records
                           extra=sgd.traced_ntk_blocks)
    trainer = None
    if width <= cfg.quad_max_width:
        trainer = quad.make_quad_trainer(net.apply_fn)
        if targets is None:
            quad.precompile_quad(trainer, p0, x_train, y_train, x_test, n_ck)
        else:  # train_quadratic trains a centred run seed by seed
            quad.precompile_quad(trainer, jax.tree_util.tree_map(lambda a: a[:1], p0), x_train, targets[0], x_test,
                                 n_ck)
    return {"net": net, "p0": p0, "at_init": at_init, "quad_trainer": trainer}


#: The process's :class:`Ahead` (run_cell queues, run_width takes).
AHEAD = Ahead()


def run_cell(cfg: CompareConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    """One width: its seeds in chunks that fit the device memory (:func:`memory_plan`), joined."""
    w = cell.spec["width"]
    plan = memory_plan(cfg, w, ctx.dataset.x_train.shape, ctx.dataset.y_train.shape[1])
    seed_ids = runner.seed_list(cfg)
    chunk = plan["seeds_per_chunk"]
    if chunk < cfg.seeds:
        ctx.log(f"width {w}: {plan['params']:,} parameters, ~{plan['bytes_per_seed'] / 2**20:.0f} MiB per seed: "
                f"vmapping {chunk} seeds at a time")
    done = [0]  # seed-steps trained so far
    # The first report comes after compilation: the modelled set-up counts as done then.
    shape = ctx.dataset.x_train.shape
    spatial = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1  # image inputs: the conv net's cost model
    setup = 1.0 - training_seconds(cfg, w, shape[0], spatial=spatial) / cell.cost

    def chunk_progress(n_seeds: int) -> Callable[[int], None]:
        def update(k: int) -> None:
            done[0] += k * n_seeds
            progress(min(1.0, setup + (1.0 - setup) * done[0] / (cfg.steps * cfg.seeds)))
        return update

    chunks = [seed_ids[i:i + chunk] for i in range(0, cfg.seeds, chunk)]
    later = cfg.widths[cfg.widths.index(w) + 1:] if w in cfg.widths else []
    try:
        AHEAD.submit(cfg, [w, *later[:1]], ctx.dataset, ctx)  # this width's start (if not begun), the next one's
        with timing.phase("analytic", w):
            analytic = shared_analytic(cfg, w, ctx)
        lr = chunked_emp_rate(cfg, w, ctx.dataset, chunks) if cfg.lr_rule == "emp" and len(chunks) > 1 else None
        return concat_seed_chunks([run_width(cfg, w, ctx.dataset, seeds=ids, log=ctx.log,
                                             progress=chunk_progress(len(ids)), analytic=analytic, lr=lr)
                                   for ids in chunks])
    except BaseException:
        AHEAD.cancel_queued()
        raise


def chunked_emp_rate(cfg: CompareConfig, width: int, data, chunks: list[list[int]]) -> float:
    """The 'emp' rule's rate eta_0 of a width whose seeds run in chunks: lr_fraction x the smallest
    2Nk/lambda_max(K_0) over all its seeds (:func:`learning_schedule`), so that every chunk trains at the
    same rate for the same steps. Costs one extra kernel at init per seed (only when seeds are chunked)."""
    import jax.numpy as jnp

    from studylib import devices, kernels, models, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    x_train, x_test = jnp.asarray(data.x_train, dtype), jnp.asarray(data.x_test[:1], dtype)
    n, k = data.y_train.shape
    net = models.build(cfg.model, width, out_dim=k)
    mlp = fast_net(cfg, width, x_train, k)
    rates = []
    for ids in chunks:
        p0 = devices.shard_seeds(training.init_params(net.init_fn, ids, x_train.shape, dtype=cfg.dtype), len(ids))
        n_params = models.count_params(net, x_train.shape)
        k0 = kernels_at_init(cfg, net, mlp, p0, x_train, x_test, k=k, n_params=n_params,
                             itemsize=x_train.dtype.itemsize)
        rates.append(kernels.critical_rate(np.linalg.eigvalsh(k0["k0_flat"])[:, -1], n * k))
    return cfg.lr_fraction * float(np.min(np.concatenate(rates)))


#: Registered architectures whose analytic kernel under NTK parameterization does not depend on the width.
WIDTH_FREE_KERNELS = ("fc", "erf_fc", "res_fc", "cnn")


def shared_analytic(cfg: CompareConfig, width: int, ctx: Context) -> tuple[np.ndarray, np.ndarray] | None:
    """(Theta(X, X), Theta(x_test, X)) computed once per run and kept in ``ctx.shared`` where the analytic
    kernel is width independent (registered architectures, NTK parameterization: NT's ``kernel_fn`` is
    the same at every width; :mod:`studylib.mup`'s γ-model: that kernel / γ², γ of the width); None otherwise
    (each width computes its own)."""
    model = cfg.model
    if model.arch not in WIDTH_FREE_KERNELS or model.parameterization not in ("ntk", "mup") or ctx.shared is None:
        return None
    if "analytic" not in ctx.shared:
        import dataclasses

        import jax.numpy as jnp

        from studylib import models

        dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
        ntk = dataclasses.replace(model, parameterization="ntk", gamma0=1.0)
        net = models.build(ntk, width, out_dim=ctx.dataset.y_train.shape[1])
        ctx.shared["analytic"] = analytic_kernels(net.kernel_fn, jnp.asarray(ctx.dataset.x_train, dtype),
                                                  jnp.asarray(ctx.dataset.x_test, dtype))
    if not model.rich:
        return ctx.shared["analytic"]
    g2 = model.gamma(width) ** 2
    return tuple(k / g2 for k in ctx.shared["analytic"])


def notes(cfg: CompareConfig, cell: Cell, res: dict) -> list[str]:
    """Divergence notes of one width (the diverged values are kept as NaN)."""
    out = []
    for model in ("net", "lin", "quad"):
        for s, step in enumerate(np.atleast_1d(res[f"diverged_{model}_step"])):
            if step >= 0:
                out.append(f"warning: width {cell.spec['width']}, seed {cfg.first_seed + s}: {model} diverged "
                           f"(non-finite or exploding outputs) by step {step}; kept as NaN")
    return out


def prepare(cfg: CompareConfig, dataset, log) -> dict:
    """A dict the widths share (the analytic kernels, filled by the first width that needs them:
    :func:`shared_analytic`); but first, before anything is computed, check that the network takes
    the data's inputs, gives their k outputs and has weights whose change can be measured (one
    ConfigError line otherwise, naming what is unsupported)."""
    import jax

    from studylib import models

    net = models.build(cfg.model, cfg.widths[0], out_dim=dataset.y_train.shape[1], input_shape=dataset.x_train.shape)
    models.weight_paths(jax.eval_shape(lambda key: net.init_fn(key, dataset.x_train.shape)[1], jax.random.PRNGKey(0)))
    check_memory(cfg, dataset.x_train.shape, dataset.y_train.shape[1])
    return {}


def plan(cfg: CompareConfig) -> str:
    """Devices, parameters and memory of each width for the real input shape and output count (``--plan``)."""
    from studylib import data as D
    from studylib import devices

    dataset = D.load_for(cfg.data, cfg.model)
    shape, k = dataset.x_train.shape, dataset.y_train.shape[1]
    lines = [devices.plan_header(), f"data {cfg.data.name}: inputs {shape}, {k} output(s) per input, "
             f"{dataset.x_test.shape[0]} test inputs; full kernel at init ({shape[0] * k} x {shape[0] * k})"]
    for w in cfg.widths:
        p = memory_plan(cfg, w, shape, k)
        lines.append(plan_line(cfg, p))
        if not p["fits"]:
            lines.append(f"warning: width {w} needs more than the {devices.memory_bytes() / 2**30:.1f} GiB of "
                         f"{devices.memory_source()} for one seed: a run refuses it")
    return "\n".join(lines)
