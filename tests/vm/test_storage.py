"""The storage role on a real kernel: LUKS2 volumes formatted only when blank, opened, mounted,
refused when they hold anything else, and left alone by a second deploy.

Run in order on the guests (tests/vm/conftest.py): the refusal first, while the mail disk is
still blank; then the first deploy and what it made, the binding to the other site's Tang
included; then the deploys that must change nothing or only reopen; then reboots, with the
other site's Tang answering and without it.
"""

from __future__ import annotations

import re
import time

from conftest import GUEST, INVENTORY, PEER, bulwark_cli

from bulwark import catalogue, clevis, luks, tang
from bulwark.inventory import load_topology
from bulwark.lab import vm
from bulwark.volumes import LOGS_UNIT, volume
from roles import storage

MAIL = volume("mail")
LOGS = volume("logs")
# A line in the journal and a log file, written before the first deploy moves /var/log.
MARKER_TAG = "bulwark-vm-test"
MARKER_FILE = f"{LOGS.path}/bulwark-vm-test.log"
UNLOCK_UNIT = clevis.unlock_unit("mail")
TOPOLOGY = load_topology(INVENTORY)
# The other site's Tang, which GUEST's volume is bound to.
TANG_URL = tang.url(TOPOLOGY.host(PEER))
MAIL_DEVICE = "/dev/disk/by-id/virtio-mail"
DIRTY_DEVICE = "/dev/disk/by-id/virtio-dirty"
# A stand-in for Dovecot's unit (the mailstore role, which installs the real one, needs apt):
# what the storage role's drop-in adds to it is what counts.
STAND_IN = (
    "[Unit]\nDescription=stand-in for Dovecot\n[Service]\nExecStart=/bin/sleep infinity\n"
    "[Install]\nWantedBy=multi-user.target\n"
)


def _sha256(on_guest, device: str) -> str:
    return on_guest(f"sha256sum {device}").stdout.split()[0]


def _vault_get(vault_env: dict[str, str], name: str) -> str:
    argv = ["vault", "get", "--vault", vault_env["BULWARK_VM_VAULT"], name]
    return bulwark_cli(argv, vault_env).stdout.rstrip("\n")


def _waited(on_guest, command: str, seconds: float) -> float:
    """Seconds until `command` succeeds in the guest; fails the test after `seconds`."""
    started = time.monotonic()
    while on_guest(command, check=False).returncode != 0:
        assert time.monotonic() - started < seconds, f"{command!r}: not true after {seconds} s"
        time.sleep(1)
    return time.monotonic() - started


def _beneath(on_guest, path: str) -> str:
    """What the root filesystem holds at `path` beneath whatever is mounted there (seen
    through a bind mount of /, which carries no submounts)."""
    return on_guest(
        f"mkdir -p /mnt/rootfs && mount --bind / /mnt/rootfs && ls -A /mnt/rootfs{path}; "
        "umount /mnt/rootfs"
    ).stdout


def _sealed(on_guest, path: str) -> bool:
    """Whether the root filesystem's directory at `path`, beneath the volume, is immutable
    (seen from a mount namespace of its own, where the volume is unmounted)."""
    flags = on_guest(f"unshare -m sh -c 'umount -l {path}; lsattr -d {path}'").stdout.split()[0]
    return "i" in flags


def _journal(on_guest, where: str) -> str:
    """The marker lines of the journal files in `where` (the volume's or /run's)."""
    return on_guest(f"journalctl -D {where}/$(cat /etc/machine-id) -t {MARKER_TAG} -o cat").stdout


def _logs_on_the_volume(on_guest) -> None:
    """/var/log and its journal on the logs volume, nothing on the root filesystem beneath."""
    source = on_guest(f"findmnt -n -o SOURCE --target {LOGS.path}/journal").stdout.strip()
    assert source == f"/dev/mapper/{LOGS.mapper}"
    assert "/var/log/journal/" in on_guest("journalctl --header | grep 'File path'").stdout
    assert _beneath(on_guest, LOGS.path) == ""
    assert _sealed(on_guest, LOGS.path)


