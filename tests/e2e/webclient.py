"""What the web e2e tests (test_dav, test_files) share: requests on fresh connections, and HTTP
Basic that stops before the suite's address gets banned.

The platform bans an address after bruteforce.MAX_FAILURES failed logins within ten minutes,
counted per host across its services, and the whole e2e suite connects from one address: each
test module gives its `CountedBasicAuth` subclass the failures it may cause, and that budget is
never exceeded, however wrong the server under test is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import requests
from endpoints import host_name
from requests.auth import HTTPBasicAuth

from bulwark.topology import Topology

TIMEOUT = 30  # seconds per request
XML_TYPE = "application/xml; charset=utf-8"


class LoginBudgetSpent(Exception):
    """A module's refused logins were all spent: another one could get the client banned."""


class CountedBasicAuth(HTTPBasicAuth):
    """HTTP Basic that counts every 401 answering it (redirects followed by a client included)
    and sends nothing once its class's `budget` is spent. Each test module subclasses it with
    its own budget and count. Its repr shows no password."""

    budget: ClassVar[int] = 0  # refused logins the module may cause
    refused: ClassVar[int] = 0  # 401s to requests with credentials, over the whole module

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        counted = type(self)
        if counted.refused >= counted.budget:
            raise LoginBudgetSpent(
                f"{counted.refused} logins already refused: not sending another "
                f"({request.method} {request.url}) lest the client's address be banned"
            )
        request.register_hook("response", self._count)
        return super().__call__(request)

    def _count(self, response: requests.Response, **_: object) -> requests.Response:
        if response.status_code == 401:
            type(self).refused += 1
        return response


@dataclass(frozen=True)
class Web:
    """The platform's web host names, as a client reaches them."""

    topology: Topology
    ca_file: Path

    def url(self, label: str, path: str, site: str | None = None, scheme: str = "https") -> str:
        return f"{scheme}://{host_name(self.topology, label, site)}{path}"

    def request(
        self,
        method: str,
        url: str,
        auth: HTTPBasicAuth | None = None,
        *,
        depth: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        """One request on a fresh connection: no cookies, no proxy or .netrc from the
        environment, redirects returned rather than followed. A str or bytes `body` without a
        Content-Type is sent as XML; a file or generator body is streamed."""
        sent = dict(headers or {})
        if depth is not None:
            sent["Depth"] = str(depth)
        if isinstance(body, str | bytes) and "Content-Type" not in sent:
            sent["Content-Type"] = XML_TYPE
        with requests.Session() as session:
            session.trust_env = False
            return session.request(
                method,
                url,
                auth=auth,
                headers=sent,
                data=body.encode() if isinstance(body, str) else body,
                verify=str(self.ca_file),
                allow_redirects=False,
                timeout=TIMEOUT,
                stream=stream,
            )
