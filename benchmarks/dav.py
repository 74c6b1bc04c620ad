"""What the dav role serves, measured as its clients see it from the lab's internet namespace.

  propfind     ms for one PROPFIND Depth 1 (getetag) on a scratch address book of --objects
               contacts and on a scratch calendar of --objects events: median and p95 of
               --samples (default 20). Both collections are made under alice's principals for
               the run (extended MKCOL, MKCALENDAR) and deleted after it, whatever happened.
  auth         authenticated requests/s: PROPFIND Depth 0 on alice's Default book from
               --threads keep-alive sessions for --seconds, with webauth's credential cache as
               deployed, then without it (a runtime drop-in on the primary web host setting
               BULWARK_WEBAUTH_CACHE_SECONDS=0, removed afterwards in every case). Answers 429
               or 503 (the per-address rate limit) are counted and reported, never hidden.
  deploy       seconds the dav role adds to a deploy of the web hosts, first (a fresh lab only)
               and no-op, against the same hosts deployed without it (bulwark.lab.rolecost);
               not part of "all".
  replication  seconds from a contact PUT at the primary to it being readable at the other site
               (polled every 0.1 s): median and max of --samples (default 10); the contacts are
               deleted afterwards, and whether the deletions reached the other site is reported.

Usage: .venv/bin/python benchmarks/dav.py [all|propfind|auth|replication|deploy] [--objects 1000]
       [--samples N] [--seconds 10] [--threads 4]
Run as root on the controller, from the repository root, with the lab up and deployed. The
client measurements re-run this script inside the lab's internet namespace (`bulwark lab
internet`); the drop-in goes over the lab's SSH. Prints one JSON object with every figure.
Every loop is bounded in count and time; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from requests.auth import HTTPBasicAuth

from bulwark import catalogue
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology
from bulwark.lab import access, lifecycle
from bulwark.lab.accounts import LabAccount, lab_accounts
from bulwark.lab.rolecost import measure_role_deploys
from bulwark.topology import Host, Topology

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab.py"
TIMEOUT = 30  # seconds per request
COLLECTION_TIMEOUT = 120  # seconds for a request on a whole scratch collection (list, delete)
PART_TIMEOUT = 1800  # seconds one client part may run in the namespace before it is killed

CALDAV, CARDDAV = catalogue.service("https-dav").names
CALENDARS = "/dav/calendars/user/"
ADDRESSBOOKS = "/dav/addressbooks/user/"
DEFAULT = "Default"
RATE_LIMITED = (429, 503)

# Creation is paced below the web hosts' per-address limit (about 100 requests/s, a burst of a
# few hundred); a refused PUT is retried a few times, after Retry-After (at most MAX_BACKOFF).
CREATE_RATE = 80.0  # requests/s, all creating threads together
CREATE_ATTEMPTS = 5
MAX_BACKOFF = 5.0
REPLICATION_POLL = 0.1
REPLICATION_DEADLINE = 120  # seconds before a contact counts as not replicated
AUTH_MAX_REQUESTS = 100_000  # per thread: --seconds ends a run long before this
AUTH_READY_DEADLINE = 60  # seconds for webauth to answer after a restart
RATE_LIMIT_REFILL = 10  # seconds between the two auth runs: the limiter's bucket fills again

WEBAUTH_UNIT = "bulwark-webauth.service"
CACHE_VARIABLE = "BULWARK_WEBAUTH_CACHE_SECONDS"
DROPIN_DIR = f"/run/systemd/system/{WEBAUTH_UNIT}.d"
DROPIN = f"{DROPIN_DIR}/benchmark.conf"
HOST_COMMAND_TIMEOUT = 120

PROPFIND_ETAG = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>'
)
MKCOL_ADDRESSBOOK = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:mkcol xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:set><d:prop>'
    b"<d:resourcetype><d:collection/><card:addressbook/></d:resourcetype>"
    b"<d:displayname>bulwark benchmark</d:displayname>"
    b"</d:prop></d:set></d:mkcol>"
)
MKCALENDAR = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop>'
    b"<d:displayname>bulwark benchmark</d:displayname>"
    b"</d:prop></d:set></c:mkcalendar>"
)
XML = {"Content-Type": "application/xml; charset=utf-8"}


def log(message: str) -> None:
    """Progress, on stderr: stdout carries the JSON only."""
    print(message, file=sys.stderr, flush=True)


# --- figures ------------------------------------------------------------------------------------


def rate_limit_note(statuses: Counter[int]) -> str | None:
    limited = sum(statuses[status] for status in RATE_LIMITED)
    if not limited:
        return None
    return (
        f"{limited} answers were 429/503 (the per-address rate limit): the figures are bounded "
        "by the limiter, not only by the server"
    )


# --- client side (inside the internet namespace) ------------------------------------------------


class LoginRefused(Exception):
    """A login was refused: the platform bans an address after 10 failed logins in 10 minutes
    (the e2e tests' too), so nothing more is sent."""


class Client:
    """Requests as alice to the dav host names, one keep-alive session per thread. After the
    first 401 it sends nothing more (LoginRefused): the requests already in flight on the other
    threads are the only other failed logins a run can cause."""

    def __init__(self, topology: Topology, ca_file: str, account: LabAccount) -> None:
        self.topology = topology
        self.ca_file = ca_file
        self.account = account
        self.refused = False
        self._local = threading.local()

    def url(self, label: str, path: str, site: str | None = None) -> str:
        host = (
            f"{label}.{site}.{self.topology.domain}" if site else f"{label}.{self.topology.domain}"
        )
        return f"https://{host}{path}"

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            session.verify = self.ca_file
            session.auth = HTTPBasicAuth(self.account.address, self.account.password.reveal())
            self._local.session = session
        return session

    def request(
        self, method: str, url: str, timeout: float = TIMEOUT, **kwargs: Any
    ) -> requests.Response:
        if self.refused:
            raise LoginRefused(f"a login as {self.account.address} was refused: stopped")
        response = self.session().request(
            method, url, allow_redirects=False, timeout=timeout, **kwargs
        )
        _ = response.content  # read in full: the connection goes back to the pool
        if response.status_code == 401:
            self.refused = True
        return response

    def status(self, method: str, url: str, **kwargs: Any) -> int:
        """The status of one request; 0 when none came (connection error, timeout). Raises
        LoginRefused once a login was refused."""
        try:
            return self.request(method, url, **kwargs).status_code
        except requests.RequestException:
            return 0


class Pacer:
    """Start times at most `rate` per second, shared by every thread."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            slot = max(self.next, time.monotonic())
            self.next = slot + self.interval
        time.sleep(max(0.0, slot - time.monotonic()))


def backoff(response: requests.Response) -> float:
    try:
        return min(MAX_BACKOFF, max(0.1, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def _text(*lines: str) -> bytes:
    """vCard and iCalendar lines, CRLF-ended."""
    return "".join(f"{line}\r\n" for line in lines).encode()


def vcard(uid: str) -> bytes:
    return _text(
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid}",
        f"FN:Bench {uid[-12:]}",
        f"N:{uid[-12:]};Bench;;;",
        f"EMAIL;TYPE=INTERNET:{uid}@example.org",
        "END:VCARD",
    )


def vevent(uid: str, index: int) -> bytes:
    """An hour-long event on one of 28 days of January 2030."""
    day = 1 + index % 28
    return _text(
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//bulwark//benchmark//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20250101T000000Z",
        f"DTSTART:203001{day:02d}T090000Z",
        f"DTEND:203001{day:02d}T100000Z",
        f"SUMMARY:Bench {index}",
        "END:VEVENT",
        "END:VCALENDAR",
    )


def create_objects(
    client: Client,
    collection: str,
    count: int,
    threads: int,
    body: Callable[[str, int], bytes],
    suffix: str,
    content_type: str,
) -> dict[str, Any]:
    """PUT `count` new objects into `collection` from `threads` sessions, paced at CREATE_RATE,
    each retried up to CREATE_ATTEMPTS times when rate-limited; bounded by a deadline of three
    times the paced duration plus a minute."""
    pacer = Pacer(CREATE_RATE)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + 3 * count / CREATE_RATE + 60

    def create(index: int) -> bool:
        uid = f"bench-{uuid.uuid4().hex}"
        headers = {"Content-Type": content_type, "If-None-Match": "*"}
        for _ in range(CREATE_ATTEMPTS):
            if time.monotonic() > deadline or client.refused:
                return False
            pacer.wait()
            url = f"{collection}{uid}{suffix}"
            try:
                response = client.request("PUT", url, headers=headers, data=body(uid, index))
            except LoginRefused:
                return False
            except requests.RequestException:
                with lock:
                    statuses[0] += 1  # 0: no answer (connection error or timeout)
                continue
            with lock:
                statuses[response.status_code] += 1
            if response.status_code == 201:
                return True
            if response.status_code not in RATE_LIMITED:
                return False
            time.sleep(backoff(response))
        return False

    with ThreadPoolExecutor(max_workers=threads) as pool:
        created = sum(pool.map(create, range(count)))
    elapsed = time.monotonic() - started
    return {
        "created": created,
        "seconds": round(elapsed, 1),
        "per_second": round(created / elapsed, 1) if elapsed else None,
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "rate_limited_note": rate_limit_note(statuses),
    }


def time_propfinds(client: Client, collection: str, samples: int) -> dict[str, Any]:
    """`samples` PROPFIND Depth 1 (getetag) on `collection`, one after another."""
    seconds: list[float] = []
    statuses: Counter[int] = Counter()
    listed = None
    headers = {**XML, "Depth": "1"}
    for _ in range(samples):
        started = time.monotonic()
        try:
            response = client.request(
                "PROPFIND", collection, COLLECTION_TIMEOUT, headers=headers, data=PROPFIND_ETAG
            )
        except requests.RequestException:
            statuses[0] += 1
            continue
        elapsed = time.monotonic() - started
        statuses[response.status_code] += 1
        if response.status_code == 207:
            seconds.append(elapsed)
            # The lab's own server, over verified TLS.
            root = ET.fromstring(response.content)  # noqa: S314
            listed = sum(1 for _ in root.iter("{DAV:}response"))
    return {
        **access.summary_ms(seconds),
        "responses_listed": listed,  # the collection itself and each object
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "rate_limited_note": rate_limit_note(statuses),
    }


def client_propfind(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    samples = args.samples or 20
    run = uuid.uuid4().hex[:12]
    address = client.account.address
    scratch = {
        "addressbook": (
            client.url(CARDDAV, f"{ADDRESSBOOKS}{address}/bench-{run}/"),
            "MKCOL",
            MKCOL_ADDRESSBOOK,
            lambda uid, index: vcard(uid),
            ".vcf",
            "text/vcard; charset=utf-8",
        ),
        "calendar": (
            client.url(CALDAV, f"{CALENDARS}{address}/bench-{run}/"),
            "MKCALENDAR",
            MKCALENDAR,
            vevent,
            ".ics",
            "text/calendar; charset=utf-8",
        ),
    }
    result: dict[str, Any] = {"objects": args.objects, "samples": samples}
    made: list[str] = []
    try:
        for kind, (collection, method, body, make, suffix, content_type) in scratch.items():
            if client.refused:
                break
            status = client.status(method, collection, headers=XML, data=body)
            if status != 201:
                result[kind] = {"error": f"{method} {collection}: {status or 'no answer'}"}
                continue
            made.append(collection)
            log(f"propfind: creating {args.objects} objects in {collection}")
            creation = create_objects(
                client, collection, args.objects, args.threads, make, suffix, content_type
            )
            log(f"propfind: {samples} PROPFIND Depth 1 on {collection}")
            result[kind] = {
                "creation": creation,
                "propfind": time_propfinds(client, collection, samples),
            }
    except LoginRefused:
        pass  # reported below
    finally:
        result["cleanup"] = cleanup(client, made)
        result["login_refused"] = client.refused
    return result


def cleanup(client: Client, collections: list[str]) -> dict[str, Any]:
    """DELETE each scratch collection: its status (0: no answer); all of them to delete by hand
    if a refused login stopped the client."""
    statuses: dict[str, Any] = {}
    for collection in collections:
        try:
            statuses[collection] = client.status("DELETE", collection, timeout=COLLECTION_TIMEOUT)
        except LoginRefused:
            statuses[collection] = "not deleted: a login was refused; delete it by hand"
    return statuses


def client_auth(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """PROPFIND Depth 0 on alice's Default book from `args.threads` sessions for `args.seconds`
    (each thread at most AUTH_MAX_REQUESTS); a rate-limited thread waits out Retry-After."""
    url = client.url(CARDDAV, f"{ADDRESSBOOKS}{client.account.address}/{DEFAULT}/")
    headers = {**XML, "Depth": "0"}
    asked = time.monotonic()
    try:
        while client.status("PROPFIND", url, headers=headers, data=PROPFIND_ETAG) != 207:
            if time.monotonic() - asked > AUTH_READY_DEADLINE:  # webauth may have just restarted
                return {"error": f"no 207 from {url} within {AUTH_READY_DEADLINE} s"}
            time.sleep(0.5)
    except LoginRefused:
        return {"error": f"the login was refused at {url}", "login_refused": True}
    ready_after = time.monotonic() - asked
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(args.threads + 1)
    bounds: dict[str, float] = {}

    def worker() -> None:
        mine: Counter[int] = Counter()
        times: list[float] = []
        client.session()  # its own keep-alive session, made before the clock starts
        start.wait()
        deadline = bounds["deadline"]
        for _ in range(AUTH_MAX_REQUESTS):
            if time.monotonic() >= deadline:
                break
            began = time.monotonic()
            try:
                response = client.request("PROPFIND", url, headers=headers, data=PROPFIND_ETAG)
            except LoginRefused:
                break
            except requests.RequestException:
                mine[0] += 1
                continue
            mine[response.status_code] += 1
            if response.status_code == 207:
                times.append(time.monotonic() - began)
            elif response.status_code in RATE_LIMITED:
                time.sleep(min(backoff(response), max(0.0, deadline - time.monotonic())))
        with lock:
            statuses.update(mine)
            latencies.extend(times)

    workers = [threading.Thread(target=worker) for _ in range(args.threads)]
    for thread in workers:
        thread.start()
    bounds["deadline"] = time.monotonic() + args.seconds
    began = time.monotonic()
    start.wait()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - began
    return {
        "threads": args.threads,
        "seconds": round(elapsed, 2),
        "ready_after_seconds": round(ready_after, 2),
        "requests": sum(statuses.values()),
        "authenticated_per_second": round(statuses[207] / elapsed, 1),
        "latency": access.summary_ms(latencies),
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "rate_limited": sum(statuses[status] for status in RATE_LIMITED),
        "rate_limited_note": rate_limit_note(statuses),
        "login_refused": client.refused,
    }


def client_replication(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    samples = args.samples or 10
    primary = client.topology.primary_site.name
    (other,) = (site.name for site in client.topology.peer_sites(primary))
    book = f"{ADDRESSBOOKS}{client.account.address}/{DEFAULT}/"
    headers = {"Content-Type": "text/vcard; charset=utf-8", "If-None-Match": "*"}
    delays: list[float] = []
    statuses: Counter[str] = Counter()
    written: list[str] = []
    result: dict[str, Any] = {"samples": samples, "from": primary, "to": other}
    try:
        for _ in range(samples):
            uid = f"bench-{uuid.uuid4().hex}"
            at_primary = client.url(CARDDAV, f"{book}{uid}.vcf", primary)
            status = client.status("PUT", at_primary, headers=headers, data=vcard(uid))
            statuses[f"put {status}"] += 1
            if status != 201:
                continue
            written.append(uid)
            started = time.monotonic()
            at_other = client.url(CARDDAV, f"{book}{uid}.vcf", other)
            while time.monotonic() - started < REPLICATION_DEADLINE:
                status = client.status("GET", at_other)
                if status == 200:
                    delays.append(time.monotonic() - started)
                    break
                statuses[f"poll {status}"] += 1
                time.sleep(REPLICATION_POLL)
    except LoginRefused:
        pass  # reported below
    finally:
        try:
            result["cleanup"] = delete_and_follow(client, book, written, primary, other)
        except LoginRefused:
            result["cleanup"] = f"not done: a login was refused; delete {written} by hand"
        result["login_refused"] = client.refused
    result.update(
        {
            "replicated": len(delays),
            "not_seen_within_deadline": len(written) - len(delays),
            "deadline_seconds": REPLICATION_DEADLINE,
            "median_seconds": round(statistics.median(delays), 2) if delays else None,
            "max_seconds": round(max(delays), 2) if delays else None,
            "min_seconds": round(min(delays), 2) if delays else None,
            "statuses": dict(sorted(statuses.items())),
        }
    )
    return result


def delete_and_follow(
    client: Client, book: str, uids: list[str], primary: str, other: str
) -> dict[str, Any]:
    """DELETE each contact at the primary, then poll the other site (bounded) until each is 404."""
    deleted = Counter(
        client.status("DELETE", client.url(CARDDAV, f"{book}{uid}.vcf", primary)) for uid in uids
    )
    pending = set(uids)
    deadline = time.monotonic() + REPLICATION_DEADLINE
    while pending and time.monotonic() < deadline:
        for uid in list(pending):
            if client.status("GET", client.url(CARDDAV, f"{book}{uid}.vcf", other)) == 404:
                pending.discard(uid)
        time.sleep(0.5)
    return {
        "delete_statuses": {str(status): n for status, n in sorted(deleted.items())},
        "still_at_the_other_site": len(pending),
    }


CLIENT_PARTS = {"propfind": client_propfind, "auth": client_auth, "replication": client_replication}


# --- controller side (root, outside the namespace) ----------------------------------------------


def in_namespace(part: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one client part in the internet namespace; its JSON, or what went wrong."""
    options = [f"--{name}={getattr(args, name)}" for name in ("objects", "seconds", "threads")]
    if args.samples:
        options.append(f"--samples={args.samples}")
    argv = [__file__, "client", f"--part={part}", *options]
    return access.internet_client_json(INVENTORY, argv, PART_TIMEOUT)


def on_host(lab: lifecycle.Lab, host: Host, command: str, stdin: str | None = None) -> str:
    return access.on_host(lab.plan, host.name, command, stdin, HOST_COMMAND_TIMEOUT)


def cache_seconds(lab: lifecycle.Lab, host: Host) -> str | None:
    """The cache lifetime webauth's unit runs with now (the last assignment wins)."""
    environment = on_host(
        lab, host, f"systemctl show --property=Environment --value {WEBAUTH_UNIT}"
    )
    prefix = f"{CACHE_VARIABLE}="
    values = [entry[len(prefix) :] for entry in environment.split() if entry.startswith(prefix)]
    return values[-1] if values else None


RESTART = f"systemctl daemon-reload && systemctl restart {WEBAUTH_UNIT}"


def add_dropin(lab: lifecycle.Lab, host: Host) -> None:
    dropin = f"[Service]\nEnvironment={CACHE_VARIABLE}=0\n"
    on_host(lab, host, f"mkdir -p {DROPIN_DIR} && cat > {DROPIN} && {RESTART}", stdin=dropin)


def remove_dropin(lab: lifecycle.Lab, host: Host) -> None:
    on_host(
        lab, host, f"rm -f {DROPIN} && rmdir --ignore-fail-on-non-empty {DROPIN_DIR}; {RESTART}"
    )


def measure_auth(
    topology: Topology, lab: lifecycle.Lab, args: argparse.Namespace
) -> dict[str, Any]:
    """The same client run with the cache as deployed, then with the drop-in turning it off;
    the drop-in is removed (and webauth restarted) whatever happens."""
    # The host serving carddav.DOMAIN (bulwark.lab.hostsfile: the primary site's first).
    web = topology.hosts_with_role("dav", topology.primary_site.name)[0]
    result: dict[str, Any] = {"host": web.name}
    if on_host(lab, web, f"test -e {DROPIN} && echo present || true").strip() == "present":
        log(f"auth: a drop-in of an earlier run is still on {web.name}: removing it first")
        remove_dropin(lab, web)
        result["stale_dropin_removed"] = True
    result["with_cache"] = {"cache_seconds": cache_seconds(lab, web), **in_namespace("auth", args)}
    if result["with_cache"].get("login_refused") or "error" in result["with_cache"]:
        return result
    log(f"auth: {RATE_LIMIT_REFILL} s pause for the rate limit, then without the cache")
    time.sleep(RATE_LIMIT_REFILL)
    try:
        add_dropin(lab, web)
        result["without_cache"] = {
            "cache_seconds": cache_seconds(lab, web),
            **in_namespace("auth", args),
        }
    finally:
        try:
            remove_dropin(lab, web)
            result["cache_seconds_restored"] = cache_seconds(lab, web)
        except (BulwarkError, subprocess.TimeoutExpired) as error:
            log(f"auth: REMOVE {DROPIN} ON {web.name} BY HAND, then: {RESTART}")
            result["restore_error"] = str(error)
    runs = ("with_cache", "without_cache")
    rates = [result.get(run, {}).get("authenticated_per_second") for run in runs]
    if all(rates):
        result["cache_speedup"] = round(rates[0] / rates[1], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="?", default="all", choices=["all", *CLIENT_PARTS, "deploy", "client"]
    )
    parser.add_argument("--part", choices=list(CLIENT_PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=None, help="20 propfind, 10 replication")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    topology = load_topology(INVENTORY)
    if args.what == "client":
        alice = lab_accounts(topology)[0]
        access.run_client_part(
            topology, lambda ca: CLIENT_PARTS[args.part](Client(topology, ca, alice), args)
        )
        return
    lab = lifecycle.require_up(INVENTORY)
    if args.what == "deploy":
        measure_role_deploys(topology, ("dav",), "python3-radicale")
        return
    report: dict[str, Any] = {}
    for part in CLIENT_PARTS if args.what == "all" else [args.what]:
        log(f"--- {part}")
        if part == "auth":
            try:
                report[part] = measure_auth(topology, lab, args)
            except (BulwarkError, subprocess.TimeoutExpired) as error:
                report[part] = {"error": str(error)}
        else:
            report[part] = in_namespace(part, args)
        if refused(report[part]):
            log("a login was refused: no further measurement (failed logins lead to a ban)")
            break
    print(json.dumps(report, indent=2))


def refused(result: dict[str, Any]) -> bool:
    """Whether a part, or one run within it, saw a login refused."""
    return bool(result.get("login_refused")) or any(
        isinstance(value, dict) and refused(value) for value in result.values()
    )


if __name__ == "__main__":
    main()
