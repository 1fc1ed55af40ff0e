"""Command lines generated from the config dataclasses: every flag the README, docs and entry
points show is accepted, flags land in the right config fields, --help imports no JAX."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from studylib import cli
from studylib.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("compare", "controls", "dynamics", "ensemble", "regimes", "predict", "coordcheck", "datasize")


def documented_commands() -> list[tuple[str, list[str], str]]:
    """(study, argv, where) for every `python -m study.<name> ...` line in README, docs and study/."""
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "study").glob("*.py"))]
    pattern = re.compile(r"python -m study\.(" + "|".join(STUDIES) + r")\b([^`#\n|]*)")
    out = []
    for path in sources:
        for match in pattern.finditer(path.read_text()):
            text = match.group(2).strip().rstrip(")").replace("\\", "")
            try:
                argv = shlex.split(text)
            except ValueError:
                continue
            if any(a.startswith(("--help", "-h")) for a in argv):
                continue
            out.append((match.group(1), argv, f"{path.name}: {match.group(0).strip()}"))
    return out


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_study():
    assert {c[0] for c in COMMANDS} == set(STUDIES)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("study", "argv", "where"), COMMANDS, ids=[c[2][:80] for c in COMMANDS])
def test_every_documented_command_line_parses(study, argv, where):
    face = importlib.import_module(f"studylib.{study}")
    args = cli.parser(face, "").parse_args(argv)  # argparse exits (fails the test) on an unknown flag
    try:
        cli.config_from_args(face, args)
    except ConfigError as e:  # the docs also show bad values being rejected, and user files/modules
        assert re.match(r"[\w.\[\]-]+: ", str(e)), (where, e)  # the message names the field


@pytest.mark.parametrize("study", STUDIES)
def test_every_config_field_has_one_flag_that_sets_it(study):
    """Each declared field gets a flag, and giving the flag sets that field (dotted for model/data)."""
    face = importlib.import_module(f"studylib.{study}")
    parser = cli.parser(face, "")
    dests = cli.config_dests(face.Config)
    assert {"model.depth", "model.W_std", "data.name", "data.n_train"} <= dests
    actions = {a.dest: a for a in parser._actions}
    for dest in dests:
        assert dest in actions, f"{study}: no flag for {dest}"
    args = parser.parse_args(["--depth", "2", "--W-std", "1.5", "--n-train", "10"])
    cfg = cli.config_from_args(face, args)
    assert cfg.model.depth == 2 and cfg.model.W_std == 1.5 and cfg.data.n_train == 10


def test_help_shows_the_default_presets_values():
    """Help texts show the values a plain run uses: the dataclass default, or the default preset's."""
    compact = lambda text: re.sub(r"\s+", "", text)  # noqa: E731  (argparse wraps lines anywhere)
    compare = importlib.import_module("studylib.compare")
    assert "(default:8,16,32,64,128,256,512,1024)" in compact(cli.parser(compare, "").format_help())
    dynamics = importlib.import_module("studylib.dynamics")  # default preset 'seed': lr 0.001, standard param.
    text = compact(cli.parser(dynamics, "").format_help())
    assert "(default:0.001)" in text and "(default:standard)" in text


def test_flags_beat_toml_beat_preset(tmp_path):
    face = importlib.import_module("studylib.compare")
    toml = tmp_path / "c.toml"
    toml.write_text("steps = 7\n[model]\ndepth = 2\n")
    args = cli.parser(face, "").parse_args(["--preset", "tiny", "--config", str(toml), "--steps", "9"])
    cfg = cli.config_from_args(face, args)
    assert cfg.steps == 9 and cfg.model.depth == 2 and cfg.widths == face.PRESETS["tiny"]["widths"]


@pytest.mark.parametrize("study", STUDIES)
def test_help_imports_no_jax(study):
    code = (f"import sys\nfrom study import {study} as s\ntry:\n    s.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', [m for m in ('jax', 'neural_tangents', 'matplotlib', 'numpy') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
    assert "--out" in proc.stdout and "--no-progress" in proc.stdout


def test_compile_cache_directory_follows_the_environment(tmp_path):
    """The entry points' persistent compilation cache: on by default under XDG_CACHE_HOME, a path of the
    user's choice, or off."""
    from studylib import cli

    assert cli.compile_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "ntk-study" / "jax")
    assert cli.compile_cache_dir({cli.COMPILE_CACHE_ENV: str(tmp_path / "c")}) == str(tmp_path / "c")
    for off in ("off", "0", "", "false"):
        assert cli.compile_cache_dir({cli.COMPILE_CACHE_ENV: off}) is None
        assert cli.enable_compile_cache({cli.COMPILE_CACHE_ENV: off}) is None


def test_fewer_collections_during_a_run_and_python_defaults_after():
    """The run's garbage-collector settings (cli.fewer_collections): the thresholds raised and the objects alive
    at its start frozen inside the block, Python's own restored after it, also when the block raises."""
    import gc

    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with pytest.raises(KeyError):
        with cli.fewer_collections():
            assert gc.get_threshold() == cli.GC_THRESHOLDS
            assert gc.get_freeze_count() > 1000  # this process's modules, JAX's included
            raise KeyError("a run that fails")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
