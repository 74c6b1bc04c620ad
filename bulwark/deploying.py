"""What roles need at deploy time: the validated topology, this host, secrets, file uploads.

The topology is built once per pyinfra run from pyinfra's own inventory, so the deploy sees
exactly what `bulwark render` sees.
"""

from __future__ import annotations

import hashlib
import posixpath
from io import StringIO

from pyinfra import host as current_host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_inventory
from pyinfra.facts.files import File, Sha1File
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import files as file_utils

from bulwark import plan
from bulwark.inventory import check_vault, topology_from_inventory
from bulwark.render import RenderedFile, render_role_files
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

_TOPOLOGIES: dict[int, Topology] = {}


def deploy_topology() -> Topology:
    """The topology of the running pyinfra inventory (validated once, then cached)."""
    inventory = ctx_inventory.get()
    key = id(inventory)
    if key not in _TOPOLOGIES:
        _TOPOLOGIES[key] = topology_from_inventory(inventory)
    return _TOPOLOGIES[key]


def deploy_host() -> Host:
    """The topology's view of the host pyinfra is preparing operations for."""
    return deploy_topology().host(current_host.name)


def render_for_deploy(role: str, secrets: SecretStore) -> list[RenderedFile]:
    """The role's files for the current host, secrets revealed."""
    module = plan.role_module(role)
    return render_role_files(module, deploy_topology(), deploy_host(), secrets, reveal=True)


# Root-only staging directory: secret-bearing files never pass through /tmp or exist with loose
# permissions, not even for the instant between upload and chmod.
PRIVATE_STAGING = "/var/lib/bulwark/staging"


@operation()
def private_file(content: str, dest: str, user: str, group: str, mode: str):
    """`files.put` for a file that holds secrets: never prints its contents (not even under
    `--diff`, which would show the remote file too), and stages it in a root-only directory
    where it gets its owner and mode before it is moved into place.
    """
    wanted = hashlib.sha1(content.encode()).hexdigest()  # noqa: S324 - pyinfra's Sha1File fact
    remote = current_host.get_fact(File, path=dest)
    if remote and current_host.get_fact(Sha1File, path=dest) == wanted:
        if (remote["user"], remote["group"], remote["mode"]) == (user, group, int(mode[-3:])):
            current_host.noop(f"{dest} is up to date")
            return
        yield file_utils.chown(dest, user, group)
        yield file_utils.chmod(dest, mode)
        return
    current_host.log(f"{dest}: contents hidden, the file holds secrets")
    staged = f"{PRIVATE_STAGING}/{wanted}"
    yield StringCommand("install", "-d", "-m", "0700", PRIVATE_STAGING)
    yield StringCommand("install", "-d", "-m", "0755", QuoteString(posixpath.dirname(dest)))
    yield FileUploadCommand(
        StringIO(content),
        staged,
        remote_temp_filename=current_host.get_temp_filename(staged, temp_directory=PRIVATE_STAGING),
    )
    yield file_utils.chown(staged, user, group)
    yield file_utils.chmod(staged, mode)
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(dest))


def put_file(rendered: RenderedFile) -> OperationMeta:
    """Upload one rendered file with its owner and mode (no change when identical)."""
    if rendered.holds_secrets:
        return private_file(
            name=f"{rendered.role}: {rendered.path}",
            content=rendered.content,
            dest=rendered.path,
            user=rendered.user,
            group=rendered.group,
            mode=rendered.mode,
        )
    return files.put(
        name=f"{rendered.role}: {rendered.path}",
        src=StringIO(rendered.content),
        dest=rendered.path,
        user=rendered.user,
        group=rendered.group,
        mode=rendered.mode,
    )


def apply_sysctl(role: str, path: str, upload: OperationMeta) -> None:
    """Load a sysctl file right after it changed (boot loads it through systemd-sysctl)."""
    server.shell(
        name=f"{role}: apply {path}",
        commands=[StringCommand("sysctl", "-q", "-p", QuoteString(path))],
        _if=upload.did_change,
    )


def converge_unit(role: str, unit: str, *changed: OperationMeta) -> None:
    """Keep `unit` enabled and running; reload systemd and restart it when its files changed."""
    for upload in changed:
        systemd.daemon_reload(name=f"{role}: reload systemd units", _if=upload.did_change)
    systemd.service(name=f"{role}: {unit} running", service=unit, running=True, enabled=True)
    for upload in changed:
        systemd.service(
            name=f"{role}: restart {unit}", service=unit, restarted=True, _if=upload.did_change
        )


_SECRETS: dict[int, SecretStore] = {}


def deploy_secrets() -> SecretStore:
    """The inventory's vault, opened once per run; every secret the topology needs must be in it.

    The run's check (bulwark.inventory) has already refused a bad vault before connecting.
    """
    topology = deploy_topology()
    key = id(topology)
    if key not in _SECRETS:
        _SECRETS[key] = check_vault(topology)
    return _SECRETS[key]
