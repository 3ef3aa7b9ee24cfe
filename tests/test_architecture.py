"""The package's architecture, checked from the source text alone (AST; nothing is imported).

* import floors: a module imports only from its own package or from packages on a lower
  floor (docs/architecture.md, "Import floors"), whether the import is at the top, inside a
  function, or under ``if TYPE_CHECKING:``;
* no import cycles between modules;
* no module over :data:`MAX_LINES` lines;
* ``condimmune.__all__`` is sorted and unique, every name in it exists, and every name is
  documented in README.md's library section or docs/architecture.md.

The helpers are checked on hand-made inputs first, so that a broken helper cannot make
the real checks pass vacuously.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "condimmune"
MAX_LINES = 350

FLOORS: dict[str, int] = {
    "condimmune._files": 0,
    "condimmune.core": 1,
    "condimmune.attacks": 2,
    "condimmune.methods": 3,
    "condimmune.linear": 4,
    "condimmune.deep": 4,
    "condimmune.experiments": 5,
    "condimmune": 6,  # the package's __init__.py: the public API
    "condimmune.cli": 7,
}
"""Import floors: a module may import from its own unit or from a unit on a lower floor."""

ALLOWED_ACROSS: dict[str, tuple[str, ...]] = {
    "condimmune.deep": ("condimmune.linear.data",),  # MNIST arrays for mnist-cnn
}
"""The exceptions: a unit may also import these modules (and what is below them)."""


# --- reading the source --------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULE_FILES: dict[str, Path] = {
    module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts
}
PACKAGES = frozenset(name for name, p in MODULE_FILES.items() if p.name == "__init__.py")


@dataclass(frozen=True)
class Import:
    """One import of a ``condimmune`` module: the most specific module it names."""

    target: str
    line: int
    text: str


def _in_package(name: str) -> bool:
    return name == "condimmune" or name.startswith("condimmune.")


def _relative_base(importer: str, is_package: bool, level: int, module: str | None) -> str:
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    if level - 1 > len(parts):
        raise ValueError(f"{importer}: relative import beyond the top-level package")
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def _call_target(node: ast.Call) -> str | None:
    """``importlib.import_module("condimmune.x")`` or ``__import__("condimmune.x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def find_imports(
    source: str, importer: str, *, is_package: bool, modules: frozenset[str] | None = None
) -> list[Import]:
    """Every ``condimmune`` import in ``source`` (module ``importer``), at any depth.

    ``from pkg import name`` names the module ``pkg.name`` when that is a module (of
    ``modules``), else ``pkg``. Parent packages that Python imports on the way are not
    counted (every module would then depend on ``condimmune/__init__.py``).
    """
    known = frozenset(MODULE_FILES) if modules is None else modules
    lines = source.splitlines()
    found: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", 0)
        text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        found.append(Import(target, line, text))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _in_package(alias.name):
                    add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _relative_base(importer, is_package, node.level, node.module)
            else:
                base = node.module or ""
            if not _in_package(base):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if alias.name != "*" and sub in known else base, node)
        elif isinstance(node, ast.Call):
            target = _call_target(node)
            if target is not None and _in_package(target):
                add(target, node)
    return sorted(set(found), key=lambda i: (i.line, i.target))


def imports_of(module: str) -> list[Import]:
    path = MODULE_FILES[module]
    return find_imports(path.read_text(), module, is_package=path.name == "__init__.py")


IMPORTS: dict[str, list[Import]] = {m: imports_of(m) for m in MODULE_FILES}


# --- the rules -------------------------------------------------------------------------------


