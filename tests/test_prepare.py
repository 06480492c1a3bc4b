"""prepare: resized images with YOLO labels that line up, atomic, resumable, worker-count independent.

Datasets are built by hand (``make_dataset``) or from the demo's metadata CSVs with pandas
(``dataset_from_demo``), both in tests/support/datasets.py, so these tests do not wait on the
builder and fetch steps.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.demo import generate as demo, scenes as demo_scenes
from pipeline.cli import UserError
from pipeline.images.imageio import decode_rgb
from pipeline.yolo.prepare import Geometry, Settings, prepare_dataset, prepared_ids, read_marker
from pipeline.atomic import read_json
from pipeline.workspace import Workspace
from tests.support.datasets import dataset_from_demo, jpeg_bytes, make_dataset, noise, yolo_files

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- errors and empty cases

def test_missing_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no dataset 'nope'"):
        prepare_dataset(Workspace(tmp_path).ensure(), "nope")


@pytest.mark.parametrize("size,quality,match", [(400, 90, "multiple of 32"), (416, 0, "quality")])
def test_bad_settings_are_user_errors(tmp_path, size, quality, match):
    ws = make_dataset(tmp_path, [])
    with pytest.raises(UserError, match=match):
        prepare_dataset(ws, "boat", size=size, quality=quality)


def test_zero_workers_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--workers 0 must be at least 1"):
        prepare_dataset(make_dataset(tmp_path, []), "boat", workers=0)


def test_empty_dataset_prepares_nothing(tmp_path):
    ws = make_dataset(tmp_path, [])
    summary = prepare_dataset(ws, "boat", workers=1)
    assert (summary["images"], summary["prepared"], summary["boxes"], summary["failed"]) == (0, 0, 0, [])
    assert yolo_files(ws) == {}
    assert read_json(ws.dataset_dir("boat") / "dataset.json")["prepare"]["images"] == 0


# ---------------------------------------------------------------- labels

def test_stretch_writes_exact_labels_and_a_clean_jpeg(tmp_path):
    ws = make_dataset(tmp_path, [{"id": "a1", "data": jpeg_bytes(noise(100, 200)), "boxes": [(0, 0.1, 0.2, 0.5, 0.6)]}])
    summary = prepare_dataset(ws, "boat", workers=1)
    out = ws.dataset_dir("boat") / "yolo"
    assert (out / "a1.txt").read_text() == "0 0.300000 0.400000 0.400000 0.400000\n"
    with Image.open(out / "a1.jpg") as img:
        assert img.size == (416, 416) and img.format == "JPEG"
        assert dict(img.getexif()) == {}
    assert read_marker(out / "a1.jpg")[0] == Settings().digest()
    assert (summary["written"], summary["boxes"], summary["empty_labels"]) == (1, 1, 0)
    assert sorted(p.name for p in out.iterdir()) == ["a1.jpg", "a1.txt"]   # no temp files left


def test_boxes_are_clipped_and_degenerate_ones_dropped_and_counted(tmp_path):
    boxes = [(0, -0.1, 0.5, 0.5, 1.2),        # clipped → (0, 0.5, 0.5, 1)
             (0, 0.3, 0.3, 0.3, 0.6),         # zero width
             (0, 0.5, 0.5, 0.4, 0.6),         # negative width
             (0, 0.1, 0.1, 0.101, 0.5),       # 0.4 px wide at 416
             (1, 0.0, 0.0, 1.0, 1.0)]
    ws = make_dataset(tmp_path, [{"id": "b", "data": jpeg_bytes(noise(64, 64)), "boxes": boxes}], classes=("a", "b"))
    summary = prepare_dataset(ws, "boat", workers=1)
    assert (ws.dataset_dir("boat") / "yolo" / "b.txt").read_text() == (
        "0 0.250000 0.750000 0.500000 0.500000\n"
        "1 0.500000 0.500000 1.000000 1.000000\n")
    assert (summary["boxes"], summary["dropped_degenerate"], summary["clipped"]) == (2, 3, 1)


def test_negative_image_gets_an_empty_label_file(tmp_path):
    ws = make_dataset(tmp_path, [{"id": "neg", "data": jpeg_bytes(noise(50, 80))}])
    summary = prepare_dataset(ws, "boat", workers=1)
    label = ws.dataset_dir("boat") / "yolo" / "neg.txt"
    assert label.is_file() and label.read_bytes() == b""
    assert summary["empty_labels"] == 1


def test_letterbox_pads_and_moves_the_boxes(tmp_path):
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[:, :] = (250, 20, 20)
    ws = make_dataset(tmp_path, [{"id": "lb", "data": jpeg_bytes(rgb), "boxes": [(0, 0.0, 0.0, 1.0, 1.0),
                                                                               (0, 0.5, 0.5, 1.0, 1.0)]}])
    prepare_dataset(ws, "boat", size=64, letterbox=True, workers=1)
    out = ws.dataset_dir("boat") / "yolo"
    # 200×100 → 64×32 pasted 16 px down on a 64×64 canvas
    assert (out / "lb.txt").read_text() == ("0 0.500000 0.500000 1.000000 0.500000\n"
                                            "0 0.750000 0.625000 0.500000 0.250000\n")
    pixels = decode_rgb(out / "lb.jpg")
    assert pixels.shape == (64, 64, 3)
    assert np.abs(pixels[:14].astype(int) - 127).max() < 8          # grey pad above
    assert np.abs(pixels[50:].astype(int) - 127).max() < 8          # and below
    assert pixels[32, 32, 0] > 200 and pixels[32, 32, 2] < 60       # the red picture in between
    assert read_marker(out / "lb.jpg")[1] == Geometry(64, 32, 0, 16)


def test_exif_tagged_original_is_not_rotated_and_the_output_has_no_exif(tmp_path):
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[:, :100] = (240, 10, 10)           # red left half, blue right half
    rgb[:, 100:] = (10, 10, 240)
    ws = make_dataset(tmp_path, [{"id": "ex", "data": jpeg_bytes(rgb, exif_orientation=6),
                                  "boxes": [(0, 0.0, 0.0, 0.5, 1.0)]}])
    prepare_dataset(ws, "boat", size=64, workers=1)
    out = decode_rgb(ws.dataset_dir("boat") / "yolo" / "ex.jpg")
    assert out[32, 8, 0] > 200 and out[32, 56, 2] > 200               # red still left, blue right
    with Image.open(ws.dataset_dir("boat") / "yolo" / "ex.jpg") as img:
        assert 0x0112 not in img.getexif()


# ---------------------------------------------------------------- failures

def test_truncated_and_missing_originals_are_reported_and_never_written(tmp_path):
    good = jpeg_bytes(noise(120, 160, 1))
    ws = make_dataset(tmp_path, [
        {"id": "good", "data": good, "boxes": [(0, 0.1, 0.1, 0.9, 0.9)]},
        {"id": "cut", "data": good[: len(good) // 2], "boxes": [(0, 0.1, 0.1, 0.9, 0.9)]},
        {"id": "html", "data": b"<html>404</html>"},
        {"id": "gone", "data": None, "boxes": [(0, 0.1, 0.1, 0.9, 0.9)]},
    ])
    yolo = ws.dataset_dir("boat") / "yolo"
    yolo.mkdir()
    (yolo / "cut.jpg").write_bytes(good)        # a stale output from an earlier, good original
    (yolo / "cut.txt").write_text("0 0.5 0.5 1 1\n")
    summary = prepare_dataset(ws, "boat", workers=1)
    reasons = {f["ImageID"]: f["reason"] for f in summary["failed"]}
    assert sorted(reasons) == ["cut", "gone", "html"]
    assert "truncated" in reasons["cut"] and "fetch" in reasons["gone"]
    assert reasons["html"] == "file html.jpg is not an image (it starts with b'<html>404</h')"
    # nothing new is written for them; the older output of "cut" is kept on disk but not listed
    assert sorted(yolo_files(ws)) == ["cut.jpg", "cut.txt", "good.jpg", "good.txt"]
    assert (yolo / "cut.jpg").read_bytes() == good
    assert prepared_ids(ws, "boat") == ["good"]
    assert (summary["images"], summary["prepared"]) == (4, 1)


def test_an_original_deleted_after_preparing_keeps_its_output(tmp_path):
    ws = _three_images(tmp_path)
    prepare_dataset(ws, "boat", workers=1)
    before = yolo_files(ws)
    (ws.dataset_dir("boat") / "originals" / "img0.jpg").unlink()     # e.g. to save disk
    summary = prepare_dataset(ws, "boat", workers=1)
    assert (summary["kept"], summary["failed"]) == (3, [])
    assert yolo_files(ws) == before and prepared_ids(ws, "boat") == ["img0", "img1", "img2"]
    summary = prepare_dataset(ws, "boat", workers=1, quality=50)      # cannot be rebuilt at new settings
    assert summary["failed"] == [{"ImageID": "img0", "reason": "no original image (fetch the images first)"}]
    assert prepared_ids(ws, "boat") == ["img1", "img2"]


# ---------------------------------------------------------------- resume

def _three_images(tmp_path) -> Workspace:
    return make_dataset(tmp_path, [
        {"id": f"img{i}", "data": jpeg_bytes(noise(240, 320, i)), "boxes": [(0, 0.1 * i, 0.1, 0.5, 0.5 + 0.1 * i)]}
        for i in range(3)])


def test_second_run_keeps_everything_untouched(tmp_path):
    ws = _three_images(tmp_path)
    prepare_dataset(ws, "boat", workers=1)
    yolo = ws.dataset_dir("boat") / "yolo"
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in yolo.iterdir()}
    summary = prepare_dataset(ws, "boat", workers=1)
    assert (summary["written"], summary["kept"], summary["relabelled"]) == (0, 3, 0)
    assert summary["boxes"] == 3                      # counts cover kept images too
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in yolo.iterdir()}
    assert after == before


def test_changed_settings_rebuild(tmp_path):
    ws = _three_images(tmp_path)
    prepare_dataset(ws, "boat", workers=1, quality=90)
    first = yolo_files(ws)
    summary = prepare_dataset(ws, "boat", workers=1, quality=60)
    assert summary["written"] == 3
    second = yolo_files(ws)
    assert all(len(second[f"img{i}.jpg"]) < len(first[f"img{i}.jpg"]) for i in range(3))
    assert prepare_dataset(ws, "boat", workers=1, quality=60)["kept"] == 3


def test_newer_original_rebuilds_only_that_image(tmp_path):
    ws = _three_images(tmp_path)
    prepare_dataset(ws, "boat", workers=1)
    original = ws.dataset_dir("boat") / "originals" / "img1.jpg"
    original.write_bytes(jpeg_bytes(noise(240, 320, 99)))
    future = time.time() + 5
    os.utime(original, (future, future))
    summary = prepare_dataset(ws, "boat", workers=1)
    assert (summary["written"], summary["kept"]) == (1, 2)


def test_replaced_original_with_an_old_mtime_is_caught_by_its_size(tmp_path):
    ws = _three_images(tmp_path)
    prepare_dataset(ws, "boat", workers=1)
    original = ws.dataset_dir("boat") / "originals" / "img2.jpg"
    original.write_bytes(jpeg_bytes(noise(480, 640, 7)))       # e.g. re-fetched keeping the server's date
    os.utime(original, (1_000_000_000, 1_000_000_000))
    assert read_marker(ws.dataset_dir("boat") / "yolo" / "img2.jpg").source_bytes != original.stat().st_size
    summary = prepare_dataset(ws, "boat", workers=1)
    assert (summary["written"], summary["kept"]) == (1, 2)
    assert read_marker(ws.dataset_dir("boat") / "yolo" / "img2.jpg").source_bytes == original.stat().st_size


def test_changed_boxes_relabel_without_re_encoding(tmp_path):
    ws = _three_images(tmp_path)
    prepare_dataset(ws, "boat", workers=1)
    folder = ws.dataset_dir("boat")
    jpg_before = (folder / "yolo" / "img0.jpg").stat().st_mtime_ns
    boxes = pd.read_parquet(folder / "boxes.parquet")
    boxes.loc[boxes["ImageID"] == "img0", "XMax"] = np.float32(0.75)
    boxes.to_parquet(folder / "boxes.parquet", index=False)
    summary = prepare_dataset(ws, "boat", workers=1)
    assert (summary["relabelled"], summary["kept"]) == (1, 2)
    assert (folder / "yolo" / "img0.txt").read_text() == "0 0.375000 0.300000 0.750000 0.400000\n"
    assert (folder / "yolo" / "img0.jpg").stat().st_mtime_ns == jpg_before


def test_a_label_file_missing_next_to_a_kept_image_is_rewritten(tmp_path):
    ws = _three_images(tmp_path)
    prepare_dataset(ws, "boat", workers=1)
    (ws.dataset_dir("boat") / "yolo" / "img2.txt").unlink()
    assert prepare_dataset(ws, "boat", workers=1)["relabelled"] == 1
    assert (ws.dataset_dir("boat") / "yolo" / "img2.txt").is_file()


# ---------------------------------------------------------------- parallel

def test_output_is_identical_whatever_the_worker_count(tmp_path):
    specs = [{"id": f"{i:04d}", "data": jpeg_bytes(noise(300 + i, 400, i)),
              "boxes": [(0, 0.05, 0.1, 0.6, 0.7)] if i % 3 else []} for i in range(24)]
    one = make_dataset(tmp_path / "one", specs)
    two = make_dataset(tmp_path / "two", specs)
    threads = make_dataset(tmp_path / "threads", specs)
    calls = []
    prepare_dataset(one, "boat", workers=1)
    prepare_dataset(two, "boat", workers=2, progress=lambda d, t, m: calls.append((d, t)))
    with ThreadPoolExecutor(3) as pool:
        prepare_dataset(threads, "boat", executor=pool, workers=3)
    assert len(yolo_files(one)) == 48
    assert yolo_files(one) == yolo_files(two) == yolo_files(threads)
    assert calls[0] == (0, 24) and calls[-1] == (24, 24)


def test_a_threaded_caller_gets_a_forkserver_pool_with_the_same_output(tmp_path):
    """The dashboard calls prepare from a thread: no fork of a threaded process, same bytes."""
    import threading

    from pipeline.yolo.prepare import _pool_context

    specs = [{"id": f"{i:04d}", "data": jpeg_bytes(noise(200, 300, i)), "boxes": [(0, 0.1, 0.1, 0.5, 0.5)]}
             for i in range(6)]
    single, threaded = make_dataset(tmp_path / "single", specs), make_dataset(tmp_path / "threaded", specs)
    prepare_dataset(single, "boat", workers=1)
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait)
    waiter.start()
    try:
        assert _pool_context().get_start_method() == "forkserver"
        prepare_dataset(threaded, "boat", workers=2)
    finally:
        stop.set()
        waiter.join()
    assert yolo_files(threaded) == yolo_files(single)


# ---------------------------------------------------------------- the demo: labels line up with the pixels

def _box_stats(rgb: np.ndarray, xyxy_rel) -> tuple[float, np.ndarray]:
    """Share of object (non sky/water) pixels and mean colour inside a box."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in np.asarray(xyxy_rel) * [w, h, w, h])
    region = rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return float(demo_scenes.object_mask(region).mean()), region.reshape(-1, 3).mean(axis=0)


