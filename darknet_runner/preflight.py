"""Checks before a launch: what darknet would trip over, each as one sentence naming the file and the fix.

Darknet's own reports are late and misleading (pjreddie exits 0 after ``Couldn't open file``, a
missing label crashes a loader thread, a wrong class id is silently accepted — facts §6), so the
run directory is checked with the detected fork's own rules before darknet ever starts.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from darknet_runner import cfg as cfgmod
from darknet_runner.binary import ALEXEYAB, HANK, PJREDDIE
from darknet_runner.rundir import CFG_NAME, RUN_JSON, RunDir, open_run
from darknet_runner.weights import check_weights
from pipeline.cli import UserError
from pipeline.yolo.labels import label_problems, read_labels
from pipeline.workspace import Workspace

EXAMPLES = 3  # a problem kind affecting many files names this many, then counts the rest

# pjreddie src/data.c:fill_truth_detection: first occurrence ANYWHERE, in this order.
PJREDDIE_REWRITES = [("images", "labels"), ("JPEGImages", "labels"), ("raw", "labels"),
                     (".jpg", ".txt"), (".png", ".txt"), (".JPG", ".txt"), (".JPEG", ".txt")]
# AlexeyAB src/utils.c:replace_image_to_label: directory rewrites, then the extension at the end only.
ALEXEYAB_REWRITES = [("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"),
                     ("/JPEGImages/", "/labels/"), ("\\images\\train2017\\", "\\labels\\train2017\\"),
                     ("\\images\\val2017\\", "\\labels\\val2017\\"), ("\\images\\train2014\\", "\\labels\\train2014\\"),
                     ("\\images\\val2014\\", "\\labels\\val2014\\"), ("/images/train2014/", "/labels/train2014/"),
                     ("/images/val2014/", "/labels/val2014/"), ("\\JPEGImages\\", "\\labels\\")]
ALEXEYAB_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM",
                       ".tiff", ".TIFF")


@dataclass(frozen=True)
class Problem:
    """One reason not to launch: ``kind`` is a stable tag, ``message`` one sentence with the fix."""

    kind: str
    message: str


class PreflightFailed(UserError):
    """Raised by a launch when preflight found problems; ``problems`` holds them."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        if len(problems) == 1:
            super().__init__(problems[0].message)
        else:
            super().__init__(f"preflight found {len(problems)} problems:\n" +
                             "\n".join(f"- {p.message}" for p in problems))


def label_path(fork: str, image_path: str) -> str | None:
    """Where ``fork`` looks for the label of ``image_path`` (facts §8); None when it cannot tell."""
    if fork == HANK:
        dot = image_path.rfind(".")
        return (image_path[:dot] if dot >= 0 else image_path) + ".txt"
    if fork == ALEXEYAB:
        out = image_path
        for old, new in ALEXEYAB_REWRITES:
            out = out.replace(old, new, 1)
        out = out.strip(" \t")
        for ext in ALEXEYAB_EXTENSIONS:
            if out.endswith(ext):
                return out[: -len(ext)] + ".txt"
        return None
    out = image_path
    for old, new in PJREDDIE_REWRITES:
        out = out.replace(old, new, 1)
    return out


def _summarise(kind: str, items: list[str], sentence: str, fix: str) -> list[Problem]:
    """One problem per example file, then one counting the rest."""
    problems = [Problem(kind, f"{sentence.format(item)}; {fix}") for item in items[:EXAMPLES]]
    if len(items) > EXAMPLES:
        problems.append(Problem(kind, f"{len(items) - EXAMPLES} more files have the same problem ({kind}); {fix}"))
    return problems


def read_data_file(path: Path) -> tuple[dict[str, str], list[Problem]]:
    """Options of an obj.data file as darknet reads them, plus one problem per value holding whitespace."""
    options: dict[str, str] = {}
    problems = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if re.search(r"\s", value):
            problems.append(Problem("data-whitespace", f"{path.name}: the value of {key} ({value!r}) contains "
                                    f"whitespace, which darknet deletes; use a path without spaces"))
        options.setdefault("".join(key.split()), "".join(value.split()))
    return options, problems


def _check_data(run_dir: Path) -> tuple[dict[str, str], list[Problem]]:
    data_path = RunDir(run_dir).obj_data
    if not data_path.is_file():
        return {}, [Problem("missing-file", f"{data_path} is missing; create the run again")]
    options, problems = read_data_file(data_path)
    for key in ("train", "valid", "names"):
        if key not in options:
            problems.append(Problem("data", f"{data_path.name} has no {key}= line; create the run again"))
        elif not (run_dir / options[key]).is_file():
            problems.append(Problem("missing-file", f"{data_path.name}: {key}={options[key]} does not exist in "
                                    f"{run_dir}; create the run again"))
    if "backup" in options and not (run_dir / options["backup"]).is_dir():
        problems.append(Problem("missing-file", f"{data_path.name}: the backup folder {options['backup']} does "
                                f"not exist in {run_dir}; create it (mkdir) or create the run again"))
    return options, problems


def _list_lines(run_dir: Path, options: dict[str, str]) -> dict[str, list[str]]:
    lists = {}
    for key in ("train", "valid"):
        path = run_dir / options.get(key, "")
        if options.get(key) and path.is_file():
            lists[options[key]] = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
    return lists


