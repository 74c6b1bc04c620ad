"""bulwark-directory-refresh: rebuild slapd's read-only LDAP address book from Radicale's books.

Installed on the directory host as a script (standard library only) and run by systemd as slapd's
own user, allowed to read the CardDAV store.
Mail clients look people up over LDAP; people keep their contacts in CardDAV. This program turns
the CardDAV address books Radicale 3.1 stores on the same host (its "multifilesystem": a book is a
directory, each contact a file holding one or more vCards) into the tree of slapd's `dc=AddressBook`
database: every platform account under ou=Accounts (the global address list), the shared book
under ou=Shared, and each account's own book under ou=Personal, every entry there carrying
`seeAlso` naming its owner's bind DN for slapd's ACL (`by dnattr=seeAlso read`) to show it to
that owner alone. The users database (`dc=User`, the bind DNs and their app-password hashes) is
rendered by the deploy (roles/directory.py) and only loaded here.

Contacts are other people's text: a card or a value slapd's syntax would refuse is left out with a
note (one line on stderr, for the journal), naming the book, the file and the attribute but never
the value, and the rest of the book still loads. The same books give byte-identical LDIF.

Each database is rebuilt offline with slapadd into a fresh directory beside the live one, whose
data file then replaces the live one (a rename: the running slapd keeps reading the old file),
and the program leaves the restart marker for its unit's privileged last step, which restarts
slapd on the new file: searches see the old contents or the new, never a mix. (Reopening the
database inside the running slapd, through cn=config, is not enough: back-mdb keeps the
attribute numbering of the database it first opened and misreads a rebuilt one, whose
numbering differs.) A database whose LDIF has not changed since the
last refresh (its SHA-256 is kept in `<directory>.digest`) is left alone. A failed slapadd leaves
the old database serving.

The configuration (JSON, `--config`):
  address_book, users: the two databases, each {"suffix", "directory", "build_config"}; users also
      names its "ldif" file. build_config is a slapd.conf holding a `database mdb` section per
      suffix, for slapadd; directory is the one the running slapd's olcDbDirectory names.
  accounts: [{"address", "name", "book"}], book being the account's Radicale book directory.
  shared: {"owner", "book"} or null.
  restart_marker: the file whose presence asks for slapd's restart (the unit removes it).
"""

from __future__ import annotations

import argparse
import base64
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG = "/etc/bulwark/directory/refresh.json"
# A contact file larger than this is skipped: vCards with photos stay well below it.
MAX_CARD_FILE = 16 * 1024 * 1024
# The three branches of the address book, in the order they are written.
ACCOUNTS, PERSONAL, SHARED = "Accounts", "Personal", "Shared"
PERSON_CLASSES = ("top", "person", "organizationalPerson", "inetOrgPerson")
# The Telephone Number syntax as slapd 2.5 checks it: PrintableString (schema_init.c,
# printableStringValidate with slap.h's SLAP_PRINTABLE). Facsimile numbers use the same characters.
PRINTABLE = re.compile(r"[A-Za-z0-9'()+,\-./:?= ]+")
TELEPHONE_ATTRIBUTES = frozenset(
    {"telephoneNumber", "mobile", "homePhone", "facsimileTelephoneNumber"}
)
CONTROL = re.compile("[\x00-\x1f\x7f]")
# RFC 2849 SAFE-STRING: a value that may be written as is (anything else is base64).
SAFE_STRING = re.compile(
    r"[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*"
)
LDIF_WIDTH = 76
# back-mdb's data file in a database directory (its lock file, lock.mdb, stays slapd's own).
DATA_FILE = "data.mdb"
# A suffix this program writes a top entry for: one dc RDN.
DC_SUFFIX = re.compile(r"dc=([A-Za-z0-9-]+)", re.IGNORECASE)
# Database directories go into slapd.conf unquoted and into cn=config as they are.
DIRECTORY_PATH = re.compile(r"/[^\s\"\\]+")
# A vCard content line: [group.]name[;params]:value, the colon being the first outside quotes.
CONTENT_LINE = re.compile(r'((?:[^:"]|"[^"]*")*):(.*)', re.DOTALL)
PARAMETER = re.compile(r'(?:[^;"]|"[^"]*")+')
FOLDING = re.compile(r"\r?\n[ \t]")
LINE_BREAK = re.compile(r"\r\n|\r|\n")
ESCAPE = re.compile(r"\\(.)", re.DOTALL)

