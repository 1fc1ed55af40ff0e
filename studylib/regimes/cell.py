"""One cell of the regimes study: one setting at one width, all seeds trained and measured together
(JAX is imported inside the functions, so that importing this module stays cheap).

A cell trains the network by full-batch GD on L = 1/2 mean((f - y)^2) (NT's convention), jitted and
vmapped over seeds, and records at log-spaced checkpoints its outputs on the training inputs and
the test grid and its empirical NTK on the training inputs K_t. Its linearization
f(theta_0) + J_0 (theta - theta_0) is evaluated in function space (SCIENCE.md section 6: exact
discrete GD with K_0; ``tests/test_modes.py`` checks it against ``nt.linearize`` trained step by
step) and the infinite-width closed form (discrete GD with the analytic NTK from the network's own
f(theta_0)) at the same steps. Residuals are projected on the eigenvectors of the analytic NTK
Theta and of each seed's K_0 (:mod:`studylib.modes`) and compared with the per-mode prediction
(1 - lr lambda_i / N)^t; kernel motion ||K_t - K_0||_2 is set against the spectrum of K_0 (the
laziness ratios of :mod:`studylib.modes`).

FC nets (plain, float64) train by the hand-written trainer (:func:`studylib.sgd.full_batch_checkpoints`,
tested equal to jax.grad of the stax net), the rest by the generic one. Every cell also predicts its
gap from theta_0 alone (:mod:`studylib.perturb`: first order in the network's curvature around the
linearized trajectory, on the training inputs and ``predict_rows`` test inputs of the interpolation
range) and, for ReLU nets, counts the gates that flip during training (:mod:`studylib.gates`).

Centred runs (``cfg.centred``, :mod:`studylib.centring`; Lee et al. 2020, arXiv 2007.15801): every option of
one network (plain, out_scale, float64) trains and measures alpha (f(theta) - f(theta_0)) by the generic
trainer (:func:`variant_model`; its gradients and kernel are the uncentred model's), so the outputs at
step 0 are exactly 0 and the linearization and the infinite-width closed form, which start from the
network's own step-0 outputs (:func:`linear_predictions`), are the closed forms with f_0 = 0; the
first-order prediction takes the expansion with f_0 = 0 (:func:`studylib.perturb.scaled`). Option
'centred' is then the plain model, and 'doubled' is unchanged (it is 0 at init by construction).

muP and the richness knob (``parameterization`` 'mup', or 'ntk' at ``model.gamma0`` != 1: :mod:`studylib.mup`'s
gamma-model, NT's 'ntk' net with its output / gamma, gamma = gamma0 sqrt(width / base_width) under 'mup'):
``models.build`` gives that net, whose analytic kernel is the NTK net's / gamma^2, so the rate rule
lr_fraction x 2N/lambda_max(Theta) gives the rate x gamma^2, and the closed forms, modes, critical rates
and kernel motion are all those of the gamma-model's own kernels (eta Theta, hence every step count, is the
NTK net's); ``--centre auto`` centres its cells (:meth:`RegimesConfig.centred_for`), which then train by the
generic trainer like every centred cell (so that 'mup' at its base width is the centred 'ntk' cell bit for
bit); uncentred ('--centre off') they train by the hand-written trainer, whose net (:func:`studylib.sgd.mlp`)
divides the readout by gamma. Each cell records ``gamma``; absolute time in the NTK net's units is
learning_rate / gamma^2 x t.

Model options: centred (f - f(theta_0)), doubled ((f(theta_a) - f(theta_b))/sqrt 2 with
theta_a = theta_b at init, so f(theta_0) = 0 and the NTK at init is that of the plain net), a
smaller output scale (alpha f, with the rate scaled by 1/alpha^2 through the analytic kernel, so
that lr stays the same fraction of the critical rate), and float64.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from studylib import data as D
from studylib import modes as MO
from studylib.models import ModelConfig
from studylib.regimes.config import RegimesConfig, compile_key, is_1d, setting_label, setting_of, setup_seconds
from studylib.runner import Cell, Context


def variant_model(apply_fn, option: str, scale: float, centred: bool = False):
    """``model_fn(params, aux, x)`` and ``make_params(p0) -> (params, aux)`` for an option.

    plain / out_scale / float64: scale * f(params); centred: scale * (f(params) - f(aux)),
    aux = theta_0; doubled: scale * (f(pa) - f(pb)) / sqrt 2 with params = (pa, pb) = (theta_0, theta_0).
    ``centred`` (a centred run): every option of one network takes the centred form.
    """
    if option == "centred" or (centred and option != "doubled"):
        return (lambda p, aux, x: scale * (apply_fn(p, x) - apply_fn(aux, x))), (lambda p0: (p0, p0))
    if option == "doubled":
        r = 1.0 / math.sqrt(2.0)

        def doubled(p, aux, x):
            return (scale * r) * (apply_fn(p[0], x) - apply_fn(p[1], x))

        return doubled, (lambda p0: ((p0, p0), p0))
    return (lambda p, aux, x: scale * apply_fn(p, x)), (lambda p0: (p0, p0))


#: Options trained by the hand-written FC trainer (:func:`studylib.sgd.full_batch_checkpoints`) when the
#: architecture has one; the others (two networks, an offset, an output scale) by the generic trainer.
FAST_OPTIONS = ("plain", "float64")


def gated_measure(net, dense, dense0, x, x_test) -> dict:
    """:func:`studylib.sgd.default_measure` and the gate flips per hidden layer on the training inputs."""
    from studylib import gates, sgd

    return sgd.default_measure(net, dense, dense0, x, x_test) | {"gate_flips": gates.gate_flips(net, dense0, dense, x)}


class Compiled:
    """Jitted trainer, measurements and first-order prediction for one (model, width, option, dtype);
    reused across learning rates and input scales (those are traced arguments).

    FC nets (arch fc / erf_fc) with options plain / float64 train by the hand-written trainer
    (``fast``); the rest by ``training.make_trainer`` (jax.grad of the stax net). Gate flips are
    recorded for ReLU FC nets of one network (every option but doubled)."""

    def __init__(self, model_cfg: ModelConfig, width: int, option: str, scale: float, implementation: int,
                 input_shape: tuple[int, ...] = (1,), out_dim: int = 1, centred: bool = False):
        import jax

        from studylib import gates, kernels, models, perturb, sgd, training
        from studylib.nt import nt

        self.net = models.build(model_cfg, width, out_dim=out_dim)
        self.model_cfg, self.width, self.out_dim = model_cfg, width, out_dim
        self.model_fn, self.make_params = variant_model(self.net.apply_fn, option, scale, centred)
        centre_exp = option == "centred" or centred  # the expansion of alpha (f - f(theta_0)): f_0 = 0
        # the hand-written FC trainer and expansion: flat inputs (N, d), one output
        flat_scalar = len(input_shape) == 1 and out_dim == 1
        self.mlp = sgd.fast_mlp(model_cfg, width, in_dim=int(input_shape[0])) if flat_scalar else None
        self.fast = self.mlp is not None and option in FAST_OPTIONS and not centred
        self.gated = self.mlp is not None and self.mlp.activation == "relu" and option != "doubled"
        #: whether the first-order prediction (studylib.perturb: scalar outputs) can run
        self.predicts = out_dim == 1
        self.train = None if self.fast else training.make_trainer(self.model_fn)
        model_fn, mlp, gated, k = self.model_fn, self.mlp, self.gated, out_dim

        def ntk_of(f):
            """NT's empirical NTK of f: traced (N1, N2) for one output, else the full one made flat
            (N1 k, N2 k), row n k + i (:func:`studylib.kernels.flat_kernel`): the output blocks of a
            finite net are not independent."""
            raw = nt.empirical_ntk_fn(f, trace_axes=(-1,) if k == 1 else (), vmap_axes=0,
                                      implementation=implementation)
            return raw if k == 1 else (lambda a, b, p: kernels.flat_kernel(raw(a, b, p)))

        def one(p, aux, x_train, x_test):
            f = lambda q, x: model_fn(q, aux, x)  # noqa: E731
            ntk = ntk_of(f)
            out = {"f_train": f(p, x_train).reshape(-1), "f_test": f(p, x_test).reshape(-1),
                   "k_train": ntk(x_train, None, p)}
            if gated:  # one network: aux = theta_0
                out["gate_flips"] = gates.gate_flips(mlp, sgd.dense_params(aux), sgd.dense_params(p), x_train)
            return out

        def expand(p0, aux, x_train, x_eval):
            if mlp is not None and option != "doubled":  # alpha f or alpha (f - f(theta_0)) of one FC net
                exp = perturb.expansion_mlp(mlp, sgd.dense_params(aux), x_train, x_eval)
                return perturb.scaled(exp, scale, centred=centre_exp)
            return perturb.expansion(lambda q, x: model_fn(q, aux, x)[:, 0], p0, x_train, x_eval)

        self.expand = jax.jit(jax.vmap(expand, in_axes=(0, 0, None, None))) if self.predicts else None

        def init_kernels(p, aux, x_train, x_test):
            if self.fast:  # per-sample features: no parameter copies (NT's kernels hold N of them)
                return sgd.ntk(mlp, sgd.dense_params(p), x_test, x_train)
            return ntk_of(lambda q, x: model_fn(q, aux, x))(x_test, x_train, p)

        self.measure = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))
        self.k_test = jax.jit(jax.vmap(init_kernels, in_axes=(0, 0, None, None)))


#: Said once per run when the data have several outputs.
NO_PREDICTION_NOTE = ("note: {k} outputs per example: the first-order gap prediction (studylib.perturb) takes "
                      "scalar outputs, so gap_predicted, gap_predicted_train and gap_ratio are NaN in this run")


def prepare(cfg: RegimesConfig, dataset, log) -> dict:
    """The study's shared object: a cache of :class:`Compiled` by :func:`compile_key`, so that cells
    differing only in learning rate or input scale compile once. Says once when the first-order
    prediction cannot run (k > 1 outputs)."""
    k = int(dataset.y_train.shape[1])
    if k > 1:
        log(NO_PREDICTION_NOTE.format(k=k))
    return {}


def compiled_for(cfg: RegimesConfig, spec: dict[str, Any], cache: dict) -> tuple[Compiled, bool]:
    """The cell's jitted functions from ``cache`` (built when missing) and whether they were built."""
    key = compile_key(spec)
    fresh = key not in cache
    if fresh:
        model_cfg = dataclasses.replace(cfg.model, depth=spec["depth"], parameterization=spec["parameterization"],
                                        activation=spec["activation"])
        shape = D.input_shape(cfg.data, model_cfg)[1:]
        cache[key] = Compiled(model_cfg, spec["width"], spec["option"], spec["output_scale"], cfg.ntk_implementation,
                              input_shape=shape, out_dim=D.n_outputs(cfg.data), centred=spec.get("centred", False))
    return cache[key], fresh


