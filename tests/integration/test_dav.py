"""The dav role on the web hosts: what only the hosts can show (sockets, users, modes, who may
reach the replication port), and the switch of the primary site, which needs deploys.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from bulwark import bruteforce, catalogue, pki, replication, web
from bulwark.inventory import load_topology
from roles import dav, files

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
TOPOLOGY = load_topology(LAB_INVENTORY)
PRIMARY, SECONDARY = (
    TOPOLOGY.hosts_with_role("dav", site.name)[0].name
    for site in sorted(TOPOLOGY.sites, key=lambda site: not site.primary)
)
REPLICATION_DEADLINE = 60  # seconds (the promise)
# The web roles' replicated trees and their listeners (one mechanism: bulwark.replication).
PORTS = {role: str(catalogue.service(f"{role}-replication").port) for role in ("dav", "files")}
TREES = (dav.TREE, files.TREE)


def _dav_hosts(host) -> None:
    if host.backend.get_hostname() not in (PRIMARY, SECONDARY):
        pytest.skip("not a dav host")


def test_only_nginx_listens_on_tcp_and_the_backends_are_nginx_only_sockets(host):
    """nginx alone, but for SSH, the files role's FTP (tests/integration/test_files.py) and the
    directory's slapd (tests/integration/test_directory.py)."""
    _dav_hosts(host)
    listeners = host.check_output("ss -Hltnp")
    for line in listeners.splitlines():
        if ":22 " in line or '"pure-ftpd"' in line or '"slapd"' in line:
            continue
        assert '"nginx"' in line, line
    for name in (*dav.INSTANCES, "webauth", f"replica-{dav.ROLE}"):
        socket = host.file(f"{replication.SOCKET_DIR}/{name}.sock")
        assert socket.is_socket
        assert (socket.user, socket.group, socket.mode) == ("root", "www-data", 0o660)


def test_the_checker_runs_as_a_throwaway_user_and_only_root_reads_the_hashes(host):
    _dav_hosts(host)
    accounts = host.file(web.WEBAUTH_ACCOUNTS)
    assert (accounts.user, accounts.group, accounts.mode) == ("root", "root", 0o600)
    host.check_output("systemctl start %s", web.WEBAUTH_UNIT)
    pid = host.check_output("systemctl show -P MainPID %s", web.WEBAUTH_UNIT)
    user = host.check_output("ps -o user= -p %s", pid)
    assert user not in ("root", "www-data", dav.USER)


def test_radicale_runs_as_its_own_user_with_its_data_private(host):
    _dav_hosts(host)
    data = host.file(dav.DATA_DIR)
    assert (data.user, data.group, data.mode) == (dav.USER, dav.USER, 0o750)
    for name in dav.INSTANCES:
        unit = f"bulwark-radicale@{name}.service"
        host.check_output("systemctl start %s", unit)
        pid = host.check_output("systemctl show -P MainPID %s", unit)
        assert host.check_output("ps -o user= -p %s", pid) == dav.USER


def _rsync_greeting(lab_host, client: str, certificate: bool, port: str) -> bool:
    """Whether rsync greets `client` on the primary's replication `port`, with or without the
    client's own certificate."""
    primary = TOPOLOGY.host(PRIMARY)
    own = f"-cert {pki.HOST_CERT_PATH} -key {pki.HOST_KEY_PATH}" if certificate else ""
    result = lab_host(client).run(
        f"(sleep 1; echo) | timeout 10 openssl s_client -quiet {own} "
        f"-connect {primary.lan_address}:{port} 2>&1"
    )
    return "@RSYNCD:" in result.stdout


@pytest.mark.parametrize("role", sorted(PORTS))
def test_the_replication_port_serves_only_the_other_sites_web_host(lab_host, role):
    """With its certificate the replica gets rsync's greeting; without one it gets nothing (nginx
    wants a certificate from the internal CA); and a certificate of the internal CA naming
    another host (the primary's own) is not let through either."""
    port = PORTS[role]
    assert _rsync_greeting(lab_host, SECONDARY, certificate=True, port=port)
    assert not _rsync_greeting(lab_host, SECONDARY, certificate=False, port=port)
    assert not _rsync_greeting(lab_host, PRIMARY, certificate=True, port=port)


