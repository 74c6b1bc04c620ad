"""LUKS header backups in the vault: `bulwark storage backup-headers [--check]`,
`restore-header` and the refresh after `rotate-key`, with real cryptsetup on file images.

cryptsetup's luksFormat, luksHeaderBackup, luksHeaderRestore, luksDump and --test-passphrase
work on a plain file without device-mapper, so the host here is this machine: the scripts the
commands would send over SSH run in a local `sh -s`, on an image under /dev/shm named as the
volume's device in the inventory. What a real block device behind a real SSH session adds is
proven only in the VM (tests/vm).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bulwark import luks, luks_header
from bulwark.cli import main
from bulwark.cli import storage as storage_cli
from bulwark.luks_header import HeaderBackup, HeaderError
from bulwark.remote import Session, run_script
from bulwark.secret import Secret
from bulwark.vault import Vault

HOST, VOLUME = "nj-mail", "mail"
KEY_NAME, RECOVERY_NAME = f"luks/{HOST}/{VOLUME}", f"luks-recovery/{HOST}/{VOLUME}"
HEADER_NAME = f"luks-header/{HOST}/{VOLUME}"
IMAGE_BYTES = 32 * 1024 * 1024  # the default 16 MiB LUKS2 header, and data behind it
# A cheap key-slot cost for the images the tests format (the commands' own slots use Argon2id).
CHEAP = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")

needs_cryptsetup = pytest.mark.skipif(
    shutil.which("cryptsetup") is None or not os.access(luks_header.WORK_DIR, os.W_OK),
    reason="needs cryptsetup (make checkers installs cryptsetup-bin) and a writable /run",
)


def cryptsetup(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(["cryptsetup", *args], input=stdin, capture_output=True, check=False)


class Escrow:
    """The two-site inventory whose nj-mail keeps its mail volume on a file image, formatted
    with the vault's key and recovery passphrase; the commands' SSH sessions run here."""

    def __init__(self, inventory: Path, vault: Vault, image: Path):
        self.inventory = inventory
        self.vault_path = vault.path
        self.image = image
        self.key = base64.b64decode(vault.get(KEY_NAME).reveal())
        self.recovery = vault.get(RECOVERY_NAME).reveal().encode()
        self.scripts: list[str] = []
        self.outputs: list[str] = []

    def vault(self) -> Vault:
        return Vault.open(self.vault_path, _vault_key())

    def format(self) -> None:
        """A fresh LUKS2 volume on the image: the vault's key, then the recovery passphrase."""
        assert cryptsetup(
            "luksFormat", "--batch-mode", "--type", "luks2", *CHEAP, "--key-file=-",
            str(self.image), stdin=self.key,
        ).returncode == 0  # fmt: skip
        with tempfile.NamedTemporaryFile() as recovery:
            Path(recovery.name).write_bytes(self.recovery)
            added = cryptsetup(
                "luksAddKey", "--batch-mode", *CHEAP, "--key-file=-", str(self.image),
                recovery.name, stdin=self.key,
            )  # fmt: skip
        assert added.returncode == 0, added.stderr

    def opens(self, secret: bytes) -> bool:
        return cryptsetup(
            "open", "--test-passphrase", "--key-file=-", str(self.image), stdin=secret
        ).returncode == 0  # fmt: skip

    def uuid(self) -> str:
        return cryptsetup("luksUUID", str(self.image)).stdout.decode().strip()

    def run_everywhere(
        self,
        jobs: Mapping[str, tuple[Sequence[str], str]],
        timeout: float = 60,
        done: Callable[[Session], None] | None = None,
    ) -> dict[str, Session]:
        """bulwark.remote.run_everywhere with this machine as every host."""
        sessions = {}
        for name, (argv, script) in jobs.items():
            assert argv[0] == "ssh" and argv[-3:] == [name, "sh", "-s"], argv
            self.scripts.append(script)
            sessions[name] = run_script(name, ["sh", "-s"], script, timeout)
        return sessions

    def cli(self, *args: str) -> Result:
        """`bulwark storage ARGS...` on the inventory (the host's session runs here); the
        output never holds a key, a passphrase or a header."""
        command, *rest = args
        result = CliRunner().invoke(
            main, ["storage", command, str(self.inventory), *rest], catch_exceptions=False
        )
        self.outputs.append(result.output)
        self.assert_no_secret(result.output)
        return result

    def assert_no_secret(self, text: str) -> None:
        vault = self.vault()
        secrets = [vault.get(name).reveal() for name in vault.names() if name.startswith("luks")]
        for name in vault.names():
            if name.startswith("luks-header/"):
                data = json.loads(vault.get(name).reveal())["gzip"]
                secrets += [data[index : index + 40] for index in range(0, len(data), 50_000)]
        secrets += [self.recovery.decode(), base64.b64encode(self.key).decode()]
        for secret in secrets:
            assert secret not in text


