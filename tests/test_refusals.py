"""One sentence instead of a traceback, and nothing lost: a full disk in prepare, a run id that is
taken, a dataset name without letters, and replacing a dataset that runs trained on.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from darknet_runner import rundir
from pipeline.cli import UserError, main
from pipeline.images import sync
from pipeline.images.imageio import decode_rgb
from pipeline.openimages import build
from pipeline.workspace import Workspace
from tests.conftest import needs
from tests.support.datasets import jpeg_bytes, make_dataset, noise, yolo_files
from tests.support.runs import make_run, make_split_dataset

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))
PIPELINE = __import__("pipeline.__main__", fromlist=["COMMAND_MODULES"]).COMMAND_MODULES
RUNNER = __import__("darknet_runner.__main__", fromlist=["COMMAND_MODULES"]).COMMAND_MODULES


def _snapshot(folder: Path, skip: str | None = None) -> dict[str, str]:
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if skip and rel.split("/", 1)[0] == skip:
            continue
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "dir"
    return found


def _one_sentence(err: str) -> str:
    """The error line of a command's stderr (tqdm may draw bars above it); never a traceback."""
    assert "Traceback" not in err, err
    return err.replace("\r", "\n").strip().splitlines()[-1]


# ---------------------------------------------------------------- a full disk in prepare

@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MiB tmpfs, unmounted afterwards."""
    needs("tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the disk of ``folder`` with one file, then give back ``leave`` bytes."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


@pytest.mark.slow
@pytest.mark.parametrize("leave", [0, 200_000])
def test_a_full_disk_in_prepare_is_one_sentence_and_a_rerun_finishes_the_job(small_disk, tmp_path, leave):
    specs = [{"id": f"{i:04x}", "data": jpeg_bytes(noise(300, 400, i)), "boxes": [(0, 0.1, 0.2, 0.5, 0.9)]}
             for i in range(40)]
    ws, clean = make_dataset(small_disk / "ws", specs), make_dataset(tmp_path / "clean", specs)
    dataset = ws.dataset("boat")
    before = _snapshot(dataset.path)
    filler = _fill(small_disk, leave)
    args = ["prepare", "--dataset", "boat", "--size", "608", "--workers", "2"]
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--workspace", str(ws.root), *args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert _one_sentence(proc.stderr) == (
        f"error: the disk holding {dataset.path} is full (no space left on device): "
        "free some space and run the same command again, finished files are kept")
    # nothing lost: the dataset as it was, plus whole prepared files only (no temp file, no partial one)
    assert _snapshot(dataset.path, skip="yolo") == before
    written = sorted(dataset.yolo.iterdir()) if dataset.yolo.is_dir() else []
    assert not [p.name for p in written if p.name.startswith(".")]
    for path in written:
        if path.suffix == ".jpg":
            assert decode_rgb(path).shape == (608, 608, 3)
        else:
            assert path.read_text().endswith("\n")
    assert not dataset.prepare_json.exists() and not dataset.lock_path.exists()
    filler.unlink()
    for root in (ws.root, clean.root):
        again = subprocess.run([sys.executable, "-m", "pipeline", "--workspace", str(root), *args], cwd=REPO,
                               env=ENV, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
    assert len(yolo_files(clean)) == 80
    assert yolo_files(ws) == yolo_files(clean)


# ---------------------------------------------------------------- a run id that is taken

def test_create_run_with_a_taken_run_id_is_one_sentence_and_keeps_the_run(tmp_path):
    make_split_dataset(tmp_path)
    run_dir = make_run(tmp_path)
    before = _snapshot(run_dir)
    with pytest.raises(UserError) as refused:
        make_run(tmp_path, size=256)
    assert str(refused.value) == "run r1 already exists: pick another --run-id"
    assert _snapshot(run_dir) == before


def test_train_cli_with_a_taken_run_id_exits_2_and_keeps_the_run(tmp_path, capsys, darknet_bin):
    make_split_dataset(tmp_path)
    Workspace(tmp_path).dataset("boat").update(prepare={"settings": {"size": 128, "letterbox": False}})
    run_dir = make_run(tmp_path)
    before = _snapshot(run_dir)
    argv = ["--workspace", str(tmp_path), "train", "--dataset", "boat", "--run-id", "r1", "--darknet", darknet_bin,
            "--pretrained", "none", "--model", "yolov3-tiny", "--size", "128", "--batch", "4", "--subdivisions", "1",
            "--max-batches", "200", "--preset", "custom", "--detach"]
    assert main("python -m darknet_runner", "", RUNNER, argv) == 2
    assert _one_sentence(capsys.readouterr().err) == "error: run r1 already exists: pick another --run-id"
    assert _snapshot(run_dir) == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r1"]


# ---------------------------------------------------------------- a name without letters

@pytest.mark.parametrize("name", ["船", "ボート", "!!!"])
def test_build_with_a_name_that_makes_no_folder_name_is_one_sentence(tmp_path, capsys, demo_root, name):
    ws = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(demo_root / "metadata", ws.metadata_dir, dirs_exist_ok=True)
    before = _snapshot(tmp_path)
    code = main("python -m pipeline", "", PIPELINE, ["--workspace", str(ws.root), "build", "--class", "Boat",
                                                       "--name", name])
    assert code == 2
    assert capsys.readouterr().err == f"error: cannot make a dataset folder name out of {name!r}: use letters or digits\n"
    assert _snapshot(tmp_path) == before


# ---------------------------------------------------------------- replacing a dataset that runs use

@pytest.fixture
def used(tmp_path, demo_root) -> Workspace:
    """Dataset "boat" (prepared, split) with runs r1 and r2 trained on it, and the demo's metadata."""
    make_split_dataset(tmp_path / "ws")
    make_run(tmp_path / "ws", run_id="r1")
    make_run(tmp_path / "ws", run_id="r2")
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(demo_root / "metadata", ws.metadata_dir, dirs_exist_ok=True)
    return ws


