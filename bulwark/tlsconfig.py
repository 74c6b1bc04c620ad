"""What every TLS daemon's configuration says about TLS: the platform policy (bulwark.tls), where
the host's certificate, key and the internal CA are, and the served chain's digest.

The digest goes into each configuration, so that a renewed certificate changes the
configuration and the daemon is reloaded with it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bulwark import pki, tls
from bulwark.secret import SecretStore
from bulwark.templating import derived_or_sealed
from bulwark.topology import Host


def certificate_sha256(secrets: SecretStore, host: Host) -> str:
    """The served chain's digest: written into each daemon's configuration so that a new
    certificate changes the configuration, and the daemon is reloaded with it."""
    return derived_or_sealed(
        lambda: hashlib.sha256(pki.host_certificate_chain(secrets, host.name).encode()).hexdigest(),
        "sealed",
    )


def tls_context(secrets: SecretStore, host: Host) -> dict[str, Any]:
    """The TLS policy and certificate paths, as every TLS daemon's template uses them."""
    return {
        "tls_min_protocol": tls.MIN_PROTOCOL,
        "tls12_ciphers": tls.TLS12_CIPHERS,
        "tls13_suites": tls.TLS13_SUITES,
        "tls_groups": tls.GROUPS,
        "tls_gnutls_priority": tls.GNUTLS_PRIORITY,
        "certificate": pki.HOST_CERT_PATH,
        "private_key": pki.HOST_KEY_PATH,
        "ca_certificate": pki.CA_CERT_PATH,
        "certificate_sha256": certificate_sha256(secrets, host),
    }
