"""The one run loop (studylib.runner) on a toy study: order of writes, cell storage and keys,
reuse, stale cells, interruption, notes, and the cost-weighted progress bar."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import numpy as np
import pytest

from studylib import results, runner
from studylib.data import DataConfig
from studylib.runner import Cell


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    widths: tuple[int, ...] = (2, 3, 4)
    scale: float = 1.0
    dtype: str = "float32"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


def toy_study(calls: list) -> types.ModuleType:
    """A study face whose cells compute scale * arange(width) and record every call."""
    s = types.ModuleType("toy")
    s.NAME, s.Config, s.ARRAYS_FILE, s.SWEEP_FIELDS = "toy", ToyConfig, "toy.npz", ("widths",)

    def cells(cfg, dataset):
        return [Cell(name=f"width{w}", spec={"width": w}, cost=float(w), label=f"w {w}") for w in cfg.widths]

    def prepare(cfg, dataset, log):
        return {"n_train": len(dataset.x_train)}

    def run_cell(cfg, cell, ctx, progress):
        calls.append(cell.name)
        progress(0.5)
        w = cell.spec["width"]
        return {"values": cfg.scale * np.arange(w, dtype=np.float64), "label": cell.label, "n": ctx.shared["n_train"],
                "nested": {"sq": np.arange(w) ** 2}, "diverged": w == 4}

    def notes(cfg, cell, res):
        return [f"note: {cell.name} diverged"] if res["diverged"] else []

    def summarise(cfg, cells_, res, ctx, *, wall_seconds):
        return ({"study": "toy", "totals": [float(r["values"].sum()) for r in res], "n": res[0]["n"]},
                {"values_w2": res[0]["values"]})

    s.cells, s.prepare, s.run_cell, s.notes, s.summarise = cells, prepare, run_cell, notes, summarise
    return s


def test_run_writes_config_first_stores_cells_and_reuses_them(tmp_path):
    calls: list = []
    study = toy_study(calls)
    seen_config = []
    original = study.run_cell

    def run_cell(cfg, cell, ctx, progress):
        seen_config.append((tmp_path / "config.json").is_file())  # config.json exists before any cell runs
        return original(cfg, cell, ctx, progress)

    study.run_cell = run_cell
    log: list[str] = []
    summary = runner.run(study, ToyConfig(), tmp_path, progress=False, log=log.append)
    assert seen_config == [True, True, True]
    assert summary["totals"] == [1.0, 3.0, 6.0] and summary["n"] == 10
    assert json.loads((tmp_path / "summary.json").read_text())["totals"] == [1.0, 3.0, 6.0]
    assert np.array_equal(np.load(tmp_path / "toy.npz")["values_w2"], [0.0, 1.0])
    assert log[0].startswith("devices: ") and "note: width4 diverged" in log
    stored = sorted(p.name for p in (tmp_path / "cells").glob("*.npz"))
    assert [p.split("-")[0] for p in stored] == ["width2", "width3", "width4"]
    # Re-run: every cell is reused, none computed, the same summary.
    calls.clear()
    log.clear()
    again = runner.run(study, ToyConfig(), tmp_path, progress=False, log=log.append)
    assert calls == [] and again["totals"] == summary["totals"]
    assert sum("reusing" in line for line in log) == 3
    # A stored cell reads back exactly as computed (arrays, strings, bools, ints, nested dicts).
    cell = results.load_cell(tmp_path / "cells" / stored[2])
    assert cell["label"] == "w 4" and cell["diverged"] is True and cell["n"] == 10
    assert np.array_equal(cell["nested"]["sq"], [0, 1, 4, 9]) and cell["values"].dtype == np.float64
    # force recomputes.
    runner.run(study, ToyConfig(), tmp_path, progress=False, force=True, log=log.append)
    assert len(calls) == 3


def test_cell_keys_follow_what_determines_the_numbers():
    study = toy_study([])
    cell = Cell(name="width2", spec={"width": 2}, cost=1.0)
    base = runner.cell_key(study, ToyConfig(), cell)
    assert len(base) == 16
    # The sweep (other widths) does not change a cell's key; its own settings do.
    assert runner.cell_key(study, ToyConfig(widths=(2, 9)), cell) == base
    assert runner.cell_key(study, ToyConfig(scale=2.0), cell) != base
    assert runner.cell_key(study, ToyConfig(data=DataConfig(n_train=12)), cell) != base
    assert runner.cell_key(study, ToyConfig(), Cell(name="width2", spec={"width": 3}, cost=1.0)) != base


def test_stale_cells_are_reported_and_cleaned(tmp_path):
    study = toy_study([])
    runner.run(study, ToyConfig(), tmp_path, progress=False, log=lambda _: None)
    log: list[str] = []
    runner.run(study, ToyConfig(scale=2.0), tmp_path, progress=False, log=log.append)
    assert any("3 cell file(s)" in line and "--clean" in line for line in log)
    assert len(list((tmp_path / "cells").glob("*.npz"))) == 6
    log.clear()
    runner.run(study, ToyConfig(scale=2.0), tmp_path, progress=False, clean=True, log=log.append)
    assert any("removed 3 stale" in line for line in log)
    assert len(list((tmp_path / "cells").glob("*.npz"))) == 3
    # A file that is not a cell of this study is never touched.
    (tmp_path / "cells" / "notes-0123456789abcdef.npz").write_bytes(b"")
    runner.run(study, ToyConfig(scale=2.0), tmp_path, progress=False, clean=True, log=log.append)
    assert (tmp_path / "cells" / "notes-0123456789abcdef.npz").exists()


def test_interrupted_run_keeps_finished_cells_and_resumes(tmp_path):
    calls: list = []
    study = toy_study(calls)
    with pytest.raises(KeyboardInterrupt):
        runner.run(study, ToyConfig(), tmp_path, progress=False, stop_after=1, log=lambda _: None)
    assert not (tmp_path / "summary.json").exists()
    assert len(list((tmp_path / "cells").glob("*.npz"))) == 1
    calls.clear()
    runner.run(study, ToyConfig(), tmp_path, progress=False, log=lambda _: None)
    assert calls == ["width3", "width4"]


@pytest.mark.parametrize(("how", "reports", "stored"), [
    ("mangled", True, 1),          # stops in the cell: cell 1 stored
    ("swallowed", True, 1),        # stops at the cell's next progress report
    ("swallowed", False, 2),       # a cell that reports no progress finishes and is stored; none after it runs
    ("in_gc_callback", True, 1),   # swallowed by Python itself
], ids=["mangled", "swallowed", "swallowed-no-report", "gc-callback"])
def test_run_stops_as_interrupted_when_a_library_mangles_or_swallows_ctrl_c(tmp_path, sigint, how, reports, stored):
    """A real Ctrl-C in cell 2 of 3 that a library turned into another error or swallowed
    (studylib.interrupts): the run raises Interrupted with the cells stored before it, Python's handler is
    back, and the next run of the config resumes from them."""
    import signal

    from studylib import interrupts

    calls: list = []
    study = toy_study(calls)
    original = study.run_cell

    def run_cell(cfg, cell, ctx, progress):
        if cell.name == "width3":
            getattr(sigint, how)()
        return original(cfg, cell, ctx, progress if reports else (lambda _: None))

    study.run_cell = run_cell
    with pytest.raises(runner.Interrupted) as stop:
        runner.run(study, ToyConfig(), tmp_path, progress=False, log=lambda _: None)
    assert (stop.value.stored, stop.value.total) == (stored, 3)
    assert len(list((tmp_path / "cells").glob("*.npz"))) == stored and not (tmp_path / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not interrupts.seen()
    study.run_cell = original
    calls.clear()
    summary = runner.run(study, ToyConfig(), tmp_path, progress=False, log=lambda _: None)
    assert calls == ["width2", "width3", "width4"][stored:] and summary["totals"] == [1.0, 3.0, 6.0]


def test_progress_counts_modelled_cost_and_leaves_reused_cells_out():
    bar = runner.Progress(10.0, enabled=False)
    a, b = Cell("a", {}, 4.0), Cell("b", {}, 6.0)
    bar.skip(a)  # reused: takes no time, so it must not count as work done at the run's rate
    assert bar.total == pytest.approx(6.0) and bar.done == 0
    p = bar.start(b)
    p(0.5)
    assert bar.done == pytest.approx(3.0)
    p(0.25)  # never goes backwards
    assert bar.done == pytest.approx(3.0)
    bar.finish(p)
    assert bar.done == pytest.approx(6.0)
    bar.close()


def test_x64_follows_the_config(monkeypatch):
    study = toy_study([])
    assert not runner.needs_x64(study, ToyConfig())
    assert runner.needs_x64(study, ToyConfig(dtype="float64"))
    study.needs_x64 = lambda cfg: True
    assert runner.needs_x64(study, ToyConfig())


def test_runner_module_imports_no_jax():
    """The runner is imported by every study's face (and so by --help): it must stay light."""
    import subprocess

    code = "import studylib.runner, sys; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_a_run_of_another_config_removes_the_old_summary_before_it_starts(tmp_path):
    """The folder never holds one config's summary beside another's config.json: a run of another
    config removes the old summary and arrays (one note) before writing its config, so an interrupted
    one leaves none; cells stay, and the first config's run reuses them all."""
    calls: list = []
    study = toy_study(calls)
    first = runner.run(study, ToyConfig(), tmp_path, progress=False, log=lambda _: None)
    assert first[results.FINGERPRINT_KEY] == results.config_fingerprint(json.loads((tmp_path / "config.json")
                                                                                   .read_text()))
    log: list[str] = []
    with pytest.raises(runner.Interrupted) as stop:
        runner.run(study, ToyConfig(scale=2.0), tmp_path, progress=False, stop_after=0, log=log.append)
    assert (stop.value.stored, stop.value.total) == (0, 3)  # none of the new config's cells exists yet
    assert json.loads((tmp_path / "config.json").read_text())["scale"] == 2.0
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "toy.npz").exists()
    assert any(line.startswith(f"note: {tmp_path} held a run of another config (differs in: scale)") for line in log)
    calls.clear()
    again = runner.run(study, ToyConfig(), tmp_path, progress=False, log=lambda _: None)
    assert calls == [] and again["totals"] == first["totals"]
    # the same config again, interrupted: its summary matches and stays (a resume keeps it valid)
    with pytest.raises(runner.Interrupted) as stop:
        runner.run(study, ToyConfig(), tmp_path, progress=False, force=True, stop_after=0, log=lambda _: None)
    assert (stop.value.stored, stop.value.total) == (3, 3) and (tmp_path / "summary.json").exists()
