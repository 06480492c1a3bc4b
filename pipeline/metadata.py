"""The official Open Images metadata files: where they live, their sizes and MD5s, and getting them.

``download`` fetches over HTTP with Range resume and verifies size and MD5 before a file gets
its final name; ``link`` uses files the user already has (a local folder: symlinks; a
``gs://bucket/prefix``: copied down with google-cloud-storage, anonymously when there are no
credentials). MD5s of files in use are cached in ``metadata/.md5-cache.json`` (keyed by size
and mtime) so a 2.2 GB file is hashed once, not at every build.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from pipeline.cli import UserError
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.workspace import Workspace, read_json, write_json

log = logging.getLogger(__name__)

OFFICIAL_BASE = "https://storage.googleapis.com/openimages"
CHUNK = 1 << 20
RETRIES = 4
BACKOFF_S = 0.5
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


def md5_file(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK * 8), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_md5(path: Path) -> str:
    """Hex MD5 of a file in a metadata folder, from ``.md5-cache.json`` when size and mtime match."""
    path = Path(path)
    stat = path.stat()
    cache_path = path.parent / MD5_CACHE
    cache = read_json(cache_path, {}) or {}
    entry = cache.get(path.name)
    if entry and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["md5"]
    digest = md5_file(path)
    cache = read_json(cache_path, {}) or {}  # re-read: another step may have written meanwhile
    cache[path.name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": digest}
    try:
        write_json(cache_path, cache)
    except OSError:  # a read-only metadata folder: the hash is still right, just not remembered
        log.debug("cannot write %s", cache_path)
    return digest


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
    and renames to the final name only after size and MD5 match. ``base_url`` replaces
    ``OFFICIAL_BASE`` (a mirror, or a test server); ``table`` replaces ``OFFICIAL_FILES``.

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
        done[name] = _download_one(url, ws.metadata_dir / name, entry, progress, retries)
    return done


def _already_there(dest: Path, entry: OfficialFile) -> bool:
    if not dest.exists():
        return False
    if entry.bytes is not None and dest.stat().st_size != entry.bytes:
        return False
    return entry.md5 is None or cached_md5(dest) == entry.md5


def _download_one(url: str, dest: Path, entry: OfficialFile, progress: ProgressFn, retries: int) -> Path:
    if _already_there(dest, entry):
        log.info("%s already downloaded and verified", dest.name)
        return dest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            if _fetch_into(url, part, entry, progress):
                break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                _ServerError) as err:
            if attempt == retries:
                raise UserError(f"downloading {url} failed after {retries + 1} attempts ({err})") from None
            log.warning("%s: %s; resuming (attempt %d)", dest.name, err, attempt + 2)
            time.sleep(BACKOFF_S * 2 ** attempt)
    _verify(part, dest, entry, url)
    os.replace(part, dest)
    return dest


class _ServerError(Exception):
    """A 5xx answer: worth retrying."""


def _fetch_into(url: str, part: Path, entry: OfficialFile, progress: ProgressFn) -> bool:
    """One request appending to ``part``; True when the file is complete."""
    have = part.stat().st_size if part.exists() else 0
    if entry.bytes is not None and have >= entry.bytes:
        return True
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=(10, 60)) as resp:
        if resp.status_code == 416 and have:
            return True  # nothing left to send: the part is whole (checked by _verify)
        if resp.status_code >= 500:
            raise _ServerError(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise UserError(f"{url} answered HTTP {resp.status_code}")
        resumed = resp.status_code == 206
        total = entry.bytes or int(resp.headers.get("Content-Length", 0)) + (have if resumed else 0)
        done = have if resumed else 0
        with open(part, "ab" if resumed else "wb") as handle:
            for chunk in resp.iter_content(CHUNK):
                handle.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total, part.name[: -len(".part")])
    return True


def _verify(part: Path, dest: Path, entry: OfficialFile, url: str) -> None:
    """Refuse (and delete) a download whose size or MD5 is not the official one."""
    size = part.stat().st_size
    problem = None
    if entry.bytes is not None and size != entry.bytes:
        problem = f"it has {size} bytes, the official file has {entry.bytes}"
    elif entry.md5 is not None:
        got = md5_file(part)
        if got != entry.md5:
            problem = f"its MD5 is {got}, the official MD5 is {entry.md5}"
    if problem:
        part.unlink(missing_ok=True)
        raise UserError(f"the download of {dest.name} from {url} is not the official file ({problem}); "
                        "it was deleted, run the download again")


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
        found = _link_gcs(ws, str(source), wanted, table, progress)
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


def _gcs_client():
    """A google-cloud-storage client: the user's credentials if any, else anonymous (public buckets)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client.create_anonymous_client()
    try:
        import google.auth

        google.auth.default()
        return storage.Client()
    except Exception:  # no credentials configured: public buckets still work anonymously
        return storage.Client.create_anonymous_client()


def _link_gcs(ws: Workspace, source: str, wanted: list[str], table: dict[str, OfficialFile],
              progress: ProgressFn) -> dict[str, Path]:
    bucket_name, _, prefix = source[len("gs://"):].partition("/")
    client = _gcs_client()
    found = {}
    for blob in client.list_blobs(bucket_name, prefix=prefix):
        name = blob.name.rsplit("/", 1)[-1]
        if name not in wanted or name in found:
            continue
        dest = ws.metadata_dir / name
        if not (dest.exists() and dest.stat().st_size == blob.size):
            part = dest.with_name(name + ".part")
            blob.download_to_filename(str(part))
            _verify_blob(part, blob, name, table[name])
            os.replace(part, dest)
        found[name] = dest
        if progress:
            progress(len(found), len(wanted), name)
    return found


def _verify_blob(part: Path, blob, name: str, entry: OfficialFile) -> None:
    got = md5_file(part)
    stored = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
    if stored and got != stored:
        part.unlink(missing_ok=True)
        raise UserError(f"the copy of {name} from gs://{blob.bucket.name}/{blob.name} is corrupt "
                        f"(MD5 {got}, the bucket says {stored}); it was deleted")


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
