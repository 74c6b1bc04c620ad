"""The files role, rendered offline from the lab inventory (nj primary, sea its replica), and the
pure pieces it brought: quotas and the content origin in the inventory, the web role that
writes nginx's configuration.

- nginx's files servers: every location that serves files is checked first, never hands the
  password on, and names the account's tree itself (X-Bulwark-Root); the content origin is
  sandboxed, read-only, without login or cookie.
- Apache's rewrite rules, run here on paths and roots a client could bring: a request reaches
  the tree nginx named, or nothing.
- pure-ftpd's command line: TLS required, chrooted, the catalogue's passive range, logins by
  the checker's extauth socket.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import uuid
from pathlib import Path

import pytest
from mutations import set_accounts, set_platform
from nginxconf import (
    Block,
    front_files,
    headers,
    http_block,
    mapped,
    ports,
    proxy_headers,
    request_map,
    server_names,
)
from test_dav_role import LAB, with_primary

from bulwark import catalogue, registry, tls, web
from bulwark.audit import SealedSecrets, write_report
from bulwark.inventory import load_topology
from bulwark.lab.hostsfile import host_names
from bulwark.render import render_role_files
from bulwark.topology import DEFAULT_FILES_QUOTA, Topology
from bulwark.validation import TopologyError
from roles import dav, files

REPO = Path(__file__).resolve().parents[2]


WEB_HOSTS = ("nj-web", "sea-web")


def files_file(topology: Topology, host_name: str, path: str) -> str:
    """A file the files role renders for `host_name` (sealed secrets)."""
    rendered = render_role_files(files, topology, topology.host(host_name), SealedSecrets(), False)
    (content,) = [item.content for item in rendered if item.path == path]
    return content


# --- nginx: the files servers --------------------------------------------------------------------


def files_servers(host_name: str) -> dict[str, Block]:
    """label (webdav, myfiles, content) -> its HTTPS server in `host_name`'s nginx.conf."""
    servers = {}
    for server in http_block(LAB, host_name).named("server"):
        if ports(server) != ["443"]:
            continue
        names = server_names(server)
        if names == [LAB.content_origin]:
            servers["content"] = server
        for label in catalogue.service("https-files").names:
            if catalogue.qualified_name(label, LAB.domain) in names:
                servers[label] = server
    assert sorted(servers) == ["content", "myfiles", "webdav"]
    return servers


def served_locations(server: Block) -> list[Block]:
    """The locations of `server` that proxy to the files' backend (Apache), directly or, for
    PROPFIND, through the checker (the upstream mapped by method: test_files_routing.py)."""
    backends = (f"http://unix:{web.backend_socket('files')}:", "http://$bulwark_files_upstream")
    return [
        location
        for location in server.named("location")
        if any(words[0].startswith(backends) for words in location.directive("proxy_pass"))
    ]


