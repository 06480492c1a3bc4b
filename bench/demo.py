"""Benchmark: how fast ``pipeline.demo.generate.generate`` writes a demo workspace, against its floor.

The floor (baseline) is the least any generator of these pictures must do: draw the background
gradient with grain and JPEG-encode it, once per picture, at the same sizes. The full generator
adds the objects, their masks and boxes, the traps and all metadata CSVs. Target: the default
300 images in under ~10 s on one core.

    .venv/bin/python bench/demo.py [--images 50 300 1000]

Writes under /tmp/demo-bench/ and deletes it afterwards.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.demo import generate as demo, scenes as demo_scenes  # noqa: E402

OUT = Path("/tmp/demo-bench")


def floor_seconds(images: int) -> float:
    """Background + JPEG encode only, same sizes and encoder settings as the demo."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(images):
        width, height = demo.SIZES[i % len(demo.SIZES)]
        picture = demo_scenes.background(rng, width, height, height // 2)
        picture.save(io.BytesIO(), "JPEG", **demo.JPEG_SETTINGS)
    return time.perf_counter() - start


def generate_seconds(images: int) -> tuple[float, float]:
    """Seconds for a full generation, and the megabytes it wrote."""
    root = OUT / f"ws-{images}"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    demo.generate(root, images=images, seed=0)
    seconds = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    return seconds, megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[50, 300, 1000])
    args = parser.parse_args()
    print(f"{'images':>7} {'floor s':>8} {'demo s':>8} {'demo/floor':>10} {'ms/image':>9} {'MB':>7}")
    try:
        for images in args.images:
            floor = floor_seconds(images)
            seconds, megabytes = generate_seconds(images)
            print(f"{images:>7} {floor:>8.2f} {seconds:>8.2f} {seconds / floor:>9.2f}x "
                  f"{1000 * seconds / images:>9.1f} {megabytes:>7.1f}")
    finally:
        shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
