"""The compare figures' helper process started before the run (plots.prestart_figures): it imports
matplotlib while the run computes, draws its share of the figures when asked, and ends without drawing
when no figures are asked for."""

import subprocess
import sys

import pytest

from studylib.compare import plots


@pytest.fixture
def helper_on(monkeypatch):
    monkeypatch.setenv(plots.HELPER_ENV, "on")
    monkeypatch.setattr(plots, "_helper_wanted", lambda: True)  # also on a 1-core runner
    yield
    while plots._PRESTARTED:
        plots._PRESTARTED.pop().kill()


def test_prestarted_helper_draws_its_figures(tiny_compare, tmp_path, helper_on):
    plots.prestart_figures()
    assert len(plots._PRESTARTED) == 1
    helper = plots._PRESTARTED[0]
    plots.prestart_figures()  # one is enough
    assert plots._PRESTARTED == [helper]
    paths = plots.figures(tiny_compare, tmp_path)
    assert plots._PRESTARTED == []  # figures() took it ...
    assert helper.returncode == 0  # ... and it drew its figures and ended
    names = plots.figure_names(*plots._load(tiny_compare))
    theirs = [n for n in names if n in plots.HELPER_FIGURES]
    assert theirs  # the helper had figures to draw
    for name in names:  # every figure written once, in the order of figure_names, PNG and PDF
        assert [p.name for p in paths if p.stem == f"compare_{name}"] == [f"compare_{name}.png", f"compare_{name}.pdf"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)


def test_prestarted_helper_ends_without_drawing_at_end_of_input():
    code = "from studylib.compare.plots import helper_main; helper_main()"
    r = subprocess.run([sys.executable, "-c", code], input="", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""  # no figure list printed, no error


def test_a_run_that_stops_ends_its_prestarted_helper(tmp_path, monkeypatch, helper_on):
    from studylib import cli, runner

    started = []
    real = plots._start_helper
    monkeypatch.setattr(plots, "_start_helper", lambda *a: started.append(real(*a)) or started[-1])

    def stop(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", stop)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        cli.main("compare", "test", ["--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress"])
    assert len(started) == 1  # the helper was started before the run ...
    assert plots._PRESTARTED == [] and started[0].poll() is not None  # ... and ended with it
