"""What makes other mail servers trust our mail, and us judge theirs: DKIM keys and their DNS
records, the DMARC policy, and the spam filter's settings (rspamd, on the mx hosts).

Every message an account submits is signed twice, by an Ed25519 key (RFC 8463) and an RSA-2048
key (for verifiers without Ed25519), each under its selector (`Topology.dkim_selectors`); the
keys live in the vault (`dkim/<selector>`). Rotation is by selector: a new name in the inventory
makes `bulwark secrets generate` create a new key; publish its record (`bulwark dns`) before
deploying it. Mail arriving on 25 is checked (SPF, DKIM, DMARC, spam): the results go into an
Authentication-Results header; a message failing the DMARC policy of a domain that asks for
rejection, or carrying GTUBE, is refused during the SMTP session; one the filter calls spam
gets `X-Spam: Yes` and is filed into the account's Junk folder (roles/mailstore.py's Sieve
script).
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bulwark.secret_names import dkim_key_name
from bulwark.topology import Topology

# rspamd's overrides of Debian's configuration (its local.d), the first one checked by rspamadm
# with all of them (bulwark.checks).
RSPAMD_LOCAL_DIR = "/etc/rspamd/local.d"
RSPAMD_FILES: tuple[str, ...] = tuple(
    f"{RSPAMD_LOCAL_DIR}/{name}"
    for name in (
        "options.inc",
        "worker-proxy.inc",
        "worker-normal.inc",
        "worker-controller.inc",
        "actions.conf",
        "dmarc.conf",
        "dkim_signing.conf",
        "milter_headers.conf",
        "fuzzy_check.conf",
    )
)
# RSA keys of 2048 bits: RFC 8301's minimum for signing, and what every verifier takes.
RSA_KEY_BITS = 2048
ED25519_SEED_BYTES = 32
# DMARC: receivers reject mail claiming the domain that neither SPF nor DKIM align with, strict
# alignment: accounts send from DOMAIN itself; bounces come from each exchanger's own name,
# which has an SPF record of its own (bulwark.dns).
DMARC_POLICY = "v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s"
# The header rspamd adds to mail it calls spam (its "add header" action), which sieve files.
SPAM_HEADER = ("X-Spam", "Yes")
# Scores at which rspamd acts: add the spam header, or refuse the message during the session.
SPAM_SCORES: dict[str, int] = {"add_header": 6, "reject": 15}


def new_dkim_key(algorithm: str) -> str:
    """A new private key for `algorithm`, as rspamd reads it: Ed25519 as `rspamadm dkim_keygen`
    writes it (base64 of the 32-byte seed and the 32-byte public key; rspamd 3.4 reads no PEM
    Ed25519 key), RSA as PKCS#8 PEM."""
    if algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(seed + public).decode()
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def dkim_keys(topology: Topology) -> tuple[tuple[str, str, str], ...]:
    """(algorithm, selector, vault entry) of every signing key, in the inventory's order."""
    return tuple(
        (algorithm, selector, dkim_key_name(selector))
        for algorithm, selector in topology.dkim_selectors
    )


def dkim_record(algorithm: str, private: str) -> str:
    """The TXT data of a DKIM key's record (RFC 6376 §3.6.1; Ed25519, RFC 8463: the raw public
    key), from the private key as `new_dkim_key` made it."""
    if algorithm == "ed25519":
        public = base64.b64decode(private)[ED25519_SEED_BYTES:]
    else:
        key = serialization.load_pem_private_key(private.encode(), password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return f"v=DKIM1; k={algorithm}; p={base64.b64encode(public).decode()}"


def dmarc_record(topology: Topology) -> str:
    """The `_dmarc` TXT data: the policy, and aggregate reports to the postmaster if named."""
    if topology.postmaster is None:
        return DMARC_POLICY
    return f"{DMARC_POLICY}; rua=mailto:postmaster@{topology.domain}"


def role_addresses(topology: Topology) -> dict[str, str]:
    """RFC 2142's addresses -> the account they reach (none without a `postmaster`)."""
    if topology.postmaster is None:
        return {}
    target = f"{topology.postmaster}@{topology.domain}"
    return {f"{local}@{topology.domain}": target for local in ("abuse", "postmaster")}
