"""The house keeps its shape: attnlib's wings import only wings below them, no modules import each other in a
circle, and every module and function stays small enough to read.

Imports are read from the code with `ast`, every import statement counted: those inside functions and under
`if TYPE_CHECKING:` tie two modules together as much as those at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "attnlib"
# Each wing and the floor it stands on: a module may import its own wing and the wings on lower floors only.
# Wings on the same floor (report, explorer) stand side by side and import neither each other.
FLOORS = {"ground": 0, "results": 1, "evidence": 2, "viz": 3, "training": 4, "experiments": 5, "report": 6,
          "explorer": 6, "runner": 7, "commands": 8}
COMMANDS = {"run", "explore", "params", "distributed"}  # `python -m attnlib.X` aliases of modules in the wings
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_LINE_CHARS = 350, 60, 120


def modules() -> dict[str, Path]:
    """attnlib's modules by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def wing(module: str) -> str:
    """The wing a module belongs to: its sub-package of attnlib; modules at attnlib's top are the ground, except the
    command-line aliases."""
    parts = module.split(".")
    if len(parts) == 1:
        return "ground"
    if len(parts) == 2 and parts[1] in COMMANDS:
        return "commands"
    return parts[1] if parts[1] in FLOORS else "ground"  # attnlib.models: a package of the ground


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The attnlib modules that `module` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:  # a name imported from a module: that module
                name = name.rpartition(".")[0]
            if name.startswith("attnlib") and name != module and name != "attnlib":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_is_in_a_known_wing():
    strays = [m for m in modules() if m.count(".") >= 1 and m.split(".")[1] not in FLOORS
              and not (PACKAGE / m.split(".")[1]).is_file() and not (PACKAGE / f"{m.split('.')[1]}.py").exists()
              and m.split(".")[1] != "models"]
    assert not strays, f"modules in a folder that is not a wing: {strays}; add the wing to FLOORS"


def test_wings_import_only_wings_below_them():
    wrong = []
    for module, targets in import_graph().items():
        for target in targets:
            a, b = wing(module), wing(target)
            if a != b and FLOORS[b] >= FLOORS[a]:
                wrong.append(f"{module} ({a}) imports {target} ({b})")
    assert not wrong, "imports against the floors:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_floor_rule_would_catch_an_upward_import(tmp_path):
    """The checks above could fail: an import from the ground into the runner is found."""
    fake = tmp_path / "attnlib"
    (fake / "runner").mkdir(parents=True)
    (fake / "runner" / "run.py").write_text("X = 1\n")
    (fake / "data.py").write_text("def f():\n    from attnlib.runner.run import X\n")
    known = {"attnlib.runner.run": fake / "runner" / "run.py", "attnlib.data": fake / "data.py"}
    assert imports("attnlib.data", fake / "data.py", known) == {"attnlib.runner.run"}
    assert FLOORS[wing("attnlib.runner.run")] > FLOORS[wing("attnlib.data")]


def sizes(path: Path) -> list[str]:
    """What in one file is longer than the house allows."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = [f"{len(lines)} lines"] if len(lines) > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{node.name}() is {length} lines")
    out += [f"line {i} is {len(line)} characters" for i, line in enumerate(lines, 1) if len(line) > MAX_LINE_CHARS]
    return out


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_and_functions_stay_small(module):
    path = modules()[module]
    too_long = sizes(path)
    assert not too_long, (f"{path.relative_to(PACKAGE.parent)}: " + "; ".join(too_long)
                          + f" (at most {MAX_MODULE_LINES} lines a module, {MAX_FUNCTION_LINES} a function, "
                            f"{MAX_LINE_CHARS} characters a line)")
