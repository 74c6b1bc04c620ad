"""bulwark/operations.py offline, as pyinfra tests its own operations: facts in, commands out.

The tables spell every command; a change in what an operation sends to a host fails here.
"""

from __future__ import annotations

import pytest
from offline import run_operation

from bulwark.hoststate import Account, FileState, Found, UnitState
from bulwark.operations import (
    STAGED,
    STAGED_DIR,
    Activation,
    Check,
    directory_present,
    install_files,
    packages_present,
    run_pending,
    system_account,
    unit_state,
)
from bulwark.render import RenderedFile


def rendered(path: str, content: str, mode: str = "0644", secret: bool = False) -> RenderedFile:
    return RenderedFile("h", "r", path, content, mode, "root", "root", None, holds_secrets=secret)


SSHD = rendered("/etc/ssh/sshd_config.d/10-bulwark.conf", "PasswordAuthentication no\n", "0600")
SSHD_CHECK = Check(SSHD.path, ("sshd", "-t", "-f", STAGED))
MAIN = rendered("/etc/postfix/main.cf", "compatibility_level = 3.6\n")
MASTER = rendered("/etc/postfix/master.cf", "smtp inet n - y - - smtpd\n")
POSTFIX_CHECK = Check(MAIN.path, ("postfix", "-c", STAGED_DIR, "check"))
SECRET = rendered("/etc/wireguard/wg0.conf", "[Interface]\nPrivateKey = k\n", "0600", True)


def state(item: RenderedFile, sha256: str | None = None, mode: str | None = None) -> FileState:
    """What the host has: `item` as rendered, unless told another digest or mode."""
    return FileState("root", "root", mode or item.mode.lstrip("0"), sha256 or item.sha256)


def states(*found: FileState | None):
    """The host's answer: the `found` states, in the order of the asked paths."""
    return {
        "HostState": lambda paths, packages, units, users=(), groups=(): Found(
            files=dict(zip(paths, found, strict=True))
        )
    }


SSHD_STAGED = [
    "install -d -m 0700 /etc/ssh/sshd_config.d/.bulwark-staged",
    "upload /etc/ssh/sshd_config.d/.bulwark-staged/10-bulwark.conf",
    "chown root:root /etc/ssh/sshd_config.d/.bulwark-staged/10-bulwark.conf",
    "chmod 0600 /etc/ssh/sshd_config.d/.bulwark-staged/10-bulwark.conf",
]
SSHD_LIVE = [
    "mv -f /etc/ssh/sshd_config.d/.bulwark-staged/10-bulwark.conf "
    "/etc/ssh/sshd_config.d/10-bulwark.conf",
    "rmdir --ignore-fail-on-non-empty /etc/ssh/sshd_config.d/.bulwark-staged",
]
POSTFIX_STAGED = [
    "install -d -m 0700 /etc/postfix/.bulwark-staged",
    "upload /etc/postfix/.bulwark-staged/main.cf",
    "chown root:root /etc/postfix/.bulwark-staged/main.cf",
    "chmod 0644 /etc/postfix/.bulwark-staged/main.cf",
    "upload /etc/postfix/.bulwark-staged/master.cf",
    "chown root:root /etc/postfix/.bulwark-staged/master.cf",
    "chmod 0644 /etc/postfix/.bulwark-staged/master.cf",
]

INSTALL_FILES = {
    "up-to-date": (
        {"files": (SSHD,), "check": SSHD_CHECK, "pending": "ssh.service-reload"},
        states(state(SSHD)),
        [],
    ),
    "new-file-checked-marked-then-moved": (
        {"files": (SSHD,), "check": SSHD_CHECK, "pending": "ssh.service-reload"},
        states(None),
        [
            *SSHD_STAGED,
            "sshd -t -f /etc/ssh/sshd_config.d/.bulwark-staged/10-bulwark.conf",
            "install -d -m 0700 /var/lib/bulwark/pending",
            "touch /var/lib/bulwark/pending/ssh.service-reload",
            *SSHD_LIVE,
        ],
    ),
    "changed-without-check-or-action": (
        {"files": (SSHD,)},
        states(state(SSHD, sha256="0" * 64)),
        [*SSHD_STAGED, *SSHD_LIVE],
    ),
    "only-the-mode-differs": (
        {"files": (SSHD,), "check": SSHD_CHECK, "pending": "ssh.service-reload"},
        states(state(SSHD, mode="644")),
        [
            "chown root:root /etc/ssh/sshd_config.d/10-bulwark.conf",
            "chmod 0600 /etc/ssh/sshd_config.d/10-bulwark.conf",
        ],
    ),
    "one-file-of-a-checked-group-changed-stages-the-whole-group": (
        {"files": (MAIN, MASTER), "check": POSTFIX_CHECK, "pending": "postfix.service-restart"},
        states(state(MAIN, sha256="0" * 64), state(MASTER)),
        [
            *POSTFIX_STAGED,
            "postfix -c /etc/postfix/.bulwark-staged check",
            "install -d -m 0700 /var/lib/bulwark/pending",
            "touch /var/lib/bulwark/pending/postfix.service-restart",
            "mv -f /etc/postfix/.bulwark-staged/main.cf /etc/postfix/main.cf",
            "mv -f /etc/postfix/.bulwark-staged/master.cf /etc/postfix/master.cf",
            "rmdir --ignore-fail-on-non-empty /etc/postfix/.bulwark-staged",
        ],
    ),
    "unchecked-group-stages-only-what-changed": (
        {"files": (MAIN, MASTER)},
        states(state(MAIN), None),
        [
            "install -d -m 0700 /etc/postfix/.bulwark-staged",
            "upload /etc/postfix/.bulwark-staged/master.cf",
            "chown root:root /etc/postfix/.bulwark-staged/master.cf",
            "chmod 0644 /etc/postfix/.bulwark-staged/master.cf",
            "mv -f /etc/postfix/.bulwark-staged/master.cf /etc/postfix/master.cf",
            "rmdir --ignore-fail-on-non-empty /etc/postfix/.bulwark-staged",
        ],
    ),
}