def _no_ordering_cycle(on_guest) -> None:
    """The boot ordered every unit: no cycle was broken, tmpfiles did its work."""
    assert on_guest("journalctl -b -o cat | grep -ci 'ordering cycle'", check=False).stdout == (
        "0\n"
    )
    assert on_guest("systemctl is-active systemd-tmpfiles-setup").stdout.strip() == "active"


def _dump(on_guest) -> dict[str, str]:
    """`cryptsetup luksDump` of the mail disk, as "field: value" pairs (the first of each)."""
    fields: dict[str, str] = {}
    for line in on_guest(f"cryptsetup luksDump {MAIL_DEVICE}").stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if value.strip():
            fields.setdefault(key.strip(), value.strip())
    return fields


def test_a_disk_holding_a_filesystem_is_refused_and_not_a_byte_of_it_changes(on_guest, deploy):
    """The first deploy to reach the guest: the logs volume, before the mail one, is made
    and takes /var/log, with a marker line in the journal and in a file written before."""
    on_guest(f"logger -t {MARKER_TAG} 'before the move' && echo kept > {MARKER_FILE}")
    on_guest(
        f"mkfs.ext4 -q {DIRTY_DEVICE} && mkdir -p /mnt/dirty && mount {DIRTY_DEVICE} /mnt/dirty"
        " && echo 'a customer mail' > /mnt/dirty/mail && umount /mnt/dirty"
    )
    before = _sha256(on_guest, DIRTY_DEVICE)
    run = deploy(env={"BULWARK_VM_MAIL_DISK": "dirty"}, limit=GUEST)
    assert run.returncode != 0
    assert (
        f"nj-store: volume mail on {DIRTY_DEVICE}: holds ext4, not LUKS2 and not blank: refused, "
        "nothing written to it"
    ) in run.stderr
    assert _sha256(on_guest, DIRTY_DEVICE) == before
    assert on_guest(f"cryptsetup isLuks {DIRTY_DEVICE}", check=False).returncode != 0
    assert on_guest(f"blkid -p {MAIL_DEVICE}", check=False).returncode == luks.BLKID_NOTHING


def test_the_first_deploy_formats_opens_and_mounts_every_volume(on_guest, deploy):
    run = deploy()
    assert run.returncode == 0, run.stderr[-3000:]
    print(f"\nfirst deploy: {run.seconds:.1f} s, changed: {run.changed}")
    dump = _dump(on_guest)
    assert dump["Version"] == "2"
    assert dump["Label"] == f"bulwark-{MAIL.name}"
    assert dump["cipher"] == luks.CIPHER
    assert dump["Cipher key"] == f"{luks.KEY_BITS} bits"
    assert dump["PBKDF"] == luks.PBKDF
    assert dump["Memory"] == str(luks.PBKDF_MEMORY_KIB)
    assert dump["Time cost"] == str(luks.PBKDF_ITERATIONS)
    assert dump["Threads"] == str(luks.PBKDF_PARALLEL)
    keyslots = re.findall(
        r"^  (\d+): luks2$", on_guest(f"cryptsetup luksDump {MAIL_DEVICE}").stdout, re.M
    )
    # The vault's key, the recovery passphrase, then the Clevis binding's.
    assert keyslots == ["0", "1", "2"]
    mounted = on_guest(f"findmnt -n -o SOURCE,FSTYPE,OPTIONS {MAIL.path}").stdout.split()
    assert mounted[:2] == [f"/dev/mapper/{MAIL.mapper}", luks.FILESYSTEM]
    assert {"nodev", "nosuid"} <= set(mounted[2].split(","))


def test_the_first_deploy_moves_var_log_onto_its_volume_and_nothing_is_left_beneath(on_guest):
    """/var/log and the journal on the logs volume, with what they held before the deploy;
    the directory beneath on the root filesystem empty and immutable."""
    _logs_on_the_volume(on_guest)
    assert on_guest(f"cat {MARKER_FILE}").stdout == "kept\n"
    assert "before the move" in _journal(on_guest, f"{LOGS.path}/journal")
    assert on_guest(f"systemctl is-active {LOGS_UNIT}").stdout.strip() == "active"
    # Debian's early writers to /var/log, which LOGS_UNIT replaces once the volume is there.
    replaced = " ".join(storage.REPLACED_BY_LOGS_UNIT)
    states = on_guest(f"systemctl is-enabled {replaced}", check=False).stdout.split()
    assert states == ["masked"] * len(storage.REPLACED_BY_LOGS_UNIT)


