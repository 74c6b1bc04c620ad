"""bulwark.luks offline: what the fact reads, which device is refused and why, and the commands
each state of a volume gets (facts in, commands out). The real thing runs in tests/vm."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess

import pytest
from offline import run_operation
from pyinfra.api import OperationError

from bulwark import luks
from bulwark.secret import Secret

SPEC = luks.VolumeSpec(
    name="mail",
    device="/dev/disk/by-id/virtio-mail",
    mapper="bulwark-mail",
    mount_point="/var/vmail",
    mount_unit="var-vmail.mount",
)
BLANK = luks.DeviceState(
    block=True, blkid=2, content="", signatures="", luks2=False, keyslots=0, opened=False,
    backing="",
    resolved="/dev/vdb", mapped_blkid=2, mapped_content="", mapped_signatures="", mounted="",
    entries="", beneath="", sealed=False,
)  # fmt: skip
CLOSED = dataclasses.replace(
    BLANK, blkid=0, content="crypto_LUKS", signatures="crypto_LUKS", luks2=True, keyslots=2
)
OPEN = dataclasses.replace(
    CLOSED, opened=True, backing="/dev/vdb", mapped_blkid=0, mapped_content="ext4",
    mapped_signatures="ext4",
)  # fmt: skip
MOUNTED = dataclasses.replace(OPEN, mounted="/dev/mapper/bulwark-mail", entries="lost+found")
WHERE = "host: volume mail on /dev/disk/by-id/virtio-mail"
MKFS = "mkfs.ext4 -q -L mail /dev/mapper/bulwark-mail"
READ = "read -r key ; read -r recovery ;"
PBKDF_ARGS = "--pbkdf argon2id --pbkdf-memory 262144 --pbkdf-parallel 2 --pbkdf-force-iterations 4"
OPEN_COMMAND = (
    f"{READ} printf '%s' \"$key\" | base64 -d | cryptsetup open --type luks2 --key-file=- "
    "/dev/disk/by-id/virtio-mail bulwark-mail"
)
ADD_RECOVERY = (
    f"{READ} printf '%s' \"$recovery\" | {{ printf '%s' \"$key\" | base64 -d | cryptsetup "
    f"luksAddKey --batch-mode {PBKDF_ARGS} --key-file=- /dev/disk/by-id/virtio-mail /dev/fd/3 "
    "; } 3<&0"
)
MOUNT = "systemctl start var-vmail.mount"


def commands(found: luks.DeviceState) -> list[str]:
    facts = {"LuksVolumes": {"mail": found}}
    return run_operation(luks.luks_volume, facts, spec=SPEC).commands


def test_a_blank_device_is_formatted_opened_made_ext4_and_mounted():
    format_, *rest = commands(BLANK)
    assert format_ == (
        f"{READ} printf '%s' \"$key\" | base64 -d | cryptsetup luksFormat --batch-mode "
        f"--type luks2 --cipher aes-xts-plain64 --key-size 512 {PBKDF_ARGS} --label bulwark-mail "
        "--key-file=- /dev/disk/by-id/virtio-mail"
    )
    assert rest == [ADD_RECOVERY, OPEN_COMMAND, MKFS, MOUNT]


def test_a_volume_with_one_key_slot_gets_its_recovery_passphrase_and_no_more():
    assert commands(dataclasses.replace(MOUNTED, keyslots=1)) == [ADD_RECOVERY]
    assert commands(dataclasses.replace(MOUNTED, keyslots=3)) == []


def test_a_closed_luks_volume_is_opened_never_formatted_and_mkfs_only_if_blank_inside():
    open_, mkfs, mount = commands(CLOSED)
    assert open_ == OPEN_COMMAND
    assert mkfs.startswith("blkid -p /dev/mapper/bulwark-mail >/dev/null; test $? -ne 2 ||")
    assert mkfs.endswith(f"|| {MKFS}") and "wipefs -n -i" in mkfs
    assert mount == MOUNT


def test_an_open_volume_is_mounted_and_a_mounted_one_left_alone():
    assert commands(OPEN) == [MOUNT]
    assert commands(MOUNTED) == []


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        (
            dataclasses.replace(BLANK, blkid=0, content="ext4", signatures="ext4"),
            f"{WHERE}: holds ext4, not LUKS2 and not blank: refused, nothing written to it",
        ),
        (  # a partition table: blkid finds no TYPE but is not silent
            dataclasses.replace(BLANK, blkid=0, signatures="gpt PMBR"),
            f"{WHERE}: holds gpt PMBR, not LUKS2 and not blank: refused, nothing written to it",
        ),
        (  # blkid silent, wipefs not: still not blank
            dataclasses.replace(BLANK, signatures="xfs"),
            f"{WHERE}: holds xfs, not LUKS2 and not blank: refused, nothing written to it",
        ),
        (
            dataclasses.replace(BLANK, blkid=8),
            f"{WHERE}: holds data blkid cannot name (8), not LUKS2 and not blank: refused, "
            "nothing written to it",
        ),
        (
            dataclasses.replace(BLANK, block=False),
            f"{WHERE}: not a block device (inventory field volume_devices)",
        ),
        (
            dataclasses.replace(OPEN, backing="/dev/vdc"),
            f"{WHERE}: /dev/mapper/bulwark-mail is already opened on /dev/vdc",
        ),
        (
            dataclasses.replace(OPEN, mapped_content="xfs", mapped_signatures="xfs"),
            f"{WHERE}: the opened volume holds xfs, not ext4: refused",
        ),
        (
            dataclasses.replace(OPEN, mounted="/dev/vdd"),
            f"{WHERE}: /var/vmail has /dev/vdd mounted on it",
        ),
        (
            dataclasses.replace(BLANK, entries="cur new "),
            f"{WHERE}: /var/vmail holds files (cur new), which the volume would hide: move them "
            "onto the volume first",
        ),
    ],
    ids=["ext4", "gpt", "wipefs-only", "ambivalent", "missing", "opened-elsewhere",
         "xfs-inside", "other-mount", "mount-point-full"],
)  # fmt: skip
def test_anything_else_is_refused_naming_host_volume_and_device(found, reason):
    assert luks.refusal("host", SPEC, found) == reason
    with pytest.raises(OperationError, match=re.escape(f"offline-{reason}")):
        commands(found)  # the operation's host is "offline-host": nothing is run


LOGS = luks.VolumeSpec(
    name="logs",
    device="/dev/disk/by-id/virtio-logs",
    mapper="bulwark-logs",
    mount_point="/var/log",
    mount_unit="var-log.mount",
    units=("bulwark-logs.service", "nginx.service"),
    moved_in=True,
    reopened=("nginx.service",),
)
LIVE_LOGS = dataclasses.replace(BLANK, entries="apt journal wtmp ", beneath="apt journal wtmp ")
MOVED = dataclasses.replace(
    OPEN, mounted="/dev/mapper/bulwark-logs", entries="apt journal lost+found ", sealed=True
)


def logs_commands(found: luks.DeviceState) -> list[str]:
    facts = {"LuksVolumes": {"logs": found}}
    return run_operation(luks.luks_volume, facts, spec=LOGS).commands


def test_var_log_is_moved_onto_its_new_volume_instead_of_refused():
    *made, move = logs_commands(LIVE_LOGS)
    assert [command.split(" cryptsetup ")[-1].split()[0] for command in made[:3]] == [
        "luksFormat", "luksAddKey", "open",
    ]  # fmt: skip
    assert made[3] == "mkfs.ext4 -q -L logs /dev/mapper/bulwark-logs"
    assert move == luks.move_in(LOGS).get_raw_value()
    # journald lets go first and flushes last; nothing beneath goes unless the volume is mounted.
    assert move.startswith("journalctl --relinquish-var && ")
    assert move.endswith(
        " && journalctl --flush && { ! systemctl is-active --quiet nginx.service || "
        "systemctl restart nginx.service ; }"
    )  # a running daemon reopens its log files on the volume, not the deleted ones beneath
    copy, empty = move.index("cp -a"), move.index("-mindepth 1 -delete")
    assert copy < move.index("systemctl start var-log.mount") < empty
    assert move.index("mountpoint -q /var/log && unshare -m") < empty


def test_a_move_cut_short_is_finished_and_a_finished_one_left_alone():
    # Cut after the mount: the directory beneath is still full, not yet sealed.
    assert logs_commands(dataclasses.replace(MOVED, beneath="wtmp ", sealed=False)) == [
        luks.move_in(LOGS).get_raw_value()
    ]
    assert logs_commands(dataclasses.replace(MOVED, sealed=False)) == [
        luks.move_in(LOGS).get_raw_value()
    ]
    assert logs_commands(MOVED) == []


def test_after_a_reboot_the_logs_volume_is_opened_and_mounted_over_its_empty_sealed_directory():
    closed = dataclasses.replace(CLOSED, sealed=True)
    open_, _mkfs, mount = logs_commands(closed)
    assert open_.endswith("cryptsetup open --type luks2 --key-file=- /dev/disk/by-id/virtio-logs "
                          "bulwark-logs")  # fmt: skip
    assert mount == "systemctl start var-log.mount"


def test_files_that_appeared_beneath_a_sealed_directory_are_refused():
    found = dataclasses.replace(MOVED, beneath="intruder ")
    reason = (
        "host: volume logs on /dev/disk/by-id/virtio-logs: intruder appeared in the immutable "
        "directory beneath /var/log on the root filesystem: look at them and remove them first"
    )
    assert luks.refusal("host", LOGS, found) == reason
    with pytest.raises(OperationError, match=re.escape(reason)):
        logs_commands(found)


def test_the_fact_reads_each_volume_from_its_lines():
    output = [
        "volume mail", "block 1", "blkid 0", "content crypto_LUKS", "signatures crypto_LUKS ",
        "luks2 1", "keyslots 2", "opened 1", "backing /dev/vdb", "resolved /dev/vdb",
        "mapped_blkid 0",
        "mapped_content ext4", "mapped_signatures ext4 ", "mounted /dev/mapper/bulwark-mail",
        "entries lost+found ", "beneath ", "sealed 0",
    ]  # fmt: skip
    assert luks.LuksVolumes().process(output) == {"mail": MOUNTED}


@pytest.mark.skipif(
    shutil.which("cryptsetup") is None, reason="needs cryptsetup (make checkers installs it)"
)
def test_the_fact_counts_our_key_slots_not_a_clevis_binding_on_a_real_header(tmp_path):
    """The fact's own command, run here on a LUKS2 file image (luksDump reads a file as it reads
    a device): the vault's key and the recovery passphrase count, a Clevis binding's slot
    (a luks2 slot named by a clevis token) does not, so a bound volume that lost its recovery
    slot gets it back."""
    image = tmp_path / "mail.img"
    image.write_bytes(b"")
    os.truncate(image, 32 * 1024 * 1024)
    key, recovery, bound = (tmp_path / name for name in ("key", "recovery", "bound"))
    for path in (key, recovery, bound):
        path.write_text(f"{path.name} passphrase")
    cheap = ["--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
    token = {"type": "clevis", "keyslots": ["2"], "jwe": {"ciphertext": "", "protected": ""}}
    for args, stdin in (
        (["luksFormat", *cheap, "--type", "luks2", f"--key-file={key}", image], ""),
        (["luksAddKey", *cheap, f"--key-file={key}", image, recovery], ""),
        (["luksAddKey", *cheap, f"--key-file={key}", image, bound], ""),
        (["token", "import", image], json.dumps(token)),
    ):
        subprocess.run(["cryptsetup", *map(str, args)], input=stdin, text=True, check=True)
    spec = dataclasses.replace(SPEC, device=str(image))

    def probed() -> luks.DeviceState:
        command = luks.LuksVolumes().command((spec,)).get_raw_value()
        output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
        return luks.LuksVolumes().process(output.splitlines())["mail"]

    assert (probed().luks2, probed().keyslots) == (True, 2)
    subprocess.run(
        ["cryptsetup", "luksKillSlot", "--batch-mode", f"--key-file={key}", str(image), "1"],
        check=True,
    )
    assert probed().keyslots == 1
    assert commands(dataclasses.replace(MOUNTED, keyslots=probed().keyslots)) == [ADD_RECOVERY]


def test_the_key_and_passphrase_reach_stdin_only_and_never_show_themselves():
    key = Secret("luks/nj-store/mail", "c2VjcmV0")
    recovery = Secret("luks-recovery/nj-store/mail", "abcd-efgh")
    stdin = luks.KeyStdin(key, recovery)
    assert stdin.readlines() == ["c2VjcmV0", "abcd-efgh"] == list(stdin)
    for value in ("c2VjcmV0", "abcd-efgh"):
        assert value not in repr(stdin) and value not in str(stdin)
        assert not [line for line in commands(BLANK) if value in line]


def test_the_unlock_script_opens_mounts_and_starts_and_holds_the_key_only_in_a_heredoc():
    spec = dataclasses.replace(SPEC, units=("dovecot.service", "bulwark-radicale@.service"))
    key = Secret("luks/nj-store/mail", "c2VjcmV0")
    script = luks.unlock_script([(spec, key)]).splitlines()
    assert script == [
        "set -e",
        "exec 2>&1",
        "test -b /dev/mapper/bulwark-mail || base64 -d <<'KEY' | cryptsetup open --type luks2 "
        "--key-file=- /dev/disk/by-id/virtio-mail bulwark-mail",
        "c2VjcmV0",
        "KEY",
        MOUNT,
        "if systemctl is-enabled --quiet dovecot.service 2>/dev/null ; then "
        "systemctl start dovecot.service ; fi",
        "echo 'mail: opened and mounted'",
        f"echo '{luks.UNLOCKED}'",
    ]


def test_the_rotate_script_adds_proves_then_removes_and_holds_keys_only_in_heredocs():
    old = Secret("luks/nj-store/mail", "b2xk")
    new = Secret("luks-next/nj-store/mail", "bmV3")
    script = luks.rotate_script([(SPEC, old, new)])
    lines = script.splitlines()
    assert lines[2:10] == [
        "old=$(cat <<'KEY'",
        "b2xk",
        "KEY",
        ")",
        "new=$(cat <<'KEY'",
        "bmV3",
        "KEY",
        ")",
    ]
    actions = [line.split(" cryptsetup ")[1].split()[0] for line in lines if " cryptsetup " in line]
    assert actions == ["open", "luksAddKey", "open", "open", "luksRemoveKey"]
    assert lines[-1] == "echo 'mail: rotated'"
    assert script.count("b2xk") == script.count("bmV3") == 1  # only in its here-document
