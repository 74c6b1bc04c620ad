"""LUKS2 volumes on a host: the settings every volume is formatted with, the fact that reads what
each device holds, and the operation that formats, opens, makes the filesystem and mounts.

Never destroys data: a device is formatted only when `blkid -p` finds nothing on it (exit 2)
and `wipefs -n` lists nothing; a LUKS2 device is opened, never reformatted; anything else is
refused with a message naming the host, the volume and the device, before any command of the
run touches the host. The same rules guard the filesystem inside an opened volume, and a mount
point holding files is never mounted over (its files would vanish beneath the volume), except
where the volume is meant to take them (`moved_in`, /var/log): there they are copied onto the
volume, which is then mounted, and the directory beneath is emptied and made immutable, so
that nothing started before the volume opens (the next boot, through Tang or the operator)
can write there: its writes fail instead of landing on the unencrypted root filesystem.

Keys never appear in an argv, a log, a diff or an exception: the vault holds each volume's key
as base64 of 64 random bytes, which reaches the host on the command's stdin (pyinfra's
`_stdin`), is decoded there by `base64 -d` and read whole by `cryptsetup --key-file=-`.
Nothing writes it to the host's disks. Each volume has a second key slot, its recovery
passphrase from the vault, for an operator at the console when the vault cannot reach it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, OperationError, QuoteString, StringCommand, operation

from bulwark.secret import Secret
from bulwark.topology import Host
from bulwark.volumes import volume

# hardening.md §8: AES-XTS with two 256-bit keys.
CIPHER = "aes-xts-plain64"
KEY_BITS = 512
PBKDF = "argon2id"
# Argon2id's cost, fixed rather than benchmarked on the formatting host: a volume formatted on
# a big host must open on the smallest one (1 GiB of memory, with its daemons running), and
# forcing the iterations keeps cryptsetup from trading memory for time on a slow host.
PBKDF_MEMORY_KIB = 256 * 1024
PBKDF_ITERATIONS = 4
# Lanes: cryptsetup lowers this to the formatting host's CPU count; two is what the smallest
# host has.
PBKDF_PARALLEL = 2
FILESYSTEM = "ext4"
# blkid's exit status when it found nothing on a device (0: found; 8: ambivalent).
BLKID_NOTHING = 2


class KeyStdin:
    """A volume's key and recovery passphrase as pyinfra's `_stdin`, one line each: revealed
    only when pyinfra writes them to the command's stdin (every command reads the lines it
    needs with the shell's `read`); its repr is the secrets' placeholders."""

    def __init__(self, key: Secret, recovery: Secret):
        self._secrets = (key, recovery)

    def readlines(self) -> list[str]:
        return [secret.reveal() for secret in self._secrets]

    def __iter__(self) -> Iterator[str]:  # what pyinfra checks `_stdin` against
        return iter(self.readlines())

    def __repr__(self) -> str:
        return " ".join(repr(secret) for secret in self._secrets)


# The shell words that read KeyStdin's lines into $key and $recovery (`read` and `printf` are
# the shell's own: the values never become a process's argument), then hand the decoded key
# to what follows on a pipe.
_KEY_ON_STDIN = (
    "read", "-r", "key", ";", "read", "-r", "recovery", ";",
    "printf", "'%s'", '"$key"', "|", "base64", "-d", "|",
)  # fmt: skip
# Argon2id as every key slot gets it (see PBKDF_MEMORY_KIB).
_PBKDF_ARGS = (
    "--pbkdf", PBKDF, "--pbkdf-memory", str(PBKDF_MEMORY_KIB),
    "--pbkdf-parallel", str(PBKDF_PARALLEL), "--pbkdf-force-iterations", str(PBKDF_ITERATIONS),
)  # fmt: skip
# Key slots a volume has: the vault's key, then the recovery passphrase.
KEY_SLOTS = 2
# awk over `cryptsetup luksDump`: how many LUKS2 key slots are not a Clevis binding's (a clevis
# token names its slots on "Keyslot:" lines), so a bound volume that lost its recovery slot
# still counts fewer than KEY_SLOTS and gets it back.
_OWN_KEY_SLOTS = (
    r"/^[^ \t]/ { part = $1 } "
    r'part == "Keyslots:" && /^  [0-9]+: luks2$/ { slots[$1 + 0] = 1 } '
    r'part == "Tokens:" && /^  [0-9]+: / { clevis = ($2 == "clevis") } '
    r'part == "Tokens:" && clevis && /^\tKeyslot:/ { '
    r"for (i = 2; i <= NF; i++) delete slots[$i + 0] } "
    r"END { n = 0; for (slot in slots) n++; print n }"
)
# Where a moved-in volume is mounted while the live directory is copied onto it.
MOVE_STAGE = "/run/bulwark-storage/stage"


@dataclass(frozen=True)
class VolumeSpec:
    """One volume as the host gets it: its name, the inventory's device, the device-mapper name
    it is opened as, the mount point and the systemd mount unit that mounts it there."""

    name: str
    device: str
    mapper: str
    mount_point: str
    mount_unit: str
    units: tuple[str, ...] = ()  # the units keeping data on it (started once it is unlocked)
    moved_in: bool = False  # the mount point's live content moves onto it (bulwark.volumes)
    reopened: tuple[str, ...] = ()  # running daemons restarted after the move (bulwark.volumes)

    @property
    def mapped(self) -> str:
        return f"/dev/mapper/{self.mapper}"


@dataclass(frozen=True)
class DeviceState:
    """What a volume's device and its mount point hold, as the fact read them."""

    block: bool  # the device exists and is a block device
    blkid: int  # `blkid -p`'s exit status on the device
    content: str  # the TYPE blkid found ("" if none)
    signatures: str  # what `wipefs -n` lists, types joined by spaces ("" if nothing)
    luks2: bool  # `cryptsetup isLuks --type luks2`
    keyslots: int  # LUKS2 key slots in use but Clevis bindings' (0 on anything else)
    opened: bool  # /dev/mapper/<mapper> exists
    backing: str  # the device the mapping is opened on ("" when closed)
    resolved: str  # the inventory's device with its links resolved
    mapped_blkid: int  # `blkid -p` on the opened mapping (2 when closed)
    mapped_content: str
    mapped_signatures: str
    mounted: str  # the source mounted on the mount point ("" if none)
    entries: str  # names in the mount point directory, at most three ("" if empty or missing)
    beneath: str  # the same on the root filesystem, beneath whatever is mounted there
    sealed: bool  # that directory beneath is immutable (chattr +i)

    @property
    def blank(self) -> bool:
        return self.blkid == BLKID_NOTHING and not self.signatures

    @property
    def mapped_blank(self) -> bool:
        return self.mapped_blkid == BLKID_NOTHING and not self.mapped_signatures