def auth_location(server: Block) -> Block:
    (location,) = server.named("location", "=", "/.bulwark-auth")
    return location


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_every_files_location_is_checked_and_gets_no_password(host_name: str) -> None:
    """Each location serving files asks the files checker first, takes the tree it names and
    sends Apache that, replacing whatever a client sent; Apache never sees the password. The
    check itself is internal (no client reaches it directly) and carries no body."""
    for label, server in files_servers(host_name).items():
        locations = served_locations(server)
        assert locations, label
        for location in locations:
            assert location.directive("auth_request") == [["/.bulwark-auth"]], label
            assert ["$bulwark_root", "$upstream_http_x_bulwark_root"] in location.directive(
                "auth_request_set"
            ), label
            sent = proxy_headers(location)
            assert sent["X-Bulwark-Root"] == "$bulwark_root", label
            assert sent["Authorization"] == '""', label
        check = auth_location(server)
        assert ["internal"] in check.directives, label
        ((target,),) = check.directive("proxy_pass")
        assert target == f"http://unix:{web.FILESAUTH_SOCKET}:/", label
        assert check.directive("proxy_pass_request_body") == [["off"]], label
        # Only locations that serve files or check: nothing else reaches a backend.
        for location in server.named("location"):
            if location not in locations and location is not check:
                assert location.header == ["location", "@refused"], location.header
                assert not [block for block in location.walk() if block.directive("proxy_pass")]


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_the_files_checker_is_told_the_form_the_path_and_the_method(host_name: str) -> None:
    """The tree form and the rooted form are told apart by the checker (the same path means a
    different file), and it sees what decides the answer: path, method, destination, size."""
    servers = files_servers(host_name)
    for label, mode in (("webdav", "tree"), ("myfiles", "rooted")):
        sent = proxy_headers(auth_location(servers[label]))
        assert sent["X-Bulwark-Realm"] == "files"
        assert sent["X-Bulwark-Files-Mode"] == mode
        assert sent["X-Original-URI"] == "$request_uri"
        assert sent["X-Original-Method"] == "$request_method"
        assert sent["X-Destination"] == "$http_destination"
        assert sent["X-Content-Length"] == "$content_length"
        assert sent["X-Expected-Entity-Length"] == "$http_x_expected_entity_length"


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_the_checkers_refusals_become_their_status(host_name: str) -> None:
    """Over quota is 507, no size 411, a browser 303 to its signed link; anything else 403."""
    for label in ("webdav", "myfiles"):
        server = files_servers(host_name)[label]
        (location,) = served_locations(server)
        assert location.directive("error_page") == [["403", "=", "@refused"]]
        (refused,) = server.named("location", "@refused")
        answers = {
            " ".join(block.header[1:]): block.directive("return")[0]
            for block in refused.named("if")
        }
        assert answers == {
            "($bulwark_refusal = quota)": ["507", '"over quota\\n"'],
            "($bulwark_refusal = length-required)": [
                "411",
                '"a size is needed (Content-Length or X-Expected-Entity-Length)\\n"',
            ],
            "($bulwark_refusal = content)": ["303", "$bulwark_location"],
        }
        assert refused.directive("return") == [["403", '"forbidden\\n"']]


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_the_content_origin_serves_files_sandboxed_and_read_only(host_name: str) -> None:
    """The content origin: its own name, the files' CSP (a sandbox allowing nothing), nosniff,
    GET (and so HEAD) only, no login header to the checker or Apache, no cookie either way."""
    server = files_servers(host_name)["content"]
    assert server_names(server) == [LAB.content_origin]
    found = headers(server)
    assert found["Content-Security-Policy"] == [f'"{web.FILES_CSP}"', "always"]
    assert "sandbox" in web.FILES_CSP.split("; ")
    assert "default-src 'none'" in web.FILES_CSP.split("; ")
    assert found["X-Content-Type-Options"] == ["nosniff", "always"]
    assert found["Strict-Transport-Security"][0].startswith('"max-age=')
    assert found["X-Frame-Options"] == ["DENY", "always"]
    (location,) = served_locations(server)
    (only,) = location.named("limit_except")
    assert only.header == ["limit_except", "GET"]
    assert only.directives == [["deny", "all"]]
    sent = proxy_headers(location)
    assert sent["Authorization"] == '""'
    assert sent["Cookie"] == '""'
    assert ["Set-Cookie"] in location.directive("proxy_hide_header")
    # Apache is asked under the webdav name: the tree form, whose rules check the root.
    assert sent["Host"] == catalogue.qualified_name("webdav", LAB.domain)
    check = auth_location(server)
    assert proxy_headers(check)["Authorization"] == '""'
    assert proxy_headers(check)["X-Bulwark-Realm"] == "content"


