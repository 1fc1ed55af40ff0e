"""Benchmark: the study's SGD step against this machine's floor and a seed-style loop, in one run.

What is timed (all float32, the seed's FC net: depth 5, ReLU, standard parameterization,
N = 10 points x = linspace(-5, 5, 10)):

* ``floor``: the width-``floor_width`` SGD step as in-place BLAS calls through SciPy's
  wrappers (batch 1: gemv forward, gemv backward, ger rank-1 update in place; batch > 1:
  gemm forward/backward and gemm with beta=1 into the weights) -- no allocation of weight
  sized arrays, so it shows what the cache and the cores allow; and matmul GFLOP/s.
* ``bounds``: no SGD step of the width-``floor_width`` net can be faster than reading its
  weights twice (forward and backward products; timed through BLAS) or than its 6 B n^2
  flops per hidden layer at the peak matmul rate (:func:`machine_bounds`);
* ``profile``: the big products of the study's width-``floor_width`` step, each timed alone
  (:func:`step_profile`), against the whole step;
* ``step``: the study's training step (:mod:`studylib.sgd`; network and function-space
  linearized model together, after compilation), per step, for each width and batch size,
  with the method 'auto' picks and, at widths >= 256, also the other one; ``lin_step``: the
  linearized model alone. Compile time separately.
* ``record``: one record interval of the dynamics study (``record_every`` epochs plus the
  metrics: NTK Gram, losses, parameter norms); projects the full ``seed`` preset of
  ``study.dynamics`` (3 widths x 3 batch sizes x 20000 epochs, one seed).
* ``ntk``: empirical NTK at (x0, x0) and on the 10 x 10 training Gram: NT's implementations
  1 and 2 (``nt.empirical_ntk_fn``) and the study's per-layer formula.
* ``seed_style``: the seed's loop on the same model and data -- Python loop over steps, a
  jitted ``value_and_grad``, parameters updated op by op with ``tree_map`` outside jit.
* ``help``: wall time of ``python -m study.compare --help``.
* ``gd``: one full-batch GD step of compare's net (depth 5, ReLU, NTK parameterization, W_std sqrt 2,
  b_std 0.1, N = 10) at each of ``gd_widths``: the generic trainer (``training.make_trainer``, jax.grad
  of the stax net) against the hand-written one (``sgd.full_batch_checkpoints``), after compilation,
  compile time separately (:func:`full_batch_steps`).
* ``cache``: JAX's persistent compilation cache (``jax_compilation_cache_dir``) against the per-width
  overhead: a fresh process compiling and running one step of both trainers at ``cache_width``, without
  the cache, with an empty cache (writing it) and with the filled cache (:func:`compile_cache`).

Times are medians over ``repeats`` repetitions of a timed block; other processes on the
machine change them (the JSON records the load average before and after).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from studylib.config import ConfigError, check_int, check_int_list, set_frozen
from studylib.flags import option


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What the benchmark times (fields with a help text have a flag of ``python -m study.bench``)."""

    widths: tuple[int, ...] = option((10, 100, 1000, 4096), "widths for the step timings")
    batch_sizes: tuple[int, ...] = option((1, 5, 10), "batch sizes, each dividing n_train")
    floor_width: int = option(1000, "width of the BLAS floor, the machine bound and the step profile")
    ntk_widths: tuple[int, ...] = option((10, 100, 1000), "widths for the empirical NTK timings")
    seed_style_widths: tuple[int, ...] = option((10, 100, 1000), "widths for the seed-style loop")
    seed_style_steps: int = option(300, "steps of the seed-style loop per timing (a tenth above width 1000)")
    #: Target milliseconds per timed block (the number of steps adapts to it).
    target_ms: int = 300
    repeats: int = option(3, "repetitions per timing, median reported")
    projection_widths: tuple[int, ...] = (10, 100, 1000)
    projection_epochs: int = 20000
    record_every: int = 5
    depth: int = 5
    n_train: int = 10
    help_check: bool = True
    gd_widths: tuple[int, ...] = option((256, 1024, 4096), "widths for the full-batch GD step, generic vs fast")
    cache_width: int = option(256, "width of the persistent compilation cache check (0: skip it)")

    def __post_init__(self):
        for name in ("widths", "batch_sizes", "ntk_widths", "seed_style_widths", "projection_widths", "gd_widths"):
            set_frozen(self, name, check_int_list(name, getattr(self, name)))
        for name in ("floor_width", "seed_style_steps", "target_ms", "repeats", "projection_epochs",
                     "record_every", "depth", "n_train"):
            set_frozen(self, name, check_int(name, getattr(self, name)))
        for b in self.batch_sizes:
            if self.n_train % b:
                raise ConfigError(f"batch_sizes: each must divide n_train={self.n_train}, got {b}")


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Seconds: for tests.
    "tiny": {"widths": (8,), "batch_sizes": (1,), "floor_width": 32, "ntk_widths": (8,),
             "seed_style_widths": (8,), "seed_style_steps": 5, "target_ms": 10, "repeats": 1,
             "projection_widths": (8,), "projection_epochs": 20, "depth": 2, "help_check": False,
             "gd_widths": (8,), "cache_width": 8},
}


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ------------------------------------------------------------------------------------- floor

