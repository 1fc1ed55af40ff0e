"""Results that can never go stale (issue 23, item 2): cell keys cover a user builder's source and a
data file's content; a folder never holds the summary of one config beside the config of another;
``--figures-only`` refuses a summary that does not match its folder; ``--out`` problems and Ctrl-C
are one line each. The end-to-end tests run ``study.compare`` in this process at a tiny size
(:data:`TINY`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from studylib import cli, results, runner
from studylib.config import ConfigError

#: The tiny preset cut down further: one width of depth 1, 5 steps, 21 test points, no quadrature
#: (about 2.5 s per computed width here, compilation included; the machine was shared).
TINY = ["--preset", "tiny", "--widths", "8", "--steps", "5", "--checkpoints", "2", "--seeds", "1", "--depth", "1",
        "--n-test", "21", "--quad-max-width", "0", "--no-progress", "--no-figures"]


def compare(args: list[str]) -> None:
    from study import compare as entry

    entry.main([*TINY, *args])


def write_builder(folder: Path, name: str, scale: float) -> None:
    """A plugin builder whose first layer's W_std comes from a sibling module (edited by the tests)."""
    (folder / f"{name}_consts.py").write_text(f"SCALE = {scale!r}\n")
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""
        from studylib.nt import stax
        from {name}_consts import SCALE


        def build(width, cfg, out_dim=1):
            return stax.serial(stax.Dense(width, W_std=SCALE), stax.Relu(), stax.Dense(out_dim))
        """))


def forget(name: str) -> None:
    """Drop a plugin and its sibling from this process's modules, as a new process would start."""
    for m in (name, f"{name}_consts"):
        sys.modules.pop(m, None)


def cell_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "cells").glob("*.npz"))


# ------------------------------------------------------------------------------------------ fingerprints


def test_builder_fingerprint_follows_the_module_folder_and_refuses_a_stale_import(tmp_path, monkeypatch):
    from studylib.models import builder_fingerprint

    monkeypatch.syspath_prepend(str(tmp_path))
    write_builder(tmp_path, "fp_net", 1.0)
    first = builder_fingerprint("fp_net:build")
    assert len(first) == 16 and builder_fingerprint("fp_net:build") == first
    assert builder_fingerprint("fc") is None and builder_fingerprint("cnn") is None  # the study's own code
    # An edit of a sibling the builder imports changes it; this process still holds the old code, so
    # the fingerprint refuses rather than key the old network's cells by the new source.
    (tmp_path / "fp_net_consts.py").write_text("SCALE = 2.0\n")
    with pytest.raises(ConfigError, match=r"model\.arch: the source of 'fp_net' changed"):
        builder_fingerprint("fp_net:build")
    forget("fp_net")  # a fresh process
    second = builder_fingerprint("fp_net:build")
    assert second != first
    # Independent computation: length-prefixed (name, bytes) of each .py of the folder, sorted.
    digest = hashlib.sha256()
    for p in sorted(tmp_path.glob("*.py")):
        name, content = p.name.encode(), p.read_bytes()
        digest.update(len(name).to_bytes(8, "little") + name + len(content).to_bytes(8, "little") + content)
    assert second == digest.hexdigest()[:16]
    forget("fp_net")


def test_data_fingerprint_is_the_file_content_hash(tmp_path):
    from studylib.data import DataConfig, data_fingerprint

    path = tmp_path / "d.npz"
    x = np.linspace(-3, 3, 8)[:, None]
    np.savez(path, x=x, y=x[:, 0] ** 3 / 20)
    cfg = DataConfig(name="file", path=str(path))
    first = data_fingerprint(cfg)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert data_fingerprint(DataConfig()) is None
    np.savez(path, x=x, y=-x[:, 0])  # same name, same size, other targets
    assert data_fingerprint(cfg) == hashlib.sha256(path.read_bytes()).hexdigest()[:16] != first


