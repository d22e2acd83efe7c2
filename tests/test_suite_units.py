"""The suite's units of work (tests/conftest.py): modules that may install Debian packages share one unit, so
that two pytest-xdist workers never run apt-get at the same time."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import SHARED_UNITS

TESTS = Path(__file__).parent
# A module installs packages when it runs a `make *-tools` target or calls a helper that does.
INSTALLS = re.compile(r"\b(?:ops|postgres|browser)-tools\b|\bops_tool\(")


def test_every_module_that_may_install_packages_is_in_the_system_packages_unit():
    installers = {path.stem for path in TESTS.glob("test_*.py") if INSTALLS.search(path.read_text())}
    installers.discard(Path(__file__).stem)
    assert {"test_deploy", "test_prometheus", "test_history_store", "test_http_face"} <= installers
    assert {m for m in installers if SHARED_UNITS.get(m) != "system-packages"} == set()
