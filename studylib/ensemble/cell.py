"""One cell of the ensemble study: ``members`` networks of one width trained in every mode, and the
GP side computed once before the cells (:func:`prepare`). JAX is imported inside the functions, so
that importing this module stays cheap.

For each width, the networks (NTK parameterization) are trained by full-batch GD on
L = 1/2 mean((f - y)^2) (NT's convention; time = lr * steps), vmapped over the members, in two
modes: ``ntk`` (every layer trained) and ``readout`` (only the last Dense layer trained: the hidden
layers are passed as fixed data, so their gradients are never formed).

With k outputs per input (e.g. one-hot digits) the network has out_dim = k and the loss is over the
N k outputs; the infinite-width GP has the same kernel for every output and none between them, so
its moments are computed per output column (mean) and once (covariance). Outputs and GP means are
flattened point-major, (..., X k) with index x k + j, so that every statistic treats the (test
point, output) pairs as its points; the GP's per-point std is repeated k times to match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from studylib import metrics as Mx
from studylib import runner
from studylib.ensemble.config import MODES, SETUP_SECONDS, EnsembleConfig, step_seconds
from studylib.ensemble.summary import unstable_members
from studylib.metrics import DIVERGENCE_SCALE  # the divergence rule of every study
from studylib.runner import Cell, Context

# --------------------------------------------------------------------------- the GP side (once)


def analytic_kernels(cfg: EnsembleConfig, data) -> dict[str, Any]:
    """Float64 analytic kernels of the (width-independent) NTK-parameterized family: per ``get``
    the train Gram ``dd`` and test-train ``td``, the NNGP test Gram ``tt``, and the jitted
    ``kernel_fn`` (op-by-op evaluation of the deep kernel recursion is slow)."""
    import jax
    import jax.numpy as jnp

    from studylib import models

    kernel_fn = jax.jit(models.build(cfg.model, cfg.widths[0], out_dim=data.y_train.shape[1]).kernel_fn,
                        static_argnums=(2,))
    x_train = jnp.asarray(data.x_train, jnp.float64)
    x_test = jnp.asarray(data.x_test, jnp.float64)
    k = {get: {"dd": np.asarray(kernel_fn(x_train, None, get), np.float64),
               "td": np.asarray(kernel_fn(x_test, x_train, get), np.float64)} for get in ("ntk", "nngp")}
    k_tt = np.asarray(kernel_fn(x_test, None, "nngp"), np.float64)
    return {"kernel_fn": kernel_fn, "x_train": x_train, "x_test": x_test, "tt": k_tt, **k}


def mode_lr(cfg: EnsembleConfig, mode: str, critical: float) -> float:
    """The learning rate of ``mode`` given the critical rate 2N/lambda_max of its analytic kernel."""
    if mode == "ntk":
        return cfg.lr if cfg.lr is not None else cfg.lr_fraction * critical
    return cfg.readout_lr_fraction * critical


def gp_of_mode(k: dict, y: np.ndarray, get: str, *, lr: float, steps: np.ndarray) -> dict[str, Any]:
    """The GP of one trained kernel ``get`` for targets ``y`` (N, k): NT's gradient flow and the exact
    discrete-GD moments on the test inputs (means (T, X k) flattened point-major, covariances (T, X, X),
    the same for every output), and the flow GP mean's training loss per step (over the N k outputs).

    The mean is the prediction from f_0 = 0 (the prior mean; Lee et al. 2019 eq. 14), all k columns at
    once on L = 1/2 mean over the N k outputs (NT's ``gradient_descent_mse`` for the flow, the exact
    discrete closed form for GD). The covariance does not depend on y: one column's GP, with rate
    lr / k on its own N outputs (the same factor exp(-lr Θ t / (N k)); NT normalises by y_train.size)."""
    import jax.numpy as jnp

    from studylib.closed_form import discrete, flow, gp_moments, nt_gp

    theta, nngp = k[get], k["nngp"]
    n_steps, n_out = len(steps), y.shape[1]
    zero_train, zero_test = np.zeros_like(y), np.zeros((theta["td"].shape[0], n_out))
    flow_train, flow_test = flow(theta["dd"], theta["td"], y, zero_train, zero_test, learning_rate=lr, steps=steps)
    _, disc_test = discrete(theta["dd"], theta["td"], y, zero_train, zero_test, learning_rate=lr, steps=steps)
    _, cov_flow = nt_gp(k["kernel_fn"], k["x_train"], jnp.asarray(y[:, :1]), k["x_test"], get=get,
                        learning_rate=lr / n_out, steps=steps)
    _, cov_disc = gp_moments(theta["dd"], theta["td"], nngp["dd"], nngp["td"], k["tt"], y[:, 0],
                             learning_rate=lr / n_out, steps=steps, discrete=True)
    flat = lambda f: np.asarray(f, np.float64).reshape(n_steps, -1)  # noqa: E731  (T, X, k) -> (T, X k)
    return {"flow": (flat(flow_test), cov_flow), "discrete": (flat(disc_test), cov_disc),
            "train_loss": 0.5 * np.mean((flat(flow_train) - y.reshape(-1)) ** 2, axis=-1)}


def gp_all(cfg: EnsembleConfig, data, steps: np.ndarray) -> dict[str, Any]:
    """GP moments of every mode (NT flow and NumPy discrete), learning rates and kernel spectra."""
    from studylib import kernels

    k = analytic_kernels(cfg, data)
    y = np.asarray(data.y_train, np.float64)
    out: dict[str, Any] = {"steps": steps, "lr": {}, "lr_critical": {}, "lambda": {}, "train_loss": {}}
    for mode in cfg.modes:
        get = MODES[mode]
        crit = float(kernels.critical_learning_rate(k[get]["dd"], outputs=y.shape[1]))  # 2 N k / lambda_max
        lr = mode_lr(cfg, mode, crit)
        out["lr"][mode], out["lr_critical"][mode] = lr, crit
        out["lambda"][mode] = np.linalg.eigvalsh(k[get]["dd"])
        gp = gp_of_mode(k, y, get, lr=lr, steps=steps)
        out[mode] = {"flow": gp["flow"], "discrete": gp["discrete"]}
        out["train_loss"][mode] = gp["train_loss"]
    return out


def prepare(cfg: EnsembleConfig, dataset, log) -> dict[str, Any]:
    """The work done once before the cells: a width that cannot fit is refused (:func:`check_memory`),
    then the checkpoint steps and :func:`gp_all` (float64)."""
    from studylib import training

    check_memory(cfg, dataset.x_train.shape, dataset.y_train.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):  # above the critical rate the discrete GP overflows
        gp = gp_all(cfg, dataset, training.checkpoint_steps(cfg.steps, cfg.n_checkpoints))
    for mode in cfg.modes:
        if gp["lr"][mode] > gp["lr_critical"][mode]:
            log(f"warning: {mode}: lr {gp['lr'][mode]:.3g} is above the critical rate 2Nk/lambda_max = "
                f"{gp['lr_critical'][mode]:.3g} of the analytic kernel: gradient descent diverges (the discrete GP "
                "is non-finite; diverged members are named per width and left out of the statistics)")
    return gp


# --------------------------------------------------------------------------- the networks


def readout_model(apply_fn):
    """``model_fn(readout_params, all_params, x)``: the network with its last (Dense) layer's params
    replaced by the trained ones; the hidden layers are ``aux``, so their gradients are never taken."""
    return lambda pr, p_all, x: apply_fn([*list(p_all)[:-1], pr], x)


def member_plan(cfg: EnsembleConfig, width: int, input_shape: tuple[int, ...], out_dim: int = 1) -> dict[str, int]:
    """Parameters per network, estimated bytes per member (parameters x ~5 buffers: theta_0, theta_t,
    gradient, update temporaries) and the members vmapped at once: ``cfg.chunk`` when set, else as many
    as fit half of the devices' memory. ``input_shape``: the training inputs' shape (N, ...), from the
    dataset itself; ``out_dim``: its targets per example."""
    from studylib import devices, models

    n_params = models.count_params(models.build(cfg.model, width, out_dim=out_dim), tuple(input_shape))
    per_member = 5 * n_params * (8 if cfg.dtype == "float64" else 4)
    chunk = cfg.chunk or devices.seeds_per_chunk(per_member, cfg.members)
    return {"params": n_params, "bytes_per_member": per_member, "members_per_chunk": min(chunk, cfg.members),
            "fits": devices.fits(per_member)}


def plan_line(cfg: EnsembleConfig, width: int, p: dict) -> str:
    """One width of :func:`member_plan` in words (``--plan`` and the refusal of a width that does not fit)."""
    return (f"width {width:>6}: {p['params']:>12,} parameters, {p['bytes_per_member'] / 2**20:>8.1f} MiB per "
            f"member, {p['members_per_chunk']} of {cfg.members} members at a time")


def check_memory(cfg: EnsembleConfig, input_shape: tuple[int, ...], out_dim: int) -> None:
    """One ConfigError line, before anything is allocated, for the first width whose single member does not
    fit one device's usable memory (:func:`studylib.devices.check_fits`; ``--max-memory`` caps it)."""
    from studylib import devices

    for w in cfg.widths:
        p = member_plan(cfg, w, input_shape, out_dim)
        devices.check_fits(f"width {w}", p["bytes_per_member"], " ".join(plan_line(cfg, w, p).split()))