def _vault_key() -> bytes:
    return base64.b64decode(Path(os.environ["BULWARK_VAULT_KEY"]).read_bytes())


@pytest.fixture
def escrow(two_site_inventory, inventory_with_vault, monkeypatch, logs_not_deployed) -> Escrow:
    """One volume on a file image (the logs volume left out: one is enough)."""
    _, vault = inventory_with_vault
    images = Path(tempfile.mkdtemp(prefix="bulwark-escrow-", dir="/dev/shm"))
    image = images / "mail.img"
    with image.open("wb") as file:
        file.truncate(IMAGE_BYTES)
    two_site_inventory.host(HOST)["volume_devices"] = {VOLUME: str(image)}
    # A file of its own: the first one is loaded (and cached) already.
    found = Escrow(two_site_inventory.write("escrow.py"), vault, image)
    found.format()
    monkeypatch.setattr(storage_cli, "run_everywhere", found.run_everywhere)
    yield found
    shutil.rmtree(images)


@needs_cryptsetup
def test_a_header_backed_up_and_restored_over_a_wiped_one_opens_with_the_vaults_key(escrow):
    backed = escrow.cli("backup-headers", "--limit", HOST)
    assert backed.exit_code == 0, backed.output
    assert f"{HOST}: {VOLUME}: header backed up into the vault (" in backed.output
    stored = HeaderBackup.from_value(HEADER_NAME, escrow.vault().get(HEADER_NAME).reveal())
    assert stored.uuid == escrow.uuid()
    # Only what changed is written: the same header again leaves the vault file as it was.
    before = escrow.vault_path.read_bytes()
    again = escrow.cli("backup-headers", "--limit", HOST)
    assert again.exit_code == 0 and f"{HOST}: {VOLUME}: header backup current" in again.output
    assert escrow.vault_path.read_bytes() == before

    with escrow.image.open("r+b") as image:  # the header gone, both copies
        image.write(bytes(luks_header_size(escrow)))
    assert cryptsetup("isLuks", str(escrow.image)).returncode != 0
    asked = escrow.cli("restore-header", HOST, VOLUME)
    assert asked.exit_code == 2 and "Run again with --yes" in asked.output
    assert f"{HOST}: volume {VOLUME} on {escrow.image}" in asked.output
    assert cryptsetup("isLuks", str(escrow.image)).returncode != 0  # nothing written

    restored = escrow.cli("restore-header", HOST, VOLUME, "--yes")
    assert restored.exit_code == 0, restored.output
    assert restored.output.strip() == (
        f"{HOST}: volume {VOLUME} on {escrow.image}: header restored (UUID {stored.uuid}); "
        "the vault's key opens it"
    )
    assert escrow.opens(escrow.key) and escrow.opens(escrow.recovery)
    assert not escrow.opens(b"not the key")
    assert escrow.cli("backup-headers", "--limit", HOST, "--check").exit_code == 0
    # The temporary copies on /run are gone with the session.
    assert not list(Path(luks_header.WORK_DIR).glob("bulwark-luks-header.*"))


def luks_header_size(escrow: Escrow) -> int:
    """Both metadata copies and the key-slot area: where the data segment starts."""
    dump = cryptsetup("luksDump", str(escrow.image)).stdout.decode()
    offset = dump.split("Data segments:", 1)[1].split("offset:", 1)[1].split()[0]
    return int(offset)


@needs_cryptsetup
def test_a_header_is_never_restored_onto_another_volume(escrow):
    assert escrow.cli("backup-headers", "--limit", HOST).exit_code == 0
    escrow.format()  # another volume now: a new UUID, its own key slots
    other = escrow.uuid()
    stored = HeaderBackup.from_value(HEADER_NAME, escrow.vault().get(HEADER_NAME).reveal())
    assert other != stored.uuid
    result = escrow.cli("restore-header", HOST, VOLUME, "--yes")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"{HOST}: volume {VOLUME} on {escrow.image}: refused: its LUKS header has UUID {other}, "
        f"the backup {stored.uuid}: not this volume's header; nothing was written"
    )
    assert escrow.uuid() == other and escrow.opens(escrow.key)


