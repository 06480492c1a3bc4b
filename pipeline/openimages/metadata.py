"""The official Open Images metadata files: where they live, their sizes and MD5s, and getting them.

``download`` fetches over HTTP with Range resume and verifies size and MD5 before a file gets
its final name; ``link`` uses files the user already has (a local folder: symlinks; a
``gs://bucket/prefix``: copied down with google-cloud-storage, anonymously when there are no
credentials). MD5s of files in use are cached in ``metadata/.md5-cache.json`` (keyed by size
and mtime) so a 2.2 GB file is hashed once, not at every build.
"""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import UserError
from pipeline.transfer import (BACKOFF_S, PART_SUFFIX, RETRIES, FetchFailed, TransientError, download_file,
                               md5_digest, receive)
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.images.stores import GcsStore, ObjectInfo
from pipeline.atomic import read_json, write_json
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

OFFICIAL_BASE = "https://storage.googleapis.com/openimages"
CHUNK = 1 << 20
MD5_CACHE = ".md5-cache.json"
LINK_DEPTH = 3  # the official layout nests image info two folders down (2018_04/train/…)


@dataclass(frozen=True)
class OfficialFile:
    """One official file: its path under the base URL, size and hex MD5 (None: not published)."""

    path: str
    bytes: int | None
    md5: str | None

    @property
    def url(self) -> str:
        """The official download URL."""
        return f"{OFFICIAL_BASE}/{self.path}"


# Sizes and MD5s: facts/openimages.md §1.1 and fixtures/openimages/openimages-v6-annotation-files.sizes-md5.tsv.
OFFICIAL_FILES: dict[str, OfficialFile] = {
    "class-descriptions-boxable.csv": OfficialFile(
        "v5/class-descriptions-boxable.csv", 12_011, "9846fd22fd2e68b45e3f3810a4c2a32a"),
    "bbox_labels_600_hierarchy.json": OfficialFile("2018_04/bbox_labels_600_hierarchy.json", None, None),
    "oidv6-train-annotations-bbox.csv": OfficialFile(
        "v6/oidv6-train-annotations-bbox.csv", 2_258_447_590, "3c3e70cfaba5757ea5c2604b19cac3b2"),
    "validation-annotations-bbox.csv": OfficialFile(
        "v5/validation-annotations-bbox.csv", 25_105_048, "c5e8200df129ea6867e913e8b21fcab9"),
    "test-annotations-bbox.csv": OfficialFile(
        "v5/test-annotations-bbox.csv", 77_484_237, "1cc058a7003b4e73d47642276e9b123b"),
    "train-images-boxable-with-rotation.csv": OfficialFile(
        "2018_04/train/train-images-boxable-with-rotation.csv", 638_407_721, "a4ac0bcedb5c2df4d1b1230dc6b41b8f"),
    "validation-images-with-rotation.csv": OfficialFile(
        "2018_04/validation/validation-images-with-rotation.csv", 15_245_485, "643a54e43b0bab8acce8817b4a569780"),
    "test-images-with-rotation.csv": OfficialFile(
        "2018_04/test/test-images-with-rotation.csv", 45_227_339, "d832feb775b3cb78077bf8ae350adce5"),
    "train-annotations-human-imagelabels-boxable.csv": OfficialFile(
        "v5/train-annotations-human-imagelabels-boxable.csv", 376_764_810, "f2709ae3f91391549c56d45a4a5ffec6"),
    "validation-annotations-human-imagelabels-boxable.csv": OfficialFile(
        "v5/validation-annotations-human-imagelabels-boxable.csv", 10_649_275, "2e129f40a209e65dfe4342ed0e7bd5f2"),
    "test-annotations-human-imagelabels-boxable.csv": OfficialFile(
        "v5/test-annotations-human-imagelabels-boxable.csv", 32_055_857, "207ed0ce2755ad5a689c8eb6eeb039bf"),
}

SPLITS = ("train", "validation", "test")
BOX_FILES = {"train": "oidv6-train-annotations-bbox.csv", "validation": "validation-annotations-bbox.csv",
             "test": "test-annotations-bbox.csv"}
IMAGE_FILES = {"train": "train-images-boxable-with-rotation.csv",
               "validation": "validation-images-with-rotation.csv", "test": "test-images-with-rotation.csv"}
LABEL_FILES = {s: f"{s}-annotations-human-imagelabels-boxable.csv" for s in SPLITS}


# --------------------------------------------------------------------------- MD5


