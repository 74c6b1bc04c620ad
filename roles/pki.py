"""pki: each host's certificate chain and private key, and the internal CA as a trust anchor.

The certificates come from bulwark.pki (issued into the vault by `bulwark secrets generate`).
The key is readable by root and the ssl-cert group only. The CA goes into the system trust store
so replication and LMTP peers verify each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy
from pyinfra.operations import apt, server

from bulwark import pki
from bulwark.deploying import put_file, render_for_deploy
from bulwark.plan import ManagedFile
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "pki"

PACKAGES: tuple[str, ...] = ("ca-certificates", "ssl-cert")


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(pki.CA_CERT_PATH, "ca.crt.j2"),
        ManagedFile(pki.HOST_CERT_PATH, "host.crt.j2"),
        ManagedFile(pki.HOST_KEY_PATH, "host.key.j2", mode="0640", group=pki.KEY_GROUP),
    )


def _public(read, what: str) -> str:
    """Certificates are public, but a sealed audit (no vault key) cannot read them."""
    try:
        return read().strip()
    except PermissionError:
        return f"<{what}: sealed>"


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        "ca_certificate": _public(lambda: pki.ca_certificate(secrets), "CA certificate"),
        "certificate_chain": _public(
            lambda: pki.host_certificate_chain(secrets, host.name), f"{host.name} certificate"
        ),
        "private_key": pki.host_private_key(secrets, host.name),
    }


@deploy("pki")
def converge(secrets: SecretStore) -> None:
    """Install the chain, key and CA; refresh the trust store when the CA changes."""
    apt.packages(name="pki: packages", packages=list(PACKAGES), no_recommends=True, _retries=2)
    uploaded = {item.path: put_file(item) for item in render_for_deploy(ROLE, secrets)}
    server.shell(
        name="pki: refresh the trust store",
        commands=["update-ca-certificates --fresh"],
        _if=uploaded[pki.CA_CERT_PATH].did_change,
    )
