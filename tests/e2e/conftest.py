"""End-to-end tests: real clients connecting from the lab's internet namespace, as outsiders do.

Run them with `bulwark lab internet -- .venv/bin/pytest tests/e2e`, which checks the lab is up
and enters the namespace. Anywhere else this conftest refuses to run: the clients connect to the
inventory's public addresses, which must only ever be the lab's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailclient import find, imap

from bulwark import pki
from bulwark.inventory import load_inventory, load_topology
from bulwark.lab import paths
from bulwark.lab.accounts import LabAccount, lab_accounts
from bulwark.lab.plan import INTERNET_NETNS
from bulwark.topology import Topology
from bulwark.vault import Vault, load_key

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
    config.addinivalue_line(
        "markers", f"{BANS_THE_CLIENT}: gets the internet address banned; runs after the rest"
    )
    config.addinivalue_line(
        "markers", f"{REDEPLOYS}: deploys hosts again; runs after the rest, before the bans"
    )
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


@pytest.fixture(scope="session")
def ca_file(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab vault's internal CA certificate, written once: for clients that take a CA file
    (`requests`, `caldav`) rather than an SSLContext."""
    vault = Vault.open(Path(topology.vault_file), load_key(paths.STATE_DIR / "vault.key"))
    ca = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.write_text(pki.ca_certificate(vault))
    return ca


@pytest.fixture(scope="session")
def tls_context(ca_file: Path) -> ssl.SSLContext:
    """Verifies certificates and host names against the lab vault's internal CA, nothing else."""
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(scope="session")
def alice(topology: Topology) -> LabAccount:
    """The first account: two app passwords, and a main password that must be refused."""
    return lab_accounts(topology)[0]


@pytest.fixture(scope="session")
def bob(topology: Topology) -> LabAccount:
    """The second account: one app password."""
    return lab_accounts(topology)[1]


@pytest.fixture
def cleanup(topology: Topology, tls_context: ssl.SSLContext) -> Iterator[list]:
    """Collects (account, folder, subject) of test messages and deletes them afterwards
    (the deletion replicates to the other site)."""
    created: list[tuple[LabAccount, str, str]] = []
    yield created
    for account, folder, subject in created:
        with imap(topology, tls_context) as mailbox:
            mailbox.login(account.address, account.password.reveal())
            for number in find(mailbox, folder, subject):
                mailbox.store(number, "+FLAGS", "\\Deleted")
            mailbox.expunge()


# Tests that get the clients' own address banned run after every other test; tests that
# deploy hosts again (restarting what other tests use) run just before them.
BANS_THE_CLIENT = "bans_the_client"
REDEPLOYS = "redeploys"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `bans_the_client` last, in their own order: the ban they provoke (and
    Dovecot's slowing of a failing address) must not touch any other test. Tests marked
    `redeploys` just before them, so no other test meets a service restarting."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker(BANS_THE_CLIENT) is not None,
            item.get_closest_marker(REDEPLOYS) is not None,
        )
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`public_host`: every inventory host with a public address, by name."""
    if "public_host" in metafunc.fixturenames:
        hosts = [host for host in load_topology(LAB_INVENTORY).hosts if host.public_address]
        metafunc.parametrize("public_host", hosts, ids=[host.name for host in hosts])