def _labels(path: Path) -> np.ndarray:
    from pipeline.boxes import cxcywh_rel_to_xyxy_rel

    text = path.read_text()
    rows = np.array([line.split() for line in text.splitlines()], dtype=np.float64).reshape(-1, 5)
    return cxcywh_rel_to_xyxy_rel(rows[:, 1:])


@pytest.fixture(scope="module")
def prepared_demo(demo_root, tmp_path_factory) -> tuple[Workspace, dict]:
    """The demo's Boat dataset, prepared once for this module (read-only)."""
    ws = dataset_from_demo(demo_root, tmp_path_factory.mktemp("prepared") / "ws")
    return ws, prepare_dataset(ws, "boat", workers=2)


def test_demo_labels_line_up_with_pixels_on_exif_and_rotated_images(demo_root, prepared_demo):
    ws, _ = prepared_demo
    special = demo.special_images(demo_root)
    folder = ws.dataset_dir("boat")
    ids = [i for i in special["exif_orientation"] + special["rotation_90"] if (folder / "yolo" / f"{i}.txt").is_file()]
    checked = 0
    for image_id in ids:
        prepared = decode_rgb(folder / "yolo" / f"{image_id}.jpg")
        original = decode_rgb(folder / "originals" / f"{image_id}.jpg")
        for box in _labels(folder / "yolo" / f"{image_id}.txt"):
            share_prepared, mean_prepared = _box_stats(prepared, box)
            share_original, mean_original = _box_stats(original, box)
            assert share_prepared > 0.2, (image_id, box)                 # the box holds the boat
            assert abs(share_prepared - share_original) < 0.08, (image_id, box)
            if min(box[2] - box[0], box[3] - box[1]) * 416 >= 8:       # resampling blurs thinner ones
                assert np.abs(mean_prepared - mean_original).max() < 12, (image_id, box)
            checked += 1
    assert checked >= 10 and len(set(ids) & set(special["exif_orientation"])) >= 3


