"""storage: every volume the host's roles keep data on, LUKS2 with ext4 inside, mounted where
the data lives, and the units using it ordered after the mount.

The inventory names the block device of each volume (`volume_devices`); bulwark.volumes says
which volumes a host gets and where each is mounted; bulwark.luks formats, opens and mounts
them without ever destroying data: a device is formatted only when it is blank, a LUKS2 one
is opened, anything else is refused naming host, volume and device. Each key comes from the
vault on the command's stdin and is never written to the host: after a reboot a volume is
opened through the other site's Tang (roles/clevis.py), or stays closed until the operator
opens it; no unit keeping data on it starts before.

It also deploys the logs role: the logs volume takes the host's /var/log (bulwark.luks moves it
there once, and leaves the directory beneath empty and immutable). Debian flushes the journal
to /var/log and writes the boot into wtmp before sysinit.target, long before the volume can
open through Tang after the network: their units are masked (with their RequiresMountsFor the
boot would be an ordering cycle) and LOGS_UNIT does both once the volume is mounted. Until
then journald keeps the journal in /run, and anything else writing to /var/log fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import luks
from bulwark.deploying import (
    install,
    masked,
    packages,
    render_for_deploy,
    service,
    units_reread,
)
from bulwark.livecheck import LiveCheck
from bulwark.operations import UNIT_DIR
from bulwark.plan import ManagedFile
from bulwark.probes import Unit, Units
from bulwark.secret import SecretStore
from bulwark.secret_names import luks_key_name, luks_recovery_name
from bulwark.topology import Host, Topology
from bulwark.volumes import LOGS_UNIT, volume, volumes_for

ROLE = "storage"

PACKAGES: tuple[str, ...] = ("cryptsetup", "e2fsprogs")
# No device files or set-uid programs on a data volume.
MOUNT_OPTIONS = "nodev,nosuid"
# The drop-in each unit keeping data on a volume gets (beside its own unit file).
DROP_IN_NAME = "bulwark-storage.conf"
# The volume that holds /var/log, and Debian's units LOGS_UNIT replaces on a host that has it.
LOGS = "logs"
REPLACED_BY_LOGS_UNIT: tuple[str, ...] = (
    "systemd-journal-flush.service",
    "systemd-update-utmp.service",
    # Requires the one above; writes the runlevel into wtmp.
    "systemd-update-utmp-runlevel.service",
)


def drop_in_path(unit: str) -> str:
    """Where `unit`'s RequiresMountsFor drop-in goes."""
    return f"{UNIT_DIR}/{unit}.d/{DROP_IN_NAME}"


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    names = volumes_for(host)
    logs = (ManagedFile(f"{UNIT_DIR}/{LOGS_UNIT}", "logs.service.j2"),) if LOGS in names else ()
    return (
        *logs,
        *(
            ManagedFile(f"{UNIT_DIR}/{volume(name).mount_unit}", "volume.mount.j2", item=name)
            for name in names
        ),
        *(
            ManagedFile(drop_in_path(unit), "requires-mounts.conf.j2", item=unit)
            for name in names
            for unit in volume(name).units
        ),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    names = volumes_for(host)
    return {
        "storage": {
            "filesystem": luks.FILESYSTEM,
            "mount_options": MOUNT_OPTIONS,
            "volumes": {
                spec.name: {
                    "name": spec.name,
                    "description": volume(spec.name).description,
                    "device": spec.device,
                    "mapped": spec.mapped,
                    "path": spec.mount_point,
                }
                for spec in (luks.volume_spec(host, name) for name in names)
            },
            "unit_volumes": {unit: name for name in names for unit in volume(name).units},
        }
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """Every volume mounted (a mount unit is never enabled: what needs it pulls it in), and
    the journal on the logs volume."""
    names = volumes_for(host)
    if not names:
        return ()
    logs = (Unit(LOGS_UNIT),) if LOGS in names else ()
    return (Units((*(Unit(volume(name).mount_unit, enabled=None) for name in names), *logs)),)


@deploy("storage")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """The tools, Debian's early log writers masked, the mount units and drop-ins (systemd
    rereads them), then each volume formatted if blank, opened and mounted, and the journal
    put on the logs volume. A host without volumes gets nothing."""
    names = volumes_for(host)
    if not names:
        return
    packages(ROLE, PACKAGES)
    if LOGS in names:
        masked(ROLE, REPLACED_BY_LOGS_UNIT)
    rendered = render_for_deploy(ROLE, topology, host, secrets)
    install(
        ROLE,
        [rendered[managed.path] for managed in managed_files(topology, host)],
        then=units_reread(),
    )
    for name in names:
        key = secrets.get(luks_key_name(host, name))
        recovery = secrets.get(luks_recovery_name(host, name))
        luks.luks_volume(
            name=f"storage: {name} volume",
            spec=luks.volume_spec(host, name),
            _stdin=luks.KeyStdin(key, recovery),
        )
    if LOGS in names:
        service(f"{ROLE}: the journal on the logs volume", LOGS_UNIT)