def test_markup_opens_on_the_content_origin_only_as_a_download() -> None:
    """Content-Disposition is `attachment` unless the type can run nothing."""
    http = http_block(LAB, "nj-web")
    (disposition,) = http.named("map", "$sent_http_content_type", "$bulwark_content_disposition")
    entries = {words[0]: words[1:] for words in disposition.directives}
    assert entries.pop("default") == ["attachment"]
    ((pattern, value),) = entries.items()
    assert value == ['""']
    inline = re.compile(pattern.strip('"').removeprefix("~"))
    for content_type in ("text/plain", "image/png", "image/jpeg", "audio/ogg", "video/mp4"):
        assert inline.match(content_type), content_type
    for content_type in ("text/html", "image/svg+xml", "application/pdf", "text/xml", "text/x"):
        assert not inline.match(content_type), content_type


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_port_80_redirects_the_files_names_and_not_ftp(host_name: str) -> None:
    """Port 80 redirects the names nginx serves on 443 (the content origin's too) and no name
    of another daemon: https://ftp.DOMAIN/ would meet a refused handshake."""
    (redirect,) = [
        server
        for server in http_block(LAB, host_name).named("server")
        if ports(server) == ["80"] and server_names(server)
    ]
    names = set(server_names(redirect))
    site = LAB.host(host_name).site
    for label in ("webdav", "myfiles"):
        assert catalogue.qualified_name(label, LAB.domain) in names
        assert catalogue.qualified_name(label, LAB.domain, site) in names
    assert LAB.content_origin in names
    assert not {name for name in names if name.startswith("ftp.")}
    served = {name for server in files_servers(host_name).values() for name in server_names(server)}
    assert served <= names


# --- the write switch and the replica ------------------------------------------------------------

READS = ("GET", "HEAD", "OPTIONS", "PROPFIND")
WRITES = ("PUT", "DELETE", "MKCOL", "PROPPATCH", "MOVE", "COPY", "LOCK", "UNLOCK", "POST")


def files_switch(topology: Topology, host_name: str) -> dict[str, str]:
    text = files_file(topology, host_name, web.writes_config("files"))
    entries = request_map(text, "$bulwark_files_refused")
    return {method: mapped(entries, method) for method in (*READS, *WRITES)}


def test_the_replica_serves_files_read_only() -> None:
    """At the secondary site nginx refuses every writing method, its services run on a
    read-only tree, and it follows the primary's files host; the primary refuses nothing."""
    assert set(files_switch(LAB, "nj-web").values()) == {"0"}
    replica = files_switch(LAB, "sea-web")
    assert {method for method, refused in replica.items() if refused == "1"} == set(WRITES)
    refusal = request_map(
        files_file(LAB, "sea-web", web.writes_config("files")), "$bulwark_files_refusal"
    )
    assert "read-only replica" in refusal["default"] and "primary site nj" in refusal["default"]
    for unit in (files.FTP_UNIT, files.APACHE_UNIT, web.FILESAUTH_UNIT):
        primary = files_file(LAB, "nj-web", f"/etc/systemd/system/{unit}")
        secondary = files_file(LAB, "sea-web", f"/etc/systemd/system/{unit}")
        assert f"ReadOnlyPaths={files.DATA_DIR}\n" in secondary, unit
        assert f"ReadOnlyPaths={files.DATA_DIR}" not in primary, unit
        assert re.search(rf"^ReadWritePaths=.*{re.escape(files.DATA_DIR)}", primary, re.M), unit
    follow = files_file(LAB, "sea-web", files.TREE.follow_config)
    assert f"SOURCE={LAB.fqdn(LAB.host('nj-web'))}\n" in follow
    assert f"PORT={catalogue.service('files-replication').port}\n" in follow
    assert "SOURCE=\n" in files_file(LAB, "nj-web", files.TREE.follow_config)


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_nginx_includes_the_files_switch_and_both_files_servers_obey_it(host_name: str) -> None:
    """The refusal comes before any location (and before the login check); the content origin
    takes GET alone anyway."""
    http = http_block(LAB, host_name)
    assert ["include", web.writes_config("files")] in http.directives
    servers = files_servers(host_name)
    for label in ("webdav", "myfiles"):
        (refusal,) = servers[label].named("if")
        assert refusal.header == ["if", "($bulwark_files_refused)"]
        assert refusal.directives == [["return", "403", '"$bulwark_files_refusal\\n"']]
        assert headers(servers[label])["X-Bulwark-Replica"] == ["$bulwark_files_replica", "always"]


