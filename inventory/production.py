"""Production: New Jersey (Bridgewater, primary) and Seattle (secondary).

Every address of the platform is here and nowhere else. Addresses are from the documentation
ranges (RFC 5737) and RFC 1918; replace them with the real ones. Each site group carries the
site's networks; `_PLATFORM` carries what all sites share. Run `bulwark render` after editing.
bulwark checks the whole inventory before pyinfra connects (group_data/all.py).
"""

from pathlib import Path

_PLATFORM = {
    "domain": "example.com",
    # Operators' networks allowed to SSH in, besides each site's management network.
    "admin_networks": ["203.0.113.0/28"],
    # Accounts; each app-password label gets its own Argon2id hash in the vault. A closed one
    # carries the day it closed (`"closed": "2026-11-30"`): refused everywhere from the next
    # deploy, its data purged once `closed_account_retention_days` have passed.
    "accounts": [
        {"user": "alice", "name": "Alice Archer", "app_passwords": ["laptop", "phone"]},
        {"user": "bob", "name": "Bob Baker", "app_passwords": ["desktop"]},
    ],
    # Days a closed account's data is kept before the purge: 37 to 365 (bulwark.topology).
    "closed_account_retention_days": 60,
    # The account postmaster@, abuse@ and DMARC reports reach.
    "postmaster": "alice",
    # Each data center's resolvers, for the spam filter's SPF, DKIM and DMARC lookups.
    "resolvers": ["192.0.2.53", "198.51.100.53"],
    "vault_file": str(Path(__file__).resolve().with_suffix(".vault")),
}


def _host(
    name: str,
    roles: list[str],
    public: str | None,
    lan: str,
    management: str,
    volumes: tuple[str, ...] = (),
    **more,
):
    """One host entry; pyinfra connects over the management address. `volumes`: those its
    roles keep data on (bulwark/volumes.py) besides every host's logs, each on the GPT partition
    labelled `bulwark-<volume>`; `more`: other fields (a proxy host's `proxy_addresses`)."""
    data = {
        "roles": roles,
        "lan_address": lan,
        "management_address": management,
        "volume_devices": {
            name: f"/dev/disk/by-partlabel/bulwark-{name}" for name in ("logs", *volumes)
        },
        **more,
    }
    if public is not None:
        data["public_address"] = public
    return (name, {**data, "ssh_hostname": management})


nj = (
    [
        # The proxies' own addresses: IMAP, POP and SMTP over TLS on every TCP port but SSH's.
        _host(
            "nj-gw",
            ["gateway", "proxy"],
            "192.0.2.10",
            "10.1.0.1",
            "10.101.0.1",
            proxy_addresses={
                "imaps-proxy": "192.0.2.13",
                "pops-proxy": "192.0.2.14",
                "smtps-proxy": "192.0.2.15",
            },
        ),
        _host("nj-mx", ["mx"], "192.0.2.25", "10.1.0.25", "10.101.0.25"),
        _host("nj-store", ["mailstore"], "192.0.2.30", "10.1.0.30", "10.101.0.30", ("mail",)),
        _host(
            "nj-web",
            ["mailconfig", "dav", "files", "directory"],
            "192.0.2.40",
            "10.1.0.40",
            "10.101.0.40",
            ("dav", "files", "directory"),
        ),
        # Tang, which the other site's volumes are bound to, on the host with no public address
        # and no client-facing service.
        _host("nj-backup", ["backup", "tang"], None, "10.1.0.60", "10.101.0.60", ("backups",)),
    ],
    {
        **_PLATFORM,
        "site": "nj",
        "site_location": "365 Data Centers, Bridgewater, New Jersey",
        "site_primary": True,
        "site_lan": "10.1.0.0/24",
        "site_public": "192.0.2.0/25",
        "site_management": "10.101.0.0/24",
    },
)

sea = (
    [
        _host(
            "sea-gw",
            ["gateway", "proxy"],
            "198.51.100.10",
            "10.2.0.1",
            "10.102.0.1",
            proxy_addresses={
                "imaps-proxy": "198.51.100.13",
                "pops-proxy": "198.51.100.14",
                "smtps-proxy": "198.51.100.15",
            },
        ),
        _host("sea-mx", ["mx"], "198.51.100.25", "10.2.0.25", "10.102.0.25"),
        _host("sea-store", ["mailstore"], "198.51.100.30", "10.2.0.30", "10.102.0.30", ("mail",)),
        _host(
            "sea-web",
            ["mailconfig", "dav", "files", "directory"],
            "198.51.100.40",
            "10.2.0.40",
            "10.102.0.40",
            ("dav", "files", "directory"),
        ),
        _host("sea-backup", ["backup", "tang"], None, "10.2.0.60", "10.102.0.60", ("backups",)),
    ],
    {
        **_PLATFORM,
        "site": "sea",
        "site_location": "365 Data Centers, Seattle, Washington",
        "site_primary": False,
        "site_lan": "10.2.0.0/24",
        "site_public": "198.51.100.0/25",
        "site_management": "10.102.0.0/24",
    },
)
