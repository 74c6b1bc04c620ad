"""Every role module has the same parts in the same order and explicit inputs (bulwark.plan), so
a new role is a copy of the pattern; roles never import each other nor read globals."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from bulwark import registry

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
TEMPLATES_DIR = ROLES_DIR.parent / "templates"
MODULES = sorted({role.module for role in registry.ROLES if role.implemented})
# The parts every role has, in this order (bulwark.plan).
PARTS = ("ROLE", "managed_files", "template_context", "live_checks", "converge")


def tree(module: str) -> ast.Module:
    return ast.parse((ROLES_DIR / f"{module}.py").read_text())


def top_level_names(module: str) -> list[str]:
    names = []
    for node in tree(module).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
    return names


@pytest.mark.parametrize("module", MODULES)
def test_every_role_has_the_same_parts_in_the_same_order(module):
    names = top_level_names(module)
    assert names[0] == "ROLE"
    positions = [names.index(part) for part in PARTS]
    assert positions == sorted(positions), module
    own = [  # the role's own facts, operations and check kinds come before managed_files
        node.name
        for node in tree(module).body
        if isinstance(node, ast.ClassDef)
        or (
            isinstance(node, ast.FunctionDef)
            and any("operation" in ast.unparse(d) for d in node.decorator_list)
        )
    ]
    assert all(names.index(name) < positions[1] for name in own), module
    assert module == registry.role_module(module).ROLE
    assert (TEMPLATES_DIR / module).is_dir()


@pytest.mark.parametrize("module", MODULES)
def test_converge_takes_topology_host_and_secrets(module):
    converge = registry.role_module(module).converge
    assert list(inspect.signature(converge).parameters) == ["topology", "host", "secrets"]
    assert converge.__doc__


@pytest.mark.parametrize("module", MODULES)
def test_live_checks_take_topology_and_host(module):
    live_checks = registry.role_module(module).live_checks
    assert list(inspect.signature(live_checks).parameters) == ["topology", "host"]
    assert live_checks.__doc__


@pytest.mark.parametrize("module", MODULES)
def test_roles_never_import_each_other_nor_read_deploy_globals(module):
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.ImportFrom):
            assert node.module and not node.module.startswith("roles"), module
        if isinstance(node, ast.Import):
            assert not any(alias.name.startswith("roles") for alias in node.names), module
        if isinstance(node, ast.Name):
            assert node.id not in {"deploy_topology", "deploy_host", "deploy_secrets"}, module


@pytest.mark.parametrize("module", MODULES)
def test_roles_install_through_the_shared_helpers(module):
    """Packages and files go through bulwark.deploying (same apt options, checked before live,
    pending actions), never pyinfra's apt.packages or files.put directly."""
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in {
                ("apt", "packages"),
                ("files", "put"),
                ("files", "template"),
            }, module
