"""Validation: every bad inventory gets its own message, all at once, and nothing runs.

Each case breaks one thing in a small valid two-site inventory (the `two_site_inventory`
fixture, written as a real pyinfra inventory file) and asserts the complete problem list, so a
check that goes quiet, or one that drags spurious follow-on problems along, both fail.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from mutations import (
    KNOWN_ROLES,
    MANY_MISTAKES,
    MANY_MISTAKES_PROBLEMS,
    drop_host_field,
    drop_platform_field,
    drop_site,
    duplicate_host,
    rename_host,
    renumber,
    set_accounts,
    set_host,
    set_platform,
    set_site,
)

from bulwark.inventory import load_topology
from bulwark.topology import CLOSED_ACCOUNT_RETENTION_BOUNDS
from bulwark.topology import DEFAULT_CLOSED_ACCOUNT_RETENTION_DAYS as DEFAULT_RETENTION
from bulwark.validation import Problem, TopologyError
from bulwark.volumes import volumes_for


def problems_of(path: Path) -> list[str]:
    """Load `path`, which must fail, and return its problems as text."""
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return [str(problem) for problem in caught.value.problems]


BAD_DOMAINS = [
    ("upper-case", "Example.com"),
    ("one-label", "localhost"),
    ("empty-label", "a..com"),
    ("numeric-tld", "a.123"),
    ("leading-hyphen", "-a.com"),
    ("trailing-dot", "a.com."),
    ("underscore", "my_co.com"),
    ("label-too-long", "a" * 64 + ".com"),
    ("too-long", ("a" * 63 + ".") * 4 + "com"),
]


def not_a_domain(value: str) -> str:
    return f"platform.domain: {value!r} is not a lower-case DNS name like 'example.com'"


ALICE_HAS_NO_APP_LABEL = (
    "account alice.app_passwords: no app password: accounts log in with app passwords only, "
    "list at least one label"
)

CLOSED_ALICE = {"user": "alice", "app_passwords": ["laptop"], "closed": "2026-11-30"}
BOB = {"user": "bob", "app_passwords": ["desktop"]}


def both(*mutations):
    """One mutation making each of `mutations` in turn."""

    def mutate(inventory) -> None:
        for mutation in mutations:
            mutation(inventory)

    return mutate


# (id, mutation, every problem expected: exact text)
APT_PROXY_CREDENTIALS = (
    "platform.apt_proxy: holds a user name or password: apt's configuration is readable by "
    "every local user; use a proxy that admits the hosts by address"
)

# What a broken nj-web also says: the sea web host's dav and files roles lost their peer.
NJ_WITHOUT_DAV = (
    "site nj.roles: no 'dav' host, but site sea has one: 'dav' needs its peer in every site"
)
NJ_WITHOUT_FILES = (
    "site nj.roles: no 'files' host, but site sea has one: 'files' needs its peer in every site"
)

NJ_PROXIES = {"imaps-proxy": "192.0.2.13", "pops-proxy": "192.0.2.14", "smtps-proxy": "192.0.2.15"}
# Every host with encrypted volumes has its logs on one (the fixture names it so).
LOGS_DEVICE = "/dev/disk/by-id/virtio-logs"

BAD_INVENTORIES = [
    # the proxies' own addresses
    (
        "proxy-addresses-unknown-and-missing-label",
        set_host(
            "nj-gw",
            "proxy_addresses",
            {"imap-proxy": "192.0.2.13", "pops-proxy": "192.0.2.14", "smtps-proxy": "192.0.2.15"},
        ),
        [
            "nj-gw.proxy_addresses.imap-proxy: not a proxy name (did you mean 'imaps-proxy'?)",
            "nj-gw.proxy_addresses.imaps-proxy: missing: every proxy name needs its own address",
        ],
    ),
    (
        "proxy-address-outside-the-sites-public-range",
        set_host("nj-gw", "proxy_addresses", {**NJ_PROXIES, "pops-proxy": "198.51.100.14"}),
        [
            "nj-gw.proxy_addresses.pops-proxy: 198.51.100.14 is not a host address of site nj's "
            "site_public 192.0.2.0/25"
        ],
    ),
    (
        "proxy-address-is-a-hosts-public-address",
        set_host("nj-gw", "proxy_addresses", {**NJ_PROXIES, "smtps-proxy": "192.0.2.25"}),
        ["nj-gw.proxy_addresses.smtps-proxy: 192.0.2.25 is already used by nj-mail.public_address"],
    ),
    (
        "proxy-address-not-an-address",
        set_host("nj-gw", "proxy_addresses", {**NJ_PROXIES, "imaps-proxy": "192.0.2"}),
        ["nj-gw.proxy_addresses.imaps-proxy: '192.0.2' is not an IPv4 address"],
    ),
    (
        "proxy-in-a-site-without-a-mail-store",
        set_host("nj-mail", "roles", ["mx"]),
        [
            "site nj.roles: a 'proxy' host but no 'mailstore' host: the proxies pass connections "
            "to their own site's mail hosts",
            "site nj.roles: no 'mailstore' host, but site sea has one: 'mailstore' needs its "
            "peer in every site",
            "nj-mail.volume_devices: no role of this host stores volume 'mail'",
        ],
    ),
    (
        "proxy-addresses-on-a-host-without-the-proxy-role",
        set_host("nj-mail", "proxy_addresses", NJ_PROXIES),
        ["nj-mail.proxy_addresses: only a host with role 'proxy' has them"],
    ),
    # addresses: malformed, out of range, network/broadcast, duplicated, missing
    (
        "lan-address-malformed",
        set_host("nj-web", "lan_address", "10.1.0.400"),
        ["nj-web.lan_address: '10.1.0.400' is not an IPv4 address"],
    ),
    (
        "public-address-malformed",
        set_host("nj-web", "public_address", "192.0.2"),
        ["nj-web.public_address: '192.0.2' is not an IPv4 address"],
    ),
    (
        "management-address-not-a-string",
        set_host("nj-web", "management_address", 10),
        ["nj-web.management_address: expected an IPv4 address like '10.1.0.10', got 10"],
    ),
    (
        "lan-address-outside-site",
        set_host("nj-web", "lan_address", "10.2.0.41"),
        ["nj-web.lan_address: 10.2.0.41 is outside site nj's site_lan 10.1.0.0/24"],
    ),
    (
        "public-address-outside-site",
        set_host("nj-web", "public_address", "192.0.2.200"),
        ["nj-web.public_address: 192.0.2.200 is outside site nj's site_public 192.0.2.0/25"],
    ),
    (
        "management-address-outside-site",
        set_host("nj-web", "management_address", "10.102.0.41"),
        [
            "nj-web.management_address: 10.102.0.41 is outside site nj's site_management "
            "10.101.0.0/24"
        ],
    ),
    (
        "lan-network-address",
        set_host("nj-web", "lan_address", "10.1.0.0"),
        ["nj-web.lan_address: 10.1.0.0 is the network or broadcast address of 10.1.0.0/24"],
    ),
    (
        "management-broadcast-address",
        set_host("nj-web", "management_address", "10.101.0.255"),
        [
            "nj-web.management_address: 10.101.0.255 is the network or broadcast address of "
            "10.101.0.0/24"
        ],
    ),
    (
        "public-broadcast-address",
        set_host("nj-web", "public_address", "192.0.2.127"),
        ["nj-web.public_address: 192.0.2.127 is the network or broadcast address of 192.0.2.0/25"],
    ),
    (
        "address-used-by-two-hosts",
        set_host("nj-web", "lan_address", "10.1.0.25"),
        ["nj-web.lan_address: 10.1.0.25 is already used by nj-mail.lan_address"],
    ),
    (
        "public-address-missing-for-public-role",
        drop_host_field("nj-web", "public_address"),
        ["nj-web.public_address: missing: role dav serves the public"],
    ),
    (
        "lan-address-missing",
        drop_host_field("nj-web", "lan_address"),
        ["nj-web.lan_address: missing: every host needs one"],
    ),
    (
        "management-address-missing",
        drop_host_field("nj-web", "management_address"),
        ["nj-web.management_address: missing: every host needs one"],
    ),
    # hosts
    (
        "host-listed-twice",
        duplicate_host("nj", "nj-web"),
        ["nj-web.name: listed more than once in the inventory"],
    ),
    (
        "host-name-not-a-dns-label",
        rename_host("nj-web", "NJ_Web"),
        ["NJ_Web.name: host names are lower-case DNS labels like 'nj-mail'"],
    ),
    # site networks
    (
        "site-lan-host-bits-set",
        set_site("sea", "site_lan", "10.2.0.1/24"),
        ["site sea.site_lan: '10.2.0.1/24' is not an IPv4 network (10.2.0.1/24 has host bits set)"],
    ),
    (
        "site-public-bad-prefix",
        set_site("sea", "site_public", "198.51.100.0/33"),
        [
            "site sea.site_public: '198.51.100.0/33' is not an IPv4 network "
            "('33' is not a valid netmask)"
        ],
    ),
    (
        "site-management-missing",
        set_site("sea", "site_management", None),
        ["site sea.site_management: expected an IPv4 network like '10.1.0.0/24', got None"],
    ),
    (
        "site-ranges-overlap-within-site",
        renumber("sea", "management", "10.2.0.0/16", offset=256),
        ["site sea.site_management: 10.2.0.0/16 overlaps the site's site_lan 10.2.0.0/24"],
    ),
    (
        "site-ranges-overlap-across-sites",
        set_site("sea", "site_lan", "10.0.0.0/14"),
        ["site sea.site_lan: 10.0.0.0/14 overlaps site nj's site_lan 10.1.0.0/24"],
    ),
    (
        "site-lan-public-range",
        renumber("sea", "lan", "172.32.0.0/24"),
        ["site sea.site_lan: 172.32.0.0/24 is not a private range (RFC 1918)"],
    ),
    # site fields
    (
        "site-hosts-disagree",
        set_host("nj-web", "site_location", "elsewhere"),
        [
            "site nj.site_location: hosts of the site disagree: 'elsewhere', 'nj data center'; "
            "set it once in the site group"
        ],
    ),
    (
        "site-location-missing",
        set_site("sea", "site_location", ""),
        ["site sea.site_location: missing: name the data center, e.g. 'Seattle, WA'"],
    ),
    (
        "site-primary-not-a-bool",
        set_site("sea", "site_primary", "no"),
        ["site sea.site_primary: expected True or False, got 'no'"],
    ),
    (
        "no-primary-site",
        set_site("nj", "site_primary", False),
        ["platform.site_primary: exactly one site must be primary, found 0"],
    ),
    (
        "two-primary-sites",
        set_site("sea", "site_primary", True),
        ["platform.site_primary: exactly one site must be primary, found 2 (nj, sea)"],
    ),
    (
        "only-one-site",
        drop_site("sea"),
        ["platform.sites: only one site: the platform needs a primary and a secondary"],
    ),
    # role placement
    (
        "site-without-gateway",
        set_host("sea-gw", "roles", ["proxy"]),
        ["site sea.roles: no gateway: give one host of the site the 'gateway' role"],
    ),
    (
        "site-with-two-gateways",
        set_host("nj-web", "roles", ["gateway", "dav", "files"]),
        ["site nj.roles: 2 gateways (nj-gw, nj-web): a site has exactly one 'gateway' host"],
    ),
    (
        "mailstore-without-peer",
        set_host("sea-mail", "roles", ["mx"]),
        [
            "site sea.roles: a 'proxy' host but no 'mailstore' host: the proxies pass connections "
            "to their own site's mail hosts",
            "sea-mail.volume_devices: no role of this host stores volume 'mail'",
            "site sea.roles: no 'mailstore' host, but site nj has one: 'mailstore' needs its "
            "peer in every site",
        ],
    ),
    (
        "backup-without-peer",
        lambda inventory: inventory.remove_host("sea-backup"),
        [
            "site sea.roles: no 'backup' host, but site nj has one: 'backup' needs its peer in "
            "every site"
        ],
    ),
    # roles of one host
    (
        "unknown-role-with-suggestion",
        set_host("nj-web", "roles", ["dav", "files", "file"]),
        [f"nj-web.roles: unknown role 'file' (did you mean 'files'?); known roles: {KNOWN_ROLES}"],
    ),
    (
        "unknown-role-without-suggestion",
        set_host("nj-web", "roles", ["dav", "files", "kubernetes"]),
        [f"nj-web.roles: unknown role 'kubernetes'; known roles: {KNOWN_ROLES}"],
    ),
    (
        "infrastructure-role-listed",
        set_host("nj-web", "roles", ["dav", "files", "firewall"]),
        ["nj-web.roles: 'firewall' runs on every host: do not list it"],
    ),
    (
        "role-listed-twice",
        set_host("nj-web", "roles", ["dav", "files", "dav"]),
        ["nj-web.roles: role 'dav' is listed 2 times"],
    ),
    (
        "roles-port-conflict-proxy-mx",
        set_host("nj-gw", "roles", ["gateway", "proxy", "mx"]),
        ["nj-gw.roles: roles mx and proxy both listen on tcp 465: put them on different hosts"],
    ),
    (
        "roles-proxy-beside-a-web-role",
        set_host("nj-web", "roles", ["dav", "files", "proxy"]),
        [
            "nj-web.roles: roles proxy and dav cannot share a host (a proxy host masks "
            "Debian's nginx unit, which the web roles run): put them on different hosts",
            "nj-web.roles: roles proxy and files cannot share a host (a proxy host masks "
            "Debian's nginx unit, which the web roles run): put them on different hosts",
            "nj-web.proxy_addresses: missing: role proxy needs an address of its own per proxy "
            "name, e.g. {'imaps-proxy': '203.0.113.11', 'pops-proxy': '203.0.113.12', "
            "'smtps-proxy': '203.0.113.13'}",
        ],
    ),
    (
        "roles-not-a-list",
        set_host("nj-web", "roles", "dav"),
        [
            "nj-web.roles: expected a list of roles, got 'dav'",
            NJ_WITHOUT_DAV,
            NJ_WITHOUT_FILES,
        ],
    ),
    (
        "roles-missing",
        drop_host_field("nj-web", "roles"),
        [
            "nj-web.roles: expected a list of roles, got None",
            NJ_WITHOUT_DAV,
            NJ_WITHOUT_FILES,
        ],
    ),
    # domain
    *(
        (f"domain-{case}", set_platform("domain", value), [not_a_domain(value)])
        for case, value in BAD_DOMAINS
    ),
    (
        "domain-missing",
        drop_platform_field("domain"),
        ["platform.domain: missing: set the platform's mail domain, e.g. 'example.com'"],
    ),
    # the shared address book
    (
        "shared-addressbook-not-a-mapping",
        set_platform("shared_addressbook", "alice"),
        ["platform.shared_addressbook: expected a mapping with 'owner' and 'editors', got 'alice'"],
    ),
    (
        "shared-addressbook-owner-unknown",
        set_platform("shared_addressbook", {"owner": "carol", "editors": []}),
        ["platform.shared_addressbook.owner: 'carol' is not an account (accounts: alice, bob)"],
    ),
    (
        "shared-addressbook-editor-unknown",
        set_platform("shared_addressbook", {"owner": "alice", "editors": ["alice", "eve"]}),
        ["platform.shared_addressbook.editors: 'eve' is not an account"],
    ),
    (
        "shared-addressbook-editor-twice",
        set_platform("shared_addressbook", {"owner": "alice", "editors": ["bob", "bob"]}),
        ["platform.shared_addressbook.editors: an account is listed more than once"],
    ),
    (
        "shared-addressbook-unknown-field",
        set_platform("shared_addressbook", {"owner": "alice", "editor": ["bob"]}),
        ["platform.shared_addressbook.editor: unknown field (did you mean 'editors'?)"],
    ),
    # admin networks and apt proxy
    (
        "admin-networks-not-a-list",
        set_platform("admin_networks", "203.0.113.0/28"),
        ["platform.admin_networks: expected a list of networks, got '203.0.113.0/28'"],
    ),
    (
        "admin-networks-bad-items",
        set_platform("admin_networks", ["203.0.113.0/28", "203.0.113.1/28", "nope"]),
        [
            "platform.admin_networks[1]: '203.0.113.1/28' is not an IPv4 network "
            "(203.0.113.1/28 has host bits set)",
            "platform.admin_networks[2]: 'nope' is not an IPv4 network "
            "(Expected 4 octets in 'nope')",
        ],
    ),
    (
        "apt-proxy-wrong-scheme",
        set_platform("apt_proxy", "ftp://10.1.0.5:3142"),
        [
            "platform.apt_proxy: expected a URL like 'http://10.1.0.5:3142', got 'ftp://10.1.0.5:3142'"
        ],
    ),
    (
        "apt-proxy-no-scheme",
        set_platform("apt_proxy", "10.1.0.5:3142"),
        ["platform.apt_proxy: expected a URL like 'http://10.1.0.5:3142', got '10.1.0.5:3142'"],
    ),
    (
        "apt-proxy-not-a-string",
        set_platform("apt_proxy", 3142),
        ["platform.apt_proxy: expected a URL like 'http://10.1.0.5:3142', got 3142"],
    ),
    (
        "admin-networks-everything",
        set_platform("admin_networks", ["0.0.0.0/0"]),
        [
            "platform.admin_networks[0]: 0.0.0.0/0 would let every address try SSH: "
            "list the operators' own networks"
        ],
    ),
    (
        "admin-networks-overlap-a-management-range",
        set_platform("admin_networks", ["10.101.0.128/25"]),
        [
            "platform.admin_networks[0]: 10.101.0.128/25 overlaps "
            "site nj's site_management 10.101.0.0/24"
        ],
    ),
    (
        "admin-networks-cover-every-management-range",
        set_platform("admin_networks", ["10.0.0.0/8"]),
        [
            "platform.admin_networks[0]: 10.0.0.0/8 overlaps site nj's site_management "
            "10.101.0.0/24, site sea's site_management 10.102.0.0/24"
        ],
    ),
    (
        "admin-networks-overlap-each-other",
        set_platform("admin_networks", ["203.0.113.0/28", "203.0.113.0/24"]),
        ["platform.admin_networks[1]: 203.0.113.0/24 overlaps admin_networks[0] 203.0.113.0/28"],
    ),
    (
        "apt-proxy-with-user-and-password",
        set_platform("apt_proxy", "http://cache:hunter2@10.1.0.5:3142"),
        [APT_PROXY_CREDENTIALS],
    ),
    (
        "vault-file-not-a-path",
        set_platform("vault_file", 5),
        ["platform.vault_file: expected a path, got 5"],
    ),
    # accounts
    (
        "accounts-not-a-list",
        set_platform("accounts", {"user": "alice"}),
        ["platform.accounts: expected a list of accounts, got {'user': 'alice'}"],
    ),
    (
        "account-not-a-mapping",
        set_accounts("alice"),  # type: ignore[arg-type]
        ["platform.accounts[0]: expected a mapping with 'user' and 'app_passwords', got 'alice'"],
    ),
    (
        "account-user-upper-case",
        set_accounts({"user": "Alice", "app_passwords": ["laptop"]}),
        ["accounts[0].user: 'Alice' is not a lower-case local part like 'alice'"],
    ),
    (
        "account-user-with-double-dot",
        set_accounts({"user": "al..ice", "app_passwords": ["laptop"]}),
        ["accounts[0].user: 'al..ice' is not a lower-case local part like 'alice'"],
    ),
    (
        "account-user-missing",
        set_accounts({"app_passwords": ["laptop"]}),
        ["accounts[0].user: None is not a lower-case local part like 'alice'"],
    ),
    (
        "account-defined-twice",
        set_accounts(
            {"user": "alice", "app_passwords": ["laptop"]},
            {"user": "alice", "app_passwords": ["phone"]},
        ),
        ["account alice.user: defined 2 times"],
    ),
    (
        "account-without-app-password",
        set_accounts({"user": "alice", "app_passwords": []}),
        [ALICE_HAS_NO_APP_LABEL],
    ),
    (
        "account-app-passwords-not-a-list",
        set_accounts({"user": "alice", "app_passwords": "laptop"}),
        ["account alice.app_passwords: expected a list of labels, got 'laptop'"],
    ),
    (
        "account-app-password-label-twice",
        set_accounts({"user": "alice", "app_passwords": ["laptop", "laptop"]}),
        ["account alice.app_passwords: label 'laptop' is listed 2 times"],
    ),
    (
        "account-app-password-bad-label",
        set_accounts({"user": "alice", "app_passwords": ["My Laptop"]}),
        ["account alice.app_passwords: 'My Laptop' is not a label like 'laptop'"],
    ),
    (
        "account-unknown-field-with-suggestion",
        set_accounts({"user": "alice", "app_password": ["laptop"]}),
        [
            "account alice.app_password: unknown field (did you mean 'app_passwords'?)",
            ALICE_HAS_NO_APP_LABEL,
        ],
    ),
    (
        "account-name-not-a-string",
        set_accounts({"user": "alice", "name": 7, "app_passwords": ["laptop"]}),
        ["account alice.name: expected a display name, got 7"],
    ),
    (
        "account-files-quota-not-a-size",
        set_accounts({"user": "alice", "app_passwords": ["laptop"], "files_quota": "10 GB"}),
        ["account alice.files_quota: expected bytes or a size like '500M' or '10G', got '10 GB'"],
    ),
    (
        "account-files-quota-negative",
        set_accounts({"user": "alice", "app_passwords": ["laptop"], "files_quota": -1}),
        ["account alice.files_quota: expected bytes or a size like '500M' or '10G', got -1"],
    ),
    # account closure: the day, the retention, and the accounts that must stay open
    (
        "account-closed-not-a-date",
        set_accounts({"user": "alice", "app_passwords": ["laptop"], "closed": "30/11/2026"}),
        [
            "account alice.closed: expected the day the account closed, like '2026-11-30', "
            "got '30/11/2026'"
        ],
    ),
    (
        "account-closed-not-a-day",
        set_accounts({"user": "alice", "app_passwords": ["laptop"], "closed": "2026-02-30"}),
        [
            "account alice.closed: expected the day the account closed, like '2026-11-30', "
            "got '2026-02-30'"
        ],
    ),
    (
        "account-closed-a-time",
        set_accounts({"user": "alice", "app_passwords": ["laptop"], "closed": "2026-11-30T10:00"}),
        [
            "account alice.closed: expected the day the account closed, like '2026-11-30', "
            "got '2026-11-30T10:00'"
        ],
    ),
    (
        "account-closed-a-day-to-come",
        set_accounts({"user": "alice", "app_passwords": ["laptop"], "closed": "2999-01-01"}),
        [
            "account alice.closed: 2999-01-01 is a day to come: closing takes effect at the next "
            "deploy, so give the day it closes (today), not a day to schedule it for"
        ],
    ),
    *(
        (
            f"closed-account-retention-{name}",
            set_platform("closed_account_retention_days", value),
            [
                "platform.closed_account_retention_days: expected whole days from 37 to 365 (the "
                "data of a closed account is purged between 37 days and one year after closure), "
                f"got {value!r}"
            ],
        )
        for name, value in (
            ("under-37-days", 36),
            ("over-a-year", 366),
            ("not-a-number", "60"),
            ("boolean", True),
            ("fraction", 40.5),
        )
    ),
    (
        "postmaster-closed",
        both(
            set_accounts(CLOSED_ALICE, BOB),
            set_platform("postmaster", "alice"),
        ),
        [
            "platform.postmaster: 'alice' is closed: postmaster@, abuse@ and DMARC reports would "
            "bounce; name an open account"
        ],
    ),
    (
        "shared-addressbook-owner-closed",
        both(
            set_accounts(CLOSED_ALICE, BOB),
            set_platform("shared_addressbook", {"owner": "alice", "editors": ["bob"]}),
        ),
        [
            "platform.shared_addressbook.owner: 'alice' is closed: every account reads this book "
            "and it would be purged with its owner's data; give it an open owner"
        ],
    ),
    # files: the platform's quota and content origin
    (
        "files-quota-unknown-unit",
        set_platform("files_quota", "500X"),
        ["platform.files_quota: expected bytes or a size like '500M' or '10G', got '500X'"],
    ),
    (
        "files-quota-boolean",
        set_platform("files_quota", True),
        ["platform.files_quota: expected bytes or a size like '500M' or '10G', got True"],
    ),
    (
        "content-origin-is-the-domain",
        set_platform("content_origin", "example.com"),
        [
            "platform.content_origin: 'example.com' is a name the platform serves: give the "
            "content its own host name"
        ],
    ),
    (
        "content-origin-is-a-service-name",
        set_platform("content_origin", "webdav.example.com"),
        [
            "platform.content_origin: 'webdav.example.com' is a name the platform serves: give "
            "the content its own host name"
        ],
    ),
    (
        "content-origin-is-a-sites-service-name",
        set_platform("content_origin", "myfiles.sea.example.com"),
        [
            "platform.content_origin: 'myfiles.sea.example.com' is a name the platform serves: "
            "give the content its own host name"
        ],
    ),
    (
        "content-origin-not-a-host-name",
        set_platform("content_origin", "Usercontent.example.com"),
        [
            "platform.content_origin: expected a lower-case host name like "
            "'usercontent.example.org', got 'Usercontent.example.com'"
        ],
    ),
    # the inventory as a whole
    # volume_devices: one device per volume the host's roles keep data on
    (
        "volume-device-missing",
        drop_host_field("nj-mail", "volume_devices"),
        [
            "nj-mail.volume_devices: missing the device of volume 'logs' (journald and "
            "/var/log): name one, or set volumes_encrypted: false where no device can be "
            "encrypted",
            "nj-mail.volume_devices: missing the device of volume 'mail' (Dovecot maildirs and "
            "indexes): name one, or set volumes_encrypted: false where no device can be encrypted",
        ],
    ),
    (
        "volume-device-of-no-role",
        set_host("nj-gw", "volume_devices", {"logs": LOGS_DEVICE, "mail": "/dev/vdb"}),
        ["nj-gw.volume_devices: no role of this host stores volume 'mail'"],
    ),
    (
        "volume-unknown",
        set_host(
            "nj-mail",
            "volume_devices",
            {"logs": LOGS_DEVICE, "mail": "/dev/vdb", "mial": "/dev/vdc"},
        ),
        ["nj-mail.volume_devices: unknown volume 'mial' (did you mean 'mail'?)"],
    ),
    (
        "volume-device-not-a-path",
        set_host("nj-mail", "volume_devices", {"logs": LOGS_DEVICE, "mail": "vdb; rm -rf /"}),
        [
            "nj-mail.volume_devices: volume 'mail': expected a device path like "
            "'/dev/disk/by-id/...', got 'vdb; rm -rf /'"
        ],
    ),
    (
        "volume-device-escapes-dev",
        set_host(
            "nj-web",
            "volume_devices",
            {"logs": LOGS_DEVICE, "dav": "/dev/../etc/passwd", "files": "/dev/vdc"},
        ),
        [
            "nj-web.volume_devices: volume 'dav': expected a device path like "
            "'/dev/disk/by-id/...', got '/dev/../etc/passwd'"
        ],
    ),
    (
        "volume-device-twice",
        set_host(
            "nj-web",
            "volume_devices",
            {"logs": LOGS_DEVICE, "dav": "/dev/vdb", "files": "/dev/vdb"},
        ),
        ["nj-web.volume_devices: /dev/vdb is named for 2 volumes"],
    ),
    (
        "volume-devices-not-a-mapping",
        set_host("nj-mail", "volume_devices", ["/dev/vdb"]),
        ["nj-mail.volume_devices: expected volume: device, got ['/dev/vdb']"],
    ),
    (
        "volumes-encrypted-not-a-bool",
        set_host("nj-mail", "volumes_encrypted", "no"),
        ["nj-mail.volumes_encrypted: expected true or false, got 'no'"],
    ),
    (
        "volumes-unencrypted-but-devices-named",
        set_host("nj-mail", "volumes_encrypted", False),
        [
            "nj-mail.volume_devices: volumes_encrypted is false: no device is encrypted, so "
            "name none"
        ],
    ),
    (
        "empty-inventory",
        lambda inventory: inventory.groups.clear(),
        [
            "platform.domain: missing: set the platform's mail domain, e.g. 'example.com'",
            "platform.hosts: the inventory has no hosts",
        ],
    ),
]


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [pytest.param(mutate, expected, id=case) for case, mutate, expected in BAD_INVENTORIES],
)
def test_bad_inventory_reports_exactly_its_problems(two_site_inventory, mutation, expected):
    mutation(two_site_inventory)
    assert sorted(problems_of(two_site_inventory.write())) == sorted(expected)


def test_there_are_at_least_thirty_distinct_bad_inputs():
    names = [case for case, _, _ in BAD_INVENTORIES]
    assert len(set(names)) == len(names) >= 30
    messages = [tuple(expected) for _, _, expected in BAD_INVENTORIES]
    assert len(set(messages)) == len(messages)


def test_a_host_that_cannot_encrypt_gets_no_volume_and_says_so(two_site_inventory):
    """The container lab's way: `volumes_encrypted: false` and no device anywhere."""
    two_site_inventory.set_platform("volumes_encrypted", False)
    for hosts, _ in two_site_inventory.groups.values():
        for _, data in hosts:
            data.pop("volume_devices", None)
    topology = load_topology(two_site_inventory.write())
    assert all(not host.volumes_encrypted for host in topology.hosts)
    assert all(volumes_for(host) == () for host in topology.hosts)


