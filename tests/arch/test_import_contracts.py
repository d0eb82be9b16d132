"""What the import contracts (pyproject's importlinter, run by `make lint`) cannot see.

lint-imports checks which module may import which, nested imports included.  It does not
look for cycles, nor through dynamic imports, nor at what the one exempted module
re-exports.  These tests read the source (AST), import nothing of it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ped", "keys", "pedserver", "pedclient", "hsm", "pedtools")

#: The sans-IO cores (as in the importlinter contract that keeps trio and socket out).
SANS_IO = ("ped.wire", "ped.channel", "ped.ops", "ped.link.messages", "ped.link.connection",
           "ped.device.messages", "ped.device.connection")

#: Nested imports known to close a cycle, each owned outside this test's reach: the
#: test fails once one is gone, so the entry is removed with the cycle.
KNOWN_NESTED_CYCLES: set[tuple[str, str]] = set()


@attrs.frozen
class Import:
    importer: str
    imported: str
    line: int
    nested: bool  # inside a function body: runs when called, not when the module loads


def _module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _ours(name: str) -> str | None:
    """The module of ours that importing *name* loads (a name in a module: the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _imports(module: str) -> Iterator[Import]:
    """Every import of one of our modules by *module*; ``if TYPE_CHECKING:`` blocks skipped
    (they never run)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, nested: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for orelse in child.orelse:
                    yield from walk(orelse, nested)
                continue
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, *([child.module] if child.module else [])])
                targets = [f"{base}.{alias.name}" for alias in child.names]
            else:
                inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                             | ast.Lambda)
                yield from walk(child, inner)
                continue
            for target in targets:
                imported = _ours(target)
                if imported is not None and imported != module:
                    yield Import(module, imported, child.lineno, nested)

    yield from walk(ast.parse(path.read_text(), str(path)), False)


GRAPH = {module: list(_imports(module)) for module in MODULES}


def _path(start: str, goal: str) -> list[str] | None:
    """A chain of imports from *start* to *goal* (nested ones too), if there is one."""
    came_from: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        here = todo.pop()
        for edge in GRAPH[here]:
            if edge.imported not in came_from:
                came_from[edge.imported] = here
                todo.append(edge.imported)
    if goal not in came_from:
        return None
    chain = [goal]
    while (step := came_from[chain[-1]]) is not None:
        chain.append(step)
    return chain[::-1]


def test_the_walk_sees_the_packages_and_their_nested_imports() -> None:
    # Guards the tests below against passing on an empty graph.
    assert {"ped.wire.framing", "pedserver", "hsm", "pedtools.bench.run"} <= set(MODULES)
    assert any(edge.nested for edges in GRAPH.values() for edge in edges)


def test_no_nested_import_closes_a_cycle() -> None:
    # A function-level import that closes a cycle hides a dependency knot: the two modules
    # cannot be understood, tested or moved one without the other.  The cure is a third
    # module both import.
    found: dict[tuple[str, str], str] = {}
    for edges in GRAPH.values():
        for edge in edges:
            if edge.nested and (back := _path(edge.imported, edge.importer)):
                found[(edge.importer, edge.imported)] = (
                    f"{edge.importer}:{edge.line} imports {edge.imported} in a function, "
                    f"and {' -> '.join(back)}"
                )
    unexpected = {pair: why for pair, why in found.items() if pair not in KNOWN_NESTED_CYCLES}
    assert not unexpected, "\n".join(unexpected.values())
    assert KNOWN_NESTED_CYCLES <= set(found), (
        f"gone, remove from KNOWN_NESTED_CYCLES: {KNOWN_NESTED_CYCLES - set(found)}"
    )


def _sans_io_files() -> list[Path]:
    return [path for module, path in MODULES.items()
            if any(module == core or module.startswith(core + ".") for core in SANS_IO)]


def test_every_sans_io_core_exists() -> None:
    # A renamed core would silently drop out of the importlinter contract too.
    for core in SANS_IO:
        assert core in MODULES, f"{core} is gone: update SANS_IO and pyproject's contract"


def test_sans_io_cores_import_nothing_dynamically() -> None:
    # lint-imports sees every import statement, nested ones too, but not a module
    # named by a string: importlib.import_module("trio") or __import__("socket").
    dynamic = {"__import__", "import_module", "importlib"}
    found = []
    for path in _sans_io_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: set[str] = set()
            if isinstance(node, ast.Name | ast.Attribute):
                names = {node.id if isinstance(node, ast.Name) else node.attr}
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = {alias.name for alias in node.names} | {getattr(node, "module", "")}
            if names & dynamic:
                found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}")
    assert not found, f"dynamic imports in sans-IO cores: {found}"


def test_ped_testing_only_reexports_the_fixtures() -> None:
    # ped.testing is exempted by name from "nothing of the product imports pedtools" so
    # that integrators' `pytest_plugins = ["ped.testing"]` keeps working: it must stay the
    # three fixtures' re-export and nothing more.
    tree = ast.parse(MODULES["ped.testing"].read_text())
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    fixtures = {"remote_ped", "remote_ped_options", "remote_ped_pin_file"}
    assert [(node.module, {a.name for a in node.names}) for node in imports
            if isinstance(node, ast.ImportFrom)] == [
        ("__future__", {"annotations"}), ("pedtools.testing.plugin", fixtures)]
    others = [node for node in tree.body if not isinstance(node, ast.Import | ast.ImportFrom)]
    assert all(isinstance(node, ast.Expr | ast.Assign) for node in others)
    assert [ast.unparse(node.targets[0]) for node in others
            if isinstance(node, ast.Assign)] == ["__all__"]
