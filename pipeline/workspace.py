"""The workspace: where every piece of state lives on disk (README, "The workspace"), and user names confined to it."""
from __future__ import annotations

import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import UserError
from pipeline.dataset import MANIFEST, DatasetDir

ENV_VAR = "STUDIO_WORKSPACE"
DEFAULT_ROOT = Path("workspace")
DEMO_MARKER = "DEMO"  # file at the root of a workspace written by `python -m pipeline demo`
# A dataset or run name becomes one folder name: letters, digits, '.', '_', '-', no leading dot.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def resolve_root(cli_value: str | os.PathLike | None = None) -> Path:
    """Return the workspace root: ``--workspace``, then ``$STUDIO_WORKSPACE``, then ``./workspace``."""
    chosen = cli_value or os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace; ``ensure()`` creates the layout."""

    root: Path

    @classmethod
    def open(cls, cli_value: str | os.PathLike | None = None, create: bool = True) -> "Workspace":
        ws = cls(resolve_root(cli_value))
        if create:
            ws.ensure()
        return ws

    @property
    def metadata_dir(self) -> Path:
        return self.root / "metadata"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def weights_dir(self) -> Path:
        """Pretrained weights shared by runs (darknet53.conv.74, …)."""
        return self.root / "weights"

    @property
    def is_demo(self) -> bool:
        return (self.root / DEMO_MARKER).exists()

    def ensure(self) -> "Workspace":
        for folder in (self.metadata_dir, self.datasets_dir, self.runs_dir, self.weights_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def dataset(self, slug: str) -> DatasetDir:
        """The dataset folder ``datasets/<slug>/`` (it may not exist yet).

        Raises:
            UserError: ``slug`` is not a plain folder name inside the workspace.
        """
        return DatasetDir(self.confined(self.datasets_dir, slug, "dataset"))

    def dataset_dir(self, slug: str) -> Path:
        return self.dataset(slug).path

    def run_dir(self, run_id: str) -> Path:
        """The run folder ``runs/<run_id>/`` (confined like :meth:`dataset`)."""
        return self.confined(self.runs_dir, run_id, "run")

    @staticmethod
    def confined(parent: Path, name: str, kind: str) -> Path:
        """``parent/name`` for a user-given ``name`` that must stay one plain folder under ``parent``.

        Raises:
            UserError: a name with a path separator, ``..``, NUL, a leading dot, other characters,
                or more than 128 characters.
        """
        text = str(name)
        if not NAME.fullmatch(text):
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise UserError(f"{kind} name {shown!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-' "
                            f"(not starting with a dot, no '/' or '..')")
        path = parent / text
        if path.resolve().parent != parent.resolve():  # a symlinked name pointing elsewhere
            raise UserError(f"{kind} {text!r} resolves outside {parent}")
        return path

    def datasets(self) -> list[str]:
        """Slugs of datasets that have a manifest, sorted."""
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.datasets_dir.glob(f"*/{MANIFEST}"))

    def runs(self) -> list[str]:
        """Run ids that have a run.json, newest first (ids start with a timestamp)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted((p.parent.name for p in self.runs_dir.glob("*/run.json")), reverse=True)

    def runs_using(self, dataset: DatasetDir) -> list[str]:
        """Ids of the runs that link into ``dataset``'s folder, sorted.

        A run reaches its images through a symlink directly inside ``runs/<id>/`` (the data link);
        one that resolves into the dataset folder, dangling or not, makes the run depend on it. A
        file-system fact, so the dataset side needs no knowledge of run manifests.
        """
        target = dataset.path.resolve()
        found = []
        for run in sorted(self.runs_dir.iterdir()) if self.runs_dir.is_dir() else []:
            if run.name.startswith(".") or not run.is_dir():
                continue
            for entry in run.iterdir():
                if entry.is_symlink():
                    resolved = entry.resolve()
                    if resolved == target or target in resolved.parents:
                        found.append(run.name)
                        break
        return found

    def refuse_replacing(self, dataset: DatasetDir, fix: str) -> None:
        """Refuse to replace a dataset that runs trained on (it would leave their data link dangling).

        Raises:
            UserError: "dataset boat is used by runs r1, r2: …; ``fix``".
        """
        runs = self.runs_using(dataset)
        if runs:
            shown = ", ".join(runs[:10]) + (f" and {len(runs) - 10} more" if len(runs) > 10 else "")
            raise UserError(f"dataset {dataset.slug} is used by run{'s' if len(runs) > 1 else ''} {shown}: "
                            f"replacing it would take away the images and splits they trained on; {fix}")

    def contains(self, path: Path) -> bool:
        """True when ``path`` resolves to somewhere inside this workspace."""
        try:
            Path(path).resolve().relative_to(self.root.resolve())
            return True
        except ValueError:
            return False


def slugify(name: str) -> str:
    """A folder-safe, lower-case slug: ``"Boat & Canoe"`` → ``"boat-canoe"``.

    Only ``[a-z0-9-]`` survive, so a slug never holds spaces (darknet strips them from .data values).
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    if not slug:
        raise ValueError(f"cannot make a folder name out of {name!r}: use letters or digits")
    return slug


def new_run_id(label: str = "run", now: float | None = None) -> str:
    """A sortable, unique run id: ``20261124-053300-yolov3-tiny-a1b2``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{slugify(label)}-{secrets.token_hex(2)}"
