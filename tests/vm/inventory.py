"""The VM scenario's inventory: the smallest two-site platform in which a volume is opened by
the other site's Tang through the tunnel: one host per site, each its site's gateway, mail
store (the logs and mail volumes) and Tang server. Every host is a qemu guest
(tests/vm/conftest.py).

Each guest is reached through the harness's ssh_config on a forwarded loopback port; its
volumes are its spare virtio disks, named by serial; the gateways' public addresses are on a
link the harness makes between the two guests (the sites' WAN).
"""

import os

# The harness's ssh_config and known_hosts (bulwark.lab.vm), and the vault the tests make.
_VM_STATE = "/var/lib/bulwark-vm"
_VAULT = os.environ.get("BULWARK_VM_VAULT", f"{_VM_STATE}/vm.vault")
# The guest disk the mail volume is on: tests/vm/test_storage.py points it at a disk holding a
# filesystem to see the deploy refuse it.
MAIL_DISK = os.environ.get("BULWARK_VM_MAIL_DISK", "mail")

_PLATFORM = {
    "domain": "example.net",
    "admin_networks": [],
    "accounts": [{"user": "alice", "name": "Alice Archer", "app_passwords": ["laptop"]}],
    "vault_file": _VAULT,
    "ssh_config_file": f"{_VM_STATE}/ssh_config",
    "ssh_known_hosts_file": f"{_VM_STATE}/known_hosts",
}


def _host(name: str, roles: list[str], number: int, site: int, volumes: tuple[str, ...] = ()):
    data = {
        "roles": roles,
        "public_address": f"198.51.100.{site * 32 + number}",
        "lan_address": f"10.8{site}.1.{number}",
        "management_address": f"10.9{site}.0.{number}",
    }
    if volumes:
        disks = {"mail": MAIL_DISK}
        data["volume_devices"] = {
            name: f"/dev/disk/by-id/virtio-{disks.get(name, name)}" for name in volumes
        }
    return (name, data)


def _site(name: str, number: int, primary: bool) -> dict:
    return {
        **_PLATFORM,
        "site": name,
        "site_location": f"VM guests: {name}",
        "site_primary": primary,
        "site_lan": f"10.8{number}.1.0/24",
        "site_public": f"198.51.100.{number * 32}/27",
        "site_management": f"10.9{number}.0.0/24",
    }


_ROLES = ["gateway", "mailstore", "tang"]
nj = ([_host("nj-store", _ROLES, 11, 0, ("logs", "mail"))], _site("nj", 0, True))
sea = ([_host("sea-store", _ROLES, 11, 1, ("logs", "mail"))], _site("sea", 1, False))
