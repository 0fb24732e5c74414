"""The engine's layers (ARCHITECTURE.md): a module imports only from its own layer or lower ones."""
import ast
from pathlib import Path

import harness

ROOT = Path(harness.__file__).parent
# Bottom up. Plugins sit at the level they extend: datasets with data, algorithms with models,
# boards with reports; the top layer holds the CLI.
LAYERS = {"core": 0, "data": 1, "datasets": 1, "models": 2, "algorithms": 2, "protocols": 3, "runs": 4,
          "sweeps": 5, "reports": 6, "leaderboards": 6, "commands": 7, "cli": 7, "quickstart": 7, "__main__": 7}


def layer_of(module: str) -> int:
    """``harness.runs.run`` → the layer of ``runs``."""
    return LAYERS[module.split(".")[1]]


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        yield "harness." + ".".join(path.relative_to(ROOT).with_suffix("").parts), path


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness."):
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.module == "harness":
            yield from (f"harness.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("harness."))


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m, _ in modules() if m != "harness.__init__" and m.split(".")[1] not in LAYERS]
    assert unplaced == []


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{module} imports {target}" for module, path in modules() if module != "harness.__init__"
              for target in imports(path) if layer_of(target) > layer_of(module)]
    assert upward == []


def module_imports(module: str, path: Path) -> set[str]:
    """The engine modules ``module`` imports anywhere in its file (inside functions too):
    ``from harness.runs import features`` names the module ``harness.runs.features``."""
    known = dict(modules())
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("harness."))
    return {m for m in found if m in known and m != module}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected set of modules that import each other."""
    order, low, stack, cycles = {}, {}, [], []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            members = stack[stack.index(node):]
            del stack[stack.index(node):]
            if len(members) > 1:
                cycles.append(closed_path(graph, set(members), node))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return cycles


def closed_path(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside one strongly connected set."""
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is not on a cycle of {sorted(members)}")


def test_import_cycles_are_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    assert import_cycles({"x": {"y"}, "y": {"x"}}) == [["x", "y", "x"]]


def test_no_import_cycle_between_engine_modules():
    graph = {module: module_imports(module, path) for module, path in modules()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    private = [f"{module} imports {node.module}.{alias.name}" for module, path in modules()
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness")
               for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert private == []