def test_moving_the_primary_moves_the_files_writes() -> None:
    sea_primary = with_primary(LAB, "sea")
    assert files_switch(sea_primary, "nj-web") == files_switch(LAB, "sea-web")
    assert files_switch(sea_primary, "sea-web") == files_switch(LAB, "nj-web")


# --- Apache: only the tree nginx names -----------------------------------------------------------

DATA = files.DATA_DIR
ALICE = "alice.example.net"
BOB = "bob.example.net"
_WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


@dataclasses.dataclass
class VirtualHost:
    names: list[str]
    directives: list[list[str]]  # (RewriteCond|RewriteRule|..., args...) in order


def apache_config(host_name: str = "nj-web") -> str:
    return files_file(LAB, host_name, files.APACHE_CONFIG)


def virtual_hosts(text: str) -> list[VirtualHost]:
    hosts = []
    for body in re.findall(r"^<VirtualHost [^>]+>$(.*?)^</VirtualHost>$", text, re.M | re.S):
        directives = [
            [quoted or bare for quoted, bare in _WORD.findall(line)]
            for line in body.splitlines()
            if line.strip() and not line.strip().startswith(("#", "<", "Require"))
        ]
        names = [
            name
            for words in directives
            if words[0] in ("ServerName", "ServerAlias")
            for name in words[1:]
        ]
        names = [re.sub(r"^https://|:443$", "", name) for name in names]
        hosts.append(VirtualHost(names, directives))
    return hosts


def _expand(text: str, rule: re.Match[str], cond: re.Match[str] | None, root: str | None) -> str:
    """mod_rewrite's expansion of $N (the rule's groups), %N (the last condition's) and
    %{HTTP:X-Bulwark-Root} (the header; empty when absent)."""
    text = text.replace("%{HTTP:X-Bulwark-Root}", root or "")
    text = re.sub(r"\$(\d)", lambda m: rule.group(int(m[1])) or "", text)
    return re.sub(r"%(\d)", lambda m: (cond.group(int(m[1])) if cond else "") or "", text)


def rewrite(vhost: VirtualHost, path: str, root: str | None) -> str | None:
    """Where mod_rewrite sends `path` with X-Bulwark-Root `root` in `vhost`: a file system
    path, or None for forbidden ([F]) or no rule at all (the document root is none)."""
    conditions: list[list[str]] = []
    for words in vhost.directives:
        if words[0] == "RewriteCond":
            conditions.append(words[1:])
            continue
        if words[0] != "RewriteRule":
            continue
        pattern, substitution, *flags = words[1:]
        pending, conditions = conditions, []
        rule = re.search(pattern, path)
        if rule is None:
            continue
        cond = None
        for test, condition in pending:
            cond = re.search(condition, _expand(test, rule, cond, root))
            if cond is None:
                break
        else:
            if flags and "F" in flags[0].strip("[]").split(","):
                return None
            if substitution != "-":
                path = _expand(substitution, rule, cond, root)
            if flags and "L" in flags[0].strip("[]").split(","):
                return path
    return None


def tree(root: str) -> str:
    return f"{DATA}/{root}/{root}/files"


