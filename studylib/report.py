"""``figures/REPORT.md``: the page a researcher reads first, written from stored results only.

Every number comes from a ``summary.json``; every figure is one the study stored. Sections
per study: the setup (from the stored config), final-time tables (mean ± std over seeds),
fitted slopes with 95% intervals beside the published rates, and the figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from studylib.results import read_json


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{v:.{digits}g}"


def mean_std(mean, std) -> str:
    return "n/a" if mean is None else f"{fmt(mean)} ± {fmt(std, 2)}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; '|' inside cells is escaped."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def rate(slope: float) -> str:
    return {-0.5: "n^-1/2", -1.0: "n^-1", 0.5: "n^1/2", 1.0: "n"}.get(slope, f"n^{slope:g}")


def config_lines(cfg: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out += config_lines(v, prefix=f"{prefix}{k}.")
        else:
            out.append(f"`{prefix}{k}` = `{v}`")
    return out


def setup_block(summary: dict) -> str:
    v = summary.get("versions", {})
    lines = [
        "<details><summary>Stored configuration</summary>\n",
        "; ".join(config_lines(summary.get("config", {}))),
        "\n</details>\n",
        f"Wall time {fmt(summary.get('wall_seconds'))} s; "
        + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
    ]
    return "\n".join(lines)


def metrics_table(summary: dict, names: list[str]) -> str:
    widths = summary["widths"]
    rows = []
    for name in names:
        entry = summary["metrics"].get(name)
        if entry is None:
            continue
        rows.append([f"`{name}`"] + [mean_std(m, s) for m, s in zip(entry["mean"], entry["std"], strict=True)])
    return table(["metric (final step)"] + [f"n = {w}" for w in widths], rows)


def slopes_table(summary: dict, names: list[str]) -> str:
    rows = []
    for name in names:
        fit = summary.get("slopes", {}).get(name)
        if not fit or fit.get("slope") is None:
            continue
        lo, hi = fit["ci95"]
        ref = fit.get("reference") or {}
        rows.append([f"`{name}`", f"{fit['slope']:+.2f}", f"[{fmt(lo, 2)}, {fmt(hi, 2)}]",
                     "—" if not ref else rate(ref["slope"]), ref.get("source", "")])
    return table(["metric", "fitted slope", "95% CI (bootstrap over seeds)", "published", "source"], rows)


def figure_links(paths: list[Path], report_dir: Path) -> str:
    return "\n\n".join(f"![{p.stem}]({os.path.relpath(p, report_dir)})" for p in paths if p.suffix == ".png")


def compare_section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    from studylib.compare import TABLE_METRICS

    cfg = summary["config"]
    gaps = [m for m in TABLE_METRICS]
    slope_names = [m for m in summary.get("slopes", {}) if summary["slopes"][m].get("reference")]
    pw = summary["per_width"]
    lr_rows = [[str(p["width"]), fmt(p["learning_rate"]), fmt(p["lr_critical_inf"]),
                ", ".join(fmt(r, 2) for r in p["lr_over_critical_emp"]),
                ", ".join(str(s) for s in p["diverged_net_step"] if s >= 0) or "none",
                ", ".join(str(s) for s in p["diverged_lin_step"] if s >= 0) or "none"] for p in pw]
    conv = summary.get("conventions", {})
    parts = [
        "## Finite network vs linearization vs infinite width (`study.compare`)\n",
        f"Depth-{cfg['model']['depth']} `{cfg['model']['arch']}` network ({cfg['model']['activation']}, "
        f"{cfg['model']['parameterization']} parameterization, W_std = {fmt(cfg['model']['W_std'])}, "
        f"b_std = {fmt(cfg['model']['b_std'])}), data `{cfg['data']['name']}` with {cfg['data']['n_train']} "
        f"training points; full-batch GD for {cfg['steps']} steps, {cfg['seeds']} seeds per width. "
        + " ".join(f"{k.capitalize()}: {v}." for k, v in conv.items()),
        "",
        setup_block(summary),
        "\n### Final-time values (mean ± std over seeds)\n",
        metrics_table(summary, gaps),
        "\n### Fitted exponents against width, beside the published rates\n",
        slopes_table(summary, slope_names),
        "\n### Learning rate against the critical rates\n",
        table(["width", "learning rate", "2N/λmax(Θ)", "lr / (2N/λmax(K₀)) per seed", "network diverged at",
               "linearization diverged at"], lr_rows),
        "",
        figure_links(figs, report_dir),
    ]
    return "\n".join(parts)


#: study -> section writer(summary, figure paths, report folder) -> markdown.
SECTIONS: dict[str, Callable[[dict, list[Path], Path], str]] = {"compare": compare_section}


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


def write_report(folders, report_path: str | Path = "figures/REPORT.md", figure_dir: str | Path | None = None) -> Path:
    """Write the report for the given results folders; figures are (re)drawn from the stored
    results and copied into ``figure_dir`` (default: the report's folder)."""
    from studylib import figures
    from studylib.results import _atomic

    report_path = Path(report_path)
    report_dir = report_path.parent
    figure_dir = Path(figure_dir or report_dir)
    parts = ["# ntk-study report\n",
             "Written by `python -m study.report` from the stored results below; no number here is typed "
             "by hand. Re-run a study, then this command, to refresh it.\n"]
    for folder in folders:
        summary = read_json(Path(folder) / "summary.json")
        figs = figures.regenerate([folder], to=figure_dir)
        section = SECTIONS.get(summary.get("study"), generic_section)
        parts.append(f"<!-- from {folder}/summary.json -->")
        parts.append(section(summary, figs, report_dir))
    text = "\n\n".join(parts) + "\n"
    _atomic(report_path, lambda f: f.write(text.encode()))
    return report_path
