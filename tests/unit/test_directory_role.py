"""The directory role, rendered offline from the lab inventory, then run for real: slapd started
on this machine (loopback, a scratch directory) with the rendered configuration, loaded by the
refresh program from a scratch CardDAV store, and asked what the clients ask.

- slapd.conf: TLS the platform's policy; no anonymous bind, nothing without a bind; read-only;
  the limits; the ACLs in an order that hides each account's own contacts from the others.
- the users file: one {ARGON2} userPassword per app password, never the main password's hash.
- the unit: slapd on the public address's 636 and its private ldapi socket alone, never root.
- real slapd: binds, the global address list, the personal branch per owner, writes refused.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from ldap3 import SUBTREE, Connection, Server

from bulwark import catalogue, davstore, directory_refresh, tls
from bulwark.audit import SealedSecrets
from bulwark.inventory import load_topology
from bulwark.render import render_role_files
from bulwark.secret_names import app_password_name, main_password_name
from bulwark.topology import Topology
from roles import directory

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory" / "lab.py")
SLAPD = Path("/usr/sbin/slapd")
# Every scratch account's one app password, made for the run, and its Argon2id (cheap parameters).
PASSWORD = uuid.uuid4().hex
PASSWORD_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)


def directory_file(topology: Topology, path: str, host_name: str = "nj-web") -> str:
    rendered = render_role_files(
        directory, topology, topology.host(host_name), SealedSecrets(), False
    )
    (content,) = [item.content for item in rendered if item.path == path]
    return content


def directives(config: str) -> list[str]:
    """slapd.conf's lines without comments and blank lines."""
    return [line for line in config.splitlines() if line.strip() and not line.startswith("#")]


def test_tls_is_the_platforms_policy_and_nothing_works_without_a_bind():
    lines = directives(directory_file(LAB, directory.CONFIG))
    assert f"TLSCipherSuite {tls.GNUTLS_PRIORITY}" in lines
    assert "TLSProtocolMin 3.3" in lines  # TLS 1.2
    for line in ("disallow bind_anon", "require authc", "security ssf=128"):
        assert line in lines
    assert 'defaultsearchbase "dc=AddressBook"' in lines
    assert lines.count("readonly on") == 2  # both databases


def test_limits_bound_every_search():
    lines = directives(directory_file(LAB, directory.CONFIG))
    soft, hard = directory.SIZE_LIMIT
    assert f"sizelimit size.soft={soft} size.hard={hard}" in lines
    soft, hard = directory.TIME_LIMIT
    assert f"timelimit time.soft={soft} time.hard={hard}" in lines


def test_the_acls_hide_the_owner_then_grant_personal_entries_to_it_alone():
    lines = directives(directory_file(LAB, directory.CONFIG))
    book = lines[lines.index('suffix "dc=AddressBook"') :]
    rules = [line for line in book if line.startswith("access to")]
    assert rules == [
        "access to attrs=seeAlso by * none",
        'access to dn.one="ou=Personal,dc=AddressBook" by dnattr=seeAlso read by * none',
        "access to * by users read by * none",
    ]
    users = lines[lines.index('suffix "dc=User"') : lines.index('suffix "dc=AddressBook"')]
    assert [line for line in users if line.startswith("access to")] == [
        "access to attrs=userPassword by anonymous auth by * none",
        "access to * by * none",
    ]


def test_the_users_file_holds_each_app_password_and_never_the_main_one():
    ldif = directory_file(LAB, directory.USERS_LDIF)
    for account in LAB.accounts:
        entry = ldif.split(f"dn: cn={account.address(LAB.domain)},dc=User\n")[1].split("\n\n")[0]
        hashes = re.findall(r"^userPassword: \{ARGON2\}<secret:([^ ]+) ", entry, re.MULTILINE)
        assert hashes == [app_password_name(account.user, label) for label in account.app_passwords]
        assert main_password_name(account.user) not in entry


