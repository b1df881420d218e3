"""The package's structure, read from the source with ``ast``: no import cycle, the core never
imports the facade, and no entry point other than the facade builds a ``prototype``."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xrayprototype"
#: the Monk-style facade (and what only it may use); the core must not import these
FACADE_MODULES = {"prototype", "facade_base", "facade_settings", "facade_recipes",
                  "facade_optim", "facade_losses", "facade_transforms", "facade_preprocessing",
                  "facade_evaluation", "facade_explain", "facade_analysis", "facade_audit",
                  "facade_extras", "facade_visualize", "facade_layers", "facade_activations",
                  "facade_export",
                  "compare", "ensemble", "demo", "cli", "monk"}
#: entry points that must open experiments through Experiment.create / Experiment.open
NO_PROTOTYPE_CONSTRUCTION = ("ensemble", "analysis", "cli", "compare")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _imports(path: Path, name: str):
    """Names of the package's modules that ``path`` imports (at any depth of the file)."""
    package = name.rsplit(".", 1)[0] if "." in name and path.name != "__init__.py" else \
        (name if path.name == "__init__.py" else "")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{a.name}" if target else a.name
                                         for a in node.names]
            elif node.module and node.module.startswith("xrayprototype"):
                target = node.module[len("xrayprototype"):].lstrip(".")
                candidates = [target] + [f"{target}.{a.name}" if target else a.name
                                         for a in node.names]
            else:
                continue
            found.update(c for c in candidates if c)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("xrayprototype."):
                    found.add(alias.name[len("xrayprototype."):])
    return found


def _graph(top_level_only: bool = False):
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _cycles(graph):
    """Every elementary cycle found by depth-first search (each reported once)."""
    cycles, state, stack = set(), {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):]
                start = cycle.index(min(cycle))
                cycles.add(tuple(cycle[start:] + cycle[:start]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return sorted(cycles)


def test_the_graph_reader_sees_relative_and_absolute_imports():
    graph = _graph()
    assert "experiment" in graph["prototype"]
    assert "data.dataset" in graph["data"]              # from .dataset import ... in __init__
    assert "config" in graph["data.dataset"]            # from ..config import ...


def test_the_package_has_no_import_cycle():
    graph = _graph()
    # a package __init__ re-exporting its modules is not a cycle of the code
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _cycles(graph) == []


def test_the_core_never_imports_the_facade():
    graph = _graph()
    offenders = {name: sorted(graph[name] & FACADE_MODULES) for name in graph
                 if name.split(".")[0] not in FACADE_MODULES and name != ""
                 and graph[name] & FACADE_MODULES}
    assert offenders == {}, f"core modules importing facade modules: {offenders}"


@pytest.mark.parametrize("module", NO_PROTOTYPE_CONSTRUCTION)
def test_entry_points_open_experiments_without_the_facade(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    calls = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "prototype"]
    assert calls == [], f"{module}.py builds a prototype at lines {calls}"


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]


def test_verb_groups_use_only_the_facade_contract():
    """A facade_* mixin may use its own private methods and those FacadeBase declares, never
    another mixin's (the contract is facade_base.FacadeBase plus Experiment's public API)."""
    contract = {node.name for node in ast.walk(ast.parse(
        (PACKAGE / "facade_base.py").read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef)}
    offenders = {}
    for path in sorted(PACKAGE.glob("facade_*.py")) + [PACKAGE / "prototype.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            own = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
            used = {node.attr for node in ast.walk(cls) if isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name) and node.value.id == "self"
                    and node.attr.startswith("_") and not node.attr.startswith("__")}
            foreign = sorted(used - own - contract)
            if foreign:
                offenders[f"{path.name}:{cls.name}"] = foreign
    assert offenders == {}
