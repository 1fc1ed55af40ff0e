"""study.bench runs on a tiny size and writes its JSON (no timing assertions)."""

from __future__ import annotations

import math

import pytest

from studylib import results as R


@pytest.mark.slow  # ~20 s; CI runs it with -m slow
def test_bench_tiny_writes_json(tmp_path):
    from study import bench as entry

    entry.main(["--preset", "tiny", "--out", str(tmp_path), "--no-progress"])
    res = R.read_json(tmp_path / "bench.json")
    assert res["study"] == "bench"
    steps = {(r["width"], r["batch_size"]): r for r in res["steps"]}
    assert set(steps) == {(8, 1)}
    r = steps[(8, 1)]
    for key in ("step_s", "lin_step_s", "compile_s", "seed_style_step_s", "speedup_vs_seed_style"):
        assert r[key] is not None and math.isfinite(r[key]) and r[key] > 0, key
    assert res["floor_step_s"]["1"] > 0
    assert res["projection"]["total_s"] > 0 and len(res["projection"]["cells"]) == 1
    assert {"nt_impl1_gram_s", "nt_impl2_gram_s", "study_gram_s"} <= set(res["ntk"]["8"])
    # machine bounds: the larger of the two-read weight traffic and the arithmetic at peak rate
    bd = res["bounds"]
    n, n_sq = 32, 1  # tiny preset: floor width 32, depth 2 -> one hidden square layer
    assert bd["flops"]["1"] == 6 * n * n * n_sq
    assert bd["flop_s"]["1"] == bd["flops"]["1"] / (bd["peak_gflops"] * 1e9)
    assert bd["step_s"]["1"] == max(bd["weights_read_twice_s"], bd["flop_s"]["1"]) > 0
    prof = res["profile"]["batch"]["1"]
    for key in ("fwd_s", "bwd_s", "bwd_row_layout_s", "fold_s"):
        assert math.isfinite(prof[key]) and prof[key] > 0, key
    assert math.isclose(prof["sum_s"], prof["fwd_s"] + prof["bwd_s"] + prof["fold_s"])
    cell = res["projection"]["cells"][0]
    assert cell["metrics_s"] >= 0 and 0.0 <= cell["metrics_fraction"] <= 1.0
    (gd,) = res["full_batch_gd"]
    assert gd["width"] == 8
    for key in ("generic_step_s", "fast_step_s", "generic_compile_s", "fast_compile_s", "speedup"):
        assert math.isfinite(gd[key]) and gd[key] >= 0, key
    cc = res["compile_cache"]
    for mode in ("no_cache", "cold_cache", "warm_cache"):
        assert cc[mode]["first_steps_s"] > 0 and cc[mode]["process_s"] >= cc[mode]["first_steps_s"]
    assert cc["cache_files"] > 0  # the cold run wrote the cache the warm run read


def test_machine_bounds_pick_the_larger_cost():
    """Weight traffic bounds small batches, arithmetic large ones (numbers chosen by hand)."""
    from studylib import bench

    cfg = bench.BenchConfig(floor_width=1000, depth=5, batch_sizes=(1, 10))
    bd = bench.machine_bounds(cfg, read2_s=4e-4, peak_gflops=200.0)
    # 6 * B * 1000^2 * 4 flops: 24 MFLOP at B = 1 (0.12 ms at 200 GFLOP/s), 240 MFLOP at B = 10 (1.2 ms)
    assert math.isclose(bd["step_s"]["1"], 4e-4)
    assert math.isclose(bd["step_s"]["10"], 1.2e-3)


