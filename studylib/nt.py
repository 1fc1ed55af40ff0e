"""Import neural-tangents without TensorFlow.

`import neural_tangents` (0.6.5) imports its `experimental` subpackage, which
pulls in TensorFlow and tf2jax: about 3-6 s per process and a wall of log
lines. The study uses none of `experimental`, so we register an empty stand-in
for it before the import. Anything that touches it gets a clear error. Set
``NTK_STUDY_FULL_NT=1`` to import the real package.
"""

from __future__ import annotations

import os
import sys
import types


class _DisabledExperimental(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            "neural_tangents.experimental is not loaded by ntk-study (it imports "
            "TensorFlow); set NTK_STUDY_FULL_NT=1 before starting Python to use it."
        )


def _load():
    if "neural_tangents" not in sys.modules and os.environ.get("NTK_STUDY_FULL_NT") != "1":
        stub = _DisabledExperimental("neural_tangents.experimental")
        stub.__path__ = []
        sys.modules.setdefault("neural_tangents.experimental", stub)
    import neural_tangents

    return neural_tangents


nt = _load()
stax = nt.stax

__all__ = ["nt", "stax"]
