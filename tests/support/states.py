"""On-disk states the dashboard must read truthfully: a run that is running, weights saved, a
scored run with chosen predictions (near misses, nothing found), a zero-shot baseline's metrics."""
from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_json


def write_weights_header(path: Path, seen: int) -> Path:
    """A darknet weights file holding only its header (version 0.2.0, ``seen`` images): enough for
    ``RunDir.latest_weights`` to read the iteration it was saved at."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<3iQ", 0, 2, 0, seen))
    return path


def pjreddie_lines(first: int, last: int) -> str:
    """Training lines ``i: loss, avg avg, rate rate, seconds, images`` for iterations first..last."""
    return "".join(f"{i}: 2.000000, 2.100000 avg, 0.001000 rate, 0.500000 seconds, {i * 4} images\n"
                   for i in range(first, last + 1))


@contextlib.contextmanager
def running_run(run_dir: Path, iteration: int):
    """Make ``run_dir`` look like a live training at ``iteration``: a real process (its own group)
    whose pid is the run's ``pid``, and a log up to that iteration. The process is ended on exit."""
    run_dir = Path(run_dir)
    (run_dir / "train_log.txt").write_text(pjreddie_lines(1, iteration))
    process = subprocess.Popen(["sleep", "600"], start_new_session=True, stdin=subprocess.DEVNULL)
    (run_dir / "pid").write_text(f"{process.pid}\n")
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        (run_dir / "pid").unlink(missing_ok=True)


def write_predictions(path: Path, rows: list[tuple]) -> Path:
    """A predictions parquet (``ImageID, ClassIndex, Confidence, XMin, YMin, XMax, YMax``)."""
    from darknet_runner.predict import COLUMNS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=COLUMNS).astype({"ImageID": str, "ClassIndex": "int64", "Confidence": "float64"})
    frame.to_parquet(path, index=False)
    return path


def write_baseline_metrics(ws, slug: str, map50: float, images: int) -> Path:
    """The metrics.json a scored zero-shot baseline leaves (no weights download needed)."""
    from darknet_runner.baseline import baseline_run_id
    from darknet_runner.rundir import RunDir

    run = RunDir(ws.run_dir(baseline_run_id(slug)))
    run.path.mkdir(parents=True, exist_ok=True)
    run.save({"id": run.id, "kind": "baseline", "dataset": {"slug": slug}, "batch": 1, "subdivisions": 1})
    write_json(run.metrics, {"method": "voc", "iou": 0.5, "map50": map50, "classes": [], "images": images})
    return run.metrics


def scored_run(ws, slug: str = "boat", run_id: str = "r1"):
    """A run on ``slug`` (split and prepared) with complete final weights and darknet predictions
    chosen against the test labels: the first test image with a box gets an exact hit (TP 0.90) and
    a near miss (FP 0.60, IoU 1/3 with the same box); nothing else is predicted.

    Returns:
        (run folder, predictions path, ImageID of the image with the hit and the near miss).
    """
    from darknet_runner.rundir import RunDir
    from pipeline.evaluation.groundtruth import load_ground_truth
    from tests.support.runs import make_run, write_weights

    run = RunDir(make_run(ws.root, slug, run_id=run_id))
    weights = write_weights(run.backup / "model_final.weights", seen=40 * 4)
    gt, _ids, _missing = load_ground_truth(run.split_images("test"), run.dataset(ws))
    box = gt.iloc[0]
    width = box.XMax - box.XMin
    near = (box.XMin + width / 2, box.YMin, box.XMax + width / 2, box.YMax)  # half overlap: IoU 1/3
    path = write_predictions(run.predictions_path(weights, "darknet"), [
        (box.ImageID, int(box.ClassIndex), 0.90, box.XMin, box.YMin, box.XMax, box.YMax),
        (box.ImageID, int(box.ClassIndex), 0.60, *near),
    ])
    return run.path, path, str(box.ImageID)


def ready_workspace(root: Path, demo_root: Path | None = None) -> Path:
    """A demo workspace at ``root`` with the Boat dataset built, fetched from the demo folder,
    prepared at 128 px and split (``demo_root``: an existing demo workspace to copy; else generated)."""
    import shutil

    from pipeline.demo import generate as demo
    from pipeline.images import fetch
    from pipeline.openimages import build
    from pipeline.workspace import Workspace
    from pipeline.yolo import prepare, split

    root = Path(root)
    if demo_root is not None:
        shutil.copytree(demo_root, root, symlinks=True)
    else:
        demo.generate(root, images=demo.DEFAULT_IMAGES, seed=0)
    ws = Workspace(root)
    build.build_dataset(ws, ["Boat"])
    fetch.fetch_images(ws, "boat", str(root / "demo" / "originals"), workers=4)
    prepare.prepare_dataset(ws, "boat", size=128, workers=1)
    split.split_dataset(ws, "boat")
    return root
