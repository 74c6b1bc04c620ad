"""The dav role, rendered offline from the lab inventory (nj primary, sea its replica).

- Radicale 3.1.8's own rights engine (`radicale.rights.from_file`, as Debian 12 ships it) reads
  the rendered rights files: who may read and write which calendar and address book, at the
  primary and at the replica, for full, `+Default` and `+Shared` logins and hostile user names.
- The follower script runs under `sh` with a stub `rsync-ssl`: the final pull of a promotion,
  its state file, the excludes, one round of the follow loop.
- The accounts' collections, the write switch nginx includes, the credential checker's accounts
  file and nginx's configuration, each checked for what would break if it drifted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import posixpath
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nginxconf import (
    Block,
    front_files,
    headers,
    http_block,
    is_default,
    mapped,
    nginx_conf,
    ports,
    proxy_headers,
    request_map,
    server_names,
)
from radicale import config as radicale_config
from radicale.rights import from_file

from bulwark import catalogue, pki, replication, web, webauth
from bulwark.audit import SealedSecrets
from bulwark.inventory import load_topology
from bulwark.render import render_role_files
from bulwark.secret import SecretStore
from bulwark.secret_names import app_password_name, main_password_name
from bulwark.topology import Topology
from bulwark.vault import Vault
from roles import dav, files

REPO = Path(__file__).resolve().parents[2]


def with_primary(topology: Topology, site: str) -> Topology:
    """`topology` with `site` as its primary site: the inventory edit that moves the primary."""
    sites = tuple(dataclasses.replace(each, primary=each.name == site) for each in topology.sites)
    return dataclasses.replace(topology, sites=sites)


# Pinned to nj whatever BULWARK_LAB_PRIMARY says (inventory/lab.py reads it).
LAB = with_primary(load_topology(REPO / "inventory/lab.py"), "nj")
LAB_SEA_PRIMARY = with_primary(LAB, "sea")
PRODUCTION = load_topology(REPO / "inventory/production.py")
WEB_HOSTS = [
    pytest.param(topology, host.name, id=f"{name}:{host.name}")
    for name, topology in (("lab", LAB), ("production", PRODUCTION))
    for host in topology.hosts_with_role(dav.ROLE)
]


@functools.cache
def _sealed_files(topology: Topology, host_name: str) -> dict[str, str]:
    """The dav role's files of `host_name`, sealed: path -> content (cached: rendering is the
    slow part of this module, and the same few hosts are asked for again and again)."""
    return dav_files(topology, host_name, SealedSecrets())


def dav_files(
    topology: Topology, host_name: str, secrets: SecretStore, reveal: bool = False
) -> dict[str, str]:
    """The dav role's files of `host_name`: path -> content."""
    files = render_role_files(dav, topology, topology.host(host_name), secrets, reveal)
    return {item.path: item.content for item in files}


def dav_file(topology: Topology, host_name: str, path: str) -> str:
    return _sealed_files(topology, host_name)[path]


# --- Radicale's rights engine on the rendered rights files -------------------------------------

Rights = from_file.Rights
ALICE = "alice@example.net"
BOB = "bob@example.net"
SHARED = f"{ALICE}.Shared"  # the shared book's name in every account's own collection


def radicale_rights(rights_file: Path, config_file: Path | None = None) -> Rights:
    """Radicale's from_file rights engine on `rights_file`, in the configuration `config_file`
    (a rendered instance's) or Radicale's default one."""
    configuration = radicale_config.load([(str(config_file), False)] if config_file else None)
    configuration.update({"rights": {"type": "from_file", "file": str(rights_file)}}, "test")
    return Rights(configuration)


def rights_for(topology: Topology, host_name: str, instance: str, directory: Path) -> Rights:
    """The rights engine of `instance` on `host_name`: its rendered configuration, with the
    rendered rights file moved under `directory`."""
    rights_file = directory / f"{host_name}-{instance}.rights"
    rights_file.write_text(dav_file(topology, host_name, dav.rights_path(instance)))
    config_file = directory / f"{host_name}-{instance}.conf"
    config_file.write_text(dav_file(topology, host_name, dav.config_path(instance)))
    return radicale_rights(rights_file, config_file)


