"""Tang servers and the pins Clevis binds volumes to them with.

Each site has a Tang server (the `tang` role); a host's volumes are bound to the Tang of the
*other* site, which it reaches only through the VPN: a disk or a whole server taken out of the
platform cannot be opened, while a reboot in place opens by itself as long as the other site
answers.

Tang's two keys (an ES512 signing key, an ECMR exchange key) are made here, by `bulwark
secrets generate`, and kept in the vault, rather than by `tangd-keygen` on the server: so
their thumbprints are known when the clients' configuration is rendered, and every client
binds with a pinned `thp` instead of trusting the first advertisement it fetches.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import ec

from bulwark import catalogue
from bulwark.topology import Host, Topology

ROLE = "tang"
# The two keys of a Tang server (tangd-keygen's algorithms), by the use Tang puts them to.
SIGNING = "signing"
EXCHANGE = "exchange"
_ALGORITHMS = {SIGNING: ("ES512", ["sign", "verify"]), EXCHANGE: ("ECMR", ["deriveKey"])}
# P-521 coordinates are 66 bytes long (RFC 7518 §6.2.1.2: full length, leading zeros kept).
_P521_BYTES = 66
# The members a key's thumbprint hashes, by key type (RFC 7638 §3.2).
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(use: str) -> str:
    """A Tang key as JSON (a JWK), like `jose jwk gen -i '{"alg":ALG}'` makes for tangd."""
    alg, operations = _ALGORITHMS[use]
    numbers = ec.generate_private_key(ec.SECP521R1()).private_numbers()
    public = numbers.public_numbers

    def field(value: int) -> str:
        return _b64url(value.to_bytes(_P521_BYTES, "big"))

    jwk = {
        "alg": alg,
        "crv": "P-521",
        "d": field(numbers.private_value),
        "key_ops": operations,
        "kty": "EC",
        "x": field(public.x),
        "y": field(public.y),
    }
    return json.dumps(jwk, sort_keys=True, separators=(",", ":"))


def thumbprint(jwk_text: str) -> str:
    """The key's RFC 7638 SHA-256 thumbprint, as `jose jwk thp -a S256` prints it: what Clevis
    pins a server's signing key with (`thp`), and the `kid` a binding names its exchange key by."""
    jwk = json.loads(jwk_text)
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def server_for(topology: Topology, host: Host) -> Host | None:
    """The Tang server `host`'s volumes are bound to: the first `tang` host of the first other
    site that has one; None when no other site runs Tang (the volumes are then opened only
    with the vault's key)."""
    for site in topology.peer_sites(host.site):
        servers = topology.hosts_with_role(ROLE, site.name)
        if servers:
            return servers[0]
    return None


def url(server: Host) -> str:
    """Where clients reach the server: its LAN address, which the other site routes only
    through the tunnel."""
    return f"http://{server.lan_address}:{catalogue.service(ROLE).port}"
