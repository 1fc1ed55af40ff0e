"""The controls' console table and REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

from studylib.tables import figure_links, fmt, setup_block, table


def _ci(fit: dict) -> str:
    lo, hi = fit["ci95"]
    return "n/a" if fit.get("slope") is None else f"{fit['slope']:+.2f} [{fmt(lo, 3)}, {fmt(hi, 3)}]"


def _verdict(fit: dict) -> str:
    v = fit.get("theory_in_ci95")
    return "n/a" if v is None else ("yes" if v else "no")


def lazy_rows(summary: dict) -> list[list[str]]:
    """One row per (activation, width, gap kind): exponent in alpha [95% CI], alphas fitted, verdict."""
    rows = []
    for e in summary.get("lazy", []):
        for key in ("gap", "gap_sup", "gap_interp", "gap_train", "gate_flips_train_all"):
            fit = e["slopes"][key]
            fa = list(fit["fit_widths"])
            rows.append([e["activation"], str(e["width"]), key, _ci(fit), f"{fmt(fa[0])}…{fmt(fa[-1])} ({len(fa)})",
                         "α^-1" if key.startswith("gap") else "(α^-1)", _verdict(fit)])
    return rows


def gate_rows(summary: dict) -> list[list[str]]:
    """Final fraction of flipped gates per hidden layer (seed mean), at the smallest and largest alpha."""
    rows = []
    for e in summary.get("lazy", []):
        flips = e["metrics"]["gate_flips_train"]["mean"]
        for i in sorted({0, len(e["alphas"]) - 1}):
            rows.append([e["activation"], str(e["width"]), fmt(e["alphas"][i])] + [fmt(v, 2) for v in flips[i]])
    return rows


def closing_rows(summary: dict) -> list[list[str]]:
    c = summary.get("closing")
    if not c:
        return []
    rows = []
    for key in ("rmse_net_vs_lin", "rmse_net_vs_lin_sup", "rmse_net_vs_lin_early", "rmse_net_vs_lin_interp",
                "rmse_net_vs_lin_train"):
        fit = c["slopes"][key]
        fw = fit["fit_widths"]
        row = [key, _ci(fit), f"{fw[0]}…{fw[-1]} ({len(fw)})", "n^-1/2", _verdict(fit)]
        if "mup" in fit:  # μP: the NTK rate is expected outside the interval, the gap not closing at it
            v = fit["mup"]["as_expected"]
            row[-1] += " (μP: expected no)"
            row.append("n/a" if v is None else ("yes" if v else "no"))
        rows.append(row)
    return rows


def closing_head(summary: dict) -> list[str]:
    """:data:`CLOSING_HEAD`, with μP's column when the fits carry its verdict."""
    c = summary.get("closing") or {}
    mup = any("mup" in f for f in c.get("slopes", {}).values())
    return CLOSING_HEAD + (["as μP expects (CI above -1/2)"] if mup else [])


def mup_text(summary: dict) -> str:
    """Under μP, what the closing control's verdict means (empty otherwise)."""
    c = summary.get("closing") or {}
    if c.get("setting", {}).get("parameterization") != "mup":
        return ""
    s = c["setting"]
    return (f"μP (base width {s['base_width']}, γ₀ = {fmt(s['gamma0'])}; γ = γ₀ √(n/n₀): "
            f"{', '.join(fmt(g, 3) for g in s['gamma'])}): the network learns features at every width and tends to "
            "the μP limit, not to its linearization (which is the NTK net's in function space), so the gap is expected "
            "not to close at n^-1/2 (it tends to a constant). 'no' in the theory's column is μP behaving as μP -- the "
            "regime where the theory is meant to fail -- not a failure of the apparatus; the last column says "
            "whether the whole 95% interval lies above -1/2.")


def closing_values(summary: dict) -> str:
    c = summary["closing"]
    rows = [[f"`{k}`"] + [f"{fmt(m)} ± {fmt(s, 2)}" for m, s in zip(c["metrics"][k]["mean"], c["metrics"][k]["std"],
                                                                    strict=True)]
            for k in ("rmse_net_vs_lin", "rmse_net_vs_lin_sup", "rmse_net_vs_lin_early", "loss_net", "loss_lin")]
    return table(["metric"] + [f"n = {w}" for w in c["widths"]], rows)


