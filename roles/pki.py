"""pki: each host's certificate chain and private key, and the internal CA as a trust anchor.

The certificates come from bulwark.pki (issued into the vault by `bulwark secrets generate`).
The key is readable by root and the ssl-cert group only. The CA goes into the system trust store
so replication and LMTP peers verify each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import pki
from bulwark.deploying import install, packages, render_for_deploy
from bulwark.livecheck import LiveCheck
from bulwark.operations import Activation
from bulwark.plan import ManagedFile
from bulwark.probes import Certificate
from bulwark.secret import SecretStore
from bulwark.templating import derived_or_sealed
from bulwark.topology import Host, Topology

ROLE = "pki"

PACKAGES: tuple[str, ...] = ("ca-certificates", "ssl-cert")
# Rebuilds /etc/ssl/certs from scratch, so a replaced CA leaves nothing of the old one behind.
TRUST_STORE_REFRESH = Activation("trust-store", (("update-ca-certificates", "--fresh"),))


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(pki.CA_CERT_PATH, "ca.crt.j2"),
        ManagedFile(pki.HOST_CERT_PATH, "host.crt.j2"),
        ManagedFile(pki.HOST_KEY_PATH, "host.key.j2", mode="0640", group=pki.KEY_GROUP),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        "ca_certificate": derived_or_sealed(
            lambda: pki.ca_certificate(secrets).strip(), "<CA certificate: sealed>"
        ),
        "certificate_chain": derived_or_sealed(
            lambda: pki.host_certificate_chain(secrets, host.name).strip(),
            f"<{host.name} certificate: sealed>",
        ),
        "private_key": pki.host_private_key(secrets, host.name),
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """Days left of the host's certificate and of the CA."""
    return (Certificate(pki.HOST_CERT_PATH, "host"), Certificate(pki.CA_CERT_PATH, "CA"))


@deploy("pki")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """Install the chain, key and CA; refresh the trust store once the CA changed."""
    packages(ROLE, PACKAGES)
    files = render_for_deploy(ROLE, topology, host, secrets)
    install(ROLE, [files[pki.CA_CERT_PATH]], then=TRUST_STORE_REFRESH)
    install(ROLE, [files[pki.HOST_CERT_PATH], files[pki.HOST_KEY_PATH]])
