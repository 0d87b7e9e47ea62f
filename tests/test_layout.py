"""The package layout is the architecture: this test reads every import (ast) and enforces the rule of
docs/decisions/0005-layout.md.

    app -> families (tracing, patching, abstraction, directions, circuits) -> executors -> loading
        -> {core, results}
        -> zoo -> data -> errors

- an import never runs upward (to a higher layer), nor between core and results; families import each
  other only through their public ``__init__``;
- a package is entered only through its ``__init__``: outside its own package no module imports a
  ``_private`` module or a ``_private`` name of another package (families share through ``core`` or through
  another family's public names);
- no circle of imports between modules (function-level imports count too);
- only ``core/_engine*.py`` registers hooks;
- no module is over 500 lines.

Each rule is also checked against a planted violation, so the checker itself cannot silently pass.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import causalscope

PKG = Path(causalscope.__file__).resolve().parent
TOP = "causalscope"
LAYER = {"errors": 0, "_version": 0, "catalog": 0, "data": 1, "zoo": 2, "core": 3, "results": 3, "loading": 4, "executors": 4.5,
         "tracing": 5, "patching": 5, "abstraction": 5, "directions": 5, "circuits": 5, "generation": 5,
         "lenses": 5, "sae": 5, "app": 6,
         "__init__": 7, "__main__": 7}
FAMILIES = {name for name, rank in LAYER.items() if rank == 5}
HOOK_CALLS = {"register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
              "register_full_backward_pre_hook", "register_backward_hook"}
MAX_LINES = 500


@dataclass(frozen=True)
class Import:
    source: str    # importing module, e.g. causalscope.patching._activation
    target: str    # imported module, e.g. causalscope.core
    names: tuple[str, ...]
    line: int


def module_name(path: Path, root: Path = PKG) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def modules(root: Path = PKG) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str], source: str | None = None) -> list[Import]:
    """Every import of a causalscope module in ``path`` (top-level and nested), resolved to module names."""
    tree = ast.parse(source if source is not None else path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == TOP or a.name.startswith(TOP + "."):
                    out.append(Import(name, a.name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package(path) else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == TOP or node.module.startswith(TOP + ".")):
                target = node.module
            else:
                continue
            names = tuple(a.name for a in node.names)
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if subs:  # `from . import zoo`: the import of a submodule, not of the package's __init__
                out += [Import(name, s, (), node.lineno) for s in subs]
                names = tuple(n for n in names if f"{target}.{n}" not in known)
                if not names:
                    continue
            out.append(Import(name, target, names, node.lineno))
    return out


def unit(module: str) -> str:
    """The top-level piece a module belongs to: a subpackage (core, tracing, ...) or a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations(imps: list[Import]) -> list[str]:
    bad = []
    for imp in imps:
        su, tu = unit(imp.source), unit(imp.target)
        where = f"{imp.source}:{imp.line} imports {imp.target}"
        if su == tu:
            continue
        if su not in LAYER or tu not in LAYER:
            bad.append(f"{where}: {su if su not in LAYER else tu!r} has no layer in tests/test_layout.py")
            continue
        if LAYER[tu] > LAYER[su]:
            bad.append(f"{where}: upward ({su} is layer {LAYER[su]}, {tu} is layer {LAYER[tu]})")
        elif LAYER[tu] == LAYER[su] and su not in FAMILIES:
            bad.append(f"{where}: {su} and {tu} share a layer and must not import each other")
        private_mod = [p for p in imp.target.split(".")[1:] if p.startswith("_") and p not in ("__init__", "_version")]
        if private_mod:
            bad.append(f"{where}: private module {private_mod[0]} of another package (import from its __init__)")
        private_names = [n for n in imp.names if n.startswith("_") and n != "__version__"]
        if private_names:
            bad.append(f"{where}: private name(s) {', '.join(private_names)} of another package")
    return bad


def cycles(imps: list[Import], known: set[str]) -> list[list[str]]:
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in imps:
        if imp.target in known and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    # a package's __init__ re-exporting its modules is the normal direction; a module importing its own
    # package's __init__ closes a circle, and so does any other loop
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan, recursive: the graph is small
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def all_imports() -> tuple[list[Import], set[str]]:
    mods = modules()
    known = set(mods)
    return [i for name, path in mods.items() for i in imports_of(name, path, known)], known


def test_every_package_has_a_layer():
    units = {unit(m) for m in modules()}
    assert units <= set(LAYER), f"give these a layer in tests/test_layout.py: {sorted(units - set(LAYER))}"


def test_imports_follow_the_layers_and_enter_packages_through_init():
    imps, _ = all_imports()
    bad = violations(imps)
    assert not bad, "forbidden imports (docs/decisions/0005-layout.md):\n" + "\n".join(bad)


def test_no_circle_of_imports():
    imps, known = all_imports()
    found = cycles(imps, known)
    assert not found, "circles of imports:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_only_the_engine_registers_hooks():
    offenders = []
    for name, path in modules().items():
        if name.startswith(f"{TOP}.core._engine"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in HOOK_CALLS:
                offenders.append(f"{name}:{node.lineno} .{node.attr}")
    assert not offenders, "hooks registered outside core/_engine*.py:\n" + "\n".join(offenders)


def test_no_module_over_500_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they hold): {long}"


# -- the checker catches what it should --------------------------------------------------------------------------
def _planted(module: str, code: str) -> list[Import]:
    path = PKG.joinpath(*module.split(".")[1:]).with_suffix(".py")
    known = set(modules())
    return imports_of(module, path, known, source=code)


@pytest.mark.parametrize("module, code, expect", [
    ("causalscope.core._engine", "from ..tracing import causal_trace\n", "upward"),
    ("causalscope.core._model", "def f():\n    from ..app.cli import main\n", "upward"),
    ("causalscope.abstraction._effects", "from ..patching._activation import activation_patching\n",
     "private module"),
    ("causalscope.abstraction._effects", "from ..patching import _private_helper\n", "private name"),
    ("causalscope.core._sites", "from ..results import LabelledArray\n", "share a layer"),
    ("causalscope.zoo.adder", "import causalscope.circuits\n", "upward"),
    ("causalscope.data._digits", "from ..zoo import build_adder\n", "upward"),
])
def test_a_planted_forbidden_import_is_caught(module, code, expect):
    found = violations(_planted(module, code))
    assert found and expect in found[0], found


def test_a_planted_circle_is_caught():
    imps, known = all_imports()
    imps.append(Import("causalscope.core._sites", "causalscope.core._engine", ("Engine",), 1))
    assert any("causalscope.core._engine" in c and "causalscope.core._sites" in c for c in cycles(imps, known))


def test_same_package_and_public_imports_are_allowed():
    ok = ("from ..core import Engine, Site\nfrom ..errors import InputError\nfrom ..loading import load\n"
          "from ._result import PatchingResult\nfrom ..zoo.compiled import CompiledTransformer\n")
    assert violations(_planted("causalscope.patching._activation", ok)) == []
