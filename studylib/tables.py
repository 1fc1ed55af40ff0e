"""Markdown tables and number formats shared by every study's report section (no JAX)."""

from __future__ import annotations

import math
import os
from pathlib import Path


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
    from studylib.metrics import rate_label

    return rate_label(slope)


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
