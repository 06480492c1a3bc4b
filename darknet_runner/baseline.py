"""A zero-shot baseline: the off-the-shelf COCO yolov3-tiny scored on a dataset's test split.

When the picked class exists in COCO (boat, car, person, …), the official COCO detector is what a
user gets without training; the fine-tuned run should beat it. The baseline is a run folder of its
own (``runs/baseline-<slug>-coco-yolov3-tiny/``, ``"kind": "baseline"`` in run.json) holding the
dataset's split lists, the stock 80-class cfg at 416 and a link to ``weights/yolov3-tiny.weights``
in ``backup/``, so prediction and scoring are the same code as for a trained run. run.json's
``class_map`` maps COCO class indexes to the dataset's, by name; COCO classes that are not in the
dataset are left out of the predictions before scoring.
"""
from __future__ import annotations

import json
import logging

from darknet_runner import rundir
from darknet_runner.binary import DarknetInfo, find_darknet
from darknet_runner.cfg import generate_cfg
from darknet_runner.pretrained import ensure_pretrained
from darknet_runner.rundir import RunDir
from pipeline.cli import UserError
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

WEIGHTS = "yolov3-tiny.weights"
SIZE = 416
COCO_NAMES = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # darknet's data/coco.names, in class-index order
# Open Images display names whose COCO name differs (lower case on both sides).
ALIASES = {"motorcycle": "motorbike", "airplane": "aeroplane", "couch": "sofa", "television": "tvmonitor",
           "houseplant": "pottedplant", "mobile phone": "cell phone", "doughnut": "donut", "hair dryer": "hair drier",
           "ball": "sports ball", "kitchen & dining room table": "diningtable", "table": "diningtable",
           "tennis ball": "sports ball", "football": "sports ball", "microwave oven": "microwave",
           "baseball bat": "baseball bat", "computer mouse": "mouse", "remote control": "remote",
           "computer keyboard": "keyboard", "traffic sign": "stop sign", "stop sign": "stop sign"}


def coco_class_map(names: list[str]) -> dict[int, int]:
    """COCO class index → dataset class index, for the dataset's classes that COCO has (by name)."""
    found = {}
    for index, name in enumerate(names):
        key = " ".join(name.lower().split())
        coco = ALIASES.get(key, key)
        if coco in COCO_NAMES:
            found[COCO_NAMES.index(coco)] = index
    return found


def baseline_run_id(slug: str) -> str:
    return f"baseline-{slug}-coco-yolov3-tiny"


def baseline_run(ws: Workspace, slug: str, *, darknet: DarknetInfo | str | None = None,
                 progress: ProgressFn = None) -> RunDir:
    """The baseline run folder of ``slug`` (created, with the COCO weights fetched, when missing).

    Raises:
        UserError: none of the dataset's classes is a COCO class; the dataset is not split; the
            weights cannot be had.
    """
    dataset = ws.dataset(slug)
    names = dataset.class_names()
    mapping = coco_class_map(names)
    if not mapping:
        raise UserError(f"none of the classes of {slug!r} ({', '.join(names)}) is a COCO class, so the COCO "
                        f"detector has no zero-shot baseline for it")
    run = RunDir(ws.run_dir(baseline_run_id(slug)))
    if run.exists() and run.load().get("dataset", {}).get("manifest_sha256") == dataset.manifest_sha256() \
            and (run.backup / WEIGHTS).exists():
        return run
    info = darknet if isinstance(darknet, DarknetInfo) else find_darknet(darknet)
    weights = ensure_pretrained(ws, WEIGHTS, progress=progress, darknet=info)
    return rundir.create_fixed_run(ws, slug, run, cfg_text=generate_cfg("yolov3-tiny", len(COCO_NAMES), size=SIZE,
                                                                        batch=1, subdivisions=1, max_batches=1),
                                   net_names=list(COCO_NAMES), weights=weights, darknet=info,
                                   extra={"kind": "baseline", "model": "yolov3-tiny", "size": SIZE,
                                          "class_map": {str(k): v for k, v in mapping.items()}})


def evaluate_baseline(ws: Workspace, slug: str, *, backend: str = "opencv", split: str = "test",
                      conf: float = 0.25, method: str = "voc", progress: ProgressFn = None) -> dict:
    """Predict ``split`` with the COCO detector and score it like a trained run (metrics.json of the baseline run)."""
    from darknet_runner.evaluate import evaluate_run

    run = baseline_run(ws, slug, progress=progress)
    return evaluate_run(ws, run.id, weights=f"backup/{WEIGHTS}", method=method, conf=conf, split=split,
                        backend=backend, progress=progress)


def register(subparsers) -> None:
    """``baseline --dataset boat [--backend opencv|darknet] [--json]``."""
    parser = subparsers.add_parser("baseline", help="score the off-the-shelf COCO yolov3-tiny on a dataset's test split")
    parser.add_argument("--dataset", required=True, help="dataset slug")
    parser.add_argument("--backend", choices=("opencv", "darknet"), default="opencv")
    parser.add_argument("--method", default="voc")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    result = evaluate_baseline(ws, args.dataset, backend=args.backend, method=args.method,
                               progress=tqdm_progress("baseline", unit="img"))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        map50 = result["map50"]
        print(f"zero-shot COCO yolov3-tiny on {args.dataset} ({result['images']} {result['split']} images): "
              f"mAP@0.5 = {'-' if map50 is None else f'{100 * map50:.2f} %'}")
    return 0
