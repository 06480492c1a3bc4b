"""Image stores: where source pixels come from and where datasets are pushed to.

Three real implementations behind one small interface (:class:`ImageStore`):

- :class:`GcsStore`, ``gs://bucket/prefix``: ``google-cloud-storage``; the emulator when
  ``STORAGE_EMULATOR_HOST`` is set, default credentials when there are some, anonymous otherwise.
- :class:`FolderStore`, a local folder (a disk, a gcsfuse mount, the demo's originals).
- :class:`UrlStore`, ``urls[:original|cvdf|thumbnail]``: plain HTTP(S) with ``Range`` resume.

A bucket or folder may hold an image under any of the names in :func:`layout_candidates`: the
Storage Transfer layout ``<host>/<url-path>`` (facts/openimages.md §3) or ``[<Subset>/]<ImageID>.jpg``.
A store's ``download`` only appends bytes to a :class:`pipeline.transfer.PartFile`; retries, resume
and the rename after verification are :mod:`pipeline.transfer`'s.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from pipeline.cli import UserError
from pipeline.transfer import (CHUNK, PART_SUFFIX, DiskFullError, FetchFailed, PartFile, TransientError,
                               disk_full_error, file_md5, http_resume)

log = logging.getLogger(__name__)

# How each URL flavour names an image. "cvdf" is the CVDF copy (≤1024 px, complete, no per-file MD5);
# "original" is the Flickr original (OriginalMD5 applies); "thumbnail" is ~300k pixels, made on the fly.
URL_PATTERNS: dict[str, dict] = {
    "cvdf": {"template": "{base}/{subset}/{image_id}.jpg",
             "base": "https://s3.amazonaws.com/open-images-dataset", "originals": False},
    "original": {"column": "OriginalURL", "originals": True},
    "thumbnail": {"column": "Thumbnail300KURL", "originals": False},
}
# Flickr answers a deleted photo with a redirect to a placeholder picture that decodes fine;
# a final URL containing one of these is a missing image, not a thumbnail.
PLACEHOLDER_URL_MARKERS = ("photo_unavailable",)
DEFAULT_URL_FLAVOUR = "cvdf"  # the most complete source, and it does not hammer Flickr
BASE_URL_ENV = "STUDIO_IMAGE_BASE_URL"  # a mirror (or the tests' local server) standing in for the internet
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
CREDENTIALS_HELP = (f"set {CREDENTIALS_ENV} to a service-account key file "
                    "or run `gcloud auth application-default login`")
LIST_FIELDS = "items(name,size,md5Hash),nextPageToken"  # a partial listing: a transfer bucket can hold millions
TEMP_SUFFIXES = (PART_SUFFIX, ".tmp")  # never listed, pushed or pulled

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")


@dataclass(frozen=True)
class ImageRef:
    """What the stores need to know about one image (a row of images.parquet)."""

    image_id: str
    subset: str
    original_url: str = ""
    thumbnail_url: str = ""
    original_size: int | None = None
    original_md5: str = ""  # base64 of the binary MD5, as in OriginalMD5


@dataclass(frozen=True)
class ObjectInfo:
    """Size and base64 MD5 of a stored object (MD5 ``None`` when the store does not say)."""

    size: int
    md5: str | None


@dataclass(frozen=True)
class Located:
    """Where an object's bytes are in a store, and what is known about them before the download."""

    key: str  # full object name, file path or URL
    size: int | None = None
    md5: str | None = None  # base64 MD5 of the stored object, when the store knows it
    holds_original: bool = False  # the bytes are the Flickr original, so OriginalMD5 applies


def transfer_name(url: str) -> str:
    """The object name Storage Transfer Service gives a URL: ``<host>/<url-path>``."""
    parts = urlsplit(url)
    return f"{parts.hostname}{parts.path}"


