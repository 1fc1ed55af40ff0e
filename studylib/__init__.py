"""ntk-study: finite networks against their linearization and the infinite-width NTK theory.

Modules are imported on demand so that command-line help stays fast; import
what you need, e.g. ``from studylib import models``.

``import studylib`` is also the one line that makes neural-tangents 0.6.5 importable in NT's own
form (``import neural_tangents as nt``, ``from neural_tangents import stax``) on every supported
JAX: it installs :class:`studylib.nt.NTImportHook`, which applies the compatibility shims when NT
is first imported (see :mod:`studylib.nt` and docs/versions.md). Neither JAX nor NT is imported here.
"""

__version__ = "0.1.0"

from studylib import nt as _nt_compat
from studylib import xla_flags

xla_flags.configure()
_nt_compat.install_import_hook()
