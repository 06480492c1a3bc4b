"""Which real tools a test needs, and how a missing one is reported (skip here, failure in CI)."""
from __future__ import annotations

import importlib.util
import shutil

import pytest

NEEDS_PREFIX = "needs "
INSTALL_HINT = "sudo apt-get update && sudo apt-get install -y darknet chromium chromium-driver && make test"


def _find_darknet() -> str | None:
    return shutil.which("darknet") or (shutil.which("/usr/bin/darknet"))


def _find_chromium() -> str | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return browser if browser and driver else None


def _find_emulator() -> str | None:
    return "gcp_storage_emulator" if importlib.util.find_spec("gcp_storage_emulator") else None


_FINDERS = {"darknet": _find_darknet, "chromium": _find_chromium, "emulator": _find_emulator}


def needs(tool: str) -> str:
    """Return the tool's path (or module name), or skip the test with a ``needs <tool>`` reason."""
    found = _FINDERS[tool]()
    if not found:
        pytest.skip(f"{NEEDS_PREFIX}{tool} (not installed; {INSTALL_HINT})")
    return found
