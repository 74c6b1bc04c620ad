"""Every encrypted volume of a topology as an auditor reads it: where it is, how it is
encrypted, which kinds of key open it, how it is unlocked and where its header is escrowed.

Derived from the inventory and the registry alone, without connecting: report.md, report.html
and facts.json (hence `bulwark audit diff`) show the same rows. Key slots are named by kind and
by the vault entry holding them, never by value. Whether an escrowed header is current is a
live question: `bulwark storage backup-headers --check` answers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bulwark import clevis, luks, tang
from bulwark.platform_secrets import LUKS_KEY_BYTES, RECOVERY_GROUPS, password_bits
from bulwark.secret_names import luks_header_name, luks_key_name, luks_recovery_name
from bulwark.topology import Host, Topology
from bulwark.volumes import volume, volumes_for

# How a closed volume is opened besides at boot through Tang (unlock_paths).
UNLOCK_PATHS: tuple[str, ...] = (
    "deploy (key from the vault over SSH)",
    "bulwark storage unlock (key from the vault over SSH)",
    "console (recovery passphrase)",
)
PBKDF_TEXT = (
    f"{luks.PBKDF}, {luks.PBKDF_MEMORY_KIB // 1024} MiB, {luks.PBKDF_ITERATIONS} iterations, "
    f"{luks.PBKDF_PARALLEL} lanes"
)


@dataclass(frozen=True)
class KeySlot:
    """A kind of key a volume's header has a slot for, the vault entry holding it, and its
    random bits."""

    kind: str
    entry: str
    bits: int

    def text(self) -> str:
        return f"{self.kind} ({self.entry}, {self.bits} bits)"


@dataclass(frozen=True)
class VolumeAudit:
    """One encrypted volume of one host."""

    host: str
    name: str
    device: str
    mount_point: str
    key_slots: tuple[KeySlot, ...]
    header_escrow: str
    cipher: str = luks.CIPHER
    key_bits: int = luks.KEY_BITS
    pbkdf: str = PBKDF_TEXT
    unlock: tuple[str, ...] = UNLOCK_PATHS

    def facts(self) -> dict[str, Any]:
        """The volume as facts.json holds it (its host is the key above it)."""
        return {
            "name": self.name,
            "device": self.device,
            "mount_point": self.mount_point,
            "cipher": self.cipher,
            "key_bits": self.key_bits,
            "pbkdf": self.pbkdf,
            "key_slots": [slot.text() for slot in self.key_slots],
            "unlock": list(self.unlock),
            "header_escrow": self.header_escrow,
        }


def unlock_paths(topology: Topology, host: Host) -> tuple[str, ...]:
    """How `host`'s closed volumes are opened: at boot through the other site's Tang when there
    is one (roles/clevis.py), then the paths every volume has."""
    server = tang.server_for(topology, host)
    if server is None:
        return UNLOCK_PATHS
    return (f"boot: Clevis, Tang on {server.name} (site {server.site}) over the VPN", *UNLOCK_PATHS)


def host_volumes(topology: Topology, host: Host) -> tuple[VolumeAudit, ...]:
    """`host`'s encrypted volumes, sorted by name (none where volumes_encrypted is false)."""
    unlock = unlock_paths(topology, host)
    server = tang.server_for(topology, host)
    bound = (
        (KeySlot("Clevis passphrase", f"sealed to {server.name}'s Tang", clevis.PASSPHRASE_BITS),)
        if server
        else ()
    )
    return tuple(
        VolumeAudit(
            host=host.name,
            name=name,
            device=host.volume_device(name),
            mount_point=volume(name).path,
            key_slots=(
                KeySlot("vault key", luks_key_name(host, name), LUKS_KEY_BYTES * 8),
                KeySlot(
                    "recovery passphrase",
                    luks_recovery_name(host, name),
                    password_bits(RECOVERY_GROUPS),
                ),
                *bound,
            ),
            header_escrow=f"vault {luks_header_name(host, name)}",
            unlock=unlock,
        )
        for name in volumes_for(host)
    )


def volume_audits(topology: Topology) -> tuple[VolumeAudit, ...]:
    """Every encrypted volume of the topology, by host name then volume."""
    return tuple(
        found
        for host in sorted(topology.hosts, key=lambda host: host.name)
        for found in host_volumes(topology, host)
    )