def cell_data(cfg: RegimesConfig, x_range: float):
    """The dataset of a setting, arranged for the model (:func:`studylib.data.load_for`): for 1-D grids
    the base data with inputs on [-x_range, x_range] and the test grid on twice that range; other
    data as configured (their x_ranges axis holds only the base value, :class:`RegimesConfig`)."""
    if not is_1d(cfg.data):
        return D.load_for(cfg.data, cfg.model)
    return D.load_for(dataclasses.replace(cfg.data, train_range=float(x_range), test_range=2.0 * float(x_range)),
                      cfg.model)


def train_and_record(comp: Compiled, params0, aux, x_train, y_train, x_test, lr: float, steps,
                     progress: Callable[[int], Any]) -> dict[str, np.ndarray]:
    """Train all seeds by GD and record outputs f_train (S, T, N), f_test (S, T, M), the NTK k_train
    (S, T, N, N) and, for gated nets, gate_flips (S, T, L) at every checkpoint: float64 arrays.
    ``progress(t)`` after each checkpoint t > 0 (once at the end for the fast trainer, whose whole
    run is one jitted call)."""
    import jax
    import jax.numpy as jnp

    if comp.fast:
        from studylib import sgd

        measure = gated_measure if comp.gated else sgd.default_measure
        rec = sgd.full_batch_checkpoints(comp.model_cfg, comp.width, params0, x_train, y_train, lr, steps,
                                         x_test=x_test, measure=measure)
        progress(int(steps[-1]))
        return {k: np.asarray(v, np.float64) for k, v in rec.items()}
    params = jax.tree_util.tree_map(jnp.copy, params0)
    lr_arr = jnp.asarray(lr, x_train.dtype)
    records = []
    prev = 0
    for t in steps:
        if t > prev:
            params = comp.train(params, aux, x_train, y_train, lr_arr, int(t - prev))
        records.append(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                              comp.measure(params, aux, x_train, x_test)))
        if t > 0:
            progress(int(t))
        prev = t
    return {k: np.stack([r[k] for r in records], axis=1) for k in records[0]}


