"""study.limits: NTK and μP runs side by side from stored summaries (no JAX)."""

import json

import pytest

from studylib import limits


def _summary(parameterization, values, slope, *, data="cubic", widths=(64, 128, 256)):
    metrics = {name: {"mean": list(values), "std": [0.1 * v for v in values]} for name, _, _ in limits.ROWS}
    return {"study": "compare", "centred": parameterization == "mup", "widths": list(widths),
            "fit_widths": list(widths),
            "config": {"data": {"name": data}, "model": {"parameterization": parameterization, "gamma0": 1.0,
                                                         "base_width": 64}},
            "metrics": metrics,
            "slopes": {name: {"slope": slope, "ci95": [slope - 0.1, slope + 0.1]} for name, _, _ in limits.ROWS}}


def test_table_puts_both_limits_beside_the_ntk_rates(tmp_path):
    runs = {"ntk": _summary("ntk", [1.0, 0.5, 0.25], -1.0), "mup": _summary("mup", [0.3, 0.3, 0.3], 0.0)}
    for label, s in runs.items():
        (tmp_path / label).mkdir()
        (tmp_path / label / "summary.json").write_text(json.dumps(s))
    loaded = limits.load([tmp_path / "ntk", tmp_path / "mup"])
    assert list(loaded) == ["ntk", "mup (n0=64), centred"]
    text = limits.table(loaded)
    row = next(line for line in text.splitlines() if line.startswith("| `rel_param_change`"))
    assert "1 -> 0.25, -1.00 [-1.10, -0.90]" in row and "0.3 -> 0.3, +0.00 [-0.10, +0.10]" in row
    assert row.endswith("| n^-1 |")
    paths = limits.figure(loaded, tmp_path / "fig")
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)


def test_runs_of_different_problems_are_refused():
    a, b = _summary("ntk", [1.0, 0.5, 0.25], -1.0), _summary("mup", [1.0, 1.0, 1.0], 0.0, data="digits")
    with pytest.raises(ValueError, match=r"config\.data differs"):
        limits.table({"a": a, "b": b})
    c = _summary("mup", [1.0, 1.0], 0.0, widths=(64, 128))
    with pytest.raises(ValueError, match=r"widths \[64, 128\] differ"):
        limits.table({"a": a, "c": c})
