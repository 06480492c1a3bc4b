"""The workspace: where every piece of state lives on disk (see DESIGN.md, "The workspace")."""
from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "STUDIO_WORKSPACE"
DEFAULT_ROOT = Path("workspace")
DEMO_MARKER = "DEMO"  # file at the root of a workspace written by `python -m pipeline demo`


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

    def dataset_dir(self, slug: str) -> Path:
        return self.datasets_dir / slug

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def datasets(self) -> list[str]:
        """Slugs of datasets that have a manifest, sorted."""
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.datasets_dir.glob("*/dataset.json"))

    def runs(self) -> list[str]:
        """Run ids that have a run.json, newest first (ids start with a timestamp)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted((p.parent.name for p in self.runs_dir.glob("*/run.json")), reverse=True)

    def contains(self, path: Path) -> bool:
        """True when ``path`` resolves to somewhere inside this workspace."""
        try:
            Path(path).resolve().relative_to(self.root.resolve())
            return True
        except ValueError:
            return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes 0600 files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write a manifest atomically, pretty and key-sorted so diffs stay readable."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """Read a manifest; ``default`` when the file does not exist (a corrupt file still raises)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


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
