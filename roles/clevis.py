"""clevis: every volume of the host bound to the Tang server of the other site, and opened
through it at boot (bulwark.clevis says how, and why not through crypttab).

Runs on every host with volumes, after the tunnel, the firewall and the Tang servers, so that
a run deploying both sites finds the other site's Tang answering. A host whose topology has no
Tang in another site gets nothing: its volumes are then opened only with the vault's key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import clevis, luks, tang
from bulwark.deploying import install, packages, render_for_deploy, service, units_reread
from bulwark.exposure import SITE_ROUTES_UNIT, VPN_UNIT
from bulwark.livecheck import LiveCheck
from bulwark.operations import UNIT_DIR
from bulwark.plan import ManagedFile
from bulwark.secret import SecretStore
from bulwark.secret_names import luks_key_name, luks_recovery_name, tang_key_name
from bulwark.templating import derived_or_sealed
from bulwark.topology import Host, Topology
from bulwark.volumes import volume, volumes_for

ROLE = "clevis"

PACKAGES: tuple[str, ...] = ("clevis", "clevis-luks")
DROP_IN_NAME = "bulwark-clevis.conf"
# What the unlock units run (templates/clevis/bulwark-unlock.j2).
SCRIPT = "/usr/local/sbin/bulwark-unlock"


def _bound_volumes(topology: Topology, host: Host) -> tuple[str, ...]:
    """The volumes to bind: all of the host's, when another site has a Tang server."""
    return volumes_for(host) if tang.server_for(topology, host) else ()


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    names = _bound_volumes(topology, host)
    if not names:
        return ()
    return (
        ManagedFile(SCRIPT, "bulwark-unlock.j2", mode="0755"),
        *(
            ManagedFile(f"{UNIT_DIR}/{clevis.unlock_unit(name)}", "unlock.service.j2", item=name)
            for name in names
        ),
        *(
            ManagedFile(
                f"{UNIT_DIR}/{volume(name).mount_unit}.d/{DROP_IN_NAME}",
                "mount-unlock.conf.j2",
                item=name,
            )
            for name in names
        ),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    server = tang.server_for(topology, host)
    specs = [luks.volume_spec(host, name) for name in _bound_volumes(topology, host)]
    return {
        "clevis": {
            "url": tang.url(server) if server else "",
            "timeout": clevis.UNLOCK_TIMEOUT_SECONDS,
            "attempt_timeout": clevis.ATTEMPT_TIMEOUT_SECONDS,
            "network_units": (VPN_UNIT, SITE_ROUTES_UNIT),
            "script": SCRIPT,
            "volumes": {
                spec.name: {
                    "name": spec.name,
                    "device": spec.device,
                    "mapper": spec.mapper,
                    "mapped": spec.mapped,
                    "mount_unit": spec.mount_unit,
                    "unlock_unit": clevis.unlock_unit(spec.name),
                }
                for spec in specs
            },
        }
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """None of its own: an open volume is the storage role's check (its mount unit)."""
    return ()


def _thumbprint(secrets: SecretStore, server: Host, use: str) -> str:
    key = secrets.get(tang_key_name(server, use))
    return derived_or_sealed(lambda: tang.thumbprint(key.reveal()), f"<thumbprint of {key.name}>")


@deploy("clevis")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """The tools, the unlock units (enabled: a boot opens every volume), then each volume
    bound to the other site's Tang with its pinned keys."""
    server = tang.server_for(topology, host)
    names = _bound_volumes(topology, host)
    if server is None or not names:
        return
    packages(ROLE, PACKAGES)
    files = render_for_deploy(ROLE, topology, host, secrets)
    install(
        ROLE,
        [files[managed.path] for managed in managed_files(topology, host)],
        then=units_reread(),
    )
    for name in names:
        service(f"{ROLE}: {name} opened at boot", clevis.unlock_unit(name), running=None)
        clevis.clevis_bound(
            name=f"{ROLE}: {name} volume bound to the other site's Tang",
            spec=luks.volume_spec(host, name),
            url=tang.url(server),
            thumbprint=_thumbprint(secrets, server, tang.SIGNING),
            kid=_thumbprint(secrets, server, tang.EXCHANGE),
            _stdin=luks.KeyStdin(
                secrets.get(luks_key_name(host, name)), secrets.get(luks_recovery_name(host, name))
            ),
        )