def test_the_volume_is_bound_to_the_other_sites_tang_reached_only_through_the_tunnel(
    on_guest, on_peer, vault_env
):
    """Clevis's token names the other site's Tang and its vault exchange key; that address is
    routed into the tunnel, and Tang listens on it alone."""
    assert on_guest(f"clevis luks list -d {MAIL_DEVICE}").stdout.strip() == (
        f'2: tang \'{{"url":"{TANG_URL}"}}\''
    )
    token = on_guest(f"cryptsetup token export --token-id 0 {MAIL_DEVICE}").stdout
    binding = clevis.ClevisBindings().process([token.replace("\n", "")])
    exchange = _vault_get(vault_env, f"tang/{PEER}/{tang.EXCHANGE}")
    assert binding == (clevis.Binding(("2",), TANG_URL, tang.thumbprint(exchange)),)
    server = TOPOLOGY.host(PEER)
    route = on_guest(f"ip -o route get {server.lan_address}").stdout
    assert " dev wg0 " in route
    listening = on_peer("ss -Hltn").stdout.split()
    port = f"{server.lan_address}:{catalogue.service(tang.ROLE).port}"
    assert port in listening and f"*:{port.rsplit(':', 1)[1]}" not in listening
    # The unit that opens it at boot, and the mount waiting for it.
    assert on_guest(f"systemctl is-enabled {UNLOCK_UNIT}").stdout.strip() == "enabled"
    requires = on_guest(f"systemctl show -p Requires -p After --value {MAIL.mount_unit}")
    assert UNLOCK_UNIT in requires.stdout.split()


def test_the_recovery_passphrase_opens_the_volume_and_nothing_else_does(on_guest, vault_env):
    """What an operator at the console types when the vault's key cannot reach the host."""
    name = f"luks-recovery/{GUEST}/mail"
    got = bulwark_cli(["vault", "get", "--vault", vault_env["BULWARK_VM_VAULT"], name], vault_env)
    passphrase = got.stdout.rstrip("\n")
    test = f"cryptsetup open --test-passphrase --key-slot 1 --key-file=- {MAIL_DEVICE}"
    assert on_guest(test, check=False, stdin=passphrase).returncode == 0
    wrong = passphrase[:-1] + ("y" if passphrase.endswith("x") else "x")  # one character off
    assert on_guest(test, check=False, stdin=wrong).returncode != 0
    assert on_guest(test, check=False, stdin="").returncode != 0


def test_the_unit_keeping_data_on_a_volume_requires_its_mount(on_guest):
    on_guest(
        f"printf '{STAND_IN}' > /etc/systemd/system/dovecot.service && systemctl daemon-reload"
    )
    shown = on_guest("systemctl show -p RequiresMountsFor -p After -p Requires dovecot.service")
    properties = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    assert properties["RequiresMountsFor"] == MAIL.path
    assert MAIL.mount_unit in properties["After"].split()
    assert MAIL.mount_unit in properties["Requires"].split()
    # A boot with the volume closed must not hold up local-fs.target (and sshd after it).
    before = on_guest(f"systemctl show -p Before --value {MAIL.mount_unit}").stdout.split()
    assert "local-fs.target" not in before and "umount.target" in before


def test_a_second_deploy_changes_nothing(deploy):
    run = deploy()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.changed == []


def test_a_move_of_var_log_cut_short_is_finished_by_the_next_deploy(on_guest, deploy):
    """As if the first deploy had been cut after mounting the volume, before emptying what is
    beneath: the next deploy empties and seals it, and the one after changes nothing."""
    on_guest(
        f"unshare -m sh -c 'umount -l {LOGS.path} && chattr -i {LOGS.path} && "
        f"echo left > {LOGS.path}/left-behind.log'"
    )
    assert _beneath(on_guest, LOGS.path) == "left-behind.log\n"
    run = deploy()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.changed == ["storage | storage: logs volume"]
    _logs_on_the_volume(on_guest)
    assert deploy().changed == []