def test_keys_of_plain_runs_are_unchanged_and_inputs_enter_the_others():
    """A run with neither a user builder nor a data file hashes exactly the pre-fingerprint blob (its
    stored cells stay valid); a fingerprint changes the key."""
    import jax

    from studylib import compare as study
    from studylib.compare import CompareConfig
    from studylib.runner import Cell

    cfg, cell = CompareConfig(), Cell(name="width8", spec={"width": 8}, cost=1.0)
    legacy = json.dumps({"format": runner.CELL_FORMAT, "study": "compare", "config": runner.key_config(study, cfg),
                         "cell": cell.spec, "versions": results.versions(), "x64": bool(jax.config.jax_enable_x64)},
                        sort_keys=True, default=str)
    assert runner.input_fingerprints(cfg) == {}
    assert runner.cell_key(study, cfg, cell) == hashlib.sha256(legacy.encode()).hexdigest()[:16]
    assert runner.cell_key(study, cfg, cell, inputs={"data.path": "0" * 16}) != runner.cell_key(study, cfg, cell)
    # config.json of a plain run unchanged: the ModelConfig fields added for mu-P (gamma0, base_width) are left
    # out while they change nothing, so record and key hold exactly what they held before those fields existed
    before = dataclasses.asdict(cfg)
    before["model"] = {k: v for k, v in before["model"].items() if k not in ("gamma0", "base_width")}
    assert runner.config_record(cfg, {}) == before
    assert runner.key_config(study, cfg)["model"] == before["model"]


# ------------------------------------------------------------------------------------------ end to end


def test_edited_builder_recomputes_and_an_unchanged_one_is_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_builder(tmp_path, "stale_net", 1.0)
    out = tmp_path / "out"
    args = ["--arch", "stale_net:build", "--out", str(out)]
    compare(args)
    first = json.loads((out / "summary.json").read_text())
    (tmp_path / "stale_net_consts.py").write_text("SCALE = 1.7\n")  # a constant of the builder's folder
    forget("stale_net")
    capsys.readouterr()
    compare(args)
    printed = capsys.readouterr()
    assert "reusing" not in printed.out + printed.err  # before: "width 8: reusing ..." and the old network
    assert "the source of model.arch" in printed.out + printed.err  # the note that replaced the old summary
    second = json.loads((out / "summary.json").read_text())
    assert len(cell_files(out)) == 2
    assert second["metrics"] != first["metrics"]  # another network: W_std 1.7 instead of 1.0
    forget("stale_net")
    compare(args)  # nothing changed: reused, same numbers
    assert "width 8: reusing" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["metrics"] == second["metrics"]
    forget("stale_net")


def test_overwritten_data_file_recomputes(tmp_path, capsys):
    path, out = tmp_path / "d.npz", tmp_path / "out"
    x = np.linspace(-3, 3, 8)[:, None]
    np.savez(path, x=x, y=x[:, 0] ** 3 / 20)
    args = ["--data", "file", "--data-path", str(path), "--out", str(out)]
    compare(args)
    before = results.read_npz(out / "curves.npz")
    np.savez(path, x=x, y=np.sin(x[:, 0]))  # same file name, other targets
    capsys.readouterr()
    compare(args)
    assert "reusing" not in capsys.readouterr().out
    after = results.read_npz(out / "curves.npz")
    # the stored targets are the new file's, and the predictions moved with them (trained on them)
    np.testing.assert_array_equal(np.ravel(after["y_train"]), np.sin(x[:, 0]))
    assert not np.array_equal(np.ravel(before["y_train"]), np.ravel(after["y_train"]))
    assert len(cell_files(out)) == 2


