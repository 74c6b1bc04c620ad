"""The controller's own packages: the lab installs what it uses, so a fresh machine just works."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bulwark.lab.system import run, step

PACKAGES: tuple[str, ...] = (
    "mmdebstrap",
    "systemd-container",
    "apt-cacher-ng",
    "wireguard-tools",
    "wireguard-go",
    "nftables",
    "tcpdump",
    "iproute2",
    "openssh-client",
)
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# invoke-rc.d asks this script whether a package may start its service: 101 means no.
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def missing(packages: Sequence[str] = PACKAGES) -> list[str]:
    listing = run(
        ["dpkg-query", "--show", "--showformat=${Package} ${db:Status-Abbrev}\\n", *packages],
        check=False,
    )
    installed = {line.split()[0] for line in listing.splitlines() if line.split()[1:2] == ["ii"]}
    return [package for package in packages if package not in installed]


def ensure(packages: Sequence[str] = PACKAGES) -> None:
    """Install the missing ones of `packages` (the container lab's by default), refreshing the
    package lists first."""
    wanted = missing(packages)
    if not wanted:
        return
    with step(f"installing controller packages: {' '.join(wanted)}"):
        run(["apt-get", "update", "-q"], env=_APT_ENV)
        with _no_service_starts():
            run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted],
                env=_APT_ENV,
            )


@contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep the packaged apt-cacher-ng from starting on all addresses: the lab runs its own."""
    if _POLICY_RC_D.exists():
        yield
        return
    _POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC_D.unlink()
