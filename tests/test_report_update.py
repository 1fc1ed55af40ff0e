"""``study.report --update``: one folder's section replaced or added, the others kept as written."""

from pathlib import Path

from studylib import figures, report


def test_update_replaces_one_section_and_keeps_the_others(tiny_compare, tmp_path, monkeypatch):
    # The sections are what this test is about: each report takes the figures the run drew (listed, not redrawn:
    # ~5 s per report). Redrawing them for a report is tested in tests/test_figures_report.py.
    drawn = sorted(p for p in tiny_compare.iterdir() if p.suffix in (".png", ".pdf"))
    assert drawn

    def listed(folder):
        assert Path(folder) == tiny_compare, folder  # only the given folder's figures are (re)made
        return drawn

    monkeypatch.setattr(figures, "figures_for", listed)
    path = tmp_path / "REPORT.md"
    other = "## `study.somewhere`\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    path.write_text("# ntk-study report\n\nhead\n\n" + report.SECTION_MARK.format("results/other") + "\n\n" + other
                    + "\n\n" + report.SECTION_MARK.format(str(tiny_compare)) + "\n\nstale numbers\n")
    text = report.write_report([tiny_compare], path, update=True).read_text()
    _, sections = report.split_sections(text)
    assert [f for f, _ in sections] == ["results/other", str(tiny_compare)]  # order kept
    assert sections[0][1] == other  # untouched
    assert "stale numbers" not in text and "study.compare" in sections[1][1]
    # without --update the report holds the given folders only
    _, alone = report.split_sections(report.write_report([tiny_compare], path).read_text())
    assert [f for f, _ in alone] == [str(tiny_compare)]
    # a folder not yet in the report is appended
    path.write_text("# r\n\n" + report.SECTION_MARK.format("results/other") + "\n\n" + other + "\n")
    _, added = report.split_sections(report.write_report([tiny_compare], path, update=True).read_text())
    assert [f for f, _ in added] == ["results/other", str(tiny_compare)]
