"""The one run loop of every study.

A study (a wing: :mod:`studylib.compare`, :mod:`studylib.dynamics`, :mod:`studylib.ensemble`,
:mod:`studylib.regimes`) is a module with a small face:

* ``NAME``, ``Config`` (frozen dataclass), ``PRESETS``, ``DEFAULT_PRESET``, ``ARRAYS_FILE``;
* ``cells(cfg, dataset) -> list[Cell]``: the units of stored work, each with the spec that
  determines its numbers and its modelled cost;
* ``prepare(cfg, dataset, log) -> shared``: work done once before the cells (may return None);
* ``run_cell(cfg, cell, ctx, progress) -> dict``: the JAX computation of one cell, calling
  ``progress(fraction_done)`` as it goes; arrays, scalars, strings and one level of nested dicts;
* ``notes(cfg, cell, result) -> list[str]``: divergence and other notes printed after a cell;
* ``summarise(cfg, cells, results, ctx, wall_seconds) -> (summary, arrays)``;
* optional: ``prepare_cost(cfg)`` (modelled seconds of ``prepare``, on the bar), ``needs_x64(cfg) ->
  bool`` (default: ``cfg.dtype == 'float64'``), ``key_config(cfg)
  -> dict`` (the part of the config a cell's numbers depend on; default: the config less
  ``SWEEP_FIELDS``), ``DEVICES_NOTE``.

:func:`run` does, for every study and in this order: the ``out`` check (:func:`studylib.results.check_out_folder`),
64-bit mode, the input fingerprints (:func:`input_fingerprints`: a user builder's source, a data file's
content), data, ``config.json`` (first; a previous run's summary of another config is removed before it,
:func:`take_folder`), the devices line, ``prepare``, one progress bar over all cells weighted by their modelled cost
(``tqdm`` with ``smoothing=0``: the ETA is elapsed x remaining cost / done cost, and reused cells
are taken out of the total rather than counted as instant work), each cell loaded from or stored
to ``OUT/cells/<name>-<key>.npz`` through :func:`cell_key` (config + cell spec + library versions
+ x64 mode + input fingerprints), notes, the summary (with :func:`studylib.results.config_fingerprint`
of the ``config.json`` it was made from) and the arrays -- every file written atomically. Ctrl-C (or
``stop_after``) raises :class:`Interrupted`, which says how many of the config's cells are stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studylib import interrupts


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of stored work.

    ``name``: the stem of its file (``width64``, ``w10_b1``); ``spec``: JSON-able values that,
    with the study's key config, determine its numbers; ``cost``: modelled seconds on a 2-core
    CPU, compilation included (only the ratios matter: they weight the progress bar);
    ``label``: what the progress bar shows while it runs.
    """

    name: str
    spec: dict
    cost: float
    label: str = ""


@dataclasses.dataclass
class Context:
    """What a cell computation may use besides the config and the cell."""

    dataset: Any
    shared: Any
    log: Callable[[str], Any]


#: Modelled seconds from the bar's start to the first cell: NT's import, JAX's backend, the devices line.
STARTUP_SECONDS = 3.0
#: Cell-file format version (part of every key).
CELL_FORMAT = 2


def _asdict(cfg) -> dict:
    """``dataclasses.asdict(cfg)`` with its ``model`` through :func:`studylib.models.key_dict` (fields that
    change nothing at their defaults left out, so older runs keep their keys and records)."""
    from studylib.models import key_dict

    d = dataclasses.asdict(cfg)
    if isinstance(d.get("model"), dict):
        d["model"] = key_dict(d["model"])
    return d


def key_config(study, cfg) -> dict:
    """The part of ``cfg`` that a cell's numbers depend on."""
    if hasattr(study, "key_config"):
        return study.key_config(cfg)
    d = _asdict(cfg)
    for f in getattr(study, "SWEEP_FIELDS", ()):
        d.pop(f, None)
    return d


def input_fingerprints(cfg) -> dict[str, str]:
    """Fingerprints of what a config names but does not contain: the source of a user builder
    (``model.arch``, :func:`studylib.models.builder_fingerprint`) and the content of a data file
    (``data.path``, :func:`studylib.data.data_fingerprint`); empty for the registered architectures
    and the bundled or generated datasets."""
    from studylib.data import data_fingerprint
    from studylib.models import builder_fingerprint

    model = getattr(cfg, "model", None)
    found = {"model.arch": None if model is None else builder_fingerprint(model.arch),
             "data.path": data_fingerprint(cfg.data)}
    return {k: v for k, v in found.items() if v is not None}


