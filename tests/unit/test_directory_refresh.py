"""The directory host's address-book refresh (bulwark/directory_refresh.py): vCards as Radicale
stores them turned into slapd's LDIF (values slapd would refuse left out with a note that never
quotes them), RFC 4514 DNs and RFC 2849 LDIF read back by a small parser, byte-identical output,
the users LDIF, and the rebuild and swap with slapadd and ldapmodify stood in for; the real
slapadd checks the LDIF where it is installed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from bulwark import directory_refresh as refresh_module
from bulwark.directory_refresh import (
    Account,
    Book,
    Config,
    ConfigError,
    Database,
    RefreshError,
    address_book,
    book_entries,
    build_config_for,
    contact_attributes,
    escape_dn_value,
    format_ldif,
    load_config,
    parse_vcards,
    refresh,
)

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
SLAPADD = Path("/usr/sbin/slapadd")


def parse_ldif(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """RFC 2849 content records, unfolded and base64 decoded: [(dn, [(attribute, value)])]."""
    entries = []
    for record in text.replace("\n ", "").split("\n\n"):
        if not record.strip():
            continue
        pairs = []
        for line in record.split("\n"):
            name, _, rest = line.partition(":")
            if rest.startswith(":"):
                pairs.append((name, base64.b64decode(rest[1:].strip()).decode()))
            else:
                pairs.append((name, rest[1:]))
        assert pairs[0][0] == "dn"
        entries.append((pairs[0][1], pairs[1:]))
    return entries


def values(pairs: list[tuple[str, str]], attribute: str) -> list[str]:
    return [value for name, value in pairs if name == attribute]


def card_attributes(text: str) -> dict[str, list[str]]:
    [card] = parse_vcards(text)
    attributes = contact_attributes(card)
    assert attributes is not None
    return {name: found for name, found in attributes.items() if any(found)}


def test_a_folded_escaped_grouped_card_maps_to_ldap_attributes():
    card = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Zoë van der\r\n  Berg\r\n"
        "N:van der Berg;Zoë;;Dr.;\r\n"
        "item1.EMAIL;TYPE=INTERNET:zoe@example.org\r\n"
        "email;type=work:mailto:Zoe.Berg@Example.COM\r\n"
        "TEL;TYPE=work,voice:+31 20 555 0100\r\n"
        "TEL;TYPE=CELL:+31 6 5555 0101\r\n"
        "TEL;TYPE=home;TYPE=voice:+31 20 555 0102\r\n"
        "TEL;HOME;FAX:+31 20 555 0103\r\n"
        "TEL:555-0104\r\n"
        "ORG:Acme\\, Inc.;Research;Labs\r\n"
        "TITLE:Head of \\;stuff\\;\r\n"
        "ADR;TYPE=home:;;Home street 1;Utrecht;;3500 AA;Netherlands\r\n"
        "ADR;TYPE=work:;Floor 3;Main st. 5\\nBuilding $B;Amsterdam;NH;1011 AB;NL\r\n"
        "URL:https://example.org/zoe\r\n"
        "NOTE:Line one\\nLine two\\\\end\r\n"
        "END:VCARD\r\n"
    )
    attributes = card_attributes(card)
    assert attributes["cn"] == ["Zoë van der Berg"]
    assert attributes["sn"] == ["van der Berg"]
    assert attributes["givenName"] == ["Zoë"]
    assert attributes["mail"] == ["zoe@example.org", "Zoe.Berg@Example.COM"]
    assert attributes["telephoneNumber"] == ["+31 20 555 0100", "555-0104"]
    assert attributes["mobile"] == ["+31 6 5555 0101"]
    assert attributes["homePhone"] == ["+31 20 555 0102"]
    assert attributes["facsimileTelephoneNumber"] == ["+31 20 555 0103"]
    assert attributes["o"] == ["Acme, Inc."]
    assert attributes["ou"] == ["Research, Labs"]
    assert attributes["title"] == ["Head of ;stuff;"]
    assert attributes["street"] == ["Main st. 5, Building $B"]
    assert attributes["l"] == ["Amsterdam"]
    assert attributes["st"] == ["NH"]
    assert attributes["postalCode"] == ["1011 AB"]
    assert attributes["postalAddress"] == [
        "Floor 3$Main st. 5$Building \\24B$Amsterdam$NH$1011 AB$NL"
    ]
    assert attributes["labeledURI"] == ["https://example.org/zoe"]
    assert attributes["description"] == ["Line one\nLine two\\end"]


def test_vcard4_uri_telephones_quoted_types_and_lf_tab_folding():
    card = (
        "BEGIN:VCARD\nVERSION:4.0\nFN:Ann\n\tLee\n"
        'TEL;VALUE=uri;TYPE="cell,voice":tel:+1-555-0100;ext=7\n'
        "TEL;VALUE=uri:TEL:+1-555-0199\n"
        "END:VCARD\n"
    )
    attributes = card_attributes(card)
    assert attributes["cn"] == ["AnnLee"]
    assert attributes["sn"] == ["AnnLee"]
    assert attributes["mobile"] == ["+1-555-0100"]
    assert attributes["telephoneNumber"] == ["+1-555-0199"]


def test_the_name_falls_back_from_fn_to_n_to_the_first_email():
    from_n = card_attributes("BEGIN:VCARD\nN:Doe;John;Q.;Mr.;Jr.\nEND:VCARD\n")
    assert from_n["cn"] == ["Mr. John Q. Doe Jr."]
    assert from_n["sn"] == ["Doe"]
    from_email = card_attributes("BEGIN:VCARD\nEMAIL:x@example.net\nEND:VCARD\n")
    assert from_email["cn"] == ["x@example.net"]
    assert from_email["sn"] == ["x@example.net"]
    [nameless] = parse_vcards("BEGIN:VCARD\nFN: \nTEL:1\nEND:VCARD\n")
    assert contact_attributes(nameless) is None


def test_several_cards_in_a_file_and_nested_ones():
    cards = parse_vcards(
        "BEGIN:VCARD\nFN:One\nAGENT:BEGIN:VCARD\nBEGIN:VCARD\nFN:Inner\nEND:VCARD\n"
        "END:VCARD\nnoise\nBEGIN:VCARD\nFN:Two\nEND:VCARD\n"
    )
    assert [[prop.value for prop in card if prop.name == "FN"] for card in cards] == [
        ["One"],
        ["Two"],
    ]
    assert parse_vcards("just some text\n") == []


def write_book(path: Path, files: dict[str, str | bytes]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return path


def test_a_book_skips_hidden_odd_and_garbage_files_with_notes(tmp_path: Path):
    book = write_book(
        tmp_path / "book",
        {
            "a.vcf": "BEGIN:VCARD\nFN:Alpha\nEND:VCARD\n",
            "3f1c-href-without-extension": "BEGIN:VCARD\nFN:Beta\nEND:VCARD\n"
            "BEGIN:VCARD\nFN:Gamma\nEND:VCARD\n",
            ".Radicale.props": '{"tag": "VADDRESSBOOK"}',
            "garbage.vcf": b"\xff\xfe\x00binary",
            "empty.vcf": "",
            "nameless.vcf": "BEGIN:VCARD\nTEL:1\nEND:VCARD\n",
        },
    )
    (book / ".Radicale.cache").mkdir()
    (book / "folder").mkdir()
    (book / "link.vcf").symlink_to(book / "a.vcf")
    entries, notes = book_entries(Book("alice@example.net", str(book)), "ou=Personal,dc=A", None)
    names = sorted(values(pairs, "cn")[0] for _, pairs in entries)
    assert names == ["Alpha", "Beta", "Gamma"]
    assert len({dn for dn, _ in entries}) == 3
    assert sorted(notes) == [
        "alice@example.net 'empty.vcf': skipped: not a UTF-8 vCard",
        "alice@example.net 'garbage.vcf': skipped: not a UTF-8 vCard",
        "alice@example.net 'nameless.vcf': card 1 skipped: no FN, N or EMAIL",
    ]


def test_an_unreadable_file_is_a_note_not_a_failure(tmp_path: Path, monkeypatch):
    book = write_book(tmp_path / "book", {"a.vcf": "BEGIN:VCARD\nFN:A\nEND:VCARD\n"})

    def unreadable(path: str) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(refresh_module, "read_regular_file", unreadable)
    entries, notes = book_entries(Book("bob@example.net", str(book)), "ou=Shared,dc=A", None)
    assert entries == []
    assert notes == ["bob@example.net 'a.vcf': skipped: Permission denied"]
    missing = book_entries(Book("bob@example.net", str(tmp_path / "none")), "ou=Shared,dc=A", None)
    assert missing == ([], [])


def test_values_slapd_refuses_are_left_out_with_a_note_without_the_value(tmp_path: Path):
    book = write_book(
        tmp_path / "book",
        {
            "x.vcf": "BEGIN:VCARD\nFN:Xavier\nTEL;TYPE=fax:fax@example.net\n"
            "TEL;TYPE=cell:#31#\nTEL:+1 555 0100\nTEL:+1-555-0100\nTEL: +1 5550100 \n"
            "EMAIL:xavier\nEMAIL:xäver@example.net\nEMAIL:ok@example.net\nEMAIL:OK@example.net\n"
            "URL:https://example.net/a b\nTITLE:Boss\x00\nEND:VCARD\n",
        },
    )
    entries, notes = book_entries(Book("alice@example.net", str(book)), "ou=Personal,dc=A", None)
    [(_, pairs)] = entries
    assert values(pairs, "facsimileTelephoneNumber") == []
    assert values(pairs, "mobile") == []
    assert values(pairs, "telephoneNumber") == ["+1 555 0100"]
    assert values(pairs, "mail") == ["OK@example.net"]
    assert values(pairs, "labeledURI") == []
    assert values(pairs, "title") == []
    assert sorted(notes) == [
        "alice@example.net 'x.vcf': facsimileTelephoneNumber: a value of 15 characters left out:"
        " not a telephone number",
        "alice@example.net 'x.vcf': labeledURI: a value of 23 characters left out:"
        " not an ASCII URI without spaces",
        "alice@example.net 'x.vcf': mail: a value of 17 characters left out:"
        " not an ASCII mail address",
        "alice@example.net 'x.vcf': mail: a value of 6 characters left out:"
        " not an ASCII mail address",
        "alice@example.net 'x.vcf': mobile: a value of 4 characters left out:"
        " not a telephone number",
        "alice@example.net 'x.vcf': title: a value of 5 characters left out: holds a NUL character",
    ]
    assert not any("fax@" in note or "#31#" in note or "xavier" in note for note in notes)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("a+b@example.net", "a\\+b@example.net"),
        ('"x,y"@example.net', '\\"x\\,y\\"@example.net'),
        ("#hash; <x> \\ ", "\\#hash\\; \\<x\\> \\\\\\ "),
        (" lead", "\\ lead"),
        (" ", "\\ "),
        ("nul\0", "nul\\00"),
        ("plain", "plain"),
    ],
)
def test_escape_dn_value(value: str, escaped: str):
    assert escape_dn_value(value) == escaped


def test_ldif_base64_and_folding_read_back():
    long_value = "x" * 200
    entries = [
        (
            "uid=Zoë,dc=A",
            [
                ("cn", "Zoë"),
                ("description", "two\nlines"),
                ("description", " leading space"),
                ("description", ":colon"),
                ("description", "<angle"),
                ("description", "trailing "),
                ("sn", long_value),
                ("o", "plain value"),
            ],
        )
    ]
    text = format_ldif(entries)
    assert all(len(line) <= 76 for line in text.splitlines())
    assert "dn:: " in text
    assert "o: plain value\n" in text
    assert "description:: " in text and "cn:: " in text
    assert parse_ldif(text) == entries


def make_config(tmp_path: Path) -> Config:
    dav = tmp_path / "dav"
    write_book(
        dav / "alice",
        {
            "b.vcf": "BEGIN:VCARD\nFN:Bert\nEMAIL:bert@example.org\nEND:VCARD\n",
            "a.vcf": "BEGIN:VCARD\nFN:Anna\nTEL;TYPE=fax:n@pe\nEND:VCARD\n",
        },
    )
    write_book(dav / "shared", {"s.vcf": "BEGIN:VCARD\nFN:Plumber\nTEL:+1 555 0111\nEND:VCARD\n"})
    directories = tmp_path / "directory"
    return Config(
        address_book=Database("dc=AddressBook", f"{directories}/addressbook", "/none"),
        users=Database("dc=User", f"{directories}/users", "/none", str(tmp_path / "users.ldif")),
        accounts=(
            Account("alice@example.net", "Alice Archer", str(dav / "alice")),
            Account("bob+x@example.net", "Bob", str(dav / "bob")),
        ),
        shared=Book("carol@example.net", str(dav / "shared")),
        restart_marker=str(tmp_path / "restart-slapd"),
    )


def test_the_address_book_tree(tmp_path: Path):
    entries, notes = address_book(make_config(tmp_path))
    dns = [dn for dn, _ in entries]
    assert dns[:2] == ["dc=AddressBook", "ou=Accounts,dc=AddressBook"]
    assert dns.index("ou=Personal,dc=AddressBook") < dns.index("ou=Shared,dc=AddressBook")
    by_dn = dict(entries)
    alice = by_dn["uid=alice@example.net,ou=Accounts,dc=AddressBook"]
    assert values(alice, "cn") == ["Alice Archer"]
    assert values(alice, "sn") == ["Archer"]
    assert values(alice, "givenName") == ["Alice"]
    assert values(alice, "displayName") == ["Alice Archer"]
    assert values(alice, "mail") == ["alice@example.net"]
    bob = by_dn["uid=bob\\+x@example.net,ou=Accounts,dc=AddressBook"]
    assert values(bob, "sn") == ["Bob"] and values(bob, "givenName") == []
    personal = [pairs for dn, pairs in entries if dn.endswith(",ou=Personal,dc=AddressBook")]
    assert sorted(values(pairs, "cn")[0] for pairs in personal) == ["Anna", "Bert"]
    assert all(values(pairs, "seeAlso") == ["cn=alice@example.net,dc=User"] for pairs in personal)
    shared = [pairs for dn, pairs in entries if dn.endswith(",ou=Shared,dc=AddressBook")]
    assert [values(pairs, "cn") for pairs in shared] == [["Plumber"]]
    assert values(shared[0], "seeAlso") == []
    uid = hashlib.sha256(f"{tmp_path}/dav/alice\0a.vcf".encode()).hexdigest()[:24]
    assert f"uid={uid},ou=Personal,dc=AddressBook" in by_dn
    assert notes == [
        "alice@example.net 'a.vcf': facsimileTelephoneNumber: a value of 4 characters left out:"
        " not a telephone number"
    ]


def test_the_same_storage_gives_the_same_bytes_whatever_the_listing_order(
    tmp_path: Path, monkeypatch
):
    config = make_config(tmp_path)
    first = format_ldif(address_book(config)[0])
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: sorted(listdir(path), reverse=True))
    assert format_ldif(address_book(config)[0]) == first
    parse_ldif(first)


def test_load_config(tmp_path: Path):
    raw = {
        "address_book": {
            "suffix": "dc=AddressBook",
            "directory": "/var/lib/bulwark/directory/addressbook",
            "build_config": "/etc/bulwark/directory/slapd-build.conf",
        },
        "users": {
            "suffix": "dc=User",
            "directory": "/var/lib/bulwark/directory/users",
            "build_config": "/etc/bulwark/directory/slapd-build.conf",
            "ldif": "/etc/bulwark/directory/users.ldif",
        },
        "accounts": [{"address": "a@example.net", "name": "A B", "book": "/dav/a"}],
        "shared": None,
        "restart_marker": "/var/lib/bulwark/directory/restart-slapd",
    }
    path = tmp_path / "refresh.json"
    path.write_text(json.dumps(raw))
    config = load_config(str(path))
    assert config.users.ldif == "/etc/bulwark/directory/users.ldif"
    assert config.accounts == (Account("a@example.net", "A B", "/dav/a"),)
    assert config.shared is None
    assert config.restart_marker == "/var/lib/bulwark/directory/restart-slapd"
    raw["accounts"].append({"address": "A@example.net", "name": "Again", "book": "/dav/b"})
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="listed twice"):
        load_config(str(path))
    raw["accounts"].pop()
    raw["address_book"]["directory"] = "relative/path"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"address_book\.directory"):
        load_config(str(path))


BUILD_CONFIG = """\
include /etc/ldap/schema/core.schema
# database mdb
database mdb
suffix "dc=User"
directory /var/lib/bulwark/directory/users
database  mdb
suffix    "dc=AddressBook"
directory /var/lib/bulwark/directory/addressbook
  maxsize 100