@pytest.mark.parametrize(
    ("arguments", "facts", "commands"), INSTALL_FILES.values(), ids=INSTALL_FILES.keys()
)
def test_install_files_sends_exactly_these_commands(arguments, facts, commands):
    offline = run_operation(install_files, facts, **arguments)
    assert offline.commands == commands
    assert offline.asked == ["HostState"]  # one round trip, whatever the number of files
    assert bool(offline.noops) == (commands == [])


def test_no_files_is_nothing_to_do_and_asks_nothing():
    offline = run_operation(install_files, {}, files=())
    assert (offline.commands, offline.asked, offline.noops) == ([], [], ["no files"])


def test_the_pending_marker_is_written_after_the_check_and_before_any_file_goes_live():
    offline = run_operation(install_files, states(None, None), **INSTALL_FILES[
        "one-file-of-a-checked-group-changed-stages-the-whole-group"][0])  # fmt: skip
    commands = offline.commands
    check = commands.index("postfix -c /etc/postfix/.bulwark-staged check")
    marker = commands.index("touch /var/lib/bulwark/pending/postfix.service-restart")
    first_live = min(i for i, command in enumerate(commands) if command.startswith("mv "))
    assert check < marker < first_live


def test_a_file_holding_secrets_is_never_read_back_nor_diffed():
    offline = run_operation(
        install_files, states(state(SECRET, sha256="0" * 64)), diff=True, files=(SECRET,)
    )
    assert offline.asked == ["HostState"]  # no FileContents: pyinfra would print it
    assert "upload /etc/wireguard/.bulwark-staged/wg0.conf" in offline.commands
    plain = rendered("/etc/motd", "hello\n")
    offline = run_operation(
        install_files, {**states(state(plain, sha256="0" * 64)), "FileContents": ["hi"]},
        diff=True, files=(plain,),
    )  # fmt: skip
    assert offline.asked == ["HostState", "FileContents"]


def test_run_pending_acts_then_clears_its_marker():
    restart = Activation(
        "wg-quick@wg0.service-restart",
        (("systemctl", "daemon-reload"), ("systemctl", "restart", "wg-quick@wg0.service")),
    )
    offline = run_operation(run_pending, {}, activation=restart)
    assert offline.commands == [
        "systemctl daemon-reload",
        "systemctl restart wg-quick@wg0.service",
        "rm -f /var/lib/bulwark/pending/wg-quick@wg0.service-restart",
    ]


def answer(**items) -> dict:
    """The host's answer: `packages` and `units` as given (absent: not installed, not there)."""
    return {"HostState": lambda paths, packages, units, users=(), groups=(): Found(**items)}


APT_INSTALL = (
    'DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::="--force-confdef" '
    '-o Dpkg::Options::="--force-confold" install --no-install-recommends '
)
PACKAGES_PRESENT = {
    "all-installed": (answer(packages={"postfix": True, "nftables": True}), {}, []),
    "one-missing": (
        answer(packages={"postfix": True}),
        {"DebPackages": {"postfix": {"3.7"}}},
        [APT_INSTALL + "nftables"],
    ),
}


@pytest.mark.parametrize(
    ("state", "facts", "commands"), PACKAGES_PRESENT.values(), ids=PACKAGES_PRESENT.keys()
)
def test_packages_are_left_to_apt_only_when_one_is_missing(state, facts, commands):
    offline = run_operation(packages_present, {**state, **facts}, packages=("postfix", "nftables"))
    assert offline.commands == commands
    assert offline.asked == ["HostState", *facts]  # pyinfra's own fact only when it acts


