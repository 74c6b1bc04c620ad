"""Where the dav role's Radicale keeps calendars and contacts on disk: written by roles/dav.py,
read by roles/directory.py (the LDAP address book is rebuilt from the books beside it).

Radicale's multifilesystem storage: each principal is a directory under its instance's
`collection-root`, each collection a directory in it, each item a file. The shared address
book lives outside every principal (SHARED_DIR), reached through a link in each one.
"""

from __future__ import annotations

from bulwark.topology import Account, Topology
from bulwark.volumes import volume

# The files' owner; its group may read them (the directory's refresh is in it).
USER = "bulwark-dav"
# Everything the role stores, one directory (the storage role's `dav` volume).
DATA_DIR = volume("dav").path
# Every account's own calendar and address book.
DEFAULT_COLLECTION = "Default"
# The shared address book's collection name in its owner's namespace, and where it really is:
# outside every principal, so nobody reaches it but through the link in their own collection.
SHARED_SUFFIX = "Shared"
SHARED_DIR = f"{DATA_DIR}/addressbooks/shared"
# Radicale instance -> what its collections are (their `tag`).
INSTANCES: dict[str, str] = {"calendars": "VCALENDAR", "addressbooks": "VADDRESSBOOK"}


def collection_root(instance: str) -> str:
    """The principals' directory of a Radicale instance (`calendars`, `addressbooks`)."""
    return f"{DATA_DIR}/{instance}/collection-root"


def book_login(topology: Topology, account: Account, book: str) -> str:
    """The principal of `account`'s `user+Book@domain` login: it holds just that book (a link),
    so that such a client finds the book from the bare host name too."""
    return f"{collection_root('addressbooks')}/{account.user}+{book}@{topology.domain}"


def account_paths(topology: Topology, account: Account) -> tuple[str, ...]:
    """Everything of `account` in the store: its principal in each instance (its collections,
    their items and Radicale's caches) and its book logins' principals. Never the shared book,
    which lives outside every principal."""
    address = account.address(topology.domain)
    return (
        *(f"{collection_root(name)}/{address}" for name in INSTANCES),
        *(book_login(topology, account, book) for book in (DEFAULT_COLLECTION, SHARED_SUFFIX)),
    )


def default_book(topology: Topology, account: Account) -> str:
    """`account`'s own address book."""
    principal = account.address(topology.domain)
    return f"{collection_root('addressbooks')}/{principal}/{DEFAULT_COLLECTION}"


def shared_book_name(topology: Topology) -> str | None:
    """The shared book's collection name (`<owner address>.Shared`), if the platform has one."""
    book = topology.shared_addressbook
    return f"{book.owner}@{topology.domain}.{SHARED_SUFFIX}" if book else None
