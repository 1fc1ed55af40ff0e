"""The after kernel in study.compare (studylib.afterkernel.compare_rows through run_width): its rows in
summary.json and the printed table, checked against the stored arrays of the shared tiny run (``tiny_compare``,
tests/conftest.py: the 1-D toy, k = 1, float32, depth 2, widths 8 and 16, 10 steps, 4 checkpoints) by NumPy
written here. The kernels themselves are checked against a direct Jacobian product in tests/test_afterkernel.py, and the
hand-written trainer's after kernel against NT's (the generic path) in
tests/test_compare.py::test_hand_written_trainer_equals_the_generic_one (float64)."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest

from studylib import afterkernel as A
from studylib import results as R
from studylib.compare import report

CURVES = ("kernel_alignment", "kernel_velocity", "after_alignment", "after_vs_net_rmse")
SCALARS = ("kernel_alignment_k0", "kernel_alignment_theta", "after_vs_net_rmse_k0", "after_rmse_ratio",
           "after_explains_from")


def _load(out):
    summary = json.loads((out / "summary.json").read_text())
    curves = np.load(out / "curves.npz")
    cells = {int(r["width"]): r for r in (R.load_cell(f) for f in glob.glob(str(out / "cells" / "*.npz")))}
    return summary, curves, cells


def test_after_kernel_rows_in_summary_and_table(tiny_compare):
    """The new metrics (final checkpoint, mean/std/per_seed) and the conventions entry exist; the table prints the
    after-kernel rows; metrics are the curves' last entries, the K_0 scalars their first; the curves are NaN
    exactly where after_checkpoints leaves the kernel out."""
    summary, curves, _ = _load(tiny_compare)
    assert "after_kernel" in summary["conventions"]
    for name in CURVES + SCALARS:
        assert name in summary["metrics"], name
    table = report.format_table(summary)
    for name in CURVES + SCALARS:
        assert any(line.startswith(name + " ") for line in table.splitlines()), name
    times = curves["times"]  # (W, T)
    for name in CURVES:
        c = curves[f"curve/{name}"]  # (W, S, T)
        np.testing.assert_allclose(np.asarray(summary["metrics"][name]["per_seed"], np.float64), c[:, :, -1],
                                   rtol=1e-12, err_msg=name)
    for w in range(times.shape[0]):
        flags = A.after_checkpoints(times[w])
        assert flags[0] and flags[-1]
        for name in ("after_alignment", "after_vs_net_rmse"):
            c = curves[f"curve/{name}"][w]
            assert np.isfinite(c[:, flags]).all() and np.isnan(c[:, ~flags]).all(), name
        assert np.isnan(curves["pred_test/after"][w][:, ~flags]).all()
    r = curves["curve/after_vs_net_rmse"]
    np.testing.assert_allclose(summary["metrics"]["after_vs_net_rmse_k0"]["per_seed"], r[:, :, 0], rtol=1e-12)
    np.testing.assert_allclose(summary["metrics"]["after_rmse_ratio"]["per_seed"], r[:, :, -1] / r[:, :, 0],
                               rtol=1e-12)
    a = np.asarray(summary["metrics"]["kernel_alignment_theta"]["per_seed"], np.float64)
    assert np.all((a > -1) & (a <= 1)) and np.ptp(a) == 0  # one Θ for every width and seed


def test_after_kernel_curves_against_numpy(tiny_compare):
    """From the stored arrays: the alignment (H written out) and velocity of the stored traced kernels on the first
    P inputs ('k_net_train' of each cell; 1e-9: float32 kernels, float64 sums), the RMSE of the stored regression
    outputs to the final network's (1e-12), and K_0's regression at step 0 against compare's own t = ∞ closed
    form with K_0 ('closed_emp_limit', the same f_0 and kernel for k = 1, computed by another code path in float32:
    the two kernels differ by float32 rounding, amplified by K_0⁺; 1e-2 of the prediction's RMS, where a wrong
    start f_0, kernel scale or target is off by O(1))."""
    summary, curves, cells = _load(tiny_compare)
    y = curves["y_train"].reshape(len(curves["y_train"]), -1)
    for w, width in enumerate(summary["widths"]):
        k_sub, times = cells[width]["k_net_train"], curves["times"][w]  # (S, T, P, P), (T,)
        p = k_sub.shape[-1]
        h = np.eye(p) - 1.0 / p
        t_c = h @ y[:p] @ y[:p].T @ h
        for s in range(k_sub.shape[0]):
            for j in range(k_sub.shape[1]):
                k_c = h @ k_sub[s, j] @ h
                want = np.sum(k_c * t_c) / np.linalg.norm(k_c) / np.linalg.norm(t_c)
                np.testing.assert_allclose(curves["curve/kernel_alignment"][w, s, j], want, rtol=1e-9)
                if j:
                    v = (np.linalg.norm(k_sub[s, j] - k_sub[s, j - 1]) / np.linalg.norm(k_sub[s, j - 1])
                         / (times[j] - times[j - 1]))
                    np.testing.assert_allclose(curves["curve/kernel_velocity"][w, s, j], v, rtol=1e-9)
        after = np.asarray(curves["pred_test/after"][w], np.float64)  # (S, T, M)
        net = np.asarray(curves["pred_test/net"][w, :, -1], np.float64)  # (S, M)
        flags = A.after_checkpoints(times)
        rmse = np.sqrt(np.mean((after[:, flags] - net[:, None]) ** 2, axis=-1))
        np.testing.assert_allclose(curves["curve/after_vs_net_rmse"][w][:, flags], rmse, rtol=1e-12)
        limit = np.asarray(curves["pred_test/closed_emp_limit"][w, :, 0], np.float64)  # (S, M)
        rms = np.sqrt(np.mean(limit**2, axis=-1))
        assert np.all(np.sqrt(np.mean((after[:, 0] - limit) ** 2, axis=-1)) <= 1e-2 * rms)


def test_after_kernel_switch_resolves_per_trainer():
    """'auto' computes the after_* regression rows on the hand-written FC path only (NT's kernel on all N and the
    test set would cost ~20x a conv net's run); 'on'/'off' force it; anything else is one line naming the field."""
    from studylib import compare
    from studylib.config import ConfigError

    auto = compare.CompareConfig(widths=(8,), steps=4)
    assert auto.after_kernel_on(fast=True) and not auto.after_kernel_on(fast=False)
    on, off = (compare.CompareConfig(widths=(8,), steps=4, after_kernel=m) for m in ("on", "off"))
    assert on.after_kernel_on(fast=False) and not off.after_kernel_on(fast=True)
    with pytest.raises(ConfigError, match=r"after_kernel: unknown value 'yes'; accepted: auto, on, off"):
        compare.CompareConfig(widths=(8,), steps=4, after_kernel="yes")
