"""Which roles run where, in which order, and the `only_roles` narrowing of a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark import plan
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")


def test_every_host_gets_the_infrastructure_roles_first_in_order():
    roles = plan.host_roles(LAB.host("nj-mail"))
    assert roles == ("base", "pki", "storage", "vpn", "firewall", "mx", "mailstore")
    assert plan.host_roles(LAB.host("nj-gw"))[:5] == ("base", "pki", "storage", "vpn", "firewall")


def test_missing_roles_are_reported_not_hidden():
    assert "storage" in plan.missing_roles(LAB.host("nj-web"))
    assert "base" not in plan.missing_roles(LAB.host("nj-web"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("firewall", {"firewall"}), (" vpn , firewall ", {"vpn", "firewall"})],
)
def test_only_roles_narrows_a_run(value, expected):
    parsed = plan.parse_only_roles(value)
    assert parsed == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize("value", ["fierwall", "", ",", "base,dns"])
def test_only_roles_rejects_unknown_names_naming_the_field(value):
    with pytest.raises(BulwarkError, match=r"^only_roles: unknown role"):
        plan.parse_only_roles(value)
