"""``study.report --update``: one folder's section replaced or added, the others kept as written."""

from studylib import report


def test_update_replaces_one_section_and_keeps_the_others(tiny_compare, tmp_path):
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