def test_each_volume_gets_the_device_its_host_names(two_site_inventory):
    topology = load_topology(two_site_inventory.write())
    web = topology.host("nj-web")
    assert volumes_for(web) == ("dav", "files", "logs")
    assert web.volume_device("dav") == "/dev/disk/by-id/virtio-dav"
    backup = topology.host("nj-backup")
    assert backup.volume_devices == (
        ("backups", "/dev/disk/by-id/virtio-backups"),
        ("logs", "/dev/disk/by-id/virtio-logs"),
    )
    assert volumes_for(backup) == ("backups", "logs")


def test_the_untouched_fixture_inventory_is_valid(two_site_inventory):
    topology = load_topology(two_site_inventory.write())
    assert [host.name for host in topology.hosts] == [
        "nj-backup",
        "nj-gw",
        "nj-mail",
        "nj-web",
        "sea-backup",
        "sea-gw",
        "sea-mail",
        "sea-web",
    ]


def test_backup_only_host_needs_no_public_address(two_site_inventory):
    assert "public_address" not in two_site_inventory.host("nj-backup")
    topology = load_topology(two_site_inventory.write())
    assert topology.host("nj-backup").public_address is None
    assert topology.host("nj-backup").roles == ("backup",)


def test_web_roles_may_share_https(two_site_inventory):
    """dav and files share nginx's listener: not a port conflict."""
    topology = load_topology(two_site_inventory.write())
    assert topology.host("nj-web").roles == ("dav", "files")


