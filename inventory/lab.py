"""The lab: both sites on one Debian machine, as systemd-nspawn containers (`bulwark lab up`).

Per site a gateway (gateway, proxy), a mail host (mx, mailstore) and a web host (dav, files,
directory). The lab never uses 192.0.2.0/24: the controller's own uplink may live there. While
the lab exists, every range below has a blackhole route in the controller's namespace.
"""

import os
from pathlib import Path

from bulwark.inventory import check_before_connecting
from bulwark.lab.lifecycle import require_up

_LAB_STATE = "/var/lib/bulwark-lab"
# The primary site: nj, unless BULWARK_LAB_PRIMARY names the other. tests/integration/test_dav.py
# switches the primary site this way, as an operator does by editing `site_primary`.
_PRIMARY = os.environ.get("BULWARK_LAB_PRIMARY", "nj")
# App passwords revoked, as "user/label,...": tests/integration/test_dav.py revokes one this way,
# as an operator does by removing its label from the account.
_REVOKED = set(filter(None, os.environ.get("BULWARK_LAB_REVOKED", "").split(",")))
# Accounts closed, as "user:YYYY-MM-DD,...": the closure tests close one this way, as an
# operator does by giving the account its `closed` day (bulwark/closure.py).
_CLOSED = dict(
    item.split(":", 1) for item in filter(None, os.environ.get("BULWARK_LAB_CLOSED", "").split(","))
)


def _account(user: str, name: str, labels: list[str], **more) -> dict:
    return {
        "user": user,
        "name": name,
        "app_passwords": [label for label in labels if f"{user}/{label}" not in _REVOKED],
        **({"closed": _CLOSED[user]} if user in _CLOSED else {}),
        **more,
    }


_PLATFORM = {
    "domain": "example.net",
    "admin_networks": [],
    "accounts": [
        # A small quota, which tests/e2e/test_files.py fills; bob has the platform's default.
        _account("alice", "Alice Archer", ["laptop", "phone"], files_quota="64M"),
        _account("bob", "Bob Baker", ["desktop"]),
    ],
    # Every account reads this address book; only its editors change it.
    "shared_addressbook": {"owner": "alice", "editors": ["alice"]},
    # postmaster@, abuse@ and DMARC reports reach alice.
    "postmaster": "alice",
    # The lab's DNS server (knotd in the internet namespace, bulwark.lab.dns) answers the spam
    # filter's SPF, DKIM and DMARC lookups.
    "resolvers": ["198.51.100.200"],
    # GTUBE variants that file into Junk instead of rejecting (tests/e2e/test_mailtrust.py).
    "spam_test_patterns": True,
    # apt-cacher-ng on the controller's end of the management bridge.
    "apt_proxy": "http://10.89.0.1:3142",
    "vault_file": str(Path(__file__).resolve().with_suffix(".vault")),
    # Containers have no device-mapper: their data stays on the root filesystem, and the
    # storage role is proven in qemu guests instead (tests/vm).
    "volumes_encrypted": False,
    # The lab's network plumbing (read by bulwark.lab only).
    "lab_management_bridge": "10.89.0.1/24",
    "lab_wan": "198.51.100.0/24",
    "lab_internet_address": "198.51.100.200",
    # SSH through the lab's config and its pinned host keys.
    "ssh_config_file": f"{_LAB_STATE}/ssh/ssh_config",
    "ssh_known_hosts_file": f"{_LAB_STATE}/ssh/known_hosts",
    "ssh_key": f"{_LAB_STATE}/ssh/id_ed25519",
}


def _host(name: str, roles: list[str], public: str, lan: str, management: str, **more):
    """One lab container; pyinfra reaches it by name through the lab's ssh_config."""
    return (
        name,
        {
            "roles": roles,
            "public_address": public,
            "lan_address": lan,
            "management_address": management,
            **more,
        },
    )


def _proxy_addresses(imaps: str, pops: str, smtps: str) -> dict[str, str]:
    """A gateway's proxy addresses: every TCP port of each (but SSH's) reaches its proxy."""
    return {"imaps-proxy": imaps, "pops-proxy": pops, "smtps-proxy": smtps}


nj = (
    [
        _host(
            "nj-gw",
            ["gateway", "proxy"],
            "198.51.100.10",
            "10.81.1.10",
            "10.89.0.10",
            proxy_addresses=_proxy_addresses("198.51.100.13", "198.51.100.14", "198.51.100.15"),
        ),
        _host("nj-mail", ["mx", "mailstore"], "198.51.100.11", "10.81.1.11", "10.89.0.11"),
        _host(
            "nj-web",
            ["mailconfig", "dav", "files", "directory"],
            "198.51.100.12",
            "10.81.1.12",
            "10.89.0.12",
        ),
        # Its own host: the other site's backups share nothing with the data they protect.
        _host("nj-backup", ["backup"], "198.51.100.16", "10.81.1.13", "10.89.0.13"),
    ],
    {
        **_PLATFORM,
        "site": "nj",
        "site_location": "lab: New Jersey",
        "site_primary": _PRIMARY == "nj",
        "site_lan": "10.81.1.0/24",
        "site_public": "198.51.100.0/26",
        "site_management": "10.89.0.0/26",
    },
)

sea = (
    [
        _host(
            "sea-gw",
            ["gateway", "proxy"],
            "198.51.100.74",
            "10.82.1.10",
            "10.89.0.74",
            proxy_addresses=_proxy_addresses("198.51.100.77", "198.51.100.78", "198.51.100.79"),
        ),
        _host("sea-mail", ["mx", "mailstore"], "198.51.100.75", "10.82.1.11", "10.89.0.75"),
        _host(
            "sea-web",
            ["mailconfig", "dav", "files", "directory"],
            "198.51.100.76",
            "10.82.1.12",
            "10.89.0.76",
        ),
        _host("sea-backup", ["backup"], "198.51.100.80", "10.82.1.13", "10.89.0.77"),
    ],
    {
        **_PLATFORM,
        "site": "sea",
        "site_location": "lab: Seattle",
        "site_primary": _PRIMARY == "sea",
        "site_lan": "10.82.1.0/24",
        "site_public": "198.51.100.64/26",
        "site_management": "10.89.0.64/26",
    },
)

# Hosts are reached by name through the lab's ssh_config: without a running lab, pyinfra would
# look the names up elsewhere. Besides the check every inventory gets (group_data/all.py),
# refuse before connecting unless the lab is whole.
check_before_connecting(require_up)