def test_an_account_without_app_passwords_gets_no_password_at_all():
    alice, *others = LAB.accounts
    topology = dataclasses.replace(
        LAB, accounts=(dataclasses.replace(alice, app_passwords=()), *others)
    )
    entry = directory_file(topology, directory.USERS_LDIF).split("dn: cn=alice@")[1].split("\n\n")
    assert "userPassword" not in entry[0] and "simpleSecurityObject" not in entry[0]


def test_slapd_listens_on_ldaps_and_ldapi_alone_and_never_runs_as_root():
    unit = directory_file(LAB, f"/etc/systemd/system/{directory.UNIT}")
    (start,) = re.findall(r"^ExecStart=.* -h \"([^\"]+)\"$", unit, re.MULTILINE)
    address = LAB.host("nj-web").public_address
    assert start.split() == [
        f"ldaps://{address}:{catalogue.service('ldaps').port}/",
        directory.LDAPI_URL.replace("%", "%%"),
    ]
    assert f"User={directory.USER}" in unit.splitlines()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in unit.splitlines()


def test_the_refresh_reads_the_books_the_dav_role_writes():
    config = json.loads(directory_file(LAB, directory.REFRESH_CONFIG))
    alice = LAB.accounts[0]
    assert config["accounts"][0]["book"] == davstore.default_book(LAB, alice)
    assert config["shared"]["book"] == f"{davstore.SHARED_DIR}/{davstore.shared_book_name(LAB)}"
    assert config["users"]["ldif"] == directory.USERS_LDIF
    assert {config[key]["suffix"] for key in ("users", "address_book")} == set(directory.DATABASES)


