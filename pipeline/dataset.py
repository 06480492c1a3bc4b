"""A dataset folder ``datasets/<slug>/``: the one owner of its paths and its manifest (dataset.json).

Every step that reads or writes a dataset goes through :class:`DatasetDir`, so a folder or file
name is spelled once, and dataset.json is read and written in one place.
"""
from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import locks
from pipeline.cli import UserError
from pipeline.atomic import read_json, write_json

MANIFEST = "dataset.json"
SPLITS = ("train", "valid", "test")  # the studio's split names (list files splits/<name>.txt)
ORIGINALS_DIR = "originals"          # downloaded pixels; big, and not needed to train
LIST_PREFIX = "yolo/"                 # split list lines are ``yolo/<ImageID>.jpg``, relative to the folder


@dataclass(frozen=True)
class DatasetDir:
    """Paths and manifest of one dataset folder (it may not exist yet)."""

    path: Path

    @property
    def slug(self) -> str:
        return self.path.name

    # --- paths ------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def boxes_path(self) -> Path:
        """The filtered Open Images box rows (``xyxy_rel`` of the original pixels)."""
        return self.path / "boxes.parquet"

    @property
    def images_path(self) -> Path:
        """The image rows (ImageID, Subset, URLs, OriginalSize, OriginalMD5, Rotation …)."""
        return self.path / "images.parquet"

    @property
    def transfer_tsv(self) -> Path:
        return self.path / "transfer.tsv"

    @property
    def originals(self) -> Path:
        """Downloaded pixels, ``<ImageID>.jpg``."""
        return self.path / ORIGINALS_DIR

    @property
    def yolo(self) -> Path:
        """Prepared images and their labels side by side (darknet's label-path rules)."""
        return self.path / "yolo"

    @property
    def splits(self) -> Path:
        return self.path / "splits"

    @property
    def prepare_json(self) -> Path:
        return self.path / "prepare.json"

    @property
    def split_json(self) -> Path:
        return self.splits / "split.json"

    @property
    def lock_path(self) -> Path:
        """``datasets/.<slug>.lock``: beside the folder, so a build renaming a new folder into place keeps it."""
        return self.path.parent / f".{self.slug}.lock"

    def lock(self, action: str, wait: float = 0) -> AbstractContextManager:
        """Be the only writer of this dataset while ``action`` (build, prepare, split, fetch-images, pull) runs.

        Raises:
            pipeline.locks.Busy: "dataset boat is being prepared by pid N since HH:MM:SS: …"
                (after ``wait`` seconds).
        """
        return locks.hold(self.lock_path, "dataset", self.slug, action, wait=wait)

    def original(self, image_id: str) -> Path:
        return self.originals / f"{image_id}.jpg"

    def image(self, image_id: str) -> Path:
        """The prepared image ``yolo/<ImageID>.jpg``."""
        return self.yolo / f"{image_id}.jpg"

    def label(self, image_id: str) -> Path:
        """The label file ``yolo/<ImageID>.txt``."""
        return self.yolo / f"{image_id}.txt"

    def split_list(self, name: str) -> Path:
        """``splits/<name>.txt`` for a name of :data:`SPLITS`."""
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}: choose one of {', '.join(SPLITS)}")
        return self.splits / f"{name}.txt"

    # --- manifest -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def load(self, default: Any = None) -> dict | Any:
        """dataset.json, or ``default`` when there is none (a corrupt file raises)."""
        return read_json(self.manifest_path, default)

    def require(self) -> dict:
        """dataset.json.

        Raises:
            UserError: the dataset has not been built.
        """
        manifest = self.load()
        if manifest is None:
            raise UserError(f"there is no dataset {self.slug!r} in this workspace: build it first")
        return manifest

    def save(self, manifest: dict) -> None:
        """Write dataset.json atomically."""
        write_json(self.manifest_path, manifest)

    def update(self, **fields) -> dict:
        """Read-modify-write dataset.json with ``fields`` set (other keys kept as they are on disk)."""
        manifest = self.load({}) or {}
        manifest.update(fields)
        self.save(manifest)
        return manifest

    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_path.read_bytes()).hexdigest()

    def class_names(self) -> list[str]:
        """Class names by index, one line each (as obj.names needs them).

        Raises:
            UserError: no classes, or indexes that are not ``0..n-1``.
        """
        classes = sorted(self.require().get("classes") or [], key=lambda c: c["index"])
        if not classes:
            raise UserError(f"{self.manifest_path} lists no classes; build the dataset again")
        if [c["index"] for c in classes] != list(range(len(classes))):
            raise UserError(f"{self.manifest_path} has class indexes that are not 0..{len(classes) - 1}")
        return [" ".join(str(c["name"]).split()) for c in classes]

    def prepared_size(self) -> int | None:
        """The network size the images were prepared at, None before prepare."""
        size = ((self.load({}) or {}).get("prepare") or {}).get("settings", {}).get("size")
        return int(size) if size else None

    # --- splits -----------------------------------------------------------------------------------
    def split_lines(self, name: str) -> list[str]:
        """The ``yolo/<ImageID>.jpg`` lines of one split list; empty when the list does not exist."""
        path = self.split_list(name)
        if not path.is_file():
            return []
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def split_info(self) -> dict:
        """split.json (mode, ratios, seed, counts); {} before the dataset is split."""
        return read_json(self.split_json, {}) or {}

    def read_splits(self) -> dict[str, list[str]] | None:
        """The ImageIDs of each split, or None when the dataset has not been split yet."""
        if not self.split_json.is_file():
            return None
        return {name: [line.removeprefix(LIST_PREFIX).removesuffix(".jpg") for line in self.split_lines(name)]
                for name in SPLITS}
