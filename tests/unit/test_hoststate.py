"""bulwark/hoststate.py offline: the one fact that reads a host's files, markers, packages and
units, and the run's copy of it that every operation of the host shares."""

from __future__ import annotations

from offline import OfflineHost, run_deploys
from pyinfra.api import deploy

from bulwark.deploying import keep_running, packages
from bulwark.hoststate import (
    FileState,
    Found,
    HostState,
    UnitState,
    Wants,
    expect,
    host_state,
)

COMMAND = (
    "echo '## pending' ; ls -1 /var/lib/bulwark/pending 2>/dev/null ; echo '## files' ; "
    "for path in '/etc/a b' /var/vmail ; do "
    'if [ -f "$path" ]; then printf \'file %s %s\\t%s\\n\' "$(stat -c \'%U %G %a\' "$path")" '
    '"$(sha256sum "$path" | cut -d\' \' -f1)" "$path"; '
    'elif [ -d "$path" ]; then printf \'dir %s\\t%s\\n\' "$(stat -c \'%U %G %a\' "$path")" '
    '"$path"; '
    'elif [ -e "$path" ]; then printf \'other %s\\t%s\\n\' "$(stat -c \'%U %G %a\' "$path")" '
    '"$path"; '
    "else printf 'missing\\t%s\\n' \"$path\"; fi; done; "
    "echo '## packages' ; dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n' postfix "
    "2>/dev/null ; "
    "echo '## units' ; systemctl show --all --property Id --property SubState --property "
    "UnitFileState ssh.service 2>/dev/null ; true"
)
OUTPUT = [
    "## pending",
    "ssh.service-reload",
    "## files",
    "file root dovecot 640 " + "a" * 64 + "\t/etc/a b",
    "dir vmail vmail 700\t/var/vmail",
    "other root root 666\t/dev/null",
    "missing\t/etc/gone",
    "## packages",
    "postfix ii ",
    "nftables hi ",
    "dovecot-core rc ",
    "## units",
    "Id=ssh.service",
    "SubState=running",
    "UnitFileState=enabled",
    "",
    "Id=nftables.service",
    "SubState=exited",
    "UnitFileState=disabled",
    "",
    "Id=wg-quick@wg0.service",
    "SubState=dead",
    "UnitFileState=",
]


def test_the_fact_asks_everything_in_one_command():
    command = HostState().command(
        paths=("/etc/a b", "/var/vmail"), packages=("postfix",), units=("ssh.service",)
    )
    assert command.get_raw_value() == COMMAND


def test_nothing_to_ask_of_dpkg_or_systemd_leaves_them_out():
    command = HostState().command(paths=(), packages=(), units=()).get_raw_value()
    assert "dpkg-query" not in command and "systemctl" not in command


def test_the_fact_reads_files_directories_markers_packages_and_units():
    assert HostState().process(OUTPUT) == Found(
        pending=frozenset({"ssh.service-reload"}),
        files={
            "/etc/a b": FileState("root", "dovecot", "640", "a" * 64),
            "/var/vmail": FileState("vmail", "vmail", "700", directory=True),
            "/dev/null": FileState("root", "root", "666"),
            "/etc/gone": None,
        },
        packages={"postfix": True, "nftables": True},  # removed, config left: not installed
        units={
            "ssh.service": UnitState(running=True, enabled=True),
            "nftables.service": UnitState(running=True, enabled=False),
            "wg-quick@wg0.service": UnitState(running=False, enabled=False),
        },
    )


def test_what_the_host_did_not_mention_is_absent():
    found = Found().answering(
        Wants(
            paths=("/etc/x",),
            packages=("postfix",),
            units=("a.service",),
            users=("vmail",),
            groups=("vmail",),
        )
    )
    assert found == Found(
        files={"/etc/x": None},
        packages={"postfix": False},
        units={"a.service": UnitState(running=False, enabled=False)},
        users={"vmail": None},
        groups={"vmail": None},
    )


def recorded(asked: list[tuple]) -> dict:
    def answer(paths, packages, units, users=(), groups=()) -> Found:
        asked.append((paths, packages, units))
        return Found()

    return {"HostState": answer}


def test_what_was_expected_is_read_in_the_first_round_trip_and_shared():
    asked: list[tuple] = []
    offline = OfflineHost(recorded(asked))
    with offline.context():
        expect(paths=("/etc/a",), packages=("postfix",))
        expect(units=("ssh.service",))
        host_state(paths=("/etc/a",))
        host_state(packages=("postfix",), units=("ssh.service",))
        host_state()
    assert asked == [(("/etc/a",), ("postfix",), ("ssh.service",))]


def test_something_not_expected_is_read_with_everything_else():
    asked: list[tuple] = []
    offline = OfflineHost(recorded(asked))
    with offline.context():
        host_state(paths=("/etc/a",))
        assert host_state(units=("ssh.service",)).units["ssh.service"] == UnitState(False, False)
        host_state(paths=("/etc/a",))
    assert asked == [(("/etc/a",), (), ()), (("/etc/a",), (), ("ssh.service",))]


@deploy("packages, then a unit")
def packages_then_unit() -> None:
    packages("r", ("postfix",))
    keep_running("r", "postfix.service")


def test_once_an_operation_changed_the_host_the_next_one_reads_it_again():
    running = UnitState(running=True, enabled=True)

    def answer(installed: bool):
        return lambda paths, packages, units, users=(), groups=(): Found(
            packages=dict.fromkeys(packages, installed), units=dict.fromkeys(units, running)
        )

    steps, offline = run_deploys(
        [(packages_then_unit, ())], {"HostState": answer(True)}, "h", yes=True
    )
    assert [step.commands for step in steps] == [(), ()]
    assert offline.asked == ["HostState"]
    steps, offline = run_deploys(
        [(packages_then_unit, ())], {"HostState": answer(False)}, "h", yes=True
    )
    assert steps[0].commands and not steps[1].commands
    assert offline.asked == ["HostState", "DebPackages", "HostState"]
