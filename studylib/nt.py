"""neural-tangents for the study: ``from studylib.nt import nt, stax``.

Two things happen before ``import neural_tangents`` (0.6.5, its last release):

* **No TensorFlow.** NT imports its ``experimental`` subpackage, which pulls in TensorFlow and
  tf2jax: about 3-6 s per process and a wall of log lines. The study uses none of
  ``experimental``, so an empty stand-in is registered for it; anything that touches it gets a
  clear error. ``NTK_STUDY_FULL_NT=1`` imports the real package.
* **Newer JAX.** NT 0.6.5 imports names from places JAX has since moved them out of (``jax.core.
  Jaxpr``, ``JaxprEqn``, ``Literal``, ``Var``, ``Primitive``, the module ``jax.util``, and
  ``jax.interpreters.ad.zeros_like_p``, a key of its structured-derivative rules). Each one that
  is missing is supplied from JAX's own current location; nothing that exists is replaced, so on
  JAX 0.5.x no shim applies. :data:`SHIMS` lists what was supplied (the devices line prints it).
"""

from __future__ import annotations

import importlib
import os
import sys
import types

#: Names NT 0.6.5 imports from ``jax.core`` that newer JAX keeps in ``jax.extend.core`` / ``jax._src.core``.
CORE_NAMES = ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive")


class _DisabledExperimental(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            "neural_tangents.experimental is not loaded by ntk-study (it imports "
            "TensorFlow); set NTK_STUDY_FULL_NT=1 before starting Python to use it."
        )


def _first(name: str, modules: tuple[str, ...]):
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


def apply_shims() -> list[str]:
    """Supply what NT 0.6.5 imports from old JAX locations and the installed JAX lacks; return
    the dotted names supplied (empty on JAX 0.5.x). Idempotent."""
    import jax
    import jax.core
    import jax.interpreters.ad

    applied = []
    for name in CORE_NAMES:
        if not hasattr(jax.core, name):
            value = _first(name, ("jax.extend.core", "jax._src.core"))
            if value is not None:
                setattr(jax.core, name, value)
                applied.append(f"jax.core.{name}")
    try:
        importlib.import_module("jax.util")
    except ImportError:
        from jax._src import util

        sys.modules["jax.util"] = util
        applied.append("jax.util")
    ad = jax.interpreters.ad
    if not hasattr(ad, "zeros_like_p"):
        value = _first("zeros_like_p", ("jax._src.ad_util",))
        if value is None:  # NT only uses it as a dictionary key
            from jax.extend.core import Primitive

            value = Primitive("zeros_like")
        ad.zeros_like_p = value
        applied.append("jax.interpreters.ad.zeros_like_p")
    return applied


def _load():
    if "neural_tangents" not in sys.modules and os.environ.get("NTK_STUDY_FULL_NT") != "1":
        stub = _DisabledExperimental("neural_tangents.experimental")
        stub.__path__ = []
        sys.modules.setdefault("neural_tangents.experimental", stub)
    shims = apply_shims()
    import neural_tangents

    return neural_tangents, shims


nt, SHIMS = _load()
stax = nt.stax

__all__ = ["SHIMS", "nt", "stax"]
