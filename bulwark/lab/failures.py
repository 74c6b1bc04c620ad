"""Print the failed tests of JUnit XML reports: molecule's verify output scrolls away under its
destroy step, and CI shows the end of the log."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

# Characters of each failure's message shown.
MESSAGE_CHARACTERS = 400


def failed_tests(report: Path) -> list[str]:
    """`classname::name: message` of each failed or erroring test case in `report`."""
    lines = []
    for case in ET.parse(report).iter("testcase"):  # noqa: S314 - pytest wrote it, here
        for outcome in (*case.iter("failure"), *case.iter("error")):
            message = " ".join((outcome.get("message") or outcome.text or "").split())
            lines.append(
                f"{case.get('classname')}::{case.get('name')}: {message[:MESSAGE_CHARACTERS]}"
            )
    return lines


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    for name in argv:
        path = Path(name)
        if not path.is_file():
            continue
        print(f"failed in {path.name}:")
        for line in failed_tests(path) or ["(none recorded)"]:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