def test_a_closed_volume_is_opened_again_with_its_data_never_reformatted(on_guest, deploy):
    """As after a reboot: the volume closed, its mount point bare; the deploy opens it."""
    on_guest(f"echo kept > {MAIL.path}/kept")
    uuid = on_guest(f"cryptsetup luksUUID {MAIL_DEVICE}").stdout.strip()
    on_guest(f"systemctl stop {MAIL.mount_unit} && cryptsetup close {MAIL.mapper}")
    assert on_guest(f"ls -A {MAIL.path}").stdout == ""
    run = deploy()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.changed == ["storage | storage: mail volume"]
    assert on_guest(f"cat {MAIL.path}/kept").stdout == "kept\n"
    assert on_guest(f"cryptsetup luksUUID {MAIL_DEVICE}").stdout.strip() == uuid


def test_a_reboot_with_the_other_sites_tang_reachable_opens_the_volume_by_itself(guest, on_guest):
    """Nothing on the host opens it: Clevis, through the tunnel, once the network is up; the
    unit keeping data there starts after, on the volume, data intact."""
    on_guest(f"echo 'before the reboot' > {MAIL.path}/note && systemctl enable --now dovecot")
    vm.stop(guest)
    started = time.monotonic()
    to_ssh = vm.start(guest)
    up = f"systemctl is-active --quiet dovecot && systemctl is-active --quiet {LOGS_UNIT}"
    _waited(on_guest, up, 240)
    print(f"\nreboot with Tang: boot to SSH {to_ssh:.1f} s, to services up "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    assert on_guest(f"systemctl is-active {UNLOCK_UNIT}").stdout.strip() == "active"
    _logs_on_the_volume(on_guest)
    _no_ordering_cycle(on_guest)
    source = on_guest(f"findmnt -n -o SOURCE {MAIL.path}").stdout.strip()
    assert source == f"/dev/mapper/{MAIL.mapper}"
    assert on_guest(f"cat {MAIL.path}/note").stdout == "before the reboot\n"
    assert _beneath(on_guest, MAIL.path) == ""


def test_a_reboot_with_the_other_sites_tang_down_leaves_the_volume_closed_until_unlocked(
    guest, on_guest, on_peer, vault_env
):
    """No key on the host, no Tang: the boot gives up within its bound, the volumes stay
    closed, the mount points bare, the unit keeping data there down, the journal in /run and
    SSH open; `bulwark storage unlock` streams the keys in, and it all comes back, the
    journal flushed onto the logs volume."""
    on_peer("systemctl stop tangd.socket")
    try:
        vm.stop(guest)
        print(f"\nreboot without Tang: boot to SSH {vm.start(guest):.1f} s")
        gave_up = _waited(
            on_guest,
            f"systemctl is-failed --quiet {UNLOCK_UNIT}",
            clevis.UNLOCK_TIMEOUT_SECONDS + 60,
        )
        print(f"unlock unit gave up {gave_up:.1f} s after SSH answered")
        assert on_guest(f"cryptsetup status {MAIL.mapper}", check=False).returncode != 0
        assert on_guest(f"ls -A {MAIL.path}").stdout == ""
        assert on_guest("systemctl is-active dovecot", check=False).stdout.strip() != "active"
        assert on_guest(f"findmnt {LOGS.path}", check=False).returncode != 0
        assert on_guest(f"ls -A {LOGS.path}").stdout == ""
        assert _sealed(on_guest, LOGS.path)
        assert "/var/log/" not in on_guest("journalctl --header | grep 'File path'").stdout
        on_guest(f"logger -t {MARKER_TAG} 'while the volume was closed'")
        _no_ordering_cycle(on_guest)
        started = time.monotonic()
        run = bulwark_cli(["storage", "unlock", str(INVENTORY), "--limit", GUEST], vault_env)
        assert run.returncode == 0, run.stderr
        assert run.stdout == f"{GUEST}: logs: opened and mounted; mail: opened and mounted\n"
        print(f"unlock to services up: {time.monotonic() - started:.1f} s")
        assert on_guest(f"cat {MAIL.path}/note").stdout == "before the reboot\n"
        assert on_guest("systemctl is-active dovecot").stdout.strip() == "active"
        assert _beneath(on_guest, MAIL.path) == ""
        _logs_on_the_volume(on_guest)
        assert "while the volume was closed" in _journal(on_guest, f"{LOGS.path}/journal")
        again = bulwark_cli(["storage", "unlock", str(INVENTORY), "--limit", GUEST], vault_env)
        assert again.returncode == 0 and again.stdout == run.stdout  # already open
    finally:
        on_peer("systemctl start tangd.socket")


def test_after_rotate_key_the_new_key_opens_the_volume_and_the_old_one_does_not(
    on_guest, vault_env, deploy
):
    """The Clevis binding keeps its own slot: it still opens the volume through Tang."""

    old = _vault_get(vault_env, f"luks/{GUEST}/mail")
    run = bulwark_cli(["storage", "rotate-key", str(INVENTORY), "--limit", GUEST], vault_env)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line for line in lines if line.endswith(": key rotated")] == [
        f"{GUEST}: logs: key rotated",
        f"{GUEST}: mail: key rotated",
    ]
    escrowed = sorted(line.split(" (")[0] for line in lines if "header" in line)
    assert escrowed == [
        f"{GUEST}: {name}: header backed up into the vault" for name in ("logs", "mail")
    ]
    new = _vault_get(vault_env, f"luks/{GUEST}/mail")
    assert new != old
    listed = bulwark_cli(["vault", "list", "--vault", vault_env["BULWARK_VM_VAULT"]], vault_env)
    assert "luks-next/" not in listed.stdout
    test = f"base64 -d | cryptsetup open --test-passphrase --key-file=- {MAIL_DEVICE}"
    assert on_guest(test, check=False, stdin=new).returncode == 0
    assert on_guest(test, check=False, stdin=old).returncode != 0
    recovery = _vault_get(vault_env, f"luks-recovery/{GUEST}/mail")
    plain = f"cryptsetup open --test-passphrase --key-file=- {MAIL_DEVICE}"
    assert on_guest(plain, check=False, stdin=recovery).returncode == 0
    assert on_guest(f"clevis luks unlock -d {MAIL_DEVICE} -t 2", check=False).returncode == 0
    assert deploy().changed == []  # the vault's new key, the recovery, the binding


