"""fetch-images against a real HTTP server with faults, a real GCS emulator and local folders."""
from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import socket
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import transfer
from pipeline.__main__ import COMMAND_MODULES
from pipeline.cli import UserError, main
from pipeline.images.fetch import FAILURE_COLUMNS, fetch_images
from pipeline.atomic import read_json, write_json
from pipeline.workspace import Workspace
from tests.support.httpserver import FileServer

FAST = {"retries": 2, "backoff": 0.01, "timeout": 2.0, "workers": 4}


def jpeg(seed: int, size=(64, 48)) -> bytes:
    """A small, unique, valid JPEG (noise, so it is a few KB)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def image_row(image_id: str, data: bytes | None, subset: str = "train", md5: str | None = None) -> dict:
    return {"ImageID": image_id, "Subset": subset,
            "OriginalURL": f"https://farm1.staticflickr.com/42/{image_id}_o.jpg",
            "Thumbnail300KURL": f"https://c1.staticflickr.com/1/42/{image_id}_z.jpg",
            "OriginalSize": len(data) if data is not None else 0,
            "OriginalMD5": md5 if md5 is not None else (b64md5(data) if data is not None else ""),
            "Rotation": 0.0, "License": "", "Author": "", "Title": "", "IsNegative": False, "NumBoxes": 1}


def make_dataset(root, rows: list[dict], slug: str = "boat") -> Workspace:
    ws = Workspace.open(root)
    folder = ws.dataset_dir(slug)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(image_row("x", b"").keys())).to_parquet(folder / "images.parquet")
    write_json(folder / "dataset.json", {"name": slug, "slug": slug, "created": "2026-11-24T00:00:00Z"})
    return ws


def files_in(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


IDS = ["000a0000000000a1", "000a0000000000a2", "000a0000000000a3"]
DATA = {image_id: jpeg(i) for i, image_id in enumerate(IDS)}


def cvdf_server(**kwargs) -> FileServer:
    return FileServer(files={f"/train/{i}.jpg": DATA[i] for i in IDS}, **kwargs)


def cvdf_dataset(tmp_path) -> Workspace:
    return make_dataset(tmp_path / "ws", [image_row(i, DATA[i]) for i in IDS])


# ----------------------------------------------------------------- empty and bad input first


def test_empty_dataset(tmp_path):
    ws = make_dataset(tmp_path / "ws", [])
    report = fetch_images(ws, "boat", "urls:cvdf", base_url="http://127.0.0.1:9", **FAST)
    assert (report.images, report.fetched, report.skipped, report.failed) == (0, 0, 0, 0)
    assert list(report.failures.columns) == FAILURE_COLUMNS and report.failures.empty
    assert read_json(ws.dataset_dir("boat") / "dataset.json")["fetch"]["images"] == 0


def test_unknown_dataset(tmp_path):
    with pytest.raises(UserError, match="dataset 'nope' has no images.parquet"):
        fetch_images(Workspace.open(tmp_path / "ws"), "nope", "urls")


def test_no_network_is_one_sentence(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match=r"cannot reach 127\.0\.0\.1"):
        fetch_images(cvdf_dataset(tmp_path), "boat", "urls:cvdf", base_url=f"http://127.0.0.1:{port}", **FAST)


def test_full_disk_stops_with_one_sentence_and_no_final_file(tmp_path, monkeypatch):
    def full(handle, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer, "_write_chunk", full)
    ws = cvdf_dataset(tmp_path)
    with cvdf_server() as server, pytest.raises(UserError, match="is full .*finished files are kept"):
        fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
    assert [p.name for p in (ws.dataset_dir("boat") / "originals").glob("*.jpg")] == []


# ----------------------------------------------------------------- HTTP: success, resume, faults


def test_cvdf_urls_fetch_and_record(tmp_path):
    ws = cvdf_dataset(tmp_path)
    calls = []
    with cvdf_server() as server:
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url,
                              progress=lambda d, t, m: calls.append((d, t)), **FAST)
    assert (report.fetched, report.skipped, report.failed) == (3, 0, 0)
    assert report.verified == {"size": 3, "decode": 3}
    assert files_in(ws.dataset_dir("boat") / "originals") == {f"{i}.jpg": DATA[i] for i in IDS}
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    record = read_json(ws.dataset_dir("boat") / "dataset.json")
    assert record["name"] == "boat"  # read-modify-write keeps the rest
    assert {k: record["fetch"][k] for k in ("images", "fetched", "skipped", "failed", "verified", "failures")} == \
        {"images": 3, "fetched": 3, "skipped": 0, "failed": 0, "verified": {"decode": 3, "size": 3}, "failures": []}


def test_second_run_skips_without_downloading(tmp_path):
    ws = cvdf_dataset(tmp_path)
    with cvdf_server() as server:
        fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
        before = len(server.requests)
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
        image_gets = [r for r in server.requests[before:] if r[0].endswith(".jpg")]
    assert (report.fetched, report.skipped) == (0, 3)
    assert image_gets == [(f"/train/{IDS[0]}.jpg", None)]  # only the reachability check (a HEAD)


def test_404_is_reported_and_batch_goes_on(tmp_path):
    ws = make_dataset(tmp_path / "ws", [image_row(i, DATA[i]) for i in IDS] + [image_row("000a0000000000ff", b"x")])
    with cvdf_server() as server:
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
    assert (report.fetched, report.failed) == (3, 1)
    assert report.failures.to_dict("records") == [{
        "ImageID": "000a0000000000ff", "reason": "not found",
        "detail": f"HTTP 404 for {server.url}/train/000a0000000000ff.jpg"}]
    assert sorted(files_in(ws.dataset_dir("boat") / "originals")) == [f"{i}.jpg" for i in IDS]
    assert read_json(ws.dataset_dir("boat") / "dataset.json")["fetch"]["failures_by_reason"] == {"not found": 1}


def test_500_then_success(tmp_path):
    ws = cvdf_dataset(tmp_path)
    path = f"/train/{IDS[1]}.jpg"
    with cvdf_server() as server:
        server.fail(path, 500)
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
        tries = [r for r in server.requests if r[0] == path]
    assert (report.fetched, report.failed) == (3, 0)
    assert len(tries) == 2
    assert (ws.dataset_dir("boat") / "originals" / f"{IDS[1]}.jpg").read_bytes() == DATA[IDS[1]]


def test_500_forever_fails_after_retries_and_leaves_nothing_final(tmp_path):
    ws = cvdf_dataset(tmp_path)
    path = f"/train/{IDS[1]}.jpg"  # not the first image: the reachability check asks for that one
    with cvdf_server() as server:
        for _ in range(3):
            server.fail(path, 503)
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
    assert report.failures[["ImageID", "reason"]].values.tolist() == [[IDS[1], "server error"]]
    assert report.failures.loc[0, "detail"] == f"HTTP 503 for {server.url}{path} (3 attempts)"
    assert sorted(files_in(ws.dataset_dir("boat") / "originals")) == [f"{IDS[0]}.jpg", f"{IDS[2]}.jpg"]


def test_dropped_connection_resumes_with_range(tmp_path):
    ws = cvdf_dataset(tmp_path)
    path = f"/train/{IDS[2]}.jpg"
    with cvdf_server() as server:
        server.fail(path, drop_after=1000)
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
        tries = [r for r in server.requests if r[0] == path]
    assert report.fetched == 3
    assert tries[-2:] == [(path, None), (path, "bytes=1000-")]
    assert files_in(ws.dataset_dir("boat") / "originals") == {f"{i}.jpg": DATA[i] for i in IDS}


def test_existing_part_file_continues_with_range(tmp_path):
    ws = cvdf_dataset(tmp_path)
    originals = ws.dataset_dir("boat") / "originals"
    originals.mkdir()
    (originals / f"{IDS[0]}.jpg.part").write_bytes(DATA[IDS[0]][:700])
    with cvdf_server() as server:
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
        tries = [r for r in server.requests if r[0] == f"/train/{IDS[0]}.jpg"]
    assert report.fetched == 3
    assert tries[-1] == (f"/train/{IDS[0]}.jpg", "bytes=700-")
    assert files_in(originals) == {f"{i}.jpg": DATA[i] for i in IDS}


def test_stale_part_from_another_source_starts_over(tmp_path):
    ws = cvdf_dataset(tmp_path)
    originals = ws.dataset_dir("boat") / "originals"
    originals.mkdir()
    (originals / f"{IDS[0]}.jpg.part").write_bytes(bytes(range(250)) * 2)  # not the start of this image
    with cvdf_server() as server:
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
        tries = [r[1] for r in server.requests if r[0] == f"/train/{IDS[0]}.jpg"]
    assert report.fetched == 3 and tries[-2:] == ["bytes=500-", None]
    assert files_in(originals) == {f"{i}.jpg": DATA[i] for i in IDS}


def test_slow_response_times_out_then_retries(tmp_path):
    ws = cvdf_dataset(tmp_path)
    path = f"/train/{IDS[1]}.jpg"
    with cvdf_server() as server:
        server.fail(path, delay=1.5)
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url,
                              **{**FAST, "timeout": 0.4})
        tries = [r for r in server.requests if r[0] == path]
    assert (report.fetched, report.failed) == (3, 0)
    assert len(tries) >= 2
    assert files_in(ws.dataset_dir("boat") / "originals")[f"{IDS[1]}.jpg"] == DATA[IDS[1]]


def test_html_page_with_200_is_a_failure(tmp_path):
    ws = cvdf_dataset(tmp_path)
    page = b"<!DOCTYPE html><html><body>Photo not available</body></html>"
    with cvdf_server() as server:
        server.fail(f"/train/{IDS[1]}.jpg", body=page)  # said to be text/html: refused before the body
        server.fail(f"/train/{IDS[2]}.jpg", body=page, content_type="image/jpeg")  # found by its first bytes
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
    assert report.failures.to_dict("records") == [
        {"ImageID": IDS[1], "reason": "html page", "detail": f"{server.url}/train/{IDS[1]}.jpg answered with a web page"},
        {"ImageID": IDS[2], "reason": "html page", "detail": "an HTML page came back instead of an image"}]
    originals = ws.dataset_dir("boat") / "originals"
    assert sorted(files_in(originals)) == [f"{IDS[0]}.jpg"]  # no .part, no final name


def test_truncated_and_non_image_bodies(tmp_path):
    ws = cvdf_dataset(tmp_path)
    files = {f"/train/{i}.jpg": DATA[i] for i in IDS}
    files[f"/train/{IDS[0]}.jpg"] = DATA[IDS[0]][: len(DATA[IDS[0]]) // 2]
    files[f"/train/{IDS[1]}.jpg"] = b"GIF-ish garbage, not an image at all"
    with FileServer(files=files) as server:
        report = fetch_images(ws, "boat", "urls:cvdf", base_url=server.url, **FAST)
    assert report.failures[["ImageID", "reason"]].values.tolist() == [[IDS[1], "not an image"], [IDS[0], "truncated"]]
    assert sorted(files_in(ws.dataset_dir("boat") / "originals")) == [f"{IDS[2]}.jpg"]


def test_original_urls_verify_md5(tmp_path):
    good, bad = IDS[0], IDS[1]
    rows = [image_row(good, DATA[good]), image_row(bad, DATA[bad], md5=b64md5(b"something else"))]
    ws = make_dataset(tmp_path / "ws", rows)
    files = {f"/farm1.staticflickr.com/42/{i}_o.jpg": DATA[i] for i in (good, bad)}
    with FileServer(files=files) as server:
        report = fetch_images(ws, "boat", "urls:original", base_url=server.url, **FAST)
    assert report.verified == {"size": 1, "md5": 1}
    assert report.failures[["ImageID", "reason"]].values.tolist() == [[bad, "md5 mismatch"]]
    assert files_in(ws.dataset_dir("boat") / "originals") == {f"{good}.jpg": DATA[good]}


def test_thumbnail_missing_url_is_reported(tmp_path):
    rows = [image_row(IDS[0], DATA[IDS[0]]), {**image_row(IDS[1], DATA[IDS[1]]), "Thumbnail300KURL": None}]
    ws = make_dataset(tmp_path / "ws", rows)
    files = {f"/c1.staticflickr.com/1/42/{IDS[0]}_z.jpg": DATA[IDS[0]]}
    with FileServer(files=files) as server:
        report = fetch_images(ws, "boat", "urls:thumbnail", base_url=server.url, **FAST)
    assert report.fetched == 1
    assert report.failures[["ImageID", "reason"]].values.tolist() == [[IDS[1], "no url"]]


class _Redirector:
    """A real HTTP server answering every GET with a 302 to ``target`` (Flickr's deleted-photo behaviour)."""

    def __init__(self, target: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


def test_flickr_placeholder_redirect_is_not_found(tmp_path):
    """A deleted Flickr photo redirects to a placeholder that decodes fine: it must not become the image."""
    placeholder = io.BytesIO()
    Image.new("RGB", (500, 374), "grey").save(placeholder, "PNG")
    ws = make_dataset(tmp_path / "ws", [image_row(IDS[0], DATA[IDS[0]])])
    with FileServer(files={"/pw/images/en-us/photo_unavailable.png": placeholder.getvalue()}) as images:
        redirector = _Redirector(f"{images.url}/pw/images/en-us/photo_unavailable.png")
        try:
            report = fetch_images(ws, "boat", "urls:thumbnail", base_url=redirector.url, **FAST)
        finally:
            redirector.close()
    assert report.failures.to_dict("records") == [{
        "ImageID": IDS[0], "reason": "not found",
        "detail": f"{redirector.url}/c1.staticflickr.com/1/42/{IDS[0]}_z.jpg redirects to a 'photo unavailable' placeholder"}]
    assert files_in(ws.dataset_dir("boat") / "originals") == {}


def test_cli_prints_summary_and_failures(tmp_path, capsys):
    ws = make_dataset(tmp_path / "ws", [image_row(i, DATA[i]) for i in IDS[:2]] + [image_row("000a0000000000ff", b"x")])
    with cvdf_server() as server:
        code = main("python -m pipeline", "", COMMAND_MODULES,
                    ["--workspace", str(ws.root), "fetch-images", "--dataset", "boat", "--from", "urls:cvdf",
                     "--base-url", server.url, "--retries", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"2 fetched, 0 already there, 1 failed from urls:cvdf via {server.url} in ")
    assert f"000a0000000000ff not found HTTP 404 for {server.url}/train/000a0000000000ff.jpg" in out


# ----------------------------------------------------------------- local folders


def test_folder_both_layouts_and_originals(tmp_path):
    source = tmp_path / "pixels"
    (source / "train").mkdir(parents=True)
    (source / "train" / f"{IDS[0]}.jpg").write_bytes(DATA[IDS[0]])   # <Subset>/<ImageID>.jpg, original
    (source / f"{IDS[1]}.jpg").write_bytes(DATA[IDS[1]])              # <ImageID>.jpg, original
    (source / f"{IDS[2]}.jpg").write_bytes(jpeg(7))                    # a copy: size differs → decode check
    ws = make_dataset(tmp_path / "ws", [image_row(i, DATA[i]) for i in IDS] + [image_row("000a0000000000ff", b"x")])
    report = fetch_images(ws, "boat", str(source), **FAST)
    assert (report.fetched, report.failed) == (3, 1)
    assert report.verified == {"size": 3, "md5": 2, "decode": 1}
    assert report.failures[["ImageID", "reason"]].values.tolist() == [["000a0000000000ff", "missing"]]
    got = files_in(ws.dataset_dir("boat") / "originals")
    assert got == {f"{IDS[0]}.jpg": DATA[IDS[0]], f"{IDS[1]}.jpg": DATA[IDS[1]], f"{IDS[2]}.jpg": jpeg(7)}


def test_folder_original_with_wrong_bytes_of_right_size(tmp_path):
    source = tmp_path / "pixels"
    source.mkdir()
    corrupt = bytearray(DATA[IDS[0]])
    corrupt[200] ^= 0xFF
    (source / f"{IDS[0]}.jpg").write_bytes(bytes(corrupt))
    ws = make_dataset(tmp_path / "ws", [image_row(IDS[0], DATA[IDS[0]])])
    report = fetch_images(ws, "boat", str(source), **FAST)
    assert report.failures[["ImageID", "reason"]].values.tolist() == [[IDS[0], "md5 mismatch"]]
    assert files_in(ws.dataset_dir("boat") / "originals") == {}


def test_demo_originals_folder(demo_copy):
    """The demo's CVDF-layout folder: every image is its own original, so MD5 applies to all."""
    ws = Workspace.open(demo_copy)
    frames = [pd.read_csv(ws.metadata_dir / name) for name in
              ("train-images-boxable-with-rotation.csv", "validation-images-with-rotation.csv",
               "test-images-with-rotation.csv")]
    images = pd.concat(frames, ignore_index=True)
    folder = ws.dataset_dir("boat")
    folder.mkdir(parents=True)
    images.to_parquet(folder / "images.parquet")
    write_json(folder / "dataset.json", {"slug": "boat"})
    report = fetch_images(ws, "boat", str(demo_copy / "demo" / "originals"), **FAST)
    assert (report.fetched, report.failed) == (len(images), 0)
    assert report.verified == {"md5": len(images), "size": len(images)}
    png = json.loads((demo_copy / "demo" / "special.json").read_text())["png_as_jpg"][0]
    assert (folder / "originals" / f"{png}.jpg").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------- GCS bucket (real emulator)


def test_gcs_both_layouts(gcs_env, tmp_path):
    from google.cloud import storage

    bucket = storage.Client().create_bucket("fetch-layouts")
    bucket.blob(f"oi/farm1.staticflickr.com/42/{IDS[0]}_o.jpg").upload_from_string(DATA[IDS[0]])  # Storage Transfer
    bucket.blob(f"oi/train/{IDS[1]}.jpg").upload_from_string(jpeg(11))                          # <Subset>/<ImageID>.jpg
    bucket.blob(f"oi/{IDS[2]}.jpg").upload_from_string(DATA[IDS[2]])                             # <ImageID>.jpg
    ws = make_dataset(tmp_path / "ws", [image_row(i, DATA[i]) for i in IDS] + [image_row("000a0000000000ff", b"x")])
    report = fetch_images(ws, "boat", "gs://fetch-layouts/oi", **FAST)
    assert (report.fetched, report.failed) == (3, 1)
    assert report.verified == {"size": 3, "md5": 2, "decode": 1}
    assert report.failures[["ImageID", "reason"]].values.tolist() == [["000a0000000000ff", "missing"]]
    assert files_in(ws.dataset_dir("boat") / "originals") == {
        f"{IDS[0]}.jpg": DATA[IDS[0]], f"{IDS[1]}.jpg": jpeg(11), f"{IDS[2]}.jpg": DATA[IDS[2]]}
    again = fetch_images(ws, "boat", "gs://fetch-layouts/oi", **FAST)
    assert (again.fetched, again.skipped, again.failed) == (0, 3, 1)


def test_gcs_resumes_a_part_file(gcs_env, tmp_path):
    from google.cloud import storage

    storage.Client().create_bucket("fetch-resume").blob(f"train/{IDS[0]}.jpg").upload_from_string(DATA[IDS[0]])
    ws = make_dataset(tmp_path / "ws", [image_row(IDS[0], DATA[IDS[0]])])
    originals = ws.dataset_dir("boat") / "originals"
    originals.mkdir()
    (originals / f"{IDS[0]}.jpg.part").write_bytes(DATA[IDS[0]][:900])
    report = fetch_images(ws, "boat", "gs://fetch-resume", **FAST)
    assert (report.fetched, report.verified) == (1, {"size": 1, "md5": 1})
    assert files_in(originals) == {f"{IDS[0]}.jpg": DATA[IDS[0]]}


def test_gcs_missing_bucket_is_one_sentence(gcs_env, tmp_path):
    ws = cvdf_dataset(tmp_path)
    with pytest.raises(UserError, match="bucket fetch-nothing-here does not exist"):
        fetch_images(ws, "boat", "gs://fetch-nothing-here/x", **FAST)
