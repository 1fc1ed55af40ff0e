"""Figures regenerate from stored results alone; the report's numbers are the stored ones."""

import json
import re
import subprocess
import sys

import numpy as np

from studylib import figures, report


def _figure_names(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".pdf"))


def test_figures_regenerate_without_training_code(tiny_compare, tmp_path):
    before = _figure_names(tiny_compare)
    assert before, "the study wrote no figures"
    code = ("import sys; from study import figures; figures.main([sys.argv[1], '--to', sys.argv[2]]); "
            "bad = [m for m in ('jax', 'neural_tangents', 'studylib.compare.cell', 'studylib.training') "
            "if m in sys.modules]; print('IMPORTED', bad)")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_compare), str(tmp_path / "figs")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout
    assert _figure_names(tmp_path / "figs") == sorted(figures.copy_name(tiny_compare, "compare", n) for n in before)


def test_figures_of_two_folders_of_one_study_never_overwrite_each_other(tmp_path):
    """results/dynamics_seed and results/dynamics both draw dynamics_b1.png: copied into one
    folder they keep apart (before, REPORT.md showed the same images in both sections)."""
    names = {figures.copy_name(tmp_path / "results" / f, "dynamics", "dynamics_b1.png")
             for f in ("dynamics", "dynamics_seed", "mine")}
    assert names == {"dynamics_b1.png", "dynamics_seed_b1.png", "dynamics_mine_b1.png"}
    assert figures.copy_name(tmp_path / "compare", "compare", "compare_predictions.pdf") == "compare_predictions.pdf"


def test_report_tables_match_summary(tiny_compare, tmp_path):
    path = report.write_report([tiny_compare], tmp_path / "REPORT.md")
    text = path.read_text()
    summary = json.loads((tiny_compare / "summary.json").read_text())
    for name in ("rel_param_change", "rmse_net_vs_lin", "loss_net"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` | ") and "±" in line)
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        means = [float(c.split("±")[0]) for c in cells]
        np.testing.assert_allclose(means, summary["metrics"][name]["mean"], rtol=5e-3)  # 3 significant digits
    fit = summary["slopes"]["rel_param_change"]
    row = next(line for line in text.splitlines() if line.startswith("| `rel_param_change` | ") and "±" not in line)
    assert f"| {fit['slope']:+.2f} |" in row
    # Every embedded figure exists next to the report.
    for target in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (path.parent / target).is_file(), target
