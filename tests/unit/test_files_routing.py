"""The files role, rendered offline from the lab inventory: how nginx sends WebDAV requests on
(PROPFIND through bulwark-filesauth, which adds RFC 4331's quota properties; every other method
straight to Apache; all of them only once the checker's auth_request has passed), and the
checker's unit, which joins Apache's network namespace to reach it."""

from __future__ import annotations

import fnmatch
import functools
import shlex

import pytest
from nginxconf import Block, parse_nginx, ports
from test_dav_role import LAB

from bulwark import web, webauth
from bulwark.audit import SealedSecrets
from bulwark.render import render_role_files
from roles import files

FILES_HOSTS = [host.name for host in LAB.hosts_with_role(files.ROLE)]
UPSTREAM = "$bulwark_files_upstream"
# Every method but PROPFIND goes straight to Apache.
OTHER_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "MKCOL", "COPY", "MOVE",
                 "PROPPATCH", "LOCK", "UNLOCK", "POST")  # fmt: skip


@functools.cache
def files_of(host_name: str) -> dict[str, str]:
    """The files role's files of `host_name`, sealed: path -> content."""
    rendered = render_role_files(files, LAB, LAB.host(host_name), SealedSecrets(), False)
    return {item.path: item.content for item in rendered}


def http_block(host_name: str) -> Block:
    (http,) = parse_nginx(files_of(host_name)[web.NGINX_CONFIG]).named("http")
    return http


def unit_settings(text: str) -> dict[str, list[str]]:
    """A systemd unit's settings: name -> each value given, in order."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, equals, value = line.partition("=")
        if equals and not line.startswith(("#", "[")):
            settings.setdefault(name, []).append(value)
    return settings


def webdav_servers(host_name: str) -> list[Block]:
    """The HTTPS servers of webdav.DOMAIN and myfiles.DOMAIN on `host_name`."""
    names = web.role_names(LAB, LAB.host(host_name), files.ROLE)
    return [
        server
        for server in http_block(host_name).named("server")
        if ports(server) == ["443"]
        and server.directive("server_name") in ([list(names["webdav"])], [list(names["myfiles"])])
    ]


@pytest.mark.parametrize("host_name", FILES_HOSTS)
def test_propfind_goes_to_the_checker_and_every_other_method_to_apache(host_name: str) -> None:
    (upstream,) = http_block(host_name).named("map", "$request_method", UPSTREAM)
    entries = {words[0]: words[1:] for words in upstream.directives}
    assert entries == {
        "PROPFIND": [f"unix:{web.FILESAUTH_SOCKET}"],
        "default": [f"unix:{files.BACKEND_SOCKET}"],
    }
    assert not set(OTHER_METHODS) & entries.keys()


@pytest.mark.parametrize("host_name", FILES_HOSTS)
def test_the_webdav_servers_send_on_only_what_the_checker_allowed(host_name: str) -> None:
    """Both ways start after the auth_request, with the tree it named, never a client's realm
    (which would make its PROPFIND an auth_request) nor its credentials."""
    servers = webdav_servers(host_name)
    assert len(servers) == 2
    for server in servers:
        (location,) = server.named("location", "/")
        assert location.directive("auth_request") == [["/.bulwark-auth"]]
        assert location.directive("proxy_pass") == [[f"http://{UPSTREAM}"]]
        headers = location.directive("proxy_set_header")
        assert ["X-Bulwark-Root", "$bulwark_root"] in headers
        assert ["X-Bulwark-Realm", '""'] in headers
        assert ["Authorization", '""'] in headers
        (auth,) = server.named("location", "=", "/.bulwark-auth")
        assert ["internal"] in auth.directives
        assert ["X-Bulwark-Realm", "files"] in auth.directive("proxy_set_header")


@pytest.mark.parametrize("host_name", FILES_HOSTS)
def test_no_way_to_apache_or_the_checker_skips_the_auth_request(host_name: str) -> None:
    """Every location proxying to Apache's socket, the checker's or the map choosing between
    them asks the checker first, but the internal auth_request location itself."""
    ways = (files.BACKEND_SOCKET, web.FILESAUTH_SOCKET, UPSTREAM)
    proxying = [
        block
        for server in http_block(host_name).named("server")
        for block in server.walk()
        if any(way in " ".join(words) for words in block.directive("proxy_pass") for way in ways)
    ]
    assert len(proxying) == 6  # webdav, myfiles, the content origin: each with its auth location
    for block in proxying:
        internal = ["internal"] in block.directives
        assert internal or block.directive("auth_request") == [["/.bulwark-auth"]], block.header
        if internal:
            assert block.directive("proxy_pass") == [[f"http://unix:{web.FILESAUTH_SOCKET}:/"]]


@pytest.mark.parametrize("host_name", FILES_HOSTS)
def test_the_checker_joins_apaches_namespace_and_is_told_its_address(host_name: str) -> None:
    rendered = files_of(host_name)
    unit = unit_settings(rendered[web.FILESAUTH_UNIT_FILES[0]])
    assert unit["JoinsNamespaceOf"] == [files.APACHE_UNIT]
    assert files.APACHE_UNIT in unit["After"][0].split()
    assert unit["Wants"] == [files.APACHE_UNIT]
    assert unit["PrivateNetwork"] == ["yes"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET"]
    (command,) = unit["ExecStart"]
    arguments = shlex.split(command.replace("${BULWARK_WEBAUTH_CACHE_SECONDS}", "60"))[1:]
    host, _, port = files.APACHE_LISTEN.partition(":")
    assert webauth._arguments(arguments).backend == (host, int(port))
    apache = rendered[files.APACHE_CONFIG].splitlines()
    assert f"Listen {files.APACHE_LISTEN}" in apache
    assert f"LimitXMLRequestBody {webauth.MAX_PROPFIND_BODY}" in apache


def test_apaches_restart_brings_the_units_joining_its_namespace_into_the_new_one() -> None:
    (restart,) = [command for command in files.APACHE_RESTART.commands if "try-restart" in command]
    # The checker by a pattern: on a fresh host it is installed after Apache's first restart.
    assert set(restart[2:]) == {files.BACKEND_UNIT, web.FILESAUTH_UNIT_PATTERN}
    assert fnmatch.fnmatch(web.FILESAUTH_UNIT, web.FILESAUTH_UNIT_PATTERN)
    assert not fnmatch.fnmatch(web.FILESAUTH_SOCKET_UNIT, web.FILESAUTH_UNIT_PATTERN)
    restarted = files.APACHE_RESTART.commands.index(("systemctl", "restart", files.APACHE_UNIT))
    assert restarted < files.APACHE_RESTART.commands.index(restart)
