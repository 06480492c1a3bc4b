"""Getting bytes into a local file safely; every download in the studio goes through here.

:class:`PartFile` (``<name>.part``, renamed only once verified), :func:`retry` (the one retry
policy), :func:`http_resume` (the one HTTP ``Range`` resumer), :func:`receive` (the three put
together for any source) and :func:`download_file` (one big file over HTTP: metadata, weights).
"""
from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests
import urllib3

from pipeline.cli import UserError
from pipeline.progress import ProgressFn

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # bytes asked for per read
RETRIES = 4
BACKOFF_S = 0.5  # before the first retry, doubled each time
TIMEOUT_S = (10, 60)  # connect, read
PART_SUFFIX = ".part"
RETRY_STATUS = (429,)  # besides every 5xx
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")

T = TypeVar("T")
Verify = Callable[[Path], str | None]


class DownloadError(UserError):
    """A download that cannot be completed; the message names the file or URL and the fix."""


class DiskFullError(DownloadError):
    """The local disk is full: every further download would fail too, so a batch stops."""


class TransientError(Exception):
    """Worth retrying: a 5xx answer, a timeout, a dropped connection, a short or garbled transfer."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.attempts = 1  # how many were made, once :func:`retry` gives up


class FetchFailed(Exception):
    """Not worth retrying (404, wrong size, MD5 mismatch, not an image…); a batch goes on without it."""

    def __init__(self, reason: str, detail: str, status: int | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status  # the HTTP status, when that was the problem


# --------------------------------------------------------------------------- MD5


def md5_digest(path: str | os.PathLike) -> "hashlib._Hash":
    """The MD5 of a file, read in chunks (``.hexdigest()`` for Open Images tables, base64 for GCS)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5")


def md5_b64(digest: "hashlib._Hash") -> str:
    """A hashlib MD5 as Open Images and GCS write it: base64 of the 16 binary bytes."""
    return base64.b64encode(digest.digest()).decode("ascii")


def file_md5(path: str | os.PathLike) -> str:
    """Base64 MD5 of a file (as in OriginalMD5 and GCS ``md5Hash``)."""
    return md5_b64(md5_digest(path))


# --------------------------------------------------------------------------- .part files


def _write_chunk(handle, data: bytes) -> None:
    """The one place downloaded bytes reach the disk (tests make it raise ENOSPC)."""
    handle.write(data)


def disk_full_error(folder: Path) -> DiskFullError:
    """The one sentence for a full disk under ``folder``."""
    return DiskFullError(f"the disk holding {folder} is full (no space left on device): "
                         "free some space and run the same command again, finished files are kept")


class PartFile:
    """``<final>.part``: an append-only download target that hashes what it holds.

    ``open(resume=True)`` continues an existing part (so HTTP ``Range`` can carry on);
    ``commit()`` fsyncs and renames onto the final name; ``discard()`` deletes the part.
    """

    def __init__(self, final: str | os.PathLike):
        self.final = Path(final)
        self.path = self.final.with_name(self.final.name + PART_SUFFIX)
        self.size = 0
        self.expected_size: int | None = None  # the full size, once a source has said it
        self._md5 = hashlib.md5()
        self._handle = None

    def open(self, resume: bool = True) -> "PartFile":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._md5, self.size = hashlib.md5(), 0
        if resume and self.path.exists():
            self._md5, self.size = md5_digest(self.path), self.path.stat().st_size
        self._handle = open(self.path, "ab" if resume else "wb", buffering=0)
        return self

    def write(self, data: bytes) -> int:
        try:
            _write_chunk(self._handle, data)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise disk_full_error(self.path.parent) from err
            raise
        self._md5.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def reset(self) -> None:
        """Start again from byte 0 (the server ignored ``Range``, or the part was stale)."""
        self._handle.truncate(0)
        self._md5, self.size, self.expected_size = hashlib.md5(), 0, None

    @property
    def md5(self) -> str:
        return md5_b64(self._md5)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def commit(self) -> None:
        try:
            os.fsync(self._handle.fileno())
            self.close()
            os.replace(self.path, self.final)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise disk_full_error(self.path.parent) from err
            raise

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the retry policy


def retry(action: Callable[[], T], *, retries: int = RETRIES, backoff: float = BACKOFF_S) -> T:
    """``action()``, tried again after each :class:`TransientError`: waits ``backoff``, then 2×, 4×…

    Raises:
        TransientError: the last one (``attempts`` set) when ``retries`` more attempts failed too.
    """
    retries = max(0, retries)
    for attempt in range(retries + 1):
        try:
            return action()
        except TransientError as err:
            if attempt == retries:
                err.attempts = retries + 1
                raise
            log.info("%s; attempt %d of %d", err, attempt + 2, retries + 1)
            time.sleep(backoff * 2 ** attempt)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- the Range resumer


