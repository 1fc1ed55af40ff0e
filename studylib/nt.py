"""neural-tangents for the study: ``from studylib.nt import nt, stax`` -- or NT's own form,
``import neural_tangents as nt`` / ``from neural_tangents import stax``, in any process that has
run ``import studylib`` first (the study's entry points, a user's plugin or ``--data`` module, a
notebook).

``import studylib`` installs :class:`NTImportHook` in ``sys.meta_path`` (no JAX is imported for
that). When ``neural_tangents`` (0.6.5, its last release) is first imported, the hook does three
things around NT's own import, which then proceeds as usual:

* **No TensorFlow** (before). NT imports its ``experimental`` subpackage, which pulls in
  TensorFlow and tf2jax: about 3-6 s per process and a wall of log lines. The study uses none of
  ``experimental``, so an empty stand-in is registered for it; anything that touches it gets a
  clear error. ``NTK_STUDY_FULL_NT=1`` imports the real package.
* **Newer JAX** (before). NT 0.6.5 imports names from places JAX has since moved them out of
  (``jax.core.Jaxpr``, ``JaxprEqn``, ``Literal``, ``Var``, ``Primitive``, the module ``jax.util``,
  and ``jax.interpreters.ad.zeros_like_p``, a key of its structured-derivative rules). Each one
  that is missing is supplied from JAX's own current location (:func:`apply_shims`); nothing that
  exists is replaced, so on JAX 0.5.x none of these applies.
* **NT entry points that break on the supported stack** (after; :func:`patch_nt`). Each patch
  replaces one name inside NT's private modules (``neural_tangents._src.empirical`` or
  ``._src.predict``), never anything in JAX or SciPy, and only where its cause is present;
  docs/versions.md says what each does and why the result is the same computation:

  - ``empirical.ad``, ``empirical.core``, ``empirical._eqn_vjp_fn``,
    ``empirical._get_primals_out_and_pullback``: ``empirical_ntk_fn(..., implementation=3)``
    (structured derivatives) on JAX's current internal ``ad.linearize`` signature, without the
    attributes JAX removed (``ad.source_info_util``, ``ad.config``, ``ad.reducing_transposes``,
    ``core.DShapedArray``, ``Primitive.map_primitive``), and with the transposes JAX now keeps only
    in accumulating form (``slice``, ``dynamic_slice``);
  - ``empirical._get_flops``: ``implementation=0`` (auto); ``cost_analysis()`` is a dict now;
  - ``predict.sp``: ``predict.max_learning_rate`` on SciPy >= 1.14 (``eigvalsh(eigvals=...)``
    became ``subset_by_index=...``);
  - ``predict.jax``, ``predict._get_cho_solve``, ``predict._get_fns_in_eigenbasis``:
    ``predict.gradient_descent_mse`` with a traced kernel (under ``jit``/``vmap``/``grad``).

:data:`SHIMS` lists everything applied in this process (the devices line prints it).
``nt``, ``stax`` and ``SHIMS`` are resolved on first access (PEP 562), so importing this module
imports neither JAX nor NT.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.abc
import os
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

#: Names NT 0.6.5 imports from ``jax.core`` that newer JAX keeps in ``jax.extend.core`` / ``jax._src.core``.
CORE_NAMES = ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive")

_APPLIED: list[str] = []  # what apply_shims and patch_nt did in this process, in order
_PATCHED_MARK = "_ntk_study_patched"


class _DisabledExperimental(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            "neural_tangents.experimental is not loaded by ntk-study (it imports "
            "TensorFlow); set NTK_STUDY_FULL_NT=1 before starting Python to use it."
        )


class _Namespace(types.ModuleType):
    """A stand-in for module ``base`` inside one NT module: the names given here, every other
    attribute read from ``base`` (so nothing else changes)."""

    def __init__(self, base: types.ModuleType, **names: Any) -> None:
        super().__init__(getattr(base, "__name__", "namespace"))
        self.__dict__["_base"] = base
        self.__dict__.update(names)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_base"], name)


def _first(name: str, modules: tuple[str, ...]):
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


def _record(names: list[str]) -> list[str]:
    _APPLIED.extend(n for n in names if n not in _APPLIED)
    return names


def apply_shims() -> list[str]:
    """Supply what NT 0.6.5 imports from old JAX locations and the installed JAX lacks; return
    the dotted names supplied now (empty on JAX 0.5.x, and on a second call). Idempotent."""
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
    return _record(applied)


def _register_experimental_stub() -> None:
    """Register the empty ``neural_tangents.experimental`` unless ``NTK_STUDY_FULL_NT=1`` (call it
    just before NT's package executes)."""
    if os.environ.get("NTK_STUDY_FULL_NT") != "1":
        stub = _DisabledExperimental("neural_tangents.experimental")
        stub.__path__ = []
        sys.modules.setdefault("neural_tangents.experimental", stub)


# --- implementation 3 (structured derivatives) and 0 (auto): neural_tangents._src.empirical -------------------


def _patch_empirical(E: types.ModuleType) -> list[str]:
    """Patches of NT's ``_src/empirical.py`` (``E``); each only where its cause is present."""
    import inspect

    import jax
    import jax.core
    import jax.interpreters.ad
    from jax._src import core as src_core
    from jax._src.interpreters import ad as src_ad

    applied = []
    pub_ad = jax.interpreters.ad
    extra: dict[str, Any] = {}
    if not hasattr(pub_ad, "source_info_util"):  # gone from jax.interpreters.ad since 0.4.28
        from jax._src import source_info_util

        extra["source_info_util"] = source_info_util
    if not hasattr(pub_ad, "config"):
        extra["config"] = jax.config  # NT reads config.jax_enable_checks (its debug-only assertion)
    if not hasattr(pub_ad, "reducing_transposes"):
        extra["reducing_transposes"] = {}  # removed in JAX 0.10; unused (always empty) since 0.4.38
    if extra:
        E.ad = _Namespace(pub_ad, **extra)
        applied.append("nt.empirical.ad")
    if not hasattr(jax.core, "DShapedArray"):
        # NT asks ``type(aval) is core.DShapedArray`` (dynamic shapes, removed from JAX): never true now.
        E.core = _Namespace(jax.core, DShapedArray=type("NoDShapedArray", (), {}))
        applied.append("nt.empirical.core")
    # pmap's primitive attribute, removed; transposes JAX now keeps only in accumulating form.
    if not hasattr(src_core.Primitive, "map_primitive") or hasattr(src_ad, "fancy_transposes"):
        E._eqn_vjp_fn = _eqn_vjp_fn_compat(E)
        applied.append("nt.empirical._eqn_vjp_fn")
    if "primals_ft" in inspect.signature(src_ad.linearize).parameters:
        E._get_primals_out_and_pullback = _primals_out_and_pullback_compat(E)
        applied.append("nt.empirical._get_primals_out_and_pullback")
    E._get_flops = _get_flops_compat
    applied.append("nt.empirical._get_flops")
    return applied


def _plain_transpose(prim):
    """JAX's transpose rule of ``prim`` in the form NT calls, ``rule(ct, *invals, **params)`` returning
    one cotangent per input (None for inputs that are not linear). JAX >= 0.10 keeps some rules only
    as "fancy" transposes (``slice``, ``dynamic_slice``, ...) that add each input's cotangent into an
    accumulator instead of returning it; for those, the rule runs with a ``ValAccum`` per linear input
    (what JAX's own ``backward_pass3`` passes) and the accumulated cotangents are returned."""
    from jax._src.interpreters import ad as src_ad

    fancy = getattr(src_ad, "fancy_transposes", {})
    if prim in src_ad.primitive_transposes or prim not in fancy:
        return src_ad.get_primitive_transpose(prim)
    rule = fancy[prim]

    def plain(ct, *invals, **params):
        accums = [src_ad.ValAccum(x.aval.to_ct_aval()) if isinstance(x, src_ad.UndefinedPrimal) else x for x in invals]
        rule(ct, *accums, **params)
        return [a.freeze() if isinstance(a, src_ad.ValAccum) else None for a in accums]

    return plain


def _eqn_vjp_fn_compat(E: types.ModuleType) -> Callable:
    """NT 0.6.5's ``empirical._eqn_vjp_fn`` line for line, except that (a) a primitive without the
    ``map_primitive`` attribute (all of them on JAX >= 0.10, which removed it with pmap's old
    primitive) counts as not a map primitive, and (b) the transpose rule comes from
    :func:`_plain_transpose` (the same rule, also for primitives JAX now transposes by accumulation)."""

    def _eqn_vjp_fn(eqn, cts_in, *invals):
        if eqn is None:  # identity function
            return (cts_in,)
        ad = E.ad
        name_stack = ad.source_info_util.current_name_stack() + eqn.source_info.name_stack
        with ad.source_info_util.user_context(eqn.source_info.traceback, name_stack=name_stack):
            if eqn.primitive.call_primitive or getattr(eqn.primitive, "map_primitive", False):
                cts_in_avals = [v.aval for v in eqn.outvars]
                params = dict(eqn.params)
                call_jaxpr = params.pop("call_jaxpr")
                cts_out = ad.get_primitive_transpose(eqn.primitive)(params, call_jaxpr, invals, cts_in,
                                                                    cts_in_avals, ())
            elif eqn.primitive in ad.reducing_transposes:
                cts_out = ad.reducing_transposes[eqn.primitive]((), (cts_in,), *invals, **eqn.params)
            else:
                cts_out = _plain_transpose(eqn.primitive)(cts_in, *invals, **eqn.params)
        return cts_out

    return _eqn_vjp_fn


def _primals_out_and_pullback_compat(E: types.ModuleType) -> Callable:
    """NT 0.6.5's ``empirical._get_primals_out_and_pullback`` on JAX's current internal
    ``ad.linearize(traceable, primals_ft, has_aux=False, is_vjp=False)``.

    NT called the old ``ad.linearize(wrapped_flat_fn, *flat_primals, has_aux=False)``, which
    returned ``(out_primals, out_tangent_pvals, jaxpr, consts)``: ``jaxpr`` maps the input tangents
    to the output tangents that depend on them, and ``pval.is_known()`` marks the outputs whose
    tangent does not. The new one takes the unflattened function and a ``FlatTree`` of the primals
    and returns ``(out_primals_ft, out_zeros, jaxpr, consts)`` with the same ``jaxpr`` contract and
    ``out_zeros[i]`` = "tangent of output i is symbolically zero" (= the old ``is_known()``). The
    pullback below is NT's, unchanged: it drops the cotangents of those outputs and runs NT's
    ``_backward_pass`` over ``jaxpr``. Still under ``jax.disable_jit()`` as NT does, so the jaxpr
    has no call primitives.
    """
    import jax
    from jax._src.interpreters import ad as src_ad
    from jax._src.tree_util import FlatTree
    from jax.tree_util import tree_flatten

    def _get_primals_out_and_pullback(fn, mode, _j_rules, _s_rules, _fwd, *primals_in):
        primals_ft = FlatTree.flatten(primals_in)
        with jax.disable_jit():
            out_ft, out_zeros, jaxpr, consts = src_ad.linearize(lambda *a: fn(*a), primals_ft, has_aux=False)
        primals_out = out_ft.unflatten()

        def pullback_fn(*cts_in):
            cts_in, _ = tree_flatten(cts_in)
            cts_in = tuple(ct for ct, zero in zip(cts_in, out_zeros, strict=True) if not zero)
            dummy_args = [E.UndefinedPrimal(v.aval) for v in jaxpr.invars]
            cts_out = E._backward_pass(jaxpr, mode=mode, consts=consts, primals_in=dummy_args, cotangents_in=cts_in,
                                       _j_rules=_j_rules, _s_rules=_s_rules, _fwd=_fwd)
            return primals_ft.tree.unflatten(cts_out)

        return primals_out, pullback_fn

    return _get_primals_out_and_pullback


def _get_flops_compat(f: Callable, optimize: bool, *a, **kw) -> float:
    """NT's ``empirical._get_flops`` (the FLOP count implementation 0 ranks 1, 2, 3 by), reading
    ``cost_analysis()`` as the dict JAX returns since 0.4.3x, or the one-element list it returned
    before (NT indexed ``[0]`` for the compiled case)."""
    import jax

    e = jax.jit(f).lower(*a, **kw)
    analysis = e.compile().cost_analysis() if optimize else e.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return analysis["flops"]


# --- predict: neural_tangents._src.predict ----------------------------------------------------------------------

_IN_NT_EVAL: contextvars.ContextVar[bool] = contextvars.ContextVar("ntk_study_in_nt_eval", default=False)


@contextlib.contextmanager
def _deferred_eval_context() -> Iterator[None]:
    """What ``jax.core.eval_context()`` means in NT's ``gradient_descent_mse``: it surrounds one call
    (the kernel's Cholesky or eigendecomposition); the call itself decides (:func:`_eval_unless_traced`)."""
    token = _IN_NT_EVAL.set(True)
    try:
        yield
    finally:
        _IN_NT_EVAL.reset(token)


def _eval_unless_traced(fn: Callable) -> Callable:
    """``fn`` (NT's ``_get_cho_solve`` / ``_get_fns_in_eigenbasis``) as NT calls it inside
    ``jax.core.eval_context()`` -- computed eagerly, so ``gradient_descent_mse``'s ``lru_cache``
    holds concrete arrays whatever trace ``predict_fn`` is later called in -- except when one of
    its inputs is itself a tracer (the kernel is traced by jit/vmap/grad): then evaluating it in
    the eval context is what raised ``UnexpectedTracerError``, and it runs in the current trace."""
    import jax

    def call(*args):
        if not _IN_NT_EVAL.get():
            return fn(*args)
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args))
        if traced:
            return fn(*args)
        with jax.core.eval_context():
            return fn(*args)

    call.__wrapped__ = fn
    return call


