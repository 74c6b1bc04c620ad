"""Validation: a pyinfra inventory's hosts and data, checked as a whole, become a `Topology`.

`build_topology` reports every problem at once, each naming the inventory entry and field, and
returns nothing unless the whole inventory is sound: no host is touched while anything is wrong.
It reads plain records (`InventoryHost`), so it needs no pyinfra; `bulwark.inventory` turns a
pyinfra inventory into them.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bulwark import catalogue, registry
from bulwark.errors import did_you_mean
from bulwark.topology import (
    CLOSED_ACCOUNT_RETENTION_BOUNDS,
    DEFAULT_CLOSED_ACCOUNT_RETENTION_DAYS,
    DEFAULT_DKIM_SELECTORS,
    DEFAULT_FILES_QUOTA,
    Account,
    Host,
    IPv4Address,
    IPv4Network,
    SharedAddressBook,
    Site,
    Topology,
)
from bulwark.volumes import VOLUMES, volume, volumes_of_roles

# Roles whose services are exposed publicly need a public address.
_PUBLIC_EXPOSURES = {catalogue.Exposure.PUBLIC, catalogue.Exposure.PEER_GATEWAY}
# Roles that must exist in every site: each site's copy is the other's replica or peer.
PEERED_ROLES: tuple[str, ...] = tuple(role.name for role in registry.ROLES if role.peered)
# nginx serves these roles' HTTP(S) virtual hosts on one listener (bulwark.web.WEB_ROLES).
_WEB_ROLES = {"mailconfig", "dav", "files"}

_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SITE_NAME = re.compile(r"^[a-z][a-z0-9]{1,15}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# A mailbox's local part: no leading, trailing or doubled dot (RFC 5322 dot-atom).
_ACCOUNT_USER = re.compile(r"^(?!.*\.\.)[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
_APP_PASSWORD_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_ACCOUNT_KEYS = {"user", "name", "app_passwords", "files_quota", "closed"}
# A quota: bytes, or a number with a binary unit (`500M`, `10G`: powers of 1024).
_SIZE = re.compile(r"^([0-9]{1,15})([KMGT]?)$")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SHARED_BOOK_KEYS = {"owner", "editors"}
_APT_UNSAFE = re.compile(r'[\s"\\;{}]')
_RFC1918 = tuple(
    ipaddress.IPv4Network(block) for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
# A block device: a path under /dev, no spaces or shell characters.
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9._:+@/-]+$")
_SITE_FIELDS = ("site_location", "site_primary", "site_lan", "site_public", "site_management")


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the inventory, located by entry and field."""

    where: str  # a host name, "site nj", "platform" or "account alice"
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}.{self.field}: {self.message}"


class TopologyError(Exception):
    """The inventory is unsound; `problems` lists every reason."""

    def __init__(self, source: str, problems: Iterable[Problem]):
        self.source = source
        self.problems = sorted(set(problems))
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}, nothing was run:\n{lines}")


@dataclass
class InventoryHost:
    """A host as the inventory gives it: its resolved data and the groups it is in."""

    name: str
    data: Mapping[str, Any]
    groups: tuple[str, ...] = ()


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)

    def add(self, where: str, field_name: str, message: str) -> None:
        self.problems.append(Problem(where, field_name, message))


def _network(value: Any, where: str, field_name: str, out: _Collector) -> IPv4Network | None:
    if not isinstance(value, str) or not value:
        out.add(where, field_name, f"expected an IPv4 network like '10.1.0.0/24', got {value!r}")
        return None
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as error:
        out.add(where, field_name, f"{value!r} is not an IPv4 network ({error})")
        return None


def _address(value: Any, where: str, field_name: str, out: _Collector) -> IPv4Address | None:
    if not isinstance(value, str) or not value:
        out.add(where, field_name, f"expected an IPv4 address like '10.1.0.10', got {value!r}")
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        out.add(where, field_name, f"{value!r} is not an IPv4 address")
        return None


