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


#: The user's cap on one device's memory in bytes (``--max-memory`` GiB), None: the device's own.
_max_memory: list[int | None] = [None]


def set_max_memory(gib: float | None) -> None:
    """Plan with at most ``gib`` GiB per device (``--max-memory``; None: the device's memory). Seed chunks
    are sized to it and a width whose plan exceeds it is refused (:func:`check_fits`)."""
    if gib is not None and not (isinstance(gib, int | float) and gib > 0):
        from studylib.config import ConfigError

        raise ConfigError(f"--max-memory: expected GiB > 0, got {gib!r}")
    _max_memory[0] = None if gib is None else int(gib * 2**30)


def device_memory_bytes() -> int:
    """Memory of one device as the machine reports it: the accelerator's limit, or the host's RAM on CPU."""
    import jax

    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_bytes() -> int:
    """Memory of one device a run may use: the device's (:func:`device_memory_bytes`), or less when
    ``--max-memory`` caps it (:func:`set_max_memory`)."""
    own = device_memory_bytes()
    return own if _max_memory[0] is None else min(own, _max_memory[0])


def memory_source() -> str:
    """Where :func:`memory_bytes` comes from, for messages: '--max-memory' or 'the device'."""
    return "--max-memory" if _max_memory[0] is not None and _max_memory[0] < device_memory_bytes() else "the device"


def fits(need_bytes: float) -> bool:
    """Whether one seed's planned bytes (parameters and temporaries of one vmapped seed, plus what each
    chunk needs once) fit in one device's usable memory (:func:`memory_bytes`). The plan keeps
    MEMORY_FRACTION for headroom when it sizes chunks; one seed over the whole memory cannot run at all."""
    return need_bytes <= memory_bytes()


def check_fits(label: str, need_bytes: float, plan: str, field: str = "widths") -> None:
    """ConfigError (one line, naming ``field`` and quoting the ``plan``) when ``label`` (e.g. 'width 10000000')
    needs more than one device's usable memory for a single seed (:func:`fits`): refused before anything
    is allocated, instead of an out-of-memory traceback later."""
    if fits(need_bytes):
        return
    from studylib.config import ConfigError

    raise ConfigError(f"{field}: {label} needs ~{need_bytes / 2**30:,.1f} GiB for one seed ({plan}), more than the "
                      f"{memory_bytes() / 2**30:.1f} GiB of {memory_source()}; accepted: widths whose plan fits "
                      "(--plan prints every width's)")


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