# --- the rendered configuration, run by a real slapd ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def running_slapd(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[int, Path, Path]]:
    """The lab's rendered slapd.conf with scratch paths, plain LDAP on a loopback port (TLS is
    the lab's part), loaded by the refresh program from a scratch store: alice's and bob's
    own books hold one contact each, alice's as many more as the test's parameter says.
    Yields (port, store, the refresh's configuration)."""
    if not SLAPD.exists():
        pytest.skip("slapd is not installed (make checkers does)")
    store = tmp_path / "dav"
    config = directives(directory_file(LAB, directory.CONFIG))
    config = [line for line in config if not line.startswith(("TLS", "security"))]
    text = "\n".join(config).replace(directory.DATA_DIR, str(tmp_path / "db")) + "\n"
    (tmp_path / "slapd.conf").write_text(text)
    refresh = json.loads(directory_file(LAB, directory.REFRESH_CONFIG))
    for key in ("users", "address_book"):
        refresh[key]["build_config"] = str(tmp_path / "slapd.conf")
        refresh[key]["directory"] = refresh[key]["directory"].replace(
            directory.DATA_DIR, str(tmp_path / "db")
        )
        Path(refresh[key]["directory"]).mkdir(parents=True)
    users = ["dn: dc=User\nobjectClass: dcObject\nobjectClass: organization\ndc: User\no: User\n"]
    for account in LAB.accounts:
        users.append(
            f"dn: cn={account.address(LAB.domain)},dc=User\nobjectClass: organizationalRole\n"
            f"objectClass: simpleSecurityObject\ncn: {account.address(LAB.domain)}\n"
            f"userPassword: {{ARGON2}}{PASSWORD_HASH}\n"
        )
    (tmp_path / "users.ldif").write_text("\n".join(users))
    refresh["users"]["ldif"] = str(tmp_path / "users.ldif")
    for entry in refresh["accounts"]:
        entry["book"] = str(store / entry["address"])
        Path(entry["book"]).mkdir(parents=True)
        user = entry["address"].split("@")[0]
        Path(entry["book"], "c.vcf").write_text(
            f"BEGIN:VCARD\nFN:Friend Of {user}\nEMAIL:friend-of-{user}@example.org\nEND:VCARD\n"
        )
        for number in range(getattr(request, "param", 0) if user == "alice" else 0):
            Path(entry["book"], f"many-{number}.vcf").write_text(
                f"BEGIN:VCARD\nFN:Many {number}\nEMAIL:many-{number}@example.org\nEND:VCARD\n"
            )
    refresh["shared"] = None
    refresh["restart_marker"] = str(tmp_path / "restart-slapd")
    (tmp_path / "refresh.json").write_text(json.dumps(refresh))
    assert directory_refresh.main(["--config", str(tmp_path / "refresh.json")]) == 0
    assert (tmp_path / "restart-slapd").exists()  # the unit restarts slapd on the new build
    port = _free_port()
    daemon = subprocess.Popen(
        [str(SLAPD), "-d", "0", "-f", str(tmp_path / "slapd.conf"),
         "-h", f"ldap://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port, store, tmp_path / "refresh.json"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        shutil.rmtree(tmp_path / "db", ignore_errors=True)


def _as(port: int, user: str) -> Connection:
    connection = Connection(
        Server("127.0.0.1", port=port), f"cn={user}@{LAB.domain},dc=User", PASSWORD
    )
    assert connection.bind(), connection.result
    return connection


def test_the_rendered_acls_on_a_real_slapd(running_slapd):
    port, _, _ = running_slapd
    for user, other in (("alice", "bob"), ("bob", "alice")):
        connection = _as(port, user)
        connection.search("dc=AddressBook", "(mail=*)", SUBTREE, attributes=["mail", "seeAlso"])
        mails = sorted(str(entry.mail) for entry in connection.entries)
        assert f"friend-of-{user}@example.org" in mails
        assert f"friend-of-{other}@example.org" not in mails
        assert {f"{a.user}@{LAB.domain}" for a in LAB.accounts} <= set(mails)
        assert not any(
            entry.entry_attributes_as_dict.get("seeAlso") for entry in connection.entries
        )
        assert not connection.delete(f"uid={user}@{LAB.domain},ou=Accounts,dc=AddressBook")
        assert connection.result["result"] == 53
    anonymous = Connection(Server("127.0.0.1", port=port))
    assert not anonymous.bind()
    wrong = Connection(Server("127.0.0.1", port=port), f"cn=alice@{LAB.domain},dc=User", "x")
    assert not wrong.bind() and wrong.result["result"] == 49


@pytest.mark.parametrize("running_slapd", [directory.SIZE_LIMIT[1] + 100], indirect=True)
def test_a_search_returns_the_soft_limit_or_at_most_the_hard_one(running_slapd):
    """A client dumping the whole book gets a page and "size limit exceeded", whatever it asks."""
    port, _, _ = running_slapd
    connection = _as(port, "alice")
    soft, hard = directory.SIZE_LIMIT
    for asked, returned in ((0, soft), (hard * 10, hard), (10, 10)):
        connection.search(
            "dc=AddressBook", "(mail=*)", SUBTREE, attributes=["mail"], size_limit=asked
        )
        assert connection.result["result"] == 4, connection.result  # sizeLimitExceeded
        assert len(connection.entries) == returned, asked
    connection.search("dc=AddressBook", "(mail=many-1*)", SUBTREE, attributes=["mail"])
    assert connection.result["result"] == 0  # a lookup is far below either limit
    assert len(connection.entries) == 111


def test_a_refused_value_is_logged_when_the_book_is_built_not_at_every_run(running_slapd, capsys):
    """The timer runs the refresh every minute: a contact's refused value is noted once, when
    the book holding it is built, not once a minute for as long as it stays."""
    _, store, config = running_slapd
    run = ["--config", str(config)]
    capsys.readouterr()
    assert directory_refresh.main(run) == 0
    assert capsys.readouterr().err == ""  # nothing changed: nothing built, nothing said
    book = next(path for path in store.iterdir() if path.name.startswith("alice@"))
    (book / "fax.vcf").write_text("BEGIN:VCARD\nFN:Fax Only\nTEL;TYPE=FAX:f@x\nEND:VCARD\n")
    assert directory_refresh.main(run) == 0
    said = capsys.readouterr().err.splitlines()
    assert said[0] == (
        f"{book.name} 'fax.vcf': facsimileTelephoneNumber: a value of 3 characters left out: "
        "not a telephone number"
    )
    assert said[1].startswith("dc=AddressBook: ") and said[1].endswith(", 1 notes")
    assert directory_refresh.main(run) == 0
    assert capsys.readouterr().err == ""
