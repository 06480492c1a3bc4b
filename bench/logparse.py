"""Benchmark the darknet log parser: full-parse speed and the cost of one incremental refresh.

Generates a synthetic AlexeyAB-format training log (the real line formats of facts/darknet.md §1–3:
clear-screen + title + BEL, iteration line, two [yolo] lines on "stderr", total_bbox, Loaded, a mAP
block every ``--map-every`` iterations, weights saved every 100) under /tmp, then prints:

- full parse (``parse_file``) in MB/s, against the baseline "the facts' regexes over every line"
  (ANSI strip + split on \\r/\\n + try each §7 pattern in turn, as a naive parser would);
- the median cost of ``LogFollower.refresh()`` after one new iteration is appended, on the
  big log and on a 10× smaller one (it must not grow with the file size).

Targets: ≥ 50 MB/s; ≤ 5 ms per refresh. Run: ``.venv/bin/python bench/logparse.py``.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from darknet_runner.logs import LogFollower, parse_file  # noqa: E402

HEADER = " GPU isn't used \n OpenCV isn't used - data augmentation will be slow \n"
MAP_BLOCK = (
    "\r4\r8Total Detection Time: 0 Seconds\n"
    "\n calculation mAP (mean average precision)...\n Detection layer: 16 - type = 28 \n"
    " Detection layer: 23 - type = 28 \n\n detections_count = 42, unique_truth_count = 9  \n"
    " rank = 0 of ranks = 42 \rclass_id = 0, name = box, ap = {ap:.2f}%   \t (TP = 8, FP = 1) \n\n"
    " for conf_thresh = 0.25, precision = 0.89, recall = 0.89, F1-score = 0.89 \n"
    " for conf_thresh = 0.25, TP = 8, FP = 1, FN = 1, average IoU = 65.07 % \n\n"
    " IoU threshold = 50 %, used Area-Under-Curve for each unique Recall \n"
    " mean average precision (mAP@0.50) = {frac:.6f}, or {ap:.2f} % \n\n"
    " mean_average_precision (mAP@0.50) = {frac:.6f} \nNew best mAP!\n")


def iteration_text(i: int, max_batches: int, rng: random.Random, map_every: int) -> str:
    """The bytes AlexeyAB (2023-08 →) writes for one iteration ``i``."""
    loss = 30.0 / (1 + i / 50) + rng.random()
    parts = []
    for layer in (16, 23):
        parts.append(
            f"v3 (mse loss, Normalizer: (iou: 0.75, obj: 1.00, cls: 1.00) Region {layer} Avg (IOU: {rng.random():f}), "
            f"count: {rng.randint(1, 9)}, class_loss = {loss / 3:f}, iou_loss = {rng.random():f}, "
            f"total_loss = {loss / 2:f} \n")
    parts.append(f" total_bbox = {i * 6}, rewritten_bbox = 0.000000 % \nLoaded: 0.000{rng.randint(100, 999)} seconds\n")
    parts.append(f"\n (next mAP calculation at {(i // map_every + 1) * map_every} iterations) "
                 f"\x1b[H\x1b[J{i}/{max_batches}: loss={loss:.1f} hours left=1.0\x07\n")
    parts.append(f" {i}: {loss:f}, {loss * 1.01:f} avg loss, 0.001000 rate, 0.{rng.randint(100000, 999999)} seconds, "
                 f"{i * 64} images, {(max_batches - i) * 0.4 / 3600:f} hours left\n")
    if i % 100 == 0:
        parts.append("Saving weights to backup/yolov4-tiny-obj_last.weights\n")
    if i % map_every == 0:
        ap = 50 + 40 * i / max_batches
        parts.append(MAP_BLOCK.format(ap=ap, frac=ap / 100))
    return "".join(parts)


def write_log(path: Path, iterations: int, map_every: int, seed: int = 0) -> None:
    """Write a synthetic log of ``iterations`` iterations to ``path``."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        batch = []
        for i in range(1, iterations + 1):
            batch.append(iteration_text(i, iterations, rng, map_every))
            if len(batch) == 2000:
                f.write("".join(batch))
                batch.clear()
        f.write("".join(batch))


