"""mx: Postfix, the platform's MX (25) and authenticated submission (465, 587), and rspamd.

Port 25 takes mail for the platform's accounts from anyone, STARTTLS offered but never required
(RFC 3207: a public MX cannot insist); 465 (implicit TLS) and 587 (STARTTLS) take mail from
authenticated users only, AUTH offered only inside TLS. Accepted mail goes to the site's mail
store over LMTP with implicit TLS, its certificate checked against the internal CA and this
host's presented as the client's; mail for other domains leaves with opportunistic TLS. SASL
goes through Dovecot's auth on this host: the mailstore role's Dovecot where it runs here, else
an auth-only Dovecot this role installs. An address that keeps failing SMTP AUTH is banned
(bulwark.bruteforce).

Every message, received or submitted, passes rspamd (Postfix's milter, on loopback) before it is
queued: submitted mail is DKIM-signed, received mail checked (SPF, DKIM, DMARC, spam) as
bulwark.mailtrust describes. If rspamd does not answer, Postfix defers the message
(`milter_default_action = tempfail`): nothing leaves unsigned or arrives unchecked. RFC 2142's
postmaster@ and abuse@ reach the inventory's `postmaster` account.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import bruteforce, catalogue, mail, mailtrust, tlsconfig
from bulwark.deploying import (
    directory,
    install,
    keep_running,
    packages,
    render_for_deploy,
    restarted,
    service,
)
from bulwark.livecheck import LiveCheck
from bulwark.operations import STAGED_DIR, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Unit, Units
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "mx"

PACKAGES: tuple[str, ...] = ("postfix", "rspamd")
# Debian's postfix.service only starts, restarts and reloads the instance unit
# (mail.POSTFIX_INSTANCE).
POSTFIX_UNIT = "postfix.service"
MAIN_CF = "/etc/postfix/main.cf"
MASTER_CF = "/etc/postfix/master.cf"
# `postfix check` over the staged main.cf and master.cf, as a configuration directory.
POSTFIX_CHECK = Check(MAIN_CF, ("postfix", "-c", STAGED_DIR, "check"))
# Restarted, not reloaded: a reload misses what the master daemon started with (inet_protocols,
# after the package's own configuration), and it happens only when the configuration changed.
POSTFIX_RESTART = restarted(POSTFIX_UNIT)
# Deferred mail is first retried after this (Postfix's default is 300 s): delivery to a mail
# store that was restarting waited 5-7 minutes. Later retries back off as usual, doubling up
# to Postfix's maximal_backoff_time (4000 s), so a remote server that stays down is not pressed.
DEFERRED_RETRY = "10s"
# rspamd: its configuration overrides (bulwark.mailtrust.RSPAMD_FILES; Debian's own files stay
# as shipped), and the signing keys, readable by its user alone.
RSPAMD_UNIT = "rspamd.service"
RSPAMD_USER = "_rspamd"
DKIM_KEY_DIR = "/var/lib/rspamd/dkim"
# Any change restarts rspamd (a reload keeps the old workers' sockets; Postfix defers meanwhile).
RSPAMD_RESTART = restarted(RSPAMD_UNIT)
# Submission services and their own options on top of the common ones (master.cf).
SUBMISSION_SERVICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("submissions", ("smtpd_tls_wrappermode=yes",)),
    ("submission", ()),
)


# Submission from the site's proxies (roles/proxy.py), when the site has one: a PROXY protocol
# header naming the client, then TLS from the first byte. Postfix trusts any sender's header:
# the listener is on the LAN address alone, and the firewall admits the site's proxies alone.
PROXIED_SERVICE = "submissions-proxied"
PROXIED_OPTIONS: tuple[str, ...] = (
    "smtpd_upstream_proxy_protocol=haproxy",
    "smtpd_upstream_proxy_timeout=5s",
    "smtpd_tls_wrappermode=yes",
)


def rspamd_files(topology: Topology) -> tuple[ManagedFile, ...]:
    """rspamd's overrides, then one key file per DKIM selector."""
    return (
        # rspamadm checks the whole set through the first file (its companions: bulwark.checks).
        *(ManagedFile(path, f"rspamd/{path.rsplit('/', 1)[1]}.j2",
                      checker="rspamd" if path == mailtrust.RSPAMD_FILES[0] else None)
          for path in mailtrust.RSPAMD_FILES),
        *(
            ManagedFile(
                dkim_key_path(topology, selector), "rspamd/dkim.key.j2", mode="0640",
                group=RSPAMD_USER, item=selector,
            )
            for _, selector, _ in mailtrust.dkim_keys(topology)
        ),
    )  # fmt: skip


