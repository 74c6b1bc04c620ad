"""The directory role on the web hosts: what only the hosts can show (who runs slapd and with
which privileges, what it listens on, who may read its files, what a refresh logs)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from bulwark import catalogue, davstore
from bulwark.inventory import load_topology
from roles import directory

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(REPO / "inventory" / "lab.py")
DIRECTORY_HOSTS = tuple(host.name for host in TOPOLOGY.hosts_with_role("directory"))
PRIMARY = TOPOLOGY.hosts_with_role("directory", TOPOLOGY.primary_site.name)[0].name
# CAP_NET_BIND_SERVICE (bit 10) and nothing else, in /proc/PID/status's hexadecimal.
ONLY_BIND_SERVICE = f"{1 << 10:016x}"


def _directory_hosts(host) -> None:
    if host.backend.get_hostname() not in DIRECTORY_HOSTS:
        pytest.skip("not a directory host")


def test_slapd_runs_as_its_own_user_with_the_bind_capability_alone(host):
    _directory_hosts(host)
    pid = host.check_output("systemctl show -P MainPID %s", directory.UNIT)
    assert host.check_output("ps -o user= -p %s", pid) == directory.USER
    status = host.file(f"/proc/{pid}/status").content_string
    capabilities = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert capabilities["CapEff"] == ONLY_BIND_SERVICE
    assert capabilities["CapBnd"] == ONLY_BIND_SERVICE


def test_slapd_listens_on_ldaps_and_its_private_socket_alone(host):
    _directory_hosts(host)
    address = TOPOLOGY.host(host.backend.get_hostname()).public_address
    listening = host.check_output("ss -Hltnp").splitlines()
    slapd = sorted(line.split()[3] for line in listening if '"slapd"' in line)
    assert slapd == [f"{address}:{catalogue.service('ldaps').port}"]
    runtime = host.file(Path(directory.LDAPI_SOCKET).parent.as_posix())
    assert (runtime.user, runtime.mode) == (directory.USER, 0o700)
    assert host.file(directory.LDAPI_SOCKET).is_socket


def test_the_databases_and_the_users_file_are_slapds_alone(host):
    _directory_hosts(host)
    for name, _ in directory.DATABASES.values():
        data = host.file(f"{directory.DATA_DIR}/{name}/data.mdb")
        assert (data.user, data.group, data.mode) == (directory.USER, directory.USER, 0o600)
    users = host.file(directory.USERS_LDIF)
    assert (users.user, users.group, users.mode) == ("root", directory.USER, 0o640)
    # The refresh reads the CardDAV store through its group, and writes nothing of it.
    refresh = host.check_output("systemctl show -P SupplementaryGroups %s", directory.REFRESH_UNIT)
    assert refresh.split() == [davstore.USER]


def _probe(method: str, url: str, body: str | None = None) -> int:
    argv = [str(REPO / ".venv/bin/python"), str(Path(__file__).with_name("davprobe.py"))]
    result = subprocess.run(
        [str(REPO / ".venv/bin/bulwark"), "lab", "internet", "--", *argv, "alice", method, url,
         *((body,) if body else ())],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["status"]


def test_a_refused_value_is_logged_by_file_and_attribute_never_by_value(lab_host):
    """A fax number no LDAP telephone number can be (an `@`) is left out of the entry with one
    journal line naming the book, the file and the attribute; the value, a contact's private
    data, never reaches the journal. The rest of the contact is loaded."""
    host = lab_host(PRIMARY)
    uid = f"bulwark-note-{uuid.uuid4().hex}"
    secret = f"{uuid.uuid4().hex}@fax.example"
    url = (
        f"https://carddav.{TOPOLOGY.primary_site.name}.{TOPOLOGY.domain}/dav/addressbooks/user/"
        f"alice@{TOPOLOGY.domain}/{davstore.DEFAULT_COLLECTION}/{uid}.vcf"
    )
    lines = ("BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", f"FN:{uid}", f"TEL;TYPE=FAX:{secret}")
    card = "\r\n".join((*lines, "END:VCARD", ""))
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    assert _probe("PUT", url, card) == 201
    try:
        host.check_output("systemctl start %s", directory.REFRESH_UNIT)
        journal = host.check_output(
            "journalctl -q -o cat -u %s --since %s", directory.REFRESH_UNIT, since
        )
        notes = [line for line in journal.splitlines() if uid in line]
        assert notes == [
            f"alice@{TOPOLOGY.domain} '{uid}.vcf': facsimileTelephoneNumber: a value of "
            f"{len(secret)} characters left out: not a telephone number"
        ]
        assert secret not in journal
        assert "dc=AddressBook: " in journal  # rebuilt, the contact in it
    finally:
        assert _probe("DELETE", url) == 200
