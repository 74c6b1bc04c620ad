"""End-to-end tests: real clients connecting from the lab's internet namespace, as outsiders do.

Run them with `bulwark lab internet -- .venv/bin/pytest tests/e2e`, which checks the lab is up
and enters the namespace. Anywhere else this conftest refuses to run: the clients connect to the
inventory's public addresses, which must only ever be the lab's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pytest

from bulwark.inventory import load_inventory, load_topology
from bulwark.lab import paths
from bulwark.lab.plan import INTERNET_NETNS
from bulwark.topology import Topology

LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"
_HOW = "run `bulwark lab internet -- .venv/bin/pytest tests/e2e`"


def _same_file(first: str | Path, second: str | Path) -> bool:
    try:
        a, b = os.stat(first), os.stat(second)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _own_addresses() -> set[ipaddress.IPv4Address]:
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True).stdout)
    return {ipaddress.IPv4Address(info["local"]) for link in links for info in link["addr_info"]}


def pytest_configure(config: pytest.Config) -> None:
    if not _same_file("/proc/self/ns/net", paths.NETNS_DIR / INTERNET_NETNS):
        raise pytest.UsageError(f"e2e tests run only in the lab's internet namespace: {_HOW}")
    expected = ipaddress.IPv4Address(
        next(iter(load_inventory(LAB_INVENTORY))).data.get("lab_internet_address")
    )
    if expected not in _own_addresses():
        raise pytest.UsageError(f"this namespace lacks lab_internet_address {expected}: {_HOW}")


@pytest.fixture(scope="session")
def topology() -> Topology:
    return load_topology(LAB_INVENTORY)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`public_host`: every inventory host with a public address, by name."""
    if "public_host" in metafunc.fixturenames:
        hosts = [host for host in load_topology(LAB_INVENTORY).hosts if host.public_address]
        metafunc.parametrize("public_host", hosts, ids=[host.name for host in hosts])