"""


def test_the_build_config_points_the_database_at_the_fresh_directory():
    rewritten = build_config_for(BUILD_CONFIG, "dc=AddressBook", "/new/ab.0123", "/scratch")
    assert rewritten.splitlines() == [
        "include /etc/ldap/schema/core.schema",
        "# database mdb",
        "database mdb",
        'suffix "dc=User"',
        "directory /scratch",
        "database  mdb",
        'suffix    "dc=AddressBook"',
        "directory /new/ab.0123",
        "  maxsize 100",
    ]
    with pytest.raises(ConfigError, match="dc=Other"):
        build_config_for(BUILD_CONFIG, "dc=Other", "/new", "/scratch")
    with pytest.raises(ConfigError, match="one directory"):
        build_config_for("database mdb\nsuffix dc=User\n", "dc=User", "/new", "/scratch")


class FakeTools:
    """slapadd writes a data file where its config's directory for -b points; every command is
    recorded."""

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[list[str], bool]] = []
        self.fail = fail

    def __call__(self, command: list[str], *, quiet: bool = False):
        self.calls.append((command, quiet))
        if command[0] == "slapadd":
            if self.fail:
                raise RefreshError("slapadd failed (exit 1)")
            conf = Path(command[command.index("-f") + 1]).read_text()
            directory = conf.split('suffix "dc=AddressBook"\ndirectory ')[1].split("\n")[0]
            ldif = Path(command[command.index("-l") + 1]).read_bytes()
            Path(directory, "data.mdb").write_bytes(ldif)
        return ""


def refresh_setup(tmp_path: Path) -> tuple[Database, Config]:
    build = tmp_path / "build.conf"
    build.write_text('database mdb\nsuffix "dc=AddressBook"\ndirectory /placeholder\n')
    database = Database("dc=AddressBook", str(tmp_path / "db" / "addressbook"), str(build))
    Path(database.directory).mkdir(parents=True)
    config = Config(database, database, (), None, str(tmp_path / "restart-slapd"))
    return database, config


def test_refresh_builds_swaps_records_and_then_skips_the_same_ldif(tmp_path: Path):
    database, config = refresh_setup(tmp_path)
    tools = FakeTools()
    assert refresh(database, b"dn: dc=AddressBook\n\n", config, tools)
    assert Path(database.directory, "data.mdb").read_bytes() == b"dn: dc=AddressBook\n\n"
    digest = hashlib.sha256(b"dn: dc=AddressBook\n\n").hexdigest()
    assert Path(database.directory + ".digest").read_text() == digest + "\n"
    assert [command[0] for command, _ in tools.calls] == ["slapadd"]
    # slapd must restart to read the new build; the unit's last step does, and removes this.
    marker = Path(config.restart_marker)
    assert marker.exists()
    marker.unlink()
    assert "-q" in tools.calls[0][0] and "dc=AddressBook" in tools.calls[0][0]
    # The build went to a directory of its own, gone once its data file is the live one.
    built = Path(tools.calls[0][0][tools.calls[0][0].index("-f") + 1])
    assert not built.exists()
    assert sorted(os.listdir(tmp_path / "db")) == ["addressbook", "addressbook.digest"]

    assert not refresh(database, b"dn: dc=AddressBook\n\n", config, tools)
    assert len(tools.calls) == 1
    assert not marker.exists()  # nothing new: no restart

    assert refresh(database, b"dn: dc=AddressBook\n\ndn: ou=x\n\n", config, tools)
    assert b"ou=x" in Path(database.directory, "data.mdb").read_bytes()
    assert sorted(os.listdir(tmp_path / "db")) == ["addressbook", "addressbook.digest"]


def test_a_lost_data_file_is_rebuilt_though_the_digest_matches(tmp_path: Path):
    database, config = refresh_setup(tmp_path)
    refresh(database, b"dn: dc=AddressBook\n\n", config, FakeTools())
    Path(database.directory, "data.mdb").unlink()
    assert refresh(database, b"dn: dc=AddressBook\n\n", config, FakeTools())


def test_a_failed_slapadd_keeps_the_old_database(tmp_path: Path):
    database, config = refresh_setup(tmp_path)
    refresh(database, b"dn: dc=AddressBook\n\n", config, FakeTools())
    with pytest.raises(RefreshError, match="slapadd failed"):
        refresh(database, b"dn: dc=AddressBook\n\ndn: ou=y\n\n", config, FakeTools(fail=True))
    assert Path(database.directory, "data.mdb").read_bytes() == b"dn: dc=AddressBook\n\n"
    assert sorted(os.listdir(tmp_path / "db")) == ["addressbook", "addressbook.digest"]


def test_a_missing_database_directory_is_refused(tmp_path: Path):
    database, config = refresh_setup(tmp_path)
    Path(database.directory).rmdir()
    with pytest.raises(RefreshError, match="the deploy makes it"):
        refresh(database, b"dn: dc=AddressBook\n\n", config, FakeTools())


@pytest.mark.skipif(not SLAPADD.exists(), reason="slapd is not installed (make checkers does)")
def test_slapadd_accepts_the_ldif(tmp_path: Path):
    config = make_config(tmp_path)
    conf = tmp_path / "slapd.conf"
    conf.write_text(
        "include /etc/ldap/schema/core.schema\n"
        "include /etc/ldap/schema/cosine.schema\n"
        "include /etc/ldap/schema/inetorgperson.schema\n"
        "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
        f'database mdb\nsuffix "dc=AddressBook"\ndirectory {tmp_path}\n'
    )
    ldif = tmp_path / "book.ldif"
    ldif.write_text(format_ldif(address_book(config)[0]))
    checked = subprocess.run(
        [str(SLAPADD), "-u", "-f", str(conf), "-b", "dc=AddressBook", "-l", str(ldif)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
