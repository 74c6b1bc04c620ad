"""LUKS2 header backups escrowed in the vault (`luks-header/HOST/VOLUME`), for the day a
volume's header is damaged: the header holds the key slots, and without it no key opens the
data. Taken on the host by `cryptsetup luksHeaderBackup` into a directory on /run (a tmpfs:
never the host's disks), read over the same SSH session as `bulwark storage unlock`, removed
when the session ends; restored by `luksHeaderRestore` only onto the volume it came from.

A LUKS2 header backup is 16 MiB, nearly all of it key-slot area that luksFormat fills with
random bytes, so it does not compress. A restore needs only the two metadata copies and the
areas of the slots in use: the host keeps those and zeroes the rest (unused slot area holds
nothing), gzips it, and sends that: about 0.5 MiB per volume, the AF-split key material of two
slots (256,000 bytes each for a 512-bit key). The SHA-256 of that canonical copy tells a stale
backup from a current one without sending it.

The backup is a secret: with any key or passphrase that once opened the volume, it opens it
(the volume key never changes). It is only ever in the vault (AES-256-GCM), never printed,
and the here-document carrying it back to the host is never an argument.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyinfra.api import QuoteString, StringCommand

from bulwark.errors import BulwarkError
from bulwark.luks import VolumeSpec, assigned, decoded, opens
from bulwark.secret import Secret

# The vault entry's format (a JSON object: format, uuid, sha256, gzip).
FORMAT = 1
# Where the host keeps its temporary copies: a tmpfs on Debian, gone at the session's end.
WORK_DIR = "/run"
# The first bytes of a LUKS header (both versions).
MAGIC = b"LUKS\xba\xbe"
# Every line a header script prints about a volume starts with this word, then the volume's
# name: `header NAME uuid U`, `header NAME sha256 D`, `header NAME data BASE64`, and for a
# restore `header NAME device UUID|-`, `... refused`, `... damaged`, `... restored`,
# `... key-opens yes|no`. Anything else is a tool's own message.
MARKER = "header"


class HeaderError(BulwarkError):
    """A header backup is missing, damaged or not what the host sent; names the entry only."""


@dataclass(frozen=True)
class HeaderBackup:
    """A volume's header as the vault keeps it: the UUID it carries, the SHA-256 of its
    canonical copy, and that copy gzipped (never shown by repr)."""

    uuid: str
    sha256: str
    gzipped: bytes = field(repr=False)

    def value(self) -> str:
        """The vault entry's value."""
        return json.dumps(
            {
                "format": FORMAT,
                "uuid": self.uuid,
                "sha256": self.sha256,
                "gzip": base64.b64encode(self.gzipped).decode(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_value(cls, name: str, value: str) -> HeaderBackup:
        """The backup in vault entry `name` (HeaderError if it is not one)."""
        try:
            data = json.loads(value)
            backup = cls(data["uuid"], data["sha256"], base64.b64decode(data["gzip"]))
            well_formed = data["format"] == FORMAT
        except (ValueError, TypeError, KeyError, binascii.Error):
            well_formed = False
        if not well_formed:
            raise HeaderError(f"vault entry {name} is not a bulwark LUKS header backup")
        return backup

    @classmethod
    def received(cls, where: str, uuid: str, sha256: str, data: str) -> HeaderBackup:
        """The backup a host sent (`data`: base64 of the gzipped copy), checked: it unpacks,
        is a LUKS header, and has the digest the host printed."""
        try:
            gzipped = base64.b64decode(data, validate=True)
            header = gzip.decompress(gzipped)
        except (ValueError, OSError, EOFError):
            header = b""
        if not header.startswith(MAGIC) or hashlib.sha256(header).hexdigest() != sha256:
            raise HeaderError(f"{where}: the header backup arrived damaged (nothing stored)")
        return cls(uuid, sha256, gzipped)

    def matches(self, live: LiveHeader) -> bool:
        return (self.uuid, self.sha256) == (live.uuid, live.sha256)


@dataclass(frozen=True)
class LiveHeader:
    """A volume's header as the host read it: UUID, canonical SHA-256, and base64 of the
    gzipped copy when it was sent ("" otherwise)."""

    uuid: str
    sha256: str
    data: str = field(default="", repr=False)


def _line(volume: str, *words: object) -> StringCommand:
    """`echo header VOLUME WORDS...` (values in double quotes: shell variables expand)."""
    return StringCommand("echo", QuoteString(f"{MARKER} {volume}"), *words)


def _preamble() -> list[str]:
    """Stop at the first failure, tools' messages on stdout, C locale (luksDump is parsed),
    private files, and a temporary directory on /run removed however the script ends."""
    words = (
        ("set", "-e"),
        ("exec", "2>&1"),
        ("LC_ALL=C", ";", "export", "LC_ALL", ";", "umask", "077"),
        ("dir=$(mktemp", "-d", QuoteString(f"{WORK_DIR}/bulwark-luks-header.XXXXXX"), ")"),
        ("trap", "'rm -rf \"$dir\"'", "EXIT"),
    )
    return [StringCommand(*line).get_raw_value() for line in words]


def _canonical_copy() -> list[StringCommand]:
    """Commands turning "$dir/full" (a luksHeaderBackup) into "$dir/kept": the same size,
    with the metadata (both copies) and every used key slot's area, zeros elsewhere."""
    area = r"'s/^[[:space:]]*Area %s:\([0-9]*\) .*/\1/p'"
    metadata = r"'s/^Metadata area:[[:space:]]*\([0-9]*\) .*/\1/p'"
    regions = (
        "{", "echo", "0", '"$((2 * meta))"', ";",
        "sed", "-n", "-e", area % "offset", "-e", area % "length", '"$dir/dump"', "|",
        "paste", "-d", "' '", "-", "-", ";", "}",
    )  # fmt: skip
    copy = (
        "dd", 'if="$dir/full"', 'of="$dir/kept"', "bs=64K", "iflag=skip_bytes,count_bytes",
        "oflag=seek_bytes", "conv=notrunc", 'skip="$offset"', 'seek="$offset"',
        'count="$length"', "status=none",
    )  # fmt: skip
    return [
        StringCommand("cryptsetup", "luksDump", '"$dir/full"', ">", '"$dir/dump"'),
        StringCommand("meta=$(sed", "-n", metadata, '"$dir/dump")'),
        StringCommand("test", "-n", '"$meta"'),
        StringCommand("truncate", "-s", '"$(stat -c %s "$dir/full")"', '"$dir/kept"'),
        StringCommand(*regions, "|", "while", "read", "-r", "offset", "length", ";", "do",
                      *copy, ";", "done"),
    ]  # fmt: skip


def backup_script(volumes: Sequence[tuple[VolumeSpec, str]], send: bool) -> str:
    """A script for the host's `sh -s`: for each (volume, SHA-256 the vault holds or ""),
    back its header up, print its UUID and canonical digest and, if `send` and the digest is
    not the vault's, the canonical copy (gzip, base64). Reads the devices only."""
    lines = _preamble()
    for spec, known in volumes:
        backup = StringCommand(
            "cryptsetup", "luksHeaderBackup", "--batch-mode", QuoteString(spec.device),
            "--header-backup-file", '"$dir/full"',
        )  # fmt: skip
        sent = StringCommand(
            "if", "test", '"$digest"', "!=", QuoteString(known or "none"), ";", "then",
            "printf", QuoteString(f"{MARKER} {spec.name} data "), ";",
            "gzip", "-9", "-n", "-c", '"$dir/kept"', "|", "base64", "-w", "0", ";",
            "echo", ";", "fi",
        )  # fmt: skip
        steps = [
            backup,
            *_canonical_copy(),
            _line(spec.name, "uuid", '"$(cryptsetup luksUUID "$dir/full")"'),
            StringCommand("digest=$(sha256sum", '"$dir/kept"', "|", "cut", "-d", "' '", "-f1)"),
            _line(spec.name, "sha256", '"$digest"'),
            *([sent] if send else []),
            StringCommand("rm", "-f", '"$dir/full"', '"$dir/dump"', '"$dir/kept"'),
        ]
        lines += [step.get_raw_value() for step in steps]
    return "\n".join(lines) + "\n"


def _fields(line: str) -> tuple[str, str, str, str]:
    """(marker, volume, word, rest) of a line (empty strings where it has fewer words)."""
    marker, volume, word, rest = [*line.split(" ", 3), "", "", ""][:4]
    return marker, volume, word, rest.strip()


def read_headers(output: str) -> dict[str, LiveHeader]:
    """Volume -> its header, for each volume a backup script printed both UUID and digest of."""
    found: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        marker, volume, word, rest = _fields(line)
        if marker == MARKER and word in ("uuid", "sha256", "data"):
            found.setdefault(volume, {})[word] = rest
    return {
        volume: LiveHeader(words["uuid"], words["sha256"], words.get("data", ""))
        for volume, words in found.items()
        if words.get("uuid") and words.get("sha256")
    }


def messages(output: str) -> list[str]:
    """The lines of a session that are not a header script's own (the tools' messages): what
    a failure may show, since a header script's lines may carry a header."""
    return [line for line in output.splitlines() if line.strip() and _fields(line)[0] != MARKER]


# What a restore script printed about its volume (its lines' third word onwards).
REFUSED, DAMAGED, RESTORED = "refused", "damaged", "restored"


def restore_script(spec: VolumeSpec, backup: HeaderBackup, key: Secret) -> str:
    """A script for the host's `sh -s`: print the UUID the device's header has (`-`: no valid
    LUKS header); unless that is the backup's or none, print `refused` and stop; unpack the
    backup (its digest checked, `damaged` otherwise), `luksHeaderRestore` it, print
    `restored`, then whether the vault's key opens the volume (`key-opens yes|no`). The
    backup and the key come in here-documents, never as arguments."""
    device = QuoteString(spec.device)
    name = spec.name
    live = StringCommand(
        "if", "cryptsetup", "isLuks", device, ";", "then",
        "live=$(cryptsetup", "luksUUID", device, ")", ";", "else", "live=", ";", "fi",
    )  # fmt: skip
    other = StringCommand(
        "if", "test", "-n", '"$live"', "&&", "test", '"$live"', "!=", QuoteString(backup.uuid),
        ";", "then", _line(name, REFUSED), ";", "exit", "1", ";", "fi",
    )  # fmt: skip
    unpacked = StringCommand("base64", "-d", "<<'HEADER'", "|", "gunzip", ">", '"$dir/header"')
    damaged = StringCommand(
        "if", "test", '"$(sha256sum "$dir/header" | cut -d " " -f1)"', "!=",
        QuoteString(backup.sha256), ";", "then", _line(name, DAMAGED), ";", "exit", "1", ";",
        "fi",
    )  # fmt: skip
    restored = StringCommand(
        "cryptsetup", "luksHeaderRestore", "--batch-mode", device, "--header-backup-file",
        '"$dir/header"',
    )  # fmt: skip
    proven = StringCommand(
        "if", *decoded("key"), *opens(device), "2>/dev/null", ";", "then",
        _line(name, "key-opens", "yes"), ";", "else", _line(name, "key-opens", "no"), ";", "fi",
    )  # fmt: skip
    checked = (live, _line(name, "device", '"${live:--}"'), other, unpacked)
    lines = [
        *_preamble(),
        *(step.get_raw_value() for step in checked),
        base64.encodebytes(backup.gzipped).decode().rstrip("\n"),
        "HEADER",
        *(step.get_raw_value() for step in (damaged, restored, _line(name, RESTORED))),
        *assigned("key", key),
        proven.get_raw_value(),
    ]
    return "\n".join(lines) + "\n"


def read_restore(output: str, volume: str) -> dict[str, str]:
    """What a restore script printed about `volume`: word -> the rest of its line."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        marker, name, word, rest = _fields(line)
        if marker == MARKER and name == volume:
            found[word] = rest
    return found
