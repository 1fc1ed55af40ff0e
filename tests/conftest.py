"""Test-wide JAX settings: rank promotion raises, and float64 is available.

64-bit mode is on so tests can choose float64 where a tolerance needs it; the
study code casts to the dtype its config names, so float32 paths stay float32.
"""

import os

# Tests compile afresh: the entry points' persistent compilation cache (studylib.cli) stays off in this
# process and in the subprocesses the CLI tests start.
os.environ["NTK_STUDY_COMPILE_CACHE"] = "off"

import jax

import studylib  # noqa: F401  (sets the study's XLA flags before the backend starts, as the entry points do)

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)


import pytest  # noqa: E402

#: The most pytest-xdist workers ``-n auto`` starts: each is a JAX process of ~1-2 GB that compiles on
#: every core it gets, so more than a few only contend (pyproject.toml's addopts ask for ``-n auto``).
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_compare(tmp_path_factory):
    """One tiny `python -m study.compare` run (in process), shared by the tests that read it."""
    from study import compare as entry

    out = tmp_path_factory.mktemp("compare")
    entry.main(["--preset", "tiny", "--widths", "8,16", "--steps", "10", "--checkpoints", "4",
                "--out", str(out), "--no-progress"])
    return out
