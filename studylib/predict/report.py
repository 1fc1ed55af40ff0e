"""The prediction study's console table and REPORT.md section (from summary.json only)."""

from __future__ import annotations

from pathlib import Path

from studylib.tables import ci, figure_links, fmt, n_seeds, setup_block, table


def _ci(interval, seeds: int = 2) -> str:
    """A 95% bootstrap interval over seeds (:func:`studylib.tables.ci`: 'n/a (1 seed)' with one seed)."""
    return ci(*interval, seeds, digits=3)


def width_rows(summary: dict) -> list[list[str]]:
    """Per width: predicted gap (seed mean [95% CI], median, train rows), lr over the empirical critical
    rate (max over seeds), seconds of the expansion and of the training it replaces."""
    g, gt = summary["gap_predicted"], summary["gap_predicted_train"]
    gs = summary.get("gap_stalled", {"mean": [None] * len(summary["widths"])})
    rows = []
    for i, w in enumerate(summary["widths"]):
        c = summary["cost"][i]
        ratio = [v for v in summary["lr_over_critical_emp"][i] if v is not None]
        rows.append([str(w), f"{fmt(g['mean'][i])} {_ci(g['ci95'][i], n_seeds(summary))}", fmt(g["median"][i]),
                     fmt(gt["mean"][i]),
                     fmt(gs["mean"][i]),
                     fmt(max(ratio) if ratio else None, 3),
                     f"{fmt(c['expansion_seconds'] + c['recursion_seconds'], 2)} (+{fmt(c['compile_seconds'], 2)})",
                     fmt(c["training_seconds_model"], 2)])
    return rows


def network_text(summary: dict) -> str:
    """What the network is: ``summary['network']['text']`` (:func:`studylib.models.describe`: a user builder by
    its name, stax layers and parameter count), or for summaries without it the registered family's fields."""
    net = summary.get("network") or {}
    if net.get("text"):
        return net["text"]
    m = summary["config"]["model"]
    return f"{m['arch']} depth {m['depth']} {m['activation']} ({m['parameterization']} parameterization)"


HEAD = ["width", "predicted gap: mean [95% CI]", "median", "on training inputs", "stalled-mode gap",
        "lr / critical(K₀), max",
        "prediction s (+compile)", "training s (modelled)"]


def crossover_line(summary: dict, which: str = "first-order") -> str:
    """One sentence: the fitted rate and the width at which the predicted gap (``which``: 'first-order',
    or 'stalled' for the stalled-mode gap) reaches the threshold."""
    fit, x = ((summary["slope"], summary["crossover"]) if which == "first-order"
              else (summary["stalled"]["slope"], summary["stalled"]["crossover"]))
    if fit.get("slope") is None:
        return "no fit: fewer than two widths with a finite positive predicted gap"
    name = "predicted gap" if which == "first-order" else "stalled-mode gap"
    rate = f"{name} ~ n^{fit['slope']:+.2f} {_ci(fit['ci95'], n_seeds(summary))} over widths {fit['fit_widths'][0]}…" \
           f"{fit['fit_widths'][-1]}"
    thr = fmt(x["threshold"])
    if x["below_at_narrowest"]:
        where = f"below {thr} already at the narrowest width: wide enough at n ≤ {fmt(x['width'])}"
        if x.get("rising"):
            where = f"below {thr} at the narrowest width but rising with width: wide enough only over the fitted widths"
    elif x["width"] is None:
        where = f"the fit does not fall: no width reaches {thr}"
    else:
        beyond = " (extrapolated beyond the widest width)" if x["beyond_widest"] else ""
        where = f"{name} < {thr} from n ≈ {fmt(x['width'])} {_ci(x['ci95'], n_seeds(summary))}{beyond}"
    return f"{rate}; {where}"


def _console(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), "-" * len(line(header))] + [line(r) for r in rows])


def centring_text(summary: dict) -> str:
    """How the predicted run treats f(theta_0): 'centred f(θ) − f(θ₀)' or 'uncentred' (older summaries: uncentred)."""
    return "centred f(θ) − f(θ₀)" if summary.get("centred") else "uncentred"


def format_table(summary: dict) -> str:
    """Console: the predicted gap per width, the fitted rate, the predicted crossover and the caveats."""
    cfg = summary["config"]
    head = (f"first-order predicted gap (studylib.perturb) of {network_text(summary)} on {cfg['data']['name']} "
            f"(N = {cfg['data']['n_train']}, k = "
            f"{summary['outputs']}), {cfg['steps']} GD steps at {fmt(cfg['lr_fraction'])} x critical; route: "
            f"{summary['route']}; {centring_text(summary)}; nothing trained")
    parts = [head, _console(HEAD, width_rows(summary)), "", crossover_line(summary)]
    if summary["validity"]["relu"] and "stalled" in summary:
        parts.append(crossover_line(summary, "stalled") + " (ReLU: the diagnostic that tracks the measured gap)")
    parts += [f"caveat: {n}" for n in summary["validity"]["notes"]]
    return "\n".join(parts)


def section(summary: dict, figs: list[Path], report_dir: Path) -> str:
    cfg = summary["config"]
    parts = ["## How wide is wide enough, predicted without training (`study.predict`)\n",
             f"For {network_text(summary)} on {cfg['data']['name']} (N = "
             f"{cfg['data']['n_train']}, k = {summary['outputs']} output(s)): per width and seed the first-order "
             f"prediction of the network–linearization gap after {cfg['steps']} full-batch GD steps at "
             f"{fmt(cfg['lr_fraction'])} × the analytic critical rate, from θ₀ alone, {centring_text(summary)} "
             "(docs/predict.md). "
             "No network is trained.\n", setup_block(summary), "",
             table(HEAD, width_rows(summary)), "", "**" + crossover_line(summary) + "**"]
    if summary["validity"]["relu"] and "stalled" in summary:
        parts += ["", "**" + crossover_line(summary, "stalled") + "** (ReLU: the diagnostic that tracks the "
                  "measured gap, docs/regimes.md)"]
    if summary["validity"]["notes"]:
        parts += ["", *[f"* {n}" for n in summary["validity"]["notes"]]]
    parts += ["", figure_links(figs, report_dir)]
    return "\n".join(parts)