def _eigvalsh_compat(a, b=None, *, eigvals=None, **kwargs):
    """``scipy.linalg.eigvalsh`` with NT's ``eigvals=(lo, hi)`` passed as ``subset_by_index=[lo, hi]``
    (the same inclusive index range; ``eigvals`` was deprecated in SciPy 1.5 and removed in 1.14)."""
    import scipy.linalg

    if eigvals is not None:
        kwargs["subset_by_index"] = list(eigvals)
    return scipy.linalg.eigvalsh(a, b, **kwargs)


def _patch_predict(P: types.ModuleType) -> list[str]:
    """Patches of NT's ``_src/predict.py`` (``P``); each only where its cause is present."""
    import inspect

    import jax
    import scipy.linalg

    applied = []
    if "eigvals" not in inspect.signature(scipy.linalg.eigvalsh).parameters:  # SciPy >= 1.14
        P.sp = _Namespace(P.sp, linalg=_Namespace(scipy.linalg, eigvalsh=_eigvalsh_compat))
        applied.append("nt.predict.sp")
    # gradient_descent_mse's eval_context + traced kernel fails on every JAX the study supports.
    P.jax = _Namespace(jax, core=_Namespace(jax.core, eval_context=_deferred_eval_context))
    for name in ("_get_cho_solve", "_get_fns_in_eigenbasis"):
        setattr(P, name, _eval_unless_traced(getattr(P, name)))
    applied.append("nt.predict.eval_context")
    return applied


