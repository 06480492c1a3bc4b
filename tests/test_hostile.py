"""Hostile dataset and run names on every command that takes one: exit 2, one sentence, nothing outside.

Every argument of ``python -m pipeline`` and ``python -m darknet_runner`` that names a dataset or a
run (``--dataset``, ``--name``, ``--run``, ``--run-id``, a positional ``run``) is found from the
parsers themselves, so a new command cannot slip past this table. Each gets ``..``, a path out of
the workspace, absolute paths, NUL, 300 characters and names without a single ASCII letter; each
must exit 2 with one ``error:`` line on stderr (no traceback) and create nothing anywhere: the whole
tree around the workspace is compared before and after (and ``/tmp/x``).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main
from pipeline.workspace import Workspace
from tests.conftest import needs
from tests.support.runs import make_split_dataset

REPO = Path(__file__).resolve().parent.parent
PIPELINE = __import__("pipeline.__main__", fromlist=["COMMAND_MODULES"]).COMMAND_MODULES
RUNNER = __import__("darknet_runner.__main__", fromlist=["COMMAND_MODULES"]).COMMAND_MODULES
PACKAGES = {"pipeline": PIPELINE, "darknet_runner": RUNNER}
NAME_OPTIONS = ("--dataset", "--name", "--run", "--run-id")
TMP_X = Path("/tmp/x")
HOSTILE = {
    "dotdot": "..",
    "escape": "../../outside/victim",
    "absolute": str(TMP_X),
    "absolute-beside": "{parent}/outside-abs",
    "nul": "a\x00b",
    "long": "a" * 300,
    "chinese": "船",
    "japanese": "ボート",
}
# What each command needs besides the hostile name ({name}); "boat" is a real prepared, split dataset.
TRAIN = ["--darknet", "{darknet}", "--pretrained", "none", "--preset", "custom", "--model", "yolov3-tiny",
         "--size", "128", "--batch", "4", "--subdivisions", "1", "--max-batches", "200", "--detach"]
ENTRIES = {
    ("pipeline", "build", "--name"): ["build", "--class", "Boat", "--name", "{name}"],
    ("pipeline", "fetch-images", "--dataset"): ["fetch-images", "--dataset", "{name}", "--from", "urls"],
    ("pipeline", "push", "--dataset"): ["push", "--dataset", "{name}", "--to", "{parent}/pushed"],
    ("pipeline", "pull", "--dataset"): ["pull", "--dataset", "{name}", "--from", "{parent}/nowhere"],
    ("pipeline", "prepare", "--dataset"): ["prepare", "--dataset", "{name}"],
    ("pipeline", "split", "--dataset"): ["split", "--dataset", "{name}"],
    ("pipeline", "health", "--dataset"): ["health", "--dataset", "{name}"],
    ("darknet_runner", "train", "--dataset"): ["train", "--dataset", "{name}", *TRAIN],
    ("darknet_runner", "train", "--run-id"): ["train", "--dataset", "boat", "--run-id", "{name}", *TRAIN],
    ("darknet_runner", "status", "run"): ["status", "{name}"],
    ("darknet_runner", "stop", "run"): ["stop", "{name}"],
    ("darknet_runner", "resume", "run"): ["resume", "{name}", "--detach"],
    ("darknet_runner", "preflight", "run"): ["preflight", "{name}"],
    ("darknet_runner", "follow", "run"): ["follow", "{name}"],
    ("darknet_runner", "predict", "run"): ["predict", "{name}"],
    ("darknet_runner", "evaluate", "--run"): ["evaluate", "--run", "{name}"],
    ("darknet_runner", "summary", "run"): ["summary", "{name}"],
    ("darknet_runner", "baseline", "--dataset"): ["baseline", "--dataset", "{name}"],
}
KIND = {"--dataset": "dataset", "--name": "dataset", "--run": "run", "--run-id": "run", "run": "run"}


def _name_arguments(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    """(command words, argument) for every argument naming a dataset or run, sub-sub-commands included."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                found |= _name_arguments(sub, words + (word,))
        elif words and (set(action.option_strings) & set(NAME_OPTIONS)):
            found.add((" ".join(words), next(o for o in action.option_strings if o in NAME_OPTIONS)))
        elif words and not action.option_strings and action.dest == "run":
            found.add((" ".join(words), "run"))
    return found


def test_the_table_covers_every_command_that_takes_a_dataset_or_run_name():
    found = {(package, *entry) for package, modules in PACKAGES.items()
             for entry in _name_arguments(build_parser(package, "", modules))}
    assert found == set(ENTRIES)


def _tree(parent: Path) -> dict[str, str]:
    tree = {}
    for path in sorted(parent.rglob("*")):
        rel = path.relative_to(parent).as_posix()
        tree[rel] = ("-> " + os.readlink(path) if path.is_symlink()
                     else hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir")
    return tree


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """``<parent>/ws``: a workspace with dataset "boat" prepared at 128 px and split; returns ``parent``."""
    parent = tmp_path_factory.mktemp("hostile")
    make_split_dataset(parent / "ws")
    Workspace(parent / "ws").dataset("boat").update(prepare={"settings": {"size": 128, "letterbox": False}})
    return parent


def _argv(entry: tuple[str, str, str], name: str, parent: Path) -> list[str]:
    darknet = needs("darknet") if entry[1] == "train" else ""
    name = name.format(parent=parent)
    return ["--workspace", str(parent / "ws")] + [a.format(name=name, parent=parent, darknet=darknet)
                                                  if a != "{name}" else name for a in ENTRIES[entry]]


def _check(parent: Path, before: dict, tmp_x: bool, code: int, err: str, entry: tuple[str, str, str]) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    refusal = {"dataset": r"^error: (dataset name .* is not allowed|cannot make a dataset folder name out of )",
               "run": r"^error: (run name .* is not allowed|no run .*: give a run folder or one of the ids)"}
    assert re.match(refusal[KIND[entry[2]]], lines[0]), err   # refused for the name, not by accident
    assert _tree(parent) == before                        # nothing created, moved or removed
    assert TMP_X.exists() == tmp_x


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("entry", list(ENTRIES), ids=lambda e: f"{e[0]} {e[1]} {e[2]}")
def test_a_hostile_name_exits_2_with_one_sentence_and_touches_nothing(place, capsys, entry, name):
    argv = _argv(entry, HOSTILE[name], place)
    before, tmp_x = _tree(place), TMP_X.exists()
    code = main(f"python -m {entry[0]}", "", PACKAGES[entry[0]], argv)
    _check(place, before, tmp_x, code, capsys.readouterr().err, entry)


SUBPROCESS = [(("pipeline", "prepare", "--dataset"), "escape"), (("pipeline", "build", "--name"), "dotdot"),
              (("pipeline", "pull", "--dataset"), "absolute-beside"), (("darknet_runner", "stop", "run"), "escape"),
              (("darknet_runner", "evaluate", "--run"), "long"), (("pipeline", "split", "--dataset"), "japanese")]


@pytest.mark.parametrize("entry,name", SUBPROCESS, ids=[f"{e[1]}-{n}" for e, n in SUBPROCESS])
def test_a_hostile_name_through_a_real_process(place, entry, name):
    argv = _argv(entry, HOSTILE[name], place)
    before, tmp_x = _tree(place), TMP_X.exists()
    proc = subprocess.run([sys.executable, "-m", entry[0], *argv], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    _check(place, before, tmp_x, proc.returncode, proc.stderr, entry)
