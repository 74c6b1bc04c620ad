"""The topology: sites, hosts, roles, addresses, domain and accounts, as one immutable model.

Built and validated by `bulwark.validation` from a pyinfra inventory (`bulwark.inventory`), so a
`Topology` is always sound: every role, address and range in it has been checked as a whole.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from functools import cached_property

from bulwark import catalogue
from bulwark.errors import BulwarkError, did_you_mean

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


@dataclass(frozen=True)
class Site:
    name: str
    location: str
    primary: bool
    lan: IPv4Network
    public: IPv4Network
    management: IPv4Network


@dataclass(frozen=True)
class Host:
    name: str
    site: str
    roles: tuple[str, ...]
    lan_address: IPv4Address
    management_address: IPv4Address
    public_address: IPv4Address | None = None
    # A proxy host's own public addresses, one per proxy name (label, address), sorted by label:
    # every TCP port of each reaches its proxy (bulwark.catalogue.Service.listen).
    proxy_addresses: tuple[tuple[str, IPv4Address], ...] = ()
    # Volume name -> the block device holding it (`volume_devices`), one per volume the host's
    # roles store (bulwark.volumes); sorted by volume.
    volume_devices: tuple[tuple[str, str], ...] = ()
    # False only where no volume can be encrypted (containers: no device-mapper): the host's
    # data stays on its root filesystem and it gets no volume at all.
    volumes_encrypted: bool = True

    def volume_device(self, volume: str) -> str:
        """The device the inventory names for `volume` (validation made sure there is one)."""
        return dict(self.volume_devices)[volume]

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def proxy_address(self, label: str) -> IPv4Address | None:
        """The address of the proxy named `label` on this host, if it has one."""
        return dict(self.proxy_addresses).get(label)

    def own_address(self, service: catalogue.Service) -> IPv4Address | None:
        """Where `service` has an address of its own on this host (a proxy's), else None: it
        is served on the host's addresses."""
        return None if service.listen is None else self.proxy_address(service.names[0])


# Bytes each account may store in its files (WebDAV and FTP together) unless the inventory
# says otherwise: platform field `files_quota`, or the account's own.
DEFAULT_FILES_QUOTA = 10 * 1024**3
# The isolated origin users' files open from in a browser, unless the platform's
# `content_origin` names another (bulwark.catalogue.qualified_name of this label).
CONTENT_ORIGIN_LABEL = "usercontent"


# Days a closed account's data is kept before the purge timer deletes it (bulwark.closure),
# unless the platform's `closed_account_retention_days` says otherwise. The seed's promise is
# "between 37 days and one year after closure" (the bounds validation holds every value to);
# 60 days leaves a user who closed by mistake or missed a payment two months to come back,
# while staying well inside the promise.
DEFAULT_CLOSED_ACCOUNT_RETENTION_DAYS = 60
CLOSED_ACCOUNT_RETENTION_BOUNDS = (37, 365)


# DKIM key algorithm -> its selector, unless the inventory's `dkim_selectors` names others.
DEFAULT_DKIM_SELECTORS: tuple[tuple[str, str], ...] = (("ed25519", "ed1"), ("rsa", "rsa1"))


@dataclass(frozen=True)
class Account:
    user: str
    name: str
    app_passwords: tuple[str, ...]  # labels only; the hashes live in the vault
    files_quota: int | None = None  # bytes; None: the platform's `files_quota`
    # The day the account was closed (`closed`): from the next deploy on it logs in nowhere
    # and receives no mail; its data stays until the purge (Topology.purge_date).
    closed: datetime.date | None = None

    def address(self, domain: str) -> str:
        return f"{self.user}@{domain}"


@dataclass(frozen=True)
class SharedAddressBook:
    """The one address book every account reads (CardDAV and LDAP): `owner` is the account it
    belongs to (never a closed one: validation), `editors` the accounts that may change it
    (both account user names; a closed editor keeps its place but changes nothing)."""

    owner: str
    editors: tuple[str, ...]


@dataclass(frozen=True)
class Topology:
    domain: str
    sites: tuple[Site, ...]
    hosts: tuple[Host, ...]
    accounts: tuple[Account, ...] = ()
    admin_networks: tuple[IPv4Network, ...] = ()
    apt_proxy: str | None = None
    vault_file: str | None = None  # the encrypted vault holding this inventory's secrets
    shared_addressbook: SharedAddressBook | None = None
    files_quota: int = DEFAULT_FILES_QUOTA  # bytes, for accounts that set none
    content_origin_name: str | None = None  # the inventory's `content_origin`, if any
    # The certificate authorities whose domains the CAA records name (`caa_issuers`); none:
    # no public CA may issue for the domain (the platform's own CA signs its certificates).
    caa_issuers: tuple[str, ...] = ()
    # The account receiving postmaster@, abuse@ (RFC 2142) and DMARC reports (`postmaster`).
    postmaster: str | None = None
    # DKIM selector per key algorithm (`dkim_selectors`): a new name is a new key (rotation).
    dkim_selectors: tuple[tuple[str, str], ...] = DEFAULT_DKIM_SELECTORS
    # DNS resolvers the spam filter asks (`resolvers`); none: the host's own resolv.conf.
    resolvers: tuple[IPv4Address, ...] = ()
    # The spam filter's non-reject GTUBE patterns (a lab's tests; never in production).
    spam_test_patterns: bool = False
    # Days between an account's closure and the purge of its data (bulwark.closure).
    closed_account_retention_days: int = DEFAULT_CLOSED_ACCOUNT_RETENTION_DAYS

    @cached_property
    def open_accounts(self) -> tuple[Account, ...]:
        """The accounts that log in and receive mail: every credential list and mailbox is
        built from these, never from `accounts` (which keeps closed ones for their purge and
        their secrets)."""
        return tuple(account for account in self.accounts if account.closed is None)

    @cached_property
    def closed_accounts(self) -> tuple[Account, ...]:
        """The accounts closed in the inventory, whose data waits for its purge date."""
        return tuple(account for account in self.accounts if account.closed is not None)

    def purge_date(self, account: Account) -> datetime.date:
        """The first day a closed `account`'s data is purged: closure plus the retention."""
        if account.closed is None:
            raise BulwarkError(f"account {account.user} is open: it has no purge date")
        return account.closed + datetime.timedelta(days=self.closed_account_retention_days)

    @property
    def content_origin(self) -> str:
        """The host name users' files open from in a browser: never a WebDAV or DAV origin."""
        return self.content_origin_name or catalogue.qualified_name(
            CONTENT_ORIGIN_LABEL, self.domain
        )

    def account_quota(self, account: Account) -> int:
        """The bytes `account` may keep in its files."""
        return self.files_quota if account.files_quota is None else account.files_quota

    def files_root(self, account: Account) -> str:
        """The top of `account`'s files in every path (`/<user>.<domain>/files/`, the seed's)."""
        return f"{account.user}.{self.domain}"

    def site(self, name: str) -> Site:
        """The site called `name`; BulwarkError naming it (and close names) if there is none."""
        for site in self.sites:
            if site.name == name:
                return site
        raise BulwarkError(f"no site {name!r}{did_you_mean(name, [s.name for s in self.sites])}")

    def host(self, name: str) -> Host:
        """The host called `name`; BulwarkError naming it (and close names) if there is none."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise BulwarkError(f"no host {name!r}{did_you_mean(name, [h.name for h in self.hosts])}")

    @property
    def primary_site(self) -> Site:
        return next(site for site in self.sites if site.primary)

    def hosts_with_role(self, role: str, site: str | None = None) -> tuple[Host, ...]:
        return self._hosts_by_role_and_site.get((role, site), ())

    @cached_property
    def _hosts_by_role_and_site(self) -> dict[tuple[str, str | None], tuple[Host, ...]]:
        """(role, site or None for every site) -> its hosts in inventory order: every host's
        template context asks, and a scan of a thousand hosts each time adds up."""
        index: dict[tuple[str, str | None], list[Host]] = {}
        for host in self.hosts:
            for role in dict.fromkeys(host.roles):
                index.setdefault((role, None), []).append(host)
                index.setdefault((role, host.site), []).append(host)
        return {key: tuple(hosts) for key, hosts in index.items()}

    def fqdn(self, host: Host) -> str:
        """The host's own name, the one its certificate carries (bulwark.pki)."""
        return f"{host.name}.{self.domain}"

    def gateway(self, site: str) -> Host:
        return self.hosts_with_role("gateway", site)[0]

    def peer_sites(self, site: str) -> tuple[Site, ...]:
        return tuple(other for other in self.sites if other.name != site)

    def services(self, host: Host) -> tuple[catalogue.Service, ...]:
        return catalogue.services_for_roles(host.roles)
