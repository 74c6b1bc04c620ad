"""Every promise of the seeds, with what keeps it: the roles, the rendered lines, the tests.

`PROMISES` is data. Each promise names the seed it comes from (`000`: the service endpoints,
`002`: the security practices, both in `shared/seeds/`) and the seed's section, says what is
promised in plain words, and gives:

- `roles`: the roles (bulwark.registry) that deliver it. Whether each has a module decides the
  status, so the table updates itself as roles land: a promise whose roles all have a module is
  kept, one with some is kept in part, one with none is not implemented;
- `evidence`: where its rendered configuration says so: the role that writes the file (for a
  web host's front, nginx's configuration and the credential checker, any of its web roles:
  the last one writes it for all), a glob of the file's path on the host, and a regular
  expression of the lines that implement it;
- `tests`: the tests that prove it (node ids of tests/unit, tests/integration, tests/e2e);
- `waived`: for a promise the platform deliberately does not keep, why, in plain words.

tests/unit/test_promises.py checks that every test named exists, that every evidence pattern of a
role with a module matches a rendered line of the lab or the production inventory (a mail host
with mx alone exists in production only), and that every section of the seeds has a promise.
`bulwark render` shows the table in report.html (bulwark.htmlreport).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from functools import cached_property

from bulwark import registry, web
from bulwark.render import RenderedFile

ENDPOINTS = "000"  # shared/seeds/000_5451c505d9a79d6e.txt: server names and ports
PRACTICES = "002"  # shared/seeds/002_67a18fa531e72bec.txt: how the service is kept secure
SEED_FILES: dict[str, str] = {
    ENDPOINTS: "000_5451c505d9a79d6e.txt",
    PRACTICES: "002_67a18fa531e72bec.txt",
}


@dataclass(frozen=True)
class Evidence:
    """Lines of a rendered file that implement a promise: the file `path` (a glob of the path on
    the host) written by `role`, the lines `pattern` (a regular expression) finds."""

    role: str
    path: str
    pattern: str

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.MULTILINE)


@dataclass(frozen=True)
class Promise:
    key: str
    seed: str  # ENDPOINTS or PRACTICES
    section: str  # the seed's words heading (or, without a heading, opening) the passage
    claim: str
    roles: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    tests: tuple[str, ...] = ()
    waived: str = ""  # deliberately not kept: why, in plain words
    note: str = ""  # anything else an auditor should know, in plain words

    @property
    def missing_roles(self) -> tuple[str, ...]:
        """The roles delivering it that have no module yet (bulwark.registry)."""
        return tuple(name for name in self.roles if not registry.role(name).implemented)


class Status(StrEnum):
    KEPT = "kept"
    PARTLY = "kept in part"  # some of its roles have a module, others not yet
    NOT_IMPLEMENTED = "not implemented"
    NOT_KEPT = "not kept"  # deliberately; `Promise.waived` says why
    NOT_DEPLOYED = "not deployed here"  # its roles have modules, but no host of this inventory


def status(promise: Promise, found: Iterable[Found] = ()) -> Status:
    """What the platform does about `promise`, given the lines `find_evidence` found for it."""
    if promise.waived:
        return Status.NOT_KEPT
    missing = promise.missing_roles
    if len(missing) == len(promise.roles):
        return Status.NOT_IMPLEMENTED
    if not any(True for _ in found):
        return Status.NOT_DEPLOYED
    return Status.PARTLY if missing else Status.KEPT


@dataclass(frozen=True)
class Found:
    """One distinct rendered line implementing a promise, and the hosts whose file holds it."""

    evidence: Evidence
    path: str
    line: str
    hosts: tuple[str, ...]


class RenderedIndex:
    """The rendered files by (role, path), then by content, so that each evidence glob is
    matched against the distinct paths once, and each regex against the distinct contents
    once: a thousand hosts hold a few kinds of each file."""

    def __init__(self, files: Iterable[RenderedFile]):
        # (role, path) -> content -> the hosts whose file holds it
        self._hosts: dict[tuple[str, str], dict[str, list[str]]] = {}
        for rendered in files:
            contents = self._hosts.setdefault((rendered.role, rendered.path), {})
            contents.setdefault(rendered.content, []).append(rendered.host)

    def find(self, evidence: Evidence) -> list[Found]:
        """Every distinct line `evidence` finds, with the hosts holding it, sorted by path and
        line; only roles with a module render files, so a role without one finds nothing."""
        lines: dict[tuple[str, str], set[str]] = {}
        for (role, path), contents in sorted(self._hosts.items()):
            if not written_by(evidence.role, role, path) or not fnmatchcase(path, evidence.path):
                continue
            for content, hosts in contents.items():
                for line in matching_lines(evidence.regex, content):
                    lines.setdefault((path, line), set()).update(hosts)
        return [
            Found(evidence, path, line, tuple(sorted(hosts)))
            for (path, line), hosts in sorted(lines.items())
        ]

    def find_all(self, promise: Promise) -> list[Found]:
        return [found for evidence in promise.evidence for found in self.find(evidence)]


def written_by(evidence_role: str, role: str, path: str) -> bool:
    """Whether evidence of `evidence_role` looks in `path` as `role` rendered it: its own
    files, and a web host's front (nginx's configuration, the credential checker), which the
    host's last web role writes for all of them (bulwark.web.writes_front)."""
    if role == evidence_role:
        return True
    shared = path in web.FRONT_PATHS
    return shared and {role, evidence_role} <= set(web.WEB_ROLES)


def matching_lines(regex: re.Pattern[str], content: str) -> list[str]:
    """The whole lines (stripped) of `content` in which `regex` finds a match, each once."""
    found: list[str] = []
    for match in regex.finditer(content):
        start = content.rfind("\n", 0, match.start()) + 1
        end = content.find("\n", match.end())
        line = content[start : end if end >= 0 else None].strip()
        if line not in found:
            found.append(line)
    return found