REQUESTS = [
    # (vhost, path, X-Bulwark-Root, where it lands)
    ("webdav", f"/{ALICE}/files/", ALICE, f"{tree(ALICE)}/"),
    ("webdav", f"/{ALICE}/files", ALICE, tree(ALICE)),
    ("webdav", f"/{ALICE}/files/a/b.txt", ALICE, f"{tree(ALICE)}/a/b.txt"),
    ("webdav", f"/{BOB}/files/x.txt", ALICE, None),  # another account's tree
    ("webdav", f"/{ALICE}/files/x.txt", BOB, None),
    ("webdav", f"/{ALICE}/files/x.txt", None, None),  # nginx named no tree
    ("webdav", f"/{ALICE}/files/x.txt", "", None),
    ("webdav", f"/{ALICE}/other/x.txt", ALICE, None),  # outside files/
    ("webdav", f"/{ALICE}/", ALICE, None),
    ("webdav", "/", ALICE, None),
    ("webdav", "/../files/x", "..", None),
    ("webdav", f"/{ALICE}/files/", f"{ALICE}/../{BOB}", None),
    ("webdav", "/.ftpquota/files/", ".ftpquota", None),
    ("webdav", f"/{ALICE}|{ALICE}/files/", f"{ALICE}|{ALICE}", None),
    ("myfiles", "/", ALICE, f"{tree(ALICE)}/"),
    ("myfiles", "/a/b.txt", ALICE, f"{tree(ALICE)}/a/b.txt"),
    ("myfiles", "/x.txt", BOB, f"{tree(BOB)}/x.txt"),
    ("myfiles", "/x.txt", None, None),
    ("myfiles", "/x.txt", "", None),
    ("myfiles", "/x.txt", "..", None),
    ("myfiles", "/x.txt", f"../{BOB}", None),
    ("myfiles", "/x.txt", "/etc", None),
    ("myfiles", "/x.txt", ".hidden", None),
]


def test_apache_serves_only_the_tree_nginx_names() -> None:
    """Apache's rules on the paths and roots a request could carry: the account's tree that
    X-Bulwark-Root names, or forbidden; a name it does not know lands in a host that serves
    nothing."""
    text = apache_config()
    default, *named = virtual_hosts(text)
    assert default.names == ["localhost"]
    assert not [words for words in default.directives if words[0].startswith("Rewrite")]
    assert re.search(r"<VirtualHost [^>]+>\s+ServerName localhost\s+<Location />\s+"
                     r"Require all denied", text)  # fmt: skip
    by_label = {}
    for vhost in named:
        (label,) = {name.split(".")[0] for name in vhost.names}
        by_label[label] = vhost
    assert sorted(by_label) == ["myfiles", "webdav"]
    for label, path, root, expected in REQUESTS:
        assert rewrite(by_label[label], path, root) == expected, (label, path, root)


@pytest.mark.parametrize("root", [ALICE, BOB, "..", "", None, "a/b", f"{ALICE}|x"])
@pytest.mark.parametrize(
    "path", ["/", "/x", f"/{ALICE}/files/x", f"/{BOB}/files/", "/a/b/files/c", "//x"]
)
def test_no_path_leaves_the_named_tree(root: str | None, path: str) -> None:
    for vhost in virtual_hosts(apache_config())[1:]:
        landed = rewrite(vhost, path, root)
        if landed is not None:
            assert root and "/" not in root and not root.startswith(".")
            assert landed == tree(root) or landed.startswith(tree(root) + "/"), landed


def test_apache_listens_only_inside_its_namespace_and_serves_data_only() -> None:
    text = apache_config()
    assert re.findall(r"^Listen (.*)$", text, re.M) == [files.APACHE_LISTEN]
    assert files.APACHE_LISTEN.startswith("127.0.0.1:")
    denied = r"<Directory />\s+Options None\s+AllowOverride None\s+Require all denied"
    assert re.search(denied, text)
    granted = re.findall(r"<Directory ([^>]+)>\s+Options None\s+AllowOverride None\s+"
                         r"Require all granted", text)  # fmt: skip
    assert granted == [DATA]
    assert "SetHandler none" in text
    modules = re.findall(r"^LoadModule (\w+) ", text, re.M)
    assert not {"cgi_module", "cgid_module", "autoindex_module", "php_module"} & set(modules)
    assert "ServerTokens Prod" in text and "TraceEnable Off" in text
    unit = files_file(LAB, "nj-web", f"/etc/systemd/system/{files.APACHE_UNIT}")
    assert "PrivateNetwork=yes" in unit
    proxy = files_file(LAB, "nj-web", files.UNIT_FILES[1])
    assert f"JoinsNamespaceOf={files.APACHE_UNIT}" in proxy
    assert proxy.rstrip().endswith("CapabilityBoundingSet=")
    assert f"systemd-socket-proxyd {files.APACHE_LISTEN}" in proxy
    socket = files_file(LAB, "nj-web", files.UNIT_FILES[2])
    assert f"ListenStream={files.BACKEND_SOCKET}" in socket and "SocketMode=0660" in socket


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_each_name_nginx_serves_files_under_has_its_apache_host(host_name: str) -> None:
    """A name nginx passes on (Host) that Apache does not know would land in the host that
    serves nothing: every files name, generic and of the site, has its own rules."""
    vhosts = virtual_hosts(apache_config(host_name))[1:]
    apache = {name: vhost for vhost in vhosts for name in vhost.names}
    servers = files_servers(host_name)
    for label in ("webdav", "myfiles"):
        for name in server_names(servers[label]):
            assert apache[name] is apache[catalogue.qualified_name(label, LAB.domain)], name
    (content,) = served_locations(servers["content"])
    assert proxy_headers(content)["Host"] in apache


