"""roles/base: what every host's baseline files say, checked by the daemons' own parsers.

The files come from rendering inventory/production.py and inventory/lab.py (the
`rendered_inventories` fixture). Where a tool can tell what a setting will EFFECTIVELY be on a
Debian 12 host, the test asks the tool, with Debian's stock configuration in place beside ours
(tests/unit/fixtures/debian12-*).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from bulwark import checks
from bulwark.checks import check_files
from roles import base

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SECURITY_ORIGIN = "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"
BASE_PATHS = {
    "/etc/apt/apt.conf.d/20auto-upgrades",
    base.UNATTENDED_UPGRADES_CONFIG,
    base.NEEDRESTART_CONFIG,
    base.SSHD_CONFIG,
    base.SYSCTL_NET_FILE,
    base.SYSCTL_KERNEL_FILE,
    base.JOURNALD_CONFIG,
    "/etc/logrotate.conf",
    base.TIMESYNCD_CONFIG,
}


def base_files(rendered_inventories, inventory: str, host: str | None = None) -> dict:
    """path -> RenderedFile of the base role, for `host` (default: the first host)."""
    files = [rendered for rendered in rendered_inventories[inventory] if rendered.role == "base"]
    host = host or files[0].host
    return {rendered.path: rendered for rendered in files if rendered.host == host}


def base_file(rendered_inventories, path: str, inventory: str = "production") -> str:
    return base_files(rendered_inventories, inventory)[path].content


def every_host(rendered_inventories) -> list[tuple[str, str]]:
    return sorted(
        {
            (inventory, rendered.host)
            for inventory, files in rendered_inventories.items()
            for rendered in files
        }
    )


# --- which files, with which owner and mode ---------------------------------------------------


def test_every_host_gets_the_baseline(rendered_inventories):
    hosts = every_host(rendered_inventories)
    assert len(hosts) == 10 + 8
    for inventory, host in hosts:
        paths = set(base_files(rendered_inventories, inventory, host))
        proxy = {base.APT_PROXY} if inventory == "lab" else set()
        assert paths == BASE_PATHS | proxy, (inventory, host)


def test_needrestart_restarts_services_without_asking(rendered_inventories):
    """An unattended upgrade reaches the running daemons, those of our own units included."""
    text = base_files(rendered_inventories, "production")[base.NEEDRESTART_CONFIG].content
    assert "$nrconf{restart} = 'a';" in text.splitlines()
    assert "needrestart" in base.PACKAGES


def test_apt_proxy_only_where_the_inventory_sets_one(rendered_inventories):
    lab = base_files(rendered_inventories, "lab")
    assert lab[base.APT_PROXY].content.splitlines()[-1] == (
        'Acquire::http::Proxy "http://10.89.0.1:3142";'
    )
    assert base.APT_PROXY not in base_files(rendered_inventories, "production")


def test_sshd_drop_in_is_private_and_the_rest_world_readable(rendered_inventories):
    for rendered in base_files(rendered_inventories, "production").values():
        assert (rendered.user, rendered.group) == ("root", "root"), rendered.path
        expected = "0600" if rendered.path == base.SSHD_CONFIG else "0644"
        assert rendered.mode == expected, rendered.path


def test_every_base_file_says_it_is_managed(rendered_inventories):
    for rendered in base_files(rendered_inventories, "lab").values():
        assert "Managed by bulwark (role base)" in rendered.content.splitlines()[0]


def test_the_baseline_is_the_same_on_every_host(rendered_inventories):
    """Nothing host-specific in base: identical content everywhere within an inventory."""
    for inventory in ("production", "lab"):
        hosts = [host for name, host in every_host(rendered_inventories) if name == inventory]
        baselines = {
            tuple(
                sorted(
                    (path, rendered.content)
                    for path, rendered in base_files(rendered_inventories, inventory, host).items()
                )
            )
            for host in hosts
        }
        assert len(hosts) > 1
        assert len(baselines) == 1, inventory


# --- sshd -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("needs_sshd")
def test_sshd_drop_in_passes_sshd_t(rendered_inventories):
    sshd = base_files(rendered_inventories, "production")[base.SSHD_CONFIG]
    [result] = check_files([sshd])
    assert (result.tool, result.status, result.detail) == ("sshd", "passed", "")


@pytest.fixture(scope="module")
def effective_sshd(needs_sshd, rendered_inventories, tmp_path_factory) -> dict[str, str]:
    """`sshd -T` of Debian 12's stock sshd_config with our drop-in, and a cloud image's drop-in
    that enables passwords, in sshd_config.d: keyword -> value as sshd will run."""
    work = tmp_path_factory.mktemp("sshd")
    drop_ins = work / "sshd_config.d"
    drop_ins.mkdir()
    stock = (FIXTURES / "debian12-sshd_config").read_text()
    assert "Include /etc/ssh/sshd_config.d/*.conf" in stock
    (work / "sshd_config").write_text(stock.replace("/etc/ssh/sshd_config.d", str(drop_ins)))
    (drop_ins / Path(base.SSHD_CONFIG).name).write_text(
        base_file(rendered_inventories, base.SSHD_CONFIG)
    )
    (drop_ins / "50-cloud-init.conf").write_text("PasswordAuthentication yes\n")
    host_key = work / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd -T insists on it
    result = subprocess.run(
        ["sshd", "-T", "-f", str(work / "sshd_config"), "-h", str(host_key)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    settings = {}
    for line in result.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        settings.setdefault(keyword, value)
    return settings


def test_effective_sshd_is_key_only_and_verbose(effective_sshd):
    assert effective_sshd["passwordauthentication"] == "no"
    assert effective_sshd["kbdinteractiveauthentication"] == "no"
    assert effective_sshd["permitemptypasswords"] == "no"
    assert effective_sshd["pubkeyauthentication"] == "yes"
    assert effective_sshd["permitrootlogin"] in {"without-password", "prohibit-password"}
    assert effective_sshd["loglevel"] == "VERBOSE"
    assert effective_sshd["disableforwarding"] == "yes"
    assert effective_sshd["port"] == "22"


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("kexalgorithms", base.SSH_KEX),
        ("ciphers", base.SSH_CIPHERS),
        ("macs", base.SSH_MACS),
        ("hostkeyalgorithms", base.SSH_HOST_KEY_ALGORITHMS),
    ],
)
def test_effective_sshd_algorithms_are_modern(effective_sshd, keyword, expected):
    algorithms = effective_sshd[keyword].split(",")
    assert algorithms == list(expected)
    for algorithm in algorithms:
        for weak in ("sha1", "cbc", "md5", "3des", "arcfour", "group1-", "group14-"):
            assert weak not in algorithm.lower(), algorithm
        assert algorithm not in {"ssh-rsa", "ssh-dss"}


# --- apt and unattended-upgrades ------------------------------------------------------------


@pytest.mark.usefixtures("needs_apt_config")
@pytest.mark.parametrize("inventory", ["production", "lab"])
def test_apt_files_pass_the_apt_checker(rendered_inventories, inventory):
    apt_files = [
        rendered
        for rendered in base_files(rendered_inventories, inventory).values()
        if rendered.checker == "apt"
    ]
    assert len(apt_files) == (3 if inventory == "lab" else 2)
    results = check_files(apt_files)
    assert [(result.path, result.status) for result in results] == [
        (rendered.path, "passed") for rendered in apt_files
    ]


def apt_config_dump(parts: dict[str, str], tmp_path: Path) -> list[str]:
    """`apt-config dump` of a scratch configuration made of exactly these apt.conf.d parts."""
    result = checks.apt_config_dump(parts, tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    return result.stdout.splitlines()


def dumped_list(dump: list[str], key: str) -> list[str]:
    prefix = f'{key}:: "'
    return [line[len(prefix) : -2] for line in dump if line.startswith(prefix)]


def dumped_value(dump: list[str], key: str) -> str | None:
    prefix = f'{key} "'
    values = [line[len(prefix) : -2] for line in dump if line.startswith(prefix)]
    return values[-1] if values else None


STOCK_UNATTENDED = "50unattended-upgrades"


@pytest.mark.usefixtures("needs_apt_config")
def test_stock_debian_origins_include_more_than_security(tmp_path):
    """The fixture is Debian's stock file: on its own it allows the point releases too."""
    stock = (FIXTURES / f"debian12-{STOCK_UNATTENDED}").read_text()
    origins = dumped_list(
        apt_config_dump({STOCK_UNATTENDED: stock}, tmp_path), "Unattended-Upgrade::Origins-Pattern"
    )
    assert SECURITY_ORIGIN in origins
    assert "origin=Debian,codename=${distro_codename},label=Debian" in origins