def test_interrupted_other_config_never_leaves_the_old_summary_and_figures_only_refuses(tmp_path, capsys,
                                                                                          monkeypatch):
    """Run A (width 8); then B (widths 8,16 with --force) stopped by Ctrl-C (the runner's stop_after hook)
    before its first cell: one line, exit 130, A's summary gone (before: it stayed beside B's config.json
    and --figures-only drew it), --figures-only refuses; A again reuses its cell and gets its summary back;
    a summary whose config.json was changed is refused."""
    out = tmp_path / "out"
    compare(["--out", str(out)])
    a_summary = json.loads((out / "summary.json").read_text())
    assert a_summary[results.FINGERPRINT_KEY] == results.config_fingerprint(results.read_json(out / "config.json"))
    real_run = runner.run
    monkeypatch.setattr(runner, "run", lambda *a, **kw: real_run(*a, **kw, stop_after=0))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        compare(["--widths", "8,16", "--force", "--out", str(out)])
    monkeypatch.setattr(runner, "run", real_run)
    err = capsys.readouterr().err
    assert stop.value.code == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"interrupted: 1 of 2 cell(s) are stored in {out / 'cells'}; resume with: ")
    resume = shlex.split(err.split("resume with: ")[1].split(";")[0])
    assert resume[:3] == ["python", "-m", "study.compare"] and "--force" not in resume and str(out) in resume
    assert resume[3:] == [*TINY, "--widths", "8,16", "--out", str(out)]  # the same command, less --force
    assert json.loads((out / "config.json").read_text())["widths"] == [8, 16]
    assert not (out / "summary.json").exists() and not (out / "curves.npz").exists()
    with pytest.raises(SystemExit) as refused:
        compare(["--out", str(out), "--figures-only"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1 and "has no summary.json" in err
    compare(["--out", str(out)])  # A again: its cell is reused, its summary comes back
    assert "width 8: reusing" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["metrics"] == a_summary["metrics"]
    record = results.read_json(out / "config.json")
    assert "input_fingerprints" not in record  # a plain run's config.json is as before fingerprints
    results.write_json(out / "config.json", {**record, "steps": 7})
    with pytest.raises(SystemExit) as refused:
        compare(["--out", str(out), "--figures-only"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1 and "made from another config" in err
    results.write_json(out / "config.json", record)
    compare(["--out", str(out), "--figures-only"])  # matching: accepted (--no-figures: nothing drawn)


@pytest.mark.slow  # a real SIGINT to a subprocess (~20 s); the in-process sibling above runs in the default suite
def test_sigint_to_a_run_prints_one_line_and_exits_130(tmp_path):
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "study.compare", *TINY, "--widths", "8,16,32,64,128", "--steps", "400",
           "--out", str(out)]
    # SIG_DFL in the child: Python then installs its own handler, also where this test run was started in the
    # background of a shell, which leaves SIGINT ignored in every child
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "cells").glob("width8-*.npz")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("interrupted: ") and "Traceback" not in err
    kept = len(list((out / "cells").glob("*.npz")))
    assert f"{kept} of 5 cell(s) are stored" in err and kept < 5


# ------------------------------------------------------------------------------------------ --out


@pytest.mark.parametrize("case", ["file", "under_file", "read_only", "missing_for_figures"])
def test_out_problems_are_one_line_before_any_computation(tmp_path, capsys, monkeypatch, case):
    monkeypatch.setattr(runner, "run", lambda *a, **kw: pytest.fail("the run started"))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root writes anywhere: stand in for a read-only folder
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real_access(p, mode, **kw))
    out, extra, expected = {
        "file": (a_file, [], "is a file, not a folder"),
        "under_file": (a_file / "sub" / "dir", [], f"lies under {a_file}, which is a file"),
        "read_only": (ro / "new", [], f"cannot create {ro / 'new'}: {ro} is read-only"),
        "missing_for_figures": (tmp_path / "nowhere", ["--figures-only"], "does not exist"),
    }[case]
    with pytest.raises(SystemExit) as stop:
        compare(["--out", str(out), *extra])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --out: ") and expected in err
    ro.chmod(0o755)


def test_check_out_folder_accepts_new_and_existing_writable_folders(tmp_path):
    assert results.check_out_folder(tmp_path) == tmp_path
    assert results.check_out_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # creates nothing


def test_interrupted_line_without_a_run():
    assert cli.interrupted_line(KeyboardInterrupt(), ("python -m study.x", ["--out", "o p"])) == \
        "interrupted; resume with: python -m study.x --out 'o p'"
    e = runner.Interrupted(2, 5, Path("r"))
    assert isinstance(e, KeyboardInterrupt)
    assert cli.interrupted_line(e, None) == f"interrupted: 2 of 5 cell(s) are stored in {Path('r') / 'cells'}"
