"""The topology model: looking up what is not there names it, never a bare StopIteration."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology

PRODUCTION = load_topology(Path(__file__).resolve().parents[2] / "inventory" / "production.py")


def test_host_and_site_are_found_by_name():
    assert PRODUCTION.host("nj-gw").site == "nj"
    assert PRODUCTION.site("sea").primary is False


def test_an_unknown_host_is_a_bulwark_error_naming_it():
    with pytest.raises(BulwarkError) as caught:
        PRODUCTION.host("nj-gww")
    assert str(caught.value) == "no host 'nj-gww' (did you mean 'nj-gw'?)"


def test_an_unknown_site_is_a_bulwark_error_naming_it():
    with pytest.raises(BulwarkError) as caught:
        PRODUCTION.site("paris")
    assert str(caught.value) == "no site 'paris'"