def test_the_directory_needs_dav_on_its_host(two_site_inventory):
    """slapd serves the CardDAV books of its own host: without dav there, nothing to serve."""
    set_host("nj-web", "roles", ["files", "directory"])(two_site_inventory)
    problems = problems_of(two_site_inventory.write())
    assert (
        "nj-web.roles: role 'directory' needs role 'dav' on the same host: it serves the CardDAV "
        "books that dav keeps there"
    ) in problems


def test_port_conflicts_of_three_roles_are_each_reported(two_site_inventory):
    set_host("nj-mail", "roles", ["mx", "mailstore", "proxy"])(two_site_inventory)
    two_site_inventory.host("nj-mail")["proxy_addresses"] = dict(
        two_site_inventory.host("nj-gw").pop("proxy_addresses")
    )
    two_site_inventory.host("nj-gw")["roles"] = ["gateway"]
    problems = problems_of(two_site_inventory.write())
    assert [problem for problem in problems if problem.startswith("nj-mail.roles:")] == problems
    assert any("mx and proxy" in problem and "tcp 465" in problem for problem in problems)
    assert any("mailstore and proxy" in problem and "tcp 993" in problem for problem in problems)


def test_host_in_a_group_without_site_data(two_site_inventory):
    platform = {key: two_site_inventory.site("nj")[key] for key in ("domain", "accounts")}
    platform["admin_networks"] = two_site_inventory.site("nj")["admin_networks"]
    stray = {
        "roles": ["dav"],
        "lan_address": "10.1.0.99",
        "management_address": "10.101.0.99",
        "public_address": "192.0.2.99",
    }
    two_site_inventory.groups["stray"] = ([("stray", stray)], platform)
    assert problems_of(two_site_inventory.write()) == [
        "stray.site: missing: put the host in a site group with data {'site': 'nj', ...}"
    ]