USED = ("dataset boat is used by runs r1, r2: replacing it would take away the images and splits they "
        "trained on; ")


def test_build_overwrite_of_a_dataset_runs_use_is_refused_naming_them(used, capsys):
    before = _snapshot(used.root)
    assert used.runs_using(used.dataset("boat")) == ["r1", "r2"]
    with pytest.raises(UserError) as refused:
        build.build_dataset(used, ["Boat"], name="boat", overwrite=True)   # what the Dataset page calls
    assert str(refused.value) == USED + "delete those runs first, or build under another --name"
    argv = ["--workspace", str(used.root), "build", "--class", "Boat", "--name", "boat", "--overwrite"]
    assert main("python -m pipeline", "", PIPELINE, argv) == 2
    assert _one_sentence(capsys.readouterr().err) == f"error: {refused.value}"
    assert _snapshot(used.root) == before
    for run in ("r1", "r2"):
        assert (used.run_dir(run) / "data").resolve() == used.dataset("boat").yolo.resolve()
        assert (used.run_dir(run) / "data").is_dir()   # not dangling


def test_build_overwrite_goes_through_once_no_run_uses_the_dataset(used):
    for run in ("r1", "r2"):
        shutil.rmtree(used.run_dir(run))
    manifest = build.build_dataset(used, ["Boat"], name="boat", overwrite=True)
    assert manifest["slug"] == "boat" and used.dataset("boat").images_path.is_file()


def test_pull_over_a_dataset_runs_use_is_refused_when_it_would_change_files(used, tmp_path):
    remote = tmp_path / "remote"
    sync.push(used, "boat", str(remote))
    assert sync.pull(used, "boat", str(remote))["downloaded"] == 1   # the same files: only dataset.json
    label = next((remote / "yolo").glob("*.txt"))
    label.write_text("0 0.5 0.5 0.1 0.1\n")                             # the remote copy was relabelled
    before = _snapshot(used.root)
    with pytest.raises(UserError) as refused:
        sync.pull(used, "boat", str(remote))
    assert str(refused.value) == USED + (f"the pull would replace files such as yolo/{label.name}, so delete those "
                                         "runs first, or pull under another --dataset name")
    assert _snapshot(used.root) == before
    pulled = sync.pull(used, "copy", str(remote))                       # under another name it goes through
    assert (used.dataset("copy").yolo / label.name).read_text() == "0 0.5 0.5 0.1 0.1\n"
    assert pulled["slug"] == "copy"


def test_runs_using_sees_only_runs_linking_into_the_dataset(used):
    make_split_dataset(used.root, slug="other")
    make_run(used.root, slug="other", run_id="r3")
    assert used.runs_using(used.dataset("other")) == ["r3"]
    assert used.runs_using(used.dataset("boat")) == ["r1", "r2"]
    assert used.runs_using(used.dataset("nothing")) == []
