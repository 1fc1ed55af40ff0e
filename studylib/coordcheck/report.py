"""The coordinate check's console table and REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

from studylib.tables import figure_links, fmt, setup_block, table

HEAD = ["parameterization", "quantity", "layer", "slope over width [95% CI]", "expected", "in CI"]
QUANTITIES = ("update", "size_init")


def slope_rows(summary: dict) -> list[list[str]]:
    rows = []
    for par, e in summary["parameterizations"].items():
        for q in QUANTITIES:
            for label, fit in zip(summary["layers"], e["slopes"][q], strict=True):
                lo, hi = fit["ci95"]
                ci = "n/a" if fit["slope"] is None else f"{fit['slope']:+.3f} [{fmt(lo, 3)}, {fmt(hi, 3)}]"
                ref = "–" if fit["reference"] is None else f"{fit['reference']:+g}"
                verdict = {True: "yes", False: "no", None: "–"}[fit["reference_in_ci95"]]
                rows.append([par, q, label, ci, ref, verdict])
    return rows


def _console(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), "-" * len(line(header))] + [line(r) for r in rows])


def richness(cfg: dict) -> tuple[int, float]:
    """(base width, gamma0) of a stored config: the model's (older summaries: the config's own fields)."""
    model = cfg["model"]
    return (model.get("base_width", cfg.get("base_width")), model.get("gamma0", cfg.get("gamma0")))


def _head(summary: dict) -> str:
    cfg = summary["config"]
    w = summary["widths"]
    base_width, gamma0 = richness(cfg)
    return (f"coordinate check: fc depth {cfg['model']['depth']} {cfg['model']['activation']}, widths {w[0]}…{w[-1]}, "
            f"base width {base_width}, gamma0 {fmt(gamma0)}, {cfg['steps']} GD steps at "
            f"{fmt(cfg['lr_fraction'])} x critical (lr {fmt(summary['learning_rate'])}), {cfg['seeds']} seeds, "
            f"{cfg['data']['name']} N = {cfg['data']['n_train']}, {cfg['dtype']}")


def format_table(summary: dict) -> str:
    """Console: the fitted slope over width of every layer's update (last step) and size at init."""
    return "\n".join([_head(summary), _console(HEAD, slope_rows(summary))])


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    parts = ["## The coordinate check: NTK parameterization and μP (`study.coordcheck`)\n",
             _head(summary) + ". Per layer the RMS over coordinates of the activation and of its change since "
             "θ₀; slopes of the seed mean against width (docs/mup.md).\n", setup_block(summary), "",
             table(HEAD, slope_rows(summary)), "", figure_links(figs, report_dir)]
    return "\n".join(parts)