def cell_key(study, cfg, cell: Cell, *, inputs: dict[str, str] | None = None) -> str:
    """16 hex digits of SHA-256 over everything that determines one cell's numbers: the study,
    its key config, the cell's spec, the library versions, JAX's 64-bit mode (which changes
    the initial parameters drawn without an explicit dtype) and, where there are any,
    :func:`input_fingerprints` (``inputs``: computed once by :func:`run`; None computes them here).
    A config without a user builder or data file hashes exactly what it did before input
    fingerprints existed, so its stored cells keep their keys."""
    import jax

    from studylib.results import versions

    inputs = input_fingerprints(cfg) if inputs is None else inputs
    what = {"format": CELL_FORMAT, "study": study.NAME, "config": key_config(study, cfg),
            "cell": cell.spec, "versions": versions(), "x64": bool(jax.config.jax_enable_x64)}
    if inputs:
        what["inputs"] = inputs
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_path(cells_dir: Path, study, cfg, cell: Cell, *, inputs: dict[str, str] | None = None) -> Path:
    return cells_dir / f"{cell.name}-{cell_key(study, cfg, cell, inputs=inputs)}.npz"


def config_record(cfg, inputs: dict[str, str]) -> dict:
    """What ``config.json`` holds: the config and, when there are any, its :func:`input_fingerprints`
    (key ``input_fingerprints``; absent otherwise, so the file of a plain run is unchanged)."""
    record = _asdict(cfg)
    if inputs:
        record["input_fingerprints"] = dict(inputs)
    return record


def take_folder(out: Path, study, record: dict, say: Callable[[str], Any]) -> None:
    """Make ``out`` the folder of ``record``'s run before writing its ``config.json``: when the
    ``config.json`` there is another config's (other values, or other input fingerprints), or the
    ``summary.json`` there was made from another one, that summary and the study's arrays file are
    removed first (one note says so), so that a folder never holds the summary of one config beside
    the config of another, even when this run is interrupted. Cells stay: their keys tell configs
    apart, and they are reused where they match (``--clean`` removes the others)."""
    from studylib import results as R

    old_path, summary_path = out / "config.json", out / "summary.json"
    changed = []
    if old_path.is_file():
        try:
            old = R.read_json(old_path)
        except (OSError, ValueError):
            old = None
        if not R.same_json(old, record):
            changed = R.differing_keys(old, json.loads(json.dumps(R.jsonable(record))))
    if summary_path.is_file() and not changed:
        try:
            made_from = R.read_json(summary_path).get(R.FINGERPRINT_KEY, R.config_fingerprint(record))
        except (OSError, ValueError, AttributeError):
            made_from = None
        if made_from != R.config_fingerprint(record):
            changed = ["summary.json (made from another config)"]
    if not changed:
        return
    removed = [p for p in (summary_path, out / study.ARRAYS_FILE) if p.is_file()]
    for p in removed:
        p.unlink()
    names = {"input_fingerprints.model.arch": "the source of model.arch", "input_fingerprints.data.path":
             "the content of data.path", "input_fingerprints": "input fingerprints"}
    changed = [names.get(k, k) for k in changed]
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    say(f"note: {out} held a run of another config (differs in: {shown})"
        + (f"; removed its {' and '.join(p.name for p in removed)}" if removed else "")
        + "; its cells stay in cells/ and are reused where they match (--clean removes the others)")


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (or ``stop_after``): ``stored`` of the config's ``total`` cells are in
    ``out``/cells, where a re-run of the same config reuses them."""

    def __init__(self, stored: int, total: int, out: Path | None):
        super().__init__(f"interrupted: {stored} of {total} cell(s) stored")
        self.stored, self.total, self.out = stored, total, out


def needs_x64(study, cfg) -> bool:
    if hasattr(study, "needs_x64"):
        return bool(study.needs_x64(cfg))
    return getattr(cfg, "dtype", "float32") == "float64"


def enable_x64(on: bool) -> None:
    """Turn on JAX's 64-bit mode when asked (never off: arrays are cast explicitly, so a float32
    run is float32 either way)."""
    if on:
        import jax

        jax.config.update("jax_enable_x64", True)


class Progress:
    """A cost-weighted bar: cells add their modelled cost as they run; reused cells leave the
    total. ``smoothing=0`` makes tqdm's ETA the whole-run average rate (elapsed x remaining cost /
    done cost), not the rate of the last few updates. ``done`` and ``total`` are kept here too
    (a disabled tqdm does not count)."""

    def __init__(self, total: float, *, enabled: bool):
        from tqdm.auto import tqdm

        self.total, self.done, self.base = max(total, 1e-9), 0.0, 0.0
        self.bar = tqdm(total=self.total, disable=not enabled, smoothing=0, unit="s·est",
                        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]")

    def _advance_to(self, target: float) -> None:
        if target > self.done:
            self.bar.update(target - self.done)
            self.done = target

    def start(self, cell: Cell) -> Callable[[float], None]:
        """Begin ``cell``; the returned function takes the fraction of it that is done."""
        self.bar.set_description(cell.label or cell.name)
        base, cost = self.base, cell.cost
        self.base += cost

        def report(fraction: float) -> None:
            if fraction < 1.0 and interrupts.seen() and threading.current_thread() is threading.main_thread():
                raise KeyboardInterrupt  # a Ctrl-C that a library swallowed whole: stop within the cell
            self._advance_to(base + min(max(float(fraction), 0.0), 1.0) * cost)

        return report

    def skip(self, cell: Cell) -> None:
        """A reused cell: it takes no time, so it leaves the total instead of counting as done."""
        self.total = max(self.total - cell.cost, 1e-9)
        self.bar.total = self.total
        self.bar.refresh()

    def finish(self, cell_progress: Callable[[float], None]) -> None:
        cell_progress(1.0)

    def close(self) -> None:
        self.bar.close()

    def write(self, text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(text)


def stale_cells(cells_dir: Path, used: set[Path], names: set[str]) -> list[Path]:
    """Cell files of this study's cell names whose key no longer matches (older configs or versions)."""
    if not cells_dir.is_dir():
        return []
    out = []
    for p in sorted(cells_dir.glob("*.npz")):
        stem, _, digest = p.stem.rpartition("-")
        if stem in names and len(digest) == 16 and p not in used:
            out.append(p)
    return out