# --- pure-ftpd -----------------------------------------------------------------------------------


def ftpd_arguments(host_name: str) -> list[str]:
    unit = files_file(LAB, host_name, f"/etc/systemd/system/{files.FTP_UNIT}")
    (command,) = re.findall(r"^ExecStart=((?:.*\\\n)*.*)$", unit, re.M)
    return shlex.split(command.replace("\\\n", " "))


def options(arguments: list[str]) -> dict[str, str | None]:
    """--name [value] -> value (None for a flag)."""
    found: dict[str, str | None] = {}
    for index, word in enumerate(arguments):
        if word.startswith("--"):
            following = arguments[index + 1] if index + 1 < len(arguments) else "--"
            found[word] = None if following.startswith("--") else following
    return found


@pytest.mark.parametrize("host_name", WEB_HOSTS)
def test_pure_ftpd_requires_tls_chroots_and_asks_the_checker(host_name: str) -> None:
    """TLS before the login and on every data connection (--tls 3), the platform's ciphers,
    no anonymous login, every session chrooted, logins asked of the files checker's extauth
    socket (root only), passive ports exactly the catalogue's, on the host's public address."""
    arguments = ftpd_arguments(host_name)
    assert arguments[0] == "/usr/sbin/pure-ftpd"
    found = options(arguments)
    assert found["--tls"] == "3"
    assert found["--tlsciphersuite"] == ":".join(tls.TLS12_CIPHERS)
    assert all(cipher.startswith("ECDHE-") for cipher in tls.TLS12_CIPHERS)
    assert "--noanonymous" in found and found["--noanonymous"] is None
    assert "--chrooteveryone" in found and found["--chrooteveryone"] is None
    assert found["--login"] == f"extauth:{web.FILESAUTH_FTP_SOCKET}"
    low, high = catalogue.FTP_PASSIVE_PORTS
    assert found["--passiveportrange"] == f"{low}:{high}"
    assert catalogue.service("ftp-passive").ports == tuple(range(low, high + 1))
    host = LAB.host(host_name)
    assert found["--bind"] == f"{host.public_address},{catalogue.service('ftp').port}"
    assert not {"--anonymousonly", "--anonymouscanwrite", "--createhomedir"} & set(found)
    socket = files_file(LAB, host_name, web.FILESAUTH_UNIT_FILES[2])
    assert f"ListenStream={web.FILESAUTH_FTP_SOCKET}" in socket
    assert "SocketUser=root" in socket and "SocketMode=0600" in socket


# --- quotas and the accounts -----------------------------------------------------------------


