"""Where an audit gets its secrets: the vault if the auditor holds its key, else sealed names.

Either way templates only ever see placeholders (the audit environment never reveals); with the
vault the placeholders carry each value's short digest, so auditors can see that a secret
changed between two renders without seeing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from bulwark import catalogue, dns, registry, replication, web
from bulwark.exposure import host_openings, ports_text
from bulwark.render import DNS_ZONE, PORTS_REPORT, REPORT
from bulwark.secret import Secret, SecretStore
from bulwark.topology import Topology
from bulwark.vault import KEY_ENV, open_vault
from bulwark.volume_audit import volume_audits
from bulwark.volumes import volume


class SealedSecret(Secret):
    """A secret whose value the auditor cannot see: only its name is known."""

    __slots__ = ()

    def __init__(self, name: str):
        super().__init__(name, "")

    @property
    def digest(self) -> str:
        return "sealed"

    def reveal(self) -> str:
        raise PermissionError(f"{self.name} is sealed: the audit has no vault key")


class SealedSecrets:
    """Stands in for the vault when the auditor has no key."""

    def get(self, name: str) -> Secret:
        return SealedSecret(name)

    def __contains__(self, name: object) -> bool:
        return True  # every name the roles ask for is rendered as its sealed placeholder


def audit_secrets(topology: Topology) -> SecretStore:
    """The vault when BULWARK_VAULT_KEY and the vault file are both there, else sealed names."""
    vault_file = topology.vault_file
    if os.environ.get(KEY_ENV) and vault_file and Path(vault_file).is_file():
        return open_vault(Path(vault_file))
    click.echo(
        "note: vault not opened (no BULWARK_VAULT_KEY or no vault file): "
        "secrets render as <secret:NAME sha256:sealed>",
        err=True,
    )
    return SealedSecrets()


def port_matrix(topology: Topology) -> list[dict]:
    """Host x port x exposure: every opening of every host's firewall, from the catalogue."""
    rows = []
    for host in topology.hosts:
        for opening in host_openings(topology, host):
            service = opening.service
            rows.append(
                {
                    "host": host.name,
                    "site": host.site,
                    "service": service.name,
                    "transport": str(service.transport),
                    "ports": ports_text(service.ports),
                    "exposure": exposure_text(service),
                    "sources": "any"
                    if opening.sources is None
                    else ", ".join(str(network) for network in opening.sources),
                    "tls": str(service.tls),
                    # A proxy's ports are on its own address, each translated to its listener.
                    **(
                        {"address": str(opening.address), "translated_to": service.listen}
                        if opening.address is not None
                        else {}
                    ),
                }
            )
    return rows


def exposure_text(service: catalogue.Service) -> str:
    """`public`, `management` ...; for a service open to some roles' hosts, which roles:
    `from mx (same site)`."""
    if service.exposure is catalogue.Exposure.ROLE:
        return "from " + ", ".join(str(clients) for clients in service.clients)
    return str(service.exposure)


def tls_table(topology: Topology) -> list[dict]:
    """Every catalogue service the topology deploys, with its TLS mode and client host names."""
    present = registry.deployed_role_names(topology)
    return [
        {
            "service": service.name,
            "role": service.role,
            "ports": ports_text(service.ports),
            "tls": str(service.tls),
            "names": ", ".join(service.fqdns(topology.domain)),
        }
        for service in catalogue.SERVICES
        if service.role in present
    ]


def not_deployed_table(topology: Topology) -> list[dict]:
    """Roles the inventory gives to hosts that have no module yet: nothing of them runs."""
    return [
        {"role": name, "what": registry.role(name).summary, "hosts": ", ".join(hosts)}
        for name, hosts in registry.not_deployed(topology).items()
    ]


def write_report(topology: Topology, out: Path) -> None:
    """`ports.json` (the port matrix) and `report.md` (port matrix, TLS table, data and
    encrypted volumes, web front, the roles not deployed yet), sorted and byte-identical from
    run to run."""
    matrix = port_matrix(topology)
    tls = tls_table(topology)
    waiting = not_deployed_table(topology)
    (out / PORTS_REPORT).write_text(json.dumps(matrix, indent=2, sort_keys=True) + "\n")
    lines = [
        f"# bulwark audit report: {topology.domain}",
        "",
        "## Port matrix (host x port x exposure)",
        "",
        "A proxy's ports are on an address of its own, each translated to its one listener.",
        "",
        *_markdown(
            [_matrix_row_shown(row) for row in matrix],
            ("host", "address", "service", "transport", "ports", "exposure", "sources"),
        ),
        "",
        "## TLS per service",
        "",
        *_markdown(tls, ("service", "role", "ports", "tls", "names")),
        "",
        f"Plaintext ports never open: {', '.join(map(str, catalogue.FORBIDDEN_PORTS))}.",
    ]
    lines += _data_section(topology) + _volumes_section(topology) + _web_section(topology)
    if waiting:
        lines += [
            "",
            "## Not deployed yet",
            "",
            "These roles have no module yet: no port is open, no file written, nothing promised.",
            "",
            *_markdown(waiting, ("role", "what", "hosts")),
        ]
    (out / REPORT).write_text("\n".join(lines) + "\n")


