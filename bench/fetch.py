"""Benchmark: fetch-images (16 workers, verified, atomic) vs a plain sequential ``requests`` loop.

2,000 small generated JPEGs (~5–20 KB) served by the tests' local HTTP server with 20 ms of
latency per request, standing in for the CVDF bucket. Both sides write every image to disk.
Run: ``.venv/bin/python bench/fetch.py [--images N] [--latency S] [--workers N]``.
Generated data lives in a temp folder that is deleted afterwards.

The server gets TCP_NODELAY: Python's ``http.server`` sends headers and body in two writes, and
with Nagle on, every keep-alive response then waits ~40 ms for the client's delayed ACK; a
real server (S3, GCS) does not, and leaving it in would flatter neither side honestly.
"""
from __future__ import annotations

import argparse
import io
import socketserver
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.images.fetch import fetch_images  # noqa: E402
from pipeline.atomic import write_json  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402
from tests.support.httpserver import FileServer  # noqa: E402


def make_images(count: int, seed: int = 0) -> dict[str, bytes]:
    """``count`` unique JPEGs of 5–20 KB (noise at a random size), by ImageID."""
    rng = np.random.default_rng(seed)
    images = {}
    for index in range(count):
        side = int(rng.integers(70, 130))
        pixels = rng.integers(0, 255, (side, side + int(rng.integers(0, 20)), 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=int(rng.integers(70, 95)))
        images[f"{index:016x}"] = out.getvalue()
    return images


def sequential(url: str, ids: list[str], out: Path, keep_alive: bool) -> float:
    """The baseline: one request after another, written straight to disk."""
    out.mkdir(parents=True)
    started = time.perf_counter()
    with requests.Session() as session:
        get = session.get if keep_alive else requests.get
        for image_id in ids:
            answer = get(f"{url}/train/{image_id}.jpg", timeout=30)
            answer.raise_for_status()
            (out / f"{image_id}.jpg").write_bytes(answer.content)
    return time.perf_counter() - started


def ours(url: str, ids: list[str], root: Path, workers: int) -> tuple[float, float, object]:
    """fetch_images from the local server, then once more (everything already there: the resume path)."""
    ws = Workspace.open(root)
    folder = ws.dataset_dir("bench")
    folder.mkdir(parents=True)
    pd.DataFrame({"ImageID": ids, "Subset": "train"}).to_parquet(folder / "images.parquet")
    write_json(folder / "dataset.json", {"slug": "bench"})
    started = time.perf_counter()
    report = fetch_images(ws, "bench", "urls:cvdf", base_url=url, workers=workers)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = fetch_images(ws, "bench", "urls:cvdf", base_url=url, workers=workers)
    assert again.skipped == len(ids), again
    return seconds, time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    images = make_images(args.images)
    sizes = [len(v) for v in images.values()]
    ids = list(images)
    socketserver.StreamRequestHandler.disable_nagle_algorithm = True  # see the module docstring
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp, \
            FileServer(files={f"/train/{k}.jpg": v for k, v in images.items()}, latency=args.latency) as server:
        session_seconds = sequential(server.url, ids, Path(tmp) / "seq-session", keep_alive=True)
        plain_seconds = sequential(server.url, ids, Path(tmp) / "seq-plain", keep_alive=False)
        our_seconds, rerun_seconds, report = ours(server.url, ids, Path(tmp) / "ws", args.workers)
    assert report.fetched == len(ids) and report.failed == 0, report.failures
    base_seconds = min(session_seconds, plain_seconds)
    print(f"{len(ids)} images, {min(sizes) / 1024:.1f}–{max(sizes) / 1024:.1f} KB "
          f"(mean {np.mean(sizes) / 1024:.1f} KB), {args.latency * 1000:.0f} ms latency per request")
    print(f"{'':36} {'seconds':>8} {'images/s':>9} {'ratio':>6}")
    rows = [("sequential requests.Session loop", session_seconds),
            ("sequential requests.get loop", plain_seconds),
            (f"fetch_images, {args.workers} workers (verified)", our_seconds),
            ("fetch_images again (all skipped)", rerun_seconds)]
    for name, seconds in rows:
        print(f"{name:36} {seconds:8.2f} {len(ids) / seconds:9.1f} {base_seconds / seconds:5.1f}×")
    print("(ratio: against the faster of the two sequential loops)")
    print(f"checks passed: {report.verified}")


if __name__ == "__main__":
    main()
