"""Build a class dataset from the official Open Images files: ``datasets/<slug>/``.

Per split: stream the box CSV for the class MIDs, apply the policies (children, group-of,
depiction, cap, negatives), join image info for the kept ImageIDs, and write boxes.parquet,
images.parquet, dataset.json and transfer.tsv. Everything is written into a temporary folder
that is renamed at the end, so a failed build leaves nothing half-written.

A build holds the dataset's lock (``DatasetDir.lock``) from start to end; its temporary folder is
``datasets/.<slug>.building-<pid>-*``, so the next build removes the folders of builds that died
(``kill -9``) and never one of a live build, and puts back a dataset whose replacement was killed
between its renames. A dataset that runs trained on is never replaced (their data link would dangle).

Policies are decided per image where dropping a box would turn a real object into background
(group-of "drop-image", depiction "drop"); -1 flags mean unknown and are never treated as 1 or 0.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.openimages import classes as oiclasses
from pipeline import locks, numbers
from pipeline.openimages import metadata, oicsv
from pipeline.cli import UserError
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.atomic import atomic_write_text
from pipeline.dataset import DatasetDir
from pipeline.workspace import Workspace, slugify

log = logging.getLogger(__name__)

CHOICES = {
    "children": ("merge", "separate", "none"),
    "group_of": ("keep", "drop-box", "drop-image"),
    "depiction": ("keep", "drop"),
}
DEFAULTS = {"children": "merge", "group_of": "keep", "depiction": "keep", "max_images": None,
            "negatives": 0.0, "seed": 0}
# Written into dataset.json next to the chosen values, so a manifest explains itself.
POLICY_NOTES = {
    "children": "merge: sub-classes (Boat: Barge, Gondola, Canoe) are boxed under their own MID and "
                "mapped to the parent's index; separate: each is its own class; none: parent MID only",
    "group_of": "keep: group-of boxes are ordinary boxes; drop-box: removed (an image left without boxes "
                "is dropped); drop-image: every image with a group-of box is dropped",
    "depiction": "keep, or drop: every image with a depiction box is dropped (dropping only the box would "
                 "teach that the depicted object is background)",
    "unknown_flags": "-1 (unknown) flags are kept as -1 and never count as group-of or depiction",
    "max_images": "cap on positive images per split, sampled deterministically with the seed",
    "negatives": "images with a verified-negative image-level label (Confidence 0) for every picked class "
                 "(negatives_for: a picked class below another picked one is covered by it) and no box of any "
                 "class MID, up to this fraction of the positive images per split",
}
TRANSFER_HEADER = "TsvHttpData-1.0"
EXAMPLES = 5
MAX_NEGATIVES = 100.0  # negative images per positive image
BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|(^|\s)\.\.($|\s)")  # a path, NUL or a control character
# Folders of a build in progress (``building``) or of the dataset it replaces (``old``), by builder pid.
LEFTOVER = re.compile(r"\.(?P<slug>[^.]+)\.(?P<kind>building|old)-(?P<pid>\d+)(?:-.*)?")
SPLIT_SEED_OFFSET = {"train": 0, "validation": 1, "test": 2}


# --------------------------------------------------------------------------- classes


def plan_classes(table: pd.DataFrame, hierarchy: dict, picked: list[str], children: str) -> list[dict]:
    """The dataset's classes: ``[{"index", "mid", "name", "members": [mids]}]`` in darknet index order.

    A picked class keeps its own MID even when it is also below another picked class, and a
    sub-class goes to its nearest picked ancestor (Watercraft + Boat: Canoe goes with Boat).
    """
    resolved = list(dict.fromkeys(oiclasses.resolve_class(table, p) for p in picked))
    if not resolved:
        raise UserError("pick at least one class (e.g. --class Boat)")
    names = dict(zip(table["mid"], table["name"]))
    below = {mid: oiclasses.descendants(hierarchy, mid) if children != "none" else [] for mid, _ in resolved}
    taken = set(below)
    entries: list[tuple[str, str, list[str]]] = []
    for mid, name in resolved:
        nearer = [other for other in below if other in below[mid]]  # picked classes under this one
        own = [m for m in below[mid] if m not in taken and not any(m in below[o] for o in nearer)]
        taken.update(own)
        if children == "merge":
            entries.append((mid, name, [mid] + own))
        else:
            entries.append((mid, name, [mid]))
            entries.extend((m, names.get(m, m), [m]) for m in own)
    return [{"index": i, "mid": mid, "name": name, "members": members}
            for i, (mid, name, members) in enumerate(entries)]


# --------------------------------------------------------------------------- policies


def apply_policies(boxes: pd.DataFrame, group_of: str, depiction: str) -> tuple[pd.DataFrame, int]:
    """Apply group-of and depiction policies to one split's boxes; return (kept boxes, images dropped)."""
    before = boxes["ImageID"].nunique()
    if group_of == "drop-box":
        boxes = boxes[boxes["IsGroupOf"] != 1]
    elif group_of == "drop-image":
        boxes = boxes[~boxes["ImageID"].isin(boxes.loc[boxes["IsGroupOf"] == 1, "ImageID"])]
    if depiction == "drop":
        boxes = boxes[~boxes["ImageID"].isin(boxes.loc[boxes["IsDepiction"] == 1, "ImageID"])]
    return boxes.reset_index(drop=True), before - boxes["ImageID"].nunique()