def cached_md5(path: Path) -> str:
    """Hex MD5 of a file in a metadata folder, from ``.md5-cache.json`` when size and mtime match.

    A ``.part`` file is still changing, so it is hashed every time and never remembered.
    """
    path = Path(path)
    if path.name.endswith(PART_SUFFIX):
        return md5_digest(path).hexdigest()
    stat = path.stat()
    entry = (read_json(path.parent / MD5_CACHE, {}) or {}).get(path.name)
    if entry and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["md5"]
    digest = md5_digest(path).hexdigest()
    remember_md5(path, digest, stat)
    return digest


def remember_md5(path: Path, digest: str, stat: os.stat_result | None = None) -> None:
    """Record ``digest`` as the hex MD5 of ``path`` (as it is now) in ``.md5-cache.json``."""
    stat = stat or path.stat()
    cache_path = path.parent / MD5_CACHE
    cache = read_json(cache_path, {}) or {}  # read late: another step may have written meanwhile
    cache[path.name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": digest}
    try:
        write_json(cache_path, cache)
    except OSError:  # a read-only metadata folder: the hash is still right, just not remembered
        log.debug("cannot write %s", cache_path)


def source_record(path: Path) -> dict:
    """``{"file", "bytes", "md5"}`` of one source file, for a dataset manifest."""
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "md5": cached_md5(path)}


def status(ws: Workspace, table: dict[str, OfficialFile] | None = None) -> list[dict]:
    """One row per official file: name, present, bytes, official bytes, size_ok."""
    rows = []
    for name, entry in (table or OFFICIAL_FILES).items():
        path = ws.metadata_dir / name
        size = path.stat().st_size if path.exists() else None
        rows.append({"name": name, "present": size is not None, "bytes": size, "official_bytes": entry.bytes,
                     "size_ok": size is not None and entry.bytes in (None, size)})
    return rows


# --------------------------------------------------------------------------- download


def download(ws: Workspace, names: list[str] | None = None, base_url: str | None = None,
             progress: ProgressFn = None, table: dict[str, OfficialFile] | None = None,
             retries: int = RETRIES) -> dict[str, Path]:
    """Download official files into ``ws.metadata_dir``; return name → path.

    Resumes a partial ``<name>.part`` with an HTTP Range request, retries dropped connections,
    and renames to the final name only after size and MD5 match (:func:`pipeline.transfer.download_file`).
    ``base_url`` replaces ``OFFICIAL_BASE`` (a mirror, or a test server); ``table`` replaces
    ``OFFICIAL_FILES``.

    Raises:
        UserError: unknown name, HTTP error, or a file that fails its size/MD5 check (deleted).
    """
    table = table or OFFICIAL_FILES
    names = list(table) if names is None else list(names)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise UserError(f"unknown metadata file {unknown[0]!r}; known: {', '.join(table)}")
    ws.metadata_dir.mkdir(parents=True, exist_ok=True)
    done = {}
    for name in names:
        entry = table[name]
        url = f"{(base_url or OFFICIAL_BASE).rstrip('/')}/{entry.path}"
        done[name] = download_file(url, ws.metadata_dir / name, expected_bytes=entry.bytes,
                                   verify=_official_md5(entry.md5), retries=retries, backoff=BACKOFF_S,
                                   chunk_size=CHUNK, progress=progress)
        if entry.md5:
            remember_md5(done[name], entry.md5)  # just verified: the first build need not hash it again
    return done


def _official_md5(official: str | None) -> Callable[[Path], str | None]:
    """A ``verify`` for :func:`download_file`: a sentence when the file's MD5 is not ``official``."""
    def problem(path: Path) -> str | None:
        if official is None:
            return None
        got = cached_md5(path)
        if got == official:
            return None
        return f"it is not the official file: its MD5 is {got}, the official MD5 is {official}"
    return problem


# --------------------------------------------------------------------------- link


def link(ws: Workspace, source: str, names: list[str] | None = None,
         table: dict[str, OfficialFile] | None = None, progress: ProgressFn = None) -> dict[str, Path]:
    """Use official files the user already has: a local folder (symlinked) or ``gs://bucket/prefix`` (copied).

    Files are found by their official base name anywhere below the source. Returns name → path of
    what was linked; a size that differs from the official one is logged, not refused (mirrors
    and the demo workspace hold other versions).

    Raises:
        UserError: the source does not exist or holds none of the files.
    """
    table = table or OFFICIAL_FILES
    wanted = list(table) if names is None else list(names)
    ws.metadata_dir.mkdir(parents=True, exist_ok=True)
    if str(source).startswith("gs://"):
        found = _link_gcs(ws, str(source), wanted, progress)
    else:
        found = _link_local(ws, Path(source).expanduser(), wanted)
    if not found:
        raise UserError(f"{source} holds none of the official files ({', '.join(wanted[:3])}, …)")
    for name, path in found.items():
        expected = table[name].bytes
        if expected is not None and path.stat().st_size != expected:
            log.warning("%s has %d bytes, the official file has %d", name, path.stat().st_size, expected)
    return found


