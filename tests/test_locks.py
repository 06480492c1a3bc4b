"""One writer per dataset and per run (pipeline/locks.py): real processes hold and contend for the locks.

The second writer gets one sentence naming the first one's pid and start time and changes nothing;
a lock left by a process killed with SIGKILL is taken over; ``wait`` waits for the holder.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from darknet_runner import jobs
from darknet_runner.rundir import RunDir
from pipeline import locks
from pipeline.cli import UserError
from pipeline.images import fetch, sync
from pipeline.openimages import build
from pipeline.yolo import prepare, split
from pipeline.atomic import read_json
from pipeline.workspace import Workspace
from tests.support.datasets import jpeg_bytes, make_dataset, noise
from tests.support.runs import make_run, make_split_dataset

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))
HOLDER = """
import sys, time
from pathlib import Path
from pipeline.workspace import Workspace
from darknet_runner.rundir import RunDir
ws = Workspace(Path(sys.argv[1]))
kind, name, action, seconds = sys.argv[2:6]
target = ws.dataset(name) if kind == "dataset" else RunDir(ws.run_dir(name))
with target.lock(action):
    print("holding", flush=True)
    time.sleep(float(seconds))
"""
BUSY = re.compile(r"^(dataset|run) (\S+) is being (\w+) by pid (\d+) since (\d\d:\d\d:\d\d): "
                  r"wait for it to finish, or stop that process and try again$")


def _holder(root: Path, kind: str, name: str, action: str, seconds: float = 60) -> subprocess.Popen:
    """A real process holding a dataset's or run's lock (through DatasetDir.lock / RunDir.lock)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), kind, name, action, str(seconds)],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def _expected(kind: str, name: str, doing: str, pid: int, lock_path: Path) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(locks.holder(lock_path)["since"]))
    return (f"{kind} {name} is being {doing} by pid {pid} since {since}: "
            "wait for it to finish, or stop that process and try again")


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links by target) → its SHA-256: what "nothing changed" compares."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "dir"
    return found


def _cli(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--workspace", str(root), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- two prepares of one dataset

@pytest.mark.slow
def test_a_second_prepare_is_refused_and_the_first_one_finishes_alone(tmp_path):
    specs = [{"id": f"{i:04x}", "data": jpeg_bytes(noise(480, 640, i)), "boxes": [(0, 0.1, 0.2, 0.5, 0.9)]}
             for i in range(500)]
    ws = make_dataset(tmp_path / "ws", specs)
    dataset = ws.dataset("boat")
    first = _cli(ws.root, "prepare", "--dataset", "boat", "--size", "1024", "--workers", "1")
    try:
        deadline = time.monotonic() + 60
        while locks.holder(dataset.lock_path) is None:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.01)
        expected = _expected("dataset", "boat", "prepared", first.pid, dataset.lock_path)
        # the app (this process) and a second command line, both at another size
        with pytest.raises(locks.Busy) as refused:
            prepare.prepare_dataset(ws, "boat", size=256, workers=1)
        assert str(refused.value) == expected
        second = _cli(ws.root, "prepare", "--dataset", "boat", "--size", "256", "--workers", "1")
        out, err = second.communicate(timeout=120)
        assert first.poll() is None, "the first prepare ended before the second one tried (make it slower)"
        assert (second.returncode, err) == (2, f"error: {expected}\n")
        assert first.wait(timeout=300) == 0, first.communicate()
    finally:
        _kill(first)
    sizes = {cv2.imread(str(p)).shape[:2] for p in dataset.yolo.glob("*.jpg")}
    assert sizes == {(1024, 1024)}                       # never a mix of 1024 and 256 px images
    assert len(list(dataset.yolo.glob("*.txt"))) == 500
    assert read_json(dataset.prepare_json)["settings"]["size"] == 1024
    assert dataset.prepared_size() == 1024
    assert not dataset.lock_path.exists()                # released and removed by its holder


def test_a_lock_left_by_a_killed_holder_is_taken_over(tmp_path):
    ws = make_dataset(tmp_path / "ws", [{"id": "a1", "data": jpeg_bytes(noise(60, 80)), "boxes": []}])
    dataset = ws.dataset("boat")
    holder = _holder(ws.root, "dataset", "boat", "prepare")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_json(dataset.lock_path)["pid"] == holder.pid   # the dead pid's file is still there
    summary = prepare.prepare_dataset(ws, "boat", size=64, workers=1)
    assert summary["prepared"] == 1
    assert not dataset.lock_path.exists()


def test_wait_waits_for_the_holder_to_finish(tmp_path):
    ws = make_dataset(tmp_path / "ws", [{"id": "a1", "data": jpeg_bytes(noise(60, 80)), "boxes": []}])
    holder = _holder(ws.root, "dataset", "boat", "split", seconds=1.5)
    try:
        started = time.monotonic()
        summary = prepare.prepare_dataset(ws, "boat", size=64, workers=1, wait=60)
        assert summary["prepared"] == 1
        assert time.monotonic() - started > 0.5 and holder.wait(timeout=30) == 0
    finally:
        _kill(holder)