def test_malformed_site_name_is_reported_for_each_of_its_hosts(two_site_inventory):
    set_site("nj", "site", "New Jersey")(two_site_inventory)
    problems = problems_of(two_site_inventory.write())
    for host in ("nj-backup", "nj-gw", "nj-mail", "nj-web"):
        assert f"{host}.site: 'New Jersey' is not a site" in "\n".join(problems)


# --- bugs found while writing these tests (see the report); each should pass once fixed -------


def test_platform_disagreement_names_the_values(two_site_inventory):
    """Sites disagreeing on a platform field: the message should show the differing values,
    as the site-field message does, not just 'hosts disagree'."""
    set_site("sea", "domain", "example.org")(two_site_inventory)
    problems = problems_of(two_site_inventory.write())
    assert len(problems) == 1
    assert problems[0].startswith("platform.domain: hosts disagree")
    assert "'example.com'" in problems[0]
    assert "'example.org'" in problems[0]


def test_non_string_domain_is_not_called_missing(two_site_inventory):
    set_platform("domain", 42)(two_site_inventory)
    [problem] = problems_of(two_site_inventory.write())
    assert problem.startswith("platform.domain: ")
    assert "42" in problem
    assert "missing" not in problem


@pytest.mark.parametrize(
    "site_lan",
    [
        pytest.param("127.2.0.0/24", id="loopback"),
        pytest.param("169.254.2.0/24", id="link-local"),
        pytest.param("192.0.2.128/25", id="documentation"),
    ],
)
def test_site_lan_outside_rfc1918_is_rejected(two_site_inventory, site_lan):
    """ipaddress's is_private is wider than RFC 1918, which the message promises."""
    renumber("sea", "lan", site_lan)(two_site_inventory)
    assert problems_of(two_site_inventory.write()) == [
        f"site sea.site_lan: {site_lan} is not a private range (RFC 1918)"
    ]


