"""The lab's internal CA as a file, for clients that take a CA file (curl, requests, rclone):
the benchmarks and the probes the integration tests run from the internet namespace."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bulwark import pki
from bulwark.lab import paths
from bulwark.topology import Topology
from bulwark.vault import Vault, load_key


@contextmanager
def lab_ca_file(topology: Topology) -> Iterator[str]:
    """A temporary file holding the lab vault's CA certificate, removed afterwards."""
    vault = Vault.open(Path(topology.vault_file), load_key(paths.STATE_DIR / "vault.key"))
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
        ca.write(pki.ca_certificate(vault))
        ca.flush()
        yield ca.name