@pytest.mark.usefixtures("needs_apt_config")
def test_effective_unattended_origins_are_the_security_archive_only(rendered_inventories, tmp_path):
    ours = base_files(rendered_inventories, "production")
    parts = {
        STOCK_UNATTENDED: (FIXTURES / f"debian12-{STOCK_UNATTENDED}").read_text(),
        Path(base.UNATTENDED_UPGRADES_CONFIG).name: ours[base.UNATTENDED_UPGRADES_CONFIG].content,
        "20auto-upgrades": ours["/etc/apt/apt.conf.d/20auto-upgrades"].content,
    }
    assert sorted(parts)[-1] == Path(base.UNATTENDED_UPGRADES_CONFIG).name  # read after stock
    dump = apt_config_dump(parts, tmp_path)
    assert dumped_list(dump, "Unattended-Upgrade::Origins-Pattern") == [SECURITY_ORIGIN]
    assert dumped_value(dump, "Unattended-Upgrade::Automatic-Reboot") == "false"
    assert dumped_value(dump, "APT::Periodic::Update-Package-Lists") == "1"
    assert dumped_value(dump, "APT::Periodic::Unattended-Upgrade") == "1"


@pytest.mark.usefixtures("needs_apt_config")
def test_effective_apt_proxy_in_the_lab(rendered_inventories, tmp_path):
    proxy = base_files(rendered_inventories, "lab")[base.APT_PROXY].content
    dump = apt_config_dump({Path(base.APT_PROXY).name: proxy}, tmp_path)
    assert dumped_value(dump, "Acquire::http::Proxy") == "http://10.89.0.1:3142"


