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
from pathlib import Path

from darknet_runner import cfg as cfgmod
from darknet_runner.binary import DarknetInfo, find_darknet
from darknet_runner.weights import PRETRAINED
from pipeline.cli import UserError
from pipeline.workspace import Workspace, atomic_write_text, new_run_id, read_json, write_json

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
DATA_LINK = "data"            # -> <dataset>/yolo
PRETRAINED_DIR = "pretrained"
BACKUP_DIR = "backup"
CFG_NAME = "model.cfg"
LISTS = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}  # split name -> file in both places
DATASET_PREFIX = "yolo/"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_run(run_dir: str | os.PathLike) -> dict:
    """The run's manifest (run.json).

    Raises:
        UserError: the folder is not a run directory.
    """
    manifest = read_json(Path(run_dir) / RUN_JSON)
    if manifest is None:
        raise UserError(f"{run_dir} is not a run directory (no {RUN_JSON}); create one with `train`")
    return manifest


def update_run(run_dir: str | os.PathLike, **fields) -> dict:
    """Read-modify-write run.json with ``fields`` set; returns the new manifest."""
    manifest = load_run(run_dir)
    manifest.update(fields)
    write_json(Path(run_dir) / RUN_JSON, manifest)
    return manifest


def resolve_run(ws: Workspace, run: str | os.PathLike) -> Path:
    """A run given as a folder path or as an id inside the workspace."""
    candidate = Path(run)
    if (candidate / RUN_JSON).is_file():
        return candidate.resolve()
    if (ws.run_dir(str(run)) / RUN_JSON).is_file():
        return ws.run_dir(str(run))
    raise UserError(f"no run {run!r}: give a run folder or one of the ids listed by `runs`")


def _dataset_lists(dataset: Path) -> dict[str, list[str]]:
    """Split name -> list lines rewritten from ``yolo/<id>.jpg`` to ``data/<id>.jpg``."""
    lists: dict[str, list[str]] = {}
    for split, name in LISTS.items():
        path = dataset / "splits" / name
        if not path.is_file():
            continue
        lines = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            if not line.startswith(DATASET_PREFIX):
                raise UserError(f"line {number} of {path} is {line!r}, not a yolo/<ImageID>.jpg path; "
                                f"split the dataset again")
            lines.append(f"{DATA_LINK}/{line[len(DATASET_PREFIX):]}")
        lists[split] = lines
    if not lists.get("train"):
        raise UserError(f"the dataset {dataset.name} has no training images in splits/train.txt; "
                        f"prepare and split it first")
    if not lists.get("valid"):  # darknet needs a valid= list for -map and predict; reuse train
        log.warning("dataset %s has no validation split; the training list is used for validation", dataset.name)
        lists["valid"] = lists["train"]
    return lists


def _class_names(manifest: dict, dataset: Path) -> list[str]:
    classes = sorted(manifest.get("classes") or [], key=lambda c: c["index"])
    if not classes:
        raise UserError(f"{dataset / 'dataset.json'} lists no classes; build the dataset again")
    if [c["index"] for c in classes] != list(range(len(classes))):
        raise UserError(f"{dataset / 'dataset.json'} has class indexes that are not 0..{len(classes) - 1}")
    return [" ".join(str(c["name"]).split()) for c in classes]  # one line per name


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


def _dataset_record(dataset: Path, lists: dict[str, list[str]]) -> dict:
    """What identifies the data a run trained on: manifest hash, split seed, list sizes."""
    split = read_json(dataset / "splits" / "split.json", {}) or {}
    return {"slug": dataset.name, "path": str(dataset), "manifest_sha256": _sha256(dataset / "dataset.json"),
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
    atomic_write_text(run_dir / "obj.names", "".join(f"{name}\n" for name in names))
    data = {"classes": str(len(names)), "train": LISTS["train"], "valid": LISTS["valid"],
            "names": "obj.names", "backup": BACKUP_DIR}
    atomic_write_text(run_dir / "obj.data", "".join(f"{k}={v}\n" for k, v in data.items()))
    atomic_write_text(run_dir / CFG_NAME, cfg_text)
    (run_dir / BACKUP_DIR).mkdir(exist_ok=True)


def create_run(ws: Workspace | str | os.PathLike, slug: str, *, model: str, size: int, batch: int,
               subdivisions: int, max_batches: int | None, pretrained: str | os.PathLike | None,
               darknet: DarknetInfo | str | None, gpus: str | None = None, use_map: bool = False,
               anchors: list[tuple[float, float]] | None = None, random: bool | int | None = None,
               learning_rate: float | None = None, run_id: str | None = None) -> Path:
    """Create ``runs/<id>/`` for training ``model`` on dataset ``slug``; returns the run folder.

    Args:
        ws: the workspace (or its root).
        slug: dataset folder name under ``datasets/``; it must be prepared and split.
        model, size, batch, subdivisions, max_batches, anchors, random, learning_rate: see
            :func:`darknet_runner.cfg.generate_cfg` (``max_batches=None`` uses the default rule).
        pretrained: a name of :data:`weights.PRETRAINED` (looked up in the weights folder), a path, or None.
        darknet: a probed binary, a path/setting, or None to search.
        gpus: darknet's ``-gpus`` value, e.g. ``"0,1"``.
        use_map: compute mAP on the valid list during training (not pjreddie).
        run_id: folder name; default a new sortable id.

    Raises:
        UserError: the dataset is missing, unsplit or inconsistent; ValueError from the cfg rules.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace.open(ws)
    dataset = ws.dataset_dir(slug)
    manifest = read_json(dataset / "dataset.json")
    if manifest is None:
        raise UserError(f"there is no dataset {slug!r} in {ws.datasets_dir}; build it first")
    names, lists = _class_names(manifest, dataset), _dataset_lists(dataset)
    info = darknet if isinstance(darknet, DarknetInfo) else find_darknet(darknet)
    cfg_text = cfgmod.generate_cfg(model, len(names), size=size, batch=batch, subdivisions=subdivisions,
                                   max_batches=max_batches, train_images=len(lists["train"]), anchors=anchors,
                                   random=random, learning_rate=learning_rate)
    run_dir = ws.run_dir(run_id or new_run_id(model))
    run_dir.mkdir(parents=True, exist_ok=False)
    try:
        _write_files(run_dir, names, lists, cfg_text)
        _link(run_dir / DATA_LINK, dataset / "yolo")
        target, weights_arg = _link_pretrained(ws, run_dir, pretrained)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # no half-made run
        raise
    net = cfgmod.net_options(cfgmod.read_cfg(cfg_text))
    write_json(run_dir / RUN_JSON, {
        "id": run_dir.name, "created": _now(), "started": None, "ended": None, "status": "not-started",
        "dataset": _dataset_record(dataset, lists), "model": model, "size": size, "batch": batch,
        "subdivisions": subdivisions, "max_batches": int(net["max_batches"]), "burn_in": int(net["burn_in"]),
        "classes": names, "anchors": None if anchors is None else [[float(w), float(h)] for w, h in anchors],
        "random": random, "learning_rate": float(net["learning_rate"]), "gpus": gpus, "use_map": use_map,
        "cfg_sha256": hashlib.sha256(cfg_text.encode()).hexdigest(),
        "pretrained": str(target) if target else None, "weights_arg": weights_arg,
        "darknet": {k: v for k, v in info.to_dict().items() if k != "version_text"}, "fork": info.fork,
        "command": train_command(info, weights_arg, gpus=gpus, use_map=use_map),
    })
    return run_dir
