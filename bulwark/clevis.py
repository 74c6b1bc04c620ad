"""Clevis on a host: which Tang each LUKS volume is bound to, the operation that binds it, and
the unit that opens it at boot.

A binding is a key slot of its own, holding a random passphrase that Clevis encrypts so that
only the Tang server can help recover it (its JWE is a LUKS2 token). It is added with the
volume's recovery passphrase, which reaches `clevis luks bind -k -` on stdin from the vault
(KeyStdin): the vault's binary key would not survive the shell's `read`, and nothing is
written to the host. `bulwark storage rotate-key` replaces the vault's key slot only, so a
binding keeps working across rotations; a binding to another server or to a key Tang no longer
has (the vault's Tang keys changed) is replaced: the new one added first, then the old removed.

At boot the volumes are opened by `bulwark-unlock-<volume>.service` rather than crypttab and
clevis-luks-askpass, which on Debian 12 kept asking for a passphrase for data volumes
(latchset/clevis#526) and can hold the boot while Tang is unreachable (#472, #534): the unit
runs after the network and the tunnel, asks Tang for the binding's passphrase (each attempt
bounded) and opens the binding's key slot alone, until that works or UNLOCK_TIMEOUT_SECONDS
pass, and stops trying as soon as the volume is open (the operator's `bulwark storage unlock`
got there first). The volume's mount unit requires it, so the units
keeping data on the volume start after it, or stay down when it failed: then the volume stays
closed, and its mount point bare, until the operator unlocks it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation

from bulwark.luks import VolumeSpec

PIN = "tang"
# The random bits of the passphrase a binding's key slot gets (`clevis luks bind` makes it with
# pwmake, at most 256 bits).
PASSPHRASE_BITS = 256
# How long a boot tries to reach Tang before leaving the volume to the operator: the tunnel
# takes a few seconds to come up; a dead Tang must not hold the boot longer (clevis#472). Only
# the volume's units wait for it (sshd does not).
UNLOCK_TIMEOUT_SECONDS = 180
# Seconds one attempt may take: curl, which Clevis runs, has no timeout of its own (#534).
# Generous: under software emulation Clevis's own work (jose, P-521) takes ~20 s.
ATTEMPT_TIMEOUT_SECONDS = 60


def unlock_unit(volume: str) -> str:
    """The unit opening `volume` through Tang at boot."""
    return f"bulwark-unlock-{volume}.service"


@dataclass(frozen=True)
class Binding:
    """One Clevis token of a volume: its key slots, and the Tang server and exchange key (by
    thumbprint, the JWE's `kid`) it was made with."""

    slots: tuple[str, ...]
    url: str
    kid: str


def _decoded(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


class ClevisBindings(FactBase):
    """The Clevis tang bindings of a LUKS2 device (none when it is not LUKS2)."""

    def command(self, device: str) -> StringCommand:
        quoted = QuoteString(device)
        return StringCommand(
            "for", "t", "in", "$(cryptsetup", "luksDump", quoted, "2>/dev/null", "|",
            "sed", "-n", "'s/^  \\([0-9]*\\): clevis$/\\1/p');", "do",
            "cryptsetup", "token", "export", "--token-id", '"$t"', quoted, "|",
            "tr", "-d", "'\\n'", ";", "echo", ";", "done",
        )  # fmt: skip

    def requires_command(self, *args, **kwargs) -> str:
        return "cryptsetup"

    @staticmethod
    def default() -> tuple[Binding, ...]:  # no output: no binding
        return ()

    def process(self, output: Iterable[str]) -> tuple[Binding, ...]:
        bindings = []
        for line in output:
            if not line.strip():
                continue
            token = json.loads(line)
            header = _decoded(token["jwe"]["protected"])
            server = header.get("clevis", {}).get(PIN, {})
            bindings.append(
                Binding(tuple(token["keyslots"]), server.get("url", ""), header.get("kid", ""))
            )
        return tuple(bindings)


@operation()
def clevis_bound(spec: VolumeSpec, url: str, thumbprint: str, kid: str):
    """Bind the volume to the Tang server at `url` whose signing key has `thumbprint`, unless
    a binding to it and its exchange key `kid` is there; remove any other binding after.

    + spec: the volume (its device)
    + url: the Tang server
    + thumbprint: the server's signing key's S256 thumbprint (Clevis's pinned `thp`)
    + kid: the server's exchange key's thumbprint, which a current binding names

    The recovery passphrase comes as `_stdin=KeyStdin(key, recovery)`, its second line.

    **Example:**

    .. code:: python

        clevis_bound(name="clevis: mail", spec=spec, url=url, thumbprint=thp, kid=kid,
                     _stdin=KeyStdin(key, recovery))
    """
    bindings = host.get_fact(ClevisBindings, device=spec.device)
    device = QuoteString(spec.device)
    current = [found for found in bindings if (found.url, found.kid) == (url, kid)]
    if not current:
        config = json.dumps({"url": url, "thp": thumbprint}, separators=(",", ":"))  # public
        yield StringCommand(
            "read", "-r", "key", ";", "read", "-r", "recovery", ";",
            "printf", "'%s\\n'", '"$recovery"', "|", "clevis", "luks", "bind", "-y", "-k", "-",
            "-d", device, PIN, QuoteString(config),
        )  # fmt: skip
    for stale in bindings:
        if stale not in current[:1]:
            for slot in stale.slots:
                yield StringCommand(
                    "clevis", "luks", "unbind", "-f", "-d", device, "-s", QuoteString(slot)
                )
    if current and len(bindings) == 1:
        host.noop(f"{spec.name}: bound to {url}")