def _check_lists(run_dir: Path, fork: str, lists: dict[str, list[str]], classes: int) -> list[Problem]:
    missing_images, missing_labels, bad_classes, bad_boxes = [], [], [], []
    checked: set[str] = set()
    for list_name, lines in lists.items():
        if not lines:
            missing_images.append(f"{list_name} (empty)")
        for line in lines:
            if line in checked:
                continue
            checked.add(line)
            if not (run_dir / line).is_file():
                missing_images.append(f"{line} (in {list_name})")
                continue
            label = label_path(fork, line)
            if label is None or not (run_dir / label).is_file():
                missing_labels.append(f"{line} -> {label} (in {list_name})")
                continue
            bad_class, bad_box = label_problems(read_labels(run_dir / label), classes)
            if bad_class is not None:
                bad_classes.append(f"{label} has class id {bad_class}")
            if bad_box is not None:
                bad_boxes.append(f"{label} {bad_box}")
    return (_summarise("missing-image", missing_images, "image {} does not exist",
                       "prepare the dataset again or fix the list") +
            _summarise("missing-label", missing_labels, f"the {fork} fork looks for the label of {{}}, which does "
                       "not exist", "keep each .txt next to its image in folders without 'images', 'JPEGImages' "
                       "or 'raw' in their names (prepare the dataset again)") +
            _summarise("bad-class", bad_classes, "{}", f"class ids must be 0..{classes - 1}; prepare the dataset "
                       "again with the same classes") +
            _summarise("bad-box", bad_boxes, "{} is not a box (class cx cy w h, centre in [0, 1], size in (0, 1])",
                       "prepare the dataset again"))


def _check_cfg(run_dir: Path, fork: str, options: dict[str, str], names: int) -> list[Problem]:
    cfg_path = run_dir / CFG_NAME
    if not cfg_path.is_file():
        return [Problem("missing-file", f"{cfg_path} is missing; create the run again")]
    try:
        sections = cfgmod.read_cfg(cfg_path.read_text(encoding="utf-8"))
    except ValueError as err:
        return [Problem("cfg", f"{CFG_NAME}: {err}; fix the line or create the run again")]
    problems = [Problem("filters", f"{CFG_NAME}: {text}; set it (or create the run again)")
                for text in cfgmod.filter_mismatches(sections)]
    for classes in sorted(set(cfgmod.yolo_classes(sections))):
        if classes != names:
            problems.append(Problem("classes", f"{CFG_NAME} has classes={classes} in a [yolo] layer but obj.names "
                                    f"lists {names} names; create the run again"))
    if options.get("classes") and int(options["classes"]) != names:
        problems.append(Problem("classes", f"obj.data says classes={options['classes']} but obj.names lists "
                                f"{names} names; create the run again"))
    net = cfgmod.net_options(sections)
    for key in ("width", "height"):
        if int(net.get(key, "416")) % 32:
            problems.append(Problem("size", f"{CFG_NAME}: {key}={net[key]} is not a multiple of 32; pick 416, 608, …"))
    if fork == PJREDDIE and any(s.name == "route" and s.get("groups") for s in sections):
        problems.append(Problem("model", f"{CFG_NAME} uses [route] groups (yolov4-tiny), which pjreddie's darknet "
                                f"cannot train; choose yolov3-tiny or yolov3, or point the studio at an AlexeyAB or "
                                f"hank-ai build"))
    return problems


def _check_run(run_dir: Path, run: dict) -> list[Problem]:
    problems = []
    darknet = run.get("darknet") or {}
    path = darknet.get("path")
    if not path or not os.access(path, os.X_OK):
        problems.append(Problem("darknet", f"the darknet binary {path} recorded in {RUN_JSON} is gone; "
                                f"install darknet or create the run again with --darknet"))
    if run.get("use_map") and not darknet.get("supports_map", False):
        problems.append(Problem("map", f"the {run.get('fork')} fork has no -map; train without --map"))
    weights = run.get("weights_arg")
    if weights:
        problem = check_weights(run_dir / weights)
        if problem:
            problems.append(Problem("weights", f"pretrained weights {run.get('pretrained')}: {problem}; "
                                    f"download it (weights download NAME) or choose another file"))
    return problems


def check(run_dir: str | os.PathLike) -> list[Problem]:
    """Every problem that would make darknet fail or train on wrong data; empty means launch.

    Checks: obj.data values (no whitespace, files exist), every listed image exists and its label
    is found by the fork's label-path rule, label class ids < classes, filters agree with classes,
    width/height multiples of 32, the model is supported by the fork, the pretrained weights header.
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir).load()
    fork = run.get("fork") or PJREDDIE
    options, problems = _check_data(run_dir)
    names_path = run_dir / options.get("names", "obj.names")
    names = len([n for n in names_path.read_text(encoding="utf-8").splitlines() if n.strip()]) \
        if names_path.is_file() else 0
    problems += _check_cfg(run_dir, fork, options, names)
    problems += _check_lists(run_dir, fork, _list_lines(run_dir, options), max(names, 1))
    problems += _check_run(run_dir, run)
    return problems


def _cmd_preflight(args) -> int:
    run_dir = open_run(Workspace.open(getattr(args, "workspace", None)), args.run).path
    problems = check(run_dir)
    for problem in problems:
        print(f"[{problem.kind}] {problem.message}")
    if not problems:
        print(f"{run_dir.name}: ready to train")
    return 1 if problems else 0


def register(subparsers) -> None:
    """Add ``preflight RUN``."""
    parser = subparsers.add_parser("preflight", help="check a run directory before training")
    parser.add_argument("run", help="run folder or run id")
    parser.set_defaults(func=_cmd_preflight)