def parse_content_range(value: str) -> tuple[int | None, int | None] | None:
    """``(first byte, full size)`` of a ``Content-Range`` header; None when it is not one.

    ``bytes 100-199/1000`` → ``(100, 1000)``; ``bytes */1000`` (a 416) → ``(None, 1000)``;
    an unknown full size (``/*``) is None.
    """
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def http_resume(session, url: str, part: PartFile, *, timeout: float | tuple[float, float] = TIMEOUT_S,
                expected: int | None = None, chunk_size: int = CHUNK,
                screen: Callable[[requests.Response], None] | None = None, progress: ProgressFn = None) -> None:
    """One GET appending the bytes ``part`` lacks (a ``Range`` request when it holds some).

    Sets ``part.expected_size`` to the full size when the server says it (or ``expected``).

    Args:
        session: a ``requests.Session`` (or the ``requests`` module).
        expected: the exact size, when known: a part that long needs no request, and a server
            announcing another size is refused.
        screen: ``screen(answer)`` may raise :class:`FetchFailed` before the body is read.
        progress: ``progress(bytes in the part, full size or 0, final name)`` after each read.

    Raises:
        TransientError: a 5xx or 429, a timeout, a drop (the bytes before it are kept), a bad range.
        FetchFailed: another 4xx, a web page, a wrong size, an unusable URL.
    """
    if expected is not None and part.size > expected:
        part.reset()  # longer than the file: not a part of it
    if expected and part.size == expected:
        part.expected_size = expected
        return
    # identity: byte ranges of the file itself, not of a compressed stream
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={part.size}-"} if part.size else {})}
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as answer:
            if screen:
                screen(answer)
            if _prepare(answer, part, url, expected):
                _read_body(answer.raw, part, url, chunk_size, progress)
    except requests.Timeout as err:
        raise TransientError("timeout", f"{url} timed out after {_seconds(timeout)}") from err
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
        raise TransientError("network", f"{url}: {type(err).__name__}: {err}") from err
    except requests.RequestException as err:  # an invalid URL, too many redirects…
        raise FetchFailed("http error", f"{type(err).__name__}: {err}") from err
    if part.expected_size is not None and part.size < part.expected_size:
        raise TransientError("network", f"{url}: connection dropped at byte {part.size} of {part.expected_size}")


def _seconds(timeout: float | tuple[float, float]) -> str:
    return f"{timeout[-1] if isinstance(timeout, tuple) else timeout:g} s"


def _prepare(answer: requests.Response, part: PartFile, url: str, expected: int | None) -> bool:
    """Turn the status into what happens next and ready ``part`` for the body; False: it is whole."""
    code = answer.status_code
    if code == 416 and part.size:
        total = (parse_content_range(answer.headers.get("Content-Range", "")) or (None, None))[1]
        if total == part.size and expected in (None, total):
            part.expected_size = total
            return False
        part.reset()
        raise TransientError("range", f"HTTP 416 for {url}: the partial file is not part of it; starting again")
    if code >= 500 or code in RETRY_STATUS:
        raise TransientError("server error", f"HTTP {code} for {url}")
    if code not in (200, 206):
        raise FetchFailed("not found" if code in (404, 410) else "http error", f"HTTP {code} for {url}", code)
    if "text/html" in answer.headers.get("Content-Type", ""):
        raise FetchFailed("html page", f"{url} answered with a web page", code)
    if code == 206:
        first, total = parse_content_range(answer.headers.get("Content-Range", "")) or (None, None)
    else:
        length = answer.headers.get("Content-Length", "")
        first, total = 0, (int(length) if length.isdigit() else None)
    if total is not None and expected is not None and total != expected:
        raise FetchFailed("size mismatch", f"{url} serves {total} bytes but {part.final.name} should be {expected}",
                          code)
    if first != part.size:
        part.reset()  # a 200 to a Range request carries the whole file
        if code == 206:
            raise TransientError("range", f"{url} answered a Range request with the wrong bytes; starting again")
    part.expected_size = total if total is not None else expected
    return True


def _read_body(raw, part: PartFile, url: str, chunk_size: int, progress: ProgressFn) -> None:
    """Copy the body into ``part`` as it arrives.

    ``read1`` hands over every byte that came before a drop, so the next ``Range`` request starts
    at the last byte received. (``iter_content`` buffers up to a chunk and loses it when the
    connection breaks, so the resume would restart from the last full chunk.)
    """
    while True:
        try:
            chunk = raw.read1(chunk_size)
        except (urllib3.exceptions.ReadTimeoutError, socket.timeout) as err:
            raise TransientError("timeout", f"{url} timed out at byte {part.size}") from err
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
            raise TransientError("network", f"{url}: connection dropped at byte {part.size} ({err})") from err
        if not chunk:
            return
        part.write(chunk)
        if progress:
            progress(part.size, part.expected_size or 0, part.final.name)