def test_the_alignment_check_fails_on_an_exif_rotated_decode(demo_root, prepared_demo):
    """The statistic above is able to fail: decoding the way cv2.imread does by default breaks it."""
    ws, _ = prepared_demo
    folder = ws.dataset_dir("boat")
    broken = 0
    exif_ids = demo.special_images(demo_root)["exif_orientation"]
    for image_id in exif_ids:
        rotated = cv2.imread(str(folder / "originals" / f"{image_id}.jpg"))[:, :, ::-1]   # applies EXIF
        prepared = decode_rgb(folder / "yolo" / f"{image_id}.jpg")
        for box in _labels(folder / "yolo" / f"{image_id}.txt"):
            share_rotated, _ = _box_stats(rotated, box)
            share_prepared, _ = _box_stats(prepared, box)
            broken += abs(share_prepared - share_rotated) >= 0.08
    assert broken >= len(exif_ids)


def test_demo_summary_counts(demo_root, prepared_demo):
    ws, summary = prepared_demo
    special = demo.special_images(demo_root)
    boxes = pd.read_parquet(ws.dataset_dir("boat") / "boxes.parquet")
    assert [f["ImageID"] for f in summary["failed"]] == special["truncated_jpeg"]
    failed_boxes = int(boxes["ImageID"].isin(special["truncated_jpeg"]).sum())
    assert summary["boxes"] + summary["dropped_degenerate"] == len(boxes) - failed_boxes
    assert summary["prepared"] == summary["images"] - 1