def write_zone(topology: Topology, secrets: SecretStore, out: Path) -> None:
    """`dns.zone`: the records `bulwark dns` prints; without the vault's key (sealed secrets),
    those made from its keys (TLSA, DKIM) are left out, and the file says so."""
    keyed = not isinstance(secrets, SealedSecrets)
    records = dns.zone_records(topology, secrets if keyed else None)
    (out / DNS_ZONE).write_text(dns.render_zone(topology, records, keyed))


def _matrix_row_shown(row: dict) -> dict:
    """A port matrix row as report.md shows it: the address its ports are on, and for a
    proxy the listener they are translated to."""
    if "address" not in row:
        return {**row, "address": "the host's"}
    return {**row, "ports": f"{row['ports']} (to {row['translated_to']})"}


def _data_section(topology: Topology) -> list[str]:
    """Where each deployed role keeps its data: one directory, its volume's."""
    deployed = registry.deployed_role_names(topology)
    rows = [
        {"role": role.name, "volume": name, "path": volume(name).path,
         "holds": volume(name).description}
        for role in registry.ROLES
        if role.name in deployed or (role.every_host and role.implemented)
        for name in role.volumes
    ]  # fmt: skip
    plain = [host.name for host in topology.hosts if not host.volumes_encrypted]
    if not registry.role("storage").implemented:
        note = (
            "Not encrypted yet: the storage role, which puts each directory on its own LUKS2 "
            "volume, is not deployed."
        )
    elif plain:
        note = (
            f"Not encrypted on {', '.join(plain)} (volumes_encrypted: false, where no device "
            "can be encrypted): there each directory stays on the root filesystem."
        )
    else:
        note = "Each directory is its own LUKS2 volume (the storage role)."
    return [
        "",
        "## Data (one directory per role)",
        "",
        *_markdown(rows, ("role", "volume", "path", "holds")),
        "",
        note,
    ]


def _volumes_section(topology: Topology) -> list[str]:
    """Every encrypted volume of every host: where, how, which kinds of key, how it opens."""
    rows = [
        {
            "host": found.host,
            "volume": found.name,
            "device": found.device,
            "mount point": found.mount_point,
            "cipher": f"{found.cipher}, {found.key_bits}-bit key",
            "key derivation": found.pbkdf,
            "key slots": "; ".join(slot.text() for slot in found.key_slots),
            "unlock": "; ".join(found.unlock),
            "header escrow": found.header_escrow,
        }
        for found in volume_audits(topology)
    ]
    if not rows:
        return [
            "",
            "## Encrypted volumes",
            "",
            "No host of this inventory has an encrypted volume.",
        ]
    return [
        "",
        "## Encrypted volumes",
        "",
        "Key slots by kind and the vault entry holding each, never a value; no key is on the "
        "host's disks. The escrowed header is refreshed by `bulwark storage backup-headers` "
        "and after every `rotate-key`; `backup-headers --check` says whether it is current.",
        "",
        *_markdown(rows, tuple(rows[0])),
    ]


def _web_section(topology: Topology) -> list[str]:
    """What every HTTPS response of the web roles carries, and the limits in front of them."""
    if not any(web.web_roles(host) for host in topology.hosts):
        return []
    return [
        "",
        "## Web front (nginx, every HTTPS response, errors and redirects included)",
        "",
        f"- Strict-Transport-Security: max-age={web.HSTS_MAX_AGE}; includeSubDomains",
        f"- Content-Security-Policy: {web.CONTENT_SECURITY_POLICY}",
        "- X-Content-Type-Options: nosniff; Referrer-Policy: no-referrer; X-Frame-Options: DENY",
        "- no server version; port 80 answers only with a redirect to HTTPS",
        f"- requests per client address: {web.REQUEST_RATE}, burst {web.REQUEST_BURST} "
        "(the platform's own networks are not limited)",
        f"- app passwords only, checked by bulwark-webauth; a successful check is reused for "
        f"{web.CREDENTIAL_CACHE_SECONDS} s",
        f"- the primary site ({topology.primary_site.name}) takes writes; the others pull a "
        f"read-only copy every {replication.FOLLOW_INTERVAL} s through the VPN",
        *_files_lines(topology),
    ]


def _files_lines(topology: Topology) -> list[str]:
    """The files role's own promises of the web front, where the platform deploys it."""
    if not any("files" in web.web_roles(host) for host in topology.hosts):
        return []
    return [
        f"- files (webdav, myfiles, the content origin): Content-Security-Policy: {web.FILES_CSP}",
        f"- a browser opening a file is sent to the content origin {topology.content_origin} "
        f"by a signed link that expires after {web.CONTENT_LINK_SECONDS} s; there, anything "
        "but plain text, raster images, audio and video is an attachment",
        f"- files quota: {topology.files_quota} bytes per account unless the account sets its "
        "own (WebDAV 507, FTP refused), reported as RFC 4331 quota properties",
    ]


def _markdown(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    return [header, rule, *("| " + " | ".join(row[c] for c in columns) + " |" for row in rows)]
