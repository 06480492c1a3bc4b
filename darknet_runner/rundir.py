"""A run directory ``runs/<id>/``: everything darknet needs, with every path relative to it.

Darknet runs with the run directory as its cwd, so no user path (with spaces, or with the
``images``/``raw`` substrings pjreddie rewrites, facts §8) ever reaches it:

- ``data`` is a relative symlink to the dataset's ``yolo/`` folder, and the list files say
  ``data/<ImageID>.jpg`` (hex ids: no dangerous substring, labels found by every fork's rule);
- ``obj.data`` values are plain relative names (AlexeyAB and pjreddie delete spaces there);
- ``pretrained/<name>`` is a relative symlink to the starting weights.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from darknet_runner import cfg as cfgmod
from darknet_runner.binary import DarknetInfo, find_darknet
from darknet_runner.weights import PRETRAINED, WeightsError, check_complete, iteration_for, read_header
from pipeline import locks
from pipeline.cli import UserError
from pipeline.dataset import DatasetDir
from pipeline.atomic import atomic_write_text, read_json, write_json
from pipeline.workspace import Workspace, new_run_id

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
DATA_LINK = "data"            # -> <dataset>/yolo
PRETRAINED_DIR = "pretrained"
BACKUP_DIR = "backup"
CFG_NAME = "model.cfg"
LISTS = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}  # split name -> file in both places
LOG_NAME = "train_log.txt"  # darknet's stdout and stderr, appended by the runner
PID_NAME = "pid"            # the runner's pid, also its process group id
EXIT_NAME = "exit_code"     # darknet's exit code (negative: killed by that signal), written last
STOPPED_NAME = "stopped"    # written by stop() before it signals: the end is "stopped", not "failed"
RUNNER_ERR = "runner.err"   # the runner's own stderr (its tracebacks, "No space left on device")
RESERVE_NAME = ".runner-reserve"  # space the runner frees to record the end on a disk darknet filled
BAD_LIST = "bad.list"        # pjreddie's OpenCV loader appends each image it cannot load (system("echo … >>"))
PREDICTIONS_DIR = "predictions"
METRICS_NAME = "metrics.json"
WEIGHT_CHOICES = ("best", "last", "final")
DATASET_PREFIX = "yolo/"
_WEIGHT_FLOATS: dict[tuple[str, int, int], int | None] = {}  # model.cfg (path, mtime, size) -> floats


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class RunDir:
    """Paths and manifest of one run folder: the one owner of run.json and of the run's file names."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # accept str and os.PathLike too

    @property
    def id(self) -> str:
        return self.path.name

    # --- paths ------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / RUN_JSON

    @property
    def cfg(self) -> Path:
        return self.path / CFG_NAME

    @property
    def obj_data(self) -> Path:
        return self.path / "obj.data"

    @property
    def obj_names(self) -> Path:
        return self.path / "obj.names"

    @property
    def log(self) -> Path:
        return self.path / LOG_NAME

    @property
    def backup(self) -> Path:
        return self.path / BACKUP_DIR

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_DIR

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def lock_path(self) -> Path:
        """``runs/.<id>.lock``, beside the run folder (it exists before the folder does)."""
        return self.path.parent / f".{self.id}.lock"

    def lock(self, action: str, wait: float = 0) -> AbstractContextManager:
        """Be the only process creating, starting, resuming or stopping this run while ``action`` runs.

        Raises:
            pipeline.locks.Busy: "run r1 is being started by pid N since HH:MM:SS: …".
        """
        return locks.hold(self.lock_path, "run", self.id, action, wait=wait)

    def list_path(self, split: str) -> Path:
        """The run's list file of ``split`` (train.txt, valid.txt, test.txt).

        Raises:
            UserError: an unknown split.
        """
        if split not in LISTS:
            raise UserError(f"unknown split {split!r}: choose one of {', '.join(LISTS)}")
        return self.path / LISTS[split]

    # --- manifest -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def load(self) -> dict:
        """run.json.

        Raises:
            UserError: the folder is not a run directory.
        """
        manifest = read_json(self.manifest_path)
        if manifest is None:
            raise UserError(f"{self.path} is not a run directory (no {RUN_JSON}); create one with `train`")
        return manifest

    def save(self, manifest: dict) -> None:
        write_json(self.manifest_path, manifest)

    def update(self, **fields) -> dict:
        """Read-modify-write run.json with ``fields`` set; returns the new manifest."""
        manifest = self.load()
        manifest.update(fields)
        self.save(manifest)
        return manifest

    @property
    def is_baseline(self) -> bool:
        """True for a run that is not trained (run.json ``"kind": "baseline"``, e.g. the zero-shot COCO detector)."""
        try:
            manifest = read_json(self.manifest_path)
        except ValueError:  # a half-written or broken run.json: not a baseline either
            return False
        return isinstance(manifest, dict) and manifest.get("kind") == "baseline"

    def class_names(self) -> list[str]:
        """Class names by index: obj.names, else the names recorded in run.json."""
        if self.obj_names.is_file():
            return [n.strip() for n in self.obj_names.read_text(encoding="utf-8").splitlines() if n.strip()]
        return list(self.load().get("classes") or [])

    def dataset(self, ws: Workspace) -> DatasetDir | None:
        """The dataset the run trained on: by slug in ``ws``, else the recorded path; None if unknown."""
        record = self.load().get("dataset") or {}
        if record.get("slug"):
            try:
                found = ws.dataset(record["slug"])
            except UserError:
                found = None
            if found is not None and found.path.is_dir():
                return found
        return DatasetDir(Path(record["path"])) if record.get("path") else None

    # --- images, weights, predictions -----------------------------------------------------------
    def split_images(self, split: str = "test") -> list[tuple[str, Path]]:
        """(ImageID, image path) for every line of the run's split list.

        Raises:
            UserError: unknown split, or the run has no such list or it is empty.
        """
        path = self.list_path(split)
        if not path.is_file():
            raise UserError(f"run {self.id} has no {path.name}; its dataset was not split into {split}")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise UserError(f"{path} lists no images: there is nothing to predict")
        return [(Path(line).stem, self.path / line) for line in lines]

    def weight_floats(self) -> int | None:
        """The float32 values darknet saves for the run's model.cfg (None: no cfg, or a layer of unknown size)."""
        try:
            stat = self.cfg.stat()
        except OSError:
            return None
        key = (str(self.cfg), stat.st_mtime_ns, stat.st_size)
        if key not in _WEIGHT_FLOATS:
            try:
                _WEIGHT_FLOATS[key] = cfgmod.weight_floats(cfgmod.read_cfg(self.cfg.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                _WEIGHT_FLOATS[key] = None
        return _WEIGHT_FLOATS[key]

    def weights_problem(self, path: str | os.PathLike) -> str | None:
        """One sentence saying why ``path`` is not a complete weights file for this run's cfg, or None.

        A header darknet wrote and exactly the bytes the cfg implies (:func:`weights.check_complete`);
        the file is named relative to the run folder (``backup/model_final.weights``).
        """
        path = Path(path)
        try:
            name = path.relative_to(self.path).as_posix()
        except ValueError:
            name = str(path)
        return check_complete(path, self.weight_floats(), name)

    def saved_weights(self) -> list[Path]:
        """Every weights file darknet saved in ``backup/`` (``*.weights``, ``*.backup``), newest first."""
        stamps = {}
        for path in [*self.backup.glob("*.weights"), *self.backup.glob("*.backup")]:
            try:
                stamps[path] = path.stat().st_mtime_ns
            except OSError:  # a dangling link, or gone since the listing
                continue
        return sorted(stamps, key=lambda p: (stamps[p], p.name), reverse=True)

    def usable_weights(self) -> tuple[list[Path], list[str]]:
        """The complete weights files of ``backup/`` (newest first) and one sentence per broken one."""
        usable, broken = [], []
        for path in self.saved_weights():
            problem = self.weights_problem(path)
            if problem is None:
                usable.append(path)
            else:
                broken.append(problem)
        return usable, broken

    def latest_weights(self) -> tuple[Path, int] | None:
        """The saved weights with the most images seen in ``backup/`` and their iteration, or None.

        Looks at AlexeyAB/hank's ``*_last.weights`` and ``*_final.weights``, pjreddie's ``<cfg>.backup``
        and ``_<iteration>.weights``; a file that is not complete (:meth:`weights_problem`) is skipped.
        """
        run = self.load()
        best: tuple[int, float, Path] | None = None
        for path in self.usable_weights()[0]:
            key = (read_header(path).seen, path.stat().st_mtime, path)
            best = key if best is None or key[:2] > best[:2] else best
        if best is None:
            return None
        return best[2], iteration_for(read_header(best[2]), int(run["batch"]), int(run["subdivisions"]))

    def resolve_weights(self, weights: str | os.PathLike = "best") -> Path:
        """``best`` (``*_best.weights``, else ``final``, else ``last``), ``final``, ``last`` (most
        images seen in backup/), or a path (absolute, or relative to the run directory).

        Only complete files are used (:meth:`weights_problem`): ``best`` and ``last`` pass over a
        broken one; ``final``, a path, or nothing left but broken files raise its sentence.

        Raises:
            UserError: no such weights; WeightsError: the chosen weights are broken.
        """
        choice = str(weights)
        if choice not in WEIGHT_CHOICES:
            path = Path(choice).expanduser()
            path = path if path.is_absolute() else self.path / path
            if not path.is_file():
                raise UserError(f"there are no weights at {path}; give best, last, final or a .weights file")
            problem = self.weights_problem(path)
            if problem:
                raise WeightsError(problem)
            return path
        broken = []
        for pattern in {"best": ("*_best.weights", "*_final.weights"), "final": ("*_final.weights",)}.get(choice, ()):
            for found in sorted(self.backup.glob(pattern), reverse=True):
                problem = self.weights_problem(found)
                if problem is None:
                    return found
                if choice == "final":
                    raise WeightsError(problem)
                log.warning("passing over %s", problem)
                broken.append(problem)
        if choice != "final":
            latest = self.latest_weights()
            if latest is not None:
                return latest[0]
            broken += self.usable_weights()[1]
        if broken:
            raise WeightsError(broken[0])
        raise UserError(f"run {self.id} has no {choice} weights in {self.backup}; train it (longer) first")

    def predictions_path(self, weights: Path, backend: str = "darknet", split: str = "test") -> Path:
        """Where the predictions of ``weights`` on ``split`` with ``backend`` are stored."""
        name = Path(weights).stem + ("" if split == "test" else f"-{split}")
        name += "" if backend == "darknet" else f"-{backend}"
        return self.predictions / f"{name}.parquet"


def open_run(ws: Workspace, run: str | os.PathLike) -> RunDir:
    """The :class:`RunDir` of a run given as an id inside the workspace or as a run folder.

    Raises:
        UserError: no such run.
    """
    candidate = Path(run)
    try:
        is_run_folder = (candidate / RUN_JSON).is_file()
    except OSError:  # a name too long for a path, or one that cannot be read: not a run folder
        is_run_folder = False
    if is_run_folder:
        return RunDir(candidate.resolve())
    try:
        by_id = RunDir(ws.run_dir(str(run)))
    except UserError:
        by_id = None
    if by_id is not None and by_id.exists():
        return by_id
    raise UserError(f"no run {str(run)[:80]!r}: give a run folder or one of the ids listed by `runs`")


def _dataset_lists(dataset: DatasetDir) -> dict[str, list[str]]:
    """Split name -> list lines rewritten from ``yolo/<id>.jpg`` to ``data/<id>.jpg``."""
    lists: dict[str, list[str]] = {}
    for split in LISTS:
        if not dataset.split_list(split).is_file():
            continue
        lines = dataset.split_lines(split)
        for number, line in enumerate(lines, start=1):
            if not line.startswith(DATASET_PREFIX):
                raise UserError(f"line {number} of {dataset.split_list(split)} is {line!r}, not a "
                                f"yolo/<ImageID>.jpg path; split the dataset again")
        lists[split] = [f"{DATA_LINK}/{line[len(DATASET_PREFIX):]}" for line in lines]
    if not lists.get("train"):
        raise UserError(f"the dataset {dataset.slug} has no training images in splits/train.txt; "
                        f"prepare and split it first")
    if not lists.get("valid"):  # darknet needs a valid= list for -map and predict; reuse train
        log.warning("dataset %s has no validation split; the training list is used for validation", dataset.slug)
        lists["valid"] = lists["train"]
    return lists


def _pretrained_target(ws: Workspace, pretrained: str | os.PathLike | None) -> Path | None:
    if not pretrained:
        return None
    if str(pretrained) in PRETRAINED:
        return ws.weights_dir / str(pretrained)
    return Path(pretrained).expanduser().resolve()


def _link_pretrained(ws: Workspace, run_dir: Path, pretrained) -> tuple[Path | None, str | None]:
    """Link ``pretrained/<name>`` to the starting weights; (target, argv path) or (None, None)."""
    target = _pretrained_target(ws, pretrained)
    if target is None:
        return None, None
    (run_dir / PRETRAINED_DIR).mkdir(exist_ok=True)
    weights_arg = f"{PRETRAINED_DIR}/{target.name}"
    _link(run_dir / weights_arg, target)
    return target, weights_arg


def _dataset_record(dataset: DatasetDir, lists: dict[str, list[str]]) -> dict:
    """What identifies the data a run trained on: manifest hash, split seed, list sizes."""
    split = dataset.split_info()
    return {"slug": dataset.slug, "path": str(dataset.path), "manifest_sha256": dataset.manifest_sha256(),
            "split_seed": split.get("seed"), "counts": {k: len(v) for k, v in lists.items()}}


def _link(link: Path, target: Path) -> None:
    """A relative symlink ``link`` -> ``target`` (replaced if present)."""
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def train_command(info: DarknetInfo, weights: str | None = None, *, gpus: str | None = None,
                  use_map: bool = False) -> list[str]:
    """The darknet argv (run from the run directory), line-buffered through ``stdbuf`` when it exists."""
    argv = [info.path, "detector", "train", "obj.data", CFG_NAME]
    if weights:
        argv.append(weights)
    if info.supports_dont_show:
        argv.append("-dont_show")
    if use_map and info.supports_map:
        argv.append("-map")
    if gpus:
        argv += ["-gpus", gpus]
    if info.supports_nocolour:
        argv.append("-nocolour")
    stdbuf = shutil.which("stdbuf")
    return ([stdbuf, "-oL", "-eL"] if stdbuf else []) + argv


def _write_files(run_dir: Path, names: list[str], lists: dict[str, list[str]], cfg_text: str) -> None:
    for split, lines in lists.items():
        atomic_write_text(run_dir / LISTS[split], "".join(f"{line}\n" for line in lines))
    atomic_write_text(RunDir(run_dir).obj_names, "".join(f"{name}\n" for name in names))
    data = {"classes": str(len(names)), "train": LISTS["train"], "valid": LISTS["valid"],
            "names": "obj.names", "backup": BACKUP_DIR}
    atomic_write_text(RunDir(run_dir).obj_data, "".join(f"{k}={v}\n" for k, v in data.items()))
    atomic_write_text(run_dir / CFG_NAME, cfg_text)
    (run_dir / BACKUP_DIR).mkdir(exist_ok=True)


def create_fixed_run(ws: Workspace, slug: str, run: RunDir, *, cfg_text: str, net_names: list[str],
                     weights: Path, darknet: DarknetInfo, extra: dict) -> RunDir:
    """A run that is not trained: ready-made ``weights`` (linked into backup/) with their own cfg and
    class names ``net_names`` on the dataset's split lists (the zero-shot baseline). Replaces ``run``.
    """
    dataset = ws.dataset(slug)
    lists = _dataset_lists(dataset)
    if run.path.exists():
        shutil.rmtree(run.path)
    run.path.mkdir(parents=True)
    try:
        _write_files(run.path, net_names, lists, cfg_text)
        _link(run.path / DATA_LINK, dataset.yolo)
        _link(run.backup / Path(weights).name, Path(weights))
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    run.save({"id": run.id, "created": _now(), "status": "not-started", "dataset": _dataset_record(dataset, lists),
              "classes": dataset.class_names(), "batch": 1, "subdivisions": 1, "max_batches": 0,
              "darknet": {k: v for k, v in darknet.to_dict().items() if k != "version_text"}, "fork": darknet.fork,
              "cfg_sha256": hashlib.sha256(cfg_text.encode()).hexdigest(), **extra})
    return run


def create_run(ws: Workspace | str | os.PathLike, slug: str, *, model: str, size: int, batch: int,
               subdivisions: int, max_batches: int | None, pretrained: str | os.PathLike | None,
               darknet: DarknetInfo | str | None, gpus: str | None = None, use_map: bool = False,
               anchors: list[tuple[float, float]] | None = None, random: bool | int | None = None,
               learning_rate: float | None = None, burn_in: int | None = None, width: float = 1.0,
               steps: tuple[float, float] = (0.8, 0.9), preset: str | None = None,
               run_id: str | None = None) -> Path:
    """Create ``runs/<id>/`` for training ``model`` on dataset ``slug``; returns the run folder.

    Args:
        ws: the workspace (or its root).
        slug: dataset folder name under ``datasets/``; it must be prepared and split.
        model, size, batch, subdivisions, max_batches, anchors, random, learning_rate, burn_in, width,
            steps: see :func:`darknet_runner.cfg.generate_cfg` (``max_batches=None`` uses the default rule).
        preset: the preset these settings started from (recorded in run.json).
        pretrained: a name of :data:`weights.PRETRAINED` (looked up in the weights folder), a path, or None.
        darknet: a probed binary, a path/setting, or None to search.
        gpus: darknet's ``-gpus`` value, e.g. ``"0,1"``.
        use_map: compute mAP on the valid list during training (not pjreddie).
        run_id: folder name; default a new sortable id.

    Raises:
        UserError: the dataset is missing, unsplit or inconsistent, a number is out of range
            (:class:`darknet_runner.cfg.CfgError`), or the run id exists.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace.open(ws)
    dataset = ws.dataset(slug)
    if not dataset.exists():
        raise UserError(f"there is no dataset {slug!r} in {ws.datasets_dir}; build it first")
    names, lists = dataset.class_names(), _dataset_lists(dataset)
    info = darknet if isinstance(darknet, DarknetInfo) else find_darknet(darknet)
    cfg_text = cfgmod.generate_cfg(model, len(names), size=size, batch=batch, subdivisions=subdivisions,
                                   max_batches=max_batches, train_images=len(lists["train"]), anchors=anchors,
                                   random=random, learning_rate=learning_rate, burn_in=burn_in, width=width,
                                   steps=steps)
    run = RunDir(ws.run_dir(run_id or new_run_id(model)))
    run_dir = run.path
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise UserError(f"run {run.id} already exists: pick another --run-id") from None
    try:
        _write_files(run_dir, names, lists, cfg_text)
        _link(run_dir / DATA_LINK, dataset.yolo)
        target, weights_arg = _link_pretrained(ws, run_dir, pretrained)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # no half-made run
        raise
    net = cfgmod.net_options(cfgmod.read_cfg(cfg_text))
    run.save({
        "id": run_dir.name, "created": _now(), "started": None, "ended": None, "status": "not-started",
        "dataset": _dataset_record(dataset, lists), "model": model, "size": size, "batch": batch,
        "subdivisions": subdivisions, "max_batches": int(net["max_batches"]), "burn_in": int(net["burn_in"]),
        "classes": names, "anchors": None if anchors is None else [[float(w), float(h)] for w, h in anchors],
        "random": random, "learning_rate": float(net["learning_rate"]), "gpus": gpus, "use_map": use_map,
        "width": float(width), "steps": [float(s) for s in steps], "preset": preset,
        "cfg_sha256": hashlib.sha256(cfg_text.encode()).hexdigest(),
        "pretrained": str(target) if target else None, "weights_arg": weights_arg,
        "darknet": {k: v for k, v in info.to_dict().items() if k != "version_text"}, "fork": info.fork,
        "command": train_command(info, weights_arg, gpus=gpus, use_map=use_map),
    })
    return run_dir