def permissions(rights: Rights, user: str, collection: str) -> str:
    """What `user` may do with `collection`, asked with the path as Radicale sanitises it
    (`/alice@example.net/Default/`; the root is `/`)."""
    return rights.authorization(user, f"/{collection}/" if collection else "/")


@pytest.fixture(scope="module")
def rights(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Rights]:
    """(host, instance) -> Radicale's rights engine on that host's rendered file."""
    directory = tmp_path_factory.mktemp("rights")
    return {
        (host, instance): rights_for(LAB, host, instance, directory)
        for host in ("nj-web", "sea-web")
        for instance in dav.INSTANCES
    }


# (user, collection, permissions at the primary site). Upper case is for collections without a
# tag (the root, principals), lower case for calendars and address books (Radicale's rights).
ADDRESSBOOKS: list[tuple[str, str, str]] = [
    # Owners: the root is listed, the principal and the books in it are theirs.
    (ALICE, "", "R"),
    (ALICE, ALICE, "RW"),
    (ALICE, f"{ALICE}/Default", "rw"),
    (BOB, f"{BOB}/Default", "rw"),
    # Another account's principal and book.
    (BOB, ALICE, ""),
    (BOB, f"{ALICE}/Default", ""),
    (ALICE, f"{BOB}/Default", ""),
    # The shared book, through each account's own link: alice edits it, bob reads it.
    (ALICE, f"{ALICE}/{SHARED}", "rw"),
    (BOB, f"{BOB}/{SHARED}", "r"),
    # ... and never through someone else's link.
    (BOB, f"{ALICE}/{SHARED}", ""),
    # A link left by a book no longer shared (owner changed or book removed) reaches nothing,
    # not even for its account, whose own books are otherwise `rw`.
    (BOB, f"{BOB}/carol@example.net.Shared", ""),
    ("bob+Shared@example.net", f"{BOB}/carol@example.net.Shared", ""),
    # +Default sees its own Default book alone.
    ("alice+Default@example.net", f"{ALICE}/Default", "rw"),
    ("alice+Default@example.net", ALICE, "R"),
    ("alice+Default@example.net", f"{ALICE}/{SHARED}", ""),
    ("alice+Default@example.net", f"{BOB}/Default", ""),
    ("alice+Default@example.net", f"{ALICE}/Other", ""),
    # ... also through its own principal, which discovery leads it to (just the book in it).
    ("alice+Default@example.net", "alice+Default@example.net", "R"),
    ("alice+Default@example.net", "alice+Default@example.net/Default", "rw"),
    ("alice@example.net", "alice+Default@example.net/Default", ""),
    ("bob+Default@example.net", "alice+Default@example.net/Default", ""),
    ("alice+Shared@example.net", "alice+Shared@example.net", "R"),
    ("alice+Shared@example.net", f"alice+Shared@example.net/{SHARED}", "rw"),
    ("bob+Shared@example.net", f"bob+Shared@example.net/{SHARED}", "r"),
    ("bob+Shared@example.net", f"alice+Shared@example.net/{SHARED}", ""),
    ("alice+Default@example.net", f"alice+Shared@example.net/{SHARED}", ""),
    # +Shared sees the shared book alone, with its account's rights on it.
    ("alice+Shared@example.net", f"{ALICE}/{SHARED}", "rw"),
    ("alice+Shared@example.net", ALICE, "R"),
    ("alice+Shared@example.net", f"{ALICE}/Default", ""),
    ("bob+Shared@example.net", f"{BOB}/{SHARED}", "r"),
    ("bob+Shared@example.net", f"{BOB}/Default", ""),
    ("bob+Default@example.net", f"{BOB}/{SHARED}", ""),
    # A book login the checker never issues gets nothing but the root.
    ("alice+Other@example.net", f"{ALICE}/Default", ""),
    ("alice+Other@example.net", ALICE, ""),
    # Nobody (no X-Remote-User) gets nothing, not even the root.
    ("", "", ""),
    ("", f"{ALICE}/Default", ""),
    # User names that are patterns: Radicale escapes what the groups captured, so `.*` is
    # literal text; the domain's dots are escaped too, so `exampleXnet` is not `example.net`.
    (".*@example.net", ALICE, ""),
    (".*@example.net", f"{ALICE}/Default", ""),
    (".*@example.net", f"{ALICE}/{SHARED}", ""),
    (".*+Shared@example.net", f"{ALICE}/{SHARED}", ""),
    ("(alice)@example.net", ALICE, ""),
    ("alice@exampleXnet", ALICE, ""),
    ("alice@exampleXnet", f"{ALICE}/Default", ""),
    ("alice@example.org", f"{ALICE}/Default", ""),
]
CALENDARS: list[tuple[str, str, str]] = [
    (ALICE, "", "R"),
    (ALICE, ALICE, "RW"),
    (ALICE, f"{ALICE}/Default", "rw"),
    (ALICE, f"{BOB}/Default", ""),
    (BOB, ALICE, ""),
    (BOB, f"{ALICE}/Default", ""),
    # Book logins are for address books: on calendars they reach the root and nothing else.
    ("alice+Default@example.net", "", "R"),
    ("alice+Default@example.net", ALICE, ""),
    ("alice+Default@example.net", f"{ALICE}/Default", ""),
    ("alice+Shared@example.net", f"{ALICE}/Default", ""),
    (".*@example.net", f"{ALICE}/Default", ""),
    ("alice@exampleXnet", f"{ALICE}/Default", ""),
]
TABLES = {"addressbooks": ADDRESSBOOKS, "calendars": CALENDARS}
CASES = [
    pytest.param(instance, user, collection, expected, id=f"{instance}:{user}:{collection}")
    for instance, table in TABLES.items()
    for user, collection, expected in table
]