Entry = tuple[str, list[tuple[str, str]]]
Run = Callable[..., str]


class ConfigError(Exception):
    """The configuration or the build config is wrong; the message says where."""


class RefreshError(Exception):
    """A database could not be rebuilt; the message is one line without LDIF content."""


@dataclass(frozen=True)
class Database:
    suffix: str
    directory: str
    build_config: str
    ldif: str | None = None


@dataclass(frozen=True)
class Book:
    """A Radicale address book: `label` names it in notes (its owner's address)."""

    label: str
    path: str


@dataclass(frozen=True)
class Account:
    address: str
    name: str
    book: str


@dataclass(frozen=True)
class Config:
    address_book: Database
    users: Database
    accounts: tuple[Account, ...]
    shared: Book | None
    restart_marker: str


@dataclass(frozen=True)
class Property:
    """One vCard property: its name without group, its TYPE values (lower case), its raw value."""

    name: str
    types: frozenset[str]
    value: str


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- vCards ---------------------------------------------------------------------------------


def parse_vcards(text: str) -> list[list[Property]]:
    """The cards of a vCard file (3.0 or 4.0), each as its properties; nested cards are ignored."""
    cards: list[list[Property]] = []
    depth = 0
    for line in LINE_BREAK.split(FOLDING.sub("", text)):
        prop = parse_property(line)
        if prop is None:
            continue
        marker = prop.value.strip().upper() == "VCARD"
        if prop.name == "BEGIN" and marker:
            depth += 1
            if depth == 1:
                cards.append([])
        elif prop.name == "END" and marker and depth:
            depth -= 1
        elif depth == 1:
            cards[-1].append(prop)
    return cards


def parse_property(line: str) -> Property | None:
    match = CONTENT_LINE.fullmatch(line)
    if match is None:
        return None
    name, *parameters = PARAMETER.findall(match[1]) or [""]
    types: set[str] = set()
    for parameter in parameters:
        key, equals, value = parameter.partition("=")
        if not equals:  # vCard 2.1's bare `;WORK`
            types.add(key.strip().lower())
        elif key.strip().upper() == "TYPE":
            types.update(part.strip().lower() for part in value.replace('"', "").split(","))
    return Property(name.rpartition(".")[2].strip().upper(), frozenset(types), match[2])


def unescape(text: str) -> str:
    """A vCard text value: `\\n` is a line break, `\\,` `\\;` `\\\\` the character itself."""
    return ESCAPE.sub(lambda match: "\n" if match[1] in "nN" else match[1], text)


def components(value: str, count: int) -> list[str]:
    """A structured value (N, ADR, ORG) split at unescaped semicolons, unescaped, padded."""
    parts, current, chars = [], "", iter(value)
    for char in chars:
        if char == "\\":
            current += char + next(chars, "")
        elif char == ";":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [unescape(part).strip() for part in parts] + [""] * (count - len(parts))


def phone_attribute(types: frozenset[str]) -> str:
    if "fax" in types:
        return "facsimileTelephoneNumber"
    if "cell" in types:
        return "mobile"
    if "home" in types:
        return "homePhone"
    return "telephoneNumber"


def usable(text: str) -> bool:
    return bool(text.strip()) and "\0" not in text