def test_the_quota_reaches_the_checker_for_every_account(lab_vault) -> None:
    """The checker's accounts file (written with nginx's configuration) gives each account's
    tree and quota: alice's own (inventory/lab.py), bob the platform's default."""
    text = front_files(LAB, "nj-web", lab_vault, reveal=True)[web.WEBAUTH_ACCOUNTS]
    config = json.loads(text)
    users = {account.user: account for account in LAB.accounts}
    assert config["files_roots"] == {user: f"{user}.{LAB.domain}" for user in users}
    assert config["files_quotas"] == {
        user: LAB.account_quota(account) for user, account in users.items()
    }
    assert config["files_quotas"]["alice"] == 64 * 1024**2
    assert config["files_quotas"]["bob"] == DEFAULT_FILES_QUOTA == LAB.files_quota
    assert config["files_dir"] == files.DATA_DIR
    assert config["content_origin"] == LAB.content_origin
    for hashes in config["accounts"].values():
        assert all(value.startswith("$argon2id$") for value in hashes)


def test_a_host_without_files_tells_the_checker_nothing_of_files(lab_vault) -> None:
    dav_only = dataclasses.replace(
        LAB,
        hosts=tuple(
            dataclasses.replace(host, roles=("dav",)) if host.has_role("dav") else host
            for host in LAB.hosts
        ),
    )
    rendered = render_role_files(dav, dav_only, dav_only.host("nj-web"), lab_vault, True)
    by_path = {item.path: item.content for item in rendered}
    config = json.loads(by_path[web.WEBAUTH_ACCOUNTS])
    assert not {"files_roots", "files_quotas", "files_dir", "content_origin"} & set(config)
    nginx = by_path[web.NGINX_CONFIG]
    assert web.writes_config("files") not in nginx
    assert web.writes_config("dav") in nginx
    assert LAB.content_origin not in nginx and "webdav." not in nginx


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("500M", 500 * 1024**2),
        ("10G", 10 * 1024**3),
        ("2T", 2 * 1024**4),
        ("64K", 64 * 1024),
        ("1g", 1024**3),
        ("123456", 123456),
        (1048576, 1048576),
        (0, 0),
    ],
)
def test_files_quota_takes_bytes_and_binary_units(two_site_inventory, value, size) -> None:
    """The platform's quota and an account's own: bytes, or a number with K, M, G or T
    (powers of 1024); an account without one gets the platform's."""
    set_platform("files_quota", value)(two_site_inventory)
    topology = load_topology(two_site_inventory.write())
    assert topology.files_quota == size
    assert {topology.account_quota(account) for account in topology.accounts} == {size}
    set_accounts(
        {"user": "alice", "app_passwords": ["laptop"], "files_quota": "3M"},
        {"user": "bob", "app_passwords": ["desktop"]},
    )(two_site_inventory)
    topology = load_topology(two_site_inventory.write("with-account-quota.py"))
    quotas = {account.user: topology.account_quota(account) for account in topology.accounts}
    assert quotas == {"alice": 3 * 1024**2, "bob": size}


def test_without_any_quota_the_default_holds(two_site_inventory) -> None:
    topology = load_topology(two_site_inventory.write())
    assert topology.files_quota == DEFAULT_FILES_QUOTA == 10 * 1024**3
    assert all(account.files_quota is None for account in topology.accounts)


def quota_problems(two_site_inventory, where: str, value) -> list[str]:
    if where == "platform":
        set_platform("files_quota", value)(two_site_inventory)
    else:
        set_accounts({"user": "alice", "app_passwords": ["laptop"], "files_quota": value})(
            two_site_inventory
        )
    with pytest.raises(TopologyError) as caught:
        load_topology(two_site_inventory.write())
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize("where", ["platform", "account alice"])
@pytest.mark.parametrize("value", ["10 GB", "10GB", "1.5G", 1.5, -1, "-1M", "", "M", True, []])
def test_a_bad_quota_is_named_by_its_field(two_site_inventory, where, value) -> None:
    assert quota_problems(two_site_inventory, where, value) == [
        f"{where}.files_quota: expected bytes or a size like '500M' or '10G', got {value!r}"
    ]


# --- the content origin --------------------------------------------------------------------------

SERVED_LABELS = sorted({label for service in catalogue.SERVICES for label in service.names})