def patch_nt() -> list[str]:
    """Apply the NT entry-point patches (module docstring) to the imported ``neural_tangents``;
    return the names applied now (empty on a second call)."""
    E = importlib.import_module("neural_tangents._src.empirical")
    P = importlib.import_module("neural_tangents._src.predict")
    applied = []
    for module, patch in ((E, _patch_empirical), (P, _patch_predict)):
        if not getattr(module, _PATCHED_MARK, False):
            applied += patch(module)
            setattr(module, _PATCHED_MARK, True)
    return _record(applied)


# --- the import hook ---------------------------------------------------------------------------------------------


class _ShimmingLoader(importlib.abc.Loader):
    """NT's own loader, with :func:`apply_shims` (and the ``experimental`` stand-in) before the
    package executes and :func:`patch_nt` after."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        _register_experimental_stub()
        apply_shims()
        self._loader.exec_module(module)
        patch_nt()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, get_source, ... of the real loader
        return getattr(self._loader, name)


class NTImportHook(importlib.abc.MetaPathFinder):
    """``sys.meta_path`` finder: finds ``neural_tangents`` with the other finders and wraps its loader
    in :class:`_ShimmingLoader`; every other import passes by untouched."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != "neural_tangents":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or isinstance(finder, NTImportHook) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _ShimmingLoader):
                    spec.loader = _ShimmingLoader(spec.loader)
                return spec
        return None