def layout_candidates(image: ImageRef) -> list[tuple[str, bool | None]]:
    """Names (relative to a bucket prefix or folder) an image may have, best first.

    The flag says whether that name means "the Flickr original" (True: a Storage Transfer copy
    of OriginalURL), "a copy" (False: a transfer of the CVDF URL) or "unknown" (None: decided by
    comparing the object's size with OriginalSize).
    """
    names: list[tuple[str, bool | None]] = []
    if image.original_url:
        names.append((transfer_name(image.original_url), True))
    names.append((f"{image.subset}/{image.image_id}.jpg", None))
    names.append((f"{image.image_id}.jpg", None))
    cvdf = URL_PATTERNS["cvdf"]
    names.append((transfer_name(cvdf["template"].format(
        base=cvdf["base"], subset=image.subset, image_id=image.image_id)), False))
    return names


def _holds_original(flag: bool | None, size: int | None, image: ImageRef) -> bool:
    if flag is not None:
        return flag
    return size is not None and image.original_size is not None and size == image.original_size


class ImageStore(ABC):
    """Somewhere images (and pushed datasets) live. Implementations are thread-safe."""

    spec: str = ""

    def check(self, sample: ImageRef | None = None) -> None:
        """Raise :class:`UserError` (one sentence) when the store cannot be used at all."""

    @abstractmethod
    def locate(self, image: ImageRef) -> Located:
        """Where ``image`` is in this store; raises :class:`FetchFailed` when it is not there."""

    @abstractmethod
    def download(self, located: Located, part: PartFile, timeout: float = 30.0) -> None:
        """Append the object's bytes from ``part.size`` on; sets ``part.expected_size`` when known.

        Raises:
            TransientError: worth retrying. FetchFailed: not worth retrying.
        """

    def list_objects(self) -> dict[str, ObjectInfo]:
        """Every object under the store's prefix, by name relative to it."""
        raise UserError(f"{self.spec} cannot be listed: push and pull need a gs:// bucket or a folder")

    def upload(self, path: Path, name: str) -> ObjectInfo:
        """Store the file ``path`` under ``name`` (relative to the prefix)."""
        raise UserError(f"{self.spec} is read-only: push needs a gs:// bucket or a folder")

    def object_location(self, name: str, info: ObjectInfo) -> Located:
        """A :class:`Located` for an object named by :meth:`list_objects`."""
        raise UserError(f"{self.spec} cannot be listed: pull needs a gs:// bucket or a folder")


# --------------------------------------------------------------------------- local folder


