"""The controller's Debian sources: where apt-cacher-ng fetches from and what the base image uses.

apt-cacher-ng's packaged backend list is empty, and the base image should use the same mirror
and suites as the controller, so both come from the controller's own apt configuration
(deb822 `.sources` files and one-line `.list` files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bulwark.errors import BulwarkError

_ARCHIVE_PATHS = ("/debian", "/debian-security")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: tuple[str, ...]

    @property
    def line(self) -> str:
        """The one-line form, as mmdebstrap takes mirrors."""
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"

    @property
    def is_debian_archive(self) -> bool:
        return urlsplit(self.uri).path.rstrip("/") in _ARCHIVE_PATHS

    @property
    def is_security(self) -> bool:
        return urlsplit(self.uri).path.rstrip("/") == "/debian-security"


def parse_deb822(text: str) -> list[AptSource]:
    """Binary (`Types: deb`) entries of a deb822 sources file, one per URI and suite."""
    sources = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            sources += [AptSource(uri, suite, components) for suite in fields["suites"].split()]
    return sources


def parse_one_line(text: str) -> list[AptSource]:
    """`deb URI SUITE COMPONENTS...` lines of a sources.list; options in [brackets] dropped."""
    sources = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        if words[1].startswith("["):
            closing = next(i for i, word in enumerate(words) if word.endswith("]"))
            words = ["deb", *words[closing + 1 :]]
        sources.append(AptSource(words[1], words[2], tuple(words[3:])))
    return sources


def controller_sources(root: Path = Path("/etc/apt")) -> list[AptSource]:
    """The Debian archive entries the controller's apt uses, in file order."""
    sources = []
    files = [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]
    for path in files:
        if path.suffix == ".sources":
            sources += parse_deb822(path.read_text())
        elif path.suffix == ".list" or path.name == "sources.list":
            sources += parse_one_line(path.read_text()) if path.is_file() else []
    debian = [source for source in sources if source.is_debian_archive]
    if not any(not source.is_security for source in debian):
        raise BulwarkError(f"no Debian mirror in {root}/sources.list or sources.list.d/")
    return debian


def mirror_url(sources: list[AptSource]) -> str:
    """The Debian archive mirror (not the security archive), with a trailing slash."""
    return next(source.uri for source in sources if not source.is_security).rstrip("/") + "/"
