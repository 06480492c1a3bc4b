"""Split: which prepared images darknet trains on, validates on and is tested on.

Each image gets a key, sha1(seed, ImageID) read as a number in [0, 1). Images are ranked by
key and the ranked list is cut at ``round(ratio × n)``, so every split is within one image of
its exact share (thresholding the key instead would add binomial noise: ±30 images at n=10k).

The trade-off, documented: adding images shifts the cut points slightly, so an existing image
whose key sits right at a cut may move to the neighbouring split. Only keys between the old and
the new cut value move (a handful, about √(added) per cut); everything else stays put, and the
result never depends on the order images were listed in. ``stable=True`` thresholds the key
instead (key < train ratio → train, …): no existing image ever moves, at the price of counts
that miss the ratios by binomial noise. ``official=True`` uses Open Images' own Subset column
(train/validation/test → train/valid/test).
"""
from __future__ import annotations

import hashlib
import math
import time

import pandas as pd

from pipeline import numbers
from pipeline.cli import UserError
from pipeline.yolo.prepare import prepared_ids
from pipeline.atomic import atomic_write_text, write_json
from pipeline.dataset import LIST_PREFIX, SPLITS
from pipeline.workspace import Workspace

DEFAULT_RATIOS = (0.8, 0.1, 0.1)
RATIO_TOLERANCE = 1e-6
OFFICIAL_NAMES = {"train": "train", "validation": "valid", "test": "test"}  # Open Images Subset → split


