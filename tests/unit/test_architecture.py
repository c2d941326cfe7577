"""Architecture rules of `src/tuneforge`, checked by reading the source with `ast` (nothing is imported).

Every `import` / `from ... import` statement of a file counts: at module level, inside functions and
classes, and inside `if TYPE_CHECKING:` blocks. Relative imports are resolved. `from tuneforge.pkg import name`
is an edge to the module `tuneforge.pkg.name` when that is a module file or a package, else to `tuneforge.pkg`
(its `__init__.py`).

Rules
-----
1. Leaf helpers. The single-file modules directly in `src/tuneforge/` (`__init__.py`, `errors.py`,
   `registry.py`, `progress.py`, `paths.py`, ...) may import only other leaf helpers, never a subpackage.
   Fix: move the code that needs the subpackage into that subpackage (or a higher one), or pass the value in.

2. Layers. Subpackages are stacked, lowest first (the table is `LAYERS` below):
       config (0) < data (1) < models (2) < methods (3) < train (4) < eval, export, serve (5) < webui (6) < cli (7)
   A module of a subpackage may import leaf helpers, its own subpackage, and subpackages of a LOWER level only.
   Siblings on one level must not import each other (eval, export and serve are independent). The web UI never
   imports the CLI (it runs `tuneforge` commands as subprocesses); only the CLI's `webui` verb starts it. Fix: move the shared code down to the lowest layer that all users can import (or into a leaf
   helper), or invert the dependency (pass a callable / value in from the higher layer).
   A new subpackage must be added to `LAYERS` in this file, at the level it belongs to.

3. No import cycle between files: the directed graph module -> imported module (inside tuneforge) has no
   strongly connected component with more than one module. Fix: move the shared piece into a new module
   both can import, or make one side stop importing the other (a function-level or TYPE_CHECKING import
   still counts).

4. No import cycle between packages: the same graph collapsed to the top-level packages (`tuneforge.data`
   holds every module under `data/`, nested subpackages included; the leaf helpers together form
   `tuneforge`) has no cycle either. Fix: as for 2, move the code that closes the loop into the lower package.

5. No private name imported across files: `from tuneforge.x import _name` is forbidden in `src/` and in
   `tests/` (dunder names such as `__version__` are fine). Fix: make the name public (drop the underscore
   and, if needed, add it to `__all__`), or test it through the public API.

6. No source file under `src/tuneforge/` is longer than `MAX_LINES` (400) lines. Fix: split the module
   along a seam (as was done for train/batches.py and export/gguf_vocab.py).

Each checker takes the source root (the directory that holds the `tuneforge/` package) as a parameter;
the tests at the bottom run them on tiny fake trees in `tmp_path` to prove that each rule can fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_ROOT = REPO_ROOT / "src"
TESTS_ROOT = REPO_ROOT / "tests"
PACKAGE = "tuneforge"
MAX_LINES = 400

# Layer of each subpackage of tuneforge, lowest first. Same number = siblings that must not import each other.
LAYERS: dict[str, int] = {
    "config": 0,
    "data": 1,
    "models": 2,
    "methods": 3,
    "train": 4,
    "eval": 5,
    "export": 5,
    "serve": 5,
    "webui": 6,
    "cli": 7,
}

LEAF = "<leaf helpers>"  # the layer name of the single-file modules directly in src/tuneforge/

LAYER_TABLE_TEXT = (
    "config (0) < data (1) < models (2) < methods (3) < train (4) < eval, export, serve (5) < webui (6) < cli (7)"
)


# ---------------------------------------------------------------------------------------------------------
# Scanning helpers
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    """One source file of the package: its dotted name, its path and whether it is a package `__init__`."""

    name: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class ImportStmt:
    """One imported module (or `from` target) of one statement, with its names; `module` is absolute."""

    path: Path
    line: int
    module: str
    names: tuple[str, ...] = ()  # the names of `from module import a, b`; empty for `import module`


@dataclass(frozen=True)
class Edge:
    """A resolved import edge between two modules of the package."""

    importer: str
    imported: str
    path: Path
    line: int


@dataclass
class ImportGraph:
    """The modules of a package and every import edge between them (with where it was written)."""

    modules: dict[str, Module]
    edges: list[Edge] = field(default_factory=list)

    def adjacency(self) -> dict[str, set[str]]:
        graph: dict[str, set[str]] = {name: set() for name in self.modules}
        for edge in self.edges:
            graph[edge.importer].add(edge.imported)
        return graph


def python_files(root: Path) -> list[Path]:
    """All `.py` files under `root`, sorted, skipping `__pycache__`."""
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted module name of `path` relative to `root` (the directory that holds the top package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def discover_modules(src_root: Path, package: str = PACKAGE) -> dict[str, Module]:
    """Every module of `src_root/package`, keyed by dotted name (`tuneforge.pkg` is `pkg/__init__.py`)."""
    modules: dict[str, Module] = {}
    for path in python_files(src_root / package):
        name, is_package = module_name(path, src_root)
        modules[name] = Module(name, path, is_package)
    return modules


def resolve_relative(importer: str, importer_is_package: bool, level: int, target: str | None) -> str:
    """Absolute module named by `from <level dots><target> import ...` written in module `importer`."""
    base = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def iter_imports(path: Path, importer: str, importer_is_package: bool) -> Iterator[ImportStmt]:
    """Every import statement anywhere in the file (functions, classes, TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportStmt(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = resolve_relative(importer, importer_is_package, node.level, node.module)
            else:
                target = node.module or ""
            yield ImportStmt(path, node.lineno, target, tuple(alias.name for alias in node.names))


def resolve_module(dotted: str, modules: Mapping[str, Module]) -> str | None:
    """The longest prefix of `dotted` that is a known module (`tuneforge.a.b.c` -> `tuneforge.a.b`), or None."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def resolve_targets(stmt: ImportStmt, modules: Mapping[str, Module]) -> set[str]:
    """Modules of the package that one import statement depends on.

    `from tuneforge.pkg import name` -> `tuneforge.pkg.name` when that is a module or package, else `tuneforge.pkg`.
    """
    if not stmt.names:
        target = resolve_module(stmt.module, modules)
        return {target} if target else set()
    targets: set[str] = set()
    for name in stmt.names:
        submodule = f"{stmt.module}.{name}"
        if name != "*" and submodule in modules:
            targets.add(submodule)
        else:
            target = resolve_module(stmt.module, modules)
            if target:
                targets.add(target)
    return targets


def build_graph(src_root: Path, package: str = PACKAGE) -> ImportGraph:
    """File-level import graph of `src_root/package` (only edges between the package's own modules)."""
    modules = discover_modules(src_root, package)
    graph = ImportGraph(modules)
    for module in modules.values():
        for stmt in iter_imports(module.path, module.name, module.is_package):
            if stmt.module != package and not stmt.module.startswith(package + "."):
                continue
            for target in sorted(resolve_targets(stmt, modules)):
                if target != module.name:
                    graph.edges.append(Edge(module.name, target, module.path, stmt.line))
    graph.edges.sort(key=lambda edge: (str(edge.path), edge.line, edge.imported))
    return graph


def layer_of(module: str, modules: Mapping[str, Module], package: str = PACKAGE) -> str:
    """`LEAF` for `tuneforge` itself and the single-file modules directly in it, else the top subpackage name."""
    parts = module.split(".")
    if len(parts) == 1:
        return LEAF
    if len(parts) == 2 and not modules[module].is_package:
        return LEAF
    return parts[1]


def strongly_connected_components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm; returns every component with more than one node, each sorted, sorted overall."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def location(path: Path, line: int, src_root: Path) -> str:
    """`src/tuneforge/x.py:12` style location, relative to the directory above the source root."""
    return f"{path.relative_to(src_root.parent).as_posix()}:{line}"


# ---------------------------------------------------------------------------------------------------------
# Checkers: each returns a sorted list of human-readable violations; empty means the rule holds
# ---------------------------------------------------------------------------------------------------------


def check_unknown_subpackages(src_root: Path, layers: Mapping[str, int] = LAYERS, package: str = PACKAGE) -> list[str]:
    """Subpackages of `package` that are not in the layer table."""
    modules = discover_modules(src_root, package)
    found = {layer_of(name, modules, package) for name in modules} - {LEAF}
    return [
        f"{package}/{name}/ is not in the layer table LAYERS of tests/unit/test_architecture.py"
        for name in sorted(found - set(layers))
    ]


def check_layers(src_root: Path, layers: Mapping[str, int] = LAYERS, package: str = PACKAGE) -> list[str]:
    """Imports that break rule 1 (leaf helpers) or rule 2 (layers, siblings)."""
    graph = build_graph(src_root, package)
    violations: list[str] = []
    for edge in graph.edges:
        source = layer_of(edge.importer, graph.modules, package)
        target = layer_of(edge.imported, graph.modules, package)
        where = f"{location(edge.path, edge.line, src_root)}: {edge.importer} imports {edge.imported}"
        if target == LEAF or source == target:
            continue
        if source == LEAF:
            violations.append(f"{where} (leaf helper imports subpackage {target!r})")
        elif source not in layers or target not in layers:
            continue  # reported by check_unknown_subpackages
        elif layers[target] > layers[source]:
            violations.append(
                f"{where} (upward: {source!r} is level {layers[source]}, {target!r} is level {layers[target]})"
            )
        elif layers[target] == layers[source]:
            violations.append(f"{where} (siblings: {source!r} and {target!r} are both level {layers[source]})")
    return violations


def format_cycle(members: list[str], edges: Iterable[Edge], src_root: Path, owner: Mapping[str, str]) -> str:
    """One cycle: its members, then per linked pair `a -> b` the import statements that make that link."""
    inside = set(members)
    links: dict[tuple[str, str], list[str]] = {}
    for edge in edges:
        source, target = owner[edge.importer], owner[edge.imported]
        if source != target and source in inside and target in inside:
            links.setdefault((source, target), []).append(location(edge.path, edge.line, src_root))
    lines = [" <-> ".join(members)]
    for (source, target), places in sorted(links.items()):
        lines.append(f"      {source} -> {target}: {', '.join(dict.fromkeys(places))}")
    return "\n".join(lines)


def check_module_cycles(src_root: Path, package: str = PACKAGE) -> list[str]:
    """Rule 3: every file-level import cycle (strongly connected component of more than one module)."""
    graph = build_graph(src_root, package)
    identity = {name: name for name in graph.modules}
    return [
        format_cycle(component, graph.edges, src_root, identity)
        for component in strongly_connected_components(graph.adjacency())
    ]


def package_of(module: str, modules: Mapping[str, Module], package: str = PACKAGE) -> str:
    """The top-level package of a module (`tuneforge.data.formats.base` -> `tuneforge.data`); leaf helpers -> `tuneforge`."""
    layer = layer_of(module, modules, package)
    return package if layer == LEAF else f"{package}.{layer}"


def check_package_cycles(src_root: Path, package: str = PACKAGE) -> list[str]:
    """Rule 4: every package-level import cycle, derived from the file-level graph."""
    graph = build_graph(src_root, package)
    owner = {name: package_of(name, graph.modules, package) for name in graph.modules}
    packages: dict[str, set[str]] = {name: set() for name in set(owner.values())}
    for edge in graph.edges:
        if owner[edge.importer] != owner[edge.imported]:
            packages[owner[edge.importer]].add(owner[edge.imported])
    return [
        format_cycle(component, graph.edges, src_root, owner) for component in strongly_connected_components(packages)
    ]


def check_private_imports(src_root: Path, extra_roots: Iterable[Path] = (), package: str = PACKAGE) -> list[str]:
    """Rule 5: `from <package>... import _name` in the package's own files and in every file under `extra_roots`."""
    files: list[tuple[Path, str, bool, Path]] = [
        (module.path, module.name, module.is_package, src_root.parent)
        for module in discover_modules(src_root, package).values()
    ]
    for root in extra_roots:
        for path in python_files(root):
            name, is_package = module_name(path, root.parent)
            files.append((path, name, is_package, root.parent))  # root.parent: shown relative to it
    violations: list[str] = []
    for path, name, is_package, shown_from in files:
        for stmt in iter_imports(path, name, is_package):
            if not stmt.names or (stmt.module != package and not stmt.module.startswith(package + ".")):
                continue
            for imported in stmt.names:
                if imported.startswith("_") and not (imported.startswith("__") and imported.endswith("__")):
                    where = f"{path.relative_to(shown_from).as_posix()}:{stmt.line}"
                    violations.append(f"{where}: from {stmt.module} import {imported}")
    return sorted(violations)


def check_file_lengths(src_root: Path, max_lines: int = MAX_LINES, package: str = PACKAGE) -> list[str]:
    """Rule 6: source files of the package longer than `max_lines` lines."""
    violations: list[str] = []
    for path in python_files(src_root / package):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > max_lines:
            violations.append(f"{path.relative_to(src_root.parent).as_posix()}: {count} lines (limit {max_lines})")
    return violations


def report(rule: str, fix: str, violations: list[str]) -> str:
    """Assertion message: the rule, how to fix it, then one violation per line."""
    listing = "\n".join(f"  - {violation}" for violation in violations)
    return f"{rule}\nHow to fix: {fix}\n{len(violations)} violation(s):\n{listing}"


# ---------------------------------------------------------------------------------------------------------
# The architecture tests of the real package
# ---------------------------------------------------------------------------------------------------------


def test_scanner_sees_the_real_package() -> None:
    graph = build_graph(SRC_ROOT)
    assert f"{PACKAGE}.cli.main" in graph.modules, f"no modules found under {SRC_ROOT / PACKAGE}"
    assert len(graph.modules) > 50 and len(graph.edges) > 100, (
        f"the import scanner found only {len(graph.modules)} modules and {len(graph.edges)} edges in "
        f"{SRC_ROOT / PACKAGE}; the architecture tests below would check (almost) nothing"
    )


def test_every_subpackage_is_in_the_layer_table() -> None:
    violations = check_unknown_subpackages(SRC_ROOT)
    assert not violations, report(
        "Rule 2 (layers): every subpackage of tuneforge must have a level in the layer table "
        f"LAYERS of tests/unit/test_architecture.py: {LAYER_TABLE_TEXT}.",
        "add the new subpackage to LAYERS at the level it belongs to (above everything it imports, below "
        "everything that imports it), and mention it in the module docstring.",
        violations,
    )


def test_imports_follow_the_layers() -> None:
    violations = check_layers(SRC_ROOT)
    assert not violations, report(
        "Rules 1 and 2 (leaf helpers and layers): the top-level modules of tuneforge (errors.py, registry.py, "
        "progress.py, paths.py, ...) import only each other, never a subpackage; a subpackage imports leaf "
        f"helpers, itself and LOWER levels only, and siblings on one level never import each other. "
        f"Levels: {LAYER_TABLE_TEXT}. Function-level and TYPE_CHECKING imports count too.",
        "move the shared code down to the lowest layer that every user can import (or into a leaf helper), "
        "or invert the dependency by passing a value or callable in from the higher layer.",
        violations,
    )


def test_no_import_cycles_between_files() -> None:
    violations = check_module_cycles(SRC_ROOT)
    assert not violations, report(
        "Rule 3: no import cycle between files of tuneforge (function-level and TYPE_CHECKING imports count). "
        "Each cycle lists its modules, then for each link a -> b the import statements that make it.",
        "move the piece both modules need into a new module that both import, or make one side stop "
        "importing the other.",
        violations,
    )


def test_no_import_cycles_between_packages() -> None:
    violations = check_package_cycles(SRC_ROOT)
    assert not violations, report(
        "Rule 4: no import cycle between the top-level packages of tuneforge (tuneforge.data holds everything "
        "under data/, nested subpackages included; the leaf helpers together are 'tuneforge'). Each cycle lists "
        "its packages, then for each link a -> b the import statements that make it; the links that go against "
        "the layer order "
        f"({LAYER_TABLE_TEXT}) are the ones to remove.",
        "move the code that closes the loop down into the lower package (or a leaf helper), or pass a value or "
        "callable in from the higher package instead of importing it.",
        violations,
    )


def test_no_private_names_imported_across_files() -> None:
    violations = check_private_imports(SRC_ROOT, extra_roots=[TESTS_ROOT])
    assert not violations, report(
        "Rule 5: no `from tuneforge.x import _name` in src/ or tests/ (dunder names like __version__ are "
        "fine): a leading underscore means the name is private to its file.",
        "make the name public (drop the underscore, add it to __all__ if the module has one), or test the "
        "behaviour through the public API.",
        violations,
    )


def test_no_source_file_is_too_long() -> None:
    violations = check_file_lengths(SRC_ROOT)
    assert not violations, report(
        f"Rule 6: no source file under src/tuneforge/ is longer than {MAX_LINES} lines.",
        "split the module along a seam into smaller modules of the same package (as was done for "
        "train/batches.py and export/gguf_vocab.py).",
        violations,
    )


# ---------------------------------------------------------------------------------------------------------
# Tests of the checkers themselves on tiny fake trees: each rule can fail, and reports exactly what is wrong
# ---------------------------------------------------------------------------------------------------------


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write `files` (relative path -> source) under `root/src`, returning that source root."""
    src_root = root / "src"
    for relative, text in files.items():
        path = src_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return src_root


CLEAN_TREE: dict[str, str] = {
    "tuneforge/__init__.py": '__version__ = "0"\n',
    "tuneforge/errors.py": "class Error(Exception):\n    pass\n",
    "tuneforge/registry.py": "from tuneforge.errors import Error\nfrom tuneforge import __version__\n",
    "tuneforge/config/__init__.py": "from tuneforge.config.schema import Config\n",
    "tuneforge/config/schema.py": "from tuneforge.errors import Error\n\nclass Config:\n    pass\n",
    "tuneforge/data/__init__.py": "",
    "tuneforge/data/build.py": "from tuneforge.config import Config\nfrom . import formats\n",
    "tuneforge/data/formats/__init__.py": "",
    "tuneforge/data/formats/base.py": "from ...config.schema import Config\n",
    "tuneforge/train/__init__.py": "",
    "tuneforge/train/run.py": "import tuneforge.data.build\nfrom tuneforge.data import build\n",
    "tuneforge/cli/__init__.py": "",
    "tuneforge/cli/main.py": "import tuneforge.train.run as run\nfrom tuneforge import __version__\n",
}


def test_checkers_pass_on_a_clean_tree(tmp_path: Path) -> None:
    src_root = write_tree(tmp_path, CLEAN_TREE)
    assert check_unknown_subpackages(src_root) == []
    assert check_layers(src_root) == []
    assert check_module_cycles(src_root) == []
    assert check_package_cycles(src_root) == []
    assert check_private_imports(src_root) == []
    assert check_file_lengths(src_root) == []


def test_graph_resolves_from_imports_relative_imports_and_nested_statements(tmp_path: Path) -> None:
    src_root = write_tree(
        tmp_path,
        {
            **CLEAN_TREE,
            "tuneforge/data/render.py": (
                "from typing import TYPE_CHECKING\n"  # 1
                "if TYPE_CHECKING:\n"  # 2
                "    from tuneforge.train.run import Thing\n"  # 3
                "def f():\n"  # 4
                "    from .formats import base\n"  # 5
                "    from . import build, missing_name\n"  # 6
                "class C:\n"  # 7
                "    import tuneforge.config.schema.Config\n"  # 8
            ),
        },
    )
    graph = build_graph(src_root)
    found = {(edge.imported, edge.line) for edge in graph.edges if edge.importer == "tuneforge.data.render"}
    assert found == {
        ("tuneforge.train.run", 3),
        ("tuneforge.data.formats.base", 5),
        ("tuneforge.data.build", 6),
        ("tuneforge.data", 6),  # `missing_name` is not a module: the edge goes to the package __init__
        ("tuneforge.config.schema", 8),
    }
    assert ("tuneforge.data.build", "tuneforge.data.formats") in {(e.importer, e.imported) for e in graph.edges}
    assert resolve_relative("tuneforge.data.formats.base", False, 3, "config.schema") == "tuneforge.config.schema"
    assert resolve_relative("tuneforge.data", True, 1, None) == "tuneforge.data"


def test_layer_check_reports_upward_sibling_and_leaf_edges(tmp_path: Path) -> None:
    src_root = write_tree(
        tmp_path,
        {
            **CLEAN_TREE,
            "tuneforge/config/load.py": "import os\n\ndef f():\n    from tuneforge.train import run\n",
            "tuneforge/paths.py": "from tuneforge.errors import Error\nfrom tuneforge.data.build import x\n",
            "tuneforge/eval/__init__.py": "",
            "tuneforge/eval/report.py": "from tuneforge.train.run import x\n",
            "tuneforge/export/__init__.py": "",
            "tuneforge/export/hf.py": "from tuneforge.eval.report import y\n",
        },
    )
    assert check_layers(src_root) == [
        "src/tuneforge/config/load.py:4: tuneforge.config.load imports tuneforge.train.run "
        "(upward: 'config' is level 0, 'train' is level 4)",
        "src/tuneforge/export/hf.py:1: tuneforge.export.hf imports tuneforge.eval.report "
        "(siblings: 'export' and 'eval' are both level 5)",
        "src/tuneforge/paths.py:2: tuneforge.paths imports tuneforge.data.build "
        "(leaf helper imports subpackage 'data')",
    ]


def test_unknown_subpackage_is_reported(tmp_path: Path) -> None:
    src_root = write_tree(
        tmp_path, {**CLEAN_TREE, "tuneforge/plugins/__init__.py": "from tuneforge.cli import main\n"}
    )
    assert check_unknown_subpackages(src_root) == [
        "tuneforge/plugins/ is not in the layer table LAYERS of tests/unit/test_architecture.py"
    ]
    assert check_layers(src_root) == []  # edges of an unknown subpackage are left to the check above


def test_file_cycle_is_reported_with_its_edges(tmp_path: Path) -> None:
    src_root = write_tree(
        tmp_path,
        {
            **CLEAN_TREE,
            "tuneforge/data/a.py": "from tuneforge.data.b import x\n",
            "tuneforge/data/b.py": "import os\n\ndef f():\n    from . import c\n",
            "tuneforge/data/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n",
        },
    )
    assert check_module_cycles(src_root) == [
        "tuneforge.data.a <-> tuneforge.data.b <-> tuneforge.data.c\n"
        "      tuneforge.data.a -> tuneforge.data.b: src/tuneforge/data/a.py:1\n"
        "      tuneforge.data.b -> tuneforge.data.c: src/tuneforge/data/b.py:4\n"
        "      tuneforge.data.c -> tuneforge.data.a: src/tuneforge/data/c.py:3"
    ]
    # a cycle inside one package is not a package cycle
    assert check_package_cycles(src_root) == []


def test_package_cycle_is_reported(tmp_path: Path) -> None:
    src_root = write_tree(
        tmp_path,
        {
            **CLEAN_TREE,
            # a parent package and its nested subpackage importing each other is not a package cycle
            "tuneforge/data/__init__.py": "from tuneforge.data.formats.base import Format\n",
            "tuneforge/data/formats/base.py": "from tuneforge.data.messages import Message\n",
            "tuneforge/data/messages.py": "def f():\n    import tuneforge.train.run\n",
        },
    )
    assert check_module_cycles(src_root) == []  # no file imports itself back ...
    assert check_package_cycles(src_root) == [  # ... but data and train import each other
        "tuneforge.data <-> tuneforge.train\n"
        "      tuneforge.data -> tuneforge.train: src/tuneforge/data/messages.py:2\n"
        "      tuneforge.train -> tuneforge.data: src/tuneforge/train/run.py:1, src/tuneforge/train/run.py:2"
    ]


def test_private_imports_are_reported_in_src_and_tests(tmp_path: Path) -> None:
    src_root = write_tree(
        tmp_path,
        {
            **CLEAN_TREE,
            "tuneforge/data/build.py": "from tuneforge.config.schema import Config, _helper\nfrom . import _impl\n",
            "tuneforge/data/_impl.py": "",
        },
    )
    tests_root = tmp_path / "tests"
    (tests_root / "unit").mkdir(parents=True)
    (tests_root / "unit" / "test_x.py").write_text(
        "import os\nfrom tuneforge import __version__\nfrom other import _fine\n"
        "def test():\n    from tuneforge.train.run import _step\n",
        encoding="utf-8",
    )
    assert check_private_imports(src_root, extra_roots=[tests_root]) == [
        "src/tuneforge/data/build.py:1: from tuneforge.config.schema import _helper",
        "src/tuneforge/data/build.py:2: from tuneforge.data import _impl",
        "tests/unit/test_x.py:5: from tuneforge.train.run import _step",
    ]


def test_long_file_is_reported(tmp_path: Path) -> None:
    src_root = write_tree(
        tmp_path,
        {
            **CLEAN_TREE,
            "tuneforge/data/ok.py": "x = 1\n" * MAX_LINES,
            "tuneforge/data/big.py": "x = 1\n" * (MAX_LINES + 1),
        },
    )
    assert check_file_lengths(src_root) == [f"src/tuneforge/data/big.py: {MAX_LINES + 1} lines (limit {MAX_LINES})"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"a"}}, []),  # a self-loop is not a cycle between files
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "a"}}, [["a", "b"], ["c", "d", "e"]]),
    ],
)
def test_strongly_connected_components(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert strongly_connected_components(graph) == expected
