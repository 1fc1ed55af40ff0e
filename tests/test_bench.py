"""study.bench runs on a tiny size and writes its JSON (no timing assertions)."""

from __future__ import annotations

import math

from studylib import results as R


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


def test_ntk_impls_agree_in_bench_setup():
    """The NTK implementations timed by the bench compute the same kernel (float32: rtol 1e-4,
    a few hundred float32 roundings in sums of ~10^2 terms)."""
    import jax
    import numpy as np

    from studylib import bench, kernels, sgd

    cfg = bench.BenchConfig(**bench.PRESETS["tiny"])
    net, params, m, x, _ = bench._setup(16, cfg.depth, cfg.n_train)
    ours = np.asarray(jax.jit(lambda d: sgd.ntk(m, d, x))(sgd.dense_params(params)))
    for impl in kernels.NTK_IMPLEMENTATIONS:
        ref = np.asarray(kernels.empirical_ntk_fn(net.apply_fn, implementation=impl)(x, None, params))
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
