"""What a ``kill -9`` leaves behind: no live processes (prepare's pool) and no stale folders (build).

prepare's workers end with the process that made the pool, whichever start method it used (the
command line has tqdm's thread, so a forkserver; a plain script forks). A build killed halfway
leaves ``datasets/.<slug>.building-<pid>-*`` (or the dataset it was replacing moved aside); the
next build removes the first and puts the second back, and never touches a live build's folder.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import UserError
from pipeline.openimages import build
from pipeline.atomic import read_json
from pipeline.workspace import Workspace
from tests.support.datasets import jpeg_bytes, make_dataset, noise, yolo_files

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))
# prepare from a plain single-threaded script: the pool forks (the CLI's tqdm thread makes it a forkserver)
LIBRARY = ("import sys; from pathlib import Path; from pipeline.workspace import Workspace; "
           "from pipeline.yolo.prepare import prepare_dataset; "
           "prepare_dataset(Workspace(Path(sys.argv[1])), 'boat', size=608, workers=2)")


def _session(sid: int) -> list[str]:
    """Live processes (zombies count as gone) of session ``sid``: "pid state cmdline"."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            found.append(f"{entry.name} {fields[0]} {cmdline[:120]}")
    return found


def _start(how: str, root: Path) -> subprocess.Popen:
    if how == "cli":
        argv = [sys.executable, "-m", "pipeline", "--workspace", str(root), "prepare", "--dataset", "boat",
                "--size", "608", "--workers", "2"]
    else:
        argv = [sys.executable, "-c", LIBRARY, str(root)]
    return subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cli", "library"])
def test_kill_9_of_prepare_leaves_no_process_and_a_rerun_is_byte_identical(tmp_path, how):
    specs = [{"id": f"{i:04x}", "data": jpeg_bytes(noise(600, 800, i), quality=95),
              "boxes": [(0, 0.1, 0.2, 0.3 + i % 5 * 0.1, 0.9)] if i % 4 else []} for i in range(240)]
    killed, clean = make_dataset(tmp_path / "killed", specs), make_dataset(tmp_path / "clean", specs)
    yolo = killed.dataset("boat").yolo
    proc = _start(how, killed.root)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(list(yolo.glob("*.jpg"))) < 20:
            assert time.monotonic() < deadline, _session(proc.pid)
            time.sleep(0.01)
        assert proc.poll() is None, "prepare ended before it could be killed"
        workers = [line for line in _session(proc.pid) if not line.startswith(f"{proc.pid} ")]
        assert len(workers) >= 2, f"prepare runs no pool: {workers}"
        os.kill(proc.pid, signal.SIGKILL)           # the parent only, as `kill -9 <pid>` does
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
        deadline = time.monotonic() + 5
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _session(proc.pid) == [], "processes of the killed prepare are still alive"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # never leave them running, whatever failed
        except ProcessLookupError:
            pass
    assert 0 < len(list(yolo.glob("*.jpg"))) < 240
    for ws in (killed, clean):
        rerun = _start("cli", ws.root)
        assert rerun.wait(timeout=600) == 0
    assert len(yolo_files(clean)) == 480
    assert yolo_files(killed) == yolo_files(clean)
    assert not killed.dataset("boat").lock_path.exists()


# ---------------------------------------------------------------- builds killed halfway

BUILDER = """
import os, sys, time
from pathlib import Path
from pipeline.openimages import build
from pipeline.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
tmp = build.temp_folder(ws, sys.argv[2])          # the folder a build writes into
(tmp / "boxes.parquet").write_bytes(b"half")
if sys.argv[3] == "replace":                      # then killed between _install's renames
    dest = ws.dataset(sys.argv[2]).path
    os.replace(dest, dest.with_name(f".{dest.name}.old-{os.getpid()}"))
    os.replace(dest.with_name(f".{dest.name}.old-{os.getpid()}") / "originals", tmp / "originals")
print(tmp.name, flush=True)
time.sleep(600)
"""


def _builder(root: Path, slug: str, stage: str = "write") -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(root), slug, stage], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture
def meta_ws(tmp_path, demo_root) -> Workspace:
    """A workspace holding only the demo's Open Images metadata (builds read it)."""
    import shutil

    ws = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(demo_root / "metadata", ws.metadata_dir, dirs_exist_ok=True)
    return ws


def test_the_next_build_removes_folders_of_killed_builds_but_not_of_a_live_one(meta_ws):
    dead_boat, dead_name = _builder(meta_ws.root, "boat")
    dead_other, dead_other_name = _builder(meta_ws.root, "other")
    live, live_name = _builder(meta_ws.root, "canoe")
    try:
        for proc in (dead_boat, dead_other):
            _kill(proc)
        names = {p.name for p in meta_ws.datasets_dir.iterdir()}
        assert {dead_name, dead_other_name, live_name} <= names
        assert dead_name.startswith(f".boat.building-{dead_boat.pid}-")
        build.build_dataset(meta_ws, ["Boat"], name="boat")
        left = {p.name for p in meta_ws.datasets_dir.iterdir()}
        assert left == {"boat", live_name}            # the live build's folder is untouched
        assert (meta_ws.datasets_dir / live_name / "boxes.parquet").read_bytes() == b"half"
    finally:
        _kill(live)
    assert meta_ws.datasets() == ["boat"]


def test_a_replacement_killed_between_its_renames_is_undone_with_the_originals(meta_ws):
    build.build_dataset(meta_ws, ["Boat"], name="boat")
    dataset = meta_ws.dataset("boat")
    dataset.originals.mkdir()
    (dataset.originals / "a.jpg").write_bytes(b"pixels")
    manifest = dataset.manifest_path.read_bytes()
    proc, _ = _builder(meta_ws.root, "boat", "replace")
    _kill(proc)
    assert not dataset.path.exists()                 # the dataset is moved aside, its originals in the temp folder
    with pytest.raises(UserError, match="^dataset 'boat' already exists at .*: pick another --name or use --overwrite$"):
        build.build_dataset(meta_ws, ["Boat"], name="boat")
    assert dataset.manifest_path.read_bytes() == manifest
    assert (dataset.originals / "a.jpg").read_bytes() == b"pixels"
    assert sorted(p.name for p in meta_ws.datasets_dir.iterdir()) == ["boat"]
    assert read_json(dataset.manifest_path)["slug"] == "boat"