@pytest.mark.parametrize("role", sorted(PORTS))
def test_the_replication_port_is_closed_to_other_hosts_of_the_site(lab_host, role):
    primary = TOPOLOGY.host(PRIMARY)
    mail = TOPOLOGY.hosts_with_role("mailstore", primary.site)[0].name
    result = lab_host(mail).run(
        "timeout 5 bash -c 'exec 3<>/dev/tcp/%s/%s' 2>&1", str(primary.lan_address), PORTS[role]
    )
    assert result.rc != 0


# --- the primary site switches -----------------------------------------------------------------


def _probe(user: str, method: str, url: str, body: str | None = None) -> dict:
    """One request from the internet namespace (tests/integration/davprobe.py)."""
    argv = [str(REPO / ".venv/bin/python"), str(Path(__file__).with_name("davprobe.py"))]
    result = subprocess.run(
        [str(REPO / ".venv/bin/bulwark"), "lab", "internet", "--", *argv, user, method, url,
         *((body,) if body else ())],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _contact_url(site: str, uid: str) -> str:
    return (
        f"https://carddav.{site}.{TOPOLOGY.domain}/dav/addressbooks/user/"
        f"alice@{TOPOLOGY.domain}/{dav.DEFAULT_COLLECTION}/{uid}.vcf"
    )


def _file_url(site: str, uid: str) -> str:
    """A file in alice's tree (the files role), at one site."""
    account = TOPOLOGY.accounts[0]
    root = TOPOLOGY.files_root(account)
    return f"https://webdav.{site}.{TOPOLOGY.domain}/{root}/files/{uid}.txt"


def _event_url(site: str, uid: str) -> str:
    return (
        f"https://caldav.{site}.{TOPOLOGY.domain}/dav/calendars/user/"
        f"alice@{TOPOLOGY.domain}/{dav.DEFAULT_COLLECTION}/{uid}.ics"
    )


def _vevent(uid: str) -> str:
    lines = ("BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bulwark//switch test//EN",
             "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261202T120000Z",
             "DTSTART:20271202T120000Z", "DTEND:20271202T130000Z", f"SUMMARY:{uid}",
             "END:VEVENT", "END:VCALENDAR")  # fmt: skip
    return "\r\n".join(lines) + "\r\n"


def _vcard(uid: str) -> str:
    return f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{uid}\r\nN:{uid};;;;\r\nEND:VCARD\r\n"


def _wait_for(site: str, uid: str, status: int) -> bool:
    deadline = time.monotonic() + REPLICATION_DEADLINE
    while _probe("alice", "GET", _contact_url(site, uid))["status"] != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _deploy_dav(lab_pyinfra, primary: str | None = None, revoked: str = "") -> None:
    """Deploy the web roles and the directory on both web hosts (the last web role writes
    nginx's configuration and the credential checkers), with `primary` the primary site and the
    `revoked` app passwords removed (inventory/lab.py reads BULWARK_LAB_PRIMARY and
    BULWARK_LAB_REVOKED)."""
    result = lab_pyinfra(
        "deploy.py", PRIMARY, "--limit", SECONDARY, "--data", "only_roles=dav,files,directory",
        env={"BULWARK_LAB_PRIMARY": primary or TOPOLOGY.primary_site.name,
             "BULWARK_LAB_REVOKED": revoked},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_switching_the_primary_site_moves_writes_and_loses_nothing(lab_host, lab_pyinfra):
    """nj primary → sea primary → nj primary. A contact, a calendar entry and a file written at
    the primary just before each switch, while the replica's followers are stopped, can reach
    the new primary only by the switch's final pulls: they must be there, and the old primary
    must refuse writes of each."""
    first, second = TOPOLOGY.primary_site.name, TOPOLOGY.host(SECONDARY).site
    written: list[str] = []
    try:
        for old, new in ((first, second), (second, first)):
            new_host = PRIMARY if new == first else SECONDARY
            uid = f"bulwark-switch-{uuid.uuid4().hex}"
            for tree in TREES:
                lab_host(new_host).check_output("systemctl stop %s", tree.follow_unit)
            assert _probe("alice", "PUT", _contact_url(old, uid), _vcard(uid))["status"] == 201
            assert _probe("alice", "PUT", _event_url(old, uid), _vevent(uid))["status"] == 201
            assert _probe("alice", "PUT", _file_url(old, uid), uid)["status"] == 201
            written.append(uid)
            _deploy_dav(lab_pyinfra, new)
            assert _probe("alice", "GET", _contact_url(new, uid))["status"] == 200
            assert _probe("alice", "GET", _event_url(new, uid))["status"] == 200
            assert _probe("alice", "GET", _file_url(new, uid))["status"] == 200
            refused = _probe("alice", "PUT", _contact_url(old, f"{uid}-late"), _vcard(uid))
            assert (refused["status"], refused["replica"]) == (403, "read-only")
            late = f"{uid}-late"
            refused = _probe("alice", "PUT", _event_url(old, late), _vevent(late))
            assert (refused["status"], refused["replica"]) == (403, "read-only")
            refused = _probe("alice", "PUT", _file_url(old, f"{uid}-late"), uid)
            assert (refused["status"], refused["replica"]) == (403, "read-only")
            back = f"{uid}-back"
            assert _probe("alice", "PUT", _contact_url(new, back), _vcard(back))["status"] == 201
            written.append(back)
            assert _wait_for(old, back, 200), f"{back} did not reach {old} in time"
    finally:
        for tree in TREES:
            lab_host(SECONDARY).check_output("systemctl start %s", tree.follow_unit)
        primary = TOPOLOGY.primary_site.name
        for uid in written:
            _probe("alice", "DELETE", _contact_url(primary, uid))
            _probe("alice", "DELETE", _event_url(primary, uid))
            _probe("alice", "DELETE", _file_url(primary, uid))


def test_a_revoked_app_password_stops_working_once_the_deploy_has_run(lab_pyinfra, lab_host):
    """Revoking is removing the label from the account and deploying: both checkers (DAV's and
    the files role's) restart with the new accounts, so no cache keeps the old password alive,
    and the directory's users database is rebuilt without it. Its three failed logins are
    forgotten at the end (the web host's ban watcher restarted): they would count towards the
    ban of the address the end-to-end tests connect from."""
    primary = TOPOLOGY.primary_site.name
    # (method, URL, its answer to a good login, to a refused one): alice's address book, her
    # files folder (Apache refuses a PROPFIND of infinite depth, which is what one without
    # Depth asks), and a bind to the LDAP address book.
    requests = (
        ("PROPFIND", f"https://carddav.{primary}.{TOPOLOGY.domain}/dav/addressbooks/user/"
                     f"alice@{TOPOLOGY.domain}/{dav.DEFAULT_COLLECTION}/", 207, 401),
        ("OPTIONS", _file_url(primary, "").removesuffix(".txt"), 200, 401),
        ("BIND", f"ldaps://ldap.{primary}.{TOPOLOGY.domain}", 0, 49),
    )  # fmt: skip
    for method, url, good, _ in requests:
        assert _probe("alice/phone", method, url)["status"] == good  # now in the cache
    try:
        _deploy_dav(lab_pyinfra, revoked="alice/phone")
        for method, url, good, refused in requests:
            assert _probe("alice/phone", method, url)["status"] == refused, url
            assert _probe("alice/laptop", method, url)["status"] == good, url
    finally:
        _deploy_dav(lab_pyinfra)
    for method, url, good, _ in requests:
        assert _probe("alice/phone", method, url)["status"] == good
    lab_host(PRIMARY).check_output("systemctl restart %s", bruteforce.UNIT)