# The baseline: what a straightforward parser does — every §7 pattern tried on every line.
NUM = r"[-+]?(?:nan|inf|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|1\.#(?:IND|QNAN|INF)0*)"
NAIVE_PATTERNS = [re.compile(p.replace("NUM", NUM)) for p in (
    r"^\s*(?P<it>\d+):\s+(?P<loss>NUM),\s+(?P<avg>NUM) avg(?: loss)?,\s+(?P<rate>NUM) rate,\s+(?P<sec>NUM) seconds,"
    r"\s+(?P<imgs>\d+) images(?:,\s+(?P<left>NUM) (?:hours|time) left)?\s*$",
    r"^v3 \(?(?P<lt>\w+) loss, Normalizer: \(iou: (?P<iou_n>NUM), (?:obj: (?P<obj_n>NUM), )?cls: (?P<cls_n>NUM)\) "
    r"Region (?P<layer>\d+) Avg \(IOU: (?P<iou>NUM)(?:, GIOU: (?P<giou>NUM))?\),(?: Class: (?P<cls>NUM), Obj: "
    r"(?P<obj>NUM), No Obj: (?P<noobj>NUM), \.5R: (?P<r5>NUM), \.75R: (?P<r75>NUM),)? count: (?P<count>\d+)"
    r"(?:, loss = (?P<loss_old>NUM))?(?:, class_loss ?[:=] ?(?P<class_loss>NUM), iou_loss ?[:=] ?"
    r"(?P<iou_loss>NUM))?(?:, total_loss ?[:=] ?(?P<total>NUM))?\s*$",
    r"^\s*total_bbox ?= ?(?P<total>\d+), rewritten_bbox ?= ?(?P<pct>NUM) ?%\s*$",
    r"^Loaded: (?P<sec>NUM) seconds(?P<bottleneck> - performance bottleneck.*)?\s*$",
    r"mean average precision \(mAP(?:@(?P<iou>NUM))?\) ?= ?(?P<map>NUM)(?:, or (?P<pct>NUM) %| ?%)",
    r"Saving weights to (?P<path>.+?)\s*$",
)]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b\][^\x07]*\x07|\x07")


def naive_parse(path: Path) -> int:
    """The baseline parser; returns the number of matched lines."""
    lines = re.split(r"\r\n|\r|\n", ANSI.sub("", path.read_text(encoding="utf-8", errors="replace")))
    found = 0
    for line in lines:
        for pattern in NAIVE_PATTERNS:
            m = pattern.search(line)
            if m:
                m.groupdict()
                found += 1
                break
    return found


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call; CPU time is steadier on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def parse_with_layers(path: Path) -> None:
    """A full parse that also converts the per-layer columns (they are converted lazily otherwise)."""
    parse_file(path)._layers_ready()


def refresh_cost(path: Path, iterations: int, samples: int) -> float:
    """Median seconds of one ``refresh()`` after appending one iteration to a fully read log."""
    follower = LogFollower(path)
    follower.refresh()
    rng = random.Random(1)
    costs = []
    for k in range(samples):
        with open(path, "a", encoding="utf-8", newline="") as f:
            f.write(iteration_text(iterations + k + 1, iterations * 2, rng, 10 ** 9))
        start = time.perf_counter()
        added = follower.refresh()
        costs.append(time.perf_counter() - start)
        assert added == 1, added
    return statistics.median(costs)


def main() -> int:
    """Generate the logs under --dir, measure, print the table, delete the logs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200_000)
    ap.add_argument("--map-every", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=21)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    big = Path(args.dir) / "bench_logparse_big.log"
    small = Path(args.dir) / "bench_logparse_small.log"
    try:
        write_log(big, args.iterations, args.map_every)
        write_log(small, args.iterations // 10, args.map_every)
        return report(big, small, args)
    finally:
        for p in (big, small):
            p.unlink(missing_ok=True)


def report(big: Path, small: Path, args) -> int:
    """Print the side-by-side table."""
    mb = big.stat().st_size / 1e6
    parsed = parse_file(big)
    print(f"log: {mb:.1f} MB, {parsed.iteration_count} iterations, {parsed.layer_count} layer lines, "
          f"{len(parsed.map)} mAP events, {len(parsed.weights)} weights saved; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'measure':<44} {'baseline':>10} {'logs':>10} {'ratio':>7} {'target':>8}")
    ours = [min(timed(parse_file, big)[k] for _ in range(2)) for k in (0, 1)]
    with_layers = timed(parse_with_layers, big)
    naive = (None, None) if args.skip_baseline else timed(naive_parse, big)
    for k, clock in enumerate(("wall", "CPU")):
        base = f"{mb / naive[k]:.1f}" if naive[k] else "-"
        ratio = f"{naive[k] / ours[k]:.1f}x" if naive[k] else "-"
        print(f"{f'full parse, MB/s ({clock})':<44} {base:>10} {mb / ours[k]:>10.1f} {ratio:>7} {'>= 50':>8}")
        print(f"{f'full parse + layer columns, MB/s ({clock})':<44} {'-':>10} {mb / with_layers[k]:>10.1f} "
              f"{'':>7} {'':>8}")
    r_small = refresh_cost(small, args.iterations // 10, args.samples)
    r_big = refresh_cost(big, args.iterations, args.samples)
    small_mb = small.stat().st_size / 1e6
    print(f"{f'refresh after 1 iteration, {small_mb:.0f} MB log, ms':<44} {'-':>10} {r_small * 1e3:>10.3f} "
          f"{'':>7} {'<= 5':>8}")
    print(f"{f'refresh after 1 iteration, {mb:.0f} MB log, ms':<44} {'-':>10} {r_big * 1e3:>10.3f} "
          f"{r_big / r_small:>6.2f}x {'<= 5':>8}")
    print("baseline: the facts' regexes tried on every line. Refresh ratio: big log / small log (~1x: no growth).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