def owners(cells: list[Cell], n_processes: int) -> list[int]:
    """Which process computes each cell: longest modelled cost first, each to the least loaded
    process (deterministic, so every process computes the same assignment without talking)."""
    load = [0.0] * n_processes
    owner = [0] * len(cells)
    for i in sorted(range(len(cells)), key=lambda i: (-cells[i].cost, i)):
        p = min(range(n_processes), key=lambda q: (load[q], q))
        owner[i] = p
        load[p] += cells[i].cost
    return owner


def process_layout() -> tuple[int, int]:
    """(this process's index, number of processes): (0, 1) unless ``jax.distributed`` was
    initialised with several processes (``--coordinator/--num-processes/--process-id``)."""
    import jax

    return jax.process_index(), jax.process_count()


def wait_for(paths: list[Path], say: Callable[[str], Any], *, poll_s: float = 1.0) -> None:
    """Block until every file exists (cells that other processes are computing)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        say(f"waiting for {len(missing)} cell(s) from the other processes")
    while missing:
        time.sleep(poll_s)
        missing = [p for p in missing if not p.is_file()]


def run(study, cfg, out: str | Path | None = None, *, progress: bool = True, force: bool = False,
        clean: bool = False, stop_after: int | None = None, log: Callable[[str], Any] | None = None) -> dict | None:
    """Run (or resume) every cell of ``study`` for ``cfg``; write ``config.json`` (first),
    ``cells/``, the arrays and ``summary.json`` into ``out`` (when given); return the summary.

    ``force``: recompute cells stored under a matching key; ``clean``: remove this study's cell
    files whose key no longer matches (otherwise they are counted and left, since a sweep that
    shares cells with an earlier one reuses them); ``stop_after``: raise KeyboardInterrupt before
    computing more than this many new cells (tests of resuming). Either way of stopping raises
    :class:`Interrupted` (a KeyboardInterrupt) once the bar is closed.

    ``out``: checked first (one ConfigError line for a file, a path under a file, a folder this user
    cannot write); a folder holding a run of another config (or other input fingerprints) is taken
    over by :func:`take_folder`: its summary and arrays go, its cells stay for reuse.

    With several JAX processes (``jax.distributed``), each computes the cells :func:`owners` gives
    it and stores them in ``out/cells`` (a folder all processes share); process 0 then waits for
    the others' cells, writes the summary and returns it, the others return None. A process that
    dies leaves its finished cells for a re-run to reuse.
    """
    from studylib import data as D
    from studylib import devices
    from studylib import results as R

    if out is not None:
        out = R.check_out_folder(out)
    enable_x64(needs_x64(study, cfg))
    inputs = input_fingerprints(cfg)
    dataset = D.load_for(cfg.data, getattr(cfg, "model", None))
    pid, n_proc = process_layout()
    if n_proc > 1 and out is None:
        raise ValueError("several processes share a run through its results folder: give out")
    cells = study.cells(cfg, dataset)
    owner = owners(cells, n_proc)
    setup = Cell(name="prepare", spec={}, label="set-up",
                 cost=STARTUP_SECONDS + float(getattr(study, "prepare_cost", lambda _cfg: 0.0)(cfg)))
    bar = Progress(setup.cost + sum(c.cost for c, o in zip(cells, owner, strict=True) if o == pid), enabled=progress)
    say = log or bar.write  # notes and warnings print with or without the bar
    record = config_record(cfg, inputs)
    if out is not None and pid == 0:
        take_folder(out, study, record, say)
        R.write_json(out / "config.json", record)
    with interrupts.latch():
        try:
            say(f"devices: {devices.describe()}{getattr(study, 'DEVICES_NOTE', '')}; {devices.stack()}")
            start = time.perf_counter()
            setup_progress = bar.start(setup)
            ctx = Context(dataset=dataset, shared=study.prepare(cfg, dataset, say), log=say)
            bar.finish(setup_progress)
            results, used, computed = [], set(), 0
            for cell, cell_owner in zip(cells, owner, strict=True):
                if cell_owner != pid:
                    continue
                path = None if out is None else cell_path(out / "cells", study, cfg, cell, inputs=inputs)
                if path is not None and path.is_file() and not force:
                    res = R.load_cell(path)
                    bar.skip(cell)
                    say(f"{cell.label or cell.name}: reusing {path}")
                else:
                    if stop_after is not None and computed >= stop_after:
                        raise KeyboardInterrupt("stop_after reached")
                    if interrupts.seen():  # a Ctrl-C that a library swallowed whole: stop here
                        raise KeyboardInterrupt
                    cell_progress = bar.start(cell)
                    t0 = time.perf_counter()
                    res = study.run_cell(cfg, cell, ctx, cell_progress)
                    res["cell_seconds"] = time.perf_counter() - t0
                    bar.finish(cell_progress)
                    if path is not None:
                        R.save_cell(path, res)
                    computed += 1
                if path is not None:
                    used.add(path)
                for note in study.notes(cfg, cell, res):
                    say(note)
                results.append(res)
        except BaseException as e:
            # a library may have turned the KeyboardInterrupt into another error (studylib.interrupts)
            if not (isinstance(e, KeyboardInterrupt) or interrupts.seen()):
                raise
            stored = 0 if out is None else sum(cell_path(out / "cells", study, cfg, c, inputs=inputs).is_file()
                                               for c in cells)
            raise Interrupted(stored, len(cells), out) from None
        finally:
            bar.close()
    if n_proc > 1:
        if pid != 0:
            say(f"process {pid}: {computed} cell(s) computed and stored; process 0 writes the summary")
            return None
        paths = [cell_path(out / "cells", study, cfg, c, inputs=inputs) for c in cells]
        wait_for(paths, say)
        used = set(paths)
        results = [R.load_cell(p) for p in paths]  # all cells, in order, as any re-run would read them
    if out is not None:
        stale = stale_cells(out / "cells", used, {c.name for c in cells})
        if stale and clean:
            for p in stale:
                p.unlink(missing_ok=True)
            say(f"removed {len(stale)} stale cell file(s) of older configs from {out / 'cells'}")
        elif stale:
            say(f"note: {len(stale)} cell file(s) in {out / 'cells'} belong to other configs, library versions or "
                "x64 modes (--clean removes them)")
    summary, arrays = study.summarise(cfg, cells, results, ctx, wall_seconds=time.perf_counter() - start)
    summary[R.FINGERPRINT_KEY] = R.config_fingerprint(record)  # what --figures-only checks config.json against
    if out is not None:
        R.write_npz(out / study.ARRAYS_FILE, arrays)
        R.write_json(out / "summary.json", summary)
    return summary


def lazy_attributes(module_name: str, lazy: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a wing's face: ``lazy`` maps a face name to the submodule that
    defines it, imported on first use (so that importing the face, as ``--help`` does, loads no
    JAX) and then bound as a plain attribute (a submodule import must not shadow it)."""
    import importlib
    import sys

    def __getattr__(name: str) -> Any:
        if name not in lazy:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{module_name}.{lazy[name]}"), name)
        setattr(sys.modules[module_name], name, value)
        return value

    return __getattr__


def study_run(module_name: str) -> Callable[..., dict | None]:
    """The face's ``run(cfg, out=None, **kwargs)``: :func:`run` of that study."""
    import sys

    def run_study(cfg, out=None, **kwargs) -> dict | None:
        """:func:`studylib.runner.run` of this study (``progress``, ``force``, ``clean``, ``stop_after``)."""
        return run(sys.modules[module_name], cfg, out, **kwargs)

    return run_study


def seed_list(cfg) -> list[int]:
    """The PRNG seeds of a config with ``first_seed`` and ``seeds`` (or ``members``)."""
    n = getattr(cfg, "seeds", None) or cfg.members
    return list(range(cfg.first_seed, cfg.first_seed + n))
