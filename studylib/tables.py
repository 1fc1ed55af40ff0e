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


#: What a 95% interval over seeds reads as when there is one seed (a bootstrap over one seed has zero width).
ONE_SEED = "n/a (1 seed)"


def n_seeds(summary: dict) -> int:
    """How many seeds (or ensemble members) a summary's statistics are over: ``summary['seeds']``, else the
    config's ``seeds`` / ``members``; 2 when unknown (an interval is then shown)."""
    if isinstance(summary.get("seeds"), list | tuple):
        return len(summary["seeds"])
    cfg = summary.get("config", {})
    return int(cfg.get("seeds") or cfg.get("members") or 2)


def ci(lo, hi, seeds: int = 2, *, digits: int = 2, signed: bool = False, sep: str = ", ") -> str:
    """A 95% bootstrap interval over seeds, '[lo, hi]' ('+' signs with ``signed``; None -> n/a, or an
    upper bound None -> '∞' when ``lo`` is set), or :data:`ONE_SEED` when there is one seed: resampling a
    single seed always draws it, so the interval has zero width and says nothing."""
    if seeds < 2:
        return ONE_SEED
    if signed:
        return "[" + sep.join("n/a" if v is None else f"{v:+.{digits}f}" for v in (lo, hi)) + "]"
    upper = "∞" if hi is None and lo is not None else fmt(hi, digits)
    return f"[{fmt(lo, digits)}{sep}{upper}]"


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


def width_range(widths) -> str:
    """'64…1024 (5)' for a list of fit widths; 'all' when unknown (summaries before fit ranges)."""
    if not widths:
        return "all"
    return f"{widths[0]}…{widths[-1]} ({len(widths)})"


def slopes_table(summary: dict, names: list[str]) -> str:
    """Fitted exponent, its 95% interval and the widths it was fitted on, beside the published rate."""
    rows = []
    for name in names:
        fit = summary.get("slopes", {}).get(name)
        if not fit or fit.get("slope") is None:
            continue
        lo, hi = fit["ci95"]
        ref = fit.get("reference") or {}
        rows.append([f"`{name}`", f"{fit['slope']:+.2f}", ci(lo, hi, n_seeds(summary)),
                     width_range(fit.get("fit_widths")), "—" if not ref else rate(ref["slope"]),
                     ref.get("source", "")])
    return table(["metric", "fitted slope", "95% CI (bootstrap over seeds)", "fit widths", "published", "source"],
                 rows)


def local_slopes_table(summary: dict, names: list[str]) -> str:
    """Local slope between each pair of neighbouring widths with its 95% bootstrap interval."""
    rows, pairs = [], None
    for name in names:
        loc = (summary.get("slopes", {}).get(name) or {}).get("local_slopes")
        if not loc:
            continue
        pairs = pairs or [f"{a}→{b}" for a, b in (e["widths"] for e in loc)]
        rows.append([f"`{name}`"] + ["n/a" if e["slope"] is None else
                                     f"{e['slope']:+.2f} {ci(*e['ci95'], n_seeds(summary))}"
                                     for e in loc])
    return table(["metric"] + (pairs or []), rows) if rows else ""


def figure_links(paths: list[Path], report_dir: Path) -> str:
    return "\n\n".join(f"![{p.stem}]({os.path.relpath(p, report_dir)})" for p in paths if p.suffix == ".png")


#: Characters of the Markdown tables and their LaTeX spelling (text mode).
_LATEX_SUBS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "$": r"\$", "^": r"\^{}", "~": r"\~{}", "|": r"$|$", "±": r"$\pm$", "−": r"$-$", "—": "---", "–": "--",
    "…": r"\ldots{}",
    "→": r"$\to$", "≥": r"$\geq$", "≤": r"$\leq$", "·": r"$\cdot$", "×": r"$\times$", "√": r"$\surd$",
    "α": r"$\alpha$", "η": r"$\eta$", "θ": r"$\theta$", "Θ": r"$\Theta$", "λ": r"$\lambda$", "σ": r"$\sigma$",
    "₀": r"$_0$", "²": r"$^2$", "∞": r"$\infty$", "‖": r"$\|$", "≈": r"$\approx$",
}


def latex_text(cell: str) -> str:
    """One Markdown table cell as LaTeX text: `code` becomes \\texttt, special characters are
    escaped and the few Unicode symbols the reports use become math (plain pdflatex compiles it)."""
    out, code = [], False
    for ch in cell.replace("\\|", "|"):
        if ch == "`":
            out.append("}" if code else r"\texttt{")
            code = not code
        else:
            out.append(_LATEX_SUBS.get(ch, ch))
    return "".join(out) + ("}" if code else "")


def latex_table(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    """A booktabs table (``\\usepackage{booktabs}``): toprule, header, midrule, rows, bottomrule."""
    spec = "l" + "r" * (len(header) - 1)
    body = [" & ".join(latex_text(c) for c in r) + r" \\" for r in rows]
    parts = [r"\begin{table}[ht]", r"\centering", r"\small"]
    if caption:
        parts.append(r"\caption{" + latex_text(caption) + "}")
    parts += [r"\begin{tabular}{" + spec + "}", r"\toprule", " & ".join(latex_text(c) for c in header) + r" \\",
              r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(parts)


def _split_row(line: str) -> list[str]:
    """Cells of one Markdown table row ('\\|' inside a cell is an escaped bar)."""
    cells, cur, i, body = [], "", 0, line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    while i < len(body):
        if body.startswith("\\|", i):
            cur, i = cur + "\\|", i + 2
        elif body[i] == "|":
            cells.append(cur.strip())
            cur, i = "", i + 1
        else:
            cur, i = cur + body[i], i + 1
    return [*cells, cur.strip()]


def markdown_tables_to_latex(text: str) -> str:
    """Every Markdown table of ``text`` (as :func:`table` writes them) as a booktabs table, captioned
    with the nearest heading above it; tables are separated by blank lines."""
    out, heading, lines, i = [], "", text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header, rows, i = _split_row(line), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_split_row(lines[i]))
                i += 1
            out.append(latex_table(header, rows, caption=heading))
            continue
        i += 1
    return "\n\n".join(out) + "\n"
