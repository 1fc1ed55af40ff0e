"""ntk-study: finite networks against their linearization and the infinite-width NTK theory.

Modules are imported on demand so that command-line help stays fast; import
what you need, e.g. ``from studylib import models``.
"""

__version__ = "0.1.0"

from studylib import xla_flags

xla_flags.configure()