@pytest.mark.parametrize(
    "apt_proxy",
    [
        pytest.param("http://[10.1.0.5:3142", id="unbalanced-bracket"),
        pytest.param('http://10.1.0.5:3142/"; APT::Get::Assume-Yes "true', id="quote"),
        pytest.param('http://10.1.0.5:3142\nAPT::Get::Assume-Yes "true', id="newline"),
    ],
)
def test_apt_proxy_that_would_break_apt_config_is_a_problem(two_site_inventory, apt_proxy):
    """The value lands between double quotes in an apt.conf.d file: no crash, no injection."""
    set_platform("apt_proxy", apt_proxy)(two_site_inventory)
    assert problems_of(two_site_inventory.write()) == [
        f"platform.apt_proxy: expected a URL like 'http://10.1.0.5:3142', got {apt_proxy!r}"
    ]


@pytest.mark.parametrize(
    "apt_proxy",
    [
        "https://cache:s3cr3t-pw@proxy.example.com:3142",
        "http://cache@10.1.0.5:3142",
        "http://:s3cr3t-pw@10.1.0.5:3142",
    ],
)
def test_apt_proxy_credentials_are_refused_and_never_shown(two_site_inventory, apt_proxy):
    set_platform("apt_proxy", apt_proxy)(two_site_inventory)
    with pytest.raises(TopologyError) as caught:
        load_topology(two_site_inventory.write())
    assert "s3cr3t-pw" not in str(caught.value) and "cache" not in str(caught.value)
    assert [str(problem) for problem in caught.value.problems] == [APT_PROXY_CREDENTIALS]