_FIELDS = tuple(DeviceState.__dataclass_fields__)


def _beneath(spec: VolumeSpec, script: str) -> list[object]:
    """Shell words running `script` (the mount point as "$1") where the mount point is the
    root filesystem's directory: in a mount namespace of its own (unshare's propagation is
    private) whose copy of the volume's mount is taken off, so the host's mounts never change.
    `script` runs only if there was a mount to take off or none at all."""
    mounted = 'if mountpoint -q "$1"; then umount -l "$1" || exit 1; fi; '
    return ["unshare", "-m", "sh", "-c", QuoteString(mounted + script), "sh",
            QuoteString(spec.mount_point)]  # fmt: skip


def _probe(spec: VolumeSpec) -> list[object]:
    """Shell words printing one `volume` line, then one `<field> <value>` line per field of
    DeviceState, for `spec` (values from the host's own tools, read-only)."""
    device, mapped = QuoteString(spec.device), QuoteString(spec.mapped)
    mount_point = QuoteString(spec.mount_point)
    return [
        "echo", "volume", QuoteString(spec.name), ";",
        "if", "test", "-b", device, ";", "then", "echo", "block", "1", ";",
        "else", "echo", "block", "0", ";", "fi", ";",
        "t=$(blkid", "-p", "-o", "value", "-s", "TYPE", device, "2>/dev/null);",
        'echo "blkid $?";', 'echo "content $t";',
        'echo "signatures $(wipefs', "-n", "-i", "-O", "TYPE", device,
        "2>/dev/null", "|", "tr", "'\\n'", "' ')\";",
        "if", "cryptsetup", "isLuks", "--type", "luks2", device, "2>/dev/null", ";",
        "then", "echo", "luks2", "1", ";", "else", "echo", "luks2", "0", ";", "fi", ";",
        'echo "keyslots $(cryptsetup', "luksDump", device, "2>/dev/null", "|",
        "awk", QuoteString(_OWN_KEY_SLOTS), ')";',
        "if", "test", "-b", mapped, ";", "then", "echo", "opened", "1", ";",
        "else", "echo", "opened", "0", ";", "fi", ";",
        'echo "backing $(cryptsetup', "status", QuoteString(spec.mapper), "2>/dev/null", "|",
        "sed", "-n", "'s/^ *device: *//p')\";",
        'echo "resolved $(readlink', "-f", device, ')";',
        "t=$(blkid", "-p", "-o", "value", "-s", "TYPE", mapped, "2>/dev/null);",
        'echo "mapped_blkid $?";', 'echo "mapped_content $t";',
        'echo "mapped_signatures $(wipefs', "-n", "-i", "-O", "TYPE", mapped,
        "2>/dev/null", "|", "tr", "'\\n'", "' ')\";",
        'echo "mounted $(findmnt', "-n", "-o", "SOURCE", "--mountpoint", mount_point, ')";',
        'echo "entries $(ls', "-A", mount_point, "2>/dev/null", "|", "head", "-n", "3", "|",
        "tr", "'\\n'", "' ')\";",
        *(_beneath(spec, 'echo "beneath $(ls -A "$1" 2>/dev/null | head -n 3 | tr "\\n" " ")"; '
                   'echo "sealed $(lsattr -d "$1" 2>/dev/null | cut -d " " -f 1 | grep -c i)"')
          if spec.moved_in  # only a moved-in volume's directory beneath is ever looked at
          else ['echo "beneath ";', 'echo "sealed 0"']),
        ";",
    ]  # fmt: skip


