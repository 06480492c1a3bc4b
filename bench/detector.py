"""Benchmark: the whole CLI journey on a fresh demo workspace with the default training preset.

demo → build --class Boat → fetch-images (the demo's folder) → prepare → split →
``darknet_runner train --dataset boat`` (the preset darknet picks: quick on a CPU build, foreground)
→ summary (mAP@0.5, VOC, of every saved weights file on valid) → evaluate each on test.
Prints wall time of each step, seconds/iteration and mAP@0.5 per saved weights; the zero-shot COCO
baseline is the row to beat. Target on 2 CPU cores (Debian darknet): test mAP@0.5 ≥ 0.6 with training
≤ 600 s wall.

    .venv/bin/python bench/detector.py [--size 192] [--minutes 8] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from darknet_runner.logs import iterations_frame, parse_file  # noqa: E402
from darknet_runner.rundir import RunDir  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402


def run(ws: Path, package: str, *argv: str) -> tuple[float, str]:
    """Run one CLI step; (seconds, stdout). Exits the benchmark on failure."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", package, "--workspace", str(ws), *argv], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{package} {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=192, help="prepare size (the quick preset trains at it)")
    parser.add_argument("--minutes", type=float, default=None, help="quick preset time budget")
    parser.add_argument("--keep", help="keep the workspace in this folder")
    args = parser.parse_args()
    ws = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="detector-bench-"))
    steps = {}
    try:
        steps["demo"], _ = run(ws, "pipeline", "demo")
        steps["build"], _ = run(ws, "pipeline", "build", "--class", "Boat")
        steps["fetch"], _ = run(ws, "pipeline", "fetch-images", "--dataset", "boat", "--from", str(ws / "demo" / "originals"))
        steps["prepare"], _ = run(ws, "pipeline", "prepare", "--dataset", "boat", "--size", str(args.size))
        steps["split"], _ = run(ws, "pipeline", "split", "--dataset", "boat")
        extra = ["--minutes", str(args.minutes)] if args.minutes else []
        steps["train"], out = run(ws, "darknet_runner", "train", "--dataset", "boat", "--run-id", "bench", *extra)
        run_dir = RunDir(Workspace(ws).run_dir("bench"))
        manifest = run_dir.load()
        frame = iterations_frame(parse_file(run_dir.log))
        steps["summary"], out = run(ws, "darknet_runner", "summary", "bench", "--json")
        summary = json.loads(out)
        rows = []
        for row in summary["weights"]:
            _, text = run(ws, "darknet_runner", "evaluate", "--run", "bench", "--weights", f"backup/{row['file']}",
                          "--backend", "opencv", "--json")
            rows.append((row["iteration"], row["file"], row["map50"], json.loads(text)["map50"]))
        _, text = run(ws, "darknet_runner", "baseline", "--dataset", "boat", "--json")
        baseline = json.loads(text)["map50"]
    finally:
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)
    print(f"preset {manifest.get('preset')}: yolov3-tiny {manifest['size']}px, batch {manifest['batch']}/"
          f"{manifest['subdivisions']}, lr {manifest['learning_rate']}, {manifest['max_batches']} iterations, "
          f"width {manifest.get('width')}, pretrained {Path(manifest['pretrained']).name if manifest['pretrained'] else None}")
    print("step        seconds")
    for name, seconds in steps.items():
        print(f"{name:<10}{seconds:>9.1f}")
    median = float(frame["seconds"].iloc[5:].median()) if len(frame) > 5 else float("nan")
    print(f"\ntraining: {steps['train']:.0f} s wall for {len(frame)} iterations, {median:.2f} s/iteration (median)")
    print(f"\n{'iteration':>9}  {'weights':<26}{'valid mAP@0.5':>14}{'test mAP@0.5':>14}")
    print(f"{'-':>9}  {'COCO yolov3-tiny, zero-shot':<26}{'':>14}{100 * (baseline or 0):>13.1f}%")
    for iteration, name, valid, test in rows:
        print(f"{iteration:>9}  {name:<26}{100 * (valid or 0):>13.1f}%{100 * (test or 0):>13.1f}%")
    print(f"\nbest on valid: {summary['best']['file']}; its test mAP@0.5 "
          f"{100 * (summary.get('test_map50') or 0):.1f} %")


if __name__ == "__main__":
    main()