def member_chunk(cfg: EnsembleConfig, width: int, input_shape: tuple[int, ...], out_dim: int = 1) -> int:
    """Members vmapped at once (:func:`member_plan`)."""
    return member_plan(cfg, width, input_shape, out_dim)["members_per_chunk"]


def network_fns(net, x_train) -> dict[str, dict[str, Callable]]:
    """Per mode, the jitted member-vmapped ``train(p, aux, x, y, lr, n)``, ``apply(p, aux, x)`` and
    ``gram(p, aux)`` (the mode's trained kernel on the training inputs, per output: the NTK traced over
    the k outputs, (1/k) sum_i K_ii; the readout Gram of output 0, which is every output's). In 'ntk'
    mode ``p`` is the whole network and ``aux`` unused; in 'readout' mode ``p`` is the last layer and
    ``aux`` the network."""
    import jax
    import jax.numpy as jnp

    from studylib import kernels, training

    ro_fn = readout_model(net.apply_fn)
    ntk_fn = kernels.empirical_ntk_fn(net.apply_fn)

    def readout_gram(pr, p_all):
        jac = jax.jacrev(lambda q: ro_fn(q, p_all, x_train)[:, 0])(pr)
        j = jnp.concatenate([a.reshape(x_train.shape[0], -1) for a in jax.tree_util.tree_leaves(jac)], axis=1)
        return j @ j.T

    return {
        "ntk": {"train": training.make_trainer(training.network_model(net.apply_fn)),
                "apply": jax.jit(jax.vmap(lambda p, aux, x: net.apply_fn(p, x), in_axes=(0, 0, None))),
                "gram": jax.jit(jax.vmap(lambda p, aux: ntk_fn(x_train, None, p)))},
        "readout": {"train": training.make_trainer(ro_fn),
                    "apply": jax.jit(jax.vmap(ro_fn, in_axes=(0, 0, None))),
                    "gram": jax.jit(jax.vmap(readout_gram))},
    }