def clean_kernels(k_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kernels with non-finite ones zeroed and symmetrised, (S, T) finite flags): a diverged net
    has non-finite kernels; float32 kernels are symmetric only to rounding."""
    k_finite = np.isfinite(k_t).all(axis=(-2, -1))
    k_t = np.where(k_finite[..., None, None], k_t, 0.0)
    return 0.5 * (k_t + np.swapaxes(k_t, -1, -2)), k_finite


def linear_predictions(k0, k0_test, theta, theta_test, y64, f_net_train, f_net_test, *, lr: float, steps
                       ) -> dict[str, np.ndarray]:
    """Per seed, from the network's own f(theta_0): the linearization (exact discrete GD with K_0)
    and the infinite-width closed form (discrete GD with Theta), (S, T, N|M) each."""
    from studylib import closed_form

    out: dict[str, list] = {"lin_train": [], "lin_test": [], "inf_train": [], "inf_test": []}
    for s in range(len(k0)):
        f0_tr, f0_te = f_net_train[s, 0, :, None], f_net_test[s, 0, :, None]
        for name, k_tt, k_te in (("lin", k0[s], k0_test[s]), ("inf", theta, theta_test)):
            tr, te = closed_form.discrete(k_tt, k_te, y64[:, None], f0_tr, f0_te, learning_rate=lr, steps=steps)
            out[f"{name}_train"].append(tr[..., 0])
            out[f"{name}_test"].append(te[..., 0])
    return {k: np.stack(v) for k, v in out.items()}


def mode_analysis(r_net, r_lin, v_theta, lam_theta, v_k0, lam_k0, *, lr: float, n: int, steps, tol: float,
                  floor: float) -> dict[str, Any]:
    """Residual coefficients in the analytic ('inf') and each seed's K_0 ('emp') basis, the
    constant-kernel predictions from the network's initial coefficients, and departure steps."""
    c = {
        "net_inf": MO.project(r_net, v_theta), "lin_inf": MO.project(r_lin, v_theta),
        "net_emp": MO.project(r_net, v_k0[:, None]), "lin_emp": MO.project(r_lin, v_k0[:, None]),
    }
    pred_inf = MO.predicted_coefficients(c["net_inf"][:, 0], lam_theta, lr, n, steps)  # (S, T, N)
    pred_emp = MO.predicted_coefficients(c["net_emp"][:, 0], lam_k0, lr, n, steps)
    dep = {name: MO.departure_step(c[name], pred_inf if name.endswith("inf") else pred_emp, steps,
                                   tol=tol, floor=floor) for name in c}
    return {"mode_coeffs": c, "mode_pred_inf": pred_inf, "mode_pred_emp": pred_emp, "departure": dep}


