"""The CI rule itself: a skip for a missing tool is a failure under CI=true, a skip otherwise."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TEST_FILE = '''
from tests.support import tools

def test_wants_darknet(monkeypatch):
    monkeypatch.setitem(tools._FINDERS, "darknet", lambda: None)
    tools.needs("darknet")

def test_plain_skip():
    import pytest
    pytest.skip("not applicable here")
'''


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport, pytest_terminal_summary\n")
    (tmp_path / "test_rule.py").write_text(TEST_FILE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true" if ci else "false"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("ci, summary", [(False, "2 skipped"), (True, "1 failed, 1 skipped")])
def test_missing_tool_skip_fails_only_in_ci(tmp_path, ci, summary):
    result = _run(tmp_path, ci)
    assert summary in result.stdout, result.stdout
    if not ci:
        assert "install them with:" in result.stdout


def test_a_tmpfs_that_cannot_be_mounted_is_a_missing_tool(tmp_path):
    """The disk-full test mounts a tmpfs: where it cannot (not root), it skips here and fails in CI."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport, pytest_terminal_summary\n")
    (tmp_path / "test_rule.py").write_text(
        "from tests.support import tools\n\n"
        "def test_wants_tmpfs(monkeypatch):\n"
        "    monkeypatch.setitem(tools._FINDERS, 'tmpfs', lambda: None)\n"
        "    tools.needs('tmpfs')\n")
    for ci, summary in ((False, "1 skipped"), (True, "1 failed")):
        env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true" if ci else "false"}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert summary in result.stdout, result.stdout
        assert "needs tmpfs (cannot mount a tmpfs here; run the tests as root" in result.stdout
