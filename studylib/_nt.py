"""Old name of :mod:`studylib.nt`, kept so that ``from studylib._nt import stax`` keeps working."""

from studylib.nt import nt, stax

__all__ = ["nt", "stax"]