@needs_cryptsetup
def test_check_names_a_missing_then_a_stale_header_and_writes_nothing(escrow):
    before = escrow.vault_path.read_bytes()
    missing = escrow.cli("backup-headers", "--limit", HOST, "--check")
    assert missing.exit_code == 1
    assert f"{HOST}: {VOLUME}: header backup stale: none in the vault" in missing.output
    assert escrow.vault_path.read_bytes() == before
    assert escrow.cli("backup-headers", "--limit", HOST).exit_code == 0
    assert escrow.cli("backup-headers", "--limit", HOST, "--check").exit_code == 0

    with tempfile.NamedTemporaryFile() as extra:  # a key slot added by hand
        Path(extra.name).write_bytes(b"an extra passphrase")
        added = cryptsetup(
            "luksAddKey", "--batch-mode", *CHEAP, "--key-file=-", str(escrow.image), extra.name,
            stdin=escrow.key,
        )  # fmt: skip
    assert added.returncode == 0
    before = escrow.vault_path.read_bytes()
    stale = escrow.cli("backup-headers", "--limit", HOST, "--check")
    assert stale.exit_code == 1
    assert (
        f"{HOST}: {VOLUME}: header backup stale: the live header changed (UUID {escrow.uuid()})"
        in stale.output
    )
    assert escrow.vault_path.read_bytes() == before
    # --check sends no header over the session.
    assert all("gzip" not in script for script in escrow.scripts[-1:])


@needs_cryptsetup
def test_rotate_key_refreshes_the_header_backup(escrow):
    assert escrow.cli("backup-headers", "--limit", HOST).exit_code == 0
    old = escrow.vault().get(HEADER_NAME).reveal()
    rotated = escrow.cli("rotate-key", "--limit", HOST)
    assert rotated.exit_code == 0, rotated.output
    assert f"{HOST}: {VOLUME}: key rotated" in rotated.output
    assert f"{HOST}: {VOLUME}: header backed up into the vault" in rotated.output
    vault = escrow.vault()
    assert vault.get(HEADER_NAME).reveal() != old
    assert escrow.cli("backup-headers", "--limit", HOST, "--check").exit_code == 0
    assert escrow.opens(base64.b64decode(vault.get(KEY_NAME).reveal()))
    assert not escrow.opens(escrow.key)


# --- without cryptsetup: the entry, the scripts, what is printed ------------------------------

SPEC = luks.VolumeSpec("mail", "/dev/disk/by-id/virtio-mail", "bulwark-mail", "/var/vmail", "x")
HEADER = luks_header.MAGIC + bytes(4096)


def test_the_vault_entry_round_trips_and_its_repr_shows_no_header():
    gzipped = gzip.compress(HEADER)
    sent = base64.b64encode(gzipped).decode()
    digest = hashlib.sha256(HEADER).hexdigest()
    backup = HeaderBackup.received("h: mail", "u-1", digest, sent)
    assert HeaderBackup.from_value(HEADER_NAME, backup.value()) == backup
    assert sent not in repr(backup)
    with pytest.raises(HeaderError, match="h: mail: the header backup arrived damaged"):
        HeaderBackup.received("h: mail", "u-1", "0" * 64, sent)
    with pytest.raises(HeaderError, match=f"^vault entry {HEADER_NAME} is not") as error:
        HeaderBackup.from_value(HEADER_NAME, '{"uuid": "u-1"}')
    assert "u-1" not in str(error.value)


def test_the_output_is_read_by_volume_and_a_failure_never_shows_a_header_line():
    output = "\n".join(
        [
            "header mail uuid u-1",
            "header mail sha256 abc",
            "header mail data SEKRET",
            "header dav uuid u-2",
            "Device /dev/vdc is not a valid LUKS device.",
        ]
    )
    assert luks_header.read_headers(output) == {
        "mail": luks_header.LiveHeader("u-1", "abc", "SEKRET")
    }
    assert luks_header.messages(output) == ["Device /dev/vdc is not a valid LUKS device."]
    session = Session("h", output + "\nheader mail data SEK", 0, 1)
    assert "SEK" not in storage_cli._why(session)


def test_the_restore_script_holds_the_header_and_key_only_in_here_documents():
    backup = HeaderBackup("u-1", "d" * 64, b"\x1f\x8b" + bytes(100))
    key = Secret(KEY_NAME, "c2VjcmV0")
    script = luks_header.restore_script(SPEC, backup, key)
    lines = script.splitlines()
    assert script.count("c2VjcmV0") == 1 and lines[lines.index("c2VjcmV0") - 1] == (
        "key=$(cat <<'KEY'"
    )
    data = base64.encodebytes(backup.gzipped).decode().splitlines()
    assert lines[lines.index(data[0]) - 1].endswith("<<'HEADER' | gunzip > \"$dir/header\"")
    # Refused before anything is written: the UUID check comes before the restore.
    assert script.index("refused") < script.index("luksHeaderRestore")
    assert "mktemp -d /run/bulwark-luks-header.XXXXXX" in script