@pytest.mark.parametrize(("instance", "user", "collection", "expected"), CASES)
def test_the_primary_grants_exactly_the_table(
    rights: dict[tuple[str, str], Rights], instance: str, user: str, collection: str, expected: str
) -> None:
    assert permissions(rights["nj-web", instance], user, collection) == expected


@pytest.mark.parametrize(("instance", "user", "collection", "expected"), CASES)
def test_the_replica_grants_the_same_reads_and_no_write(
    rights: dict[tuple[str, str], Rights], instance: str, user: str, collection: str, expected: str
) -> None:
    granted = permissions(rights["sea-web", instance], user, collection)
    assert not {"w", "W"} & set(granted)
    assert granted == expected.replace("w", "").replace("W", "")


def test_the_tables_cover_every_section_of_the_rights_files(tmp_path: Path) -> None:
    """A section no table entry reaches is untested: each is switched off in turn (its
    permissions emptied, or opened to `rw` for a section that denies) and must change what at
    least one entry of the table gets."""
    for instance, table in TABLES.items():
        text = dav_file(LAB, "nj-web", dav.rights_path(instance))
        sections = re.findall(r"^\[([a-z-]+)\]$", text, re.MULTILINE)
        assert sections
        for section in sections:
            disabled = re.sub(
                rf"(^\[{section}\]\n(?:.+\n)*?permissions:)( \S+)?$",
                lambda match: match[1] + ("" if match[2] else " rw"),
                text,
                flags=re.M,
            )
            assert disabled != text
            path = tmp_path / f"{instance}-{section}.rights"
            path.write_text(disabled)
            crippled = radicale_rights(path)
            assert any(
                permissions(crippled, user, collection) != expected
                for user, collection, expected in table
            ), f"no entry of the {instance} table reaches section [{section}]"


