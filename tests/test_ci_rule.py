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