def _check_domain(domain: Any, out: _Collector) -> str:
    if domain is None or domain == "":
        out.add("platform", "domain", "missing: set the platform's mail domain, e.g. 'example.com'")
        return "invalid.invalid"
    if not isinstance(domain, str):
        out.add("platform", "domain", f"expected a DNS name like 'example.com', got {domain!r}")
        return "invalid.invalid"
    labels = domain.split(".")
    if (
        len(domain) > 253
        or len(labels) < 2
        or not all(_DNS_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        out.add("platform", "domain", f"{domain!r} is not a lower-case DNS name like 'example.com'")
    return domain


def _check_admin_networks(
    value: Any, sites: Mapping[str, Site], out: _Collector
) -> tuple[IPv4Network, ...]:
    """Operators' networks allowed to SSH in besides each site's management range.

    They join the management ranges in one nftables interval set, which refuses overlapping
    elements: an overlap would pass here and fail `nft -c` in the middle of a deploy.
    """
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        out.add("platform", "admin_networks", f"expected a list of networks, got {value!r}")
        return ()
    taken = [
        (f"site {site.name}'s site_management", site.management)
        for _, site in sorted(sites.items())
    ]
    networks = []
    for index, item in enumerate(value):
        field_name = f"admin_networks[{index}]"
        network = _network(item, "platform", field_name, out)
        if network is None:
            continue
        if network.prefixlen == 0:
            out.add(
                "platform",
                field_name,
                f"{network} would let every address try SSH: list the operators' own networks",
            )
            continue
        clashes = [f"{name} {other}" for name, other in taken if network.overlaps(other)]
        if clashes:
            out.add("platform", field_name, f"{network} overlaps {', '.join(clashes)}")
            continue
        taken.append((f"admin_networks[{index}]", network))
        networks.append(network)
    return tuple(networks)


def _check_apt_proxy(value: Any, out: _Collector) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        has_credentials = parts is not None and (parts.username or parts.password) is not None
    except ValueError:
        parts, has_credentials = None, False
    # apt's configuration is world-readable: a password in the URL would be too. Never echo it.
    if has_credentials:
        out.add(
            "platform",
            "apt_proxy",
            "holds a user name or password: apt's configuration is readable by every local "
            "user; use a proxy that admits the hosts by address",
        )
        return None
    # The URL is written inside quotes of an apt configuration file: no quoting tricks.
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or _APT_UNSAFE.search(value)
    ):
        out.add(
            "platform", "apt_proxy", f"expected a URL like 'http://10.1.0.5:3142', got {value!r}"
        )
        return None
    return value


def _check_accounts(value: Any, out: _Collector) -> tuple[Account, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        out.add("platform", "accounts", f"expected a list of accounts, got {value!r}")
        return ()
    accounts = []
    users = Counter()
    for index, entry in enumerate(value):
        where = f"accounts[{index}]"
        if not isinstance(entry, Mapping):
            out.add(
                "platform",
                where,
                f"expected a mapping with 'user' and 'app_passwords', got {entry!r}",
            )
            continue
        user = entry.get("user")
        if isinstance(user, str) and _ACCOUNT_USER.match(user):
            where = f"account {user}"
            users[user] += 1
        else:
            out.add(where, "user", f"{user!r} is not a lower-case local part like 'alice'")
            user = None
        for unknown in sorted(set(entry) - _ACCOUNT_KEYS):
            hint = did_you_mean(unknown, _ACCOUNT_KEYS)
            out.add(where, unknown, f"unknown field{hint}")
        labels = entry.get("app_passwords")
        if not labels:
            out.add(
                where,
                "app_passwords",
                "no app password: accounts log in with app passwords only, list at least one label",
            )
            labels = []
        elif not isinstance(labels, list | tuple):
            out.add(where, "app_passwords", f"expected a list of labels, got {labels!r}")
            labels = []
        for label in labels:
            if not isinstance(label, str) or not _APP_PASSWORD_LABEL.match(label):
                out.add(where, "app_passwords", f"{label!r} is not a label like 'laptop'")
        for label, count in Counter(str(label) for label in labels).items():
            if count > 1:
                out.add(where, "app_passwords", f"label {label!r} is listed {count} times")
        name = entry.get("name", user or "")
        if not isinstance(name, str):
            out.add(where, "name", f"expected a display name, got {name!r}")
            name = str(name)
        quota = _check_size(entry.get("files_quota"), where, "files_quota", out)
        closed = _check_closed(entry.get("closed"), where, out)
        if user:
            labels = tuple(str(label) for label in labels)
            accounts.append(Account(user, name, labels, quota, closed))
    for user, count in sorted(users.items()):
        if count > 1:
            out.add(f"account {user}", "user", f"defined {count} times")
    return tuple(sorted(accounts, key=lambda account: account.user))


def _check_closed(value: Any, where: str, out: _Collector) -> datetime.date | None:
    """An account's closure day: an ISO date ('2026-11-30', or a date); None when open.

    Never a day to come: the account is refused from the deploy on, whatever the day says, and
    the purge counts from the day, so a later one would keep the data past the promised year.
    A day of slack covers an operator whose own date is ahead of UTC's."""
    if value is None:
        return None
    day = None
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        day = value
    elif isinstance(value, str) and len(value) == 10:
        with contextlib.suppress(ValueError):
            day = datetime.date.fromisoformat(value)
    if day is None:
        out.add(
            where,
            "closed",
            f"expected the day the account closed, like '2026-11-30', got {value!r}",
        )
        return None
    if day > datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1):
        out.add(
            where,
            "closed",
            f"{day} is a day to come: closing takes effect at the next deploy, so give the day "
            "it closes (today), not a day to schedule it for",
        )
        return None
    return day


def _check_retention_days(value: Any, out: _Collector) -> int:
    """`closed_account_retention_days`: whole days inside the promise (37 days to a year)."""
    if value is None:
        return DEFAULT_CLOSED_ACCOUNT_RETENTION_DAYS
    low, high = CLOSED_ACCOUNT_RETENTION_BOUNDS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        out.add(
            "platform",
            "closed_account_retention_days",
            f"expected whole days from {low} to {high} (the data of a closed account is purged "
            f"between 37 days and one year after closure), got {value!r}",
        )
        return DEFAULT_CLOSED_ACCOUNT_RETENTION_DAYS
    return value


def _check_size(value: Any, where: str, field_name: str, out: _Collector) -> int | None:
    """A quota in bytes from an int or a string like '500M' or '10G'; None when absent."""
    if value is None:
        return None
    text = str(value).strip().upper() if isinstance(value, int | str) else ""
    match = _SIZE.match(text) if not isinstance(value, bool) else None
    if match is None:
        out.add(where, field_name, f"expected bytes or a size like '500M' or '10G', got {value!r}")
        return None
    return int(match[1]) * _SIZE_UNITS[match[2]]


def _check_content_origin(value: Any, domain: str, out: _Collector) -> str | None:
    """The host name users' files open from in a browser: any DNS name but the platform's
    domain and its services' names, generic or of a site (those origins hold the DAV and
    WebDAV sessions the content must be isolated from)."""
    if value is None:
        return None
    labels = value.split(".") if isinstance(value, str) else []
    if len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
        out.add(
            "platform",
            "content_origin",
            f"expected a lower-case host name like 'usercontent.example.org', got {value!r}",
        )
        return None
    served = {label for service in catalogue.SERVICES for label in service.names}
    inside = value.removesuffix(f".{domain}").split(".") if value.endswith(f".{domain}") else []
    if value == domain or (inside and inside[0] in served and len(inside) <= 2):
        out.add(
            "platform",
            "content_origin",
            f"{value!r} is a name the platform serves: give the content its own host name",
        )
        return None
    return value


def _check_caa_issuers(value: Any, out: _Collector) -> tuple[str, ...]:
    """The CAs allowed to issue for the domain (CAA `issue`): lower-case DNS names, e.g.
    'letsencrypt.org'."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        out.add("platform", "caa_issuers", f"expected a list of CA domains, got {value!r}")
        return ()
    issuers = []
    for issuer in value:
        labels = issuer.split(".") if isinstance(issuer, str) else []
        if len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
            out.add(
                "platform",
                "caa_issuers",
                f"expected a CA's domain like 'letsencrypt.org', got {issuer!r}",
            )
        else:
            issuers.append(issuer)
    return tuple(sorted(set(issuers)))


def _check_postmaster(value: Any, accounts: tuple[Account, ...], out: _Collector) -> str | None:
    """The account receiving postmaster@, abuse@ and DMARC reports: one of `accounts`."""
    if value is None:
        return None
    users = [account.user for account in accounts]
    if value not in users:
        out.add(
            "platform",
            "postmaster",
            f"expected an account's user name, got {value!r}"
            f"{did_you_mean(str(value), users)}; accounts are {', '.join(users) or '(none)'}",
        )
        return None
    if any(account.user == value and account.closed for account in accounts):
        out.add(
            "platform",
            "postmaster",
            f"{value!r} is closed: postmaster@, abuse@ and DMARC reports would bounce; name an "
            "open account",
        )
        return None
    return value


def _check_dkim_selectors(value: Any, out: _Collector) -> tuple[tuple[str, str], ...]:
    """Algorithm -> selector, for each of DEFAULT_DKIM_SELECTORS' algorithms: distinct DNS
    labels."""
    if value is None:
        return DEFAULT_DKIM_SELECTORS
    algorithms = [algorithm for algorithm, _ in DEFAULT_DKIM_SELECTORS]
    example = dict(DEFAULT_DKIM_SELECTORS)
    if not isinstance(value, dict) or sorted(value) != sorted(algorithms):
        out.add(
            "platform",
            "dkim_selectors",
            f"expected a selector for each of {', '.join(algorithms)}, like {example!r}; "
            f"got {value!r}",
        )
        return DEFAULT_DKIM_SELECTORS
    bad = [s for s in value.values() if not isinstance(s, str) or not _DNS_LABEL.match(s)]
    if bad or len(set(value.values())) != len(value):
        out.add(
            "platform",
            "dkim_selectors",
            f"selectors are distinct lower-case DNS labels like {example!r}; got {value!r}",
        )
        return DEFAULT_DKIM_SELECTORS
    return tuple((algorithm, value[algorithm]) for algorithm in algorithms)


def _check_resolvers(value: Any, out: _Collector) -> tuple[IPv4Address, ...]:
    """The DNS resolvers the spam filter asks: IPv4 addresses."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not value:
        out.add("platform", "resolvers", f"expected a list of IPv4 addresses, got {value!r}")
        return ()
    resolvers = []
    for item in value:
        try:
            resolvers.append(ipaddress.IPv4Address(item))
        except ValueError:
            out.add("platform", "resolvers", f"expected an IPv4 address, got {item!r}")
    return tuple(resolvers)


def _check_shared_addressbook(
    value: Any, accounts: tuple[Account, ...], out: _Collector
) -> SharedAddressBook | None:
    """`shared_addressbook: {owner: USER, editors: [USER, ...]}`, every name an account."""
    if value is None:
        return None
    where, field_name = "platform", "shared_addressbook"
    if not isinstance(value, Mapping):
        out.add(where, field_name, f"expected a mapping with 'owner' and 'editors', got {value!r}")
        return None
    for unknown in sorted(set(value) - _SHARED_BOOK_KEYS):
        out.add(
            where,
            f"{field_name}.{unknown}",
            f"unknown field{did_you_mean(unknown, _SHARED_BOOK_KEYS)}",
        )
    users = {account.user for account in accounts}
    owner = value.get("owner")
    owner = owner if isinstance(owner, str) else repr(owner)
    if owner not in users:
        known = ", ".join(sorted(users)) or "none"
        out.add(where, f"{field_name}.owner", f"{owner!r} is not an account (accounts: {known})")
    elif any(account.user == owner and account.closed for account in accounts):
        # The book is kept beside its owner's collections and purged with them.
        out.add(
            where,
            f"{field_name}.owner",
            f"{owner!r} is closed: every account reads this book and it would be purged with "
            "its owner's data; give it an open owner",
        )
    editors = value.get("editors", [])
    if not isinstance(editors, list | tuple):
        out.add(where, f"{field_name}.editors", f"expected a list of accounts, got {editors!r}")
        editors = []
    editors = [editor if isinstance(editor, str) else repr(editor) for editor in editors]
    for editor in editors:
        if editor not in users:
            out.add(where, f"{field_name}.editors", f"{editor!r} is not an account")
    if len(set(map(str, editors))) != len(editors):
        out.add(where, f"{field_name}.editors", "an account is listed more than once")
    if owner not in users or any(editor not in users for editor in editors):
        return None
    return SharedAddressBook(owner, tuple(sorted(editors)))


def _check_sites(records: list[InventoryHost], out: _Collector) -> dict[str, Site]:
    """Sites come from each host's site group data; every host of a site must agree."""
    by_site: dict[str, list[InventoryHost]] = defaultdict(list)
    for record in records:
        name = record.data.get("site")
        if name is None:
            out.add(
                record.name,
                "site",
                "missing: put the host in a site group with data {'site': 'nj', ...}",
            )
            continue
        if not isinstance(name, str) or not _SITE_NAME.match(name):
            out.add(
                record.name,
                "site",
                f"{name!r} is not a site name: a lower-case letter, then 1-15 lower-case "
                "letters or digits, like 'nj'",
            )
            continue
        by_site[name].append(record)

    sites: dict[str, Site] = {}
    primary_flags: dict[str, bool] = {}
    for name, members in sorted(by_site.items()):
        where = f"site {name}"
        values = {}
        for field_name in _SITE_FIELDS:
            seen = {repr(member.data.get(field_name)) for member in members}
            if len(seen) > 1:
                out.add(
                    where,
                    field_name,
                    f"hosts of the site disagree: {', '.join(sorted(seen))}; "
                    "set it once in the site group",
                )
            values[field_name] = members[0].data.get(field_name)
        lan = _network(values["site_lan"], where, "site_lan", out)
        public = _network(values["site_public"], where, "site_public", out)
        management = _network(values["site_management"], where, "site_management", out)
        location = values["site_location"]
        if not isinstance(location, str) or not location:
            out.add(where, "site_location", "missing: name the data center, e.g. 'Seattle, WA'")
            location = ""
        primary = values["site_primary"]
        if not isinstance(primary, bool):
            out.add(where, "site_primary", f"expected True or False, got {primary!r}")
            primary = False
        primary_flags[name] = primary
        if lan is not None and not any(lan.subnet_of(block) for block in _RFC1918):
            out.add(where, "site_lan", f"{lan} is not a private range (RFC 1918)")
        if lan is not None and public is not None and management is not None:
            for (name_a, net_a), (name_b, net_b) in _pairs(
                [("site_lan", lan), ("site_public", public), ("site_management", management)]
            ):
                if net_a.overlaps(net_b):
                    out.add(where, name_b, f"{net_b} overlaps the site's {name_a} {net_a}")
            sites[name] = Site(name, location, primary, lan, public, management)

    for site_a, site_b in _pairs(sorted(sites.values(), key=lambda site: site.name)):
        for field_a in ("lan", "public", "management"):
            for field_b in ("lan", "public", "management"):
                net_a, net_b = getattr(site_a, field_a), getattr(site_b, field_b)
                if net_a.overlaps(net_b):
                    out.add(
                        f"site {site_b.name}",
                        f"site_{field_b}",
                        f"{net_b} overlaps site {site_a.name}'s site_{field_a} {net_a}",
                    )

    primaries = [name for name, primary in primary_flags.items() if primary]
    if primary_flags and len(primaries) != 1:
        out.add(
            "platform",
            "site_primary",
            f"exactly one site must be primary, found {len(primaries)}"
            + (f" ({', '.join(primaries)})" if primaries else ""),
        )
    if len(by_site) == 1:
        out.add("platform", "sites", "only one site: the platform needs a primary and a secondary")
    return sites


def _pairs(items: list) -> Iterable[tuple]:
    for index, first in enumerate(items):
        for second in items[index + 1 :]:
            yield first, second


def _check_roles(record: InventoryHost, out: _Collector) -> tuple[str, ...]:
    roles = record.data.get("roles")
    if not isinstance(roles, list | tuple):
        out.add(record.name, "roles", f"expected a list of roles, got {roles!r}")
        return ()
    valid = []
    for role in roles:
        if role in registry.EVERY_HOST_ROLES:
            out.add(record.name, "roles", f"{role!r} runs on every host: do not list it")
        elif role not in registry.INVENTORY_ROLES:
            hint = did_you_mean(str(role), registry.INVENTORY_ROLES)
            known = ", ".join(registry.INVENTORY_ROLES)
            out.add(record.name, "roles", f"unknown role {role!r}{hint}; known roles: {known}")
        else:
            valid.append(role)
    for role, count in Counter(valid).items():
        if count > 1:
            out.add(record.name, "roles", f"role {role!r} is listed {count} times")
    for role in valid:
        for needed, why in registry.role(role).beside:
            if needed not in valid:
                out.add(
                    record.name,
                    "roles",
                    f"role {role!r} needs role {needed!r} on the same host: {why}",
                )
    for role in valid:
        for other, why in registry.role(role).apart:
            if other in valid:
                out.add(
                    record.name,
                    "roles",
                    f"roles {role} and {other} cannot share a host ({why}): "
                    "put them on different hosts",
                )
    _check_port_conflicts(record.name, valid, out)
    return tuple(sorted(set(valid), key=registry.INVENTORY_ROLES.index))


def _check_port_conflicts(host: str, roles: list[str], out: _Collector) -> None:
    owners: dict[tuple[int, str], set[str]] = defaultdict(set)
    for service in catalogue.services_for_roles(roles):
        for port in service.bound_ports:  # a proxy's: one socket, on its own address
            owners[(port, service.transport)].add(service.role)
    reported = set()
    for (port, transport), claimants in sorted(owners.items()):
        for pair in _pairs(sorted(claimants)):
            if set(pair) <= _WEB_ROLES or pair in reported:
                continue
            reported.add(pair)
            out.add(
                host,
                "roles",
                f"roles {pair[0]} and {pair[1]} both listen on {transport} {port}: "
                "put them on different hosts",
            )


def _check_host(record: InventoryHost, sites: Mapping[str, Site], out: _Collector) -> Host | None:
    if not _HOST_NAME.match(record.name):
        out.add(record.name, "name", "host names are lower-case DNS labels like 'nj-mail'")
    roles = _check_roles(record, out)
    site_name = record.data.get("site")
    site = sites.get(site_name) if isinstance(site_name, str) else None
    addresses: dict[str, IPv4Address | None] = {}
    for field_name, range_name in (
        ("lan_address", "lan"),
        ("management_address", "management"),
        ("public_address", "public"),
    ):
        value = record.data.get(field_name)
        if value is None:
            if field_name == "public_address" and not _needs_public(roles):
                addresses[field_name] = None
                continue
            why = (
                f"role {_needs_public(roles)} serves the public"
                if field_name == "public_address"
                else "every host needs one"
            )
            out.add(record.name, field_name, f"missing: {why}")
            addresses[field_name] = None
            continue
        address = _address(value, record.name, field_name, out)
        addresses[field_name] = address
        if address is None or site is None:
            continue
        network = getattr(site, range_name)
        if address not in network:
            out.add(
                record.name,
                field_name,
                f"{address} is outside site {site.name}'s site_{range_name} {network}",
            )
        elif network.prefixlen < 31 and address in (
            network.network_address,
            network.broadcast_address,
        ):
            out.add(
                record.name,
                field_name,
                f"{address} is the network or broadcast address of {network}",
            )
    proxy_addresses = _check_proxy_addresses(record, roles, site, out)
    if site is None or addresses["lan_address"] is None or addresses["management_address"] is None:
        return None
    if _needs_public(roles) and addresses["public_address"] is None:
        return None
    encrypted, devices = _check_volumes(record, roles, out)
    return Host(
        name=record.name,
        site=site.name,
        roles=roles,
        lan_address=addresses["lan_address"],
        management_address=addresses["management_address"],
        public_address=addresses["public_address"],
        proxy_addresses=proxy_addresses,
        volume_devices=devices,
        volumes_encrypted=encrypted,
    )


def _check_proxy_addresses(
    record: InventoryHost, roles: Iterable[str], site: Site | None, out: _Collector
) -> tuple[tuple[str, IPv4Address], ...]:
    """`proxy_addresses`: on a proxy host, one public address per proxy name (every port of it
    reaches that proxy, so it can be no other service's), inside the site's public range."""
    value = record.data.get("proxy_addresses")
    labels = [name for proxy in catalogue.proxies() for name in proxy.names]
    if "proxy" not in roles:
        if value is not None:
            out.add(record.name, "proxy_addresses", "only a host with role 'proxy' has them")
        return ()
    example = ", ".join(f"'{label}': '203.0.113.{n}'" for n, label in enumerate(labels, 11))
    if not isinstance(value, Mapping) or not value:
        out.add(
            record.name,
            "proxy_addresses",
            f"missing: role proxy needs an address of its own per proxy name, e.g. {{{example}}}",
        )
        return ()
    found = []
    for label in sorted(set(value) - set(labels), key=str):
        hint = did_you_mean(str(label), labels)
        out.add(record.name, f"proxy_addresses.{label}", f"not a proxy name{hint}")
    for label in labels:
        where = f"proxy_addresses.{label}"
        if label not in value:
            out.add(record.name, where, "missing: every proxy name needs its own address")
            continue
        address = _address(value[label], record.name, where, out)
        if address is None or site is None:
            continue
        if address not in site.public or address in (
            site.public.network_address,
            site.public.broadcast_address,
        ):
            out.add(
                record.name,
                where,
                f"{address} is not a host address of site {site.name}'s site_public {site.public}",
            )
            continue
        found.append((label, address))
    return tuple(sorted(found))


def _check_volumes(
    record: InventoryHost, roles: tuple[str, ...], out: _Collector
) -> tuple[bool, tuple[tuple[str, str], ...]]:
    """`volumes_encrypted` and `volume_devices`: a device for every volume the host's deployed
    roles store, none for a volume no role of the host stores, each a distinct path under /dev."""
    encrypted = record.data.get("volumes_encrypted", True)
    if not isinstance(encrypted, bool):
        out.add(record.name, "volumes_encrypted", f"expected true or false, got {encrypted!r}")
        return True, ()
    devices = record.data.get("volume_devices", {})
    if not isinstance(devices, Mapping):
        out.add(record.name, "volume_devices", f"expected volume: device, got {devices!r}")
        return encrypted, ()
    if not encrypted:
        if devices:
            out.add(
                record.name,
                "volume_devices",
                "volumes_encrypted is false: no device is encrypted, so name none",
            )
        return encrypted, ()
    host_roles = [registry.role(name) for name in registry.EVERY_HOST_ROLES + roles]
    needed = volumes_of_roles(host_roles)
    # A role not deployed yet may have its device named already, ready for when it is.
    allowed = {name for role in host_roles for name in role.volumes}
    for name in sorted(set(needed) - set(devices)):
        out.add(
            record.name,
            "volume_devices",
            f"missing the device of volume {name!r} ({volume(name).description}): name one, "
            "or set volumes_encrypted: false where no device can be encrypted",
        )
    valid = []
    for name, device in sorted(devices.items(), key=lambda item: str(item[0])):
        if name not in allowed and isinstance(record.data.get("roles"), list | tuple):
            known = [candidate.name for candidate in VOLUMES]
            why = (
                f"no role of this host stores volume {name!r}"
                if name in known
                else f"unknown volume {name!r}{did_you_mean(str(name), known)}"
            )
            out.add(record.name, "volume_devices", why)
        elif not isinstance(device, str) or not _DEVICE.match(device) or "/../" in device:
            out.add(
                record.name,
                "volume_devices",
                f"volume {name!r}: expected a device path like '/dev/disk/by-id/...', "
                f"got {device!r}",
            )
        else:
            valid.append((name, device))
    for device, count in Counter(device for _, device in valid).items():
        if count > 1:
            out.add(record.name, "volume_devices", f"{device} is named for {count} volumes")
    return encrypted, tuple(valid)


def _needs_public(roles: Iterable[str]) -> str | None:
    for service in catalogue.services_for_roles(roles):
        if service.exposure in _PUBLIC_EXPOSURES:
            return service.role
    return None


def _check_unique_addresses(hosts: list[Host], out: _Collector) -> None:
    owners: dict[IPv4Address, list[tuple[str, str]]] = defaultdict(list)
    for host in hosts:
        for field_name in ("lan_address", "management_address", "public_address"):
            address = getattr(host, field_name)
            if address is not None:
                owners[address].append((host.name, field_name))
    for host in hosts:  # after every host's own: a proxy address is the one to move
        for label, address in host.proxy_addresses:
            owners[address].append((host.name, f"proxy_addresses.{label}"))
    for address, users in sorted(owners.items()):
        if len(users) > 1:
            first = f"{users[0][0]}.{users[0][1]}"
            for name, field_name in users[1:]:
                out.add(name, field_name, f"{address} is already used by {first}")


@dataclass(frozen=True)
class _Placement:
    """Where a host's roles run, known even when its addresses are wrong."""

    name: str
    site: str
    roles: tuple[str, ...]

    def has_role(self, role: str) -> bool:
        return role in self.roles


def _placements(records: list[InventoryHost], site_names: Iterable[str]) -> list[_Placement]:
    known = set(site_names)
    placements = []
    for record in records:
        site, roles = record.data.get("site"), record.data.get("roles")
        if isinstance(site, str) and site in known and isinstance(roles, list | tuple):
            valid = tuple(role for role in roles if role in registry.INVENTORY_ROLES)
            placements.append(_Placement(record.name, site, valid))
    return placements


def _check_role_placement(hosts: list[_Placement], sites: Iterable[str], out: _Collector) -> None:
    sites = sorted(sites)
    for site in sites:
        gateways = [host.name for host in hosts if host.site == site and host.has_role("gateway")]
        if not gateways:
            out.add(
                f"site {site}", "roles", "no gateway: give one host of the site the 'gateway' role"
            )
        elif len(gateways) > 1:
            out.add(
                f"site {site}",
                "roles",
                f"{len(gateways)} gateways ({', '.join(gateways)}): "
                "a site has exactly one 'gateway' host",
            )
    for site in sites:  # a proxy passes connections to its own site's mail hosts only
        if not any(host.site == site and host.has_role("proxy") for host in hosts):
            continue
        for backend in sorted({catalogue.service(p.forwards_to).role for p in catalogue.proxies()}):
            if not any(host.site == site and host.has_role(backend) for host in hosts):
                out.add(
                    f"site {site}",
                    "roles",
                    f"a 'proxy' host but no '{backend}' host: the proxies pass connections to "
                    "their own site's mail hosts",
                )
    if len(sites) < 2:
        return
    for role in PEERED_ROLES:
        present = {host.site for host in hosts if host.has_role(role)}
        if not present or role == "gateway":
            continue
        for site in sorted(set(sites) - present):
            holders = ", ".join(sorted(present))
            out.add(
                f"site {site}",
                "roles",
                f"no '{role}' host, but site {holders} has one: '{role}' needs its peer in "
                "every site",
            )


def build_topology(
    records: list[InventoryHost],
    platform: Mapping[str, Any],
    source: str = "inventory",
    duplicate_hosts: Iterable[str] = (),
) -> Topology:
    """Validate the whole inventory and build the topology, or raise `TopologyError`.

    `platform` holds the data shared by every host (domain, accounts, admin networks, apt
    proxy); `duplicate_hosts` are names the inventory file lists more than once.
    """
    out = _Collector()
    for name in sorted(set(duplicate_hosts)):
        out.add(name, "name", "listed more than once in the inventory")
    if not records:
        out.add("platform", "hosts", "the inventory has no hosts")
    domain = _check_domain(platform.get("domain"), out)
    apt_proxy = _check_apt_proxy(platform.get("apt_proxy"), out)
    accounts = _check_accounts(platform.get("accounts"), out)
    shared_addressbook = _check_shared_addressbook(
        platform.get("shared_addressbook"), accounts, out
    )
    files_quota = _check_size(platform.get("files_quota"), "platform", "files_quota", out)
    content_origin = _check_content_origin(platform.get("content_origin"), domain, out)
    caa_issuers = _check_caa_issuers(platform.get("caa_issuers"), out)
    postmaster = _check_postmaster(platform.get("postmaster"), accounts, out)
    retention_days = _check_retention_days(platform.get("closed_account_retention_days"), out)
    dkim_selectors = _check_dkim_selectors(platform.get("dkim_selectors"), out)
    resolvers = _check_resolvers(platform.get("resolvers"), out)
    spam_test_patterns = platform.get("spam_test_patterns") or False
    if not isinstance(spam_test_patterns, bool):
        out.add(
            "platform", "spam_test_patterns", f"expected True or False, got {spam_test_patterns!r}"
        )
    vault_file = platform.get("vault_file")
    if vault_file is not None and not isinstance(vault_file, str):
        out.add("platform", "vault_file", f"expected a path, got {vault_file!r}")
    sites = _check_sites(records, out)
    admin_networks = _check_admin_networks(platform.get("admin_networks"), sites, out)
    hosts = [
        host
        for record in sorted(records, key=lambda record: record.name)
        if (host := _check_host(record, sites, out)) is not None
    ]
    _check_unique_addresses(hosts, out)
    site_names = {
        name
        for record in records
        if isinstance(name := record.data.get("site"), str) and _SITE_NAME.match(name)
    }
    _check_role_placement(_placements(records, site_names), site_names, out)
    if out.problems:
        raise TopologyError(source, out.problems)
    return Topology(
        domain=domain,
        sites=tuple(sorted(sites.values(), key=lambda site: (not site.primary, site.name))),
        hosts=tuple(hosts),
        accounts=accounts,
        admin_networks=admin_networks,
        apt_proxy=apt_proxy,
        vault_file=vault_file,
        shared_addressbook=shared_addressbook,
        files_quota=DEFAULT_FILES_QUOTA if files_quota is None else files_quota,
        content_origin_name=content_origin,
        caa_issuers=caa_issuers,
        postmaster=postmaster,
        dkim_selectors=dkim_selectors,
        resolvers=resolvers,
        spam_test_patterns=spam_test_patterns,
        closed_account_retention_days=retention_days,
    )