@pytest.mark.parametrize("instance", dav.INSTANCES)
def test_each_instance_trusts_nginx_for_the_user_and_its_rights_file_for_the_rest(
    tmp_path: Path, instance: str
) -> None:
    """The rendered configuration as Radicale 3.1.8 reads it (its schema checks every value)."""
    path = tmp_path / "radicale.conf"
    path.write_text(dav_file(LAB, "nj-web", dav.config_path(instance)))
    configuration = radicale_config.load([(str(path), False)])
    assert configuration.get("auth", "type") == "http_x_remote_user"
    assert configuration.get("rights", "type") == "from_file"
    assert configuration.get("rights", "file") == dav.rights_path(instance)
    assert configuration.get("storage", "filesystem_folder") == f"{dav.DATA_DIR}/{instance}"
    assert configuration.get("web", "type") == "none"


@pytest.mark.parametrize(("topology", "host_name"), WEB_HOSTS)
def test_every_rendered_rights_file_is_read_by_radicale(
    tmp_path: Path, topology: Topology, host_name: str
) -> None:
    """Production has no shared book: its files lose those sections and still work."""
    owner = f"alice@{topology.domain}"
    primary = replication.is_primary(topology, topology.host(host_name))
    for instance in dav.INSTANCES:
        engine = rights_for(topology, host_name, instance, tmp_path)
        assert permissions(engine, owner, f"{owner}/Default") == ("rw" if primary else "r")
        assert permissions(engine, f"bob@{topology.domain}", f"{owner}/Default") == ""


# --- The follower script -------------------------------------------------------------------------

STUB = """#!/bin/sh
# rsync-ssl as the test wants it: records its arguments, one per line, and the certificate
# settings it was handed; exits with $STUB_EXIT.
{{
    printf 'call\\n'
    printf '%s\\n' "$@"
    printf 'env %s %s %s %s\\n' "$RSYNC_SSL_PORT" "$RSYNC_SSL_CERT" "$RSYNC_SSL_KEY" \\
        "$RSYNC_SSL_CA_CERT"
}} >>"{log}"
exit "${{STUB_EXIT:-0}}"
"""
# `sleep` (no builtin in dash, Debian's sh) ends the follow loop after its first round: the
# script runs under set -e, so it exits with the stub's status.
SLEEP_STUB = """#!/bin/sh
printf '%s\\n' "$@" >>"{log}"
exit 75
"""


