"""Test-wide JAX settings: rank promotion raises, and float64 is available.

64-bit mode is on so tests can choose float64 where a tolerance needs it; the
study code casts to the dtype its config names, so float32 paths stay float32.
"""

import os

# Tests compile afresh: the entry points' persistent compilation cache (studylib.cli) stays off in this
# process and in the subprocesses the CLI tests start.
os.environ["NTK_STUDY_COMPILE_CACHE"] = "off"

#: 'default' here leaves XLA's LLVM optimisation level alone (CI's slow set and the 0.5.3 smoke run so).
TEST_XLA_ENV = "NTK_STUDY_TEST_XLA"
# The suite's programs are tiny and compiled once each, so most of its time is XLA compiling them, and most
# of a compile is LLVM optimising code that then runs for milliseconds. Level 0 compiles them 25-35% faster
# (README's test command: 6 min 27 s -> 4 min 28 s, CPU 12.1 -> 8.3 min, measured back to back). It
# computes the same IEEE operations (no fast-math either way) but forms no fused multiply-adds and may
# vectorise or order a reduction differently, i.e. it moves results at rounding level, which every tolerance
# here already allows for
# (tests must pass on other CPUs). Set before JAX starts; here and in the CLI tests' subprocesses.
if (os.environ.get(TEST_XLA_ENV, "").strip().lower() != "default"
        and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402  (after XLA_FLAGS: read when the backend starts)

import studylib  # noqa: E402, F401  (sets the study's XLA flags before the backend starts, as the entry points do)

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)


import pytest  # noqa: E402

#: The most pytest-xdist workers ``-n auto`` starts: each is a JAX process of ~1-2 GB that compiles on
#: every core it gets, so more than a few only contend (pyproject.toml's addopts ask for ``-n auto``).
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _sigint_here() -> None:
    """Send SIGINT to this process and wait for its handler to raise (it does at once: ``os.kill`` of the own
    process marks the signal before it returns, and the handler interrupts the sleep)."""
    import signal
    import time

    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)
    raise AssertionError("SIGINT did not interrupt the sleep")


def _sigint_mangled() -> None:
    """What NT's ``utils.get_namedtuple`` does to a Ctrl-C: a bare ``except`` raising a ValueError."""
    try:
        _sigint_here()
    except:  # noqa: E722 -- the point: code outside ours that catches everything
        raise ValueError("`get_namedtuple` functions must have a `get` argument.") from None


def _sigint_swallowed() -> None:
    try:
        _sigint_here()
    except:  # noqa: E722
        pass


def _sigint_in_gc_callback() -> None:
    """A SIGINT landing in a gc callback (JAX registers one): Python swallows the KeyboardInterrupt and only
    reports it through ``sys.unraisablehook``."""
    import gc

    def callback(phase, info):
        gc.callbacks.remove(callback)
        _sigint_here()

    gc.callbacks.append(callback)
    gc.collect()


@pytest.fixture
def sigint():
    """Real SIGINTs to this process, on the main thread where Python runs its handlers (tests of Ctrl-C:
    test_interrupts.py, test_runner.py): ``here`` (the KeyboardInterrupt raised), ``mangled`` (turned into a
    ValueError), ``swallowed`` (a bare ``except: pass``), ``in_gc_callback`` (swallowed by Python). The test
    starts from Python's own SIGINT handler, whatever this process inherited (a test run started in the
    background of a shell, ``cmd &``, ignores SIGINT, and studylib.interrupts leaves that alone)."""
    import signal
    import types

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield types.SimpleNamespace(here=_sigint_here, mangled=_sigint_mangled, swallowed=_sigint_swallowed,
                                in_gc_callback=_sigint_in_gc_callback)
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def tiny_compare(tmp_path_factory):
    """One tiny `python -m study.compare` run (in process), shared by the tests that read it. Depth 2 (the
    default is 5): every per-width program compiles in less time (~4 s less CPU of the ~40 s run; drawing
    the figures takes ~12 s of it)."""
    from study import compare as entry

    out = tmp_path_factory.mktemp("compare")
    entry.main(["--preset", "tiny", "--widths", "8,16", "--steps", "10", "--checkpoints", "4", "--depth", "2",
                "--out", str(out), "--no-progress"])
    return out


def _session_fixtures(item) -> list[str]:
    """The session-scoped fixtures of this folder's conftest that ``item`` uses (pytest's own, such as
    ``tmp_path_factory``, are left out)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [name for name in info.names_closure
            for fdef in info.name2fixturedefs.get(name, ())[-1:]
            if fdef.scope == "session" and fdef.baseid.startswith("tests")]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """One ``xdist_group`` per test file, files that share a session fixture of this conftest (the tiny
    compare run) merged into one: under ``--dist loadgroup`` (pyproject.toml's addopts) a worker runs a
    whole group, so each module- and session-scoped fixture (a tiny study run, ~10-20 s of CPU) is
    computed once and the tests of a file reuse each other's compiled programs (same shapes, same
    worker). Under ``--dist worksteal`` a file split between the workers computed its fixtures twice."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    keys = [(item, [item.nodeid.split("::", 1)[0], *_session_fixtures(item)]) for item in items]
    for _, ks in keys:  # union-find: files joined by a shared session fixture
        for a in ks[1:]:
            parent[find(a)] = find(ks[0])
    for item, ks in keys:
        item.add_marker(pytest.mark.xdist_group(find(ks[0]).rsplit("/", 1)[-1].removesuffix(".py")))