def _find_files(folder: Path, wanted: list[str], depth: int = LINK_DEPTH) -> dict[str, Path]:
    """name → shallowest path below ``folder`` (one walk, at most ``depth`` levels: not an image tree)."""
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(folder):
        level = len(Path(root).relative_to(folder).parts)
        for name in set(files) & set(wanted):
            path = Path(root) / name
            if name not in found or len(path.parts) < len(found[name].parts):
                found[name] = path
        if level >= depth:
            dirs.clear()
        dirs.sort()
    return found


def _link_local(ws: Workspace, folder: Path, wanted: list[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    linked = {}
    for name, source in _find_files(folder, wanted).items():
        dest = ws.metadata_dir / name
        if source.resolve() != dest.resolve():
            tmp = dest.with_name(f".{name}.link")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(source.resolve())
            os.replace(tmp, dest)  # atomic, and never deletes a user's file: only our link is replaced
        linked[name] = dest
    return {name: linked[name] for name in wanted if name in linked}


def _link_gcs(ws: Workspace, source: str, wanted: list[str], progress: ProgressFn) -> dict[str, Path]:
    """Copy the wanted files found below ``gs://bucket/prefix`` (first by name order) into the workspace."""
    bucket_name, _, prefix = source[len("gs://"):].partition("/")
    store = GcsStore(bucket_name, prefix)
    found = {}
    for rel, info in store.list_objects().items():
        name = rel.rsplit("/", 1)[-1]
        if name not in wanted or name in found:
            continue
        dest = ws.metadata_dir / name
        if not (dest.exists() and dest.stat().st_size == info.size):
            _copy_object(store, rel, info, dest)
        found[name] = dest
        if progress:
            progress(len(found), len(wanted), name)
    return found


def _copy_object(store: GcsStore, rel: str, info: ObjectInfo, dest: Path) -> None:
    """Copy one object through ``<dest>.part`` (the store checks size and the bucket's MD5)."""
    try:
        receive(dest, lambda part: store.download(store.object_location(rel, info), part),
                retries=RETRIES, backoff=BACKOFF_S)
    except TransientError as err:
        raise UserError(f"copying {store.spec}/{rel} failed after {err.attempts} attempts ({err}); "
                        "run the link again to resume") from None
    except FetchFailed as err:
        raise UserError(f"cannot copy {store.spec}/{rel} ({err.detail}); check the bucket") from None


# --------------------------------------------------------------------------- CLI


def _run_download(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    done = download(ws, args.files, base_url=args.base_url, progress=tqdm_progress("download", unit="B"))
    for name, path in done.items():
        print(f"{name:<55} {path.stat().st_size:>14,} bytes  verified")
    return 0


def _run_link(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    found = link(ws, args.source, args.files)
    for name in args.files or OFFICIAL_FILES:
        print(f"{name:<55} {'linked' if name in found else 'not found'}")
    return 0


def _run_status(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    for row in status(ws):
        state = "missing" if not row["present"] else ("ok" if row["size_ok"] else "size differs")
        print(f"{row['name']:<55} {state}")
    return 0


def register(subparsers) -> None:
    """``python -m pipeline metadata download|link|status``."""
    parser = subparsers.add_parser("metadata", help="get the official Open Images metadata files")
    sub = parser.add_subparsers(dest="metadata_command", metavar="ACTION", required=True)
    dl = sub.add_parser("download", help="download (resumable, MD5-verified) into <workspace>/metadata")
    dl.add_argument("--files", nargs="+", metavar="NAME", choices=list(OFFICIAL_FILES), help="only these files")
    dl.add_argument("--base-url", help=f"a mirror of {OFFICIAL_BASE}")
    dl.set_defaults(func=_run_download)
    ln = sub.add_parser("link", help="use files you already have (a folder or gs://bucket/prefix)")
    ln.add_argument("--from", dest="source", required=True, metavar="DIR|gs://BUCKET/PREFIX")
    ln.add_argument("--files", nargs="+", metavar="NAME", choices=list(OFFICIAL_FILES), help="only these files")
    ln.set_defaults(func=_run_link)
    st = sub.add_parser("status", help="which official files are present")
    st.set_defaults(func=_run_status)
