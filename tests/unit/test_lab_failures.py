"""bulwark.lab.failures: the failed tests of a JUnit report, as `make molecule-lab` prints them."""

from __future__ import annotations

from pathlib import Path

from bulwark.lab.failures import failed_tests, main

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" tests="3">
<testcase classname="tests.e2e.test_mail" name="test_ok" time="0.1"/>
<testcase classname="tests.e2e.test_mail" name="test_delivery" time="1">
<failure message="AssertionError: not delivered&#10;  after 60 s">trace</failure></testcase>
<testcase classname="tests.e2e.test_dav" name="test_login" time="1">
<error message="fixture failed">trace</error></testcase>
</testsuite></testsuites>
"""


def test_failed_and_erroring_cases_are_named_with_their_message(tmp_path: Path):
    report = tmp_path / "verify-e2e.xml"
    report.write_text(REPORT)
    assert failed_tests(report) == [
        "tests.e2e.test_mail::test_delivery: AssertionError: not delivered after 60 s",
        "tests.e2e.test_dav::test_login: fixture failed",
    ]


def test_a_missing_report_is_skipped_and_a_clean_one_says_so(tmp_path: Path, capsys):
    report = tmp_path / "verify-integration.xml"
    report.write_text(
        '<testsuites><testsuite><testcase classname="t" name="test_ok"/></testsuite></testsuites>'
    )
    assert main([str(tmp_path / "verify-*.xml"), str(report)]) == 0
    assert capsys.readouterr().out == "failed in verify-integration.xml:\n  (none recorded)\n"
