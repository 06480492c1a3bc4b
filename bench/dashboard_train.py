"""Benchmark one live tick of the Train page on a long run (6,000 iterations by default).

Every ``run_every`` tick the page brings the log up to date, rebuilds its frames and figures and
sends them to the browser. Compared, for one new iteration appended to a pjreddie-format log:

- baseline: parse the whole log again (``parse_file``) and draw every point;
- studio:   ``LogFollower.refresh()`` (only the new bytes) and figures thinned by ``charts.thin``.

Prints milliseconds per step and the figure JSON size, with ratios vs the baseline.
Run: ``.venv/bin/python bench/dashboard_train.py [--iterations 6000] [--repeat 5]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import charts  # noqa: E402
from darknet_runner.logs import LogFollower, iterations_frame, layers_frame, parse_file  # noqa: E402


def iteration_text(i: int, total: int) -> str:
    """What pjreddie's darknet prints for one iteration of yolov3-tiny (two [yolo] layers)."""
    loss = 40.0 / (1 + i / 50)
    return (f"Loaded: 0.000031 seconds\n"
            f"Region 16 Avg IOU: {min(0.9, i / total):f}, Class: 0.5, Obj: 0.4, No Obj: 0.01, .5R: 0.5, "
            f".75R: 0.1,  count: 5\n"
            f"Region 23 Avg IOU: -nan, Class: -nan, Obj: -nan, No Obj: 0.01, .5R: -nan, .75R: -nan,  count: 0\n"
            f"{i}: {loss:f}, {loss * 1.1:f} avg, 0.001000 rate, 0.600000 seconds, {i * 4} images\n")


def figures(frame, layers, thin: bool) -> int:
    """Build the page's figures; return the bytes of JSON sent to the browser."""
    if not thin:
        saved, charts.MAX_POINTS = charts.MAX_POINTS, 10**9
    try:
        figs = [charts.loss_figure(frame), charts.rate_figure(frame),
                charts.per_layer_figure(layers, "iou", "IoU", "iou"), charts.per_layer_figure(layers, "r50", "R", "r")]
        return sum(len(f.to_json()) for f in figs)
    finally:
        if not thin:
            charts.MAX_POINTS = saved


def tick(log_path: Path, follower: LogFollower | None, thin: bool) -> tuple[float, float, int]:
    """(seconds to read, seconds to build frames + figures, JSON bytes) for one tick."""
    start = time.perf_counter()
    log = parse_file(log_path) if follower is None else (follower.refresh(), follower.log)[1]
    read = time.perf_counter() - start
    start = time.perf_counter()
    frame = iterations_frame(log)
    layers = layers_frame(log).dropna(subset=["iteration", "layer"])
    size = figures(frame, layers, thin)
    return read, time.perf_counter() - start, size


def measure(log_path: Path, total: int, repeat: int, incremental: bool) -> tuple[float, float, int]:
    follower = LogFollower(log_path) if incremental else None
    if follower:
        follower.refresh()
    reads, draws, size = [], [], 0
    for k in range(repeat):
        with log_path.open("a") as handle:
            handle.write(iteration_text(total + k + 1, total))
        read, draw, size = tick(log_path, follower, thin=incremental)
        reads.append(read)
        draws.append(draw)
    return statistics.median(reads), statistics.median(draws), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        results = {}
        for name, incremental in (("baseline", False), ("studio", True)):
            log_path = Path(tmp) / f"{name}.txt"
            log_path.write_text("".join(iteration_text(i, args.iterations) for i in range(1, args.iterations + 1)))
            results[name] = measure(log_path, args.iterations, args.repeat, incremental)
    base = results["baseline"]
    print(f"one live tick of the Train page, {args.iterations} iterations logged (median of {args.repeat})")
    print(f"{'step':<28}{'baseline':>12}{'studio':>12}{'ratio':>10}")
    rows = [("read the log (ms)", 0, 1000), ("frames + figures (ms)", 1, 1000), ("figure JSON (KB)", 2, 1 / 1024)]
    for label, i, scale in rows:
        b, s = base[i] * scale, results["studio"][i] * scale
        print(f"{label:<28}{b:>12.1f}{s:>12.1f}{(b / s if s else float('inf')):>9.1f}×")
    total_b, total_s = (base[0] + base[1]) * 1000, (results["studio"][0] + results["studio"][1]) * 1000
    print(f"{'whole tick (ms)':<28}{total_b:>12.1f}{total_s:>12.1f}{total_b / total_s:>9.1f}×")


if __name__ == "__main__":
    main()