def lazy_values(summary: dict) -> str:
    rows = []
    for e in summary.get("lazy", []):
        for key in ("gap", "gap_interp", "gap_train", "loss", "rel_param_change", "gate_flips_train_all"):
            m = e["metrics"][key]
            rows.append([e["activation"], str(e["width"]), f"`{key}`"] + [fmt(v) for v in m["mean"]])
    alphas = summary["lazy"][0]["alphas"] if summary.get("lazy") else []
    return table(["activation", "width", "metric"] + [f"α = {fmt(a)}" for a in alphas], rows)


LAZY_HEAD = ["activation", "width", "quantity", "exponent in α [95% CI]", "alphas fitted", "theory",
             "theory's rate in CI"]
CLOSING_HEAD = ["metric", "exponent in n [95% CI]", "widths fitted", "published", "theory's rate in CI"]


def _console(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), "-" * len(line(header))] + [line(r) for r in rows])


def centring_text(setting: dict) -> str:
    """The closing control's models: 'centred f(θ) − f(θ₀)' or 'uncentred' (older summaries: uncentred)."""
    return "centred f(θ) − f(θ₀)" if setting.get("centred") else "uncentred"


def format_table(summary: dict) -> str:
    """Console: the lazy control's exponents in alpha and the closing control's in width, with verdicts."""
    parts = []
    if summary.get("lazy"):
        parts += ["lazy scaling (Chizat et al. 2019): gap = RMSE(g_alpha - g_lin) on the test grid, final step / sup "
                  "over checkpoints", _console(LAZY_HEAD, lazy_rows(summary)), "",
                  "fraction of gates flipped by the last step, per hidden layer (training inputs)",
                  _console(["activation", "width", "alpha"] + [f"l{i + 1}" for i in
                                                              range(len(gate_rows(summary)[0]) - 3)],
                           gate_rows(summary))]
    c = summary.get("closing")
    if c:
        s = c["setting"]
        parts += ["", f"closing control: x_range {fmt(s['x_range'])}, test grid on [-{fmt(s.get('test_range'))}, "
                  f"{fmt(s.get('test_range'))}], depth {s['depth']}, b_std {fmt(s['b_std'])}, "
                  f"{s['activation']}, {centring_text(s)}; early = step {c['early_step']}",
                  _console(closing_head(summary), closing_rows(summary))]
        if mup_text(summary):
            parts.append(mup_text(summary))
    return "\n".join(parts)


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    cfg = summary["config"]
    parts = ["## Positive controls: where the theory holds (`study.controls`)\n",
             "Each control is measured with the same trainer as the studies and summarised by a verdict: is the "
             "theory's exponent inside the 95% bootstrap interval (over seeds) of the fitted one?\n",
             setup_block(summary)]
    if summary.get("lazy"):
        parts += ["\n### Lazy scaling (Chizat, Oyallon & Bach 2019)\n",
                  f"g_α = α (f(θ) − f(θ₀)) trained at rate η/α² ({cfg['steps']} steps, {cfg['seeds']} seeds); "
                  "its linearization follows the same function-space path for every α. The theorem gives a gap "
                  "O(1/α) for models with a Lipschitz differential (erf), not for ReLU.\n",
                  table(LAZY_HEAD, lazy_rows(summary)),
                  "\nSeed means of the final-step values:\n", lazy_values(summary),
                  "\nFraction of activation gates flipped by the last step, per hidden layer (training inputs), "
                  "at the smallest and largest α:\n",
                  table(["activation", "width", "α"] + [f"layer {i + 1}" for i in range(cfg["model"]["depth"])],
                        gate_rows(summary))]
    if summary.get("closing"):
        c = summary["closing"]
        s = c["setting"]
        title = "A width sweep that closes the gap" + (" (under μP: that does not)" if mup_text(summary) else "")
        parts += [f"\n### {title}\n",
                  f"Inputs on [−{fmt(s['x_range'])}, {fmt(s['x_range'])}] (test grid on [−{fmt(s.get('test_range'))}, "
                  f"{fmt(s.get('test_range'))}]), depth {s['depth']}, b_std = "
                  f"{fmt(s['b_std'])}, {s['activation']}; network and linearization trained as in `study.compare`, "
                  f"{centring_text(s)}; "
                  f"early = step {c['early_step']}.\n",
                  table(closing_head(summary), closing_rows(summary)), "",
                  *([mup_text(summary), ""] if mup_text(summary) else []), closing_values(summary)]
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)