def contact_attributes(card: list[Property]) -> dict[str, list[str]] | None:
    """The LDAP attributes of a card, before syntax checks; None without a usable name."""
    first = {prop.name: prop for prop in reversed(card)}
    structured_name = components(first["N"].value, 5) if "N" in first else [""] * 5
    family, given, additional, prefix, suffix = structured_name[:5]
    emails = []
    for prop in card:
        if prop.name == "EMAIL":
            email = unescape(prop.value).strip()
            emails.append(email[7:] if email.lower().startswith("mailto:") else email)
    candidates = [
        unescape(first["FN"].value).strip() if "FN" in first else "",
        " ".join(part for part in (prefix, given, additional, family, suffix) if part),
        *emails,
    ]
    cn = next((candidate for candidate in candidates if usable(candidate)), None)
    if cn is None:
        return None
    attributes: dict[str, list[str]] = {
        "cn": [cn],
        "sn": [family if usable(family) else cn.split()[-1]],
        "givenName": [given],
        "mail": emails,
    }
    for prop in card:
        value = unescape(prop.value).strip()
        if prop.name == "TEL":
            if value.lower().startswith("tel:"):  # vCard 4's VALUE=uri, without its parameters
                value = value[4:].split(";")[0]
            attributes.setdefault(phone_attribute(prop.types), []).append(value)
        elif prop.name in ("TITLE", "URL", "NOTE"):
            name = {"TITLE": "title", "URL": "labeledURI", "NOTE": "description"}[prop.name]
            attributes.setdefault(name, []).append(value)
    if "ORG" in first:
        organization, *units = components(first["ORG"].value, 1)
        attributes["o"] = [organization]
        attributes["ou"] = [", ".join(unit for unit in units if unit)]
    addresses = [prop for prop in card if prop.name == "ADR"]
    if addresses:
        chosen = next((prop for prop in addresses if "work" in prop.types), addresses[0])
        box, extended, street, locality, region, code, country = components(chosen.value, 7)[:7]
        street_lines = [line.strip() for line in street.splitlines()]
        lines = [box, extended, *street_lines, locality, region, code, country]
        attributes["postalAddress"] = [postal_address(line for line in lines if line)]
        attributes["street"] = [", ".join(line for line in street_lines if line)]
        attributes.update(l=[locality], st=[region], postalCode=[code])
    return attributes


def postal_address(lines: Iterable[str]) -> str:
    """RFC 4517 §3.3.28: lines joined by `$`, in which `\\` and `$` are escaped."""
    return "$".join(line.replace("\\", "\\5C").replace("$", "\\24") for line in lines)


def syntax_problem(attribute: str, value: str) -> str | None:
    """Why slapd's syntax for `attribute` refuses `value`, or None."""
    if attribute in TELEPHONE_ATTRIBUTES:
        return None if PRINTABLE.fullmatch(value) else "not a telephone number"
    if attribute == "mail":
        ok = value.isascii() and "@" in value and not CONTROL.search(value)
        return None if ok else "not an ASCII mail address"
    if attribute == "labeledURI":
        ok = value.isascii() and not re.search(r"[\s\x00-\x1f\x7f]", value)
        return None if ok else "not an ASCII URI without spaces"
    return "holds a NUL character" if "\0" in value else None


def matching_key(attribute: str, value: str) -> str:
    """What slapd's equality rule compares: values with equal keys are duplicates."""
    if attribute == "labeledURI":
        return value
    folded = " ".join(value.split()).casefold()
    return folded.replace(" ", "").replace("-", "") if attribute in TELEPHONE_ATTRIBUTES else folded


def checked_values(
    attributes: dict[str, list[str]],
) -> tuple[list[tuple[str, str]], list[tuple[str, int, str]]]:
    """The values slapd accepts, stripped, de-duplicated and sorted, as (attribute, value) pairs;
    and the refused ones as (attribute, length, reason)."""
    kept: list[tuple[str, str]] = []
    refused: list[tuple[str, int, str]] = []
    for attribute in sorted(attributes):
        seen: set[str] = set()
        for value in sorted({value.strip() for value in attributes[attribute]} - {""}):
            problem = syntax_problem(attribute, value)
            if problem:
                refused.append((attribute, len(value), problem))
            elif matching_key(attribute, value) not in seen:
                seen.add(matching_key(attribute, value))
                kept.append((attribute, value))
    return kept, refused


