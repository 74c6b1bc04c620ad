"""Each rendered file checked by its daemon's own tool, where that tool is installed.

A checker takes the rendered content and returns None when the tool accepts it, or the tool's
complaint. Identical contents are checked once (a thousand hosts share most files).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bulwark import mailtrust
from bulwark.render import RenderedFile

# Debian's rspamd configuration, which includes the overrides of a LOCAL_CONFDIR.
RSPAMD_CONFIG = "/etc/rspamd/rspamd.conf"


@dataclass(frozen=True)
class CheckResult:
    host: str
    path: str
    tool: str
    status: str  # "passed", "failed" or "skipped"
    detail: str = ""


def _run(argv: list[str], timeout: int = 60) -> str | None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode == 0:
        return None
    return (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"


def _check_sshd(content: str, workdir: Path) -> str | None:
    """`sshd -t` needs a host key (a throwaway one) and its privilege separation directory."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    config = workdir / "sshd_config"
    config.write_text(content)
    host_key = workdir / "host_key"
    if not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
    return _run(["sshd", "-t", "-f", str(config), "-h", str(host_key)])


def apt_config_dump(parts: dict[str, str], workdir: Path) -> subprocess.CompletedProcess:
    """`apt-config dump` of a scratch configuration made of exactly these apt.conf.d parts."""
    directory = workdir / "apt.conf.d"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    for name, content in parts.items():
        (directory / name).write_text(content)
    main = workdir / "apt.conf"
    main.write_text(f'Dir::Etc::parts "{directory}/";\n')
    return subprocess.run(
        ["apt-config", "dump"],
        capture_output=True,
        text=True,
        env={"APT_CONFIG": str(main), "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )


def _check_apt_config(content: str, workdir: Path) -> str | None:
    """apt's own parser over the file alone, as the only part of a scratch configuration."""
    result = apt_config_dump({"check": content}, workdir)
    if result.returncode != 0 or result.stderr.strip():
        return result.stderr.strip() or f"exit code {result.returncode}"
    return None


def _check_nft(content: str, workdir: Path) -> str | None:
    """`nft -c`: parsed and evaluated against the kernel, nothing applied."""
    ruleset = workdir / "ruleset.nft"
    ruleset.write_text(content)
    return _run(["nft", "-c", "-f", str(ruleset)])


def _run_strict(argv: list[str]) -> str | None:
    """Like `_run`, but the tool's warnings count as failures too: Postfix and Dovecot accept
    unknown or obsolete settings with a warning and exit code 0."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    complaints = sorted(
        {line for line in lines if re.search(r"\b(warning|fatal|error):", line, re.IGNORECASE)}
    )
    if result.returncode == 0 and not complaints:
        return None
    return "\n".join(complaints) or f"exit code {result.returncode}"


def _check_postfix(content: str, workdir: Path) -> str | None:
    """`postfix check` on a scratch configuration directory: this main.cf and the host's
    master.cf (a companion, see COMPANIONS).

    Postfix rereads a main.cf modified within the last second every 300 ms until it "cools
    down" (util/load_file.c), about 2 s per check; the scratch copy, written whole before the
    check starts, is dated back a minute so it is read once.
    """
    main = workdir / "main.cf"
    main.write_text(content)
    cooled = time.time() - 60
    os.utime(main, (cooled, cooled))
    return _run_strict(["postfix", "-c", str(workdir), "check"])


def _check_dovecot(content: str, workdir: Path) -> str | None:
    """`doveconf -n -c FILE`: Dovecot's own parser over the whole configuration."""
    config = workdir / "dovecot.conf"
    config.write_text(content)
    return _run_strict(["doveconf", "-n", "-c", str(config)])


def _throwaway_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made once per scratch directory."""
    certificate, key = workdir / "check.crt", workdir / "check.key"
    if not certificate.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=bulwark-check", "-days", "1",
             "-keyout", str(key), "-out", str(certificate)],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
    return certificate, key


def _check_nginx(content: str, workdir: Path) -> str | None:
    """`nginx -t` on a scratch copy: nginx loads the certificates it names and binds its
    listeners, so the host's certificates are replaced by a throwaway pair, its addresses by
    loopback, and the host's own included files by their companions."""
    certificate, key = _throwaway_certificate(workdir)
    text = re.sub(
        r"^(\s*ssl_(?:client_)?certificate) \S+;", rf"\1 {certificate};", content, flags=re.M
    )
    text = re.sub(r"^(\s*ssl_certificate_key) \S+;", rf"\1 {key};", text, flags=re.M)
    for path, name in COMPANIONS["nginx"].items():
        text = text.replace(f"include {path};", f"include {workdir / name};")
    text = re.sub(r"^pid \S+;", f"pid {workdir / 'nginx.pid'};", text, flags=re.M)
    # `nginx -t` binds its listeners: the host's addresses are not this machine's.
    text = re.sub(r"^(\s*listen )[0-9.]+:", r"\g<1>127.0.0.1:", text, flags=re.M)
    config = workdir / "nginx.conf"
    config.write_text(text)
    return _run(["nginx", "-t", "-q", "-c", str(config)])


def _check_slapd(content: str, workdir: Path) -> str | None:
    """`slaptest -u`: slapd's own parser over the configuration, schemas and modules loaded,
    the databases not opened; each database's directory, which must exist, is a scratch one
    (the host's are the host's). slaptest does not read the TLS files."""
    databases = itertools.count()

    def scratch_directory(match: re.Match) -> str:
        path = workdir / f"database-{next(databases)}"
        path.mkdir(exist_ok=True)
        return f"{match[1]}{path}"

    config = workdir / "slapd.conf"
    config.write_text(re.sub(r"^(directory\s+)\S+$", scratch_directory, content, flags=re.M))
    return _run(["slaptest", "-Q", "-u", "-f", str(config)])


def _check_rspamd(content: str, workdir: Path) -> str | None:
    """`rspamadm configtest` of Debian's configuration with the host's overrides as its
    local.d: this file (the first of them) and its companions, the others."""
    local = workdir / "local.d"
    local.mkdir(exist_ok=True)
    for path in mailtrust.RSPAMD_FILES[1:]:
        name = path.rsplit("/", 1)[1]
        shutil.copyfile(workdir / name, local / name)
    (local / mailtrust.RSPAMD_FILES[0].rsplit("/", 1)[1]).write_text(content)
    return _run(["rspamadm", f"--var=LOCAL_CONFDIR={workdir}", "configtest", "-c", RSPAMD_CONFIG])


def _check_sieve(content: str, workdir: Path) -> str | None:
    """`sievec`: Pigeonhole's compiler over the script, the binary thrown away."""
    script = workdir / "check.sieve"
    script.write_text(content)
    return _run(["sievec", str(script), str(workdir / "check.svbin")])


# checker name -> (tool that must be on PATH, check function)
CHECKERS: dict[str, tuple[str, Callable[[str, Path], str | None]]] = {
    "apt": ("apt-config", _check_apt_config),
    "dovecot": ("doveconf", _check_dovecot),
    "nft": ("nft", _check_nft),
    "nginx": ("nginx", _check_nginx),
    "postfix": ("postfix", _check_postfix),
    "rspamd": ("rspamadm", _check_rspamd),
    "sieve": ("sievec", _check_sieve),
    "slapd": ("slaptest", _check_slapd),
    "sshd": ("sshd", _check_sshd),
}
# Checkers whose tool reads other files of the same host along with the checked one:
# checker name -> {path on the host: name in the check's own scratch directory}.
COMPANIONS: dict[str, dict[str, str]] = {
    "postfix": {"/etc/postfix/master.cf": "master.cf"},
    "rspamd": {path: path.rsplit("/", 1)[1] for path in mailtrust.RSPAMD_FILES[1:]},
    "nginx": {
        "/etc/nginx/bulwark-dav-writes.conf": "bulwark-dav-writes.conf",
        "/etc/nginx/bulwark-files-writes.conf": "bulwark-files-writes.conf",
    },
}
# Companions the checked file includes by path: needed only where it names them (a web host
# without dav includes no DAV switch, one without files no files switch).
_INCLUDED_COMPANIONS: frozenset[str] = frozenset({"nginx"})


# Line-comment markers per checker (default "#"): lines starting with one cannot change what a
# checker says, so files differing only in comments (the host name in a header) share a check.
# apt's comments are `//`; its `#clear` and `#include` are directives.
_COMMENT_MARKERS: dict[str, str] = {"apt": "//"}


def _without_comments(checker: str, content: str) -> str:
    marker = _COMMENT_MARKERS.get(checker, "#")
    return "\n".join(line for line in content.splitlines() if not line.lstrip().startswith(marker))


_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


def _shape(checker: str, host: str, content: str) -> str:
    """What a checker's verdict depends on: the content without comments, the host's own name
    and every address literal. Both come from the validated topology (a name, an IPv4
    address), so two hosts whose files differ only there get the same verdict: a thousand
    hosts of a few kinds are checked once per kind."""
    text = _without_comments(checker, content).replace(host, "<host>")
    return _IPV4.sub("<address>", text)


def check_files(files: Iterable[RenderedFile]) -> list[CheckResult]:
    """Check every file that names a checker; files of the same shape (`_shape`, companions
    included) are checked once.

    Each checker's tool runs in a thread of its own, in a scratch directory of its own: the
    tools wait on their own processes side by side, one tool's runs one after the other (two
    `nginx -t` would bind the same listeners).
    """
    files = list(files)
    by_host = {(rendered.host, rendered.path): rendered for rendered in files}
    installed = {tool: shutil.which(tool) is not None for tool, _ in CHECKERS.values()}
    keys: list[tuple[str, ...] | None] = []  # per file: its shape, None when not checked here
    checks: dict[str, dict[tuple[str, ...], tuple[RenderedFile, dict]]] = {}
    for rendered in files:
        if rendered.checker is None or not installed[CHECKERS[rendered.checker][0]]:
            keys.append(None)
            continue
        companions = {
            name: by_host.get((rendered.host, path))
            for path, name in COMPANIONS.get(rendered.checker, {}).items()
            if rendered.checker not in _INCLUDED_COMPANIONS or path in rendered.content
        }
        key = (
            rendered.checker,
            _shape(rendered.checker, rendered.host, rendered.content),
            *(
                _shape(rendered.checker, rendered.host, item.content) if item else ""
                for item in companions.values()
            ),
        )
        keys.append(key)
        checks.setdefault(rendered.checker, {}).setdefault(key, (rendered, companions))
    with (
        tempfile.TemporaryDirectory(prefix="bulwark-check-") as scratch,
        ThreadPoolExecutor(max_workers=max(len(checks), 1)) as pool,
    ):
        verdicts = [
            pool.submit(_check_each, CHECKERS[checker][1], shapes, Path(scratch) / checker)
            for checker, shapes in checks.items()
        ]
        complaints = {
            key: complaint for done in verdicts for key, complaint in done.result().items()
        }
    results = []
    for rendered, key in zip(files, keys, strict=True):
        if rendered.checker is None:
            continue
        tool = CHECKERS[rendered.checker][0]
        if key is None:
            results.append(
                CheckResult(rendered.host, rendered.path, tool, "skipped", f"{tool} not installed")
            )
            continue
        complaint = complaints[key]
        status = "passed" if complaint is None else "failed"
        results.append(CheckResult(rendered.host, rendered.path, tool, status, complaint or ""))
    return results


def _check_each(
    check: Callable[[str, Path], str | None],
    shapes: dict[tuple[str, ...], tuple[RenderedFile, dict[str, RenderedFile | None]]],
    workdir: Path,
) -> dict[tuple[str, ...], str | None]:
    """One checker's verdict on one file of each shape, checked one after the other in
    `workdir` (made here)."""
    workdir.mkdir()
    return {
        key: _check_with(check, rendered, companions, workdir)
        for key, (rendered, companions) in shapes.items()
    }


def _check_with(
    check: Callable[[str, Path], str | None],
    rendered: RenderedFile,
    companions: dict[str, RenderedFile | None],
    workdir: Path,
) -> str | None:
    """Run `check`, its companions written first into a directory of their own."""
    if not companions:
        return check(rendered.content, workdir)
    missing = [name for name, item in companions.items() if item is None]
    if missing:
        return f"no {', '.join(missing)} rendered with {rendered.path} on this host"
    directory = Path(tempfile.mkdtemp(dir=workdir))
    for name, item in companions.items():
        (directory / name).write_text(item.content)
    return check(rendered.content, directory)
