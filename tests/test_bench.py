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
