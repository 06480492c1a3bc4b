"""Where a dataset stands in the journey, and the next step to suggest (pure, no Streamlit).

Stages are read from the files each step writes (README.md, "The workspace"), so the answer is
the same after a reload, a server restart or a step run from the command line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from darknet_runner import jobs
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


def training_runs(ws: Workspace) -> list[str]:
    """Run ids (newest first) that train a detector: every run but the zero-shot baselines."""
    return [run_id for run_id in ws.runs() if not RunDir(ws.run_dir(run_id)).is_baseline]


def dataset_runs(ws: Workspace, slug: str) -> list[str]:
    """Training run ids (newest first) whose run.json names ``slug`` as their dataset (baselines left out)."""
    out = []
    for run_id in ws.runs():
        try:
            info = RunDir(ws.run_dir(run_id)).load()
        except UserError:  # removed since it was listed
            continue
        if info.get("kind") == "baseline":
            continue
        dataset = info.get("dataset")  # run.json keeps {"slug": …, "path": …, …}
        if (dataset.get("slug") if isinstance(dataset, dict) else dataset) == slug:
            out.append(run_id)
    return out


@dataclass(frozen=True)
class RunProgress:
    """Where one training run stands: its state (darknet_runner.jobs.status) and its saved weights."""

    run_id: str
    state: str
    iteration: int | None
    max_batches: int | None
    weights_iteration: int | None  # iteration of the newest saved weights; None when none are saved

    @property
    def has_weights(self) -> bool:
        return self.weights_iteration is not None

    def describe(self) -> str:
        """``"training, 61/1000"``, ``"weights at 1000"``, ``"failed, no weights"``, …"""
        if self.state == "running":
            return f"training, {self.iteration or 0}/{self.max_batches or '?'}"
        if self.has_weights:
            return f"weights at {self.weights_iteration}"
        return f"{self.state}, no weights"


def run_progress(ws: Workspace, run_id: str) -> RunProgress:
    """The state and newest saved weights of ``run_id``, read from its folder (nothing is written)."""
    run = RunDir(ws.run_dir(run_id))
    current = jobs.status(run.path)
    try:
        latest = run.latest_weights()
    except (KeyError, TypeError, ValueError, UserError):  # run.json without batch/subdivisions
        latest = None
    return RunProgress(run_id, current.state, current.iteration, current.max_batches,
                       None if latest is None else int(latest[1]))


def dataset_training(ws: Workspace, slug: str) -> list[RunProgress]:
    """:func:`run_progress` of every training run of ``slug``, newest first."""
    return [run_progress(ws, run_id) for run_id in dataset_runs(ws, slug)]


def dataset_stages(ws: Workspace, slug: str, training: list[RunProgress] | None = None) -> dict[str, bool]:
    """Which journey stages the dataset ``slug`` has reached, from the files on disk.

    "trained" means some run has saved weights (a run that is still at iteration 61 of 1000 with
    nothing saved is not trained); "evaluated" that some run has predictions.
    """
    dataset = ws.dataset(slug)
    meta = dataset.load()
    training = dataset_training(ws, slug) if training is None else training
    return {
        "built": meta is not None,
        "fetched": bool(meta and meta.get("fetch")) or _has_any(dataset.originals, "*.jpg"),
        "prepared": bool(meta and meta.get("prepare")) or _has_any(dataset.yolo, "*.txt"),
        "split": dataset.split_list("train").exists(),
        "trained": any(r.has_weights for r in training),
        "evaluated": any(_has_any(RunDir(ws.run_dir(r.run_id)).predictions, "*.parquet") for r in training),
    }


def stage_labels(ws: Workspace, slug: str) -> dict[str, str]:
    """The Home table's cells: "✓" for a stage reached, "training, 61/1000" while a run of the
    dataset runs and nothing is saved yet, "" otherwise."""
    training = dataset_training(ws, slug)
    stages = dataset_stages(ws, slug, training)
    labels = {stage: ("✓" if done else "") for stage, done in stages.items()}
    running = [r for r in training if r.state == "running"]
    if running and not stages["trained"]:
        labels["trained"] = running[0].describe()
    return labels


def _training_message(running: RunProgress) -> str:
    return (f"Training is under way: run {running.run_id} is at iteration {running.iteration or 0} of "
            f"{running.max_batches or '?'} and has saved no weights yet; follow it on the Train page.")


def next_step(ws: Workspace, slug: str | None) -> NextStep:
    """The first unfinished step for ``slug`` (or for the workspace when there is no dataset)."""
    missing = missing_metadata(ws)
    if missing:
        return NextStep(None, f"Put the Open Images metadata in {ws.metadata_dir} "
                              f"(`python -m pipeline metadata download`); missing: {', '.join(missing)}.")
    if not slug:
        return NextStep(STEPS[0][1], STEPS[0][2])
    training = dataset_training(ws, slug)
    stages = dataset_stages(ws, slug, training)
    running = [r for r in training if r.state == "running"]
    for stage, page, message in STEPS:
        if stages[stage]:
            continue
        if stage == "trained" and running:
            return NextStep("Train", _training_message(running[0]))
        return NextStep(page, message)
    if running:
        return NextStep("Train", f"Everything is done for this dataset, and run {running[0].run_id} is still "
                                 f"training ({running[0].iteration or 0}/{running[0].max_batches or '?'}).")
    return NextStep("Evaluate", "Everything is done for this dataset: compare runs or browse predictions.")