def empty_outputs(cfg: EnsembleConfig, n_steps: int, n_train: int, n_test: int, n_out: int = 1
                  ) -> dict[str, dict[str, np.ndarray]]:
    """NaN-filled per-mode result arrays of one width (filled chunk by chunk); outputs flattened
    point-major: test (T, members, n_test n_out), train (T, members, n_train n_out)."""
    m = cfg.members
    return {mode: {"test": np.full((n_steps, m, n_test * n_out), np.nan),
                   "train": np.full((n_steps, m, n_train * n_out), np.nan),
                   "lambda_init": np.full((m, n_train), np.nan), "lambda_final": np.full((m, n_train), np.nan),
                   "kernel_change": np.full(m, np.nan)} for mode in cfg.modes}


def start_params(mode: str, p0, n_members: int, dtype):
    """Trained parameters and ``aux`` of ``mode`` from the initial parameters ``p0`` (copies: the
    trainer donates its input buffer)."""
    import jax
    import jax.numpy as jnp

    if mode == "ntk":
        return jax.tree_util.tree_map(jnp.copy, p0), jnp.zeros(n_members, dtype)
    return jax.tree_util.tree_map(jnp.copy, p0[-1]), p0


def train_chunk(fns: dict[str, Callable], p, aux, xs, lr, steps: np.ndarray, out: dict[str, np.ndarray], idx: slice,
                *, measure_kernels: bool, final_kernel: bool, report: Callable[[int], Any]) -> None:
    """Train one chunk of members in one mode through the checkpoint ``steps``, writing its test and
    train outputs (and kernel spectra) into ``out`` at member slice ``idx``; ``report(k)`` after each
    checkpoint with the k steps just trained."""
    x_train, y_train, x_test = xs
    if measure_kernels:
        gram0 = np.asarray(fns["gram"](p, aux), np.float64)
        out["lambda_init"][idx] = eigvalsh_finite(gram0)
    prev = 0
    for i, t in enumerate(steps):
        if t > prev:
            p = fns["train"](p, aux, x_train, y_train, lr, int(t - prev))
        f_test, f_train = fns["apply"](p, aux, x_test), fns["apply"](p, aux, x_train)  # (members, X, k)
        out["test"][i, idx] = np.asarray(f_test, np.float64).reshape(f_test.shape[0], -1)
        out["train"][i, idx] = np.asarray(f_train, np.float64).reshape(f_train.shape[0], -1)
        report(int(t - prev))
        prev = t
    if measure_kernels and final_kernel:
        gram_t = np.asarray(fns["gram"](p, aux), np.float64)
        out["lambda_final"][idx] = eigvalsh_finite(gram_t)
        with np.errstate(invalid="ignore", over="ignore"):
            out["kernel_change"][idx] = Mx.rel_change(gram_t, gram0, axis=(1, 2))


