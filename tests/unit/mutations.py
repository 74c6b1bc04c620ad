"""Mutations of the two-site test inventory (`InventoryFile` in conftest.py): each returns a
function that breaks one thing. Shared by the validation and inventory tests."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from bulwark import registry

KNOWN_ROLES = ", ".join(registry.INVENTORY_ROLES)

Mutation = Callable[..., None]


def set_host(host: str, field: str, value) -> Mutation:
    return lambda inventory: inventory.host(host).__setitem__(field, value)


def drop_host_field(host: str, field: str) -> Mutation:
    return lambda inventory: inventory.host(host).pop(field)


def set_site(site: str, field: str, value) -> Mutation:
    return lambda inventory: inventory.site(site).__setitem__(field, value)


def set_platform(field: str, value) -> Mutation:
    return lambda inventory: inventory.set_platform(field, value)


def set_accounts(*accounts: dict) -> Mutation:
    return set_platform("accounts", list(accounts))


def renumber(site: str, kind: str, network: str, offset: int = 0) -> Mutation:
    """Give `site` a new site_<kind> range and move its hosts' <kind>_address into it, keeping
    each address's last octet (plus `offset`)."""

    def mutate(inventory) -> None:
        new = ipaddress.IPv4Network(network)
        inventory.site(site)[f"site_{kind}"] = network
        for _, data in inventory.groups[site][0]:
            old = ipaddress.IPv4Address(data[f"{kind}_address"])
            data[f"{kind}_address"] = str(new.network_address + offset + int(old) % 256)

    return mutate


def rename_host(old: str, new: str) -> Mutation:
    def mutate(inventory) -> None:
        for hosts, _ in inventory.groups.values():
            hosts[:] = [(new if name == old else name, data) for name, data in hosts]

    return mutate


def duplicate_host(group: str, host: str) -> Mutation:
    return lambda inventory: inventory.add_host(group, host, dict(inventory.host(host)))


def drop_site(site: str) -> Mutation:
    return lambda inventory: inventory.groups.pop(site)


def drop_platform_field(field: str) -> Mutation:
    def mutate(inventory) -> None:
        for _, data in inventory.groups.values():
            data.pop(field)

    return mutate


def combine(*mutations: Mutation) -> Mutation:
    def mutate(inventory) -> None:
        for mutation in mutations:
            mutation(inventory)

    return mutate


# --- every problem at once, sorted and deterministic ----------------------------------------

MANY_MISTAKES = combine(
    set_host("nj-web", "lan_address", "10.1.0.400"),
    set_host("nj-web", "public_address", "192.0.2.200"),
    set_host("sea-mail", "management_address", "10.102.0.10"),
    set_host("nj-gw", "roles", ["gateway", "proxy", "firewall", "dns"]),
    set_host("sea-mail", "roles", ["mx", "mailstore", "mx"]),
    set_site("sea", "site_primary", True),
    set_site("sea", "site_location", ""),
    set_platform("domain", "Example.com"),
    set_platform("apt_proxy", "ftp://cache"),
    set_platform("admin_networks", ["nope"]),
    set_accounts(
        {"user": "alice", "app_passwords": ["laptop", "laptop"]},
        {"user": "Bob", "app_passwords": ["desktop"], "nmae": "Bob"},
    ),
)
# In report order: sorted by where, field, message.
MANY_MISTAKES_PROBLEMS = [
    "account alice.app_passwords: label 'laptop' is listed 2 times",
    "accounts[1].nmae: unknown field (did you mean 'name'?)",
    "accounts[1].user: 'Bob' is not a lower-case local part like 'alice'",
    "nj-gw.roles: 'firewall' runs on every host: do not list it",
    f"nj-gw.roles: unknown role 'dns'; known roles: {KNOWN_ROLES}",
    "nj-web.lan_address: '10.1.0.400' is not an IPv4 address",
    "nj-web.public_address: 192.0.2.200 is outside site nj's site_public 192.0.2.0/25",
    "platform.admin_networks[0]: 'nope' is not an IPv4 network (Expected 4 octets in 'nope')",
    "platform.apt_proxy: expected a URL like 'http://10.1.0.5:3142', got 'ftp://cache'",
    "platform.domain: 'Example.com' is not a lower-case DNS name like 'example.com'",
    "platform.site_primary: exactly one site must be primary, found 2 (nj, sea)",
    "sea-mail.management_address: 10.102.0.10 is already used by sea-gw.management_address",
    "sea-mail.roles: role 'mx' is listed 2 times",
    "site sea.site_location: missing: name the data center, e.g. 'Seattle, WA'",
]
