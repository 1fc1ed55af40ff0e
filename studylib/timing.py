"""Light phase timers for profiling a run (``python -m study.bench --profile-compare``): a no-op unless a
:class:`Profile` is active.

The study code marks its phase boundaries with ``with timing.phase("train", width=w): ...``. While a
profile is active (:func:`profiling`), each phase records its wall time (exclusive of the phases
nested in it, so that the phases of a run sum to its total) and the part of it JAX spent compiling:
tracing, lowering to MLIR and XLA's backend compile, from JAX's own monitoring events
(``/jax/core/compile/...``, :mod:`jax.monitoring`) emitted on the profiling thread while the phase was
innermost. Compiles on other threads (ahead-of-time compiles of the next widths,
:mod:`studylib.compare.cell`) are summed apart (``background_compile_s``): they overlap the main
thread's work. Work done on another thread inside a :func:`job` block (one width's start on an ahead
thread) is recorded apart too, in ``background``: its wall time and the compiles of that thread while
it ran. Without an active profile, :func:`phase` and :func:`job` cost one global lookup and import
nothing (no JAX: config modules may use it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

#: JAX's monitoring events counted as compilation (jax._src.dispatch): tracing, lowering, XLA compile.
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


@dataclasses.dataclass
class Record:
    """One finished phase: ``seconds`` of wall time exclusive of nested phases, ``compile_seconds`` of it
    spent compiling on the profiling thread."""
    name: str
    width: int | None
    seconds: float
    compile_seconds: float


@dataclasses.dataclass
class _Frame:
    name: str
    width: int | None
    start: float
    child_seconds: float = 0.0
    compile_seconds: float = 0.0


@dataclasses.dataclass
class Profile:
    """The phases recorded while active; compile time outside any phase and on other threads apart."""
    thread: threading.Thread = dataclasses.field(default_factory=threading.current_thread)
    records: list[Record] = dataclasses.field(default_factory=list)
    stack: list[_Frame] = dataclasses.field(default_factory=list)
    loose_compile_s: float = 0.0
    background_compile_s: float = 0.0
    #: Jobs run on other threads (:func:`job`): wall time and that thread's compiles while it ran.
    background: list[Record] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def compile_event(self, seconds: float) -> None:
        with self.lock:
            if threading.current_thread() is not self.thread:
                self.background_compile_s += seconds
                frame = getattr(_JOB, "frame", None)
                if frame is not None:
                    frame.compile_seconds += seconds
            elif self.stack:
                self.stack[-1].compile_seconds += seconds
            else:
                self.loose_compile_s += seconds

    def total(self, name: str | None = None, width: int | None = None) -> tuple[float, float]:
        """(seconds, compile seconds) summed over the records matching ``name`` / ``width`` (None: any)."""
        rs = [r for r in self.records if (name is None or r.name == name) and (width is None or r.width == width)]
        return sum(r.seconds for r in rs), sum(r.compile_seconds for r in rs)

    def background_total(self, width: int | None = None) -> tuple[float, float]:
        """(seconds, compile seconds) of the :func:`job` records of ``width`` (None: all)."""
        rs = [r for r in self.background if width is None or r.width == width]
        return sum(r.seconds for r in rs), sum(r.compile_seconds for r in rs)


_ACTIVE: Profile | None = None
_LISTENING = False
#: The :func:`job` running on this thread (attribute ``frame``), if any.
_JOB = threading.local()


def _listener(event: str, duration: float, **_kwargs) -> None:
    prof = _ACTIVE
    if prof is not None and event in COMPILE_EVENTS:
        prof.compile_event(float(duration))


def _listen() -> None:
    """Register :func:`_listener` with jax.monitoring once per process (it stays; it is a no-op when idle)."""
    global _LISTENING
    if not _LISTENING:
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_listener)
        _LISTENING = True


@contextlib.contextmanager
def profiling() -> Iterator[Profile]:
    """Activate a fresh :class:`Profile` on the calling thread for the ``with`` block (imports JAX)."""
    global _ACTIVE
    _listen()
    prof = Profile()
    previous, _ACTIVE = _ACTIVE, prof
    try:
        yield prof
    finally:
        _ACTIVE = previous


def active() -> Profile | None:
    """The profile being recorded, or None."""
    return _ACTIVE


@contextlib.contextmanager
def phase(name: str, width: int | None = None) -> Iterator[None]:
    """Time the ``with`` block as phase ``name`` (of ``width``) while profiling; nothing otherwise. Phases
    on other threads than the profiling one are not recorded."""
    prof = _ACTIVE
    if prof is None or threading.current_thread() is not prof.thread:
        yield
        return
    frame = _Frame(name, width, time.perf_counter())
    prof.stack.append(frame)
    try:
        yield
    finally:
        total = time.perf_counter() - frame.start
        with prof.lock:
            prof.stack.pop()
            if prof.stack:
                prof.stack[-1].child_seconds += total
            prof.records.append(Record(name, width, total - frame.child_seconds, frame.compile_seconds))


@contextlib.contextmanager
def job(name: str, width: int | None = None) -> Iterator[None]:
    """Time the ``with`` block, run on a thread other than the profiling one (e.g. a width started ahead),
    as a background record of ``name`` / ``width`` while profiling, with the compiles of this thread
    meanwhile; nothing otherwise (and nothing on the profiling thread itself: use :func:`phase` there)."""
    prof = _ACTIVE
    if prof is None or threading.current_thread() is prof.thread:
        yield
        return
    frame = _Frame(name, width, time.perf_counter())
    _JOB.frame = frame
    try:
        yield
    finally:
        _JOB.frame = None
        with prof.lock:
            prof.background.append(Record(name, width, time.perf_counter() - frame.start, frame.compile_seconds))
