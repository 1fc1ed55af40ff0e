"""XLA CPU options the study's compiled training loops are faster with, set before JAX starts.

``--xla_cpu_copy_insertion_use_region_analysis=true``: the low-rank SGD chunk
(:mod:`studylib.sgd`) carries its update factors U, V through a ``lax.scan`` and writes one
slice of them per step. With XLA's default CPU copy insertion every step copies every U and V
twice (20 copies of 200 KB per step at width 1000, about 15% of the batch-1 step); with
region analysis the slice is written in place. The option changes how buffers are assigned,
not what is computed (the trainer's tests compare it with jax.grad SGD either way).

The flag is added to ``XLA_FLAGS`` when ``studylib`` is imported, only for jaxlib 0.5.x (where
it exists: an unknown flag aborts XLA), only if the user has not set it, and only takes effect
if the JAX backend has not started yet. ``NTK_STUDY_XLA_DEFAULTS=1`` leaves XLA_FLAGS alone.
"""

from __future__ import annotations

import os
from importlib import metadata

FLAGS = ("--xla_cpu_copy_insertion_use_region_analysis=true",)


def configure() -> None:
    if os.environ.get("NTK_STUDY_XLA_DEFAULTS") == "1":
        return
    try:
        if not metadata.version("jaxlib").startswith("0.5."):
            return
    except metadata.PackageNotFoundError:
        return
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in FLAGS if f.split("=")[0] not in current]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
