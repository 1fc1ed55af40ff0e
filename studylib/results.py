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

    from studylib.nt import nt

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


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place: readers
    see the old file or the new one, never half of one."""
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
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to an .npz atomically, uncompressed: float curves compress by only ~25% (the default
    compare run's 5.6 MB -> 4.1 MB) for ~0.5-1.4 s of zlib at the end of every run."""
    atomic_write(Path(path), lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray | np.generic) or (hasattr(v, "__array__") and not isinstance(v, str | list))


def save_cell(path: str | os.PathLike, tree: dict) -> None:
    """One finished study cell as one .npz, written atomically: arrays (NumPy or JAX) as arrays
    under 'key' or 'outer/inner' (one level of nested dicts), every other value (numbers, strings,
    None, lists) in a JSON entry '__meta__'. :func:`load_cell` gives back the same values
    bit for bit (floats round-trip exactly through JSON)."""
    arrays, meta = {}, {}
    for k, v in tree.items():
        items = v.items() if isinstance(v, dict) else [(None, v)]
        for k2, v2 in items:
            name = k if k2 is None else f"{k}/{k2}"
            if _is_array(v2):
                arrays[name] = np.asarray(v2)
            else:
                meta[name] = v2
    arrays["__meta__"] = np.asarray(json.dumps(meta, default=_json_default))
    write_npz(path, arrays)


def _json_default(v: Any):
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"cell value of type {type(v).__name__} cannot be stored")


def load_cell(path: str | os.PathLike) -> dict:
    """Inverse of :func:`save_cell`."""
    flat = read_npz(path)
    meta = json.loads(str(flat.pop("__meta__"))) if "__meta__" in flat else {}
    out: dict[str, Any] = {}
    flat = {k: v.item() if v.ndim == 0 else v for k, v in flat.items()}  # 0-d arrays as Python scalars
    for k, v in [*flat.items(), *meta.items()]:
        if "/" in k:
            outer, inner = k.split("/", 1)
            out.setdefault(outer, {})[inner] = v
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------------------- folders of runs

#: The key of ``summary.json`` that holds :func:`config_fingerprint` of the ``config.json`` it was made from.
FINGERPRINT_KEY = "config_fingerprint"
_OUT_ACCEPTED = "accepted: a folder, existing or new, where this user may write"


def config_fingerprint(record: dict) -> str:
    """16 hex digits of SHA-256 over the canonical JSON (sorted keys, as :func:`write_json` stores
    values) of a run's ``config.json`` record: the config and the fingerprints of its input files."""
    import hashlib

    blob = json.dumps(jsonable(record), sort_keys=True, allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def same_json(stored: Any, record: Any) -> bool:
    """Whether ``stored`` (read back from a JSON file) equals ``record`` as :func:`write_json` would store it."""
    return stored == json.loads(json.dumps(jsonable(record), allow_nan=False))


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON documents (nested dicts descended)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix.rstrip(".") or "(whole file)"]
    out = []
    for k in sorted(set(old) | set(new)):
        out += differing_keys(old.get(k), new.get(k), f"{prefix}{k}.") if k in old and k in new else [prefix + k]
    return out


def check_out_folder(out: str | os.PathLike) -> Path:
    """``out`` as a Path if a run can write its results there; else one :class:`ConfigError` line
    naming ``--out``: an existing file, a path under a file, a folder (or the nearest existing folder
    above a new one) this user cannot write. Creates nothing."""
    from studylib.config import ConfigError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file, not a folder; {_OUT_ACCEPTED}")
    existing = out
    while not existing.exists():  # the nearest existing folder above a new one
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"--out: {out} lies under {existing}, which is a file; {_OUT_ACCEPTED}")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = f"{out} is read-only" if existing == out else f"cannot create {out}: {existing} is read-only"
        raise ConfigError(f"--out: {what}; {_OUT_ACCEPTED}")
    return out


def check_stored(out: str | os.PathLike, study: str) -> str | None:
    """Check that folder ``out`` holds a finished run of ``study`` whose ``summary.json`` was made from
    the ``config.json`` beside it (``--figures-only``): one :class:`ConfigError` line naming ``--out``
    otherwise. Returns a note for a summary written before summaries carried :data:`FINGERPRINT_KEY`
    (it cannot be checked), else None."""
    from studylib.config import ConfigError

    out = Path(out)
    if not out.is_dir():
        what = "is a file, not a folder" if out.exists() else "does not exist"
        raise ConfigError(f"--out: {out} {what}; accepted: the folder of a finished run of study.{study} "
                          "(run it without --figures-only first)")
    if not (out / "summary.json").is_file():
        raise ConfigError(f"--out: {out} has no summary.json (no finished run there; an interrupted run resumes when "
                          "run again without --figures-only); accepted: the folder of a finished run")
    try:
        summary = read_json(out / "summary.json")
    except (OSError, ValueError) as e:
        raise ConfigError(f"--out: cannot read {out / 'summary.json'} ({e}); accepted: the folder of a finished "
                          "run (run it again without --figures-only)") from None
    if summary.get("study", study) != study:
        raise ConfigError(f"--out: {out} holds results of study.{summary['study']}, not study.{study}; accepted: "
                          f"a results folder of study.{study}")
    if FINGERPRINT_KEY not in summary:
        return (f"note: {out / 'summary.json'} predates config fingerprints; it is not checked against "
                f"{out / 'config.json'}")
    try:
        made_from = config_fingerprint(read_json(out / "config.json"))
    except (OSError, ValueError):
        made_from = None
    if made_from != summary[FINGERPRINT_KEY]:
        raise ConfigError(f"--out: {out / 'summary.json'} was made from another config than {out / 'config.json'} "
                          "(a run of a new config did not finish); accepted: run the study again without "
                          "--figures-only to finish it")
    return None
