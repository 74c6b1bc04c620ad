"""Each rendered file checked by its daemon's own tool, where that tool is installed.

A checker takes the rendered content and returns None when the tool accepts it, or the tool's
complaint. Identical contents are checked once (a thousand hosts share most files).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bulwark.render import RenderedFile


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


# checker name -> (tool that must be on PATH, check function)
CHECKERS: dict[str, tuple[str, Callable[[str, Path], str | None]]] = {
    "apt": ("apt-config", _check_apt_config),
    "nft": ("nft", _check_nft),
    "sshd": ("sshd", _check_sshd),
}


# Line-comment markers per checker (default "#"): lines starting with one cannot change what a
# checker says, so files differing only in comments (the host name in a header) share a check.
# apt's comments are `//`; its `#clear` and `#include` are directives.
_COMMENT_MARKERS: dict[str, str] = {"apt": "//"}


def _without_comments(checker: str, content: str) -> str:
    marker = _COMMENT_MARKERS.get(checker, "#")
    return "\n".join(line for line in content.splitlines() if not line.lstrip().startswith(marker))


def check_files(files: Iterable[RenderedFile]) -> list[CheckResult]:
    """Check every file that names a checker; identical files (comments aside) are checked once."""
    results = []
    cache: dict[tuple[str, str], str | None] = {}
    with tempfile.TemporaryDirectory(prefix="bulwark-check-") as scratch:
        workdir = Path(scratch)
        for rendered in files:
            if rendered.checker is None:
                continue
            tool, check = CHECKERS[rendered.checker]
            if shutil.which(tool) is None:
                results.append(
                    CheckResult(
                        rendered.host, rendered.path, tool, "skipped", f"{tool} not installed"
                    )
                )
                continue
            key = (rendered.checker, _without_comments(rendered.checker, rendered.content))
            if key not in cache:
                cache[key] = check(rendered.content, workdir)
            complaint = cache[key]
            status = "passed" if complaint is None else "failed"
            results.append(CheckResult(rendered.host, rendered.path, tool, status, complaint or ""))
    return results
