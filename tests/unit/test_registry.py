"""bulwark.registry: which roles exist, in which order, where they run, what they own, and what a
role without a module may never get (ports, secrets, promises)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark import catalogue, registry
from bulwark.audit import port_matrix, tls_table
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology
from bulwark.platform_secrets import _KINDS, required_secrets
from bulwark.volumes import VOLUMES

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")


def test_roles_are_in_the_designed_order():
    assert [role.name for role in registry.ROLES] == [
        "base", "pki", "storage", "logs", "vpn", "gateway", "firewall", "tang", "clevis",
        "proxy", "mx", "mailstore", "mailconfig", "dav", "files", "directory", "backup",
        "backup-client",
    ]  # fmt: skip
    # backup-client comes last: it backs up what the roles before it keep.
    assert registry.EVERY_HOST_ROLES == (
        "base", "pki", "storage", "logs", "vpn", "firewall", "clevis", "backup-client",
    )  # fmt: skip


def test_role_names_are_unique_and_every_module_is_a_file_in_roles():
    names = [role.name for role in registry.ROLES]
    assert len(names) == len(set(names))
    modules = {role.module for role in registry.ROLES if role.implemented}
    files = {path.stem for path in (REPO / "roles").glob("*.py") if path.stem != "__init__"}
    assert modules == files
    for module in modules:
        assert module == registry.role_module(module).ROLE


def test_what_roles_own_exists_where_it_is_defined():
    kinds = {kind for role in registry.ROLES for kind in role.secrets}
    assert kinds == set(_KINDS)
    volumes = [name for role in registry.ROLES for name in role.volumes]
    assert sorted(volumes) == sorted(volume.name for volume in VOLUMES)
    assert {service.role for service in catalogue.SERVICES} <= {r.name for r in registry.ROLES}
    assert [service.name for service in registry.role("mx").services] == [
        "smtp", "submissions", "submissions-proxied", "submission", "spam-filter",
    ]  # fmt: skip


def test_a_gateway_runs_the_vpn_module_once_in_order():
    modules = registry.host_modules(LAB.host("nj-gw"))
    assert [module.ROLE for module in modules] == [
        "base", "pki", "storage", "vpn", "firewall", "clevis", "proxy", "backup",
    ]  # fmt: skip
    modules = registry.host_modules(LAB.host("nj-mail"))
    assert [module.ROLE for module in modules] == [
        "base",
        "pki",
        "storage",
        "vpn",
        "firewall",
        "clevis",
        "mx",
        "mailstore",
        "backup",
    ]


def test_every_role_has_a_module():
    assert registry.not_deployed(PRODUCTION) == {}
    assert registry.describe_not_deployed(PRODUCTION) is None


@pytest.mark.usefixtures("logs_not_deployed")
def test_roles_without_a_module_are_reported_with_their_hosts():
    waiting = registry.not_deployed(PRODUCTION)
    assert list(waiting) == ["logs"]
    assert len(waiting["logs"]) == len(PRODUCTION.hosts)
    line = registry.describe_not_deployed(PRODUCTION)
    assert line == "not deployed yet (no module; no port, secret or promise): logs (every host)"


@pytest.mark.parametrize("topology", [LAB, PRODUCTION], ids=["lab", "production"])
def test_the_audit_never_reports_a_service_of_a_role_without_a_module(topology):
    undeployed = {role.name for role in registry.ROLES if not role.implemented}
    assert not {row["service"] for row in port_matrix(topology)} & {
        service.name for service in catalogue.SERVICES if service.role in undeployed
    }
    assert not {row["role"] for row in tls_table(topology)} & undeployed


@pytest.mark.usefixtures("logs_not_deployed")
def test_a_role_without_a_module_needs_no_secret():
    """The logs volume's role without a module: no host gets a key for it."""
    names = required_secrets(PRODUCTION)
    assert not any(name.startswith("luks/") and name.endswith("/logs") for name in names)
    assert any(name.startswith("luks/") and name.endswith("/backups") for name in names)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("firewall", {"firewall"}),
        (" vpn , firewall ", {"vpn", "firewall"}),
        ("gateway", {"gateway"}),
    ],
)
def test_only_roles_narrows_a_run(value, expected):
    parsed = registry.parse_only_roles(value)
    assert parsed == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize("value", ["fierwall", "", ",", "base,dns"])
def test_only_roles_rejects_unknown_names_naming_the_field(value):
    with pytest.raises(BulwarkError, match=r"^only_roles: unknown role"):
        registry.parse_only_roles(value)


def test_only_roles_keeps_the_order_and_skips_the_rest():
    host = LAB.host("nj-mail")
    modules = registry.host_modules(host, frozenset({"mailstore", "base"}))
    assert [module.ROLE for module in modules] == ["base", "mailstore"]


def test_every_host_gets_the_infrastructure_roles_first_in_order():
    roles = [role.name for role in registry.host_roles(LAB.host("nj-mail"))]
    assert roles == [
        "base", "pki", "storage", "logs", "vpn", "firewall", "clevis", "mx", "mailstore",
        "backup-client",
    ]  # fmt: skip
    gateway = [role.name for role in registry.host_roles(LAB.host("nj-gw"))]
    assert gateway[:7] == ["base", "pki", "storage", "logs", "vpn", "gateway", "firewall"]


def test_an_unknown_role_name_is_a_programming_error():
    with pytest.raises(KeyError, match="no role 'mailstor' in the registry"):
        registry.role("mailstor")
