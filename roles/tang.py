"""tang: the Tang server the other site's hosts bind their volumes to (roles/clevis.py).

Its two keys come from the vault (bulwark.tang says why: the clients pin the signing key's
thumbprint when their configuration is rendered), written where tangd reads them, readable by
its user only. tangd is started per connection by its socket, which listens on the host's LAN
address alone: the other site reaches it through the tunnel, and the firewall lets in only
the other site's hosts (catalogue service `tang`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import catalogue, tang
from bulwark.deploying import install, keep_running, packages, render_for_deploy, restarted
from bulwark.livecheck import LiveCheck
from bulwark.operations import UNIT_DIR
from bulwark.plan import ManagedFile
from bulwark.probes import Unit, Units
from bulwark.secret import SecretStore
from bulwark.secret_names import tang_key_name
from bulwark.topology import Host, Topology

ROLE = tang.ROLE

PACKAGES: tuple[str, ...] = ("tang",)
SOCKET = "tangd.socket"
SOCKET_DROP_IN = f"{UNIT_DIR}/{SOCKET}.d/bulwark.conf"
# Where Debian's tangd@.service reads its keys, and the user it runs as.
KEY_DIR = "/var/lib/tang"
USER = "_tang"
USES: tuple[str, ...] = (tang.SIGNING, tang.EXCHANGE)


def key_path(use: str) -> str:
    """Where tangd finds the key (any `*.jwk` not hidden: the name is not its thumbprint)."""
    return f"{KEY_DIR}/bulwark-{use}.jwk"


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        *(
            ManagedFile(key_path(use), "key.jwk.j2", mode="0440", user=USER, group=USER, item=use)
            for use in USES
        ),
        ManagedFile(SOCKET_DROP_IN, "tangd.socket.conf.j2"),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        "tang": {
            "address": str(host.lan_address),
            "port": catalogue.service(ROLE).port,
            "jwks": {use: secrets.get(tang_key_name(host, use)) for use in USES},
        }
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """The socket listening (tangd itself runs only during a connection)."""
    return (Units((Unit(SOCKET),)),)


@deploy("tang")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """The package, the keys (tangd reads them at each connection), the socket on its
    address."""
    packages(ROLE, PACKAGES)
    files = render_for_deploy(ROLE, topology, host, secrets)
    install(ROLE, [files[key_path(use)] for use in USES])
    install(ROLE, [files[SOCKET_DROP_IN]], then=restarted(SOCKET, True))
    keep_running(ROLE, SOCKET)
