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
