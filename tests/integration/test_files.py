"""The files role on the web hosts: what only the hosts can show (who runs what, where Apache
listens, sockets and modes, the egress rule that makes active FTP fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark import catalogue, replication, web
from bulwark.inventory import load_topology
from roles import files

TOPOLOGY = load_topology(Path(__file__).resolve().parents[2] / "inventory" / "lab.py")
FILES_HOSTS = tuple(host.name for host in TOPOLOGY.hosts_with_role("files"))
PRIMARY = TOPOLOGY.hosts_with_role("files", TOPOLOGY.primary_site.name)[0].name


def _files_hosts(host) -> None:
    if host.backend.get_hostname() not in FILES_HOSTS:
        pytest.skip("not a files host")


def test_apache_listens_in_its_own_namespace_only(host):
    """Nothing on the host's own addresses reaches Apache: its port is in a network namespace
    of its own, and nginx gets there through a socket only its group may open."""
    _files_hosts(host)
    port = files.APACHE_LISTEN.rpartition(":")[2]
    assert f":{port} " not in host.check_output("ss -Hltn")
    assert host.run("timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s'", port).rc != 0
    backend = host.file(files.BACKEND_SOCKET)
    assert backend.is_socket
    assert (backend.user, backend.group, backend.mode) == ("root", "www-data", 0o660)


def test_the_daemons_run_as_the_files_owner(host):
    _files_hosts(host)
    host.check_output("systemctl start %s", web.FILESAUTH_UNIT)
    pid = host.check_output("systemctl show -P MainPID %s", web.FILESAUTH_UNIT)
    assert host.check_output("ps -o user= -p %s", pid) == files.USER
    workers = host.check_output("ps -o user= --ppid %s", host.check_output(
        "systemctl show -P MainPID %s", files.APACHE_UNIT)).split()  # fmt: skip
    assert workers and set(workers) == {files.USER}


def test_the_checkers_sockets_are_for_nginx_and_pure_ftpd_alone(host):
    _files_hosts(host)
    http = host.file(web.FILESAUTH_SOCKET)
    assert (http.user, http.group, http.mode) == ("root", "www-data", 0o660)
    ftp = host.file(web.FILESAUTH_FTP_SOCKET)
    assert (ftp.user, ftp.group, ftp.mode) == ("root", "root", 0o600)
    source = host.file(replication.source_socket(files.ROLE))
    assert (source.user, source.group, source.mode) == ("root", "www-data", 0o660)


def test_pure_ftpd_listens_on_the_public_address_only(host):
    _files_hosts(host)
    public = str(TOPOLOGY.host(host.backend.get_hostname()).public_address)
    lines = [line for line in host.check_output("ss -Hltnp").splitlines() if "pure-ftpd" in line]
    assert [line.split()[3] for line in lines] == [f"{public}:{catalogue.service('ftp').port}"]


def test_each_accounts_files_are_the_owners_and_its_top_is_roots(host):
    _files_hosts(host)
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("the trees are created at the primary; replicas copy them")
    data = host.file(files.DATA_DIR)
    assert (data.user, data.group, data.mode) == (files.USER, files.USER, 0o750)
    for account in TOPOLOGY.accounts:
        root = TOPOLOGY.files_root(account)
        for top in (f"{files.DATA_DIR}/{root}", f"{files.DATA_DIR}/{root}/{root}"):
            folder = host.file(top)  # root's: an FTP session writes in files/ alone
            assert (folder.user, folder.group, folder.mode) == ("root", files.USER, 0o750), top
        tree = host.file(f"{files.DATA_DIR}/{root}/{root}/files")
        assert tree.is_directory
        assert (tree.user, tree.mode) == (files.USER, 0o700)
        usage = host.file(f"{files.DATA_DIR}/{root}/{files.FTP_QUOTA_FILE}")
        assert (usage.user, usage.mode) == (files.USER, 0o600)


def test_an_upgrade_of_the_daemons_package_restarts_our_unit(host):
    """Debian's own unit of pure-ftpd is masked (ours runs instead), so its package scripts
    restart nothing: needrestart (base role) restarts the unit still running the replaced
    binary, as it will after an unattended security update."""
    _files_hosts(host)
    started = _started(host, files.FTP_UNIT)
    host.check_output(
        "DEBIAN_FRONTEND=noninteractive apt-get install --reinstall -y -q pure-ftpd 2>&1"
    )
    assert host.service(files.FTP_UNIT).is_running
    assert _started(host, files.FTP_UNIT) > started


def _started(host, unit: str) -> int:
    """When `unit`'s main process started (monotonic microseconds)."""
    return int(host.check_output("systemctl show -P ExecMainStartTimestampMonotonic %s", unit))