def sample_ids(ids: list[str], limit: int | None, seed: int) -> list[str]:
    """At most ``limit`` of ``ids``, chosen deterministically from ``seed``; sorted."""
    ids = sorted(ids)
    if limit is None or len(ids) <= limit:
        return ids
    rng = np.random.default_rng(seed)
    return sorted(np.asarray(ids, dtype=object)[rng.choice(len(ids), size=limit, replace=False)].tolist())


def negative_mids(picked: list[str], hierarchy: dict) -> list[str]:
    """Picked MIDs that need their own verified-negative label: not those below another picked class
    (a negative label holds for the sub-classes too, as in the official hierarchy expansion)."""
    below = {m for mid in picked for m in oiclasses.descendants(hierarchy, mid)} if hierarchy else set()
    return [mid for mid in picked if mid not in below]


def negative_candidates(labels: pd.DataFrame, picked_mids: list[str], positive_ids: set[str]) -> list[str]:
    """ImageIDs verified negative (Confidence 0) for every picked MID and holding none of its boxes."""
    negative = labels[(labels["Confidence"] == 0) & labels["LabelName"].isin(picked_mids)]
    per_image = negative.groupby("ImageID")["LabelName"].nunique()
    verified = set(per_image[per_image == len(set(picked_mids))].index)
    positive_label = set(labels.loc[labels["Confidence"] == 1, "ImageID"])
    return sorted(verified - positive_ids - positive_label)


# --------------------------------------------------------------------------- one split


def _build_split(ws: Workspace, split: str, class_list: list[dict], opts: dict, part) -> dict:
    """Filter, apply policies, join image info for one split → {boxes, images, counts, report}."""
    index_of = {m: c["index"] for c in class_list for m in c["members"]}
    box_path = ws.metadata_dir / metadata.BOX_FILES[split]
    found = oicsv.filter_boxes(box_path, index_of, progress=part(0.0, 0.6, "boxes"))
    boxes, dropped = apply_policies(found.boxes, opts["group_of"], opts["depiction"])
    positive_ids = set(boxes["ImageID"])
    sources, candidates = [box_path], []
    if opts["negatives"] > 0:
        sources.append(_need(ws, metadata.LABEL_FILES[split], "negatives need the image-level labels"))
        labels = oicsv.read_image_labels(sources[-1], index_of, progress=part(0.6, 0.7, "image labels"))
        candidates = negative_candidates(labels, opts["negatives_for"],
                                         set(found.boxes["ImageID"]) | set(found.invalid_image_ids))
    sources.append(_need(ws, metadata.IMAGE_FILES[split], "the image-info file is needed for every split"))
    info = oicsv.read_image_info(sources[-1], positive_ids | set(candidates), progress=part(0.7, 1.0, "image info"))
    kept, negatives, missing = _choose_images(split, positive_ids, candidates, set(info["ImageID"]), opts)
    boxes = boxes[boxes["ImageID"].isin(set(kept))]
    images = _images_frame(info, boxes, kept, negatives, split)
    counts = _counts(boxes, images, found.invalid_rows, len(positive_ids), dropped, len(missing))
    report = {"missing_image_info": missing[:EXAMPLES], "invalid_examples": found.invalid_examples,
              "sources": sources}
    return {"boxes": _boxes_frame(boxes, index_of, split), "images": images, "counts": counts, "report": report}


