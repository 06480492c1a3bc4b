"""The architecture, checked: dependencies point one way (dashboard → darknet_runner → pipeline), only
dashboard/ imports streamlit, no import cycle, and each manifest has one owner module."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "darknet_runner", "dashboard")
ALLOWED = {"pipeline": {"pipeline"}, "darknet_runner": {"pipeline", "darknet_runner"},
           "dashboard": {"pipeline", "darknet_runner", "dashboard"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of ours imported anywhere in the file (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in known or name.split(".")[0] == "streamlit":
                found.add(name)
    return found


GRAPH = {name: _imports(path, set(_modules())) for name, path in _modules().items()}


def test_the_graph_is_not_empty():
    assert "pipeline.workspace" in GRAPH and "darknet_runner.rundir" in GRAPH["darknet_runner.jobs"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_dependencies_point_down_and_streamlit_stays_in_dashboard(module):
    top = module.split(".")[0]
    for target in GRAPH[module]:
        target_top = target.split(".")[0]
        if target_top == "streamlit":
            assert top == "dashboard", f"{module} imports streamlit"
        else:
            assert target_top in ALLOWED[top], f"{module} imports {target}"


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(t for t in GRAPH.get(node, ()) if t in GRAPH and t != node and not _is_parent(t, node)):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def _is_parent(package: str, module: str) -> bool:
    """``from pipeline.demo import scenes`` names the package too; a package importing its child is fine."""
    return module.startswith(package + ".")


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("name, owner", [("run.json", "darknet_runner.rundir"), ("dataset.json", "pipeline.dataset")])
def test_each_manifest_name_is_spelled_in_its_owner_only(name, owner):
    spelled = sorted(module for module, path in _modules().items() if name in _string_constants(path))
    assert spelled == [owner]
