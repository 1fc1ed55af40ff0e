"""The shape of the package (DESIGN.md): no import circles, no study (wing) importing another,
no private name imported from another module, and the old public names kept working.

Imports are read with ``ast`` from every ``studylib`` module, including imports inside
functions (the package imports JAX lazily there, so they are real dependencies too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "studylib"
WINGS = ("compare", "controls", "dynamics", "ensemble", "regimes", "predict", "coordcheck", "datasize")


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODS = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODS:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the studylib modules it imports; and 'a imports _x from b' for private names."""
    edges: dict[str, set[str]] = {m: set() for m in MODS}
    private = []
    for m, f in MODS.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = m.split(".") if is_pkg else m.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [(f"{base}.{a.name}", a.name) for a in node.names] + [(base, None)]
            else:
                continue
            for full, short in targets:
                t = _resolve(full)
                if t and t != m and t.startswith("studylib"):
                    edges[m].add(t)
                    if short and short.startswith("_") and not short.startswith("__") and t != full:
                        private.append(f"{m} imports {short} from {t}")
    return edges, private


def _wing(m: str) -> str | None:
    parts = m.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), leaving out a package
    face importing its own submodules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 and not any(all(x == p or x.startswith(p + ".") for x in comp) for p in comp):
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    edges, _ = _imports()
    assert _cycles(edges) == []


def test_no_study_imports_another_and_no_private_imports():
    edges, private = _imports()
    cross = sorted(f"{a} -> {b}" for a in edges for b in edges[a] if _wing(a) and _wing(b) and _wing(a) != _wing(b))
    assert cross == []
    assert private == []


def test_every_study_is_a_wing_with_the_runner_face():
    import importlib

    for name in WINGS:
        face = importlib.import_module(f"studylib.{name}")
        for attr in ("NAME", "Config", "PRESETS", "DEFAULT_PRESET", "ARRAYS_FILE", "cells", "prepare", "run_cell",
                     "notes", "summarise", "format_table", "section", "figures", "run"):
            assert hasattr(face, attr), f"studylib.{name} lacks {attr}"
        assert face.NAME == name and face.DEFAULT_PRESET in face.PRESETS


def test_the_checker_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The checks above could fail: a made-up circle and a made-up private import are found."""
    fake = {"studylib.a": {"studylib.b"}, "studylib.b": {"studylib.a"}, "studylib.c": set()}
    assert _cycles(fake) == [["studylib.a", "studylib.b"]]
    assert _wing("studylib.compare.cell") == "compare" and _wing("studylib.runner") is None


@pytest.mark.parametrize("old", ["from studylib._nt import stax, nt", "from studylib.nt import stax, nt"])
def test_nt_public_name_and_old_name(old):
    namespace: dict = {}
    exec(old, namespace)
    assert hasattr(namespace["stax"], "Dense") and hasattr(namespace["nt"], "linearize")