def dkim_key_path(topology: Topology, selector: str) -> str:
    return f"{DKIM_KEY_DIR}/{topology.domain}.{selector}.key"


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(MAIN_CF, "main.cf.j2", checker="postfix"),
        ManagedFile(MASTER_CF, "master.cf.j2"),
        *rspamd_files(topology),
        *mail.dovecot_files(ROLE, host),
        *bruteforce.watcher_files(ROLE, host),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    store = mail.site_mailstore(topology, host.site)
    names = ("smtp", "submissions", "submission", "lmtp")
    return {
        **mail.auth_context(topology, host, secrets),
        **tlsconfig.tls_context(secrets, host),
        **bruteforce.watcher_context(topology, host),
        "host": host.name,
        "myhostname": topology.fqdn(host),
        "addresses": [account.address(topology.domain) for account in topology.open_accounts],
        "ports": {name: catalogue.service(name).port for name in names},
        "submission_services": SUBMISSION_SERVICES,
        "proxied": mail.proxied_context(topology, host, PROXIED_SERVICE),
        "proxied_options": PROXIED_OPTIONS,
        "deferred_retry": DEFERRED_RETRY,
        "aliases": mailtrust.role_addresses(topology),
        "spam": {
            "milter_port": catalogue.service("spam-filter").port,
            "resolvers": [str(address) for address in topology.resolvers],
            "test_patterns": topology.spam_test_patterns,
            "scores": mailtrust.SPAM_SCORES,
        },
        "dkim": {
            "domain": topology.domain,
            "selectors": [
                {
                    "selector": selector,
                    "path": dkim_key_path(topology, selector),
                    "key": secrets.get(name),
                }
                for _, selector, name in mailtrust.dkim_keys(topology)
            ],
        },
        "sasl_socket": mail.SASL_SOCKET,
        "lmtp": {
            "host": store.name,
            "name": topology.fqdn(store),
            "address": str(store.lan_address),
        },
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """Postfix and rspamd running and enabled (and Dovecot's auth, and the ban watcher, where
    this role keeps them); their ports come from the catalogue."""
    return (
        Units(
            (
                Unit(POSTFIX_UNIT),
                Unit(RSPAMD_UNIT),
                Unit(mail.POSTFIX_INSTANCE, enabled=None),
                *mail.dovecot_units(ROLE, host),
                *bruteforce.watcher_units(ROLE, host),
            )
        ),
    )


@deploy("mx")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """Postfix (and, alone on its host, Dovecot's auth) and rspamd before it: each checked
    before it is live, restarted once it changed."""
    own_dovecot = mail.writes_dovecot(ROLE, host)
    packages(ROLE, (*PACKAGES, *(mail.AUTH_PACKAGES if own_dovecot else ())))
    files = render_for_deploy(ROLE, topology, host, secrets)
    if own_dovecot:
        mail.converge_dovecot(ROLE, files)
    directory(f"{ROLE}: {DKIM_KEY_DIR}", DKIM_KEY_DIR, "root", RSPAMD_USER, "0750")
    install(ROLE, [files[managed.path] for managed in rspamd_files(topology)], then=RSPAMD_RESTART)
    keep_running(ROLE, RSPAMD_UNIT)
    install(ROLE, [files[MAIN_CF], files[MASTER_CF]], check=POSTFIX_CHECK, then=POSTFIX_RESTART)
    service("mx: Postfix at boot", POSTFIX_UNIT)
    service("mx: Postfix running", mail.POSTFIX_INSTANCE, enabled=None)
    bruteforce.converge_watcher(ROLE, files)