def test_a_header_destroyed_on_the_device_comes_back_from_the_vault(on_guest, vault_env, deploy):
    """The header escrow on a real device: rotate-key left the vault's backup current; with
    the volume closed and its LUKS header zeroed (key slots and all: nothing opens it), the
    vault's copy written back opens it again, data intact. Nothing is written without --yes."""
    check = ["storage", "backup-headers", str(INVENTORY), "--limit", GUEST, "--check"]
    current = bulwark_cli(check, vault_env)
    assert current.returncode == 0, current.stdout + current.stderr
    assert current.stdout == (
        f"{GUEST}: logs: header backup current\n{GUEST}: mail: header backup current\n"
    )
    data_offset = int(_dump(on_guest)["offset"].split()[0])  # the data segment's first byte
    on_guest(f"systemctl stop dovecot && umount {MAIL.path} && cryptsetup close {MAIL.mapper}")
    on_guest(
        f"dd if=/dev/zero of={MAIL_DEVICE} bs=1M count={data_offset // 2**20} conv=fsync "
        "status=none"
    )
    assert on_guest(f"cryptsetup isLuks {MAIL_DEVICE}", check=False).returncode != 0
    restore = ["storage", "restore-header", str(INVENTORY), GUEST, "mail"]
    asked = bulwark_cli(restore, vault_env)
    assert asked.returncode == 2 and "--yes" in asked.stdout + asked.stderr
    assert on_guest(f"cryptsetup isLuks {MAIL_DEVICE}", check=False).returncode != 0
    restored = bulwark_cli([*restore, "--yes"], vault_env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "the vault's key opens it" in restored.stdout
    assert deploy().changed  # opened and mounted again
    assert on_guest(f"cat {MAIL.path}/note").stdout == "before the reboot\n"
    assert bulwark_cli(check, vault_env).returncode == 0
