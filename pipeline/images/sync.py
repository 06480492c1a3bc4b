"""``push`` / ``pull``: move a prepared dataset to and from a bucket (or a folder) for a GPU VM.

Objects are named by their path inside the dataset folder (``yolo/<ImageID>.jpg``,
``splits/train.txt``, …) under the destination prefix. Both directions are resumable: an object
whose MD5 already matches is skipped. ``dataset.json`` moves last, so a half-finished push is
never mistaken for a dataset, and a pull only shows up in the workspace once complete.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

from pipeline import numbers
from pipeline.cli import UserError
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.images.stores import TEMP_SUFFIXES, ImageStore, ObjectInfo, open_store
from pipeline.transfer import FetchFailed, PartFile, TransientError, file_md5, receive, retry
from pipeline.dataset import MANIFEST, ORIGINALS_DIR, DatasetDir
from pipeline.workspace import Workspace, slugify

log = logging.getLogger(__name__)

LOCAL_ONLY = (ORIGINALS_DIR,)  # source pixels: big and not needed to train (unless asked for)
ATTEMPTS = 3


def push(ws: Workspace, slug: str, dest: str, progress: ProgressFn = None, *,
         include_originals: bool = False, workers: int = 8) -> dict:
    """Upload ``datasets/<slug>/`` (images, labels, splits, parquet, manifest) to ``dest``.

    Args:
        ws: the workspace. slug: the dataset. dest: ``gs://bucket/prefix`` or a folder.
        progress: ``progress(done, total, message)``; an exception raised there stops the push
            (what was uploaded stays; the next push skips it).
        include_originals: also upload ``originals/``.
        workers: concurrent uploads (1 to 256).

    Returns:
        ``{"dest", "files", "uploaded", "skipped", "bytes"}`` (bytes uploaded).
    """
    workers = numbers.workers(workers)
    dataset = ws.dataset(slug)
    if not dataset.exists():
        raise UserError(f"there is no dataset {slug!r} in {ws.datasets_dir}")
    store = open_store(dest, must_exist=False)
    store.check()  # fails fast (one sentence) where listing would retry for minutes
    files = _local_files(dataset, include_originals)
    remote = store.list_objects()
    data_names = [name for name in files if name != MANIFEST]
    stats = {"dest": store.spec, "files": len(files), "uploaded": 0, "skipped": 0, "bytes": 0}
    _parallel(data_names, lambda name: _push_one(store, files[name], name, remote.get(name)),
              stats, len(files), progress, workers)
    _tally(stats, _push_one(store, files[MANIFEST], MANIFEST, remote.get(MANIFEST)))
    if progress:
        progress(len(files), len(files), f"{stats['uploaded']} uploaded, {stats['skipped']} skipped")
    log.info("push %s → %s: %s", slug, store.spec, stats)
    return stats


def pull(ws: Workspace, slug_or_none: str | None, src: str, progress: ProgressFn = None, *,
         workers: int = 8, wait: float = 0) -> dict:
    """Download a pushed dataset from ``src`` into ``datasets/<slug>/``.

    Args:
        slug_or_none: the local name; ``None`` keeps the slug written in the remote manifest.
        workers: concurrent downloads (1 to 256).
        wait: seconds to wait while another process writes the dataset (default: refuse at once).

    Returns:
        ``{"slug", "src", "files", "downloaded", "skipped", "bytes"}``.

    Raises:
        UserError: ``src`` holds no dataset.json, a different dataset already has that name here,
            the pull would replace files of a dataset that runs trained on, or another process is
            writing the dataset.
    """
    workers = numbers.workers(workers)
    if slug_or_none is not None:
        ws.dataset(slug_or_none)  # a bad name is refused before the source is read
    store = open_store(src)
    store.check()
    remote = store.list_objects()
    if MANIFEST not in remote:
        raise UserError(f"{store.spec} holds no {MANIFEST}: point at the prefix a `push` wrote")
    manifest = _read_remote_manifest(store, remote[MANIFEST])
    slug = slug_or_none or str(manifest.get("slug") or "")
    if not slug or slugify(slug) != slug:
        raise UserError(f"{slug!r} cannot name a dataset folder: pass --dataset with letters, digits and dashes")
    dataset = ws.dataset(slug)
    with dataset.lock("pull", wait=wait):
        _refuse_other_dataset(dataset, manifest)
        names = [name for name in remote if name != MANIFEST and _safe_name(name)]
        _refuse_replacing_used(ws, dataset, {name: remote[name] for name in names})
        stats = {"slug": slug, "src": store.spec, "files": len(names) + 1, "downloaded": 0, "skipped": 0, "bytes": 0}
        _parallel(names, lambda name: _pull_one(store, name, remote[name], dataset.path), stats, stats["files"],
                  progress, workers)
        dataset.save({**manifest, "slug": slug})
    stats["downloaded"] += 1
    if progress:
        progress(stats["files"], stats["files"], f"{stats['downloaded']} downloaded, {stats['skipped']} skipped")
    log.info("pull %s → %s: %s", store.spec, slug, stats)
    return stats


def _local_files(dataset: DatasetDir, include_originals: bool) -> dict[str, Path]:
    """Files to push, by posix path relative to the dataset folder (temp files left out)."""
    folder = dataset.path
    files = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if not path.is_file() or path.name.endswith(TEMP_SUFFIXES) or path.name.startswith("."):
            continue
        if not include_originals and name.split("/", 1)[0] in LOCAL_ONLY:
            continue
        files[name] = path
    return files


def _parallel(names: list[str], work, stats: dict, total: int, progress: ProgressFn, workers: int) -> None:
    """Run ``work(name) -> (status, bytes)`` on a pool; an error (or one raised by progress) stops it."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sync")
    try:
        futures = [pool.submit(work, name) for name in names]
        for done, future in enumerate(as_completed(futures), 1):
            _tally(stats, future.result())
            if progress:
                progress(done, total, f"{done} of {total}")
    finally:  # let running transfers finish so what is there is whole; drop the rest
        pool.shutdown(wait=True, cancel_futures=True)


