"""The promise table as data (bulwark/promises.py): every seed section covered, every test named
real, every evidence pattern found in the rendered lab, every status derived from the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bulwark import cis, registry
from bulwark.promises import (
    ENDPOINTS,
    PROMISES,
    SECTIONS,
    SEED_FILES,
    Evidence,
    Found,
    RenderedIndex,
    Status,
    status,
)

REPO = Path(__file__).resolve().parents[2]
# The seeds live in shared/ beside the repository (a checkout's, or CI's copy of it).
SEEDS = REPO.parent / "shared" / "seeds"


def suite_test_ids() -> set[str]:
    """Every test function of tests/unit, tests/integration, tests/e2e and tests/vm as a node id
    without parameters: `tests/unit/test_x.py::test_y` (or `::TestClass::test_y`)."""
    ids = set()
    for tier in ("unit", "integration", "e2e", "vm"):
        for path in sorted((REPO / "tests" / tier).glob("test_*.py")):
            module = str(path.relative_to(REPO))
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    if node.name.startswith("test_"):
                        ids.add(f"{module}::{node.name}")
                elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                    ids.update(
                        f"{module}::{node.name}::{item.name}"
                        for item in node.body
                        if isinstance(item, ast.FunctionDef) and item.name.startswith("test_")
                    )
    return ids


def by_key(key: str):
    return next(promise for promise in PROMISES if promise.key == key)


def test_every_test_a_promise_names_exists_in_the_suite():
    suite = suite_test_ids()
    assert len(suite) > 500
    missing = sorted({test for promise in PROMISES for test in promise.tests} - suite)
    assert missing == []


def test_promise_keys_are_unique_and_roles_are_the_registrys():
    keys = [promise.key for promise in PROMISES]
    assert len(keys) == len(set(keys))
    known = {role.name for role in registry.ROLES}
    for promise in PROMISES:
        assert set(promise.roles) <= known, promise.key
        assert {evidence.role for evidence in promise.evidence} <= known, promise.key
    assert {deviation.role for deviation in cis.DEVIATIONS} <= known


def test_a_promise_is_either_waived_with_reasons_or_delivered_by_roles():
    for promise in PROMISES:
        assert bool(promise.waived) != bool(promise.roles), promise.key
        if promise.waived:
            assert not promise.evidence and not promise.tests, promise.key


def test_a_promise_whose_roles_have_modules_names_evidence_and_tests():
    for promise in PROMISES:
        implemented = [name for name in promise.roles if registry.role(name).implemented]
        if implemented:
            assert promise.evidence, promise.key
            assert promise.tests, promise.key


def test_every_evidence_of_a_role_with_a_module_matches_a_rendered_line(rendered_inventories):
    """In the lab, or in production for what only a split host writes (an mx host without
    mailstore has its own Dovecot auth files)."""
    lab = RenderedIndex(rendered_inventories["lab"])
    production = RenderedIndex(rendered_inventories["production"])
    unmatched = [
        (promise.key, evidence.path, evidence.pattern)
        for promise in PROMISES
        for evidence in promise.evidence
        if registry.role(evidence.role).implemented
        and not lab.find(evidence)
        and not production.find(evidence)
    ]
    assert unmatched == []
    in_lab = [e for p in PROMISES for e in p.evidence if lab.find(e)]
    assert len(in_lab) > 0.9 * sum(len(promise.evidence) for promise in PROMISES)


def test_found_lines_are_whole_lines_with_their_hosts(rendered_inventories):
    index = RenderedIndex(rendered_inventories["production"])
    (found,) = index.find(Evidence("base", "/etc/logrotate.conf", r"^rotate 180$"))
    assert (found.path, found.line) == ("/etc/logrotate.conf", "rotate 180")
    assert len(found.hosts) == 10
    hsts = index.find(Evidence("dav", "/etc/nginx/*.conf", r"Strict-Transport-Security"))
    assert {found.hosts for found in hsts} == {("nj-web", "sea-web")}
    assert all(found.line.startswith("add_header Strict-Transport-Security") for found in hsts)
    assert index.find(Evidence("firewall", "/etc/nginx/nginx.conf", "server")) == []


def test_evidence_of_a_web_role_finds_the_front_whichever_web_role_wrote_it(rendered_inventories):
    """nginx.conf and the checker's accounts are written by a web host's last web role (files
    where it runs): evidence naming dav finds them too, but never another role's own files."""
    index = RenderedIndex(rendered_inventories["lab"])
    writers = {
        rendered.role
        for rendered in rendered_inventories["lab"]
        if rendered.path == "/etc/nginx/nginx.conf"
    }
    assert writers == {"files"}
    for role in ("dav", "files"):
        (found,) = index.find(Evidence(role, "/etc/nginx/nginx.conf", r"^\s*server_tokens off;$"))
        assert found.hosts == ("nj-web", "sea-web")
        assert index.find(Evidence(role, "/etc/bulwark/webauth/accounts.json", r'"domain"'))
    assert not index.find(Evidence("dav", "/etc/nginx/bulwark-files-writes.conf", "map"))
    assert not index.find(Evidence("mailstore", "/etc/nginx/nginx.conf", "server"))