def test_ntk_impls_agree_in_bench_setup():
    """The NTK implementations timed by the bench compute the same kernel (float32: rtol 1e-4,
    a few hundred float32 roundings in sums of ~10^2 terms)."""
    import jax
    import numpy as np

    from studylib import bench, kernels, sgd

    cfg = bench.BenchConfig(**bench.PRESETS["tiny"])
    net, params, m, x, _ = bench.seed_setup(16, cfg.depth, cfg.n_train)
    ours = np.asarray(jax.jit(lambda d: sgd.ntk(m, d, x))(sgd.dense_params(params)))
    for impl in kernels.NTK_IMPLEMENTATIONS:
        # jitted as the bench times them (NT's implementation 3 op by op takes seconds)
        ref = np.asarray(jax.jit(kernels.empirical_ntk_fn(net.apply_fn, implementation=impl))(x, None, params))
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_timing_phases_are_exclusive_and_count_compiles():
    """studylib.timing: a nested phase's time is taken out of its parent's (the phases sum to the
    wall time of the outer block), a jit compiled inside a phase is counted there and not in its
    sibling, and nothing is recorded without an active profile."""
    import time

    import jax
    import jax.numpy as jnp

    from studylib import timing

    with timing.phase("ignored"):  # no profile: a no-op
        pass
    with timing.profiling() as prof:
        t0 = time.perf_counter()
        with timing.phase("outer", 1):
            time.sleep(0.05)
            with timing.phase("inner", 1):
                # a function object of its own: compiled here, whatever ran before
                jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.25)(jnp.arange(7.0)).block_until_ready()
            with timing.phase("sibling", 1):
                time.sleep(0.02)
        wall = time.perf_counter() - t0
    assert [r.name for r in prof.records] == ["inner", "sibling", "outer"]
    total = sum(r.seconds for r in prof.records)
    # exclusive times add up to the outer block's wall time (only the bookkeeping between the clocks differs)
    assert abs(total - wall) < 1e-3
    outer, inner, sibling = (prof.total(n, 1) for n in ("outer", "inner", "sibling"))
    assert outer[0] >= 0.05 and sibling[0] >= 0.02
    assert 0.0 < inner[1] <= inner[0]  # the compile happened inside 'inner' and is part of its time
    assert outer[1] == 0.0 and sibling[1] == 0.0
    assert timing.active() is None


def test_timing_job_records_another_threads_work_apart():
    """studylib.timing.job: a block on another thread is a background record of its width, with the compiles
    of that thread while it ran, and takes nothing from the profiling thread's phases; on the profiling
    thread itself, or without a profile, it records nothing."""
    import threading

    import jax
    import jax.numpy as jnp

    from studylib import timing

    def work():
        with timing.job("ahead", 16):
            jax.jit(lambda x: jnp.cos(x) * 2.5 - 0.75)(jnp.arange(5.0)).block_until_ready()

    with timing.job("ignored", 1):  # no profile: a no-op
        pass
    with timing.profiling() as prof:
        with timing.phase("main", 8):
            t = threading.Thread(target=work)
            t.start()
            t.join()
        with timing.job("same thread", 8):  # the profiling thread: not a background record
            pass
    assert [(r.name, r.width) for r in prof.background] == [("ahead", 16)]
    seconds, compile_s = prof.background_total(16)
    assert 0.0 < compile_s <= seconds and compile_s <= prof.background_compile_s
    assert prof.total("main", 8)[1] == 0.0  # the other thread's compile is not the main phase's
    assert prof.background_total(8) == (0.0, 0.0)


#: A tiny compare (one width, quadratic model included; depth 2, 21 test points: every phase, less to compile)
#: for the profile tests.
FLAGS = ["--widths", "8", "--seeds", "2", "--steps", "6", "--checkpoints", "2", "--quad-max-width", "8",
         "--depth", "2", "--n-test", "21", "--no-progress", "--no-figures"]


def test_profile_compare_tiny_prints_every_phase(tmp_path):
    """``study.bench --profile-compare`` on a tiny compare: every per-width and run-level phase is
    printed, and the phases sum to the total wall time (what no phase covers, 'other', is argument parsing
    and the runner's bookkeeping: a small share)."""
    from studylib import bench

    res = bench.profile_compare([*FLAGS, "--out", str(tmp_path / "on")])
    text = bench.format_profile(res)
    for name in (*bench.WIDTH_PHASES, *res["run"], "other", "total"):
        assert name in text, name
    assert set(res["widths"]) == {"8"}
    for ph in res["widths"].values():
        assert set(ph) == set(bench.WIDTH_PHASES)
        assert all(0.0 <= v["compile_s"] <= v["s"] + 1e-6 for v in ph.values())
    accounted = sum(v["s"] for v in res["run"].values()) + sum(
        v["s"] for ph in res["widths"].values() for v in ph.values())
    assert abs(accounted + res["other_s"] - res["total_s"]) < 1e-6  # 'other' is the rest, by definition
    assert 0.0 <= res["other_s"] < 0.1 * res["total_s"] + 0.5  # ... and small: the phases cover the run
    assert res["run"]["summary"]["s"] > 0 and res["run"]["write"]["s"] > 0 and res["run"]["data"]["s"] > 0
    assert res["widths"]["8"]["train"]["s"] > 0 and res["widths"]["8"]["quad"]["s"] > 0
    # the width started on an ahead thread (compare.cell.Ahead): its own record, compiles included, in the table
    assert set(res["ahead"]) == {"8"} and 0.0 < res["ahead"]["8"]["compile_s"] <= res["ahead"]["8"]["s"]
    assert "ahead" in text.splitlines()[1]


