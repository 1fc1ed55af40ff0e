"""Ctrl-C (studylib.interrupts, cli.main_guard, runner.run): a real SIGINT to this process, caught by
code that turns the KeyboardInterrupt into another error or swallows it whole, still ends the run as an
interruption -- one line, exit status 130, the finished cells kept -- while a plain error stays an error.

The signal is real (``os.kill`` of this process, on the main thread, where Python runs its handlers);
each test's ``sleep`` is only there for the signal to land inside the ``try`` that mangles it."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import os
import signal
import sys
import time
import types

import numpy as np
import pytest

from studylib import cli, interrupts, runner
from studylib.config import ConfigError
from studylib.data import DataConfig


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    widths: tuple[int, ...] = (2, 3, 4)
    dtype: str = "float32"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


def toy_study(calls: list) -> types.ModuleType:
    """Three cells (widths 2, 3, 4) computing arange(width); ``calls`` records the cells run."""
    s = types.ModuleType("toy")
    s.NAME, s.Config, s.ARRAYS_FILE, s.SWEEP_FIELDS = "toy", ToyConfig, "toy.npz", ("widths",)
    s.cells = lambda cfg, dataset: [runner.Cell(name=f"width{w}", spec={"width": w}, cost=1.0) for w in cfg.widths]
    s.prepare = lambda cfg, dataset, log: None
    s.notes = lambda cfg, cell, res: []

    def run_cell(cfg, cell, ctx, progress):
        calls.append(cell.name)
        return {"values": np.arange(cell.spec["width"], dtype=np.float64)}

    def summarise(cfg, cells, res, ctx, *, wall_seconds):
        return {"totals": [float(r["values"].sum()) for r in res]}, {}

    s.run_cell, s.summarise = run_cell, summarise
    return s


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Each test starts from Python's own SIGINT handler, whatever this process inherited: a test run
    started in the background of a shell (``cmd &``) ignores SIGINT, and the latch leaves that alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def sigint_here() -> None:
    """Send SIGINT to this process and wait for its handler to raise (it does at once: ``os.kill`` of
    the own process marks the signal before it returns, and the handler interrupts the sleep)."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)
    raise AssertionError("SIGINT did not interrupt the sleep")


def mangled_sigint() -> None:
    """What NT's ``utils.get_namedtuple`` does to a Ctrl-C: a bare ``except`` raising a ValueError."""
    try:
        sigint_here()
    except:  # noqa: E722 -- the point: code outside ours that catches everything
        raise ValueError("`get_namedtuple` functions must have a `get` argument.") from None


def swallowed_sigint() -> None:
    try:
        sigint_here()
    except:  # noqa: E722
        pass


def test_latch_records_sigint_restores_the_handler_and_forgets_on_exit():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the fixture's
    with interrupts.latch():
        assert not interrupts.seen()
        with pytest.raises(KeyboardInterrupt):  # still raised, where the default handler would raise it
            sigint_here()
        assert interrupts.seen()
        with interrupts.latch():  # re-entrant: an inner latch keeps the outer one's record
            assert interrupts.seen()
        assert interrupts.seen()
    assert not interrupts.seen() and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_latch_leaves_another_handler_alone():
    def theirs(signum, frame):
        raise RuntimeError("the embedding program's handler")

    previous = signal.signal(signal.SIGINT, theirs)
    try:
        with interrupts.latch():
            assert signal.getsignal(signal.SIGINT) is theirs
    finally:
        signal.signal(signal.SIGINT, previous)


def test_main_guard_turns_a_mangled_ctrl_c_into_one_line_and_130(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main_guard(mangled_sigint, command=("python -m study.compare", ["--out", "o"]))
    err = capsys.readouterr().err
    assert stop.value.code == 130 and err == "interrupted; resume with: python -m study.compare --out o\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not interrupts.seen()


def test_main_guard_keeps_errors_that_are_not_interrupts(capsys):
    def fails():
        raise ValueError("a real failure")

    with pytest.raises(ValueError, match="a real failure"):
        cli.main_guard(fails)

    def bad_config():
        raise ConfigError("widths: must be positive")

    with pytest.raises(SystemExit) as stop:
        cli.main_guard(bad_config)
    assert stop.value.code == 2 and capsys.readouterr().err == "error: widths: must be positive\n"


def test_ctrl_c_inside_an_nt_layer_is_an_interruption(monkeypatch, capsys):
    """The path of the failure seen in CI: SIGINT while ``stax.Relu()`` inspects its kernel function.
    Without the latch this exits 1 with NT's ValueError."""
    from studylib.nt import stax

    real = inspect.getfullargspec
    sent = []

    def getfullargspec(fn):
        if not sent:
            sent.append(fn)
            sigint_here()
        return real(fn)

    monkeypatch.setattr(inspect, "getfullargspec", getfullargspec)
    with pytest.raises(SystemExit) as stop:
        cli.main_guard(stax.Relu)
    assert sent and stop.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def sigint_in_gc_callback() -> None:
    """A SIGINT landing in a gc callback (JAX registers one): Python swallows the KeyboardInterrupt and
    only reports it through ``sys.unraisablehook``."""
    def callback(phase, info):
        gc.callbacks.remove(callback)
        sigint_here()

    gc.callbacks.append(callback)
    gc.collect()


def test_latch_keeps_a_swallowed_ctrl_c_off_stderr_but_not_other_unraisable_errors(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with interrupts.latch():
        sigint_in_gc_callback()  # returns: the interpreter swallowed the KeyboardInterrupt
        assert interrupts.seen() and reported == []

        def fails(phase, info):
            gc.callbacks.remove(fails)
            raise ValueError("a real error in a callback")

        gc.callbacks.append(fails)
        gc.collect()
    assert [type(r.exc_value) for r in reported] == [ValueError]  # still reported, by the hook that was there
    assert sys.unraisablehook == reported.append


@pytest.mark.parametrize(("how", "reports", "stored"), [
    (mangled_sigint, True, 1),         # stops in the cell: cell 1 stored
    (swallowed_sigint, True, 1),       # stops at the cell's next progress report
    (swallowed_sigint, False, 2),      # a cell that reports no progress finishes and is stored; none after it runs
    (sigint_in_gc_callback, True, 1),  # swallowed by Python itself
], ids=["mangled", "swallowed", "swallowed-no-report", "gc-callback"])
def test_run_stops_as_interrupted_when_a_library_mangles_or_swallows_ctrl_c(tmp_path, how, reports, stored):
    """Cell 2 of 3 meets the Ctrl-C; the run raises Interrupted with the cells stored before it, and the
    next run of the config resumes from them."""
    calls: list = []
    study = toy_study(calls)
    original = study.run_cell

    def run_cell(cfg, cell, ctx, progress):
        if cell.name == "width3":
            how()
            if reports:
                progress(0.5)
        return original(cfg, cell, ctx, progress)

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