class FolderStore(ImageStore):
    """A local folder; images under any :func:`layout_candidates` name."""

    def __init__(self, root: Path, must_exist: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.spec = str(self.root)
        self.must_exist = must_exist  # False for a push target, created on the first upload

    def check(self, sample: ImageRef | None = None) -> None:
        if self.must_exist and not self.root.is_dir():
            raise UserError(f"{self.root} is not a folder: give gs://bucket/prefix, "
                            "urls[:original|cvdf|thumbnail] or an existing folder")

    def locate(self, image: ImageRef) -> Located:
        for name, flag in layout_candidates(image):
            path = self.root / name
            if path.is_file():
                size = path.stat().st_size
                return Located(str(path), size, None, _holds_original(flag, size, image))
        raise FetchFailed("missing", f"{image.image_id} is not in {self.root} (looked for "
                          f"{image.subset}/{image.image_id}.jpg, {image.image_id}.jpg and <host>/<url-path>)")

    def download(self, located: Located, part: PartFile, timeout: float = 30.0) -> None:
        try:
            with open(located.key, "rb") as source:
                part.expected_size = os.fstat(source.fileno()).st_size
                source.seek(part.size)
                for chunk in iter(lambda: source.read(CHUNK), b""):
                    part.write(chunk)
        except FileNotFoundError as err:
            raise FetchFailed("missing", f"{located.key} disappeared") from err
        except DiskFullError:
            raise
        except OSError as err:
            raise FetchFailed("unreadable", f"cannot read {located.key}: {err.strerror or err}") from err

    def list_objects(self) -> dict[str, ObjectInfo]:
        if not self.root.is_dir():
            return {}
        found = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.endswith(TEMP_SUFFIXES):
                found[path.relative_to(self.root).as_posix()] = ObjectInfo(path.stat().st_size, file_md5(path))
        return found

    def upload(self, path: Path, name: str) -> ObjectInfo:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            if err.errno == errno.ENOSPC:
                raise disk_full_error(target.parent) from err
            raise
        return ObjectInfo(target.stat().st_size, file_md5(target))

    def object_location(self, name: str, info: ObjectInfo) -> Located:
        return Located(str(self.root / name), info.size, info.md5)


# --------------------------------------------------------------------------- HTTP(S) URLs


class UrlStore(ImageStore):
    """Images straight from URLs: the CVDF copy, the Flickr original or its thumbnail."""

    def __init__(self, flavour: str, base_url: str | None = None):
        if flavour not in URL_PATTERNS:
            raise UserError(f"unknown URL flavour {flavour!r}: use one of urls:{', urls:'.join(URL_PATTERNS)}")
        self.flavour = flavour
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or "").rstrip("/") or None
        self.spec = f"urls:{flavour}" + (f" via {self.base_url}" if self.base_url else "")
        self._local = threading.local()

    def url_for(self, image: ImageRef) -> str:
        """The URL of ``image`` (empty when its row has none, e.g. a missing thumbnail)."""
        pattern = URL_PATTERNS[self.flavour]
        if "template" in pattern:
            return pattern["template"].format(base=self.base_url or pattern["base"],
                                              subset=image.subset, image_id=image.image_id)
        url = image.original_url if pattern["column"] == "OriginalURL" else image.thumbnail_url
        if url and self.base_url:  # a mirror keeps the Storage Transfer layout: <base>/<host>/<path>
            url = f"{self.base_url}/{transfer_name(url)}"
        return url or ""

    def check(self, sample: ImageRef | None = None) -> None:
        url = self.url_for(sample) if sample else ""
        if not url:
            return
        try:
            self._session().head(url, timeout=10, allow_redirects=False).close()
        except requests.ConnectionError as err:
            raise UserError(f"cannot reach {urlsplit(url).hostname} (connection refused or no network): "
                            "check the network connection or the --base-url mirror") from err
        except requests.Timeout:
            log.warning("%s answers slowly; downloads will retry", urlsplit(url).hostname)

    def locate(self, image: ImageRef) -> Located:
        url = self.url_for(image)
        if not url:
            column = URL_PATTERNS[self.flavour].get("column", "URL")
            raise FetchFailed("no url", f"{image.image_id} has no {column}")
        return Located(url, holds_original=URL_PATTERNS[self.flavour]["originals"])

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:  # one per thread: requests.Session is not documented as thread-safe
            session = self._local.session = requests.Session()
        return session

    def download(self, located: Located, part: PartFile, timeout: float = 30.0) -> None:
        def refuse_placeholder(answer: requests.Response) -> None:
            if answer.history and any(marker in answer.url for marker in PLACEHOLDER_URL_MARKERS):
                raise FetchFailed("not found", f"{located.key} redirects to a 'photo unavailable' placeholder")

        http_resume(self._session(), located.key, part, timeout=timeout, screen=refuse_placeholder)


# --------------------------------------------------------------------------- Google Cloud Storage


def validate_bucket_name(name: str) -> None:
    """Raise :class:`UserError` unless ``name`` follows Cloud Storage's bucket naming rules."""
    parts = name.split(".")
    ok = (bool(_BUCKET_RE.match(name)) and 3 <= len(name) <= (222 if "." in name else 63)
          and all(0 < len(part) <= 63 for part in parts) and not name.startswith("goog")
          and "google" not in name and not _is_ip(name))
    if not ok:
        raise UserError(f"{name!r} is not a valid bucket name: use 3–63 lowercase letters, digits, "
                        "dashes, underscores or dots, starting and ending with a letter or digit")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _adc_file() -> Path:
    config = os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud"
    return Path(config) / "application_default_credentials.json"


def _on_gce() -> bool:
    """The same quick test google-auth uses on Linux: the DMI product name says Google."""
    try:
        return "Google" in Path("/sys/class/dmi/id/product_name").read_text()
    except OSError:
        return False


