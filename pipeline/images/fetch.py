"""``fetch-images``: bring a dataset's source pixels into ``datasets/<slug>/originals/``.

Bounded concurrency (threads: the work is I/O), retries with exponential backoff on 5xx and
timeouts, resume (a final file whose size and MD5 match is skipped; a ``.part`` continues),
and verification before the rename: OriginalMD5 where the bytes are the Flickr original,
"decodes completely" otherwise (the CVDF copies and thumbnails differ from the originals).
One image's failure is a row in the report, never the end of the batch.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipeline import numbers
from pipeline.cli import UserError
from pipeline.images.imageio import ImageDecodeError, decode_rgb
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.images.stores import ImageRef, ImageStore, Located, open_store
from pipeline.transfer import (BACKOFF_S, PART_SUFFIX, DiskFullError, FetchFailed, PartFile, TransientError,
                               file_md5, receive)
from pipeline.dataset import DatasetDir
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ["ImageID", "reason", "detail"]
# Why an image can fail; the keys are the `reason` column of FetchReport.failures.
REASONS = {
    "missing": "the bucket or folder has no object for it under any known layout",
    "no url": "its row has no URL of the chosen flavour (e.g. no Thumbnail300KURL)",
    "not found": "the server answered 404 or 410",
    "http error": "the server answered another 4xx status",
    "server error": "5xx answers on every attempt",
    "timeout": "timed out on every attempt",
    "network": "the connection failed or dropped on every attempt",
    "md5 mismatch": "the bytes are not the original: their MD5 differs from OriginalMD5",
    "size mismatch": "the byte count differs from OriginalSize",
    "html page": "an HTML page came back instead of an image (an error page sent with 200)",
    "not an image": "the bytes do not decode as an image",
    "truncated": "the image is cut off before its end",
    "forbidden": "no permission to read the object",
    "unreadable": "the local source file cannot be read",
}
MAX_RETRIES = 100
MAX_TIMEOUT_S = 3600.0
MAX_FAILURES_IN_MANIFEST = 2000  # dataset.json stays readable; the report holds them all
DECODE_SIDE = 64  # decode JPEGs at 1/8 scale when big: a cut-off file still fails, 8× less work
HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")


@dataclass
class FetchReport:
    """What ``fetch_images`` did. ``verified`` counts which checks passed: md5 / size / decode."""

    source: str
    images: int = 0
    fetched: int = 0
    skipped: int = 0
    failed: int = 0
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FAILURE_COLUMNS))
    verified: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        """The JSON-able record kept under ``dataset.json["fetch"]``."""
        rows = self.failures.head(MAX_FAILURES_IN_MANIFEST).to_dict("records")
        return {"source": self.source, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "images": self.images, "fetched": self.fetched, "skipped": self.skipped,
                "failed": self.failed, "verified": dict(sorted(self.verified.items())),
                "seconds": round(self.seconds, 2), "failures": rows,
                "failures_by_reason": dict(Counter(self.failures["reason"]).most_common())}


@dataclass(frozen=True)
class _Outcome:
    image_id: str
    status: str  # fetched | skipped | failed
    checks: tuple[str, ...] = ()
    reason: str = ""
    detail: str = ""


def load_image_refs(path: Path) -> list[ImageRef]:
    """The images of ``images.parquet`` as :class:`ImageRef` (one per ImageID, file order)."""
    frame = pd.read_parquet(path)
    if "ImageID" not in frame.columns:
        raise UserError(f"{path} has no ImageID column: rebuild the dataset")
    frame = frame.drop_duplicates("ImageID")
    return [ImageRef(image_id=str(row.get("ImageID")), subset=_text(row.get("Subset")) or "train",
                     original_url=_text(row.get("OriginalURL")), thumbnail_url=_text(row.get("Thumbnail300KURL")),
                     original_size=_int(row.get("OriginalSize")), original_md5=_text(row.get("OriginalMD5")))
            for row in frame.to_dict("records")]


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


def _int(value) -> int | None:
    """A size, or None when unknown (missing, NaN or negative)."""
    return None if value is None or pd.isna(value) or int(value) < 0 else int(value)


def fetch_images(ws: Workspace, slug: str, source: str, *, workers: int = 16, retries: int = 3,
                 progress: ProgressFn = None, base_url: str | None = None, timeout: float = 30.0,
                 backoff: float = BACKOFF_S, wait: float = 0) -> FetchReport:
    """Download the dataset's images from ``source`` into ``datasets/<slug>/originals/``.

    Args:
        ws: the workspace. slug: the dataset (needs ``images.parquet``).
        source: ``gs://bucket/prefix``, ``urls[:original|cvdf|thumbnail]`` or a folder (see
            :func:`pipeline.images.stores.open_store`).
        workers: concurrent downloads. retries: extra attempts after a 5xx, timeout or drop.
        progress: ``progress(done, total, message)``.
        base_url: a mirror standing in for the URLs' hosts (tests use a local server).
        timeout: seconds to wait for a connection or the next bytes. backoff: first retry delay.
        wait: seconds to wait while another process writes the dataset (default: refuse at once).

    Returns:
        A :class:`FetchReport`; its summary is also written to ``dataset.json["fetch"]``.

    Raises:
        UserError: no such dataset, workers/retries/timeout out of range, an unusable source (bad
            bucket name, private bucket without credentials, no network), another process writing
            the dataset, or a full disk (finished files are kept).
    """
    workers = numbers.workers(workers)
    retries = numbers.whole(retries, "--retries", 0, MAX_RETRIES)
    timeout = numbers.real(timeout, "--timeout", 0, MAX_TIMEOUT_S, low_open=True, hint=" (seconds)")
    backoff = numbers.real(backoff, "backoff", 0, MAX_TIMEOUT_S, hint=" (seconds)")
    dataset = ws.dataset(slug)
    table = dataset.images_path
    if not table.is_file():
        raise UserError(f"dataset {slug!r} has no images.parquet in {ws.datasets_dir}: build it first")
    with dataset.lock("fetch-images", wait=wait):
        return _fetch_locked(dataset, source, workers, retries, progress, base_url, timeout, backoff)


def _fetch_locked(dataset: DatasetDir, source: str, workers: int, retries: int, progress: ProgressFn,
                  base_url: str | None, timeout: float, backoff: float) -> FetchReport:
    slug, table = dataset.slug, dataset.images_path
    images = load_image_refs(table)
    store = open_store(source, base_url=base_url)
    store.check(images[0] if images else None)
    started = time.monotonic()
    outcomes = _run_batch(store, images, dataset.originals, workers, progress,
                          lambda image, out: _fetch_one(store, image, out, retries, timeout, backoff))
    report = _report(store.spec, outcomes, time.monotonic() - started)
    _record(dataset, report)
    log.info("fetch-images %s: %d fetched, %d skipped, %d failed", slug, report.fetched, report.skipped, report.failed)
    return report


def _run_batch(store: ImageStore, images: list[ImageRef], out: Path, workers: int,
               progress: ProgressFn, work) -> list[_Outcome]:
    """Run ``work(image, out)`` on a bounded pool; progress from this thread; stop cleanly on errors."""
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    outcomes: list[_Outcome] = []
    if progress:
        progress(0, len(images), f"from {store.spec}")
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch")
    try:
        futures = [pool.submit(work, image, out) for image in images]
        for done, future in enumerate(as_completed(futures), 1):
            outcome = future.result()
            outcomes.append(outcome)
            counts[outcome.status] += 1
            if progress:
                progress(done, len(images), ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    finally:  # a full disk or Ctrl-C: drop what has not started, let running downloads finish
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _fetch_one(store: ImageStore, image: ImageRef, out: Path, retries: int, timeout: float,
               backoff: float) -> _Outcome:
    """One image: locate, skip when already good, else download + verify + rename."""
    final = out / f"{image.image_id}.jpg"
    try:
        located = store.locate(image)
        if final.is_file() and _already_there(final, image, located):
            return _Outcome(image.image_id, "skipped")
        checks = _download_verified(store, located, image, final, retries, timeout, backoff)
        return _Outcome(image.image_id, "fetched", tuple(checks))
    except FetchFailed as err:
        return _Outcome(image.image_id, "failed", reason=err.reason, detail=err.detail)
    except DiskFullError:
        raise
    except OSError as err:  # a local problem with this one file (permissions, a vanished folder)
        return _Outcome(image.image_id, "failed", reason="unreadable", detail=f"{final}: {err.strerror or err}")


def _already_there(final: Path, image: ImageRef, located: Located) -> bool:
    """A final file is only ever renamed into place verified; re-check what can be checked cheaply."""
    size = final.stat().st_size
    if size == 0:
        return False
    if located.holds_original and image.original_md5:
        return (image.original_size in (None, size)) and file_md5(final) == image.original_md5
    if located.size is not None and size != located.size:
        return False
    return located.md5 is None or file_md5(final) == located.md5


def _download_verified(store: ImageStore, located: Located, image: ImageRef, final: Path,
                       retries: int, timeout: float, backoff: float) -> list[str]:
    """Download through ``<final>.part`` (resumed), :func:`verify`, rename: :func:`pipeline.transfer.receive`."""
    try:
        return receive(final, lambda part: store.download(located, part, timeout),
                       lambda part: verify(part, image, located), retries=retries, backoff=backoff)
    except TransientError as err:  # the part stays: the next run resumes it
        reason = err.reason if err.reason in REASONS else "network"
        raise FetchFailed(reason, f"{err} ({err.attempts} attempts)") from None


def verify(part: PartFile, image: ImageRef, located: Located) -> list[str]:
    """Check a finished part; returns the checks applied ("size", "md5", "decode").

    Raises:
        FetchFailed: truncated, size/MD5 mismatch, an HTML page, or not an image.
    """
    checks = []
    if part.expected_size is not None:
        if part.size != part.expected_size:
            raise FetchFailed("truncated", f"got {part.size} of {part.expected_size} bytes")
        checks.append("size")
    if located.holds_original and image.original_md5:
        if image.original_size is not None and part.size != image.original_size:
            raise FetchFailed("size mismatch", f"{part.size} bytes where OriginalSize is {image.original_size}")
        if part.md5 != image.original_md5:
            raise FetchFailed("md5 mismatch", f"MD5 {part.md5} where OriginalMD5 is {image.original_md5}")
        return sorted(set(checks + ["size", "md5"]))
    _check_decodes(part.path)
    return checks + ["decode"]


def _check_decodes(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(1024).lstrip().lower()
    if head.startswith(HTML_MARKERS) or (head.startswith(b"<") and b"<html" in head):
        raise FetchFailed("html page", "an HTML page came back instead of an image")
    try:
        decode_rgb(path, reduce_to=DECODE_SIDE)
    except ImageDecodeError as err:
        reason = "truncated" if "truncated" in str(err) else "not an image"
        raise FetchFailed(reason, str(err).replace(path.name, path.name.removesuffix(PART_SUFFIX))) from err


def _report(spec: str, outcomes: list[_Outcome], seconds: float) -> FetchReport:
    statuses = Counter(o.status for o in outcomes)
    failures = pd.DataFrame([(o.image_id, o.reason, o.detail) for o in outcomes if o.status == "failed"],
                            columns=FAILURE_COLUMNS).sort_values(["reason", "ImageID"], ignore_index=True)
    verified = Counter(check for o in outcomes for check in o.checks)
    return FetchReport(source=spec, images=len(outcomes), fetched=statuses["fetched"],
                       skipped=statuses["skipped"], failed=statuses["failed"], failures=failures,
                       verified=dict(verified), seconds=seconds)


def _record(dataset: DatasetDir, report: FetchReport) -> None:
    """Record ``dataset.json["fetch"]`` (only when the dataset has a manifest)."""
    if not dataset.exists():
        log.warning("%s is missing; the fetch summary is not recorded", dataset.manifest_path)
        return
    dataset.update(fetch=report.summary())


# --------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    """``fetch-images --dataset SLUG --from SOURCE [--workers N] [--retries N] [--base-url URL]``."""
    parser = subparsers.add_parser(
        "fetch-images", help="download a dataset's images (GCS, URLs or a folder)",
        description="Bring a dataset's source pixels into datasets/<slug>/originals/: resumable, verified, "
                    "failures reported without stopping.")
    parser.add_argument("--dataset", required=True, help="dataset slug")
    parser.add_argument("--from", dest="source", required=True,
                        help="gs://bucket/prefix | urls[:original|cvdf|thumbnail] | a local folder")
    parser.add_argument("--workers", type=int, default=16, help="concurrent downloads (default 16)")
    parser.add_argument("--retries", type=int, default=3, help="retries after a 5xx/timeout/drop (default 3)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per connection/read (default 30)")
    parser.add_argument("--base-url", help="a mirror serving the URLs' paths (default $STUDIO_IMAGE_BASE_URL)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    report = fetch_images(ws, args.dataset, args.source, workers=args.workers, retries=args.retries,
                          progress=tqdm_progress("fetch", unit="img"), base_url=args.base_url,
                          timeout=args.timeout)
    checks = ", ".join(f"{name} {count}" for name, count in sorted(report.verified.items())) or "none"
    print(f"{report.fetched} fetched, {report.skipped} already there, {report.failed} failed "
          f"from {report.source} in {report.seconds:.1f} s (checks passed: {checks})")
    if report.failed:
        print(report.failures.head(30).to_string(index=False))
        if report.failed > 30:
            print(f"… and {report.failed - 30} more in dataset.json under \"fetch\"")
    return 0