def gap_curves(f_net_train, f_net_test, f_lin_train, f_lin_test, f_inf_test, y64, interp, bad
               ) -> dict[str, np.ndarray]:
    """Network-vs-linearization and -closed-form gaps and the losses, (S, T); the gaps relative to
    RMS(y) and NaN for seeds where either model diverged (``bad``)."""
    y_scale = float(np.sqrt(np.mean(y64**2)))
    with np.errstate(all="ignore"):
        curves = {
            "gap": np.sqrt(np.mean((f_net_test[..., interp] - f_lin_test[..., interp]) ** 2, axis=-1)) / y_scale,
            "gap_train": np.sqrt(np.mean((f_net_train - f_lin_train) ** 2, axis=-1)) / y_scale,
            "rmse_net_vs_lin": np.sqrt(np.mean((f_net_test - f_lin_test) ** 2, axis=-1)),
            "gap_net_vs_closed_inf": np.sqrt(np.mean((f_net_test[..., interp] - f_inf_test[..., interp]) ** 2,
                                                     axis=-1)) / y_scale,
            "loss_net": 0.5 * np.mean((f_net_train - y64) ** 2, axis=-1),
            "loss_lin": 0.5 * np.mean((f_lin_train - y64) ** 2, axis=-1),
        }
    for name in ("gap", "gap_train", "rmse_net_vs_lin", "gap_net_vs_closed_inf", "loss_lin"):
        curves[name][bad] = np.nan
    return curves