class LuksVolumes(FactBase):
    """Volume name -> DeviceState, for the volumes given, read in one command."""

    def command(self, volumes: tuple[VolumeSpec, ...]) -> StringCommand:
        words: list[object] = []
        for spec in volumes:
            words += _probe(spec)
        return StringCommand(*words)

    def requires_command(self, *args, **kwargs) -> str:
        return "cryptsetup"

    def process(self, output: Iterable[str]) -> dict[str, DeviceState]:
        states: dict[str, dict[str, str]] = {}
        current: dict[str, str] = {}
        for line in output:
            key, _, value = line.partition(" ")
            if key == "volume":
                current = states.setdefault(value, {})
            else:
                current[key] = value.strip()
        return {
            name: DeviceState(
                block=values["block"] == "1",
                blkid=int(values["blkid"]),
                content=values["content"],
                signatures=values["signatures"],
                luks2=values["luks2"] == "1",
                keyslots=int(values["keyslots"]),
                opened=values["opened"] == "1",
                backing=values["backing"],
                resolved=values["resolved"],
                mapped_blkid=int(values["mapped_blkid"]),
                mapped_content=values["mapped_content"],
                mapped_signatures=values["mapped_signatures"],
                mounted=values["mounted"],
                entries=values["entries"],
                beneath=values["beneath"],
                sealed=values["sealed"] == "1",
            )
            for name, values in states.items()
            if set(values) >= set(_FIELDS)
        }


def refusal(host_name: str, spec: VolumeSpec, found: DeviceState) -> str | None:
    """Why the volume cannot be used as it is, naming host, volume and device; None if it can.
    Nothing is changed on a refused volume."""
    where = f"{host_name}: volume {spec.name} on {spec.device}"
    if not found.block:
        return f"{where}: not a block device (inventory field volume_devices)"
    if not found.luks2 and not found.blank:
        what = found.content or found.signatures or f"data blkid cannot name ({found.blkid})"
        return f"{where}: holds {what}, not LUKS2 and not blank: refused, nothing written to it"
    if found.opened and found.backing and found.backing != found.resolved:
        return f"{where}: {spec.mapped} is already opened on {found.backing}"
    if found.opened and not (found.mapped_content == FILESYSTEM or found.mapped_blank):
        what = found.mapped_content or found.mapped_signatures or "data blkid cannot name"
        return f"{where}: the opened volume holds {what}, not {FILESYSTEM}: refused"
    if found.mounted and found.mounted != spec.mapped:
        return f"{where}: {spec.mount_point} has {found.mounted} mounted on it"
    if spec.moved_in and found.sealed and found.beneath:
        return (
            f"{where}: {found.beneath.strip()} appeared in the immutable directory beneath "
            f"{spec.mount_point} on the root filesystem: look at them and remove them first"
        )
    if not found.mounted and found.entries and not spec.moved_in:
        return (
            f"{where}: {spec.mount_point} holds files ({found.entries.strip()}), which the volume "
            "would hide: move them onto the volume first"
        )
    return None