def _choose_images(split: str, positive_ids: set[str], candidates: list[str], known: set[str],
                   opts: dict) -> tuple[list[str], list[str], list[str]]:
    """(kept positives after the cap, sampled negatives, positives missing from image info)."""
    missing = sorted(positive_ids - known)
    if missing:
        log.warning("%s: %d image(s) with boxes are not in the image-info file (left out), e.g. %s",
                    split, len(missing), missing[0])
    seed = opts["seed"] * 1000 + SPLIT_SEED_OFFSET[split]
    kept = sample_ids([i for i in positive_ids if i in known], opts["max_images"], seed)
    wanted_negatives = int(opts["negatives"] * len(kept) + 1e-9)
    negatives = sample_ids([i for i in candidates if i in known], wanted_negatives, seed + 500)
    return kept, negatives, missing


def _need(ws: Workspace, name: str, why: str) -> Path:
    path = ws.metadata_dir / name
    if not path.exists():
        raise UserError(f"{path} is missing ({why}): run `python -m pipeline metadata download --files {name}`")
    return path


def _boxes_frame(boxes: pd.DataFrame, index_of: dict[str, int], split: str) -> pd.DataFrame:
    out = boxes.copy()
    out.insert(1, "Subset", split)
    out.insert(4, "ClassIndex", out["LabelName"].map(index_of).astype(np.int16))
    return out.sort_values("ImageID", kind="stable").reset_index(drop=True)


def _images_frame(info: pd.DataFrame, boxes: pd.DataFrame, kept: list[str], negatives: list[str],
                  split: str) -> pd.DataFrame:
    chosen = info[info["ImageID"].isin(set(kept) | set(negatives))].copy()
    chosen["Subset"] = split
    chosen["IsNegative"] = chosen["ImageID"].isin(set(negatives))
    per_image = boxes.groupby("ImageID").size()
    chosen["NumBoxes"] = chosen["ImageID"].map(per_image).fillna(0).astype(np.int32)
    return chosen.sort_values("ImageID").reset_index(drop=True)


def _counts(boxes: pd.DataFrame, images: pd.DataFrame, invalid: int, positives: int, dropped: int,
            missing: int) -> dict:
    return {
        "images": int(len(images)),
        "boxes": int(len(boxes)),
        "group_of": int((boxes["IsGroupOf"] == 1).sum()),
        "depiction": int((boxes["IsDepiction"] == 1).sum()),
        "negatives": int(images["IsNegative"].sum()),
        "invalid_rows": int(invalid),
        "images_before_cap": int(positives - missing),
        "dropped_by_policy": int(dropped),
        "missing_image_info": int(missing),
    }


# --------------------------------------------------------------------------- outputs


def transfer_tsv(images: pd.DataFrame) -> str:
    """TsvHttpData-1.0 text: ``URL<TAB>bytes<TAB>base64 MD5`` per image, sorted by URL (UTF-8 bytes)."""
    usable = images[(images["OriginalURL"].str.len() > 0) & (images["OriginalSize"] >= 0)
                    & (images["OriginalMD5"].str.len() > 0)]
    rows = sorted({(u, int(s), m) for u, s, m in zip(usable["OriginalURL"], usable["OriginalSize"],
                                                     usable["OriginalMD5"])}, key=lambda r: r[0].encode())
    return "\n".join([TRANSFER_HEADER] + [f"{u}\t{s}\t{m}" for u, s, m in rows]) + "\n"