def kernel_curves(k_t, k_finite, k0) -> dict[str, np.ndarray]:
    """Kernel motion ||K_t - K_0||_2, the laziness ratio, the relative Frobenius change and the
    extreme eigenvalues of K_t, (S, T); NaN where K_t is not finite."""
    motion = np.where(k_finite, MO.kernel_motion(k_t, k0[:, None]), np.nan)
    lam_t = np.where(k_finite[..., None], np.linalg.eigvalsh(k_t), np.nan)
    with np.errstate(all="ignore"):
        return {
            "kernel_change_op": motion, "laziness_ratio": MO.laziness_of_motion(motion, k0),
            "rel_ntk_change": np.where(k_finite, np.linalg.norm(k_t - k0[:, None], axis=(-2, -1)), np.nan)
            / np.linalg.norm(k0, axis=(-2, -1))[:, None],
            "lambda_min_t": lam_t[..., 0], "lambda_max_t": lam_t[..., -1],
        }


def predicted_gap(comp: Compiled, params0, aux, x_train, x_eval, y_train, *, lr: float, steps, y_scale: float
                  ) -> dict[str, np.ndarray]:
    """The first-order prediction (:mod:`studylib.perturb`) of every seed from theta_0: delta f at the
    checkpoints (S, T, N + P), rows = training inputs then ``x_eval``; its RMS over the evaluated test
    inputs (over the training inputs when there are none) and over the training inputs, relative to
    RMS(y): the predicted gap, (S, T) each."""
    from studylib import perturb

    if not comp.predicts:  # k > 1 outputs: perturb takes scalar outputs (said once, in prepare)
        shape = (jax_leading(params0), len(steps))
        nan = np.full(shape, np.nan)
        return {"delta": np.full((*shape, x_train.shape[0]), np.nan), "gap_predicted": nan,
                "gap_predicted_train": nan.copy()}
    exp = comp.expand(params0, aux, x_train, x_eval)
    delta, _ = perturb.predict(exp, np.asarray(y_train)[:, 0], learning_rate=lr, checkpoints=steps)
    n = x_train.shape[0]
    test = delta[..., n:] if delta.shape[-1] > n else delta[..., :n]
    return {"delta": delta, "gap_predicted": perturb.rms(test) / y_scale,
            "gap_predicted_train": perturb.rms(delta[..., :n]) / y_scale}


def jax_leading(tree) -> int:
    """The leading (seed) axis length of a parameter pytree."""
    import jax

    return int(jax.tree_util.tree_leaves(tree)[0].shape[0])