def unit_of(module: str) -> str:
    """The floor-table key of ``module``: its first-level package (or the module itself)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _describe(unit: str) -> str:
    return f"{unit} (floor {FLOORS[unit]})" if unit in FLOORS else f"{unit} (no floor)"


def floor_violation(importer: str, target: str) -> str | None:
    """Why ``importer`` may not import ``target``, or ``None`` if it may."""
    low, high = unit_of(target), unit_of(importer)
    if high not in FLOORS:
        return f"{importer} is in {high}, which has no floor in FLOORS (add it there)"
    if low not in FLOORS:
        return f"{target} is in {low}, which has no floor in FLOORS"
    if low == high or FLOORS[low] < FLOORS[high]:
        return None
    if any(target == ok or target.startswith(ok + ".") for ok in ALLOWED_ACROSS.get(high, ())):
        return None
    return (
        f"{_describe(high)} may not import from {_describe(low)}: "
        "only from its own package or a lower floor"
    )


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        # shortest path start → ... → start inside the component (breadth first)
        parents: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in parents:
            following = []
            for node in frontier:
                for nxt in sorted(graph.get(node, ())):
                    if nxt in members and nxt not in parents:
                        parents[nxt] = node
                        following.append(nxt)
            frontier = following
        path = [start]
        node = parents[start]
        while node != start:
            path.append(node)
            node = parents[node]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


def import_graph() -> dict[str, set[str]]:
    return {m: {i.target for i in IMPORTS[m] if i.target in MODULE_FILES} for m in MODULE_FILES}


def _public_all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list | tuple), "__all__ must be a literal list"
            return list(value)
    raise AssertionError("condimmune/__init__.py has no literal __all__")


def top_level_bindings(tree: ast.Module) -> dict[str, ast.stmt]:
    """Names bound at module level (also inside top-level ``if``/``try``) → their statement."""
    bound: dict[str, ast.stmt] = {}

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bound[node.name] = node
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    bound[alias.asname or alias.name.split(".")[0]] = node
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for leaf in ast.walk(target):
                        if isinstance(leaf, ast.Name):
                            bound[leaf.id] = node
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return bound


def missing_public_names(init: ast.Module, defined_in: dict[str, set[str]]) -> list[str]:
    """Names of ``__all__`` that ``init`` does not bind, or binds by importing them from a
    module (``defined_in``: module → its top-level names) that does not define them."""
    bound = top_level_bindings(init)
    problems = []
    for name in _public_all(init):
        node = bound.get(name)
        if node is None:
            problems.append(f"{name}: not bound in condimmune/__init__.py")
        elif isinstance(node, ast.ImportFrom) and node.module and _in_package(node.module):
            source = next(a.name for a in node.names if (a.asname or a.name) == name)
            if node.module not in defined_in:
                problems.append(f"{name}: imported from {node.module}, which is not a module")
            elif source not in defined_in[node.module]:
                problems.append(f"{name}: imported from {node.module}, which does not define it")
    return problems


def library_docs() -> str:
    readme = (ROOT / "README.md").read_text()
    library = readme.split("## The library", 1)[1].split("\n## ", 1)[0]
    architecture = ROOT / "docs" / "architecture.md"
    return library + "\n" + (architecture.read_text() if architecture.is_file() else "")


def is_documented(name: str, text: str) -> bool:
    """``name`` appears as code: `` `name` ``, `` `name(...)` `` or ``ci.name``."""
    return re.search(rf"(`|\bci\.){re.escape(name)}(?![\w])", text) is not None


# --- self-checks: the helpers can fail ---------------------------------------------------------


def test_cycle_detector_finds_a_hand_made_cycle_and_only_that() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}
    (cycle,) = find_cycles(graph)
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert all(nxt in graph[node] for node, nxt in itertools.pairwise(cycle))
    assert find_cycles({"x": {"x"}}) == [["x", "x"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) == []


def test_import_finder_sees_nested_guarded_and_relative_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import condimmune.core.spectral\n"
        "if TYPE_CHECKING:\n"
        "    from condimmune.deep.trainer import immunize\n"
        "def f():\n"
        "    from ..methods import registry\n"
        "    from . import probes\n"
        "    import importlib\n"
        "    return importlib.import_module('condimmune.cli')\n"
    )
    modules = frozenset({"condimmune.methods.registry", "condimmune.attacks.probes"})
    found = find_imports(source, "condimmune.attacks.suite", is_package=False, modules=modules)
    assert [i.target for i in found] == [
        "condimmune.core.spectral",
        "condimmune.deep.trainer",
        "condimmune.methods.registry",
        "condimmune.attacks.probes",
        "condimmune.cli",
    ]


def test_floor_rule_refuses_upward_and_sideways_imports() -> None:
    assert floor_violation("condimmune.core.spectral", "condimmune.deep.trainer")
    assert floor_violation("condimmune.linear.train", "condimmune.deep.backbones")
    assert floor_violation("condimmune.deep.trainer", "condimmune.linear.train")
    assert floor_violation("condimmune.experiments.sweep", "condimmune")
    assert floor_violation("condimmune.newpkg.x", "condimmune.core.spectral")
    assert floor_violation("condimmune.deep.penalty", "condimmune.linear.data") is None
    assert floor_violation("condimmune.cli", "condimmune.experiments.config") is None
    assert floor_violation("condimmune", "condimmune.experiments.records") is None
    assert floor_violation("condimmune.core.bound", "condimmune._files") is None
    assert floor_violation("condimmune._files", "condimmune.core.records")


def test_public_name_checks_catch_missing_and_undocumented_names() -> None:
    init = ast.parse(
        "from condimmune.core.spectral import kappa, gone\n"
        "__version__ = '0'\n"
        "__all__ = ['__version__', 'gone', 'kappa', 'nowhere']\n"
    )
    assert missing_public_names(init, {"condimmune.core.spectral": {"kappa"}}) == [
        "gone: imported from condimmune.core.spectral, which does not define it",
        "nowhere: not bound in condimmune/__init__.py",
    ]
    assert is_documented("r_ill", "`r_ill(x)`") and is_documented("immunize", "ci.immunize(")
    assert not is_documented("r_ill", "`r_ill_features`") and not is_documented("immunize", "x")


# --- the rules on the package -------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(MODULE_FILES))
def test_imports_respect_the_floors(module: str) -> None:
    rel = MODULE_FILES[module].relative_to(ROOT)
    broken = [
        f"{rel}:{imp.line}: `{imp.text}` imports {imp.target}; {why}"
        for imp in IMPORTS[module]
        if (why := floor_violation(module, imp.target)) is not None
    ]
    assert not broken, "import floors broken:\n" + "\n".join(broken)


def test_every_condimmune_import_names_an_existing_module() -> None:
    dangling = [
        f"{MODULE_FILES[m].relative_to(ROOT)}:{imp.line}: {imp.target} is not a module of "
        "src/condimmune"
        for m in sorted(MODULE_FILES)
        for imp in IMPORTS[m]
        if imp.target not in MODULE_FILES
    ]
    assert not dangling, "\n".join(dangling)


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_no_module_is_too_long() -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in MODULE_FILES.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{p} ({n})" for p, n in sorted(too_long.items())
    )


INIT = ast.parse(MODULE_FILES["condimmune"].read_text())
PUBLIC = _public_all(INIT)


def test_public_names_are_sorted_and_unique() -> None:
    duplicates = sorted({n for n in PUBLIC if PUBLIC.count(n) > 1})
    assert not duplicates, f"__all__ lists these twice: {duplicates}"
    assert sorted(PUBLIC) == PUBLIC, "condimmune.__all__ is not sorted"


def test_public_names_exist() -> None:
    defined = {
        m: set(top_level_bindings(ast.parse(p.read_text()))) for m, p in MODULE_FILES.items()
    }
    problems = missing_public_names(INIT, defined)
    assert not problems, "\n".join(problems)


def test_public_names_are_documented() -> None:
    text = library_docs()
    missing = [name for name in PUBLIC if name != "__version__" and not is_documented(name, text)]
    assert not missing, (
        "not documented in README.md's library section or docs/architecture.md: "
        + ", ".join(missing)
    )
