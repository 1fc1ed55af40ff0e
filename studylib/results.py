"""Storing results: atomic JSON / NPZ writes, library versions, JSON-safe conversion."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def versions() -> dict[str, str]:
    """Versions of the libraries that determine the numbers."""
    import jax
    import jaxlib

    from studylib._nt import nt

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "neural-tangents": nt.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
    }


def jsonable(obj: Any) -> Any:
    """Nested NumPy/JAX values as plain JSON types; NaN and inf become null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, str):
        arr = np.asarray(obj)
        return jsonable(arr.tolist()) if arr.ndim else jsonable(arr.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON atomically (temporary file, then rename)."""
    text = json.dumps(jsonable(data), indent=1, allow_nan=False)
    _atomic(Path(path), lambda f: f.write(text.encode()))


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to a compressed .npz atomically."""
    _atomic(Path(path), lambda f: np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def save_nested_npz(path: str | os.PathLike, tree: dict) -> None:
    """A dict of arrays, scalars and one level of nested dicts as a flat .npz ('outer/inner' keys),
    written atomically: how the studies store each finished cell."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat |= {f"{k}/{k2}": v2 for k2, v2 in v.items()}
        else:
            flat[k] = v
    write_npz(path, flat)


def load_nested_npz(path: str | os.PathLike) -> dict:
    """Inverse of :func:`save_nested_npz` (0-d arrays come back as Python scalars)."""
    out: dict[str, Any] = {}
    for k, v in read_npz(path).items():
        v = v.item() if v.ndim == 0 else v
        if "/" in k:
            outer, inner = k.split("/", 1)
            out.setdefault(outer, {})[inner] = v
        else:
            out[k] = v
    return out


def cached(path: str | os.PathLike | None, compute, *, force: bool = False, on_reuse=None) -> dict:
    """One study cell: loaded from ``path`` when stored there (and not ``force``), else computed by
    ``compute()`` and stored at once (atomically), so an interrupted run resumes. ``on_reuse(path)``
    is called when a stored cell is used; ``path=None`` means no storage."""
    if path is not None and Path(path).is_file() and not force:
        if on_reuse is not None:
            on_reuse(path)
        return load_nested_npz(path)
    res = compute()
    if path is not None:
        save_nested_npz(path, res)
    return res
