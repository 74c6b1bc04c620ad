"""roles/storage.py rendered offline: what a host with encrypted volumes gets for its logs
volume, and that a host without them gets none of it. The real thing runs in tests/vm."""

from __future__ import annotations

from pathlib import Path

from bulwark.audit import SealedSecrets
from bulwark.inventory import load_topology
from bulwark.render import render_host_configs
from bulwark.topology import Host, Topology
from bulwark.volumes import LOGS_UNIT, volume

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = load_topology(REPO / "inventory/production.py")
LAB = load_topology(REPO / "inventory/lab.py")
UNITS = "/etc/systemd/system"


def _files(topology: Topology, host: Host) -> dict[str, str]:
    return {
        item.path: item.content for item in render_host_configs(topology, host, SealedSecrets())
    }


def test_every_encrypted_host_puts_the_journal_on_its_logs_volume_once_it_is_mounted():
    """A gateway, which has no other volume: the logs volume mounted from its mapping, the
    journal flushed there after the mount and let go of before the unmount, and the units
    keeping log files there ordered after it."""
    files = _files(PRODUCTION, PRODUCTION.host("nj-gw"))
    assert "What=/dev/mapper/bulwark-logs\nWhere=/var/log\n" in files[f"{UNITS}/var-log.mount"]
    unit = files[f"{UNITS}/{LOGS_UNIT}"]
    assert unit.index("ExecStart=systemd-tmpfiles --create --prefix=/var/log") < unit.index(
        "ExecStart=journalctl --flush"
    )
    assert "ExecStop=journalctl --relinquish-var" in unit
    # Default dependencies: after basic.target, never in the early boot it would tie in a cycle.
    assert "DefaultDependencies" not in unit and "WantedBy=multi-user.target" in unit
    for name in volume("logs").units:
        assert "RequiresMountsFor=/var/log\n" in files[f"{UNITS}/{name}.d/bulwark-storage.conf"]


def test_a_host_that_cannot_encrypt_keeps_its_logs_where_they_are():
    for host in LAB.hosts:
        files = _files(LAB, host)
        assert f"{UNITS}/{LOGS_UNIT}" not in files and f"{UNITS}/var-log.mount" not in files