def split_key(image_id: str, seed: int) -> float:
    """The image's place in [0, 1) for this seed: independent of every other image."""
    digest = hashlib.sha1(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Train and valid get ``round(ratio × n)`` (halves up); test takes the rest."""
    train = math.floor(ratios[0] * n + 0.5)
    valid = min(n - train, math.floor(ratios[1] * n + 0.5))
    return train, valid, n - train - valid


def assign_hash_splits(image_ids: list[str], ratios: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Rank by :func:`split_key` and cut the ranked list at the exact counts."""
    ranked = sorted(image_ids, key=lambda image_id: (split_key(image_id, seed), image_id))
    train, valid, _ = split_counts(len(ranked), ratios)
    parts = {"train": ranked[:train], "valid": ranked[train:train + valid], "test": ranked[train + valid:]}
    return {name: sorted(ids) for name, ids in parts.items()}


def assign_threshold_splits(image_ids: list[str], ratios: tuple[float, float, float], seed: int
                            ) -> dict[str, list[str]]:
    """Each image by its own key alone: [0, r_train) → train, [r_train, r_train + r_valid) → valid."""
    parts: dict[str, list[str]] = {name: [] for name in SPLITS}
    for image_id in image_ids:
        key = split_key(image_id, seed)
        name = "train" if key < ratios[0] else "valid" if key < ratios[0] + ratios[1] else "test"
        parts[name].append(image_id)
    return {name: sorted(ids) for name, ids in parts.items()}


def assign_official_splits(images: pd.DataFrame) -> dict[str, list[str]]:
    """Open Images' Subset column mapped to train/valid/test."""
    unknown = sorted(set(map(str, images["Subset"])) - set(OFFICIAL_NAMES))
    if unknown:
        raise UserError(f"Subset values {unknown} are not Open Images' train/validation/test: use a hash split")
    parts: dict[str, list[str]] = {name: [] for name in SPLITS}
    for image_id, subset in zip(images["ImageID"], images["Subset"]):
        parts[OFFICIAL_NAMES[str(subset)]].append(str(image_id))
    return {name: sorted(ids) for name, ids in parts.items()}


def split_dataset(ws: Workspace, slug: str, ratios=DEFAULT_RATIOS, seed: int = 0, official: bool = False,
                  stable: bool = False, wait: float = 0) -> dict:
    """Write ``splits/{train,valid,test}.txt`` (lines ``yolo/<ImageID>.jpg``) and ``split.json``.

    Only images whose ``yolo/<ImageID>.jpg`` and ``.txt`` both exist are listed. By default the
    counts are within one image of the ratios; ``stable=True`` never moves an existing image
    when images are added (see the module docstring for the trade-off).

    Raises:
        UserError: ratios that are not three positive numbers summing to 1, a seed outside
            0..2**32-1, a missing dataset, a split that would be empty, or another process writing
            the dataset (after ``wait`` seconds).
    """
    ratios = _check_ratios(ratios)
    seed = numbers.seed(seed)
    dataset = ws.dataset(slug)
    if not dataset.images_path.is_file():  # refused before taking its lock (no lock file for a typo)
        raise UserError(f"there is no dataset {slug!r} in this workspace: build it first")
    with dataset.lock("split", wait=wait):
        return _split_locked(ws, slug, ratios, seed, official, stable)


def _split_locked(ws: Workspace, slug: str, ratios: tuple[float, float, float], seed: int, official: bool,
                  stable: bool) -> dict:
    dataset = ws.dataset(slug)
    images = _prepared_images(ws, slug)
    if official:
        parts = assign_official_splits(images)
    else:
        assign = assign_threshold_splits if stable else assign_hash_splits
        parts = assign(list(images["ImageID"]), ratios, seed)
    for name in SPLITS:
        if not parts[name]:
            how = "Open Images' own subsets give" if official else f"ratios {list(ratios)} give"
            raise UserError(f"{how} no {name} images among the {len(images)} prepared ones: "
                            "prepare more images or change the split")
    for name in SPLITS:
        atomic_write_text(dataset.split_list(name), "".join(f"{LIST_PREFIX}{i}.jpg\n" for i in parts[name]))
    summary = {
        "mode": "official" if official else "threshold" if stable else "hash",
        "ratios": None if official else list(ratios),
        "seed": None if official else int(seed),
        "counts": {name: len(parts[name]) for name in SPLITS},
        "images": len(images),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(dataset.split_json, summary)
    dataset.update(split=summary)
    return summary


def read_split(ws: Workspace, slug: str) -> dict[str, list[str]] | None:
    """The ImageIDs of each split, or None when the dataset has not been split yet."""
    return ws.dataset(slug).read_splits()


def _check_ratios(ratios) -> tuple[float, float, float]:
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise UserError(f"ratios {ratios!r} must be three numbers (train valid test) summing to 1") from None
    if len(values) != 3:
        raise UserError(f"give three ratios (train valid test), not {len(values)}")
    if any(not math.isfinite(r) or r <= 0 for r in values):
        raise UserError(f"ratios {list(values)} must all be positive: every split needs images")
    if abs(sum(values) - 1.0) > RATIO_TOLERANCE:
        raise UserError(f"ratios {list(values)} sum to {sum(values):g}, not 1")
    return values


def _prepared_images(ws: Workspace, slug: str) -> pd.DataFrame:
    dataset = ws.dataset(slug)
    if not dataset.images_path.is_file():
        raise UserError(f"there is no dataset {slug!r} in this workspace: build it first")
    images = pd.read_parquet(dataset.images_path, columns=["ImageID", "Subset"])
    images["ImageID"] = images["ImageID"].astype(str)
    ready = set(prepared_ids(ws, slug))
    prepared = images[images["ImageID"].isin(ready)].drop_duplicates("ImageID").reset_index(drop=True)
    if prepared.empty:
        raise UserError(f"dataset {slug!r} has no prepared images: run prepare first")
    return prepared


def register(subparsers) -> None:
    """``split --dataset boat [--ratios 0.8 0.1 0.1] [--seed 0] [--official-split]``."""
    parser = subparsers.add_parser("split", help="write train/valid/test lists of the prepared images")
    parser.add_argument("--dataset", required=True, help="dataset slug (folder under datasets/)")
    parser.add_argument("--ratios", type=float, nargs=3, default=list(DEFAULT_RATIOS),
                        metavar=("TRAIN", "VALID", "TEST"), help="shares summing to 1 (default 0.8 0.1 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image hash (default 0)")
    parser.add_argument("--official-split", action="store_true", help="use Open Images' train/validation/test")
    parser.add_argument("--stable", action="store_true",
                        help="never move an image when images are added (counts then only near the ratios)")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    summary = split_dataset(ws, args.dataset, ratios=tuple(args.ratios), seed=args.seed,
                            official=args.official_split, stable=args.stable)
    counts = summary["counts"]
    print(f"{summary['images']} images: {counts['train']} train, {counts['valid']} valid, {counts['test']} test "
          f"({summary['mode']} split) → {ws.dataset(args.dataset).splits}")
    return 0