def _tally(stats: dict, outcome: tuple[str, int]) -> None:
    status, size = outcome
    stats[status] += 1
    stats["bytes"] += size


def _push_one(store: ImageStore, path: Path, name: str, remote: ObjectInfo | None) -> tuple[str, int]:
    if remote is not None and remote.size == path.stat().st_size and remote.md5 == file_md5(path):
        return "skipped", 0
    try:
        info = retry(lambda: store.upload(path, name), retries=ATTEMPTS - 1)
    except TransientError as err:
        raise UserError(f"uploading {name} to {store.spec} failed {err.attempts} times: {err}") from err
    return "uploaded", info.size


def _pull_one(store: ImageStore, name: str, info: ObjectInfo, folder: Path) -> tuple[str, int]:
    target = folder / name
    if target.is_file() and _same(target, info):
        return "skipped", 0

    def check(part: PartFile) -> None:
        if info.md5 and part.md5 != info.md5:
            raise FetchFailed("md5 mismatch", "the bytes do not match the object's MD5 (pull again)")

    try:
        receive(target, lambda part: store.download(store.object_location(name, info), part), check,
                retries=ATTEMPTS - 1)
    except TransientError as err:
        raise UserError(f"downloading {name} from {store.spec} failed {err.attempts} times: {err}") from err
    except FetchFailed as err:
        raise UserError(f"cannot pull {name} from {store.spec}: {err.detail}") from err
    return "downloaded", info.size


def _read_remote_manifest(store: ImageStore, info: ObjectInfo) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        part = PartFile(Path(tmp) / MANIFEST).open(resume=False)
        try:
            store.download(store.object_location(MANIFEST, info), part)
            part.commit()
        finally:
            part.close()
        try:
            return json.loads((Path(tmp) / MANIFEST).read_text(encoding="utf-8"))
        except ValueError as err:
            raise UserError(f"the {MANIFEST} in {store.spec} is not valid JSON") from err


def _refuse_other_dataset(dataset: DatasetDir, manifest: dict) -> None:
    """Pulling over a different dataset of the same name would mix two datasets: refuse."""
    local = dataset.load()
    if local is not None and local.get("created") != manifest.get("created"):
        raise UserError(f"a different dataset named {dataset.slug!r} already exists in this workspace: "
                        "pull it under another name with --dataset")


def _refuse_replacing_used(ws: Workspace, dataset: DatasetDir, remote: dict[str, ObjectInfo]) -> None:
    """Pulling over files that differ, into a dataset runs trained on, would change their data: refuse."""
    if not dataset.path.is_dir() or not ws.runs_using(dataset):
        return
    for name, info in remote.items():
        target = dataset.path / name
        if target.is_file() and not _same(target, info):
            ws.refuse_replacing(dataset, f"the pull would replace files such as {name}, so delete those runs "
                                         "first, or pull under another --dataset name")


def _same(path: Path, info: ObjectInfo) -> bool:
    return path.stat().st_size == info.size and (info.md5 is None or file_md5(path) == info.md5)


def _safe_name(name: str) -> bool:
    """Object names become paths: nothing absolute, no ``..``, no temp names."""
    parts = PurePosixPath(name).parts
    ok = bool(parts) and not name.startswith("/") and ".." not in parts and not name.endswith(TEMP_SUFFIXES)
    if not ok:
        log.warning("skipping object %r: not a safe relative path", name)
    return ok


# --------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    """``push --dataset SLUG --to DEST`` and ``pull --from SRC [--dataset SLUG]``."""
    push_parser = subparsers.add_parser("push", help="upload a prepared dataset to gs://bucket/prefix (or a folder)")
    push_parser.add_argument("--dataset", required=True, help="dataset slug")
    push_parser.add_argument("--to", dest="dest", required=True, help="gs://bucket/prefix or a folder")
    push_parser.add_argument("--with-originals", action="store_true", help="also upload originals/")
    push_parser.add_argument("--workers", type=int, default=8, help="concurrent uploads (default 8)")
    push_parser.set_defaults(func=_push_main)
    pull_parser = subparsers.add_parser("pull", help="download a pushed dataset from gs://bucket/prefix (or a folder)")
    pull_parser.add_argument("--from", dest="src", required=True, help="gs://bucket/prefix or a folder")
    pull_parser.add_argument("--dataset", help="local name (default: the slug in the remote dataset.json)")
    pull_parser.add_argument("--workers", type=int, default=8, help="concurrent downloads (default 8)")
    pull_parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                             help="wait this long while another process writes the dataset (default: refuse at once)")
    pull_parser.set_defaults(func=_pull_main)


def _push_main(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    stats = push(ws, args.dataset, args.dest, tqdm_progress("push", unit="file"),
                 include_originals=args.with_originals, workers=args.workers)
    print(f"{stats['uploaded']} uploaded ({stats['bytes']:,} bytes), {stats['skipped']} already there, "
          f"to {stats['dest']}")
    return 0


def _pull_main(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    stats = pull(ws, args.dataset, args.src, tqdm_progress("pull", unit="file"), workers=args.workers,
                 wait=args.wait)
    print(f"{stats['downloaded']} downloaded ({stats['bytes']:,} bytes), {stats['skipped']} already there, "
          f"into dataset {stats['slug']}")
    return 0