RUNNING, STOPPED = UnitState(running=True, enabled=True), UnitState(running=False, enabled=True)
UNIT_STATE = {
    "running-and-enabled": ({"running": True, "enabled": True}, RUNNING, {}, []),
    "stopped": (
        {"running": True, "enabled": True},
        STOPPED,
        {"SystemdStatus": {}, "SystemdEnabled": {"ssh.service": True}},
        ["systemctl start ssh.service"],
    ),
    "not-there-yet": (
        {"running": True, "enabled": True},
        None,
        {"SystemdStatus": {}, "SystemdEnabled": {}},
        ["systemctl start ssh.service", "systemctl enable ssh.service"],
    ),
    "only-enabled-asked-of-a-stopped-unit": ({"running": None, "enabled": True}, STOPPED, {}, []),
    "only-running-asked-of-a-disabled-unit": (
        {"running": True, "enabled": None},
        UnitState(running=True, enabled=False),
        {},
        [],
    ),
}


@pytest.mark.parametrize(
    ("wanted", "unit", "facts", "commands"), UNIT_STATE.values(), ids=UNIT_STATE.keys()
)
def test_a_unit_is_left_to_systemd_service_only_when_it_differs(wanted, unit, facts, commands):
    units = {"ssh.service": unit} if unit else {}
    offline = run_operation(
        unit_state, {**answer(units=units), **facts}, unit="ssh.service", **wanted
    )
    assert offline.commands == commands
    assert offline.asked == ["HostState", *facts]
    assert bool(offline.noops) == (commands == [])


VMAIL = FileState("vmail", "vmail", "700", directory=True)
DIRECTORY_PRESENT = {
    "as-wanted": (VMAIL, {}, []),
    "wrong-mode": (
        FileState("vmail", "vmail", "755", directory=True),
        {"Directory": {"mode": 755, "user": "vmail", "group": "vmail"}},
        ["chmod 700 /var/vmail"],
    ),
    "missing": (
        None,
        {"Directory": None},
        ["mkdir -p /var/vmail", "chmod 700 /var/vmail", "chown vmail:vmail /var/vmail"],
    ),
}


@pytest.mark.parametrize(
    ("state", "facts", "commands"), DIRECTORY_PRESENT.values(), ids=DIRECTORY_PRESENT.keys()
)
def test_a_directory_is_left_to_files_directory_only_when_it_differs(state, facts, commands):
    offline = run_operation(
        directory_present,
        {**states(state), **facts},
        path="/var/vmail",
        user="vmail",
        group="vmail",
        mode="0700",
    )
    assert offline.commands == commands
    assert offline.asked == ["HostState", *facts]


VMAIL = Account("999", "/var/vmail", "/usr/sbin/nologin")
# What pyinfra's server.group and server.user ask of a Debian host.
DEBIAN = {"Os": "Linux", "LinuxName": "Debian", "Which": lambda command: f"/usr/sbin/{command}"}
SYSTEM_ACCOUNT = {
    "as-wanted": (answer(users={"vmail": VMAIL}, groups={"vmail": "999"}), {}, []),
    "another-shell": (
        answer(users={"vmail": Account("999", "/var/vmail", "/bin/sh")}, groups={"vmail": "999"}),
        {
            **DEBIAN,
            "Groups": ["vmail"],
            "Users": {"vmail": {"group": "vmail", "home": "/var/vmail", "shell": "/bin/sh"}},
            "Directory": {"mode": 700, "user": "vmail", "group": "vmail"},
        },
        ["usermod -s /usr/sbin/nologin vmail"],
    ),
    "missing": (
        answer(users={"vmail": None}, groups={"vmail": None}),
        {"Groups": [], "Users": {}, **DEBIAN},
        [
            "groupadd -r vmail",
            "useradd -d /var/vmail -s /usr/sbin/nologin -g vmail -r -M vmail",
            "mkdir -p /var/vmail",
            "chown vmail:vmail /var/vmail",
        ],
    ),
}


@pytest.mark.parametrize(
    ("state", "facts", "commands"), SYSTEM_ACCOUNT.values(), ids=SYSTEM_ACCOUNT.keys()
)
def test_a_system_user_is_left_to_pyinfra_only_when_it_differs(state, facts, commands):
    offline = run_operation(
        system_account, {**state, **facts}, user="vmail", home="/var/vmail", shell=VMAIL.shell
    )
    assert offline.commands == commands
    assert offline.asked[0] == "HostState"
    assert (len(offline.asked) == 1) == (not commands)  # pyinfra's own facts only when it acts