@operation()
def luks_volume(spec: VolumeSpec):
    """Format (only a blank device), open, make the filesystem (only on a blank mapping) and
    mount one LUKS2 volume; refuse a device or mount point holding anything else.

    + spec: the volume: name, device, mapper name, mount point, mount unit

    The volume's key (the vault's base64) and recovery passphrase come as
    `_stdin=KeyStdin(key, recovery)`: cryptsetup reads them there, never from an argument. A
    volume with fewer than KEY_SLOTS slots gets the passphrase added (a second slot).

    **Example:**

    .. code:: python

        luks_volume(name="storage: mail", spec=spec, _stdin=KeyStdin(key, recovery))
    """
    found = host.get_fact(LuksVolumes, volumes=(spec,))[spec.name]
    if reason := refusal(host.name, spec, found):
        raise OperationError(reason)
    fresh = not found.luks2
    device = QuoteString(spec.device)
    if fresh:
        yield StringCommand(
            *_KEY_ON_STDIN, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
            "--cipher", CIPHER, "--key-size", str(KEY_BITS), *_PBKDF_ARGS,
            "--label", QuoteString(f"bulwark-{spec.name}"), "--key-file=-", device,
        )  # fmt: skip
    if fresh or found.keyslots < KEY_SLOTS:
        # The passphrase goes on fd 3, the decoded key on stdin: `3<&0` keeps the outer pipe.
        yield StringCommand(
            "read", "-r", "key", ";", "read", "-r", "recovery", ";",
            "printf", "'%s'", '"$recovery"', "|", "{", "printf", "'%s'", '"$key"', "|",
            "base64", "-d", "|", "cryptsetup", "luksAddKey", "--batch-mode", *_PBKDF_ARGS,
            "--key-file=-", device, "/dev/fd/3", ";", "}", "3<&0",
        )  # fmt: skip
    if fresh or not found.opened:
        yield StringCommand(
            *_KEY_ON_STDIN, "cryptsetup", "open", "--type", "luks2", "--key-file=-", device,
            QuoteString(spec.mapper),
        )  # fmt: skip
    mkfs = StringCommand("mkfs.ext4", "-q", "-L", QuoteString(spec.name), QuoteString(spec.mapped))
    if fresh or (found.opened and found.mapped_blank):
        yield mkfs
    elif not found.opened:
        # Closed when the fact read it, so what it holds is only known once opened: mkfs only
        # if blkid and wipefs find nothing (a run cut short between format and mkfs).
        mapped = QuoteString(spec.mapped)
        yield StringCommand(
            "blkid", "-p", mapped, ">/dev/null;", "test", "$?", "-ne", str(BLKID_NOTHING), "||",
            "test", "-n", '"$(wipefs', "-n", "-i", mapped, ')"', "||", mkfs,
        )  # fmt: skip
    if spec.moved_in and (found.beneath or not found.sealed):
        yield move_in(spec)
    elif found.mounted != spec.mapped:
        yield StringCommand("systemctl", "start", QuoteString(spec.mount_unit))
    elif found.opened:
        host.noop(f"{spec.name}: {spec.device} opened and mounted on {spec.mount_point}")


def move_in(spec: VolumeSpec) -> StringCommand:
    """Move the live content of a moved-in volume's mount point (/var/log) onto the opened
    volume and mount it there, then empty the directory beneath and make it immutable.

    journald is told to let go of the directory first (it keeps the journal in /run) and to
    flush onto the volume at the end; the daemons holding files open there (`reopened`) are
    restarted last if running, or they would go on writing into their deleted files beneath.
    Run again after a cut, it finishes the job: until the volume is mounted the directory
    stays the live copy, copied again in full; once it is, only emptying and sealing what is
    beneath remain. Nothing beneath is removed unless the volume is mounted over it."""
    mount_point, stage = QuoteString(spec.mount_point), QuoteString(MOVE_STAGE)
    reopened = [
        word
        for unit in spec.reopened
        for word in ("&&", "{", "!", "systemctl", "is-active", "--quiet", QuoteString(unit),
                     "||", "systemctl", "restart", QuoteString(unit), ";", "}")
    ]  # fmt: skip
    return StringCommand(
        "journalctl", "--relinquish-var", "&&",
        "if", "!", "mountpoint", "-q", mount_point, ";", "then",
        "mkdir", "-p", stage, "&&", "{", "mountpoint", "-q", stage, "||",
        "mount", QuoteString(spec.mapped), stage, ";", "}", "&&",
        "cp", "-a", "--remove-destination", QuoteString(f"{spec.mount_point}/."),
        QuoteString(f"{MOVE_STAGE}/"), "&&", "umount", stage, "&&",
        "systemctl", "start", QuoteString(spec.mount_unit), ";", "fi", "&&",
        "mountpoint", "-q", mount_point, "&&",
        *_beneath(spec, 'find "$1" -mindepth 1 -delete && chattr +i "$1"'), "&&",
        "journalctl", "--flush", *reopened,
    )  # fmt: skip


