"""The one-way flow between the top-level folders, read from the source: no upward import, no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("components", "models", "validation", "feature_repo", "pipelines", "serving", "benchmarks")
# What each folder may never import: the steps sit below orchestration, the models below everything.
FORBIDDEN = {"models": set(FOLDERS) - {"models"}, "components": {"pipelines", "serving", "benchmarks"},
             "validation": {"models", "pipelines", "serving", "benchmarks"},
             "feature_repo": {"pipelines", "serving", "benchmarks"}}


def imports() -> dict[str, set[str]]:
    """Module -> our modules it imports (anywhere in the file, function-level imports included)."""
    graph = {}
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            names = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
            graph[module] = {n for n in names if n.split(".")[0] in FOLDERS}
    return graph


def resolve(name: str, modules: set[str]) -> str:
    """``components.config.Config``-style names to the module that defines them."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def test_no_folder_imports_upwards():
    upward = [f"{module} imports {name}" for module, names in imports().items() for name in names
              if name.split(".")[0] in FORBIDDEN.get(module.split(".")[0], ())]
    assert not upward, upward


def test_no_import_cycle():
    graph = imports()
    edges = {m: {resolve(n, set(graph)) for n in names} - {m} for m, names in graph.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target] if target in path else path + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, " -> ".join(cycle)


def artefact_names() -> set[str]:
    """The file names and paths the workspace module declares (its constants holding a file name)."""
    names = set()
    for node in ast.parse((REPO / "components" / "workspace.py").read_text()).body:
        if isinstance(node, ast.Assign):
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and "." in value.value:
                    names |= {value.value, value.value.rsplit("/", 1)[-1]}
    return names


def test_only_the_workspace_module_spells_an_artefact_name():
    names, spelled = artefact_names(), []
    for folder in (*FOLDERS, "tests"):
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "components" / "workspace.py":
                continue
            spelled += [f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}"
                        for node in ast.walk(ast.parse(path.read_text(), str(path)))
                        if isinstance(node, ast.Constant) and node.value in names]
    assert len(names) > 20 and not spelled, spelled
