"""mailconfig: the files mail clients and other mail servers fetch before they reach our mail.

Thunderbird's autoconfig, Outlook's autodiscover answer, an Apple configuration profile (mail,
calendars and contacts; the device asks for the address and app password) and the MTA-STS
policy, all static and made from the catalogue (bulwark.mailconfig). The web hosts' nginx
(bulwark.web), which the dav role beside it writes, serves them on `autoconfig.DOMAIN`,
`autodiscover.DOMAIN` and `mta-sts.DOMAIN` with the platform's HTTP hardening. nginx reads them
on each request: a new file needs no reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import mailconfig
from bulwark.deploying import directory, install, render_for_deploy
from bulwark.livecheck import LiveCheck
from bulwark.plan import ManagedFile
from bulwark.probes import Directories, Directory
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "mailconfig"


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(mailconfig.THUNDERBIRD_FILE, "config-v1.1.xml.j2"),
        ManagedFile(mailconfig.AUTODISCOVER_FILE, "autodiscover.xml.j2"),
        ManagedFile(mailconfig.APPLE_PROFILE_FILE, "apple.mobileconfig.j2"),
        ManagedFile(mailconfig.MTA_STS_FILE, "mta-sts.txt.j2"),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return mailconfig.template_context(topology)


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """The files' directory (the files themselves are every role's managed files, checked for
    every host)."""
    return (Directories((Directory(mailconfig.CONFIG_DIR, "root", "root", "0755"),)),)


@deploy("mailconfig")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """The files, world-readable (nginx's workers read them); nothing to restart."""
    directory(f"{ROLE}: {mailconfig.CONFIG_DIR}", mailconfig.CONFIG_DIR, "root", "root", "0755")
    rendered = render_for_deploy(ROLE, topology, host, secrets)
    install(ROLE, [rendered[managed.path] for managed in managed_files(topology, host)])