def _write_outputs(dataset: DatasetDir, manifest: dict, boxes: pd.DataFrame, images: pd.DataFrame) -> None:
    boxes.to_parquet(dataset.boxes_path, index=False)
    images.to_parquet(dataset.images_path, index=False)
    atomic_write_text(dataset.transfer_tsv, transfer_tsv(images))
    dataset.save(manifest)


def _install(tmp: Path, dest: Path) -> None:
    """Move the finished build into place; an overwritten dataset's downloaded pixels are kept.

    A kill between the renames leaves ``.<slug>.old-<pid>``; :func:`clean_leftovers` puts it back.
    """
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        kept = DatasetDir(old).originals
        if kept.is_dir():
            os.replace(kept, DatasetDir(tmp).originals)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def temp_folder(ws: Workspace, slug: str) -> Path:
    """A new ``datasets/.<slug>.building-<pid>-*`` folder for a build of ``slug`` by this process."""
    ws.datasets_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{slug}.building-{os.getpid()}-", dir=ws.datasets_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; a dataset folder is an ordinary folder
    return tmp


def clean_leftovers(ws: Workspace, slug: str) -> list[str]:
    """Remove what dead builds left in ``datasets/``; call it holding the lock of ``slug``.

    ``.<slug>.old-<pid>`` (a replacement killed between its renames) is put back as ``<slug>``
    with its originals when ``<slug>`` is missing, else removed; ``.<slug>.building-*`` folders are
    removed (no build of ``slug`` is live while its lock is held); other datasets' build folders
    only when their builder pid is gone. Returns the names removed or restored.
    """
    dest = ws.dataset(slug).path
    found = [(LEFTOVER.fullmatch(p.name), p) for p in sorted(ws.datasets_dir.iterdir())] \
        if ws.datasets_dir.is_dir() else []
    found = [(m, p) for m, p in found if m and p.is_dir() and not p.is_symlink()]
    done = []
    for match, path in found:  # first put back a dataset whose replacement died halfway
        if match["slug"] == slug and match["kind"] == "old":
            building = [p for m, p in found if m["slug"] == slug and m["kind"] == "building" and m["pid"] == match["pid"]]
            _restore(path, dest, building)
            done.append(path.name)
    for match, path in found:
        mine = match["slug"] == slug
        if match["kind"] == "building" and (mine or not locks.alive(int(match["pid"]))) and path.exists():
            shutil.rmtree(path, ignore_errors=True)
            done.append(path.name)
    if done:
        log.info("cleaned up after builds that did not finish: %s", ", ".join(done))
    return done


def _restore(old: Path, dest: Path, building: list[Path]) -> None:
    """``old`` back to ``dest`` (its originals too, wherever the dead build moved them), or drop it."""
    originals = DatasetDir(old).originals
    moved = [DatasetDir(b).originals for b in building if DatasetDir(b).originals.is_dir()]
    if dest.exists():  # the new folder was in place: only the old one's removal was cut short
        if originals.is_dir() and not DatasetDir(dest).originals.exists():
            os.replace(originals, DatasetDir(dest).originals)
        shutil.rmtree(old, ignore_errors=True)
        return
    if moved and not originals.exists():
        os.replace(moved[0], originals)
    os.replace(old, dest)
    log.warning("dataset %s is back as it was: its replacement was killed halfway", dest.name)


def check_name(name: str) -> str:
    """A dataset name as typed (``--name``): it is slugified into a folder name, never used as a path.

    Raises:
        UserError: a path (``/``, ``\\``, ``..``), NUL or control characters, or nothing to make a folder name of.
    """
    text = str(name)
    if BAD_NAME.search(text):
        raise UserError(f"dataset name {text[:60]!r} is not allowed: no '/', '\\', '..' or control characters "
                        "(it becomes a folder name)")
    try:
        return slugify(text)
    except ValueError:
        raise UserError(f"cannot make a dataset folder name out of {text[:60]!r}: use letters or digits") from None


