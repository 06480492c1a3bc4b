"""Predict a run's split with darknet (``detector valid``) or OpenCV's DNN module, into one parquet.

Output: ``runs/<id>/predictions/<weights-stem>[-<split>][-opencv].parquet`` (the split is named
unless it is ``test``; the backend unless it is ``darknet``) with ``ImageID, ClassIndex,
Confidence, XMin, YMin, XMax, YMax`` (boxes ``xyxy_rel`` of the prepared image, float32). The
parquet's schema metadata ``studio`` holds how it was made (weights, backend, split, conf, nms).

- ``darknet``: ``detector valid`` from the run directory (every fork) with a temporary ``.data``
  whose ``valid=`` is the chosen split list; it writes ``comp4_det_test_<class>.txt`` with
  ``xyxy_px_1based`` corners (facts §9). Its NMS (0.45) and floor threshold (pjreddie 0.005,
  AlexeyAB/hank 0.001) are built in; ``conf`` filters afterwards.
- ``opencv``: ``cv2.dnn.readNetFromDarknet`` on the CPU with the preprocessing of the fork that
  trained: pjreddie's ``valid`` letterboxes (``LETTERBOX_DATA``, grey 0.5 padding), AlexeyAB and
  hank stretch unless the cfg says ``letter_box=1``; both resize with darknet's own bilinear
  ``resize_image`` (corner-aligned), reproduced here. Then darknet's thresholds (objectness and
  class score > ``conf``), per-class NMS at ``nms`` and the letterbox undone.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from darknet_runner import cfg as cfgmod
from darknet_runner import process, rundir
from darknet_runner.rundir import RunDir
from darknet_runner.binary import PJREDDIE, DarknetNotFound, describe, find_darknet
from pipeline.boxes import xyxy_px_1based_to_xyxy_rel
from pipeline.cli import UserError
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.atomic import atomic_write_bytes
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

BACKENDS = ("darknet", "opencv")
SPLITS = tuple(rundir.LISTS)
COLUMNS = ["ImageID", "ClassIndex", "Confidence", "XMin", "YMin", "XMax", "YMax"]  # boxes xyxy_rel
RESULT_PREFIX = "comp4_det_test_"
LETTERBOX_GREY = 0.5  # darknet's letterbox_image fills with 0.5
METADATA_KEY = b"studio"
_FATAL = re.compile(r"Couldn't open file: .*|Cannot load image .*|failed to load .*|Error message: .*")


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the stored pixels, from the file header (no decoding, no EXIF rotation)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# --- darknet backend ---------------------------------------------------------------------------

def _darknet_binary(run: dict):
    recorded = (run.get("darknet") or {}).get("path")
    try:
        return describe(recorded) if recorded and Path(recorded).is_file() else find_darknet()
    except DarknetNotFound as err:
        raise UserError(str(err)) from err


def _run_valid(run_dir: Path, weights: Path, split: str, total: int, progress: ProgressFn) -> Path:
    """``darknet detector valid`` into a fresh results folder; returns that folder."""
    info = _darknet_binary(rundir.RunDir(run_dir).load())
    token = secrets.token_hex(3)
    results = Path(rundir.PREDICTIONS_DIR) / f".valid-{token}"
    (run_dir / results).mkdir(parents=True)
    data = run_dir / f".predict-{token}.data"
    data.write_text(f"classes={len(RunDir(run_dir).class_names())}\nvalid={rundir.LISTS[split]}\nnames=obj.names\n"
                    f"results={results.as_posix()}\nbackup={rundir.BACKUP_DIR}\n", encoding="utf-8")
    argv = [info.path, "detector", "valid", data.name, rundir.CFG_NAME, os.path.relpath(weights, run_dir)]
    bad_list = run_dir / rundir.BAD_LIST
    bad_before = bad_list.stat().st_size if bad_list.is_file() else None
    try:
        code, output = _stream(argv, run_dir, total, progress)
    finally:
        data.unlink(missing_ok=True)
        _restore(bad_list, bad_before)
    fatal = _FATAL.search(output)
    if fatal or code != 0 or not any((run_dir / results).glob(f"{RESULT_PREFIX}*.txt")):
        shutil.rmtree(run_dir / results, ignore_errors=True)
        tail = output.strip().splitlines()
        reason = fatal.group(0) if fatal else (tail[-1] if tail else "no output")
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise RuntimeError(f"darknet detector valid failed ({how}): {reason}")
    if progress:
        progress(total, total, "darknet valid")
    return run_dir / results


def _restore(bad_list: Path, size: int | None) -> None:
    """Undo what ``detector valid`` appended to pjreddie's ``bad.list`` (removed if it made the file).

    Its loader writes it through ``system("echo … >> bad.list")``: a shell that can outlive a darknet
    crashing in another thread, but not the end of its output (it holds the pipe), so it is done here.
    """
    try:
        if size is None:
            bad_list.unlink(missing_ok=True)
        elif bad_list.stat().st_size > size:
            os.truncate(bad_list, size)
    except OSError as err:
        log.warning("could not restore %s: %s", bad_list, err)


def _stream(argv: list[str], cwd: Path, total: int, progress: ProgressFn) -> tuple[int, str]:
    """Run darknet, report its ``N`` progress lines (images done); return (exit code, all output).

    The exit code alone is not trusted (pjreddie exits 0 after ``Couldn't open file``)."""
    lines = []
    with subprocess.Popen(process.without_core_dumps(argv), cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        for line in proc.stdout:
            lines.append(line)
            if progress and line.strip().isdigit():
                progress(min(int(line), total), total, "darknet valid")
    return proc.returncode, "".join(lines)


def read_valid_results(results: Path, names: list[str], sizes: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """``comp4_det_test_<class>.txt`` files (``xyxy_px_1based``) → predictions (``xyxy_rel``).

    Args:
        results: the folder darknet wrote. names: class names in index order.
        sizes: ImageID → (width, height) of the image darknet read.
    """
    frames = []
    for index, name in enumerate(names):
        path = Path(results) / f"{RESULT_PREFIX}{name}.txt"
        if not path.is_file() or path.stat().st_size == 0:
            continue
        table = pd.read_csv(path, sep=" ", header=None, dtype={0: str},
                            names=["ImageID", "Confidence", "x1", "y1", "x2", "y2"])
        frames.append(table.assign(ClassIndex=index))
    if not frames:
        return _empty()
    table = pd.concat(frames, ignore_index=True)
    rel = np.zeros((len(table), 4))
    size = table["ImageID"].map(sizes)
    for (width, height), rows in table.groupby(size).groups.items():
        at = table.index.get_indexer(rows)
        rel[at] = xyxy_px_1based_to_xyxy_rel(table.loc[rows, ["x1", "y1", "x2", "y2"]].to_numpy(), width, height)
    return _frame(table["ImageID"], table["ClassIndex"], table["Confidence"], rel)


# --- opencv backend ----------------------------------------------------------------------------

def darknet_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """darknet's ``resize_image`` (float32 maths, corners aligned): (H, W, C) float → (height, width, C)."""
    src_h, src_w = image.shape[:2]
    x_scale = np.float32(src_w - 1) / np.float32(max(width - 1, 1))
    y_scale = np.float32(src_h - 1) / np.float32(max(height - 1, 1))
    xs = np.arange(width, dtype=np.float32) * x_scale
    ys = np.arange(height, dtype=np.float32) * y_scale
    ix, iy = xs.astype(np.int64), ys.astype(np.int64)
    dx, dy = (xs - ix)[None, :, None], (ys - iy)[:, None, None]
    part = image[:, ix] * (1 - dx) + image[:, np.minimum(ix + 1, src_w - 1)] * dx
    part[:, -1] = image[:, src_w - 1]  # darknet copies the last column
    below = part[np.minimum(iy + 1, src_h - 1)] * dy
    below[-1] = 0.0  # … and adds nothing below the last row (nor anywhere for a 1-pixel-high source)
    if src_h == 1:
        below[:] = 0.0
    return (part[iy] * (1 - dy) + below).astype(np.float32)


def letterbox_geometry(width: int, height: int, net_w: int, net_h: int) -> tuple[int, int, int, int]:
    """darknet's ``letterbox_image`` integer geometry: (new_w, new_h, left, top)."""
    if net_w / width < net_h / height:
        new_w, new_h = net_w, (height * net_w) // width
    else:
        new_w, new_h = (width * net_h) // height, net_h
    return new_w, new_h, (net_w - new_w) // 2, (net_h - new_h) // 2


def network_input(image_rgb: np.ndarray, net_w: int, net_h: int, letterbox: bool) -> np.ndarray:
    """An RGB uint8 image → darknet's network input (1, 3, net_h, net_w) float32 in [0, 1]."""
    image = image_rgb.astype(np.float32) / 255.0
    if letterbox:
        new_w, new_h, left, top = letterbox_geometry(image.shape[1], image.shape[0], net_w, net_h)
        canvas = np.full((net_h, net_w, 3), LETTERBOX_GREY, np.float32)
        canvas[top:top + new_h, left:left + new_w] = darknet_resize(image, new_w, new_h)
    else:
        canvas = darknet_resize(image, net_w, net_h)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


def undo_letterbox(cxcywh: np.ndarray, width: int, height: int, net_w: int, net_h: int) -> np.ndarray:
    """Network-relative ``cxcywh_rel`` → image-relative, as darknet's ``correct_yolo_boxes``."""
    new_w, new_h, _, _ = letterbox_geometry(width, height, net_w, net_h)
    b = np.asarray(cxcywh, np.float64).reshape(-1, 4).copy()
    b[:, 0] = (b[:, 0] - (net_w - new_w) / 2.0 / net_w) / (new_w / net_w)
    b[:, 1] = (b[:, 1] - (net_h - new_h) / 2.0 / net_h) / (new_h / net_h)
    b[:, 2] *= net_w / new_w
    b[:, 3] *= net_h / new_h
    return b


def darknet_corners(cxcywh_rel: np.ndarray, width: int, height: int) -> np.ndarray:
    """Image-relative ``cxcywh_rel`` → ``xyxy_px_1based`` clipped to [1, W] × [1, H], exactly as
    ``detector valid`` prints them (``print_detector_detections``), so both backends agree."""
    b = np.asarray(cxcywh_rel, np.float64).reshape(-1, 4) * np.array([width, height, width, height])
    corners = np.c_[b[:, :2] - b[:, 2:] / 2 + 1, b[:, :2] + b[:, 2:] / 2 + 1]
    corners[:, :2] = np.maximum(corners[:, :2], 1.0)
    corners[:, 2:] = np.minimum(corners[:, 2:], [width, height])
    return corners


def _uses_letterbox(run: dict, net: dict[str, str]) -> bool:
    """pjreddie's ``valid`` always letterboxes; AlexeyAB and hank only with ``letter_box=1``."""
    return run.get("fork") == PJREDDIE or net.get("letter_box", "0").strip() == "1"


def _decode(outputs: list[np.ndarray], conf: float, nms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLO rows (cx, cy, w, h, objectness, class scores) → kept (cxcywh, class, score) after NMS."""
    rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outputs])
    rows = rows[rows[:, 4] > conf]
    cand, cls = np.nonzero(rows[:, 5:] > conf)
    boxes, scores = rows[cand, :4].astype(np.float64), rows[cand, 5 + cls].astype(np.float64)
    keep = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        xywh = np.c_[boxes[idx, :2] - boxes[idx, 2:] / 2, boxes[idx, 2:]]
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores[idx].tolist(), float(conf), float(nms))
        keep.extend(idx[np.asarray(kept, np.int64).reshape(-1)])
    keep = np.asarray(sorted(keep), np.int64)
    return boxes[keep], cls[keep], scores[keep]


def _opencv_net(run_dir: Path, weights: Path, conf: float):
    """The network with every [yolo] ``thresh`` set to ``conf``: OpenCV zeroes class scores
    at or below it (default 0.2), where darknet's ``valid`` keeps everything above its floor."""
    sections = cfgmod.read_cfg((run_dir / rundir.CFG_NAME).read_text(encoding="utf-8"))
    for section in sections:
        if section.name in ("yolo", "region"):
            section.options["thresh"] = repr(float(conf))
    cfg_path = RunDir(run_dir).predictions / f".opencv-{secrets.token_hex(3)}.cfg"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(cfgmod.write_cfg(sections), encoding="utf-8")
    try:
        net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights))
    except cv2.error as err:
        raise UserError(f"OpenCV cannot read {Path(weights).name} with the run's cfg: {err.msg.strip()}") from err
    finally:
        cfg_path.unlink(missing_ok=True)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def _run_opencv(run_dir: Path, weights: Path, images, conf: float, nms: float, progress: ProgressFn) -> pd.DataFrame:
    run = rundir.RunDir(run_dir).load()
    net_opts = cfgmod.net_options(cfgmod.read_cfg((run_dir / rundir.CFG_NAME).read_text(encoding="utf-8")))
    net_w, net_h = int(net_opts["width"]), int(net_opts["height"])
    letterbox = _uses_letterbox(run, net_opts)
    net = _opencv_net(run_dir, weights, conf)
    layers = net.getUnconnectedOutLayersNames()
    frames = []
    for done, (image_id, path) in enumerate(images, start=1):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise UserError(f"cannot read the image {path}")
        height, width = bgr.shape[:2]
        net.setInput(network_input(bgr[:, :, ::-1], net_w, net_h, letterbox))
        boxes, cls, scores = _decode(list(net.forward(layers)), conf, nms)
        if letterbox:
            boxes = undo_letterbox(boxes, width, height, net_w, net_h)
        rel = xyxy_px_1based_to_xyxy_rel(darknet_corners(boxes, width, height), width, height)
        frames.append(_frame(pd.Series([image_id] * len(cls), dtype=object), cls, scores, rel))
        if progress:
            progress(done, len(images), image_id)
    return pd.concat(frames, ignore_index=True) if frames else _empty()


# --- the step ----------------------------------------------------------------------------------

def _frame(ids, classes, scores, xyxy_rel: np.ndarray) -> pd.DataFrame:
    """Predictions table; corners clipped to [0, 1], and a box darknet placed beyond an edge (its
    clipped corners cross, e.g. xmin > xmax) kept as a zero-width/height box on that edge."""
    b = np.clip(np.asarray(xyxy_rel, np.float64).reshape(-1, 4), 0.0, 1.0)
    b[:, :2] = np.minimum(b[:, :2], b[:, 2:])
    return pd.DataFrame({
        "ImageID": pd.Series(ids, dtype=object).astype(str).to_numpy(),
        "ClassIndex": np.asarray(classes, np.int16), "Confidence": np.asarray(scores, np.float32),
        "XMin": b[:, 0].astype(np.float32), "YMin": b[:, 1].astype(np.float32),
        "XMax": b[:, 2].astype(np.float32), "YMax": b[:, 3].astype(np.float32),
    })


def _empty() -> pd.DataFrame:
    return _frame([], [], [], np.zeros((0, 4)))


def _write(path: Path, table: pd.DataFrame, about: dict) -> None:
    arrow = pa.Table.from_pandas(table[COLUMNS], preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), METADATA_KEY: json.dumps(about).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_predictions_info(path: Path) -> dict:
    """How a predictions parquet was made (its ``studio`` metadata); {} when absent."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}


def predict(run_dir: str | os.PathLike, *, weights: str | os.PathLike = "best", backend: str = "darknet",
            split: str = "test", conf: float = 0.005, nms: float = 0.45, progress: ProgressFn = None) -> Path:
    """Detect every image of a run's split list and store the detections (``xyxy_rel``).

    Args:
        run_dir: the run folder. weights: best | last | final | a path (see :meth:`RunDir.resolve_weights`).
        backend: "darknet" or "opencv". split: "test", "valid" or "train".
        conf: keep detections with confidence >= conf (darknet's own floor applies too).
        nms: NMS IoU of the opencv backend (darknet's valid uses its built-in 0.45).
        progress: ``progress(done, total, message)``.

    Returns:
        The predictions parquet (see the module docstring).

    Raises:
        UserError: bad choice, missing weights, list or image; RuntimeError: darknet failed.
    """
    run = RunDir(Path(run_dir))
    run_dir = run.path
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    manifest = run.load()
    weights_path = run.resolve_weights(weights)
    images = run.split_images(split)
    if backend == "darknet":
        results = _run_valid(run_dir, weights_path, split, len(images), progress)
        try:
            sizes = {image_id: _image_size(path) for image_id, path in images}
            table = read_valid_results(results, run.class_names(), sizes)
        finally:
            shutil.rmtree(results, ignore_errors=True)
        table = table[table["Confidence"] >= conf].reset_index(drop=True)
    else:
        table = _run_opencv(run_dir, weights_path, images, conf, nms, progress)
    out = run.predictions_path(weights_path, backend, split)
    about = {"weights": str(weights_path), "backend": backend, "split": split, "conf": conf, "nms": nms,
             "images": len(images), "fork": manifest.get("fork")}
    _write(out, table, about)
    log.info("%d detections on %d %s images written to %s", len(table), len(images), split, out)
    return out


def register(subparsers) -> None:
    """``predict RUN [--weights best|last|final|PATH] [--backend darknet|opencv] [--split test]``."""
    parser = subparsers.add_parser("predict", help="detect a run's test (or valid) images into a parquet")
    parser.add_argument("run", help="run id or run folder")
    parser.add_argument("--weights", default="best", help="best, last, final or a .weights path (default best)")
    parser.add_argument("--backend", choices=BACKENDS, default="darknet")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--conf", type=float, default=0.005, help="lowest confidence kept (default 0.005)")
    parser.add_argument("--nms", type=float, default=0.45, help="NMS IoU of the opencv backend (default 0.45)")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    run_dir = rundir.open_run(ws, args.run).path
    path = predict(run_dir, weights=args.weights, backend=args.backend, split=args.split, conf=args.conf,
                   nms=args.nms, progress=tqdm_progress("predict", unit="img"))
    print(path)
    return 0
