"""Ctrl-C that survives libraries which catch everything.

Python's default SIGINT handler raises :class:`KeyboardInterrupt` wherever the main thread happens
to be. Code that catches it in a bare ``except:`` and raises something else turns a Ctrl-C into an
unrelated error: NT's ``utils.get_namedtuple`` does this while a stax layer is built (a SIGINT during
``stax.Relu()`` came out as ``ValueError: `get_namedtuple` functions must have a `get` argument.``
and exit status 1). :func:`latch` installs a handler that first records the signal and then raises
:class:`KeyboardInterrupt` as the default one does, so the run loop (:func:`studylib.runner.run`) and
the entry points (:func:`studylib.cli.main_guard`) can tell an interrupted run from a failed one
(:func:`seen`), and the run loop stops (at the cell's next progress report, or before the next
cell) even when the KeyboardInterrupt was swallowed whole: by a bare ``except: pass``, or by Python
itself, which only reports an error raised in a gc callback (JAX registers one) -- the latch keeps
that report off stderr.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_SEEN = threading.Event()


def _record_and_raise(signum: int, frame: object) -> None:
    _SEEN.set()
    raise KeyboardInterrupt


def seen() -> bool:
    """Whether a SIGINT arrived since the outermost :func:`latch` was entered (False once it closed)."""
    return _SEEN.is_set()


@contextlib.contextmanager
def latch() -> Iterator[None]:
    """Within the block, SIGINT is recorded (:func:`seen`) before it raises KeyboardInterrupt.

    Re-entrant (an inner latch leaves the outer one's handler and record alone). A no-op outside the
    main thread (only it may set signal handlers) and where a handler other than Python's default
    one is installed (the embedding program's choice stands)."""
    current = signal.getsignal(signal.SIGINT)
    if current is _record_and_raise or threading.current_thread() is not threading.main_thread() \
            or current is not signal.default_int_handler:
        yield
        return
    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        # A SIGINT landing in a callback whose errors Python only reports (a gc callback, a __del__)
        # is swallowed with a traceback on stderr; it is recorded, and the run loop stops on it.
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _SEEN.is_set()):
            previous_hook(unraisable)

    _SEEN.clear()
    signal.signal(signal.SIGINT, _record_and_raise)
    sys.unraisablehook = hook
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, current)
        sys.unraisablehook = previous_hook
        _SEEN.clear()  # a later run outside any latch must not take this signal for its own