# Tests proving what several promises share.
_MAIN_PASSWORD_REFUSED = (
    "tests/unit/test_mail_roles.py::test_main_and_wrong_passwords_and_strangers_are_refused",
    "tests/unit/test_webauth.py::test_app_passwords_log_in_and_other_passwords_do_not",
    "tests/e2e/test_mail.py::test_the_main_password_is_refused_everywhere",
    "tests/e2e/test_dav.py::test_the_main_password_is_refused",
    "tests/e2e/test_directory.py::test_the_main_and_a_wrong_password_are_refused",
)
_WEB_HEADERS = (
    "tests/unit/test_dav_role.py::test_every_served_response_carries_the_security_headers",
    "tests/e2e/test_dav.py::test_every_response_carries_the_security_headers",
)
_CONTENT_ORIGIN = (
    "tests/unit/test_files_role.py::test_the_content_origin_serves_files_sandboxed_and_read_only",
    "tests/unit/test_files_role.py::test_the_content_origin_is_its_own_name_and_never_a_served_one",
    "tests/e2e/test_files.py::test_a_browser_opens_a_file_on_the_content_origin_sandboxed",
)
_FTPS = (
    "tests/unit/test_files_role.py::test_pure_ftpd_requires_tls_chroots_and_asks_the_checker",
    "tests/e2e/test_files.py::test_ftps_is_tls_1_2_or_later_with_a_verified_certificate",
    "tests/e2e/test_files.py::test_ftp_refuses_user_before_auth_tls",
    "tests/e2e/test_files.py::test_ftp_refuses_a_clear_data_channel",
)
_NGINX = "/etc/nginx/nginx.conf"
_DOVECOT = "/etc/dovecot/dovecot.conf"
_AUTH_LUA = "/etc/dovecot/bulwark-auth.lua"
_MAIN_CF = "/etc/postfix/main.cf"
_MASTER_CF = "/etc/postfix/master.cf"
_NFTABLES = "/etc/nftables.conf"
_SSHD = "/etc/ssh/sshd_config.d/10-bulwark.conf"
_UNATTENDED = "/etc/apt/apt.conf.d/52bulwark-unattended-upgrades"
_WEBAUTH_ACCOUNTS = "/etc/bulwark/webauth/accounts.json"
_ADDRESSBOOK_RIGHTS = "/etc/bulwark/dav/addressbooks.rights"
_APACHE = "/etc/bulwark/files/apache2.conf"
_FTPD = "/etc/systemd/system/bulwark-ftpd.service"
_FILES_WRITES = "/etc/nginx/bulwark-files-writes.conf"
_FILES_RSYNCD = "/etc/bulwark/replication/files-rsyncd.conf"
_SLAPD = "/etc/bulwark/directory/slapd.conf"
_PROXY_NGINX = "/etc/bulwark/proxy/nginx.conf"
_SLAPD_UNIT = "/etc/systemd/system/bulwark-slapd.service"
_USERS_LDIF = "/etc/bulwark/directory/users.ldif"
_LDAP_TESTS = "tests/e2e/test_directory.py::"
_PURGE_SERVICE = "/etc/systemd/system/bulwark-purge-closed.service"
_PURGE_TIMER = "/etc/systemd/system/bulwark-purge-closed.timer"
_CLOSURE_TESTS = "tests/unit/test_closure.py::"
_PURGE_TESTS = "tests/unit/test_purge.py::"

