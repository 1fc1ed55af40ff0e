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
        ref = np.asarray(kernels.empirical_ntk_fn(net.apply_fn, implementation=impl)(x, None, params))
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


#: A tiny compare (one width, quadratic model included) for the profile tests.
FLAGS = ["--widths", "8", "--seeds", "2", "--steps", "6", "--checkpoints", "2", "--quad-max-width", "8",
         "--no-progress", "--no-figures"]


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


@pytest.mark.slow  # ~35 s on the loaded machine; the fast sibling above runs the same profiled compare
def test_ahead_keeps_every_number(tmp_path, monkeypatch):
    """A compare run whose widths start on a second thread (compare.cell.AHEAD: theta_0, kernels at init,
    programs compiled ahead) writes the same summary and curves, bit for bit, as a run without it."""
    import json

    import numpy as np

    from studylib import cli
    from studylib.compare import cell

    cli.main("compare", "test", [*FLAGS, "--out", str(tmp_path / "on")])
    monkeypatch.setenv(cell.AHEAD_ENV, "off")
    cli.main("compare", "test", [*FLAGS, "--out", str(tmp_path / "off")])
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