def test_malformed_site_name_says_what_a_site_name_is(two_site_inventory):
    """The host is in a site group already; the message should give the naming rule."""
    set_site("nj", "site", "New Jersey")(two_site_inventory)
    [problem] = [p for p in problems_of(two_site_inventory.write()) if p.startswith("nj-gw.")]
    assert problem.startswith("nj-gw.site: 'New Jersey' ")
    assert "lower-case" in problem


def test_site_that_is_not_a_string_is_a_problem_not_a_crash(two_site_inventory):
    set_site("sea", "site", ["sea"])(two_site_inventory)
    problems = problems_of(two_site_inventory.write())
    assert "sea-gw.site: ['sea'] is not a site" in "\n".join(problems)


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        pytest.param(
            set_host("nj-gw", "lan_address", "10.1.0.x"),
            ["nj-gw.lan_address: '10.1.0.x' is not an IPv4 address"],
            id="gateway-with-bad-address",
        ),
        pytest.param(
            drop_host_field("nj-gw", "public_address"),
            ["nj-gw.public_address: missing: role gateway serves the public"],
            id="gateway-without-public-address",
        ),
        pytest.param(
            set_host("nj-mail", "management_address", "10.101.0"),
            ["nj-mail.management_address: '10.101.0' is not an IPv4 address"],
            id="mailstore-with-bad-address",
        ),
        pytest.param(
            set_site("nj", "site_lan", "10.1.0.0/33"),
            [
                "site nj.site_lan: '10.1.0.0/33' is not an IPv4 network "
                "('33' is not a valid netmask)"
            ],
            id="primary-site-with-bad-range",
        ),
    ],
)
def test_one_mistake_does_not_cascade_into_false_problems(two_site_inventory, mutation, expected):
    """A host with a bad address still has its roles: no 'no gateway' / 'no peer' / 'no primary'
    problem about a host or site that is plainly there."""
    mutation(two_site_inventory)
    assert problems_of(two_site_inventory.write()) == expected


