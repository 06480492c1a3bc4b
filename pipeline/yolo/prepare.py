"""Prepare: resize every original to the network size and write its YOLO label beside it.

``datasets/<slug>/originals/<ImageID>.jpg`` → ``datasets/<slug>/yolo/<ImageID>.jpg`` + ``.txt``.

- Pixels are decoded as stored (no EXIF orientation, pipeline/imageio.py), stretched to
  ``size`` × ``size`` as the seed notebooks did, or letterboxed with the boxes moved to match.
  A JPEG whose longest side is at least twice ``size`` is decoded at 1/2, 1/4 or 1/8 scale inside
  libjpeg (the speed of this step); a stretched 1024×768 → 416×416 thus comes from 512×384, its
  short side enlarged by 8 % (a letterbox never enlarges). Relative geometry is exact either way.
- Labels are ``class cx cy w h`` (``cxcywh_rel`` of the written image) from Open Images'
  ``xyxy_rel`` through pipeline/boxes.py, clipped to [0, 1]; boxes under one network pixel wide
  or high are dropped and counted. A negative image gets an empty label file.
- Every file is written to a temp name and renamed, so a final name never holds a partial file.
- A missing, truncated or corrupt original is reported in ``failed`` and nothing is written for
  it; an output of an earlier run stays on disk but :func:`prepared_ids` (what split lists) skips it.
- Resume: each written JPEG carries a COM marker with the settings hash, the paste geometry and
  the original's byte size. An output newer than its original whose marker matches is kept; its
  label is recomputed from the geometry (cheap) and rewritten only if it differs (boxes changed).
  The key lives inside the file it describes, so a SIGKILL can never leave key and file disagreeing.
- Work is chunked onto a ``concurrent.futures.Executor`` (a process pool by default; a Dask
  executor works too). Each image's bytes depend only on its inputs, never on the worker count.
  The pool's workers end with the process that made them (``kill -9`` of prepare leaves nothing).
- One writer per dataset (``DatasetDir.lock``): a second prepare, split, build or fetch of the same
  dataset is refused with the first one's pid; a full disk is one sentence, prepared files kept.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import select
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd

from pipeline.boxes import clip_xyxy_rel, xyxy_rel_to_cxcywh_rel, xyxy_rel_to_letterbox_xyxy_rel
from pipeline import locks, numbers
from pipeline.cli import UserError
from pipeline.images.imageio import ImageDecodeError, decode_bgr, image_size
from pipeline.progress import ProgressFn
from pipeline.transfer import disk_full_error
from pipeline.atomic import read_json, write_json
from pipeline.dataset import DatasetDir
from pipeline.yolo.labels import format_labels
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

PREPARE_VERSION = 1          # bump when the pixels or labels a setting produces change
DEFAULT_SIZE = 416
DEFAULT_QUALITY = 90
LETTERBOX_FILL = (127, 127, 127)  # darknet's own letterbox pads with 0.5 grey
MIN_BOX_PX = 1.0             # boxes narrower or lower than this at network size are dropped
MARKER_PREFIX = b"studio-prepare"
MAX_CHUNK = 64               # images per task: big enough to make IPC cheap, small enough to balance
BOX_COLUMNS = ["ClassIndex", "XMin", "YMin", "XMax", "YMax"]  # → rows of (class, xyxy_rel)
PR_SET_PDEATHSIG = 1         # <linux/prctl.h>
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Settings:
    """What decides the bytes of a prepared image (its hash is the resume key)."""

    size: int = DEFAULT_SIZE
    letterbox: bool = False
    quality: int = DEFAULT_QUALITY

    def digest(self) -> str:
        return _settings_digest(self)


@functools.lru_cache(maxsize=16)
def _settings_digest(settings: Settings) -> str:
    """Computed once per settings: it is compared for every image."""
    doc = dict(asdict(settings), version=PREPARE_VERSION, decode="reduced", interpolation="area")
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Geometry:
    """Where the resized image sits on the square canvas: content size and offset, in pixels."""

    width: int
    height: int
    left: int
    top: int


@dataclass
class ImageResult:
    image_id: str
    status: str              # "written" | "kept" | "relabelled" | "failed"
    reason: str = ""
    boxes: int = 0
    dropped: int = 0
    clipped: int = 0


def prepare_dataset(
    ws: Workspace,
    slug: str,
    *,
    size: int = DEFAULT_SIZE,
    letterbox: bool = False,
    quality: int = DEFAULT_QUALITY,
    workers: int | None = None,
    executor: Executor | None = None,
    progress: ProgressFn = None,
    wait: float = 0,
) -> dict:
    """Resize every original of a dataset and write its YOLO label; resumable.

    Args:
        ws: the workspace.
        slug: the dataset folder name under ``datasets/``.
        size: network width and height in pixels.
        letterbox: keep the aspect ratio and pad (boxes moved accordingly) instead of stretching.
        quality: JPEG quality of the written images.
        workers: processes of the default pool (default: all cores); 1 runs in this process.
        executor: any ``concurrent.futures.Executor`` to use instead (not shut down here).
        progress: ``progress(done, total, message)``.
        wait: seconds to wait while another process writes the dataset (default: refuse at once).

    Returns:
        The summary also written to ``prepare.json`` and to dataset.json's ``"prepare"`` key.

    Raises:
        UserError: the dataset does not exist, the settings are out of range, another process is
            writing the dataset (:class:`pipeline.locks.Busy`), or the disk is full.
    """
    settings = _check_settings(size, letterbox, quality)
    if workers is not None:
        workers = numbers.whole(workers, "--workers", 1, numbers.WORKERS_MAX, " (leave it out to use every core)")
    dataset = ws.dataset(slug)
    _check_built(dataset)
    try:
        with dataset.lock("prepare", wait=wait):
            tasks = _tasks(dataset)
            _remove_orphaned_temp_files(dataset.yolo)
            started = time.time()
            results = _run(tasks, settings, dataset.path, workers, executor, progress)
            summary = _summary(results, settings, time.time() - started)
            write_json(dataset.prepare_json, summary)
            dataset.update(prepare=summary)  # re-reads: keeps others' keys fresh
    except OSError as err:  # files are written to temp names and renamed: what is there is whole
        if err.errno in DISK_FULL:
            raise disk_full_error(dataset.path) from err
        raise
    return summary


def prepared_ids(ws: Workspace, slug: str) -> list[str]:
    """ImageIDs ready for darknet, sorted: ``yolo/<id>.jpg`` and ``.txt`` exist, and the last
    prepare did not fail on the image (a failed image keeps an older output, unlisted)."""
    dataset = ws.dataset(slug)
    yolo = dataset.yolo
    if not yolo.is_dir():
        return []
    summary = read_json(dataset.prepare_json, {}) or {}
    failed = {f["ImageID"] for f in summary.get("failed", [])}
    labels = {p.stem for p in yolo.glob("*.txt")}
    return sorted(p.stem for p in yolo.glob("*.jpg") if p.stem in labels and p.stem not in failed)


def _check_settings(size: int, letterbox: bool, quality: int) -> Settings:
    why = " (a multiple of 32 between 32 and 4096: darknet needs that)"
    size = numbers.whole(size, "--size", 32, 4096, why)
    if size % 32:
        raise UserError(f"network size {size} must be a multiple of 32 between 32 and 4096 (darknet needs that)")
    quality = numbers.whole(quality, "--quality", 1, 100, " (JPEG quality)")
    return Settings(size=size, letterbox=bool(letterbox), quality=quality)


def _check_built(dataset: DatasetDir) -> None:
    dataset.require()
    for path in (dataset.images_path, dataset.boxes_path):
        if not path.is_file():
            raise UserError(f"dataset {dataset.slug!r} has no {path.name}: build it again")


def _tasks(dataset: DatasetDir) -> list[tuple[str, np.ndarray]]:
    """One ``(ImageID, boxes)`` per image, sorted by ImageID; boxes are rows (class, xyxy_rel)."""
    images = pd.read_parquet(dataset.images_path, columns=["ImageID"])
    boxes = pd.read_parquet(dataset.boxes_path, columns=["ImageID", *BOX_COLUMNS])
    # One vectorised pass (a pandas groupby costs ~0.5 ms per image); a stable sort keeps each
    # image's boxes in file order, so label lines come out in a fixed order.
    box_ids = boxes["ImageID"].astype(str).to_numpy()
    order = np.argsort(box_ids, kind="stable")
    values = boxes[BOX_COLUMNS].to_numpy(dtype=np.float64)[order]
    unique, starts = np.unique(box_ids[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    by_image = {image_id: values[start:end] for image_id, start, end in zip(unique, starts, ends)}
    empty = np.zeros((0, 5), dtype=np.float64)
    ids = sorted(set(images["ImageID"].astype(str)))
    return [(image_id, by_image.get(image_id, empty)) for image_id in ids]


def _run(tasks, settings: Settings, folder: Path, workers, executor, progress: ProgressFn) -> list[ImageResult]:
    total = len(tasks)
    if progress:
        progress(0, total, "preparing")
    workers = workers or os.cpu_count() or 1
    if executor is None and workers == 1:
        chunks = [tasks[i:i + MAX_CHUNK] for i in range(0, total, MAX_CHUNK)]
        results = []
        for chunk in chunks:
            results.extend(prepare_chunk(chunk, settings, str(folder)))
            if progress:
                progress(len(results), total, f"{len(results)}/{total} images")
        return results
    if executor is not None:
        return _run_on(executor, tasks, settings, folder, workers, progress)
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_end_with,
                             initargs=(os.getpid(),)) as pool:
        return _run_on(pool, tasks, settings, folder, workers, progress)


def _end_with(parent: int) -> None:
    """Pool initializer: this worker ends when ``parent`` (the process that made the pool) ends.

    A worker waits on its task queue, whose write end it holds itself, so it never notices its
    parent die: without this, ``kill -9`` of prepare leaves the workers behind (and with them the
    forkserver and resource tracker, which wait for the workers). On Linux PR_SET_PDEATHSIG kills a
    worker forked straight from ``parent``; a thread waiting on ``parent`` (a pidfd, else polling)
    covers forkserver workers, whose parent is the forkserver, and other systems.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_exit_when_gone, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_when_gone(pid: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here (old kernel, seccomp): poll
        while locks.alive(pid):
            time.sleep(0.25)
        os._exit(1)
    select.select([pidfd], [], [])  # readable once the process has exited
    os._exit(1)



def _pool_context():
    """Fork (fast start) from a single-threaded parent such as the CLI; forkserver otherwise.

    Forking a threaded parent (the dashboard) can copy a lock some other thread holds and
    deadlock the child; a forkserver is started once, single-threaded, with cv2 preloaded.
    """
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipeline.yolo.prepare"])
    return context


def _run_on(pool: Executor, tasks, settings: Settings, folder: Path, workers: int, progress) -> list[ImageResult]:
    total = len(tasks)
    chunk_size = max(1, min(MAX_CHUNK, math.ceil(total / (workers * 4))))
    futures = [
        pool.submit(prepare_chunk, tasks[i:i + chunk_size], settings, str(folder))
        for i in range(0, total, chunk_size)
    ]
    results: list[ImageResult] = []
    try:
        for future in as_completed(futures):
            results.extend(future.result())
            if progress:
                progress(len(results), total, f"{len(results)}/{total} images")
    except BaseException:  # a full disk, Ctrl-C: do not start the chunks still queued
        for future in futures:
            future.cancel()
        raise
    return sorted(results, key=lambda r: r.image_id)


def prepare_chunk(chunk: list[tuple[str, np.ndarray]], settings: Settings, folder: str) -> list[ImageResult]:
    """Prepare a list of ``(ImageID, boxes)``; runs inside a worker process."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one image per core: OpenCV's own threads would only contend
    try:
        return [_prepare_one(image_id, boxes, settings, DatasetDir(Path(folder))) for image_id, boxes in chunk]
    finally:
        cv2.setNumThreads(threads)  # the caller's process (in-process runs) gets its setting back


def _prepare_one(image_id: str, boxes: np.ndarray, settings: Settings, dataset: DatasetDir) -> ImageResult:
    source = dataset.original(image_id)
    out_jpg, out_txt = dataset.image(image_id), dataset.label(image_id)
    status, geometry = "kept", _kept_geometry(out_jpg, source, settings)
    if geometry is None:
        if not source.is_file():
            return ImageResult(image_id, "failed", "no original image (fetch the images first)")
        try:
            jpeg, geometry = render(source, settings)
        except (ImageDecodeError, cv2.error) as err:
            return ImageResult(image_id, "failed", str(err).strip())
        _atomic_write(out_jpg, jpeg)
        status = "written"
    text, stats = label_text(boxes, geometry, settings.size)
    if status == "written" or _read_or_none(out_txt) != text:
        _atomic_write(out_txt, text.encode("ascii"))
        status = "written" if status == "written" else "relabelled"
    return ImageResult(image_id, status, **stats)


def render(source: Path, settings: Settings) -> tuple[bytes, Geometry]:
    """Decode ``source`` as stored, resize (stretch or letterbox) and encode it as a marked JPEG."""
    bgr = decode_bgr(source, reduce_to=settings.size)
    geometry = canvas_geometry(source, settings)
    interpolation = cv2.INTER_AREA if geometry.width < bgr.shape[1] else cv2.INTER_LINEAR
    content = cv2.resize(bgr, (geometry.width, geometry.height), interpolation=interpolation)
    if settings.letterbox:
        canvas = np.empty((settings.size, settings.size, 3), np.uint8)
        canvas[:] = LETTERBOX_FILL
        canvas[geometry.top:geometry.top + geometry.height, geometry.left:geometry.left + geometry.width] = content
        content = canvas
    ok, encoded = cv2.imencode(".jpg", content, [cv2.IMWRITE_JPEG_QUALITY, settings.quality])
    if not ok:
        raise ImageDecodeError(f"image {source.name} could not be encoded as JPEG")
    marker = Marker(settings.digest(), geometry, source.stat().st_size)
    return _with_marker(encoded.tobytes(), marker), geometry


def canvas_geometry(source: Path, settings: Settings) -> Geometry:
    """Stretch fills the canvas; letterbox scales the stored size's longest side to the canvas.

    The stored size (not the possibly reduced decode) fixes the geometry, so it is exact.
    """
    size = settings.size
    if not settings.letterbox:
        return Geometry(size, size, 0, 0)
    width, height = image_size(source)
    scale = size / max(width, height)
    content_w, content_h = max(1, round(width * scale)), max(1, round(height * scale))
    return Geometry(content_w, content_h, (size - content_w) // 2, (size - content_h) // 2)


def label_text(boxes: np.ndarray, geometry: Geometry, size: int) -> tuple[str, dict]:
    """YOLO label lines for rows (class, xyxy_rel of the original) placed with ``geometry``.

    Returns:
        The file text (empty for no boxes) and counts ``boxes`` (written), ``dropped``
        (under ``MIN_BOX_PX`` at network size) and ``clipped`` (a corner outside [0, 1]).
    """
    classes = boxes[:, 0].astype(np.int64)
    raw = boxes[:, 1:5]
    clipped = clip_xyxy_rel(raw)
    canvas = xyxy_rel_to_letterbox_xyxy_rel(
        clipped, (geometry.width, geometry.height), (geometry.left, geometry.top), (size, size))
    cxcywh = xyxy_rel_to_cxcywh_rel(canvas)
    keep = (cxcywh[:, 2] * size >= MIN_BOX_PX) & (cxcywh[:, 3] * size >= MIN_BOX_PX)
    text = format_labels(classes[keep], cxcywh[keep])
    stats = {
        "boxes": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "clipped": int(np.any(clipped != raw, axis=1).sum()),
    }
    return text, stats


class Marker(NamedTuple):
    """What a prepared JPEG was made with (its COM segment)."""

    digest: str          # Settings.digest()
    geometry: Geometry   # where the picture sits on the canvas
    source_bytes: int    # size of the original it came from


def _with_marker(jpeg: bytes, marker: Marker) -> bytes:
    """Insert a COM segment right after SOI holding the settings hash, geometry and source size."""
    g = marker.geometry
    payload = b"%s h=%s g=%d,%d,%d,%d s=%d" % (
        MARKER_PREFIX, marker.digest.encode(), g.width, g.height, g.left, g.top, marker.source_bytes)
    segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def read_marker(path: Path) -> Marker | None:
    """The :class:`Marker` of a prepared JPEG; None if unmarked or unreadable."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(160)
    except OSError:
        return None
    if head[:4] != b"\xff\xd8\xff\xfe":
        return None
    fields = dict(field.split(b"=", 1) for field in head[6:4 + int.from_bytes(head[4:6], "big")].split(b" ")[1:]
                  if b"=" in field)
    if not head[6:].startswith(MARKER_PREFIX + b" ") or not {b"h", b"g", b"s"} <= set(fields):
        return None
    width, height, left, top = (int(v) for v in fields[b"g"].split(b","))
    return Marker(fields[b"h"].decode(), Geometry(width, height, left, top), int(fields[b"s"]))


def _kept_geometry(out_jpg: Path, source: Path, settings: Settings) -> Geometry | None:
    """The geometry of an up-to-date output, else None.

    Up to date: same settings, and newer than an original of the recorded size. An original
    deleted after preparing (to save disk) keeps its output: it cannot be rebuilt anyway.
    """
    try:
        out_mtime = out_jpg.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    marker = read_marker(out_jpg)
    if marker is None or marker.digest != settings.digest():
        return None
    try:
        source_stat = source.stat()
    except FileNotFoundError:
        return marker.geometry
    if out_mtime < source_stat.st_mtime_ns or marker.source_bytes != source_stat.st_size:
        return None
    return marker.geometry


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file + rename, without fsync.

    Why not ``workspace.atomic_write_bytes``: its fsync per file doubles the step's time on
    thousands of small files. A kill can still never expose a partial file (rename is atomic);
    after a power loss a final name may hold an empty file, which the resume check rebuilds
    (no COM marker, or a label that differs from the recomputed one).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_orphaned_temp_files(yolo: Path) -> None:
    """Temp files a killed run left behind (never under a final name, but clutter)."""
    for tmp in yolo.glob(".*.tmp") if yolo.is_dir() else []:
        tmp.unlink(missing_ok=True)


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii")
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _summary(results: list[ImageResult], settings: Settings, seconds: float) -> dict:
    counts = {status: sum(r.status == status for r in results) for status in ("written", "kept", "relabelled")}
    done = [r for r in results if r.status != "failed"]
    return {
        "settings": asdict(settings),
        "settings_hash": settings.digest(),
        "images": len(results),
        "prepared": len(done),
        **counts,
        "empty_labels": sum(r.boxes == 0 for r in done),
        "boxes": sum(r.boxes for r in done),
        "dropped_degenerate": sum(r.dropped for r in done),
        "clipped": sum(r.clipped for r in done),
        "failed": [{"ImageID": r.image_id, "reason": r.reason} for r in results if r.status == "failed"],
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def register(subparsers) -> None:
    """``prepare --dataset boat [--size 416] [--letterbox] [--quality 90] [--workers N]``."""
    parser = subparsers.add_parser("prepare", help="resize images and write YOLO labels side by side")
    parser.add_argument("--dataset", required=True, help="dataset slug (folder under datasets/)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="network width = height (default 416)")
    parser.add_argument("--letterbox", action="store_true", help="keep aspect ratio and pad instead of stretching")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality (default 90)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait this long while another process writes the dataset (default: refuse at once)")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    from pipeline.progress import tqdm_progress

    ws = Workspace.open(getattr(args, "workspace", None))
    summary = prepare_dataset(ws, args.dataset, size=args.size, letterbox=args.letterbox, quality=args.quality,
                              workers=args.workers, progress=tqdm_progress("prepare", unit="img"),
                              wait=args.wait)
    print(f"{summary['prepared']} of {summary['images']} images prepared "
          f"({summary['written']} written, {summary['kept']} up to date, {summary['relabelled']} relabelled); "
          f"{summary['boxes']} boxes, {summary['empty_labels']} empty label files, "
          f"{summary['dropped_degenerate']} degenerate boxes dropped, {summary['clipped']} clipped")
    for failure in summary["failed"]:
        print(f"failed {failure['ImageID']}: {failure['reason']}")
    return 0
