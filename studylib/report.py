"""``figures/REPORT.md``: the page a researcher reads first, written from stored results only.

Every number comes from a ``summary.json``; every figure is one the study stored. Sections
per study: the setup (from the stored config), final-time tables (mean ± std over seeds),
fitted slopes with 95% intervals beside the published rates, and the figures.
"""

from __future__ import annotations

from pathlib import Path

from studylib.results import read_json
from studylib.tables import figure_links, markdown_tables_to_latex, metrics_table, setup_block


def generic_section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    names = list(summary.get("metrics", {}))
    parts = [f"## `study.{summary.get('study')}`\n", setup_block(summary)]
    if names and "widths" in summary:
        try:
            parts += ["", metrics_table(summary, names)]
        except (KeyError, TypeError):
            pass
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)


#: The line that opens a folder's section of the report (``{}``: the folder as given).
SECTION_MARK = "<!-- from {}/summary.json -->"


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A report's text -> (its head, [(folder, section text), ...] in order), cut at the
    :data:`SECTION_MARK` lines; the inverse of how :func:`write_report` joins them."""
    import re

    marks = list(re.finditer(r"^<!-- from (.+)/summary\.json -->$", text, flags=re.M))
    head = text[:marks[0].start()] if marks else text
    sections = [(m.group(1), text[m.end():(marks[i + 1].start() if i + 1 < len(marks) else len(text))].strip("\n"))
                for i, m in enumerate(marks)]
    return head, sections


def write_report(folders, report_path: str | Path = "figures/REPORT.md", figure_dir: str | Path | None = None, *,
                 latex_path: str | Path | None = None, update: bool = False) -> Path:
    """Write the report for the given results folders; figures are (re)drawn from the stored
    results and copied into ``figure_dir`` (default: the report's folder). With ``latex_path``,
    also write every table of the report as a booktabs LaTeX table there
    (:func:`studylib.tables.markdown_tables_to_latex`: the same cells, so the same numbers).
    ``update``: keep the sections of the existing report whose folders are not given (as they are,
    written earlier from their own stored results), replace those that are, and append new ones."""
    from studylib import figures
    from studylib.results import atomic_write

    report_path = Path(report_path)
    report_dir = report_path.parent
    figure_dir = Path(figure_dir or report_dir)
    parts = ["# ntk-study report\n",
             "Written by `python -m study.report` from the stored results below; no number here is typed "
             "by hand. Re-run a study, then this command, to refresh it.\n"]
    fresh = {}
    for folder in folders:
        summary = read_json(Path(folder) / "summary.json")
        figs = figures.regenerate([folder], to=figure_dir)
        study = summary.get("study")
        section = figures.face(study).section if study in figures.STUDIES else generic_section
        fresh[str(folder).rstrip("/")] = section(summary, figs, report_dir)
    kept = split_sections(report_path.read_text())[1] if update and report_path.is_file() else []
    order = [f for f, _ in kept] + [f for f in fresh if f not in dict(kept)]
    for folder in order:
        parts += [SECTION_MARK.format(folder), fresh.get(folder, dict(kept).get(folder))]
    text = "\n\n".join(parts) + "\n"
    atomic_write(report_path, lambda f: f.write(text.encode()))
    if latex_path is not None:
        latex = ("% Tables of " + report_path.name + ", written by `python -m study.report --latex`;\n"
                 "% needs \\usepackage{booktabs}. Every number is read from a summary.json.\n\n"
                 + markdown_tables_to_latex(text))
        atomic_write(Path(latex_path), lambda f: f.write(latex.encode()))
    return report_path