# --------------------------------------------------------------------------- part + retry + check + rename


def receive(dest: str | os.PathLike, fill: Callable[[PartFile], None],
            check: Callable[[PartFile], T] | None = None, *, resume: bool = True, retries: int = RETRIES,
            backoff: float = BACKOFF_S) -> T | None:
    """Fill ``<dest>.part`` with ``fill(part)`` under :func:`retry`, ``check`` it, rename it to ``dest``.

    ``fill`` appends from ``part.size`` on (any source: :func:`http_resume`, a bucket, a folder).
    A resumed part that fails ``check`` is fetched once more from byte 0: it may be a piece of
    another file. Returns what ``check`` returns.

    Raises:
        TransientError: still failing after the retries; a part with bytes stays for the next run.
        FetchFailed: not worth retrying, or refused by ``check`` (which raises it); the part is deleted.
        DiskFullError: the part stays.
    """
    part = PartFile(dest).open(resume=resume)
    try:
        fresh = part.size == 0
        while True:
            retry(lambda: fill(part), retries=retries, backoff=backoff)
            try:
                result = check(part) if check else None
            except FetchFailed:
                if fresh:
                    raise
                fresh = True
                part.reset()
                continue
            part.commit()
            return result
    except FetchFailed:
        part.discard()
        raise
    except TransientError:
        if part.size == 0:
            part.discard()  # nothing to resume
        raise
    finally:
        part.close()


# --------------------------------------------------------------------------- one big file over HTTP


def download_file(url: str, dest: str | os.PathLike, *, expected_bytes: int | None = None,
                  verify: Verify | None = None, retries: int = RETRIES, backoff: float = BACKOFF_S,
                  timeout: float | tuple[float, float] = TIMEOUT_S, chunk_size: int = CHUNK,
                  progress: ProgressFn = None) -> Path:
    """Download ``url`` to ``dest`` through ``<dest>.part``, resuming and retrying; return ``dest``.

    A ``dest`` that already has ``expected_bytes`` and passes ``verify`` is kept without a request.

    Args:
        url: what to fetch (http or https).
        dest: the final path; its folder is created.
        expected_bytes: the exact size, when known: a server announcing another size is refused.
        verify: ``verify(path)`` → a sentence saying what is wrong with the file, or None when it is
            good; called on an existing ``dest`` and on the finished part before the rename.
        retries, backoff: see :func:`retry`. timeout: seconds for ``requests`` (connect, read).
        chunk_size: bytes asked for per read.
        progress: ``progress(done_bytes, total_bytes, dest name)`` (total 0 when unknown).

    Raises:
        DownloadError: an HTTP error, a web page, a wrong size or a failed check (the part is
            deleted), a full disk, or still failing after ``retries`` (the part is kept).
    """
    dest = Path(dest)
    if _already_complete(dest, expected_bytes, verify):
        log.info("%s already downloaded and verified", dest.name)
        return dest

    def check(part: PartFile) -> None:
        if expected_bytes is not None and part.size != expected_bytes:
            problem = f"it has {part.size} bytes, it should have {expected_bytes}"
        else:
            problem = verify(part.path) if verify else None
        if problem:
            raise FetchFailed("refused", problem)

    with requests.Session() as session:
        try:
            receive(dest, lambda part: http_resume(session, url, part, timeout=timeout, expected=expected_bytes,
                                                   chunk_size=chunk_size, progress=progress),
                    check, retries=retries, backoff=backoff)
        except TransientError as err:
            raise DownloadError(f"could not download {dest.name} after {err.attempts} attempts ({err}); "
                                "run the command again to resume") from None
        except FetchFailed as err:
            raise DownloadError(_refusal(url, dest, err)) from None
    return dest


def _already_complete(dest: Path, expected: int | None, verify: Verify | None) -> bool:
    if not dest.is_file() or (expected is not None and dest.stat().st_size != expected):
        return False
    return verify is None or verify(dest) is None


def _refusal(url: str, dest: Path, err: FetchFailed) -> str:
    """One sentence for a download that will not work by trying again."""
    if err.reason == "refused":
        return (f"the download of {dest.name} from {url} was refused and deleted ({err.detail}); "
                "check the URL or the mirror, then run the command again")
    if err.reason == "html page":
        return (f"{url} answered with a web page instead of {dest.name}; "
                f"download it in a browser and put it at {dest}")
    if err.reason == "size mismatch":
        return f"{err.detail}; check the name or the mirror"
    if err.status is not None:
        return f"{url} answered HTTP {err.status}; check the name or the mirror"
    return f"cannot download {url} ({err.detail}); check the URL or the mirror"