def test_cli_wait_flag_and_a_wait_that_runs_out(tmp_path):
    ws = make_dataset(tmp_path / "ws", [{"id": "a1", "data": jpeg_bytes(noise(60, 80)), "boxes": []}])
    holder = _holder(ws.root, "dataset", "boat", "build")
    try:
        started = time.monotonic()
        proc = _cli(ws.root, "prepare", "--dataset", "boat", "--size", "64", "--wait", "0.5")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and time.monotonic() - started >= 0.5
        assert err == f"error: {_expected('dataset', 'boat', 'built', holder.pid, ws.dataset('boat').lock_path)}\n"
    finally:
        _kill(holder)
    assert not ws.dataset("boat").yolo.exists()


# ---------------------------------------------------------------- every writer of a dataset

@pytest.fixture
def split_ws(tmp_path, demo_root) -> Workspace:
    """A prepared, split dataset "boat", pushed to a folder, in a workspace with the demo's metadata."""
    import shutil

    specs = [{"id": f"{i:04x}", "data": jpeg_bytes(noise(60, 80, i)), "boxes": [(0, 0.1, 0.1, 0.6, 0.7)]}
             for i in range(10)]
    ws = make_dataset(tmp_path / "ws", specs)
    shutil.copytree(demo_root / "metadata", ws.metadata_dir, dirs_exist_ok=True)
    prepare.prepare_dataset(ws, "boat", size=64, workers=1)
    split.split_dataset(ws, "boat", ratios=(0.6, 0.2, 0.2))
    sync.push(ws, "boat", str(tmp_path / "pushed"))
    return ws


WRITERS = {
    "prepare": lambda ws, tmp: prepare.prepare_dataset(ws, "boat", size=128, workers=1),
    "split": lambda ws, tmp: split.split_dataset(ws, "boat", ratios=(0.4, 0.3, 0.3), seed=5),
    "build --overwrite": lambda ws, tmp: build.build_dataset(ws, ["Boat"], name="boat", overwrite=True),
    "fetch-images": lambda ws, tmp: fetch.fetch_images(ws, "boat", str(ws.dataset("boat").originals)),
    "pull": lambda ws, tmp: sync.pull(ws, "boat", str(tmp / "pushed")),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_of_a_dataset_is_refused_while_another_process_writes_it(split_ws, tmp_path, writer):
    dataset = split_ws.dataset("boat")
    before = _snapshot(dataset.path)
    holder = _holder(split_ws.root, "dataset", "boat", "prepare")
    try:
        with pytest.raises(locks.Busy) as refused:
            WRITERS[writer](split_ws, tmp_path)
        assert str(refused.value) == _expected("dataset", "boat", "prepared", holder.pid, dataset.lock_path)
        assert BUSY.match(str(refused.value))
    finally:
        _kill(holder)
    assert _snapshot(dataset.path) == before
    WRITERS[writer](split_ws, tmp_path)  # the holder is gone: the same call goes through


# ---------------------------------------------------------------- runs

@pytest.fixture
def run_ws(tmp_path) -> Workspace:
    make_split_dataset(tmp_path / "ws")
    make_run(tmp_path / "ws")
    return Workspace(tmp_path / "ws")


@pytest.mark.parametrize("call", ["start", "stop", "resume"])
def test_start_stop_resume_of_a_run_are_refused_while_another_process_starts_it(run_ws, call):
    run = RunDir(run_ws.run_dir("r1"))
    before = _snapshot(run.path)
    holder = _holder(run_ws.root, "run", "r1", "start")
    try:
        with pytest.raises(locks.Busy) as refused:
            getattr(jobs, call)(run.path)
        assert str(refused.value) == _expected("run", "r1", "started", holder.pid, run.lock_path)
    finally:
        _kill(holder)
    assert _snapshot(run.path) == before
    jobs.stop(run.path)  # free again once the holder is gone
    assert not run.lock_path.exists()


def test_cli_stop_while_another_process_stops_the_run(run_ws):
    run = RunDir(run_ws.run_dir("r1"))
    holder = _holder(run_ws.root, "run", "r1", "stop")
    try:
        proc = subprocess.run([sys.executable, "-m", "darknet_runner", "--workspace", str(run_ws.root), "stop", "r1"],
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr == f"error: {_expected('run', 'r1', 'stopped', holder.pid, run.lock_path)}\n"
    finally:
        _kill(holder)


# ---------------------------------------------------------------- the lock itself

def test_the_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path):
    path = tmp_path / ".x.lock"
    outcome = []

    def other_thread():
        try:
            with locks.hold(path, "dataset", "x", "split"):
                outcome.append("got it")
        except locks.Busy as err:
            outcome.append(str(err))

    with locks.hold(path, "dataset", "x", "prepare"):
        with locks.hold(tmp_path / "sub" / ".." / ".x.lock", "dataset", "x", "prepare"):  # same file
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        assert path.exists()
    assert len(outcome) == 1
    assert BUSY.match(outcome[0]).group(1, 2, 3, 4) == ("dataset", "x", "prepared", str(os.getpid()))
    assert not path.exists()
    with locks.hold(path, "dataset", "x", "split"):
        assert read_json(path)["action"] == "split"


@pytest.mark.parametrize("wait", [math.nan, -1, "5", True])
def test_a_bad_wait_is_one_sentence(tmp_path, wait):
    with pytest.raises(UserError, match=r"^--wait must be a number of seconds of at least 0, not "):
        with locks.hold(tmp_path / ".x.lock", "dataset", "x", "prepare", wait=wait):
            pass
    assert list(tmp_path.iterdir()) == []
