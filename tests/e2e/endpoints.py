"""How the e2e clients name the catalogue's public services, and what a TLS scanner must find.

Shared by the test modules of this directory (pytest puts the directory on sys.path, as it does
for tests/unit's helpers). A client host name is `LABEL.DOMAIN` for the primary site and
`LABEL.SITE.DOMAIN` for a given site: bulwark.lab.hostsfile maps each one, in the internet
namespace's /etc/hosts, to the public address serving it.
"""

from __future__ import annotations

from sslyze import (
    ProtocolWithOpportunisticTlsEnum,
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

from bulwark import catalogue, tls
from bulwark.topology import Topology


def host_name(topology: Topology, label: str, site: str | None = None) -> str:
    """A client host name: `label` (one of a catalogue service's names), generic or of a site."""
    return f"{label}.{site}.{topology.domain}" if site else f"{label}.{topology.domain}"


def name(topology: Topology, service: str, site: str | None = None) -> str:
    """The client host name of a catalogue service (its first name), generic or of one site."""
    return host_name(topology, catalogue.service(service).names[0], site)


def port(service: str) -> int:
    return catalogue.service(service).port


# --- TLS as a scanner sees it: nothing below 1.2, forward secrecy only --------------------------

LEGACY_PROTOCOLS = (
    "ssl_2_0_cipher_suites",
    "ssl_3_0_cipher_suites",
    "tls_1_0_cipher_suites",
    "tls_1_1_cipher_suites",
)


def assert_modern_tls(
    server_name: str,
    server_port: int,
    starttls: ProtocolWithOpportunisticTlsEnum | None = None,
    intermediate: bool = True,
    connections: int | None = None,
) -> None:
    """Scan `server_name:server_port` with sslyze, whose own OpenSSL still speaks SSL 2 to
    TLS 1.1 (the system's refuses them: a refusal seen through it would prove nothing).

    Every legacy protocol is refused; TLS 1.2 is accepted with forward-secret suites only (with
    `intermediate`, exactly bulwark.tls's Mozilla Intermediate ones at most); TLS 1.3 is
    accepted. The scanner verifies no certificate: callers that need that check it themselves.
    `connections` caps the scanner's simultaneous connections (a server limiting those per
    client address, as FTP's does, would otherwise turn some away).
    """
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=server_name, port=server_port),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication=server_name, tls_opportunistic_encryption=starttls
        ),
        scan_commands={
            *(ScanCommand(attribute) for attribute in LEGACY_PROTOCOLS),
            ScanCommand.TLS_1_2_CIPHER_SUITES,
            ScanCommand.TLS_1_3_CIPHER_SUITES,
        },
    )
    scanner = Scanner(
        **({"per_server_concurrent_connections_limit": connections} if connections else {})
    )
    scanner.queue_scans([request])
    (result,) = scanner.get_results()
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    scans = result.scan_result
    for attribute in LEGACY_PROTOCOLS:
        attempt = getattr(scans, attribute)
        assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, attribute
        assert attempt.result.accepted_cipher_suites == [], attribute
    tls12 = scans.tls_1_2_cipher_suites.result.accepted_cipher_suites
    assert tls12
    for accepted in tls12:
        suite = accepted.cipher_suite
        assert accepted.ephemeral_key is not None, suite.name
        assert suite.name.startswith(("TLS_ECDHE_", "TLS_DHE_")), suite.name
        assert "anon" not in suite.name, suite.name
    if intermediate:
        assert {accepted.cipher_suite.openssl_name for accepted in tls12} <= set(tls.TLS12_CIPHERS)
    assert scans.tls_1_3_cipher_suites.result.accepted_cipher_suites