# --- logs: 180 days in the journal and in logrotate -------------------------------------------


def test_journald_keeps_a_persistent_journal_for_180_days(rendered_inventories):
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # journald keys are case-sensitive
    parser.read_string(base_file(rendered_inventories, base.JOURNALD_CONFIG))
    assert parser.sections() == ["Journal"]
    journal = parser["Journal"]
    assert journal["Storage"] == "persistent"
    assert journal["MaxRetentionSec"] == "180day"
    assert journal["SystemMaxUse"] == base.JOURNAL_MAX_USE


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_journald_retention_is_a_timespan_systemd_understands():
    result = subprocess.run(
        ["systemd-analyze", "timespan", f"{base.LOG_RETENTION_DAYS}day"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    microseconds = next(
        line.split(":", 1)[1].strip()
        for line in result.stdout.splitlines()
        if line.strip().startswith("μs:")
    )
    assert int(microseconds) == 180 * 24 * 3600 * 10**6


def test_logrotate_rotates_daily_and_keeps_180(rendered_inventories):
    directives = [
        line.strip()
        for line in base_file(rendered_inventories, "/etc/logrotate.conf").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "daily" in directives
    assert "rotate 180" in directives
    assert not {"weekly", "monthly", "yearly"} & set(directives)
    assert [line for line in directives if line.startswith("rotate")] == ["rotate 180"]
    # It replaces Debian's /etc/logrotate.conf: the packages' own rules must still be read.
    assert directives[-1] == "include /etc/logrotate.d"


# --- sysctl and time --------------------------------------------------------------------------


def sysctl_settings(content: str) -> list[tuple[str, str]]:
    settings = []
    for line in content.splitlines():
        if line.strip() and not line.startswith(("#", ";")):
            key, separator, value = line.partition("=")
            assert separator, line
            settings.append((key.strip(), value.strip()))
    return settings


@pytest.mark.parametrize(
    ("path", "expected"),
    [(base.SYSCTL_NET_FILE, base.SYSCTL_NET), (base.SYSCTL_KERNEL_FILE, base.SYSCTL_KERNEL)],
)
def test_sysctl_files_set_exactly_the_hardening_values(rendered_inventories, path, expected):
    settings = sysctl_settings(base_file(rendered_inventories, path))
    assert settings == list(expected)
    assert len(dict(settings)) == len(settings)


def test_sysctl_hardening_includes_the_cis_essentials():
    net = dict(base.SYSCTL_NET)
    assert net["net.ipv4.conf.all.accept_redirects"] == "0"
    assert net["net.ipv4.conf.all.send_redirects"] == "0"
    assert net["net.ipv4.conf.all.rp_filter"] == "1"
    assert net["net.ipv4.tcp_syncookies"] == "1"
    assert "net.ipv4.ip_forward" not in net  # forwarding is the vpn role's business
    kernel = dict(base.SYSCTL_KERNEL)
    assert kernel["kernel.randomize_va_space"] == "2"
    assert kernel["fs.suid_dumpable"] == "0"


def test_timesyncd_uses_the_configured_servers(rendered_inventories):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(base_file(rendered_inventories, base.TIMESYNCD_CONFIG))
    assert parser["Time"]["NTP"].split() == list(base.NTP_SERVERS)
    assert len(base.NTP_SERVERS) >= 2