def _credential_kind() -> str:
    """"emulator", "key file", "gcloud", "compute engine", "missing key file" or "anonymous"."""
    if os.environ.get(EMULATOR_ENV):
        return "emulator"
    key = os.environ.get(CREDENTIALS_ENV)
    if key:
        return "key file" if Path(key).is_file() else "missing key file"
    if _adc_file().is_file():
        return "gcloud"
    return "compute engine" if _on_gce() else "anonymous"


def credential_status() -> str:
    """One sentence for the dashboard: which Google Cloud Storage access this process has."""
    kind = _credential_kind()
    if kind == "emulator":
        return f"Using the GCS emulator at {os.environ[EMULATOR_ENV]}; no credentials are needed."
    if kind == "key file":
        return f"Application default credentials found: the service-account key in {CREDENTIALS_ENV}."
    if kind == "gcloud":
        return f"Application default credentials found: gcloud's login in {_adc_file()}."
    if kind == "compute engine":
        return "Application default credentials found: this Compute Engine VM's service account."
    if kind == "missing key file":
        return (f"{CREDENTIALS_ENV} points at {os.environ[CREDENTIALS_ENV]}, which does not exist: "
                "only public buckets can be read.")
    return f"Anonymous access only: public buckets can be read; for private ones {CREDENTIALS_HELP}."


def make_client():
    """A ``storage.Client``: emulator or default credentials when present, anonymous otherwise."""
    from google.cloud import storage

    if _credential_kind() in ("emulator", "key file", "gcloud", "compute engine"):
        return storage.Client()
    return storage.Client.create_anonymous_client()


