"""Where each role departs from the CIS Debian Linux 12 Benchmark (v1.1.0), and why.

Data for the audit report (report.html). A recommendation is named by its title, as the
benchmark words it. `by_design` deviations follow from what the role is for (a mail server runs
an MTA); the others are open items, said plainly. A role that has no module yet
(bulwark.registry) is listed with the deviations it will bring, marked as not deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

BENCHMARK = "CIS Debian Linux 12 Benchmark v1.1.0"


@dataclass(frozen=True)
class Deviation:
    role: str  # a name in bulwark.registry
    recommendation: str  # the benchmark's title
    deviation: str  # what the role does instead
    reason: str
    by_design: bool = True  # False: an open item, not yet done


DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "base",
        "Ensure sshd PermitRootLogin is disabled",
        "PermitRootLogin prohibit-password",
        "pyinfra deploys as root over SSH with a key; no password opens any account "
        "(PasswordAuthentication no), and SSH is reachable from the management and admin "
        "networks only.",
    ),
    Deviation(
        "base",
        "Ensure sshd access is configured",
        "No AllowUsers or AllowGroups line",
        "root, by key, is the only login; the firewall admits SSH from the management and admin "
        "networks only. An AllowGroups line is still to come.",
        by_design=False,
    ),
    Deviation(
        "base",
        "Ensure auditd packages are installed",
        "auditd is not installed",
        "Not done yet: the journal (kept 180 days) is the only record of activity.",
        by_design=False,
    ),
    Deviation(
        "base",
        "Ensure AIDE is installed",
        "AIDE is not installed",
        "Not done yet. Every file bulwark manages is compared with its rendered content at each "
        "deploy and put back when it differs; other files are not watched.",
        by_design=False,
    ),
    Deviation(
        "gateway",
        "Ensure ip forwarding is disabled",
        "net.ipv4.ip_forward = 1 on the gateways",
        "A gateway routes between its site's LAN and the WireGuard tunnel to the other site; "
        "its firewall forwards exactly that and drops everything else.",
    ),
    Deviation(
        "firewall",
        "Ensure nftables default deny firewall policy",
        "The output chain's policy is accept (input and forward drop)",
        "Hosts open the connections their work needs (DNS, apt, time, mail to other servers, "
        "replication, the tunnel); what the platform restricts is who may connect in and what "
        "the gateways forward.",
    ),
    Deviation(
        "mx",
        "Ensure mail transfer agent is configured for local-only mode",
        "Postfix listens on ports 25, 465 and 587 of the host's addresses",
        "The host is the platform's inbound MX and its authenticated submission service.",
    ),
    Deviation(
        "mailstore",
        "Ensure message access server services are not in use",
        "Dovecot serves IMAP (993) and POP3 (995), LMTP and replication on the LAN",
        "Reading mail over IMAP and POP is the service the platform exists for.",
    ),
    Deviation(
        "dav",
        "Ensure web server services are not in use",
        "nginx serves CalDAV and CardDAV on 443; port 80 only redirects",
        "Calendars and contacts are served over HTTPS (the seed's CalDAV and CardDAV).",
    ),
    Deviation(
        "dav",
        "Ensure rsync services are not in use",
        "An rsync daemon (one process per connection) behind nginx's TLS listener on the LAN",
        "The other site's web host pulls its read-only replica this way, with client "
        "certificates, and no other host may connect.",
    ),
    Deviation(
        "files",
        "Ensure ftp server services are not in use",
        "pure-ftpd on port 21, TLS required for the login and every data connection, passive "
        "mode only in the catalogue's port range, each session chrooted to its account's files",
        "FTPS is one of the seed's file-access endpoints.",
    ),
    Deviation(
        "files",
        "Ensure web server services are not in use",
        "nginx serves WebDAV (webdav, myfiles) and the content origin on 443; Apache httpd "
        "(mod_dav) listens on 127.0.0.1 in a network namespace of its own, which only nginx "
        "reaches, through a Unix socket",
        "Files over WebDAV are one of the seed's endpoints; nginx checks the login, the path "
        "and the quota before Apache serves the one account's tree it names.",
    ),
    Deviation(
        "files",
        "Ensure rsync services are not in use",
        "An rsync daemon (one process per connection) behind nginx's TLS listener on the LAN",
        "The other site's files host pulls its read-only replica this way, with client "
        "certificates, and no other host may connect.",
    ),
    Deviation(
        "directory",
        "Ensure ldap server services are not in use",
        "slapd serves LDAPS on 636, read-only",
        "The read-only address book over LDAP is one of the seed's endpoints.",
    ),
    Deviation(
        "directory",
        "Ensure ldap client is not installed",
        "ldap-utils (ldapsearch, ldapmodify, ldapwhoami), used over slapd's local socket only",
        "slapd's start waits until it answers ldapwhoami on its local socket; nothing connects "
        "to another host's LDAP.",
    ),
    Deviation(
        "proxy",
        "Ensure web server services are not in use",
        "nginx (stream module, its own unit; Debian's masked) passes TLS through on the "
        "proxies' own addresses, every port but SSH's",
        "The seed's IMAP, POP and SMTP proxies answer on any commonly open port.",
    ),
    Deviation(
        "backup",
        "Ensure only approved services are listening on a network interface",
        "The backup host runs a second sshd, on 2222, for the other site's data hosts",
        "Backups are kept at the other site; only its hosts may send them.",
    ),
)
