"""Using the JAX devices a run is given: seeds sharded over this process's devices
(``jax.local_devices()``; with several processes each runs its own cells, see
:mod:`studylib.runner`), and seed chunks sized to the device memory.

The seed (ensemble) axis of every vmapped computation is independent per seed, so placing the
stacked parameters with a ``NamedSharding`` over a 1-D mesh ``('seeds',)`` lets XLA's SPMD
partitioner run each device's seeds locally; results do not depend on the device count
(tested with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``).
"""

from __future__ import annotations

import os
from typing import Any

#: Fraction of a device's memory a run plans to use (the rest: XLA temporaries, fragmentation).
MEMORY_FRACTION = 0.5


def describe() -> str:
    """'1 cpu device(s) (cpu)', and 'process i of P' when several processes share the run."""
    import jax

    devs = jax.local_devices()
    kinds = sorted({d.device_kind for d in devs})
    procs = f", process {jax.process_index()} of {jax.process_count()}" if jax.process_count() > 1 else ""
    return f"{len(devs)} {jax.default_backend()} device(s) ({', '.join(kinds)}){procs}"


def plan_header() -> str:
    """The first line of every ``--plan``: the devices and the memory a run plans with."""
    return f"devices: {describe()}; memory per device {memory_bytes() / 2**30:.1f} GiB"


def stack() -> str:
    """'jax 0.10.2, neural-tangents 0.6.5 (shims: jax.util, ...)': what computes the numbers."""
    import jax

    from studylib.nt import SHIMS, nt

    shims = f" (shims: {', '.join(SHIMS)})" if SHIMS else ""
    return f"jax {jax.__version__}, neural-tangents {nt.__version__}{shims}"


def memory_bytes() -> int:
    """Memory of one device: the accelerator's limit, or the host's RAM on CPU."""
    import jax

    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def seeds_per_chunk(bytes_per_seed: float, n_seeds: int, *, fixed_bytes: float = 0.0) -> int:
    """How many seeds to vmap at once so that they fit in MEMORY_FRACTION of the devices' memory
    (a multiple of the device count where possible)."""
    import jax

    n_dev = len(jax.local_devices())
    budget = MEMORY_FRACTION * memory_bytes() * n_dev - fixed_bytes
    fit = int(max(budget, 0) // max(bytes_per_seed, 1.0))
    chunk = max(1, min(n_seeds, fit))
    if chunk >= n_dev:
        chunk -= chunk % n_dev
    return chunk


def seed_sharding(n_seeds: int):
    """A NamedSharding of a leading seed axis over as many devices as divide ``n_seeds``; None
    on one device."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = jax.local_devices()
    use = max(d for d in range(1, len(devs) + 1) if n_seeds % d == 0)
    if use == 1:
        return None
    return NamedSharding(Mesh(np.array(devs[:use]), ("seeds",)), PartitionSpec("seeds"))


def shard_seeds(tree: Any, n_seeds: int) -> Any:
    """Place every leaf (leading axis = seeds) with :func:`seed_sharding`; unchanged on one device."""
    import jax

    sharding = seed_sharding(n_seeds)
    return tree if sharding is None else jax.device_put(tree, sharding)