PROMISES: tuple[Promise, ...] = (
    # --- 002: how the service is kept secure --------------------------------------------------
    Promise(
        "customer-data",
        PRACTICES,
        "Customer data",
        "All personal data of customers is treated as Customer Confidential, the highest level "
        "of protection.",
        waived="A data-classification policy of the operator, not a configuration: the platform "
        "treats every account's data alike (encrypted in transit, rows below; at rest once the "
        "storage role exists).",
    ),
    Promise(
        "tls-client-connections",
        PRACTICES,
        "Secure access to mail",
        "Every client connection uses TLS: IMAP, POP, SMTP submission and the web endpoints; no "
        "password crosses a plaintext connection.",
        roles=("mx", "mailstore", "dav", "files", "directory", "proxy"),
        evidence=(
            Evidence("mailstore", _DOVECOT, r"^ssl = required$"),
            Evidence("mailstore", _DOVECOT, r"^disable_plaintext_auth = yes$"),
            Evidence("mx", _MASTER_CF, r"smtpd_tls_security_level=encrypt"),
            Evidence("mx", _MAIN_CF, r"^smtpd_tls_auth_only = yes$"),
            Evidence("dav", _NGINX, r"listen \S+:443 ssl"),
            Evidence("files", _FTPD, r"^\s*--tls 3 \\$"),
            Evidence("directory", _SLAPD_UNIT, r' -h "ldaps://[0-9.]+:636/ ldapi://[^" ]+"$'),
            Evidence("directory", _SLAPD, r"^security ssf=128$"),
        ),
        tests=(
            "tests/unit/test_mail_roles.py::test_the_mx_offers_tls_and_submission_requires_it",
            "tests/unit/test_mail_roles.py::"
            "test_dovecot_listens_on_tls_ports_only_and_lan_services_on_the_lan",
            "tests/unit/test_catalogue.py::test_every_service_is_encrypted_except_http_redirects_and_loopback_ones",
            "tests/e2e/test_mail.py::test_submission_587_offers_auth_only_after_starttls",
            "tests/e2e/test_mail.py::test_plaintext_imap_and_pop3_refuse_connections",
            "tests/e2e/test_dav.py::test_https_is_tls_1_2_or_later_with_a_verified_certificate",
            "tests/e2e/test_files.py::test_https_is_tls_1_2_or_later_with_a_verified_certificate",
            *_FTPS,
            "tests/e2e/test_directory.py::test_ldaps_is_tls_1_2_or_later_and_forward_secret",
        ),
    ),
    Promise(
        "forward-secrecy",
        PRACTICES,
        "Secure access to mail",
        "Perfect forward secrecy on every encrypted connection: TLS 1.2 or later with ECDHE "
        "suites only (Mozilla's intermediate profile, bulwark/tls.py).",
        roles=("mx", "mailstore", "dav", "files", "directory", "proxy"),
        evidence=(
            Evidence("mailstore", _DOVECOT, r"^ssl_min_protocol = TLSv1\.2$"),
            Evidence("mailstore", _DOVECOT, r"^ssl_cipher_list = ECDHE-"),
            Evidence("mx", _MAIN_CF, r"^smtpd_tls_mandatory_protocols = >=TLSv1\.2$"),
            Evidence("mx", _MAIN_CF, r"^tls_high_cipherlist = ECDHE-"),
            Evidence("dav", _NGINX, r"^\s*ssl_protocols TLSv1\.2 TLSv1\.3;$"),
            Evidence("dav", _NGINX, r"^\s*ssl_ciphers ECDHE-"),
            Evidence("files", _FTPD, r"^\s*--tlsciphersuite ECDHE-"),
            Evidence("directory", _SLAPD, r"^TLSCipherSuite SECURE128:.*:-KX-ALL:\+ECDHE-ECDSA:"),
            Evidence("directory", _SLAPD, r"^TLSProtocolMin 3\.3$"),
        ),
        tests=(
            "tests/unit/test_mail_roles.py::test_postfix_tls_is_mozilla_intermediate_and_forward_secret",
            "tests/unit/test_mail_roles.py::test_dovecot_requires_mozilla_intermediate_tls",
            "tests/e2e/test_mail.py::test_tls_is_1_2_or_later_and_forward_secret",
            "tests/e2e/test_dav.py::test_https_is_tls_1_2_or_later_with_a_verified_certificate",
            "tests/e2e/test_files.py::test_https_is_tls_1_2_or_later_with_a_verified_certificate",
            "tests/e2e/test_files.py::test_ftps_is_tls_1_2_or_later_with_a_verified_certificate",
            "tests/e2e/test_directory.py::test_ldaps_is_tls_1_2_or_later_and_forward_secret",
        ),
    ),
    Promise(
        "hsts",
        PRACTICES,
        "Secure access to mail",
        "A Strict-Transport-Security header with every web page, so browsers only ever connect "
        "encrypted; plain HTTP only redirects.",
        roles=("dav", "files"),
        evidence=(
            Evidence("dav", _NGINX, r"add_header Strict-Transport-Security "),
            Evidence("dav", _NGINX, r"return 301 https://"),
        ),
        tests=(
            *_WEB_HEADERS,
            "tests/unit/test_files_role.py::test_port_80_redirects_the_files_names_and_not_ftp",
            "tests/e2e/test_dav.py::test_port_80_only_redirects_to_https",
        ),
    ),
    Promise(
        "outbound-tls",
        PRACTICES,
        "Encrypted sending/receiving",
        "Mail sent to other servers is encrypted whenever the receiving server supports it.",
        roles=("mx",),
        evidence=(Evidence("mx", _MAIN_CF, r"^smtp_tls_security_level = may$"),),
        tests=(
            "tests/unit/test_mail_roles.py::test_postfix_tls_is_mozilla_intermediate_and_forward_secret",
        ),
        note="Opportunistic: a server that offers no STARTTLS still gets the mail, in clear "
        "(as the seed says; see the end-to-end row).",
    ),
    Promise(
        "inbound-tls",
        PRACTICES,
        "Encrypted sending/receiving",
        "Servers delivering mail to the platform can encrypt: STARTTLS is offered on port 25 "
        "(never required, RFC 3207).",
        roles=("mx",),
        evidence=(Evidence("mx", _MAIN_CF, r"^smtpd_tls_security_level = may$"),),
        tests=(
            "tests/unit/test_mail_roles.py::test_the_mx_offers_tls_and_submission_requires_it",
            "tests/unit/test_catalogue.py::test_only_inbound_smtp_is_opportunistic",
            "tests/integration/test_mail.py::test_postfix_effective_tls_settings",
            "tests/e2e/test_mail.py::test_mx_accepts_mail_for_an_account_from_anyone",
        ),
    ),
    Promise(
        "csp",
        PRACTICES,
        "Content security policy",
        "A Content-Security-Policy header on web responses, so no script runs that the "
        "platform did not write (bulwark serves none: the policy allows nothing).",
        roles=("dav", "files"),
        evidence=(
            Evidence("dav", _NGINX, r"add_header Content-Security-Policy \"default-src 'none'"),
            Evidence("dav", _NGINX, r"add_header X-Content-Type-Options nosniff"),
            Evidence("files", _NGINX, r"add_header Content-Security-Policy \"[^\"]*\bsandbox\""),
        ),
        tests=(*_WEB_HEADERS, *_CONTENT_ORIGIN),
    ),
    Promise(
        "isolated-domains",
        PRACTICES,
        "Content security policy",
        "Untrusted content (attachments, users' websites) is served from isolated domains.",
        roles=("files",),
        evidence=(
            Evidence("files", _NGINX, r"^\s*server_name usercontent\."),
            Evidence("files", _NGINX, r"^\s*return 303 \$bulwark_location;$"),
            Evidence("files", _NGINX, r"^\s*limit_except GET \{$"),
            Evidence("files", _NGINX, r'^\s*proxy_set_header Cookie "";$'),
            Evidence("files", _WEBAUTH_ACCOUNTS, r'"content_origin": '),
        ),
        tests=(
            *_CONTENT_ORIGIN,
            "tests/unit/test_validation.py::test_bad_inventory_reports_exactly_its_problems",
        ),
        note="The untrusted content bulwark shows in a browser is users' files (it serves no "
        "webmail, attachments or user websites). A browser opening one over WebDAV is sent "
        "(303) to the content origin, a host name of its own (usercontent.DOMAIN, or the "
        "platform's content_origin, which may be no name of the platform's services), by a "
        "signed link that expires; there it gets no login and no cookie, a CSP sandbox, "
        "nosniff, and markup only as a download.",
    ),
    Promise(
        "kernel-firewall",
        PRACTICES,
        "We only allow necessary communications",
        "A kernel-level firewall on every host lets in only the services that host provides; "
        "SSH and internal ports are not open to the internet.",
        roles=("firewall",),
        evidence=(
            Evidence(
                "firewall", _NFTABLES, r"type filter hook input priority filter; policy drop;"
            ),
            Evidence("firewall", _NFTABLES, r"ip saddr @management_v4 tcp dport 22 .*accept"),
        ),
        tests=(
            "tests/unit/test_network_roles.py::"
            "test_ruleset_defaults_drop_and_opens_exactly_the_hosts_services",
            "tests/unit/test_network_roles.py::"
            "test_ssh_only_from_management_and_admin_networks_rate_limited",
            "tests/unit/test_network_roles.py::test_every_ruleset_passes_nft_check",
            "tests/integration/test_network.py::test_live_ruleset_is_the_rendered_one",
            "tests/e2e/test_scan.py::test_every_tcp_port_scanned_only_the_catalogue_answers",
            "tests/e2e/test_exposure.py::test_ssh_is_not_reachable_from_the_internet",
        ),
    ),
    Promise(
        "internal-services",
        PRACTICES,
        "We only allow necessary communications",
        "Internal services (LMTP, replication) answer only the hosts whose roles use them, and "
        "speak TLS even inside the VPN.",
        roles=("firewall", "mx", "mailstore", "dav", "files"),
        evidence=(
            Evidence("firewall", _NFTABLES, r"ip saddr @\w+_clients_v4 tcp dport \d+ .*accept"),
            Evidence("mailstore", _DOVECOT, r"^\s*ssl_verify_client_cert = yes$"),
            Evidence("mx", _MAIN_CF, r"^lmtp_tls_security_level = secure$"),
            Evidence("dav", _NGINX, r"^\s*ssl_verify_client on;$"),
            Evidence("files", _NGINX, r"^\s*map \$ssl_client_s_dn \$bulwark_replica_files \{$"),
        ),
        tests=(
            "tests/unit/test_network_roles.py::"
            "test_lmtp_opens_to_the_sites_mx_hosts_and_replication_to_the_peer_store",
            "tests/unit/test_exposure.py::test_no_internal_service_opens_to_a_whole_network",
            "tests/unit/test_catalogue.py::test_internal_services_use_tls_inside_the_vpn",
            "tests/integration/test_privilege.py::test_web_hosts_reach_neither_lmtp_nor_replication",
            "tests/integration/test_privilege.py::test_lmtp_from_the_mx_host_works_only_over_tls",
            "tests/integration/test_dav.py::"
            "test_the_replication_port_is_closed_to_other_hosts_of_the_site",
        ),
    ),
    Promise(
        "security-updates",
        PRACTICES,
        "We keep track of software updates",
        "Security updates are installed as soon as they are published: every day, from the "
        "Debian security archive alone.",
        roles=("base",),
        evidence=(
            Evidence("base", _UNATTENDED, r"origin=Debian,codename=\$\{distro_codename\}-security"),
            Evidence(
                "base",
                "/etc/apt/apt.conf.d/20auto-upgrades",
                r'^APT::Periodic::Unattended-Upgrade "1";$',
            ),
        ),
        tests=(
            "tests/unit/test_base_role.py::test_effective_unattended_origins_are_the_security_archive_only",
            "tests/integration/test_base.py::test_unattended_upgrades_take_security_updates_only",
        ),
        note="Hosts are never rebooted automatically: a new kernel waits for the operator.",
    ),
    Promise(
        "debian",
        PRACTICES,
        "We use software systems that take security seriously",
        "Debian as the operating system, for its security updates within hours.",
        roles=("base",),
        evidence=(Evidence("base", _UNATTENDED, r"label=Debian-Security"),),
        tests=(
            "tests/unit/test_base_role.py::test_effective_unattended_origins_are_the_security_archive_only",
            "tests/unit/test_base_role.py::test_apt_files_pass_the_apt_checker",
        ),
    ),
    Promise(
        "image-proxy",
        PRACTICES,
        "Privacy: Image loading",
        "Images referenced by a mail are fetched through the platform's servers, hiding the "
        "reader's address from their owner.",
        waived="bulwark has no webmail: no web page of the platform shows mail, so it fetches no "
        "image on a reader's behalf; mail clients decide for themselves.",
    ),
    Promise(
        "bug-bounty",
        PRACTICES,
        "Bug bounty",
        "A bug bounty rewards responsible disclosure of security issues.",
        waived="An organisational programme, outside any host's configuration.",
    ),
    Promise(
        "physical-sites",
        PRACTICES,
        "Physical location security",
        "Main servers in a high-security data center in New Jersey, the secondary site in "
        "Seattle with equivalent physical security.",
        waived="Physical security is the data centers'. The inventory places the primary and "
        "secondary sites (the topology above shows them).",
    ),
    Promise(
        "no-logins-for-remote-hands",
        PRACTICES,
        "Physical location security",
        "Remote hands have no logins: no password opens a shell, and SSH accepts keys only, "
        "from the management and admin networks only.",
        roles=("base", "firewall"),
        evidence=(
            Evidence("base", _SSHD, r"^PasswordAuthentication no$"),
            Evidence("base", _SSHD, r"^KbdInteractiveAuthentication no$"),
            Evidence("firewall", _NFTABLES, r"ip saddr @management_v4 tcp dport 22 .*accept"),
        ),
        tests=(
            "tests/unit/test_base_role.py::test_effective_sshd_is_key_only_and_verbose",
            "tests/integration/test_base.py::test_sshd_allows_keys_only",
            "tests/e2e/test_exposure.py::test_ssh_is_not_reachable_from_the_internet",
        ),
    ),
    Promise(
        "vpn-between-sites",
        PRACTICES,
        "Physical location security",
        "All data between the data centers crosses an encrypted VPN the operator runs; the "
        "vendors have no access to the internal network.",
        roles=("gateway", "firewall"),
        evidence=(
            Evidence("vpn", "/etc/wireguard/wg0.conf", r"^ListenPort = \d+$"),
            Evidence("vpn", "/etc/wireguard/wg0.conf", r"^AllowedIPs = "),
            Evidence("firewall", _NFTABLES, r'oifname "wg0" accept$'),
        ),
        tests=(
            "tests/unit/test_network_roles.py::test_wireguard_config_peers_the_gateways",
            "tests/unit/test_network_roles.py::test_only_gateways_forward_and_only_between_lan_and_tunnel",
            "tests/integration/test_network.py::test_gateways_complete_a_handshake",
            "tests/integration/test_network.py::test_lan_to_lan_crosses_the_wan_only_inside_the_tunnel",
            "tests/integration/test_network.py::"
            "test_with_the_tunnel_down_lan_to_lan_fails_instead_of_going_clear",
        ),
    ),
    Promise(
        "data-encrypted-at-rest",
        PRACTICES,
        "On-disk encryption",
        "All customer data is stored on encrypted disk volumes, backups included; no volume "
        "key is kept on the host's own disks.",
        roles=("storage", "backup"),
        evidence=(
            Evidence("storage", "/etc/systemd/system/*.mount", r"^What=/dev/mapper/bulwark-\w+$"),
            Evidence(
                "storage", "/etc/systemd/system/*.d/bulwark-storage.conf", r"^RequiresMountsFor=/"
            ),
        ),
        tests=(
            "tests/vm/test_storage.py::test_the_first_deploy_formats_opens_and_mounts_every_volume",
            "tests/vm/test_storage.py::"
            "test_a_disk_holding_a_filesystem_is_refused_and_not_a_byte_of_it_changes",
            "tests/vm/test_storage.py::test_the_unit_keeping_data_on_a_volume_requires_its_mount",
            "tests/vm/test_storage.py::"
            "test_the_volume_is_bound_to_the_other_sites_tang_reached_only_through_the_tunnel",
            "tests/vm/test_storage.py::"
            "test_a_reboot_with_the_other_sites_tang_reachable_opens_the_volume_by_itself",
            "tests/vm/test_storage.py::"
            "test_a_reboot_with_the_other_sites_tang_down_leaves_the_volume_closed_until_unlocked",
            "tests/unit/test_secrets.py::"
            "test_tang_keys_are_what_tangd_reads_and_their_thumbprints_are_joses",
            "tests/vm/test_storage.py::"
            "test_the_recovery_passphrase_opens_the_volume_and_nothing_else_does",
            "tests/vm/test_storage.py::"
            "test_after_rotate_key_the_new_key_opens_the_volume_and_the_old_one_does_not",
            "tests/unit/test_luks_header.py::"
            "test_a_header_backed_up_and_restored_over_a_wiped_one_opens_with_the_vaults_key",
            "tests/unit/test_luks_header.py::test_a_header_is_never_restored_onto_another_volume",
            "tests/unit/test_luks_header.py::"
            "test_check_names_a_missing_then_a_stale_header_and_writes_nothing",
            "tests/unit/test_luks_header.py::test_rotate_key_refreshes_the_header_backup",
        ),
        note="Each volume's key is streamed from the vault to cryptsetup's stdin and never "
        "written to the host. After a reboot each volume opens by itself through Clevis and the "
        "Tang server of the other site, reached only through the VPN, whose key clients pin "
        "(its keys are in the vault); when that Tang does not answer within a bounded time, "
        "the volumes stay closed, and the units keeping data on them do not start, until the "
        "operator's `bulwark storage unlock` (or a deploy) opens them. Each volume's LUKS "
        "header is escrowed in the vault (`bulwark storage "
        "backup-headers`, refreshed by every key rotation) and restored only onto the volume it "
        "came from; those tests run cryptsetup on file images, the real devices are the VM's.",
    ),
    Promise(
        "logs-encrypted-at-rest",
        PRACTICES,
        "On-disk encryption",
        "System logs, which may hold personal data, on encrypted disks too.",
        roles=("logs",),
        evidence=(
            Evidence(
                "storage", "/etc/systemd/system/var-log.mount", r"^What=/dev/mapper/bulwark-logs$"
            ),
            Evidence(
                "storage",
                "/etc/systemd/system/bulwark-logs.service",
                r"^ExecStart=journalctl --flush$",
            ),
        ),
        tests=(
            "tests/vm/test_storage.py::"
            "test_the_first_deploy_moves_var_log_onto_its_volume_and_nothing_is_left_beneath",
            "tests/vm/test_storage.py::"
            "test_a_move_of_var_log_cut_short_is_finished_by_the_next_deploy",
            "tests/vm/test_storage.py::"
            "test_a_reboot_with_the_other_sites_tang_down_leaves_the_volume_closed_until_unlocked",
        ),
        note="The seed admits that some of its own system logs are still on unencrypted disks; "
        "ours are not. On every host with encrypted volumes, /var/log (the journal included) is "
        "on the logs volume: the first deploy moves it there, and leaves the directory beneath "
        "on the root filesystem empty and immutable, so a write before the volume opens fails "
        "rather than lands unencrypted. journald keeps the journal in memory (/run) until the "
        "volume is mounted, then flushes it there: lines logged while it stays closed (Tang "
        "unreachable) are kept in memory only, within journald's runtime limit.",
    ),
    Promise(
        "staff-access",
        PRACTICES,
        "Staff access to your data",
        "Staff see customer data only as their roles require; support sees obfuscated data "
        "unless the user puts mail in a 'forwebmaster' folder.",
        waived="bulwark has no support tooling and obfuscates nothing: an operator with root on "
        "a host can read what that host stores. Who gets root at all is limited (key-only SSH "
        "from the management and admin networks, row above).",
    ),
    Promise(
        "password-hashes",
        PRACTICES,
        "Password encryption",
        "Passwords used to log in are stored non-reversibly: app passwords as Argon2id hashes "
        "only, and the main password is never stored on a host.",
        roles=("mx", "mailstore", "dav", "files"),
        evidence=(
            Evidence("mailstore", _AUTH_LUA, r"\{ARGON2ID\}<secret:"),
            Evidence("mx", _AUTH_LUA, r"\{ARGON2ID\}<secret:"),
            Evidence("dav", _WEBAUTH_ACCOUNTS, r"<secret:account/[^/ ]+/app/"),
        ),
        tests=(
            "tests/unit/test_secrets.py::test_hashes_verify_with_libsodium_as_dovecot_does",
            "tests/unit/test_secrets.py::test_credentials_verify_against_the_hashes",
            "tests/unit/test_mail_roles.py::test_audits_hold_no_secret_and_hosts_never_get_the_main_password",
            "tests/unit/test_dav_role.py::test_the_accounts_file_holds_every_app_password_and_no_main_password",
        ),
    ),
    Promise(
        "third-party-passwords",
        PRACTICES,
        "Password encryption",
        "Passwords for other systems (POP links, calendar links) are stored with reversible "
        "encryption under a separately kept key, decryptable only by hardware security modules.",
        waived="bulwark has no feature that logs in to other systems for a user, so it keeps no "
        "such password. Its own service secrets are in the vault (AES-256-GCM), whose key file "
        "lives apart from it; no hardware security module is used.",
    ),
    Promise(
        "third-parties",
        PRACTICES,
        "Transfer of confidential data with third parties",
        "Confidential data is never sold or monetised; only statistics and spam reports are "
        "shared.",
        waived="A policy of the operator, outside any host's configuration.",
    ),
    Promise(
        "replicated",
        PRACTICES,
        "Destruction of data",
        "Data is replicated to more than one system: mail both ways between the sites, "
        "calendars, contacts and files to the secondary site.",
        roles=("mailstore", "dav", "files"),
        evidence=(
            Evidence("mailstore", _DOVECOT, r"^\s*mail_replica = tcps:"),
            Evidence("dav", _NGINX, r"^\s*listen \S+:\d+ ssl;$"),
            Evidence("files", _FILES_RSYNCD, r"^\s*path = "),
            Evidence("files", _FILES_WRITES, r"^\s*default \"read-only\";$"),
        ),
        tests=(
            "tests/unit/test_mail_roles.py::test_each_store_replicates_with_the_other_sites_store",
            "tests/unit/test_dav_role.py::test_replication_passes_only_the_other_sites_web_host",
            "tests/integration/test_mail.py::test_both_sites_hold_the_same_mailboxes",
            "tests/integration/test_faults.py::test_replication_catches_up_soon_after_a_tunnel_cut",
            "tests/e2e/test_mail.py::test_mail_submitted_in_nj_is_readable_in_sea",
            "tests/e2e/test_dav.py::test_a_contact_written_at_the_primary_is_readable_at_the_secondary",
            "tests/unit/test_files_role.py::test_the_replica_serves_files_read_only",
            "tests/e2e/test_files.py::test_a_file_written_at_the_primary_is_read_at_the_replica",
        ),
        note="A replica copies deletions too: it is no backup (see the backup rows).",
    ),
    Promise(
        "backups",
        PRACTICES,
        "Destruction of data",
        "Data is backed up: encrypted, append-only backups at the other site, restored in drills.",
        roles=("backup", "backup-client"),
        evidence=(
            Evidence("backup", "/etc/bulwark/backup/client.json", r'"repository": "ssh://'),
            Evidence(
                "backup",
                "/etc/bulwark/backup/authorized_keys",
                r'^from="[\d.]+",command="borg serve --append-only --restrict-to-repository ',
            ),
            Evidence("backup", "/etc/systemd/system/bulwark-backup.timer", r"^OnCalendar=hourly$"),
            Evidence(
                "backup", "/etc/systemd/system/bulwark-backup-drill.timer", r"^OnCalendar=daily$"
            ),
        ),
        tests=(
            "tests/e2e/test_backup.py::test_a_message_deleted_by_its_owner_comes_back_from_the_backup",
            "tests/e2e/test_backup.py::test_a_contact_and_an_event_deleted_by_their_owner_come_back",
            "tests/e2e/test_backup.py::"
            "test_a_file_deleted_by_its_owner_comes_back_and_a_newer_one_is_kept",
            "tests/integration/test_backup.py::"
            "test_only_the_other_sites_data_hosts_reach_the_backup_sshd",
            "tests/integration/test_backup.py::"
            "test_the_drill_reads_every_repository_and_fails_on_a_corrupted_one",
            "tests/unit/test_backup_agent.py::test_the_repository_is_encrypted_with_the_passphrase",
        ),
        note="Each data host (mail, calendars and contacts, files) sends an archive hourly to "
        "the other site's backup host, encrypted on the host (borg repokey-blake2, a random "
        "passphrase from the vault). The directory is rebuilt from the contacts, so it is not "
        "backed up. The backup host can read the repositories it keeps (it alone prunes them): "
        "they live on its encrypted backups volume.",
    ),
    Promise(
        "delayed-deletion",
        PRACTICES,
        "Destruction of data",
        "Deleting items or closing an account removes the data with a delay, so that it can be "
        "restored, even after an attacker deleted everything.",
        roles=("backup", "backup-client"),
        evidence=(
            Evidence(
                "backup",
                "/etc/bulwark/backup/authorized_keys",
                r'command="borg serve --append-only --restrict-to-repository [^"]+",restrict ',
            ),
        ),
        tests=(
            "tests/integration/test_backup.py::"
            "test_archives_removed_through_a_source_key_stop_the_prune_and_come_back",
            "tests/integration/test_backup.py::"
            "test_a_source_key_runs_no_shell_and_reaches_no_other_repository",
            "tests/unit/test_backup_agent.py::"
            "test_restore_brings_back_deleted_items_and_never_replaces_present_ones",
        ),
        note="A source host's key can only add to its own repository: archives removed through "
        "it stop the backup host's prune, and `bulwark backup rollback` brings them back. "
        "Closing an account: see the account-closure row.",
    ),
    Promise(
        "log-retention",
        PRACTICES,
        "Destruction of system logs",
        "System logs are kept 150 to 180 days, then deleted: the journal and logrotate keep "
        "180 days.",
        roles=("base",),
        evidence=(
            Evidence("base", "/etc/systemd/journald.conf.d/*.conf", r"^Storage=persistent$"),
            Evidence("base", "/etc/systemd/journald.conf.d/*.conf", r"^MaxRetentionSec=180day$"),
            Evidence("base", "/etc/logrotate.conf", r"^daily$|^rotate 180$"),
        ),
        tests=(
            "tests/unit/test_base_role.py::test_journald_keeps_a_persistent_journal_for_180_days",
            "tests/unit/test_base_role.py::test_journald_retention_is_a_timespan_systemd_understands",
            "tests/unit/test_base_role.py::test_logrotate_rotates_daily_and_keeps_180",
            "tests/integration/test_base.py::test_journal_is_persistent_and_kept_180_days",
        ),
        note="Log files that a package rotates through its own /etc/logrotate.d file keep the "
        "rotation that file sets.",
    ),
    Promise(
        "deleted-items-7-days",
        PRACTICES,
        "Destruction of deleted emails, contacts, and calendars",
        "Deleted mail, contacts and calendars are kept in backups for 7 days after deletion, "
        "then gone.",
        roles=("backup",),
        evidence=(
            Evidence("backup", "/etc/bulwark/backup/server.json", r'"retention_days": 7,'),
            Evidence(
                "backup", "/etc/systemd/system/bulwark-backup-prune.timer", r"^OnCalendar=hourly$"
            ),
        ),
        tests=(
            "tests/integration/test_backup.py::"
            "test_deleted_data_is_restorable_for_seven_days_then_gone_from_the_backups",
            "tests/unit/test_backup_agent.py::"
            "test_prune_keeps_seven_days_then_deleted_data_is_gone_after_compaction",
        ),
        note="The backup host deletes every archive older than 7 days (but each repository's "
        "newest) and compacts hourly, so a deleted item leaves the backups' disk 7 days (and "
        "at most the hourly backup and prune intervals) after its deletion.",
    ),
    Promise(
        "backup-pruning",
        PRACTICES,
        "Destruction of backup and search index data",
        "Backups and search indexes are pruned as space requires; support can prune one "
        "account at once on request.",
        roles=("backup",),
        evidence=(
            Evidence(
                "backup",
                "/etc/systemd/system/bulwark-backup-prune.service",
                r"^ExecStart=\S+ --config \S+ prune$",
            ),
        ),
        tests=(
            "tests/unit/test_backup_agent.py::"
            "test_purge_removes_one_accounts_data_from_every_archive_and_nothing_else",
            "tests/integration/test_backup.py::"
            "test_deleted_data_is_restorable_for_seven_days_then_gone_from_the_backups",
        ),
        note="Pruned by age, not by space: every hour, whatever is past 7 days. `bulwark backup "
        "purge --account USER` removes one account's data from every archive at once. No "
        "search index is kept apart from Dovecot's own, which lives beside the mail.",
    ),
    Promise(
        "account-closure",
        PRACTICES,
        "Destruction of data after account closure",
        "An account closed in the inventory (`closed: DATE`) is refused from the next deploy "
        "on, at both sites (IMAP, POP, SMTP, CalDAV, CardDAV, WebDAV, FTPS, LDAP; mail to it "
        "is refused at RCPT as an unknown user) and its directory entries leave LDAP; its mail, "
        "calendars, contacts and files, at both sites, are purged by a daily timer on every "
        "data host once the inventory's retention is over (`closed_account_retention_days`: 37 "
        "days to a year, 60 by default), and from its backups at both sites by the backup "
        "hosts' hourly prune from that day on. Reopening before then restores it with its "
        "data intact.",
        roles=("mailstore", "dav", "files", "directory", "mx", "backup"),
        evidence=(
            *(
                Evidence(role, _PURGE_SERVICE, pattern)
                for role in ("mailstore", "dav")
                for pattern in (
                    r"^ExecStart=\S+/bulwark-purge-closed --list ",
                    r"retention \(\d+ days after closure\)",
                )
            ),
            *(
                Evidence(role, _PURGE_TIMER, r"^OnCalendar=daily$|^Persistent=true$")
                for role in ("mailstore", "dav")
            ),
            Evidence("backup", "/etc/bulwark/backup/server.json", r'^ "closed": \{'),
        ),
        tests=(
            f"{_CLOSURE_TESTS}test_a_closed_account_is_in_no_rendered_file_but_the_purge_list",
            f"{_CLOSURE_TESTS}test_every_login_and_recipient_of_a_closed_account_is_refused_"
            "where_it_was_accepted",
            f"{_CLOSURE_TESTS}test_reopening_renders_every_file_as_it_was",
            f"{_CLOSURE_TESTS}test_the_vault_keeps_a_closed_accounts_secrets_until_the_purge",
            f"{_CLOSURE_TESTS}test_an_accounts_listed_paths_hold_everything_the_roles_create_"
            "for_it",
            "tests/unit/test_role_converge.py::test_a_closed_account_gets_no_mailbox_collection_"
            "or_tree_and_loses_nothing",
            f"{_PURGE_TESTS}test_past_its_day_a_closed_accounts_data_goes_and_nothing_else",
            f"{_PURGE_TESTS}test_the_day_before_the_purge_nothing_is_touched",
            f"{_PURGE_TESTS}test_an_account_also_listed_open_is_refused",
            f"{_PURGE_TESTS}test_a_path_the_guards_refuse_stops_the_whole_account",
            "tests/unit/test_validation.py::test_the_closure_retention_defaults_inside_the_promise",
            "tests/unit/test_role_operations.py::test_the_replicator_forgets_a_closed_account_it_"
            "still_syncs_and_only_that",
            "tests/unit/test_role_operations.py::test_a_closed_accounts_open_sessions_are_ended_"
            "and_no_one_elses",
            "tests/unit/test_backup_agent.py::"
            "test_the_prune_takes_a_closed_account_out_of_every_archive_from_its_purge_day",
            "tests/e2e/test_closure.py::test_a_closed_account_is_refused_everywhere_and_"
            "reopened_with_its_data",
            "tests/e2e/test_closure.py::test_past_the_purge_day_nothing_of_a_closed_account_is_"
            "left_at_either_site_or_in_backups",
        ),
        note="Closure deletes nothing: the data waits on disk, and the account's passwords in "
        "the vault, until the purge day. The secondary's copy of calendars, contacts and files "
        "goes with its own host's purge, or, pulled back from a primary that purges later "
        "the same day, at the pull after the primary's purge. The deploy ends the account's "
        "open IMAP and POP3 sessions; an FTPS session opened before it lasts until the client "
        "ends it or leaves it idle for 15 minutes. Not purged by the timer: the journal's "
        "lines naming the account (kept 180 days like every log) and its hashes in the "
        "operator's vault (after the purge day, remove the account from the inventory and "
        "its secrets with `bulwark vault delete`). From the purge day, each prune takes the "
        "account out of every archive still holding it (`borg recreate`), then compacts.",
    ),
    Promise(
        "end-to-end",
        PRACTICES,
        "The only way to ensure end-to-end security with email",
        "Mail to other servers may cross the internet unencrypted; only PGP or S/MIME in the "
        "user's own client protects it end to end.",
        waived="Not something a server can provide, as the seed says: users who need it use "
        "PGP or S/MIME; the platform carries such mail untouched.",
    ),
    Promise(
        "legal-requests",
        PRACTICES,
        "the required legal authorization",
        "No data is released without the required legal authorization.",
        waived="A legal policy of the operator, outside any host's configuration.",
    ),
    # --- 000: server names and ports ----------------------------------------------------------
    Promise(
        "tls-only",
        ENDPOINTS,
        "we do not support insecure access",
        "TLS on every protocol: the plaintext ports 143, 110 and 389 never listen.",
        roles=("mailstore", "directory"),
        evidence=(
            Evidence("mailstore", _DOVECOT, r"^\s*port = 0$"),
            Evidence("directory", _SLAPD_UNIT, r' -h "ldaps://[0-9.]+:636/ ldapi://[^" ]+"$'),
        ),
        tests=(
            "tests/unit/test_catalogue.py::test_plaintext_twins_never_listen",
            "tests/integration/test_mail.py::test_no_plaintext_twin_listens",
            "tests/e2e/test_exposure.py::test_plaintext_twins_are_not_reachable",
        ),
    ),
    Promise(
        "app-passwords",
        ENDPOINTS,
        "You cannot use your regular Fastmail password",
        "Every service takes app passwords only; the regular (main) password is refused.",
        roles=("mx", "mailstore", "dav", "files", "directory"),
        evidence=(
            Evidence("mailstore", _AUTH_LUA, r"no app password matches"),
            Evidence("mx", _AUTH_LUA, r"no app password matches"),
            Evidence("dav", _WEBAUTH_ACCOUNTS, r'^\s*"\w+": \["<secret:account/'),
            Evidence("files", _FTPD, r"^\s*--login extauth:"),
            Evidence("files", _FTPD, r"^\s*--noanonymous \\$"),
            Evidence(
                "directory", _USERS_LDIF, r"^userPassword: \{ARGON2\}<secret:account/\w+/app/"
            ),
        ),
        tests=(
            *_MAIN_PASSWORD_REFUSED,
            "tests/unit/test_files_role.py::test_pure_ftpd_requires_tls_chroots_and_asks_the_checker",
            "tests/e2e/test_files.py::test_the_main_password_is_refused_over_webdav",
            "tests/e2e/test_files.py::test_the_main_password_is_refused_over_ftps",
        ),
    ),
    Promise(
        "imap",
        ENDPOINTS,
        "IMAP",
        "imap.DOMAIN on port 993, TLS from the first byte (not STARTTLS), folder separator '/'.",
        roles=("mailstore",),
        evidence=(
            Evidence("mailstore", _DOVECOT, r"^\s*port = 993$"),
            Evidence("mailstore", _DOVECOT, r"^\s*separator = /$"),
        ),
        tests=(
            "tests/unit/test_catalogue.py::test_seed_table_client_endpoints",
            "tests/unit/test_mail_roles.py::"
            "test_dovecot_listens_on_tls_ports_only_and_lan_services_on_the_lan",
            "tests/e2e/test_mail.py::test_imap_logs_in_with_each_app_password",
        ),
    ),
    Promise(
        "pop",
        ENDPOINTS,
        "POP",
        "pop.DOMAIN on port 995, TLS from the first byte (not STARTTLS).",
        roles=("mailstore",),
        evidence=(Evidence("mailstore", _DOVECOT, r"^\s*port = 995$"),),
        tests=(
            "tests/unit/test_catalogue.py::test_seed_table_client_endpoints",
            "tests/e2e/test_mail.py::test_pop3_logs_in_with_each_separator",
        ),
    ),
    Promise(
        "pop-from-folder",
        ENDPOINTS,
        "POP from folder",
        "A POP login user+Folder@domain reads that folder instead of the inbox.",
        roles=("mailstore",),
        evidence=(Evidence("mailstore", _AUTH_LUA, r"INBOX=~/Maildir/\."),),
        tests=(
            "tests/unit/test_mail_roles.py::test_pop3_login_with_a_folder_reads_that_folder",
            "tests/e2e/test_mail.py::test_pop3_from_a_folder_lists_that_folder_not_the_inbox",
        ),
    ),
    Promise(
        "smtp-465",
        ENDPOINTS,
        "SMTP",
        "smtp.DOMAIN on port 465, TLS from the first byte, AUTH PLAIN.",
        roles=("mx",),
        evidence=(
            Evidence("mx", _MASTER_CF, r"^465 +inet"),
            Evidence("mx", _MASTER_CF, r"smtpd_tls_wrappermode=yes"),
        ),
        tests=(
            "tests/unit/test_mail_roles.py::test_the_mx_offers_tls_and_submission_requires_it",
            "tests/e2e/test_mail.py::test_submission_465_authenticates_and_delivers",
        ),
    ),
    Promise(
        "smtp-587",
        ENDPOINTS,
        "SMTP",
        "smtp.DOMAIN on port 587 for clients that only speak STARTTLS: authentication only "
        "after it.",
        roles=("mx",),
        evidence=(
            Evidence("mx", _MASTER_CF, r"^587 +inet"),
            Evidence("mx", _MAIN_CF, r"^smtpd_tls_auth_only = yes$"),
        ),
        tests=(
            "tests/unit/test_mail_roles.py::test_the_mx_offers_tls_and_submission_requires_it",
            "tests/e2e/test_mail.py::test_submission_587_offers_auth_only_after_starttls",
            "tests/e2e/test_mail.py::test_submission_refuses_mail_without_auth",
        ),
    ),
    Promise(
        "caldav",
        ENDPOINTS,
        "CalDAV",
        "https://caldav.DOMAIN/ with auto-discovery of calendars; TLS required.",
        roles=("dav",),
        evidence=(
            Evidence("dav", _NGINX, r"^\s*server_name caldav\."),
            Evidence("dav", _NGINX, r"location = /\.well-known/caldav"),
        ),
        tests=(
            "tests/e2e/test_dav.py::test_well_known_redirects_to_the_principal_collections",
            "tests/e2e/test_dav.py::test_the_bare_host_redirects_permanently_keeping_the_method",
            "tests/e2e/test_dav.py::test_caldav_discovers_the_default_calendar_and_manages_an_event",
        ),
    ),
    Promise(
        "carddav",
        ENDPOINTS,
        "CardDAV",
        "https://carddav.DOMAIN/ with auto-discovery; each account's Default address book at "
        ".../dav/addressbooks/user/<user@domain>/Default.",
        roles=("dav",),
        evidence=(
            Evidence("dav", _NGINX, r"^\s*server_name carddav\."),
            Evidence("dav", _NGINX, r"location = /\.well-known/carddav"),
            Evidence("dav", _ADDRESSBOOK_RIGHTS, r"^collection: \{0\}\S*@\S+/Default$"),
        ),
        tests=(
            "tests/unit/test_dav_role.py::"
            "test_every_account_has_its_default_collections_and_a_link_to_the_shared_book",
            "tests/e2e/test_dav.py::test_a_contact_is_created_read_listed_and_deleted",
        ),
    ),
    Promise(
        "carddav-book-logins",
        ENDPOINTS,
        "CardDAV",
        "Logins user+Default@domain and user+Shared@domain reach only that book; the shared "
        "book is .../<owner@domain>.Shared.",
        roles=("dav",),
        evidence=(
            Evidence("dav", _ADDRESSBOOK_RIGHTS, r"^user: .*\\\+Default@"),
            Evidence("dav", _ADDRESSBOOK_RIGHTS, r"^user: .*\\\+Shared\)?\??@"),
        ),
        tests=(
            "tests/unit/test_dav_role.py::test_the_primary_grants_exactly_the_table",
            "tests/e2e/test_dav.py::test_a_default_login_sees_only_the_default_book",
            "tests/e2e/test_dav.py::test_a_shared_login_sees_only_the_shared_book",
            "tests/e2e/test_dav.py::test_another_account_reads_a_contact_of_the_shared_book",
        ),
    ),
    Promise(
        "ldap",
        ENDPOINTS,
        "LDAP",
        "ldap.DOMAIN on port 636 (TLS, not STARTTLS), read-only contacts: bind "
        "cn=USER@DOMAIN,dc=User, search base dc=AddressBook.",
        roles=("directory",),
        evidence=(
            Evidence("directory", _SLAPD, r"^disallow bind_anon$"),
            Evidence("directory", _SLAPD, r"^require authc$"),
            Evidence("directory", _SLAPD, r'^defaultsearchbase "dc=AddressBook"$'),
            Evidence("directory", _SLAPD, r"^readonly on$"),
            Evidence("directory", _SLAPD, r"by dnattr=seeAlso read by \* none$"),
            Evidence("directory", _USERS_LDIF, r"^dn: cn=\S+@\S+,dc=User$"),
        ),
        tests=(
            f"{_LDAP_TESTS}test_each_account_binds_with_each_app_password",
            f"{_LDAP_TESTS}test_client_filters_find_the_accounts",
            f"{_LDAP_TESTS}test_contacts_from_carddav_reach_ldap_at_both_sites",
            f"{_LDAP_TESTS}test_another_accounts_personal_contacts_stay_hidden",
            f"{_LDAP_TESTS}test_every_write_is_refused",
            f"{_LDAP_TESTS}test_anonymous_and_unauthenticated_access_is_refused",
            f"{_LDAP_TESTS}test_starttls_is_refused_on_the_implicit_tls_port",
        ),
        note="Logins over LDAP name a DN, cn=USER@DOMAIN,dc=User, as this section gives it; the "
        "alternative separators are for the other services.",
    ),
    Promise(
        "files",
        ENDPOINTS,
        "Files",
        "Each account's files are one tree, the same over WebDAV and FTP, kept within the "
        "account's quota (its files_quota, or the platform's): an upload that would pass it is "
        "refused over both.",
        roles=("files",),
        evidence=(
            Evidence("files", _WEBAUTH_ACCOUNTS, r'^\s*"(files_roots|files_quotas)": \{$'),
            Evidence("files", _NGINX, r'^\s*return 507 "over quota'),
            Evidence("files", _NGINX, r"^\s*client_max_body_size 0;$"),
            Evidence("files", _FTPD, r"^\s*--login extauth:"),
        ),
        tests=(
            "tests/unit/test_files_role.py::test_the_quota_reaches_the_checker_for_every_account",
            "tests/unit/test_files_role.py::test_files_quota_takes_bytes_and_binary_units",
            "tests/unit/test_validation.py::test_bad_inventory_reports_exactly_its_problems",
            "tests/e2e/test_files.py::test_an_upload_over_quota_is_refused_over_webdav_and_ftps",
            "tests/e2e/test_files.py::test_a_chunked_upload_without_any_size_is_refused",
            "tests/e2e/test_files.py::test_a_50_mb_upload_streams_and_reads_back_over_ftps",
        ),
    ),
    Promise(
        "webdav",
        ENDPOINTS,
        "WebDAV",
        "https://webdav.DOMAIN/ with each user's files at /USER.DOMAIN/files/, and "
        "https://myfiles.DOMAIN/ rooted there.",
        roles=("files",),
        evidence=(
            Evidence("files", _NGINX, r"^\s*server_name (webdav|myfiles)\."),
            Evidence("files", _NGINX, r"^\s*proxy_set_header X-Bulwark-Root \$bulwark_root;$"),
            Evidence("files", _APACHE, r'^\s*RewriteCond "%\{HTTP:X-Bulwark-Root\}'),
            Evidence("files", _APACHE, r'^\s*RewriteRule "\^/'),
            Evidence("files", _APACHE, r"^Listen 127\.0\.0\.1:"),
        ),
        tests=(
            "tests/unit/test_files_role.py::test_every_files_location_is_checked_and_gets_no_password",
            "tests/unit/test_files_role.py::test_apache_serves_only_the_tree_nginx_names",
            "tests/e2e/test_files.py::test_a_file_is_uploaded_listed_patched_copied_moved_and_deleted",
            "tests/e2e/test_files.py::test_a_locked_file_takes_writes_only_with_its_token",
            "tests/e2e/test_files.py::test_another_accounts_tree_is_refused",
            "tests/e2e/test_files.py::test_a_destination_in_another_accounts_tree_is_refused",
            "tests/e2e/test_files.py::test_a_traversal_out_of_the_own_tree_is_refused",
        ),
    ),
    Promise(
        "ftp",
        ENDPOINTS,
        "FTP",
        "ftp.DOMAIN on port 21 with FTPS (TLS required), files at /USER.DOMAIN/files/; no SFTP.",
        roles=("files",),
        evidence=(
            Evidence("files", _FTPD, r"^\s*--bind \S+,21 \\$"),
            Evidence("files", _FTPD, r"^\s*--tls 3 \\$"),
            Evidence("files", _FTPD, r"^\s*--chrooteveryone \\$"),
            Evidence("files", _FTPD, r"^\s*--passiveportrange \d+:\d+ \\$"),
            Evidence(
                "firewall",
                _NFTABLES,
                r'tcp dport \d+-\d+ ct state new accept comment "ftp-passive"',
            ),
        ),
        tests=(
            *_FTPS,
            "tests/unit/test_network_roles.py::test_ftp_passive_range_is_one_rule",
            "tests/e2e/test_files.py::test_ftps_lists_stores_and_retrieves_in_the_passive_range",
            "tests/e2e/test_files.py::test_ftp_session_never_leaves_its_chroot",
        ),
        note="Passive data connections use the catalogue's port range, which the firewall "
        "opens explicitly (the nftables FTP helper cannot read an encrypted control channel). "
        "SFTP is not offered: SSH takes keys only, from the management and admin networks.",
    ),
    Promise(
        "alternative-usernames",
        ENDPOINTS,
        "Alternative usernames",
        "user@domain, user#domain, user/domain and user=domain all log in.",
        roles=("mx", "mailstore", "dav", "files"),
        evidence=(
            Evidence("mailstore", _DOVECOT, r'^auth_username_translation = "#@/@=@"$'),
            Evidence("mx", _DOVECOT, r'^auth_username_translation = "#@/@=@"$'),
            Evidence("dav", _WEBAUTH_ACCOUNTS, r'"separators": \['),
        ),
        tests=(
            "tests/unit/test_mail_roles.py::test_alternative_separators_log_in",
            "tests/e2e/test_mail.py::test_pop3_logs_in_with_each_separator",
            "tests/e2e/test_dav.py::test_each_separator_logs_in",
        ),
    ),
    Promise(
        "firewall-proxies",
        ENDPOINTS,
        "Firewall access",
        "imaps-proxy, pops-proxy and smtps-proxy.DOMAIN answer IMAP, POP and SMTP over TLS on "
        "any commonly open port (80, 21, 25, 443 ...).",
        roles=("proxy",),
        evidence=(
            Evidence("firewall", _NFTABLES, r'dnat ip to \S+:\d+ comment "\w+-proxy"$'),
            Evidence("proxy", _PROXY_NGINX, r"^\s*proxy_protocol on;$"),
            Evidence("mailstore", _DOVECOT, r"^\s*haproxy = yes$"),
            Evidence("mailstore", _DOVECOT, r"^haproxy_trusted_networks = "),
            Evidence("mx", _MASTER_CF, r"smtpd_upstream_proxy_protocol=haproxy"),
        ),
        tests=(
            "tests/unit/test_proxy_role.py::test_every_port_but_ssh_reaches_each_proxys_listener",
            "tests/e2e/test_proxy.py::test_imap_pop_and_smtp_log_in_through_their_proxies",
            "tests/e2e/test_proxy.py::test_the_mail_host_logs_the_clients_own_address",
            "tests/e2e/test_proxy.py::test_a_forged_proxy_header_is_refused",
        ),
    ),
)

# The seeds' sections, as they head their passages: every one has at least one promise above.
SECTIONS: dict[str, tuple[str, ...]] = {
    PRACTICES: (
        "Customer data",
        "Secure access to mail",
        "Encrypted sending/receiving",
        "Content security policy",
        "We only allow necessary communications",
        "We keep track of software updates",
        "We use software systems that take security seriously",
        "Privacy: Image loading",
        "Bug bounty",
        "Physical location security",
        "On-disk encryption",
        "Staff access to your data",
        "Password encryption",
        "Transfer of confidential data with third parties",
        "Destruction of data",
        "Destruction of system logs",
        "Destruction of deleted emails, contacts, and calendars",
        "Destruction of backup and search index data",
        "Destruction of data after account closure",
    ),
    ENDPOINTS: (
        "IMAP",
        "POP",
        "SMTP",
        "CalDAV",
        "CardDAV",
        "LDAP",
        "Files",
        "WebDAV",
        "FTP",
        "Alternative usernames",
        "Firewall access",
    ),
}
