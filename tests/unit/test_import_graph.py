"""bulwark's modules form layers: no import cycle, and no import hidden in a function to dodge one.

Three proofs: the static graph of module-level imports sorts topologically; every module imports
cleanly when it is the first bulwark module a fresh interpreter sees; and no function imports a
bulwark module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "bulwark"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node: ast.AST) -> set[str]:
    """The bulwark modules an import statement names (`from bulwark import x`: bulwark.x when
    x is a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "bulwark"}
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bulwark":
        submodules = {f"{node.module}.{alias.name}" for alias in node.names}
        return (submodules & MODULES.keys()) or {node.module}
    return set()


def module_level_imports(tree: ast.Module) -> set[str]:
    """Imports run when the module loads: at top level or in top-level if/try blocks."""
    found: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        statement = pending.pop()
        found |= imported_modules(statement)
        if isinstance(statement, ast.If | ast.Try):
            children = ast.iter_child_nodes(statement)
            pending += [child for child in children if isinstance(child, ast.stmt)]
    return found


def test_the_module_import_graph_has_no_cycle():
    graph = {
        name: module_level_imports(ast.parse(path.read_text())) - {name}
        for name, path in MODULES.items()
    }
    assert graph["bulwark.platform_secrets"] >= {"bulwark.pki", "bulwark.vault"}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None
    assert (
        order.index("bulwark.secret")
        < order.index("bulwark.vault")
        < order.index("bulwark.platform_secrets")
    )
    assert order.index("bulwark.topology") < order.index("bulwark.validation")
    assert order.index("bulwark.validation") < order.index("bulwark.inventory")


FIRST_IMPORT = """
import importlib, sys
failures = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("bulwark", "roles")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failures.append(f"{name}: {type(error).__name__}: {error}")
print("\\n".join(failures))
"""


def test_every_module_imports_when_it_is_the_first_bulwark_module_loaded():
    """One interpreter; before each import every bulwark module is forgotten, so each module is
    imported first, as `python -c 'import bulwark.X'` would."""
    result = subprocess.run(
        [sys.executable, "-c", FIRST_IMPORT, *MODULES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.strip() == "", result.stdout


def test_no_function_imports_a_bulwark_module():
    hidden = []
    for name, path in MODULES.items():
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if imported_modules(node):
                    hidden.append(f"{name}.{function.name} line {node.lineno}")
    assert hidden == []