def test_host_in_two_site_groups_is_a_problem(two_site_inventory):
    """pyinfra merges the two groups' data; the later site silently wins."""
    two_site_inventory.add_host("sea", "nj-web", two_site_inventory.host("nj-web"))
    problems = problems_of(two_site_inventory.write())
    site_problems = [problem for problem in problems if problem.startswith("nj-web.site:")]
    assert site_problems, problems
    assert "nj" in site_problems[0].split(":", 1)[1]
    assert "sea" in site_problems[0].split(":", 1)[1]


# --- every problem at once, sorted and deterministic ----------------------------------------


def test_every_problem_is_reported_in_one_error(two_site_inventory):
    MANY_MISTAKES(two_site_inventory)
    path = two_site_inventory.write()
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    error = caught.value
    count = len(MANY_MISTAKES_PROBLEMS)
    assert count == 14
    assert [str(problem) for problem in error.problems] == MANY_MISTAKES_PROBLEMS
    assert str(error) == f"{path}: {count} problems, nothing was run:\n" + "\n".join(
        f"  {problem}" for problem in MANY_MISTAKES_PROBLEMS
    )


def test_problems_are_sorted_and_deterministic(two_site_inventory):
    MANY_MISTAKES(two_site_inventory)
    path = two_site_inventory.write()
    reports = []
    for _ in range(2):
        with pytest.raises(TopologyError) as caught:
            load_topology(path)
        reports.append(caught.value)
    first, second = reports
    assert str(first) == str(second)
    assert first.problems == sorted(first.problems)
    lines = str(first).splitlines()[1:]
    assert lines == [f"  {problem}" for problem in first.problems]


