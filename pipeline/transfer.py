"""One resumable, verified HTTP download of one big file: :func:`download_file`.

The bytes go to ``<dest>.part``; a broken connection resumes it with an HTTP ``Range`` request,
and the part gets its final name (an atomic rename) only after its size and the caller's check
pass. Used for the official metadata files (checked by MD5) and the pretrained weights (checked
by their header); the per-image fetches in :mod:`pipeline.images.stores` share :func:`md5_digest` and
:func:`parse_content_range`.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from pipeline.cli import UserError
from pipeline.progress import ProgressFn

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # small, so a dropped connection loses little
RETRIES = 4
BACKOFF_S = 0.5
TIMEOUT_S = (10, 60)  # connect, read
PART_SUFFIX = ".part"
RETRY_STATUS = (429,)  # besides every 5xx
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")

Verify = Callable[[Path], str | None]


class DownloadError(UserError):
    """A download that cannot be completed; the message names the file or URL and the fix."""


class _Retry(Exception):
    """Worth another attempt: a 5xx answer, a timeout, a dropped connection, a stale part."""


_RETRYABLE = (_Retry, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def md5_digest(path: str | os.PathLike) -> "hashlib._Hash":
    """The MD5 of a file, read in chunks (``.hexdigest()`` for Open Images tables, base64 for GCS)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5")


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
        retries: further attempts after 5xx answers, timeouts and dropped connections.
        backoff: seconds before the first retry, doubled each time.
        timeout: seconds for ``requests`` (connect, read).
        chunk_size: bytes per write; a dropped connection loses at most this much.
        progress: ``progress(done_bytes, total_bytes, dest name)`` (total 0 when unknown).

    Raises:
        DownloadError: an HTTP error, a web page, a wrong size or a failed check (the part is
            deleted), or still failing after ``retries``.
    """
    dest = Path(dest)
    if _already_complete(dest, expected_bytes, verify):
        log.info("%s already downloaded and verified", dest.name)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    job = _Job(url, dest, expected_bytes, timeout, chunk_size, progress)
    _fetch_with_retries(job, retries, backoff)
    _accept(job, verify)
    return dest


def _already_complete(dest: Path, expected: int | None, verify: Verify | None) -> bool:
    if not dest.is_file() or (expected is not None and dest.stat().st_size != expected):
        return False
    return verify is None or verify(dest) is None


@dataclass
class _Job:
    """What one download needs on every attempt."""

    url: str
    dest: Path
    expected: int | None
    timeout: float | tuple[float, float]
    chunk_size: int
    progress: ProgressFn

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + PART_SUFFIX)

    def fail(self, problem: str) -> DownloadError:
        """Delete the part; the error to raise."""
        self.part.unlink(missing_ok=True)
        return DownloadError(problem)


def _fetch_with_retries(job: _Job, retries: int, backoff: float) -> None:
    for attempt in range(retries + 1):
        try:
            _fetch_once(job)
            return
        except _RETRYABLE as err:
            if attempt == retries:
                raise DownloadError(f"could not download {job.dest.name} from {job.url} after {retries + 1} "
                                    f"attempts ({err}); run the command again to resume") from None
            log.warning("download of %s interrupted (%s); attempt %d of %d", job.dest.name, err,
                        attempt + 2, retries + 1)
            time.sleep(backoff * 2 ** attempt)
        except requests.RequestException as err:  # an invalid URL, too many redirects…
            raise DownloadError(f"cannot download {job.url} ({err}); check the URL or the mirror") from err


def _fetch_once(job: _Job) -> None:
    """One request appending the missing bytes to the part.

    Raises:
        _Retry: worth another attempt (including "the body ended early").
    """
    have = job.part.stat().st_size if job.part.exists() else 0
    if job.expected is not None and have > job.expected:
        job.part.unlink()  # longer than the file: not a part of it
        have = 0
    if have and have == job.expected:
        return  # the part is whole: only the checks are left
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    with requests.get(job.url, headers=headers, stream=True, timeout=job.timeout) as answer:
        start, total = _start_and_total(answer, job, have)
        if start is None:
            return  # a 416 for a part that already holds the whole file
        done = _write_body(answer, job, start, total or job.expected or 0)
    full = job.expected if job.expected is not None else total
    if full is not None and done < full:
        raise _Retry(f"the connection closed at byte {done} of {full}")


def _start_and_total(answer: requests.Response, job: _Job, have: int) -> tuple[int | None, int | None]:
    """Where the body starts in the file (None: nothing to fetch) and the file's full size."""
    code = answer.status_code
    if code == 416 and have:
        return _range_not_satisfiable(answer, job, have)
    if code >= 500 or code in RETRY_STATUS:
        raise _Retry(f"HTTP {code}")
    if code not in (200, 206):
        raise job.fail(f"{job.url} answered HTTP {code}; check the name or the mirror")
    if "text/html" in answer.headers.get("Content-Type", ""):
        raise job.fail(f"{job.url} answered with a web page instead of {job.dest.name}; "
                       f"download it in a browser and put it at {job.dest}")
    start, total = _body_range(answer)
    if code == 206 and start != have:
        job.part.unlink(missing_ok=True)
        raise _Retry(f"asked for bytes from {have}, got bytes from {start}; starting again")
    if total is not None and job.expected is not None and total != job.expected:
        raise job.fail(f"{job.url} serves {total} bytes but {job.dest.name} should be {job.expected}; "
                       f"check the name or the mirror")
    return start, total


def _range_not_satisfiable(answer: requests.Response, job: _Job, have: int) -> tuple[None, int]:
    """A 416: the part is whole when the server says the file has exactly ``have`` bytes."""
    total = (parse_content_range(answer.headers.get("Content-Range", "")) or (None, None))[1]
    if total == have:
        return None, have
    job.part.unlink()
    raise _Retry("the partial file does not match the server's file; starting again")


def _body_range(answer: requests.Response) -> tuple[int | None, int | None]:
    """First byte and full size the answer announces: Content-Range (206) or Content-Length (200)."""
    if answer.status_code == 206:
        return parse_content_range(answer.headers.get("Content-Range", "")) or (None, None)
    length = answer.headers.get("Content-Length", "")
    return 0, (int(length) if length.isdigit() else None)


def _write_body(answer: requests.Response, job: _Job, start: int, total: int) -> int:
    """Write the body at ``start`` (0 truncates the part); the part's size afterwards."""
    done = start
    try:
        with open(job.part, "ab" if start else "wb") as handle:
            for chunk in answer.iter_content(job.chunk_size):
                handle.write(chunk)
                done += len(chunk)
                if job.progress:
                    job.progress(min(done, total) if total else done, total, job.dest.name)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DownloadError(f"the disk holding {job.part.parent} is full: free some space and run "
                                f"the command again to resume {job.dest.name}") from err
        raise
    return done


def _accept(job: _Job, verify: Verify | None) -> None:
    """Check the finished part (size, then ``verify``) and rename it; delete it when refused."""
    size = job.part.stat().st_size
    if job.expected is not None and size != job.expected:
        problem = f"it has {size} bytes, it should have {job.expected}"
    else:
        problem = verify(job.part) if verify else None
    if problem:
        raise job.fail(f"the download of {job.dest.name} from {job.url} was refused and deleted ({problem}); "
                       "check the URL or the mirror, then run the command again")
    os.replace(job.part, job.dest)
