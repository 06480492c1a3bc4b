"""A run's results summary, like AlexeyAB's chart.png or Ultralytics' results.png: loss, mAP@0.5 of
every saved weights file on the valid split, the PR curve of the best one on the test split, and
which weights are best — as ``runs/<id>/summary.json`` and ``runs/<id>/results.png``.

pjreddie's darknet never computes mAP while training, so each ``backup/*.weights`` is predicted
(OpenCV DNN by default: no darknet process per file) and scored here; predictions are cached in
``predictions/`` like any other, so a second summary only scores new files.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from darknet_runner import evaluate
from darknet_runner.logs import iterations_frame, parse_file
from darknet_runner.rundir import RunDir, open_run
from darknet_runner.weights import WeightsError, iteration_for, read_header
from pipeline.atomic import atomic_write_bytes, write_json
from pipeline.cli import UserError
from pipeline.evaluation import metrics
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

SUMMARY_JSON = "summary.json"
RESULTS_PNG = "results.png"


def saved_weights(run: RunDir) -> list[tuple[int, Path]]:
    """(iteration, file) of every readable ``backup/*.weights``, by iteration (``_final`` last on ties)."""
    manifest = run.load()
    found = []
    for path in run.backup.glob("*.weights"):
        try:
            iteration = iteration_for(read_header(path), int(manifest["batch"]), int(manifest["subdivisions"]))
        except WeightsError as err:
            log.warning("skipping %s: %s", path.name, err)
            continue
        found.append((iteration, path))
    return sorted(found, key=lambda item: (item[0], item[1].name.endswith("_final.weights"), item[1].name))


def summarize(ws: Workspace, run_id: str, *, backend: str = "opencv", split: str = "valid",
              progress: ProgressFn = None) -> dict:
    """Score every saved weights file on ``split``, pick the best, score it on test; write the summary.

    Returns:
        ``{"run", "split", "weights": [{"iteration", "file", "map50"}], "best": {...}, "test": {...}, "png"}``.

    Raises:
        UserError: the run has no saved weights yet.
    """
    run = open_run(ws, run_id)
    files = saved_weights(run)
    if not files:
        raise UserError(f"run {run.id} has saved no weights yet (pjreddie's darknet saves every 100 iterations)")
    rows = []
    for done, (iteration, path) in enumerate(files, start=1):
        inputs = evaluate.load_run_inputs(ws, run.id, weights=str(path), split=split, backend=backend)
        scored = metrics.evaluate_detections(inputs.gt, inputs.det, method="voc", class_names=inputs.class_names)
        rows.append({"iteration": iteration, "file": path.name, "map50": scored["map50"]})
        if progress:
            progress(done, len(files) + 1, f"{path.name}: mAP@0.5 {scored['map50']}")
    best = max(rows, key=lambda r: (r["map50"] or 0.0, r["iteration"]))
    test = evaluate.evaluate_run(ws, run.id, weights=str(run.backup / best["file"]), split="test", backend=backend)
    if progress:
        progress(len(files) + 1, len(files) + 1, f"test mAP@0.5 {test['map50']}")
    result = {"run": run.id, "split": split, "backend": backend, "weights": rows, "best": best,
              "test": {"map50": test["map50"], "classes": test["classes"], "pr_curve": test["pr_curve"],
                       "images": test["images"]},
              "png": RESULTS_PNG}
    write_json(run.path / SUMMARY_JSON, result)
    atomic_write_bytes(run.path / RESULTS_PNG, render_png(run, result))
    return result


def render_png(run: RunDir, result: dict) -> bytes:
    """The summary as one PNG: loss, mAP per weights, PR curve, best weights."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    frame = iterations_frame(parse_file(run.log)) if run.log.is_file() else None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    loss, maps, pr = axes
    if frame is not None and not frame.empty:
        loss.plot(frame["iteration"], frame["loss"], color="#bbbbbb", linewidth=0.8, label="loss")
        loss.plot(frame["iteration"], frame["avg_loss"], color="#0072B2", linewidth=1.5, label="avg loss")
        loss.set_ylim(0, max(1.0, float(frame["avg_loss"].quantile(0.98)) * 1.5))
        loss.legend(loc="upper right")
    loss.set(title="Training loss", xlabel="iteration")
    weights = result["weights"]
    maps.plot([w["iteration"] for w in weights], [w["map50"] or 0.0 for w in weights], "o-", color="#009E73")
    best = result["best"]
    maps.plot([best["iteration"]], [best["map50"] or 0.0], "*", markersize=14, color="#D55E00",
              label=f"best: {best['file']} ({100 * (best['map50'] or 0):.1f} %)")
    maps.set(title=f"mAP@0.5 per saved weights ({result['split']})", xlabel="iteration", ylim=(0, 1))
    maps.legend(loc="lower right")
    for name, curve in (result["test"].get("pr_curve") or {}).items():
        pr.plot(curve["recall"], curve["precision"], label=name)
    test_map = result["test"]["map50"]
    pr.set(title=f"Test PR, {best['file']}: mAP@0.5 {100 * (test_map or 0):.1f} %",
           xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    if result["test"].get("pr_curve"):
        pr.legend(loc="lower left")
    fig.suptitle(f"Run {run.id}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def read_summary(run: RunDir) -> dict | None:
    """The last summary of a run, None before one was made."""
    path = run.path / SUMMARY_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def register(subparsers) -> None:
    """``summary RUN [--backend opencv|darknet] [--json]``."""
    parser = subparsers.add_parser("summary", help="mAP of every saved weights file, best weights, results.png")
    parser.add_argument("run", help="run id or run folder")
    parser.add_argument("--backend", choices=("opencv", "darknet"), default="opencv")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    result = summarize(ws, args.run, backend=args.backend, progress=tqdm_progress("summary", unit="file"))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "test"} | {"test_map50": result["test"]["map50"]}))
        return 0
    for row in result["weights"]:
        shown = "-" if row["map50"] is None else f"{100 * row['map50']:.2f} %"
        print(f"{row['iteration']:>7}  {row['file']:<28} mAP@0.5 {result['split']} {shown}")
    best, run_path = result["best"], open_run(ws, args.run).path
    print(f"best: {best['file']}; test mAP@0.5 {100 * (result['test']['map50'] or 0):.2f} %; "
          f"{run_path / RESULTS_PNG}")
    return 0