# ---------------------------------------------------------------- SIGKILL halfway

def _run_cli(ws_root: Path, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--workspace", str(ws_root), "prepare",
                             "--dataset", "boat", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, **kw)


def _assert_complete(folder: Path, checked: set | None = None) -> int:
    """Every file under a final name decodes (images) or parses (labels); returns how many images.

    ``checked`` remembers files already verified (a run writes each final name once), so polling
    stays cheap enough to catch the run halfway.
    """
    checked = set() if checked is None else checked
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or path.name in checked:
            continue                        # a temp file is never a final name
        if path.suffix == ".jpg":
            decode_rgb(path)
        else:
            text = path.read_text()
            assert text == "" or text.endswith("\n"), path
            assert all(len(line.split()) == 5 for line in text.splitlines()), path
        checked.add(path.name)
    return sum(name.endswith(".jpg") for name in checked)


@pytest.mark.slow
def test_sigkill_halfway_then_resume_is_byte_identical(tmp_path):
    specs = [{"id": f"{i:04x}", "data": jpeg_bytes(noise(600, 800, i), quality=95),
              "boxes": [(0, 0.1, 0.2, 0.3 + i % 5 * 0.1, 0.9)] if i % 4 else []} for i in range(160)]
    killed_ws = make_dataset(tmp_path / "killed", specs)
    clean_ws = make_dataset(tmp_path / "clean", specs)
    yolo = killed_ws.dataset_dir("boat") / "yolo"
    proc = _run_cli(killed_ws.root, "--workers", "1", "--size", "608")
    checked: set[str] = set()
    while proc.poll() is None and _assert_complete(yolo, checked) < 60:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    partial = _assert_complete(yolo)
    assert 0 < partial < 160
    assert _run_cli(killed_ws.root, "--workers", "2", "--size", "608").wait() == 0
    assert _run_cli(clean_ws.root, "--workers", "2", "--size", "608").wait() == 0
    assert len(yolo_files(clean_ws)) == 320
    assert yolo_files(killed_ws) == yolo_files(clean_ws)
    summary = read_json(killed_ws.dataset_dir("boat") / "prepare.json")
    assert summary["kept"] + summary["relabelled"] >= partial
    assert summary["written"] + summary["kept"] + summary["relabelled"] == 160