# --------------------------------------------------------------------------- the builder


def build_dataset(ws: Workspace, classes: list[str], *, children: str = "merge", group_of: str = "keep",
                  depiction: str = "keep", max_images: int | None = None, negatives: float = 0.0,
                  name: str | None = None, overwrite: bool = False, seed: int = 0,
                  progress: ProgressFn = None, wait: float = 0) -> dict:
    """Build ``datasets/<slug>/`` for ``classes`` (names or MIDs) and return its manifest.

    Args:
        wait: seconds to wait while another process writes the dataset (default: refuse at once).

    Raises:
        UserError: unknown class or policy, numbers out of range, missing metadata, bad CSV, the
            dataset exists and ``overwrite`` is False, runs use the dataset to be replaced, or
            another process is writing it.
    """
    opts = _check_options(children, group_of, depiction, max_images, negatives, seed)
    if name is not None:
        ws.dataset(check_name(name))  # a bad name is refused before anything is read
    table = oiclasses.load_classes(ws)
    needed = children != "none" or (ws.metadata_dir / oiclasses.HIERARCHY_FILE).exists()
    hierarchy = oiclasses.load_hierarchy(ws) if needed else {}
    class_list = plan_classes(table, hierarchy, classes, children)
    picked = {oiclasses.resolve_class(table, c)[0] for c in classes}
    for entry in class_list:
        entry["picked"] = entry["mid"] in picked
    opts["negatives_for"] = negative_mids([c["mid"] for c in class_list if c["picked"]], hierarchy)
    name = name or " ".join(c["name"] for c in class_list if c["picked"])
    dataset = ws.dataset(check_name(name))
    with dataset.lock("build", wait=wait):
        clean_leftovers(ws, dataset.slug)
        return _build_locked(ws, dataset, name, class_list, opts, overwrite, progress)