def test_one_problem_is_singular():
    error = TopologyError(
        "inv.py", [Problem("nj-gw", "roles", "x"), Problem("nj-gw", "roles", "x")]
    )
    assert str(error) == "inv.py: 1 problem, nothing was run:\n  nj-gw.roles: x"


def test_a_closed_account_keeps_its_day_and_the_platform_its_retention(two_site_inventory):
    two_site_inventory.set_platform("accounts", [CLOSED_ALICE, BOB])
    two_site_inventory.set_platform("closed_account_retention_days", 37)
    topology = load_topology(two_site_inventory.write())
    assert [a.user for a in topology.closed_accounts] == ["alice"]
    assert [a.user for a in topology.open_accounts] == ["bob"]
    assert str(topology.purge_date(topology.closed_accounts[0])) == "2027-01-06"


def test_the_closure_retention_defaults_inside_the_promise(two_site_inventory):
    topology = load_topology(two_site_inventory.write())
    low, high = CLOSED_ACCOUNT_RETENTION_BOUNDS
    assert (low, high) == (37, 365)
    assert low <= topology.closed_account_retention_days == DEFAULT_RETENTION <= high


def test_an_account_closed_today_is_accepted(two_site_inventory):
    today = datetime.datetime.now(datetime.UTC).date()
    closed = {"user": "alice", "app_passwords": ["laptop"], "closed": today.isoformat()}
    two_site_inventory.set_platform("accounts", [closed, BOB])
    topology = load_topology(two_site_inventory.write())
    assert [account.closed for account in topology.accounts] == [today, None]
