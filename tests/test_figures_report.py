"""Figures regenerate from stored results alone; the report's numbers are the stored ones."""

import itertools
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from studylib import figures


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


@pytest.fixture(scope="module")
def written(tiny_compare, tmp_path_factory):
    """``python -m study.report FOLDER --out REPORT.md --latex`` (in process) on the tiny run, once: the three
    tests below read the report and its LaTeX tables (each report redraws every figure: ~5 s)."""
    from study import report as entry

    path = tmp_path_factory.mktemp("report") / "REPORT.md"
    entry.main([str(tiny_compare), "--out", str(path), "--latex"])
    return path


def test_report_tables_match_summary(tiny_compare, written):
    path = written
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


def test_slopes_state_fit_widths_and_local_slopes(tiny_compare, written):
    """Every fitted rate names its widths; local slopes between neighbours are the log-ratio of the
    stored seed means; the sup and early gaps are the stored curves' max and step-32 values."""
    summary = json.loads((tiny_compare / "summary.json").read_text())
    widths = summary["widths"]
    fit = summary["slopes"]["rmse_net_vs_lin"]
    assert fit["fit_widths"] == summary["fit_widths"] == widths  # fewer than 3 widths >= 64: all of them
    mean = summary["metrics"]["rel_param_change"]["mean"]
    loc = summary["slopes"]["rel_param_change"]["local_slopes"]
    assert [e["widths"] for e in loc] == [widths[:2]]
    np.testing.assert_allclose(loc[0]["slope"], np.log(mean[1] / mean[0]) / np.log(widths[1] / widths[0]),
                               rtol=1e-9)
    curves = np.load(tiny_compare / "curves.npz")
    gap = curves["curve/rmse_net_vs_lin"]  # (W, S, T); the tiny run's 10 steps end before step 32
    np.testing.assert_allclose(summary["metrics"]["rmse_net_vs_lin_sup"]["per_seed"], gap.max(axis=2), rtol=1e-12)
    np.testing.assert_allclose(summary["metrics"]["rmse_net_vs_lin_early"]["per_seed"], gap[:, :, -1], rtol=1e-12)
    text = written.read_text()
    assert f"{widths[0]}→{widths[1]}" in text and "fit widths" in text
    from studylib.compare import format_table

    console = format_table(summary)
    assert f"slope n={widths[0]}..{widths[-1]}" in console and f"{widths[0]}->{widths[1]}" in console
    assert "rmse_net_vs_lin_sup" in console


def test_latex_tables(tiny_compare, written):
    tex = (written.parent / "REPORT_tables.tex").read_text()
    md = written.read_text()
    lines = md.splitlines()
    n_tables = sum(1 for a, b in itertools.pairwise(lines) if a.startswith("|") and b.startswith("|---"))
    assert n_tables > 0 and tex.count(r"\begin{tabular}") == n_tables
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == n_tables
    summary = json.loads((tiny_compare / "summary.json").read_text())
    fit = summary["slopes"]["rel_param_change"]
    assert rf"\texttt{{rel\_param\_change}} & {fit['slope']:+.2f} &" in tex
    body = re.sub(r"\\[a-zA-Z]+|\$[^$]*\$", "", tex)  # no unescaped specials left outside commands and math
    assert not re.search(r"(?<!\\)[_%#]", body.split("\n", 2)[2])
    # Every data row has as many cells as its header.
    for block in re.findall(r"\\toprule\n(.*?)\\bottomrule", tex, re.S):
        rows = [r for r in block.splitlines() if r.endswith(r"\\")]
        assert len({len(re.split(r"(?<!\\)&", r)) for r in rows}) == 1


def test_latex_text_escapes():
    from studylib import tables as T

    assert T.latex_text("`a_b` 50% ± λ₀") == r"\texttt{a\_b} 50\% $\pm$ $\lambda$$_0$"
    md = T.table(["x", "y|z"], [["1", "2"]])
    assert T.markdown_tables_to_latex("## T\n" + md).count(r"\\") == 2