def content_origin_problems(two_site_inventory, value) -> list[str]:
    """The problems of the inventory with `value` as its content origin (none: the topology
    has it as its content origin)."""
    set_platform("content_origin", value)(two_site_inventory)
    path = two_site_inventory.write(f"origin-{uuid.uuid4().hex}.py")
    try:
        topology = load_topology(path)
    except TopologyError as error:
        return [str(problem) for problem in error.problems]
    assert topology.content_origin == value
    return []


def test_the_content_origin_is_its_own_name_and_never_a_served_one(two_site_inventory) -> None:
    """The domain itself and every name of the platform's services, generic or of a site,
    share an origin with what the content must be kept from: each is refused, by name."""
    for value in (
        "example.com",
        *(f"{label}.example.com" for label in SERVED_LABELS),
        *(f"{label}.{site}.example.com" for label in SERVED_LABELS for site in ("nj", "sea")),
    ):
        assert content_origin_problems(two_site_inventory, value) == [
            f"platform.content_origin: {value!r} is a name the platform serves: give the "
            "content its own host name"
        ], value
    for value in ("usercontent.example.com", "files.example-usercontent.net", "c.example.org"):
        assert content_origin_problems(two_site_inventory, value) == [], value


@pytest.mark.parametrize("value", ["Usercontent.example.com", "localhost", "a..b", "x_y.com", 5])
def test_a_content_origin_that_is_no_host_name_is_refused(two_site_inventory, value) -> None:
    assert content_origin_problems(two_site_inventory, value) == [
        "platform.content_origin: expected a lower-case host name like "
        f"'usercontent.example.org', got {value!r}"
    ]


def test_the_content_origin_defaults_to_usercontent_and_resolves_to_the_primary() -> None:
    assert LAB.content_origin == f"usercontent.{LAB.domain}"
    names = host_names(LAB)
    assert names[LAB.content_origin] == str(LAB.host("nj-web").public_address)
    sea = with_primary(LAB, "sea")
    assert host_names(sea)[sea.content_origin] == str(sea.host("sea-web").public_address)


# --- which web role writes nginx's configuration -------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "writer"),
    [
        (("dav", "files", "directory"), "files"),
        (("dav", "files"), "files"),
        (("files", "dav"), "files"),
        (("dav",), "dav"),
        (("files",), "files"),
        (("directory",), None),
        ((), None),
    ],
)
def test_the_last_web_role_writes_the_front(roles, writer) -> None:
    """nginx.conf includes every web role's write switch, which each role installs in its own
    run: the last web role to run writes it, so that all of them exist by then."""
    host = dataclasses.replace(LAB.host("nj-web"), roles=roles)
    writers = [role for role in web.WEB_ROLES if web.writes_front(role, host)]
    assert writers == ([writer] if writer else [])
    for role in web.WEB_ROLES:
        written = {item.path for item in web.front_files(role, host)}
        assert written == (set(web.FRONT_PATHS) if role == writer else set())


def test_web_roles_are_listed_in_deploy_order() -> None:
    """`writes_front` takes the last of WEB_ROLES: that is the last to run only if WEB_ROLES
    follows the registry's order, which deploy.py runs."""
    order = [role.name for role in registry.ROLES]
    assert sorted(web.WEB_ROLES, key=order.index) == list(web.WEB_ROLES)


def test_the_files_role_writes_the_lab_web_hosts_front() -> None:
    for host_name in WEB_HOSTS:
        host = LAB.host(host_name)
        assert web.writes_front("files", host) and not web.writes_front("dav", host)
        rendered = render_role_files(dav, LAB, host, SealedSecrets(), False)
        assert not {item.path for item in rendered} & set(web.FRONT_PATHS)


def test_the_auditors_report_names_the_content_origin_and_the_files_policy(tmp_path) -> None:
    """report.md's web-front section says where users' files open and what they may do there."""
    write_report(LAB, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert f"content origin {LAB.content_origin} by a signed link" in text
    assert f"Content-Security-Policy: {web.FILES_CSP}" in text
