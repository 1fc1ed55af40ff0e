"""XLA CPU options the study's compiled training loops are faster with, set before JAX starts.

``--xla_cpu_copy_insertion_use_region_analysis=true``: the low-rank SGD chunk
(:mod:`studylib.sgd`) carries its update factors U, V through a ``lax.scan`` and writes one
slice of them per step. With XLA's default CPU copy insertion every step copies every U and V
twice (20 copies of 200 KB per step at width 1000, about 15% of the batch-1 step); with
region analysis the slice is written in place. The option changes how buffers are assigned,
not what is computed (the trainer's tests compare it with jax.grad SGD either way).

The flag is added to ``XLA_FLAGS`` when ``studylib`` is imported, only for the jaxlib versions
where it was measured to exist and help (:data:`TESTED`: an unknown flag aborts XLA), only if
the user has not set it, and only takes effect if the JAX backend has not started yet.
``NTK_STUDY_XLA_DEFAULTS=1`` leaves XLA_FLAGS alone. Measured here, width-1000 batch-1 step of
the low-rank trainer, interleaved pairs: jaxlib 0.5.3 0.79 / 0.82 / 1.35 ms with vs 1.07 / 0.99
/ 2.16 ms without; jaxlib 0.10.2 0.445 / 0.413 / 0.395 ms with vs 0.503 / 0.493 / 0.457 ms
without (batch 10: within noise, 1.8-2.7 ms either way).
"""

from __future__ import annotations

import os
from importlib import metadata

FLAGS = ("--xla_cpu_copy_insertion_use_region_analysis=true",)
#: (major, minor) ranges of jaxlib where the flag exists and was measured to help.
TESTED = ((0, 5), (0, 10))


def applies(jaxlib_version: str) -> bool:
    """Whether :data:`FLAGS` are added for this jaxlib version (inside :data:`TESTED`)."""
    try:
        major_minor = tuple(int(v) for v in jaxlib_version.split(".")[:2])
    except ValueError:
        return False
    return TESTED[0] <= major_minor <= TESTED[1]


def configure() -> None:
    if os.environ.get("NTK_STUDY_XLA_DEFAULTS") == "1":
        return
    try:
        if not applies(metadata.version("jaxlib")):
            return
    except metadata.PackageNotFoundError:
        return
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in FLAGS if f.split("=")[0] not in current]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