def eigvalsh_finite(grams: np.ndarray) -> np.ndarray:
    """Eigenvalues (members, N) of symmetric matrices (members, N, N); NaN rows for members whose matrix is
    not finite (a diverged network's kernel: LAPACK cannot decompose it)."""
    out = np.full(grams.shape[:-1], np.nan)
    ok = np.isfinite(grams).all(axis=(-2, -1))
    if ok.any():
        out[ok] = np.linalg.eigvalsh(grams[ok])
    return out


def first_diverged(train_out: np.ndarray, y_train: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(members,) the first checkpoint step at which a member's training outputs (T, members, N k) are
    non-finite or beyond :data:`DIVERGENCE_SCALE` x (max |y| + 1) from the targets (compare's rule), -1 for
    members that never diverged."""
    with np.errstate(invalid="ignore"):
        far = np.abs(train_out - np.asarray(y_train).reshape(1, 1, -1)).max(axis=-1) > DIVERGENCE_SCALE * (
            np.abs(y_train).max() + 1.0)
    bad = far | ~np.isfinite(train_out).all(axis=-1)  # (T, members)
    first = np.argmax(bad, axis=0)
    return np.where(bad.any(axis=0), np.asarray(steps)[first], -1)


def train_width(cfg: EnsembleConfig, width: int, data, *, lrs: dict[str, float], steps: np.ndarray,
                progress: Callable[[float], Any] | None = None, measure_kernels: bool = True
                ) -> dict[str, dict[str, np.ndarray]]:
    """Train ``cfg.members`` networks at ``width`` in every mode.

    Returns per mode: ``test`` (T, members, X k) and ``train`` (T, members, N k) outputs (k targets per
    example, flattened point-major);
    with ``measure_kernels``, the eigenvalues (members, N) of each member's own trained
    kernel on the training inputs at init, ``lambda_init`` (empirical NTK; for readout,
    the readout Gram, which stays constant), and for 'ntk' also at the last step,
    ``lambda_final``, and the relative change ``kernel_change`` = ||K_T - K_0||_F / ||K_0||_F.
    ``progress(fraction)``: the fraction of this width's training done so far (steps x members,
    weighted by each mode's modelled :func:`~studylib.ensemble.config.step_seconds`).
    """
    import jax
    import jax.numpy as jnp

    from studylib import devices, models, training

    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    xs = (jnp.asarray(data.x_train, dtype), jnp.asarray(data.y_train, dtype), jnp.asarray(data.x_test, dtype))
    seeds = runner.seed_list(cfg)
    n_out = data.y_train.shape[1]
    chunk = member_chunk(cfg, width, data.x_train.shape, n_out)
    net = models.build(cfg.model, width, out_dim=n_out, input_shape=data.x_train.shape)
    fns = network_fns(net, xs[0])
    out = empty_outputs(cfg, len(steps), xs[0].shape[0], xs[2].shape[0], n_out)
    weights = {m: step_seconds(m, width) for m in cfg.modes}
    total = sum(weights.values()) * cfg.steps * cfg.members
    done = [0.0]
    for lo in range(0, cfg.members, chunk):
        idx = slice(lo, min(lo + chunk, cfg.members))
        n = idx.stop - idx.start
        # Drawn in JAX's current default dtype (float64: the study runs in 64-bit mode), then cast.
        p0 = training.init_params(net.init_fn, seeds[idx], xs[0].shape)
        p0 = devices.shard_seeds(jax.tree_util.tree_map(lambda a: a.astype(dtype), p0), n)
        for mode in cfg.modes:
            def report(k: int, w=weights[mode] * n) -> None:
                done[0] += k * w
                if progress is not None:
                    progress(done[0] / total)

            p, aux = start_params(mode, p0, n, dtype)
            train_chunk(fns[mode], p, aux, xs, jnp.asarray(lrs[mode], dtype), steps, out[mode], idx,
                        measure_kernels=measure_kernels, final_kernel=mode == "ntk", report=report)
    return out


# --------------------------------------------------------------------------- the face


def run_cell(cfg: EnsembleConfig, cell: Cell, ctx: Context, progress: Callable[[float], Any]) -> dict[str, Any]:
    """One width: every mode's networks, and which members are unstable (:func:`unstable_members`)."""
    w = cell.spec["width"]
    gp = ctx.shared
    plan_w = member_plan(cfg, w, ctx.dataset.x_train.shape, ctx.dataset.y_train.shape[1])
    if plan_w["members_per_chunk"] < cfg.members:
        ctx.log(f"width {w}: {plan_w['params']:,} parameters, ~{plan_w['bytes_per_member'] / 2**20:.0f} MiB per "
                f"member: vmapping {plan_w['members_per_chunk']} members at a time")
    # Compilation and the kernels at init: counted as done at the first report.
    setup = min(sum(SETUP_SECONDS[m] for m in cfg.modes) / cell.cost, 0.9)
    res = train_width(cfg, w, ctx.dataset, lrs=gp["lr"], steps=gp["steps"],
                      progress=lambda frac: progress(setup + (1.0 - setup) * frac))
    for mode in cfg.modes:
        res[mode]["unstable"] = unstable_members(res[mode]["train"], ctx.dataset.y_train)
        res[mode]["diverged_step"] = first_diverged(res[mode]["train"], ctx.dataset.y_train, gp["steps"])
    return {"width": w, **res}


def notes(cfg: EnsembleConfig, cell: Cell, res: dict) -> list[str]:
    """Unstable members of one width, per mode (left out of the statistics)."""
    out = []
    for mode in cfg.modes:
        steps = np.asarray(res[mode].get("diverged_step", []))
        gone = np.flatnonzero(steps >= 0)
        if gone.size:
            out.append(f"warning: width {cell.spec['width']}, {mode}: {gone.size} of {cfg.members} members diverged "
                       f"(non-finite or exploding outputs), the first by step {int(steps[gone].min())} (members "
                       f"{gone.tolist()}); kept as NaN, left out of the statistics")
        bad = int(np.sum(res[mode]["unstable"])) - gone.size
        if bad:
            more = "more " if gone.size else ""
            out.append(f"note: width {cell.spec['width']}, {mode}: {bad} {more}of {cfg.members} members unstable "
                       "(final loss above the initial one, or non-finite); left out of the statistics")
    return out


def plan(cfg: EnsembleConfig) -> str:
    """Devices, parameters and members per vmapped batch of each width (``--plan``)."""
    from studylib import data as D
    from studylib import devices

    shape, n_out = D.input_shape(cfg.data, cfg.model), D.n_outputs(cfg.data)
    lines = [devices.plan_header()]
    for w in cfg.widths:
        p = member_plan(cfg, w, shape, n_out)
        lines.append(plan_line(cfg, w, p))
        if not p["fits"]:
            lines.append(f"warning: width {w} needs more than the {devices.memory_bytes() / 2**30:.1f} GiB of "
                         f"{devices.memory_source()} for one member: a run refuses it")
    return "\n".join(lines)