def blas_floor(width: int, batch: int, depth: int, *, target_ms: int, repeats: int, update: bool = True) -> float:
    """Seconds per SGD step of the depth-``depth`` net's (depth-1) square hidden layers as
    in-place SciPy BLAS calls (the input and readout layers are negligible at large width).

    With ``update=False`` only the forward and backward products: the cost of reading every
    weight matrix twice, which any SGD step pays (each step applies W and W^T to new vectors)."""
    from scipy.linalg import blas

    rng = np.random.default_rng(0)
    n_sq = depth - 1
    ws = [np.asfortranarray((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
          for _ in range(n_sq)]
    assert all(w.dtype == np.float32 and w.flags.f_contiguous for w in ws)  # else BLAS copies every call
    acts = [np.asfortranarray(rng.standard_normal((width, batch)).astype(np.float32)) for _ in range(n_sq + 1)]
    lr = np.float32(1e-6)

    def step():
        for l in range(n_sq):
            if batch == 1:
                acts[l + 1][:, 0] = blas.sgemv(1.0, ws[l], acts[l][:, 0], trans=1)
            else:
                acts[l + 1][:] = blas.sgemm(1.0, ws[l], acts[l], trans_a=1)
        d = acts[-1]
        for l in reversed(range(n_sq)):
            if batch == 1:
                dn = blas.sgemv(1.0, ws[l], d[:, 0])[:, None]
                if update:
                    blas.sger(-lr, acts[l][:, 0], d[:, 0], a=ws[l], overwrite_a=1)
            else:
                dn = blas.sgemm(1.0, ws[l], d)
                if update:
                    blas.sgemm(-lr, acts[l], d, beta=1.0, c=ws[l], trans_b=1, overwrite_c=1)
            d = dn

    step()
    t1 = _median_time(step, 3)
    k = max(3, int(target_ms / 1000 / max(t1, 1e-6)))
    return _median_time(lambda: [step() for _ in range(k)], repeats) / k


def blas_floor_best(width: int, batch: int, depth: int, *, target_ms: int, repeats: int,
                    update: bool = True) -> dict[str, float]:
    """:func:`blas_floor` with OpenBLAS on 1 thread and on its default thread count, each in a
    fresh process (the thread count is fixed at import); the floor is the faster of the two."""
    import json

    out = {}
    for threads in ("1", None):
        env = dict(os.environ)
        env.pop("OPENBLAS_NUM_THREADS", None)
        if threads is not None:
            env["OPENBLAS_NUM_THREADS"] = threads
        code = ("import json; from studylib.bench import blas_floor; "
                f"print(json.dumps(blas_floor({width}, {batch}, {depth}, target_ms={target_ms}, repeats={repeats}, "
                f"update={update})))")
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[1])
        out[f"threads_{threads or 'default'}"] = json.loads(r.stdout.strip().splitlines()[-1])
    out["best"] = min(out.values())
    return out


def matmul_gflops(n: int = 1000, repeats: int = 3) -> dict[str, float]:
    """float32 n x n x n matmul rate: NumPy (OpenBLAS) and XLA."""
    import jax
    import jax.numpy as jnp

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    t_np = _median_time(lambda: [a @ a for _ in range(5)], repeats) / 5
    ja = jnp.asarray(a)
    f = jax.jit(lambda x: x @ x)
    f(ja).block_until_ready()
    t_jx = _median_time(lambda: [f(ja).block_until_ready() for _ in range(5)], repeats) / 5
    flops = 2.0 * n**3
    return {"numpy": flops / t_np / 1e9, "xla": flops / t_jx / 1e9}


# ------------------------------------------------------------------------------------ study

def auto_method(width: int) -> str:
    """The FC trainer's method that study.dynamics picks at ``width`` (its face's LOWRANK_FROM_WIDTH)."""
    from studylib import dynamics

    return "lowrank" if width >= dynamics.LOWRANK_FROM_WIDTH else "direct"


def seed_setup(width: int, depth: int, n: int, seed: int = 0):
    """The seed's net at ``width`` (standard parameterization, W_std 1, b_std 0), float32 stax
    parameters, its :class:`studylib.sgd.MLP`, and the seed's data x = linspace(-5, 5, n), x^3/20."""
    import jax
    import jax.numpy as jnp

    from studylib import models, sgd

    model_cfg = models.ModelConfig(depth=depth, W_std=1.0, b_std=0.0, parameterization="standard")  # the seed's
    net = models.build(model_cfg, width)
    _, params = net.init_fn(jax.random.PRNGKey(seed), (1, 1))
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    x = jnp.linspace(-5, 5, n, dtype=jnp.float32)[:, None]
    return net, params, sgd.mlp(model_cfg, width), x, x**3 / 20


def study_step(width: int, batch: int, method: str, cfg: BenchConfig) -> dict[str, float]:
    """Per-step seconds of the study's step (network + linearized model), and of the
    linearized model alone; compile seconds."""
    import jax
    import jax.numpy as jnp

    from studylib import sgd

    _, params, m, x, y = seed_setup(width, cfg.depth, cfg.n_train)
    plan = sgd.Plan(m, n_train=cfg.n_train, batch_size=batch, record_every=cfg.record_every, method=method)
    dense0 = sgd.dense_params(params)
    init = jax.jit(lambda d: sgd.measure_init(plan, d, x, x))(dense0)
    lr = jnp.float32(1e-4)  # small: the timing must not run into overflow

    def run(dense, c, batches):
        return sgd.train_steps(plan, dense, c, batches, x, y, lr, init["f0_train"], init["k0"])

    def run_lin(c, batches):
        step = sgd.lin_step_fn(plan, init["f0_train"], init["k0"], y, lr)
        return jax.lax.scan(lambda cc, idx: (step(cc, idx), None), c, batches)[0]

    k = plan.chunk
    out: dict[str, float] = {}
    t1 = 0.0
    for phase in ("probe", "timed"):  # probe one chunk, then size the timed block from it
        steps = k if phase == "probe" else max(k, round(cfg.target_ms / 1000 / max(t1, 1e-7) / k) * k)
        perms = sgd.epoch_permutations(jax.random.PRNGKey(1), -(-steps * batch // cfg.n_train) + 1, cfg.n_train)
        batches = perms.reshape(-1, batch)[:steps]
        dense = jax.tree_util.tree_map(jnp.copy, dense0)
        c = jnp.zeros(cfg.n_train, jnp.float32)
        t0 = time.perf_counter()
        comp = jax.jit(run, donate_argnums=(0, 1)).lower(dense, c, batches).compile()
        if phase == "probe":  # the timed block may reuse this compilation (same shapes)
            out["compile_s"] = time.perf_counter() - t0
        state = [dense, c]

        def go(comp=comp, batches=batches, state=state):
            state[0], state[1] = comp(state[0], state[1], batches)
            jax.block_until_ready(state[1])

        go()
        if phase == "probe":
            t1 = _median_time(go, 1) / steps
            continue
        out["step_s"] = _median_time(go, cfg.repeats) / steps
        c_l = jnp.zeros(cfg.n_train, jnp.float32)
        comp_l = jax.jit(run_lin).lower(c_l, batches).compile()
        out["lin_step_s"] = _median_time(
            lambda comp_l=comp_l, b=batches, c_l=c_l: jax.block_until_ready(comp_l(c_l, b)), cfg.repeats) / steps
        out["steps_timed"] = steps
    return out


def step_profile(width: int, batch: int, cfg: BenchConfig) -> dict[str, float]:
    """Seconds per step of the big products of the study's low-rank step at ``width``, each
    timed alone in a jitted ``lax.scan`` over the (depth-1) hidden matrices in turn, as the step
    runs them (:mod:`studylib.sgd`):

    * ``fwd_s``: forward ``h @ W`` (h: B x n);
    * ``bwd_s``: backward in the step's transposed layout, ``W @ d`` (d: n x B;
      :func:`studylib.sgd.backward_t`);
    * ``bwd_row_layout_s``: the same product written ``d @ W^T`` (d: B x n), for comparison:
      XLA's CPU matmul is slow with a transposed right operand when B > 1;
    * ``fold_s``: the end-of-chunk fold ``W + U V`` (rank K*B), divided by the K steps of a chunk.

    ``sum_s`` = fwd + bwd + fold. What the step spends beyond it is the low-rank corrections,
    the element-wise work, the cache misses of the full step and XLA's per-operation dispatch."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from studylib import sgd

    rng = np.random.default_rng(0)
    n_sq = cfg.depth - 1
    f32 = lambda a: jnp.asarray(a.astype(np.float32))  # noqa: E731
    ws = tuple(f32(rng.standard_normal((width, width)) / np.sqrt(width)) for _ in range(n_sq))
    k = sgd.chunk_steps(cfg.record_every * cfg.n_train // batch, batch)
    us = tuple(f32(1e-3 * rng.standard_normal((width, k * batch))) for _ in range(n_sq))
    vs = tuple(f32(1e-3 * rng.standard_normal((k * batch, width))) for _ in range(n_sq))
    h0 = f32(rng.standard_normal((batch, width)))

    def chain(prod, mats, steps):
        def body(h, _):
            for m in mats:
                h = prod(h, m)
            return h * lax.rsqrt(jnp.mean(h * h)), None  # keeps the values O(1) over many steps
        return jax.jit(lambda h, mats: lax.scan(body, h, None, length=steps)[0])

    def per_step(fn, args, steps):
        jax.block_until_ready(fn(*args))
        return _median_time(lambda: jax.block_until_ready(fn(*args)), cfg.repeats) / steps

    probe = per_step(chain(sgd.mm, ws, 4), (h0, ws), 4)
    steps = int(np.clip(cfg.target_ms / 1000 / max(probe, 1e-7), 4, 20000))
    out = {"fwd_s": per_step(chain(sgd.mm, ws, steps), (h0, ws), steps),
           "bwd_s": per_step(chain(lambda d, w: sgd.mm(w, d), ws, steps), (h0.T, ws), steps),  # d: n x B
           "bwd_row_layout_s": per_step(chain(sgd.mm_t, ws, steps), (h0, ws), steps),
           "chunk_steps": k}
    fold = jax.jit(lambda ws, us, vs: tuple(w + sgd.mm(u, v) for w, u, v in zip(ws, us, vs, strict=True)),
                   donate_argnums=(0,))
    state = [tuple(jnp.copy(w) for w in ws)]

    def go():
        state[0] = fold(state[0], us, vs)
        jax.block_until_ready(state[0])

    go()
    out["fold_s"] = _median_time(go, max(cfg.repeats, 5)) / k
    out["sum_s"] = out["fwd_s"] + out["bwd_s"] + out["fold_s"]
    return out


def record_time(width: int, batch: int, cfg: BenchConfig) -> dict[str, float]:
    """Seconds per record interval of study.dynamics (record_every epochs + metrics), one seed,
    and the compile time of its segment function."""
    import jax
    import jax.numpy as jnp

    from studylib import sgd

    _, params, m, x, y = seed_setup(width, cfg.depth, cfg.n_train)
    method = auto_method(width)
    plan = sgd.Plan(m, n_train=cfg.n_train, batch_size=batch, record_every=cfg.record_every, method=method)
    init_fn, seg, _ = sgd.compiled_runner(plan, vmapped=False)
    dense0 = sgd.dense_params(params)
    init = init_fn(dense0, x, x)
    steps_rec = plan.steps_per_record
    est = 3e-9 * width * width * batch + 2e-5 * batch + 5e-6  # a rough guess to size the block
    n_rec = int(np.clip(cfg.target_ms / 1000 / (est * steps_rec), 1, 200))
    perms = sgd.epoch_permutations(jax.random.PRNGKey(1), n_rec * cfg.record_every, cfg.n_train)
    perms = perms.reshape(n_rec, cfg.record_every, cfg.n_train)
    lr = jnp.float32(1e-4)
    state = [jax.tree_util.tree_map(jnp.copy, dense0), jnp.zeros(cfg.n_train, jnp.float32)]
    t0 = time.perf_counter()
    comp = seg.lower(state[0], state[1], dense0, perms, x, y, lr, init).compile()
    compile_s = time.perf_counter() - t0

    def go():
        state[0], state[1], r = comp(state[0], state[1], dense0, perms, x, y, lr, init)
        jax.block_until_ready(r)

    go()
    out = {"record_s": _median_time(go, cfg.repeats) / n_rec, "compile_s": compile_s, "method": method,
           "records_timed": n_rec}
    # The metrics of one record alone (NTK Gram, outputs, losses, norms), jitted as in the
    # segment, less the cost of dispatching a jitted call on the same arguments (which the
    # segment, one call for many records, does not pay; at small widths it is most of it).
    def per_call(fn):
        jax.block_until_ready(fn(state[0], state[1]))
        return _median_time(lambda: [jax.block_until_ready(fn(state[0], state[1])) for _ in range(20)],
                            cfg.repeats) / 20

    meas = per_call(jax.jit(lambda d, c: sgd.measure(plan, d, dense0, c, x, y, init)))
    dispatch = per_call(jax.jit(lambda d, c: c + 1))  # same arguments; returns nothing weight-sized
    out["metrics_s"] = max(meas - dispatch, 0.0)
    return out


def ntk_times(width: int, cfg: BenchConfig) -> dict[str, float]:
    """Seconds per empirical NTK evaluation: (x0, x0) and the N x N Gram, per implementation."""
    import jax

    from studylib import kernels, sgd

    net, params, m, x, _ = seed_setup(width, cfg.depth, cfg.n_train)
    dense = sgd.dense_params(params)
    x0 = x[:1]
    out: dict[str, float] = {}
    impls: dict[str, Any] = {f"nt_impl{i}": kernels.empirical_ntk_fn(net.apply_fn, implementation=i)
                             for i in kernels.NTK_IMPLEMENTATIONS}
    for name, fn in impls.items():
        for what, xa in (("x0", x0), ("gram", x)):
            f = jax.jit(lambda p, xa=xa, fn=fn: fn(xa, None, p))
            try:
                f(params).block_until_ready()
            except Exception as e:  # an implementation that fails is reported, not fatal
                out[f"{name}_{what}_error"] = f"{type(e).__name__}: {e}"[:200]
                continue
            out[f"{name}_{what}_s"] = _median_time(lambda f=f: [f(params).block_until_ready() for _ in range(5)],
                                                   cfg.repeats) / 5
    for what, xa in (("x0", x0), ("gram", x)):
        f = jax.jit(lambda d, xa=xa: sgd.ntk(m, d, xa))
        f(dense).block_until_ready()
        out[f"study_{what}_s"] = _median_time(lambda f=f: [f(dense).block_until_ready() for _ in range(5)],
                                              cfg.repeats) / 5
    return out


def seed_style(width: int, batch: int, cfg: BenchConfig) -> float:
    """Seconds per step of the seed's loop: Python loop, jitted value_and_grad, tree_map update
    outside jit (op by op), a fresh permutation each epoch."""
    import jax
    import jax.numpy as jnp

    net, params, _, x, y = seed_setup(width, cfg.depth, cfg.n_train)
    vg = jax.jit(jax.value_and_grad(lambda p, xb, yb: jnp.mean((net.apply_fn(p, xb) - yb) ** 2)))
    lr = 1e-4
    rng = np.random.default_rng(0)

    def loop(steps):
        nonlocal params
        done = 0
        while done < steps:
            for idx in rng.permutation(cfg.n_train).reshape(-1, batch):
                _, g = vg(params, x[idx], y[idx])
                params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, g)
                done += 1
                if done == steps:
                    break
        jax.block_until_ready(params)

    loop(3)
    steps = cfg.seed_style_steps if width <= 1000 else max(5, cfg.seed_style_steps // 10)
    return _median_time(lambda: loop(steps), 1) / steps


def compare_setup(width: int, n: int, seed: int = 0):
    """compare's base net at ``width`` (depth 5, ReLU, NTK parameterization, W_std sqrt 2, b_std 0.1:
    ``ModelConfig()``), float32 stax parameters with a seed axis of 1, and x = linspace(-5, 5, n), x^3/20."""
    import jax.numpy as jnp

    from studylib import models, training

    model_cfg = models.ModelConfig()
    net = models.build(model_cfg, width)
    p0 = training.init_params(net.init_fn, [seed], (n, 1), dtype="float32")
    x = jnp.linspace(-5, 5, n, dtype=jnp.float32)[:, None]
    return model_cfg, net, p0, x, x**3 / 20


def outputs_only(net, dense, dense0, x, x_test) -> dict:
    """A minimal record for :func:`full_batch_steps`: f on the training inputs."""
    from studylib import sgd

    return {"f_train": sgd.forward(net, dense, x)[0][:, 0]}


def full_batch_steps(width: int, cfg: BenchConfig) -> dict[str, float]:
    """Seconds per full-batch GD step of compare's net, generic (jax.grad of stax, ``training``) and
    fast (hand-written, ``sgd.full_batch_checkpoints``), one seed, float32, after compilation; and each
    one's first call (compilation + one block) minus the timed block's time."""
    import jax
    import jax.numpy as jnp

    from studylib import sgd, training

    model_cfg, net, p0, x, y = compare_setup(width, cfg.n_train)
    lr = jnp.float32(1e-3)
    train = training.make_trainer(training.network_model(net.apply_fn))

    def generic(steps):
        p = jax.tree_util.tree_map(jnp.copy, p0)
        jax.block_until_ready(train(p, p0, x, y, lr, steps))

    def fast(steps):
        sgd.full_batch_checkpoints(model_cfg, width, p0, x, y, lr, [0, steps], measure=outputs_only)

    out: dict[str, float] = {"width": width}
    for name, fn in (("generic", generic), ("fast", fast)):
        t0 = time.perf_counter()
        fn(1)
        first = time.perf_counter() - t0
        t1 = _median_time(lambda fn=fn: fn(1), 1)
        steps = max(2, int(cfg.target_ms / 1000 / max(t1, 1e-6)))
        total = _median_time(lambda fn=fn, steps=steps: fn(steps), cfg.repeats)
        out[f"{name}_step_s"] = max(total - t1, 1e-9) / (steps - 1)  # the fixed per-call part removed
        out[f"{name}_compile_s"] = max(first - t1, 0.0)
        out[f"{name}_steps_timed"] = steps
    out["speedup"] = out["generic_step_s"] / out["fast_step_s"]
    return out


_CACHE_SCRIPT = """
import sys, time, json
t0 = time.perf_counter()
import jax
if sys.argv[2] != "-":
    jax.config.update("jax_compilation_cache_dir", sys.argv[2])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
from studylib import bench
t1 = time.perf_counter()
import jax.numpy as jnp
from studylib import sgd, training
w = int(sys.argv[1])
model_cfg, net, p0, x, y = bench.compare_setup(w, 10)
train = training.make_trainer(training.network_model(net.apply_fn))
jax.block_until_ready(train(jax.tree_util.tree_map(jnp.copy, p0), p0, x, y, jnp.float32(1e-3), 1))
sgd.full_batch_checkpoints(model_cfg, w, p0, x, y, 1e-3, [0, 1], x_test=x)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_steps_s": t2 - t1}))
"""


def compile_cache(width: int) -> dict[str, Any]:
    """Whole-process seconds of compiling and running one step of both trainers (and the default
    records) at ``width``: without the persistent cache, with an empty cache directory (the run fills
    it) and with the filled cache. ``first_steps_s`` is the per-width overhead the cache can remove."""
    import json
    import tempfile

    out: dict[str, Any] = {"width": width}
    with tempfile.TemporaryDirectory() as cache:
        for mode, arg in (("no_cache", "-"), ("cold_cache", cache), ("warm_cache", cache)):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, str(width), arg], capture_output=True, text=True,
                               check=True, cwd=Path(__file__).resolve().parents[1])
            out[mode] = json.loads(r.stdout.strip().splitlines()[-1]) | {"process_s": time.perf_counter() - t}
        out["cache_files"] = sum(1 for _ in Path(cache).rglob("*") if _.is_file())
    out["saved_s"] = out["no_cache"]["first_steps_s"] - out["warm_cache"]["first_steps_s"]
    return out


def help_time() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "study.compare", "--help"], check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - t


def machine_bounds(cfg: BenchConfig, read2_s: float, peak_gflops: float) -> dict[str, Any]:
    """Lower bounds on the SGD step of the width-``floor_width`` net from two measured machine
    figures, per batch size B:

    * weight traffic: every SGD step applies each hidden matrix W to the batch and W^T to the
      backpropagated batch, so it reads all the weights at least twice; ``read2_s`` is that
      read (forward + backward BLAS products at B = 1, no update);
    * arithmetic: 6 B n^2 flops per hidden n x n layer (forward, backward, update) at the peak
      float32 matmul rate (the square n^3 matmul, the best case for the cores).

    ``step_s[B]`` = max of the two: no formulation of the step can go below it."""
    n, n_sq = cfg.floor_width, cfg.depth - 1
    flops = {b: 6.0 * b * n * n * n_sq for b in cfg.batch_sizes}
    flop_s = {b: f / (peak_gflops * 1e9) for b, f in flops.items()}
    return {"width": n, "weights_read_twice_s": read2_s, "peak_gflops": peak_gflops,
            "flops": {str(b): f for b, f in flops.items()}, "flop_s": {str(b): t for b, t in flop_s.items()},
            "step_s": {str(b): max(read2_s, t) for b, t in flop_s.items()}}


# --------------------------------------------------------------------------------------- run

def tasks(cfg: BenchConfig) -> list[tuple]:
    """Every measurement as (kind, *arguments), in the order they run."""
    return ([("floor", b) for b in cfg.batch_sizes] + [("read2",), ("gflops",)]
            + [("profile", b) for b in cfg.batch_sizes]
            + [("step", w, b) for w in cfg.widths for b in cfg.batch_sizes]
            + [("record", w, b) for w in cfg.projection_widths for b in cfg.batch_sizes]
            + [("ntk", w) for w in cfg.ntk_widths]
            + [("seed", w, b) for w in cfg.seed_style_widths for b in cfg.batch_sizes]
            + ([("help",)] if cfg.help_check else [])
            + [("gd", w) for w in cfg.gd_widths]
            + ([("cache",)] if cfg.cache_width > 0 else []))


def step_methods(width: int, batch: int, cfg: BenchConfig) -> dict[str, Any]:
    """:func:`study_step` with the method study.dynamics picks ('auto' names it) and, where that is
    lowrank, with direct too."""
    auto = auto_method(width)
    methods = [auto] + ([m for m in ("direct", "lowrank") if m != auto] if auto == "lowrank" else [])
    return {m: study_step(width, batch, m, cfg) for m in methods} | {"auto": auto}


def measure(task: tuple, cfg: BenchConfig) -> Any:
    """Run one task of :func:`tasks`."""
    kind, *args = task
    if kind == "floor":
        return blas_floor_best(cfg.floor_width, args[0], cfg.depth, target_ms=cfg.target_ms, repeats=cfg.repeats)
    if kind == "read2":
        return blas_floor_best(cfg.floor_width, 1, cfg.depth, target_ms=cfg.target_ms, repeats=cfg.repeats,
                               update=False)
    if kind == "gflops":
        return matmul_gflops(repeats=cfg.repeats)
    if kind == "help":
        return help_time()
    if kind == "gd":
        return full_batch_steps(args[0], cfg)
    if kind == "cache":
        return compile_cache(cfg.cache_width)
    fn = {"profile": lambda b: step_profile(cfg.floor_width, b, cfg), "step": step_methods, "record": record_time,
          "ntk": ntk_times, "seed": seed_style}[kind]
    return fn(*args) if kind == "profile" else fn(*args, cfg)


def step_rows(cfg: BenchConfig, steps: dict, floor: dict, seeds: dict, bounds: dict) -> list[dict]:
    """One row per (width, batch) of the step table: the auto method's times and their ratios to
    the floor, the bound, batch 1 and the seed-style loop."""
    rows = []
    for (w, b), st in steps.items():
        auto = st["auto"]
        row = {"width": w, "batch_size": b, "method": auto, "step_s": st[auto]["step_s"],
               "lin_step_s": st[auto]["lin_step_s"], "compile_s": st[auto]["compile_s"],
               "other_methods": {m: st[m]["step_s"] for m in st if m not in ("auto", auto)}}
        if w == cfg.floor_width and b in floor:
            row["ratio_to_floor"] = row["step_s"] / floor[b]
        if w == cfg.floor_width:
            row["ratio_to_bound"] = row["step_s"] / bounds["step_s"][str(b)]
        if (w, b) in seeds:
            row["seed_style_step_s"] = seeds[(w, b)]
            row["speedup_vs_seed_style"] = seeds[(w, b)] / row["step_s"]
            if w == cfg.floor_width:
                row["speedup_possible_vs_seed_style"] = seeds[(w, b)] / bounds["step_s"][str(b)]
        b1 = steps.get((w, 1))
        if b1 is not None:
            row["ratio_to_batch1"] = row["step_s"] / b1[b1["auto"]]["step_s"]
        rows.append(row)
    return rows


def profile_summary(cfg: BenchConfig, profiles: dict, step_of: dict) -> dict:
    """The step profiles at the floor width, each beside the whole step and what is left of it."""
    prof = {}
    for b, pr in profiles.items():
        pr = dict(pr)
        if (cfg.floor_width, b) in step_of:
            pr["step_s"] = step_of[(cfg.floor_width, b)]
            pr["rest_s"] = pr["step_s"] - pr["sum_s"]
        prof[str(b)] = pr
    return {"width": cfg.floor_width, "batch": prof}


def projection(cfg: BenchConfig, records: dict, step_of: dict) -> dict:
    """Projected seconds of study.dynamics' seed preset (one seed): per cell, records x one timed
    record interval + compile, with the share of a record spent on metrics."""
    n_records = cfg.projection_epochs // cfg.record_every
    cells = []
    for (w, b), r in records.items():
        spr = cfg.record_every * cfg.n_train // b
        cell = {"width": w, "batch_size": b, "record_s": r["record_s"], "method": r["method"],
                "compile_s": r["compile_s"], "projected_s": r["record_s"] * n_records + r["compile_s"],
                "per_step_incl_metrics_s": r["record_s"] / spr, "metrics_s": r["metrics_s"],
                "metrics_fraction": min(1.0, r["metrics_s"] / r["record_s"])}  # timed apart: noise can exceed 1
        if (w, b) in step_of:  # the record's steps at the speed of the step table (warm caches)
            cell["steps_only_s"] = spr * step_of[(w, b)]
        cells.append(cell)
    return {"epochs": cfg.projection_epochs, "record_every": cfg.record_every, "seeds": 1, "cells": cells,
            "total_s": sum(c["projected_s"] for c in cells)}


def run(cfg: BenchConfig, out: str | Path | None = None, *, progress: bool = True) -> dict:
    """Every measurement; writes ``bench.json`` into ``out`` when given; returns the dict."""
    from tqdm.auto import tqdm

    from studylib import results as R

    res: dict[str, Any] = {"study": "bench", "config": dataclasses.asdict(cfg), "versions": R.versions(),
                           "loadavg_before": _loadavg(), "cpu_count": os.cpu_count()}
    start = time.perf_counter()
    done = {task: measure(task, cfg) for task in tqdm(tasks(cfg), disable=not progress, desc="bench")}

    def of(kind: str) -> dict:  # the measurements of one kind, keyed by their arguments
        return {(t[1:] if len(t) > 2 else t[1]): v for t, v in done.items() if t[0] == kind}

    floor_all = of("floor")
    res["floor_detail_s"] = {str(b): v for b, v in floor_all.items()}
    res["read2_detail_s"] = done[("read2",)]
    res["matmul_gflops"] = done[("gflops",)]
    if ("help",) in done:
        res["compare_help_s"] = done[("help",)]
    floor = {b: v["best"] for b, v in floor_all.items()}
    res["floor_width"] = cfg.floor_width
    res["floor_step_s"] = {str(b): v for b, v in floor.items()}
    res["bounds"] = bounds = machine_bounds(cfg, res["read2_detail_s"]["best"], max(res["matmul_gflops"].values()))
    res["steps"] = rows = step_rows(cfg, of("step"), floor, of("seed"), bounds)
    step_of = {(r["width"], r["batch_size"]): r["step_s"] for r in rows}
    res["profile"] = profile_summary(cfg, of("profile"), step_of)
    res["projection"] = projection(cfg, of("record"), step_of)
    res["ntk"] = {str(w): v for w, v in of("ntk").items()}
    res["full_batch_gd"] = [v for _, v in sorted(of("gd").items())]
    if ("cache",) in done:
        res["compile_cache"] = done[("cache",)]
    res["loadavg_after"] = _loadavg()
    res["wall_seconds"] = time.perf_counter() - start
    if out is not None:
        R.write_json(Path(out) / "bench.json", res)
    return res


def _ms(s) -> str:
    return f"{1e3 * s:9.3f}" if s is not None else f"{'-':>9}"


def machine_lines(res: dict) -> list[str]:
    """The machine: CPUs and load, matmul rate, the BLAS floor and the bound."""
    bd = res["bounds"]
    return [f"machine: {res['cpu_count']} CPUs, load average before {res['loadavg_before']}, "
            f"after {res['loadavg_after']}",
            f"matmul float32 1000^3: numpy {res['matmul_gflops']['numpy']:.1f} GFLOP/s, "
            f"XLA {res['matmul_gflops']['xla']:.1f} GFLOP/s",
            f"floor (in-place SciPy BLAS, width {res['floor_width']}): "
            + ", ".join(f"batch {b}: {1e3 * s:.3f} ms" for b, s in res["floor_step_s"].items()),
            f"bound (width {bd['width']}): max(weights read twice {1e3 * bd['weights_read_twice_s']:.3f} ms, "
            f"6Bn^2 flops per layer at {bd['peak_gflops']:.0f} GFLOP/s): "
            + ", ".join(f"batch {b}: {1e3 * t:.3f} ms" for b, t in bd["step_s"].items())]


def step_lines(res: dict) -> list[str]:
    """The step table."""
    nan = float("nan")
    head = (f"{'width':>6} {'batch':>5} {'method':>8} {'step ms':>9} {'lin ms':>9} {'compile s':>9} "
            f"{'x floor':>8} {'x bound':>8} {'x b=1':>6} {'seed-style ms':>13} {'speed-up':>9} {'possible':>9}"
            f"  other method ms")
    lines = [head, "-" * len(head)]
    for r in res["steps"]:
        other = ", ".join(f"{m} {1e3 * s:.3f}" for m, s in r["other_methods"].items())
        lines.append(f"{r['width']:>6} {r['batch_size']:>5} {r['method']:>8} {_ms(r['step_s'])} "
                     f"{_ms(r['lin_step_s'])} {r['compile_s']:>9.2f} {r.get('ratio_to_floor', nan):>8.2f} "
                     f"{r.get('ratio_to_bound', nan):>8.2f} "
                     f"{r.get('ratio_to_batch1', nan):>6.2f} "
                     f"{_ms(r.get('seed_style_step_s')):>13} {r.get('speedup_vs_seed_style', nan):>9.0f} "
                     f"{r.get('speedup_possible_vs_seed_style', nan):>9.0f}  {other}")
    lines.append("(x bound: step / the machine bound above; possible: seed-style / bound, the largest speed-up "
                 "any step could reach)")
    return lines


def profile_lines(res: dict) -> list[str]:
    """The profile of the floor-width step (none when it was not measured)."""
    pf = res.get("profile", {})
    if not pf.get("batch"):
        return []
    lines = ["", f"step profile at width {pf['width']}, ms per step (each product timed alone, all hidden "
             "layers):",
             f"{'batch':>5} {'fwd h@W':>9} {'bwd W@d':>9} {'(d@W^T)':>9} {'fold W+UV':>9} {'sum':>9} "
             f"{'step':>9} {'rest':>9}"]
    for b, p in pf["batch"].items():
        lines.append(f"{b:>5} {_ms(p['fwd_s'])} {_ms(p['bwd_s'])} {_ms(p['bwd_row_layout_s'])} "
                     f"{_ms(p['fold_s'])} {_ms(p['sum_s'])} {_ms(p.get('step_s'))} {_ms(p.get('rest_s'))}")
    lines.append("(bwd W@d: the step's backward product in transposed layout; (d@W^T): the same product in row "
                 "layout, not used; sum = fwd + bwd + fold; rest: low-rank corrections, element-wise work, "
                 "cache misses, dispatch)")
    return lines


def projection_lines(res: dict) -> list[str]:
    """The projected seed preset of study.dynamics, per cell."""
    p = res["projection"]
    lines = ["", f"projected study.dynamics --preset seed --seeds 1 ({p['epochs']} epochs, metrics every "
             f"{p['record_every']}): {p['total_s']:.0f} s = {p['total_s'] / 60:.1f} min"]
    for c in p["cells"]:
        steps = f"steps alone {1e3 * c['steps_only_s']:.3f} ms, " if "steps_only_s" in c else ""
        # below ~1 ms per record the separately timed pieces are dominated by call overheads
        frac = f" = {100 * c['metrics_fraction']:.0f}%" if c["metrics_fraction"] < 1.0 else ""
        lines.append(f"  width {c['width']:>5} batch {c['batch_size']:>2}: {1e3 * c['record_s']:8.3f} ms/record "
                     f"({steps}metrics alone {1e3 * c['metrics_s']:.3f} ms{frac}) "
                     f"-> {c['projected_s']:.0f} s")
    return lines


def ntk_lines(res: dict) -> list[str]:
    """Empirical NTK times per implementation."""
    lines = ["", "empirical NTK evaluation, ms per call (x0,x0 | 10x10 Gram):"]
    for w, v in res["ntk"].items():
        parts = []
        for impl in ("nt_impl1", "nt_impl2", "study"):
            if f"{impl}_x0_s" in v:
                parts.append(f"{impl} {1e3 * v[f'{impl}_x0_s']:.3f} | {1e3 * v[f'{impl}_gram_s']:.3f}")
            elif f"{impl}_x0_error" in v:
                parts.append(f"{impl} failed")
        lines.append(f"  width {w:>5}: " + "; ".join(parts))
    return lines


def gd_lines(res: dict) -> list[str]:
    """Full-batch GD step, generic against fast, and the compilation cache."""
    lines = []
    if res.get("full_batch_gd"):
        lines += ["", "full-batch GD step of compare's net (depth 5, N = 10, float32), ms per step | compile s:"]
        for r in res["full_batch_gd"]:
            lines.append(f"  width {r['width']:>5}: generic {1e3 * r['generic_step_s']:9.3f} | "
                         f"{r['generic_compile_s']:5.2f}   fast {1e3 * r['fast_step_s']:9.3f} | "
                         f"{r['fast_compile_s']:5.2f}   speed-up {r['speedup']:.1f}x")
    cc = res.get("compile_cache")
    if cc:
        lines.append(f"\npersistent compilation cache, width {cc['width']} (compile + first step of both trainers, "
                     "fresh process):")
        for mode in ("no_cache", "cold_cache", "warm_cache"):
            lines.append(f"  {mode:<10}: {cc[mode]['first_steps_s']:.2f} s (process {cc[mode]['process_s']:.2f} s)")
        lines.append(f"  saved by a warm cache: {cc['saved_s']:.2f} s ({cc['cache_files']} cache files)")
    return lines


def format_table(res: dict) -> str:
    """The console report of a bench.json dict."""
    lines = [*machine_lines(res), "", *step_lines(res), *profile_lines(res), *projection_lines(res),
             *ntk_lines(res), *gd_lines(res)]
    if "compare_help_s" in res:
        lines.append(f"\npython -m study.compare --help: {res['compare_help_s']:.2f} s")
    lines.append(f"bench wall time: {res['wall_seconds']:.0f} s")
    return "\n".join(lines)


#: Per-width phases of a compare run, in the order run_width meets them (studylib.compare.cell).
WIDTH_PHASES = ("init", "analytic", "at_init", "eigh", "closed", "train", "quad", "predict", "after", "curves")
#: What each run-level phase wraps (module, attribute) while profiling.
RUN_HOOKS = {"data": ("studylib.data", "load_for"), "prepare": ("studylib.compare", "prepare"),
             "cell": ("studylib.compare", "run_cell"), "summary": ("studylib.compare", "summarise"),
             "table": ("studylib.compare", "format_table"), "figures": ("studylib.compare", "figures"),
             "write": ("studylib.results", "write_json"), "write_npz": ("studylib.results", "write_npz"),
             "write_cell": ("studylib.results", "save_cell"), "read_cell": ("studylib.results", "load_cell")}


def profile_compare(argv: list[str]) -> dict:
    """Run ``python -m study.compare`` with ``argv`` in this process and return where its time went
    (:mod:`studylib.timing`): 'import' (JAX, NT and the compare wing), the run-level phases of
    :data:`RUN_HOOKS` (data, summary, figures, writes; 'cell' is a width's time outside its phases), the
    per-width phases of :data:`WIDTH_PHASES`, each as wall seconds (exclusive of nested phases) and the
    compile seconds in it (tracing + lowering + XLA, on this thread), 'other' (the rest of the total),
    'background_compile_s' (compiles on other threads, overlapping), 'ahead' (per width, the wall seconds of
    its start on an ahead thread, :class:`studylib.compare.cell.Ahead`, and that thread's compile seconds
    meanwhile: overlapping the main thread, not part of the total) and 'total_s', the wall time from
    before the imports to the end. Without ``--out`` the run goes to a temporary folder (so that no
    stored cell is reused); the compile cache follows ``NTK_STUDY_COMPILE_CACHE`` as in the entry point."""
    import importlib
    import tempfile

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    import jax  # noqa: F401  (timed: the import phase)

    from studylib import cli, timing
    from studylib.nt import nt  # noqa: F401

    importlib.import_module("studylib.compare.cell")

    import_s = time.perf_counter() - t0
    tmp = None
    if "--out" not in argv and not any(a.startswith("--out=") for a in argv):
        tmp = tempfile.TemporaryDirectory(prefix="ntk_profile_")
        argv = [*argv, "--out", tmp.name]
    patched = []
    try:
        with timing.profiling() as prof:
            prof.records.append(timing.Record("import", None, import_s, 0.0))
            for name, (module, attr) in RUN_HOOKS.items():
                mod = importlib.import_module(module)
                fn = getattr(mod, attr)
                patched.append((mod, attr, fn))
                setattr(mod, attr, _timed(timing, name, fn))
            cli.main("compare", "python -m study.compare (profiled by study.bench)", argv)
        total = time.perf_counter() - t0
    finally:
        for mod, attr, fn in reversed(patched):
            setattr(mod, attr, fn)
        if tmp is not None:
            tmp.cleanup()
    widths = sorted({r.width for r in prof.records if r.width is not None})
    per_width = {str(w): {p: dict(zip(("s", "compile_s"), prof.total(p, w), strict=True)) for p in WIDTH_PHASES}
                 for w in widths}
    run_level = {p: dict(zip(("s", "compile_s"), prof.total(p, None), strict=True))
                 for p in ("import", *RUN_HOOKS)}
    accounted = sum(r.seconds for r in prof.records)
    ahead = {str(w): dict(zip(("s", "compile_s"), prof.background_total(w), strict=True))
             for w in sorted({r.width for r in prof.background if r.width is not None})}
    return {"argv": argv if tmp is None else argv[:-2], "total_s": total, "cpu_s": time.process_time() - cpu0,
            "loadavg": _loadavg(), "run": run_level, "widths": per_width, "other_s": total - accounted,
            "compile_s": sum(r.compile_seconds for r in prof.records) + prof.loose_compile_s,
            "loose_compile_s": prof.loose_compile_s, "background_compile_s": prof.background_compile_s,
            "ahead": ahead}


def _timed(timing, name: str, fn):
    def wrapped(*args, **kwargs):
        with timing.phase(name):
            return fn(*args, **kwargs)

    return wrapped


def format_profile(res: dict) -> str:
    """The console report of :func:`profile_compare`: seconds per phase per width, 'total (compile)'."""
    cols = WIDTH_PHASES
    ahead = res.get("ahead", {})  # per width: its start on an ahead thread (overlaps the rest; not in 'sum')
    head = f"{'width':>6} " + " ".join(f"{c:>13}" for c in cols) + f" {'sum':>13}" + (f" {'ahead':>15}" * bool(ahead))
    note = "; 'ahead': the width's start on an ahead thread, overlapping the rest" if ahead else ""
    lines = ["where `python -m study.compare " + " ".join(res["argv"]) + "` spent its time (wall s; in brackets "
             f"the part spent compiling: trace + lower + XLA, this thread{note})", head, "-" * len(head)]

    def cellf(s: float, c: float) -> str:
        return f"{s:6.2f} ({c:4.1f})"

    for w, ph in res["widths"].items():
        s, c = sum(v["s"] for v in ph.values()), sum(v["compile_s"] for v in ph.values())
        bg = ahead.get(w)
        lines.append(f"{w:>6} " + " ".join(f"{cellf(ph[p]['s'], ph[p]['compile_s']):>13}" for p in cols)
                     + f" {cellf(s, c):>13}" + (f"   {cellf(bg['s'], bg['compile_s']):>13}" if bg else ""))
    tot = {p: (sum(ph[p]["s"] for ph in res["widths"].values()),
               sum(ph[p]["compile_s"] for ph in res["widths"].values())) for p in cols}
    bg_all = (sum(v["s"] for v in ahead.values()), sum(v["compile_s"] for v in ahead.values()))
    lines.append(f"{'all':>6} " + " ".join(f"{cellf(*tot[p]):>13}" for p in cols)
                 + f" {cellf(sum(v[0] for v in tot.values()), sum(v[1] for v in tot.values())):>13}"
                 + (f"   {cellf(*bg_all):>13}" if ahead else ""))
    lines.append("")
    run = res["run"]
    lines.append("run: " + ", ".join(f"{p} {v['s']:.2f} s" + (f" ({v['compile_s']:.1f})" if v["compile_s"] >= 0.05
                                                             else "") for p, v in run.items())
                 + f", other {res['other_s']:.2f} s")
    lines.append(f"total {res['total_s']:.1f} s wall (CPU {res['cpu_s']:.1f} s), compiling {res['compile_s']:.1f} s "
                 f"on this thread + {res['background_compile_s']:.1f} s on others; load average "
                 f"{', '.join(f'{x:.1f}' for x in res['loadavg'] or [])}")
    return "\n".join(lines)
