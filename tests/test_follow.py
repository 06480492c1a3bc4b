"""``follow``: the one-line view, and a real writer process growing a real darknet log under it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from darknet_runner.follow import Progress, progress_of, render
from darknet_runner.logs import parse_file

from tests.support.fixtures import DARKNET_FIXTURES as FIXTURES

REPO = Path(__file__).resolve().parent.parent


def test_render_before_any_iteration():
    assert render(Progress(None, None, None, None, None, [])) == "iteration -"
    assert render(Progress(None, 120, None, None, None, [])) == "iteration -/120"


def test_render_everything():
    p = Progress(42, 120, 1.23456, (100, 0.6642), 25.4, [{"kind": "stalled", "message": "No new iteration."}])
    assert render(p, width=10) == ("[###-------] 42/120  35%  avg loss 1.2346  mAP@0.5 66.42% @100  ETA 0:00:25"
                                   "  ! No new iteration.")


def test_progress_of_a_finished_alexeyab_log():
    parsed = parse_file(FIXTURES / "alexeyab_cpu_yolov3tiny_map.log")
    p = progress_of(parsed, None, [])
    assert (p.iteration, p.max_batches, p.avg_loss, p.last_map) == (120, 120, 0.885284, (120, 0.904084))
    assert p.eta_seconds == pytest.approx(0.012440 * 3600)


def test_eta_from_seconds_when_the_fork_prints_no_hours_left():
    parsed = parse_file(FIXTURES / "pjreddie_debian_yolov3tiny_stdbufL.log")
    seconds = [r["seconds"] for r in parsed.iterations[-20:]]
    p = progress_of(parsed, 40, [])
    assert p.eta_seconds == pytest.approx(10 * sum(seconds) / 20)


WRITER = textwrap.dedent("""
    import os, sys, time
    run, log, code, bursts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    open(os.path.join(run, "pid"), "w").write(f"{os.getpid()}\\n")
    lines = open(log, "rb").read().splitlines(keepends=True)
    step = len(lines) // bursts + 1
    with open(os.path.join(run, "train_log.txt"), "ab", buffering=0) as out:
        for number, start in enumerate(range(0, len(lines), step)):
            out.write(b"".join(lines[start:start + step]))
            while number == 0 and not os.path.exists(os.path.join(run, "go")):
                time.sleep(0.05)  # the rest only once `follow` is up: a slow start must not skip bursts
            time.sleep(0.5)
    open(os.path.join(run, "exit_code"), "w").write(code + "\\n")
""")


def run_follow(tmp_path: Path, fixture: str, code: int, max_batches: int) -> tuple[subprocess.CompletedProcess, str]:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"max_batches": max_batches, "started": "2026-01-01T00:00:00Z"}))
    (tmp_path / "writer.py").write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(run_dir), str(FIXTURES / fixture),
                               str(code), "6"], start_new_session=True)
    follow = subprocess.Popen([sys.executable, "-m", "darknet_runner", "--workspace", str(tmp_path), "follow", "r1"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(follow.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=30)  # follow has read the first burst (or says nothing until the end)
    (run_dir / "go").touch()
    try:
        rest, err = follow.communicate(timeout=60)
    finally:
        writer.wait(timeout=30)
    reader.join(timeout=5)
    out = "".join(first) + rest
    return subprocess.CompletedProcess(follow.args, follow.returncode, out, err), out


def test_follow_shows_growing_iterations_and_ends_finished(tmp_path):
    done, out = run_follow(tmp_path, "pjreddie_debian_yolov3tiny_stdbufL.log", 0, 30)
    assert done.returncode == 0, done.stderr
    shown = [int(m.group(1)) for m in re.finditer(r"\] (\d+)/30 ", out)]
    assert len(set(shown)) >= 3 and shown == sorted(shown) and shown[-1] == 30, out
    assert out.rstrip().splitlines()[-1] == "finished"


def test_follow_ends_failed_with_the_reason_from_the_log(tmp_path):
    done, out = run_follow(tmp_path, "pjreddie_debian_exp_filters_mismatch_rc134.log", 134, 30)
    assert done.returncode == 1, done.stderr
    assert out.rstrip().splitlines()[-1].startswith("failed: "), out
    assert "filters" in out.rstrip().splitlines()[-1]


def test_follow_refuses_an_unknown_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "darknet_runner", "--workspace", str(tmp_path), "follow", "nope"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no run 'nope'" in done.stderr


def test_follow_function_returns_the_final_status(tmp_path):
    """``train`` and ``resume`` (darknet_runner.jobs) call ``follow.follow(run_dir)`` in-process."""
    import io

    from darknet_runner.follow import follow

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"max_batches": 30}))
    (run_dir / "go").touch()  # follow runs in this process: nothing to wait for
    (tmp_path / "writer.py").write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(run_dir),
                               str(FIXTURES / "pjreddie_debian_yolov3tiny_stdbufL.log"), "0", "3"],
                              start_new_session=True)
    out = io.StringIO()
    try:
        final = follow(run_dir, out=out, poll_s=1)
    finally:
        writer.wait(timeout=30)
    assert (final.state, final.exit_code) == ("finished", 0)
    assert out.getvalue().splitlines()[-2].startswith("[########################] 30/30 100%")
