"""No import cycle in `som/`, lazy imports (inside functions) included.

Why static: a lazy import hides a cycle from a plain `import som.x` check until the function
runs, and then it fails (or half-initialises a module) on whichever worker gets there first.
The graph is built from the source with `ast`, so it sees every import a module can make.

An edge M -> X is recorded for every module X that `import`/`from ... import` in M would
initialise: the named module, each package above it (Python runs their `__init__` first),
and for `from P import name` the submodule P.name where one exists. Packages above M itself
are left out: they are initialised before M runs, so importing them from M never recurses.
`if TYPE_CHECKING:` blocks are skipped: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "som"


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of `package` by dotted name (a package by its own name)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, outside `if TYPE_CHECKING:` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of `modules` that importing it may initialise."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own_package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                bases = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = own_package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                bases = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for base in bases:
                targets.update(_with_parents(base))
        ancestors = set(_with_parents(name)[:-1]) | ({name} if is_package else set())
        graph[name] = {t for t in targets if t in modules and t not in ancestors and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        iterators = [iter(sorted(graph[start]))]
        state[start] = 1
        while iterators:
            nxt = next(iterators[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iterators.append(iter(sorted(graph[nxt])))
    return None


def test_som_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(module_names()))
    assert cycle is None, "import cycle in som/: " + " -> ".join(cycle or [])


def test_the_check_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle closed by an import inside a function, and by a relative
    import, is found; TYPE_CHECKING imports and imports of a module's own package are not."""
    pkg = tmp_path / "som"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from som.sub import a\n")
    (pkg / "sub" / "__init__.py").write_text("from .a import thing\n")
    (pkg / "sub" / "a.py").write_text(
        "import som.sub\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from som.b import x\nthing = 1\n"
    )
    (pkg / "b.py").write_text("def f():\n    from .c import y\n")
    (pkg / "c.py").write_text("from som import b\n")
    cycle = find_cycle(import_graph(module_names(tmp_path)))
    assert cycle in (["som.b", "som.c", "som.b"], ["som.c", "som.b", "som.c"])
    (pkg / "c.py").write_text("y = 2\n")
    assert find_cycle(import_graph(module_names(tmp_path))) is None
