"""pipeline.transfer: PartFile, the retry policy, the Range resumer and download_file, against a real local HTTP server."""
from __future__ import annotations

import base64
import errno
import hashlib
import time

import pytest
import requests

from pipeline import transfer
from pipeline.cli import UserError
from pipeline.transfer import (DiskFullError, DownloadError, FetchFailed, PartFile, TransientError, download_file,
                               file_md5, http_resume, md5_digest, parse_content_range, receive, retry)
from tests.support.httpserver import FileServer

DATA = bytes(range(256)) * 1000  # 256,000 bytes
CHUNK = 4096
QUICK = {"backoff": 0.01, "chunk_size": CHUNK}


def _fetch(server: FileServer, dest, path: str = "/f.bin", **kwargs):
    return download_file(server.url + path, dest, **{**QUICK, **kwargs})


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- helpers


def test_parse_content_range():
    assert parse_content_range("") is None
    assert parse_content_range("items 0-1/2") is None
    assert parse_content_range("bytes 100-199/1000") == (100, 1000)
    assert parse_content_range("bytes 0-9/*") == (0, None)
    assert parse_content_range("bytes */1000") == (None, 1000)


def test_md5_digest(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert md5_digest(path).hexdigest() == "d41d8cd98f00b204e9800998ecf8427e"
    path.write_bytes(b"abc")
    assert md5_digest(path).hexdigest() == "900150983cd24fb0d6963f7d28e17f72"


def test_the_errors_are_user_errors():
    assert issubclass(DownloadError, UserError) and issubclass(DiskFullError, DownloadError)


# --------------------------------------------------------------------------- PartFile


def test_part_file_resumes_hashes_and_commits(tmp_path):
    final = tmp_path / "a.jpg"
    part = PartFile(final).open()
    part.write(b"hello ")
    part.close()
    assert not final.exists() and part.path.read_bytes() == b"hello "
    again = PartFile(final).open(resume=True)
    assert again.size == 6
    again.write(b"world")
    assert again.md5 == base64.b64encode(hashlib.md5(b"hello world").digest()).decode()
    again.commit()
    assert final.read_bytes() == b"hello world" and not again.path.exists()
    assert file_md5(final) == again.md5


def test_part_file_reset_and_discard(tmp_path):
    part = PartFile(tmp_path / "b.jpg").open()
    part.write(b"stale")
    part.reset()
    part.write(b"new")
    part.close()
    assert part.path.read_bytes() == b"new" and part.size == 3
    part.discard()
    assert list(tmp_path.iterdir()) == []


def test_part_file_full_disk_is_one_sentence(tmp_path, monkeypatch):
    def full(handle, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer, "_write_chunk", full)
    part = PartFile(tmp_path / "c.jpg").open()
    with pytest.raises(DiskFullError, match=r"the disk holding .* is full \(no space left on device\)"):
        part.write(b"x")
    part.discard()


# --------------------------------------------------------------------------- the retry policy


def test_retry_with_no_retries_tries_once_and_says_so():
    calls = []

    def fail():
        calls.append(time.monotonic())
        raise TransientError("network", "dropped")

    with pytest.raises(TransientError, match="^dropped$") as caught:
        retry(fail, retries=0, backoff=5.0)
    assert len(calls) == 1 and caught.value.attempts == 1


def test_retry_does_not_retry_what_is_not_transient():
    calls = []

    def refuse():
        calls.append(1)
        raise FetchFailed("not found", "HTTP 404")

    with pytest.raises(FetchFailed):
        retry(refuse, retries=3, backoff=0.01)
    assert calls == [1]


def test_retry_backs_off_exponentially_against_a_real_server(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        for _ in range(3):
            server.fail("/f.bin", 503)
        with requests.Session() as session:
            part = PartFile(tmp_path / "f.bin").open()
            started = time.monotonic()
            retry(lambda: http_resume(session, server.url + "/f.bin", part), retries=3, backoff=0.1)
            waited = time.monotonic() - started
            part.close()
        assert len(server.requests) == 4
    assert waited >= 0.1 + 0.2 + 0.4  # 0.1 s, then 0.2 s, then 0.4 s
    assert part.path.read_bytes() == DATA


# --------------------------------------------------------------------------- the Range resumer


def test_an_empty_file_is_received_whole(tmp_path):
    with FileServer({"/empty": b""}) as server, requests.Session() as session:
        receive(tmp_path / "empty", lambda part: http_resume(session, server.url + "/empty", part))
        assert server.requests == [("/empty", None)]
    assert (tmp_path / "empty").read_bytes() == b"" and _names(tmp_path) == ["empty"]


def test_a_part_that_is_the_whole_file_gets_416_and_is_kept(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA)
    with FileServer({"/f.bin": DATA}) as server, requests.Session() as session:
        part = PartFile(tmp_path / "f.bin").open()
        http_resume(session, server.url + "/f.bin", part)
        part.close()
        assert server.requests == [("/f.bin", f"bytes={len(DATA)}-")]
    assert (part.size, part.expected_size) == (len(DATA), len(DATA))


def test_a_resumed_part_that_fails_the_check_is_fetched_once_more_from_byte_0(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * 100)  # not the start of this file
    good = hashlib.md5(DATA).hexdigest()
    with FileServer({"/f.bin": DATA}) as server:
        _fetch(server, tmp_path / "f.bin",
               verify=lambda path: None if md5_digest(path).hexdigest() == good else "its MD5 is wrong")
        assert server.requests == [("/f.bin", "bytes=100-"), ("/f.bin", None)]
    assert (tmp_path / "f.bin").read_bytes() == DATA and _names(tmp_path) == ["f.bin"]


# --------------------------------------------------------------------------- skip and fresh downloads


def test_an_already_complete_file_is_skipped_without_a_request(tmp_path):
    (tmp_path / "f.bin").write_bytes(DATA)
    checked = []
    with FileServer({}) as server:
        path = _fetch(server, tmp_path / "f.bin", expected_bytes=len(DATA), verify=lambda p: checked.append(p.name))
        assert server.requests == []
    assert path == tmp_path / "f.bin" and checked == ["f.bin"]


def test_an_existing_file_that_fails_verify_is_downloaded_again(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x" * len(DATA))
    good = hashlib.md5(DATA).hexdigest()

    def verify(path):
        return None if md5_digest(path).hexdigest() == good else "its MD5 is wrong"

    with FileServer({"/f.bin": DATA}) as server:
        _fetch(server, tmp_path / "f.bin", expected_bytes=len(DATA), verify=verify)
        assert server.requests == [("/f.bin", None)]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_a_fresh_download_reports_progress_and_leaves_no_part(tmp_path):
    seen = []
    with FileServer({"/f.bin": DATA}) as server:
        path = _fetch(server, tmp_path / "sub" / "f.bin", progress=lambda d, t, m: seen.append((d, t, m)))
    assert path.read_bytes() == DATA and _names(path.parent) == ["f.bin"]
    assert 0 < seen[0][0] <= CHUNK and seen[0][1:] == (len(DATA), "f.bin")
    assert [done for done, _, _ in seen] == sorted({done for done, _, _ in seen})  # each read adds bytes
    assert seen[-1] == (len(DATA), len(DATA), "f.bin")


# --------------------------------------------------------------------------- resume and retries


def test_a_dropped_connection_resumes_from_the_last_byte_received(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        server.fail("/f.bin", drop_after=10 * CHUNK + 100)  # not a whole number of chunks: none is lost
        _fetch(server, tmp_path / "f.bin", expected_bytes=len(DATA))
        assert server.requests == [("/f.bin", None), ("/f.bin", f"bytes={10 * CHUNK + 100}-")]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_a_part_left_by_an_earlier_run_is_resumed(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA[:12345])
    with FileServer({"/f.bin": DATA}) as server:
        _fetch(server, tmp_path / "f.bin")
        assert server.requests == [("/f.bin", "bytes=12345-")]
    assert (tmp_path / "f.bin").read_bytes() == DATA and _names(tmp_path) == ["f.bin"]


def test_a_whole_part_is_checked_and_renamed_without_a_request(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA)
    with FileServer({}) as server:
        _fetch(server, tmp_path / "f.bin", expected_bytes=len(DATA))
        assert server.requests == []
    assert (tmp_path / "f.bin").read_bytes() == DATA and _names(tmp_path) == ["f.bin"]


def test_a_server_ignoring_range_starts_the_part_again(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes")
    with FileServer({"/f.bin": DATA}) as server:
        server.fail("/f.bin", body=DATA, content_type="application/octet-stream")  # a 200 to a Range request
        _fetch(server, tmp_path / "f.bin", expected_bytes=len(DATA))
        assert server.requests == [("/f.bin", "bytes=11-")]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_a_part_longer_than_the_file_gets_416_and_starts_again(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA + b"more")
    with FileServer({"/f.bin": DATA}) as server:
        _fetch(server, tmp_path / "f.bin")
        assert server.requests == [("/f.bin", f"bytes={len(DATA) + 4}-"), ("/f.bin", None)]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_a_500_then_success(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        server.fail("/f.bin", 500)
        _fetch(server, tmp_path / "f.bin", expected_bytes=len(DATA))
        assert server.requests == [("/f.bin", None), ("/f.bin", None)]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_a_server_that_keeps_failing_is_one_sentence_after_the_retries(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        for _ in range(3):
            server.fail("/f.bin", 503)
        with pytest.raises(DownloadError) as caught:
            _fetch(server, tmp_path / "f.bin", retries=2)
        assert len(server.requests) == 3
    assert str(caught.value) == (f"could not download f.bin after 3 attempts (HTTP 503 for {server.url}/f.bin); "
                                 "run the command again to resume")


def test_a_timeout_is_retried(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        server.fail("/f.bin", delay=1.0)
        _fetch(server, tmp_path / "f.bin", timeout=(5, 0.3))
        assert len(server.requests) == 2
    assert (tmp_path / "f.bin").read_bytes() == DATA


# --------------------------------------------------------------------------- refusals


def test_a_404_is_one_sentence(tmp_path):
    with FileServer({}) as server, pytest.raises(DownloadError) as caught:
        _fetch(server, tmp_path / "f.bin")
    assert str(caught.value) == f"{server.url}/f.bin answered HTTP 404; check the name or the mirror"
    assert _names(tmp_path) == []


def test_an_html_page_is_refused(tmp_path):
    with FileServer({"/f.bin": DATA}) as server, pytest.raises(DownloadError) as caught:
        server.fail("/f.bin", body=b"<html>sign in</html>")
        _fetch(server, tmp_path / "f.bin")
    assert str(caught.value) == (f"{server.url}/f.bin answered with a web page instead of f.bin; "
                                 f"download it in a browser and put it at {tmp_path / 'f.bin'}")
    assert _names(tmp_path) == []


def test_a_wrong_size_is_refused_and_the_part_deleted(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA[:100])
    with FileServer({"/f.bin": DATA}) as server, pytest.raises(DownloadError) as caught:
        _fetch(server, tmp_path / "f.bin", expected_bytes=len(DATA) + 1)
    assert str(caught.value) == (f"{server.url}/f.bin serves {len(DATA)} bytes but f.bin should be "
                                 f"{len(DATA) + 1}; check the name or the mirror")
    assert _names(tmp_path) == []


def test_a_failed_verify_deletes_the_part_and_keeps_no_file(tmp_path):
    with FileServer({"/f.bin": DATA}) as server, pytest.raises(DownloadError) as caught:
        _fetch(server, tmp_path / "f.bin", verify=lambda path: f"{path.name} is not what we wanted")
    assert str(caught.value) == (f"the download of f.bin from {server.url}/f.bin was refused and deleted "
                                 "(f.bin.part is not what we wanted); check the URL or the mirror, then run the "
                                 "command again")
    assert _names(tmp_path) == []


def test_an_invalid_url_is_one_sentence(tmp_path):
    with pytest.raises(DownloadError, match="cannot download nope://f.bin .*; check the URL or the mirror"):
        download_file("nope://f.bin", tmp_path / "f.bin")
