"""One DAV request (or LDAP bind) from the lab's internet namespace, for integration tests that
change the lab between requests (they run on the controller, which cannot reach the public
addresses).

    bulwark lab internet -- .venv/bin/python tests/integration/davprobe.py \
        USER[/LABEL] METHOD URL [BODY]

USER is a lab account, logging in with its app password LABEL (default: its first), from the
lab's credentials file. Prints the status and the replica header as one JSON object. METHOD
BIND with an `ldaps://HOST` URL binds as the account's `cn=ADDRESS,dc=User` instead; the status
is then the bind's LDAP result code. Refuses to run outside the namespace.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

import requests
from ldap3 import RESTARTABLE, Connection, Server, Tls

from bulwark.inventory import load_topology
from bulwark.lab import paths
from bulwark.lab.accounts import lab_accounts
from bulwark.lab.plan import INTERNET_NETNS
from bulwark.lab.trust import lab_ca_file
from bulwark.secret import Secret

LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"
TIMEOUT = 30


def ldap_bind(url: str, address: str, password: Secret, ca: str) -> int:
    """The result code of a simple bind as `address` (0: success, 49: invalid credentials).
    slapd restarts on every rebuilt address book (a contact written by an earlier test); the
    client connects again, as mail clients do (ldap3's RESTARTABLE strategy)."""
    tls = Tls(ca_certs_file=ca, validate=ssl.CERT_REQUIRED)
    server = Server(urlsplit(url).hostname, port=636, use_ssl=True, tls=tls)
    connection = Connection(
        server, f"cn={address},dc=User", password.reveal(), client_strategy=RESTARTABLE
    )
    connection.strategy.restartable_sleep_time = 0.5
    connection.strategy.restartable_tries = 20
    connection.bind()
    return connection.result["result"]


def _content_type(url: str) -> str:
    """What a PUT to `url` carries: an event (.ics), a contact (.vcf) or a file's text."""
    for suffix, content_type in ((".ics", "text/calendar"), (".vcf", "text/vcard")):
        if url.endswith(suffix):
            return f"{content_type}; charset=utf-8"
    return "text/plain; charset=utf-8"


def main(argv: list[str]) -> int:
    own, internet = os.stat("/proc/self/ns/net"), os.stat(paths.NETNS_DIR / INTERNET_NETNS)
    if (own.st_dev, own.st_ino) != (internet.st_dev, internet.st_ino):
        print("davprobe runs only in the lab's internet namespace", file=sys.stderr)
        return 2
    login, method, url, *body = argv
    user, _, label = login.partition("/")
    topology = load_topology(LAB_INVENTORY)
    account = next(account for account in lab_accounts(topology) if account.user == user)
    labels = topology.accounts[[a.user for a in topology.accounts].index(user)].app_passwords
    password = account.app_passwords[labels.index(label)] if label else account.password
    with lab_ca_file(topology) as ca:
        if method == "BIND":
            print(json.dumps({"status": ldap_bind(url, account.address, password, ca)}))
            return 0
        response = requests.request(
            method,
            url,
            auth=(account.address, password.reveal()),
            data=body[0].encode() if body else None,
            headers={"Content-Type": _content_type(url)} if body else {},
            verify=ca,
            timeout=TIMEOUT,
        )
    print(
        json.dumps(
            {"status": response.status_code, "replica": response.headers.get("X-Bulwark-Replica")}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
