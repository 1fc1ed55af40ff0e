"""Ctrl-C (studylib.interrupts, cli.main_guard; runner.run in test_runner.py): a real SIGINT to this
process, caught by code that turns the KeyboardInterrupt into another error or swallows it whole, still
ends the run as an interruption -- one line, exit status 130 -- while a plain error stays an error.

The signal is real: the ``sigint`` fixture (tests/conftest.py) sends it to this process."""

from __future__ import annotations

import gc
import inspect
import signal
import sys

import pytest

from studylib import cli, interrupts
from studylib.config import ConfigError


def test_latch_records_sigint_restores_the_handler_and_forgets_on_exit(sigint):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the fixture's
    with interrupts.latch():
        assert not interrupts.seen()
        with pytest.raises(KeyboardInterrupt):  # still raised, where the default handler would raise it
            sigint.here()
        assert interrupts.seen()
        with interrupts.latch():  # re-entrant: an inner latch keeps the outer one's record
            assert interrupts.seen()
        assert interrupts.seen()
    assert not interrupts.seen() and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_latch_leaves_another_handler_alone(sigint):
    def theirs(signum, frame):
        raise RuntimeError("the embedding program's handler")

    previous = signal.signal(signal.SIGINT, theirs)
    try:
        with interrupts.latch():
            assert signal.getsignal(signal.SIGINT) is theirs
    finally:
        signal.signal(signal.SIGINT, previous)


def test_main_guard_turns_a_mangled_ctrl_c_into_one_line_and_130(sigint, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main_guard(sigint.mangled, command=("python -m study.compare", ["--out", "o"]))
    err = capsys.readouterr().err
    assert stop.value.code == 130 and err == "interrupted; resume with: python -m study.compare --out o\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not interrupts.seen()


def test_main_guard_keeps_errors_that_are_not_interrupts(sigint, capsys):
    def fails():
        raise ValueError("a real failure")

    with pytest.raises(ValueError, match="a real failure"):
        cli.main_guard(fails)

    def bad_config():
        raise ConfigError("widths: must be positive")

    with pytest.raises(SystemExit) as stop:
        cli.main_guard(bad_config)
    assert stop.value.code == 2 and capsys.readouterr().err == "error: widths: must be positive\n"


def test_ctrl_c_inside_an_nt_layer_is_an_interruption(sigint, monkeypatch, capsys):
    """The path of the failure seen in CI: SIGINT while ``stax.Relu()`` inspects its kernel function.
    Without the latch this exits 1 with NT's ValueError."""
    from studylib.nt import stax

    real = inspect.getfullargspec
    sent = []

    def getfullargspec(fn):
        if not sent:
            sent.append(fn)
            sigint.here()
        return real(fn)

    monkeypatch.setattr(inspect, "getfullargspec", getfullargspec)
    with pytest.raises(SystemExit) as stop:
        cli.main_guard(stax.Relu)
    assert sent and stop.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_latch_keeps_a_swallowed_ctrl_c_off_stderr_but_not_other_unraisable_errors(sigint, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with interrupts.latch():
        sigint.in_gc_callback()  # returns: the interpreter swallowed the KeyboardInterrupt
        assert interrupts.seen() and reported == []

        def fails(phase, info):
            gc.callbacks.remove(fails)
            raise ValueError("a real error in a callback")

        gc.callbacks.append(fails)
        gc.collect()
    assert [type(r.exc_value) for r in reported] == [ValueError]  # still reported, by the hook that was there
    assert sys.unraisablehook == reported.append
