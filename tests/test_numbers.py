"""Every number a dataset step takes is checked in the function both the CLI and the pages call.

NaN, infinity, negative, zero, fractions and huge values each get one sentence (a UserError, exit
2 on the command line) before anything is read or written: the workspace is compared file by file.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline import numbers
from pipeline.cli import UserError, main
from pipeline.demo import generate as demo
from pipeline.images import fetch, sync
from pipeline.openimages import build
from pipeline.yolo import health, prepare, split
from pipeline.workspace import Workspace
from tests.support.datasets import jpeg_bytes, make_dataset, noise

PIPELINE = __import__("pipeline.__main__", fromlist=["COMMAND_MODULES"]).COMMAND_MODULES
NAN, INF = math.nan, math.inf
SIZE = " (a multiple of 32 between 32 and 4096: darknet needs that)"
CORES = " (leave it out to use every core)"
NEG = " (a fraction of the positive images: 0.5 = half as many)"
CAP = " (positive images per split)"
K = " (6 for yolov3-tiny, 9 for yolov3)"
BOXES = pd.DataFrame({"ImageID": ["a"], "ClassIndex": [0], "XMin": [0.1], "YMin": [0.1], "XMax": [0.5], "YMax": [0.6]})
TABLE = health.box_table(BOXES.loc[[0, 0, 0]].reset_index(drop=True), 416)

# (call(ws, tmp), the one sentence): ws holds dataset "boat" (prepared at 64 px, split, pushed to tmp/pushed)
CASES = {
    # prepare: size, quality, workers
    "prepare size nan": (lambda ws, t: prepare.prepare_dataset(ws, "boat", size=NAN),
                         f"--size must be a whole number from 32 to 4096, not nan{SIZE}"),
    "prepare size inf": (lambda ws, t: prepare.prepare_dataset(ws, "boat", size=INF),
                         f"--size must be a whole number from 32 to 4096, not inf{SIZE}"),
    "prepare size -32": (lambda ws, t: prepare.prepare_dataset(ws, "boat", size=-32), f"--size -32 must be at least 32{SIZE}"),
    "prepare size 0": (lambda ws, t: prepare.prepare_dataset(ws, "boat", size=0), f"--size 0 must be at least 32{SIZE}"),
    "prepare size huge": (lambda ws, t: prepare.prepare_dataset(ws, "boat", size=10**9),
                          f"--size 1000000000 must be at most 4096{SIZE}"),
    "prepare size 400": (lambda ws, t: prepare.prepare_dataset(ws, "boat", size=400),
                         "network size 400 must be a multiple of 32 between 32 and 4096 (darknet needs that)"),
    "prepare size 416.5": (lambda ws, t: prepare.prepare_dataset(ws, "boat", size=416.5),
                           f"--size must be a whole number from 32 to 4096, not 416.5{SIZE}"),
    "prepare quality nan": (lambda ws, t: prepare.prepare_dataset(ws, "boat", quality=NAN),
                            "--quality must be a whole number from 1 to 100, not nan (JPEG quality)"),
    "prepare quality 0": (lambda ws, t: prepare.prepare_dataset(ws, "boat", quality=0),
                          "--quality 0 must be at least 1 (JPEG quality)"),
    "prepare quality 101": (lambda ws, t: prepare.prepare_dataset(ws, "boat", quality=101),
                            "--quality 101 must be at most 100 (JPEG quality)"),
    "prepare workers 0": (lambda ws, t: prepare.prepare_dataset(ws, "boat", workers=0), f"--workers 0 must be at least 1{CORES}"),
    "prepare workers -1": (lambda ws, t: prepare.prepare_dataset(ws, "boat", workers=-1),
                           f"--workers -1 must be at least 1{CORES}"),
    "prepare workers nan": (lambda ws, t: prepare.prepare_dataset(ws, "boat", workers=NAN),
                            f"--workers must be a whole number from 1 to 256, not nan{CORES}"),
    "prepare workers 2.5": (lambda ws, t: prepare.prepare_dataset(ws, "boat", workers=2.5),
                            f"--workers must be a whole number from 1 to 256, not 2.5{CORES}"),
    "prepare workers huge": (lambda ws, t: prepare.prepare_dataset(ws, "boat", workers=10**6),
                             f"--workers 1000000 must be at most 256{CORES}"),
    # split: ratios, seed
    "split ratios nan": (lambda ws, t: split.split_dataset(ws, "boat", ratios=(NAN, 0.5, 0.5)),
                         "ratios [nan, 0.5, 0.5] must all be positive: every split needs images"),
    "split ratios inf": (lambda ws, t: split.split_dataset(ws, "boat", ratios=(INF, 0, 0)),
                         "ratios [inf, 0.0, 0.0] must all be positive: every split needs images"),
    "split ratios negative": (lambda ws, t: split.split_dataset(ws, "boat", ratios=(-0.1, 0.6, 0.5)),
                              "ratios [-0.1, 0.6, 0.5] must all be positive: every split needs images"),
    "split ratios zero": (lambda ws, t: split.split_dataset(ws, "boat", ratios=(0, 0.5, 0.5)),
                          "ratios [0.0, 0.5, 0.5] must all be positive: every split needs images"),
    "split ratios huge": (lambda ws, t: split.split_dataset(ws, "boat", ratios=(1e300, 1, 1)),
                          "ratios [1e+300, 1.0, 1.0] sum to 1e+300, not 1"),
    "split ratios two": (lambda ws, t: split.split_dataset(ws, "boat", ratios=(0.5, 0.5)),
                         "give three ratios (train valid test), not 2"),
    "split seed -1": (lambda ws, t: split.split_dataset(ws, "boat", seed=-1), "--seed -1 must be at least 0"),
    "split seed nan": (lambda ws, t: split.split_dataset(ws, "boat", seed=NAN),
                       "--seed must be a whole number from 0 to 4294967295, not nan"),
    "split seed huge": (lambda ws, t: split.split_dataset(ws, "boat", seed=2**40),
                        "--seed 1099511627776 must be at most 4294967295"),
    # build: max-images, negatives, seed
    "build max-images 0": (lambda ws, t: build.build_dataset(ws, ["Boat"], max_images=0),
                           f"--max-images 0 must be at least 1{CAP}"),
    "build max-images -1": (lambda ws, t: build.build_dataset(ws, ["Boat"], max_images=-1),
                            f"--max-images -1 must be at least 1{CAP}"),
    "build max-images nan": (lambda ws, t: build.build_dataset(ws, ["Boat"], max_images=NAN),
                             f"--max-images must be a whole number from 1 to 1000000000, not nan{CAP}"),
    "build max-images inf": (lambda ws, t: build.build_dataset(ws, ["Boat"], max_images=INF),
                             f"--max-images must be a whole number from 1 to 1000000000, not inf{CAP}"),
    "build max-images huge": (lambda ws, t: build.build_dataset(ws, ["Boat"], max_images=10**12),
                              f"--max-images 1000000000000 must be at most 1000000000{CAP}"),
    "build negatives nan": (lambda ws, t: build.build_dataset(ws, ["Boat"], negatives=NAN),
                            f"--negatives must be a finite number from 0 to 100, not nan{NEG}"),
    "build negatives inf": (lambda ws, t: build.build_dataset(ws, ["Boat"], negatives=INF),
                            f"--negatives must be a finite number from 0 to 100, not inf{NEG}"),
    "build negatives -0.1": (lambda ws, t: build.build_dataset(ws, ["Boat"], negatives=-0.1),
                             f"--negatives -0.1 must be at least 0{NEG}"),
    "build negatives huge": (lambda ws, t: build.build_dataset(ws, ["Boat"], negatives=1000),
                             f"--negatives 1000 must be at most 100{NEG}"),
    "build seed -1": (lambda ws, t: build.build_dataset(ws, ["Boat"], seed=-1), "--seed -1 must be at least 0"),
    "build seed nan": (lambda ws, t: build.build_dataset(ws, ["Boat"], seed=NAN),
                       "--seed must be a whole number from 0 to 4294967295, not nan"),
    # fetch-images: workers, retries, timeout
    "fetch workers 0": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), workers=0), "--workers 0 must be at least 1"),
    "fetch workers nan": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), workers=NAN),
                          "--workers must be a whole number from 1 to 256, not nan"),
    "fetch workers huge": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), workers=10**6),
                           "--workers 1000000 must be at most 256"),
    "fetch retries -1": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), retries=-1), "--retries -1 must be at least 0"),
    "fetch retries nan": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), retries=NAN),
                          "--retries must be a whole number from 0 to 100, not nan"),
    "fetch retries huge": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), retries=1000),
                           "--retries 1000 must be at most 100"),
    "fetch timeout 0": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), timeout=0),
                        "--timeout 0 must be more than 0 (seconds)"),
    "fetch timeout -1": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), timeout=-1),
                         "--timeout -1 must be more than 0 (seconds)"),
    "fetch timeout nan": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), timeout=NAN),
                          "--timeout must be a finite number from 0 to 3600, not nan (seconds)"),
    "fetch timeout inf": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), timeout=INF),
                          "--timeout must be a finite number from 0 to 3600, not inf (seconds)"),
    "fetch timeout huge": (lambda ws, t: fetch.fetch_images(ws, "boat", str(t), timeout=1e9),
                           "--timeout 1e+09 must be at most 3600 (seconds)"),
    # push / pull workers
    "push workers 0": (lambda ws, t: sync.push(ws, "boat", str(t / "out"), workers=0), "--workers 0 must be at least 1"),
    "push workers nan": (lambda ws, t: sync.push(ws, "boat", str(t / "out"), workers=NAN),
                         "--workers must be a whole number from 1 to 256, not nan"),
    "push workers huge": (lambda ws, t: sync.push(ws, "boat", str(t / "out"), workers=10**6),
                          "--workers 1000000 must be at most 256"),
    "pull workers -1": (lambda ws, t: sync.pull(ws, "boat", str(t / "pushed"), workers=-1),
                        "--workers -1 must be at least 1"),
    "pull workers inf": (lambda ws, t: sync.pull(ws, "boat", str(t / "pushed"), workers=INF),
                         "--workers must be a whole number from 1 to 256, not inf"),
    # health: anchors count, size (and the k-means seed)
    "health anchors 0": (lambda ws, t: health.anchors_for(TABLE, 0), f"--anchors 0 must be at least 1{K}"),
    "health anchors -1": (lambda ws, t: health.anchors_for(TABLE, -1), f"--anchors -1 must be at least 1{K}"),
    "health anchors nan": (lambda ws, t: health.anchors_for(TABLE, NAN),
                           f"--anchors must be a whole number from 1 to 100, not nan{K}"),
    "health anchors huge": (lambda ws, t: health.anchors_for(TABLE, 10**6), f"--anchors 1000000 must be at most 100{K}"),
    "health anchors seed -1": (lambda ws, t: health.anchors_for(TABLE, 2, seed=-1), "--seed -1 must be at least 0"),
    "health size 0": (lambda ws, t: health.box_table(BOXES, 0), "--size 0 must be at least 32 (network pixels)"),
    "health size nan": (lambda ws, t: health.box_table(BOXES, NAN),
                        "--size must be a whole number from 32 to 4096, not nan (network pixels)"),
    "health size inf": (lambda ws, t: health.written_labels(ws, "boat", INF),
                        "--size must be a whole number from 32 to 4096, not inf (network pixels)"),
    "health size huge": (lambda ws, t: health.written_labels(ws, "boat", 10**9),
                         "--size 1000000000 must be at most 4096 (network pixels)"),
    # demo: --images, seed
    "demo images 0": (lambda ws, t: demo.generate(t / "demo", images=0), "--images 0 must be at least 1 (pictures to draw)"),
    "demo images -5": (lambda ws, t: demo.generate(t / "demo", images=-5), "--images -5 must be at least 1 (pictures to draw)"),
    "demo images nan": (lambda ws, t: demo.generate(t / "demo", images=NAN),
                        "--images must be a whole number from 1 to 100000, not nan (pictures to draw)"),
    "demo images inf": (lambda ws, t: demo.generate(t / "demo", images=INF),
                        "--images must be a whole number from 1 to 100000, not inf (pictures to draw)"),
    "demo images huge": (lambda ws, t: demo.generate(t / "demo", images=10**9),
                         "--images 1000000000 must be at most 100000 (pictures to draw)"),
    "demo seed -1": (lambda ws, t: demo.generate(t / "demo", images=3, seed=-1), "--seed -1 must be at least 0"),
    "demo seed nan": (lambda ws, t: demo.generate(t / "demo", images=3, seed=NAN),
                      "--seed must be a whole number from 0 to 4294967295, not nan"),
}

# The same checks through the command line: exit 2, the sentence on stderr.
CLI_CASES = {
    "prepare --workers 0": (["prepare", "--dataset", "boat", "--workers", "0"], f"--workers 0 must be at least 1{CORES}"),
    "prepare --size 0": (["prepare", "--dataset", "boat", "--size", "0"], f"--size 0 must be at least 32{SIZE}"),
    "split --ratios nan": (["split", "--dataset", "boat", "--ratios", "nan", "0.5", "0.5"],
                           "ratios [nan, 0.5, 0.5] must all be positive: every split needs images"),
    "split --seed -1": (["split", "--dataset", "boat", "--seed", "-1"], "--seed -1 must be at least 0"),
    "build --max-images 0": (["build", "--class", "Boat", "--max-images", "0"], f"--max-images 0 must be at least 1{CAP}"),
    "build --negatives inf": (["build", "--class", "Boat", "--negatives", "inf"],
                              f"--negatives must be a finite number from 0 to 100, not inf{NEG}"),
    "fetch-images --timeout 0": (["fetch-images", "--dataset", "boat", "--from", "urls", "--timeout", "0"],
                                 "--timeout 0 must be more than 0 (seconds)"),
    "fetch-images --retries -1": (["fetch-images", "--dataset", "boat", "--from", "urls", "--retries", "-1"],
                                  "--retries -1 must be at least 0"),
    "push --workers 0": (["push", "--dataset", "boat", "--to", "/nonexistent/x", "--workers", "0"],
                         "--workers 0 must be at least 1"),
    "pull --workers 100000": (["pull", "--from", "/nonexistent/x", "--workers", "100000"],
                              "--workers 100000 must be at most 256"),
    "health --anchors 0": (["health", "--dataset", "boat", "--anchors", "0"], f"--anchors 0 must be at least 1{K}"),
    "health --size 0": (["health", "--dataset", "boat", "--size", "0"], "--size 0 must be at least 32 (network pixels)"),
    "health --seed -1": (["health", "--dataset", "boat", "--seed", "-1"], "--seed -1 must be at least 0"),
    "demo --images 0": (["demo", "--images", "0"], "--images 0 must be at least 1 (pictures to draw)"),
    "demo --seed -1": (["demo", "--images", "3", "--seed", "-1"], "--seed -1 must be at least 0"),
}


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> tuple[Workspace, Path]:
    tmp = tmp_path_factory.mktemp("numbers")
    specs = [{"id": f"{i:04x}", "data": jpeg_bytes(noise(60, 80, i)), "boxes": [(0, 0.1, 0.1, 0.6, 0.7)]}
             for i in range(10)]
    ws = make_dataset(tmp / "ws", specs)
    prepare.prepare_dataset(ws, "boat", size=64, workers=1)
    split.split_dataset(ws, "boat", ratios=(0.6, 0.2, 0.2))
    sync.push(ws, "boat", str(tmp / "pushed"))
    return ws, tmp


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_number_is_one_sentence_and_changes_nothing(place, case):
    ws, tmp = place
    call, sentence = CASES[case]
    before = _snapshot(tmp)
    with pytest.raises(UserError) as refused:
        call(ws, tmp)
    assert str(refused.value) == sentence
    assert _snapshot(tmp) == before


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_a_bad_number_on_the_command_line_exits_2_with_the_sentence(place, capsys, case):
    ws, tmp = place
    argv, sentence = CLI_CASES[case]
    workspace = tmp / "demo-ws" if argv[0] == "demo" else ws.root
    before = _snapshot(tmp)
    assert main("python -m pipeline", "", PIPELINE, ["--workspace", str(workspace), *argv]) == 2
    assert capsys.readouterr().err == f"error: {sentence}\n"
    assert _snapshot(tmp) == before


@pytest.mark.parametrize("value", [True, "3", None, [3]])
def test_whole_refuses_what_is_not_a_number(value):
    with pytest.raises(UserError, match=r"^--x must be a whole number from 1 to 9, not "):
        numbers.whole(value, "--x", 1, 9)


def test_whole_and_real_accept_numpy_and_integral_floats():
    import numpy as np

    assert numbers.whole(np.int64(5), "--x", 1, 9) == 5 and numbers.whole(5.0, "--x", 1, 9) == 5
    assert numbers.real(np.float32(0.5), "--x", 0, 1) == 0.5
