"""The package's layout: a recording side, a pipeline, storage, and the rest on the side.

Read from the source, so the test sees the layering itself, not what happened to be
imported first. Layering counts module-level imports (an import inside a function runs
only when called); cycles count those inside functions too. ``if TYPE_CHECKING:`` blocks
are never dependencies.
"""

from __future__ import annotations

import ast
from pathlib import Path

import actiontrace

PACKAGE = Path(actiontrace.__file__).parent

# The recording side: what a decorated call and a flow run: the ``recording`` package and
# the shared modules it stands on. It never imports the pipeline below the buffer or the
# storages (docs/architecture.md).
SHARED = ("actiontrace._state", "actiontrace._options", "actiontrace._model",
          "actiontrace._exceptions")
RECORDING_PACKAGE = "actiontrace.recording"
# The pipeline (buffer, writer, journal), the tracer that assembles it, and the storages.
BELOW = ("actiontrace.pipeline", "actiontrace._tracer", "actiontrace.storage")
# On the side: nothing in the core imports them.
SIDE = ("actiontrace.cli", "actiontrace._cli", "actiontrace.demo", "actiontrace._views",
        "actiontrace._analysis", "actiontrace.contrib", "actiontrace._viewer",
        "actiontrace._propagation", "actiontrace._instrument", "actiontrace.testing",
        "actiontrace._pytest_plugin")


def _recording(graph: dict[str, set[str]]) -> set[str]:
    return {m for m in graph if m.startswith(RECORDING_PACKAGE) or m in SHARED}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool, lazy: bool) -> set[str]:
    """What ``tree`` imports: at module level, or (``lazy``) inside functions too."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.finalbody)
            elif isinstance(node, ast.With | ast.For | ast.While) or (
                lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            ):
                visit(node.body)

    visit(tree.body)
    return found


def _graph(lazy: bool = False) -> dict[str, set[str]]:
    paths = {_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        imports = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", lazy)
        # A package's __init__ runs before any of its submodules (the root package is
        # the facade that re-exports everything): a module's own ancestors are not its
        # dependencies, or every ``from pkg import sibling`` would look like a cycle.
        ancestors = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        graph[name] = {i for i in imports if i in paths and i != name and i not in ancestors
                       and i != "actiontrace"}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


class TestLayering:
    def test_the_layers_are_all_there(self) -> None:
        """Every module is in exactly one layer, and each layer has modules (the lists stay true)."""
        graph = _graph()
        recording = _recording(graph)
        layers = {
            m: [name for name, inside in (
                ("recording", m in recording),
                ("below", m.startswith(BELOW)),
                ("side", m.startswith(SIDE)),
            ) if inside]
            for m in graph
            if m not in ("actiontrace", "actiontrace._version")
        }
        assert {m: ls for m, ls in layers.items() if len(ls) != 1} == {}
        assert len(recording) >= 10
        assert any(m.startswith("actiontrace.pipeline.") for m in graph)

    def test_recording_never_imports_the_pipeline_or_storage(self) -> None:
        """No recording module reaches the writer, the journal, the tracer or a storage."""
        graph = _graph()
        leaks = {
            module: sorted(d for d in _reachable(graph, module) if d.startswith(BELOW))
            for module in sorted(_recording(graph))
        }
        assert {m: d for m, d in leaks.items() if d} == {}

    def test_the_core_never_imports_the_side(self) -> None:
        """Recording, pipeline and storage never import the CLI, views or integrations."""
        graph = _graph()
        recording = _recording(graph)
        core = [m for m in graph if m in recording or m.startswith(BELOW)]
        leaks = {m: sorted(d for d in _reachable(graph, m) if d.startswith(SIDE)) for m in core}
        assert {m: d for m, d in leaks.items() if d} == {}

    def test_no_import_cycles(self) -> None:
        """No module reaches itself, counting imports inside functions (not TYPE_CHECKING)."""
        graph = _graph(lazy=True)
        cycles = sorted(m for m in graph if m in _reachable(graph, m))
        assert cycles == []

    def test_the_scan_sees_a_relative_import(self) -> None:
        """Relative imports resolve against the module's package (the scan can fail)."""
        tree = ast.parse("from . import _base\nfrom ._sql import X\n")
        got = _imports(tree, "actiontrace.storage._memory", False, lazy=False)
        assert {"actiontrace.storage._base", "actiontrace.storage._sql"} <= got