@pytest.mark.slow  # ~35 s on the loaded machine; the fast sibling above runs the same profiled compare
def test_ahead_keeps_every_number(tmp_path, monkeypatch):
    """A compare run whose widths start on other threads (compare.cell.AHEAD: theta_0, kernels at init,
    programs compiled ahead; two widths at once) writes the same summary and curves, bit for bit, as a run
    without it."""
    import json

    import numpy as np

    from studylib import cli
    from studylib.compare import cell

    flags = [*FLAGS, "--widths", "8,16,32"]  # two widths start at once, a third queued (Ahead.workers() == 2)
    monkeypatch.setenv(cell.AHEAD_ENV, "2")
    cli.main("compare", "test", [*flags, "--out", str(tmp_path / "on")])
    monkeypatch.setenv(cell.AHEAD_ENV, "off")
    cli.main("compare", "test", [*flags, "--out", str(tmp_path / "off")])
    on, off = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("on", "off"))

    def leaves(x, path=""):
        if isinstance(x, dict):
            for k, v in x.items():
                if "seconds" not in k:  # wall times differ, every computed number must not
                    yield from leaves(v, f"{path}/{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                yield from leaves(v, f"{path}[{i}]")
        else:
            yield path, x

    a, b = dict(leaves(on)), dict(leaves(off))
    assert a.keys() == b.keys()
    assert [p for p in a if a[p] != b[p] and a[p] == a[p]] == []  # NaN != NaN: NaN leaves compared below
    assert [p for p in a if (a[p] != a[p]) != (b[p] != b[p])] == []
    za, zb = (np.load(tmp_path / d / "curves.npz") for d in ("on", "off"))
    assert za.files == zb.files
    assert [k for k in za.files if not np.array_equal(za[k], zb[k], equal_nan=True)] == []


def test_ahead_workers_and_lookahead(monkeypatch):
    """compare.cell.Ahead: the environment variable turns it off or sets the threads; each width the main
    thread runs queues the next widths up to one per thread, fewer where their parameters would not fit
    the device's memory (--max-memory), and none past the last width; with two threads or more, the widest
    width with a quadratic model (its longest single-threaded job) is queued early too."""
    from studylib import data as D
    from studylib import devices
    from studylib.compare import cell
    from studylib.compare.config import CompareConfig

    cfg = CompareConfig(widths=(8, 16, 32, 64, 1024), quad_max_width=4)  # no quadratic model: the plain rule
    data = D.load_for(cfg.data, cfg.model)
    assert cell.Ahead.longest_quad(cfg) is None
    ahead = cell.Ahead()
    for value, workers in (("off", 0), ("0", 0), ("1", 1), ("3", 3), ("", cell.Ahead.WORKERS)):
        monkeypatch.setenv(cell.AHEAD_ENV, value)
        assert ahead.workers() == workers, value
    monkeypatch.setenv(cell.AHEAD_ENV, "off")
    assert not ahead.eligible(cfg, 8, data)
    monkeypatch.setenv(cell.AHEAD_ENV, "1")  # the behaviour before: the width and the next one
    assert ahead.eligible(cfg, 8, data)
    assert ahead.lookahead(cfg, [8, 16], data) == [8, 16]
    monkeypatch.setenv(cell.AHEAD_ENV, "2")
    assert ahead.lookahead(cfg, [8, 16], data) == [8, 16, 32]
    assert ahead.lookahead(cfg, [64, 1024], data) == [64, 1024]  # nothing after the last width
    assert ahead.lookahead(cfg, [1024], data) == [1024]
    monkeypatch.setenv(cell.AHEAD_ENV, "3")
    assert ahead.lookahead(cfg, [8, 16], data) == [8, 16, 32, 64]
    quads = CompareConfig(widths=(8, 16, 32, 64, 128, 1024), quad_max_width=64)
    assert cell.Ahead.longest_quad(quads) == 64
    monkeypatch.setenv(cell.AHEAD_ENV, "2")
    assert ahead.lookahead(quads, [8, 16], data) == [8, 16, 32, 64]
    assert ahead.lookahead(quads, [16, 32], data) == [16, 32, 64]  # among the next ones already
    assert ahead.lookahead(quads, [64, 128], data) == [64, 128, 1024]
    assert ahead.lookahead(quads, [128, 1024], data) == [128, 1024]  # 64 was run: not queued again
    monkeypatch.setenv(cell.AHEAD_ENV, "1")
    assert ahead.lookahead(quads, [8, 16], data) == [8, 16]  # one thread: the next width first
    monkeypatch.setenv(cell.AHEAD_ENV, "3")
    # room: width 16's plan and theta_0 of 32 and 64 (3 seeds) against MEMORY_FRACTION of a capped device
    x, k = data.x_train, data.y_train.shape[1]
    plans = {w: cell.memory_plan(cfg, w, x.shape, k) for w in (16, 32, 64)}
    first = plans[16]["bytes_per_seed"] * cfg.seeds + plans[16]["fixed_bytes"]
    theta = {w: plans[w]["params"] * 4 * cfg.seeds for w in (32, 64)}  # float32
    try:
        devices.set_max_memory((first + theta[32] + theta[64] / 2) / devices.MEMORY_FRACTION / 2**30)
        assert ahead.room(cfg, [16, 32], data) and not ahead.room(cfg, [16, 32, 64], data)
        assert ahead.lookahead(cfg, [16, 32], data) == [16, 32]  # 64 would not fit beside them
    finally:
        devices.set_max_memory(None)


# slow set: tests/test_figure_prestart.py::test_prestarted_helper_draws_its_figures checks the same helper process
# (prestarted, as the main job starts it) drawing its share of the tiny run's figures; this one adds the
# byte-for-byte comparison with the figures drawn in one process (~11 s more)
@pytest.mark.slow
def test_compare_figures_helper_draws_the_same_files(tiny_compare, tmp_path, monkeypatch):
    """compare.plots.figures with the helper process (part of the figures drawn by a second Python
    process) writes the same files, byte for byte and in the same order, as drawing all of them here; a
    helper that fails leaves no figure missing (this process draws them)."""
    import subprocess
    import sys

    from studylib.compare import plots

    def drawn(folder):
        paths = plots.figures(tiny_compare, folder)
        return [p.name for p in paths], {p.name: p.read_bytes() for p in paths}

    # Three of the run's figures (each drawing of all of them takes ~5 s of CPU): this process draws one, the
    # helper the others, and the merged list keeps figure_names' order.
    keep = ("layer_change_vs_width", "gaps_over_time", "predictions")
    real_names = plots.figure_names
    monkeypatch.setattr(plots, "figure_names", lambda *a: [n for n in real_names(*a) if n in keep])
    assert {n in plots.HELPER_FIGURES for n in keep} == {True, False}
    monkeypatch.setenv(plots.HELPER_ENV, "off")
    names, alone = drawn(tmp_path / "alone")
    assert [n.split(".")[0].removeprefix("compare_") for n in names][::2] == list(keep)  # a .png and a .pdf each
    monkeypatch.setenv(plots.HELPER_ENV, "on")
    monkeypatch.setattr(plots, "_helper_wanted", lambda: True)  # also where this process has one core
    # no helper started ahead by an earlier in-process run (plots.prestart_figures): each drawing starts its own
    monkeypatch.setattr(plots, "_PRESTARTED", [], raising=False)
    started = []
    real = plots._start_helper
    monkeypatch.setattr(plots, "_start_helper", lambda *a: started.append(a[2]) or real(*a))
    names_h, helped = drawn(tmp_path / "helped")
    assert started and started[0]  # the helper drew some figures
    assert names_h == names and helped == alone
    failing = lambda *a: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"],  # noqa: E731
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monkeypatch.setattr(plots, "_start_helper", failing)
    names_f, fallback = drawn(tmp_path / "fallback")
    assert names_f == names and fallback == alone
