"""Which real tools a test needs, and how a missing one is reported (skip here, failure in CI)."""
from __future__ import annotations

import importlib.util
import os
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


def _find_tmpfs() -> str | None:
    """``mount`` when this process can mount a tmpfs (root or CAP_SYS_ADMIN): tried on a probe folder."""
    import subprocess
    import tempfile

    mount = shutil.which("mount")
    if not mount or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    with tempfile.TemporaryDirectory() as probe:
        done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], capture_output=True)
        if done.returncode != 0:
            return None
        subprocess.run(["umount", probe], capture_output=True)
    return mount


_FINDERS = {"darknet": _find_darknet, "chromium": _find_chromium, "emulator": _find_emulator,
            "tmpfs": _find_tmpfs}
# Why a tool is missing, where "not installed" is not it.
_MISSING = {"tmpfs": "cannot mount a tmpfs here; run the tests as root, or in a container with CAP_SYS_ADMIN"}


def needs(tool: str) -> str:
    """Return the tool's path (or module name), or skip the test with a ``needs <tool>`` reason."""
    found = _FINDERS[tool]()
    if not found:
        pytest.skip(f"{NEEDS_PREFIX}{tool} ({_MISSING.get(tool, f'not installed; {INSTALL_HINT}')})")
    return found
