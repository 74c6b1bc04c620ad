"""mx: Postfix, the platform's MX (25) and authenticated submission (465, 587).

Port 25 takes mail for the platform's accounts from anyone, STARTTLS offered but never required
(RFC 3207: a public MX cannot insist); 465 (implicit TLS) and 587 (STARTTLS) take mail from
authenticated users only, AUTH offered only inside TLS. Accepted mail goes to the site's mail
store over LMTP, STARTTLS required and its certificate checked against the internal CA; mail
for other domains leaves with opportunistic TLS. SASL goes through Dovecot's auth on this host:
the mailstore role's Dovecot where it runs here, else an auth-only Dovecot this role installs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import StringCommand, deploy
from pyinfra.operations import apt, server, systemd
from pyinfra.operations.util import any_changed

from bulwark import catalogue, mail
from bulwark.deploying import deploy_host, put_file, render_for_deploy
from bulwark.plan import ManagedFile
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "mx"

PACKAGES: tuple[str, ...] = ("postfix",)
# Debian's postfix.service only starts, restarts and reloads the instance unit, which runs the
# master daemon: whether Postfix runs is the instance's state.
POSTFIX_UNIT = "postfix.service"
POSTFIX_INSTANCE = "postfix@-.service"
MAIN_CF = "/etc/postfix/main.cf"
MASTER_CF = "/etc/postfix/master.cf"
# Submission services and their own options on top of the common ones (master.cf).
SUBMISSION_SERVICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("submissions", ("smtpd_tls_wrappermode=yes",)),
    ("submission", ()),
)


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(MAIN_CF, "main.cf.j2", checker="postfix"),
        ManagedFile(MASTER_CF, "master.cf.j2"),
        *mail.dovecot_files(ROLE, host),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    store = mail.site_mailstore(topology, host.site)
    names = ("smtp", "submissions", "submission", "lmtp")
    return {
        **mail.auth_context(topology, host, secrets),
        **mail.tls_context(secrets, host),
        "host": host.name,
        "myhostname": mail.fqdn(topology, host),
        "addresses": [account.address(topology.domain) for account in topology.accounts],
        "ports": {name: catalogue.service(name).port for name in names},
        "submission_services": SUBMISSION_SERVICES,
        "sasl_socket": mail.SASL_SOCKET,
        "lmtp": {
            "host": store.name,
            "name": mail.fqdn(topology, store),
            "address": str(store.lan_address),
        },
    }


@deploy("mx")
def converge(secrets: SecretStore) -> None:
    """Postfix (and, alone on its host, Dovecot's auth): check, then reload on any change."""
    host = deploy_host()
    own_dovecot = mail.writes_dovecot(ROLE, host)
    installed = apt.packages(
        name="mx: packages",
        packages=[*PACKAGES, *(mail.AUTH_PACKAGES if own_dovecot else ())],
        no_recommends=True,
        _retries=2,
        _timeout=600,
    )
    rendered = {item.path: item for item in render_for_deploy(ROLE, secrets)}
    postfix = [put_file(rendered.pop(path)) for path in (MAIN_CF, MASTER_CF)]
    if own_dovecot:
        mail.converge_dovecot(ROLE, *[put_file(item) for item in rendered.values()])
    changed = any_changed(*postfix)
    server.shell(
        name="mx: check the Postfix configuration",
        commands=[StringCommand("postfix", "check")],
        _if=changed,
    )
    systemd.service(name="mx: Postfix at boot", service=POSTFIX_UNIT, enabled=True)
    systemd.service(name="mx: Postfix running", service=POSTFIX_INSTANCE, running=True)
    # A reload takes new maps, services and certificates, but not what the packaged
    # configuration started the master with (inet_protocols): after installing, restart.
    systemd.service(
        name="mx: restart Postfix after installing it",
        service=POSTFIX_UNIT,
        restarted=True,
        _if=installed.did_change,
    )
    systemd.service(
        name="mx: reload Postfix",
        service=POSTFIX_UNIT,
        reloaded=True,
        _if=lambda: changed() and not installed.did_change(),
    )