def install_import_hook() -> None:
    """Put :class:`NTImportHook` first in ``sys.meta_path`` (once). If NT was imported before (it
    then imported without the hook, e.g. on JAX 0.5.x), patch it now. Imports no JAX otherwise."""
    if not any(isinstance(f, NTImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, NTImportHook())
    if "neural_tangents._src.predict" in sys.modules:
        patch_nt()


def _load() -> types.ModuleType:
    install_import_hook()
    import neural_tangents

    apply_shims()  # no-ops when the hook ran; not when NT was imported before the hook
    patch_nt()
    return neural_tangents


# Declared for readers and linters; bound on first access by __getattr__ below (annotation only: no value).
nt: types.ModuleType
stax: types.ModuleType
SHIMS: list[str]


def __getattr__(name: str) -> Any:
    """``nt`` (the neural_tangents package), ``stax`` and ``SHIMS`` (a list of what was applied),
    importing NT (through the hook) on first use."""
    if name in ("nt", "stax", "SHIMS"):
        module = _load()
        loaded = {"nt": module, "stax": module.stax, "SHIMS": _APPLIED}
        globals().update(loaded)  # later reads are plain attribute reads
        return loaded[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SHIMS", "NTImportHook", "apply_shims", "install_import_hook", "nt", "patch_nt", "stax"]
