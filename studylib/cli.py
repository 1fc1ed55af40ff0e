"""Command lines of the ``study.*`` entry points, generated from the config dataclasses.

Each config field declares its flag once, with :func:`option` (help text, flag spellings, how
the text is parsed); :func:`parser` turns a study's ``Config`` (nested ``model`` and ``data``
included) into an ``argparse`` parser whose help shows the defaults of the study's default
preset, and :func:`main` is the whole entry point: parse, assemble, run through
:func:`studylib.runner.run`, print the table, draw the figures.

A config is assembled from, in increasing priority: the dataclass defaults, a named preset, a
TOML file (``--config``; tables ``[model]`` and ``[data]`` for the nested configs) and
command-line flags. Unknown keys are errors naming the key and the accepted ones. Nothing here
imports JAX, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studylib.config import ConfigError
from studylib.flags import float_list, int_list, key_value, str_list


def _parse_of(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        raise TypeError("boolean fields need negate=")
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, tuple) and default:
        return {int: int_list, float: float_list, str: str_list}[type(default[0])]
    return str


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def add_config_flags(parser: argparse.ArgumentParser, cls: type, shown: dict[str, Any], *, prefix: str = "",
                     group: Any = None) -> None:
    """One flag per field of ``cls`` declared with :func:`option` (dest = dotted field path)."""
    target = group or parser
    for f in dataclasses.fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            add_config_flags(parser, sub, shown.get(f.name, {}), prefix=f"{prefix}{f.name}.",
                             group=parser.add_argument_group(f.name))
            continue
        if "help" not in f.metadata:
            continue
        md, dest = f.metadata, prefix + f.name
        default = shown.get(f.name)
        if md["negate"]:
            target.add_argument(md["negate"], dest=dest, action="store_const", const=False,
                                help=f"{md['help']} (default: {'off' if default is False else 'on'})")
            continue
        flags = md["flags"] or ("--" + f.name.replace("_", "-"),)
        if md["parse"] is key_value:
            target.add_argument(*flags, dest=dest, action="append", type=key_value,
                                metavar=md["metavar"] or "KEY=VALUE", help=md["help"])
            continue
        parse = md["parse"] or _parse_of(default if default is not None else f.default)
        target.add_argument(*flags, dest=dest, type=parse, metavar=md["metavar"] or f.name.upper(),
                            help=f"{md['help']} (default: {_shown(default) if default is not None else 'none'})")


def defaults(study) -> dict[str, Any]:
    """The config values a plain run of ``study`` uses: dataclass defaults < its default preset."""
    base = dataclasses.asdict(study.Config())
    preset = study.PRESETS.get(study.DEFAULT_PRESET, {})
    return merge(base, {k: dict(v) if isinstance(v, dict) else v for k, v in preset.items()})


def config_dests(cls: type, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            out |= config_dests(sub, f"{prefix}{f.name}.")
        elif "help" in f.metadata:
            out.add(prefix + f.name)
    return out


def parser(study, doc: str) -> argparse.ArgumentParser:
    """The entry point's parser: --preset, --config, every config flag, then the run flags."""
    name = study.NAME
    p = argparse.ArgumentParser(prog=f"python -m study.{name}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help=f"{' | '.join(study.PRESETS)} (default: {study.DEFAULT_PRESET})")
    p.add_argument("--config", help="TOML file with config keys (flags override it)")
    add_config_flags(p, study.Config, defaults(study))
    g = p.add_argument_group("run")
    g.add_argument("--out", default=f"results/{name}", help=f"output folder (default: results/{name})")
    g.add_argument("--force", action="store_true", help="recompute cells whose stored results match the config")
    g.add_argument("--clean", action="store_true",
                   help="remove stored cells of this study whose key no longer matches (older configs or versions)")
    if _offers(study, "plan"):
        g.add_argument("--plan", action="store_true",
                       help="print devices, parameters and memory per cell, then exit (nothing is trained)")
    g.add_argument("--max-memory", type=float, metavar="GIB",
                   help="plan with at most this many GiB per device (default: the device's memory); a width whose "
                        "plan exceeds it is refused before anything is allocated")
    g.add_argument("--no-figures", action="store_true", help="do not draw figures")
    g.add_argument("--figures-only", action="store_true", help="only redraw the figures from --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    h = p.add_argument_group("several processes (jax.distributed; each computes its share of the cells into the "
                             "shared --out folder, process 0 writes the summary)")
    h.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator")
    h.add_argument("--num-processes", type=int, metavar="P", help="number of processes")
    h.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 ... P-1")
    return p


def init_processes(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` with the given flags; with none, JAX's own detection of a
    cluster (SLURM, cloud TPU, ...) where it finds one, else a single process."""
    given = {k: v for k, v in (("coordinator_address", args.coordinator), ("num_processes", args.num_processes),
                               ("process_id", args.process_id)) if v is not None}
    if not given and not _cluster_detected():
        return
    if given and len(given) < 3:
        raise ConfigError("--coordinator, --num-processes and --process-id: give all three (or none, to let JAX "
                          f"detect a cluster); got {', '.join(given)}")
    import jax

    jax.distributed.initialize(**given)


def _cluster_detected() -> bool:
    """A job of several tasks that JAX's own detection understands (SLURM with more than one task)."""
    import os

    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ


def _offers(study, name: str) -> bool:
    """Whether the face has ``name``, without loading a lazy submodule (``hasattr`` would import it)."""
    return name in vars(study) or name in getattr(study, "_LAZY", {})


def config_from_args(study, args: argparse.Namespace) -> Any:
    dests = config_dests(study.Config)
    flags = {k: v for k, v in vars(args).items() if k in dests}
    return assemble(study.Config, presets=study.PRESETS, preset=args.preset or study.DEFAULT_PRESET,
                    config_file=args.config, flags=flags)


#: Environment variable naming JAX's persistent compilation cache directory for the entry points;
#: "off" (or "0", or empty) turns the cache off. Unset: ``$XDG_CACHE_HOME/ntk-study/jax`` (~/.cache/...).
COMPILE_CACHE_ENV = "NTK_STUDY_COMPILE_CACHE"
#: Compilations shorter than this are not cached (writing a cache entry costs a few ms).
COMPILE_CACHE_MIN_SECONDS = 0.1


def compile_cache_dir(environ: dict | None = None) -> str | None:
    """The persistent compilation cache directory the entry points use (:data:`COMPILE_CACHE_ENV`), or
    None when it is turned off."""
    import os

    env = os.environ if environ is None else environ
    value = env.get(COMPILE_CACHE_ENV)
    if value is None:
        base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "ntk-study", "jax")
    return None if value.strip().lower() in ("", "0", "off", "false", "no") else value


def enable_compile_cache(environ: dict | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (``jax_compilation_cache_dir``) at
    :func:`compile_cache_dir`: a re-run of a study, or a run that shares a width or a network with an
    earlier one, loads its compiled loops instead of compiling them again (a re-run's per-width start-up
    fell by 73% here, docs/performance.md). The first run gains nothing. Returns the directory."""
    path = compile_cache_dir(environ)
    if path is None:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECONDS)
    return path


#: Python's garbage-collector thresholds during a run (:func:`fewer_collections`); Python's own are (700, 10, 10).
GC_THRESHOLDS = (20_000, 50, 50)


@contextlib.contextmanager
def fewer_collections():
    """Run the block with Python's cyclic garbage collector started less often (:data:`GC_THRESHOLDS`) and the
    objects alive at its start (the imported JAX, NumPy, NT and study modules) frozen out of its sight
    (``gc.freeze``); both undone after it. Tracing a JAX program creates ~10^5 short-lived containers: with
    Python's defaults the default ``study.compare`` collected 2378/216/15 times (generation 0/1/2), 2.3 s of CPU
    with the GIL held (the threads tracing the next widths waited), each full collection walking every JAX
    object; with these 58/0/0 times, 0.4 s. Peak memory the same (1.15 GB); nothing computed changes."""
    import gc

    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def main(name: str, doc: str, argv: list[str] | None = None) -> None:
    """The whole ``python -m study.<name>`` entry point."""
    import importlib

    study = importlib.import_module(f"studylib.{name}")
    args = parser(study, doc).parse_args(argv)

    def go():
        from studylib.results import check_out_folder, check_stored, read_json

        if args.figures_only:
            note = check_stored(args.out, study.NAME)
            if not args.no_figures:
                check_out_folder(args.out)  # the figures are written there
            if note:
                print(note, file=sys.stderr)
        else:
            from studylib import devices

            devices.set_max_memory(args.max_memory)
            cfg = config_from_args(study, args)
            if getattr(args, "plan", False):
                print(study.plan(cfg))
                return
            check_out_folder(args.out)
            init_processes(args)
            prestart = not args.no_figures and hasattr(study, "prestart_figures")
            if prestart:  # the figure helper's start-up overlaps the run
                study.prestart_figures()
            enable_compile_cache()
            from studylib import runner

            try:
                with fewer_collections():
                    summary = runner.run(study, cfg, args.out, progress=not args.no_progress, force=args.force,
                                         clean=args.clean)
            except BaseException:
                if prestart:
                    study.discard_prestarted()
                raise
            if summary is None:  # another process writes the summary and the figures
                if prestart:
                    study.discard_prestarted()
                return
            print(study.format_table(read_json(f"{args.out}/summary.json")))
            print(f"\nwrote {args.out}/summary.json, {study.ARRAYS_FILE}, cells/ ({summary['wall_seconds']:.0f} s)")
        if not args.no_figures:
            paths = study.figures(args.out)
            print("figures: " + ", ".join(str(p) for p in paths))

    main_guard(go, command=(f"python -m study.{name}", list(sys.argv[1:] if argv is None else argv)))


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config: {path} is not valid TOML: {e}") from None


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build(cls: type, values: dict[str, Any], *, prefix: str = "") -> Any:
    """Instantiate the (nested) frozen dataclass ``cls`` from a plain dict.

    Fields that are dataclasses themselves take a sub-dict. Unknown keys raise
    :class:`ConfigError` listing the accepted ones. Lists become tuples.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; accepted: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in values.items():
        f = fields[name]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a table of keys, got {value!r}")
            kwargs[name] = build(sub, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def assemble(cls: type, *, presets: dict[str, dict], preset: str | None, config_file: str | None,
             flags: dict[str, Any]) -> Any:
    """defaults < preset < TOML file < flags (flags whose value is None are not given)."""
    if preset is not None and preset not in presets:
        raise ConfigError(f"--preset: unknown value {preset!r}; accepted: {', '.join(presets)}")
    values: dict[str, Any] = {}
    if preset is not None:
        values = merge(values, presets[preset])
    if config_file is not None:
        values = merge(values, read_toml(config_file))
    nested: dict[str, Any] = {}
    for key, v in flags.items():
        if v is None:
            continue
        if key.endswith(".options"):
            v = dict(v)
        if "." in key:
            head, tail = key.split(".", 1)
            nested.setdefault(head, {})[tail] = v
        else:
            nested[key] = v
    values = merge(values, nested)
    return build(cls, values)



def main_guard(fn: Callable[[], Any], *, command: tuple[str, list[str]] | None = None) -> None:
    """Run ``fn``; a :class:`ConfigError` becomes a one-line message and exit status 2; Ctrl-C (a
    KeyboardInterrupt) becomes one line on stderr, saying how many cells of the run are stored and the
    command that resumes it (``command``: the program and its arguments), and exit status 130 -- also
    when a library caught the KeyboardInterrupt and raised another error in its place
    (:mod:`studylib.interrupts` records the signal)."""
    from studylib import interrupts

    with interrupts.latch():  # seen() is read inside: the latch forgets the signal when it closes
        try:
            fn()
        except (KeyboardInterrupt, Exception) as e:
            if isinstance(e, KeyboardInterrupt) or interrupts.seen():  # seen(): another error in its place
                print(interrupted_line(e, command), file=sys.stderr)
                raise SystemExit(130) from None
            if isinstance(e, ConfigError):
                print(f"error: {e}", file=sys.stderr)
                raise SystemExit(2) from None
            raise


def interrupted_line(e: BaseException, command: tuple[str, list[str]] | None) -> str:
    """The one line printed on Ctrl-C: what the run kept (:class:`studylib.runner.Interrupted` carries
    the count; any other exception, none) and the command that resumes it (the same arguments;
    ``--force`` dropped, since it would recompute the stored cells)."""
    import shlex

    kept = ""
    if all(hasattr(e, a) for a in ("stored", "total", "out")) and e.out is not None:
        kept = f": {e.stored} of {e.total} cell(s) are stored in {e.out / 'cells'}"
    if command is None:
        return f"interrupted{kept}"
    program, arguments = command
    forced = "--force" in arguments
    resume = " ".join([program, shlex.join(a for a in arguments if a != "--force")]).strip()
    tail = "; without --force it reuses every stored cell, also those --force had not recomputed yet" if forced else ""
    return f"interrupted{kept}; resume with: {resume}{tail}"