# ---------------------------------------------------------------- verification (pipeline/verify.py)

def test_verification_pair_draws_the_written_labels_and_the_open_images_boxes(tmp_path):
    from pipeline.images.draw import class_color
    from pipeline.yolo.verify import verification_pair

    black = np.zeros((100, 200, 3), np.uint8)
    ws = make_dataset(tmp_path, [{"id": "v", "data": jpeg_bytes(black), "boxes": [(0, 0.25, 0.5, 0.75, 1.0)]}])
    with pytest.raises(UserError, match="image v of dataset 'boat' is not prepared"):
        verification_pair(ws, "boat", "v")
    prepare_dataset(ws, "boat", size=64, workers=1)
    # the label file is what gets drawn: edit it and the drawing follows
    (ws.dataset_dir("boat") / "yolo" / "v.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    prepared, original = verification_pair(ws, "boat", "v")
    color = np.array(class_color(0))
    assert prepared.shape == (64, 64, 3) and original.shape == (100, 200, 3)
    assert np.abs(prepared[16, 20:44].astype(int) - color).max() < 3       # top edge at y = 0.25·64
    assert np.abs(prepared[40, 16].astype(int) - color).max() < 3          # left edge at x = 16
    assert prepared[40, 40].max() < 10                                     # inside stays black (label at top)
    assert (original[99, 50:150] == color).all() and (original[60:99, 50] == color).all()
    assert original[75, 100].max() < 10
    _, small = verification_pair(ws, "boat", "v", max_side=50)
    assert small.shape == (25, 50, 3)


def test_sample_ids_is_deterministic_and_only_prepared(tmp_path):
    from pipeline.yolo.verify import prepared_ids, sample_ids

    ws = make_dataset(tmp_path, [{"id": f"s{i}", "data": jpeg_bytes(noise(40, 40, i))} for i in range(10)]
                      + [{"id": "gone", "data": None}])
    assert sample_ids(ws, "boat", 3) == []
    prepare_dataset(ws, "boat", size=32, workers=1)
    assert prepared_ids(ws, "boat") == [f"s{i}" for i in range(10)]
    first = sample_ids(ws, "boat", 4, seed=1)
    assert len(first) == 4 and first == sample_ids(ws, "boat", 4, seed=1) and "gone" not in first
    assert sample_ids(ws, "boat", 4, seed=2) != first
    assert sorted(sample_ids(ws, "boat", 50)) == prepared_ids(ws, "boat")


def test_suspicious_lists_tiny_clipped_rotated_and_exif_images(tmp_path):
    from pipeline.yolo.verify import suspicious

    ws = make_dataset(tmp_path, [
        {"id": "ok", "data": jpeg_bytes(noise(40, 40)), "boxes": [(0, 0.1, 0.1, 0.9, 0.9)]},
        {"id": "tiny", "data": jpeg_bytes(noise(40, 40)), "boxes": [(0, 0.1, 0.1, 0.11, 0.9)]},
        {"id": "clip", "data": jpeg_bytes(noise(40, 40)), "boxes": [(0, -0.01, 0.1, 0.9, 0.9)]},
        {"id": "rot", "data": jpeg_bytes(noise(40, 40)), "rotation": 90.0},
        {"id": "nan", "data": jpeg_bytes(noise(40, 40)), "rotation": float("nan")},
        {"id": "exif", "data": jpeg_bytes(noise(40, 40), exif_orientation=8), "rotation": 90.0,
         "boxes": [(0, 0.5, 0.5, 1.2, 0.501)]},
    ])
    table = suspicious(ws, "boat")
    assert table.values.tolist() == [["clip", "clipped"], ["exif", "tiny, clipped, rotation, exif"],
                                     ["rot", "rotation"], ["tiny", "tiny"]]
    assert "exif" not in suspicious(ws, "boat", check_exif=False)["Reasons"].str.cat()


def test_verification_of_demo_exif_images_lines_up(demo_root, prepared_demo):
    """Drawn label outlines on the prepared image enclose the boat pixels (object mask inside > outside)."""
    from pipeline.yolo.verify import suspicious, verification_pair

    ws, _ = prepared_demo
    special = demo.special_images(demo_root)
    flagged = suspicious(ws, "boat")
    exif_flagged = flagged[flagged["Reasons"].str.contains("exif")]["ImageID"].tolist()
    assert exif_flagged == special["exif_orientation"]
    for image_id in exif_flagged:
        prepared, original = verification_pair(ws, "boat", image_id)
        assert prepared.shape == (416, 416, 3)
        assert original.shape[:2] == decode_rgb(ws.dataset_dir("boat") / "originals" / f"{image_id}.jpg").shape[:2]


# ---------------------------------------------------------------- the real chain: build → fetch → prepare → split

def test_demo_through_build_fetch_prepare_split(demo_copy):
    """The builder's and fetch's real outputs are prepare's inputs (no hand-made tables here)."""
    from pipeline.openimages.build import build_dataset
    from pipeline.images.fetch import fetch_images
    from pipeline.yolo.split import read_split, split_dataset

    ws = Workspace(demo_copy)
    build_dataset(ws, ["Boat"], negatives=0.1)
    fetch_images(ws, "boat", str(demo.originals_dir(demo_copy)))
    summary = prepare_dataset(ws, "boat", workers=2)
    images = pd.read_parquet(ws.dataset_dir("boat") / "images.parquet")
    truncated = set(demo.special_images(demo_copy)["truncated_jpeg"]) & set(images["ImageID"])
    assert {f["ImageID"] for f in summary["failed"]} == truncated
    assert summary["prepared"] == len(images) - len(truncated)
    assert summary["empty_labels"] >= int(images["IsNegative"].sum())
    parts = read_split(ws, "boat") if split_dataset(ws, "boat") else None
    assert sum(len(v) for v in parts.values()) == summary["prepared"]
    assert not truncated & set(sum(parts.values(), []))


def test_cli_prepare_prints_a_summary_and_the_failures(tmp_path, capsys):
    from pipeline.cli import main

    good = jpeg_bytes(noise(60, 80))
    ws = make_dataset(tmp_path, [{"id": "a", "data": good, "boxes": [(0, 0.1, 0.1, 0.9, 0.9)]},
                                 {"id": "b", "data": good[:300]}])
    argv = ["--workspace", str(ws.root), "prepare", "--dataset", "boat", "--size", "64", "--workers", "1"]
    assert main("p", "d", ["pipeline.yolo.prepare"], argv) == 0
    out = capsys.readouterr().out
    assert "1 of 2 images prepared (1 written, 0 up to date, 0 relabelled); 1 boxes" in out
    assert "failed b: image b.jpg is truncated (the JPEG has no end marker)" in out
    assert main("p", "d", ["pipeline.yolo.prepare"], argv[:-2] + ["--size", "100"]) == 2
    assert "network size 100 must be a multiple of 32" in capsys.readouterr().err