class GcsStore(ImageStore):
    """``gs://bucket/prefix``; one client per thread, the prefix listed once for :meth:`locate`."""

    def __init__(self, bucket: str, prefix: str = ""):
        validate_bucket_name(bucket)
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.spec = f"gs://{bucket}/{self.prefix}".rstrip("/")
        self._local = threading.local()
        self._index: dict[str, ObjectInfo] | None = None
        self._index_lock = threading.Lock()

    def _bucket(self):
        bucket = getattr(self._local, "bucket", None)
        if bucket is None:
            bucket = self._local.bucket = make_client().bucket(self.bucket_name)
        return bucket

    def _full(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def check(self, sample: ImageRef | None = None) -> None:
        with self._explained():
            list(self._bucket().client.list_blobs(self.bucket_name, max_results=1, retry=None, timeout=20))

    def list_objects(self) -> dict[str, ObjectInfo]:
        start = len(self.prefix) + 1 if self.prefix else 0
        with self._explained():
            blobs = self._bucket().client.list_blobs(self.bucket_name, prefix=self._full(""), fields=LIST_FIELDS)
            return {blob.name[start:]: ObjectInfo(int(blob.size or 0), blob.md5_hash) for blob in blobs
                    if not blob.name.endswith("/") and not blob.name.endswith(TEMP_SUFFIXES)}

    def locate(self, image: ImageRef) -> Located:
        with self._index_lock:
            if self._index is None:
                self._index = self.list_objects()
        for name, flag in layout_candidates(image):
            info = self._index.get(name)
            if info is not None:
                return Located(self._full(name), info.size, info.md5, _holds_original(flag, info.size, image))
        raise FetchFailed("missing", f"{image.image_id} is not in {self.spec} (looked for "
                          f"{image.subset}/{image.image_id}.jpg, {image.image_id}.jpg and <host>/<url-path>)")

    def object_location(self, name: str, info: ObjectInfo) -> Located:
        return Located(self._full(name), info.size, info.md5)

    def download(self, located: Located, part: PartFile, timeout: float = 30.0) -> None:
        from google.api_core import exceptions as gexc

        if located.size is not None and part.size >= located.size:
            part.reset()  # a stale or over-long part: the object's size says so
        part.expected_size = located.size
        blob = self._bucket().blob(located.key)
        try:
            blob.download_to_file(part, start=part.size or None, checksum=None, timeout=timeout, retry=None)
        except gexc.NotFound as err:
            raise FetchFailed("missing", f"{located.key} is not in gs://{self.bucket_name}") from err
        except (gexc.Forbidden, gexc.Unauthorized) as err:
            raise FetchFailed("forbidden", f"no permission to read gs://{self.bucket_name}/{located.key}") from err
        except (gexc.ServerError, gexc.TooManyRequests, requests.RequestException, ConnectionError) as err:
            raise TransientError("network", f"gs://{self.bucket_name}/{located.key}: {err}") from err
        if located.size is not None and part.size != located.size:
            raise TransientError("network", f"{located.key}: got {part.size} of {located.size} bytes")
        if located.md5 and part.size == located.size and part.md5 != located.md5:
            part.reset()
            raise TransientError("network", f"{located.key}: the bytes differ from the object's MD5")

    def upload(self, path: Path, name: str) -> ObjectInfo:
        local_md5 = file_md5(path)
        blob = self._bucket().blob(self._full(name))
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with self._explained():
            blob.upload_from_filename(str(path), content_type=content_type, checksum="md5")
        if blob.md5_hash and blob.md5_hash != local_md5:
            raise TransientError("network", f"{name}: the uploaded object's MD5 differs from the file's")
        return ObjectInfo(int(blob.size or path.stat().st_size), blob.md5_hash or local_md5)

    def _explained(self) -> "_GcsErrors":
        return _GcsErrors(self.bucket_name)


class _GcsErrors:
    """Context manager: bucket-wide GCS failures become one sentence (:class:`UserError`)."""

    def __init__(self, bucket: str):
        self.bucket = bucket

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, UserError):
            return False
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        if isinstance(err, auth_exc.GoogleAuthError):
            reason = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
            raise UserError(f"the Google credentials cannot be used ({reason}): check {CREDENTIALS_ENV} "
                            "or run `gcloud auth application-default login`") from err
        if isinstance(err, (gexc.Forbidden, gexc.Unauthorized)):
            if _credential_kind() in ("anonymous", "missing key file", "emulator"):  # anonymous requests
                raise UserError(f"bucket {self.bucket} is private and no Google credentials were found: "
                                f"{CREDENTIALS_HELP}") from err
            raise UserError(f"the Google credentials in use may not access bucket {self.bucket}: grant them "
                            "Storage Object Viewer (to read) or Storage Object Admin (to push)") from err
        if isinstance(err, gexc.NotFound):
            raise UserError(f"bucket {self.bucket} does not exist: check the name after gs://") from err
        if isinstance(err, (requests.ConnectionError, ConnectionError)):
            host = os.environ.get(EMULATOR_ENV) or "storage.googleapis.com"
            raise UserError(f"cannot reach {host} (connection refused or no network): "
                            "check the network connection") from err
        return False


# --------------------------------------------------------------------------- the one entry point


def open_store(spec: str, *, base_url: str | None = None, must_exist: bool = True) -> ImageStore:
    """The store a user names: ``gs://bucket/prefix``, ``urls[:flavour]``, an http(s) mirror or a folder.

    Args:
        spec: ``gs://bucket/prefix``; ``urls``, ``urls:cvdf``, ``urls:original``, ``urls:thumbnail``;
            ``https://mirror/open-images-dataset`` (a CVDF-layout mirror); or a local folder.
        base_url: where URLs point instead of the internet (a mirror, the tests' local server);
            defaults to ``$STUDIO_IMAGE_BASE_URL``.
        must_exist: for a folder, refuse one that does not exist (False for a push target).
    """
    spec = str(spec or "").strip()
    if not spec:
        raise UserError("no image source given: use gs://bucket/prefix, urls[:original|cvdf|thumbnail] or a folder")
    if spec.startswith("gs://"):
        bucket, _, prefix = spec[len("gs://"):].partition("/")
        return GcsStore(bucket, prefix)
    if spec == "urls" or spec.startswith("urls:"):
        return UrlStore(spec[len("urls:"):] or DEFAULT_URL_FLAVOUR, base_url)
    if spec.startswith(("http://", "https://")):
        return UrlStore("cvdf", spec)
    store = FolderStore(Path(spec), must_exist)
    store.check()
    return store