def prediction_curves(pred: dict, flips: np.ndarray | None, diverged_lin: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted gaps (S, T) (NaN where the linearization diverges: so does the prediction) and the gate
    flips: per layer (S, T, L) and their mean over layers (S, T); NaN for nets without ReLU gates."""
    out = {k: np.where(diverged_lin[:, None], np.nan, pred[k]) for k in ("gap_predicted", "gap_predicted_train")}
    shape = pred["gap_predicted"].shape
    layers = np.full((*shape, 1), np.nan) if flips is None else np.asarray(flips, np.float64)
    return out | {"gate_flips_layers": layers, "gate_flips": layers.mean(axis=-1)}


def final_values(curves, k0, lam_k0, *, lr: float, steps, lr_critical_emp) -> dict[str, np.ndarray]:
    """Per-seed values at the last checkpoint (sup over checkpoints for the kernel's motion; the gate
    flips also at the early checkpoint, :func:`studylib.gates.early_checkpoint`)."""
    from studylib import gates

    motion = curves["kernel_change_op"]
    early = gates.early_checkpoint(steps)
    with np.errstate(all="ignore"):
        return {
            "gap_predicted": curves["gap_predicted"][:, -1],
            "gap_predicted_train": curves["gap_predicted_train"][:, -1],
            "gap_ratio": curves["gap"][:, -1] / curves["gap_predicted"][:, -1],
            "gate_flips": curves["gate_flips"][:, -1], "gate_flips_early": curves["gate_flips"][:, early],
            "gap": curves["gap"][:, -1], "gap_train": curves["gap_train"][:, -1],
            "rmse_net_vs_lin": curves["rmse_net_vs_lin"][:, -1],
            "gap_net_vs_closed_inf": curves["gap_net_vs_closed_inf"][:, -1],
            "loss_net": curves["loss_net"][:, -1], "loss_lin": curves["loss_lin"][:, -1],
            "laziness_ratio": np.nanmax(curves["laziness_ratio"], axis=1),
            "laziness_ratio_horizon": MO.horizon_laziness_of_motion(motion, k0, learning_rate=lr, steps=steps[-1]),
            "kernel_change_op": np.nanmax(motion, axis=1),
            "rel_ntk_change": np.nanmax(curves["rel_ntk_change"], axis=1),
            "k0_lambda_min": lam_k0[:, -1], "k0_lambda_max": lam_k0[:, 0],
            "lr_over_critical_emp": lr / lr_critical_emp,
        }


def analytic_kernels(comp: Compiled, data, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The analytic NTK Theta(X, X) and Theta(x_test, X) of the cell's model (times scale^2: the
    output scale multiplies the kernel by alpha^2), float64."""
    from studylib import kernels

    theta = scale**2 * np.asarray(kernels.analytic(comp.net.kernel_fn, data.x_train, None), np.float64)
    theta_test = scale**2 * np.asarray(kernels.analytic(comp.net.kernel_fn, data.x_test, data.x_train), np.float64)
    return theta, theta_test


def initial_state(comp: Compiled, cfg: RegimesConfig, x_shape, dtype):
    """(params0, aux) of every seed for the cell's option, cast to ``dtype``."""
    import jax

    from studylib import runner, training

    p0 = training.init_params(comp.net.init_fn, runner.seed_list(cfg), x_shape)
    p0 = jax.tree_util.tree_map(lambda a: a.astype(dtype), p0)
    return comp.make_params(p0)


def run_cell(cfg: RegimesConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    """Train and measure all seeds of one setting at one width; per-seed arrays (S, ...)."""
    import jax.numpy as jnp

    from studylib import kernels, training

    spec = cell.spec
    comp, fresh = compiled_for(cfg, spec, ctx.shared)
    first = fresh and len(ctx.shared) == 1  # the process's first cell also pays JAX's warm-up
    setup = min(setup_seconds(spec, compiles=fresh, first=first) / cell.cost, 1.0)  # done at the first report
    dtype = jnp.float64 if spec["dtype"] == "float64" else jnp.float32
    scale = spec["output_scale"]
    data = cell_data(cfg, spec["x_range"])
    x_train = jnp.asarray(data.x_train, dtype)
    y_train = jnp.asarray(data.y_train, dtype)
    x_test = jnp.asarray(data.x_test, dtype)
    k_out = int(data.y_train.shape[1])
    n = x_train.shape[0] * k_out  # outputs are flat (N k,), row n k + i; the loss is a mean over all of them
    y64 = np.asarray(data.y_train, np.float64).reshape(-1)
    interp = np.repeat(np.asarray(data.regions["interp"], bool), k_out)  # per flat test output
    steps = training.checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    params0, aux = initial_state(comp, cfg, x_train.shape, dtype)

    theta, theta_test = analytic_kernels(comp, data, scale)
    if k_out > 1:  # the analytic kernel of k outputs is Theta (x) I_k: flat (N k, N k), row n k + i
        theta, theta_test = np.kron(theta, np.eye(k_out)), np.kron(theta_test, np.eye(k_out))
    lam_theta, v_theta = MO.eig_modes(theta)
    lr_critical_inf = float(kernels.critical_rate(lam_theta[0], n))
    lr = spec["lr_fraction"] * lr_critical_inf
    k0_test = np.asarray(comp.k_test(params0, aux, x_train, x_test), np.float64)  # (S, M, N)

    t_start = time.perf_counter()
    rec = train_and_record(comp, params0, aux, x_train, y_train, x_test, lr, steps,
                           lambda t: progress(setup + (1.0 - setup) * t / cfg.steps))
    t_trained = time.perf_counter()
    rows = D.prediction_rows(data.regions["interp"], cfg.predict_rows)
    pred = predicted_gap(comp, params0, aux, x_train, x_test[rows], y_train, lr=lr, steps=steps,
                         y_scale=float(np.sqrt(np.mean(y64**2))))
    seconds = {"train": t_trained - t_start, "predict": time.perf_counter() - t_trained}
    f_net_train, f_net_test = rec["f_train"], rec["f_test"]  # (S, T, N|M)
    k_t, k_finite = clean_kernels(rec["k_train"])  # (S, T, N, N), (S, T)
    k0 = k_t[:, 0]
    lam_k0, v_k0 = MO.eig_modes(k0)  # (S, N), (S, N, N)
    lr_critical_emp = kernels.critical_rate(lam_k0[:, 0], n)

    lin = linear_predictions(k0, k0_test, theta, theta_test, y64, f_net_train, f_net_test, lr=lr, steps=steps)
    diverged_net = ~np.isfinite(f_net_train).all(axis=(1, 2)) | ~k_finite.all(axis=1)
    diverged_lin = lr > lr_critical_emp  # (1 - lr lambda_max/N) < -1: the linear model's fastest mode grows
    modes = mode_analysis(f_net_train - y64, lin["lin_train"] - y64, v_theta, lam_theta, v_k0, lam_k0, lr=lr, n=n,
                          steps=steps, tol=cfg.departure_tol, floor=cfg.departure_floor)
    curves = gap_curves(f_net_train, f_net_test, lin["lin_train"], lin["lin_test"], lin["inf_test"], y64,
                        interp, diverged_net | diverged_lin)
    curves |= kernel_curves(k_t, k_finite, k0)
    curves |= prediction_curves(pred, rec.get("gate_flips"), diverged_lin)
    return {
        "width": spec["width"], "centred": bool(spec.get("centred", False)), "dtype": spec["dtype"],
        "gamma": comp.model_cfg.gamma(spec["width"]),  # 1 but for studylib.mup's gamma-model
        "output_scale": scale, "steps": steps,
        "learning_rate": lr, "lr_critical_inf": lr_critical_inf, "y_scale": float(np.sqrt(np.mean(y64**2))),
        "diverged_net": diverged_net, "diverged_lin": diverged_lin,
        "theta_lambda": lam_theta, "k0_lambda": lam_k0,
        "finals": final_values(curves, k0, lam_k0, lr=lr, steps=steps, lr_critical_emp=lr_critical_emp),
        "seconds_train": seconds["train"], "seconds_predict": seconds["predict"], "predict_rows": rows,
        "curves": curves, **modes,
        "mode_laziness": MO.mode_laziness_of_motion(curves["kernel_change_op"], k0),  # (S, N)
        # the test inputs of a 1-D grid; for other data the index of each test point (outputs are flat)
        "x_test": data.x_test[:, 0] if is_1d(cfg.data) else np.arange(len(data.x_test), dtype=np.float64),
        "outputs": k_out,
        "pred_test": {"net": f_net_test, "lin": lin["lin_test"], "closed_inf": lin["inf_test"]},
    }


def notes(cfg: RegimesConfig, cell: Cell, res: dict) -> list[str]:
    """A divergence note per cell with diverged seeds (their gap is kept as NaN)."""
    if not (np.any(res["diverged_net"]) or np.any(res["diverged_lin"])):
        return []
    return [f"note: width {cell.spec['width']}, {setting_label(setting_of(cell.spec))}: diverged seeds: net "
            f"{np.flatnonzero(res['diverged_net']).tolist()}, linearization "
            f"{np.flatnonzero(res['diverged_lin']).tolist()} (lr above 2N/lambda_max(K_0)); their gap is NaN"]
