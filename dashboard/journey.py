"""Where a dataset stands in the journey, and the next step to suggest (pure, no Streamlit).

Stages are read from the files each step writes (DESIGN.md workspace layout), so the answer is
the same after a reload, a server restart or a step run from the command line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from darknet_runner.rundir import RunDir
from pipeline.cli import UserError
from pipeline.workspace import Workspace

# The official metadata files a workspace needs to build datasets (base names as Google ships them).
METADATA_FILES = [
    "class-descriptions-boxable.csv",
    "bbox_labels_600_hierarchy.json",
    "oidv6-train-annotations-bbox.csv",
    "validation-annotations-bbox.csv",
    "test-annotations-bbox.csv",
    "train-images-boxable-with-rotation.csv",
    "validation-images-with-rotation.csv",
    "test-images-with-rotation.csv",
]

# Journey order: (stage, page title, sentence telling the user what to do there).
STEPS = [
    ("built", "Dataset", "Pick a class and build a dataset on the Dataset page."),
    ("fetched", "Images", "Fetch the dataset's images on the Images page."),
    ("prepared", "Prepare", "Resize the images and write YOLO labels on the Prepare page."),
    ("split", "Split", "Write the train/valid/test lists on the Split page."),
    ("trained", "Train", "Start a training run on the Train page."),
    ("evaluated", "Evaluate", "Evaluate the trained weights on the Evaluate page."),
]


@dataclass(frozen=True)
class NextStep:
    """The page to go to and one sentence saying why."""

    page: str | None
    message: str


def missing_metadata(ws: Workspace) -> list[str]:
    """Official metadata files absent from ``ws.metadata_dir``, in ``METADATA_FILES`` order."""
    return [name for name in METADATA_FILES if not (ws.metadata_dir / name).exists()]


def _has_any(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and next(folder.glob(pattern), None) is not None


def dataset_runs(ws: Workspace, slug: str) -> list[str]:
    """Run ids (newest first) whose run.json names ``slug`` as their dataset."""
    out = []
    for run_id in ws.runs():
        try:
            info = RunDir(ws.run_dir(run_id)).load()
        except UserError:  # removed since it was listed
            continue
        dataset = info.get("dataset")  # run.json keeps {"slug": …, "path": …, …}
        if (dataset.get("slug") if isinstance(dataset, dict) else dataset) == slug:
            out.append(run_id)
    return out


def dataset_stages(ws: Workspace, slug: str) -> dict[str, bool]:
    """Which journey stages the dataset ``slug`` has reached, from the files on disk."""
    dataset = ws.dataset(slug)
    meta = dataset.load()
    runs = dataset_runs(ws, slug)
    return {
        "built": meta is not None,
        "fetched": bool(meta and meta.get("fetch")) or _has_any(dataset.originals, "*.jpg"),
        "prepared": bool(meta and meta.get("prepare")) or _has_any(dataset.yolo, "*.txt"),
        "split": dataset.split_list("train").exists(),
        "trained": bool(runs),
        "evaluated": any(_has_any(RunDir(ws.run_dir(r)).predictions, "*.parquet") for r in runs),
    }


def next_step(ws: Workspace, slug: str | None) -> NextStep:
    """The first unfinished step for ``slug`` (or for the workspace when there is no dataset)."""
    missing = missing_metadata(ws)
    if missing:
        return NextStep(None, f"Put the Open Images metadata in {ws.metadata_dir} "
                              f"(`python -m pipeline metadata download`); missing: {', '.join(missing)}.")
    if not slug:
        return NextStep(STEPS[0][1], STEPS[0][2])
    stages = dataset_stages(ws, slug)
    for stage, page, message in STEPS:
        if not stages[stage]:
            return NextStep(page, message)
    return NextStep("Evaluate", "Everything is done for this dataset: compare runs or browse predictions.")
