"""Hand-built prepared and split datasets, and runs created on them, for the runner tests."""
from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np

from darknet_runner import rundir
from darknet_runner.binary import PJREDDIE, DarknetInfo
from pipeline.atomic import write_json
from pipeline.workspace import Workspace

PJ_INFO = DarknetInfo("/usr/bin/darknet", PJREDDIE, "", False, False, False, False)


def make_split_dataset(root: Path, slug: str = "boat", *, train: int = 8, valid: int = 4, test: int = 0,
                       classes: tuple[str, ...] = ("Boat",), seed: int = 0, size: tuple[int, int] = (160, 120)) -> Path:
    """A tiny prepared + split dataset: white rectangles on blue, labels ``class cx cy w h`` next to them.

    Stands in for pipeline.yolo.prepare/split so the runner tests stay fast and independent.
    """
    rng = random.Random(seed)
    ws = Workspace(Path(root)).ensure()
    dataset = ws.dataset_dir(slug)
    (dataset / "yolo").mkdir(parents=True, exist_ok=True)
    (dataset / "splits").mkdir(exist_ok=True)
    width, height = size
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(train + valid + test)]
    for image_id in ids:
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[:] = (200, 80, 20)  # BGR blue
        lines = []
        for _ in range(rng.randint(1, 2)):
            w, h = rng.randint(20, width // 2), rng.randint(20, height // 2)
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            pixels[y:y + h, x:x + w] = 255
            cls = rng.randrange(len(classes))
            lines.append(f"{cls} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} {h / height:.6f}")
        cv2.imwrite(str(dataset / "yolo" / f"{image_id}.jpg"), pixels)
        (dataset / "yolo" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
    parts = {"train": ids[:train], "valid": ids[train:train + valid], "test": ids[train + valid:]}
    for split, part in parts.items():
        if part:
            (dataset / "splits" / f"{split}.txt").write_text("".join(f"yolo/{i}.jpg\n" for i in part))
    write_json(dataset / "splits" / "split.json", {"seed": seed, "ratios": [0.8, 0.1, 0.1],
                                                   "counts": {k: len(v) for k, v in parts.items()}})
    write_json(dataset / "dataset.json", {
        "name": slug, "slug": slug, "created": "2026-11-24T00:00:00Z",
        "classes": [{"index": i, "mid": f"/m/{i:04x}", "name": name, "members": [f"/m/{i:04x}"]}
                    for i, name in enumerate(classes)]})
    return dataset


def make_run(root: Path, slug: str = "boat", **overrides) -> Path:
    """:func:`darknet_runner.rundir.create_run` with small settings for pjreddie's darknet, run id ``r1``."""
    options = dict(model="yolov3-tiny", size=128, batch=4, subdivisions=1, max_batches=40, pretrained=None,
                   darknet=PJ_INFO, random=0, run_id="r1")
    options.update(overrides)
    return rundir.create_run(Workspace(root), slug, **options)


def wait_state(run_dir: Path, *states: str, timeout: float = 20, poll: float = 0.05):
    """Poll ``jobs.status`` until the run reaches one of ``states``; on timeout stop it and fail with the log tail."""
    import time

    from darknet_runner import jobs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = jobs.status(run_dir)
        if current.state in states:
            return current
        time.sleep(poll)
    jobs.stop(run_dir, timeout=3)
    log = run_dir / "train_log.txt"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise AssertionError(f"run never reached {states}: {jobs.status(run_dir)}; log tail: {tail}")


def write_weights(path: Path, seen: int = 0) -> Path:
    """A weights file of exactly the size the run's model.cfg implies (header + zero weights, sparse).

    ``path`` is inside the run's ``backup/``; its header says ``seen`` images were trained on.
    """
    import struct

    floats = rundir.RunDir(Path(path).parent.parent).weight_floats()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<3iQ", 0, 2, 0, seen))
        handle.truncate(20 + 4 * (floats or 0))
    return Path(path)