def test_the_status_follows_the_registry(monkeypatch):
    line = Found(Evidence("dav", "/x", "x"), "/x", "x", ("nj-web",))
    # a role with a module but nothing rendered for it: not deployed; without a module: not
    # implemented (every role has one now: the logs role pretends it has none)
    assert status(by_key("logs-encrypted-at-rest")) is Status.NOT_DEPLOYED
    with monkeypatch.context() as patch:
        patch.setattr(registry.Role, "implemented", property(lambda role: role.name != "logs"))
        assert status(by_key("logs-encrypted-at-rest")) is Status.NOT_IMPLEMENTED
    # every role of the promise has a module: kept; one of them without: kept in part
    assert status(by_key("tls-client-connections"), [line]) is Status.KEPT
    with monkeypatch.context() as patch:
        patch.setattr(registry.Role, "implemented", property(lambda role: role.name != "proxy"))
        assert status(by_key("tls-client-connections"), [line]) is Status.PARTLY
    assert status(by_key("hsts"), [line]) is Status.KEPT
    assert status(by_key("caldav"), [line]) is Status.KEPT
    assert status(by_key("caldav"), []) is Status.NOT_DEPLOYED
    assert status(by_key("bug-bounty")) is Status.NOT_KEPT
    monkeypatch.setattr(registry.Role, "implemented", property(lambda role: True))
    assert status(by_key("backups")) is Status.NOT_DEPLOYED
    assert status(by_key("tls-client-connections"), [line]) is Status.KEPT


def test_every_section_of_the_seeds_has_a_promise():
    for seed, sections in SECTIONS.items():
        for section in sections:
            assert [p for p in PROMISES if p.seed == seed and p.section == section], section


def test_every_client_port_of_the_endpoints_seed_has_a_promise():
    claims = " ".join(promise.claim for promise in PROMISES if promise.seed == ENDPOINTS)
    for port in ("993", "995", "465", "587", "636", "21"):
        assert f"port {port}" in claims or f"on {port}" in claims, port


@pytest.mark.skipif(not SEEDS.is_dir(), reason=f"no seeds at {SEEDS} (shared/ not beside repo)")
def test_sections_and_promises_quote_the_seeds_own_words():
    texts = {seed: (SEEDS / name).read_text() for seed, name in SEED_FILES.items()}
    for seed, sections in SECTIONS.items():
        lines = {line.strip() for line in texts[seed].splitlines()}
        for section in sections:
            assert section in lines, f"{seed}: no line {section!r}"
    for promise in PROMISES:
        assert promise.section in texts[promise.seed], promise.key