@dataclass
class Follower:
    """A web host's bulwark-replica and its dav.conf, with the configuration and state
    directories moved under a temporary directory, and stubs first on PATH."""

    root: Path
    host_name: str = "sea-web"
    script: Path = field(init=False)
    state_dir: Path = field(init=False)
    rsync_log: Path = field(init=False)
    sleep_log: Path = field(init=False)
    work: Path = field(init=False)
    path: str = field(init=False)  # PATH, the stubs first

    def __post_init__(self) -> None:
        config_dir = self.root / "config"
        self.state_dir = self.root / "state"
        self.work = self.root / "work"
        stubs = self.root / "bin"
        for directory in (config_dir, self.state_dir, self.work, stubs):
            directory.mkdir()
        text = dav_file(LAB, self.host_name, replication.SCRIPT)
        for real, moved in (
            (replication.CONFIG_DIR, config_dir),
            (replication.STATE_DIR, self.state_dir),
        ):
            assert real in text
            text = text.replace(real, str(moved))
        self.script = self.root / "bulwark-replica"
        self.script.write_text(text)
        config = dav_file(LAB, self.host_name, dav.TREE.follow_config)
        (config_dir / "dav.conf").write_text(config)
        self.rsync_log = self.root / "rsync.log"
        self.sleep_log = self.root / "sleep.log"
        (stubs / "rsync-ssl").write_text(STUB.format(log=self.rsync_log))
        (stubs / "sleep").write_text(SLEEP_STUB.format(log=self.sleep_log))
        for stub in stubs.iterdir():
            stub.chmod(0o755)
        self.path = f"{stubs}:{os.environ['PATH']}"

    @property
    def state(self) -> Path:
        return self.state_dir / "dav.source"

    def run(self, *arguments: str, rsync_exit: int = 0) -> subprocess.CompletedProcess[str]:
        """`sh bulwark-replica ARGUMENTS` in a directory of its own, bounded in time."""
        environment = {**os.environ, "PATH": self.path, "STUB_EXIT": str(rsync_exit)}
        return subprocess.run(
            ["sh", str(self.script), *arguments],
            cwd=self.work,
            env=environment,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def calls(self) -> list[list[str]]:
        """The stub's calls: each its arguments, then its `env ...` line."""
        if not self.rsync_log.exists():
            return []
        return [
            call.strip("\n").split("\n")
            for call in self.rsync_log.read_text().split("call\n")
            if call
        ]


@pytest.fixture
def follower(tmp_path: Path) -> Follower:
    return Follower(tmp_path)


FORMER_PRIMARY = "old-primary.example.net"  # not SOURCE: promote pulls from the state file


def test_promote_without_a_state_file_does_nothing(follower: Follower) -> None:
    result = follower.run("promote", "dav")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert follower.calls() == []


def test_promote_pulls_from_the_recorded_host_and_then_forgets_it(follower: Follower) -> None:
    follower.state.write_text(f"{FORMER_PRIMARY}\n")
    result = follower.run("promote", "dav")
    assert result.returncode == 0, result.stderr
    (call,) = follower.calls()
    *arguments, environment = call
    assert arguments[-2:] == [f"rsync://{FORMER_PRIMARY}/dav/", f"{dav.DATA_DIR}/"]
    assert "--delete" in arguments
    assert f"--chown={dav.USER}:{dav.USER}" in arguments
    port = dav.TREE.service.port
    assert environment.split()[1:] == [
        str(port),
        pki.HOST_CERT_PATH,
        pki.HOST_KEY_PATH,
        pki.CA_CERT_PATH,
    ]
    assert not follower.state.exists()


def test_a_failed_final_pull_fails_and_keeps_the_state_file(follower: Follower) -> None:
    """The next run must pull again: removing the file now would lose the old primary's last
    writes for good."""
    follower.state.write_text(f"{FORMER_PRIMARY}\n")
    result = follower.run("promote", "dav", rsync_exit=1)
    assert result.returncode != 0
    assert len(follower.calls()) == 1
    assert follower.state.exists()
    assert follower.state.read_text() == f"{FORMER_PRIMARY}\n"


def test_excludes_reach_rsync_as_written_never_glob_expanded(follower: Follower) -> None:
    """Files that the patterns (and the `--exclude=` words) would match as globs sit in the
    script's working directory: without `set -f` the shell would pass their names instead."""
    for name in (".Radicale.tmp-abc", "--exclude=.Radicale.tmp-abc"):
        (follower.work / name).touch()
    follower.state.write_text(f"{FORMER_PRIMARY}\n")
    assert follower.run("promote", "dav").returncode == 0
    (call,) = follower.calls()
    excludes = [argument for argument in call if argument.startswith("--exclude")]
    assert excludes == [f"--exclude={pattern}" for pattern in dav.LOCAL_FILES]


def test_one_round_of_following_records_the_source_and_the_sync(follower: Follower) -> None:
    result = follower.run("follow", "dav")
    assert result.returncode == 75  # the sleep stub's: the loop reached its pause
    (call,) = follower.calls()
    source = LAB.fqdn(LAB.host("nj-web"))
    assert call[-3:-1] == [f"rsync://{source}/dav/", f"{dav.DATA_DIR}/"]
    assert follower.state.read_text() == f"{source}\n"
    assert (follower.state_dir / "dav.synced").exists()
    assert follower.sleep_log.read_text() == f"{replication.FOLLOW_INTERVAL}\n"


def test_a_failed_round_of_following_still_records_whom_it_follows(follower: Follower) -> None:
    """The source is recorded before the first pull: a replica made primary before it ever
    synced must still owe a pull, never take writes on an empty copy. Nothing says synced."""
    result = follower.run("follow", "dav", rsync_exit=1)
    assert result.returncode == 75
    primary = LAB.fqdn(LAB.host("nj-web"))
    assert f"pull from {primary} failed" in result.stderr
    assert follower.state.read_text().strip() == primary
    assert not (follower.state_dir / "dav.synced").exists()


def test_the_primary_follows_nobody(tmp_path: Path) -> None:
    """Its configuration names no SOURCE: pulling with --delete would erase its own writes."""
    follower = Follower(tmp_path, "nj-web")
    result = follower.run("follow", "dav")
    assert result.returncode == 0, result.stderr
    assert "nothing to follow" in result.stdout
    assert follower.calls() == []
    assert not follower.state.exists()


@pytest.mark.parametrize(("topology", "host_name"), WEB_HOSTS)
def test_the_follower_script_parses(tmp_path: Path, topology: Topology, host_name: str) -> None:
    """Every host gets its own rendering: `sh -n` catches a template that breaks only some."""
    script = tmp_path / "bulwark-replica"
    script.write_text(dav_file(topology, host_name, replication.SCRIPT))
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# --- The accounts' collections -------------------------------------------------------------------

# What converge creates before the collections: the data directory and one per instance.
CREATED_BEFORE = {dav.DATA_DIR, *(f"{dav.DATA_DIR}/{name}" for name in dav.INSTANCES)}


def test_collections_come_after_their_parents() -> None:
    """collections_created makes each one with `install -d` (no -p, so every directory gets
    its owner and mode) in this order: a parent later in the list would fail the deploy."""
    directories, collections, links = dav.collection_paths(LAB)
    for index, directory in enumerate(directories):
        parent = posixpath.dirname(directory)
        assert parent in directories[:index] or parent in CREATED_BEFORE, directory
    for path in (*collections, *links):
        assert posixpath.dirname(path) in directories, path


def test_every_account_has_its_default_collections_and_a_link_to_the_shared_book() -> None:
    """The links are relative (they survive replication to another data directory) and must
    land on the one shared book, outside every principal, or on the account's own Default book
    (from the principal of its `+Default` login)."""
    _, collections, links = dav.collection_paths(LAB)
    shared = {path for path in collections if path.startswith(f"{dav.SHARED_DIR}/")}
    assert shared == {f"{dav.SHARED_DIR}/{SHARED}"}
    books = dav.collection_root("addressbooks")

    def target(link: str) -> str:
        return posixpath.normpath(posixpath.join(posixpath.dirname(link), links[link]))

    for account in LAB.accounts:
        address = account.address(LAB.domain)
        for instance in dav.INSTANCES:
            assert f"{dav.collection_root(instance)}/{address}/Default" in collections
        assert target(f"{books}/{address}/{SHARED}") in shared
        assert target(f"{books}/{account.user}+Shared@{LAB.domain}/{SHARED}") in shared
        default = target(f"{books}/{account.user}+Default@{LAB.domain}/Default")
        assert default == f"{books}/{address}/Default"
    assert len(links) == 3 * len(LAB.accounts)


def test_collection_props_name_their_kind() -> None:
    """Radicale serves a collection as a calendar or an address book by its props' tag."""
    _, collections, _ = dav.collection_paths(LAB)
    for path, props in collections.items():
        instance = path.removeprefix(f"{dav.DATA_DIR}/").split("/")[0]
        assert json.loads(props)["tag"] == dav.INSTANCES[instance], path


def test_collection_paths_are_deterministic() -> None:
    """They are an operation's arguments: a different order would be a different plan."""
    assert dav.collection_paths(LAB) == dav.collection_paths(LAB)


def test_without_a_shared_book_there_is_no_link_to_one() -> None:
    _, collections, links = dav.collection_paths(PRODUCTION)
    assert all(path.endswith("/Default") for path in links)  # the +Default logins' only
    assert len(links) == len(PRODUCTION.accounts)
    assert not any(path.startswith(f"{dav.SHARED_DIR}/") for path in collections)


# --- The write switch ----------------------------------------------------------------------------

READS = ("GET", "HEAD", "OPTIONS", "PROPFIND", "REPORT")
WRITES = ("PUT", "DELETE", "MKCOL", "PROPPATCH", "MOVE", "POST", "MKCALENDAR", "COPY", "LOCK")


def switch(topology: Topology, host_name: str) -> dict[str, dict[str, str]]:
    """The write switch of `host_name`: refused, replica header and refusal text per method."""
    text = dav_file(topology, host_name, web.DAV_WRITES_CONFIG)
    return {
        method: {
            variable: mapped(request_map(text, variable), method)
            for variable in ("$bulwark_dav_refused", "$bulwark_dav_replica")
        }
        for method in (*READS, *WRITES)
    }


def assert_takes_writes(topology: Topology, host_name: str) -> None:
    for method, values in switch(topology, host_name).items():
        assert values == {"$bulwark_dav_refused": "0", "$bulwark_dav_replica": '""'}, method


def assert_read_only(topology: Topology, host_name: str, primary: str) -> None:
    for method, values in switch(topology, host_name).items():
        assert values["$bulwark_dav_refused"] == ("1" if method in WRITES else "0"), method
        assert values["$bulwark_dav_replica"] == '"read-only"', method
    site = topology.host(host_name).site
    text = dav_file(topology, host_name, web.DAV_WRITES_CONFIG)
    refusal = request_map(text, "$bulwark_dav_refusal")["default"]
    assert f"site {site} " in refusal
    assert refusal.endswith(f'primary site {primary}"')


def test_the_primary_takes_every_method_and_the_replica_only_reads() -> None:
    assert_takes_writes(LAB, "nj-web")
    assert_read_only(LAB, "sea-web", primary="nj")


def test_moving_the_primary_swaps_the_write_switches() -> None:
    assert_takes_writes(LAB_SEA_PRIMARY, "sea-web")
    assert_read_only(LAB_SEA_PRIMARY, "nj-web", primary="sea")
    assert switch(LAB_SEA_PRIMARY, "nj-web") == switch(LAB, "sea-web")


def dav_servers(topology: Topology, host_name: str) -> list[Block]:
    """The HTTPS servers of the dav role's names in `host_name`'s nginx.conf."""
    names = set(catalogue.host_names([dav.ROLE], topology.domain))
    return [
        server
        for server in http_block(topology, host_name).named("server")
        if ports(server) == ["443"] and names & set(server_names(server))
    ]


@pytest.mark.parametrize("host_name", ["nj-web", "sea-web"])
def test_nginx_includes_the_write_switch_and_every_dav_server_obeys_it(host_name: str) -> None:
    """The refusal comes before any location, so no method slips through a redirect; nginx.conf
    (whichever web role writes it) includes the dav role's switch."""
    http = http_block(LAB, host_name)
    assert ["include", web.DAV_WRITES_CONFIG] in http.directives
    servers = dav_servers(LAB, host_name)
    assert len(servers) == len(web.DAV_BACKENDS)
    for server in servers:
        (refusal,) = server.named("if")
        assert refusal.header == ["if", "($bulwark_dav_refused)"]
        assert refusal.directives == [["return", "403", '"$bulwark_dav_refusal\\n"']]


# --- The credential checker's accounts file ------------------------------------------------------


def test_the_accounts_file_holds_every_app_password_and_no_main_password(
    lab_vault: Vault, tmp_path: Path
) -> None:
    """The checker gets app passwords only: the main password, which changes them, stays out
    of reach of a web host (and of anyone who reads its credential)."""
    files = front_files(LAB, "nj-web", lab_vault, reveal=True)
    text = files[web.WEBAUTH_ACCOUNTS]
    path = tmp_path / "accounts.json"
    path.write_text(text)
    config = webauth.load_config(path)
    assert config.domain == LAB.domain
    assert set(config.accounts) == {account.user for account in LAB.accounts}
    for account in LAB.accounts:
        wanted = [
            lab_vault.get(app_password_name(account.user, label)).reveal()
            for label in account.app_passwords
        ]
        assert list(config.accounts[account.user]) == wanted
        main = lab_vault.get(main_password_name(account.user)).reveal()
        assert main.startswith("$argon2id$")
        assert main not in text


# --- nginx.conf ----------------------------------------------------------------------------------

HEADERS = {
    "Strict-Transport-Security": f'"max-age={web.HSTS_MAX_AGE}; includeSubDomains"',
    "Content-Security-Policy": f'"{web.CONTENT_SECURITY_POLICY}"',
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def http_servers(host_name: str) -> list[Block]:
    return http_block(LAB, host_name).named("server")


@pytest.mark.parametrize("host_name", ["nj-web", "sea-web"])
def test_every_served_response_carries_the_security_headers(host_name: str) -> None:
    """Always, on errors too; and no location sets a header of its own, which would make
    nginx drop every header of the server. Every server of every web role: the files
    servers (webdav, myfiles, the content origin) have the files' own policy (the sandbox)
    instead of the DAV one, which the mailconfig servers share."""
    servers = http_servers(host_name)
    defaults = [server for server in servers if is_default(server)]
    assert sorted(port for server in defaults for port in ports(server)) == ["443", "80"]
    served = [server for server in servers if not is_default(server)]
    mailconfig = len(catalogue.service("https-mailconfig").names)
    https = mailconfig + len(web.DAV_BACKENDS) + len(catalogue.service("https-files").names) + 1
    assert sorted(port for server in served for port in ports(server)) == ["443"] * https + ["80"]
    for server in served:
        expected = dict(HEADERS)
        files = any(
            name.split(".")[0] in catalogue.service("https-files").names
            or name == LAB.content_origin
            for name in server_names(server)
        )
        if files and "443" in ports(server):
            expected["Content-Security-Policy"] = f'"{web.FILES_CSP}"'
        found = headers(server)
        for name, value in expected.items():
            assert found.get(name) == [value, "always"], (server.header, name)
        for block in server.walk():
            if block is not server:
                assert not block.directive("add_header"), block.header


@pytest.mark.parametrize("host_name", ["nj-web", "sea-web"])
def test_backends_get_the_checked_principal_and_never_the_password(host_name: str) -> None:
    """Radicale trusts X-Remote-User: nginx must set it from the check, overwriting a
    client's, and must not hand the app password on."""
    backends = {}
    for server in dav_servers(LAB, host_name):
        for location in server.named("location"):
            proxied = location.directive("proxy_pass")
            if not proxied or web.WEBAUTH_SOCKET in proxied[0][0]:
                continue
            ((target,),) = proxied
            backends[target] = location
            assert location.directive("auth_request") == [["/.bulwark-auth"]]
            sent = proxy_headers(location)
            assert sent["X-Remote-User"] == "$bulwark_user"
            assert sent["Authorization"] == '""'
    assert sorted(backends) == sorted(
        f"http://unix:{web.backend_socket(instance)}:/" for instance in dav.INSTANCES
    )


@pytest.mark.parametrize("host_name", ["nj-web", "sea-web"])
def test_nginx_names_no_version(host_name: str) -> None:
    assert http_block(LAB, host_name).directive("server_tokens") == [["off"]]


@pytest.mark.parametrize(("host_name", "peer"), [("nj-web", "sea-web"), ("sea-web", "nj-web")])
def test_replication_passes_only_the_other_sites_web_host(host_name: str, peer: str) -> None:
    """Each replicated web role's listener: the peer site's web host reaches its rsync, any
    other client certificate the refusal."""
    (stream,) = nginx_conf(LAB, host_name).named("stream")
    assert stream.directive("ssl_verify_client") == [["on"]]
    trees = {"dav": dav.TREE, "files": files.TREE}
    for role, tree in trees.items():
        (names,) = stream.named("map", "$ssl_client_s_dn", f"$bulwark_replica_{role}")
        entries = {words[0]: words[1:] for words in names.directives}
        assert entries == {
            f'"CN={peer}.{LAB.domain}"': [f"unix:{tree.socket}"],
            "default": [f"unix:{replication.SOCKET_DIR}/refused.sock"],
        }
    assert len(stream.named("map", "$ssl_client_s_dn")) == len(trees)