def _build_locked(ws: Workspace, dataset: DatasetDir, name: str, class_list: list[dict], opts: dict,
                  overwrite: bool, progress: ProgressFn) -> dict:
    slug, dest = dataset.slug, dataset.path
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise UserError(f"dataset {slug!r} already exists at {dest}: pick another --name or use --overwrite")
        ws.refuse_replacing(dataset, "delete those runs first, or build under another --name")
    splits = [s for s in metadata.SPLITS if (ws.metadata_dir / metadata.BOX_FILES[s]).exists()]
    if not splits:
        raise UserError(f"no box files in {ws.metadata_dir}: run `python -m pipeline metadata download`")
    results = {}
    for step, split in enumerate(splits):
        results[split] = _build_split(ws, split, class_list, opts, _stage(progress, step, len(splits), split))
    manifest = _manifest(name, slug, class_list, opts, results)
    tmp = temp_folder(ws, slug)
    try:
        _write_outputs(DatasetDir(tmp), manifest, pd.concat([r["boxes"] for r in results.values()], ignore_index=True),
                       pd.concat([r["images"] for r in results.values()], ignore_index=True))
        if dest.exists():  # a run may have been created on it while this build read the files
            ws.refuse_replacing(dataset, "delete those runs first, or build under another --name")
        _install(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(len(splits) * 1000, len(splits) * 1000, "done")
    return manifest


def _check_options(children, group_of, depiction, max_images, negatives, seed) -> dict:
    opts = {"children": children, "group_of": group_of, "depiction": depiction}
    for key, value in opts.items():
        if value not in CHOICES[key]:
            raise UserError(f"{key.replace('_', '-')} must be one of {', '.join(CHOICES[key])}, not {value!r}")
    if max_images is not None:
        max_images = numbers.whole(max_images, "--max-images", 1, 10**9, " (positive images per split)")
    negatives = numbers.real(negatives, "--negatives", 0.0, MAX_NEGATIVES,
                             hint=" (a fraction of the positive images: 0.5 = half as many)")
    return {**opts, "max_images": max_images, "negatives": negatives, "seed": numbers.seed(seed)}


def _stage(progress: ProgressFn, step: int, steps: int, split: str):
    """For split number ``step``: ``part(lo, hi, label)`` → a ProgressFn filling [lo, hi] of its 1000 units."""
    def part(lo: float, hi: float, label: str) -> ProgressFn:
        if not progress:
            return None
        return lambda done, total, _msg="": progress(
            step * 1000 + int(1000 * (lo + (hi - lo) * min(done / max(total, 1), 1.0))), steps * 1000,
            f"{split}: {label}")
    return part


def _manifest(name: str, slug: str, class_list: list[dict], opts: dict, results: dict) -> dict:
    sources = []
    for result in results.values():
        sources.extend(metadata.source_record(p) for p in result["report"]["sources"])
    return {
        "name": name,
        "slug": slug,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": [{k: c[k] for k in ("index", "mid", "name", "members")} for c in class_list],
        "picked": [c["mid"] for c in class_list if c["picked"]],
        "policies": {**opts, "notes": POLICY_NOTES},
        "sources": sources,
        "counts": {split: r["counts"] for split, r in results.items()},
        "missing_image_info": {split: r["report"]["missing_image_info"] for split, r in results.items()},
        "invalid_examples": {split: r["report"]["invalid_examples"] for split, r in results.items()},
    }


# --------------------------------------------------------------------------- CLI

COUNT_COLUMNS = ("images", "boxes", "group_of", "depiction", "negatives", "invalid_rows", "missing_image_info")


def format_counts(counts: dict) -> str:
    """The per-split counts as an aligned text table with a total row."""
    header = f"{'split':<12}" + "".join(f"{c:>20}" for c in COUNT_COLUMNS)
    lines = [header]
    for split, row in counts.items():
        lines.append(f"{split:<12}" + "".join(f"{row.get(c, 0):>20,}" for c in COUNT_COLUMNS))
    lines.append(f"{'total':<12}" + "".join(f"{sum(r.get(c, 0) for r in counts.values()):>20,}"
                                            for c in COUNT_COLUMNS))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    manifest = build_dataset(ws, args.classes, children=args.children, group_of=args.group_of,
                             depiction=args.depiction, max_images=args.max_images, negatives=args.negatives,
                             name=args.name, overwrite=args.overwrite, seed=args.seed,
                             progress=tqdm_progress("build"), wait=args.wait)
    print(", ".join(f"{c['index']}: {c['name']} ({' '.join(c['members'])})" for c in manifest["classes"]))
    print(format_counts(manifest["counts"]))
    print(f"dataset: {ws.dataset(manifest['slug']).path}")
    return 0


def register(subparsers) -> None:
    """``python -m pipeline build --class Boat [...]``."""
    parser = subparsers.add_parser("build", help="build a class dataset from the official files",
                                   description="Stream the official box files for the classes, apply the "
                                               "policies and write datasets/<slug>/.")
    parser.add_argument("--class", dest="classes", action="append", required=True, metavar="NAME|MID",
                        help="a class name or MID (repeat for several)")
    parser.add_argument("--children", choices=CHOICES["children"], default=DEFAULTS["children"],
                        help="sub-classes: merge into the parent (default), separate classes, or none")
    parser.add_argument("--group-of", choices=CHOICES["group_of"], default=DEFAULTS["group_of"])
    parser.add_argument("--depiction", choices=CHOICES["depiction"], default=DEFAULTS["depiction"])
    parser.add_argument("--max-images", type=int, metavar="N", help="cap on positive images per split")
    parser.add_argument("--negatives", type=float, default=0.0, metavar="F",
                        help="verified-negative images, as a fraction of positive images per split")
    parser.add_argument("--name", help="dataset name (default: the class names)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cap and negative sampling")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait this long while another process writes the dataset (default: refuse at once)")
    parser.set_defaults(func=_run)
