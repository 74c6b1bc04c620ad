"""nginx's configuration as the web roles' tests read it: a small parser, and the rendered
front (nginx.conf and the credential checker's files) of a web host, whichever of its web
roles writes it (bulwark.web.writes_front: the last one)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import import_module

from bulwark import web
from bulwark.audit import SealedSecrets
from bulwark.render import render_role_files
from bulwark.secret import SecretStore
from bulwark.topology import Topology


@dataclass
class Block:
    """An nginx block: its header words (`server`, `location = /`), its simple directives (each
    a list of words, quotes kept) in order, and its blocks."""

    header: list[str]
    directives: list[list[str]] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def named(self, *header: str) -> list[Block]:
        """The child blocks whose header starts with `header`."""
        return [block for block in self.blocks if block.header[: len(header)] == list(header)]

    def directive(self, name: str) -> list[list[str]]:
        """The arguments of each `name` directive of this block."""
        return [words[1:] for words in self.directives if words[0] == name]

    def walk(self) -> Iterator[Block]:
        yield self
        for block in self.blocks:
            yield from block.walk()


LEXEME = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#[^\n]*|[{};]|[^\s{};"\'#]+')


def parse_nginx(text: str) -> Block:
    """nginx's configuration as blocks and directives; comments dropped."""
    stack = [Block(["main"])]
    words: list[str] = []
    for lexeme in LEXEME.findall(text):
        if lexeme.startswith("#"):
            continue
        if lexeme == "{":
            block = Block(words)
            stack[-1].blocks.append(block)
            stack.append(block)
            words = []
        elif lexeme == ";":
            stack[-1].directives.append(words)
            words = []
        elif lexeme == "}":
            assert not words, words
            stack.pop()
        else:
            words.append(lexeme)
    assert len(stack) == 1 and not words, "unbalanced braces"
    return stack[0]


def request_map(text: str, variable: str) -> dict[str, str]:
    """The entries of `map $request_method $variable`: method (or `default`) -> value."""
    (block,) = parse_nginx(text).named("map", "$request_method", variable)
    return {words[0]: " ".join(words[1:]) for words in block.directives}


def mapped(entries: dict[str, str], key: str) -> str:
    return entries.get(key, entries["default"])


def ports(server: Block) -> list[str]:
    """The ports a server block listens on (`listen ADDRESS:PORT ...`)."""
    return [words[0].rsplit(":", 1)[1] for words in server.directive("listen")]


def is_default(server: Block) -> bool:
    return any("default_server" in words for words in server.directive("listen"))


def server_names(server: Block) -> list[str]:
    return [name for words in server.directive("server_name") for name in words]


def headers(block: Block) -> dict[str, list[str]]:
    """A block's own `add_header` lines: name -> the rest of the line."""
    return {words[0]: words[1:] for words in block.directive("add_header")}


def proxy_headers(block: Block) -> dict[str, str]:
    """A block's own `proxy_set_header` lines: name -> value (as written)."""
    return {words[0]: " ".join(words[1:]) for words in block.directive("proxy_set_header")}


def front_role(topology: Topology, host_name: str):
    """The module of the web role that writes `host_name`'s nginx.conf and checker."""
    host = topology.host(host_name)
    (role,) = [role for role in web.web_roles(host) if web.writes_front(role, host)]
    return import_module(f"roles.{role}")


def front_files(
    topology: Topology, host_name: str, secrets: SecretStore, reveal: bool = False
) -> dict[str, str]:
    """The files of the role writing `host_name`'s front: path -> content."""
    role = front_role(topology, host_name)
    files = render_role_files(role, topology, topology.host(host_name), secrets, reveal)
    return {item.path: item.content for item in files}


@functools.cache
def _sealed_front(topology: Topology, host_name: str) -> dict[str, str]:
    return front_files(topology, host_name, SealedSecrets())


def nginx_conf(topology: Topology, host_name: str) -> Block:
    """`host_name`'s nginx.conf, parsed (sealed secrets; cached)."""
    return parse_nginx(_sealed_front(topology, host_name)[web.NGINX_CONFIG])


def http_block(topology: Topology, host_name: str) -> Block:
    (http,) = nginx_conf(topology, host_name).named("http")
    return http