def read_regular_file(path: str) -> bytes | None:
    """The file's bytes; None for anything but a regular file (symbolic links included)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        with open(descriptor, "rb", closefd=False) as file:
            data = file.read(MAX_CARD_FILE + 1)
    finally:
        os.close(descriptor)
    if len(data) > MAX_CARD_FILE:
        raise OSError(errno.EFBIG, "larger than the limit")
    return data


def contact_uid(book: str, file_name: str, index: int) -> str:
    """A contact's RDN value: stable across refreshes, never derived from the card's text."""
    key = f"{book}\0{file_name}" + (f"\0{index}" if index else "")
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def book_entries(book: Book, parent: str, owner_dn: str | None) -> tuple[list[Entry], list[str]]:
    """The entries of a book's contacts under `parent`, and the notes about what was left out."""
    entries: list[Entry] = []
    notes: list[str] = []
    try:
        names = sorted(os.listdir(book.path))
    except FileNotFoundError:  # Radicale creates a book when its owner first uses it
        return entries, notes
    except OSError as error:
        return entries, [f"{book.label}: book skipped: {error.strerror}"]
    for name in names:
        if name.startswith("."):
            continue
        where = f"{book.label} {name!r}"
        try:
            data = read_regular_file(os.path.join(book.path, name))
        except OSError as error:
            notes.append(f"{where}: skipped: {error.strerror}")
            continue
        if data is None:
            continue
        try:
            cards = parse_vcards(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            cards = []
        if not cards:
            notes.append(f"{where}: skipped: not a UTF-8 vCard")
        for index, card in enumerate(cards):
            attributes = contact_attributes(card)
            if attributes is None:
                notes.append(f"{where}: card {index + 1} skipped: no FN, N or EMAIL")
                continue
            values, refused = checked_values(attributes)
            notes += [
                f"{where}: {attribute}: a value of {length} characters left out: {reason}"
                for attribute, length, reason in refused
            ]
            uid = contact_uid(book.path, name, index)
            pairs = [("objectClass", oc) for oc in PERSON_CLASSES] + [("uid", uid), *values]
            if owner_dn:
                pairs.append(("seeAlso", owner_dn))
            entries.append((f"uid={uid},{parent}", pairs))
    return entries, notes


# --- LDIF and DNs ---------------------------------------------------------------------------


def escape_dn_value(value: str) -> str:
    """An attribute value as written in a DN (RFC 4514 §2.4)."""
    escaped = {"\0": "\\00", **{char: "\\" + char for char in '"+,;<>\\'}}
    chars = [escaped.get(char, char) for char in value]
    if chars and chars[0] in ("#", " "):
        chars[0] = "\\" + chars[0]
    if chars and chars[-1] == " ":
        chars[-1] = "\\ "
    return "".join(chars)


def ldif_line(attribute: str, value: str) -> str:
    """`attribute: value`, base64 unless a SAFE-STRING (RFC 2849), folded at 76 columns."""
    if SAFE_STRING.fullmatch(value) and not value.endswith(" "):
        line = f"{attribute}: {value}"
    else:
        line = f"{attribute}:: {base64.b64encode(value.encode()).decode('ascii')}"
    first, rest = line[:LDIF_WIDTH], line[LDIF_WIDTH:]
    step = LDIF_WIDTH - 1
    return "\n ".join([first] + [rest[start : start + step] for start in range(0, len(rest), step)])


def format_ldif(entries: list[Entry]) -> str:
    """Entries in the given order, each ended by a blank line. No `version:` line: slapadd
    would take it for an attribute."""
    return "".join(
        "\n".join([ldif_line("dn", dn)] + [ldif_line(name, value) for name, value in pairs])
        + "\n\n"
        for dn, pairs in entries
    )


def top_entry(suffix: str) -> Entry:
    match = DC_SUFFIX.fullmatch(suffix)
    if match is None:
        raise ValueError(f"suffix {suffix!r} is not a single dc= RDN")
    classes = [("objectClass", oc) for oc in ("top", "dcObject", "organization")]
    return suffix, [*classes, ("dc", match[1]), ("o", match[1])]


def account_pairs(account: Account) -> list[tuple[str, str]]:
    words = account.name.split()
    attributes = {
        "cn": [account.name],
        "sn": [words[-1] if words else account.name],
        "givenName": [" ".join(words[:-1])],
        "mail": [account.address],
        "displayName": [account.name],
    }
    values, _ = checked_values(attributes)  # load_config refused what could be refused
    classes = [("objectClass", oc) for oc in PERSON_CLASSES]
    return [*classes, ("uid", account.address), *values]


def address_book(config: Config) -> tuple[list[Entry], list[str]]:
    """The address book's entries, parents first, and the notes about what was left out."""
    suffix = config.address_book.suffix
    branch = {ou: f"ou={ou},{suffix}" for ou in (ACCOUNTS, PERSONAL, SHARED)}
    children: dict[str, list[Entry]] = {ou: [] for ou in branch}
    notes: list[str] = []
    for account in config.accounts:
        dn = f"uid={escape_dn_value(account.address)},{branch[ACCOUNTS]}"
        children[ACCOUNTS].append((dn, account_pairs(account)))
        owner_dn = f"cn={escape_dn_value(account.address)},{config.users.suffix}"
        found = book_entries(Book(account.address, account.book), branch[PERSONAL], owner_dn)
        children[PERSONAL] += found[0]
        notes += found[1]
    if config.shared:
        shared = Book(f"{config.shared.label}'s shared book", config.shared.path)
        found = book_entries(shared, branch[SHARED], None)
        children[SHARED] += found[0]
        notes += found[1]
    entries = [top_entry(suffix)]
    for ou, dn in branch.items():
        entries.append(
            (dn, [("objectClass", "top"), ("objectClass", "organizationalUnit"), ("ou", ou)])
        )
        entries += sorted(children[ou])
    return entries, notes


# --- configuration --------------------------------------------------------------------------


def load_config(path: str) -> Config:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a JSON object")

    def text(mapping: object, key: str, where: str) -> str:
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if not isinstance(value, str) or not usable(value):
            raise ConfigError(f"{path}: {where}{key} must be a non-empty string")
        return value

    def database(key: str, with_ldif: bool) -> Database:
        section = raw.get(key)
        found = Database(
            *(text(section, name, f"{key}.") for name in ("suffix", "directory", "build_config")),
            ldif=text(section, "ldif", f"{key}.") if with_ldif else None,
        )
        if not DIRECTORY_PATH.fullmatch(found.directory):
            raise ConfigError(f"{path}: {key}.directory must be an absolute path without spaces")
        if not DC_SUFFIX.fullmatch(found.suffix):
            raise ConfigError(f"{path}: {key}.suffix must be a single dc= RDN")
        return found

    address_book_db, users_db = database("address_book", False), database("users", True)
    accounts = tuple(
        Account(*(text(item, name, "accounts[].") for name in ("address", "name", "book")))
        for item in raw.get("accounts") or []
    )
    for account in accounts:
        if syntax_problem("mail", account.address):
            raise ConfigError(f"{path}: account {account.address!r} is not a mail address")
    if len({account.address.casefold() for account in accounts}) != len(accounts):
        raise ConfigError(f"{path}: an account address is listed twice")
    shared = raw.get("shared")
    return Config(
        address_book=address_book_db,
        users=users_db,
        accounts=accounts,
        shared=Book(text(shared, "owner", "shared."), text(shared, "book", "shared."))
        if shared is not None
        else None,
        restart_marker=text(raw, "restart_marker", ""),
    )


# --- rebuild --------------------------------------------------------------------------------------


@dataclass
class Section:
    """A `database mdb` section of a slapd.conf: its suffixes, where its directory lines are."""

    suffixes: list[str]
    directory_lines: list[int]


def build_config_for(text: str, suffix: str, directory: str, scratch: str) -> str:
    """The build config with the `directory` of the `database mdb` section of `suffix` set to
    `directory`, and every other mdb section's to `scratch`: slapd checks, reading its config,
    that each database's directory is writable, though slapadd -b opens only one."""
    lines = text.splitlines(keepends=True)
    sections: list[Section] = []
    current: Section | None = None
    for index, line in enumerate(lines):
        words = line.split(None, 1)
        if not words or line[0].isspace() or words[0].startswith("#"):
            continue
        keyword, argument = words[0].lower(), (words[1:] or [""])[0].strip()
        if keyword == "database":
            current = Section([], []) if argument.lower() == "mdb" else None
            sections += [current] if current else []
        elif current and keyword == "suffix":
            current.suffixes.append(argument.strip('"').lower())
        elif current and keyword == "directory":
            current.directory_lines.append(index)
    chosen = [section for section in sections if suffix.lower() in section.suffixes]
    if len(chosen) != 1:
        raise ConfigError(f"the build config has no single 'database mdb' section for {suffix}")
    for section in sections:
        if len(section.directory_lines) != 1:
            raise ConfigError("each 'database mdb' section of the build config needs one directory")
        target = directory if section is chosen[0] else scratch
        lines[section.directory_lines[0]] = f"directory {target}\n"
    return "".join(lines)


def run_tool(command: list[str], *, quiet: bool = False) -> str:
    """A tool's standard output; RefreshError naming it (and, unless quiet, its last error line)."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (
            "" if quiet else ": " + " ".join((done.stderr.strip().splitlines() or [""])[-1].split())
        )
        raise RefreshError(f"{command[0]} failed (exit {done.returncode}){detail[:300]}")
    return done.stdout


def slapadd(database: Database, ldif: bytes, target: str, dry_run: bool, run: Run) -> None:
    """Load the LDIF into `target` with slapadd (only check it when `dry_run`)."""
    with tempfile.TemporaryDirectory(prefix="bulwark-directory-") as scratch:
        try:
            build_config = Path(database.build_config).read_text()
        except OSError as error:
            raise ConfigError(f"{database.build_config}: {error.strerror}") from None
        config_path = os.path.join(scratch, "slapd.conf")
        Path(config_path).write_text(
            build_config_for(build_config, database.suffix, target, scratch)
        )
        ldif_path = database.ldif or os.path.join(scratch, "load.ldif")
        if not database.ldif:
            Path(ldif_path).write_bytes(ldif)
        mode = ["-u"] if dry_run else ["-q"]
        command = ["slapadd", *mode, "-f", config_path, "-b", database.suffix, "-l", ldif_path]
        # The users LDIF holds password hashes: slapadd's complaint may quote it.
        run(command, quiet=bool(database.ldif))


def refresh(database: Database, ldif: bytes, config: Config, run: Run = run_tool) -> bool:
    """Rebuild the database and put it in place, unless its LDIF is the one loaded; True if
    rebuilt.

    slapadd builds into `<directory>.build`; its data file then replaces the live one (a rename:
    slapd keeps reading the old file until it restarts), and the restart marker is left for the
    unit's last step. Until the digest is recorded, the next run builds again."""
    digest = hashlib.sha256(ldif).hexdigest()
    live, digest_path = database.directory, database.directory + ".digest"
    if not os.path.isdir(live):
        raise RefreshError(f"{live} is missing: the deploy makes it")
    recorded = Path(digest_path).read_text().strip() if os.path.exists(digest_path) else None
    if recorded == digest and os.path.exists(os.path.join(live, DATA_FILE)):
        return False
    build = live + ".build"
    shutil.rmtree(build, ignore_errors=True)
    os.mkdir(build, 0o700)
    try:
        slapadd(database, ldif, build, False, run)
        os.replace(os.path.join(build, DATA_FILE), os.path.join(live, DATA_FILE))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    Path(config.restart_marker).touch()
    Path(digest_path + ".new").write_text(digest + "\n")
    os.replace(digest_path + ".new", digest_path)
    return True


def entry_count(ldif: bytes) -> int:
    return len(re.findall(rb"^dn::? ", ldif, re.MULTILINE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument(
        "--dry-run", action="store_true", help="check with slapadd -u, change nothing"
    )
    parser.add_argument("--print-ldif", action="store_true", help="write the address book's LDIF")
    args = parser.parse_args(argv)
    failed = False
    try:
        config = load_config(args.config)
        started = time.monotonic()
        entries, notes = address_book(config)
        book_ldif = format_ldif(entries).encode()
        if args.print_ldif:
            for note in notes:
                log(note)
            sys.stdout.write(book_ldif.decode())
            return 0
        try:
            users_ldif = Path(config.users.ldif or "").read_bytes()
        except OSError as error:
            raise ConfigError(f"{config.users.ldif}: {error.strerror}") from None
        with open(args.config, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # A database's notes are logged when it is built: once per change of the books,
            # not at every run of the timer.
            for database, ldif, built_notes in (
                (config.address_book, book_ldif, notes),
                (config.users, users_ldif, []),
            ):
                count = entry_count(ldif)
                try:
                    if args.dry_run:
                        with tempfile.TemporaryDirectory() as target:
                            slapadd(database, ldif, target, True, run_tool)
                        for note in built_notes:
                            log(note)
                        print(f"{database.suffix}: {count} entries, {len(built_notes)} notes")
                    elif refresh(database, ldif, config):
                        for note in built_notes:
                            log(note)
                        seconds = f"{time.monotonic() - started:.1f} s"
                        log(
                            f"{database.suffix}: {count} entries in {seconds}, "
                            f"{len(built_notes)} notes"
                        )
                except RefreshError as error:
                    log(f"{database.suffix}: {error}")
                    failed = True
                started = time.monotonic()
    except (ConfigError, RefreshError) as error:
        log(f"bulwark-directory-refresh: {error}")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