def volume_spec(host: Host, name: str) -> VolumeSpec:
    """What the operation and the unlock script need of `host`'s volume `name`."""
    found = volume(name)
    return VolumeSpec(
        name=name,
        device=host.volume_device(name),
        mapper=found.mapper,
        mount_point=found.path,
        mount_unit=found.mount_unit,
        units=found.units,
        moved_in=found.moved_in,
        reopened=found.reopened,
    )


# The last line an unlock script prints when every volume is open and mounted.
UNLOCKED = "bulwark: every volume unlocked"


def unlock_script(volumes: Sequence[tuple[VolumeSpec, Secret]]) -> str:
    """A script for the host's `sh -s` over SSH (bulwark.remote): open each closed volume with
    its key, mount it, start the enabled units keeping data on it (a boot left them down), then
    print UNLOCKED. Only opens: a device that is not LUKS2 fails `cryptsetup open`, and the
    script stops there. Each key is in a here-document, which the remote shell feeds to
    `base64 -d` through a pipe: never an argument, never a file."""
    lines = ["set -e", "exec 2>&1"]
    for spec, key in volumes:
        mapped = QuoteString(spec.mapped)
        opened = StringCommand(
            "test", "-b", mapped, "||", "base64", "-d", "<<'KEY'", "|", "cryptsetup", "open",
            "--type", "luks2", "--key-file=-", QuoteString(spec.device), QuoteString(spec.mapper),
        )  # fmt: skip
        lines += [opened.get_raw_value(), key.reveal(), "KEY"]
        lines.append(
            StringCommand("systemctl", "start", QuoteString(spec.mount_unit)).get_raw_value()
        )
        for unit in spec.units:
            if "@." in unit:  # a template: its instances start as their sockets are used
                continue
            quoted = QuoteString(unit)
            # Silent about a unit the host does not have (the logs volume's nginx, rspamd).
            started = StringCommand(
                "if", "systemctl", "is-enabled", "--quiet", quoted, "2>/dev/null", ";", "then",
                "systemctl", "start", quoted, ";", "fi",
            )  # fmt: skip
            lines.append(started.get_raw_value())
        lines.append(
            StringCommand("echo", QuoteString(f"{spec.name}: opened and mounted")).get_raw_value()
        )
    lines.append(StringCommand("echo", QuoteString(UNLOCKED)).get_raw_value())
    return "\n".join(lines) + "\n"


# The line a rotate script prints for each volume whose old key is gone and new key proven.
ROTATED = "rotated"


def decoded(variable: str) -> tuple[str, ...]:
    """Shell words printing $variable's base64 decoded, for a pipe (builtins: no argv)."""
    return ("printf", "'%s'", f'"${variable}"', "|", "base64", "-d", "|")


def assigned(variable: str, secret: Secret) -> list[str]:
    """Lines setting $variable to the secret's value through a here-document (no argv)."""
    return [f"{variable}=$(cat <<'KEY'", secret.reveal(), "KEY", ")"]


def opens(device: QuoteString) -> tuple[object, ...]:
    """Shell words testing that the key on stdin opens `device` (nothing is opened)."""
    return ("cryptsetup", "open", "--test-passphrase", "--key-file=-", device)


def rotate_script(volumes: Sequence[tuple[VolumeSpec, Secret, Secret]]) -> str:
    """A script for the host's `sh -s` over SSH: for each (volume, old key, new key), add the
    new key unless it opens the volume already, prove it opens it, then remove the old key if
    it still opens it, and print "<volume>: rotated". Run again after a cut, it finishes the
    job; the recovery slot is never touched."""
    lines = ["set -e", "exec 2>&1"]
    for spec, old, new in volumes:
        device = QuoteString(spec.device)
        lines += [*assigned("old", old), *assigned("new", new)]
        steps = (
            ("if", "!", *decoded("new"), *opens(device), "2>/dev/null", ";", "then"),
            (
                *decoded("new"), "{", *decoded("old"), "cryptsetup", "luksAddKey",
                "--batch-mode", *_PBKDF_ARGS, "--key-file=-", device, "/dev/fd/3", ";", "}",
                "3<&0",
            ),
            ("fi",),
            (*decoded("new"), *opens(device)),
            ("if", *decoded("old"), *opens(device), "2>/dev/null", ";", "then"),
            (
                *decoded("old"), "cryptsetup", "luksRemoveKey", "--batch-mode",
                "--key-file=-", device,
            ),
            ("fi",),
            ("echo", QuoteString(f"{spec.name}: {ROTATED}")),
        )  # fmt: skip
        lines += [StringCommand(*words).get_raw_value() for words in steps]
    return "\n".join(lines) + "\n"
